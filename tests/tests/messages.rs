//! Messages both ways, in both encodings, up to and over the size limit; a worker that
//! writes garbage on its channel is ended while the master keeps serving.

use cluster_core::{Event, Serialization, setup_master};
use cluster_tests::{TestMsg, next_message, wait_event, worker_settings};

#[tokio::test]
async fn messages_flow_both_ways_in_both_encodings() {
    for serialization in [Serialization::Json, Serialization::Binary] {
        let cluster =
            setup_master(worker_settings("serve").serialization(serialization)).expect("setup");
        let mut events = cluster.events();
        let worker = cluster.fork(&[]).expect("fork");
        let (id, hello) = next_message(&mut events, 10).await;
        assert_eq!((id, hello.kind.as_str()), (worker.id(), "hello"));
        for i in 0..100 {
            worker
                .send(&TestMsg::new("ping", format!("{serialization}-{i}")))
                .await
                .expect("send");
        }
        for i in 0..100 {
            let (_, echo) = next_message(&mut events, 10).await;
            assert_eq!(echo, TestMsg::new("echo", format!("{serialization}-{i}")));
        }
        cluster.stop(cluster_core::StopMode::Graceful).await;
    }
}

#[tokio::test]
async fn an_8_mib_message_arrives_and_one_over_the_limit_is_refused_at_the_sender() {
    for serialization in [Serialization::Json, Serialization::Binary] {
        let cluster =
            setup_master(worker_settings("big").serialization(serialization)).expect("setup");
        let mut events = cluster.events();
        let worker = cluster.fork(&[]).expect("fork");
        next_message(&mut events, 10).await; // hello
        let (_, big) = next_message(&mut events, 20).await;
        assert_eq!(big.kind, "big");
        assert_eq!(big.data.len(), 8 * 1024 * 1024);
        let (_, refused) = next_message(&mut events, 10).await;
        assert_eq!(refused.kind, "refused");
        assert!(refused.data.contains("limit"), "{}", refused.data);

        // The master refuses to send one over the limit too, and the channel still works.
        let too_big = TestMsg::new("ping", "m".repeat(17 * 1024 * 1024));
        let err = worker.send(&too_big).await.expect_err("over the limit");
        assert!(
            matches!(err, cluster_core::SendError::TooLarge { .. }),
            "{err}"
        );
        worker
            .send(&TestMsg::new("ping", "after"))
            .await
            .expect("send");
        let (_, echo) = next_message(&mut events, 10).await;
        assert_eq!(echo, TestMsg::new("echo", "after"));
        assert!(worker.is_connected());
        cluster.stop(cluster_core::StopMode::Graceful).await;
    }
}

#[tokio::test]
async fn a_worker_writing_garbage_is_ended_and_the_master_keeps_serving() {
    let cluster = setup_master(worker_settings("serve")).expect("setup");
    let mut events = cluster.events();
    let good = cluster.fork(&[]).expect("fork");
    next_message(&mut events, 10).await;

    cluster
        .setup_master(worker_settings("garbage"))
        .expect("setup");
    let bad = cluster.fork(&[]).expect("fork garbage");
    let exit = wait_event(&mut events, 10, "the garbage worker's exit", |e| match e {
        Event::Exit(w, exit) if w.id() == bad.id() => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(exit.signal, Some(cluster_core::Signal::SIGKILL), "{exit}");

    // The master is unharmed: the good worker still answers and new workers still start.
    good.send(&TestMsg::new("ping", "still here"))
        .await
        .expect("send");
    let (_, echo) = next_message(&mut events, 10).await;
    assert_eq!(echo, TestMsg::new("echo", "still here"));
    cluster
        .setup_master(worker_settings("serve"))
        .expect("setup");
    let another = cluster.fork(&[]).expect("fork after garbage");
    let (id, _) = next_message(&mut events, 10).await;
    assert_eq!(id, another.id());
    cluster.stop(cluster_core::StopMode::Graceful).await;
}
