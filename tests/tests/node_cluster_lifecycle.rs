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
