//! The README's worker (`connect_with_cluster_worker`), unmodified, under the `cluster`
//! command: outside a cluster `cluster_worker::incoming` adopts the socket passed with
//! systemd's protocol for its address instead of binding, so both workers accept on the
//! master's sockets and are the master's own children.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use cluster_tests::{Lines, children_of};
use support::{free_port, get, kill};
use tokio::process::Command;

/// The `cluster` binary, built here (cluster-cli is no dependency of this package).
fn cluster_exe() -> PathBuf {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "cluster-cli", "--bin", "cluster"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build -p cluster-cli");
    assert!(status.success(), "building the cluster binary failed");
    let mut dir = PathBuf::from(env!("CARGO_BIN_EXE_connect_with_cluster_worker"));
    dir.pop();
    dir.join("cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_worker_runs_unchanged_under_cluster_run() {
    let (port, rest_port) = (free_port(), free_port());
    let mut master = Command::new(cluster_exe())
        .args(["run", "-w", "2", "--ready-after", "100"])
        .args(["-l", &format!("127.0.0.1:{port}")])
        .args(["-l", &format!("127.0.0.1:{rest_port}")])
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_connect_with_cluster_worker"))
        .env("PORT", port.to_string())
        .env("REST_PORT", rest_port.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start cluster");
    let master_pid = master.id().expect("pid");
    let mut lines = Lines::new(master.stdout.take().expect("stdout"));
    let mut pids = BTreeSet::new();
    for _ in 0..2 {
        let line = lines.wait_for(20, "web server start listen on").await;
        let pid = line
            .split("[worker:")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .expect("worker pid");
        pids.insert(pid);
    }
    // Each worker serves the master's socket (had it bound its own, the second would have
    // failed with "address in use").
    let children: BTreeSet<u32> = children_of(master_pid).into_iter().collect();
    assert_eq!(children, pids);
    let mut answered = BTreeSet::new();
    for _ in 0..400 {
        let response = get(port, "/").await;
        let at = response.find("\"pid\":").expect("a pid in the answer") + 6;
        let pid: String = response[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        answered.insert(pid.parse::<u32>().expect("pid"));
        if answered == pids {
            break;
        }
    }
    assert_eq!(answered, pids, "both workers answer on the master's socket");
    kill(master_pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), master.wait())
        .await
        .expect("the master exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}
