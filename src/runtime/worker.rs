//! One shard thread: its socket, its [`Shard`], its inbound queue and its wake-up.
//!
//! The loop: receive a `recvmmsg` batch, keep the datagrams whose Call-ID hashes here and
//! hand the others to their shard in one queue message each; take handed-over datagrams
//! and commands; fire due timers; pass session events on (or answer calls inline in
//! auto-answer mode); send every transmit of the round with `sendmmsg`; sleep in
//! `epoll_wait` on the socket and an eventfd until the next deadline.
//!
//! # What it owns, what it may not touch
//! The thread's socket, connections, queue, clock reads and the order of a round. What to
//! answer is the shard's (and the auto-answer policy's, `crate::auto_answer`); the worker
//! only moves bytes, commands and events between them.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, TryRecvError};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::overload::{Backlog, ReceiveBacklog};
use super::queue::{Inbound, ShardHandle, Waker};
use super::tcp::TcpSide;
use super::udp::{BatchReceiver, BatchSender, Received};
use super::{AppMode, IoStats, SessionCoordinationEvent, ShardReport, StopPolicy};
use crate::shard::{Admission, DialogCommand, SessionEvent, Shard, shard_for_datagram};
use crate::timer::TimerWheel;
use crate::transaction::{Transmit, Transport};

/// Everything a shard thread needs, moved onto it at start.
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) shard: Shard,
    pub(crate) socket: UdpSocket,
    pub(crate) inbound: Receiver<Inbound>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) peers: Arc<Vec<ShardHandle>>,
    pub(crate) mode: AppMode,
    pub(crate) coordinator: Option<tokio::sync::mpsc::Sender<Vec<SessionCoordinationEvent>>>,
    pub(crate) dialogs: Arc<AtomicUsize>,
    /// See [`RuntimeConfig::coalesce`](super::RuntimeConfig::coalesce).
    pub(crate) coalesce: Duration,
    /// See [`RuntimeConfig::overload_after`](super::RuntimeConfig::overload_after).
    pub(crate) backlog: ReceiveBacklog,
    /// Shards whose stop is complete. A shard leaves only when all are: until then it
    /// keeps answering new INVITEs 503 and handing datagrams over, so no Call-ID loses its
    /// owner while another shard still has calls. Touched only while stopping.
    pub(crate) stopped: Arc<AtomicUsize>,
    /// This thread's TCP listener and connections (none when TCP is off).
    pub(crate) tcp: Option<TcpSide>,
    /// Which shard holds the connection to a peer whose messages another shard handed us:
    /// our replies to it go there. An entry goes when that shard reports the connection
    /// closed; should those reports be lost (a full queue), the map is cleared past
    /// [`STREAM_ROUTES_MAX`], and a missing entry only makes this shard open a connection
    /// of its own.
    pub(crate) stream_routes: ahash::HashMap<SocketAddr, usize>,
    /// This shard's dialog store, when dialogs are persisted, and the records it restores
    /// before taking traffic.
    pub(crate) store: Option<super::store::ShardStore>,
    /// This shard's side of the shared store, when the node is clustered.
    pub(crate) shared: Option<super::shared::SharedWriter>,
    pub(crate) restore: Vec<Vec<u8>>,
}

/// Most remembered stream routes before the map is cleared.
const STREAM_ROUTES_MAX: usize = 1 << 20;

/// Per-thread state of the loop.
pub(super) struct Round {
    /// When the shard was last told the wall-clock time.
    wall_set: Instant,
    rx: BatchReceiver,
    tx: BatchSender,
    received: Received,
    outboxes: Vec<Vec<(SocketAddr, Bytes)>>,
    /// Messages framed out of this thread's connections, then per owning shard.
    stream_in: Vec<(SocketAddr, Bytes)>,
    stream_outboxes: Vec<Vec<(SocketAddr, Bytes)>>,
    /// Stream transmits for connections other shards hold, per shard.
    stream_sends: Vec<Vec<Transmit>>,
    transmits: Vec<Transmit>,
    events: Vec<SessionCoordinationEvent>,
    /// Event batches the application's channel had no room for, oldest first.
    backlog: VecDeque<Vec<SessionCoordinationEvent>>,
    /// The inline application, and when it wants to be polled next.
    app: Option<Box<dyn super::ShardApp>>,
    app_deadline: Option<Instant>,
    /// The auto-answer policy (in that mode), and its commands that wait.
    policy: Option<crate::auto_answer::AutoAnswerPolicy>,
    delayed: TimerWheel<DialogCommand>,
    pub(super) io: IoStats,
    stop: Option<Stopping>,
    /// Messages for other shards whose queue was full: sent again next round.
    peer_retry: Vec<(usize, crate::shard::PeerMessage)>,
    /// The round's writes for the dialog store.
    pub(super) persist: Vec<crate::shard::PersistOp>,
}

struct Stopping {
    policy: StopPolicy,
    deadline: Instant,
    /// This shard counted itself in [`Worker::stopped`].
    done: bool,
    /// After the deadline with [`StopPolicy::Bye`]: BYEs are out, wait this long for them.
    hard_deadline: Option<Instant>,
}

/// Most inbound messages taken per round, so the socket is never starved.
const INBOUND_PER_ROUND: usize = 256;
/// Most `recvmmsg` calls per round.
const RECEIVES_PER_ROUND: usize = 8;
/// After a stop's deadline with [`StopPolicy::Bye`]: how long the BYEs get.
const BYE_GRACE: Duration = Duration::from_secs(2);
/// How often a shard with a backlog of events retries the application's channel.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);

impl Worker {
    /// Runs until stopped; returns the final counters.
    /// Runs the shard's loop on `epoll` (from [`Worker::epoll`], made before any shard
    /// thread started: a thread cannot then fail for want of a descriptor that the
    /// others' first connections took).
    pub(crate) fn run(mut self, epoll: Epoll) -> ShardReport {
        let start = Instant::now();
        let mut round = Round {
            rx: BatchReceiver::new(),
            tx: BatchSender::new(),
            received: Received {
                datagrams: Vec::with_capacity(super::udp::BATCH),
                truncated: 0,
            },
            outboxes: (0..self.peers.len()).map(|_| Vec::new()).collect(),
            stream_in: Vec::new(),
            stream_outboxes: (0..self.peers.len()).map(|_| Vec::new()).collect(),
            stream_sends: (0..self.peers.len()).map(|_| Vec::new()).collect(),
            transmits: Vec::with_capacity(256),
            events: Vec::new(),
            backlog: VecDeque::new(),
            policy: match &self.mode {
                AppMode::AutoAnswer(auto) => Some(crate::auto_answer::AutoAnswerPolicy::new(
                    auto.clone(),
                    self.shard.local_addr().ip(),
                )),
                _ => None,
            },
            delayed: TimerWheel::new(start, Duration::from_millis(1)),
            io: IoStats::default(),
            stop: None,
            peer_retry: Vec::new(),
            persist: Vec::new(),
            app: match &self.mode {
                AppMode::Inline(factory) => Some((factory.0)(self.index, self.peers.len())),
                _ => None,
            },
            app_deadline: None,
            wall_set: start,
        };
        self.shard
            .set_wall_clock(start, std::time::SystemTime::now());
        self.restore(start, &mut round);
        loop {
            let now = Instant::now();
            // The shard's wall clock (for Date) follows the system's, stepped or not.
            if now.duration_since(round.wall_set) >= Duration::from_secs(1) {
                self.shard.set_wall_clock(now, std::time::SystemTime::now());
                round.wall_set = now;
            }
            let received = round.io.datagrams_received;
            let busy = self.receive(now, &mut round);
            let (streamed, streams_busy) = self.receive_streams(now, &mut round);
            let busy = busy || streams_busy;
            match self.backlog.observe(now, !busy) {
                Backlog::Began => {
                    round.io.receive_overloads += 1;
                    tracing::debug!(shard = self.index, "receive backlog: new calls get 503");
                }
                Backlog::Ended => tracing::debug!(shard = self.index, "receive backlog drained"),
                Backlog::Steady => {}
            }
            let (inbound, took) = self.take_inbound(now, &mut round);
            let worked = took || streamed || round.io.datagrams_received != received;
            self.fire_timers(now, &mut round);
            self.poll_app(now, &mut round);
            // The round's records so far go out before its events: an application told a
            // call is answered may count on it surviving a crash.
            self.persist(&mut Some(now), &mut round);
            self.pass_events(now, &mut round);
            self.pass_peer_messages(&mut round);
            self.update_admission(&round);
            self.flush(&mut round);
            self.dialogs
                .store(self.shard.dialog_count(), Ordering::Relaxed);
            if self.finished(now, &mut round) {
                self.flush(&mut round);
                break;
            }
            if busy || inbound {
                continue;
            }
            if worked && !self.coalesce.is_zero() {
                // Under load, let datagrams gather for a moment: one wake-up and one
                // recvmmsg/sendmmsg pair then serve many, which is most of the CPU cost.
                std::thread::sleep(self.coalesce);
                continue;
            }
            self.sleep(&epoll, &round);
        }
        if let Some(app) = &mut round.app {
            app.on_stop(&mut super::ShardControl {
                shard: &mut self.shard,
                index: self.index,
            });
        }
        let io = round.io;
        self.dialogs.store(0, Ordering::Relaxed);
        self.report(&io)
    }

    /// The epoll set of this shard's socket, waker and TCP side.
    pub(crate) fn epoll(&self) -> nix::Result<Epoll> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&self.socket, EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        epoll.add(&self.waker.fd, EpollEvent::new(EpollFlags::EPOLLIN, 1))?;
        if let Some(tcp) = &self.tcp {
            epoll.add(&tcp.epoll().0, EpollEvent::new(EpollFlags::EPOLLIN, 2))?;
        }
        Ok(epoll)
    }

    fn report(&self, io: &IoStats) -> ShardReport {
        let mut io = *io;
        if let Some(tcp) = &self.tcp {
            // The round's own count (sends no shard could take) plus the side's.
            io.tcp.merge(&tcp.stats);
            io.tcp_connections = tcp.len() as u64;
        }
        io.eventfd_wakes = self.waker.writes.load(Ordering::Relaxed);
        ShardReport {
            shard: self.index,
            stats: self.shard.stats(),
            io,
            dialogs: self.shard.dialog_count(),
            transactions: self.shard.transaction_count(),
        }
    }

    /// Reads the socket; true if a batch came full (more may be waiting).
    fn receive(&mut self, now: Instant, round: &mut Round) -> bool {
        let mut full = false;
        for _ in 0..RECEIVES_PER_ROUND {
            round.received.datagrams.clear();
            round.received.truncated = 0;
            if let Err(e) = round.rx.receive(&self.socket, &mut round.received) {
                round.io.receive_errors += 1;
                tracing::debug!(shard = self.index, error = %e, "recvmmsg failed");
                break;
            }
            round.io.truncated += round.received.truncated;
            let n = round.received.datagrams.len();
            if n == 0 {
                break;
            }
            round.io.recv_calls += 1;
            round.io.datagrams_received += n as u64;
            let shards = self.peers.len();
            for (from, datagram) in round.received.datagrams.drain(..) {
                // A banned or flooding source is dropped here, before any scan or
                // hand-over: its cost is this check.
                if !self.shard.screen(now, from) {
                    round.io.screened_out += 1;
                    continue;
                }
                // No Call-ID: the local shard parses it and answers 400 if it can.
                let owner = shard_for_datagram(&datagram, shards).unwrap_or(self.index);
                if owner == self.index {
                    self.shard
                        .handle_message(now, from, Transport::Udp, datagram);
                } else {
                    round.outboxes[owner].push((from, datagram));
                }
            }
            full = n == super::udp::BATCH;
            if !full {
                break;
            }
        }
        for (owner, outbox) in round.outboxes.iter_mut().enumerate() {
            if outbox.is_empty() {
                continue;
            }
            let count = outbox.len() as u64;
            let batch = std::mem::take(outbox);
            match self.peers[owner].try_send(Inbound::Datagrams(batch)) {
                Ok(()) => round.io.handed_over += count,
                // The owner is far behind: this is UDP loss, and retransmission covers it.
                Err(_) => round.io.handover_drops += count,
            }
        }
        full
    }

    /// Reads this thread's TCP connections: messages whose Call-ID hashes here are handled,
    /// the others go to their shard in one queue message each. (Any came, more may wait.)
    fn receive_streams(&mut self, now: Instant, round: &mut Round) -> (bool, bool) {
        let Some(tcp) = &mut self.tcp else {
            return (false, false);
        };
        let shard = &self.shard;
        let more = tcp.poll(now, &mut round.stream_in, &|ip| shard.is_banned(now, ip));
        for peer in tcp.take_failures() {
            self.shard
                .handle_transport_failure(now, peer, Transport::Tcp);
        }
        for (peer, header_block, error) in tcp.take_unframed() {
            self.shard
                .handle_unframeable(now, peer, Transport::Tcp, &header_block, error);
        }
        let closed = tcp.take_closed();
        if !closed.is_empty() {
            for (to, peer) in self.peers.iter().enumerate() {
                if to != self.index {
                    let peers = closed.clone();
                    // A full queue loses the report: see `stream_routes`.
                    let _ = peer.try_send(Inbound::StreamClosed {
                        owner: self.index,
                        peers,
                    });
                }
            }
        }
        if round.stream_in.is_empty() {
            return (false, more);
        }
        let shards = self.peers.len();
        for (from, message) in round.stream_in.drain(..) {
            if !self.shard.screen(now, from) {
                round.io.screened_out += 1;
                continue;
            }
            let owner = shard_for_datagram(&message, shards).unwrap_or(self.index);
            if owner == self.index {
                self.shard
                    .handle_message(now, from, Transport::Tcp, message);
            } else {
                round.stream_outboxes[owner].push((from, message));
            }
        }
        for (owner, outbox) in round.stream_outboxes.iter_mut().enumerate() {
            if outbox.is_empty() {
                continue;
            }
            let count = outbox.len() as u64;
            let messages = std::mem::take(outbox);
            let handover = Inbound::Stream {
                owner: self.index,
                messages,
            };
            match self.peers[owner].try_send(handover) {
                Ok(()) => round.io.handed_over += count,
                // The peer's TCP retransmits nothing: its transaction times out, as over
                // UDP when a datagram is lost.
                Err(_) => round.io.handover_drops += count,
            }
        }
        (true, more)
    }

    /// Takes handed-over datagrams and commands; (the queue had more, took any).
    fn take_inbound(&mut self, now: Instant, round: &mut Round) -> (bool, bool) {
        for taken in 0..INBOUND_PER_ROUND {
            match self.inbound.try_recv() {
                Ok(Inbound::Datagrams(batch)) => {
                    // Screened by the receiving thread; a ban made since (here, where
                    // the guessed user lives) drops the rest of a flood already queued.
                    for (from, datagram) in batch {
                        if self.shard.dropped_as_banned(now, from) {
                            round.io.screened_out += 1;
                            continue;
                        }
                        self.shard
                            .handle_message(now, from, Transport::Udp, datagram);
                    }
                }
                Ok(Inbound::Stream { owner, messages }) => {
                    if self.stream_routes.len() >= STREAM_ROUTES_MAX {
                        self.stream_routes.clear();
                    }
                    for (from, message) in messages {
                        if self.shard.dropped_as_banned(now, from) {
                            round.io.screened_out += 1;
                            continue;
                        }
                        self.stream_routes.insert(from, owner);
                        self.shard
                            .handle_message(now, from, Transport::Tcp, message);
                    }
                }
                Ok(Inbound::StreamClosed { owner, peers }) => {
                    for (peer, accepted) in peers {
                        if self.stream_routes.get(&peer) == Some(&owner) {
                            self.stream_routes.remove(&peer);
                        }
                        if accepted && let Some(tcp) = &mut self.tcp {
                            tcp.note_gone_source(peer);
                        }
                    }
                }
                Ok(Inbound::StreamSend(transmits)) => {
                    if let Some(tcp) = &mut self.tcp {
                        for t in transmits {
                            tcp.send(now, t.destination, t.payload);
                        }
                    }
                }
                Ok(Inbound::Command(command, reply)) => {
                    let outcome = self.shard.handle_command(now, *command);
                    let _ = reply.send(outcome);
                }
                Ok(Inbound::Peer(message)) => self.shard.handle_peer(now, message),
                Ok(Inbound::Claimed { key, record }) => {
                    self.shard.handle_claim(now, &key, record.as_deref());
                }
                Ok(Inbound::Released(keys)) => {
                    for key in keys {
                        self.shard.handle_released(&key);
                    }
                }
                Ok(Inbound::Stats(reply)) => {
                    let mut io = round.io;
                    io.event_backlog = round.backlog.iter().map(Vec::len).sum::<usize>() as u64;
                    let _ = reply.send(self.report(&io));
                }
                Ok(Inbound::Stop { policy, deadline }) => {
                    self.shard.set_admission(Admission::Stopping);
                    round.stop = Some(Stopping {
                        policy,
                        deadline,
                        done: false,
                        hard_deadline: None,
                    });
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return (false, taken > 0),
            }
        }
        (true, true)
    }

    fn fire_timers(&mut self, now: Instant, round: &mut Round) {
        if self.shard.poll_timeout().is_some_and(|t| t <= now) {
            self.shard.handle_timeout(now);
        }
        // An auto-answer step whose call went away meanwhile is no error.
        while let Some((_, command)) = round.delayed.poll_expired(now) {
            let _ = self.shard.handle_command(now, command);
        }
    }

    fn poll_app(&mut self, now: Instant, round: &mut Round) {
        if let Some(app) = &mut round.app
            && round.app_deadline.is_none_or(|d| d <= now)
        {
            round.app_deadline = app.poll(
                now,
                &mut super::ShardControl {
                    shard: &mut self.shard,
                    index: self.index,
                },
            );
        }
    }

    /// Moves session events to the application, answering calls inline in auto-answer
    /// mode; keeps the shard's admission in step with the channel's room.
    fn pass_events(&mut self, now: Instant, round: &mut Round) {
        while let Some(event) = self.shard.poll_event() {
            let event = match &mut round.app {
                Some(app) => {
                    let mut control = super::ShardControl {
                        shard: &mut self.shard,
                        index: self.index,
                    };
                    match app.on_event(now, event, &mut control) {
                        Some(e) => e,
                        None => continue,
                    }
                }
                None => event,
            };
            // The auto-answer policy answers what it answers; the rest goes on.
            if let Some(policy) = &round.policy
                && let Some(plan) = policy.react(&event)
            {
                let (shard, delayed) = (&mut self.shard, &mut round.delayed);
                plan.run(
                    |command| shard.handle_command(now, command).is_ok(),
                    |after, command| {
                        delayed.insert(now + after, command);
                    },
                );
                continue;
            }
            match (&self.mode, &event) {
                (AppMode::Application, SessionEvent::IncomingCall { dialog, .. })
                    if self.coordinator.is_none() =>
                {
                    // Nobody to ask: refuse at once rather than ring for minutes.
                    round.io.calls_refused_no_coordinator += 1;
                    let _ = self.shard.handle_command(
                        now,
                        DialogCommand::Reject {
                            dialog: dialog.clone(),
                            status: 480,
                        },
                    );
                    continue;
                }
                (
                    AppMode::Application,
                    SessionEvent::DialogRequest { txn, .. }
                    | SessionEvent::IncomingRequest { txn, .. }
                    | SessionEvent::RegistrationRequest { txn, .. },
                ) if self.coordinator.is_none() => {
                    // Nobody to ask: the request is refused now, not left to time out.
                    let _ = self.shard.handle_command(
                        now,
                        DialogCommand::Respond {
                            txn: *txn,
                            status: 480,
                            headers: Vec::new(),
                            body: bytes::Bytes::new(),
                        },
                    );
                    continue;
                }
                _ => {}
            }
            if self.coordinator.is_some() {
                round.events.push(SessionCoordinationEvent {
                    shard: self.index,
                    event,
                });
            }
        }
        let Some(coordinator) = &self.coordinator else {
            return;
        };
        if !round.events.is_empty() {
            round.backlog.push_back(std::mem::take(&mut round.events));
        }
        while let Some(batch) = round.backlog.pop_front() {
            let count = batch.len() as u64;
            match coordinator.try_send(batch) {
                Ok(()) => {
                    round.io.event_batches += 1;
                    round.io.events_delivered += count;
                }
                Err(tokio::sync::mpsc::error::TrySendError::Full(batch)) => {
                    round.io.event_channel_full += 1;
                    round.backlog.push_front(batch);
                    break;
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    round.io.events_undeliverable += count;
                }
            }
        }
    }

    /// Whether new calls are taken: not while stopping, nor while the application's
    /// channel or the socket is backed up.
    fn update_admission(&mut self, round: &Round) {
        let admission = match (&round.stop, round.backlog.is_empty()) {
            (Some(_), _) => Admission::Stopping,
            (None, true) if !self.backlog.overloaded() => Admission::Open,
            (None, _) => Admission::Backpressure,
        };
        if self.shard.admission() != admission {
            self.shard.set_admission(admission);
        }
    }

    /// Hands the shard's messages for other shards to their queues. A full queue keeps
    /// the message for the next round (a Replaces verdict must not be lost: its INVITE
    /// waits on it); a stopped shard's are dropped.
    fn pass_peer_messages(&mut self, round: &mut Round) {
        let retry = std::mem::take(&mut round.peer_retry);
        let fresh = std::iter::from_fn(|| self.shard.poll_peer());
        for (to, message) in retry.into_iter().chain(fresh.collect::<Vec<_>>()) {
            let Some(peer) = self.peers.get(to) else {
                continue;
            };
            match peer.try_send(Inbound::Peer(message)) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(Inbound::Peer(message))) => {
                    round.peer_retry.push((to, message));
                }
                Err(_) => tracing::debug!(shard = self.index, to, "peer shard gone"),
            }
        }
    }

    fn flush(&mut self, round: &mut Round) {
        // Read the clock only when a stream transmit or the store needs it.
        let mut now = None;
        self.persist(&mut now, round);
        while let Some(t) = self.shard.poll_transmit() {
            if t.transport == Transport::Udp {
                round.transmits.push(t);
            } else {
                let now = *now.get_or_insert_with(Instant::now);
                self.send_stream(now, t, round);
            }
        }
        for (to, sends) in round.stream_sends.iter_mut().enumerate() {
            if sends.is_empty() {
                continue;
            }
            let batch = std::mem::take(sends);
            if self.peers[to].try_send(Inbound::StreamSend(batch)).is_err() {
                round.io.tcp.failures += 1;
            }
        }
        if round.transmits.is_empty() {
            return;
        }
        round.io.datagrams_sent += round.transmits.len() as u64;
        round.io.send_calls += round.transmits.len().div_ceil(super::udp::BATCH) as u64;
        round.io.send_failures += round.tx.send(&self.socket, &round.transmits);
        round.transmits.clear();
    }

    /// A stream transmit: on our connection to its destination, else through the shard
    /// whose connection carried that peer's messages to us, else on a new connection.
    fn send_stream(&mut self, now: Instant, t: Transmit, round: &mut Round) {
        let Some(tcp) = &mut self.tcp else {
            round.io.tcp.failures += 1;
            return;
        };
        match self.stream_routes.get(&t.destination) {
            Some(&owner) if owner != self.index && !tcp.has(t.destination) => {
                round.stream_sends[owner].push(t);
            }
            _ => {
                tcp.send(now, t.destination, t.payload);
            }
        }
    }

    /// True when a stop is complete for every shard.
    fn finished(&mut self, now: Instant, round: &mut Round) -> bool {
        let Some(stop) = &mut round.stop else {
            return false;
        };
        if !stop.done && self.stop_complete(now, round) {
            if let Some(stop) = &mut round.stop {
                stop.done = true;
            }
            self.stopped.fetch_add(1, Ordering::AcqRel);
        }
        self.stopped.load(Ordering::Acquire) >= self.peers.len()
    }

    /// True when this shard's own calls are over, or its deadlines say to leave them.
    fn stop_complete(&mut self, now: Instant, round: &mut Round) -> bool {
        let Some(stop) = &mut round.stop else {
            return false;
        };
        if self.shard.dialog_count() == 0 && round.backlog.is_empty() {
            return true;
        }
        if now < stop.deadline {
            return false;
        }
        match (stop.policy, stop.hard_deadline) {
            (StopPolicy::Wait, _) => {
                round.io.dialogs_abandoned += self.shard.dialog_count() as u64;
                true
            }
            (StopPolicy::Bye, None) => {
                let ended = self.shard.terminate_all(now);
                tracing::info!(shard = self.index, ended, "stop deadline: ending calls");
                // Time for the BYEs to be answered (and retransmitted twice on UDP); a
                // peer that is gone will not answer within Timer F either.
                stop.hard_deadline = Some(now + BYE_GRACE);
                false
            }
            (StopPolicy::Bye, Some(hard)) => {
                if now >= hard {
                    round.io.dialogs_abandoned += self.shard.dialog_count() as u64;
                    return true;
                }
                false
            }
        }
    }

    /// Sleeps until the socket or the queue has something, or the next deadline.
    fn sleep(&mut self, epoll: &Epoll, round: &Round) {
        let now = Instant::now();
        let mut deadline = self.shard.poll_timeout();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        };
        consider(round.delayed.next_deadline());
        consider(round.app_deadline);
        if !round.backlog.is_empty() || !round.peer_retry.is_empty() {
            consider(Some(now + BACKLOG_RETRY));
        }
        if let Some(tcp) = &self.tcp {
            consider(tcp.next_deadline());
            if tcp.has_failures() {
                consider(Some(now));
            }
        }
        if let Some(stop) = &round.stop {
            consider(Some(stop.hard_deadline.unwrap_or(stop.deadline)));
            // While stopping, look at the dialog count now and then.
            consider(Some(now + Duration::from_millis(50)));
        }
        let timeout = match deadline {
            None => EpollTimeout::NONE,
            Some(d) => {
                let ms = d.saturating_duration_since(now).as_micros().div_ceil(1000);
                EpollTimeout::try_from(ms.min(60_000) as u64).unwrap_or(EpollTimeout::MAX)
            }
        };
        self.waker.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !self.inbound.is_empty() {
            self.waker.sleeping.store(false, Ordering::Relaxed);
            return;
        }
        let mut events = [EpollEvent::empty(); 3];
        let woke = epoll.wait(&mut events, timeout);
        self.waker.sleeping.store(false, Ordering::Relaxed);
        if let Ok(n) = woke {
            for e in &events[..n] {
                if e.data() == 1 {
                    // Reset the eventfd (non-blocking; nothing to read is fine).
                    let _ = self.waker.fd.read();
                }
            }
        }
    }
}
