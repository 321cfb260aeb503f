//! Sticky sessions: which worker serves a client, by the client's IP address
//! ([`crate::Scheduling::Sticky`]). Pure; the round-robin dispatcher (`round_robin.rs`)
//! accepts and hands over, this module only chooses.
//!
//! **Rendezvous (highest random weight) hashing** over *slots*: each worker accepting on an
//! address holds a small slot number ([`Slots`]), and a client goes to the slot with the
//! highest `score(client, slot)`. Removing a slot moves only the clients whose highest score
//! was that slot (each to its second-highest); adding one takes only the clients that now
//! score highest on it, about `1/n` of them, from every slot alike. No table to rebuild, and
//! the same answer in every process and every run (the hash is fixed, not seeded).
//!
//! Slots rather than worker ids: a worker that dies frees its slot and its replacement takes
//! the lowest free one, so the clients that moved away while it was gone come back to the
//! replacement, and nobody else's clients move. A reload's new generation takes new slots
//! while the old one still serves; as old workers leave, their clients move to new ones.
//!
//! What it does not do: balance load. Clients behind one address (a NAT, a proxy) all land
//! on one worker, as with Node's `sticky-session` and nginx's `ip_hash`.

use std::net::IpAddr;

/// A worker's place in the hash, per address.
pub(crate) type Slot = u32;

/// The slots held by workers, by worker id: a newcomer takes the lowest free slot.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    /// `(worker id, slot)`, at most one entry per worker.
    held: Vec<(u32, Slot)>,
}

impl Slots {
    /// The slot of worker `id`, given the lowest free one if it has none.
    pub(crate) fn join(&mut self, id: u32) -> Slot {
        if let Some(slot) = self.slot_of(id) {
            return slot;
        }
        let slot = (0..)
            .find(|s| !self.held.iter().any(|(_, held)| held == s))
            .unwrap_or(0);
        self.held.push((id, slot));
        slot
    }

    /// Worker `id` leaves: its slot is free for the next worker to join.
    pub(crate) fn leave(&mut self, id: u32) {
        self.held.retain(|(worker, _)| *worker != id);
    }

    /// The slot worker `id` holds.
    pub(crate) fn slot_of(&self, id: u32) -> Option<Slot> {
        self.held
            .iter()
            .find(|(worker, _)| *worker == id)
            .map(|(_, slot)| *slot)
    }
}

/// The candidate (`slot`, item) with the highest score for `client`; `None` if there is none.
/// Ties (never seen: 64-bit scores) go to the lower slot, so the choice does not depend on
/// the order of `candidates`.
pub(crate) fn choose<T>(
    client: IpAddr,
    candidates: impl IntoIterator<Item = (Slot, T)>,
) -> Option<T> {
    let key = client_key(client);
    candidates
        .into_iter()
        .map(|(slot, item)| (score(key, slot), std::cmp::Reverse(slot), item))
        .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
        .map(|(_, _, item)| item)
}

/// The client's address as one number; an IPv4-mapped IPv6 address is its IPv4 address
/// (a dual-stack listener sees IPv4 clients that way).
fn client_key(client: IpAddr) -> u64 {
    match client.to_canonical() {
        IpAddr::V4(v4) => mix(u64::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            mix((bits >> 64) as u64 ^ mix(bits as u64))
        }
    }
}

/// The weight of `slot` for the client whose key is `key`.
fn score(key: u64, slot: Slot) -> u64 {
    mix(key ^ mix(u64::from(slot).wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// SplitMix64's finaliser: every input bit affects every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn clients(n: u32) -> Vec<IpAddr> {
        // Spread over 10.0.0.0/8 and a few /24s of loopback, as real clients would be.
        (0..n)
            .map(|i| {
                IpAddr::V4(Ipv4Addr::from(
                    0x0A00_0000 + i.wrapping_mul(2_654_435_761) % 0x00FF_FFFF,
                ))
            })
            .collect()
    }

    fn assign(clients: &[IpAddr], slots: &[Slot]) -> Vec<Slot> {
        clients
            .iter()
            .map(|c| choose(*c, slots.iter().map(|s| (*s, *s))).expect("a slot"))
            .collect()
    }

    #[test]
    fn the_same_client_always_gets_the_same_slot_whatever_the_order() {
        let client: IpAddr = "192.0.2.7".parse().expect("ip");
        let a = choose(client, [(0, 'a'), (1, 'b'), (2, 'c'), (3, 'd')]);
        let b = choose(client, [(3, 'd'), (1, 'b'), (0, 'a'), (2, 'c')]);
        assert_eq!(a, b);
        assert_eq!(choose::<char>(client, []), None);
    }

    #[test]
    fn clients_spread_evenly_over_slots() {
        let clients = clients(40_000);
        let chosen = assign(&clients, &[0, 1, 2, 3]);
        for slot in 0..4 {
            let share = chosen.iter().filter(|s| **s == slot).count() as f64 / 40_000.0;
            assert!((0.23..0.27).contains(&share), "slot {slot}: {share}");
        }
        // 20 loopback addresses, as in the integration test, reach more than one worker.
        let loopback: Vec<IpAddr> = (1..=20)
            .map(|x| IpAddr::V4(Ipv4Addr::new(127, 0, 0, x)))
            .collect();
        let chosen = assign(&loopback, &[0, 1, 2, 3]);
        let used = (0..4).filter(|s| chosen.contains(s)).count();
        assert!(used >= 3, "{chosen:?}");
    }

    #[test]
    fn removing_a_slot_moves_only_its_clients() {
        let clients = clients(10_000);
        let before = assign(&clients, &[0, 1, 2, 3, 4]);
        let after = assign(&clients, &[0, 1, 3, 4]);
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(b, a, "a client of another slot moved");
            } else {
                assert_ne!(*a, 2);
            }
        }
    }

    #[test]
    fn adding_a_slot_takes_about_one_in_n_and_only_to_the_new_slot() {
        let clients = clients(10_000);
        let before = assign(&clients, &[0, 1, 2, 3]);
        let after = assign(&clients, &[0, 1, 2, 3, 4]);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*a, 4, "a client moved between old slots");
                moved += 1;
            }
        }
        let share = moved as f64 / 10_000.0;
        assert!((0.17..0.23).contains(&share), "{share}");
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let v4: IpAddr = "198.51.100.20".parse().expect("ip");
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 20).to_ipv6_mapped());
        let slots = [(0, 0), (1, 1), (2, 2)];
        assert_eq!(choose(v4, slots), choose(mapped, slots));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert!(choose(v6, slots).is_some());
    }

    #[test]
    fn a_replacement_takes_the_slot_its_predecessor_freed() {
        let mut slots = Slots::default();
        assert_eq!((slots.join(1), slots.join(2), slots.join(3)), (0, 1, 2));
        assert_eq!(slots.join(2), 1, "joining twice keeps the slot");
        slots.leave(2);
        assert_eq!(slots.slot_of(2), None);
        assert_eq!(slots.join(4), 1, "the lowest free slot");
        assert_eq!(slots.join(5), 3);
        slots.leave(1);
        slots.leave(3);
        assert_eq!(slots.join(6), 0);
        assert_eq!(slots.join(7), 2);
    }
}
