//! Node's own tests of handles in messages (`worker.send(message, sendHandle)`), ported:
//! each test is named after the Node file and asserts the same observable behaviour (see
//! `docs/NODE_COMPATIBILITY.md`). Node's handle is a descriptor here, taken from the
//! received message with `Message::take_fds`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;

use cluster_core::{Cluster, Event, Message, Worker, setup_master};
use cluster_tests::{TestMsg, next_message, wait_event, wait_listening, worker_settings};

/// The next user message of `worker`, with its descriptors.
async fn next_raw(events: &mut cluster_core::EventStream, worker: &Worker) -> Message {
    let id = worker.id();
    wait_event(events, 10, "a message", |e| match e {
        Event::Message(w, m) if w.id() == id => Some(m.clone()),
        _ => None,
    })
    .await
}

/// Asks `worker` to disconnect; asserts it exits with code 0 and no signal, as Node's
/// `worker.on('exit')` checks do.
async fn disconnect_cleanly(
    cluster: &Cluster,
    events: &mut cluster_core::EventStream,
    worker: &Worker,
) {
    worker
        .send(&TestMsg::new("disconnect", ""))
        .await
        .expect("send");
    let exit = wait_event(events, 10, "exit", |e| match e {
        Event::Exit(w, exit) if w.id() == worker.id() => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!((exit.code, exit.signal), (Some(0), None), "{exit}");
    assert!(worker.exited_after_disconnect());
    cluster.disconnect().await;
}

/// test-cluster-net-send: a worker sends a connected socket to its parent, which reads what
/// the other end writes until its end.
#[tokio::test]
async fn test_cluster_net_send() {
    let cluster = setup_master(worker_settings("hand-back").env("TEST_LISTEN", "127.0.0.1:0"))
        .expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let address = wait_listening(&mut events, 1).await;
    let mut client = TcpStream::connect(address).expect("connect");
    let message = next_raw(&mut events, &worker).await;
    assert_eq!(message.decode::<TestMsg>().expect("decode").kind, "client");
    let mut handle = TcpStream::from(message.take_fds().pop().expect("a handle"));
    client.write_all(b"hello").expect("write");
    client.shutdown(std::net::Shutdown::Write).expect("end");
    let mut result = String::new();
    handle.read_to_string(&mut result).expect("read to the end");
    assert_eq!(result, "hello");
    disconnect_cleanly(&cluster, &mut events, &worker).await;
}

/// test-cluster-send-deadlock: the primary sends each connection its server accepts to the
/// worker, which sends it straight back; two at once, no deadlock, and the worker exits 0.
#[tokio::test]
async fn test_cluster_send_deadlock() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("address").port();
    let mut clients: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    for _ in 0..2 {
        let (socket, _) = server.accept().expect("accept");
        worker
            .send_with(&TestMsg::new("reflect", "handle"), &[socket.as_fd()])
            .await
            .expect("send the handle");
    }
    let mut replies = Vec::new();
    for _ in 0..2 {
        let reply = next_raw(&mut events, &worker).await;
        assert_eq!(
            reply.decode::<TestMsg>().expect("decode"),
            TestMsg::new("reflected", "handle")
        );
        replies.push(TcpStream::from(
            reply.take_fds().pop().expect("the handle back"),
        ));
    }
    // Each handle that came back is one of the two connections.
    for (n, mut reply) in replies.into_iter().enumerate() {
        reply
            .write_all(format!("reply {n}").as_bytes())
            .expect("write");
    }
    let mut heard: Vec<String> = clients
        .iter_mut()
        .map(|c| {
            let mut buf = [0u8; 7];
            c.read_exact(&mut buf).expect("read");
            String::from_utf8_lossy(&buf).into_owned()
        })
        .collect();
    heard.sort();
    assert_eq!(heard, ["reply 0", "reply 1"]);
    disconnect_cleanly(&cluster, &mut events, &worker).await;
}

/// test-cluster-send-handle-twice: a worker sends the same socket twice; both arrive, and
/// the worker exits 0.
#[tokio::test]
async fn test_cluster_send_handle_twice() {
    let cluster =
        setup_master(worker_settings("hand-back-twice").env("TEST_LISTEN", "127.0.0.1:0"))
            .expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let address = wait_listening(&mut events, 1).await;
    let mut client = TcpStream::connect(address).expect("connect");
    let local = client.local_addr().expect("local");
    let first = next_raw(&mut events, &worker).await;
    let second = next_raw(&mut events, &worker).await;
    for message in [&first, &second] {
        let handle = TcpStream::from(message.take_fds().pop().expect("a handle"));
        assert_eq!(handle.peer_addr().expect("peer"), local);
    }
    drop((first, second));
    // Every copy is closed: the client sees the end.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("read");
    assert!(rest.is_empty());
    disconnect_cleanly(&cluster, &mut events, &worker).await;
}

/// test-cluster-send-handle-large-payload (sequential): an 800,004-byte message with a socket
/// handle, primary → worker and back.
#[tokio::test]
async fn test_cluster_send_handle_large_payload() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let socket = TcpStream::connect(server.local_addr().expect("address")).expect("connect");
    let payload = "a".repeat(800_004);
    worker
        .send_with(&TestMsg::new("reflect", payload.clone()), &[socket.as_fd()])
        .await
        .expect("send");
    let reply = next_raw(&mut events, &worker).await;
    assert_eq!(
        reply.decode::<TestMsg>().expect("decode"),
        TestMsg::new("reflected", payload)
    );
    let handle = TcpStream::from(reply.take_fds().pop().expect("a handle"));
    assert_eq!(
        handle.local_addr().expect("local"),
        socket.local_addr().expect("local")
    );
    disconnect_cleanly(&cluster, &mut events, &worker).await;
}

/// test-net-listen-handle-in-cluster-1: the primary sends a listening server to a worker,
/// which can serve on it (Node's worker only checks it got a `net.Server`; this one answers a
/// connection on it).
#[tokio::test]
async fn test_net_listen_handle_in_cluster_1() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    wait_event(&mut events, 10, "online", |e| {
        matches!(e, Event::Online(_)).then_some(())
    })
    .await;
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = server.local_addr().expect("address");
    worker
        .send_with(&TestMsg::new("listener", ""), &[server.as_fd()])
        .await
        .expect("send the server");
    let (status, body) = cluster_tests::http_get(address, "/").await.expect("GET");
    assert_eq!((status, body), (200, worker.pid().to_string()));
    loop {
        let (_, msg) = next_message(&mut events, 10).await;
        if msg.kind == "served" {
            break;
        }
    }
    disconnect_cleanly(&cluster, &mut events, &worker).await;
}

/// test-cluster-send-socket-to-worker-http-server: the primary's own server accepts a
/// connection and sends it to a worker, which serves it with its HTTP server; the worker
/// exits 0.
#[tokio::test]
async fn test_cluster_send_socket_to_worker_http_server() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(server.local_addr().expect("address")).expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (socket, _) = server.accept().expect("accept");
    worker
        .send_with(&TestMsg::new("connection", ""), &[socket.as_fd()])
        .await
        .expect("send the socket");
    drop(socket);
    let mut response = String::new();
    client.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.ends_with(&format!("\r\n\r\n{}", worker.pid())),
        "{response}"
    );
    disconnect_cleanly(&cluster, &mut events, &worker).await;
}
