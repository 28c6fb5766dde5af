//! The runtime: the only module with threads, sockets, clocks and channels.
//!
//! N shard threads (default: one per core), each with its own `SO_REUSEPORT` UDP socket on
//! the same address, its own [`Shard`](crate::shard::Shard) and an inbound queue. A
//! datagram is received in a `recvmmsg` batch by whichever socket the kernel chose; its
//! Call-ID (found by [`find_call_id`](crate::message::find_call_id), no parse) hashed with
//! [`shard_for_call_id`](crate::shard::shard_for_call_id) names the shard that owns it, and
//! datagrams for other shards move there in one queue message per batch. Every message of
//! a dialog is therefore handled by one thread, with no lock: the shards share nothing but
//! their queues. Transmits leave in `sendmmsg` batches.
//!
//! TCP (RFC 3261 §18, the `tcp` module) runs beside it on the same port: each thread has
//! its own listener and owns its connections; a framed message goes to its Call-ID's shard
//! like a datagram, and that shard's replies go back through the thread holding the
//! connection.
//!
//! Session events leave each shard in batches (one `Vec` per wake-up) on a bounded tokio
//! channel to the application ([`DialogManager::set_session_coordinator`]). When that
//! channel is full the shard keeps the batch, keeps running the protocol for the dialogs it
//! has, and answers new INVITEs 503 + Retry-After until the application catches up
//! ([`Admission::Backpressure`](crate::shard::Admission)); every refusal and drop is
//! counted in [`DialogStats`].
//!
//! # What it owns, what it may not touch
//! Sockets, threads, queues, the wall clock. It holds no protocol state of its own: that is
//! the shards'; it must not parse beyond the Call-ID scan, stream framing and the top Via
//! of a response whose connection is gone (RFC 3261 §18.2.2), nor build SIP messages.

mod lifecycle;
mod manager;
mod overload;
mod queue;
mod shared;
mod store;
mod tcp;
mod udp;
mod worker;
mod worker_stores;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use manager::DialogManager;
pub use shared::{SharedStoreConfig, SharedStoreStats};
pub use store::{FsyncPolicy, ShardStore, StoreConfig, StoreError, StoreStats};
pub use tcp::TcpStats;

/// `host:port` as a socket address: an IP address (`127.0.0.1:5060`, `[::1]:5060`) as
/// written, else the host name looked up with the system resolver (`localhost:5060`),
/// IPv4 first. For command lines; it may block on the resolver.
pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let addresses: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("{text}: {e}"))?
        .collect();
    preferred(&addresses, true).ok_or_else(|| format!("{text}: no address"))
}

/// The first of `addresses` in the family asked for (IPv4 or not), else the first.
pub(crate) fn preferred(addresses: &[SocketAddr], ipv4: bool) -> Option<SocketAddr> {
    addresses
        .iter()
        .find(|a| a.is_ipv4() == ipv4)
        .or(addresses.first())
        .copied()
}

use crate::shard::{SessionEvent, ShardConfig, ShardStats};
use crate::transaction::ServerTxnId;

/// Settings of a [`DialogManager`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where to listen (UDP, and TCP on the same port unless `tcp` is off). Port 0 picks a
    /// free port; [`DialogManager::local_addr`] tells which.
    pub listen: SocketAddr,
    /// Listen on TCP too and send over it (RFC 3261 §18: every element MUST speak UDP
    /// and TCP). Each shard thread has its own listener and connections.
    pub tcp: bool,
    /// A TCP connection with no traffic either way for this long is closed.
    pub tcp_idle: Duration,
    /// Most TCP connections per shard thread.
    /// 0 (the default): derived from the process's descriptor limit (`RLIMIT_NOFILE`),
    /// three quarters of it shared by the threads, so that accepted connections cannot
    /// take the descriptors the sockets and the metrics endpoint need.
    pub tcp_max_connections: usize,
    /// Most TCP connections one source address may open to one shard thread.
    pub tcp_max_per_source: usize,
    /// A TCP connection a peer opened that has not completed a message this long after
    /// its opening or its last whole message (half a header, or nothing) is closed.
    pub tcp_incomplete_after: Duration,
    /// Shard threads; 0 means one per available core.
    pub shards: usize,
    /// The address put in Via and Contact, when it differs from `listen` (a wildcard
    /// listen address is no address a peer can reach).
    pub advertised: Option<SocketAddr>,
    /// Settings given to every shard (its `local_addr` and `owner` are filled in).
    pub shard: ShardConfig,
    /// Who answers incoming calls.
    pub mode: AppMode,
    /// Capacity of each shard's inbound queue, in messages (a handed-over batch or a
    /// command is one message).
    pub queue_capacity: usize,
    /// Kernel socket buffer asked for, per socket and direction (bytes).
    pub socket_buffer: usize,
    /// After a round that did work, sleep this long before the next instead of waking
    /// per datagram (interrupt moderation): fewer wake-ups and fuller `recvmmsg` and
    /// `sendmmsg` batches for up to this much added latency. Zero: wake at once.
    pub coalesce: Duration,
    /// Receive-side overload: when a shard's socket has stayed undrained this long (every
    /// round read its full quota and more was waiting), new INVITEs get 503 + Retry-After
    /// until a round drains it, so the shard spends its time on the calls it has rather
    /// than letting the kernel drop datagrams of every call alike. Zero turns it off.
    pub overload_after: Duration,
    /// Persist confirmed dialogs here, and restore them at start (`store` module); `None`
    /// (the default) keeps them in memory only. Used when
    /// [`RecoveryConfig::enable_state_persistence`] is on.
    pub store: Option<StoreConfig>,
    /// What a restart does with the dialogs of the store.
    pub recovery: RecoveryConfig,
    /// Write confirmed dialogs and bindings to Redis too, for the nodes of a cluster
    /// (`shared` module); `None` (the default): this node keeps its state to itself.
    pub shared: Option<SharedStoreConfig>,
}

/// Dialog recovery across restarts, with the reference's (rvoip-dialog-core) names.
///
/// With `enable_state_persistence`, confirmed dialogs are written to
/// [`RuntimeConfig::store`] and taken back when the manager starts again, each announced
/// with [`SessionEvent::DialogRecovered`].
/// Each recovered dialog is then probed with an in-dialog OPTIONS at a random moment
/// within `recovery_timeout` (RFC 5057 §5.1): a 481 ends it, as does a 408 or no answer
/// `max_recovery_attempts` times; any other answer keeps it. A zero `recovery_timeout`
/// or `max_recovery_attempts` sends no probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// Persist confirmed dialogs and restore them at start (needs
    /// [`RuntimeConfig::store`]).
    pub enable_state_persistence: bool,
    /// The window in which each recovered dialog is probed.
    pub recovery_timeout: Duration,
    /// Probes that may fail (408, no answer) before a recovered dialog ends.
    pub max_recovery_attempts: u32,
}

impl Default for RecoveryConfig {
    /// Off; when turned on, probes within 30 s, 3 attempts.
    fn default() -> Self {
        RecoveryConfig {
            enable_state_persistence: false,
            recovery_timeout: Duration::from_secs(30),
            max_recovery_attempts: 3,
        }
    }
}

impl RuntimeConfig {
    /// Defaults for `listen`: a shard per core, the application answers calls.
    pub fn new(listen: SocketAddr) -> Self {
        RuntimeConfig {
            listen,
            shards: 0,
            advertised: None,
            shard: ShardConfig::new(listen),
            mode: AppMode::Application,
            queue_capacity: 4096,
            socket_buffer: 8 << 20,
            coalesce: Duration::ZERO,
            overload_after: Duration::from_millis(100),
            tcp: true,
            tcp_idle: Duration::from_secs(300),
            tcp_max_connections: 0,
            tcp_max_per_source: 64,
            tcp_incomplete_after: Duration::from_secs(10),
            store: None,
            recovery: RecoveryConfig::default(),
            shared: None,
        }
    }
}

/// Who answers incoming calls.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum AppMode {
    /// The application, through the session coordinator channel. Without a coordinator,
    /// incoming calls are refused with 480 (and counted).
    Application,
    /// The shard threads answer every INVITE and re-INVITE themselves, and 200 every
    /// in-dialog INFO/MESSAGE/UPDATE/NOTIFY/REFER (the benchmark target); other events
    /// still go to a coordinator if one is set.
    AutoAnswer(AutoAnswer),
    /// Application code runs on each shard thread, next to the protocol, with no channel
    /// hop (a load generator, a B2BUA's fast path).
    Inline(InlineApp),
}

/// Code that runs on one shard thread: it sees that shard's session events as they
/// happen and issues commands to the same shard. It must not block: it runs between
/// datagrams.
pub trait ShardApp: Send {
    /// A session event of this shard. Return it to pass it on to the coordinator (if
    /// one is set), or `None` when handled.
    fn on_event(
        &mut self,
        now: Instant,
        event: SessionEvent,
        shard: &mut ShardControl<'_>,
    ) -> Option<SessionEvent>;

    /// Called every round; returns when it next wants to be called (`None`: only on
    /// events).
    fn poll(&mut self, now: Instant, shard: &mut ShardControl<'_>) -> Option<Instant>;

    /// The shard thread is leaving.
    fn on_stop(&mut self, _shard: &mut ShardControl<'_>) {}
}

/// Makes the [`ShardApp`] of shard `index` of `count`.
pub type ShardAppFactory = Arc<dyn Fn(usize, usize) -> Box<dyn ShardApp> + Send + Sync>;

/// An inline application's factory.
#[derive(Clone)]
pub struct InlineApp(pub ShardAppFactory);

impl std::fmt::Debug for InlineApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineApp")
    }
}

/// What a [`ShardApp`] may do with its shard.
pub struct ShardControl<'a> {
    shard: &'a mut crate::shard::Shard,
    index: usize,
}

impl ShardControl<'_> {
    /// Runs a command on this shard at once.
    pub fn command(
        &mut self,
        now: Instant,
        command: crate::shard::DialogCommand,
    ) -> Result<crate::shard::CommandOutcome, crate::shard::DialogError> {
        self.shard.handle_command(now, command)
    }

    /// Live dialogs of this shard.
    pub fn dialog_count(&self) -> usize {
        self.shard.dialog_count()
    }

    /// This shard's counters.
    pub fn stats(&self) -> ShardStats {
        self.shard.stats()
    }

    /// Which shard this is.
    pub fn index(&self) -> usize {
        self.index
    }
}

pub use crate::auto_answer::AutoAnswer;

/// What a stop does with calls still up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopPolicy {
    /// Wait for them to end until the deadline, then leave.
    Wait,
    /// At the deadline, end them (BYE, CANCEL, 480) and give the peers two seconds to
    /// answer (a gone peer would not answer within Timer F's 32 s either).
    Bye,
}

/// A session event and the shard it came from.
#[derive(Debug)]
pub struct SessionCoordinationEvent {
    /// The shard (needed to answer a transaction: see [`Self::transaction`]).
    pub shard: usize,
    /// The event.
    pub event: SessionEvent,
}

impl SessionCoordinationEvent {
    /// The server transaction to answer, for events that carry one
    /// (RegistrationRequest, DialogRequest, SubscriptionRequest, IncomingRequest).
    pub fn transaction(&self) -> Option<TransactionHandle> {
        match &self.event {
            SessionEvent::RegistrationRequest { txn, .. }
            | SessionEvent::DialogRequest { txn, .. }
            | SessionEvent::SubscriptionRequest { txn, .. }
            | SessionEvent::IncomingRequest { txn, .. } => Some(TransactionHandle {
                shard: self.shard,
                txn: *txn,
            }),
            _ => None,
        }
    }
}

/// A server transaction the application must answer, with its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionHandle {
    /// The shard that owns it.
    pub shard: usize,
    /// The transaction.
    pub txn: ServerTxnId,
}

/// A request we sent outside any dialog, with its shard: the
/// [`StandaloneResult`](crate::shard::SessionEvent::StandaloneResult) event for it comes
/// from that shard and names `request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHandle {
    /// The shard that sent it.
    pub shard: usize,
    /// Its client transaction.
    pub request: crate::transaction::ClientTxnId,
}

/// I/O counters of one shard thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Datagrams read from this thread's socket.
    pub datagrams_received: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub recv_calls: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// `sendmmsg` batches.
    pub send_calls: u64,
    /// Datagrams the kernel refused to send (dropped).
    pub send_failures: u64,
    /// Datagrams moved to the shard owning their Call-ID.
    pub handed_over: u64,
    /// Datagrams dropped because the owning shard's queue was full.
    pub handover_drops: u64,
    /// Messages dropped unread because their source was banned or over its request
    /// limit ([`crate::guard`]).
    pub screened_out: u64,
    /// Datagrams dropped as larger than 65,535 bytes or from an unknown address family.
    pub truncated: u64,
    /// `recvmmsg` errors other than "nothing to read".
    pub receive_errors: u64,
    /// Session events handed to the application.
    pub events_delivered: u64,
    /// Batches of them.
    pub event_batches: u64,
    /// Times the application's channel was full (the shard then answered new INVITEs 503).
    pub event_channel_full: u64,
    /// Events waiting for room in the application's channel (a gauge, at snapshot time).
    pub event_backlog: u64,
    /// Events lost because the application closed its channel.
    pub events_undeliverable: u64,
    /// Incoming calls refused with 480 because no coordinator was set.
    pub calls_refused_no_coordinator: u64,
    /// Dialogs still up when a stop ended.
    pub dialogs_abandoned: u64,
    /// Times the socket stayed undrained for `overload_after` (new INVITEs got 503 then).
    pub receive_overloads: u64,
    /// Wake-ups that needed an eventfd write (the shard was asleep).
    pub eventfd_wakes: u64,
    /// The TCP side's counters.
    pub tcp: TcpStats,
    /// Open TCP connections (a gauge, at snapshot time).
    pub tcp_connections: u64,
    /// The dialog store's counters (zero without one).
    pub store: StoreStats,
}

impl IoStats {
    /// Adds another thread's counters.
    pub fn merge(&mut self, o: &IoStats) {
        self.datagrams_received += o.datagrams_received;
        self.recv_calls += o.recv_calls;
        self.datagrams_sent += o.datagrams_sent;
        self.send_calls += o.send_calls;
        self.send_failures += o.send_failures;
        self.handed_over += o.handed_over;
        self.handover_drops += o.handover_drops;
        self.screened_out += o.screened_out;
        self.truncated += o.truncated;
        self.receive_errors += o.receive_errors;
        self.events_delivered += o.events_delivered;
        self.event_batches += o.event_batches;
        self.event_channel_full += o.event_channel_full;
        self.event_backlog += o.event_backlog;
        self.events_undeliverable += o.events_undeliverable;
        self.calls_refused_no_coordinator += o.calls_refused_no_coordinator;
        self.dialogs_abandoned += o.dialogs_abandoned;
        self.receive_overloads += o.receive_overloads;
        self.store.merge(&o.store);
        self.eventfd_wakes += o.eventfd_wakes;
        self.tcp.merge(&o.tcp);
        self.tcp_connections += o.tcp_connections;
    }
}

/// One shard's snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardReport {
    /// Which shard.
    pub shard: usize,
    /// Its protocol counters.
    pub stats: ShardStats,
    /// Its thread's I/O counters.
    pub io: IoStats,
    /// Live dialogs.
    pub dialogs: usize,
    /// Live transactions.
    pub transactions: usize,
}

/// Counters of all shards, gathered on demand (each shard keeps its own; nothing is shared
/// on the hot path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DialogStats {
    /// Per shard, in shard order.
    pub shards: Vec<ShardReport>,
    /// Protocol counters summed.
    pub total: ShardStats,
    /// I/O counters summed.
    pub io: IoStats,
    /// The shared store's counters, when the node is clustered.
    pub shared_store: Option<SharedStoreStats>,
}

impl DialogStats {
    fn from_reports(mut shards: Vec<ShardReport>) -> Self {
        shards.sort_by_key(|r| r.shard);
        let mut total = ShardStats::default();
        let mut io = IoStats::default();
        for r in &shards {
            total.merge(&r.stats);
            io.merge(&r.io);
        }
        DialogStats {
            shards,
            total,
            io,
            shared_store: None,
        }
    }

    /// Live dialogs over all shards.
    pub fn dialogs(&self) -> usize {
        self.shards.iter().map(|r| r.dialogs).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_addresses_are_addresses_or_names() {
        assert_eq!(
            socket_addr("127.0.0.1:5060"),
            Ok("127.0.0.1:5060".parse().unwrap())
        );
        assert_eq!(socket_addr("[::1]:5070"), Ok("[::1]:5070".parse().unwrap()));
        // `localhost` is in /etc/hosts; IPv4 is taken first.
        assert_eq!(
            socket_addr("localhost:5080"),
            Ok("127.0.0.1:5080".parse().unwrap())
        );
        assert!(socket_addr("localhost").is_err(), "a port is needed");
        assert!(socket_addr("no-such-host.invalid:5060").is_err());
    }
}
