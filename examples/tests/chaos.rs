//! Chaos: clients drive a supervised group of the example app (`pm_graceful_exit_worker`:
//! graceful installed, `/asyncerror` panics in a task) for a bounded time while, at seeded
//! random moments, workers panic, get SIGKILLed, the group reloads and scales. Then: every
//! request was answered (but those held by a SIGKILLed worker, bounded), every panicking
//! request got its 500, no answer came from a worker after its exit, the master's descriptors
//! and threads are back to where they were, the master logged no error, and no worker is left.
//!
//! `CHAOS_SEED=N` replays a run; `CHAOS_SECONDS` sets its length (default 20).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_core::Settings;
use cluster_core::StopMode;
use cluster_core::pm::{GroupEvent, GroupOptions, Master};
use cluster_tests::{KeepAliveClient, eventually, open_fds, process_gone, threads, within};

/// xorshift64*: enough randomness to pick moments and actions, replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Counts what the master logs at ERROR level (this test binary is its own process, so the
/// subscriber sees only this test's master).
static MASTER_ERRORS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct ErrorCounter;

impl std::io::Write for ErrorCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        MASTER_ERRORS.fetch_add(1, Ordering::Relaxed);
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    ok: usize,
    failed: usize,
    /// (pid that answered, when) for every answer.
    answers: Vec<(u32, Instant)>,
}

fn client(
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = KeepAliveClient::new(address);
        // Bounded: at most 50,000 requests per client.
        for _ in 0..50_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let result = client.get("/").await;
            let mut seen = seen.lock().expect("lock");
            match result {
                Ok(answer) if answer.status == 200 => {
                    seen.ok += 1;
                    if let Some(pid) = answer.pid() {
                        seen.answers.push((pid, Instant::now()));
                    }
                }
                _ => seen.failed += 1,
            }
        }
    })
}

#[tokio::test]
async fn chaos_loses_nothing_but_what_killed_workers_held() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("chaos seed {seed} ({seconds} s): replay with CHAOS_SEED={seed}");
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_writer(|| ErrorCounter)
        .init();
    let mut rng = Rng(seed);

    let master = Master::new();
    let mut events = master.events();
    let looping = master.clone();
    let run = tokio::spawn(async move { looping.run().await });
    master
        .register(
            "web",
            GroupOptions::new()
                // The app's own log lines would drown the test's.
                .settings(Settings::new().silent(true))
                .listen("127.0.0.1:0".parse().expect("addr"))
                .children(2)
                .ready_timeout(Duration::from_secs(10))
                .reload_stable(Duration::from_millis(100))
                .exec(env!("CARGO_BIN_EXE_pm_graceful_exit_worker")),
        )
        .expect("register");
    master.dispatch();

    // Record every exit, and wait for the first two workers.
    let exits: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let mut address = None;
    let mut ready = 0;
    while ready < 2 {
        if let Some(GroupEvent::Ready { worker, .. }) = within(10, "ready", events.recv()).await {
            ready += 1;
            address = worker.addresses().first().copied();
        }
    }
    let address = address.expect("address");
    // The master's resources with its 2 workers up: what it must come back to.
    let fds_before = open_fds();
    let threads_before = threads();
    let all_pids: Arc<Mutex<Vec<u32>>> = Arc::default();
    let giveups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let recorder = {
        let (exits, all_pids, giveups) = (exits.clone(), all_pids.clone(), giveups.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    GroupEvent::Fork { worker, .. } => {
                        all_pids.lock().expect("lock").push(worker.pid())
                    }
                    GroupEvent::Quit { worker, .. } => {
                        exits
                            .lock()
                            .expect("lock")
                            .insert(worker.pid(), Instant::now());
                    }
                    GroupEvent::GiveUp { .. } => {
                        giveups.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
    };
    all_pids
        .lock()
        .expect("lock")
        .extend(master.workers("web").iter().map(|w| w.pid()));

    const CLIENTS: usize = 6;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| client(address, stop.clone(), seen.clone()))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut panics, mut kills, mut reloads, mut scales) = (0, 0, 0, 0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(600))).await;
        match rng.below(4) {
            0 => {
                panics += 1;
                let answer = within(
                    10,
                    "the panicking request's answer",
                    KeepAliveClient::new(address).get("/asyncerror"),
                )
                .await;
                let status = answer.as_ref().map(|a| a.status).ok();
                assert_eq!(
                    status,
                    Some(500),
                    "a panicking request gets its 500: {answer:?}"
                );
            }
            1 => {
                // An operator's (or the OOM killer's) kill of a worker that has served for a
                // while: pm's `min_uptime` (1 s after ready) makes its exit a stable one. Five
                // kills of the same chain of young workers would be a crash loop by pm2's
                // rule, and the group would rightly give up (a seed did exactly that).
                let healthy: Vec<_> = master
                    .workers("web")
                    .into_iter()
                    .filter(|w| w.is_ready() && w.uptime() > Duration::from_millis(1500))
                    .collect();
                if let Some(victim) = healthy.get(rng.below(healthy.len().max(1) as u64) as usize) {
                    kills += 1;
                    victim.kill(cluster_core::Signal::SIGKILL);
                }
            }
            2 => reloads += usize::from(master.reload("web")),
            _ => {
                scales += 1;
                master.scale("web", 1 + rng.below(3) as usize);
            }
        }
    }
    master.scale("web", 2);
    stop.store(true, Ordering::Relaxed);
    let chaos_over = Instant::now();
    for client in clients {
        within(30, "clients", client).await.expect("client");
    }
    // Back to 2 workers and nothing else: the master's descriptors and threads are where they
    // were with its first 2 workers (a leak check like gunicorn's reload test).
    let settled = || {
        let live: Vec<u32> = master.workers("web").iter().map(|w| w.pid()).collect();
        let others_gone = all_pids
            .lock()
            .expect("lock")
            .iter()
            .all(|pid| live.contains(pid) || process_gone(*pid));
        live.len() == 2 && others_gone && open_fds() == fds_before && threads() <= threads_before
    };
    let what = format!("2 workers, the others gone, descriptors and threads back (seed {seed})");
    eventually(20, &what, settled).await;
    eprintln!(
        "settled {:?} after the chaos: {} fds, {} threads",
        chaos_over.elapsed(),
        open_fds(),
        threads()
    );
    master.stop(StopMode::Graceful).await;
    within(10, "run to end", run)
        .await
        .expect("join")
        .expect("run");
    recorder.abort();

    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    eprintln!(
        "chaos: {} answered, {} failed; {panics} panics, {kills} kills, {reloads} reloads, {scales} scales; {} giveups",
        seen.ok,
        seen.failed,
        giveups.load(Ordering::Relaxed)
    );
    assert!(seen.ok > 1000, "the load was real: {}", seen.ok);
    assert_eq!(
        MASTER_ERRORS.load(Ordering::Relaxed),
        0,
        "the master logged internal errors (seed {seed})"
    );
    // Only what a SIGKILLed worker held is lost: at most one request per client connection.
    assert!(
        seen.failed <= kills * CLIENTS,
        "{} failed with {kills} kills (seed {seed})",
        seen.failed
    );
    // Kills of workers that had served past `min_uptime` are no crash loop: pm's default
    // policy never gives the group up here.
    assert_eq!(
        giveups.load(Ordering::Relaxed),
        0,
        "the group gave up (seed {seed})"
    );
    let exits = exits.lock().expect("lock").clone();
    for (pid, at) in &seen.answers {
        if let Some(exited) = exits.get(pid) {
            assert!(
                at <= exited,
                "worker {pid} answered after its exit (seed {seed})"
            );
        }
    }
    let all_pids = all_pids.lock().expect("lock").clone();
    for pid in all_pids {
        eventually(5, "every worker gone", || process_gone(pid)).await;
    }
}
