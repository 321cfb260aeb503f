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
    cluster.stop(cluster_core::StopMode::Graceful).await;
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
        // The kind survives the trip from the master's bind to the worker's listen().
        assert!(report.data.starts_with("AddrInUse: "), "{}", report.data);
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
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

/// Starts `workers` test workers in `listen-twice:{address}` mode; returns each worker's
/// three reports (kind and data), in order, by worker id.
async fn listen_twice(address: &str, workers: usize) -> Vec<Vec<(String, String)>> {
    let settings = worker_settings(&format!("listen-twice:{address}"));
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    for _ in 0..workers {
        cluster.fork(&[]).expect("fork");
    }
    let mut reports = vec![Vec::new(); workers];
    while reports.iter().any(|r| r.len() < 3) {
        let (id, message) = next_message(&mut events, 10).await;
        if message.kind != "hello" {
            reports[id as usize - 1].push((message.kind, message.data));
        }
    }
    cluster.stop(cluster_core::StopMode::Graceful).await;
    reports
}

#[tokio::test]
async fn test_cluster_child_index_net_each_listen_zero_gets_a_port_of_its_own() {
    // Node's rule: a worker's second listen(0) while its first is open is another server
    // on another port; the other workers' first and second listen(0) share those two
    // ports; after closing the first, listening again gets its port back.
    let reports = listen_twice("127.0.0.1:0", 2).await;
    for worker in &reports {
        let kinds: Vec<&str> = worker.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["first", "second", "third"], "{worker:?}");
        assert_ne!(worker[0].1, worker[1].1, "two listen(0), two ports");
        assert_eq!(
            worker[2].1, worker[0].1,
            "re-listening takes the first port back"
        );
    }
    assert_eq!(
        reports[0], reports[1],
        "the workers share each index's socket"
    );
}

#[tokio::test]
async fn test_cluster_eaddrinuse_a_second_listen_on_a_fixed_address_in_one_worker() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let address = probe.local_addr().expect("address").to_string();
    drop(probe);
    let reports = listen_twice(&address, 1).await;
    let worker = &reports[0];
    assert_eq!(worker[0], ("first".to_string(), address.clone()));
    assert_eq!(worker[1].0, "listen-error", "{worker:?}");
    assert!(worker[1].1.starts_with("AddrInUse: "), "{}", worker[1].1);
    assert!(worker[1].1.contains(&address), "{}", worker[1].1);
    // Closed, then asked for again: granted.
    assert_eq!(worker[2], ("third".to_string(), address));
}

#[tokio::test]
async fn test_cluster_net_listen_backlog_the_workers_backlog_is_the_sockets() {
    // Node: the backlog a worker gives listen() is the one the primary's socket gets.
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .env("TEST_BACKLOG", "7");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    let address = cluster_tests::wait_listening(&mut events, 1).await;
    // `ss` shows a listening socket's backlog as its Send-Q.
    let Ok(output) = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", address.port())])
        .output()
    else {
        eprintln!("skipped: no `ss` (iproute2) on this machine");
        return;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let send_q: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(send_q, ["7"], "{text}");
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn test_cluster_net_listen_ipv6only_none_ipv4_is_refused_and_free_with_ipv6_only() {
    // Node's sequential/test-cluster-net-listen-ipv6only-none and -rr: workers on `[::]`
    // take IPv4 clients too (dual stack), unless they listen with ipv6_only; in both
    // scheduling modes, since the master binds the socket with the request's options.
    use cluster_core::Scheduling;
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("skipped: no IPv6 on this machine");
        return;
    }
    let cases = [
        (Scheduling::Shared, "0", true),
        (Scheduling::Shared, "1", false),
        (Scheduling::RoundRobin, "1", false),
    ];
    for (scheduling, ipv6_only, ipv4_served) in cases {
        let settings = worker_settings("serve")
            .scheduling(scheduling)
            .env("TEST_LISTEN", "[::]:0")
            .env("TEST_IPV6_ONLY", ipv6_only);
        let cluster = setup_master(settings).expect("setup");
        let mut events = cluster.events();
        for _ in 0..3 {
            cluster.fork(&[]).expect("fork");
        }
        let address = cluster_tests::wait_listening(&mut events, 3).await;
        let ipv4 = std::net::SocketAddr::from(([127, 0, 0, 1], address.port()));
        let answer = http_get(ipv4, "/").await;
        assert_eq!(
            answer.is_ok(),
            ipv4_served,
            "{scheduling:?} ipv6_only={ipv6_only}: {answer:?}"
        );
        let ipv6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()));
        assert_eq!(http_get(ipv6, "/").await.expect("IPv6 client").0, 200);
        // Node's sequential/test-cluster-net-listen-ipv6only-none: an IPv6-only socket
        // leaves the IPv4 port free for another program.
        let ipv4_free = std::net::TcpListener::bind(ipv4).is_ok();
        assert_eq!(
            ipv4_free, !ipv4_served,
            "{scheduling:?} ipv6_only={ipv6_only}"
        );
        cluster.stop(cluster_core::StopMode::Graceful).await;
    }
}

#[tokio::test]
async fn a_listen_retried_after_eaddrinuse_binds_once_the_port_is_free() {
    // Node's test-cluster-eaddrinuse: a listen fails with EADDRINUSE while another program
    // holds the port; once it is freed, a retry works (the master keeps no failed bind).
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = holder.local_addr().expect("address").to_string();
    let cluster = setup_master(worker_settings(&format!("listen-retry:{address}"))).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let (_, first) = next_message(&mut events, 10).await;
    assert_eq!(first.kind, "listen-error");
    assert!(first.data.starts_with("AddrInUse: "), "{}", first.data);
    drop(holder);
    worker
        .send(&cluster_tests::TestMsg::new("retry", ""))
        .await
        .expect("send");
    let (_, retry) = next_message(&mut events, 10).await;
    assert_eq!(
        (retry.kind.as_str(), retry.data.as_str()),
        ("retry", address.as_str())
    );
    // The master's socket now: a client is accepted on it.
    std::net::TcpStream::connect(&address).expect("connect");
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

/// A test master run as `nobody` (uid and gid 65534) whose workers listen on `address`;
/// returns the first worker's listen report line.
async fn listen_report_as_nobody(address: &str, scheduling: Option<&str>) -> String {
    let mut command = tokio::process::Command::new(cluster_tests::master_exe());
    command
        .env("TEST_LISTEN", address)
        .env("TEST_PRINT_MESSAGES", "1")
        .env("TEST_WORKERS", "1")
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(scheduling) = scheduling {
        command.env("TEST_SCHEDULING", scheduling);
    }
    let mut master = command.spawn().expect("start the master as nobody");
    let mut lines = cluster_tests::Lines::new(master.stdout.take().expect("stdout"));
    let report = lines.wait_for(10, "message 1 listen").await;
    master.kill().await.expect("kill the master");
    report
}

#[tokio::test]
async fn test_cluster_bind_privileged_port_and_shared_handle_bind_privileged_port() {
    // Node's tests run as a non-root user: a worker's listen on port 42 fails with EACCES
    // in its own listen, in round-robin (bind-privileged-port) and in shared mode
    // (shared-handle-bind-privileged-port). Here the master runs as `nobody`, so its bind
    // fails, and the worker's `listen()` gets `PermissionDenied` naming the address.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to start the master as nobody");
        return;
    }
    for scheduling in [Some("rr"), None] {
        let report = listen_report_as_nobody("127.0.0.1:42", scheduling).await;
        assert!(
            report.contains("listen-error PermissionDenied: ") && report.contains("127.0.0.1:42"),
            "{scheduling:?}: {report}"
        );
    }
}
