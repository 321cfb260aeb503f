//! The hang watchdog with real processes: a worker whose event loop is blocked is replaced
//! and aborted; busy but live workers and a master that was itself stopped kill nobody.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster_core::{Event, ReplaceReason, Settings, Signal, StopMode};
use cluster_tests::{GracefulCluster, http_get, wait_event, watch_worker_exe, within};

const TIMEOUT: Duration = Duration::from_secs(1);

fn settings() -> Settings {
    Settings::new()
        .exec(watch_worker_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .heartbeat_timeout(Some(TIMEOUT))
        .stop_timeout(Duration::from_secs(5))
}

/// Counts `Replacing` events from now on.
fn count_replacements(cluster: &cluster_core::Cluster) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let mut events = cluster.events();
    let counter = count.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Event::Replacing(..) = event {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    count
}

#[tokio::test]
async fn a_blocked_worker_is_aborted_and_its_replacement_serves() {
    let mut cluster = GracefulCluster::with_settings(settings(), 1).await;
    let hung = cluster.pid_of_a_worker().await;
    let blocked = tokio::spawn(http_get(cluster.address, "/block"));
    let started = Instant::now();
    let (pid, reason) = wait_event(&mut cluster.events, 10, "replacing", |e| match e {
        Event::Replacing(w, r) => Some((w.pid(), *r)),
        _ => None,
    })
    .await;
    assert_eq!(pid, hung);
    match reason {
        ReplaceReason::Unresponsive { silent } => assert!(silent > TIMEOUT, "{silent:?}"),
        other => panic!("replaced for {other}"),
    }
    assert!(!reason.is_recycle());
    // The replacement was forked at once (the dispatch forks on `disconnect`), before the
    // hung worker is gone.
    wait_event(&mut cluster.events, 5, "disconnect", |e| match e {
        Event::Disconnect(w) if w.pid() == hung => Some(()),
        _ => None,
    })
    .await;
    let (exit, replace_reason) = wait_event(
        &mut cluster.events,
        10,
        "the hung worker's exit",
        |e| match e {
            Event::Exit(w, exit) if w.pid() == hung => Some((*exit, w.replace_reason())),
            _ => None,
        },
    )
    .await;
    assert_eq!(exit.signal, Some(Signal::SIGABRT), "{exit}");
    assert_eq!(replace_reason, Some(reason));
    assert_eq!(cluster.forked.load(Ordering::SeqCst), 2);
    // The request the worker hung on died with it; a new client is served by the replacement.
    let answer = within(5, "the blocked request", blocked)
        .await
        .expect("task");
    assert!(answer.is_err(), "{answer:?}");
    let served_by = cluster.pid_of_a_worker().await;
    assert_ne!(served_by, hung);
    eprintln!("hang to replacement serving: {:?}", started.elapsed());
    cluster.cluster.stop(StopMode::Graceful).await;
}

/// The busy tests' timeout: 2 s, so a worker's heartbeat thread briefly starved by the other
/// busy processes of a loaded 2-core test machine is not taken for a hang.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps a worker busy for 6 s (three timeouts) with `path` and checks it answers and nobody
/// was replaced.
async fn busy_for_three_timeouts(settings: Settings, path: &str) {
    let settings = settings.heartbeat_timeout(Some(BUSY_TIMEOUT));
    let cluster = GracefulCluster::with_settings(settings, 1).await;
    let replaced = count_replacements(&cluster.cluster);
    let pid = cluster.pid_of_a_worker().await;
    let answer = within(20, "the busy request", http_get(cluster.address, path)).await;
    let (status, body) = answer.unwrap_or_else(|e| {
        panic!(
            "busy request not answered ({} replaced): {e}",
            replaced.load(Ordering::SeqCst)
        )
    });
    assert_eq!((status, body.trim()), (200, pid.to_string().as_str()));
    assert_eq!(cluster.pid_of_a_worker().await, pid);
    assert_eq!(replaced.load(Ordering::SeqCst), 0);
    assert_eq!(cluster.forked.load(Ordering::SeqCst), 1);
    cluster.cluster.stop(StopMode::Graceful).await;
}

#[tokio::test]
async fn a_busy_current_thread_worker_that_yields_is_not_killed() {
    busy_for_three_timeouts(settings(), "/spin?ms=6000&yield=1").await;
}

// A regression test: this busy worker's heartbeat was once scheduled from inside the runtime
// and caught behind the spinning thread (about one run in eight under load), so the
// watchdog replaced a live worker. Heartbeats are now injected from outside (heartbeat.rs).
#[tokio::test]
async fn a_busy_multi_thread_worker_is_not_killed() {
    busy_for_three_timeouts(settings().env("TEST_RUNTIME", "multi"), "/spin?ms=6000").await;
}

#[tokio::test]
async fn a_master_stopped_longer_than_the_timeout_kills_nobody_when_it_wakes() {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let mut master = tokio::process::Command::new(cluster_tests::master_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .env("TEST_HEARTBEAT_MS", TIMEOUT.as_millis().to_string())
        .env("TEST_LOG", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start master");
    let master_pid = Pid::from_raw(master.id().expect("pid") as i32);
    let mut lines = cluster_tests::Lines::new(master.stdout.take().expect("stdout"));
    let mut pids = Vec::new();
    for _ in 0..2 {
        let line = lines.wait_for(10, "listening").await;
        pids.push(line.split(' ').nth(2).expect("pid").to_string());
    }
    let address: std::net::SocketAddr = lines
        .seen
        .iter()
        .find_map(|l| {
            l.strip_prefix("listening ")?
                .split(' ')
                .nth(2)?
                .parse()
                .ok()
        })
        .expect("address");
    // The scenario itself: the master does not run for three timeouts (a SIGSTOP, a VM
    // pause), while its workers keep beating into their channels.
    kill(master_pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    tokio::time::sleep(TIMEOUT * 3).await;
    kill(master_pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    let late = lines.wait_for(10, "late").await;
    assert!(late.contains("the master ran"), "{late}");
    // Watch three more timeouts: both workers keep answering.
    let watched = Instant::now();
    let mut answered = 0;
    while watched.elapsed() < TIMEOUT * 3 {
        let (status, _) = http_get(address, "/").await.expect("GET /");
        assert_eq!(status, 200);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered > 10);
    kill(master_pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    lines.wait_for(15, "master stopped").await;
    let seen = lines.seen.join("\n");
    assert!(!seen.contains("replacing"), "{seen}");
    assert!(!seen.contains("unresponsive"), "{seen}");
    for pid in pids {
        let exit = lines
            .seen
            .iter()
            .find(|l| l.starts_with("exit ") && l.split(' ').nth(2) == Some(pid.as_str()))
            .unwrap_or_else(|| panic!("no exit of {pid}: {seen}"));
        assert!(exit.contains("code 0 after_disconnect=true"), "{exit}");
    }
    let forks = lines.seen.iter().filter(|l| l.starts_with("fork ")).count();
    assert_eq!(forks, 2, "{seen}");
}

#[tokio::test]
async fn round_robin_connections_waiting_on_a_hung_worker_are_served_by_the_others() {
    let settings = settings().scheduling(cluster_core::Scheduling::RoundRobin);
    let mut cluster = GracefulCluster::with_settings(settings, 2).await;
    let blocked = tokio::spawn(http_get(cluster.address, "/block"));
    cluster_tests::next_message(&mut cluster.events, 10).await;
    // While the worker hangs, the master goes on handing it connections (it cannot answer);
    // each must be served by another worker, not lost with it.
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(http_get(cluster.address, "/")))
        .collect();
    let hung = wait_event(&mut cluster.events, 10, "replacing", |e| match e {
        Event::Replacing(w, ReplaceReason::Unresponsive { .. }) => Some(w.pid()),
        _ => None,
    })
    .await;
    for client in clients {
        let (status, body) = within(10, "a client", client)
            .await
            .expect("task")
            .expect("answered");
        assert_eq!(status, 200);
        assert_ne!(body.trim(), hung.to_string());
    }
    assert!(within(10, "blocked", blocked).await.expect("task").is_err());
    cluster.cluster.stop(StopMode::Graceful).await;
}
