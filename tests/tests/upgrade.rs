//! Hot upgrade of a plain cluster's master (SIGUSR2): the new master inherits the listening
//! socket, and the old one retires only once the new one's workers are ready. Under load:
//! no request fails, no connection is refused. A new master that fails leaves the old one
//! serving.

use std::net::SocketAddr;

use cluster_tests::{
    Lines, Load, children_of, eventually, http_get, process_gone, start_test_master, within,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;

/// Kills a process this test started indirectly (the new master) if the test ends early.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !process_gone(self.0) {
            let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).expect("kill");
}

/// A port nobody listens on now (the masters must agree on a fixed address).
fn free_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("address")
}

/// Starts the test master with two graceful workers on `address` and `env`; returns it,
/// its output, and its workers' pids once both are listening.
async fn start_master(address: SocketAddr, env: &[(&str, &str)]) -> (Child, Lines, Vec<u32>) {
    let address = address.to_string();
    let mut vars = vec![
        ("TEST_LISTEN", address.as_str()),
        ("TEST_WORKER_EXE", "graceful_worker"),
        ("TEST_LOG", "1"),
    ];
    vars.extend_from_slice(env);
    start_test_master(&vars).await
}

/// The new master's pid, from the old master's log line that says it started it.
async fn new_master_pid(lines: &mut Lines) -> u32 {
    let line = lines.wait_for(10, "new master started").await;
    line.split_once("pid=")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

#[tokio::test]
async fn sigusr2_under_load_hands_over_to_a_new_master_with_no_failed_request() {
    upgrade_under_load(&[]).await;
}

#[tokio::test]
async fn sigusr2_under_load_in_round_robin_fails_no_request() {
    // The old master's dispatcher stops accepting at the hand-over and places what it
    // accepted with its workers before retiring them: no connection is left in its hands.
    upgrade_under_load(&[("TEST_SCHEDULING", "rr")]).await;
}

/// SIGUSR2 to a master started with `env`, under load: the new master takes over, the old
/// one exits 0 with its workers, and no request fails (`Load::finish` asserts it).
async fn upgrade_under_load(env: &[(&str, &str)]) {
    let address = free_port();
    let (mut old_master, mut lines, old_workers) = start_master(address, env).await;
    let old_pid = old_master.id().expect("pid");
    let load = Load::start(address, 4);
    load.answers(200).await;

    signal(old_pid, Signal::SIGUSR2);
    let new_pid = new_master_pid(&mut lines).await;
    let _cleanup = KillOnDrop(new_pid);
    assert_ne!(new_pid, old_pid);
    lines
        .seen_or_wait_for(30, &format!("master {new_pid}"))
        .await;
    let status = within(30, "the old master to exit", old_master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0), "the old master exits 0");
    for pid in &old_workers {
        assert!(process_gone(*pid), "old worker {pid} still running");
    }
    load.answers(200).await;
    let answered = load.finish().await;

    let new_workers = children_of(new_pid);
    assert_eq!(
        new_workers.len(),
        2,
        "the new master's workers: {new_workers:?}"
    );
    assert!(new_workers.iter().all(|pid| !old_workers.contains(pid)));
    let (status, body) = http_get(address, "/").await.expect("get after the upgrade");
    assert_eq!(status, 200);
    let served_by: u32 = body.trim().parse().expect("a pid");
    assert!(
        new_workers.contains(&served_by),
        "served by {served_by}, not a new worker"
    );
    assert!(answered > 400);

    signal(new_pid, Signal::SIGTERM);
    eventually(15, "the new master to stop", || process_gone(new_pid)).await;
}

/// SIGUSR2 to a master whose new instance fails as `env` says: the upgrade fails with a
/// log line containing `why`, the old master and its workers go on serving, and no request
/// fails meanwhile.
async fn a_failed_upgrade_keeps_the_old_master_serving(env: &[(&str, &str)], why: &str) {
    let address = free_port();
    let (mut old_master, mut lines, old_workers) = start_master(address, env).await;
    let old_pid = old_master.id().expect("pid");
    let load = Load::start(address, 4);
    load.answers(200).await;

    signal(old_pid, Signal::SIGUSR2);
    let new_pid = new_master_pid(&mut lines).await;
    let _cleanup = KillOnDrop(new_pid);
    let failed = lines.wait_for(15, "upgrade failed").await;
    assert!(failed.contains(why), "{failed}");
    eventually(10, "the failed new master to be gone", || {
        process_gone(new_pid)
    })
    .await;
    load.answers(200).await;
    load.finish().await;

    assert!(
        old_master.try_wait().expect("try_wait").is_none(),
        "the old master runs"
    );
    for pid in &old_workers {
        assert!(!process_gone(*pid), "old worker {pid} is gone");
    }
    let (status, body) = http_get(address, "/").await.expect("get after the failure");
    assert_eq!(status, 200);
    let served_by: u32 = body.trim().parse().expect("a pid");
    assert!(old_workers.contains(&served_by), "served by {served_by}");

    signal(old_pid, Signal::SIGTERM);
    let status = within(15, "the old master to stop", old_master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_new_master_that_exits_leaves_the_old_one_serving() {
    a_failed_upgrade_keeps_the_old_master_serving(
        &[("TEST_FAIL_AS_UPGRADE", "1")],
        "exited before it was ready",
    )
    .await;
}

#[tokio::test]
async fn a_new_master_whose_workers_never_get_ready_is_killed_at_the_upgrade_timeout() {
    a_failed_upgrade_keeps_the_old_master_serving(
        &[
            ("TEST_HANG_AS_UPGRADE", "1"),
            ("TEST_WAIT_READY", "1"),
            ("TEST_UPGRADE_TIMEOUT_MS", "2000"),
        ],
        "not ready within",
    )
    .await;
}

#[tokio::test]
async fn a_udp_socket_moves_to_the_new_master_on_upgrade() {
    // The old master hands its UDP socket over with the TCP ones: without it the new
    // master's bind would fail (the old one still holds the address) and the upgrade too.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
    let address = probe.local_addr().expect("address");
    drop(probe);
    let listen = format!("udp:{address}");
    let (mut old_master, mut lines, old_workers) =
        start_test_master(&[("TEST_LISTEN", listen.as_str()), ("TEST_LOG", "1")]).await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("client");
    let ask = || async {
        client.send_to(b"who", address).await.expect("send");
        let mut answer = [0u8; 32];
        let (length, _) = within(5, "an answer", client.recv_from(&mut answer))
            .await
            .expect("recv");
        std::str::from_utf8(&answer[..length])
            .expect("utf-8")
            .parse::<u32>()
            .expect("a pid")
    };
    assert!(old_workers.contains(&ask().await));

    let old_pid = old_master.id().expect("pid");
    signal(old_pid, Signal::SIGUSR2);
    let new_pid = new_master_pid(&mut lines).await;
    let _cleanup = KillOnDrop(new_pid);
    let status = within(30, "the old master to exit", old_master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0), "the old master exits 0");
    let new_workers = children_of(new_pid);
    assert_eq!(new_workers.len(), 2, "{new_workers:?}");
    let served_by = ask().await;
    assert!(
        new_workers.contains(&served_by),
        "answered by {served_by}, not a new worker {new_workers:?}"
    );
    signal(new_pid, Signal::SIGTERM);
    eventually(15, "the new master to stop", || process_gone(new_pid)).await;
}
