//! Least privilege (issue 11): a root master switches its workers to nobody, still hands
//! them a port below 1024, and binds nothing they were not declared.

use std::collections::HashMap;

use cluster_core::{Event, StopMode, setup_master};
use cluster_tests::{TestMsg, http_get, within, worker_settings};

const NOBODY: u32 = 65534;

/// A port below 1024 nothing listens on.
fn free_low_port(skip: u16) -> u16 {
    (900..1024)
        .rev()
        .find(|&port| port != skip && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below 1024")
}

/// The values of `field` (e.g. `Uid:`) in `/proc/PID/status`.
fn status_field(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line[field.len()..]
        .split_whitespace()
        .map(|v| v.parse().expect("number"))
        .collect()
}

#[tokio::test]
async fn a_worker_run_as_nobody_gets_a_declared_low_port_and_is_refused_the_rest() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching workers to another uid needs root");
        return;
    }
    let port = free_low_port(0);
    let undeclared_port = free_low_port(port);
    let declared = format!("127.0.0.1:{port}");
    let undeclared = format!("127.0.0.1:{undeclared_port}");
    // A stale socket file at an undeclared path: the master must leave it alone.
    let stale = cluster_tests::unique_socket_path("stale");
    let _ = std::fs::remove_file(&stale);
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind stale socket"));
    let undeclared_path = format!("unix:{}", stale.display());

    // Give the master a supplementary group: the workers must not inherit it.
    nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(4)]).expect("setgroups");
    assert_eq!(status_field(std::process::id(), "Groups:"), vec![4]);
    let cluster = setup_master(
        worker_settings("serve")
            .uid(NOBODY)
            .gid(NOBODY)
            .allow_listen(declared.clone()),
    )
    .expect("setup");
    let mut events = cluster.events();
    let served = cluster.fork(&[("TEST_LISTEN", &declared)]).expect("fork");
    let mut refused = HashMap::new();
    for address in [&undeclared, &undeclared_path] {
        let worker = cluster.fork(&[("TEST_LISTEN", address)]).expect("fork");
        refused.insert(worker.id(), address.clone());
    }

    // One loop for both: a refusal may come before or after the listening.
    let mut listening = None;
    within(10, "the declared listen and both refusals", async {
        while listening.is_none() || !refused.is_empty() {
            match events.next().await.expect("event stream") {
                Event::Listening(w, address) => listening = Some((w.id(), address.to_string())),
                Event::Message(w, message) => {
                    let message: TestMsg = message.decode().expect("a TestMsg");
                    if message.kind == "hello" {
                        continue;
                    }
                    let address = refused.remove(&w.id()).expect("a refused worker");
                    assert_eq!(message.kind, "listen-error", "{address}: {}", message.data);
                    assert!(
                        message.data.contains(&address) && message.data.contains("refused"),
                        "{}",
                        message.data
                    );
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(listening, Some((served.id(), declared.clone())));

    // The worker really runs as nobody, with no supplementary group.
    let pid = served.pid();
    assert_eq!(status_field(pid, "Uid:"), vec![NOBODY; 4]);
    assert_eq!(status_field(pid, "Gid:"), vec![NOBODY; 4]);
    assert!(status_field(pid, "Groups:").is_empty());
    // It serves the port it could not have bound itself.
    let (status, body) = http_get(declared.parse().expect("address"), "/")
        .await
        .expect("GET");
    assert_eq!((status, body.trim()), (200, pid.to_string().as_str()));

    // Nothing undeclared was bound or removed.
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", undeclared_port)).is_ok(),
        "the master bound {undeclared}"
    );
    assert!(stale.exists(), "the stale socket file was removed");
    let _ = std::fs::remove_file(&stale);
    cluster.stop(StopMode::Fast).await;
}
