//! The pidfile: written at dispatch, removed at exit when it still holds the master's pid.

use cluster_core::pm::{GroupOptions, Master, MasterOptions};

#[tokio::test]
async fn the_pidfile_is_written_at_dispatch_and_removed_at_exit() {
    let path = std::env::temp_dir().join(format!("cluster-test-{}.pid", std::process::id()));
    let master = Master::with_options(MasterOptions::new().pidfile(path.clone()));
    master
        .register(
            "web",
            GroupOptions::new()
                .listen("127.0.0.1:0".parse().expect("addr"))
                .children(1)
                .exec(cluster_tests::graceful_worker_exe()),
        )
        .expect("register");
    master.dispatch();
    let written = std::fs::read_to_string(&path).expect("pidfile");
    assert_eq!(written.trim(), std::process::id().to_string());
    let looping = master.clone();
    let run = tokio::spawn(async move { looping.run().await });
    master.stop(cluster_core::StopMode::Graceful).await;
    cluster_tests::within(10, "run to end", run)
        .await
        .expect("join")
        .expect("run");
    assert!(!path.exists(), "the pidfile is removed");
}
