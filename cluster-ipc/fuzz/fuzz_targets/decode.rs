//! Feeds arbitrary bytes through the channel's decode path, in both encodings, and reads
//! every user message as the master's code might. Run with `cargo +nightly fuzz run decode`
//! in `cluster-ipc/`. A crash, an abort or an allocation over libFuzzer's `-malloc_limit_mb`
//! (default: its `-rss_limit_mb`, 2048) is a finding.
#![no_main]

use cluster_ipc::fuzzing::decode_frames;
use cluster_ipc::{ChannelOptions, Incoming, Serialization};
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct UserMessage {
    kind: String,
    data: Vec<u8>,
    tags: Vec<(u128, Option<String>)>,
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how many descriptors "arrived" with the bytes.
    let Some((&fds, frames)) = data.split_first() else {
        return;
    };
    for serialization in [Serialization::Json, Serialization::Binary] {
        let options = ChannelOptions {
            serialization,
            max_message_bytes: 1 << 20,
        };
        if let Ok(messages) = decode_frames(frames, usize::from(fds % 20), options) {
            for message in messages {
                if let Incoming::User(message) = message {
                    let _ = message.decode::<UserMessage>();
                    let _ = message.decode::<String>();
                }
            }
        }
    }
});
