//! The README recipe (connect_with_cluster) when another program holds its port: every
//! worker's listen fails at start-up and the dispatch forks a replacement for each. The
//! master backs off, then stops with a clear error and a non-zero exit instead of forking
//! for ever.

mod support;

use std::time::{Duration, Instant};

use support::{Console, free_port};

#[tokio::test]
async fn workers_that_cannot_listen_make_the_master_give_up_within_5s() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let started = Instant::now();
    let mut console = Console::start(
        env!("CARGO_BIN_EXE_connect_with_cluster"),
        &[
            ("PORT", port.to_string()),
            ("REST_PORT", free_port().to_string()),
        ],
    );
    let error = console.wait_for("stopping instead of forking more").await;
    assert!(
        error.contains("died before they were ready") && error.contains("max_boot_failures"),
        "{error}"
    );
    let status = tokio::time::timeout(Duration::from_secs(5), console.process.wait())
        .await
        .expect("the master exits")
        .expect("wait");
    let took = started.elapsed();
    assert_ne!(status.code(), Some(0), "{status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let forks = console
        .seen()
        .iter()
        .filter(|line| line.contains(" fork"))
        .count()
        + 2; // the first two are not announced
    assert!(forks < 20, "{forks} forks: {:#?}", console.seen());
    eprintln!("gave up after {took:?} and {forks} forks");
    drop(taken);
}
