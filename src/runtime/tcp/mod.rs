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

mod acceptor;
mod connection;

pub(crate) use acceptor::{TcpSettings, connection_cap, listen_shared};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::{Domain, Protocol, Socket, Type};

use crate::message::FramingError;
use acceptor::{Acceptor, LISTENER};
use connection::{Connection, Expiry, READ_PER_POLL};

/// Largest message accepted on a stream (the UDP maximum: what one datagram could carry).
pub(crate) const MAX_MESSAGE: usize = 65_535;
/// Readiness events taken per poll.
const EVENTS: usize = 64;
/// Most gone client sources remembered per thread; past it the set starts again.
const GONE_SOURCES_MAX: usize = 65_536;
/// How often idle connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
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

/// One thread's listener and connections.
pub(crate) struct TcpSide {
    epoll: Epoll,
    acceptor: Acceptor,
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
}

impl TcpSide {
    pub(crate) fn new(
        listener: TcpListener,
        settings: TcpSettings,
        now: Instant,
    ) -> std::io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let acceptor = Acceptor::new(listener, &epoll)?;
        Ok(TcpSide {
            epoll,
            acceptor,
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
    /// idle and unframeable connections, while there are any connections, or the end of
    /// a pause in accepting.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let sweep = (!self.by_peer.is_empty()).then(|| self.last_sweep + SWEEP_EVERY);
        match (sweep, self.acceptor.paused_until()) {
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
        if self.acceptor.resume_if_due(now, &self.epoll) {
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
            self.close_expired(now);
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
        if !c.enqueue(payload) {
            self.stats.dropped += 1;
            return false;
        }
        self.stats.messages_out += 1;
        if !c.connecting {
            self.flush(index, now);
        }
        true
    }

    fn accept(&mut self, now: Instant, banned: &dyn Fn(std::net::IpAddr) -> bool) {
        let admitted = self.acceptor.accept(
            now,
            &self.epoll,
            (self.by_peer.len(), &self.settings),
            banned,
            &mut self.stats,
        );
        for (stream, peer) in admitted {
            if let Some(old) = self.by_peer.get(&peer).copied() {
                self.close(old);
            }
            self.gone_sources.remove(&peer);
            if self.insert(stream, peer, (false, true), now).is_some() {
                self.stats.accepted += 1;
            } else {
                self.acceptor.released(peer.ip());
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
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
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
        let c = Connection::new(stream, peer, (connecting, accepted), now);
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
        if c.has_output() {
            self.failed.push(c.peer);
        }
        let _ = self.epoll.delete(&c.stream);
        if c.accepted {
            self.acceptor.released(c.peer.ip());
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

    /// Reads up to [`READ_PER_POLL`] bytes and hands up the whole messages; true when that
    /// quota stopped it.
    fn read(&mut self, index: usize, now: Instant, out: &mut Vec<(SocketAddr, Bytes)>) -> bool {
        let Some(c) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return false;
        };
        let read = c.read_socket(&mut self.scratch, now);
        let pings = c.cut_messages(now, out, &mut self.unframed, &mut self.stats);
        let peer = c.peer;
        if read.gone {
            self.close(index);
            return false;
        }
        for _ in 0..pings {
            // RFC 5626 §3.5.1: a CRLF CRLF ping is answered with one CRLF.
            self.stats.pings += 1;
            self.send(now, peer, Bytes::from_static(b"\r\n"));
        }
        read.bytes >= READ_PER_POLL
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
        if c.write_queued(now).is_err() {
            self.close(index);
            return;
        }
        let want = c.has_output();
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

    /// Closes the connections whose time is up ([`Connection::expiry`]); a connect that
    /// timed out is a failure for its messages' peer.
    fn close_expired(&mut self, now: Instant) {
        let (idle_after, incomplete_after) =
            (self.settings.idle_after, self.settings.incomplete_after);
        let expired: Vec<(usize, Expiry)> = self
            .connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?.expiry(now, idle_after, incomplete_after)?)))
            .collect();
        for (i, why) in expired {
            match why {
                Expiry::ConnectTimedOut => self.stats.failures += 1,
                Expiry::Stalled => self.stats.incomplete_closed += 1,
                Expiry::Idle | Expiry::Unframeable => {}
            }
            self.close(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connection::{CLOSING_GRACE, CONNECT_TIMEOUT};
    use std::io::{Read, Write};

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
