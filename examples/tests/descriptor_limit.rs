//! connect_with_cluster at a descriptor limit of 256 (`ulimit -n 256`, as `prlimit
//! --nofile=256` would set it) with 600 idle client connections held: workers reach their
//! limit, say so once a second with a count, none exits, and a new request is answered as
//! soon as the connections close. In both scheduling modes.

mod support;

use std::time::{Duration, Instant};

use support::{Console, free_port, get};

const LIMIT: u32 = 256;
const HELD: usize = 600;

/// How the workers show they are at their limit.
enum Pressure {
    /// These lines, in this order.
    Lines(&'static [&'static str]),
    /// Lines containing this, at least 3 (so at least one worker logged twice: a second
    /// passed), and no more than one a second per worker (and server) from the first on.
    OncePerSecond(&'static str),
}

/// Starts the system at the limit, holds `HELD` connections until the pressure shows,
/// closes them, and checks the recovery.
async fn hold_past_the_limit(scheduling: &str, pressure: Pressure) {
    let port = free_port();
    let vars = [
        ("PORT", port.to_string()),
        ("REST_PORT", free_port().to_string()),
        ("SCHEDULING", scheduling.to_string()),
    ];
    let mut console =
        Console::start_with_nofile(env!("CARGO_BIN_EXE_connect_with_cluster"), &vars, LIMIT);
    console
        .wait_for_count(&format!("web server start listen on {port}"), 2)
        .await;
    console.wait_for_count("rest api start listen on", 2).await;

    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        held.push(stream);
    }
    match pressure {
        Pressure::Lines(lines) => {
            for line in lines {
                console.wait_for(line).await;
            }
        }
        Pressure::OncePerSecond(needle) => {
            console.wait_for(needle).await;
            let first = Instant::now();
            console.wait_for_count(needle, 3).await;
            let lines = console.seen().iter().filter(|l| l.contains(needle)).count();
            // 2 workers, 2 servers each (only one gets connections), one line a second each.
            let allowed = 4 * (first.elapsed().as_secs() as usize + 1);
            assert!(
                lines <= allowed,
                "{lines} lines in {:?}: {:#?}",
                first.elapsed(),
                console.seen()
            );
        }
    }

    drop(held);
    let closed = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(5), get(port, "/hello"))
        .await
        .expect("answered within 5 s of the close");
    eprintln!(
        "{scheduling}: answered {:?} after the close",
        closed.elapsed()
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");

    let seen = console.seen();
    let lost: Vec<_> = seen
        .iter()
        .filter(|l| l.contains("exit!") || l.contains("disconnect!") || l.contains("bad message"))
        .collect();
    assert!(lost.is_empty(), "a worker exited: {lost:#?}");
    let pid = console.process.id().expect("master pid");
    assert!(cluster_tests::process_exists(pid), "the master is alive");
    support::kill(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), console.process.wait())
        .await
        .expect("the master exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// Before: both workers ended with "bad message from the master: channel read failed: more
/// than 16 descriptors arrived with one message" and every held connection was lost.
#[tokio::test]
async fn round_robin_workers_at_their_descriptor_limit_refuse_hand_overs_and_live() {
    hold_past_the_limit(
        "round-robin",
        Pressure::Lines(&[
            // A worker: the real cause, with a count and the limit.
            "descriptor table is full (RLIMIT_NOFILE 256)",
            // The master, once both workers had no room: the connection is closed.
            "no worker had room for",
        ]),
    )
    .await;
}

/// Before: 784 "accept failed: Too many open files" lines in 4 s. Now each worker pauses
/// accepting for 500 ms and logs once a second with a count.
#[tokio::test]
async fn shared_workers_at_their_descriptor_limit_pause_accepting_and_log_once_a_second() {
    hold_past_the_limit(
        "shared",
        Pressure::OncePerSecond("time(s): Too many open files (os error 24); pausing accepts"),
    )
    .await;
}
