//! The worker the integration tests start. What it does is chosen by `TEST_MODE`:
//!
//! - `serve` (default): announce itself, listen on `TEST_LISTEN` if set (a minimal HTTP
//!   server answering its pid, one connection at a time; for a `unix:PATH` address it only
//!   reports `listened` or `listen-error`; for `udp:ADDRESS` it reports `listened` with the
//!   bound address, then answers every datagram with its pid; with `TEST_UDP_REUSE_PORT=1`
//!   on a socket of its own in an `SO_REUSEPORT` group), echo every message back, and
//!   disconnect when asked by a `disconnect` message; end itself with `destroy()` on a
//!   `destroy` message, with `kill()` on `kill`, exit with code N on `exit` N, and on `disconnect-destroy` disconnect,
//!   wait for its channel to close, then `destroy()`. A `deaf` message is answered with
//!   `deaf`, then the worker's runtime blocks for good (its thread sleeps): nothing reads
//!   its channel or serves its connections any more, as in a hung worker.
//! - `exit:N`: exit with code N once online.
//! - `garbage`: write bytes that are no frame on the channel, then wait.
//! - `big`: send an 8 MiB message, then try one over the limit and report the error.
//!
//! `TEST_BACKLOG` and `TEST_IPV6_ONLY` (`1` or `0`) are the listen options of the server
//! on `TEST_LISTEN`.
//!
//! With `TEST_CHATTY_LINES=N` it also writes N lines to stdout from its (single-threaded)
//! runtime once it serves: a write that blocked would stop its server too.
//! - `bad-control-frame`: the first worker (id 1) writes issue 16's 19-byte binary control
//!   frame (a `ListenRequest` whose address claims 3·10¹⁸ bytes), then waits; later ones
//!   serve.
//! - `bad-user-frame`: write a binary user frame whose `TestMsg` claims 3·10¹⁸ bytes of
//!   `data`, then serve.
//! - `hand-back`: listen on `TEST_LISTEN` and send every accepted connection to the master
//!   with a `client` message (its descriptor attached), without reading or answering it;
//!   `hand-back-twice` sends each one twice.
//! - `relisten`: take connections on `TEST_LISTEN` (`incoming`), stop, take them again,
//!   report `relistened` with both local addresses, stop again and disconnect (Node's
//!   server-restart tests).
//! - `lying-fds`: the first worker (id 1) writes a user frame announcing 2 descriptors with
//!   only 1 attached, then waits; later ones serve.
//! - `taken-batch:N`: the first worker (id 1) writes a JSON `ConnectionsTaken` control frame
//!   answering N hand-overs at once (seqs 1..=N), then waits; later ones serve.
//!
//! Messages with descriptors, in every mode that echoes: `stream` carries one Unix stream,
//! on which the worker writes its pid, then answers `took` with the count it received;
//! `send-too-many` makes it send 17 descriptors and report the error (`too-many`);
//! `send-fds:N:M` makes it send N `fds` messages with M descriptors (of /dev/null) each,
//! then `sent`; `reflect` sends its descriptors back in a `reflected` message with the same
//! data; `listener` carries a listening TCP socket, on which the worker answers one
//! connection with its pid, then says `served`; `connection` carries an accepted TCP
//! connection, which the worker answers with its pid, then says `served`. `cwd` is answered
//! with the worker's working directory, `env` with the value of the variable its data names.
//! A message that is no `TestMsg` is answered `undecodable`.
//!
//! With `TEST_ORPHAN=1` (the PID 1 test), once it serves it starts a grandchild that
//! orphans itself (`sh -c 'sleep 0.3 & echo $!'`: the shell exits at once, the `sleep` is
//! re-parented to PID 1), then watches `/proc/PID/status` until the `sleep` is gone
//! (reaped) or still a zombie 10 s later, and reports `orphan reaped PID` or
//! `orphan zombie PID`. With `TEST_ORPHAN_EXIT=N` as well, the first generation (ids up to
//! `TEST_WORKERS`, default 2) then exits with code N.
//! - `listen-many:N`: ask to listen on N distinct loopback addresses (127.0.x.y:0), report
//!   each result (`listened` or `listen-error`), close the first and ask for it again, then
//!   serve.
//! - `listen-retry:ADDRESS`: `listen()` on ADDRESS and report it (`first` or
//!   `listen-error`), wait for a `retry` message, then listen again and report (`retry`).
//! - `listen-twice:ADDRESS`: `listen()` on ADDRESS, then again while the first is open,
//!   then close the first and listen again; reports `first`, `second`, `third` with the
//!   bound address (or `listen-error`), then serves.
//!
//! - `unix-http`: listen on the `unix:PATH` of `TEST_LISTEN`, report `listened`, and answer
//!   every connection with the worker's pid (HTTP) until disconnected.
//! - `unix-all`: as `unix-http`, with `listen_unix_with` and everyone's read and write
//!   (`TEST_LISTEN` must be `unix:PATH`).
//! - `own-listen`: bind a TCP socket of its own on 127.0.0.1:0 (plain tokio, not asking the
//!   master), report `own` with its address, and answer its connections with the pid.
//!
//! - `udp-index`: `bind_udp("127.0.0.1:0")` twice, both held, reported as `udp-two` with both
//!   addresses; then each closed and bound again (`udp-again`), then disconnect (Node's
//!   child-index-dgram). A failed bind is reported as `listen-error`.
//!
//! - `udp-ipv6only`: `bind_udp_with("[::]:0")` with `ipv6_only` from `TEST_IPV6_ONLY`, then
//!   `bind_udp("0.0.0.0:PORT")` on its port; reports `udp-v6` with both addresses (or
//!   `listen-error`), then disconnects (Node's dgram-ipv6only).
//!
//! - `cancel-bind:ADDRESS` (`udp:IP:PORT` or `IP:PORT`): start a bind (`bind_udp`) or a
//!   listen on ADDRESS and drop it while the master's answer is under way (Node's close
//!   during bind), then bind again; reports `rebound` with `cancelled=BOOL` and the address
//!   (or `listen-error`), then disconnects.
//!
//! With `TEST_DISCONNECT_ON_ERROR=1`, a failed listen on `TEST_LISTEN` is reported, then the
//! worker disconnects itself (and exits 0) instead of exiting 3. A `udp` message carries a
//! bound UDP socket: the worker answers one datagram on it with its pid, then says `served`.
//! With `TEST_REPORT_CONNECTED=1` it reports `connected` with `is_connected()` right after
//! `hello`, and exits with code 9 if `is_connected()` is still true once its channel closed.
//!
//! A `listen-error` report reads `KIND: MESSAGE`, `KIND` being the `io::ErrorKind` (Debug).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};

use cluster_tests::TestMsg;
use cluster_worker::Worker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mode = std::env::var("TEST_MODE").unwrap_or_else(|_| "serve".into());
    let first = std::env::var("CLUSTER_WORKER_ID").as_deref() == Ok("1");
    if mode == "bad-control-frame" && first {
        write_raw_frame(0, &[0x01, 0x07, 0xfd]);
        std::future::pending::<()>().await;
    }
    if mode == "bad-user-frame" {
        write_raw_frame(1, &[0x02, b'h', b'i', 0xfd]);
    }
    if mode == "lying-fds" && first {
        write_lying_fds_frame();
        std::future::pending::<()>().await;
    }
    if let Some(count) = mode.strip_prefix("taken-batch:") {
        if first {
            let count: u64 = count.parse().expect("taken-batch:N");
            let seqs: Vec<String> = (1..=count).map(|s| s.to_string()).collect();
            let payload = format!(
                r#"{{"ConnectionsTaken":{{"address":"127.0.0.1:1","seqs":[{}]}}}}"#,
                seqs.join(",")
            );
            write_frame(0, payload.as_bytes());
            std::future::pending::<()>().await;
        }
    }
    if mode == "garbage" {
        // SAFETY: fd 3 is the channel end the master mapped for us; it is used only here and
        // deliberately leaked so it stays open.
        let mut raw = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(3) });
        raw.write_all(b"this is not a frame at all\n")
            .expect("write garbage");
        std::future::pending::<()>().await;
    }
    let worker = Worker::current().expect("started by a master");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hello = format!(
        "args={} value={} still_set={}",
        args.join(","),
        std::env::var("TEST_VALUE").unwrap_or_default(),
        std::env::var("CLUSTER_WORKER_ID").is_ok()
    );
    worker
        .send(&TestMsg::new("hello", hello))
        .await
        .expect("send hello");

    if std::env::var_os("TEST_REPORT_CONNECTED").is_some() {
        let connected = worker.is_connected().to_string();
        worker
            .send(&TestMsg::new("connected", connected))
            .await
            .expect("report");
    }

    if let Some(code) = mode.strip_prefix("exit:") {
        std::process::exit(code.parse().expect("exit code"));
    }
    if mode == "big" {
        let big = TestMsg::new("big", "b".repeat(8 * 1024 * 1024));
        worker.send(&big).await.expect("send 8 MiB");
        let too_big = TestMsg::new("too-big", "t".repeat(17 * 1024 * 1024));
        let err = worker.send(&too_big).await.expect_err("over the limit");
        worker
            .send(&TestMsg::new("refused", err.to_string()))
            .await
            .expect("report");
    }

    if let Some(address) = mode.strip_prefix("cancel-bind:") {
        let report = match cancel_bind(address).await {
            Ok(rebound) => TestMsg::new("rebound", rebound),
            Err(e) => listen_error(&e),
        };
        worker.send(&report).await.expect("report");
        worker.disconnect();
    }
    if mode == "udp-ipv6only" {
        let report = match udp_ipv6only().await {
            Ok(both) => TestMsg::new("udp-v6", both),
            Err(e) => listen_error(&e),
        };
        worker.send(&report).await.expect("report");
        worker.disconnect();
    }
    if mode == "udp-index" {
        let report = match udp_index().await {
            Ok(reports) => reports,
            Err(e) => vec![listen_error(&e)],
        };
        for message in report {
            worker.send(&message).await.expect("report");
        }
        worker.disconnect();
    }

    // Kept open until the worker exits.
    let _listeners = match mode.strip_prefix("listen-many:") {
        Some(count) => {
            let listeners = listen_many(&worker, count.parse().expect("count")).await;
            worker
                .send(&TestMsg::new("listen-done", listeners.len().to_string()))
                .await
                .expect("report");
            listeners
        }
        None => match (
            mode.strip_prefix("listen-twice:"),
            mode.strip_prefix("listen-retry:"),
        ) {
            (Some(address), _) => listen_twice(&worker, address.parse().expect("address")).await,
            (_, Some(address)) => listen_retry(&worker, address.parse().expect("address")).await,
            _ => Vec::new(),
        },
    };

    let server = match std::env::var("TEST_LISTEN") {
        Ok(address) if address.starts_with("udp:") => {
            let address = address["udp:".len()..].parse().expect("TEST_LISTEN");
            let bound = if std::env::var_os("TEST_UDP_REUSE_PORT").is_some() {
                cluster_worker::bind_udp_reuse_port(address).await
            } else {
                cluster_worker::bind_udp(address).await
            };
            match bound {
                Ok(socket) => {
                    let local = socket.local_addr().expect("address").to_string();
                    worker
                        .send(&TestMsg::new("listened", local))
                        .await
                        .expect("report");
                    Some(tokio::spawn(answer_datagrams(worker.clone(), socket)))
                }
                Err(e) => {
                    worker.send(&listen_error(&e)).await.expect("report");
                    std::process::exit(3);
                }
            }
        }
        Ok(address) if mode == "relisten" => {
            let address = address.parse().expect("TEST_LISTEN");
            let first = cluster_worker::incoming(address).await.expect("listen");
            let a = first.local_addr();
            drop(first);
            let second = cluster_worker::incoming(address)
                .await
                .expect("listen again");
            let b = second.local_addr();
            drop(second);
            worker
                .send(&TestMsg::new("relistened", format!("{a} {b}")))
                .await
                .expect("report");
            worker.disconnect();
            None
        }
        Ok(address) if mode.starts_with("hand-back") => {
            let listener = cluster_worker::listen(address.parse().expect("TEST_LISTEN"))
                .await
                .expect("listen");
            let times = if mode == "hand-back-twice" { 2 } else { 1 };
            Some(tokio::spawn(hand_back(worker.clone(), listener, times)))
        }
        _ if mode == "own-listen" => {
            let own = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let local = own.local_addr().expect("address").to_string();
            worker
                .send(&TestMsg::new("own", local))
                .await
                .expect("report");
            Some(tokio::spawn(serve_own(worker.clone(), own)))
        }
        Ok(address) if mode == "unix-http" || mode == "unix-all" => {
            let path = std::path::PathBuf::from(address.strip_prefix("unix:").expect("unix:"));
            let listener = if mode == "unix-all" {
                let everyone = cluster_worker::UnixOptions::new()
                    .readable_all(true)
                    .writable_all(true);
                cluster_worker::listen_unix_with(&path, everyone).await
            } else {
                cluster_worker::listen_unix(&path).await
            };
            let listener = listener.expect("listen");
            worker
                .send(&TestMsg::new("listened", address))
                .await
                .expect("report");
            Some(tokio::spawn(serve_unix(worker.clone(), listener)))
        }
        Ok(address) if address.starts_with("unix:") => {
            let path = std::path::PathBuf::from(&address["unix:".len()..]);
            let report = match cluster_worker::listen_unix(&path).await {
                Ok(_) => TestMsg::new("listened", address),
                Err(e) => listen_error(&e),
            };
            worker.send(&report).await.expect("report");
            None
        }
        Ok(address) => {
            let mut options = cluster_worker::ListenOptions::new();
            if let Some(backlog) = std::env::var("TEST_BACKLOG")
                .ok()
                .and_then(|b| b.parse().ok())
            {
                options = options.backlog(backlog);
            }
            if let Ok(only) = std::env::var("TEST_IPV6_ONLY") {
                options = options.ipv6_only(only == "1");
            }
            let address = address.parse().expect("TEST_LISTEN");
            match cluster_worker::incoming_with(address, options).await {
                Ok(listener) => Some(tokio::spawn(serve(worker.clone(), listener))),
                Err(e) => {
                    // Not delivered when the worker was disconnected before it listened.
                    let _ = worker.send(&listen_error(&e)).await;
                    if std::env::var_os("TEST_DISCONNECT_ON_ERROR").is_none() {
                        std::process::exit(3);
                    }
                    worker.disconnect();
                    None
                }
            }
        }
        Err(_) => None,
    };

    if let Some(lines) = std::env::var("TEST_CHATTY_LINES")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        tokio::spawn(chatter(lines));
    }

    if std::env::var_os("TEST_ORPHAN").is_some() {
        let (pid, fate) = make_an_orphan().await;
        worker
            .send(&TestMsg::new("orphan", format!("{fate} {pid}")))
            .await
            .expect("report the orphan");
        let first_generation = std::env::var("TEST_WORKERS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2u32);
        let id = worker.id();
        if let Some(code) = std::env::var("TEST_ORPHAN_EXIT")
            .ok()
            .and_then(|c| c.parse().ok())
        {
            if id <= first_generation {
                std::process::exit(code);
            }
        }
    }

    let echo = worker.clone();
    tokio::spawn(async move {
        while let Some(message) = echo.recv().await {
            let msg: TestMsg = match message.decode() {
                Ok(msg) => msg,
                Err(e) => {
                    echo.send(&TestMsg::new("undecodable", e.to_string()))
                        .await
                        .expect("answer");
                    continue;
                }
            };
            if msg.kind == "disconnect" {
                echo.disconnect();
            } else if msg.kind == "exit" {
                std::process::exit(msg.data.parse().expect("exit code"));
            } else if msg.kind == "destroy" {
                echo.destroy();
            } else if msg.kind == "kill" {
                echo.kill();
            } else if msg.kind == "disconnect-destroy" {
                echo.disconnect();
                echo.disconnected().await;
                echo.destroy();
            } else if msg.kind == "deaf" {
                echo.send(&TestMsg::new("deaf", std::process::id().to_string()))
                    .await
                    .expect("ack");
                // Blocks the only runtime thread: the worker is alive and deaf.
                std::thread::sleep(std::time::Duration::from_secs(3600));
            } else if msg.kind == "cwd" {
                let cwd = std::env::current_dir().expect("cwd");
                echo.send(&TestMsg::new("cwd", cwd.display().to_string()))
                    .await
                    .expect("answer");
            } else if msg.kind == "env" {
                let value = std::env::var(&msg.data).unwrap_or_default();
                echo.send(&TestMsg::new("env", value))
                    .await
                    .expect("answer");
            } else if msg.kind.starts_with("send")
                || ["stream", "reflect", "listener", "connection", "udp"]
                    .contains(&msg.kind.as_str())
            {
                with_fds(&echo, &msg, &message).await;
            } else {
                echo.send(&TestMsg::new("echo", msg.data))
                    .await
                    .expect("echo");
            }
        }
    });

    worker.disconnected().await;
    if std::env::var_os("TEST_REPORT_CONNECTED").is_some() && worker.is_connected() {
        std::process::exit(9);
    }
    if let Some(server) = server {
        server.await.expect("server task");
    }
    worker.drained().await;
}

/// `listen-twice`: two listens on `address` while the first is open, then one after closing
/// the first; each reported with the bound address. Returns what stays open.
async fn listen_twice(
    worker: &Worker,
    address: std::net::SocketAddr,
) -> Vec<tokio::net::TcpListener> {
    let mut open = Vec::new();
    for (step, close_first) in [("first", false), ("second", false), ("third", true)] {
        if close_first && !open.is_empty() {
            drop(open.remove(0));
        }
        let report = match cluster_worker::listen(address).await {
            Ok(listener) => {
                let local = listener.local_addr().expect("address").to_string();
                open.push(listener);
                TestMsg::new(step, local)
            }
            Err(e) => listen_error(&e),
        };
        worker.send(&report).await.expect("report");
    }
    open
}

/// `listen-retry`: a listen, then another once the master says `retry`.
async fn listen_retry(
    worker: &Worker,
    address: std::net::SocketAddr,
) -> Vec<tokio::net::TcpListener> {
    let mut open = Vec::new();
    for step in ["first", "retry"] {
        if step == "retry" {
            while let Some(message) = worker.recv().await {
                if message.decode::<TestMsg>().is_ok_and(|m| m.kind == "retry") {
                    break;
                }
            }
        }
        let report = match cluster_worker::listen(address).await {
            Ok(listener) => {
                open.push(listener);
                TestMsg::new(step, address.to_string())
            }
            Err(e) => listen_error(&e),
        };
        worker.send(&report).await.expect("report");
    }
    open
}

/// The report of a failed listen: `KIND: MESSAGE`.
fn listen_error(error: &std::io::Error) -> TestMsg {
    TestMsg::new("listen-error", format!("{:?}: {error}", error.kind()))
}

/// Answers every datagram on the cluster's shared UDP socket with this process's pid, until
/// the worker disconnects.
async fn answer_datagrams(worker: Worker, socket: tokio::net::UdpSocket) {
    let pid = std::process::id().to_string();
    let mut packet = [0u8; 1500];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut packet) => {
                if let Ok((_, peer)) = received {
                    let _ = socket.send_to(pid.as_bytes(), peer).await;
                }
            }
            _ = worker.closing() => return,
        }
    }
}

/// Starts a `sleep` whose parent shell exits at once, then waits until the `sleep` is gone
/// from `/proc` ("reaped") or is still a zombie 10 s later ("zombie").
async fn make_an_orphan() -> (u32, &'static str) {
    let output = tokio::process::Command::new("sh")
        .args(["-c", "sleep 0.3 >/dev/null 2>&1 </dev/null & echo $!"])
        .output()
        .await
        .expect("start the orphan");
    let pid: u32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("the orphan's pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        let zombie = match &status {
            Err(_) => return (pid, "reaped"),
            Ok(status) => status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z')),
        };
        if zombie && std::time::Instant::now() > deadline {
            return (pid, "zombie");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Answers the messages that carry descriptors or ask for some.
async fn with_fds(worker: &Worker, msg: &TestMsg, message: &cluster_worker::Message) {
    if msg.kind == "stream" {
        let fds = message.take_fds();
        let count = fds.len();
        // The first is the stream; any others are only counted.
        if let Some(fd) = fds.into_iter().next() {
            let mut stream = std::os::unix::net::UnixStream::from(fd);
            stream
                .write_all(std::process::id().to_string().as_bytes())
                .expect("write the pid");
        }
        worker
            .send(&TestMsg::new("took", count.to_string()))
            .await
            .expect("answer");
    } else if msg.kind == "reflect" {
        let fds = message.take_fds();
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        worker
            .send_with(&TestMsg::new("reflected", msg.data.clone()), &borrowed)
            .await
            .expect("send the descriptors back");
    } else if msg.kind == "listener" {
        let fd = message.take_fds().pop().expect("a listening socket");
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let (mut stream, _) = listener.accept().await.expect("accept");
        answer(&mut stream, std::process::id())
            .await
            .expect("answer");
        worker
            .send(&TestMsg::new("served", ""))
            .await
            .expect("report");
    } else if msg.kind == "connection" {
        let fd = message.take_fds().pop().expect("a connection");
        let stream = std::net::TcpStream::from(fd);
        stream.set_nonblocking(true).expect("nonblocking");
        let mut stream = tokio::net::TcpStream::from_std(stream).expect("tokio stream");
        answer(&mut stream, std::process::id())
            .await
            .expect("answer");
        worker
            .send(&TestMsg::new("served", ""))
            .await
            .expect("report");
    } else if msg.kind == "udp" {
        let fd = message.take_fds().pop().expect("a UDP socket");
        let socket = std::net::UdpSocket::from(fd);
        socket.set_nonblocking(true).expect("nonblocking");
        let socket = tokio::net::UdpSocket::from_std(socket).expect("tokio socket");
        let mut packet = [0u8; 1500];
        let (_, peer) = socket.recv_from(&mut packet).await.expect("recv");
        socket
            .send_to(std::process::id().to_string().as_bytes(), peer)
            .await
            .expect("send");
        worker
            .send(&TestMsg::new("served", ""))
            .await
            .expect("report");
    } else if msg.kind == "send-too-many" {
        let files: Vec<std::fs::File> = (0..17)
            .map(|_| std::fs::File::open("/dev/null").expect("open"))
            .collect();
        let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
        let err = worker
            .send_with(&TestMsg::new("fds", "17"), &fds)
            .await
            .expect_err("17 descriptors");
        worker
            .send(&TestMsg::new("too-many", err.to_string()))
            .await
            .expect("report");
    } else if let Some(counts) = msg.kind.strip_prefix("send-fds:") {
        let (n, m) = counts.split_once(':').expect("send-fds:N:M");
        let (n, m): (usize, usize) = (n.parse().expect("N"), m.parse().expect("M"));
        for i in 0..n {
            let files: Vec<std::fs::File> = (0..m)
                .map(|_| std::fs::File::open("/dev/null").expect("open"))
                .collect();
            let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
            worker
                .send_with(&TestMsg::new("fds", i.to_string()), &fds)
                .await
                .expect("send with descriptors");
        }
        worker
            .send(&TestMsg::new("sent", n.to_string()))
            .await
            .expect("report");
    }
}

/// Sends every accepted connection to the master `times` times, unread, and closes its own
/// copy.
async fn hand_back(worker: Worker, listener: tokio::net::TcpListener, times: usize) {
    let _guard = worker.register_server();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted.expect("accept"),
            _ = worker.closing() => return,
        };
        for _ in 0..times {
            worker
                .send_with(&TestMsg::new("client", peer.to_string()), &[stream.as_fd()])
                .await
                .expect("send the connection");
        }
    }
}

/// Writes a user frame on the channel (fd 3) that announces 2 descriptors and carries 1.
fn write_lying_fds_frame() {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let payload = br#"{"kind":"lie","data":""}"#;
    let mut frame = vec![0xC1, 1, 2, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    let one = std::fs::File::open("/dev/null").expect("open");
    let fds = [one.as_raw_fd()];
    let iov = [std::io::IoSlice::new(&frame)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(3, &iov, &cmsg, MsgFlags::empty(), None).expect("sendmsg");
    assert_eq!(sent, frame.len());
}

/// Writes `lines` numbered lines to stdout, yielding to the server every 100.
async fn chatter(lines: usize) {
    let pad = "x".repeat(80);
    for n in 0..lines {
        let _ = writeln!(std::io::stdout().lock(), "chatty line {n} {pad}");
        if n % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
}

/// Answers each connection with this process's pid, one connection at a time, until the
/// worker disconnects.
async fn serve(worker: Worker, mut incoming: cluster_worker::Acceptor) {
    let _guard = worker.register_server();
    let pid = std::process::id();
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = incoming.accept() => match accepted {
                Some(pair) => pair,
                None => return,
            },
            _ = worker.closing() => break,
        };
        let _ = answer(&mut stream, pid).await;
    }
    // Closing: connections already taken (accepted, or handed over by the master) are
    // served too.
    incoming.stop();
    while let Some((mut stream, _)) = incoming.accept().await {
        let _ = answer(&mut stream, pid).await;
    }
}

/// Reads one request and answers it with this process's pid.
async fn answer(stream: &mut tokio::net::TcpStream, pid: u32) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await? {
            0 => break,
            n => request.extend_from_slice(&buf[..n]),
        }
    }
    let body = pid.to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    // End the connection with a FIN even while another process holds the socket (a hand-over
    // the master took back from a deaf worker is still in that worker's channel).
    stream.shutdown().await
}

/// Writes one frame on the channel (fd 3) by hand, bypassing the encoder: `kind` 0 control,
/// 1 user; `payload` followed by the u64 length 0x2999_9999_9999_9999 (3·10¹⁸).
fn write_raw_frame(kind: u8, payload: &[u8]) {
    let mut payload = payload.to_vec();
    payload.extend_from_slice(&0x2999_9999_9999_9999u64.to_le_bytes());
    write_frame(kind, &payload);
}

/// Writes a frame of `kind` with `payload` on the channel, bypassing the worker runtime.
fn write_frame(kind: u8, payload: &[u8]) {
    let mut frame = vec![0xC1, kind, 0, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    // SAFETY: fd 3 is the channel end the master mapped for us; nothing else uses it yet,
    // and it is not closed here (the worker runtime takes it over afterwards).
    let mut raw = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(3) });
    raw.write_all(&frame).expect("write the frame");
}

/// Asks to listen on `count` distinct loopback addresses and reports each result; then asks
/// for the first address again. Returns the listeners granted.
async fn listen_many(worker: &Worker, count: usize) -> Vec<tokio::net::TcpListener> {
    let mut listeners = Vec::new();
    for i in 0..count {
        let address = format!("127.0.{}.{}:0", i / 250, i % 250 + 1);
        let report = match cluster_worker::listen(address.parse().expect("address")).await {
            Ok(listener) => {
                listeners.push(listener);
                TestMsg::new("listened", address)
            }
            Err(e) => listen_error(&e),
        };
        worker.send(&report).await.expect("report");
    }
    // Closed and asked for again: the same socket of the master (index 0 again), which the
    // cap does not count twice.
    if !listeners.is_empty() {
        drop(listeners.remove(0));
    }
    let again = match cluster_worker::listen("127.0.0.1:0".parse().expect("address")).await {
        Ok(listener) => {
            listeners.push(listener);
            TestMsg::new("listened-again", "127.0.0.1:0")
        }
        Err(e) => listen_error(&e),
    };
    worker.send(&again).await.expect("report");
    listeners
}

/// `unix-http`: answers each connection on the shared Unix socket with this process's pid,
/// until the worker disconnects.
async fn serve_unix(worker: Worker, listener: tokio::net::UnixListener) {
    let _guard = worker.register_server();
    let pid = std::process::id().to_string();
    loop {
        let mut stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => return,
            },
            _ = worker.closing() => return,
        };
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{pid}",
            pid.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// `own-listen`: answers each connection on the worker's own socket with its pid, until
/// the worker disconnects.
async fn serve_own(worker: Worker, listener: tokio::net::TcpListener) {
    let _guard = worker.register_server();
    let pid = std::process::id();
    loop {
        let mut stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => return,
            },
            _ = worker.closing() => return,
        };
        let _ = answer(&mut stream, pid).await;
    }
}

/// `udp-index`: two UDP sockets on port 0 held at once, then each closed and bound again.
async fn udp_index() -> std::io::Result<Vec<TestMsg>> {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let first = cluster_worker::bind_udp(any).await?;
    let second = cluster_worker::bind_udp(any).await?;
    let two = format!("{} {}", first.local_addr()?, second.local_addr()?);
    drop(first);
    let third = cluster_worker::bind_udp(any).await?;
    drop(second);
    let fourth = cluster_worker::bind_udp(any).await?;
    let again = format!("{} {}", third.local_addr()?, fourth.local_addr()?);
    Ok(vec![
        TestMsg::new("udp-two", two),
        TestMsg::new("udp-again", again),
    ])
}

/// `udp-ipv6only`: `[::]:0` (IPv6 only if `TEST_IPV6_ONLY=1`), then IPv4 on its port; both
/// held until both are bound.
async fn udp_ipv6only() -> std::io::Result<String> {
    let only = std::env::var("TEST_IPV6_ONLY").as_deref() == Ok("1");
    let options = cluster_worker::ListenOptions::new().ipv6_only(only);
    let v6 = cluster_worker::bind_udp_with("[::]:0".parse().expect("address"), options).await?;
    let port = v6.local_addr()?.port();
    let v4 = cluster_worker::bind_udp(std::net::SocketAddr::from(([0, 0, 0, 0], port))).await?;
    Ok(format!("{} {}", v6.local_addr()?, v4.local_addr()?))
}

/// `cancel-bind`: a bind dropped before the master answers, then the same bind again.
async fn cancel_bind(address: &str) -> std::io::Result<String> {
    if let Some(udp) = address.strip_prefix("udp:") {
        let udp: std::net::SocketAddr = udp.parse().expect("address");
        let cancelled = polled_once(cluster_worker::bind_udp(udp)).await;
        let socket = cluster_worker::bind_udp(udp).await?;
        return Ok(format!("cancelled={cancelled} {}", socket.local_addr()?));
    }
    let tcp: std::net::SocketAddr = address.parse().expect("address");
    let cancelled = polled_once(cluster_worker::listen(tcp)).await;
    let listener = cluster_worker::listen(tcp).await?;
    Ok(format!("cancelled={cancelled} {}", listener.local_addr()?))
}

/// Polls `future` once and drops it; true if it was not finished (it was cancelled).
async fn polled_once<F: std::future::Future>(future: F) -> bool {
    tokio::select! {
        biased;
        _ = future => false,
        _ = std::future::ready(()) => true,
    }
}
