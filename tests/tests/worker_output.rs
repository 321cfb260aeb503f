//! `Stdio::Forward`: the master forwards each worker line with `[name:id:pid]` in front, and
//! a master whose own output has stalled never blocks a worker (lines are dropped and counted).

use std::process::Stdio;

use cluster_tests::{Lines, http_get, master_exe, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn forwarded_lines_are_prefixed_and_a_stalled_master_output_never_blocks_the_worker() {
    let mut master = Command::new(master_exe())
        .env("TEST_STDIO", "forward")
        .env("TEST_WORKERS", "1")
        .env("TEST_LISTEN", "127.0.0.1:0")
        // ~20 MB: far more than the master's stdout pipe and its line queue hold.
        .env("TEST_CHATTY_LINES", "200000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start master");
    let mut stdout = Lines::new(master.stdout.take().expect("stdout"));
    let listening = stdout.wait_for(10, "listening 1 ").await;
    let mut fields = listening.split(' ').skip(2);
    let pid: u32 = fields.next().and_then(|p| p.parse().ok()).expect("pid");
    let address = fields.next().and_then(|a| a.parse().ok()).expect("address");
    let chatty = stdout.wait_for(10, "chatty line").await;
    assert!(
        chatty.starts_with(&format!("[worker:1:{pid}] chatty line ")),
        "{chatty}"
    );

    // Nobody reads the master's stdout now: its pipe fills, and so does its line queue. The
    // worker writes on its only runtime thread, so a blocked write would stop its server.
    for _ in 0..20 {
        let (status, body) = within(
            2,
            "an answer while the output is stalled",
            http_get(address, "/"),
        )
        .await
        .expect("answer");
        assert_eq!((status, body), (200, pid.to_string()));
    }

    // Let the worker write all its lines while nobody reads (the master's queue overflows
    // only then): on an idle machine the 20 requests above end long before. Its write count
    // says when: ~20 MB.
    cluster_tests::eventually(20, "the worker's lines written", || {
        written_bytes(pid) >= 15_000_000
    })
    .await;

    // Read again: the master reports on stderr how many lines it dropped.
    let drain = tokio::spawn(async move {
        let mut rest = stdout.into_inner();
        let mut sink = Vec::new();
        let _ = rest.read_to_end(&mut sink).await;
    });
    let mut stderr = BufReader::new(master.stderr.take().expect("stderr")).lines();
    let notice = within(20, "the dropped-lines notice", async {
        loop {
            let line = stderr.next_line().await.expect("read").expect("a line");
            if line.contains("lines of worker output dropped") {
                return line;
            }
        }
    })
    .await;
    let dropped: u64 = notice
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(dropped > 0, "{notice}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master.id().expect("pid") as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = within(10, "master exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    drain.abort();
}

/// What process `pid` has written so far (`wchar` in `/proc/PID/io`).
fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}
