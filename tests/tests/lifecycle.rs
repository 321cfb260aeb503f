//! A worker's life as the master sees it: fork, online, listening, disconnect, exit.

use cluster_core::{Event, Signal, WorkerState, setup_master};
use cluster_tests::{TestMsg, next_message, wait_event, worker_settings};

#[tokio::test]
async fn forked_workers_come_online_then_listen_in_order() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    let workers: Vec<_> = (0..3).map(|_| cluster.fork(&[]).expect("fork")).collect();
    assert_eq!(
        workers.iter().map(|w| w.id()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let mut seen: Vec<(u32, &str)> = Vec::new();
    let mut ports = Vec::new();
    while seen.iter().filter(|(_, e)| *e == "listening").count() < 3 {
        let event = cluster_tests::within(10, "events", events.next())
            .await
            .expect("stream");
        match event {
            Event::Fork(w) => seen.push((w.id(), "fork")),
            Event::Online(w) => seen.push((w.id(), "online")),
            Event::Listening(w, address) => {
                seen.push((w.id(), "listening"));
                ports.push(address.port());
            }
            _ => {}
        }
    }
    for id in 1..=3 {
        let order: Vec<&str> = seen
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, e)| *e)
            .collect();
        assert_eq!(order, ["fork", "online", "listening"], "worker {id}");
    }
    // Port 0 was bound once by the master and shared: every worker got the same port.
    assert!(ports.iter().all(|p| *p == ports[0] && *p != 0), "{ports:?}");
    assert!(workers.iter().all(|w| w.state() == WorkerState::Listening));
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn env_and_args_reach_the_worker_and_the_handoff_variables_stay() {
    let settings = worker_settings("serve").arg("--alpha").arg("beta");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[("TEST_VALUE", "from-fork")]).expect("fork");
    let (_, hello) = next_message(&mut events, 10).await;
    assert_eq!(
        hello,
        TestMsg::new("hello", "args=--alpha,beta value=from-fork still_set=true")
    );
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn disconnect_ends_with_code_0_and_exited_after_disconnect() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    wait_event(&mut events, 10, "listening", |e| {
        matches!(e, Event::Listening(..)).then_some(())
    })
    .await;
    worker.disconnect();
    wait_event(&mut events, 10, "disconnect", |e| {
        matches!(e, Event::Disconnect(_)).then_some(())
    })
    .await;
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(_, exit) => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(exit.code, Some(0), "{exit}");
    assert!(worker.exited_after_disconnect());
    assert!(worker.is_dead());
    assert!(cluster.workers().is_empty());
}

#[tokio::test]
async fn a_disconnect_asked_by_the_worker_itself_counts_as_intended() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello: the worker reads its channel now
    worker
        .send(&TestMsg::new("disconnect", ""))
        .await
        .expect("send");
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(_, exit) => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(exit.code, Some(0));
    assert!(worker.exited_after_disconnect());
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported_and_crashes_are_not_intended() {
    let cluster = setup_master(worker_settings("exit:7")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(_, exit) => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!((exit.code, exit.signal), (Some(7), None));
    assert!(!worker.exited_after_disconnect());

    cluster
        .setup_master(worker_settings("serve"))
        .expect("setup again");
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await;
    worker.kill(Signal::SIGKILL);
    let mut order = Vec::new();
    let exit = wait_event(&mut events, 10, "exit", |e| match e {
        Event::Disconnect(_) => {
            order.push("disconnect");
            None
        }
        Event::Exit(_, exit) => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(
        order,
        ["disconnect"],
        "a killed worker still gets its disconnect first"
    );
    assert_eq!((exit.code, exit.signal), (None, Some(Signal::SIGKILL)));
    assert!(!worker.exited_after_disconnect());
}

#[tokio::test]
async fn fork_is_refused_once_the_cluster_stops() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    cluster.fork(&[]).expect("fork");
    cluster.stop(cluster_core::StopMode::Graceful).await;
    assert!(matches!(
        cluster.fork(&[]),
        Err(cluster_core::ForkError::Stopping)
    ));
}

#[tokio::test]
async fn a_bad_setting_is_an_error_naming_it() {
    let err = setup_master(worker_settings("serve").exec("/nonexistent/worker"))
        .err()
        .expect("must fail");
    assert_eq!(err.setting(), Some("exec"));
    assert!(err.to_string().contains("/nonexistent/worker"), "{err}");
}

#[tokio::test]
async fn fork_async_starts_workers_that_serve_and_is_refused_once_stopping() {
    // The runtime stays free while the spawner thread starts the process: a task of the
    // same current-thread runtime makes progress while both forks are awaited.
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticking = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            ticking.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    });
    let (a, b) = tokio::join!(
        cluster.fork_async(&[]),
        cluster.fork_async(&[("TEST_VALUE", "b")])
    );
    let (a, b) = (a.expect("fork a"), b.expect("fork b"));
    assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 0);
    ticker.abort();
    assert_ne!(a.id(), b.id());
    assert!(a.pid() > 0 && b.pid() > 0);
    let address = cluster_tests::wait_listening(&mut events, 2).await;
    let (status, body) = cluster_tests::http_get(address, "/").await.expect("GET");
    assert_eq!(status, 200);
    let pid: u32 = body.trim().parse().expect("a pid");
    assert!([a.pid(), b.pid()].contains(&pid), "{pid}");
    cluster.stop(cluster_core::StopMode::Graceful).await;
    assert!(matches!(
        cluster.fork_async(&[]).await,
        Err(cluster_core::ForkError::Stopping)
    ));
}
