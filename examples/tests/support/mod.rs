//! Helpers shared by the example tests.

// Each test binary uses a part of these.
#![allow(dead_code)]

use cluster_tests::Lines;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// One `GET path` on a new connection; whatever arrived before the server closed it.
pub async fn get(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    // A connection closed without an answer (or reset) reads as what arrived before.
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Sends `signal` (a name such as `TERM`) to `pid`.
pub fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// An example binary running with its stderr merged into stdout (`exec` keeps its pid the
/// child's pid), read line by line.
pub struct Console {
    /// The process.
    pub process: Child,
    lines: Lines,
}

impl Console {
    /// Starts `binary` with `env`.
    #[allow(dead_code)] // not every test file uses it
    pub fn start(binary: &str, env: &[(&str, String)]) -> Console {
        Self::start_in_shell("", binary, env)
    }

    /// Starts `binary` with `env` and at most `limit` open descriptors (soft and hard
    /// `RLIMIT_NOFILE`, the shell's `ulimit -n`, as `prlimit --nofile=LIMIT` would).
    #[allow(dead_code)] // not every test file uses it
    pub fn start_with_nofile(binary: &str, env: &[(&str, String)], limit: u32) -> Console {
        Self::start_in_shell(&format!("ulimit -n {limit} && "), binary, env)
    }

    fn start_in_shell(prefix: &str, binary: &str, env: &[(&str, String)]) -> Console {
        let mut process = Command::new("sh")
            .arg("-c")
            .arg(format!("{prefix}exec \"$0\" 2>&1"))
            .arg(binary)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the example");
        let stdout = process.stdout.take().expect("stdout");
        Console {
            process,
            lines: Lines::new(stdout),
        }
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.lines.seen
    }

    /// The next line containing `needle`, within 10 s.
    pub async fn wait_for(&mut self, needle: &str) -> String {
        self.lines.wait_for(10, needle).await
    }

    /// Waits until `count` lines seen so far contain `needle`.
    pub async fn wait_for_count(&mut self, needle: &str, count: usize) {
        while self.seen().iter().filter(|l| l.contains(needle)).count() < count {
            self.wait_for(needle).await;
        }
    }
}
