//! `Cluster::reload` (what SIGHUP does to a plain master): replacement first, readiness-gated,
//! the dispatch's fork-on-disconnect answered with the replacement.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cluster_core::{Event, ReloadError, setup_master};
use cluster_tests::{eventually, wait_listening, within, worker_settings};

#[tokio::test]
async fn a_reload_replaces_every_worker_and_the_dispatch_does_not_grow_the_cluster() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    // The seed's dispatch: a fork on every disconnect.
    let dispatch_forks = Arc::new(AtomicUsize::new(0));
    let counted = dispatch_forks.clone();
    cluster.on_leaving(move |cluster, _| {
        if cluster.fork(&[]).is_ok() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let old = [
        cluster.fork(&[("ROLE", "a")]).expect("fork"),
        cluster.fork(&[("ROLE", "b")]).expect("fork"),
    ];
    wait_listening(&mut events, 2).await;
    let runner = tokio::spawn({
        let cluster = cluster.clone();
        async move { cluster.run().await }
    });

    let replaced = within(20, "reload", cluster.reload())
        .await
        .expect("reload");
    assert_eq!(replaced, 2);
    eventually(10, "the old workers to exit", || {
        old.iter().all(|w| w.is_dead())
    })
    .await;
    let workers = cluster.workers();
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(workers.iter().all(|w| w.id() > 2), "{workers:?}");
    let mut roles: Vec<_> = workers.iter().map(|w| w.fork_env()[0].1.clone()).collect();
    roles.sort();
    assert_eq!(
        roles,
        ["a", "b"],
        "a replacement keeps its worker's fork env"
    );
    // The dispatch's forks were answered with the replacements.
    assert_eq!(dispatch_forks.load(Ordering::SeqCst), 2);

    cluster.stop(cluster_core::StopMode::Graceful).await;
    within(10, "run", runner).await.expect("join").expect("run");
}

#[tokio::test]
async fn a_reload_whose_replacement_fails_keeps_the_old_worker_serving() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    let old = cluster.fork(&[]).expect("fork");
    wait_listening(&mut events, 1).await;
    // Workers forked from now on exit at once.
    cluster
        .setup_master(worker_settings("exit:3"))
        .expect("settings");

    let error = within(20, "reload", cluster.reload())
        .await
        .expect_err("the replacement exits");
    assert!(
        matches!(error, ReloadError::NotReady { old: 1, .. }),
        "{error}"
    );
    assert!(old.is_connected(), "the old worker must keep serving");
    // A second reload may start once the first is over.
    assert!(!matches!(
        cluster.reload().await,
        Err(ReloadError::AlreadyReloading)
    ));
    while let Ok(Some(event)) =
        tokio::time::timeout(std::time::Duration::from_millis(10), events.next()).await
    {
        if let Event::Leaving(w) = event {
            assert_ne!(w.id(), old.id(), "the old worker was disconnected");
        }
    }
    cluster.stop(cluster_core::StopMode::Graceful).await;
}
