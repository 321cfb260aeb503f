//! The graceful exit with real workers under real load: a panic gives its request a 500 and
//! nobody else an error, the replacement accepts before the old worker stops, the old worker
//! exits as soon as it is drained (or with code 1 at the kill timeout).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cluster_core::{Event, Exit};
use cluster_tests::{GracefulCluster, KeepAliveClient, Load, TestMsg, wait_event, within};

/// Waits for the exit of the worker with `pid`; returns it and when it came.
async fn exit_of(cluster: &mut GracefulCluster, pid: u32, secs: u64) -> (Exit, Instant) {
    wait_event(
        &mut cluster.events,
        secs,
        "the worker's exit",
        |e| match e {
            Event::Exit(w, exit) if w.pid() == pid => Some((*exit, Instant::now())),
            _ => None,
        },
    )
    .await
}

#[tokio::test]
async fn a_panic_under_load_gives_its_request_a_500_and_every_other_request_a_200() {
    let mut cluster = GracefulCluster::start(2, &[]).await;
    let address = cluster.address;
    let load = Load::start(address, 6);
    load.answers(200).await; // load under way

    let mut failing = KeepAliveClient::new(address);
    let started = Instant::now();
    let answer = failing
        .get("/panic")
        .await
        .expect("an answer to the panicking request");
    let answered_in = started.elapsed();
    assert_eq!(answer.status, 500, "{answer:?}");
    // The body is generic: the panic's message goes to the log, not to the client.
    assert_eq!(answer.body, "500 Internal Server Error\n", "{answer:?}");
    assert!(answer.close);

    // Which worker failed: the one that reports its hand-over as a disconnect.
    let failed = wait_event(&mut cluster.events, 10, "leaving", |e| match e {
        Event::Leaving(w) => Some(w.clone()),
        _ => None,
    })
    .await;
    let (exit, exited_at) = exit_of(&mut cluster, failed.pid(), 10).await;
    assert_eq!(exit.code, Some(0), "drained, not killed: {exit}");
    assert!(failed.exited_after_disconnect());
    // The kill timeout is 20 s; the drain takes the idle grace (0.3 s) at most.
    assert!(exited_at - started < Duration::from_secs(5));

    load.answers(200).await; // load on the replacement
    let ok = load.finish().await;
    assert_eq!(cluster.forked.load(Ordering::SeqCst), 3, "one replacement");
    eprintln!("500 answered in {answered_in:?}; {ok} other requests, all 200");
    cluster.cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn the_replacement_accepts_before_the_failing_worker_stops_accepting() {
    // The last-words hook runs once every server has stopped accepting, and its message
    // reaches the master before the worker disconnects: it marks the stop.
    let mut cluster = GracefulCluster::start(1, &[("LAST_WORDS", "1")]).await;
    let pid = cluster.pid_of_a_worker().await;
    let mut client = KeepAliveClient::new(cluster.address);
    let answer = client.get("/panic").await.expect("answer");
    assert_eq!(answer.status, 500);
    let mut order = Vec::new();
    wait_event(
        &mut cluster.events,
        10,
        "the old worker's last words",
        |e| {
            match e {
                Event::Listening(w, _) if w.pid() != pid => order.push("replacement listening"),
                Event::Message(w, m) if w.pid() == pid => {
                    let msg: TestMsg = m.decode().expect("decode");
                    if msg.kind == "last-words" {
                        order.push("old stopped accepting");
                        return Some(());
                    }
                }
                _ => {}
            }
            None
        },
    )
    .await;
    assert_eq!(order, ["replacement listening", "old stopped accepting"]);
    cluster.cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn a_request_that_never_finishes_makes_the_worker_exit_1_at_the_kill_timeout() {
    let mut cluster = GracefulCluster::start(1, &[("KILL_TIMEOUT_MS", "1500")]).await;
    let pid = cluster.pid_of_a_worker().await;
    let address = cluster.address;
    let hanging = tokio::spawn(async move { KeepAliveClient::new(address).get("/hang").await });
    wait_event(
        &mut cluster.events,
        10,
        "the hanging request",
        |e| match e {
            Event::Message(_, m) => (m.decode::<TestMsg>().ok()?.kind == "hanging").then_some(()),
            _ => None,
        },
    )
    .await;
    let started = Instant::now();
    let answer = KeepAliveClient::new(address)
        .get("/panic")
        .await
        .expect("answer");
    assert_eq!(answer.status, 500);
    let (exit, exited_at) = exit_of(&mut cluster, pid, 10).await;
    assert_eq!(exit.code, Some(1), "{exit}");
    let waited = exited_at - started;
    assert!(
        waited >= Duration::from_millis(1400),
        "exited after {waited:?}"
    );
    let hung = within(5, "the hanging request to end", hanging)
        .await
        .expect("join");
    assert!(
        hung.is_err(),
        "the hanging request cannot get an answer: {hung:?}"
    );
    cluster.cluster.stop(cluster_core::StopMode::Graceful).await;
}

/// Triggers `path` on the only worker and checks the graceful sequence ran: hand-over,
/// replacement, drained exit with code 0.
async fn panics_elsewhere_start_the_sequence(path: &str) {
    let mut cluster = GracefulCluster::start(1, &[]).await;
    let pid = cluster.pid_of_a_worker().await;
    let answer = KeepAliveClient::new(cluster.address)
        .get(path)
        .await
        .expect("answer");
    assert_eq!(answer.status, 200, "the request itself did not fail");
    let failed = cluster.worker_by_pid(pid);
    let (exit, _) = exit_of(&mut cluster, pid, 10).await;
    assert_eq!(exit.code, Some(0), "{exit}");
    assert!(failed.exited_after_disconnect());
    assert_eq!(
        cluster.forked.load(Ordering::SeqCst),
        2,
        "a replacement was forked"
    );
    let new_pid = cluster.pid_of_a_worker().await;
    assert_ne!(new_pid, pid);
    cluster.cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn a_panic_in_a_background_task_starts_the_same_sequence() {
    panics_elsewhere_start_the_sequence("/task-panic").await;
}

#[tokio::test]
async fn a_panic_in_a_plain_thread_starts_the_same_sequence() {
    panics_elsewhere_start_the_sequence("/thread-panic").await;
}

#[tokio::test]
async fn a_report_only_panic_is_reported_and_nothing_else() {
    let cluster = GracefulCluster::start(1, &[]).await;
    let pid = cluster.pid_of_a_worker().await;
    let answer = KeepAliveClient::new(cluster.address)
        .get("/harmless-panic")
        .await
        .expect("answer");
    assert_eq!(answer.status, 200);
    for _ in 0..5 {
        assert_eq!(
            cluster.pid_of_a_worker().await,
            pid,
            "still the same worker"
        );
    }
    assert_eq!(cluster.forked.load(Ordering::SeqCst), 1);
    cluster.cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn a_second_panic_during_the_drain_is_counted_not_restarted() {
    let mut cluster = GracefulCluster::start(1, &[]).await;
    let pid = cluster.pid_of_a_worker().await;
    let answer = KeepAliveClient::new(cluster.address)
        .get("/double-panic")
        .await
        .expect("answer");
    assert_eq!((answer.status, answer.body.as_str()), (200, "panics=2"));
    let (exit, _) = exit_of(&mut cluster, pid, 10).await;
    assert_eq!(exit.code, Some(0));
    assert_eq!(
        cluster.forked.load(Ordering::SeqCst),
        2,
        "one replacement only"
    );
    cluster.cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn the_last_words_hook_runs_before_the_worker_disconnects() {
    let mut cluster = GracefulCluster::start(1, &[("LAST_WORDS", "1")]).await;
    let pid = cluster.pid_of_a_worker().await;
    KeepAliveClient::new(cluster.address)
        .get("/panic")
        .await
        .expect("answer");
    let mut steps = Vec::new();
    wait_event(&mut cluster.events, 10, "the exit", |e| match e {
        Event::Message(w, m) if w.pid() == pid => {
            let msg: TestMsg = m.decode().expect("decode");
            if msg.kind != "ready" {
                steps.push(format!("{}:{}", msg.kind, msg.data));
            }
            None
        }
        Event::Exit(w, exit) if w.pid() == pid => {
            steps.push(format!("exit:{exit}"));
            Some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        steps,
        [
            "step:ServersClosed(1)",
            "last-words:handler failed on purpose",
            "exit:code 0",
        ],
    );
    cluster.cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn a_detached_panic_ends_its_request_only_when_the_worker_exits() {
    let mut cluster = GracefulCluster::start(1, &[("KILL_TIMEOUT_MS", "1000")]).await;
    let pid = cluster.pid_of_a_worker().await;
    let started = Instant::now();
    let answer = KeepAliveClient::new(cluster.address)
        .get("/detached-hang")
        .await;
    let ended = started.elapsed();
    assert!(answer.is_err(), "no answer, as in the seed: {answer:?}");
    assert!(ended >= Duration::from_millis(900), "ended after {ended:?}");
    let (exit, _) = exit_of(&mut cluster, pid, 10).await;
    assert_eq!(exit.code, Some(1), "the kill timeout ended it: {exit}");
    assert_eq!(cluster.forked.load(Ordering::SeqCst), 2);
    cluster.cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn with_abort_after_the_hook_the_master_still_hears_of_the_hand_over() {
    let mut cluster = GracefulCluster::start(1, &[("TEST_ABORT", "1")]).await;
    let pid = cluster.pid_of_a_worker().await;
    let failed = cluster.worker_by_pid(pid);
    let _ = KeepAliveClient::new(cluster.address).get("/panic").await;
    let (exit, _) = exit_of(&mut cluster, pid, 10).await;
    assert_eq!(exit.signal, Some(cluster_core::Signal::SIGABRT), "{exit}");
    assert!(
        failed.exited_after_disconnect(),
        "the hand-over reached the master"
    );
    assert_eq!(cluster.forked.load(Ordering::SeqCst), 2);
    cluster.cluster.stop(cluster_core::StopMode::Graceful).await;
}
