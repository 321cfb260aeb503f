//! `listen()`/`incoming()`: shared sockets and round-robin hand-overs that lose nothing
//! queued when a worker is SIGKILLed, bind errors that reach the worker, ReusePort, and
//! listening alone outside a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cluster_core::{Event, Signal, setup_master};
use cluster_tests::{http_get, next_message, wait_event, worker_settings};

/// Two workers serve one address under 8 bounded clients; one is SIGKILLed early on.
/// Returns the requests that failed.
async fn sigkill_one_under_load(scheduling: cluster_core::Scheduling) -> Vec<String> {
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .scheduling(scheduling);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let workers = [
        cluster.fork(&[]).expect("fork"),
        cluster.fork(&[]).expect("fork"),
    ];
    let address = cluster_tests::wait_listening(&mut events, 2).await;

    // 8 clients, 300 requests each, while one worker is SIGKILLed early on.
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 300;
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..REQUESTS {
                match http_get(address, "/").await {
                    Ok((200, _)) => {}
                    other => failures.push(format!("{other:?}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    cluster_tests::eventually(20, "some load before the kill", || {
        done.load(Ordering::Relaxed) >= 200
    })
    .await;
    workers[0].kill(Signal::SIGKILL);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(
            cluster_tests::within(60, "clients", client)
                .await
                .expect("client"),
        );
    }
    eprintln!(
        "{} of {} requests failed",
        failures.len(),
        CLIENTS * REQUESTS
    );
    assert!(workers[0].is_dead() || !workers[0].is_connected());
    cluster.disconnect().await;
    failures
}

#[tokio::test]
async fn a_sigkilled_worker_loses_no_queued_connection() {
    // The test worker serves one connection at a time, so the killed worker held at most
    // one accepted connection; every connection still queued went to the survivor.
    let failures = sigkill_one_under_load(cluster_core::Scheduling::Shared).await;
    assert!(
        failures.len() <= 1,
        "{} failed: {failures:?}",
        failures.len()
    );
}

#[tokio::test]
async fn round_robin_loses_no_connection_when_a_worker_is_sigkilled_mid_handoff() {
    // The master keeps every connection it handed over until the worker took it, a worker
    // takes one only when its server asks for it, and the dead worker's unanswered
    // hand-overs go to the survivor: lost can only be the one it was serving.
    let failures = sigkill_one_under_load(cluster_core::Scheduling::RoundRobin).await;
    assert!(
        failures.len() <= 1,
        "{} failed: {failures:?}",
        failures.len()
    );
}

#[tokio::test]
async fn a_bind_error_reaches_the_workers_listen_naming_the_address() {
    // The port is held by another program, or by another cluster's shared socket (a second
    // instance, an old cluster still draining): the master's bind fails, it does not share.
    let other_program = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let other_cluster =
        cluster_ipc::bind_tcp("127.0.0.1:0".parse().expect("addr"), 16).expect("bind");
    for taken in [other_program, other_cluster] {
        let address = taken.local_addr().expect("addr").to_string();
        let cluster =
            setup_master(worker_settings("serve").env("TEST_LISTEN", &address)).expect("setup");
        let mut events = cluster.events();
        cluster.fork(&[]).expect("fork");
        next_message(&mut events, 10).await; // hello
        let (_, report) = next_message(&mut events, 10).await;
        assert_eq!(report.kind, "listen-error");
        assert!(report.data.contains(&address), "{}", report.data);
        assert!(report.data.contains("in use"), "{}", report.data);
        let exit = wait_event(&mut events, 10, "exit", |e| match e {
            Event::Exit(_, exit) => Some(*exit),
            _ => None,
        })
        .await;
        assert_eq!(exit.code, Some(3));
    }
}

#[tokio::test]
async fn listen_outside_a_cluster_binds_by_itself() {
    assert!(!cluster_worker::is_worker());
    let listener = cluster_worker::listen("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("listen");
    let address = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
    tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    cluster_tests::within(5, "accept", accept)
        .await
        .expect("join")
        .expect("accept");
}

#[tokio::test]
async fn reuse_port_is_refused_without_the_sysctl_unless_the_loss_is_accepted() {
    use cluster_core::Scheduling;
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").unwrap_or_default();
    let risky = worker_settings("serve").scheduling(Scheduling::ReusePort {
        accept_queued_loss: false,
    });
    match setup_master(risky) {
        Err(e) => {
            assert_ne!(migrate.trim(), "1");
            assert_eq!(e.setting(), Some("scheduling"));
            assert!(e.to_string().contains("tcp_migrate_req"), "{e}");
        }
        Ok(_) => assert_eq!(migrate.trim(), "1", "accepted only when requests migrate"),
    }
}

#[tokio::test]
async fn reuse_port_workers_each_listen_on_the_same_port() {
    use cluster_core::Scheduling;
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .scheduling(Scheduling::ReusePort {
            accept_queued_loss: true,
        });
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let workers = [
        cluster.fork(&[]).expect("fork"),
        cluster.fork(&[]).expect("fork"),
    ];
    let mut addresses = Vec::new();
    for _ in 0..2 {
        addresses.push(
            wait_event(&mut events, 10, "listening", |e| match e {
                Event::Listening(_, a) => Some(*a),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(addresses[0], addresses[1]);
    let mut pids = std::collections::HashSet::new();
    for _ in 0..200 {
        let (status, body) = http_get(addresses[0], "/").await.expect("GET");
        assert_eq!(status, 200);
        pids.insert(body.parse::<u32>().expect("pid"));
    }
    let expected: std::collections::HashSet<u32> = workers.iter().map(|w| w.pid()).collect();
    assert_eq!(
        pids, expected,
        "the kernel spreads connections over both sockets"
    );
    cluster.disconnect().await;
}
