//! The examples' logs fit their destination: `RUST_LOG` chooses what is logged, and a stderr
//! that is not a terminal gets no colour codes.

mod support;

use std::process::Stdio;

use cluster_tests::{Lines, within};
use support::{free_port, kill};
use tokio::process::Command;

#[tokio::test]
async fn rust_log_is_honoured_and_a_pipe_gets_no_colour_codes() {
    let mut master = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" 2>&1")
        .arg(env!("CARGO_BIN_EXE_connect_with_cluster"))
        .env("PORT", free_port().to_string())
        .env("REST_PORT", free_port().to_string())
        .env("RUST_LOG", "cluster_core=info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");
    let mut lines = Lines::new(master.stdout.take().expect("stdout"));
    for _ in 0..2 {
        lines.wait_for(10, "rest api start listen on").await;
    }
    let pid = master.id().expect("pid");
    kill(pid, "HUP");
    // An info line of the master's library, shown because RUST_LOG asks for it.
    let logged = lines.wait_for(10, "SIGHUP: replacing every worker").await;
    assert!(logged.contains("INFO"), "{logged}");
    lines.wait_for(10, "reload done").await;
    kill(pid, "TERM");
    let status = within(10, "master exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let escapes: Vec<_> = lines.seen.iter().filter(|l| l.contains('\x1b')).collect();
    assert!(escapes.is_empty(), "colour codes in a pipe: {escapes:?}");
}
