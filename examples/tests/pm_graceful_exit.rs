//! The seed's pm demo, run as a user would: `web` group of 2 on a shared port, a failing
//! request answered 500 and its worker replaced, reload on SIGHUP, SIGTTIN/SIGTTOU scale,
//! SIGTERM stops all and removes the pidfile.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

async fn get(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn the_pm_demo_forks_replaces_reloads_and_stops_like_the_seed() {
    let port = free_port();
    let pidfile = std::env::temp_dir().join(format!("pm-demo-{port}.pid"));
    let mut master = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" 2>&1")
        .arg(env!("CARGO_BIN_EXE_pm_graceful_exit"))
        .env("PORT", port.to_string())
        .env("PIDFILE", &pidfile)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start pm_graceful_exit");
    let master_pid = master.id().expect("pid");
    let mut lines = BufReader::new(master.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let mut wait_for = async |needle: String| -> String {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line.clone());
                if line.contains(&needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no line with {needle:?}; saw {seen:#?}"),
        }
    };
    wait_for(format!("[master:{master_pid}] new web:worker:")).await;
    wait_for(format!("[master:{master_pid}] new web:worker:")).await;
    assert_eq!(
        std::fs::read_to_string(&pidfile).expect("pidfile").trim(),
        master_pid.to_string()
    );
    // The workers report ready once they listen: retry until one answers.
    let body = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let response = get(port, "/").await;
            if let Some((_, body)) = response.split_once("\r\n\r\n") {
                return body.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("an answer");
    assert!(body.contains("\"url\":\"/\""), "{body}");

    let response = get(port, "/asyncerror").await;
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    let disconnect = wait_for(" disconnect! new worker:".to_string()).await;
    let failed = disconnect
        .split("worker:")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("pid")
        .to_string();
    wait_for(format!("[worker:{failed}] close 1 servers!")).await;
    wait_for(format!("[worker:{failed}] worker disconnect!")).await;
    let quit = wait_for(format!("web:worker:{failed} quit")).await;
    assert!(quit.ends_with("quit, code: 0, signal: null"), "{quit}");

    // SIGHUP: a new generation of 2 starts, then the old 2 leave gracefully.
    kill(master_pid, "HUP");
    for _ in 0..2 {
        wait_for(format!("[master:{master_pid}] new web:worker:")).await;
    }
    for _ in 0..2 {
        let quit = wait_for("quit, code:".to_string()).await;
        assert!(quit.ends_with("quit, code: 0, signal: null"), "{quit}");
    }
    assert!(get(port, "/").await.starts_with("HTTP/1.1 200"));

    // SIGTTIN: one worker more; SIGTTOU: one less, retired gracefully.
    kill(master_pid, "TTIN");
    wait_for(format!("[master:{master_pid}] new web:worker:")).await;
    kill(master_pid, "TTOU");
    let quit = wait_for("quit, code:".to_string()).await;
    assert!(quit.ends_with("quit, code: 0, signal: null"), "{quit}");

    kill(master_pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), master.wait())
        .await
        .expect("master exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(!pidfile.exists(), "the pidfile is removed at exit");
}

fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}
