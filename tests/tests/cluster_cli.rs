//! The `cluster` command with programs that know nothing of this project: a Rust server
//! using the `listenfd` crate (`listenfd_server`) and a Python one taking descriptor 3
//! (`tests/fixtures/fd3_server.py`). Real processes, real sockets on 127.0.0.1 (port 0: the
//! programs print the address they were given).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use cluster_tests::{Lines, Load, children_of, eventually, http_get, process_exists, within};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The `cluster` binary (cluster-cli), next to this package's binaries. cluster-cli is no
/// dependency of this package (a binary crate cannot be), so it is built here once per test
/// run: a no-op when up to date, and `cargo test -p cluster-tests` alone never runs a stale
/// one.
fn cluster_exe() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| workspace_bin("cluster-cli", "cluster"))
        .clone()
}

/// `clusterctl`, built the same way.
fn clusterctl_exe() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| workspace_bin("clusterctl", "clusterctl"))
        .clone()
}

fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("current_exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package, "--bin", bin])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build");
    assert!(status.success(), "building {bin} failed");
    dir.join(bin)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn python3() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
}

/// A running `cluster run`: the master, its output, the workers' pids and the address.
struct Running {
    master: Child,
    lines: Lines,
    pids: Vec<u32>,
    address: SocketAddr,
}

/// `cluster run -w WORKERS -l 127.0.0.1:0 FLAGS -- PROGRAM`; waits until every worker
/// printed `PID listening ADDRESS`.
async fn cluster_run(workers: usize, flags: &[&str], program: &[&str]) -> Running {
    let mut master = Command::new(cluster_exe())
        .args(["run", "-w", &workers.to_string(), "-l", "127.0.0.1:0"])
        .args(flags)
        .arg("--")
        .args(program)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start cluster");
    let mut lines = Lines::new(master.stdout.take().expect("stdout"));
    let mut pids = Vec::new();
    let mut address = None;
    for _ in 0..workers {
        let (pid, at) = listening(&mut lines).await;
        pids.push(pid);
        address = Some(at);
    }
    Running {
        master,
        lines,
        pids,
        address: address.expect("an address"),
    }
}

/// The next `… PID listening ADDRESS` line of a worker.
async fn listening(lines: &mut Lines) -> (u32, SocketAddr) {
    let line = lines.wait_for(20, " listening ").await;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "listening")
        .expect("listening");
    (
        words[at - 1].parse().expect("pid"),
        words[at + 1].parse().expect("address"),
    )
}

/// The pid in a `{"pid":N}` answer.
fn pid_of(body: &str) -> u32 {
    let at = body.find("\"pid\":").expect("pid in body") + 6;
    let digits: String = body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("pid")
}

/// Requests on new connections until every pid in `pids` has answered (at most 400).
async fn answered_by_all(address: SocketAddr, pids: &[u32]) {
    let wanted: BTreeSet<u32> = pids.iter().copied().collect();
    let mut seen = BTreeSet::new();
    for _ in 0..400 {
        let (status, body) = within(10, "an answer", http_get(address, "/"))
            .await
            .expect("request");
        assert_eq!(status, 200, "{body}");
        seen.insert(pid_of(&body));
        if wanted.is_subset(&seen) {
            return;
        }
    }
    panic!("answers came from {seen:?}, not from every one of {wanted:?}");
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).expect("kill");
}

impl Running {
    /// SIGTERM to the master; its exit code.
    async fn terminate(mut self) -> (i32, Lines) {
        signal(self.master.id().expect("pid"), Signal::SIGTERM);
        let status = within(20, "the master's exit", self.master.wait())
            .await
            .expect("wait");
        (status.code().expect("an exit code"), self.lines)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listenfd_workers_share_the_masters_socket_and_are_its_children() {
    let server = cluster_tests::sibling_exe("listenfd_server");
    let run = cluster_run(2, &["--notify"], &[server.to_str().expect("utf-8")]).await;
    answered_by_all(run.address, &run.pids).await;
    // The programs themselves are the master's children: no shim process between.
    let master_pid = run.master.id().expect("pid");
    let children: BTreeSet<u32> = children_of(master_pid).into_iter().collect();
    assert_eq!(
        children,
        run.pids.iter().copied().collect(),
        "children of the master"
    );
    let (code, _) = run.terminate().await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_program_serves_descriptor_3() {
    let Some(python) = python3() else {
        eprintln!("skipped: python3 is not installed (.ci/run installs it)");
        return;
    };
    let script = fixture("fd3_server.py");
    let run = cluster_run(
        2,
        &["--ready-after", "200"],
        &[
            python.to_str().expect("utf-8"),
            script.to_str().expect("utf-8"),
        ],
    )
    .await;
    answered_by_all(run.address, &run.pids).await;
    let (_, body) = within(10, "an answer", http_get(run.address, "/"))
        .await
        .expect("request");
    assert!(body.contains("\"server\":\"python\""), "{body}");
    // Each program knows which instance it is (pm2's NODE_APP_INSTANCE).
    assert!(
        body.contains("\"instance\":\"1\"") || body.contains("\"instance\":\"2\""),
        "{body}"
    );
    let pids = run.pids.clone();
    let (code, mut lines) = run.terminate().await;
    assert_eq!(code, 0);
    // Both programs were told with SIGTERM (their handler printed it).
    for pid in pids {
        let told = format!("python {pid} SIGTERM");
        if !lines.seen.iter().any(|l| l.contains(&told)) {
            lines.wait_for(5, &told).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_is_replaced_and_the_socket_keeps_serving() {
    let server = cluster_tests::sibling_exe("listenfd_server");
    let mut run = cluster_run(2, &["--notify"], &[server.to_str().expect("utf-8")]).await;
    let victim = run.pids[0];
    signal(victim, Signal::SIGKILL);
    let (replacement, _) = listening(&mut run.lines).await;
    assert!(!run.pids.contains(&replacement));
    eventually(5, "the killed worker reaped", || !process_exists(victim)).await;
    answered_by_all(run.address, &[run.pids[1], replacement]).await;
    let (code, _) = run.terminate().await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_under_load_with_no_failed_request() {
    let server = cluster_tests::sibling_exe("listenfd_server");
    let mut run = cluster_run(2, &["--notify"], &[server.to_str().expect("utf-8")]).await;
    let load = Load::start(run.address, 4);
    load.answers(200).await;
    signal(run.master.id().expect("pid"), Signal::SIGHUP);
    let mut new = Vec::new();
    for _ in 0..2 {
        new.push(listening(&mut run.lines).await.0);
    }
    for old in run.pids.clone() {
        eventually(20, "the old workers gone", || !process_exists(old)).await;
    }
    load.answers(200).await;
    let answered = load.finish().await;
    assert!(answered > 400, "{answered}");
    assert!(new.iter().all(|pid| !run.pids.contains(pid)));
    answered_by_all(run.address, &new).await;
    let children: BTreeSet<u32> = children_of(run.master.id().expect("pid"))
        .into_iter()
        .collect();
    assert_eq!(children, new.iter().copied().collect());
    let (code, _) = run.terminate().await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_program_with_sigterm_and_exits_0() {
    let server = cluster_tests::sibling_exe("listenfd_server");
    let run = cluster_run(
        2,
        &["--notify", "--stop-timeout", "5000"],
        &[server.to_str().expect("utf-8")],
    )
    .await;
    let pids = run.pids.clone();
    let (code, mut lines) = run.terminate().await;
    assert_eq!(code, 0);
    for pid in &pids {
        assert!(!process_exists(*pid), "worker {pid} outlived the master");
        let told = format!("listenfd_server {pid} SIGTERM");
        if !lines.seen.iter().any(|l| l.contains(&told)) {
            lines.wait_for(5, &told).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_ignoring_sigterm_is_killed_at_the_stop_timeout() {
    // A shell that ignores SIGTERM: only the SIGKILL at --stop-timeout ends it.
    let mut master = Command::new(cluster_exe())
        .args([
            "run",
            "-w",
            "1",
            "--ready-after",
            "100",
            "--stop-timeout",
            "500",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "trap '' TERM; echo \"sh $$ listening 127.0.0.1:1\"; while :; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start cluster");
    let mut lines = Lines::new(master.stdout.take().expect("stdout"));
    let (pid, _) = listening(&mut lines).await;
    signal(master.id().expect("pid"), Signal::SIGTERM);
    let status = within(20, "the master's exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(!process_exists(pid), "the shell outlived the master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_start_runs_every_group_of_a_file() {
    let server = cluster_tests::sibling_exe("listenfd_server");
    let file = cluster_tests::unique_socket_path("cluster-start").with_extension("toml");
    let config = format!(
        "[group.api]\nexec = {server:?}\ninstances = 2\nlisten = [\"127.0.0.1:0\"]\n\
         ready = \"notify\"\nstop_timeout_ms = 5000\n\n\
         [group.admin]\nexec = {server:?}\ninstances = 1\nlisten = [\"127.0.0.1:0\"]\n\
         ready_after_ms = 100\n"
    );
    std::fs::write(&file, config).expect("write config");
    let mut master = Command::new(cluster_exe())
        .arg("start")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start cluster");
    let mut lines = Lines::new(master.stdout.take().expect("stdout"));
    let mut groups: std::collections::BTreeMap<String, Vec<(u32, SocketAddr)>> = Default::default();
    for _ in 0..3 {
        let (pid, address) = listening(&mut lines).await;
        let line = lines.seen.last().expect("a line").clone();
        let group = line[1..line.find(':').expect("prefix")].to_string();
        groups.entry(group).or_default().push((pid, address));
    }
    let api = &groups["api"];
    let admin = &groups["admin"];
    assert_eq!((api.len(), admin.len()), (2, 1), "{groups:?}");
    assert_ne!(api[0].1, admin[0].1, "each group has its own socket");
    let api_pids: Vec<u32> = api.iter().map(|(pid, _)| *pid).collect();
    answered_by_all(api[0].1, &api_pids).await;
    answered_by_all(admin[0].1, &[admin[0].0]).await;
    signal(master.id().expect("pid"), Signal::SIGTERM);
    let status = within(20, "the master's exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterctl_status_shows_the_programs_own_pids() {
    let server = cluster_tests::sibling_exe("listenfd_server");
    let socket = cluster_tests::unique_socket_path("cluster-cli-ctl");
    let socket_arg = socket.to_str().expect("utf-8").to_string();
    let run = cluster_run(
        2,
        &["--notify", "--control-socket", &socket_arg],
        &[server.to_str().expect("utf-8")],
    )
    .await;
    let ctl = clusterctl_exe();
    let mut shown = BTreeSet::new();
    eventually(10, "clusterctl status with both workers ready", || {
        let out = std::process::Command::new(&ctl)
            .args(["--socket", &socket_arg, "status"])
            .output()
            .expect("clusterctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Rows: GROUP ID PID STATE GEN READY …
        shown = text
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split_whitespace().collect();
                (cells.first() == Some(&"app") && cells.get(5) == Some(&"yes"))
                    .then(|| cells.get(2).and_then(|pid| pid.parse::<u32>().ok()))
                    .flatten()
            })
            .collect();
        shown.len() == 2
    })
    .await;
    assert_eq!(
        shown,
        run.pids.iter().copied().collect(),
        "the programs' pids"
    );
    let (code, _) = run.terminate().await;
    assert_eq!(code, 0);
}
