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
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
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
