//! Recycling with real processes: `max_requests` (with jitter) under keep-alive load, one
//! worker at a time and no failed request; `max_memory` for a leaking worker; a drain that
//! outlasts `stop_timeout` is cut short.

use std::collections::HashSet;
use std::time::Duration;

use cluster_core::{Event, ReplaceReason, Settings, StopMode};
use cluster_tests::{GracefulCluster, Load, http_get, wait_event, watch_worker_exe};

fn settings() -> Settings {
    Settings::new()
        .exec(watch_worker_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .stop_timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn max_requests_recycles_one_worker_at_a_time_under_load_and_fails_no_request() {
    let settings = settings().max_requests(300).max_requests_jitter(100);
    let mut cluster = GracefulCluster::with_settings(settings, 2).await;
    let load = Load::start(cluster.address, 4);
    load.answers(100).await;
    // Follow the events until four recycled workers have exited.
    let mut recycling: HashSet<u32> = HashSet::new();
    let mut exited = 0;
    while exited < 4 {
        let event = wait_event(&mut cluster.events, 30, "recycling", |e| match e {
            Event::Replacing(..) | Event::Exit(..) => Some(e.clone()),
            _ => None,
        })
        .await;
        match event {
            Event::Replacing(worker, reason) => {
                match reason {
                    ReplaceReason::MaxRequests { served } => {
                        assert!((300..=400).contains(&served), "served {served}")
                    }
                    other => panic!("recycled for {other}"),
                }
                assert!(recycling.insert(worker.pid()));
                assert_eq!(recycling.len(), 1, "one worker at a time: {recycling:?}");
            }
            Event::Exit(worker, exit) => {
                assert!(
                    recycling.remove(&worker.pid()),
                    "only recycled workers exit"
                );
                assert_eq!(exit.code, Some(0), "a recycled worker drains: {exit}");
                assert!(worker.replace_reason().is_some_and(|r| r.is_recycle()));
                exited += 1;
            }
            _ => unreachable!(),
        }
    }
    let answered = load.finish().await;
    assert!(answered >= 4 * 300, "{answered}");
    // Two, and at most the one being recycled with its replacement.
    let workers = cluster.cluster.workers().len();
    assert!((2..=3).contains(&workers), "{workers} workers");
    cluster.cluster.stop(StopMode::Graceful).await;
}

#[tokio::test]
async fn max_memory_recycles_a_leaking_worker() {
    const LIMIT: u64 = 64 * 1024 * 1024;
    let mut cluster = GracefulCluster::with_settings(settings().max_memory(LIMIT), 1).await;
    let leaking = cluster.pid_of_a_worker().await;
    let (status, _) = http_get(cluster.address, "/grow?mb=100")
        .await
        .expect("grow");
    assert_eq!(status, 200);
    let (pid, reason) = wait_event(&mut cluster.events, 10, "replacing", |e| match e {
        Event::Replacing(w, r) => Some((w.pid(), *r)),
        _ => None,
    })
    .await;
    assert_eq!(pid, leaking);
    match reason {
        ReplaceReason::MaxMemory { rss, limit } => {
            assert_eq!(limit, LIMIT);
            assert!(rss > LIMIT, "{rss}");
        }
        other => panic!("recycled for {other}"),
    }
    let exit = wait_event(&mut cluster.events, 10, "exit", |e| match e {
        Event::Exit(w, exit) if w.pid() == leaking => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(exit.code, Some(0), "{exit}");
    assert_ne!(cluster.pid_of_a_worker().await, leaking);
    cluster.cluster.stop(StopMode::Graceful).await;
}

#[tokio::test]
async fn a_recycled_worker_draining_longer_than_the_stop_timeout_is_killed() {
    let settings = settings()
        .max_age(Duration::from_secs(1))
        .stop_timeout(Duration::from_secs(1));
    let mut cluster = GracefulCluster::with_settings(settings, 1).await;
    let old = cluster.cluster.workers()[0].clone();
    let long = tokio::spawn(http_get(cluster.address, "/sleep?ms=60000"));
    let (sleeping_on, _) = cluster_tests::next_message(&mut cluster.events, 10).await;
    assert_eq!(sleeping_on, old.id());
    let reason = wait_event(&mut cluster.events, 10, "replacing", |e| match e {
        Event::Replacing(w, r) if w.pid() == old.pid() => Some(*r),
        _ => None,
    })
    .await;
    assert!(matches!(reason, ReplaceReason::MaxAge { .. }), "{reason}");
    let exit = wait_event(
        &mut cluster.events,
        10,
        "the old worker's exit",
        |e| match e {
            Event::Exit(w, exit) if w.pid() == old.pid() => Some(*exit),
            _ => None,
        },
    )
    .await;
    assert_eq!(exit.signal, Some(cluster_core::Signal::SIGKILL), "{exit}");
    assert!(
        long.await.expect("task").is_err(),
        "cut short with its worker"
    );
    assert_ne!(cluster.pid_of_a_worker().await, old.pid());
    cluster.cluster.stop(StopMode::Graceful).await;
}

#[tokio::test]
async fn a_server_that_counts_nothing_is_recycled_by_its_accepted_connections() {
    let settings = cluster_tests::worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .max_requests(5);
    let mut cluster = GracefulCluster::with_settings(settings, 1).await;
    let first = cluster.cluster.workers()[0].pid();
    for _ in 0..4 {
        assert_eq!(cluster.pid_of_a_worker().await, first);
    }
    // The fifth connection reaches the limit: the worker asks to be recycled.
    assert_eq!(cluster.pid_of_a_worker().await, first);
    let (pid, reason) = wait_event(&mut cluster.events, 10, "replacing", |e| match e {
        Event::Replacing(w, r) => Some((w.pid(), *r)),
        _ => None,
    })
    .await;
    assert_eq!(
        (pid, reason),
        (first, ReplaceReason::MaxRequests { served: 5 })
    );
    let exit = wait_event(&mut cluster.events, 10, "exit", |e| match e {
        Event::Exit(w, exit) if w.pid() == first => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(exit.code, Some(0), "{exit}");
    assert_ne!(cluster.pid_of_a_worker().await, first);
    cluster.cluster.stop(StopMode::Graceful).await;
}
