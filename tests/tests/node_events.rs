//! Node's per-worker events, `disconnect` and `kill` semantics (issue 17, items 1–3), each
//! test named after the Node test whose behaviour it reproduces.

use std::time::Duration;

use cluster_core::{Event, Signal, WorkerEvent, WorkerState, setup_master};
use cluster_tests::{TestMsg, accept_queue, next_message, wait_event, within, worker_settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What a per-worker event is called, for order assertions.
fn name(event: &WorkerEvent) -> &'static str {
    match event {
        WorkerEvent::Fork => "fork",
        WorkerEvent::Online => "online",
        WorkerEvent::Listening(_) => "listening",
        WorkerEvent::Message(_) => "message",
        WorkerEvent::Leaving => "leaving",
        WorkerEvent::Disconnect => "disconnect",
        WorkerEvent::Exit(_) => "exit",
        _ => "other",
    }
}

/// Collects a worker's events until its `Exit`.
async fn all_events(worker: &cluster_core::Worker, secs: u64) -> Vec<WorkerEvent> {
    let mut events = worker.events();
    within(secs, "the worker's events up to exit", async {
        let mut seen = Vec::new();
        while let Some(event) = events.next().await {
            seen.push(event);
        }
        seen
    })
    .await
}

/// Per-worker events (Node's `worker.on(...)`): a stream asked for after the worker already
/// ran still starts at its fork, and its callbacks run without `Cluster::run`, in order.
#[tokio::test]
async fn per_worker_events_come_in_order_from_fork_to_exit_without_run() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut cluster_events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let order = tx.clone();
    worker.on(move |w, e| {
        let _ = order.send((w.id(), name(e)));
    });
    let on_exit = tx.clone();
    worker.on_exit(move |_, exit| {
        let _ = on_exit.send((exit.code.unwrap_or(-1) as u32, "exit-callback"));
    });
    wait_event(&mut cluster_events, 10, "listening", |e| {
        matches!(e, Event::Listening(..)).then_some(())
    })
    .await;
    // Asked for late: the start is replayed (not the hello: the callbacks consumed it live).
    worker.disconnect();
    let seen = all_events(&worker, 10).await;
    let names: Vec<_> = seen.iter().map(name).collect();
    assert_eq!(
        names,
        [
            "fork",
            "online",
            "listening",
            "leaving",
            "disconnect",
            "exit"
        ]
    );

    // Nobody consumed this one's events: its early messages are replayed too, in place.
    let quiet = cluster.fork(&[]).expect("fork");
    wait_event(&mut cluster_events, 10, "listening", |e| match e {
        Event::Listening(w, _) if w.id() == quiet.id() => Some(()),
        _ => None,
    })
    .await;
    quiet.disconnect();
    let seen = all_events(&quiet, 10).await;
    let names: Vec<_> = seen.iter().map(name).collect();
    let hello = names.iter().position(|n| *n == "message");
    let listening = names.iter().position(|n| *n == "listening");
    assert!(hello < listening && hello > Some(0), "{names:?}");
    let lifecycle: Vec<_> = names.iter().filter(|n| **n != "message").copied().collect();
    assert_eq!(
        lifecycle,
        [
            "fork",
            "online",
            "listening",
            "leaving",
            "disconnect",
            "exit"
        ]
    );

    let mut callback_order = Vec::new();
    within(10, "the callbacks", async {
        while let Some((id, what)) = rx.recv().await {
            callback_order.push(what);
            if what == "exit-callback" {
                assert_eq!(id, 0, "exit code 0");
                break;
            }
            assert_eq!(id, worker.id());
        }
    })
    .await;
    assert!(callback_order.contains(&"message"), "{callback_order:?}");
    callback_order.retain(|n| *n != "message");
    assert_eq!(
        callback_order,
        [
            "fork",
            "online",
            "listening",
            "leaving",
            "disconnect",
            "exit",
            "exit-callback"
        ],
        "callbacks run one event at a time, in order, the older callback first"
    );
}

/// test-cluster-message: `worker.on('message')` gets what the worker sends, and a message
/// sent to it comes back.
#[tokio::test]
async fn test_cluster_message() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let worker = cluster.fork(&[]).expect("fork");
    let (tx, mut rx) = mpsc::unbounded_channel();
    worker.on_message(move |w, m| {
        let _ = tx.send((w.id(), m.decode::<TestMsg>().expect("decode")));
    });
    let (id, hello) = within(10, "hello", rx.recv()).await.expect("hello");
    assert_eq!((id, hello.kind.as_str()), (worker.id(), "hello"));
    worker
        .send(&TestMsg::new("ping", "42"))
        .await
        .expect("send");
    let (_, echo) = within(10, "echo", rx.recv()).await.expect("echo");
    assert_eq!((echo.kind.as_str(), echo.data.as_str()), ("echo", "42"));
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

/// test-cluster-worker-disconnect: the primary's `worker.disconnect()` → `disconnect` and
/// `exit` once each, on the cluster and on the worker; `exitedAfterDisconnect` true; the
/// state is disconnected inside `disconnect`, dead at `exit`; code 0.
#[tokio::test]
async fn test_cluster_worker_disconnect() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The callbacks run on their own task: the state may have moved on when they run, but
    // never back to connected.
    worker.on(move |w, e| match e {
        WorkerEvent::Disconnect => {
            let state = w.state() >= WorkerState::Disconnected;
            let _ = tx.send(("disconnect", state, w.exited_after_disconnect()));
        }
        WorkerEvent::Exit(_) => {
            let _ = tx.send((
                "exit",
                w.state() == WorkerState::Dead,
                w.exited_after_disconnect(),
            ));
        }
        _ => {}
    });
    wait_event(&mut events, 10, "listening", |e| {
        matches!(e, Event::Listening(..)).then_some(())
    })
    .await;
    worker.disconnect();
    let mut cluster_seen = Vec::new();
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Leaving(_) => {
            cluster_seen.push("leaving");
            None
        }
        Event::Disconnect(w) => {
            assert!(!w.is_connected());
            cluster_seen.push("disconnect");
            None
        }
        Event::Exit(_, exit) => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(cluster_seen, ["leaving", "disconnect"]);
    assert_eq!((exit.code, exit.signal), (Some(0), None));
    assert!(worker.exited_after_disconnect());
    let disconnect = within(5, "worker disconnect", rx.recv()).await;
    assert_eq!(disconnect, Some(("disconnect", true, true)));
    let exit = within(5, "worker exit", rx.recv()).await;
    assert_eq!(exit, Some(("exit", true, true)));
    assert!(within(5, "no more", rx.recv()).await.is_none(), "once each");
    assert!(cluster.workers().is_empty());
}

/// test-cluster-worker-isconnected: `is_connected()` is true right after fork and false in
/// the `disconnect` handler, on both sides (the worker exits 9 if its own `is_connected()`
/// is still true once its channel closed).
#[tokio::test]
async fn test_cluster_worker_isconnected() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_REPORT_CONNECTED", "1")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    assert!(worker.is_connected(), "connected as soon as it is forked");
    let (tx, mut rx) = mpsc::unbounded_channel();
    worker.on_disconnect(move |w| {
        let _ = tx.send(w.is_connected());
    });
    let reported = wait_event(&mut events, 10, "connected", |e| match e {
        Event::Message(_, m) => {
            let msg: TestMsg = m.decode().expect("decode");
            (msg.kind == "connected").then_some(msg.data)
        }
        _ => None,
    })
    .await;
    assert_eq!(reported, "true", "connected inside the worker");
    worker.disconnect();
    assert_eq!(within(10, "disconnect", rx.recv()).await, Some(false));
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(_, exit) => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(
        exit.code,
        Some(0),
        "the worker saw is_connected() false after its channel closed"
    );
}

/// test-cluster-call-and-destroy: inside `disconnect`, `is_connected()` is false and killing
/// the worker is harmless; `exit` still comes once.
#[tokio::test]
async fn test_cluster_call_and_destroy() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let (tx, mut rx) = mpsc::unbounded_channel();
    worker.on_disconnect(move |w| {
        let _ = tx.send(w.is_connected());
        w.terminate();
    });
    next_message(&mut events, 10).await;
    worker.disconnect();
    assert_eq!(within(10, "disconnect", rx.recv()).await, Some(false));
    let mut exits = 0;
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(_, exit) => {
            exits += 1;
            Some(*exit)
        }
        _ => None,
    })
    .await;
    assert_eq!(exits, 1);
    assert!(
        exit.code == Some(0) || exit.signal == Some(Signal::SIGTERM),
        "{exit}"
    );
    assert!(worker.exited_after_disconnect());
}

/// Node's documented pattern: `worker.disconnect()`, then kill it if `disconnect` has not
/// come within N seconds. A worker whose runtime is blocked never drains, so its
/// `disconnect` never comes and it is killed; a healthy one disconnects in time.
#[tokio::test]
async fn node_pattern_disconnect_then_kill_if_no_disconnect_in_time() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut cluster_events = cluster.events();
    let healthy = cluster.fork(&[]).expect("fork");
    let stuck = cluster.fork(&[]).expect("fork");
    for _ in 0..2 {
        next_message(&mut cluster_events, 10).await;
    }
    stuck
        .send(&TestMsg::new("deaf", ""))
        .await
        .expect("send deaf");
    wait_event(&mut cluster_events, 10, "deaf ack", |e| match e {
        Event::Message(w, m) if w.id() == stuck.id() => {
            (m.decode::<TestMsg>().expect("decode").kind == "deaf").then_some(())
        }
        _ => None,
    })
    .await;

    let disconnect_or_kill = |worker: cluster_core::Worker| async move {
        let mut events = worker.events();
        worker.disconnect();
        let disconnected = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(event) = events.next().await {
                if let WorkerEvent::Disconnect = event {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !disconnected {
            worker.kill(Signal::SIGKILL);
        }
        let exit = within(10, "exit", async {
            while let Some(event) = events.next().await {
                if let WorkerEvent::Exit(exit) = event {
                    return exit;
                }
            }
            panic!("no exit")
        })
        .await;
        (disconnected, exit)
    };
    let (healthy_disconnected, healthy_exit) = disconnect_or_kill(healthy.clone()).await;
    assert!(healthy_disconnected);
    assert_eq!(healthy_exit.code, Some(0));
    let (stuck_disconnected, stuck_exit) = disconnect_or_kill(stuck.clone()).await;
    assert!(!stuck_disconnected, "a blocked worker never drains");
    assert_eq!(stuck_exit.signal, Some(Signal::SIGKILL));
}

/// test-cluster-kill-infinite-loop: killing a worker stuck in a loop ends it. Here the
/// default kill ([`Worker::terminate`], SIGTERM) is escalated to SIGKILL after
/// `stop_timeout` since the blocked runtime never runs its SIGTERM drain (Node: the process
/// dies of SIGTERM); a healthy worker drains and exits 0.
#[tokio::test]
async fn test_cluster_kill_infinite_loop() {
    let cluster =
        setup_master(worker_settings("serve").stop_timeout(Duration::from_secs(1))).expect("setup");
    let mut events = cluster.events();
    let stuck = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await;
    stuck.send(&TestMsg::new("deaf", "")).await.expect("deaf");
    next_message(&mut events, 10).await;
    stuck.terminate();
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(w, exit) if w.id() == stuck.id() => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!((exit.code, exit.signal), (None, Some(Signal::SIGKILL)));
    assert!(
        !stuck.exited_after_disconnect(),
        "a kill is not a disconnect"
    );

    let healthy = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await;
    healthy.terminate();
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(w, exit) if w.id() == healthy.id() => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(exit.code, Some(0), "SIGTERM drains a healthy worker");
    assert!(healthy.exited_after_disconnect());
}

/// test-cluster-worker-destroy: the worker's own `destroy()`, while connected and after it
/// disconnected itself; both fire `disconnect` and `exit`, code 0, intended.
#[tokio::test]
async fn test_cluster_worker_destroy() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    for how in ["destroy", "disconnect-destroy"] {
        let worker = cluster.fork(&[]).expect("fork");
        next_message(&mut events, 10).await;
        worker.send(&TestMsg::new(how, "")).await.expect("send");
        let seen = all_events(&worker, 10).await;
        let names: Vec<_> = seen.iter().map(name).collect();
        assert!(
            names.ends_with(&["leaving", "disconnect", "exit"]),
            "{how}: {names:?}"
        );
        let Some(WorkerEvent::Exit(exit)) = seen.last() else {
            panic!("{how}: no exit")
        };
        assert_eq!((exit.code, exit.signal), (Some(0), None), "{how}");
        assert!(worker.exited_after_disconnect(), "{how}");
    }
}

/// test-cluster-kill-disconnect: the worker's own `kill()` and `disconnect()` both leave
/// `exited_after_disconnect` true at `disconnect` and at `exit`.
#[tokio::test]
async fn test_cluster_kill_disconnect() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    for how in ["kill", "disconnect"] {
        let worker = cluster.fork(&[]).expect("fork");
        next_message(&mut events, 10).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        worker.on(move |w, e| {
            if matches!(e, WorkerEvent::Disconnect | WorkerEvent::Exit(_)) {
                let _ = tx.send(w.exited_after_disconnect());
            }
        });
        worker.send(&TestMsg::new(how, "")).await.expect("send");
        assert_eq!(
            within(10, "disconnect", rx.recv()).await,
            Some(true),
            "{how}"
        );
        assert_eq!(within(10, "exit", rx.recv()).await, Some(true), "{how}");
    }
}

/// test-cluster-worker-wait-server-close (and test-cluster-worker-no-exit): the
/// `disconnect` comes after the worker's server closed, i.e. after the connection it was
/// serving ended, and the worker lives until then; the early `leaving` comes at once.
#[tokio::test]
async fn test_cluster_worker_wait_server_close() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut cluster_events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let address = cluster_tests::wait_listening(&mut cluster_events, 1).await;
    let mut events = worker.events();
    // A connection the worker has taken and is serving: half a request.
    let mut client = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    cluster_tests::eventually(10, "the worker accepts", || {
        accept_queue(address.port()) == Some(0)
    })
    .await;
    worker.disconnect();
    within(10, "leaving", async {
        while let Some(event) = events.next().await {
            if let WorkerEvent::Leaving = event {
                return;
            }
        }
    })
    .await;
    let early = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
    assert!(
        early.is_err(),
        "nothing after leaving while the connection is open: {early:?}"
    );
    assert!(worker.is_connected(), "not disconnected while serving");
    // test-cluster-worker-no-exit: the disconnected worker does not exit while its client's
    // connection is open.
    assert!(cluster_tests::process_exists(worker.pid()));
    assert!(!worker.is_dead());
    client.write_all(b"\r\n").await.expect("finish");
    let mut response = String::new();
    client
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let rest: Vec<_> = within(10, "disconnect and exit", async {
        let mut rest = Vec::new();
        while let Some(event) = events.next().await {
            rest.push(name(&event));
        }
        rest
    })
    .await;
    assert_eq!(rest, ["disconnect", "exit"]);
}

/// test-cluster-worker-isdead: `is_dead()` is false after fork and true inside `exit`.
#[tokio::test]
async fn test_cluster_worker_isdead() {
    let cluster = setup_master(worker_settings("exit:0")).expect("setup");
    let worker = cluster.fork(&[]).expect("fork");
    assert!(!worker.is_dead());
    let (tx, mut rx) = mpsc::unbounded_channel();
    worker.on_exit(move |w, _| {
        let _ = tx.send(w.is_dead());
    });
    assert_eq!(within(10, "exit", rx.recv()).await, Some(true));
}

/// test-cluster-concurrent-disconnect: workers told to go all at once, some by the
/// master's `disconnect()`, some by their own `destroy()`, all exit 0 with no signal.
#[tokio::test]
async fn test_cluster_concurrent_disconnect() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let workers: Vec<_> = (0..4).map(|_| cluster.fork(&[]).expect("fork")).collect();
    for _ in 0..workers.len() {
        next_message(&mut events, 10).await;
    }
    let exits: Vec<_> = workers.iter().map(|w| w.events()).collect();
    for (i, worker) in workers.iter().enumerate() {
        if i % 2 == 0 {
            worker.disconnect();
        } else {
            worker
                .send(&TestMsg::new("destroy", ""))
                .await
                .expect("send");
        }
    }
    for (worker, mut events) in workers.iter().zip(exits) {
        let exit = within(10, "exit", async {
            while let Some(event) = events.next().await {
                if let WorkerEvent::Exit(exit) = event {
                    return exit;
                }
            }
            panic!("no exit")
        })
        .await;
        assert_eq!(
            (exit.code, exit.signal),
            (Some(0), None),
            "worker {}",
            worker.id()
        );
        assert!(worker.exited_after_disconnect());
    }
}

/// test-cluster-disconnect-before-exit: `cluster.disconnect()` started from a worker's
/// `disconnect` handler passes over the worker already disconnected, without error, and
/// ends the others.
#[tokio::test]
async fn test_cluster_disconnect_before_exit() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let first = cluster.fork(&[]).expect("fork");
    let second = cluster.fork(&[]).expect("fork");
    for _ in 0..2 {
        next_message(&mut events, 10).await;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let all = cluster.clone();
    first.on_disconnect(move |_| {
        let all = all.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            all.disconnect().await;
            let _ = tx.send(());
        });
    });
    first.disconnect();
    within(15, "cluster.disconnect()", rx.recv()).await;
    assert!(first.is_dead() && second.is_dead());
    assert!(cluster.workers().is_empty());
}

/// test-cluster-worker-exit and test-cluster-worker-kill: a listening worker that exits
/// with 42, or is SIGKILLed: `disconnect` and `exit` once each on the cluster and on the
/// worker, the code or signal reported, not intended, the process gone, the worker dead.
#[tokio::test]
async fn test_cluster_worker_exit() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut cluster_events = cluster.events();
    for how in ["exit", "kill"] {
        let worker = cluster.fork(&[]).expect("fork");
        let (tx, mut rx) = mpsc::unbounded_channel();
        worker.on(move |_, e| match e {
            WorkerEvent::Disconnect => {
                let _ = tx.send(("disconnect", None));
            }
            WorkerEvent::Exit(exit) => {
                let _ = tx.send(("exit", Some(*exit)));
            }
            _ => {}
        });
        wait_event(&mut cluster_events, 10, "listening", |e| match e {
            Event::Listening(w, _) if w.id() == worker.id() => Some(()),
            _ => None,
        })
        .await;
        if how == "exit" {
            worker
                .send(&TestMsg::new("exit", "42"))
                .await
                .expect("send");
        } else {
            worker.kill(Signal::SIGKILL);
        }
        let mut cluster_disconnects = 0;
        let exit = wait_event(&mut cluster_events, 10, "exit", |e| match e {
            Event::Disconnect(w) if w.id() == worker.id() => {
                cluster_disconnects += 1;
                None
            }
            Event::Exit(w, exit) if w.id() == worker.id() => Some(*exit),
            _ => None,
        })
        .await;
        assert_eq!(cluster_disconnects, 1, "{how}");
        let expected = if how == "exit" {
            (Some(42), None)
        } else {
            (None, Some(Signal::SIGKILL))
        };
        assert_eq!((exit.code, exit.signal), expected, "{how}");
        assert_eq!(
            within(5, "disconnect", rx.recv()).await,
            Some(("disconnect", None))
        );
        assert_eq!(
            within(5, "exit", rx.recv()).await,
            Some(("exit", Some(exit)))
        );
        assert!(
            within(5, "no more", rx.recv()).await.is_none(),
            "{how}: once each"
        );
        assert!(!worker.exited_after_disconnect(), "{how}: not intended");
        assert!(worker.is_dead());
        assert!(cluster_tests::process_gone(worker.pid()), "{how}");
    }
}
