//! Live connections stay balanced between workers (issue 13): keep-alive connections opened
//! in one burst split evenly in Shared and RoundRobin scheduling, a replacement takes the
//! new connections until it holds its share, and a crowded worker still takes a connection
//! nobody else does (a client is never left waiting for the balance).
//!
//! The margins are wider than the benchmark's goal (16 ± 2 of 32 on 2 workers, measured by
//! `sched_bench`), so that a loaded CI machine does not fail them; without the balance a
//! burst lands mostly on one worker (`docs/BENCHMARKS.md`: 93.5% / 6.5% of 8).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use cluster_core::{Cluster, Event, Scheduling, Settings, setup_master};
use cluster_tests::{KeepAliveClient, graceful_worker_exe, wait_event, wait_listening, within};

/// A cluster of `workers` graceful test workers (each answers its pid), every one serving.
async fn cluster(scheduling: Scheduling, workers: usize) -> (Cluster, SocketAddr) {
    let settings = Settings::new()
        .exec(graceful_worker_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .scheduling(scheduling)
        .respawn(cluster_core::Respawn::Manual);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    for _ in 0..workers {
        cluster.fork(&[]).expect("fork");
    }
    let address = wait_listening(&mut events, workers).await;
    let mut seen = HashSet::new();
    while seen.len() < workers {
        seen.insert(serving_besides(address, &seen).await);
    }
    (cluster, address)
}

/// Waits until a worker other than `known` answers a new connection (a worker reports
/// listening just before its server accepts); its pid.
async fn serving_besides(address: SocketAddr, known: &HashSet<u32>) -> u32 {
    within(20, "a new worker answering", async {
        loop {
            let answer = KeepAliveClient::closing(address).get("/").await;
            match answer.ok().and_then(|a| a.pid()) {
                Some(pid) if !known.contains(&pid) => return pid,
                _ => {}
            }
        }
    })
    .await
}

/// Opens `count` keep-alive connections at once, one request each; the clients (their
/// connections open) and who answered each.
async fn burst(address: SocketAddr, count: usize) -> Vec<(KeepAliveClient, u32)> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = KeepAliveClient::new(address);
                let answer = client.get("/").await.expect("GET /");
                assert!(!answer.close, "the server closed a keep-alive connection");
                (client, answer.pid().expect("pid"))
            })
        })
        .collect();
    let mut opened = Vec::new();
    for task in tasks {
        opened.push(
            within(20, "a keep-alive answer", task)
                .await
                .expect("client"),
        );
    }
    opened
}

fn holders(opened: &[(KeepAliveClient, u32)]) -> HashMap<u32, usize> {
    let mut by_pid = HashMap::new();
    for (_, pid) in opened {
        *by_pid.entry(*pid).or_default() += 1;
    }
    by_pid
}

async fn burst_splits_evenly(scheduling: Scheduling, workers: usize) {
    const CONNECTIONS: usize = 32;
    let (cluster, address) = cluster(scheduling, workers).await;
    let opened = burst(address, CONNECTIONS).await;
    let by_pid = holders(&opened);
    eprintln!("{scheduling:?}, {workers} workers: {by_pid:?}");
    let fair = CONNECTIONS / workers;
    assert_eq!(by_pid.len(), workers, "{by_pid:?}");
    for held in by_pid.values() {
        assert!(
            held.abs_diff(fair) <= 4,
            "a worker holds {held} of {CONNECTIONS} (fair: {fair}): {by_pid:?}"
        );
    }
    drop(opened);
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn shared_workers_split_a_burst_of_keep_alive_connections_evenly() {
    burst_splits_evenly(Scheduling::Shared, 2).await;
}

#[tokio::test]
async fn four_shared_workers_split_a_burst_of_keep_alive_connections_evenly() {
    burst_splits_evenly(Scheduling::Shared, 4).await;
}

#[tokio::test]
async fn round_robin_splits_a_burst_of_keep_alive_connections_evenly() {
    burst_splits_evenly(Scheduling::RoundRobin, 2).await;
}

#[tokio::test]
async fn four_round_robin_workers_split_a_burst_of_keep_alive_connections_evenly() {
    burst_splits_evenly(Scheduling::RoundRobin, 4).await;
}

/// Worker B is killed with its 10 keep-alive connections; its replacement starts with none
/// and takes the next connections until it holds as many as A. Taking turns (no balance)
/// would give it only half of them.
async fn replacement_takes_its_share(scheduling: Scheduling) {
    let (cluster, address) = cluster(scheduling, 2).await;
    let mut events = cluster.events();
    let opened = burst(address, 20).await;
    let by_pid = holders(&opened);
    let (&killed, _) = by_pid.iter().next().expect("a worker");
    let kept: Vec<_> = opened
        .into_iter()
        .filter(|(_, pid)| *pid != killed)
        .collect();
    let survivor = kept[0].1;
    let held = kept.len();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    wait_event(&mut events, 10, "the exit", |e| {
        matches!(e, Event::Exit(w, _) if w.pid() == killed).then_some(())
    })
    .await;
    cluster.fork(&[]).expect("fork the replacement");
    wait_listening(&mut events, 1).await;
    serving_besides(address, &HashSet::from([survivor, killed])).await;
    // The survivor holds `held`, the replacement 0 (the connection that showed it serves is
    // closed): the next `held` connections should nearly all go to the replacement.
    let next = burst(address, held).await;
    let to_survivor = next.iter().filter(|(_, pid)| *pid == survivor).count();
    eprintln!(
        "{scheduling:?}: survivor held {held}, then got {to_survivor} of the next {}",
        next.len()
    );
    assert!(
        to_survivor <= 3,
        "the survivor holding {held} got {to_survivor} of the next {held} connections"
    );
    drop((kept, next));
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

#[tokio::test]
async fn a_shared_replacement_takes_new_connections_until_it_holds_its_share() {
    replacement_takes_its_share(Scheduling::Shared).await;
}

#[tokio::test]
async fn a_round_robin_replacement_takes_new_connections_until_it_holds_its_share() {
    replacement_takes_its_share(Scheduling::RoundRobin).await;
}

/// Worker B is stopped (SIGSTOP) while A already holds more connections than B: A is
/// crowded, yet the new connections B cannot take are answered by A.
#[tokio::test]
async fn a_crowded_worker_takes_the_connections_a_stopped_worker_cannot() {
    let (cluster, address) = cluster(Scheduling::Shared, 2).await;
    let opened = burst(address, 10).await;
    let by_pid = holders(&opened);
    let (&stopped, _) = by_pid.iter().next().expect("a worker");
    let (&crowded, _) = by_pid
        .iter()
        .find(|(pid, _)| **pid != stopped)
        .expect("two workers");
    let stopped_pid = nix::unistd::Pid::from_raw(stopped as i32);
    nix::sys::signal::kill(stopped_pid, nix::sys::signal::Signal::SIGSTOP).expect("stop");
    within(10, "the worker stopped", async {
        while !cluster_tests::process_stopped(stopped) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    // Each new keep-alive connection is answered by the running worker, though from the
    // third one on it holds clearly more than the stopped one.
    let mut held = Vec::new();
    let answered = within(20, "answers while a worker is stopped", async {
        let mut answered = Vec::new();
        for _ in 0..8 {
            let mut client = KeepAliveClient::new(address);
            let answer = client.get("/").await.expect("GET /");
            answered.push(answer.pid().expect("pid"));
            held.push(client);
        }
        answered
    })
    .await;
    nix::sys::signal::kill(stopped_pid, nix::sys::signal::Signal::SIGCONT).expect("continue");
    assert!(
        answered.iter().all(|pid| *pid == crowded),
        "answered by {answered:?}, running worker {crowded}"
    );
    drop((opened, held));
    cluster.stop(cluster_core::StopMode::Graceful).await;
}
