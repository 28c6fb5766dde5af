//! The listening side of a thread's TCP: its `SO_REUSEPORT` listener, the limits a new
//! connection must pass (per thread, per source, bans), and the pause when descriptors run
//! out.
//!
//! # What it owns, what it may not touch
//! The listener and the count of connections each source holds here. It hands admitted
//! streams to [`TcpSide`](super::TcpSide), which owns them from then on and tells it when
//! one of them closes ([`Acceptor::released`]).

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use socket2::{Domain, Protocol, Socket, Type};

use super::TcpStats;

/// Connections accepted per poll, so that a flood of them cannot starve the rest.
const ACCEPTS_PER_POLL: usize = 64;
/// Epoll token of the listener; connection `i` has `i + 1`.
pub(super) const LISTENER: u64 = 0;
/// The first pause of the listener after `accept` failed for want of descriptors
/// (EMFILE, ENFILE), doubling to [`ACCEPT_BACKOFF_MAX`]: the pending connection stays in
/// the backlog instead of being retried at once in a loop.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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

/// A thread's listener and its admission limits.
pub(super) struct Acceptor {
    listener: TcpListener,
    /// Connections peers opened, per source address.
    per_source: ahash::HashMap<IpAddr, usize>,
    /// The listener is out of the epoll set until then (descriptors ran out), and the
    /// pause to take next time.
    paused: Option<Instant>,
    backoff: Duration,
}

impl Acceptor {
    /// Takes `listener` (made non-blocking) and registers it in `epoll`.
    pub(super) fn new(listener: TcpListener, epoll: &Epoll) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        Ok(Acceptor {
            listener,
            per_source: ahash::HashMap::default(),
            paused: None,
            backoff: ACCEPT_BACKOFF_MIN,
        })
    }

    /// Until when accepting is paused, if it is.
    pub(super) fn paused_until(&self) -> Option<Instant> {
        self.paused
    }

    /// Ends a pause that is over, putting the listener back in `epoll`; true when it did
    /// (the backlog should be accepted now).
    pub(super) fn resume_if_due(&mut self, now: Instant, epoll: &Epoll) -> bool {
        if self.paused.is_none_or(|until| now < until) {
            return false;
        }
        self.paused = None;
        let _ = epoll.add(
            &self.listener,
            EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
        );
        true
    }

    /// Accepts up to [`ACCEPTS_PER_POLL`] connections and returns those the limits admit
    /// (non-blocking, no delay), each counted against its source until
    /// [`Acceptor::released`]. `open` is how many connections the thread holds; `banned`
    /// names sources refused outright.
    pub(super) fn accept(
        &mut self,
        now: Instant,
        epoll: &Epoll,
        (open, settings): (usize, &TcpSettings),
        banned: &dyn Fn(IpAddr) -> bool,
        stats: &mut TcpStats,
    ) -> Vec<(TcpStream, SocketAddr)> {
        let mut admitted = Vec::new();
        for _ in 0..ACCEPTS_PER_POLL {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.backoff = ACCEPT_BACKOFF_MIN;
                    if open + admitted.len() >= settings.max_connections {
                        stats.failures += 1;
                        continue; // dropped: closed
                    }
                    if banned(peer.ip()) {
                        stats.refused_banned += 1;
                        continue; // dropped: closed
                    }
                    let held = self.per_source.entry(peer.ip()).or_insert(0);
                    if *held >= settings.max_per_source {
                        stats.refused_per_source += 1;
                        if *held == 0 {
                            self.per_source.remove(&peer.ip());
                        }
                        continue; // dropped: closed
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    *held += 1;
                    admitted.push((stream, peer));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
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
                    let _ = epoll.delete(&self.listener);
                    self.paused = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    stats.accept_backoffs += 1;
                    if stats.accept_backoffs.is_power_of_two() {
                        tracing::warn!(
                            error = %e,
                            pauses = stats.accept_backoffs,
                            "out of file descriptors: TCP accepts paused"
                        );
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    break;
                }
            }
        }
        admitted
    }

    /// A connection `source` opened has closed (or was never kept).
    pub(super) fn released(&mut self, source: IpAddr) {
        if let Some(held) = self.per_source.get_mut(&source) {
            *held -= 1;
            if *held == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}
