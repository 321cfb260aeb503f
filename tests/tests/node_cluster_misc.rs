//! Node's own cluster tests of forking, listening, messages and exits, ported (issue 17):
//! each test is named after the Node file and asserts the same observable behaviour (see
//! `docs/NODE_COMPATIBILITY.md`, "Node's other cluster tests").

use std::time::Duration;

use cluster_core::{Event, EventStream, Scheduling, Serialization, Signal, WorkerState};
use cluster_core::{Exit, Worker, setup_master};
use cluster_tests::{
    TestMsg, http_get, next_message, process_gone, unique_socket_path, wait_event, wait_listening,
    within, worker_settings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The next `Exit` event: the worker and how it ended.
async fn next_exit(events: &mut EventStream) -> (Worker, Exit) {
    wait_event(events, 15, "an exit", |e| match e {
        Event::Exit(w, exit) => Some((w.clone(), *exit)),
        _ => None,
    })
    .await
}

/// The next message, which must be of `kind`; returns its data.
async fn expect_message(events: &mut EventStream, kind: &str) -> String {
    let (_, msg) = next_message(events, 10).await;
    assert_eq!(msg.kind, kind, "{msg:?}");
    msg.data
}

/// test-cluster-basic: `fork`, `online`, `listening` and `exit` come in that order for the
/// first worker (id 1), each with that worker and the state of the moment; the listening
/// address is the one asked for with a real port; the handoff variable is gone from the
/// worker's environment; the exit reports how the process ended.
#[tokio::test]
async fn test_cluster_basic() {
    let settings = worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    assert_eq!(worker.id(), 1);
    let mut seen = Vec::new();
    let (exit_worker, exit) = within(15, "the worker's life", async {
        loop {
            let event = events.next().await.expect("events");
            match &event {
                Event::Fork(w) => seen.push(("fork", w.id())),
                Event::Online(w) => seen.push(("online", w.id())),
                Event::Listening(w, address) => {
                    seen.push(("listening", w.id()));
                    assert_eq!(address.ip().to_string(), "127.0.0.1");
                    assert!(address.port() >= 1);
                    assert_eq!(w.state(), WorkerState::Listening);
                    // Node's test kills the worker once it listens.
                    nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(w.pid() as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .expect("kill");
                }
                Event::Exit(w, exit) => {
                    seen.push(("exit", w.id()));
                    return (w.clone(), *exit);
                }
                Event::Message(w, message) => {
                    let hello: TestMsg = message.decode().expect("hello");
                    // Differs: the handoff variables stay (removing them needs the
                    // unsafe `std::env::remove_var`); `is_worker()` checks the parent pid,
                    // so a worker's own children are not taken for workers.
                    assert!(hello.data.contains("still_set=true"), "{hello:?}");
                    // The event order, not `state()`: the state is live and may have moved
                    // on to Listening by the time this event is read.
                    assert!(
                        seen.contains(&("online", w.id())),
                        "online precedes messages"
                    );
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(
        seen,
        [("fork", 1), ("online", 1), ("listening", 1), ("exit", 1)]
    );
    assert_eq!(exit_worker.id(), worker.id());
    assert_eq!((exit.code, exit.signal), (None, Some(Signal::SIGKILL)));
    assert_eq!(worker.state(), WorkerState::Dead);
    assert!(worker.is_dead());
    cluster.disconnect().await;
}

/// test-cluster-advanced-serialization: with the binary encoding (Node's `advanced`), a
/// message goes to the worker and comes back unchanged. (Circular objects are a V8 object
/// graph feature: not applicable to serde types.)
#[tokio::test]
async fn test_cluster_advanced_serialization() {
    let settings = worker_settings("serve").serialization(Serialization::Binary);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    let value = "a value with bytes \u{0} and \u{1F600} \n".repeat(3);
    worker
        .send(&TestMsg::new("ping", value.clone()))
        .await
        .expect("send");
    assert_eq!(expect_message(&mut events, "echo").await, value);
    worker.disconnect();
    let (_, exit) = next_exit(&mut events).await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    cluster.disconnect().await;
}

/// test-cluster-bind-twice: a second cluster whose worker listens on the port the first
/// cluster's worker holds gets "address in use" (`AddrInUse`), and the first keeps serving.
#[tokio::test]
async fn test_cluster_bind_twice() {
    let one = setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0"))
        .expect("setup one");
    let mut one_events = one.events();
    let first = one.fork(&[]).expect("fork");
    let address = wait_listening(&mut one_events, 1).await;

    let two = setup_master(worker_settings("serve").env("TEST_LISTEN", address.to_string()))
        .expect("setup two");
    let mut two_events = two.events();
    two.fork(&[]).expect("fork");
    expect_message(&mut two_events, "hello").await;
    let error = expect_message(&mut two_events, "listen-error").await;
    assert!(error.starts_with("AddrInUse"), "{error}");
    assert!(error.contains(&address.to_string()), "{error}");
    let (_, exit) = next_exit(&mut two_events).await;
    assert_eq!(exit.code, Some(3), "{exit}");

    let (status, body) = http_get(address, "/").await.expect("GET");
    assert_eq!((status, body), (200, first.pid().to_string()));
    two.disconnect().await;
    one.disconnect().await;
}

/// test-cluster-eaccess: a worker asking for a Unix socket path another process serves gets
/// "address in use"; the other process keeps its socket.
#[tokio::test]
async fn test_cluster_eaccess() {
    let path = unique_socket_path("node-eaccess");
    let other = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let settings = worker_settings("serve").env("TEST_LISTEN", format!("unix:{}", path.display()));
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    let error = expect_message(&mut events, "listen-error").await;
    assert!(error.starts_with("AddrInUse"), "{error}");
    // Still the other process's socket: a connection reaches it.
    let _client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    other.set_nonblocking(true).expect("nonblocking");
    within(5, "the other process to accept", async {
        loop {
            if other.accept().is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    cluster.disconnect().await;
    let _ = std::fs::remove_file(&path);
}

/// test-cluster-fork-stdio: the primary gives the worker an extra pipe besides its stdio and
/// the channel, and reads what the worker writes on it. Differs: there is no `stdio` array;
/// the pipe (here a socket pair) is sent as a descriptor in a message (`send_with`).
#[tokio::test]
async fn test_cluster_fork_stdio() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
    worker
        .send_with(
            &TestMsg::new("stream", ""),
            &[std::os::fd::AsFd::as_fd(&theirs)],
        )
        .await
        .expect("send the pipe");
    drop(theirs);
    assert_eq!(expect_message(&mut events, "took").await, "1");
    let mut written = String::new();
    std::io::Read::read_to_string(&mut ours, &mut written).expect("read the pipe");
    assert_eq!(written, worker.pid().to_string());
    cluster.disconnect().await;
}

/// test-cluster-http-pipe: a worker's HTTP server on a Unix socket answers a request.
#[tokio::test]
async fn test_cluster_http_pipe() {
    let path = unique_socket_path("node-http-pipe");
    let settings =
        worker_settings("unix-http").env("TEST_LISTEN", format!("unix:{}", path.display()));
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    expect_message(&mut events, "listened").await;
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: pipe\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    within(10, "the answer", stream.read_to_string(&mut response))
        .await
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with(&worker.pid().to_string()), "{response}");
    worker.disconnect();
    let (_, exit) = next_exit(&mut events).await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    cluster.disconnect().await;
    let _ = std::fs::remove_file(&path);
}

/// test-cluster-listening-port: the `listening` event of a `listen(0)` carries the real port,
/// on which the worker answers.
#[tokio::test]
async fn test_cluster_listening_port() {
    let settings = worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let address = wait_listening(&mut events, 1).await;
    assert_ne!(address.port(), 0);
    let (status, body) = http_get(address, "/").await.expect("GET");
    assert_eq!((status, body), (200, worker.pid().to_string()));
    cluster.disconnect().await;
}

/// test-cluster-message: the worker's messages reach the primary with the worker that sent
/// them, and the primary's messages reach the worker (which answers them).
#[tokio::test]
async fn test_cluster_message() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let (from, hello) = next_message(&mut events, 10).await;
    assert_eq!((from, hello.kind.as_str()), (worker.id(), "hello"));
    worker
        .send(&TestMsg::new("ping", "message from primary"))
        .await
        .expect("send");
    let (from, echo) = next_message(&mut events, 10).await;
    assert_eq!(from, worker.id());
    assert_eq!(echo, TestMsg::new("echo", "message from primary"));
    worker.disconnect();
    let (_, exit) = next_exit(&mut events).await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    cluster.disconnect().await;
}

/// test-cluster-net-listen: a worker listening on port 0 makes the primary's `listening`
/// event carry a port above 0.
#[tokio::test]
async fn test_cluster_net_listen() {
    let settings = worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let (id, address) = wait_event(&mut events, 10, "listening", |e| match e {
        Event::Listening(w, a) => Some((w.id(), *a)),
        _ => None,
    })
    .await;
    assert_eq!(id, worker.id());
    assert!(address.port() > 0);
    assert_eq!(worker.addresses(), vec![address]);
    cluster.disconnect().await;
}

/// test-cluster-net-reuseport: with `SO_REUSEPORT` (`Scheduling::ReusePort`) each worker
/// binds a socket of its own on the same port, none fails, and both exit 0 when
/// disconnected.
#[tokio::test]
async fn test_cluster_net_reuseport() {
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .scheduling(Scheduling::ReusePort {
            accept_queued_loss: true,
        });
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let workers: Vec<_> = (0..2).map(|_| cluster.fork(&[]).expect("fork")).collect();
    let first = wait_listening(&mut events, 1).await;
    let second = wait_listening(&mut events, 1).await;
    assert_eq!(first, second);
    let pids: Vec<String> = workers.iter().map(|w| w.pid().to_string()).collect();
    let (status, body) = http_get(first, "/").await.expect("GET");
    assert_eq!(status, 200);
    assert!(pids.contains(&body), "{body} not in {pids:?}");
    for worker in &workers {
        worker.disconnect();
    }
    for _ in 0..2 {
        let (_, exit) = next_exit(&mut events).await;
        assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    }
    cluster.disconnect().await;
}

/// test-cluster-process-disconnect: a worker that disconnects itself exits with code 0 and
/// no signal.
#[tokio::test]
async fn test_cluster_process_disconnect() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    // The test worker calls its own `Worker::disconnect()` on this message.
    worker
        .send(&TestMsg::new("disconnect", ""))
        .await
        .expect("send");
    let (exited, exit) = next_exit(&mut events).await;
    assert_eq!(exited.id(), worker.id());
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    cluster.disconnect().await;
}

/// test-cluster-shared-leak: two workers on one shared port; a client connects and is
/// served; both workers disconnected exit 0 with no signal and leave the table empty.
#[tokio::test]
async fn test_cluster_shared_leak() {
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .scheduling(Scheduling::Shared);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let one = cluster.fork(&[]).expect("fork");
    let address = wait_listening(&mut events, 1).await;
    let two = cluster.fork(&[]).expect("fork");
    // Node connects on the second worker's `online`; waiting for its `listening` keeps its
    // listen from racing the disconnect below.
    assert_eq!(wait_listening(&mut events, 1).await, address);
    let (status, _) = http_get(address, "/").await.expect("GET");
    assert_eq!(status, 200);
    one.disconnect();
    two.disconnect();
    for _ in 0..2 {
        let (_, exit) = next_exit(&mut events).await;
        assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    }
    cluster_tests::eventually(5, "an empty worker table", || cluster.workers().is_empty()).await;
    cluster.disconnect().await;
}

/// test-cluster-worker-death: a worker that exits with code 42 is reported with code 42 and
/// no signal.
#[tokio::test]
async fn test_cluster_worker_death() {
    let settings = worker_settings("exit:42").respawn(cluster_core::Respawn::Manual);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let (exited, exit) = next_exit(&mut events).await;
    assert_eq!(exited.id(), worker.id());
    assert_eq!((exit.code, exit.signal), (Some(42), None), "{exit}");
    assert_eq!(worker.exit_status(), Some(exit));
    cluster.disconnect().await;
}

/// test-cluster-worker-disconnect-on-error: a worker whose listen fails (the port is the
/// primary's own) disconnects itself on the error and exits 0.
#[tokio::test]
async fn test_cluster_worker_disconnect_on_error() {
    let own = std::net::TcpListener::bind("127.0.0.1:0").expect("the primary's server");
    let address = own.local_addr().expect("address");
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", address.to_string())
        .env("TEST_DISCONNECT_ON_ERROR", "1");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    let error = expect_message(&mut events, "listen-error").await;
    assert!(error.starts_with("AddrInUse"), "{error}");
    wait_event(&mut events, 10, "disconnect", |e| match e {
        Event::Disconnect(w) if w.id() == worker.id() => Some(()),
        _ => None,
    })
    .await;
    let (_, exit) = next_exit(&mut events).await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    assert!(worker.exited_after_disconnect());
    cluster.disconnect().await;
}

/// test-cluster-worker-exit: a worker that exits by itself with code 42 gets `disconnect`
/// then `exit` (code 42, no signal); it is dead, and the exit was not asked for
/// (`exited_after_disconnect` false).
#[tokio::test]
async fn test_cluster_worker_exit() {
    let settings = worker_settings("exit:42").respawn(cluster_core::Respawn::Manual);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let mut order = Vec::new();
    let exit = within(15, "disconnect and exit", async {
        loop {
            match events.next().await.expect("events") {
                Event::Online(_) => order.push("online"),
                Event::Disconnect(_) => order.push("disconnect"),
                Event::Exit(_, exit) => {
                    order.push("exit");
                    return exit;
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(order, ["online", "disconnect", "exit"]);
    assert_eq!((exit.code, exit.signal), (Some(42), None), "{exit}");
    assert_eq!(worker.state(), WorkerState::Dead);
    assert!(worker.is_dead());
    assert!(!worker.exited_after_disconnect());
    assert!(process_gone(worker.pid()));
    cluster.disconnect().await;
}

/// test-cluster-worker-init: a message the primary sends as soon as the worker is online
/// reaches the worker's code, which answers it; then the worker is disconnected.
#[tokio::test]
async fn test_cluster_worker_init() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    wait_event(&mut events, 10, "online", |e| {
        matches!(e, Event::Online(_)).then_some(())
    })
    .await;
    worker
        .send(&TestMsg::new("ping", "foo"))
        .await
        .expect("send");
    let answer = within(10, "the answer", async {
        loop {
            let (_, msg) = next_message(&mut events, 10).await;
            if msg.kind == "echo" {
                return msg.data;
            }
        }
    })
    .await;
    assert_eq!(answer, "foo");
    worker.disconnect();
    let (_, exit) = next_exit(&mut events).await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    cluster.disconnect().await;
}

/// test-cluster-worker-kill-signal: a listening worker killed with SIGKILL gets `disconnect`
/// and `exit` once each; the exit has no code and signal SIGKILL, was not asked for through
/// a disconnect, and the process is gone.
#[tokio::test]
async fn test_cluster_worker_kill_signal() {
    sigkilled_once_listening(|worker| worker.kill(Signal::SIGKILL)).await;
}

/// test-cluster-worker-kill: the same with the process killed directly (Node's
/// `worker.process.kill('SIGKILL')`, here `kill(2)` on its pid); the worker also leaves the
/// cluster's table.
#[tokio::test]
async fn test_cluster_worker_kill() {
    let cluster = sigkilled_once_listening(|worker| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
    })
    .await;
    cluster_tests::eventually(5, "an empty worker table", || cluster.workers().is_empty()).await;
}

/// A listening worker killed by `kill`: `disconnect` and `exit` once each, no code and
/// signal SIGKILL, not intended, and the process gone. Returns the (stopped) cluster.
async fn sigkilled_once_listening(kill: impl FnOnce(&Worker)) -> cluster_core::Cluster {
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .respawn(cluster_core::Respawn::Manual);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    wait_listening(&mut events, 1).await;
    kill(&worker);
    let (mut disconnects, mut exits) = (0, Vec::new());
    within(15, "disconnect and exit", async {
        loop {
            match events.next().await.expect("events") {
                Event::Disconnect(w) if w.id() == worker.id() => disconnects += 1,
                Event::Exit(w, exit) if w.id() == worker.id() => {
                    exits.push(exit);
                    return;
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(disconnects, 1);
    assert_eq!(exits.len(), 1);
    assert_eq!(
        (exits[0].code, exits[0].signal),
        (None, Some(Signal::SIGKILL))
    );
    assert!(!worker.exited_after_disconnect());
    assert!(process_gone(worker.pid()));
    cluster.disconnect().await;
    cluster
}

/// test-cluster-primary-kill: when the primary goes away without stopping its workers, the
/// workers do not outlive it. Differs: Node's primary calls `process.exit(0)`; here it is
/// SIGKILLed (the hardest way to go; a Rust master's normal exit stops its workers first).
#[tokio::test]
async fn test_cluster_primary_kill() {
    let (mut master, _lines, pids) =
        cluster_tests::start_test_master(&[("TEST_LISTEN", "127.0.0.1:0")]).await;
    master.start_kill().expect("SIGKILL the master");
    master.wait().await.expect("wait");
    cluster_tests::eventually(10, "the workers to end", || {
        pids.iter().all(|pid| process_gone(*pid))
    })
    .await;
}

/// test-cluster-primary-error: when the primary's own code fails (Node: an uncaught
/// exception; here a panic in the master's `main`), the primary exits with an error and no
/// worker outlives it.
#[tokio::test]
async fn test_cluster_primary_error() {
    let mut master = tokio::process::Command::new(cluster_tests::master_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .env("TEST_PANIC_AFTER_LISTENING", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start master");
    let mut lines = cluster_tests::Lines::new(master.stdout.take().expect("stdout"));
    let mut pids: Vec<u32> = Vec::new();
    for _ in 0..2 {
        let line = lines.wait_for(10, "listening").await;
        pids.push(line.split(' ').nth(2).expect("pid").parse().expect("pid"));
    }
    let status = within(15, "the master to exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(101), "{status}");
    cluster_tests::eventually(10, "the workers to end", || {
        pids.iter().all(|pid| process_gone(*pid))
    })
    .await;
}

/// test-dgram-bind-fd (parallel/test-cluster-dgram-bind-fd): the primary binds a UDP socket
/// and gives its descriptor to a worker, which receives and answers on it.
#[tokio::test]
async fn test_cluster_dgram_bind_fd() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let address = socket.local_addr().expect("address");
    worker
        .send_with(
            &TestMsg::new("udp", ""),
            &[std::os::fd::AsFd::as_fd(&socket)],
        )
        .await
        .expect("send the socket");
    drop(socket);
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("client");
    let mut answer = [0u8; 64];
    let n = within(10, "the worker's answer", async {
        loop {
            client.send_to(b"ping", address).await.expect("send");
            if let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut answer))
                    .await
            {
                assert_eq!(from, address);
                return n;
            }
        }
    })
    .await;
    assert_eq!(
        String::from_utf8_lossy(&answer[..n]),
        worker.pid().to_string()
    );
    expect_message(&mut events, "served").await;
    cluster.disconnect().await;
}

/// test-net-listen-handle-in-cluster-2: a worker that binds its own socket serves on it
/// without the primary: the master knows nothing of that address.
#[tokio::test]
async fn test_net_listen_handle_in_cluster_2() {
    let cluster = setup_master(worker_settings("own-listen")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    let address: std::net::SocketAddr = expect_message(&mut events, "own")
        .await
        .parse()
        .expect("address");
    let (status, body) = http_get(address, "/").await.expect("GET");
    assert_eq!((status, body), (200, worker.pid().to_string()));
    assert!(cluster.addresses().is_empty(), "{:?}", cluster.addresses());
    assert!(worker.addresses().is_empty(), "{:?}", worker.addresses());
    cluster.disconnect().await;
}

/// test-cluster-disconnect-exitedAfterDisconnect-race: a worker that disconnects itself
/// as soon as it starts exits 0, and the primary knows the exit was intended.
#[tokio::test]
async fn test_cluster_disconnect_exited_after_disconnect_race() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    worker
        .send(&TestMsg::new("disconnect", ""))
        .await
        .expect("send");
    let (_, exit) = next_exit(&mut events).await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    assert!(worker.exited_after_disconnect());
    cluster.disconnect().await;
}

/// test-cluster-dgram-2: workers' UDP sockets (`bind_udp` on port 0) send datagrams to the
/// primary: every datagram the primary's socket sends is answered by a worker of the
/// cluster, from the shared address; disconnecting the cluster ends every worker with 0.
#[tokio::test]
async fn test_cluster_dgram_2() {
    let settings = worker_settings("serve").env("TEST_LISTEN", "udp:127.0.0.1:0");
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let workers: Vec<_> = (0..2).map(|_| cluster.fork(&[]).expect("fork")).collect();
    let mut address = None;
    for _ in 0..2 {
        let (_, msg) = within(10, "listened", async {
            loop {
                let (id, msg) = next_message(&mut events, 10).await;
                if msg.kind == "listened" {
                    return (id, msg);
                }
            }
        })
        .await;
        address = Some(msg.data.parse::<std::net::SocketAddr>().expect("address"));
    }
    let address = address.expect("an address");
    let pids: Vec<String> = workers.iter().map(|w| w.pid().to_string()).collect();
    let primary = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut answered = 0;
    let mut packet = [0u8; 64];
    within(15, "ten answers", async {
        while answered < 10 {
            primary.send_to(b"ping", address).await.expect("send");
            if let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_millis(200), primary.recv_from(&mut packet))
                    .await
            {
                assert_eq!(from, address);
                let pid = String::from_utf8_lossy(&packet[..n]).to_string();
                assert!(pids.contains(&pid), "{pid} not in {pids:?}");
                answered += 1;
            }
        }
    })
    .await;
    within(15, "the disconnect", cluster.disconnect()).await;
    for worker in &workers {
        let exit = worker.exit_status().expect("exited");
        assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    }
}

/// test-cluster-disconnect-unshared-udp: a worker reading a UDP socket and one without any
/// are disconnected; both exit 0 and the primary's disconnect completes.
#[tokio::test]
async fn test_cluster_disconnect_unshared_udp() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let idle = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    cluster
        .setup_master(worker_settings("serve").env("TEST_LISTEN", "udp:127.0.0.1:0"))
        .expect("setup udp");
    let reading = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    expect_message(&mut events, "listened").await;
    within(15, "the disconnect", cluster.disconnect()).await;
    for worker in [&idle, &reading] {
        let exit = worker.exit_status().expect("exited");
        assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    }
}

/// test-cluster-child-index-dgram: two UDP sockets on port 0 in one worker each get a
/// socket of their own; each closed and bound again succeeds; the worker exits 0.
#[tokio::test]
async fn test_cluster_child_index_dgram() {
    let cluster = setup_master(worker_settings("udp-index")).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    let two = expect_message(&mut events, "udp-two").await;
    let (a, b) = two.split_once(' ').expect("two addresses");
    assert_ne!(a, b, "each bind(0) a socket of its own");
    let again = expect_message(&mut events, "udp-again").await;
    let (c, d) = again.split_once(' ').expect("two addresses");
    assert_ne!(c, d);
    let (_, exit) = next_exit(&mut events).await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    cluster.disconnect().await;
}

/// test-cluster-dgram-ipv6only: with `ipv6_only`, a worker's UDP socket on `[::]` leaves the
/// IPv4 port free, so a second socket binds `0.0.0.0` on the same port; the worker exits 0.
/// Without it (dual stack), that second bind is `AddrInUse`.
#[tokio::test]
async fn test_cluster_dgram_ipv6only() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 on this machine");
        return;
    }
    let settings = worker_settings("udp-ipv6only").env("TEST_IPV6_ONLY", "1");
    let cluster = setup_master(settings.clone()).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    let both = expect_message(&mut events, "udp-v6").await;
    let (v6, v4) = both.split_once(' ').expect("two addresses");
    let v6: std::net::SocketAddr = v6.parse().expect("v6");
    let v4: std::net::SocketAddr = v4.parse().expect("v4");
    assert!(v6.is_ipv6() && v4.is_ipv4(), "{both}");
    assert_eq!(v6.port(), v4.port());
    let (_, exit) = next_exit(&mut events).await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    cluster.disconnect().await;

    let dual = setup_master(settings.env("TEST_IPV6_ONLY", "0")).expect("setup");
    let mut events = dual.events();
    dual.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    let error = expect_message(&mut events, "listen-error").await;
    assert!(error.starts_with("AddrInUse"), "{error}");
    dual.disconnect().await;
}

/// test-dgram-cluster-close-during-bind and test-dgram-bind-socket-close-before-cluster-reply:
/// a worker's UDP bind dropped while the master's answer is under way leaves nothing
/// behind: binding the same address again succeeds, and the worker exits 0. The same for
/// a TCP listen.
#[tokio::test]
async fn test_dgram_cluster_close_during_bind() {
    for prefix in ["udp:", ""] {
        let address = if prefix.is_empty() {
            let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            free.local_addr().expect("address")
        } else {
            let free = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            free.local_addr().expect("address")
        };
        let mode = format!("cancel-bind:{prefix}{address}");
        let cluster = setup_master(worker_settings(&mode)).expect("setup");
        let mut events = cluster.events();
        cluster.fork(&[]).expect("fork");
        expect_message(&mut events, "hello").await;
        let rebound = expect_message(&mut events, "rebound").await;
        assert_eq!(rebound, format!("cancelled=true {address}"), "{mode}");
        let (_, exit) = next_exit(&mut events).await;
        assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
        cluster.disconnect().await;
    }
}

/// test-cluster-listen-pipe-readable-writable: a worker's Unix socket listened with
/// `readable_all` and `writable_all` (`listen_unix_with`) is readable and writable by
/// everyone (mode 0777 under the usual umask 022); without them it keeps the umask's mode.
#[tokio::test]
async fn test_cluster_listen_pipe_readable_writable() {
    use std::os::unix::fs::PermissionsExt;
    let mut modes = Vec::new();
    for mode in ["unix-all", "unix-http"] {
        let path = unique_socket_path("node-pipe-mode");
        let settings = worker_settings(mode).env("TEST_LISTEN", format!("unix:{}", path.display()));
        let cluster = setup_master(settings).expect("setup");
        let mut events = cluster.events();
        cluster.fork(&[]).expect("fork");
        expect_message(&mut events, "hello").await;
        expect_message(&mut events, "listened").await;
        let bits = std::fs::metadata(&path)
            .expect("the socket file")
            .permissions()
            .mode();
        modes.push(bits & 0o777);
        cluster.disconnect().await;
        let _ = std::fs::remove_file(&path);
    }
    assert_eq!(modes[0] & 0o666, 0o666, "{:o}", modes[0]);
    let others_cannot_write_by_default = modes[1] & 0o002 == 0;
    if others_cannot_write_by_default {
        assert_ne!(modes[0], modes[1], "the options changed nothing");
    }
}

/// test-cluster-worker-handle-close: round-robin connections meant for a worker whose server
/// closes are not lost. Differs (better): Node closes a connection handed to a worker whose
/// server has closed; here the worker refuses it and the master gives it to another worker.
/// A worker closes and reopens its server twice (`relisten`) under load; every request is
/// answered and it exits 0.
#[tokio::test]
async fn test_cluster_worker_handle_close() {
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .scheduling(Scheduling::RoundRobin);
    let cluster = setup_master(settings.clone()).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    let address = wait_listening(&mut events, 1).await;
    let load = cluster_tests::Load::start(address, 4);
    load.answers(200).await;
    cluster
        .setup_master(
            settings
                .env("TEST_MODE", "relisten")
                .env("TEST_LISTEN", address.to_string()),
        )
        .expect("setup relisten");
    let closing = cluster.fork(&[]).expect("fork");
    let relistened = within(10, "relistened", async {
        loop {
            let (id, msg) = next_message(&mut events, 10).await;
            if id == closing.id() && msg.kind == "relistened" {
                return msg.data;
            }
        }
    })
    .await;
    assert_eq!(relistened, format!("{address} {address}"));
    let exit = wait_event(&mut events, 15, "the closing worker's exit", |e| match e {
        Event::Exit(w, exit) if w.id() == closing.id() => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    load.answers(200).await;
    load.finish().await;
    cluster.disconnect().await;
}

/// test-cluster-net-listen-relative-path: a relative Unix path is the worker's: with the
/// worker in another directory (`Settings::cwd`), the socket file is created there, not in
/// the master's directory, and it serves. Differs: Node's path is relative because the
/// absolute one is over 100 bytes; here the master binds it, made absolute, so it must fit
/// the kernel's 107 bytes; and the file stays after the worker exits (the socket is the
/// master's).
#[tokio::test]
async fn test_cluster_net_listen_relative_path() {
    let dir = std::env::temp_dir().join(format!(
        "node-relative-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir(&dir).expect("mkdir");
    let dir = dir.canonicalize().expect("canonical");
    let name = "relative.sock";
    let settings = worker_settings("unix-http")
        .cwd(&dir)
        .env("TEST_LISTEN", format!("unix:{name}"));
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    expect_message(&mut events, "hello").await;
    expect_message(&mut events, "listened").await;
    let path = dir.join(name);
    assert!(path.exists(), "the socket is in the worker's directory");
    assert!(
        !std::env::current_dir().expect("cwd").join(name).exists(),
        "not in the master's"
    );
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: pipe\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    within(10, "the answer", stream.read_to_string(&mut response))
        .await
        .expect("read");
    assert!(response.ends_with(&worker.pid().to_string()), "{response}");
    cluster.disconnect().await;
    let _ = std::fs::remove_dir_all(&dir);
}
