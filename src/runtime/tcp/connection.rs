//! One TCP connection: its socket, the bytes read and not yet framed, the messages queued
//! and not yet written, and the clocks that decide when it closes.
//!
//! # What it owns, what it may not touch
//! The stream's bytes in both directions and the framing of what comes in
//! ([`next_frame`]). It knows nothing of the other connections, the epoll set or the
//! limits: [`TcpSide`](super::TcpSide) registers it, and closes it when a method here says
//! so.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::{MAX_MESSAGE, TcpStats};
use crate::message::{Frame, FramingError, header_block, next_frame};

/// Bytes read from one connection per poll (the rest waits for the next round).
pub(super) const READ_PER_POLL: usize = 256 * 1024;
/// Most bytes queued for one connection; a message that would go past it is dropped (as
/// a datagram would be), the connection kept: a peer that reads slowly under load must not
/// lose every transaction it has. One that reads nothing at all goes idle and is closed.
const MAX_QUEUED: usize = 16 << 20;
/// How long a connect may take before it counts as failed: its messages' transactions
/// end (or, for a request sent over TCP only for its size, go over UDP, RFC 3261 §18.1.1)
/// now, not at Timer B or F, when a firewall drops the SYN. Room for two SYN
/// retransmissions (at 1 s and 3 s).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unframeable connection stays open for the answers to what came before.
pub(super) const CLOSING_GRACE: Duration = Duration::from_secs(2);

pub(super) struct Connection {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) input: BytesMut,
    output: VecDeque<Bytes>,
    /// Bytes of `output[0]` already written.
    written: usize,
    queued: usize,
    /// A non-blocking connect not yet complete.
    pub(super) connecting: bool,
    /// The peer opened it (its address is likely an ephemeral port nobody listens on).
    pub(super) accepted: bool,
    /// Registered for writability too (while output waits).
    pub(super) watching_writes: bool,
    last_active: Instant,
    /// Since when the stream is unframeable: nothing more is read from it, and it closes
    /// [`CLOSING_GRACE`] later, time for the answers to the messages framed before it
    /// (their shard may be another thread, or the application) to go out on it.
    closing: Option<Instant>,
    /// Since when a whole message is awaited on a connection the peer opened: its opening
    /// or its last whole message, while input is partial or none came yet.
    awaiting_message: Option<Instant>,
}

/// What one read of a connection brought.
pub(super) struct ReadResult {
    /// Bytes read.
    pub(super) bytes: usize,
    /// The peer closed the stream, or reading failed.
    pub(super) gone: bool,
}

/// Why a connection is due to close at a sweep, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No traffic either way for the idle time.
    Idle,
    /// Unframeable, and its grace is over.
    Unframeable,
    /// A connect that did not complete in time (a failure for its messages' peer).
    ConnectTimedOut,
    /// Opened by the peer, and no whole message in time.
    Stalled,
}

impl Connection {
    pub(super) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        (connecting, accepted): (bool, bool),
        now: Instant,
    ) -> Self {
        Connection {
            stream,
            peer,
            input: BytesMut::new(),
            output: VecDeque::new(),
            written: 0,
            queued: 0,
            connecting,
            accepted,
            watching_writes: connecting,
            last_active: now,
            awaiting_message: accepted.then_some(now),
            closing: None,
        }
    }

    /// True while output waits to be written.
    pub(super) fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Reads what the socket has, up to [`READ_PER_POLL`] bytes, into the input (or, once
    /// the stream is unframeable, only to see the peer go).
    pub(super) fn read_socket(&mut self, scratch: &mut [u8], now: Instant) -> ReadResult {
        let mut bytes = 0;
        let mut gone = false;
        while bytes < READ_PER_POLL {
            match self.stream.read(scratch) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(_) if self.closing.is_some() => {}
                Ok(n) => {
                    self.input.extend_from_slice(&scratch[..n]);
                    bytes += n;
                }
                Err(e) => match e.kind() {
                    ErrorKind::WouldBlock => break,
                    ErrorKind::Interrupted => continue,
                    _ => {
                        gone = true;
                        break;
                    }
                },
            }
        }
        if bytes > 0 {
            self.last_active = now;
        }
        ReadResult { bytes, gone }
    }

    /// Cuts the whole messages out of the input into `out`, with the peer's address;
    /// returns how many keep-alive pings came. An unframeable stream stops here: its
    /// header block goes to `unframed` (for the shard to answer) and the connection starts
    /// its closing grace.
    pub(super) fn cut_messages(
        &mut self,
        now: Instant,
        out: &mut Vec<(SocketAddr, Bytes)>,
        unframed: &mut Vec<(SocketAddr, Bytes, FramingError)>,
        stats: &mut TcpStats,
    ) -> usize {
        let mut pings = 0;
        loop {
            match next_frame(&self.input, MAX_MESSAGE) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::KeepAlive(n)) => {
                    self.input.advance(n);
                    pings += 1;
                }
                Ok(Frame::Skip(n)) => self.input.advance(n),
                Ok(Frame::Message(n)) => {
                    // Copied out, as a datagram is: a message a transaction or dialog keeps
                    // for minutes must not pin the connection's whole read buffer.
                    out.push((self.peer, Bytes::copy_from_slice(&self.input[..n])));
                    self.input.advance(n);
                    stats.messages_in += 1;
                    self.awaiting_message = None;
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "closing unframeable stream");
                    stats.framing_errors += 1;
                    if let Some(block) = header_block(&self.input, MAX_MESSAGE) {
                        unframed.push((self.peer, Bytes::copy_from_slice(block), e));
                    }
                    self.closing = Some(now);
                    self.input.clear();
                    break;
                }
            }
        }
        // A message begun on a peer's connection must be whole in time.
        if self.accepted && !self.input.is_empty() && self.awaiting_message.is_none() {
            self.awaiting_message = Some(now);
        }
        pings
    }

    /// Queues `payload`; false (and nothing queued) when it would take the queue past
    /// [`MAX_QUEUED`].
    pub(super) fn enqueue(&mut self, payload: Bytes) -> bool {
        if self.queued + payload.len() > MAX_QUEUED {
            return false;
        }
        self.queued += payload.len();
        self.output.push_back(payload);
        true
    }

    /// Writes what is queued until the socket would block. An error means the stream is
    /// broken and the connection must close.
    pub(super) fn write_queued(&mut self, now: Instant) -> std::io::Result<()> {
        while let Some(front) = self.output.front() {
            match self.stream.write(&front[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    self.last_active = now;
                    if self.written == front.len() {
                        self.queued -= front.len();
                        self.written = 0;
                        self.output.pop_front();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the connection is due to close at `now`, and why: idle for `idle_after`,
    /// unframeable past its grace, a connect that took [`CONNECT_TIMEOUT`], or (opened by
    /// the peer) no whole message for `incomplete_after`.
    pub(super) fn expiry(
        &self,
        now: Instant,
        idle_after: Duration,
        incomplete_after: Duration,
    ) -> Option<Expiry> {
        let quiet = now.saturating_duration_since(self.last_active);
        let since = |at: Option<Instant>, limit| {
            at.is_some_and(|since| now.saturating_duration_since(since) >= limit)
        };
        // `last_active` of a connection still connecting is when it began.
        if self.connecting && quiet >= CONNECT_TIMEOUT {
            Some(Expiry::ConnectTimedOut)
        } else if since(self.awaiting_message, incomplete_after) {
            // Half a header trickled in, or nothing at all. With input drained after a
            // message, the connection waits as long as any idle one.
            Some(Expiry::Stalled)
        } else if since(self.closing, CLOSING_GRACE) {
            Some(Expiry::Unframeable)
        } else if quiet >= idle_after {
            Some(Expiry::Idle)
        } else {
            None
        }
    }
}
