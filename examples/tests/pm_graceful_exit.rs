//! The seed's pm demo, run as a user would: `web` group of 2 on a shared port, a failing
//! request answered 500 and its worker replaced, reload on SIGHUP, SIGTTIN/SIGTTOU scale,
//! SIGTERM stops all and removes the pidfile.

mod support;

use std::time::Duration;

use support::{Console, free_port, get, kill};

#[tokio::test]
async fn the_pm_demo_forks_replaces_reloads_and_stops_like_the_seed() {
    let port = free_port();
    let pidfile = std::env::temp_dir().join(format!("pm-demo-{port}.pid"));
    let mut master = Console::start(
        env!("CARGO_BIN_EXE_pm_graceful_exit"),
        &[
            ("PORT", port.to_string()),
            ("PIDFILE", pidfile.display().to_string()),
        ],
    );
    let master_pid = master.process.id().expect("pid");
    master
        .wait_for_count(&format!("[master:{master_pid}] new web:worker:"), 2)
        .await;
    assert_eq!(
        std::fs::read_to_string(&pidfile).expect("pidfile").trim(),
        master_pid.to_string()
    );
    // The workers report ready once they listen: retry until one answers.
    let body = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let response = get(port, "/").await;
            if let Some((_, body)) = response.split_once("\r\n\r\n") {
                return body.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("an answer");
    assert!(body.contains("\"url\":\"/\""), "{body}");

    let response = get(port, "/asyncerror").await;
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    let disconnect = master.wait_for(" disconnect! new worker:").await;
    let failed = disconnect
        .split("worker:")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("pid")
        .to_string();
    master
        .wait_for(&format!("[worker:{failed}] close 1 servers!"))
        .await;
    master
        .wait_for(&format!("[worker:{failed}] worker disconnect!"))
        .await;
    let quit = master.wait_for(&format!("web:worker:{failed} quit")).await;
    assert!(quit.ends_with("quit, code: 0, signal: null"), "{quit}");

    // SIGHUP: a new generation of 2 starts, then the old 2 leave gracefully.
    kill(master_pid, "HUP");
    for _ in 0..2 {
        master
            .wait_for(&format!("[master:{master_pid}] new web:worker:"))
            .await;
    }
    for _ in 0..2 {
        let quit = master.wait_for("quit, code:").await;
        assert!(quit.ends_with("quit, code: 0, signal: null"), "{quit}");
    }
    assert!(get(port, "/").await.starts_with("HTTP/1.1 200"));

    // SIGTTIN: one worker more; SIGTTOU: one less, retired gracefully.
    kill(master_pid, "TTIN");
    master
        .wait_for(&format!("[master:{master_pid}] new web:worker:"))
        .await;
    kill(master_pid, "TTOU");
    let quit = master.wait_for("quit, code:").await;
    assert!(quit.ends_with("quit, code: 0, signal: null"), "{quit}");

    kill(master_pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), master.process.wait())
        .await
        .expect("master exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(!pidfile.exists(), "the pidfile is removed at exit");
}
