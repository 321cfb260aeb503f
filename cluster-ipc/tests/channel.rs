//! The channel over a real socketpair, in one process.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use cluster_ipc::{
    ChannelOptions, Control, Incoming, RecvError, SendError, Serialization, channel, socketpair,
};

fn pair(options: ChannelOptions) -> (cluster_ipc::Sender, cluster_ipc::Receiver) {
    let (a, b) = socketpair().expect("socketpair");
    let (tx, _) = channel(a, options).expect("channel a");
    let (_, rx) = channel(b, options).expect("channel b");
    // Keep the unused halves' sockets open through the Arc in the used halves.
    (tx, rx)
}

async fn next_user(rx: &mut cluster_ipc::Receiver) -> cluster_ipc::Message {
    match rx.recv().await.expect("recv") {
        Some(Incoming::User(m)) => m,
        other => panic!("expected a user message, got {other:?}"),
    }
}

#[tokio::test]
async fn user_messages_keep_boundaries_and_order_in_both_encodings() {
    for serialization in [Serialization::Json, Serialization::Binary] {
        let options = ChannelOptions {
            serialization,
            ..Default::default()
        };
        let (tx, mut rx) = pair(options);
        let writer = tokio::spawn(async move {
            for i in 0..10_000u32 {
                tx.send(&(i, format!("msg-{i}"))).await.expect("send");
            }
        });
        for i in 0..10_000u32 {
            let (n, text): (u32, String) = next_user(&mut rx).await.decode().expect("decode");
            assert_eq!((n, text), (i, format!("msg-{i}")), "{serialization}");
        }
        writer.await.expect("writer");
    }
}

#[tokio::test]
async fn an_8_mib_message_arrives_whole() {
    for serialization in [Serialization::Json, Serialization::Binary] {
        let (tx, mut rx) = pair(ChannelOptions {
            serialization,
            ..Default::default()
        });
        let big = "x".repeat(8 * 1024 * 1024);
        let sent = big.clone();
        let writer = tokio::spawn(async move { tx.send(&sent).await });
        let got: String = next_user(&mut rx).await.decode().expect("decode");
        writer.await.expect("join").expect("send");
        assert_eq!(got.len(), big.len());
        assert!(got == big);
    }
}

#[tokio::test]
async fn the_sender_refuses_a_message_over_the_limit_and_the_channel_stays_usable() {
    let (tx, mut rx) = pair(ChannelOptions {
        max_message_bytes: 1024,
        ..Default::default()
    });
    let err = tx.send(&"y".repeat(2000)).await.unwrap_err();
    assert!(
        matches!(err, SendError::TooLarge { max: 1024, .. }),
        "{err}"
    );
    tx.send(&"small").await.expect("send after refusal");
    let got: String = next_user(&mut rx).await.decode().expect("decode");
    assert_eq!(got, "small");
}

#[tokio::test]
async fn control_messages_carry_descriptors() {
    let (tx, mut rx) = pair(ChannelOptions::default());
    let (mut ours, theirs) = UnixStream::pair().expect("pair");
    tx.send_control(
        &Control::Listening {
            address: "x".into(),
        },
        &[theirs.as_fd()],
    )
    .await
    .expect("send");
    drop(theirs);
    let Some(Incoming::Control(Control::Listening { address }, mut fds)) =
        rx.recv().await.expect("recv")
    else {
        panic!("expected a control message")
    };
    assert_eq!(address, "x");
    assert_eq!(fds.len(), 1);
    // The received descriptor is the same socket: what we write comes out of it.
    let mut received = UnixStream::from(fds.pop().expect("fd"));
    ours.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut received, &mut buf).expect("read");
    assert_eq!(&buf, b"ping");
}

async fn receive_garbage(bytes: &[u8], options: ChannelOptions) -> RecvError {
    let (a, b): (OwnedFd, OwnedFd) = socketpair().expect("socketpair");
    let mut raw = UnixStream::from(a);
    raw.write_all(bytes).expect("write");
    let (_, mut rx) = channel(b, options).expect("channel");
    rx.recv().await.expect_err("garbage must be refused")
}

#[tokio::test]
async fn garbage_and_oversized_frames_end_the_receiver_with_a_reason() {
    let err = receive_garbage(b"GET / HTTP/1.1\r\n\r\n", ChannelOptions::default()).await;
    assert!(matches!(err, RecvError::Malformed(_)), "{err}");

    let mut header = vec![0xC1, 1, 0, 0];
    header.extend_from_slice(&(1u32 << 30).to_le_bytes());
    let err = receive_garbage(&header, ChannelOptions::default()).await;
    assert!(matches!(err, RecvError::TooLarge { .. }), "{err}");

    let mut frame = vec![0xC1, 1, 0, 0];
    frame.extend_from_slice(&3u32.to_le_bytes());
    frame.extend_from_slice(b"{{{");
    let err = receive_garbage(&frame, ChannelOptions::default()).await;
    assert!(matches!(err, RecvError::Malformed(_)), "{err}");
}

#[tokio::test]
async fn end_of_stream_is_none() {
    let (a, b) = socketpair().expect("socketpair");
    let (_, mut rx) = channel(b, ChannelOptions::default()).expect("channel");
    drop(a);
    assert!(rx.recv().await.expect("recv").is_none());
}

#[tokio::test]
async fn a_panic_hand_over_carries_its_message_and_location_in_both_encodings() {
    for serialization in [Serialization::Json, Serialization::Binary] {
        let (tx, mut rx) = pair(ChannelOptions {
            serialization,
            ..ChannelOptions::default()
        });
        let sent = Control::HandOverPanic {
            message: "boom".into(),
            location: Some("src/app.rs:3:5".into()),
        };
        tx.send_control(&sent, &[]).await.expect("send");
        // The variants before it keep their encoding: a plain hand-over still decodes.
        tx.send_control(&Control::HandOver, &[])
            .await
            .expect("send");
        let Some(Incoming::Control(got, _)) = rx.recv().await.expect("recv") else {
            panic!("expected a control message")
        };
        assert_eq!(got, sent, "{serialization:?}");
        let Some(Incoming::Control(got, _)) = rx.recv().await.expect("recv") else {
            panic!("expected a control message")
        };
        assert_eq!(got, Control::HandOver, "{serialization:?}");
    }
}

/// True once the peer of `stream` is closed everywhere: a read returns end-of-stream.
fn peer_closed(stream: &UnixStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 1];
    matches!(std::io::Read::read(&mut &*stream, &mut buf), Ok(0))
}

#[tokio::test]
async fn user_messages_carry_descriptors_handed_out_once() {
    for serialization in [Serialization::Json, Serialization::Binary] {
        let options = ChannelOptions {
            serialization,
            ..Default::default()
        };
        let (tx, mut rx) = pair(options);
        let (mut ours, theirs) = UnixStream::pair().expect("pair");
        let null = std::fs::File::open("/dev/null").expect("open");
        tx.send_with(&("two", 2u32), &[theirs.as_fd(), null.as_fd()])
            .await
            .expect("send");
        drop(theirs);
        let message = next_user(&mut rx).await;
        assert_eq!(message.decode::<(String, u32)>().expect("decode").1, 2);
        assert_eq!(message.fd_count(), 2);
        let clone = message.clone();
        let mut fds = clone.take_fds();
        assert_eq!(fds.len(), 2, "in the order sent");
        assert!(
            message.take_fds().is_empty(),
            "the first caller takes them all"
        );
        assert_eq!(message.fd_count(), 0);
        drop(fds.pop()); // /dev/null
        let mut received = UnixStream::from(fds.pop().expect("stream"));
        ours.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        std::io::Read::read_exact(&mut received, &mut buf).expect("read");
        assert_eq!(&buf, b"ping");
        // Plain messages carry none.
        tx.send(&("none", 0u32)).await.expect("send");
        assert!(next_user(&mut rx).await.take_fds().is_empty());
    }
}

#[tokio::test]
async fn descriptors_nobody_takes_are_closed_with_the_last_clone() {
    let (tx, mut rx) = pair(ChannelOptions::default());
    let (ours, theirs) = UnixStream::pair().expect("pair");
    tx.send_with(&"untaken", &[theirs.as_fd()])
        .await
        .expect("send");
    drop(theirs);
    let message = next_user(&mut rx).await;
    let clone = message.clone();
    drop(message);
    assert!(!peer_closed(&ours), "a clone still holds it");
    drop(clone);
    assert!(peer_closed(&ours), "the received descriptor leaked");
}

#[tokio::test]
async fn more_than_16_descriptors_are_refused_and_nothing_is_sent() {
    let (tx, mut rx) = pair(ChannelOptions::default());
    let files: Vec<std::fs::File> = (0..17)
        .map(|_| std::fs::File::open("/dev/null").expect("open"))
        .collect();
    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    let err = tx.send_with(&"many", &fds).await.expect_err("17");
    assert!(
        matches!(err, SendError::TooManyFds { count: 17, max: 16 }),
        "{err}"
    );
    tx.send_with(&"sixteen", &fds[..16]).await.expect("16");
    let message = next_user(&mut rx).await;
    assert_eq!(message.decode::<String>().expect("decode"), "sixteen");
    assert_eq!(message.take_fds().len(), 16);
}
