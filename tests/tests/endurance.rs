//! Endurance: 1,000 worker restarts in a row (half graceful, half SIGKILL); the master's RSS
//! and descriptor count stay flat and no zombie is left. About 3 s, so it runs with the rest.
//!
//! `cargo test -p cluster-tests --test endurance -- --nocapture` prints the samples.

use cluster_core::{Event, Signal, setup_master};
use cluster_tests::{next_message, open_fds, process_gone, rss_kib, wait_event, worker_settings};

#[tokio::test]
async fn a_thousand_restarts_leave_the_master_flat() {
    const RESTARTS: usize = 1_000;
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let mut pids = Vec::with_capacity(RESTARTS);
    let mut samples = Vec::new();
    for round in 0..RESTARTS {
        let worker = cluster.fork(&[]).expect("fork");
        pids.push(worker.pid());
        next_message(&mut events, 10).await; // its hello: the worker is up
        // Alternate the two ways out: a graceful disconnect and a SIGKILL.
        if round % 2 == 0 {
            worker.disconnect();
        } else {
            worker.kill(Signal::SIGKILL);
        }
        wait_event(&mut events, 10, "exit", |e| match e {
            Event::Exit(w, _) if w.id() == worker.id() => Some(()),
            _ => None,
        })
        .await;
        if round % 100 == 0 || round == RESTARTS - 1 {
            samples.push((round, open_fds(), rss_kib()));
        }
    }
    for (round, fds, rss) in &samples {
        eprintln!("after {round:>4} restarts: {fds} fds, {rss} KiB RSS");
    }
    let (_, first_fds, first_rss) = samples[1];
    let (_, last_fds, last_rss) = samples[samples.len() - 1];
    assert!(
        last_fds <= first_fds,
        "descriptors grew: {first_fds} → {last_fds}"
    );
    assert!(
        last_rss <= first_rss + 2048,
        "RSS grew by more than 2 MiB: {first_rss} → {last_rss} KiB"
    );
    for pid in pids {
        assert!(
            process_gone(pid),
            "worker {pid} is still there (or a zombie)"
        );
    }
    assert!(cluster.workers().is_empty());
}
