//! A receiver whose descriptor table is full (`MSG_CTRUNC`): the message arrives without
//! its descriptor, the loss is counted, and the channel stays in step. Alone in its file:
//! it fills this test process's descriptor table.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use cluster_ipc::{ChannelOptions, Control, Incoming, channel, socketpair};

fn listening(address: &str) -> Control {
    Control::Listening {
        address: address.into(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_descriptor_table_costs_the_descriptor_not_the_channel() {
    let (a, b) = socketpair().expect("socketpair");
    let (tx, _) = channel(a, ChannelOptions::default()).expect("channel a");
    let (_, mut rx) = channel(b, ChannelOptions::default()).expect("channel b");
    let (_ours, theirs) = UnixStream::pair().expect("pair");
    for address in ["first", "second"] {
        tx.send_control(&listening(address), &[theirs.as_fd()])
            .await
            .expect("send");
    }
    tx.send(&"after").await.expect("send a user message");

    // Fill the table: the first message's descriptor has no room.
    let mut filler: Vec<OwnedFd> = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => filler.push(file.into()),
            Err(e) if e.raw_os_error() == Some(24) => break,
            Err(e) => panic!("open: {e}"),
        }
    }
    let first = rx.recv().await.expect("recv first");
    // Room again for the second.
    filler.truncate(filler.len().saturating_sub(8));
    let Some(Incoming::Control(control, fds)) = first else {
        panic!("expected the first control message, got {first:?}")
    };
    assert_eq!(control, listening("first"));
    assert!(fds.is_empty(), "the descriptor had no room");
    assert_eq!(rx.descriptors_lost(), 1);

    let second = rx
        .recv()
        .await
        .expect("recv second: the channel is in step");
    let Some(Incoming::Control(control, fds)) = second else {
        panic!("expected the second control message, got {second:?}")
    };
    assert_eq!(control, listening("second"));
    assert_eq!(fds.len(), 1, "its own descriptor, not someone else's");
    let Some(Incoming::User(after)) = rx.recv().await.expect("recv after") else {
        panic!("expected the user message")
    };
    assert_eq!(after.decode::<String>().expect("decode"), "after");
    assert_eq!(rx.descriptors_lost(), 1);
}
