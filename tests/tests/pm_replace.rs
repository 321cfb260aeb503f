//! pm groups and the master's own replacements: hung workers are replaced at once and never
//! count as fatal; `max_age` recycles a group one worker at a time under load, failing no
//! request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use cluster_core::pm::{GroupEvent, GroupOptions, Master, RestartPolicy};
use cluster_core::{ReplaceReason, Settings, Signal, StopMode};
use cluster_tests::{Load, http_get, watch_worker_exe, within};
use tokio::sync::mpsc::UnboundedReceiver;

fn start(options: GroupOptions) -> (Master, UnboundedReceiver<GroupEvent>) {
    let master = Master::new();
    let events = master.events();
    let looping = master.clone();
    tokio::spawn(async move { looping.run().await });
    master
        .register("web", options.exec(watch_worker_exe()))
        .expect("register");
    master.dispatch();
    (master, events)
}

fn options(children: usize, settings: Settings) -> GroupOptions {
    GroupOptions::new()
        .listen("127.0.0.1:0".parse().expect("addr"))
        .children(children)
        .settings(settings.stop_timeout(Duration::from_secs(10)))
}

/// The next event `pick` accepts, within `secs`; a `GiveUp` fails the test.
async fn next<T>(
    events: &mut UnboundedReceiver<GroupEvent>,
    secs: u64,
    what: &str,
    mut pick: impl FnMut(&GroupEvent) -> Option<T>,
) -> T {
    within(secs, what, async {
        loop {
            let event = events.recv().await.expect("event stream");
            assert!(
                !matches!(event, GroupEvent::GiveUp { .. }),
                "gave up: {event:?}"
            );
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
}

async fn next_ready(events: &mut UnboundedReceiver<GroupEvent>) -> (u32, SocketAddr) {
    next(events, 10, "ready", |e| match e {
        GroupEvent::Ready { worker, .. } => Some((worker.pid(), worker.addresses()[0])),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn hung_workers_are_replaced_at_once_and_never_count_as_fatal() {
    // Two fatal exits would give the group up; three aborted workers must not.
    let policy = RestartPolicy {
        max_fatal_restart: 2,
        ..RestartPolicy::default()
    };
    let settings = Settings::new().heartbeat_timeout(Some(Duration::from_secs(1)));
    let (master, mut events) = start(options(1, settings).policy(policy));
    let (mut pid, address) = next_ready(&mut events).await;
    for _ in 0..3 {
        let blocked = tokio::spawn(http_get(address, "/block"));
        let hung = next(&mut events, 10, "replacing", |e| match e {
            GroupEvent::Replacing { worker, reason, .. } => Some((worker.pid(), *reason)),
            _ => None,
        })
        .await;
        assert!(matches!(hung, (p, ReplaceReason::Unresponsive { .. }) if p == pid));
        let exit = next(&mut events, 10, "the hung worker's exit", |e| match e {
            GroupEvent::Quit { worker, exit, .. } if worker.pid() == pid => Some(*exit),
            _ => None,
        })
        .await;
        assert_eq!(exit.signal, Some(Signal::SIGABRT));
        assert!(within(5, "blocked", blocked).await.expect("task").is_err());
        // The replacement was forked when the hang was found; it serves.
        let workers = master.workers("web");
        assert_eq!(workers.len(), 1, "{workers:?}");
        pid = workers[0].pid();
        let (status, body) = http_get(address, "/").await.expect("GET /");
        assert_eq!((status, body), (200, pid.to_string()));
    }
    master.stop(StopMode::Graceful).await;
}

#[tokio::test]
async fn max_age_recycles_a_group_one_worker_at_a_time_under_load() {
    let settings = Settings::new().max_age(Duration::from_millis(1500));
    let (master, mut events) = start(options(2, settings));
    let (_, address) = next_ready(&mut events).await;
    let load = Load::start(address, 4);
    load.answers(100).await;
    let mut recycling: HashSet<u32> = HashSet::new();
    let mut exited = 0;
    while exited < 4 {
        let event = next(&mut events, 20, "recycling", |e| match e {
            GroupEvent::Replacing { .. } | GroupEvent::Quit { .. } => Some(e.clone()),
            _ => None,
        })
        .await;
        match event {
            GroupEvent::Replacing { worker, reason, .. } => {
                assert!(matches!(reason, ReplaceReason::MaxAge { .. }), "{reason}");
                assert!(recycling.insert(worker.pid()));
                assert_eq!(recycling.len(), 1, "one worker at a time");
            }
            GroupEvent::Quit { worker, exit, .. } => {
                assert!(
                    recycling.remove(&worker.pid()),
                    "only recycled workers exit"
                );
                assert_eq!(exit.code, Some(0), "{exit}");
                exited += 1;
            }
            _ => unreachable!(),
        }
    }
    load.finish().await;
    master.stop(StopMode::Graceful).await;
}
