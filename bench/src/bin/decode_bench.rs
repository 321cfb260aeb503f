//! Decoding benchmark (not a test): what the hostile-input checks of the binary decoder cost
//! (issue 16). Decodes the IPC benchmark's message with `Serialization::Binary` (bounded
//! strings, decode limit) and with plain bincode 2 (the decoder before the checks), in
//! alternating rounds of one run, for a 64 B and a 64 KiB payload; prints ns per decode.
//!
//! Run: `cargo run --release -p cluster-bench --bin decode_bench`

use std::hint::black_box;
use std::time::Instant;

use cluster_ipc::Serialization;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Bench {
    cmd: String,
    count: u64,
    payload: String,
}

/// Rounds per decoder, alternating; the median round is reported.
const ROUNDS: usize = 9;

fn main() {
    println!("| payload | plain bincode (ns/decode) | checked (ns/decode) | cost |");
    println!("|---|---|---|---|");
    for (label, size, per_round) in [("64 B", 64, 200_000), ("64 KiB", 64 * 1024, 5_000)] {
        let message = Bench {
            cmd: "data".into(),
            count: 7,
            payload: "x".repeat(size),
        };
        let bytes = Serialization::Binary.encode(&message).expect("encode");
        let mut plain = Vec::new();
        let mut checked = Vec::new();
        for _ in 0..ROUNDS {
            plain.push(time(per_round, || {
                let (decoded, _): (Bench, usize) =
                    bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
                        .expect("decode");
                black_box(decoded);
            }));
            checked.push(time(per_round, || {
                let decoded: Bench = Serialization::Binary.decode(&bytes).expect("decode");
                black_box(decoded);
            }));
        }
        let (plain, checked) = (median(plain), median(checked));
        println!(
            "| {label} | {plain:.1} | {checked:.1} | {:+.1}% |",
            (checked / plain - 1.0) * 100.0
        );
    }
}

/// Nanoseconds per call of `f`, over `n` calls.
fn time(n: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
