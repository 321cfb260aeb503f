//! Hot upgrade of the pm demo's master (SIGUSR2) under load: the new master takes over the
//! listening socket and the pidfile, the old one exits 0 once the new workers are ready,
//! and no request fails (docs/SIGNALS.md). The control socket and the metrics endpoint
//! are handed over too. Under `NOTIFY_SOCKET` the old master says `RELOADING=1`, the new one
//! `MAINPID=<its pid>` with `READY=1`, and the old one no `STOPPING=1`.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use cluster_tests::{Load, eventually, process_gone, within};
use support::{Console, free_port, get, kill};

/// The number after `marker` in `line`.
fn pid_after(line: &str, marker: &str) -> u32 {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid after {marker:?} in {line:?}"))
}

#[tokio::test]
async fn sigusr2_hands_the_pm_demo_over_to_a_new_master_and_moves_the_pidfile() {
    let port = free_port();
    let pidfile = std::env::temp_dir().join(format!("pm-upgrade-{port}.pid"));
    let oldbin = pidfile.with_extension("pid.oldbin");
    let control = std::env::temp_dir().join(format!("pm-upgrade-{port}.sock"));
    let metrics_port = free_port();
    let notify = cluster_tests::NotifySocket::bind("pm-upgrade");
    let mut master = Console::start(
        env!("CARGO_BIN_EXE_pm_graceful_exit"),
        &[
            ("PORT", port.to_string()),
            ("PIDFILE", pidfile.display().to_string()),
            ("CONTROL_SOCKET", control.display().to_string()),
            ("METRICS_ADDRESS", format!("127.0.0.1:{metrics_port}")),
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
        ],
    );
    let old_pid = master.process.id().expect("pid");
    assert_eq!(notify.next_state(10).await.0, "READY=1");
    master
        .wait_for_count(&format!("[master:{old_pid}] new web:worker:"), 2)
        .await;
    let old_workers: BTreeSet<u32> = master
        .seen()
        .iter()
        .filter(|l| l.contains("new web:worker:"))
        .map(|l| pid_after(l, "web:worker:"))
        .collect();
    let read_pidfile = || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
    };
    assert_eq!(read_pidfile(), Some(old_pid));
    let load = Load::start(SocketAddr::from(([127, 0, 0, 1], port)), 4);
    load.answers(200).await;

    kill(old_pid, "USR2");
    let (state, datagram) = notify.next_state(10).await;
    assert_eq!(state, "RELOADING=1", "{datagram:?}");
    let new_pid = loop {
        let line = master.wait_for("new web:worker:").await;
        let pid = pid_after(&line, "[master:");
        if pid != old_pid {
            break pid;
        }
    };
    let (state, datagram) = notify.next_state(30).await;
    assert_eq!(state, "READY=1", "{datagram:?}");
    assert_eq!(
        datagram.first().map(String::as_str),
        Some(format!("MAINPID={new_pid}").as_str()),
        "MAINPID= first, then READY=1: {datagram:?}"
    );
    let status = within(30, "the old master to exit", master.process.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{:?}", master.seen());
    let mut buffer = vec![0u8; 4096];
    while let Ok(n) = notify.socket().try_recv(&mut buffer) {
        let text = String::from_utf8_lossy(&buffer[..n]).to_string();
        assert!(
            !text.lines().any(|l| l == "STOPPING=1"),
            "the old master said STOPPING=1: {text:?}"
        );
    }
    assert_eq!(
        read_pidfile(),
        Some(new_pid),
        "the new master wrote the pidfile"
    );
    assert!(
        !oldbin.exists(),
        "the old master removed {}",
        oldbin.display()
    );
    for pid in &old_workers {
        assert!(process_gone(*pid), "old worker {pid} still running");
    }
    load.answers(200).await;
    load.finish().await;
    for _ in 0..10 {
        let response = get(port, "/").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let pid = pid_after(&response, "\"pid\":");
        assert!(!old_workers.contains(&pid), "old worker {pid} answered");
    }

    // The new master serves the control socket and the metrics endpoint it inherited.
    tokio::net::UnixStream::connect(&control)
        .await
        .expect("the control socket is served after the upgrade");
    let health = get(metrics_port, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    kill(new_pid, "TERM");
    assert_eq!(notify.next_state(10).await.0, "STOPPING=1");
    eventually(15, "the new master to stop", || process_gone(new_pid)).await;
    assert!(!pidfile.exists(), "the new master removed its pidfile");
}
