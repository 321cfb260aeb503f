//! Under systemd (issue 11): socket activation with Debian's real `systemd-socket-activate`,
//! and the `Type=notify` messages the master sends to `NOTIFY_SOCKET`.

use std::net::SocketAddr;
use std::process::Stdio;

use cluster_tests::{Lines, NotifySocket, http_get, master_exe, process_gone, within};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).expect("kill");
}

fn socket_activate_installed() -> bool {
    std::process::Command::new("systemd-socket-activate")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The socket inode behind descriptor `fd` of process `pid` (`socket:[N]`).
fn socket_inode(pid: u32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The inodes of every socket listening on 127.0.0.1:`port` (`/proc/net/tcp`).
fn listening_inodes(port: u16) -> Vec<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// `systemd-socket-activate` listening on a free port with the test master to run on the
/// first connection; returns it (its pid is the master's after the exec), its merged output,
/// and the address. Ports are tried until one binds: the test binds nothing itself.
async fn socket_activated_master() -> (Child, Lines, SocketAddr) {
    for attempt in 0..20u16 {
        let port = 20_000 + (std::process::id() as u16 % 20_000) + attempt * 97;
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let mut child = Command::new("sh")
            .arg("-c")
            // It passes on only TERM, PATH, USER, HOME and what `-E` names.
            .arg(
                "exec systemd-socket-activate -l \"$ADDRESS\" --fdname=web -E TEST_LISTEN \
                 \"$MASTER\" 2>&1",
            )
            .env("ADDRESS", address.to_string())
            .env("MASTER", master_exe())
            .env("TEST_LISTEN", address.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start systemd-socket-activate");
        let mut lines = Lines::new(child.stdout.take().expect("stdout"));
        let first = lines.wait_for(10, "").await;
        if first.starts_with("Listening on") {
            return (child, lines, address);
        }
        let _ = child.wait().await;
    }
    panic!("systemd-socket-activate found no free port");
}

#[tokio::test]
async fn the_master_adopts_the_socket_systemd_socket_activate_passed() {
    if !socket_activate_installed() {
        eprintln!("skipped: systemd-socket-activate is not installed (apt-get install systemd)");
        return;
    }
    let (mut master, mut lines, address) = socket_activated_master().await;
    let pid = master.id().expect("pid");
    let passed = socket_inode(pid, 3).expect("the socket passed as descriptor 3");
    assert_eq!(listening_inodes(address.port()), vec![passed]);

    // The first connection makes systemd-socket-activate exec the master; it waits in the
    // passed socket's queue until a worker serves it.
    let (status, body) = within(20, "the activated master to answer", http_get(address, "/"))
        .await
        .expect("GET");
    assert_eq!(status, 200, "{body}");
    let worker: u32 = body.trim().parse().expect("the worker's pid");
    lines.wait_for(10, "master ").await;

    // Same process, same socket: adopted, not bound again, and kept by the master.
    assert_eq!(
        socket_inode(pid, 3),
        Some(passed),
        "the master keeps the socket"
    );
    assert_eq!(listening_inodes(address.port()), vec![passed]);
    let environ = std::fs::read(format!("/proc/{worker}/environ")).expect("worker environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("LISTEN_FDS=") && !environ.contains("LISTEN_PID="),
        "a worker sees socket activation's variables"
    );

    signal(pid, Signal::SIGTERM);
    let status = within(10, "master exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(process_gone(worker));
}

#[tokio::test]
async fn notify_ready_reloading_ready_stopping_in_order() {
    let notify = NotifySocket::bind("order");
    let mut master = Command::new(master_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start master");
    let pid = master.id().expect("pid");
    let mut lines = Lines::new(master.stdout.take().expect("stdout"));

    let (state, _) = notify.next_state(10).await;
    assert_eq!(state, "READY=1");
    // Ready means every worker listens.
    for _ in 0..2 {
        lines.wait_for(5, "listening").await;
    }

    signal(pid, Signal::SIGHUP);
    let (state, datagram) = notify.next_state(10).await;
    assert_eq!(state, "RELOADING=1");
    assert!(
        datagram.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{datagram:?}"
    );
    let (state, _) = notify.next_state(20).await;
    assert_eq!(state, "READY=1", "after the reload");
    // Both replacements listen before the reload ends.
    for _ in 0..2 {
        let line = lines.wait_for(5, "listening").await;
        assert!(
            line.starts_with("listening 3") || line.starts_with("listening 4"),
            "{line}"
        );
    }

    signal(pid, Signal::SIGTERM);
    let (state, _) = notify.next_state(10).await;
    assert_eq!(state, "STOPPING=1");
    let status = within(10, "master exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_unix_socket_passed_by_path_is_adopted_not_replaced() {
    use std::os::unix::fs::MetadataExt;
    if !socket_activate_installed() {
        eprintln!("skipped: systemd-socket-activate is not installed (apt-get install systemd)");
        return;
    }
    let path = cluster_tests::unique_socket_path("activated");
    let _ = std::fs::remove_file(&path);
    let address = format!("unix:{}", path.display());
    let mut master = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&path)
        .args([
            "-E",
            "TEST_LISTEN",
            "-E",
            "TEST_PRINT_MESSAGES",
            "-E",
            "TEST_WORKERS",
        ])
        .arg(master_exe())
        .env("TEST_LISTEN", &address)
        .env("TEST_PRINT_MESSAGES", "1")
        .env("TEST_WORKERS", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start systemd-socket-activate");
    let mut lines = Lines::new(master.stdout.take().expect("stdout"));
    let pid = master.id().expect("pid");
    let passed = cluster_tests::eventually(10, "systemd-socket-activate to listen", || {
        socket_inode(pid, 3).is_some()
    });
    passed.await;
    let passed = socket_inode(pid, 3).expect("the passed socket");
    let file = std::fs::metadata(&path).expect("the socket file").ino();

    // The first connection execs the master.
    let _client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    let line = lines.wait_for(10, "message 1 listen").await;
    assert_eq!(line, format!("message 1 listened {address}"));
    assert_eq!(socket_inode(pid, 3), Some(passed));
    assert_eq!(
        std::fs::metadata(&path).expect("the socket file").ino(),
        file,
        "the socket file was replaced"
    );

    signal(pid, Signal::SIGTERM);
    let status = within(10, "master exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_file(&path);
}

/// Kills the new master (started by the old one, not by this test) if the test ends early.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !process_gone(self.0) {
            let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
}

/// Under `NOTIFY_SOCKET` a hot upgrade tells systemd, in order: `RELOADING=1` (the old
/// master, before it starts the new one), then `MAINPID=<new pid>` and `READY=1` (the new
/// master, once ready, before the old one exits). The old master then retires without a
/// `STOPPING=1` (systemd would take it for the whole service stopping); the new master's
/// `STOPPING=1` comes at its own SIGTERM. The new master pets systemd's watchdog.
#[tokio::test]
async fn an_upgrade_sends_reloading_then_mainpid_and_ready_and_no_stopping_from_the_old_master() {
    let notify = NotifySocket::bind("upgrade");
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("address").to_string()
    };
    // As systemd starts it: WATCHDOG_PID names the main process (the shell execs the master).
    let mut old_master = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$MASTER\""])
        .env("MASTER", master_exe())
        .env("WATCHDOG_USEC", "300000")
        .env("TEST_LISTEN", &address)
        .env("TEST_LOG", "1")
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start master");
    let old_pid = old_master.id().expect("pid");
    let mut lines = Lines::new(old_master.stdout.take().expect("stdout"));
    let (state, _) = notify.next_state(10).await;
    assert_eq!(state, "READY=1");

    signal(old_pid, Signal::SIGUSR2);
    let (state, datagram) = notify.next_state(10).await;
    assert_eq!(state, "RELOADING=1", "{datagram:?}");
    assert!(
        datagram.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{datagram:?}"
    );
    let (state, datagram) = notify.next_state(30).await;
    assert_eq!(state, "READY=1", "{datagram:?}");
    let main_pid = datagram
        .iter()
        .position(|l| l.starts_with("MAINPID="))
        .unwrap_or_else(|| panic!("no MAINPID= with the new master's READY=1: {datagram:?}"));
    let ready = datagram.iter().position(|l| l == "READY=1").expect("READY");
    assert!(main_pid < ready, "MAINPID= must come first: {datagram:?}");
    let new_pid: u32 = datagram[main_pid]["MAINPID=".len()..]
        .parse()
        .expect("a pid");
    assert_ne!(new_pid, old_pid);
    let _cleanup = KillOnDrop(new_pid);
    // The pid is the new master's: it printed it itself.
    lines
        .seen_or_wait_for(10, &format!("master {new_pid}"))
        .await;

    let status = within(30, "the old master to exit", old_master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    // Everything the old master sent is queued by now: no STOPPING=1 in it.
    let mut buffer = vec![0u8; 4096];
    while let Ok(n) = notify.socket().try_recv(&mut buffer) {
        let text = String::from_utf8_lossy(&buffer[..n]).to_string();
        assert!(
            !text.lines().any(|l| l == "STOPPING=1" || l == "READY=1"),
            "after the hand-over: {text:?}"
        );
    }

    // The new master, now the main process, pets the watchdog.
    within(5, "WATCHDOG=1 from the new master", async {
        loop {
            let n = notify.socket().recv(&mut buffer).await.expect("recv");
            if String::from_utf8_lossy(&buffer[..n])
                .lines()
                .any(|l| l == "WATCHDOG=1")
            {
                break;
            }
        }
    })
    .await;

    signal(new_pid, Signal::SIGTERM);
    let (state, _) = notify.next_state(10).await;
    assert_eq!(state, "STOPPING=1", "the new master's, at its SIGTERM");
    cluster_tests::eventually(15, "the new master to stop", || process_gone(new_pid)).await;
}
