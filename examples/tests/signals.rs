//! Every signal an operator may send the seed masters, under load: the master stays up, no
//! request fails, SIGHUP replaces every worker and SIGTERM still stops cleanly
//! (docs/SIGNALS.md).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use cluster_core::Signal;
use cluster_tests::{Load, catches_signal, children_of, within};
use support::{Console, free_port, get, kill};

/// Signals whose default action would end the master, that mean nothing to it but a log
/// line (or, for USR1, a pass-on to the workers).
const HARMLESS: &[&str] = &[
    "USR1", "WINCH", "ALRM", "VTALRM", "PROF", "IO", "PWR", "XCPU", "XFSZ", "STKFLT",
];

fn pid_in(line: &str, marker: &str) -> u32 {
    line.split(marker)
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse().ok())
        })
        .unwrap_or_else(|| panic!("no pid after {marker:?} in {line:?}"))
}

/// The pid answering a `GET /` on a new connection.
async fn answering_pid(port: u16) -> u32 {
    let response = get(port, "/").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    pid_in(&response, "\"pid\":")
}

/// Sends each harmless signal under load and checks the master is still there.
async fn send_harmless_signals(master: &mut Console, load: &Load) {
    let pid = master.process.id().expect("pid");
    for signal in HARMLESS {
        kill(pid, signal);
        load.answers(50).await;
        assert!(
            master.process.try_wait().expect("try_wait").is_none(),
            "the master died of SIG{signal}"
        );
    }
}

/// SIGTERM: the master exits 0 within 10 s.
async fn stop(mut master: Console) {
    kill(master.process.id().expect("pid"), "TERM");
    let status = within(10, "master exit", master.process.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{:?}", master.seen());
}

#[tokio::test]
async fn connect_with_cluster_survives_every_signal_and_reloads_on_hup_under_load() {
    let port = free_port();
    let mut master = Console::start(
        env!("CARGO_BIN_EXE_connect_with_cluster"),
        &[
            ("PORT", port.to_string()),
            ("REST_PORT", free_port().to_string()),
        ],
    );
    master.wait_for_count("rest api start listen on", 2).await;
    let old: BTreeSet<u32> = master
        .seen()
        .iter()
        .filter(|l| l.contains("rest api start listen on"))
        .map(|l| pid_in(l, "[worker:"))
        .collect();
    let load = Load::start(SocketAddr::from(([127, 0, 0, 1], port)), 4);
    load.answers(200).await;

    send_harmless_signals(&mut master, &load).await;

    kill(master.process.id().expect("pid"), "HUP");
    for pid in &old {
        master
            .wait_for_count(&format!("wroker:{pid} exit!"), 1)
            .await;
    }
    load.answers(200).await;
    load.finish().await;
    // The dispatch forks on every disconnect; the reload's replacement was returned to it,
    // so the cluster is still two workers, none of them old.
    let now: BTreeSet<u32> = master
        .seen()
        .iter()
        .filter(|l| l.contains("disconnect! new worker:"))
        .map(|l| pid_in(l, "new worker:"))
        .collect();
    assert_eq!(now.len(), 2, "{:?}", master.seen());
    assert!(now.is_disjoint(&old));
    for _ in 0..10 {
        let pid = answering_pid(port).await;
        assert!(now.contains(&pid), "{pid} answered; workers are {now:?}");
    }
    let forks = master
        .seen()
        .iter()
        .filter(|l| l.contains("start listen on") && l.contains("web server"))
        .count();
    assert_eq!(forks, 4, "two workers, then two replacements");
    stop(master).await;
}

#[tokio::test]
async fn the_pm_demo_survives_every_signal_and_reloads_on_hup_under_load() {
    let port = free_port();
    let mut master = Console::start(
        env!("CARGO_BIN_EXE_pm_graceful_exit"),
        &[("PORT", port.to_string())],
    );
    let master_pid = master.process.id().expect("pid");
    master
        .wait_for_count(&format!("[master:{master_pid}] new web:worker:"), 2)
        .await;
    let old: BTreeSet<u32> = master
        .seen()
        .iter()
        .filter(|l| l.contains("new web:worker:"))
        .map(|l| pid_in(l, "web:worker:"))
        .collect();
    let load = Load::start(SocketAddr::from(([127, 0, 0, 1], port)), 4);
    load.answers(200).await;

    send_harmless_signals(&mut master, &load).await;

    kill(master_pid, "HUP");
    for pid in &old {
        master
            .wait_for_count(&format!("web:worker:{pid} quit"), 1)
            .await;
    }
    load.answers(200).await;
    load.finish().await;
    for _ in 0..10 {
        let pid = answering_pid(port).await;
        assert!(!old.contains(&pid), "old worker {pid} still answers");
    }
    stop(master).await;
}

#[tokio::test]
async fn the_handlers_are_in_place_before_the_first_fork_and_an_early_sigterm_exits_0() {
    for attempt in 0..10u64 {
        let port = free_port();
        let mut master = Console::start(
            env!("CARGO_BIN_EXE_connect_with_cluster"),
            &[
                ("PORT", port.to_string()),
                ("REST_PORT", free_port().to_string()),
            ],
        );
        let pid = master.process.id().expect("pid");
        // Watch the master start: by the time its first worker exists, the signals must be
        // caught, or a TERM or HUP then would end it (and every worker) with 143 or 129.
        let signals = [
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGUSR2,
            Signal::SIGALRM,
        ];
        within(10, "the master's handlers", async {
            loop {
                let forked = !children_of(pid).is_empty();
                let caught = signals.iter().all(|s| catches_signal(pid, s.as_raw()));
                assert!(caught || !forked, "a worker was forked before the handlers");
                if caught {
                    return;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
        .await;
        // From 0 to 45 ms after the handlers: while the workers are being forked and start.
        tokio::time::sleep(Duration::from_millis(attempt * 5)).await;
        kill(pid, "TERM");
        let status = within(10, "master exit", master.process.wait())
            .await
            .expect("wait");
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {:?}",
            master.seen()
        );
    }
}
