//! The master's default replacement recipe (`Respawn::Replace`): a master with no
//! replacement callback keeps its workers through panics (graceful's hand-over) and kills
//! from outside; a callback that forks on its own does not get double replacements; and
//! `Respawn::Manual` turns it off.

use std::net::SocketAddr;

use cluster_tests::{Lines, children_of, eventually, http_get, start_test_master, stop_master};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;

/// The test master running graceful test workers (2), with `env` added.
async fn start(env: &[(&str, &str)]) -> (Child, Lines, SocketAddr) {
    let mut all = vec![
        ("TEST_WORKER_EXE", "graceful_worker"),
        ("TEST_LISTEN", "127.0.0.1:0"),
    ];
    all.extend_from_slice(env);
    let (master, lines, _pids) = start_test_master(&all).await;
    let address = lines
        .seen
        .iter()
        .find(|l| l.starts_with("listening"))
        .and_then(|l| l.split(' ').nth(3))
        .and_then(|a| a.parse().ok())
        .expect("a listening address");
    (master, lines, address)
}

/// The master's live children.
fn workers(master: &Child) -> Vec<u32> {
    children_of(master.id().expect("master pid"))
}

#[tokio::test]
async fn two_panics_under_the_default_recipe_leave_two_workers_serving() {
    let (master, mut lines, address) = start(&[]).await;
    for panic in 1..=2 {
        let (status, _) = http_get(address, "/panic").await.expect("GET /panic");
        assert_eq!(status, 500, "panic {panic}");
        // The master forks the replacement by itself; the panicked worker drains and exits.
        lines.wait_for(10, "fork").await;
        lines.wait_for(10, "after_disconnect=true").await;
    }
    // Both replacements listen, and nothing else was forked.
    eventually(10, "two workers", || workers(&master).len() == 2).await;
    let listening = lines
        .seen
        .iter()
        .filter(|l| l.starts_with("listening"))
        .count();
    let forks = lines.seen.iter().filter(|l| l.starts_with("fork")).count();
    assert_eq!(forks, 4, "{:#?}", lines.seen);
    assert!(listening >= 3, "{:#?}", lines.seen);
    for _ in 0..20 {
        let (status, body) = http_get(address, "/").await.expect("GET /");
        assert_eq!(status, 200);
        let pid: u32 = body.trim().parse().expect("pid");
        assert!(
            workers(&master).contains(&pid),
            "{pid} is not a live worker"
        );
    }
    stop_master(master).await;
}

#[tokio::test]
async fn a_worker_killed_from_outside_is_replaced_once_even_with_a_forking_callback() {
    // TEST_REFORK: the exit callback forks too, as a dispatch written for Node would.
    let (master, mut lines, address) = start(&[("TEST_REFORK", "1")]).await;
    let victim = workers(&master)[0];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL");
    lines.wait_for(10, "signal SIGKILL").await;
    lines.wait_for(10, "fork").await;
    lines.wait_for(10, "listening").await;
    let (status, _) = http_get(address, "/").await.expect("GET /");
    assert_eq!(status, 200);
    // Both forks would come from the same exit's dispatch; count them all once stopped.
    let pid = master.id().expect("master pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    lines.wait_for(15, "master stopped").await;
    let forks = lines.seen.iter().filter(|l| l.starts_with("fork")).count();
    assert_eq!(forks, 3, "{:#?}", lines.seen);
    stop_master(master).await;
}

#[tokio::test]
async fn respawn_manual_replaces_nothing() {
    let (master, mut lines, address) = start(&[("TEST_RESPAWN", "manual")]).await;
    let (status, _) = http_get(address, "/panic").await.expect("GET /panic");
    assert_eq!(status, 500);
    lines.wait_for(10, "after_disconnect=true").await;
    eventually(10, "one worker left", || workers(&master).len() == 1).await;
    assert_eq!(
        lines.seen.iter().filter(|l| l.starts_with("fork")).count(),
        2,
        "{:#?}",
        lines.seen
    );
    stop_master(master).await;
}
