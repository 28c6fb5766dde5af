//! The shard: everything one core owns for its Call-IDs. The transaction table, the dialog
//! table and the timer wheel (inside the transaction layer), and the dialog behaviour of
//! RFC 3261 §12–§15 as UAS and UAC.
//!
//! # What it owns, what it may not touch
//! All state of its dialogs and transactions; nothing is shared with another shard. It is
//! sans-IO like the layers below: datagrams and commands come in with `now`, transmits and
//! session events go out through `poll_*`. No threads, channels, sockets or clock reads.
//!
//! # Driving it
//! Call [`Shard::handle_datagram`] (or [`Shard::handle_message`] for a message framed out of
//! a TCP stream), [`Shard::handle_command`] or [`Shard::handle_timeout`], then drain
//! [`Shard::poll_transmit`] (each transmit names its transport) and [`Shard::poll_event`],
//! then sleep until [`Shard::poll_timeout`]. Tell it of a failed connection with
//! [`Shard::handle_transport_failure`].
//!
//! # Scope so far
//! UAS: INVITE → [`SessionEvent::IncomingCall`]; ringing, answer (2xx retransmitted until
//! the ACK, BYE after 64·T1 without one), reject; CANCEL (200, then 487 for the INVITE);
//! BYE; 481 for requests outside any dialog; 500 for an out-of-order CSeq; OPTIONS 200;
//! 405 with Allow for other methods; 503 with Retry-After over the dialog limit; 420 with
//! Unsupported for any Require but 100rel; reliable 18x and PRACK (RFC 3262, both sides);
//! 482 for a merged INVITE; 400/416/505 from the message layer's checks.
//! UAC: make a call, an early dialog per To tag (forking), confirmed on the first 2xx with
//! the ACK (and the ACK again for each retransmitted 2xx), a later fork's 2xx ACKed then
//! BYE'd, BYE, CANCEL, failure on a non-2xx final or Timer B.
//! REGISTER: refused (405), served by the registrar's binding table, or handed to the
//! application ([`RegisterMode`]).
//! re-INVITE both ways (§14): target refresh, answer/refuse, 500 and 491 on overlap, our
//! retry after 491 with the §14.1 wait, dialog end on 481/408/timeout.
//! In-dialog INFO, MESSAGE, UPDATE (a target refresh), NOTIFY and REFER from the peer go to
//! the application ([`SessionEvent::DialogRequest`], answered with `Respond`); ours are sent
//! with `SendRequest`, and 481/408/no answer ends the dialog (§12.2.1.2). `Terminate` ends a
//! call in any state. Requests outside a dialog (REGISTER, OPTIONS, MESSAGE) are sent with
//! `SendStandalone`; the incoming ones are answered as above. A 401 or 407 to our INVITE
//! or to such a request is answered with [`ShardConfig::credentials`] (Digest, `auth`
//! module) and the request goes again.
//! UPDATE offers go to the application and are answered in the 2xx; 491/500 when an
//! offer is already outstanding (RFC 3311 §5.2).
//! REFER both ways (RFC 3515, `refer` module): as recipient, 400 without Refer-To, a 2xx
//! sends NOTIFY `100 Trying` and `ReferStatus` the later ones (a REFER outside any dialog
//! makes one, whose only usage is that subscription); as sender, `Refer`, whose
//! NOTIFYs are answered here and reported as `ReferNotify`. A 481 to NOTIFY, SUBSCRIBE or
//! REFER ends that usage, not the call (RFC 5057 §5.1).
//! Replaces (RFC 3891, `replaces` module): an INVITE naming a dialog is checked by the
//! shard owning that dialog's Call-ID ([`PeerMessage`]), and its answer ends the dialog.
//! SUBSCRIBE/NOTIFY (RFC 6665) as notifier (`notifier` module, [`Subscriptions`]) and as
//! subscriber (`subscriber` module, [`DialogCommand::Subscribe`]).
//! Session timers (RFC 4028, `session_timer` module, [`SessionTimers`]): the interval and
//! refresher settled in the 2xx, refreshes by UPDATE or re-INVITE, BYE when none came.
//! Not yet: PUBLISH, and the throughput target of `shard/call_flow`.

mod api;
mod auth;
mod config;
mod dispatch;
mod entry;
mod notifier;
mod owners;
mod persist;
mod prack;
mod recovery;
mod refer;
mod register;
mod reinvite;
mod replaces;
mod reply;
mod requests;
mod route;
mod send;
mod session_timer;
mod standalone;
mod stats;
mod subscriber;
mod table;
mod takeover;
mod timers;
mod uac;
mod uas;
mod usages;

use entry::{Call, Entry, Outgoing, Pending, Phase, Reinvite, Slot, SlotRef, Usage};
use timers::DialogTimer;

pub use api::{CommandOutcome, DialogCommand, DialogError, SessionEvent, TerminationReason};
pub use config::{Admission, RegisterMode, ReliableProvisionals, ShardConfig, ShardOwner};
pub use route::{shard_for_call_id, shard_for_datagram};
pub use stats::{REQUEST_METHODS, ShardStats};
use stats::{class_slot, method_slot};

pub use auth::Credentials;
pub use notifier::{NotifyState, SubscriptionEnd, Subscriptions, subscription_event};
pub use persist::{
    PersistOp, RestoreError, Restored, is_dialog_store_key, record_routing_key, record_store_key,
    store_key_routing_key,
};
pub use recovery::RecoveryProbes;
pub use refer::{refer_sub_declined, replaces_of_refer_to};
pub use replaces::{PeerMessage, ReplacesVerdict};
pub use session_timer::{MIN_SE_FLOOR, Refresher, SessionTimers};
pub use subscriber::NewSubscription;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::dialog::{DialogId, DialogState};
use crate::message::{IdGenerator, Message};
use crate::timer::TimerHandle;

use crate::transaction::{ServerTxnId, TransactionLayer, Transmit, Transport};
pub use standalone::StandaloneRequest;

/// One shard.
pub struct Shard {
    config: ShardConfig,
    txn: TransactionLayer,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Dialog slots by dialog key, and by MakeCall handle while the call's first dialog
    /// lives (an index that never re-hashes keys through the slots when it grows).
    by_key: crate::index_table::IndexTable,
    key_hasher: ahash::RandomState,
    /// Our client transactions → what they were sent for (`owners` module): a response,
    /// a timeout or a failure finds its owner by one lookup.
    owners: owners::Owners,
    /// Unanswered INVITEs → their dialog, so a CANCEL finds it in O(1).
    by_server_txn: ahash::HashMap<ServerTxnId, u32>,
    /// INVITEs not yet answered or whose 2xx is not yet acknowledged, by the hash of
    /// (Call-ID, From tag, CSeq): a second INVITE with the same origin but another branch
    /// is a merged request (§8.2.2.2, 482).
    by_origin: ahash::HashMap<u64, u32>,
    /// The binding table, in registrar mode, and its expiry timer.
    registrar: Option<crate::registrar::Registrar>,
    registrar_timer: Option<(TimerHandle, Instant)>,
    /// Requests handed to the application (event mode), awaiting `Respond`; forgotten when
    /// their transaction ends.
    pending: ahash::HashMap<ServerTxnId, Pending>,
    /// The peer's re-INVITEs still unanswered when their dialog ended: they get 487
    /// (§15.1.2) as soon as `now` is known.
    orphaned: Vec<(ServerTxnId, Box<Message>)>,
    /// INVITEs with Replaces waiting for the named dialog's owner (`replaces` module).
    awaiting_verdict: ahash::HashMap<ServerTxnId, replaces::AwaitingVerdict>,
    /// A verdict sweep is on the wheel.
    verdict_sweep: bool,
    /// Dialogs serving subscriptions and subscriptions held (`usages` module).
    usage_counts: usages::UsageCounts,
    /// Messages for other shards (`replaces` module).
    peer_out: VecDeque<(usize, PeerMessage)>,
    ids: IdGenerator,
    events: VecDeque<SessionEvent>,
    buf: BytesMut,
    stats: ShardStats,
    live: usize,
    confirmed: usize,
    admission: Admission,
    /// Buffer for dialog-key lookups.
    key_scratch: Vec<u8>,
    /// `SIP/2.0/UDP <local>;branch=` and `SIP/2.0/TCP <local>;branch=`, written once.
    via_prefixes: [Box<[u8]>; 2],
    /// Our Contact values for UDP (`<sip:local>`) and TCP (`<sip:local;transport=tcp>`, so
    /// that a peer sends its in-dialog requests over TCP too: RFC 3263 §4.1 reads a sip: URI
    /// without the parameter as UDP). Shared: a message that needs one takes a reference count.
    contacts: [Bytes; 2],
    /// An instant and the wall-clock time it was ([`Shard::set_wall_clock`]).
    wall_clock: Option<(Instant, std::time::SystemTime)>,
    /// Per-source limits and bans.
    guard: crate::guard::Guard,
    /// The registrar's nonce-counts (replay detection).
    nonce_counts: crate::registrar::NonceCounts,
    /// Dialog records for the store, when [`ShardConfig::persist`] is on.
    persist: Option<persist::Persist>,
    /// Requests waiting for a peer's dialog to be claimed (`takeover`), when on.
    takeover: Option<takeover::Takeover>,
}

/// Nonces whose counts a shard keeps at most (each about 40 bytes).
const NONCES_TRACKED: usize = 65_536;

impl Shard {
    /// A shard whose clock starts at `now`, with ids from OS entropy.
    pub fn new(now: Instant, config: ShardConfig) -> Self {
        let ids = IdGenerator::from_entropy()
            .unwrap_or_else(|_| IdGenerator::from_seed(seed_from_time(now)));
        Self::with_ids(now, config, ids)
    }

    /// A shard with a given id generator (tests and simulations that must repeat).
    pub fn with_ids(now: Instant, config: ShardConfig, ids: IdGenerator) -> Self {
        let via_prefixes = [Transport::Udp, Transport::Tcp].map(|t| {
            format!("SIP/2.0/{} {};branch=", t.token(), config.local_addr)
                .into_bytes()
                .into_boxed_slice()
        });
        let contacts = [
            Bytes::from(format!("<sip:{}>", config.local_addr)),
            Bytes::from(format!("<sip:{};transport=tcp>", config.local_addr)),
        ];
        let registrar = match &config.register {
            RegisterMode::Registrar(c) => Some(crate::registrar::Registrar::new(c.clone())),
            _ => None,
        };
        let guard = crate::guard::Guard::new(config.guard.clone());
        let config_persist = config.persist;
        let config_takeover = config.takeover;
        Shard {
            guard,
            nonce_counts: crate::registrar::NonceCounts::new(NONCES_TRACKED),
            txn: {
                let mut txn = TransactionLayer::new(now, config.timers);
                txn.set_stream_above(config.stream_above.filter(|_| config.tcp));
                txn
            },
            config,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: crate::index_table::IndexTable::new(),
            key_hasher: ahash::RandomState::new(),
            owners: owners::Owners::default(),
            by_server_txn: ahash::HashMap::default(),
            by_origin: ahash::HashMap::default(),
            registrar,
            registrar_timer: None,
            pending: ahash::HashMap::default(),
            orphaned: Vec::new(),
            awaiting_verdict: ahash::HashMap::default(),
            verdict_sweep: false,
            usage_counts: usages::UsageCounts::default(),
            peer_out: VecDeque::new(),
            ids,
            events: VecDeque::new(),
            buf: BytesMut::with_capacity(4096),
            stats: ShardStats::default(),
            live: 0,
            confirmed: 0,
            key_scratch: Vec::with_capacity(128),
            admission: Admission::Open,
            via_prefixes,
            contacts,
            wall_clock: None,
            persist: persist::persist_state(config_persist),
            takeover: takeover::takeover_state(config_takeover),
        }
    }

    /// Tells the shard what wall-clock time `now` is, for the `Date` of the 2xx to
    /// REGISTER (RFC 3261 §10.3 step 8). The shard reads no clock: the runtime calls this
    /// now and then; without it no `Date` is written.
    pub fn set_wall_clock(&mut self, now: Instant, wall: std::time::SystemTime) {
        self.wall_clock = Some((now, wall));
    }

    /// The wall-clock time at `now`, when [`Shard::set_wall_clock`] said one.
    pub(crate) fn wall_time(&self, now: Instant) -> Option<std::time::SystemTime> {
        let (at, wall) = self.wall_clock?;
        Some(wall + now.saturating_duration_since(at))
    }

    /// Our address, as Via sent-by and Contact say it.
    pub fn local_addr(&self) -> SocketAddr {
        self.config.local_addr
    }

    /// Live dialogs (any phase).
    pub fn dialog_count(&self) -> usize {
        self.live
    }

    /// Whether new calls are taken (the runtime sets this from the event channel's fill
    /// and on stop).
    pub fn set_admission(&mut self, admission: Admission) {
        self.admission = admission;
    }

    /// The current admission.
    pub fn admission(&self) -> Admission {
        self.admission
    }

    /// Ends every live call the way [`DialogCommand::Terminate`] does (CANCEL, 480 or
    /// BYE); returns how many were asked to end. Used by a graceful stop past its deadline.
    pub fn terminate_all(&mut self, now: Instant) -> usize {
        let ids: Vec<DialogId> = self
            .slots
            .iter()
            .filter_map(|s| s.entry.as_ref())
            .filter(|e| !matches!(e.phase, Phase::Terminating { .. } | Phase::Early { .. }))
            .map(|e| e.call.clone().unwrap_or_else(|| e.dialog.id.clone()))
            .collect();
        let mut ended = 0;
        for id in ids {
            if self.terminate(now, &id).is_ok() {
                ended += 1;
            }
        }
        self.drain(now);
        ended
    }

    /// Live transactions.
    pub fn transaction_count(&self) -> usize {
        self.txn.len()
    }

    /// Counters (dialogs by state kept as they change: no scan).
    pub fn stats(&self) -> ShardStats {
        let mut s = self.stats;
        s.dialogs_confirmed = self.confirmed as u64;
        s.dialogs_early = (self.live - self.confirmed) as u64;
        self.debug_assert_usage_counts();
        s.subscription_dialogs_served = self.usage_counts.serving as u64;
        s.subscriptions_held = self.usage_counts.watching as u64;
        s.transactions = *self.txn.stats();
        s.guard = self.guard.stats();
        s
    }

    /// Marks a dialog confirmed (keeps the by-state count).
    fn set_confirmed(&mut self, index: u32) {
        if let Some(e) = self
            .slots
            .get_mut(index as usize)
            .and_then(|s| s.entry.as_mut())
            && e.dialog.state != DialogState::Confirmed
        {
            e.dialog.state = DialogState::Confirmed;
            self.confirmed += 1;
            self.dialog_changed(index);
        }
    }

    /// Replaces the call timer of the call at `index` with `kind`, due `after` from now.
    fn arm_call_timer(&mut self, now: Instant, index: u32, kind: DialogTimer, after: Duration) {
        let token = self.token(index, kind);
        let Some(e) = self.entry_mut(index) else {
            return;
        };
        let old = e.call_timer.take();
        if let Some((old, _)) = old {
            self.txn.cancel_timer(old);
        }
        let timer = self.txn.schedule_after(now, after, token);
        if let Some(e) = self.entry_mut(index) {
            e.call_timer = Some((timer, kind));
        }
    }

    /// The call at `index` is confirmed: its ring timeout ends, and its longest duration
    /// starts, if one is set (once: a retransmitted 2xx does not restart it).
    pub(super) fn limit_call_duration(&mut self, now: Instant, index: u32) {
        let limit = self.config.max_call_duration;
        let Some(e) = self.entry_mut(index) else {
            return;
        };
        match (e.call_timer, limit) {
            (Some((_, DialogTimer::CallLimit)), _) => {}
            (_, Some(limit)) => self.arm_call_timer(now, index, DialogTimer::CallLimit, limit),
            (Some((ring, _)), None) => {
                e.call_timer = None;
                self.txn.cancel_timer(ring);
            }
            (None, None) => {}
        }
    }

    /// The call at `index` reached its length limit: BYE (or, when it cannot be sent,
    /// the dialog ends here).
    pub(super) fn call_limit_reached(&mut self, now: Instant, index: u32) {
        let Some(e) = self.entry_mut(index) else {
            return;
        };
        e.call_timer = None;
        if !matches!(e.phase, Phase::Established { .. }) {
            return;
        }
        self.stats.calls_over_limit += 1;
        if self
            .send_bye(now, index, TerminationReason::MaxDuration)
            .is_err()
            && let Some(e) = self.remove(index)
        {
            self.events.push_back(SessionEvent::CallTerminated {
                dialog: e.dialog.id,
                reason: TerminationReason::MaxDuration,
            });
        }
    }

    /// The state of a dialog, if this shard has it.
    pub fn dialog_state(&self, dialog: &DialogId) -> Option<DialogState> {
        let i = self.find(dialog)?;
        self.slots[i as usize]
            .entry
            .as_ref()
            .map(|e| e.dialog.state)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.txn.poll_transmit()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Shard::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.txn.poll_timeout()
    }

    /// A datagram from `from`, received at `now` (UDP): screened ([`Shard::screen`]),
    /// then handled.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: Bytes) {
        if self.screen(now, from) {
            self.handle_message(now, from, Transport::Udp, datagram);
        }
    }

    /// Whether a message from `from` may be handled at `now`: false while `from` is
    /// banned or over its request limit ([`crate::guard`]); such a message is dropped
    /// unanswered, as Kamailio's pike drops it. A ban made here is handed to the other
    /// shards ([`Shard::poll_peer`]). The runtime screens each message once, where it is
    /// received, before routing it; [`Shard::handle_message`] does not screen.
    pub fn screen(&mut self, now: Instant, from: SocketAddr) -> bool {
        let mut banned = None;
        let admitted = self.guard.admit(now, from.ip(), &mut banned);
        if let Some(ban) = banned {
            self.tell_peers_of_ban(ban);
        }
        admitted
    }

    /// Whether `source` is banned here at `now` (nothing counted): a connection from it is
    /// refused at accept.
    pub fn is_banned(&self, now: Instant, source: std::net::IpAddr) -> bool {
        self.guard.is_banned(now, source)
    }

    /// Whether a message screened by another thread's shard (handed over since) comes
    /// from a source banned here meanwhile: it is dropped, as at screening.
    pub fn dropped_as_banned(&mut self, now: Instant, from: SocketAddr) -> bool {
        self.guard.drop_if_banned(now, from.ip())
    }

    /// Hands a ban made here to every other shard.
    fn tell_peers_of_ban(&mut self, ban: crate::guard::Ban) {
        let Some(owner) = self.config.owner else {
            return;
        };
        for shard in (0..owner.count).filter(|&s| s != owner.index) {
            self.peer_out.push_back((
                shard,
                PeerMessage::Ban {
                    source: ban.source,
                    until: ban.until,
                },
            ));
        }
    }

    /// A message from `from` over `transport`, received at `now`: a UDP datagram, or one
    /// message framed out of a stream connection (the runtime's framing, §18.3). Responses
    /// to it, and the in-dialog requests of a dialog it makes, go back over `transport`
    /// (over a stream, on the connection to `from`).
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        datagram: Bytes,
    ) {
        self.stats.datagrams_in += 1;
        let Ok(msg) = Message::parse(datagram.clone()) else {
            self.stats.parse_errors += 1;
            self.answer_unparseable(from, transport, &datagram);
            return;
        };
        match msg.status() {
            Some(code) => self.stats.responses_in[class_slot(code)] += 1,
            None => self.stats.requests_in[method_slot(msg.method())] += 1,
        }
        let handled = if msg.is_request() {
            self.txn.handle_request(now, from, transport, msg)
        } else if let Err(reason) = msg.check_response_to_ua() {
            // §18.1.2, §8.1.3.3, RFC 4475 §3.1.2.5: a bad response is discarded, before
            // any transaction acts on it.
            self.stats.bad_responses += 1;
            tracing::debug!(%from, ?reason, "bad response discarded");
            Ok(())
        } else {
            self.txn.handle_response(now, from, msg)
        };
        if handled.is_err() {
            // The message parsed but its key headers did not (an unreadable top Via or
            // CSeq): no transaction can be made for it.
            self.stats.parse_errors += 1;
            self.answer_unparseable(from, transport, &datagram);
        }
        self.drain(now);
    }

    /// The runtime could not deliver to `destination` over `transport` (a stream connection
    /// refused, reset, or closed with messages unsent): the client transactions sending
    /// there fail at once, as a timeout would fail them later (a BYE's dialog ends, a call
    /// is reported failed).
    pub fn handle_transport_failure(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        transport: Transport,
    ) {
        self.txn.transport_failed(now, destination, transport);
        self.drain(now);
    }

    /// A message on a stream that could not be framed (`error`: no Content-Length, an
    /// unreadable one, or over the size limit; §18.3), of which the runtime has the
    /// `header_block`: a request gets a stateless 400 (513 when too large) with the
    /// reason in its phrase, on the connection it came on, before that closes. A response
    /// is only counted. The body, whose length is unknown, is never looked at.
    pub fn handle_unframeable(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        header_block: &[u8],
        error: crate::message::FramingError,
    ) {
        self.stats.datagrams_in += 1;
        self.stats.parse_errors += 1;
        let (status, reason) = error.status();
        self.answer_broken(from, transport, header_block, status, reason);
        self.drain(now);
    }

    /// A stateless 400 for a request that could not be parsed, when its Via can be
    /// read (RFC 3261 §8.2.2; RFC 4475 §3.1.2 on UDP); responses and hopeless datagrams
    /// are only counted.
    fn answer_unparseable(&mut self, from: SocketAddr, transport: Transport, datagram: &[u8]) {
        self.answer_broken(from, transport, datagram, 400, "Bad Request");
    }

    /// A stateless `status` response to a request that could not be used, when its Via
    /// can be read.
    fn answer_broken(
        &mut self,
        from: SocketAddr,
        transport: Transport,
        datagram: &[u8],
        status: u16,
        reason: &str,
    ) {
        let tag = self.ids.tag();
        let Some(salvaged) =
            crate::message::salvage_response(datagram, status, reason, tag.as_bytes())
        else {
            return;
        };
        let destination = match salvaged.via_port {
            Some(port) if !transport.is_reliable() => SocketAddr::new(from.ip(), port),
            _ => from,
        };
        self.stats.requests_rejected += 1;
        self.stats.responses_out[class_slot(status)] += 1;
        self.txn
            .send_stateless(destination, transport, salvaged.response);
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.txn.handle_timeout(now);
        self.drain(now);
    }

    /// Applies a command from the application.
    pub fn handle_command(
        &mut self,
        now: Instant,
        command: DialogCommand,
    ) -> Result<CommandOutcome, DialogError> {
        let out = match command {
            DialogCommand::MakeCall {
                from,
                to,
                request_uri,
                destination,
                sdp,
                headers,
            } => self
                .make_call(
                    now,
                    uac::NewCall {
                        from: &from,
                        to: &to,
                        request_uri: &request_uri,
                        destination,
                        sdp,
                        headers: &headers,
                    },
                )
                .map(CommandOutcome::Call),
            DialogCommand::Ringing { dialog } => {
                self.ringing(now, &dialog).map(|()| CommandOutcome::Done)
            }
            DialogCommand::Answer { dialog, sdp } => self
                .answer(now, &dialog, sdp)
                .map(|()| CommandOutcome::Done),
            DialogCommand::Reject { dialog, status } => self
                .reject(now, &dialog, status)
                .map(|()| CommandOutcome::Done),
            DialogCommand::Cancel { call } => {
                self.cancel(now, &call).map(|()| CommandOutcome::Done)
            }
            DialogCommand::Bye { dialog } => self.bye(now, &dialog).map(|()| CommandOutcome::Done),
            DialogCommand::ReInvite { dialog, sdp } => self
                .send_reinvite(now, &dialog, sdp)
                .map(|()| CommandOutcome::Done),
            DialogCommand::SendRequest {
                dialog,
                method,
                headers,
                body,
            } => self
                .send_in_dialog(now, &dialog, &method, &headers, &body)
                .map(|_| CommandOutcome::Done),
            DialogCommand::Terminate { dialog } => {
                self.terminate(now, &dialog).map(|()| CommandOutcome::Done)
            }
            DialogCommand::SendStandalone(request) => self
                .send_standalone(now, &request)
                .map(CommandOutcome::Request),
            DialogCommand::Respond {
                txn,
                status,
                headers,
                body,
            } => self
                .respond_pending(now, txn, status, &headers, &body)
                .map(|()| CommandOutcome::Done),
            DialogCommand::Refer { dialog, refer_to } => self
                .send_refer(now, &dialog, &refer_to)
                .map(|()| CommandOutcome::Done),
            DialogCommand::ReferStatus {
                dialog,
                refer_cseq,
                status,
            } => self
                .refer_status(now, &dialog, refer_cseq, status)
                .map(|()| CommandOutcome::Done),
            DialogCommand::Subscribe(new) => self.subscribe(now, &new),
            DialogCommand::Unsubscribe { subscription } => self
                .unsubscribe(now, &subscription)
                .map(|()| CommandOutcome::Done),
            DialogCommand::Notify {
                dialog,
                event,
                state,
                headers,
                body,
            } => self
                .send_notify(now, &dialog, &event, &state, &headers, &body)
                .map(|()| CommandOutcome::Done),
        };
        self.drain(now);
        out
    }
}

/// The transport a request to `uri` goes over: its `transport` parameter, else UDP (RFC
/// 3263 §4.1 for a sip: URI with no parameter; sipshard does no NAPTR). A parameter naming
/// a transport sipshard does not speak (TLS, SCTP, WebSocket) is an error: sending such a
/// request over UDP instead would be wrong.
pub(crate) fn uri_transport(uri: &[u8]) -> Result<Transport, DialogError> {
    // A URI without parameters (nearly every Request-URI we are given) has none to read.
    if !uri.contains(&b';') {
        return Ok(Transport::Udp);
    }
    let Ok(parsed) = crate::message::Uri::parse(uri) else {
        return Ok(Transport::Udp);
    };
    match parsed.as_sip().and_then(|s| s.transport()) {
        None => Ok(Transport::Udp),
        Some(token) => Transport::from_token(token).ok_or_else(|| {
            DialogError::UnsupportedTransport(String::from_utf8_lossy(token).into_owned())
        }),
    }
}

impl Shard {
    /// [`uri_transport`], refusing TCP when the runtime has none.
    fn request_transport(&self, uri: &[u8]) -> Result<Transport, DialogError> {
        match uri_transport(uri)? {
            Transport::Tcp if !self.config.tcp => {
                Err(DialogError::UnsupportedTransport("tcp (off)".to_owned()))
            }
            t => Ok(t),
        }
    }
}

/// (Call-ID, From tag, CSeq number) of a request, hashed: the key of `by_origin`. A hit
/// is confirmed against the pending INVITE itself ([`same_origin`]), so a collision never
/// refuses a call; no allocation per INVITE.
fn origin_key(hasher: &ahash::RandomState, request: &Message) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = hasher.build_hasher();
    h.write(request.call_id().unwrap_or_default());
    h.write_u8(0);
    h.write(request.from_tag().ok().flatten().unwrap_or_default());
    h.write_u32(request.cseq().map_or(0, |c| c.seq));
    h.finish()
}

/// Whether the dialog a UAS made for an INVITE has that `request`'s Call-ID, From tag and
/// CSeq number (§8.2.2.2), while its 2xx awaits the ACK.
fn answered_origin(dialog: &crate::dialog::Dialog, request: &Message) -> bool {
    request.call_id() == Some(dialog.id.call_id())
        && request.from_tag().ok().flatten().unwrap_or_default() == dialog.id.remote_tag()
        && request.cseq().map(|c| c.seq).ok() == dialog.remote_cseq
}

/// Whether two requests have the same Call-ID, From tag and CSeq number (§8.2.2.2).
fn same_origin(a: &Message, b: &Message) -> bool {
    a.call_id() == b.call_id()
        && a.from_tag().ok().flatten() == b.from_tag().ok().flatten()
        && a.cseq().map(|c| c.seq).ok() == b.cseq().map(|c| c.seq).ok()
}

/// A fallback seed when the OS has no entropy to give (never expected on Linux).
fn seed_from_time(now: Instant) -> [u8; 32] {
    let mut seed = [0u8; 32];
    let t = format!("{now:?}{:?}", std::thread::current().id());
    for (i, b) in t.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    seed
}
