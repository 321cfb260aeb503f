//! The seed's connect_with_cluster system, run as a user would: real master, real workers,
//! real HTTP on loopback.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

struct System {
    master: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
    port: u16,
}

impl System {
    /// Starts the master with its stderr (master lines) merged into stdout (worker lines);
    /// `exec` keeps the master's pid the child's pid.
    async fn start(env: &[(&str, &str)]) -> System {
        let port = free_port();
        let mut master = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" 2>&1")
            .arg(env!("CARGO_BIN_EXE_connect_with_cluster"))
            .env("PORT", port.to_string())
            .env("REST_PORT", free_port().to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start connect_with_cluster");
        let stdout = master.stdout.take().expect("stdout");
        System {
            master,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
            port,
        }
    }

    /// Waits until `count` lines seen so far contain `needle`.
    async fn wait_for_count(&mut self, needle: &str, count: usize) {
        while self.seen.iter().filter(|l| l.contains(needle)).count() < count {
            self.wait_for(needle).await;
        }
    }

    async fn wait_for(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
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
            _ => panic!("no line with {needle:?}; saw {:#?}", self.seen),
        }
    }
}

async fn get(port: u16, path: &str) -> String {
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

#[tokio::test]
async fn serves_the_apps_json_from_two_workers_and_stops_on_sigterm() {
    let mut system = System::start(&[]).await;
    let port = system.port;
    system
        .wait_for_count(&format!("web server start listen on {port}"), 2)
        .await;
    system.wait_for_count("rest api start listen on", 2).await;
    let response = get(port, "/hello?x=1").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body: serde_json::Value =
        serde_json::from_str(response.split_once("\r\n\r\n").expect("body").1).expect("json");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["url"], "/hello?x=1");
    assert_eq!(body["Connection"], "close");
    assert_eq!(body["headers"]["host"], "localhost");
    assert!(
        body["pid"]
            .as_u64()
            .is_some_and(|pid| pid != u64::from(system.master.id().expect("pid")))
    );

    let master_pid = system.master.id().expect("pid");
    nix_kill(master_pid, "TERM");
    let exit = system.wait_for("exit!").await;
    assert!(
        exit.contains(&format!("[master:{master_pid}] wroker:")),
        "{exit}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), system.master.wait())
        .await
        .expect("master exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

fn nix_kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The seed's transcript after `curl localhost:1337/asycerror`, in its order; but the
/// request gets a 500 at once and the worker exits as soon as it is drained.
#[tokio::test]
async fn asycerror_answers_500_hands_over_and_exits_as_in_the_seed() {
    let mut system = System::start(&[("KILL_TIMEOUT_MS", "10000")]).await;
    let port = system.port;
    system
        .wait_for_count(&format!("web server start listen on {port}"), 2)
        .await;
    system.wait_for_count("rest api start listen on", 2).await;
    let response = get(port, "/asycerror").await;
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert!(response.contains("foo is not defined"), "{response}");

    let thrown = system.wait_for("throw error 1 times").await;
    assert_eq!(thrown, "[uncaughtException] throw error 1 times");
    let failed_pid = system
        .wait_for("uncaughtException throw 1 times on pid:")
        .await
        .rsplit_once("pid:")
        .map(|(_, p)| p.trim_end_matches(")]").to_string())
        .expect("pid");
    let forked = system.wait_for("disconnect! new worker:").await;
    assert!(
        forked.contains(&format!("wroker:{failed_pid} disconnect!")),
        "{forked}"
    );
    let closed = system.wait_for("servers!").await;
    assert!(
        closed.ends_with(&format!("[worker:{failed_pid}] close 2 servers!")),
        "{closed}"
    );
    system
        .wait_for(&format!("[worker:{failed_pid}] worker disconnect!"))
        .await;
    system.wait_for(&format!("wroker:{failed_pid} exit!")).await;
    assert!(
        !system.seen.iter().any(|l| l.contains("kill timeout")),
        "drained long before the kill timeout: {:#?}",
        system.seen
    );
}

/// `/asycerror-detached` fails in a task nobody tied to the request: as in the seed, the
/// request ends only when the worker does, at the kill timeout.
#[tokio::test]
async fn a_detached_error_ends_at_the_kill_timeout_as_in_the_seed() {
    let mut system = System::start(&[("KILL_TIMEOUT_MS", "1000")]).await;
    let port = system.port;
    system
        .wait_for_count(&format!("web server start listen on {port}"), 2)
        .await;
    let response = get(port, "/asycerror-detached").await;
    assert_eq!(response, "", "no answer, the connection is closed");
    let line = system.wait_for("kill timeout, exit now.").await;
    let pid = line
        .split("[worker:")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("pid")
        .to_string();
    system.wait_for(&format!("wroker:{pid} exit!")).await;
}
