//! Node's `cluster.disconnect()` and `setupPrimary` semantics (issue 17, items 4 and 7),
//! each test named after the Node test whose behaviour it reproduces.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cluster_core::{Event, Settings, setup_master};
use cluster_tests::{
    TestMsg, http_get, next_message, wait_event, wait_listening, within, worker_exe,
    worker_settings,
};

/// test-cluster-disconnect: workers serve, `cluster.disconnect()` ends every one of them,
/// then the same cluster starts a fresh set, which serves again.
#[tokio::test]
async fn test_cluster_disconnect() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    for round in 0..2 {
        let workers: Vec<_> = (0..2).map(|_| cluster.fork(&[]).expect("fork")).collect();
        let address = wait_listening(&mut events, 2).await;
        let (status, body) = http_get(address, "/").await.expect("served");
        assert_eq!(status, 200, "round {round}");
        let pid: u32 = body.parse().expect("a pid");
        assert!(workers.iter().any(|w| w.pid() == pid), "round {round}");
        within(15, "disconnect", cluster.disconnect()).await;
        assert!(cluster.workers().is_empty(), "round {round}");
        for worker in &workers {
            let exit = worker.exit_status().expect("exited");
            assert_eq!(exit.code, Some(0), "round {round}");
            assert!(worker.exited_after_disconnect());
        }
        assert_eq!(*cluster.phase().borrow(), cluster_core::Phase::Running);
    }
    cluster.stop(cluster_core::StopMode::Graceful).await;
    assert!(matches!(
        cluster.fork(&[]),
        Err(cluster_core::ForkError::Stopping)
    ));
}

/// test-cluster-disconnect-with-no-workers and test-cluster-disconnect-idle-worker:
/// `disconnect()` with no worker returns at once; with idle workers it returns once they
/// have all exited, and `workers()` is empty.
#[tokio::test]
async fn test_cluster_disconnect_idle_worker() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    within(1, "disconnect with no worker", cluster.disconnect()).await;
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    cluster.fork(&[]).expect("fork");
    for _ in 0..2 {
        next_message(&mut events, 10).await;
    }
    within(15, "disconnect", cluster.disconnect()).await;
    assert!(cluster.workers().is_empty());
}

/// A dispatch forking on `disconnect` as in Node, with the master's own respawn on: a
/// worker that leaves on its own is replaced once, not twice (the dispatch's fork gets the
/// replacement the respawn made at `leaving`).
#[tokio::test]
async fn a_node_style_disconnect_dispatch_and_the_respawn_replace_once() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let forks = Arc::new(AtomicUsize::new(0));
    let counted = forks.clone();
    cluster.on_fork(move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let replacement = Arc::new(std::sync::Mutex::new(None));
    let got = replacement.clone();
    cluster.on_disconnect(move |cluster, _| {
        if let Ok(new) = cluster.fork(&[]) {
            *got.lock().expect("lock") = Some(new.id());
        }
    });
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await;
    let running = cluster.clone();
    let run = tokio::spawn(async move { running.run().await });
    worker
        .send(&TestMsg::new("disconnect", ""))
        .await
        .expect("send");
    wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(w, _) if w.id() == worker.id() => Some(()),
        _ => None,
    })
    .await;
    let new = replacement
        .lock()
        .expect("lock")
        .expect("the dispatch forked");
    assert_eq!(cluster.workers().len(), 1, "replaced once");
    assert_eq!(cluster.workers()[0].id(), new);
    cluster.stop(cluster_core::StopMode::Graceful).await;
    within(10, "run", run).await.expect("join").expect("run");
    assert_eq!(
        forks.load(Ordering::SeqCst),
        2,
        "the first worker and one replacement"
    );
}

/// test-cluster-setup-primary-cumulative: the settings can be read, and repeated
/// `setup_master` calls merge (a closure changes what it names, the rest is kept).
#[tokio::test]
async fn test_cluster_setup_primary_cumulative() {
    let cluster = setup_master(Settings::new()).expect("setup");
    let defaults = cluster.settings();
    assert_ne!(defaults.exec_path(), Some(worker_exe().as_path()));
    // Node: `args` defaults to the primary's own arguments.
    let own: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    assert_eq!(defaults.arguments(), own.as_slice());

    cluster
        .setup_master(|s: Settings| s.exec(worker_exe()))
        .expect("exec");
    assert_eq!(cluster.settings().exec_path(), Some(worker_exe().as_path()));
    cluster
        .setup_master(|s: Settings| s.args(["foo", "bar"]))
        .expect("args");
    let settings = cluster.settings();
    assert_eq!(settings.exec_path(), Some(worker_exe().as_path()));
    assert_eq!(settings.arguments(), ["foo", "bar"]);
    cluster
        .setup_master(|s: Settings| s.stop_timeout(Duration::from_secs(7)))
        .expect("stop timeout");
    let settings = cluster.settings();
    assert_eq!(settings.exec_path(), Some(worker_exe().as_path()));
    assert_eq!(settings.arguments(), ["foo", "bar"]);
    assert_eq!(settings.stop_timeout_value(), Duration::from_secs(7));

    // A bad change is refused, naming the setting, and nothing changes.
    let err = cluster
        .setup_master(|s: Settings| s.exec("/nonexistent/worker"))
        .expect_err("refused");
    assert_eq!(err.setting, "exec");
    assert_eq!(cluster.settings().exec_path(), Some(worker_exe().as_path()));

    // A whole `Settings` replaces them (every key given).
    cluster
        .setup_master(worker_settings("serve"))
        .expect("replace");
    assert!(cluster.settings().arguments().is_empty());
}

/// test-cluster-setup-primary-emit and test-cluster-setup-primary-argv: the `setup` event
/// carries the settings, and the first one (from `setup_master()`, before anybody could
/// subscribe) is not lost: a stream and the first callbacks start with it.
#[tokio::test]
async fn test_cluster_setup_primary_emit() {
    let cluster = setup_master(worker_settings("serve").arg("first")).expect("setup");
    let mut events = cluster.events();
    let first = wait_event(&mut events, 1, "setup", |e| match e {
        Event::Setup(settings) => Some(settings.clone()),
        _ => None,
    })
    .await;
    assert_eq!(first.arguments(), ["first"]);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    cluster.on_setup(move |_, settings| {
        let _ = tx.send(settings.arguments().to_vec());
    });
    let running = cluster.clone();
    let run = tokio::spawn(async move { running.run().await });
    let seen = within(5, "the first setup callback", rx.recv()).await;
    assert_eq!(seen, Some(vec!["first".into()]));
    cluster.stop(cluster_core::StopMode::Fast).await;
    within(10, "run", run).await.expect("join").expect("run");
}

/// test-cluster-setup-primary-multiple: one `setup` per call, in order, each with that
/// call's settings.
#[tokio::test]
async fn test_cluster_setup_primary_multiple() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    for arg in ["one", "two", "three"] {
        cluster
            .setup_master(move |s: Settings| s.arg(arg))
            .expect("setup");
    }
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let settings = wait_event(&mut events, 5, "setup", |e| match e {
            Event::Setup(settings) => Some(settings.clone()),
            _ => None,
        })
        .await;
        seen.push(settings.arguments().len());
    }
    assert_eq!(
        seen,
        [0, 1, 2, 3],
        "the first, then one per call, cumulative"
    );
}

/// test-cluster-disconnect-race: worker 1 is disconnected as it starts listening while
/// worker 2 is forked and disconnects itself as soon as it is online: both exit 0.
#[tokio::test]
async fn test_cluster_disconnect_race() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    let first = cluster.fork(&[]).expect("fork");
    let forking = cluster.clone();
    first.on_listening(move |w, _| {
        w.disconnect();
        // Disconnected as soon as it is online, it may find its channel closing when it
        // asks to listen: then it ends as asked (exit 0), as Node's worker does.
        let second = forking
            .fork(&[("TEST_DISCONNECT_ON_ERROR", "1")])
            .expect("fork");
        second.on_online(|w| w.disconnect());
    });
    let mut codes = Vec::new();
    while codes.len() < 2 {
        let exit = wait_event(&mut events, 10, "exit", |e| match e {
            Event::Exit(w, exit) => Some((w.id(), *exit, w.exited_after_disconnect())),
            _ => None,
        })
        .await;
        codes.push(exit);
    }
    codes.sort_by_key(|(id, _, _)| *id);
    for (id, exit, intended) in codes {
        assert_eq!((exit.code, exit.signal), (Some(0), None), "worker {id}");
        assert!(intended, "worker {id}");
    }
}

/// test-cluster-disconnect-leak: `cluster.disconnect()` right after `fork()` (the worker then
/// listens) still gets the worker's `disconnect` and `exit`.
#[tokio::test]
async fn test_cluster_disconnect_leak() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    within(15, "disconnect", cluster.disconnect()).await;
    let mut seen = Vec::new();
    wait_event(&mut events, 10, "exit", |e| match e {
        Event::Disconnect(w) if w.id() == worker.id() => {
            seen.push("disconnect");
            None
        }
        Event::Exit(w, _) if w.id() == worker.id() => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(seen, ["disconnect"]);
    assert!(worker.is_dead());
    assert!(worker.exited_after_disconnect());
}
