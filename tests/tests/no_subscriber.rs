//! Without any `tracing` subscriber, what goes wrong still reaches the user: `graceful::install`
//! says on stderr that none is set, a panic's report is written to stderr, and a listener
//! that stops accepting ends `graceful::serve` with its error, which `main` returns.

use std::process::Stdio;

use cluster_tests::{KeepAliveClient, sibling_exe, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `bare_worker`; returns it, its port, and its stderr.
async fn start() -> (Child, u16, tokio::process::ChildStderr) {
    let mut child = Command::new(sibling_exe("bare_worker"))
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start bare_worker");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = within(10, "listening", stdout.next_line())
        .await
        .expect("read")
        .expect("a line");
    let port = line
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"));
    let stderr = child.stderr.take().expect("stderr");
    (child, port, stderr)
}

/// Everything written to stderr until the process closed it (it exited).
async fn all_of(mut stderr: tokio::process::ChildStderr) -> String {
    let mut text = String::new();
    within(10, "stderr closes", stderr.read_to_string(&mut text))
        .await
        .expect("read stderr");
    text
}

#[tokio::test]
async fn a_panic_is_reported_on_stderr_and_install_says_no_subscriber_is_set() {
    let (mut child, port, stderr) = start().await;
    let address = ([127, 0, 0, 1], port).into();
    let answer = KeepAliveClient::new(address)
        .get("/panic")
        .await
        .expect("an answer");
    assert_eq!(answer.status, 500, "{answer:?}");
    // Alone, graceful exits once drained.
    let status = within(10, "the server exits", child.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let stderr = all_of(stderr).await;
    assert!(
        stderr.contains("graceful: NOTE no `tracing` subscriber is set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("graceful: ERROR panic 1: the newcomer's bug"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_listener_that_stops_accepting_ends_serve_with_its_error() {
    let (mut child, port, stderr) = start().await;
    let address = ([127, 0, 0, 1], port).into();
    let mut client = KeepAliveClient::new(address);
    assert_eq!(client.get("/").await.expect("an answer").status, 200);
    // The request that breaks the listener is still answered: serve drains its open
    // connections (this one is closed once idle) before it returns the error.
    let answer = client.get("/break-listener").await.expect("an answer");
    assert_eq!(answer.status, 200, "{answer:?}");
    let status = within(10, "the server returns the error", child.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(1), "main returned the error");
    let stderr = all_of(stderr).await;
    assert!(
        stderr.contains("graceful::serve: the listener stopped accepting: Invalid argument"),
        "{stderr}"
    );
}
