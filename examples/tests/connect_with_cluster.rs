//! The seed's connect_with_cluster system, run as a user would: real master, real workers,
//! real HTTP on loopback.

mod support;

use std::time::Duration;

use support::{Console, free_port, get, kill};

/// The master's console (its lines and its workers') and its web port.
struct System {
    console: Console,
    port: u16,
}

impl System {
    async fn start(env: &[(&str, &str)]) -> System {
        let port = free_port();
        let mut vars = vec![
            ("PORT", port.to_string()),
            ("REST_PORT", free_port().to_string()),
        ];
        vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        System {
            console: Console::start(env!("CARGO_BIN_EXE_connect_with_cluster"), &vars),
            port,
        }
    }
}

impl std::ops::Deref for System {
    type Target = Console;
    fn deref(&self) -> &Console {
        &self.console
    }
}

impl std::ops::DerefMut for System {
    fn deref_mut(&mut self) -> &mut Console {
        &mut self.console
    }
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
            .is_some_and(|pid| pid != u64::from(system.process.id().expect("pid")))
    );

    let master_pid = system.process.id().expect("pid");
    kill(master_pid, "TERM");
    let exit = system.wait_for("exit!").await;
    assert!(
        exit.contains(&format!("[master:{master_pid}] wroker:")),
        "{exit}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), system.process.wait())
        .await
        .expect("master exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
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
        !system.seen().iter().any(|l| l.contains("kill timeout")),
        "drained long before the kill timeout: {:#?}",
        system.seen()
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
