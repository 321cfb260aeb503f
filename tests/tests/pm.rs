//! The supervisor with real processes: groups, giveup and backoff, reload (also a failed
//! one) under load, scaling, broadcast (also to deaf workers).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cluster_core::pm::{GroupEvent, GroupOptions, Master, RestartPolicy};
use cluster_tests::{
    Load, TestMsg, accept_queue, graceful_worker_exe, http_get, refused_within, within,
};
use nix::sys::signal::Signal;
use tokio::sync::mpsc::UnboundedReceiver;

fn options(children: usize) -> GroupOptions {
    GroupOptions::new()
        .listen("127.0.0.1:0".parse().expect("addr"))
        .children(children)
        .ready_timeout(Duration::from_secs(10))
        .reload_stable(Duration::from_millis(200))
}

/// The next event `pick` accepts, within `secs`.
async fn next<T>(
    events: &mut UnboundedReceiver<GroupEvent>,
    secs: u64,
    what: &str,
    mut pick: impl FnMut(&GroupEvent) -> Option<T>,
) -> T {
    within(secs, what, async {
        loop {
            let event = events.recv().await.expect("event stream");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
}

/// Waits for `count` workers of `group` to be ready; returns their pids and address.
async fn ready(
    events: &mut UnboundedReceiver<GroupEvent>,
    group: &str,
    count: usize,
) -> (HashSet<u32>, SocketAddr) {
    let mut pids = HashSet::new();
    let mut address = None;
    while pids.len() < count {
        let worker = next(events, 10, "ready", |e| match e {
            GroupEvent::Ready { group: g, worker } if g == group => Some(worker.clone()),
            _ => None,
        })
        .await;
        address = worker.addresses().first().copied();
        pids.insert(worker.pid());
    }
    (pids, address.expect("an address"))
}

/// Waits for `count` workers to exit with code 0.
async fn retired_gracefully(events: &mut UnboundedReceiver<GroupEvent>, count: usize) {
    for _ in 0..count {
        let exit = next(events, 10, "a retired worker's exit", |e| match e {
            GroupEvent::Quit { exit, .. } => Some(*exit),
            _ => None,
        })
        .await;
        assert_eq!(exit.code, Some(0), "retired gracefully: {exit}");
    }
}

async fn pid_at(address: SocketAddr) -> u32 {
    let (_, body) = http_get(address, "/").await.expect("GET /");
    body.trim().parse().expect("pid")
}

fn start() -> (Master, UnboundedReceiver<GroupEvent>) {
    let master = Master::new();
    let events = master.events();
    let looping = master.clone();
    tokio::spawn(async move { looping.run().await });
    (master, events)
}

#[tokio::test]
async fn two_groups_run_side_by_side() {
    let (master, mut events) = start();
    master
        .register("alpha", options(2).exec(graceful_worker_exe()))
        .expect("alpha");
    master
        .register("beta", options(1).exec(graceful_worker_exe()))
        .expect("beta");
    master.dispatch();
    // Both groups start at once: collect their ready workers together.
    let mut by_group: std::collections::HashMap<String, (HashSet<u32>, SocketAddr)> =
        Default::default();
    while by_group.get("alpha").map_or(0, |g| g.0.len()) < 2
        || by_group.get("beta").map_or(0, |g| g.0.len()) < 1
    {
        let (group, worker) = next(&mut events, 10, "ready", |e| match e {
            GroupEvent::Ready { group, worker } => Some((group.clone(), worker.clone())),
            _ => None,
        })
        .await;
        let address = worker.addresses()[0];
        let entry = by_group
            .entry(group)
            .or_insert_with(|| (HashSet::new(), address));
        entry.0.insert(worker.pid());
    }
    let (alpha, alpha_address) = by_group["alpha"].clone();
    let (beta, beta_address) = by_group["beta"].clone();
    assert_ne!(alpha_address, beta_address);
    assert!(alpha.contains(&pid_at(alpha_address).await));
    assert!(beta.contains(&pid_at(beta_address).await));
    assert_eq!(master.workers("alpha").len(), 2);
    assert_eq!(master.workers("beta").len(), 1);
    master.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn five_boot_crashes_give_up_with_growing_backoff_refuse_connections_then_retry() {
    let (master, mut events) = start();
    let policy = RestartPolicy {
        max_fatal_restart: 5,
        // The window too: the five crashes (about 1 s with the backoff) fall within it.
        pause_after_fatal: Duration::from_millis(2500),
        restart_delay: Duration::from_millis(200),
        max_restart_delay: Duration::from_secs(5),
        min_uptime: Duration::from_secs(1),
    };
    master
        .register(
            "crashy",
            options(1)
                .policy(policy)
                .env("BOOT_CRASH", "1")
                .exec(graceful_worker_exe()),
        )
        .expect("register");
    master.dispatch();
    let mut forks = Vec::new();
    let (fatals, pause) = next(&mut events, 20, "giveup", |e| match e {
        GroupEvent::Fork { .. } => {
            forks.push(Instant::now());
            None
        }
        GroupEvent::Quit { exit, .. } => {
            assert_eq!(exit.code, Some(1));
            None
        }
        GroupEvent::GiveUp { fatals, pause, .. } => Some((*fatals, *pause)),
        _ => None,
    })
    .await;
    let gave_up = Instant::now();
    assert_eq!(fatals, 5);
    assert!(pause > Duration::from_millis(2400), "{pause:?}");
    assert_eq!(forks.len(), 5, "the first fork and four restarts");
    let gaps: Vec<Duration> = forks.windows(2).map(|w| w[1] - w[0]).collect();
    // At once (only the crashing worker's boot), then 200 ms, 300 ms, 450 ms (plus boots).
    assert!(
        gaps[0] < gaps[1],
        "no backoff before the first restart: {gaps:?}"
    );
    for (gap, least) in gaps[1..].iter().zip([200, 300, 450]) {
        assert!(
            *gap >= Duration::from_millis(least),
            "backoff grows: {gaps:?}"
        );
    }
    // Given up: nobody can serve, so a client is refused at once instead of waiting.
    let address = master_address(&master, "crashy");
    for _ in 0..3 {
        assert!(
            refused_within(address, Duration::from_millis(100)).await,
            "refused during the pause"
        );
    }
    next(&mut events, 10, "the retry after the pause", |e| {
        matches!(e, GroupEvent::Fork { .. }).then_some(())
    })
    .await;
    let waited = gave_up.elapsed();
    assert!(
        waited >= Duration::from_millis(2300),
        "retried after {waited:?}"
    );
    master.stop(cluster_core::StopMode::Fast).await;
}

/// Workers that crash at boot, under a backoff of a second or more: connections are refused
/// while the group waits for the next fork.
#[tokio::test]
async fn a_long_backoff_after_boot_crashes_refuses_connections_until_the_next_fork() {
    let (master, mut events) = start();
    let policy = RestartPolicy {
        max_fatal_restart: 100,
        restart_delay: Duration::from_millis(1500),
        ..RestartPolicy::default()
    };
    master
        .register(
            "crashy",
            options(1)
                .policy(policy)
                .env("BOOT_CRASH", "1")
                .exec(graceful_worker_exe()),
        )
        .expect("register");
    master.dispatch();
    // The first crash is replaced at once; the second waits 1.5 s.
    for _ in 0..2 {
        next(&mut events, 10, "a crash", |e| {
            matches!(e, GroupEvent::Quit { .. }).then_some(())
        })
        .await;
    }
    let address = master_address(&master, "crashy");
    assert!(
        refused_within(address, Duration::from_millis(100)).await,
        "refused during the backoff"
    );
    next(&mut events, 10, "the fork after the backoff", |e| {
        matches!(e, GroupEvent::Fork { .. }).then_some(())
    })
    .await;
    master.stop(cluster_core::StopMode::Fast).await;
}

/// The address a group listens on (bound at registration), through its workers' handoff.
fn master_address(master: &Master, group: &str) -> SocketAddr {
    master
        .addresses(group)
        .first()
        .copied()
        .expect("the group's address")
}

/// Waits for the next `Fork` and `Ready` of `group`; a `GiveUp` fails the test.
async fn replaced(events: &mut UnboundedReceiver<GroupEvent>, secs: u64) -> (u32, Instant) {
    let mut forked = None;
    next(events, secs, "the replacement ready", |e| match e {
        GroupEvent::GiveUp { .. } => panic!("gave up: {e:?}"),
        GroupEvent::Fork { worker, .. } => {
            forked = Some(worker.pid());
            None
        }
        GroupEvent::Ready { worker, .. } if forked == Some(worker.pid()) => {
            Some((worker.pid(), Instant::now()))
        }
        _ => None,
    })
    .await
}

/// The reproduction (`pm_graceful_exit`, 5 workers SIGKILLed by hand at 1.5 s
/// intervals, each after serving 1.5 s, gave the group up for 60 s), with `min_uptime` scaled
/// from 1 s to 400 ms and the serving time from 1.5 s to 600 ms.
#[tokio::test]
async fn healthy_workers_killed_by_hand_are_replaced_at_once_and_never_give_the_group_up() {
    let (master, mut events) = start();
    let policy = RestartPolicy {
        min_uptime: Duration::from_millis(400),
        // Any backoff would show: the replacements must come long before this.
        restart_delay: Duration::from_secs(10),
        ..RestartPolicy::default()
    };
    master
        .register("web", options(2).policy(policy).exec(graceful_worker_exe()))
        .expect("register");
    master.dispatch();
    let mut ready_at: std::collections::HashMap<u32, Instant> = Default::default();
    let (pids, address) = ready(&mut events, "web", 2).await;
    for pid in pids {
        ready_at.insert(pid, Instant::now());
    }
    for kill in 0..5 {
        let (&victim, &since) = ready_at
            .iter()
            .min_by_key(|(_, at)| **at)
            .expect("a worker");
        // It serves for 1.5 × min_uptime.
        loop {
            assert_eq!(http_get(address, "/").await.expect("GET /").0, 200);
            if since.elapsed() >= Duration::from_millis(600) {
                break;
            }
        }
        ready_at.remove(&victim);
        signal(victim, Signal::SIGKILL);
        let (pid, at) = replaced(&mut events, 5).await;
        assert!(!ready_at.contains_key(&pid), "kill {kill}: a new worker");
        ready_at.insert(pid, at);
    }
    assert_eq!(master.workers("web").len(), 2);
    assert!(ready_at.contains_key(&pid_at(address).await));
    master.stop(cluster_core::StopMode::Graceful).await;
}

/// The other side of the line: workers killed less than `min_uptime` after they became ready
/// count, the group gives up, refuses connections during the pause, and serves again after.
#[tokio::test]
async fn young_workers_killed_by_hand_give_the_group_up_it_refuses_then_serves_again() {
    let (master, mut events) = start();
    let policy = RestartPolicy {
        pause_after_fatal: Duration::from_secs(2),
        restart_delay: Duration::from_millis(100),
        max_restart_delay: Duration::from_millis(200),
        min_uptime: Duration::from_secs(5),
        ..RestartPolicy::default()
    };
    master
        .register("web", options(1).policy(policy).exec(graceful_worker_exe()))
        .expect("register");
    master.dispatch();
    let (pids, address) = ready(&mut events, "web", 1).await;
    let mut young = pids.into_iter().next().expect("a worker");
    for _ in 0..4 {
        assert_eq!(pid_at(address).await, young);
        signal(young, Signal::SIGKILL);
        young = replaced(&mut events, 5).await.0;
    }
    signal(young, Signal::SIGKILL);
    let fatals = next(&mut events, 5, "giveup", |e| match e {
        GroupEvent::GiveUp { fatals, .. } => Some(*fatals),
        GroupEvent::Fork { .. } => panic!("forked instead of giving up"),
        _ => None,
    })
    .await;
    assert_eq!(fatals, 5);
    for _ in 0..5 {
        let asked = Instant::now();
        assert!(
            refused_within(address, Duration::from_millis(100)).await,
            "refused while given up"
        );
        eprintln!("refused after {:?}", asked.elapsed());
    }
    let (back, _) = replaced(&mut events, 10).await;
    assert_eq!(pid_at(address).await, back, "serving again after the pause");
    master.stop(cluster_core::StopMode::Graceful).await;
}

/// A worker that panics right after it became ready hands over (graceful): its replacement
/// is forked first and the exit never counts, however often it happens.
#[tokio::test]
async fn panics_right_after_ready_hand_over_and_never_give_the_group_up() {
    let (master, mut events) = start();
    master
        .register(
            "web",
            options(1)
                .min_uptime(Duration::from_secs(30))
                .exec(graceful_worker_exe()),
        )
        .expect("register");
    master.dispatch();
    let (first, address) = ready(&mut events, "web", 1).await;
    let mut serving = first.into_iter().next().expect("a worker");
    for _ in 0..6 {
        let (status, _) = http_get(address, "/panic").await.expect("GET /panic");
        assert_eq!(status, 500);
        let next = replaced(&mut events, 10).await.0;
        // Gone before the next panic, which must reach the replacement.
        cluster_tests::eventually(10, "the panicked worker gone", || {
            cluster_tests::process_gone(serving)
        })
        .await;
        serving = next;
    }
    while let Ok(event) = events.try_recv() {
        assert!(!matches!(event, GroupEvent::GiveUp { .. }), "{event:?}");
    }
    assert_eq!(pid_at(address).await, serving);
    master.stop(cluster_core::StopMode::Graceful).await;
}

/// A connection that waits in the queue while its worker cannot take it (stopped, then
/// killed) is served by the replacement: refusing never starts while one is on its way, even
/// when the exit counts as unstable.
#[tokio::test]
async fn a_request_queued_while_workers_lived_is_answered_by_the_replacement() {
    let (master, mut events) = start();
    master
        .register(
            "web",
            options(1)
                .min_uptime(Duration::from_secs(30))
                .exec(graceful_worker_exe()),
        )
        .expect("register");
    master.dispatch();
    let (pids, address) = ready(&mut events, "web", 1).await;
    let old = pids.into_iter().next().expect("a worker");
    signal(old, Signal::SIGSTOP);
    let queued = tokio::spawn(http_get(address, "/"));
    cluster_tests::eventually(5, "the request in the accept queue", || {
        accept_queue(address.port()) == Some(1)
    })
    .await;
    signal(old, Signal::SIGKILL);
    let (new, _) = replaced(&mut events, 5).await;
    let (status, body) = within(10, "the queued request's answer", queued)
        .await
        .expect("join")
        .expect("answered");
    assert_eq!(status, 200);
    assert_eq!(body.trim(), new.to_string());
    master.stop(cluster_core::StopMode::Graceful).await;
}

/// Scaled to zero, a group refuses; scaled up again, it serves.
#[tokio::test]
async fn a_group_scaled_to_zero_refuses_connections_until_scaled_up() {
    let (master, mut events) = start();
    master
        .register("web", options(1).exec(graceful_worker_exe()))
        .expect("register");
    master.dispatch();
    let (_, address) = ready(&mut events, "web", 1).await;
    master.scale("web", 0);
    retired_gracefully(&mut events, 1).await;
    assert!(refused_within(address, Duration::from_millis(100)).await);
    master.scale("web", 1);
    let (pid, _) = replaced(&mut events, 10).await;
    assert_eq!(pid_at(address).await, pid);
    master.stop(cluster_core::StopMode::Graceful).await;
}

/// A group on a Unix socket path refuses too (the connection is closed at once) while
/// scaled to zero, and serves again when scaled up.
#[tokio::test]
async fn a_unix_socket_group_scaled_to_zero_closes_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = cluster_tests::unique_socket_path("cluster-pm-refuse");
    let (master, mut events) = start();
    master
        .register(
            "web",
            GroupOptions::new()
                .listen_unix(&path)
                .children(1)
                .exec(graceful_worker_exe()),
        )
        .expect("register");
    master.dispatch();
    next(&mut events, 10, "ready", |e| {
        matches!(e, GroupEvent::Ready { .. }).then_some(())
    })
    .await;
    master.scale("web", 0);
    retired_gracefully(&mut events, 1).await;
    let closed = tokio::time::timeout(Duration::from_millis(100), async {
        let mut stream = tokio::net::UnixStream::connect(&path).await?;
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nHost: unix\r\n\r\n")
            .await;
        let mut first = [0u8; 1];
        stream.read(&mut first).await
    })
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed within 100 ms: {closed:?}"
    );
    master.scale("web", 1);
    replaced(&mut events, 10).await;
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: unix\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    master.stop(cluster_core::StopMode::Graceful).await;
    let _ = std::fs::remove_file(&path);
}

fn signal(pid: u32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("kill");
}

#[tokio::test]
async fn a_reload_under_load_fails_no_request_and_ends_with_new_pids() {
    let (master, mut events) = start();
    master
        .register("web", options(2).exec(graceful_worker_exe()))
        .expect("register");
    master.dispatch();
    let (old, address) = ready(&mut events, "web", 2).await;
    let load = Load::start(address, 4);
    load.answers(200).await;
    assert!(master.reload("web"));
    next(&mut events, 30, "reloaded", |e| {
        matches!(e, GroupEvent::Reloaded { .. }).then_some(())
    })
    .await;
    load.answers(200).await;
    load.finish().await;
    let now: HashSet<u32> = master.workers("web").iter().map(|w| w.pid()).collect();
    assert_eq!(now.len(), 2);
    assert!(now.is_disjoint(&old), "old {old:?}, now {now:?}");
    for _ in 0..4 {
        assert!(now.contains(&pid_at(address).await));
    }
    master.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn a_scale_down_under_load_fails_no_request() {
    let (master, mut events) = start();
    master
        .register("web", options(3).exec(graceful_worker_exe()))
        .expect("register");
    master.dispatch();
    let (_, address) = ready(&mut events, "web", 3).await;
    let load = Load::start(address, 4);
    load.answers(200).await;
    master.scale("web", 1);
    retired_gracefully(&mut events, 2).await;
    load.answers(200).await;
    load.finish().await;
    assert_eq!(master.workers("web").len(), 1);
    master.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn a_reload_whose_new_workers_crash_keeps_the_old_ones_serving() {
    let (master, mut events) = start();
    master
        .register("web", options(2).exec(graceful_worker_exe()))
        .expect("register");
    master.dispatch();
    let (old, address) = ready(&mut events, "web", 2).await;
    // A bad deploy: the same group, registered again with workers that die at boot.
    master
        .register(
            "web",
            options(2)
                .env("BOOT_CRASH", "1")
                .exec(graceful_worker_exe()),
        )
        .expect("register again");
    let reason = next(&mut events, 20, "reload failure", |e| match e {
        GroupEvent::ReloadFailed { reason, .. } => Some(reason.clone()),
        GroupEvent::Reloaded { .. } => panic!("a bad deploy must not complete"),
        _ => None,
    })
    .await;
    assert!(reason.contains("exited"), "{reason}");
    for _ in 0..6 {
        assert!(
            old.contains(&pid_at(address).await),
            "the old workers still serve"
        );
    }
    // The failed generation's workers are retired; only the old ones remain.
    cluster_tests::eventually(10, "only the old workers left", || {
        let live: HashSet<u32> = master.workers("web").iter().map(|w| w.pid()).collect();
        live == old
    })
    .await;
    master.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn a_worker_reaches_the_other_workers_of_a_group_through_the_master() {
    let (master, mut events) = start();
    master
        .register("web", options(3).exec(graceful_worker_exe()))
        .expect("register");
    master.dispatch();
    let (pids, _) = ready(&mut events, "web", 3).await;
    let sender = *pids.iter().next().expect("a worker");
    master
        .send_to(sender, &TestMsg::new("relay", "web"))
        .await
        .expect("send");
    let mut got = HashSet::new();
    while got.len() < 2 {
        let (receiver, msg) = next(&mut events, 10, "a relayed message", |e| match e {
            GroupEvent::Message {
                worker, message, ..
            } => Some((worker.pid(), message.decode::<TestMsg>().expect("decode"))),
            _ => None,
        })
        .await;
        if msg.kind == "got" {
            assert_eq!(msg.data, format!("Some(\"web\"):{sender}:{sender}"));
            got.insert(receiver);
        }
    }
    let others: HashSet<u32> = pids.iter().copied().filter(|p| *p != sender).collect();
    assert_eq!(
        got, others,
        "every other worker of the group, not the sender"
    );
    master.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn scale_up_and_down_at_run_time() {
    let (master, mut events) = start();
    master
        .register("web", options(1).exec(graceful_worker_exe()))
        .expect("register");
    master.dispatch();
    ready(&mut events, "web", 1).await;
    master.scale("web", 3);
    ready(&mut events, "web", 2).await;
    assert_eq!(master.workers("web").len(), 3);
    master.scale("web", 1);
    retired_gracefully(&mut events, 2).await;
    assert_eq!(master.workers("web").len(), 1);
    master.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn broadcast_reaches_every_worker_of_the_group() {
    let (master, mut events) = start();
    master
        .register("web", options(3).exec(graceful_worker_exe()))
        .expect("register");
    master.dispatch();
    let (pids, _) = ready(&mut events, "web", 3).await;
    // A group registered after dispatch starts at once; it must not get the broadcast.
    master
        .register("other", options(1).exec(graceful_worker_exe()))
        .expect("register");
    ready(&mut events, "other", 1).await;
    let reached = master
        .broadcast("web", &TestMsg::new("ping", "hello all"))
        .await;
    assert_eq!(reached.reached.len(), 3, "{reached:?}");
    assert!(reached.unreached.is_empty(), "{reached:?}");
    let mut echoed = HashSet::new();
    while echoed.len() < 3 {
        let (group, pid, msg) = next(&mut events, 10, "echo", |e| match e {
            GroupEvent::Message {
                group,
                worker,
                message,
            } => Some((
                group.clone(),
                worker.pid(),
                message.decode::<TestMsg>().expect("decode"),
            )),
            _ => None,
        })
        .await;
        if msg.kind == "echo" {
            assert_eq!(group, "web");
            assert_eq!(msg.data, "hello all");
            echoed.insert(pid);
        }
    }
    assert_eq!(echoed, pids);
    master.stop(cluster_core::StopMode::Graceful).await;
}

/// Three deaf workers (their runtimes block, nothing reads their channels) among four: a
/// `send_to` one of them and a broadcast to all come back within the send timeout (the
/// broadcast waits for all at once, not in turn), and the broadcast says whom it reached.
#[tokio::test]
async fn broadcast_and_send_to_do_not_wait_for_deaf_workers() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let (master, mut events) = start();
    master.set_send_timeout(TIMEOUT);
    let options = GroupOptions::new()
        .children(4)
        .env("TEST_LISTEN", "127.0.0.1:0")
        .ready_timeout(Duration::from_secs(10));
    master
        .register("web", options.exec(cluster_tests::worker_exe()))
        .expect("register");
    master.dispatch();
    let (pids, _) = ready(&mut events, "web", 4).await;
    let mut pids: Vec<u32> = pids.into_iter().collect();
    pids.sort();
    let (deaf, healthy) = (pids[..3].to_vec(), pids[3]);
    for &pid in &deaf {
        master
            .send_to(pid, &TestMsg::new("deaf", ""))
            .await
            .expect("send");
        next(
            &mut events,
            10,
            "the deaf worker's last word",
            |e| match e {
                GroupEvent::Message {
                    worker, message, ..
                } if worker.pid() == pid => message
                    .decode::<TestMsg>()
                    .ok()
                    .filter(|m| m.kind == "deaf")
                    .map(drop),
                _ => None,
            },
        )
        .await;
    }
    // Far more than a socket buffer holds: the write to a deaf worker cannot finish.
    let big = TestMsg::new("big", "x".repeat(1024 * 1024));
    let timed_out = |e: &cluster_core::SendError| matches!(e, cluster_core::SendError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut);

    let sent = within(5, "send_to a deaf worker", master.send_to(deaf[2], &big)).await;
    let error = sent.expect_err("a deaf worker is not reached");
    assert!(timed_out(&error), "{error}");

    let started = Instant::now();
    let delivery = within(5, "the broadcast", master.broadcast("web", &big)).await;
    let waited = started.elapsed();
    assert_eq!(delivery.reached, vec![healthy], "{delivery:?}");
    let mut unreached: Vec<u32> = delivery.unreached.iter().map(|u| u.pid).collect();
    unreached.sort();
    assert_eq!(unreached, deaf, "{delivery:?}");
    let timeouts = delivery.unreached.iter().filter(|u| timed_out(&u.error));
    assert_eq!(timeouts.count(), 2, "{delivery:?}");
    // Two workers timed out: in turn that is two timeouts, at once one.
    assert!(waited < TIMEOUT * 2, "{waited:?}");
    master.stop(cluster_core::StopMode::Fast).await;
}

#[tokio::test]
async fn a_group_serves_a_unix_socket_path_shared_by_its_workers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = cluster_tests::unique_socket_path("cluster-pm");
    // A stale socket file from an earlier run is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).expect("stale socket");
    drop(stale);
    // A process another test forks at that moment holds a copy until its exec: wait until
    // nobody listens any more (the file stays, stale).
    cluster_tests::eventually(5, "the stale socket closed", || {
        std::os::unix::net::UnixStream::connect(&path).is_err()
    })
    .await;
    let (master, mut events) = start();
    master
        .register(
            "web",
            GroupOptions::new()
                .listen_unix(&path)
                .children(2)
                .exec(graceful_worker_exe()),
        )
        .expect("register");
    master.dispatch();
    let mut pids = HashSet::new();
    while pids.len() < 2 {
        let worker = next(&mut events, 10, "ready", |e| match e {
            GroupEvent::Ready { worker, .. } => Some(worker.clone()),
            _ => None,
        })
        .await;
        pids.insert(worker.pid());
    }
    for _ in 0..50 {
        let mut stream = tokio::net::UnixStream::connect(&path)
            .await
            .expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: unix\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let pid: u32 = response
            .rsplit("\r\n\r\n")
            .next()
            .and_then(|b| b.trim().parse().ok())
            .expect("pid");
        assert!(pids.contains(&pid), "{pid} is not one of {pids:?}");
    }
    master.stop(cluster_core::StopMode::Graceful).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_file_in_the_way_of_a_unix_socket_is_an_error_at_registration() {
    let path = cluster_tests::unique_socket_path("cluster-pm-file");
    std::fs::write(&path, b"not a socket").expect("write");
    let master = Master::new();
    let err = master
        .register(
            "web",
            GroupOptions::new()
                .listen_unix(&path)
                .children(1)
                .exec(graceful_worker_exe()),
        )
        .expect_err("a regular file is in the way");
    assert_eq!(
        err.io_kind(),
        Some(std::io::ErrorKind::AlreadyExists),
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_min_uptime_below_the_floor_is_an_error_naming_it() {
    let master = Master::new();
    let err = master
        .register(
            "web",
            options(1)
                .min_uptime(Duration::from_millis(10))
                .exec(graceful_worker_exe()),
        )
        .expect_err("10 ms is below MIN_RESTART_DELAY");
    assert_eq!(err.setting(), Some("min_uptime"));
    assert!(master.workers("web").is_empty());
}
