//! The pm demo under a service manager: `Type=notify` messages in order and the watchdog.

mod support;

use cluster_tests::{NotifySocket, within};
use support::{Console, free_port, kill};

#[tokio::test]
async fn pm_tells_ready_reloading_ready_stopping_and_pets_the_watchdog() {
    let notify = NotifySocket::bind("pm");
    let port = free_port();
    let mut master = Console::start(
        env!("CARGO_BIN_EXE_pm_graceful_exit"),
        &[
            ("PORT", port.to_string()),
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            // WATCHDOG=1 every 100 ms.
            ("WATCHDOG_USEC", "200000".to_string()),
        ],
    );
    let pid = master.process.id().expect("pid");
    let (state, _) = notify.next_state(10).await;
    assert_eq!(state, "READY=1");
    within(5, "WATCHDOG=1", async {
        let mut buffer = [0u8; 512];
        loop {
            let n = notify.socket().recv(&mut buffer).await.expect("recv");
            if buffer[..n].starts_with(b"WATCHDOG=1") {
                break;
            }
        }
    })
    .await;

    kill(pid, "HUP");
    let (state, datagram) = notify.next_state(10).await;
    assert_eq!(state, "RELOADING=1");
    assert!(datagram.iter().any(|l| l.starts_with("MONOTONIC_USEC=")));
    let (state, _) = notify.next_state(20).await;
    assert_eq!(state, "READY=1", "after the reload");

    kill(pid, "TERM");
    let (state, _) = notify.next_state(10).await;
    assert_eq!(state, "STOPPING=1");
    let status = within(15, "master exit", master.process.wait())
        .await
        .expect("wait");
    assert!(status.success(), "{status}");
}
