//! What a hostile or broken peer can write on a channel: every bad frame is an error, none
//! panics, aborts, or makes the receiver allocate more than its message size limit.
//!
//! A counting global allocator records the largest single allocation of this test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use arbitrary::Unstructured;
use cluster_ipc::fuzzing::decode_frames;
use cluster_ipc::{ChannelOptions, Control, Grant, Incoming, Recipient, RecvError, Serialization};
use serde::{Deserialize, Serialize};

/// The system allocator, recording the largest block asked for.
struct Counting;

static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is
// an atomic maximum, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const HEADER_LEN: usize = 8;
const CONTROL: u8 = 0;
const USER: u8 = 1;

/// A frame as `docs/ARCHITECTURE.md` describes it: magic, kind, descriptor count, 0,
/// payload length (u32 LE), payload.
fn frame(kind: u8, fds: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0xC1, kind, fds, 0];
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The frame of issue 16: a binary `ListenRequest { seq: 7, address }` whose address claims
/// 0x2999_9999_9999_9999 (3·10¹⁸) bytes: `01` the variant, `07` the seq, `fd` a u64 follows.
fn listen_request_claiming(length: u64) -> Vec<u8> {
    let mut payload = vec![0x01, 0x07, 0xfd];
    payload.extend_from_slice(&length.to_le_bytes());
    frame(CONTROL, 0, &payload)
}

/// A user message of the kind the tests' workers send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TestMsg {
    kind: String,
    data: String,
}

/// Decodes `bytes` on a real channel: written to one end of a socketpair, read by the
/// other end's `Receiver`.
fn receive(bytes: &[u8], serialization: Serialization) -> Result<Option<Incoming>, RecvError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (ours, theirs) = cluster_ipc::socketpair().expect("socketpair");
        let mut peer = std::fs::File::from(ours);
        peer.write_all(bytes).expect("write");
        drop(peer);
        let options = ChannelOptions {
            serialization,
            ..Default::default()
        };
        let (_tx, mut rx) = cluster_ipc::channel(theirs, options).expect("channel");
        rx.recv().await
    })
}

#[test]
fn the_19_byte_listen_request_claiming_3e18_bytes_is_an_error() {
    // Before the fix: "memory allocation of 2997595911977802137 bytes failed", abort.
    let bytes = listen_request_claiming(0x2999_9999_9999_9999);
    assert_eq!(bytes.len(), 19);
    let before = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    match receive(&bytes, Serialization::Binary) {
        Err(RecvError::Malformed(reason)) => assert!(reason.contains("control"), "{reason}"),
        other => panic!("expected a malformed-message error, got {other:?}"),
    }
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    assert!(largest <= before.max(1 << 20), "allocated {largest} bytes");
}

#[test]
fn a_length_above_isize_max_is_an_error_not_a_capacity_overflow() {
    for length in [u64::MAX, 1 << 63, (isize::MAX as u64) + 1] {
        let bytes = listen_request_claiming(length);
        assert!(
            matches!(
                receive(&bytes, Serialization::Binary),
                Err(RecvError::Malformed(_))
            ),
            "length {length:#x}"
        );
    }
}

#[test]
fn a_user_message_claiming_3e18_bytes_fails_to_decode_and_nothing_else() {
    // The channel delivers binary user frames undecoded; the reader's `decode` must fail.
    let mut payload = vec![0x02, b'h', b'i', 0xfd];
    payload.extend_from_slice(&0x2999_9999_9999_9999u64.to_le_bytes());
    let bytes = frame(USER, 0, &payload);
    let Ok(Some(Incoming::User(message))) = receive(&bytes, Serialization::Binary) else {
        panic!("a binary user frame is delivered as it is");
    };
    let err = message.decode::<TestMsg>().expect_err("lying length");
    assert!(err.to_string().starts_with("binary"), "{err}");
}

#[test]
fn descriptors_no_frame_announced_are_an_error_not_a_pile() {
    // A frame announcing no descriptor, sent with one: the frame is delivered, then the
    // receiver refuses to read on with a stray descriptor queued.
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (ours, theirs) = cluster_ipc::socketpair().expect("socketpair");
        let bytes = frame(USER, 0, b"\"hi\"");
        let stray = std::fs::File::open("/dev/null").expect("open");
        let fds = [stray.as_raw_fd()];
        let iov = [std::io::IoSlice::new(&bytes)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let sent = sendmsg::<()>(ours.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None);
        assert_eq!(sent.expect("sendmsg"), bytes.len());
        let (_tx, mut rx) = cluster_ipc::channel(theirs, Default::default()).expect("channel");
        let first = rx.recv().await;
        assert!(matches!(first, Ok(Some(Incoming::User(_)))), "{first:?}");
        // The peer is still open: without the check this would wait for more bytes.
        match rx.recv().await {
            Err(RecvError::Malformed(reason)) => {
                assert!(reason.contains("no frame announced"), "{reason}")
            }
            other => panic!("expected an error, got {other:?}"),
        }
        drop(ours);
    });
}

/// Draws frames from a seeded generator.
struct Frames {
    state: u64,
    pool: Vec<u8>,
    serialization: Serialization,
    max_message_bytes: usize,
}

/// What a drawn frame is known to be.
enum Drawn {
    /// Invalid by construction: must be an error.
    Bad(Vec<u8>),
    /// A user frame whose payload is invalid by construction: delivered as it is (binary
    /// payloads are checked by their reader), but every read of it must fail.
    BadUserPayload(Vec<u8>),
    /// Random or mutated: may or may not decode; must not panic or over-allocate.
    Any(Vec<u8>),
}

impl Frames {
    fn new(seed: u64, serialization: Serialization, max_message_bytes: usize) -> Self {
        Frames {
            state: seed | 1,
            pool: Vec::new(),
            serialization,
            max_message_bytes,
        }
    }

    /// xorshift64*: deterministic, so a failure names its seed and case.
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Fresh random bytes for `arbitrary` to shape values from.
    fn refill(&mut self, len: usize) {
        self.pool.clear();
        while self.pool.len() < len {
            let word = self.next().to_le_bytes();
            self.pool.extend_from_slice(&word);
        }
    }

    /// A length prefix a liar would write: near 2⁶⁴, near `isize::MAX`, near the limit, or
    /// a little more than what follows.
    fn lie(&mut self, honest: usize) -> u64 {
        let limit = self.max_message_bytes as u64;
        let delta = self.below(3) as u64;
        match self.below(6) {
            0 => u64::MAX - delta,
            1 => (isize::MAX as u64).wrapping_add(delta),
            2 => 0x2999_9999_9999_9999 + delta,
            3 => limit - 1 + delta,
            4 => (u32::MAX as u64) - delta,
            _ => honest as u64 + 1 + delta,
        }
    }

    fn draw(&mut self, fds_arrived: usize) -> Drawn {
        self.refill(96);
        let pool = std::mem::take(&mut self.pool);
        let mut u = Unstructured::new(&pool);
        let drawn = match self.below(8) {
            0 => Drawn::Any(self.random_bytes()),
            1 => Drawn::Bad(self.lying_header()),
            2 => self.lying_length(&mut u),
            3 => Drawn::Bad(self.missing_descriptors(&mut u, fds_arrived)),
            4 => Drawn::Bad(self.truncated(&mut u)),
            _ => Drawn::Any(self.mutated(&mut u)),
        };
        self.pool = pool;
        drawn
    }

    fn random_bytes(&mut self) -> Vec<u8> {
        let len = self.below(48);
        let mut bytes: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
        if len >= HEADER_LEN && self.below(2) == 0 {
            // Mostly a plausible header, so the payload decoder sees random bytes too.
            bytes[0] = 0xC1;
            bytes[1] = self.below(2) as u8;
            bytes[2] = 0;
            bytes[3] = 0;
            bytes[4..8].copy_from_slice(&((len - HEADER_LEN) as u32).to_le_bytes());
        }
        bytes
    }

    fn control(&mut self, u: &mut Unstructured<'_>) -> Control {
        let text = || -> String { String::from("127.0.0.1:8080") };
        let string = |u: &mut Unstructured<'_>| u.arbitrary::<String>().unwrap_or_else(|_| text());
        let seq = u.arbitrary::<u64>().unwrap_or(7);
        match self.below(11) {
            0 => Control::Online,
            1 => Control::ListenRequest {
                seq,
                address: string(u),
                index: u.arbitrary::<u32>().unwrap_or(0),
                options: cluster_ipc::ListenOptions {
                    backlog: u.arbitrary().unwrap_or(None),
                    ipv6_only: u.arbitrary().unwrap_or(None),
                },
            },
            2 => Control::ListenReply {
                seq,
                result: if seq % 2 == 0 {
                    Ok(string(u))
                } else {
                    Err(cluster_ipc::ListenFailure {
                        errno: (seq % 3 == 0).then_some(98),
                        reason: string(u),
                    })
                },
                grant: [Grant::Shared, Grant::ReusePort, Grant::RoundRobin][self.below(3)],
            },
            3 => Control::Listening { address: string(u) },
            4 => Control::Forward {
                to: if seq % 2 == 0 {
                    Recipient::Group(string(u))
                } else {
                    Recipient::Pid(seq as u32)
                },
                payload: u.arbitrary::<Vec<u8>>().unwrap_or_default(),
            },
            5 => Control::Deliver {
                from_group: u.arbitrary::<Option<String>>().unwrap_or_default(),
                from_pid: seq as u32,
                payload: u.arbitrary::<Vec<u8>>().unwrap_or_default(),
            },
            6 => Control::Connection {
                address: string(u),
                seq,
                take_by_ns: seq.rotate_left(17),
            },
            7 => Control::ConnectionRefused {
                address: string(u),
                seq,
            },
            8 => Control::Connections {
                address: string(u),
                seqs: u.arbitrary::<Vec<u64>>().unwrap_or_default(),
                take_by_ns: seq,
            },
            9 => Control::ConnectionsTaken {
                address: string(u),
                seqs: u.arbitrary::<Vec<u64>>().unwrap_or_default(),
            },
            _ => Control::HandOver,
        }
    }

    /// A valid control or user frame.
    fn valid(&mut self, u: &mut Unstructured<'_>) -> Vec<u8> {
        let s = self.serialization;
        if self.below(2) == 0 {
            let control = self.control(u);
            frame(CONTROL, 0, &s.encode(&control).expect("encode"))
        } else {
            let msg = TestMsg {
                kind: u.arbitrary().unwrap_or_default(),
                data: u.arbitrary().unwrap_or_default(),
            };
            frame(USER, 0, &s.encode(&msg).expect("encode"))
        }
    }

    /// A valid frame whose header announces more than the limit, or has a bad magic,
    /// kind, or reserved byte.
    fn lying_header(&mut self) -> Vec<u8> {
        self.refill(64);
        let pool = std::mem::take(&mut self.pool);
        let mut bytes = self.valid(&mut Unstructured::new(&pool));
        self.pool = pool;
        match self.below(4) {
            0 => {
                let claim = self
                    .lie(self.max_message_bytes)
                    .clamp(self.max_message_bytes as u64 + 1, u32::MAX as u64)
                    as u32;
                bytes[4..8].copy_from_slice(&claim.to_le_bytes());
            }
            1 => bytes[0] = bytes[0].wrapping_add(1 + self.below(255) as u8),
            2 => bytes[1] = 2 + self.below(254) as u8,
            _ => bytes[3] = 1 + self.below(255) as u8,
        }
        bytes
    }

    /// A frame whose string claims more bytes than follow it: a `ListenRequest` address or
    /// a user message's `data`. In JSON, where lengths are not written, a string left open.
    fn lying_length(&mut self, u: &mut Unstructured<'_>) -> Drawn {
        let kind: String = u.arbitrary().unwrap_or_default();
        let tail: Vec<u8> = u.arbitrary().unwrap_or_default();
        let user = self.below(2) == 0;
        match self.serialization {
            Serialization::Binary => {
                let claim = self.lie(tail.len());
                let mut payload = if user {
                    Serialization::Binary.encode(&kind).expect("encode")
                } else {
                    Serialization::Binary.encode(&(1u32, 7u64)).expect("encode")
                };
                payload.push(0xfd);
                payload.extend_from_slice(&claim.to_le_bytes());
                payload.extend_from_slice(&tail);
                if user {
                    Drawn::BadUserPayload(frame(USER, 0, &payload))
                } else {
                    Drawn::Bad(frame(CONTROL, 0, &payload))
                }
            }
            Serialization::Json => {
                let open = format!(r#"{{"ListenRequest":{{"seq":7,"address":"{}"#, kind.len());
                Drawn::Bad(frame(if user { USER } else { CONTROL }, 0, open.as_bytes()))
            }
        }
    }

    /// A valid frame that announces more descriptors than arrived.
    fn missing_descriptors(&mut self, u: &mut Unstructured<'_>, fds_arrived: usize) -> Vec<u8> {
        let mut bytes = self.valid(u);
        bytes[2] = (fds_arrived + 1 + self.below(255 - fds_arrived)) as u8;
        bytes
    }

    /// A valid frame cut short, or with its length one more than what follows.
    fn truncated(&mut self, u: &mut Unstructured<'_>) -> Vec<u8> {
        let mut bytes = self.valid(u);
        if self.below(2) == 0 {
            let keep = 1 + self.below(bytes.len() - 1);
            bytes.truncate(keep);
        } else {
            let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) + 1;
            bytes[4..8].copy_from_slice(&len.to_le_bytes());
        }
        bytes
    }

    /// A valid frame with random damage: bytes flipped, overwritten, inserted or removed,
    /// a lying length written over it, the descriptor count changed.
    fn mutated(&mut self, u: &mut Unstructured<'_>) -> Vec<u8> {
        let mut bytes = self.valid(u);
        for _ in 0..1 + self.below(4) {
            let at = self.below(bytes.len());
            match self.below(6) {
                0 => bytes[at] ^= 1 << self.below(8),
                1 => bytes[at] = self.next() as u8,
                2 => bytes.insert(at, self.next() as u8),
                3 if bytes.len() > 1 => {
                    bytes.remove(at);
                }
                4 => {
                    let claim = self.lie(bytes.len() - at).to_le_bytes();
                    let at = at.max(HEADER_LEN).min(bytes.len());
                    bytes.splice(at..at, std::iter::once(0xfd).chain(claim));
                }
                _ => bytes[2] = self.below(20) as u8,
            }
        }
        bytes
    }
}

/// What the master's user code might decode a message as.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum Job {
    Resize { width: u32, height: u32 },
    Text(String),
    Batch(Vec<(u128, Option<Vec<u8>>)>),
    Tags(HashMap<String, Vec<String>>),
}

fn read_as_user_code_would(message: &cluster_ipc::Message) {
    let _ = message.decode::<TestMsg>();
    let _ = message.decode::<Job>();
    let _ = message.decode::<Vec<String>>();
    let _ = message.decode::<(u64, Box<str>, Vec<u64>)>();
    if message.serialization() == Serialization::Json {
        let _ = message.decode::<serde_json::Value>();
    }
}

/// At least this many frames per encoding; the issue asks for 100,000.
const FRAMES: usize = 100_000;

fn feed(serialization: Serialization) {
    let options = ChannelOptions {
        serialization,
        max_message_bytes: 1 << 20,
    };
    let seed = std::env::var("DECODER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0016);
    let mut frames = Frames::new(seed, serialization, options.max_message_bytes);
    let (mut bad, mut errors, mut decoded) = (0, 0, 0);
    for case in 0..FRAMES {
        let fds_arrived = frames.below(3);
        match frames.draw(fds_arrived) {
            Drawn::Bad(bytes) => {
                bad += 1;
                let result = decode_frames(&bytes, fds_arrived, options);
                assert!(
                    result.is_err(),
                    "{serialization} case {case} (seed {seed}): {bytes:02x?} decoded as {result:?}"
                );
                errors += 1;
            }
            Drawn::BadUserPayload(bytes) => {
                bad += 1;
                let messages = decode_frames(&bytes, 0, options).expect("delivered");
                let [Incoming::User(message)] = &messages[..] else {
                    panic!("{serialization} case {case} (seed {seed}): {messages:?}");
                };
                let read = message.decode::<TestMsg>();
                assert!(
                    read.is_err(),
                    "{serialization} case {case} (seed {seed}): {bytes:02x?} read as {read:?}"
                );
                read_as_user_code_would(message);
                errors += 1;
            }
            Drawn::Any(bytes) => match decode_frames(&bytes, fds_arrived, options) {
                Ok(messages) => {
                    decoded += 1;
                    for message in &messages {
                        if let Incoming::User(message) = message {
                            read_as_user_code_would(message);
                        }
                    }
                }
                Err(_) => errors += 1,
            },
        }
    }
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    eprintln!(
        "{serialization}: {FRAMES} frames, {bad} bad by construction, {errors} errors, \
         {decoded} decoded; largest allocation {largest} bytes"
    );
    assert!(
        largest <= options.max_message_bytes,
        "an allocation of {largest} bytes, over the {}-byte limit",
        options.max_message_bytes
    );
    assert!(
        decoded > 0 && bad > FRAMES / 4,
        "the generator covers both sides"
    );
}

#[test]
fn random_and_mutated_binary_frames_are_errors_never_aborts() {
    feed(Serialization::Binary);
}

#[test]
fn random_and_mutated_json_frames_are_errors_never_aborts() {
    feed(Serialization::Json);
}

#[test]
fn a_user_frame_announcing_more_descriptors_than_it_carries_is_an_error_and_closes_them() {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (ours, theirs) = cluster_ipc::socketpair().expect("socketpair");
        let bytes = frame(USER, 2, b"\"hi\"");
        let (probe, sent_end) = std::os::unix::net::UnixStream::pair().expect("pair");
        let fds = [sent_end.as_raw_fd()];
        let iov = [std::io::IoSlice::new(&bytes)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let sent = sendmsg::<()>(ours.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None);
        assert_eq!(sent.expect("sendmsg"), bytes.len());
        drop(sent_end);
        let (_tx, mut rx) = cluster_ipc::channel(theirs, Default::default()).expect("channel");
        match rx.recv().await {
            Err(RecvError::Malformed(reason)) => {
                assert!(
                    reason.contains("announces 2 descriptors, 1 arrived"),
                    "{reason}"
                )
            }
            other => panic!("expected an error, got {other:?}"),
        }
        // The one that arrived was closed, not kept.
        probe.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 1];
        assert!(matches!(std::io::Read::read(&mut &probe, &mut buf), Ok(0)));
        drop(ours);
    });
}
