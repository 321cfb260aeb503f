//! UDP in a cluster, as Node shares `dgram` sockets: the master binds one socket per
//! address and every worker reads from it (`cluster_worker::bind_udp`). Named after the Node
//! tests they port (`test-cluster-dgram-*.js`); see `docs/NODE_COMPATIBILITY.md`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use cluster_core::{Event, Signal, StopMode, setup_master};
use cluster_tests::{next_message, wait_event, within, worker_settings};
use tokio::net::UdpSocket;

/// Sends one datagram to `server` and waits (bounded) for the answering worker's pid;
/// checks the answer came from the cluster's address.
async fn ask(client: &UdpSocket, server: SocketAddr) -> Option<u32> {
    client.send_to(b"who", server).await.expect("send");
    let mut answer = [0u8; 64];
    let received = tokio::time::timeout(Duration::from_secs(1), client.recv_from(&mut answer));
    let (length, from) = received.await.ok()?.expect("recv");
    assert_eq!(from, server, "the answer leaves from the shared socket");
    std::str::from_utf8(&answer[..length]).ok()?.parse().ok()
}

/// Starts `workers` UDP test workers on `udp:127.0.0.1:0`; returns the cluster, its event
/// stream and the shared address every worker reported.
async fn udp_cluster(
    workers: usize,
) -> (cluster_core::Cluster, cluster_core::EventStream, SocketAddr) {
    let cluster = setup_master(worker_settings("serve").env("TEST_LISTEN", "udp:127.0.0.1:0"))
        .expect("setup");
    let mut events = cluster.events();
    for _ in 0..workers {
        cluster.fork(&[]).expect("fork");
    }
    let mut addresses = HashSet::new();
    for _ in 0..workers {
        let address = wait_event(&mut events, 10, "listening udp", |e| match e {
            Event::ListeningUdp(_, address) => Some(*address),
            _ => None,
        })
        .await;
        addresses.insert(address);
    }
    assert_eq!(addresses.len(), 1, "one shared socket: {addresses:?}");
    let address = addresses.into_iter().next().expect("one address");
    assert_ne!(address.port(), 0);
    (cluster, events, address)
}

#[tokio::test]
async fn test_cluster_dgram_1_workers_share_the_masters_udp_socket() {
    let (cluster, _events, server) = udp_cluster(4).await;
    let pids: HashSet<u32> = cluster.workers().iter().map(|w| w.pid()).collect();
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    // Every datagram is answered by a worker of this cluster; several workers read the
    // socket. Bounded: at most 2,000 datagrams or 10 s.
    let mut answered_by = HashSet::new();
    let mut sent = 0;
    within(10, "answers from two workers", async {
        while answered_by.len() < 2 && sent < 2_000 {
            sent += 1;
            let pid = ask(&client, server).await.expect("every datagram answered");
            assert!(pids.contains(&pid), "{pid} is not a worker of {pids:?}");
            answered_by.insert(pid);
        }
    })
    .await;
    assert!(
        answered_by.len() >= 2,
        "{sent} datagrams all went to {answered_by:?}"
    );
    cluster.stop(StopMode::Graceful).await;
}

#[tokio::test]
async fn udp_datagrams_are_still_answered_after_a_worker_is_sigkilled() {
    let (cluster, mut events, server) = udp_cluster(2).await;
    let victim = cluster.workers()[0].clone();
    victim.kill(Signal::SIGKILL);
    wait_event(&mut events, 10, "the exit", |e| match e {
        Event::Exit(w, _) if w.id() == victim.id() => Some(()),
        _ => None,
    })
    .await;
    // The socket is the master's: the survivor answers on the same address.
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    for _ in 0..20 {
        let pid = ask(&client, server).await.expect("answered");
        assert_ne!(pid, victim.pid());
    }
    cluster.stop(StopMode::Graceful).await;
}

#[tokio::test]
async fn test_cluster_dgram_bind_error_keeps_its_kind() {
    // Another program holds the address: the worker's bind_udp fails with AddrInUse, naming
    // the address, and the worker exits (the test worker's choice) without hurting anyone.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address");
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", format!("udp:{address}")))
            .expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let (_, report) = next_message(&mut events, 10).await;
    assert_eq!(report.kind, "listen-error");
    assert!(report.data.starts_with("AddrInUse: "), "{}", report.data);
    assert!(
        report.data.contains(&address.to_string()),
        "{}",
        report.data
    );
    // From the master's own code too, at start-up.
    let error = cluster.bind_udp(address).expect_err("taken");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    cluster.stop(StopMode::Graceful).await;
}

#[tokio::test]
async fn a_udp_address_not_declared_is_refused_with_permission_denied() {
    // The least-privilege rule holds for UDP: once addresses are declared, an undeclared
    // one is refused, and the refusal reads as PermissionDenied in the worker.
    let declared = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
    let declared_address = declared.local_addr().expect("address");
    drop(declared);
    let settings = worker_settings("serve")
        .allow_listen(format!("udp:{declared_address}"))
        .env("TEST_LISTEN", "udp:127.0.0.1:0");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let (_, report) = next_message(&mut events, 10).await;
    assert_eq!(report.kind, "listen-error");
    assert!(
        report.data.starts_with("PermissionDenied: "),
        "{}",
        report.data
    );
    assert!(report.data.contains("allow_listen"), "{}", report.data);
    cluster.stop(StopMode::Graceful).await;
}

#[tokio::test]
async fn bind_udp_outside_a_cluster_binds_by_itself() {
    assert!(!cluster_worker::is_worker());
    let socket = cluster_worker::bind_udp("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    let address = socket.local_addr().expect("address");
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    client.send_to(b"ping", address).await.expect("send");
    let mut packet = [0u8; 16];
    let (length, _) = within(5, "the datagram", socket.recv_from(&mut packet))
        .await
        .expect("recv");
    assert_eq!(&packet[..length], b"ping");
}

#[tokio::test]
async fn test_cluster_dgram_reuseport_workers_bind_their_own_sockets_on_one_port() {
    // Node's test-cluster-dgram-reuseport: `reusePort` sockets are bound by each worker
    // itself, all on one port; the master binds nothing for them.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
    let address = probe.local_addr().expect("address");
    drop(probe);
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", format!("udp:{address}"))
        .env("TEST_UDP_REUSE_PORT", "1");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    for _ in 0..2 {
        cluster.fork(&[]).expect("fork");
    }
    for _ in 0..2 {
        let bound = wait_event(&mut events, 10, "listening udp", |e| match e {
            Event::ListeningUdp(_, bound) => Some(*bound),
            _ => None,
        })
        .await;
        assert_eq!(bound, address);
    }
    // Each client's datagrams go to one worker's socket; clients from many ports reach
    // both workers, and every datagram is answered (bounded: 200 clients).
    let pids: HashSet<u32> = cluster.workers().iter().map(|w| w.pid()).collect();
    let mut answered_by = HashSet::new();
    for _ in 0..200 {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let pid = ask(&client, address).await.expect("answered");
        assert!(pids.contains(&pid), "{pid}");
        answered_by.insert(pid);
        if answered_by.len() == 2 {
            break;
        }
    }
    assert_eq!(answered_by.len(), 2, "{answered_by:?}");
    cluster.stop(StopMode::Graceful).await;
}
