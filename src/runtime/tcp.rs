//! TCP for one shard thread (RFC 3261 §18): its own `SO_REUSEPORT` listener on the UDP
//! port (the kernel spreads new connections over the shards' listeners), the connections
//! it accepted or opened, and their buffers.
//!
//! # What it owns, what it may not touch
//! Sockets and bytes. Messages are cut out of each stream by
//! [`next_frame`](crate::message::next_frame) and handed up whole with the peer's
//! address; transmits are queued on the connection to their destination, which is opened
//! when there is none (non-blocking connect). A response whose connection is gone goes to
//! its top Via's address instead (RFC 3261 §18.2.2,
//! [`stream_response_fallback`](crate::message::stream_response_fallback)). It knows
//! nothing else of SIP, and nothing of shards: the worker decides which thread handles a
//! message and which sends a transmit.
//!
//! Readiness comes from an epoll instance of its own, level-triggered, which the worker
//! registers in its own epoll (an epoll fd is pollable) so that a sleeping shard wakes on
//! TCP traffic too; each round polls it without waiting.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::{Domain, Protocol, Socket, Type};

use crate::message::{Frame, FramingError, header_block, next_frame};

/// Largest message accepted on a stream (the UDP maximum: what one datagram could carry).
pub(crate) const MAX_MESSAGE: usize = 65_535;
/// Readiness events taken per poll.
const EVENTS: usize = 64;
/// Connections accepted per poll, so that a flood of them cannot starve the rest.
const ACCEPTS_PER_POLL: usize = 64;
/// Bytes read from one connection per poll (the rest waits for the next round).
const READ_PER_POLL: usize = 256 * 1024;
/// Most bytes queued for one connection; a message that would go past it is dropped (as
/// a datagram would be), the connection kept: a peer that reads slowly under load must not
/// lose every transaction it has. One that reads nothing at all goes idle and is closed.
const MAX_QUEUED: usize = 16 << 20;
/// How long a connect may take before it counts as failed: its messages' transactions
/// end (or, for a request sent over TCP only for its size, go over UDP, RFC 3261 §18.1.1)
/// now, not at Timer B or F, when a firewall drops the SYN. Room for two SYN
/// retransmissions (at 1 s and 3 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unframeable connection stays open for the answers to what came before.
const CLOSING_GRACE: Duration = Duration::from_secs(2);
/// Most gone client sources remembered per thread; past it the set starts again.
const GONE_SOURCES_MAX: usize = 65_536;
/// How often idle connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Epoll token of the listener; connection `i` has `i + 1`.
const LISTENER: u64 = 0;

/// Settings of the shards' TCP side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpSettings {
    /// A connection with no traffic either way for this long is closed.
    pub(crate) idle_after: Duration,
    /// Most connections per shard thread; more are refused (closed on accept).
    pub(crate) max_connections: usize,
    /// Most connections one source address may hold open to this thread; more are
    /// refused, so one host cannot take every slot.
    pub(crate) max_per_source: usize,
    /// A connection a peer opened is closed when, this long after it opened or after its
    /// last whole message, it still has not completed one (half a header, or nothing):
    /// much sooner than `idle_after`.
    pub(crate) incomplete_after: Duration,
}

/// The first pause of the listener after `accept` failed for want of descriptors
/// (EMFILE, ENFILE), doubling to [`ACCEPT_BACKOFF_MAX`]: the pending connection stays in
/// the backlog instead of being retried at once in a loop.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Counters of the TCP side, kept with the thread's I/O counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections we opened.
    pub connected: u64,
    /// Connections closed, for any reason.
    pub closed: u64,
    /// Connections closed because their stream could not be framed (no Content-Length,
    /// over the size limit).
    pub framing_errors: u64,
    /// Connections refused or opened in vain (connect failed or timed out, limit reached).
    pub failures: u64,
    /// Messages framed out of streams.
    pub messages_in: u64,
    /// Messages queued on connections.
    pub messages_out: u64,
    /// Keep-alive pings answered.
    pub pings: u64,
    /// Messages dropped because their connection had too much queued already.
    pub dropped: u64,
    /// Times the listener paused for want of file descriptors (EMFILE, ENFILE).
    pub accept_backoffs: u64,
    /// Connections refused because their source held its most already.
    pub refused_per_source: u64,
    /// Connections refused because their source is banned (`crate::guard`).
    pub refused_banned: u64,
    /// Connections closed for not completing a message in time.
    pub incomplete_closed: u64,
}

impl TcpStats {
    pub(crate) fn merge(&mut self, o: &TcpStats) {
        self.accepted += o.accepted;
        self.connected += o.connected;
        self.closed += o.closed;
        self.framing_errors += o.framing_errors;
        self.failures += o.failures;
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.pings += o.pings;
        self.dropped += o.dropped;
        self.accept_backoffs += o.accept_backoffs;
        self.refused_per_source += o.refused_per_source;
        self.refused_banned += o.refused_banned;
        self.incomplete_closed += o.incomplete_closed;
    }
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    input: BytesMut,
    output: VecDeque<Bytes>,
    /// Bytes of `output[0]` already written.
    written: usize,
    queued: usize,
    /// A non-blocking connect not yet complete.
    connecting: bool,
    /// The peer opened it (its address is likely an ephemeral port nobody listens on).
    accepted: bool,
    /// Registered for writability too (while output waits).
    watching_writes: bool,
    last_active: Instant,
    /// Since when the stream is unframeable: nothing more is read from it, and it closes
    /// [`CLOSING_GRACE`] later, time for the answers to the messages framed before it
    /// (their shard may be another thread, or the application) to go out on it.
    closing: Option<Instant>,
    /// Since when a whole message is awaited on a connection the peer opened: its opening
    /// or its last whole message, while input is partial or none came yet.
    awaiting_message: Option<Instant>,
}

/// One thread's listener and connections.
pub(crate) struct TcpSide {
    epoll: Epoll,
    listener: TcpListener,
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    by_peer: ahash::HashMap<SocketAddr, usize>,
    settings: TcpSettings,
    last_sweep: Instant,
    /// Peers a connection to which failed with messages for them unsent, or could not be
    /// opened: the worker tells its shard (`Shard::handle_transport_failure`).
    failed: Vec<SocketAddr>,
    /// Where `read` puts what one system call brings, before it joins a connection's input.
    scratch: Box<[u8]>,
    /// Peers whose connection closed since the last [`TcpSide::take_closed`], and whether
    /// they had opened it: the other shards forget that replies to them go through this
    /// thread, and note the sources that are gone.
    closed: Vec<(SocketAddr, bool)>,
    /// Sources of client-opened connections that closed ([`TcpSide::note_gone_source`]).
    gone_sources: ahash::HashSet<SocketAddr>,
    /// The header blocks of messages that could not be framed, with their sender and why,
    /// since the last [`TcpSide::take_unframed`]: the shard answers the requests among
    /// them (400 or 513) before the connection closes.
    unframed: Vec<(SocketAddr, Bytes, FramingError)>,
    pub(crate) stats: TcpStats,
    /// Connections peers opened, per source address.
    per_source: ahash::HashMap<std::net::IpAddr, usize>,
    /// The listener is out of the epoll set until then (descriptors ran out), and the
    /// pause to take next time.
    accept_paused: Option<Instant>,
    accept_backoff: Duration,
}

/// Connections per thread: `configured`, else three quarters of the soft descriptor limit
/// shared by `threads` (at least 16 each).
pub(crate) fn connection_cap(configured: usize, threads: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    let usable = usize::try_from(soft).unwrap_or(usize::MAX).min(1 << 24);
    (usable / 4 * 3 / threads.max(1)).max(16)
}

/// Opens a TCP listener on `addr` that other shards may bind too (`SO_REUSEPORT`).
pub(crate) fn listen_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl TcpSide {
    pub(crate) fn new(
        listener: TcpListener,
        settings: TcpSettings,
        now: Instant,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        Ok(TcpSide {
            epoll,
            listener,
            connections: Vec::new(),
            free: Vec::new(),
            by_peer: ahash::HashMap::default(),
            settings,
            last_sweep: now,
            failed: Vec::new(),
            scratch: vec![0u8; 64 * 1024].into_boxed_slice(),
            closed: Vec::new(),
            gone_sources: ahash::HashSet::default(),
            unframed: Vec::new(),
            stats: TcpStats::default(),
            per_source: ahash::HashMap::default(),
            accept_paused: None,
            accept_backoff: ACCEPT_BACKOFF_MIN,
        })
    }

    /// The epoll instance to register in the thread's own.
    pub(crate) fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// True when a connection to `peer` is open (or opening) here.
    pub(crate) fn has(&self, peer: SocketAddr) -> bool {
        self.by_peer.contains_key(&peer)
    }

    /// Peers whose messages could not be delivered since the last call.
    pub(crate) fn take_failures(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.failed)
    }

    /// Peers whose connection closed since the last call, and whether they had opened it.
    pub(crate) fn take_closed(&mut self) -> Vec<(SocketAddr, bool)> {
        std::mem::take(&mut self.closed)
    }

    /// Messages that could not be framed since the last call: sender, header block, why.
    pub(crate) fn take_unframed(&mut self) -> Vec<(SocketAddr, Bytes, FramingError)> {
        std::mem::take(&mut self.unframed)
    }

    /// True when failures wait for [`TcpSide::take_failures`].
    pub(crate) fn has_failures(&self) -> bool {
        !self.failed.is_empty()
    }

    /// When [`TcpSide::poll`] should next run even if nothing is ready: the next look for
    /// idle and unframeable connections, while there are any connections.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let sweep = (!self.by_peer.is_empty()).then(|| self.last_sweep + SWEEP_EVERY);
        match (sweep, self.accept_paused) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Accepts, reads and writes whatever is ready, without waiting; whole messages go to
    /// `out` with their sender. True when more may be waiting: every event slot was used,
    /// or a connection had more than its quota to read (the receive side is not keeping
    /// up, as with a UDP socket left undrained).
    /// A connection from an address `banned` names is closed at accept.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        out: &mut Vec<(SocketAddr, Bytes)>,
        banned: &dyn Fn(std::net::IpAddr) -> bool,
    ) -> bool {
        let mut events = [EpollEvent::empty(); EVENTS];
        let n = self
            .epoll
            .wait(&mut events, EpollTimeout::ZERO)
            .unwrap_or(0);
        let mut more = n == EVENTS;
        if self.accept_paused.is_some_and(|until| now >= until) {
            self.accept_paused = None;
            let _ = self.epoll.add(
                &self.listener,
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
            );
            self.accept(now, banned);
        }
        for e in &events[..n] {
            if e.data() == LISTENER {
                self.accept(now, banned);
                continue;
            }
            let index = (e.data() - 1) as usize;
            let flags = e.events();
            if flags.intersects(EpollFlags::EPOLLOUT) {
                self.writable(index, now);
            }
            if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                more |= self.read(index, now, out);
            }
        }
        if now.saturating_duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.close_idle(now);
        }
        more
    }

    /// Queues `payload` for `peer`, opening a connection when there is none. False when
    /// none could be opened (the message is lost, as a datagram would be).
    pub(crate) fn send(&mut self, now: Instant, peer: SocketAddr, payload: Bytes) -> bool {
        let index = match self.by_peer.get(&peer) {
            Some(&i) => i,
            None => {
                // §18.2.2: a response whose request's connection is gone goes to the Via's
                // received address at its sent-by port, not to the old connection's
                // (ephemeral) source port. A request for the source of a client's closed
                // connection goes to its own next hop (the caller's Contact, say).
                let target = crate::message::stream_response_fallback(&payload)
                    .or_else(|| {
                        self.gone_sources
                            .contains(&peer)
                            .then(|| crate::message::stream_request_fallback(&payload))
                            .flatten()
                    })
                    .unwrap_or(peer);
                match self.by_peer.get(&target).copied() {
                    Some(i) => i,
                    None => match self.connect(now, target) {
                        Some(i) => i,
                        None => {
                            self.stats.failures += 1;
                            self.failed.push(peer);
                            return false;
                        }
                    },
                }
            }
        };
        let Some(c) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return false;
        };
        if c.queued + payload.len() > MAX_QUEUED {
            self.stats.dropped += 1;
            return false;
        }
        c.queued += payload.len();
        c.output.push_back(payload);
        self.stats.messages_out += 1;
        if !c.connecting {
            self.flush(index, now);
        }
        true
    }

    fn accept(&mut self, now: Instant, banned: &dyn Fn(std::net::IpAddr) -> bool) {
        for _ in 0..ACCEPTS_PER_POLL {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_backoff = ACCEPT_BACKOFF_MIN;
                    if self.by_peer.len() >= self.settings.max_connections {
                        self.stats.failures += 1;
                        continue; // dropped: closed
                    }
                    if banned(peer.ip()) {
                        self.stats.refused_banned += 1;
                        continue; // dropped: closed
                    }
                    let held = self.per_source.get(&peer.ip()).copied().unwrap_or(0);
                    if held >= self.settings.max_per_source {
                        self.stats.refused_per_source += 1;
                        continue; // dropped: closed
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    if let Some(old) = self.by_peer.get(&peer).copied() {
                        self.close(old);
                    }
                    self.gone_sources.remove(&peer);
                    if self.insert(stream, peer, (false, true), now).is_some() {
                        self.stats.accepted += 1;
                        *self.per_source.entry(peer.ip()).or_insert(0) += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(code) if code == nix::errno::Errno::EMFILE as i32
                            || code == nix::errno::Errno::ENFILE as i32
                    ) =>
                {
                    // Out of descriptors: the listener stays readable, and retrying at
                    // once would spin. Pause it; the connection waits in the backlog.
                    let _ = self.epoll.delete(&self.listener);
                    self.accept_paused = Some(now + self.accept_backoff);
                    self.accept_backoff = (self.accept_backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    self.stats.accept_backoffs += 1;
                    if self.stats.accept_backoffs.is_power_of_two() {
                        tracing::warn!(
                            error = %e,
                            pauses = self.stats.accept_backoffs,
                            "out of file descriptors: TCP accepts paused"
                        );
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn connect(&mut self, now: Instant, peer: SocketAddr) -> Option<usize> {
        if self.by_peer.len() >= self.settings.max_connections {
            return None;
        }
        let socket =
            Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP)).ok()?;
        socket.set_nonblocking(true).ok()?;
        let _ = socket.set_tcp_nodelay(true);
        let connecting = match socket.connect(&peer.into()) {
            Ok(()) => false,
            Err(e)
                if e.raw_os_error() == Some(nix::libc::EINPROGRESS)
                    || e.kind() == ErrorKind::WouldBlock =>
            {
                true
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connect failed");
                return None;
            }
        };
        let index = self.insert(socket.into(), peer, (connecting, false), now)?;
        self.stats.connected += 1;
        Some(index)
    }

    fn insert(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        (connecting, accepted): (bool, bool),
        now: Instant,
    ) -> Option<usize> {
        let index = self.free.pop().unwrap_or(self.connections.len());
        let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        if connecting {
            flags |= EpollFlags::EPOLLOUT;
        }
        if let Err(e) = self
            .epoll
            .add(&stream, EpollEvent::new(flags, index as u64 + 1))
        {
            tracing::debug!(%peer, error = %e, "cannot watch connection");
            self.free.push(index);
            return None;
        }
        let c = Connection {
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
        };
        if index == self.connections.len() {
            self.connections.push(Some(c));
        } else {
            self.connections[index] = Some(c);
        }
        self.by_peer.insert(peer, index);
        Some(index)
    }

    fn close(&mut self, index: usize) {
        let Some(c) = self.connections.get_mut(index).and_then(Option::take) else {
            return;
        };
        if !c.output.is_empty() {
            self.failed.push(c.peer);
        }
        let _ = self.epoll.delete(&c.stream);
        if c.accepted
            && let Some(held) = self.per_source.get_mut(&c.peer.ip())
        {
            *held -= 1;
            if *held == 0 {
                self.per_source.remove(&c.peer.ip());
            }
        }
        if self.by_peer.get(&c.peer) == Some(&index) {
            self.by_peer.remove(&c.peer);
        }
        self.closed.push((c.peer, c.accepted));
        if c.accepted {
            self.note_gone_source(c.peer);
        }
        self.free.push(index);
        self.stats.closed += 1;
    }

    /// `peer` was the source of a connection a client opened, now closed: a request for it
    /// goes to the request's own next hop instead of a connection to that (ephemeral)
    /// address ([`stream_request_fallback`](crate::message::stream_request_fallback)).
    pub(crate) fn note_gone_source(&mut self, peer: SocketAddr) {
        if self.gone_sources.len() >= GONE_SOURCES_MAX {
            self.gone_sources.clear();
        }
        self.gone_sources.insert(peer);
    }

    /// Reads up to [`READ_PER_POLL`] bytes; true when that quota stopped it.
    fn read(&mut self, index: usize, now: Instant, out: &mut Vec<(SocketAddr, Bytes)>) -> bool {
        let Some(c) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return false;
        };
        let mut total = 0;
        let mut closed = false;
        while total < READ_PER_POLL {
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                // A closing connection's input is read only to see the peer go.
                Ok(_) if c.closing.is_some() => {}
                Ok(n) => {
                    c.input.extend_from_slice(&self.scratch[..n]);
                    total += n;
                }
                Err(e) => match e.kind() {
                    ErrorKind::WouldBlock => break,
                    ErrorKind::Interrupted => continue,
                    _ => {
                        closed = true;
                        break;
                    }
                },
            }
        }
        if total > 0 {
            c.last_active = now;
        }
        let mut pongs = 0;
        loop {
            match next_frame(&c.input, MAX_MESSAGE) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::KeepAlive(n)) => {
                    c.input.advance(n);
                    pongs += 1;
                }
                Ok(Frame::Skip(n)) => {
                    c.input.advance(n);
                }
                Ok(Frame::Message(n)) => {
                    // Copied out, as a datagram is: a message a transaction or dialog keeps
                    // for minutes must not pin the connection's whole read buffer.
                    out.push((c.peer, Bytes::copy_from_slice(&c.input[..n])));
                    c.input.advance(n);
                    self.stats.messages_in += 1;
                    c.awaiting_message = None;
                }
                Err(e) => {
                    tracing::debug!(peer = %c.peer, error = %e, "closing unframeable stream");
                    self.stats.framing_errors += 1;
                    if let Some(block) = header_block(&c.input, MAX_MESSAGE) {
                        self.unframed
                            .push((c.peer, Bytes::copy_from_slice(block), e));
                    }
                    c.closing = Some(now);
                    c.input.clear();
                    break;
                }
            }
        }
        // A message begun on a peer's connection must be whole in time.
        if c.accepted && !c.input.is_empty() && c.awaiting_message.is_none() {
            c.awaiting_message = Some(now);
        }
        let peer = c.peer;
        if closed {
            self.close(index);
            return false;
        }
        for _ in 0..pongs {
            // RFC 5626 §3.5.1: a CRLF CRLF ping is answered with one CRLF.
            self.stats.pings += 1;
            self.send(now, peer, Bytes::from_static(b"\r\n"));
        }
        total >= READ_PER_POLL
    }

    fn writable(&mut self, index: usize, now: Instant) {
        let Some(c) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if c.connecting {
            match c.stream.take_error() {
                Ok(None) => c.connecting = false,
                _ => {
                    tracing::debug!(peer = %c.peer, "connect failed");
                    self.stats.failures += 1;
                    self.close(index);
                    return;
                }
            }
        }
        self.flush(index, now);
    }

    /// Writes what the connection has queued; watches for writability while some is left.
    fn flush(&mut self, index: usize, now: Instant) {
        let Some(c) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let mut failed = false;
        while let Some(front) = c.output.front() {
            match c.stream.write(&front[c.written..]) {
                Ok(n) => {
                    c.written += n;
                    c.last_active = now;
                    if c.written == front.len() {
                        c.queued -= front.len();
                        c.written = 0;
                        c.output.pop_front();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            self.close(index);
            return;
        }
        let want = !c.output.is_empty();
        if want != c.watching_writes {
            let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if want {
                flags |= EpollFlags::EPOLLOUT;
            }
            let mut event = EpollEvent::new(flags, index as u64 + 1);
            if self.epoll.modify(&c.stream, &mut event).is_ok() {
                c.watching_writes = want;
            }
        }
    }

    /// Closes connections idle for `idle_after`, unframeable ones past their grace, and
    /// connects that took [`CONNECT_TIMEOUT`] (a failure for their messages' peer).
    fn close_idle(&mut self, now: Instant) {
        let mut unconnected = 0;
        let mut incomplete = 0;
        let incomplete_after = self.settings.incomplete_after;
        let idle: Vec<usize> = self
            .connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let quiet = now.saturating_duration_since(c.last_active);
                let closed = c
                    .closing
                    .is_some_and(|since| now.saturating_duration_since(since) >= CLOSING_GRACE);
                // `last_active` of a connection still connecting is when it began.
                let timed_out = c.connecting && quiet >= CONNECT_TIMEOUT;
                unconnected += u64::from(timed_out);
                // Opened by the peer, and no whole message for too long: half a header
                // trickled in, or nothing at all. With input drained after a message, the
                // connection waits as long as any idle one.
                let stalled = c
                    .awaiting_message
                    .is_some_and(|since| now.saturating_duration_since(since) >= incomplete_after);
                incomplete += u64::from(stalled);
                (quiet >= self.settings.idle_after || closed || timed_out || stalled).then_some(i)
            })
            .collect();
        self.stats.failures += unconnected;
        self.stats.incomplete_closed += incomplete;
        for i in idle {
            self.close(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side() -> (TcpSide, SocketAddr) {
        let listener = listen_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = TcpSettings {
            max_per_source: 64,
            incomplete_after: Duration::from_secs(10),
            idle_after: Duration::from_secs(60),
            max_connections: 16,
        };
        (
            TcpSide::new(listener, settings, Instant::now()).unwrap(),
            addr,
        )
    }

    /// Polls until `want` messages came or five seconds passed.
    fn gather(side: &mut TcpSide, want: usize) -> Vec<(SocketAddr, Bytes)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.len() < want && Instant::now() < deadline {
            side.poll(Instant::now(), &mut out, &|_| false);
            std::thread::yield_now();
        }
        out
    }

    const MSG: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 2\r\n\r\nhi";

    /// Accepts the connection `side` opens to `far` and reads `want` bytes from it, polling
    /// `side` meanwhile (its connect completes and its queue drains); five seconds at most.
    fn accept_and_read(side: &mut TcpSide, far: &TcpListener, want: usize) -> Vec<u8> {
        let (mut accepted, _) = far.accept().unwrap();
        accepted
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < deadline {
            side.poll(Instant::now(), &mut Vec::new(), &|_| false);
            let mut buf = [0u8; 512];
            if let Ok(n) = accepted.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        got
    }

    #[test]
    fn messages_split_and_joined_by_the_stream_come_out_whole() {
        let (mut side, addr) = side();
        let mut client = TcpStream::connect(addr).unwrap();
        let mut all = b"\r\n\r\n".to_vec();
        all.extend_from_slice(MSG);
        all.extend_from_slice(MSG);
        client.write_all(&all[..30]).unwrap();
        // Read until the connection holds the first 30 bytes less the ping: part of a
        // message, which must not come out yet.
        let mut first = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let buffered = |side: &TcpSide| {
            side.connections
                .iter()
                .flatten()
                .map(|c| c.input.len())
                .sum::<usize>()
        };
        while buffered(&side) < 26 && Instant::now() < deadline {
            side.poll(Instant::now(), &mut first, &|_| false);
        }
        assert_eq!(buffered(&side), 26);
        assert!(first.is_empty());
        client.write_all(&all[30..]).unwrap();
        let got = gather(&mut side, 2);
        assert_eq!(got.len(), 2);
        assert!(
            got.iter()
                .all(|(from, m)| *from == client.local_addr().unwrap() && m == MSG)
        );
        assert_eq!(side.stats.pings, 1);
        // The ping was answered with one CRLF.
        let mut pong = [0u8; 2];
        client.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n");
    }

    #[test]
    fn transmits_reuse_the_connection_or_open_one() {
        let (mut side, addr) = side();
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(MSG).unwrap();
        let got = gather(&mut side, 1);
        let peer = got[0].0;
        assert!(side.has(peer));
        assert!(side.send(Instant::now(), peer, Bytes::from_static(MSG)));
        let mut back = vec![0u8; MSG.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, MSG);
        assert_eq!(side.stats.connected, 0);

        // No connection to this listener yet: one is opened, and the message follows.
        let far = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = far.local_addr().unwrap();
        assert!(side.send(Instant::now(), to, Bytes::from_static(MSG)));
        assert_eq!(accept_and_read(&mut side, &far, MSG.len()), MSG);
        assert_eq!(side.stats.connected, 1);
        assert!(side.has(to));
    }

    #[test]
    fn an_unframeable_stream_or_a_closed_peer_closes_the_connection() {
        let (mut side, addr) = side();
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while side.stats.framing_errors == 0 && Instant::now() < deadline {
            side.poll(Instant::now(), &mut Vec::new(), &|_| false);
        }
        assert_eq!(side.stats.framing_errors, 1);
        // Nothing was framed, so nothing will be answered: closed once its grace is over.
        assert_eq!(side.len(), 1);
        side.poll(
            Instant::now() + CLOSING_GRACE + SWEEP_EVERY,
            &mut Vec::new(),
            &|_| false,
        );
        assert_eq!(side.len(), 0);
        let mut buf = [0u8; 8];
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(client.read(&mut buf).unwrap_or(0), 0, "closed by us");

        let other = TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while side.len() == 0 && Instant::now() < deadline {
            side.poll(Instant::now(), &mut Vec::new(), &|_| false);
        }
        assert_eq!(side.len(), 1);
        drop(other);
        while side.len() == 1 && Instant::now() < deadline {
            side.poll(Instant::now(), &mut Vec::new(), &|_| false);
        }
        assert_eq!(side.len(), 0);
        assert_eq!(side.stats.closed, 2);
        // Both closes are reported, for the other shards to forget the routes.
        assert_eq!(side.take_closed().len(), 2);
        assert!(side.take_closed().is_empty());
    }

    #[test]
    fn a_response_whose_connection_is_gone_goes_to_the_via_sent_by() {
        let (mut side, _) = side();
        let far = TcpListener::bind("127.0.0.1:0").unwrap();
        let sent_by = far.local_addr().unwrap();
        let response = Bytes::from(format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:{};branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            sent_by.port()
        ));
        // The request's connection came from an ephemeral port, and is closed.
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(side.send(Instant::now(), gone, response.clone()));
        assert_eq!(accept_and_read(&mut side, &far, response.len()), response);
        assert!(side.has(sent_by));
    }

    #[test]
    fn a_request_for_a_client_whose_connection_closed_goes_to_its_next_hop() {
        let (mut side, addr) = side();
        let client = TcpStream::connect(addr).unwrap();
        let source = client.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !side.has(source) && Instant::now() < deadline {
            side.poll(Instant::now(), &mut Vec::new(), &|_| false);
        }
        drop(client);
        while side.has(source) && Instant::now() < deadline {
            side.poll(Instant::now(), &mut Vec::new(), &|_| false);
        }
        assert!(!side.has(source), "the client closed its connection");
        assert_eq!(side.take_closed(), vec![(source, true)]);
        // The caller listens at its Contact, which our BYE's Request-URI carries.
        let contact = TcpListener::bind("127.0.0.1:0").unwrap();
        let bye = Bytes::from(format!(
            "BYE sip:alice@127.0.0.1:{};transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/TCP 127.0.0.1:5080;branch=z9hG4bK1\r\n\
             From: <sip:b@x>;tag=2\r\nTo: <sip:a@x>;tag=1\r\nCall-ID: x\r\n\
             CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            contact.local_addr().unwrap().port()
        ));
        assert!(side.send(Instant::now(), source, bye.clone()));
        assert_eq!(accept_and_read(&mut side, &contact, bye.len()), bye);
        // A peer we never heard from keeps the address it was given (a request to a
        // listener we were told of, an outbound proxy say).
        assert!(!side.gone_sources.contains(&contact.local_addr().unwrap()));
    }

    #[test]
    fn a_connect_that_never_completes_fails_after_its_timeout() {
        let (mut side, _) = side();
        // A listener whose accept queue is full: Linux drops further SYNs, so a connect
        // to it stays in progress, as one to a host behind a dropping firewall does.
        let full = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        full.listen(0).unwrap();
        let to = full.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        while let Ok(c) = TcpStream::connect_timeout(&to, Duration::from_millis(300)) {
            queued.push(c);
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        let start = Instant::now();
        assert!(side.send(start, to, Bytes::from_static(MSG)));
        side.poll(start + Duration::from_secs(1), &mut Vec::new(), &|_| false);
        assert!(side.has(to) && !side.has_failures(), "still connecting");
        side.poll(
            start + CONNECT_TIMEOUT + SWEEP_EVERY,
            &mut Vec::new(),
            &|_| false,
        );
        assert_eq!(side.take_failures(), vec![to]);
        assert!(!side.has(to));
        assert_eq!(side.stats.failures, 1);
    }

    #[test]
    fn a_refused_connect_is_reported_as_a_failure_for_its_peer() {
        let (mut side, _) = side();
        // A port nobody listens on: bound, then closed.
        let gone = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let sent = side.send(Instant::now(), gone, Bytes::from_static(MSG));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !side.has_failures() && Instant::now() < deadline {
            side.poll(Instant::now(), &mut Vec::new(), &|_| false);
        }
        assert_eq!(side.take_failures(), vec![gone], "sent: {sent}");
        assert!(!side.has(gone));
        assert_eq!(side.stats.failures, 1);
    }

    #[test]
    fn an_unframeable_stream_still_gets_the_answers_to_what_came_before() {
        let (mut side, addr) = side();
        let mut client = TcpStream::connect(addr).unwrap();
        let mut sent = MSG.to_vec();
        sent.extend_from_slice(b"garbage without a length\r\n\r\n");
        client.write_all(&sent).unwrap();
        let got = gather(&mut side, 1);
        assert_eq!(got.len(), 1, "the message before the garbage is framed");
        let deadline = Instant::now() + Duration::from_secs(5);
        while side.stats.framing_errors == 0 && Instant::now() < deadline {
            side.poll(Instant::now(), &mut Vec::new(), &|_| false);
        }
        assert_eq!(side.stats.framing_errors, 1);
        // Its answer goes out, and the connection closes after its grace.
        assert!(side.send(Instant::now(), got[0].0, Bytes::from_static(MSG)));
        assert!(side.next_deadline().is_some());
        side.poll(
            Instant::now() + CLOSING_GRACE + SWEEP_EVERY,
            &mut Vec::new(),
            &|_| false,
        );
        assert_eq!(side.len(), 0);
        let mut back = Vec::new();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(back, MSG);
        assert_eq!(side.next_deadline(), None);
    }

    #[test]
    fn idle_connections_are_closed() {
        let (mut side, addr) = side();
        let _client = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        while side.len() == 0 && Instant::now() < deadline {
            side.poll(Instant::now(), &mut Vec::new(), &|_| false);
        }
        assert_eq!(side.len(), 1);
        side.poll(
            Instant::now() + Duration::from_secs(61),
            &mut Vec::new(),
            &|_| false,
        );
        assert_eq!(side.len(), 0);
    }
}
