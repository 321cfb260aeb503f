//! The axum example (`axum_cluster`: one binary, master and 2 workers, the axum app served by
//! `graceful::serve`) run as a user would: JSON in and out, a 500 for a panic in a handler
//! and for a panic in a task the handler spawned, each panicked worker replaced by a new
//! one and exiting drained, and no failed request under load across both panics. The README
//! shows the lines of the example an axum user adds; a test checks they are the example's.

mod support;

use std::net::SocketAddr;

use cluster_tests::{KeepAliveClient, Load, children_of, eventually, process_gone, within};
use support::{Console, free_port, kill};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request with a JSON body on a new connection; returns (status, body).
async fn post_json(port: u16, path: &str, json: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The pid in a `[master] worker PID …` line.
fn pid_in(line: &str) -> u32 {
    line.split(' ')
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

#[tokio::test]
async fn json_both_panics_answer_500_each_worker_is_replaced_and_no_request_fails_under_load() {
    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut system = Console::start(
        env!("CARGO_BIN_EXE_axum_cluster"),
        &[
            ("PORT", port.to_string()),
            ("RUST_BACKTRACE", "0".to_string()),
        ],
    );
    let master = system.process.id().expect("pid");
    system.wait_for_count("listening on", 2).await;
    let first_workers = children_of(master);
    assert_eq!(first_workers.len(), 2, "{first_workers:?}");

    // Shared state and JSON: a note goes in, comes back with its id and the worker's pid.
    let (status, body) = post_json(port, "/notes", r#"{"text":"buy milk"}"#).await;
    assert_eq!(status, 201, "{body}");
    let note: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(note["text"], "buy milk");
    assert!(note["id"].as_u64().is_some_and(|id| id >= 1), "{note}");
    let pid = note["pid"].as_u64().expect("pid") as u32;
    assert!(first_workers.contains(&pid), "{pid} {first_workers:?}");
    // axum's own rejection of a body that is not a note: a 4xx, and nobody panics.
    let (status, body) = post_json(port, "/notes", r#"{"title":1}"#).await;
    assert_eq!(status, 422, "{body}");

    let load = Load::start(address, 6);
    load.answers(200).await; // load under way
    let mut gone = Vec::new();
    for (round, (path, message)) in [
        ("/panic", "note 0 exists"),
        ("/panic-in-task", "the report task failed"),
    ]
    .into_iter()
    .enumerate()
    {
        let before = children_of(master);
        let answer = KeepAliveClient::new(address)
            .get(path)
            .await
            .expect("an answer to the panicking request");
        assert_eq!(answer.status, 500, "{path}: {answer:?}");
        assert_eq!(answer.body, "500 Internal Server Error\n", "{path}");
        assert!(!answer.body.contains(message), "{path}: no panic message");
        assert!(answer.close, "{path}: Connection: close");

        // The panicked worker hands over: its replacement is forked and listens, then the
        // old one exits drained (code 0, well before the 30 s kill timeout).
        system.wait_for_count("forked", 3 + round).await;
        let exited = system.wait_for("exited").await;
        let failed = pid_in(&exited);
        assert!(before.contains(&failed), "{exited}: one of {before:?}");
        assert!(
            exited.ends_with("(code 0)"),
            "drained, not killed: {exited}"
        );
        system.wait_for_count("listening on", 3 + round).await;
        eventually(10, "the old worker is gone", || process_gone(failed)).await;
        gone.push(failed);
        eventually(10, "two workers, the failed one not among them", || {
            let now = children_of(master);
            now.len() == 2 && !now.contains(&failed)
        })
        .await;
        load.answers(200).await; // load on the replacement
    }
    let ok = load.finish().await; // every request of the load answered 200
    eprintln!("workers {gone:?} panicked and were replaced; {ok} requests, all 200");

    kill(master, "TERM");
    let status = within(10, "the master exits", system.process.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// The README's axum section is made of lines of the example: each code line of its block
/// (comments aside) appears, trimmed, in `examples/src/bin/axum_cluster.rs`.
#[test]
fn the_readme_axum_lines_are_the_examples() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../src/bin/axum_cluster.rs");
    let section = readme
        .split_once("## An axum app as a cluster")
        .expect("the README's axum section")
        .1;
    let block = section
        .split_once("```rust\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("its code block")
        .0;
    let lines: Vec<&str> = block
        .lines()
        .map(|line| match line.split_once(" // ") {
            Some((code, _)) => code.trim(),
            None => line.trim(),
        })
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .collect();
    assert!(lines.len() >= 5, "{lines:?}");
    for line in lines {
        assert!(
            example.lines().any(|l| l.trim() == line),
            "README line {line:?} is not in examples/src/bin/axum_cluster.rs"
        );
    }
}
