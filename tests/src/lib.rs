//! Shared pieces of the integration tests: the message type the test worker speaks, a
//! tiny HTTP client, and helpers that wait on events with deadlines instead of sleeping.
//!
//! Linux only: /proc probes, and the cluster crates.

#[cfg(not(target_os = "linux"))]
compile_error!("cluster-tests supports Linux only (see the README)");

mod http_client;

pub use http_client::{Answer, KeepAliveClient};

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The one message type the test worker and the tests exchange, in both encodings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestMsg {
    /// What the message is.
    pub kind: String,
    /// Its content.
    pub data: String,
}

impl TestMsg {
    /// A message.
    pub fn new(kind: &str, data: impl Into<String>) -> Self {
        TestMsg {
            kind: kind.into(),
            data: data.into(),
        }
    }
}

/// The test worker binary.
pub fn worker_exe() -> std::path::PathBuf {
    sibling_exe("test_worker")
}

/// The test master binary.
pub fn master_exe() -> std::path::PathBuf {
    sibling_exe("test_master")
}

/// A binary of this package, next to the running test's directory.
pub fn sibling_exe(name: &str) -> std::path::PathBuf {
    let mut dir = std::env::current_exe().expect("current_exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build with `cargo test -p cluster-tests`",
        path.display()
    );
    path
}

/// A Unix socket path in the temporary directory that no other test, nor an earlier run
/// whose process had the same pid (pids are reused quickly), uses: `tag`, the pid and the
/// time in nanoseconds.
pub fn unique_socket_path(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("{tag}-{}-{nanos}.sock", std::process::id()))
}

/// Sends SIGTERM to a master the test started (already stopping is fine) and asserts that
/// it exits with code 0 within 15 s.
pub async fn stop_master(mut master: tokio::process::Child) {
    if let Some(pid) = master.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let status = within(15, "the master's exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// Awaits `future`, failing the test with `what` after `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// One `GET path` over a new connection; returns (status, body).
pub async fn http_get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// True while a process with this pid exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// This process's open descriptors.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// This process's threads.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    rss_kib_of(std::process::id())
}

/// A process's resident memory, in KiB (0 when it is gone).
pub fn rss_kib_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// True if the process has a handler installed for signal number `signal` (its `SigCgt`
/// mask in `/proc/PID/status`).
pub fn catches_signal(pid: u32, signal: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// The pids of a process's children, whichever of its threads forked them.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// True once every thread of the process is stopped (`T`, after SIGSTOP: the signal is
/// delivered after `kill` returns, and a thread still running may take one more connection).
pub fn process_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.into_iter().all(|task| {
        task.ok()
            .and_then(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .is_some_and(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T'))
            })
    })
}

/// True if the process is gone or a zombie.
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// The length of the accept queue of the socket listening on 127.0.0.1/0.0.0.0 `port`
/// (`/proc/net/tcp` shows it as the receive queue of a LISTEN entry).
pub fn accept_queue(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let listening = fields.get(3) == Some(&"0A");
        if !listening || !fields.get(1)?.ends_with(&local) {
            return None;
        }
        u64::from_str_radix(fields.get(4)?.split(':').nth(1)?, 16).ok()
    })
}

/// True if a connection to `address` is refused (refused at connect, or reset / closed
/// before any answer) within `deadline`; false if it is answered or left waiting.
pub async fn refused_within(address: SocketAddr, deadline: Duration) -> bool {
    let attempt = async {
        let mut stream = match TcpStream::connect(address).await {
            Ok(stream) => stream,
            Err(_) => return true,
        };
        let request = format!("GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            return true;
        }
        let mut first = [0u8; 1];
        matches!(stream.read(&mut first).await, Ok(0) | Err(_))
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .unwrap_or(false)
}

/// Starts the test master (`test_master`) with `env`, its two workers told to listen on
/// `TEST_LISTEN` (set it in `env`); returns it, its output, and the workers' pids once both
/// listen.
pub async fn start_test_master(env: &[(&str, &str)]) -> (tokio::process::Child, Lines, Vec<u32>) {
    let mut master = tokio::process::Command::new(master_exe())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start master");
    let mut lines = Lines::new(master.stdout.take().expect("stdout"));
    let mut pids = Vec::new();
    for _ in 0..2 {
        let line = lines.wait_for(10, "listening").await;
        pids.push(line.split(' ').nth(2).expect("pid").parse().expect("pid"));
    }
    (master, lines, pids)
}

/// Waits until `check` is true, polling every 20 ms, failing after `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    within(secs, what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Lines of a child's output, read as they come.
pub struct Lines {
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Everything read so far, for failure messages.
    pub seen: Vec<String>,
}

impl Lines {
    /// Reads `stdout` line by line.
    pub fn new(stdout: tokio::process::ChildStdout) -> Self {
        Lines {
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// The output not read yet, as a plain reader.
    pub fn into_inner(self) -> BufReader<tokio::process::ChildStdout> {
        self.lines.into_inner()
    }

    /// A line already read that contains `needle`, else the next one, within `secs`
    /// seconds: for lines of two processes that share the output and may come in either
    /// order.
    pub async fn seen_or_wait_for(&mut self, secs: u64, needle: &str) -> String {
        match self.seen.iter().find(|l| l.contains(needle)) {
            Some(line) => line.clone(),
            None => self.wait_for(secs, needle).await,
        }
    }

    /// The next line that contains `needle`, within `secs` seconds.
    pub async fn wait_for(&mut self, secs: u64, needle: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(secs), async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no line with {needle:?} within {secs}s; saw {:#?}",
                self.seen
            ),
        }
    }
}

/// The next event from `events` for which `pick` returns something, within `secs` seconds.
pub async fn wait_event<T>(
    events: &mut cluster_core::EventStream,
    secs: u64,
    what: &str,
    mut pick: impl FnMut(&cluster_core::Event) -> Option<T>,
) -> T {
    within(secs, what, async {
        loop {
            let event = events.next().await.expect("event stream ended");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
}

/// Waits for `count` `listening` events; returns the (shared) address of the last one.
pub async fn wait_listening(events: &mut cluster_core::EventStream, count: usize) -> SocketAddr {
    let mut address = None;
    for _ in 0..count {
        address = Some(
            wait_event(events, 10, "listening", |e| match e {
                cluster_core::Event::Listening(_, a) => Some(*a),
                _ => None,
            })
            .await,
        );
    }
    address.expect("count is at least 1")
}

/// The next user message a worker sent, decoded as [`TestMsg`].
pub async fn next_message(events: &mut cluster_core::EventStream, secs: u64) -> (u32, TestMsg) {
    wait_event(events, secs, "a worker message", |event| match event {
        cluster_core::Event::Message(worker, message) => Some((
            worker.id(),
            message.decode::<TestMsg>().expect("decode TestMsg"),
        )),
        _ => None,
    })
    .await
}

/// Settings that start the test worker with `mode`.
pub fn worker_settings(mode: &str) -> cluster_core::Settings {
    cluster_core::Settings::new()
        .exec(worker_exe())
        .env("TEST_MODE", mode)
        .stop_timeout(Duration::from_secs(5))
}

/// The graceful test worker binary.
pub fn graceful_worker_exe() -> std::path::PathBuf {
    sibling_exe("graceful_worker")
}

/// The watchdog and recycling test worker binary.
pub fn watch_worker_exe() -> std::path::PathBuf {
    sibling_exe("watch_worker")
}

/// A master running graceful test workers, with the seed's dispatch: a new worker is forked
/// on every `disconnect`.
pub struct GracefulCluster {
    /// The master.
    pub cluster: cluster_core::Cluster,
    /// Every event since before the first fork.
    pub events: cluster_core::EventStream,
    /// The shared HTTP address.
    pub address: SocketAddr,
    /// The workers started so far (the first ones and the replacements).
    pub forked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl GracefulCluster {
    /// Starts `workers` graceful test workers with `env`, and waits until they all listen.
    pub async fn start(workers: usize, env: &[(&str, &str)]) -> GracefulCluster {
        let mut settings = cluster_core::Settings::new()
            .exec(graceful_worker_exe())
            .env("TEST_LISTEN", "127.0.0.1:0")
            .stop_timeout(Duration::from_secs(10));
        for (key, value) in env {
            settings = settings.env(key, value);
        }
        Self::with_settings(settings, workers).await
    }

    /// Starts `workers` workers with `settings` (which must make them listen), and waits
    /// until they all listen.
    pub async fn with_settings(
        settings: cluster_core::Settings,
        workers: usize,
    ) -> GracefulCluster {
        let cluster = cluster_core::setup_master(settings).expect("setup");
        let mut events = cluster.events();
        let forked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut dispatch_events = cluster.events();
        let dispatch = cluster.clone();
        let dispatch_forked = forked.clone();
        tokio::spawn(async move {
            while let Some(event) = dispatch_events.next().await {
                if let cluster_core::Event::Leaving(_) = event {
                    if dispatch.fork(&[]).is_ok() {
                        dispatch_forked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        });
        for _ in 0..workers {
            cluster.fork(&[]).expect("fork");
            forked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let address = wait_listening(&mut events, workers).await;
        GracefulCluster {
            cluster,
            events,
            address,
            forked,
        }
    }

    /// The pid that answered `GET /` on a new connection.
    pub async fn pid_of_a_worker(&self) -> u32 {
        let (_, body) = http_get(self.address, "/").await.expect("GET /");
        body.trim().parse().expect("pid")
    }

    /// The worker with this pid.
    pub fn worker_by_pid(&self, pid: u32) -> cluster_core::Worker {
        self.cluster
            .workers()
            .into_iter()
            .find(|w| w.pid() == pid)
            .expect("a worker with that pid")
    }
}

/// Keep-alive clients hammering `GET /` until told to stop, counting answers and failures.
/// Bounded by time, not by count: a count a fast idle machine exhausts in a few seconds
/// would starve a test that waits for more answers later (it did on CI); each client stops
/// by itself after [`Load::LONGEST`].
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    /// How long a client runs if nobody stops it.
    pub const LONGEST: Duration = Duration::from_secs(120);

    /// Starts `clients` [`KeepAliveClient`]s on `address`.
    pub fn start(address: SocketAddr, clients: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let answered = answered.clone();
                tokio::spawn(async move {
                    let mut client = KeepAliveClient::new(address);
                    let (mut ok, mut failures) = (0usize, Vec::new());
                    let until = std::time::Instant::now() + Load::LONGEST;
                    while std::time::Instant::now() < until {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        match client.get("/").await {
                            Ok(answer) if answer.status == 200 => {
                                ok += 1;
                                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            other => failures.push(format!("{other:?}")),
                        }
                    }
                    (ok, failures)
                })
            })
            .collect();
        Load {
            stop,
            answered,
            clients,
        }
    }

    /// Waits until `more` further requests have been answered (within 10 s): the load is
    /// really going on, before or after whatever the test does to the workers.
    pub async fn answers(&self, more: usize) {
        let target = self.answered.load(std::sync::atomic::Ordering::Relaxed) + more;
        eventually(10, "answers under load", || {
            self.answered.load(std::sync::atomic::Ordering::Relaxed) >= target
        })
        .await;
    }

    /// Stops the clients; returns how many requests were answered and the failures.
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut failures) = (0, Vec::new());
        for client in self.clients {
            let (o, f) = within(30, "clients", client).await.expect("client");
            ok += o;
            failures.extend(f);
        }
        (ok, failures)
    }

    /// Stops the clients and checks that no request failed and that the load was real;
    /// returns how many requests were answered.
    pub async fn finish(self) -> usize {
        let (ok, failures) = self.stop().await;
        assert!(
            failures.is_empty(),
            "{} of {} failed: {failures:?}",
            failures.len(),
            ok + failures.len()
        );
        assert!(ok > 100, "only {ok} requests");
        ok
    }
}

/// A notify socket (systemd's `NOTIFY_SOCKET`) a master under test reports to.
pub struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    /// Where it is bound: the master's `NOTIFY_SOCKET`.
    pub path: std::path::PathBuf,
}

impl NotifySocket {
    /// A datagram socket in the temporary directory, named after this process and `tag`.
    pub fn bind(tag: &str) -> NotifySocket {
        let path = unique_socket_path(&format!("notify-{tag}"));
        let _ = std::fs::remove_file(&path);
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket { socket, path }
    }

    /// The socket itself.
    pub fn socket(&self) -> &tokio::net::UnixDatagram {
        &self.socket
    }

    /// The next state line (`READY=1`, `RELOADING=1`, `STOPPING=1`) within `secs`, with the
    /// other lines of its datagram.
    pub async fn next_state(&self, secs: u64) -> (String, Vec<String>) {
        within(secs, "a notify message", async {
            let mut buffer = vec![0u8; 4096];
            loop {
                let n = self.socket.recv(&mut buffer).await.expect("recv");
                let text = String::from_utf8_lossy(&buffer[..n]).to_string();
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                if let Some(state) = lines
                    .iter()
                    .find(|l| ["READY=1", "RELOADING=1", "STOPPING=1"].contains(&l.as_str()))
                {
                    return (state.clone(), lines);
                }
            }
        })
        .await
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
