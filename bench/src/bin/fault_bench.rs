//! One fault under steady load, for any HTTP cluster on `127.0.0.1:PORT` (this project's or
//! the Node reference): 8 keep-alive clients request `/` the whole time, a prober opens a new
//! connection every 5 ms, and after 1 s one fault is injected:
//!
//! - `panic`: `GET PANIC_PATH` on a new connection (the app fails while handling it);
//! - `kill`: SIGKILL to one worker (the master's child with the lowest pid);
//! - `reload`: SIGHUP to the master;
//! - `upgrade`: SIGUSR2 to the master (hot upgrade: a new master from the same program takes
//!   the listening sockets over, then the old master and its workers retire).
//!
//! Answers must carry the answering worker's pid (`"pid":N` in a JSON body, or a bare pid).
//! The run ends 300 ms after the replacement has answered and the old worker(s) exited, or
//! 15 s after the fault. Prints one line of `key=value` pairs (times in ms after the fault;
//! `-` when it did not happen within the run):
//!
//! - `answered`, `failed`: requests answered 200, and requests that got no answer (refused,
//!   reset, closed before the answer), over the whole run, load and prober together;
//! - `held` (kill): the keep-alive connections the killed worker held (the clients whose last
//!   answer before the fault came from it): what a SIGKILL may cost, with one new connection
//!   of the prober;
//! - `hung`: requests unanswered after 3 s (their connections are dropped);
//! - `other`: answers with another status (the panicking request excluded);
//! - `panic`: the panicking request's status and time (`500@1.9`), `reset@10012.0`, or `-`;
//! - `replacement`: the first answer from a worker that was not there before the fault;
//! - `gap`: the longest time without any answer, from 100 ms before the fault to the end;
//! - `old_exit`: when the worker(s) the fault ends had exited (panic: the first one to exit;
//!   kill: the killed one; reload: the last of them; upgrade: the old master, after its
//!   workers).
//!
//! Run: `fault_bench PORT MASTER_PID panic|kill|reload|upgrade [PANIC_PATH]` (`bench/compare.sh` runs
//! it for every system).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster_tests::{KeepAliveClient, process_gone};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CLIENTS: usize = 8;
const WARM_UP: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(15);
/// A load request unanswered for this long counts as hung (and its connection is dropped).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Panic,
    Kill,
    Reload,
    Upgrade,
}

/// What the clients and the fault share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// The workers before the fault (empty until then).
    before: Mutex<Vec<u32>>,
    /// Set at the first answer from a worker that is not in `before`.
    newcomer_answered: AtomicBool,
}

/// What one client saw: when each answer came and from which pid, and how many failed.
#[derive(Default)]
struct Seen {
    answers: Vec<(Instant, u32)>,
    failed: usize,
    hung: usize,
    other: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: fault_bench PORT MASTER_PID panic|kill|reload|upgrade [PANIC_PATH]";
    let (Some(port), Some(master), Some(fault)) = (
        args.get(1).and_then(|p| p.parse::<u16>().ok()),
        args.get(2).and_then(|p| p.parse::<i32>().ok()),
        args.get(3).and_then(|f| match f.as_str() {
            "panic" => Some(Fault::Panic),
            "kill" => Some(Fault::Kill),
            "reload" => Some(Fault::Reload),
            "upgrade" => Some(Fault::Upgrade),
            _ => None,
        }),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let panic_path = args.get(4).cloned().unwrap_or_else(|| "/panic".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let line = runtime.block_on(run(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Pid::from_raw(master),
        fault,
        panic_path,
    ));
    println!("{line}");
}

async fn run(address: SocketAddr, master: Pid, fault: Fault, panic_path: String) -> String {
    let shared = Arc::new(Shared::default());
    let mut tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(load(KeepAliveClient::new(address), None, shared.clone())))
        .collect();
    tasks.push(tokio::spawn(load(
        KeepAliveClient::closing(address),
        Some(Duration::from_millis(5)),
        shared.clone(),
    )));
    tokio::time::sleep(WARM_UP).await;

    let before = children(master);
    if before.is_empty() {
        eprintln!("process {master} has no children: is it the master?");
        std::process::exit(1);
    }
    *shared.before.lock().expect("lock") = before.clone();
    let start = Instant::now();
    let panic_request = match fault {
        Fault::Panic => Some(tokio::spawn(async move {
            let answer =
                tokio::time::timeout(DEADLINE, KeepAliveClient::new(address).get(&panic_path))
                    .await;
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            match answer {
                Ok(Ok(answer)) => format!("{}@{ms:.1}", answer.status),
                Ok(Err(_)) => format!("reset@{ms:.1}"),
                Err(_) => "-".to_string(),
            }
        })),
        Fault::Kill => {
            if let Some(victim) = before.first() {
                let _ = kill(Pid::from_raw(*victim as i32), Signal::SIGKILL);
            }
            None
        }
        Fault::Reload => {
            let _ = kill(master, Signal::SIGHUP);
            None
        }
        Fault::Upgrade => {
            let _ = kill(master, Signal::SIGUSR2);
            None
        }
    };
    // The processes whose exit ends the fault (the new master's workers are not the old
    // master's children: any answer from a pid not in `before` is a replacement's).
    let ending: Vec<u32> = match fault {
        Fault::Kill => before.iter().take(1).copied().collect(),
        Fault::Upgrade => before
            .iter()
            .copied()
            .chain([master.as_raw() as u32])
            .collect(),
        _ => before.clone(),
    };
    let mut old_exit = None;
    let mut settled = None;
    while start.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if old_exit.is_none() {
            let exited = ending.iter().filter(|pid| process_gone(**pid)).count();
            let done = match fault {
                Fault::Panic => exited >= 1,
                _ => exited == ending.len(),
            };
            if done {
                old_exit = Some(start.elapsed());
            }
        }
        let replaced = shared.newcomer_answered.load(Ordering::Relaxed);
        if old_exit.is_some() && replaced && settled.is_none() {
            settled = Some(Instant::now());
        }
        if settled.is_some_and(|at| at.elapsed() > Duration::from_millis(300)) {
            break;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);

    // The keep-alive clients whose connection the killed worker held: their last answer
    // before the fault came from it.
    let victim = (fault == Fault::Kill)
        .then(|| before.first().copied())
        .flatten();
    let mut held = 0;
    let mut seen = Seen::default();
    for task in tasks.drain(..) {
        if let Ok(part) = task.await {
            let last_before = part.answers.iter().rev().find(|(at, _)| *at < start);
            if victim.is_some() && last_before.map(|(_, pid)| *pid) == victim {
                held += 1;
            }
            seen.answers.extend(part.answers);
            seen.failed += part.failed;
            seen.hung += part.hung;
            seen.other += part.other;
        }
    }
    let panic = match panic_request {
        Some(request) => request.await.unwrap_or_else(|_| "-".into()),
        None => "-".into(),
    };
    seen.answers.sort_unstable_by_key(|(at, _)| *at);
    let replacement = seen
        .answers
        .iter()
        .find(|(at, pid)| *at >= start && !before.contains(pid))
        .map(|(at, _)| *at - start);
    let window_start = start - Duration::from_millis(100);
    let gap = seen
        .answers
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at >= window_start)
        .fold((window_start, Duration::ZERO), |(last, longest), at| {
            (at, longest.max(at - last))
        })
        .1;
    let held = if victim.is_some() {
        held.to_string()
    } else {
        "-".into()
    };
    let ms =
        |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0));
    format!(
        "answered={} failed={} hung={} other={} held={held} panic={panic} replacement={} gap={} old_exit={}",
        seen.answers.len(),
        seen.failed,
        seen.hung,
        seen.other,
        ms(replacement),
        ms(Some(gap)),
        ms(old_exit),
    )
}

/// Requests `/` until told to stop, `pause` apart (none: back to back).
async fn load(mut client: KeepAliveClient, pause: Option<Duration>, shared: Arc<Shared>) -> Seen {
    let mut seen = Seen::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.get("/")).await;
        match answer {
            Ok(Ok(answer)) if answer.status == 200 => {
                let pid = answer.pid().unwrap_or(0);
                seen.answers.push((Instant::now(), pid));
                if !shared.newcomer_answered.load(Ordering::Relaxed) {
                    let before = shared.before.lock().expect("lock");
                    if !before.is_empty() && !before.contains(&pid) {
                        shared.newcomer_answered.store(true, Ordering::Relaxed);
                    }
                }
            }
            Ok(Ok(_)) => seen.other += 1,
            Ok(Err(_)) => seen.failed += 1,
            Err(_) => {
                seen.hung += 1;
                client.drop_connection();
            }
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    seen
}

/// The pids of `parent`'s children, lowest first.
fn children(parent: Pid) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent.as_raw()))
        .collect();
    pids.sort_unstable();
    pids
}

/// The parent's pid, from `/proc/PID/stat` (after the command name, which may hold spaces).
fn parent_of(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}
