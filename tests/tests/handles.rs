//! Messages with descriptors (Node's `worker.send(message, sendHandle)`, issue 14): a worker
//! hands an accepted connection to the master, which answers on it; the master hands a Unix
//! stream to a worker; too many descriptors, or a closed channel, is an error and nothing is
//! sent.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use cluster_core::{Event, SendError, Serialization, setup_master};
use cluster_tests::{TestMsg, next_message, wait_event, wait_listening, within, worker_settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_worker_sends_an_accepted_connection_and_the_master_answers_on_it() {
    let cluster = setup_master(worker_settings("hand-back").env("TEST_LISTEN", "127.0.0.1:0"))
        .expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let address = wait_listening(&mut events, 1).await;

    for i in 0..3 {
        let mut client = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let local = client.local_addr().expect("local address");
        let message = wait_event(&mut events, 10, "the handed-back client", |e| match e {
            Event::Message(w, m) if w.id() == worker.id() => Some(m.clone()),
            _ => None,
        })
        .await;
        let msg: TestMsg = message.decode().expect("decode");
        assert_eq!(msg, TestMsg::new("client", local.to_string()));
        assert_eq!(message.fd_count(), 1);
        let mut fds = message.take_fds();
        assert!(message.take_fds().is_empty(), "handed out once");
        let stream = std::net::TcpStream::from(fds.pop().expect("the connection"));
        // The same connection: its peer is our client.
        assert_eq!(stream.peer_addr().expect("peer"), local);
        stream.set_nonblocking(true).expect("nonblocking");
        let mut stream = tokio::net::TcpStream::from_std(stream).expect("tokio stream");

        client
            .write_all(format!("question {i}").as_bytes())
            .await
            .expect("write");
        let mut question = vec![0; 10];
        within(10, "the question", stream.read_exact(&mut question))
            .await
            .expect("read");
        assert_eq!(question, format!("question {i}").as_bytes());
        stream.write_all(b"master's answer").await.expect("answer");
        stream.shutdown().await.expect("shutdown");
        drop(stream);
        let mut answer = String::new();
        within(10, "the answer", client.read_to_string(&mut answer))
            .await
            .expect("read the answer");
        assert_eq!(answer, "master's answer");
    }
    cluster.disconnect().await;
}

#[tokio::test]
async fn the_master_sends_a_unix_stream_to_a_worker_in_both_encodings() {
    for serialization in [Serialization::Json, Serialization::Binary] {
        let cluster =
            setup_master(worker_settings("serve").serialization(serialization)).expect("setup");
        let mut events = cluster.events();
        let worker = cluster.fork(&[]).expect("fork");
        next_message(&mut events, 10).await; // hello
        let (mut ours, theirs) = UnixStream::pair().expect("pair");
        worker
            .send_with(&TestMsg::new("stream", ""), &[theirs.as_fd()])
            .await
            .expect("send with a stream");
        drop(theirs);
        let (_, took) = next_message(&mut events, 10).await;
        assert_eq!(took, TestMsg::new("took", "1"));
        // The worker wrote its pid on it and closed its copy: we read it, then EOF.
        let mut written = String::new();
        ours.read_to_string(&mut written).expect("read");
        assert_eq!(written, worker.pid().to_string(), "{serialization}");
        cluster.disconnect().await;
    }
}

#[tokio::test]
async fn too_many_descriptors_or_a_closed_channel_is_an_error_and_nothing_is_sent() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello

    // Master → worker: 17 descriptors.
    let files: Vec<std::fs::File> = (0..17)
        .map(|_| std::fs::File::open("/dev/null").expect("open"))
        .collect();
    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    let err = worker
        .send_with(&TestMsg::new("stream", ""), &fds)
        .await
        .expect_err("17 descriptors");
    assert!(
        matches!(err, SendError::TooManyFds { count: 17, max: 16 }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "17 descriptors in one message (at most 16)"
    );
    // Nothing was sent: the next message is answered first, and the channel is fine.
    worker
        .send(&TestMsg::new("ping", "after"))
        .await
        .expect("send");
    let (_, echo) = next_message(&mut events, 10).await;
    assert_eq!(echo, TestMsg::new("echo", "after"));

    // Worker → master: the same limit.
    worker
        .send(&TestMsg::new("send-too-many", ""))
        .await
        .expect("send");
    let (_, report) = next_message(&mut events, 10).await;
    assert_eq!(
        report,
        TestMsg::new("too-many", "17 descriptors in one message (at most 16)")
    );
    assert!(worker.is_connected());

    // 16 is allowed.
    let (ours, theirs) = UnixStream::pair().expect("pair");
    let sixteen: Vec<_> = std::iter::once(theirs.as_fd())
        .chain(files.iter().take(15).map(|f| f.as_fd()))
        .collect();
    worker
        .send_with(&TestMsg::new("stream", ""), &sixteen)
        .await
        .expect("16 descriptors");
    let (_, took) = next_message(&mut events, 10).await;
    assert_eq!(took.kind, "took");
    assert_eq!(took.data, "16");
    drop((ours, theirs));

    // A closed channel: a clear error.
    worker
        .send(&TestMsg::new("disconnect", ""))
        .await
        .expect("send");
    wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(w, _) if w.id() == worker.id() => Some(()),
        _ => None,
    })
    .await;
    let err = worker
        .send_with(&TestMsg::new("stream", ""), &fds[..1])
        .await
        .expect_err("the worker is gone");
    assert!(matches!(err, SendError::Closed), "{err}");
    cluster.disconnect().await;
}

#[tokio::test]
async fn the_master_writing_through_a_handed_stream_reaches_the_client_after_the_worker_exits() {
    // Node's handles outlive their sender: the master's copy of a connection keeps working
    // once the worker that accepted it is gone.
    let cluster = setup_master(worker_settings("hand-back").env("TEST_LISTEN", "127.0.0.1:0"))
        .expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    let address = wait_listening(&mut events, 1).await;
    let mut client = std::net::TcpStream::connect(address).expect("connect");
    let message = wait_event(&mut events, 10, "the handed-back client", |e| match e {
        Event::Message(_, m) => Some(m.clone()),
        _ => None,
    })
    .await;
    let mut stream = std::net::TcpStream::from(message.take_fds().pop().expect("fd"));
    worker.kill(cluster_core::Signal::SIGKILL);
    wait_event(&mut events, 10, "exit", |e| match e {
        Event::Exit(..) => Some(()),
        _ => None,
    })
    .await;
    stream.write_all(b"still here").expect("write");
    drop(stream);
    let mut answer = String::new();
    client.read_to_string(&mut answer).expect("read");
    assert_eq!(answer, "still here");
    cluster.disconnect().await;
}
