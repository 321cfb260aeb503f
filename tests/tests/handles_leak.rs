//! Descriptors that came with messages nobody took are closed (issue 14): the master's
//! descriptor count is the same before and after 100 messages with 3 descriptors each.
//! Alone in its test binary, so no other test opens descriptors meanwhile.

use cluster_core::{Event, setup_master};
use cluster_tests::{TestMsg, next_message, open_fds, wait_event, worker_settings};

#[tokio::test]
async fn descriptors_of_messages_nobody_takes_are_closed() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let worker = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await; // hello
    // A first round opens what the runtime keeps (buffers, epoll registrations).
    worker
        .send(&TestMsg::new("send-fds:1:3", ""))
        .await
        .expect("send");
    next_message(&mut events, 10).await;
    next_message(&mut events, 10).await; // sent
    let before = open_fds();

    worker
        .send(&TestMsg::new("send-fds:100:3", ""))
        .await
        .expect("send");
    let mut carried = 0;
    loop {
        let (kind, count) = wait_event(&mut events, 10, "a message", |e| match e {
            Event::Message(_, m) => {
                let msg: TestMsg = m.decode().expect("decode");
                Some((msg.kind, m.fd_count()))
            }
            _ => None,
        })
        .await;
        if kind == "sent" {
            break;
        }
        carried += count;
    }
    // Every message held its descriptors until it was dropped.
    assert_eq!(carried, 300);
    assert_eq!(open_fds(), before, "descriptors leaked");
    cluster.disconnect().await;
}
