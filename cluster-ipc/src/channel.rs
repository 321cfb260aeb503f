//! The framed, typed channel over one end of a Unix stream socketpair.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::codec::Serialization;
use crate::control::Control;
use crate::error::{RecvError, SendError};
use crate::fd_batches::FdBatches;
use crate::frame::{self, Frame, FrameKind, HEADER_LEN, Split};
use crate::handoff::DEFAULT_MAX_MESSAGE_BYTES;
use crate::message::Message;
use crate::sys;

/// How a channel encodes and bounds its messages. Both ends must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelOptions {
    /// The payload encoding.
    pub serialization: Serialization,
    /// The largest payload, in bytes, either way. A larger message is refused by the sender
    /// and ends the channel at the receiver.
    pub max_message_bytes: usize,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            serialization: Serialization::Json,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// What a [`Receiver`] delivers.
#[derive(Debug)]
pub enum Incoming {
    /// A message of the cluster runtime, with the descriptors that came with it. Fewer
    /// than were sent when this process's descriptor table was full (`MSG_CTRUNC`): the
    /// message itself is intact and the channel stays in step; see
    /// [`Receiver::descriptors_lost`].
    Control(Control, Vec<OwnedFd>),
    /// A message of the user's code, with the descriptors sent with it
    /// ([`Message::take_fds`]).
    User(Message),
}

struct Shared {
    io: AsyncFd<OwnedFd>,
    options: ChannelOptions,
    /// Serialises writers so frames never interleave.
    write_lock: tokio::sync::Mutex<()>,
    /// Set when a send was cancelled after part of its frame went out: the stream is no
    /// longer in step and has been shut down.
    broken: AtomicBool,
}

/// Makes a channel of one end of a stream socketpair (see [`socketpair`]). Must be called
/// inside a tokio runtime.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let (a, b) = cluster_ipc::socketpair()?;
/// let (tx, _rx) = cluster_ipc::channel(a, Default::default())?;
/// let (_tx2, mut rx2) = cluster_ipc::channel(b, Default::default())?;
/// tx.send(&"hello").await.expect("send");
/// let incoming = rx2.recv().await.expect("recv");
/// # Ok(()) }
/// ```
pub fn channel(fd: OwnedFd, options: ChannelOptions) -> io::Result<(Sender, Receiver)> {
    if options.max_message_bytes > u32::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "max_message_bytes must fit in 32 bits",
        ));
    }
    sys::set_nonblocking(fd.as_fd())?;
    // SAFETY: `fd` is an open descriptor we own; the AsyncFd takes ownership of it and it
    // stays open, as the same descriptor, until the AsyncFd is dropped.
    let io = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
    let shared = Arc::new(Shared {
        io,
        options,
        write_lock: tokio::sync::Mutex::new(()),
        broken: AtomicBool::new(false),
    });
    let receiver = Receiver {
        shared: shared.clone(),
        buf: vec![0; INITIAL_BUFFER],
        start: 0,
        end: 0,
        stream_pos: 0,
        fds: FdBatches::default(),
        descriptors_lost: 0,
        eof: false,
    };
    Ok((Sender { shared }, receiver))
}

/// A connected pair of stream sockets for a new channel, both close-on-exec.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    sys::stream_pair()
}

/// The sending half. Cheap to clone; clones share the socket, and frames from concurrent
/// senders never interleave.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Sends a user message.
    pub async fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<(), SendError> {
        let frame = self.encode(FrameKind::User, message, 0)?;
        self.write_frame(&frame, &[]).await
    }

    /// Sends a user message with descriptors attached (Node's `send(message, sendHandle)`):
    /// a socket, a listener, any open descriptor. The other side gets duplicates, installed
    /// close-on-exec, through [`Message::take_fds`]; the caller keeps its own and may close
    /// them once this returns. At most [`crate::MAX_FDS_PER_MESSAGE`]; more is
    /// [`SendError::TooManyFds`] and nothing is sent.
    ///
    /// ```no_run
    /// # async fn demo(tx: cluster_ipc::Sender, stream: std::net::TcpStream) -> Result<(), cluster_ipc::SendError> {
    /// use std::os::fd::AsFd;
    /// tx.send_with(&"client", &[stream.as_fd()]).await?;
    /// drop(stream); // the receiver has its own descriptor
    /// # Ok(()) }
    /// ```
    pub async fn send_with<T: Serialize + ?Sized>(
        &self,
        message: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SendError> {
        check_fd_count(fds)?;
        let frame = self.encode(FrameKind::User, message, fds.len() as u8)?;
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        self.write_frame(&frame, &raw).await
    }

    /// Sends a control message with `fds` attached.
    pub async fn send_control(
        &self,
        message: &Control,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SendError> {
        check_fd_count(fds)?;
        let frame = self.encode(FrameKind::Control, message, fds.len() as u8)?;
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        self.write_frame(&frame, &raw).await
    }

    /// Sends a control message only if, once it is this sender's turn to write, the clock
    /// ([`crate::clock::monotonic_ns`]) is still before `deadline_ns`: `Ok(false)` when it
    /// was too late and nothing was sent. The check is made after waiting for other writers,
    /// right before the write, so the message leaves before the deadline or not at all.
    pub async fn send_control_by(
        &self,
        message: &Control,
        deadline_ns: u64,
    ) -> Result<bool, SendError> {
        let frame = self.encode(FrameKind::Control, message, 0)?;
        let guard = self.shared.write_lock.lock().await;
        if sys::monotonic_ns() >= deadline_ns {
            return Ok(false);
        }
        self.write_locked(&guard, &frame, &[]).await?;
        Ok(true)
    }

    /// Sends a control message from synchronous code that may not await, such as a panic
    /// hook: waits at most `timeout` for the channel, then gives up.
    pub fn send_control_blocking(
        &self,
        message: &Control,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let frame = self.encode(FrameKind::Control, message, 0)?;
        let deadline = Instant::now() + timeout;
        let _guard = loop {
            if let Ok(guard) = self.shared.write_lock.try_lock() {
                break guard;
            }
            if Instant::now() >= deadline {
                return Err(SendError::Io(io::ErrorKind::TimedOut.into()));
            }
            std::thread::yield_now();
        };
        self.check_broken()?;
        let fd = self.shared.io.get_ref().as_fd();
        let mut written = 0;
        while written < frame.len() {
            match sys::send_with_fds(fd, &frame[written..], &[]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ms = left.as_millis().min(u128::from(u16::MAX)) as u16;
                    if ms == 0 || !sys::poll_writable(fd, ms)? {
                        if written > 0 {
                            self.mark_broken();
                        }
                        return Err(SendError::Io(io::ErrorKind::TimedOut.into()));
                    }
                }
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(())
    }

    /// Shuts the channel in both directions: the other side reads end-of-stream, and this
    /// side's [`Receiver`] ends too.
    pub fn close(&self) {
        if let Err(e) = sys::shutdown(self.shared.io.get_ref().as_fd()) {
            tracing::debug!("closing the channel: {e}");
        }
    }

    /// The options the channel was made with.
    pub fn options(&self) -> ChannelOptions {
        self.shared.options
    }

    fn encode<T: Serialize + ?Sized>(
        &self,
        kind: FrameKind,
        message: &T,
        fd_count: u8,
    ) -> Result<Vec<u8>, SendError> {
        let mut frame = frame::start_frame(64);
        self.shared
            .options
            .serialization
            .encode_into(message, &mut frame)?;
        let size = frame.len() - HEADER_LEN;
        let max = self.shared.options.max_message_bytes;
        if size > max {
            return Err(SendError::TooLarge { size, max });
        }
        frame::finish_frame(&mut frame, kind, fd_count);
        Ok(frame)
    }

    async fn write_frame(&self, frame: &[u8], fds: &[RawFd]) -> Result<(), SendError> {
        let guard = self.shared.write_lock.lock().await;
        self.write_locked(&guard, frame, fds).await
    }

    /// Writes one frame; the caller holds the write lock (`_turn`).
    async fn write_locked(
        &self,
        _turn: &tokio::sync::MutexGuard<'_, ()>,
        frame: &[u8],
        fds: &[RawFd],
    ) -> Result<(), SendError> {
        self.check_broken()?;
        let mut progress = PartialWrite {
            shared: &self.shared,
            written: 0,
            total: frame.len(),
        };
        let mut fds = fds;
        while progress.written < frame.len() {
            let rest = &frame[progress.written..];
            let sent = self
                .shared
                .io
                .async_io(Interest::WRITABLE, |fd| {
                    sys::send_with_fds(fd.as_fd(), rest, fds)
                })
                .await
                .map_err(classify)?;
            progress.written += sent;
            // The descriptors travel with the first byte that went out.
            fds = &[];
        }
        Ok(())
    }

    fn check_broken(&self) -> Result<(), SendError> {
        if self.shared.broken.load(Ordering::Acquire) {
            Err(SendError::Closed)
        } else {
            Ok(())
        }
    }

    fn mark_broken(&self) {
        self.shared.mark_broken();
    }
}

impl Shared {
    fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
        let _ = sys::shutdown(self.io.get_ref().as_fd());
    }
}

/// Shuts the channel down if a send is dropped with its frame half written.
struct PartialWrite<'a> {
    shared: &'a Shared,
    written: usize,
    total: usize,
}

impl Drop for PartialWrite<'_> {
    fn drop(&mut self) {
        if self.written > 0 && self.written < self.total {
            tracing::warn!("a send was cancelled mid-message; closing the channel");
            self.shared.mark_broken();
        }
    }
}

/// At most [`sys::MAX_FDS_PER_MESSAGE`] descriptors travel with one frame.
fn check_fd_count(fds: &[BorrowedFd<'_>]) -> Result<(), SendError> {
    if fds.len() > sys::MAX_FDS_PER_MESSAGE {
        return Err(SendError::TooManyFds {
            count: fds.len(),
            max: sys::MAX_FDS_PER_MESSAGE,
        });
    }
    Ok(())
}

fn classify(e: io::Error) -> SendError {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::NotConnected => SendError::Closed,
        _ => SendError::Io(e),
    }
}

/// Decodes a whole frame's payload: a control message with its descriptors, or a user
/// message (JSON checked to be well-formed; binary decoded later, by its reader).
pub(crate) fn decode_frame(
    frame: &Frame<'_>,
    serialization: Serialization,
    fds: Vec<OwnedFd>,
    lost: usize,
) -> Result<Incoming, RecvError> {
    match frame.header.kind {
        FrameKind::Control => {
            let control = serialization
                .decode::<Control>(frame.payload)
                .map_err(|e| RecvError::Malformed(format!("control message: {e}")))?;
            Ok(Incoming::Control(control, fds))
        }
        FrameKind::User => {
            serialization
                .validate(frame.payload)
                .map_err(|e| RecvError::Malformed(format!("user message: {e}")))?;
            // On error above, `fds` is dropped: the descriptors are closed, not leaked.
            Ok(Incoming::User(Message::with_fds(
                serialization,
                frame.payload,
                fds,
                lost,
            )))
        }
    }
}

const INITIAL_BUFFER: usize = 64 * 1024;

/// The receiving half. One task owns it.
pub struct Receiver {
    shared: Arc<Shared>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[start]`: where the next frame begins.
    stream_pos: u64,
    fds: FdBatches,
    descriptors_lost: u64,
    eof: bool,
}

impl Receiver {
    /// How many descriptors sent to this process did not arrive because its descriptor
    /// table was full (`RLIMIT_NOFILE`); their messages were delivered without them.
    pub fn descriptors_lost(&self) -> u64 {
        self.descriptors_lost
    }

    /// The next message, or `Ok(None)` once the other side has closed its end.
    ///
    /// An error means the stream cannot be trusted any more (oversized or malformed
    /// message, OS error); the caller should close the channel.
    pub async fn recv(&mut self) -> Result<Option<Incoming>, RecvError> {
        loop {
            if let Some(incoming) = self.next_buffered()? {
                return Ok(Some(incoming));
            }
            if self.eof {
                if self.end > self.start {
                    tracing::debug!(
                        bytes = self.end - self.start,
                        "channel closed in the middle of a message"
                    );
                }
                return Ok(None);
            }
            self.fill().await?;
        }
    }

    /// Parses one complete frame out of the buffer, if there is one; makes room for the
    /// frame in progress otherwise.
    fn next_buffered(&mut self) -> Result<Option<Incoming>, RecvError> {
        let options = self.shared.options;
        let frame = match frame::split(&self.buf[self.start..self.end], None, options)? {
            Split::Incomplete { frame_len } => {
                // Descriptors no frame announced end the channel here rather than pile up.
                self.fds.check_unannounced(self.stream_pos)?;
                self.reserve(frame_len);
                return Ok(None);
            }
            Split::Frame(frame) => frame,
        };
        let frame_len = frame.len();
        let claimed = self.fds.claim(self.stream_pos, frame.header.fd_count)?;
        if claimed.lost > 0 {
            self.descriptors_lost += claimed.lost as u64;
            tracing::debug!(
                lost = claimed.lost,
                "descriptors sent with a message did not arrive: the descriptor table is full"
            );
        }
        let incoming = decode_frame(&frame, options.serialization, claimed.fds, claimed.lost)?;
        self.start += frame_len;
        self.stream_pos += frame_len as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > SHRINK_ABOVE {
                self.buf = vec![0; INITIAL_BUFFER];
            }
        }
        Ok(Some(incoming))
    }

    /// Makes sure a frame of `frame_len` bytes starting at `start` fits in the buffer.
    fn reserve(&mut self, frame_len: usize) {
        if self.buf.len() - self.start >= frame_len {
            return;
        }
        self.compact();
        if self.buf.len() < frame_len {
            self.buf.resize(frame_len, 0);
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    async fn fill(&mut self) -> Result<(), RecvError> {
        if self.end == self.buf.len() {
            self.compact();
            if self.end == self.buf.len() {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
        }
        let begins = self.stream_pos + (self.end - self.start) as u64;
        let spare = &mut self.buf[self.end..];
        let mut fds = Vec::new();
        let read = self
            .shared
            .io
            .async_io(Interest::READABLE, |fd| {
                sys::recv_with_fds(fd.as_fd(), spare, &mut fds)
            })
            .await;
        if let Ok(received) = &read {
            let ends = begins + received.bytes as u64;
            self.fds
                .record(begins, ends, fds, received.descriptors_truncated);
        }
        match read.map(|received| received.bytes) {
            Ok(0) => self.eof = true,
            Ok(n) => self.end += n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.eof = true,
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

/// A buffer grown past this for a large message is given back once it is empty.
const SHRINK_ABOVE: usize = 1024 * 1024;
