//! A replacement gets the sockets its predecessor was granted with its handoff
//! (`CLUSTER_LISTEN_SOCKETS`, `cluster-core/src/handed_sockets.rs`) and serves on them
//! without a listen request: in Shared scheduling the very socket the master holds (same
//! descriptor number, same socket), in RoundRobin the master's hand-overs. Workers forked
//! fresh get none.

use std::net::SocketAddr;

use cluster_tests::{Lines, children_of, http_get, start_test_master, stop_master, within};
use tokio::process::Child;

/// The test master with 2 graceful test workers on `127.0.0.1:0`; `scheduling` is
/// `TEST_SCHEDULING` (`rr`: round-robin; anything else: shared).
async fn start(scheduling: &str) -> (Child, Lines, SocketAddr, Vec<u32>) {
    let (master, lines, pids) = start_test_master(&[
        ("TEST_WORKER_EXE", "graceful_worker"),
        ("TEST_LISTEN", "127.0.0.1:0"),
        ("TEST_SCHEDULING", scheduling),
    ])
    .await;
    let address = lines
        .seen
        .iter()
        .find(|l| l.starts_with("listening"))
        .and_then(|l| l.split(' ').nth(3))
        .and_then(|a| a.parse().ok())
        .expect("a listening address");
    (master, lines, address, pids)
}

/// The value of `CLUSTER_LISTEN_SOCKETS` in process `pid`'s environment.
fn handed(pid: u32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    environ
        .split(|b| *b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .find_map(|v| v.strip_prefix("CLUSTER_LISTEN_SOCKETS="))
        .expect("CLUSTER_LISTEN_SOCKETS is set")
        .to_string()
}

/// Panics a worker; the pid of its replacement once it listens.
async fn replace_one(lines: &mut Lines, address: SocketAddr) -> u32 {
    let (status, _) = http_get(address, "/panic").await.expect("GET /panic");
    assert_eq!(status, 500);
    lines.wait_for(10, "fork").await;
    let listening = lines.wait_for(10, "listening").await;
    listening
        .split(' ')
        .nth(2)
        .and_then(|p| p.parse().ok())
        .expect("the replacement's pid")
}

/// Requests `/` on new connections until `pid` answers one (at most 400).
async fn answers_from(address: SocketAddr, pid: u32) -> bool {
    within(20, "an answer from the replacement", async {
        for _ in 0..400 {
            let (status, body) = http_get(address, "/").await.expect("GET /");
            assert_eq!(status, 200);
            if body.trim().parse() == Ok(pid) {
                return true;
            }
        }
        false
    })
    .await
}

#[tokio::test]
async fn a_replacement_serves_on_the_socket_its_predecessor_had() {
    let (master, mut lines, address, first) = start("shared").await;
    let master_pid = master.id().expect("master pid");
    for pid in &first {
        assert_eq!(handed(*pid), "", "a worker forked fresh gets no socket");
    }
    let new = replace_one(&mut lines, address).await;
    assert!(children_of(master_pid).contains(&new));

    // One entry: FD,0,127.0.0.1:0,<the bound address>.
    let entry = handed(new);
    let parts: Vec<&str> = entry.split(',').collect();
    assert_eq!(parts.len(), 4, "{entry:?}");
    assert_eq!(&parts[1..], ["0", "127.0.0.1:0", &address.to_string()]);
    let fd: u32 = parts[0].parse().expect("a descriptor number");
    // The same socket as the master's descriptor of that number.
    let of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("readlink");
    let socket = of(new);
    assert!(
        socket.to_string_lossy().starts_with("socket:"),
        "{socket:?}"
    );
    assert_eq!(socket, of(master_pid));

    assert!(
        answers_from(address, new).await,
        "the replacement never answered"
    );
    stop_master(master).await;
}

#[tokio::test]
async fn a_round_robin_replacement_is_handed_connections_without_asking() {
    let (master, mut lines, address, first) = start("rr").await;
    for pid in &first {
        assert_eq!(handed(*pid), "");
    }
    let new = replace_one(&mut lines, address).await;
    // No descriptor: the master accepts.
    assert_eq!(handed(new), format!("-,0,127.0.0.1:0,{address}"));
    assert!(
        answers_from(address, new).await,
        "the replacement never answered"
    );
    stop_master(master).await;
}
