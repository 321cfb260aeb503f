//! IPC benchmark (not a test): messages per second one way and round-trip latency between
//! a master and one worker, for both encodings and two payload sizes, plus the idle RSS of
//! master and worker. The same binary is master and worker.
//!
//! Run: `cargo run --release -p cluster-bench --bin ipc_bench`

use std::time::{Duration, Instant};

use cluster_core::{Event, EventStream, Serialization, Settings, Worker, setup_master};
use cluster_tests::rss_kib_of;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Bench {
    /// `blast` (send `count` back), `data` (one of a blast), `ping`/`pong`.
    cmd: String,
    count: u64,
    payload: String,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if cluster_worker::is_worker() {
        runtime.block_on(worker());
    } else {
        runtime.block_on(master());
    }
}

async fn worker() {
    let worker = cluster_worker::Worker::current().expect("worker");
    while let Some(message) = worker.recv().await {
        let msg: Bench = message.decode().expect("decode");
        match msg.cmd.as_str() {
            "ping" => worker
                .send(&Bench {
                    cmd: "pong".into(),
                    ..msg
                })
                .await
                .expect("pong"),
            "blast" => {
                let data = Bench {
                    cmd: "data".into(),
                    count: 0,
                    payload: msg.payload,
                };
                for _ in 0..msg.count {
                    worker.send(&data).await.expect("data");
                }
            }
            _ => break,
        }
    }
}

async fn next_message(events: &mut EventStream) -> cluster_core::Message {
    loop {
        match events.next().await.expect("events") {
            Event::Message(_, message) => return message,
            Event::Exit(w, exit) => panic!("worker {} exited: {exit}", w.pid()),
            _ => {}
        }
    }
}

async fn one_way(worker: &Worker, events: &mut EventStream, size: usize, count: u64) -> f64 {
    let payload = "x".repeat(size);
    worker
        .send(&Bench {
            cmd: "blast".into(),
            count,
            payload,
        })
        .await
        .expect("blast");
    let first = next_message(events).await;
    drop(first);
    let start = Instant::now();
    for _ in 1..count {
        next_message(events).await;
    }
    (count - 1) as f64 / start.elapsed().as_secs_f64()
}

async fn round_trip(
    worker: &Worker,
    events: &mut EventStream,
    size: usize,
    count: usize,
) -> (Duration, Duration) {
    let payload = "x".repeat(size);
    let mut samples = Vec::with_capacity(count);
    for i in 0..count + 100 {
        let ping = Bench {
            cmd: "ping".into(),
            count: i as u64,
            payload: payload.clone(),
        };
        let start = Instant::now();
        worker.send(&ping).await.expect("ping");
        next_message(events).await;
        if i >= 100 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

async fn master() {
    println!("| encoding | payload | one way (msg/s) | round trip p50 | round trip p99 |");
    println!("|---|---|---|---|---|");
    let mut idle = None;
    for serialization in [Serialization::Json, Serialization::Binary] {
        let cluster = setup_master(Settings::new().serialization(serialization)).expect("setup");
        let mut events = cluster.events();
        let worker = cluster.fork(&[]).expect("fork");
        loop {
            if let Event::Online(_) = events.next().await.expect("events") {
                break;
            }
        }
        if idle.is_none() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            idle = Some((rss_kib_of(std::process::id()), rss_kib_of(worker.pid())));
        }
        for (size, label, count, rtt_count) in [
            (64, "64 B", 500_000, 20_000),
            (64 * 1024, "64 KiB", 20_000, 2_000),
        ] {
            let rate = one_way(&worker, &mut events, size, count).await;
            let (p50, p99) = round_trip(&worker, &mut events, size, rtt_count).await;
            println!(
                "| {serialization} | {label} | {rate:.0} | {:.1} µs | {:.1} µs |",
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6
            );
        }
        cluster.stop(cluster_core::StopMode::Graceful).await;
    }
    if let Some((master, worker)) = idle {
        println!();
        println!(
            "idle RSS: master {:.1} MiB, worker {:.1} MiB",
            master as f64 / 1024.0,
            worker as f64 / 1024.0
        );
    }
}
