//! Node's own cluster tests of settings, messages and disconnects, ported: each test is named
//! after the Node file and asserts the same observable behaviour (see
//! `docs/NODE_COMPATIBILITY.md`).

use cluster_core::{Event, EventStream, Phase, setup_master};
use cluster_tests::{TestMsg, next_message, wait_event, within, worker_settings};

/// The worker's answer to `kind` with `data`.
async fn ask(
    events: &mut EventStream,
    worker: &cluster_core::Worker,
    kind: &str,
    data: &str,
) -> TestMsg {
    worker.send(&TestMsg::new(kind, data)).await.expect("send");
    next_message(events, 10).await.1
}

/// test-cluster-concurrent-disconnect: every worker told to disconnect at the same moment
/// exits with code 0 and no signal.
#[tokio::test]
async fn test_cluster_concurrent_disconnect() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let workers: Vec<_> = (0..4).map(|_| cluster.fork(&[]).expect("fork")).collect();
    for _ in 0..4 {
        next_message(&mut events, 10).await; // hello
    }
    for worker in &workers {
        worker.disconnect();
    }
    for _ in 0..4 {
        let (worker, exit) = wait_event(&mut events, 10, "an exit", |e| match e {
            Event::Exit(w, exit) => Some((w.clone(), *exit)),
            _ => None,
        })
        .await;
        assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
        assert!(worker.exited_after_disconnect());
    }
    cluster.disconnect().await;
}

/// test-cluster-cwd: a worker starts in the primary's working directory unless the settings
/// name another.
#[tokio::test]
async fn test_cluster_cwd() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let here = std::env::current_dir().expect("cwd");
    let answer = ask(&mut events, &worker, "cwd", "").await;
    assert_eq!(answer, TestMsg::new("cwd", here.display().to_string()));

    let elsewhere = std::env::temp_dir().canonicalize().expect("temp dir");
    cluster
        .setup_master(worker_settings("serve").cwd(&elsewhere))
        .expect("setup with cwd");
    let moved = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let answer = ask(&mut events, &moved, "cwd", "").await;
    assert_eq!(answer, TestMsg::new("cwd", elsewhere.display().to_string()));
    cluster.disconnect().await;
}

/// test-cluster-disconnect-with-no-workers: disconnecting a cluster with no worker completes
/// at once.
#[tokio::test]
async fn test_cluster_disconnect_with_no_workers() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    within(5, "the disconnect", cluster.disconnect()).await;
    assert_eq!(*cluster.phase().borrow(), Phase::Stopped);
    assert!(cluster.workers().is_empty());
}

/// test-cluster-fork-env: variables given to `fork` reach the worker and override those it
/// would inherit. Differs: Node overrides a variable of the primary's own environment; a
/// threaded Rust process cannot change its environment safely, so the inherited value comes
/// from `Settings::env` here.
#[tokio::test]
async fn test_cluster_fork_env() {
    let settings = worker_settings("serve").env("cluster_test_overwrite", "old");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster
        .fork(&[
            ("cluster_test_prop", "custom"),
            ("cluster_test_overwrite", "new"),
        ])
        .expect("fork");
    next_message(&mut events, 10).await; // hello
    let prop = ask(&mut events, &worker, "env", "cluster_test_prop").await;
    assert_eq!(prop, TestMsg::new("env", "custom"));
    let overwrite = ask(&mut events, &worker, "env", "cluster_test_overwrite").await;
    assert_eq!(overwrite, TestMsg::new("env", "new"));
    cluster.disconnect().await;
}

/// test-cluster-invalid-message: a user message shaped like the runtime's own (Node's
/// `{cmd: 'NODE_CLUSTER', ack: -1}`; here also the JSON of `Control::Disconnect`) is only a
/// user message: the worker reads it as such, is not disconnected by it, and exits 0 when
/// disconnected.
#[tokio::test]
async fn test_cluster_invalid_message() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let node_shaped = serde_json::json!({ "cmd": "NODE_CLUSTER", "ack": -1 });
    worker.send(&node_shaped).await.expect("send");
    assert_eq!(next_message(&mut events, 10).await.1.kind, "undecodable");
    worker
        .send(&cluster_ipc::Control::Disconnect)
        .await
        .expect("send");
    assert_eq!(next_message(&mut events, 10).await.1.kind, "undecodable");
    // Still connected and serving messages.
    let echo = ask(&mut events, &worker, "ping", "after").await;
    assert_eq!(echo, TestMsg::new("echo", "after"));
    assert!(worker.is_connected());
    worker.disconnect();
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(_, exit) => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    within(10, "the stop", cluster.disconnect()).await;
}

/// test-cluster-disconnect-before-exit: `cluster.disconnect()` called once a worker has
/// disconnected (from its `disconnect` event) skips it without error and completes.
#[tokio::test]
async fn test_cluster_disconnect_before_exit() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    wait_event(&mut events, 10, "online", |e| {
        matches!(e, Event::Online(_)).then_some(())
    })
    .await;
    worker.disconnect();
    wait_event(&mut events, 10, "disconnect", |e| {
        matches!(e, Event::Disconnect(_)).then_some(())
    })
    .await;
    within(10, "the cluster's disconnect", cluster.disconnect()).await;
    let exit = worker.exit_status().expect("exited");
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    assert!(cluster.workers().is_empty());
}

/// test-cluster-eaddrinuse: a worker's listen on a port another process holds fails with
/// "address in use"; once the port is free, a new worker listens on it and serves.
#[tokio::test]
async fn test_cluster_eaddrinuse() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = holder.local_addr().expect("address");
    let settings = worker_settings("serve").env("TEST_LISTEN", address.to_string());
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    let (_, hello) = next_message(&mut events, 10).await;
    assert_eq!(hello.kind, "hello");
    let (_, error) = next_message(&mut events, 10).await;
    assert_eq!(error.kind, "listen-error");
    assert!(error.data.contains("in use"), "{}", error.data);

    drop(holder);
    let retry = cluster.fork(&[]).expect("fork again");
    let listening = cluster_tests::wait_listening(&mut events, 1).await;
    assert_eq!(listening, address);
    let (status, body) = cluster_tests::http_get(address, "/").await.expect("GET");
    assert_eq!((status, body), (200, retry.pid().to_string()));
    cluster.disconnect().await;
}

/// test-cluster-server-restart-none and test-cluster-server-restart-rr: a worker stops its
/// server and listens again (on the same shared address); it and the worker that kept
/// listening both exit 0.
#[tokio::test]
async fn test_cluster_server_restart_none_and_rr() {
    for scheduling in [
        cluster_core::Scheduling::Shared,
        cluster_core::Scheduling::RoundRobin,
    ] {
        let settings = worker_settings("serve")
            .env("TEST_LISTEN", "127.0.0.1:0")
            .scheduling(scheduling);
        let cluster = setup_master(settings.clone()).expect("setup");
        let mut events = cluster.events();
        let first = cluster.fork(&[]).expect("fork");
        let address = cluster_tests::wait_listening(&mut events, 1).await;
        cluster
            .setup_master(
                settings
                    .env("TEST_MODE", "relisten")
                    .env("TEST_LISTEN", address.to_string()),
            )
            .expect("setup");
        let second = cluster.fork(&[]).expect("fork");
        let relistened = loop {
            let (id, msg) = next_message(&mut events, 10).await;
            if id == second.id() && msg.kind == "relistened" {
                break msg.data;
            }
        };
        assert_eq!(relistened, format!("{address} {address}"), "{scheduling:?}");
        let exit = wait_event(&mut events, 10, "the second worker's exit", |e| match e {
            Event::Exit(w, exit) if w.id() == second.id() => Some(*exit),
            _ => None,
        })
        .await;
        assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
        // The first worker still serves, then exits 0 when disconnected.
        let (status, body) = cluster_tests::http_get(address, "/").await.expect("GET");
        assert_eq!((status, body), (200, first.pid().to_string()));
        first.disconnect();
        let exit = wait_event(&mut events, 10, "the first worker's exit", |e| match e {
            Event::Exit(w, exit) if w.id() == first.id() => Some(*exit),
            _ => None,
        })
        .await;
        assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
        cluster.disconnect().await;
    }
}

/// test-cluster-net-listen-ipv6only-false: workers listening on `[::]` share one
/// dual-stack port; an IPv4 client is served.
#[tokio::test]
async fn test_cluster_net_listen_ipv6only_false() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 on this machine");
        return;
    }
    let settings = worker_settings("serve").env("TEST_LISTEN", "[::]:0");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let workers: Vec<u32> = (0..3)
        .map(|_| cluster.fork(&[]).expect("fork").pid())
        .collect();
    let address = cluster_tests::wait_listening(&mut events, 3).await;
    assert!(address.is_ipv6(), "{address}");
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], address.port()));
    let (status, body) = cluster_tests::http_get(v4, "/")
        .await
        .expect("GET over IPv4");
    assert_eq!(status, 200);
    assert!(workers.contains(&body.parse().expect("pid")), "{body}");
    cluster.disconnect().await;
}

/// The exit of worker `id`; asserts its `disconnect` came first.
async fn disconnect_then_exit(events: &mut EventStream, id: u32) -> cluster_core::Exit {
    let mut disconnected = false;
    wait_event(events, 10, "disconnect, then exit", |e| match e {
        Event::Disconnect(w) if w.id() == id => {
            disconnected = true;
            None
        }
        Event::Exit(w, exit) if w.id() == id => {
            assert!(disconnected, "exit before disconnect");
            Some(*exit)
        }
        _ => None,
    })
    .await
}

/// test-cluster-disconnect-leak: `cluster.disconnect()` right after a fork, before the worker
/// listens: its `disconnect` and `exit` still fire, in that order, and the stop completes.
#[tokio::test]
async fn test_cluster_disconnect_leak() {
    let settings = worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    within(10, "the cluster's disconnect", cluster.disconnect()).await;
    let exit = disconnect_then_exit(&mut events, worker.id()).await;
    // It ends by itself, never killed: 0 when the disconnect reached it before its listen
    // request (its acceptor ends at once), 3 (the test worker's code for a failed listen)
    // when its listen request met the closed channel.
    assert!(
        exit.signal.is_none() && matches!(exit.code, Some(0 | 3)),
        "{exit}"
    );
    assert!(worker.is_dead());
}

/// test-cluster-disconnect-race: one worker is disconnected while another is forked and
/// disconnected as soon as it is online; both exit 0.
#[tokio::test]
async fn test_cluster_disconnect_race() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let first = cluster.fork(&[]).expect("fork");
    wait_event(&mut events, 10, "online", |e| {
        matches!(e, Event::Online(w) if w.id() == first.id()).then_some(())
    })
    .await;
    first.disconnect();
    let second = cluster.fork(&[]).expect("fork");
    let mut exits = Vec::new();
    while exits.len() < 2 {
        let event = within(10, "events", events.next())
            .await
            .expect("event stream");
        match event {
            Event::Online(w) if w.id() == second.id() => w.disconnect(),
            Event::Exit(w, exit) => {
                assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
                assert!(w.exited_after_disconnect());
                exits.push(w.id());
            }
            _ => {}
        }
    }
    exits.sort();
    assert_eq!(exits, [first.id(), second.id()]);
    cluster.disconnect().await;
}

/// test-cluster-disconnect-unshared-tcp: a worker that listens and one that does not;
/// disconnecting the second, then the whole cluster, ends both with code 0 and lets the
/// primary finish.
#[tokio::test]
async fn test_cluster_disconnect_unshared_tcp() {
    let listening = worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0");
    let cluster = setup_master(listening).expect("setup");
    let mut events = cluster.events();
    let server = cluster.fork(&[]).expect("fork");
    cluster_tests::wait_listening(&mut events, 1).await;
    cluster
        .setup_master(worker_settings("serve"))
        .expect("setup");
    let idle = cluster.fork(&[]).expect("fork");
    wait_event(&mut events, 10, "online", |e| {
        matches!(e, Event::Online(w) if w.id() == idle.id()).then_some(())
    })
    .await;
    idle.disconnect();
    let exit = disconnect_then_exit(&mut events, idle.id()).await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    within(10, "the cluster's disconnect", cluster.disconnect()).await;
    let exit = server.exit_status().expect("exited");
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    assert_eq!(*cluster.phase().borrow(), Phase::Stopped);
}

/// test-cluster-ipc-throw: in round-robin mode, a listen error (the port is held by the
/// primary's own server) reaches the worker's `listen`.
#[tokio::test]
async fn test_cluster_ipc_throw() {
    let primary_server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = primary_server.local_addr().expect("address");
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", address.to_string())
        .scheduling(cluster_core::Scheduling::RoundRobin);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let (_, error) = next_message(&mut events, 10).await;
    assert_eq!(error.kind, "listen-error");
    assert!(
        error.data.contains(&address.to_string()) && error.data.contains("in use"),
        "{}",
        error.data
    );
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(w, exit) if w.id() == worker.id() => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(
        exit.code,
        Some(3),
        "the test worker exits 3 on a listen error"
    );
    cluster.disconnect().await;
}

/// test-cluster-worker-no-exit: a worker disconnected while a client's connection is open
/// does not exit until that connection ends: the client, finishing its request after the
/// `disconnect`, is still answered by it, and only then does it exit 0.
#[tokio::test]
async fn test_cluster_worker_no_exit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let settings = worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let address = cluster_tests::wait_listening(&mut events, 1).await;
    let mut client = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write half a request");
    // Taken by the worker (out of the accept queue), which now waits for the rest.
    cluster_tests::eventually(10, "the worker accepting", || {
        cluster_tests::accept_queue(address.port()) == Some(0)
    })
    .await;
    worker.disconnect();
    wait_event(&mut events, 10, "disconnect", |e| {
        matches!(e, Event::Disconnect(_)).then_some(())
    })
    .await;
    assert!(!worker.is_dead());
    client
        .write_all(b"Host: x\r\n\r\n")
        .await
        .expect("write the rest");
    let mut response = String::new();
    within(10, "the answer", client.read_to_string(&mut response))
        .await
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with(&worker.pid().to_string()), "{response}");
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(_, exit) => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    cluster.disconnect().await;
}
