//! The transaction layer (RFC 3261 §17, RFC 6026): client and server, INVITE and non-INVITE,
//! timers A–M, matching, retransmission and absorption, on one shard.
//!
//! # What it owns, what it may not touch
//! The shard's transaction table and its timer wheel (which the dialog layer shares through
//! [`TransactionLayer::schedule`]). It is sans-IO: time comes in as `now`, datagrams come in
//! already parsed, and what must go out is queued for [`TransactionLayer::poll_transmit`]. It
//! never reads the clock, touches a socket, spawns or locks.
//!
//! # Driving it
//! After every `handle_*` or `send_*` call, and after [`TransactionLayer::handle_timeout`],
//! drain [`TransactionLayer::poll_transmit`] and [`TransactionLayer::poll_event`], then sleep
//! until [`TransactionLayer::poll_timeout`].
//!
//! # States
//! Each machine's states are an enum whose variants hold exactly the timers and messages that
//! state needs; Terminated is the transaction's removal from the table (with a
//! [`TxnEvent::Terminated`]).

mod api;
mod client;
mod config;
mod key;
mod server;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::{Message, Method, ParseError};
use crate::timer::{TimerHandle, TimerWheel};

use api::SlotId;
pub use api::{ClientTxnId, ServerTxnId, Transmit, Transport, TxnError, TxnEvent, TxnId, TxnStats};
pub use config::{TimerConfig, TimerName};

use client::{ClientInvite, ClientNonInvite};
use server::{ServerInvite, ServerNonInvite};

/// The state of one transaction: the four machines of RFC 3261 §17, named as the RFC names
/// them.
#[allow(clippy::enum_variant_names)]
#[derive(Debug)]
enum State {
    ClientInvite(ClientInvite),
    ClientNonInvite(ClientNonInvite),
    ServerInvite(ServerInvite),
    ServerNonInvite(ServerNonInvite),
}

/// A transaction key, inline when it fits (usually: a 30-byte branch, an IPv4 host, port and
/// method make about 50), else on the heap.
#[derive(Debug)]
enum Key {
    Inline(arrayvec::ArrayVec<u8, 48>),
    Heap(Box<[u8]>),
}

impl Key {
    fn new(bytes: &[u8]) -> Key {
        match arrayvec::ArrayVec::try_from(bytes) {
            Ok(inline) => Key::Inline(inline),
            Err(_) => Key::Heap(bytes.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline(k) => k,
            Key::Heap(k) => k,
        }
    }
}

#[derive(Debug)]
struct Transaction {
    key: Key,
    /// Client: where the request goes. Server: where responses go (§18.2.2, RFC 3581).
    peer: SocketAddr,
    /// Client: the request, for retransmission and for building the ACK to a non-2xx.
    /// Server: the request, for building a 100 Trying.
    request: Bytes,
    state: State,
}

struct Slot {
    generation: u32,
    /// The transaction's transport (kept here, beside the generation, where it fills
    /// padding: 8 bytes less per transaction than inside it).
    transport: Transport,
    /// A client transaction sent over TCP only because its request was too large for UDP
    /// (§18.1.1): it falls back to UDP if the connection cannot be made. (Padding too.)
    upgraded: bool,
    txn: Option<Transaction>,
}

/// What a timer in the wheel stands for.
#[derive(Clone, Copy, Debug)]
enum TimerEntry {
    Txn { id: SlotId, name: TimerName },
    User { token: u64 },
}

/// A retransmission timer and its current interval (in microseconds: 12 bytes instead of a
/// 24-byte Duration pair, on every transaction; intervals stay far below u32::MAX µs).
#[derive(Clone, Copy, Debug)]
struct Retransmit {
    timer: TimerHandle,
    interval_us: u32,
}

impl Retransmit {
    fn new(timer: TimerHandle, interval: Duration) -> Self {
        let mut r = Retransmit {
            timer,
            interval_us: 0,
        };
        r.set_interval(interval);
        r
    }

    fn interval(&self) -> Duration {
        Duration::from_micros(u64::from(self.interval_us))
    }

    fn set_interval(&mut self, d: Duration) {
        self.interval_us = d.as_micros().min(u128::from(u32::MAX)) as u32;
    }
}

/// The transaction table of one shard.
pub struct TransactionLayer {
    config: TimerConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slab indices by key hash; the key itself lives once, in the transaction.
    by_key: crate::index_table::IndexTable,
    hasher: ahash::RandomState,
    timers: TimerWheel<TimerEntry>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
    scratch: Vec<u8>,
    stats: TxnStats,
    /// Live client transactions over stream transports (so a connection failure walks the
    /// table only when one may be affected).
    stream_clients: usize,
    /// Requests over this many bytes that would go over UDP go over TCP (§18.1.1); `None`:
    /// never (no TCP).
    stream_above: Option<usize>,
}

impl TransactionLayer {
    /// An empty layer whose timer wheel starts at `now`.
    pub fn new(now: Instant, config: TimerConfig) -> Self {
        TransactionLayer {
            timers: TimerWheel::new(now, config.resolution),
            config,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: crate::index_table::IndexTable::new(),
            hasher: ahash::RandomState::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::with_capacity(128),
            stats: TxnStats::default(),
            stream_clients: 0,
            stream_above: None,
        }
    }

    /// RFC 3261 §18.1.1: a request larger than `limit` bytes (1300 when the path MTU is
    /// unknown) that would go over UDP goes over TCP instead, with its top Via saying so;
    /// if the connection cannot be made before any response, it is sent over UDP after
    /// all. `None` (the default): requests keep the transport they are given. Set it only
    /// when the runtime speaks TCP.
    pub fn set_stream_above(&mut self, limit: Option<usize>) {
        self.stream_above = limit;
    }

    /// The timer configuration.
    pub fn config(&self) -> &TimerConfig {
        &self.config
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> &TxnStats {
        &self.stats
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    /// When [`TransactionLayer::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The stream connection to `destination` failed (refused, reset, or closed with
    /// messages unsent): every client transaction sending there ends with
    /// [`TxnEvent::TransportError`] (§17.1.4, §8.1.3.1) instead of waiting for Timer B or
    /// F. Returns how many ended. A walk over the table: connection failures are rare, and a
    /// table without stream client transactions is not walked at all.
    ///
    /// A request sent over TCP only for its size (§18.1.1, [`Self::set_stream_above`])
    /// that has no response yet is sent over UDP instead, with its timers, and does not
    /// end ("the element SHOULD retry the request, using UDP").
    pub fn transport_failed(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        transport: Transport,
    ) -> usize {
        if !transport.is_reliable() || self.stream_clients == 0 {
            return 0;
        }
        let failed: Vec<TxnId> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.transport == transport)
            .filter_map(|(index, s)| {
                let txn = s.txn.as_ref()?;
                let client = matches!(
                    txn.state,
                    State::ClientInvite(_) | State::ClientNonInvite(_)
                );
                (client && txn.peer == destination).then_some(TxnId::Client(ClientTxnId(SlotId {
                    index: index as u32,
                    generation: s.generation,
                })))
            })
            .collect();
        let mut ended = 0;
        for &txn in &failed {
            if let TxnId::Client(ClientTxnId(id)) = txn
                && self.fall_back_to_udp(now, id)
            {
                continue;
            }
            self.transport_error(txn);
            ended += 1;
        }
        ended
    }

    /// The transport the request of a server transaction came over (UDP once it is gone).
    pub fn server_transport(&self, txn: ServerTxnId) -> Transport {
        self.transport(txn.0)
    }

    /// Sends a message outside any transaction (the ACK to a 2xx, a stateless 400).
    pub fn send_stateless(
        &mut self,
        destination: SocketAddr,
        transport: Transport,
        payload: Bytes,
    ) {
        self.transmits.push_back(Transmit {
            destination,
            payload,
            transport,
        });
    }

    /// Schedules a timer for the transaction user on the shard's wheel; it comes back as
    /// [`TxnEvent::UserTimer`].
    pub fn schedule(&mut self, deadline: Instant, token: u64) -> TimerHandle {
        self.timers.insert(deadline, TimerEntry::User { token })
    }

    /// [`TransactionLayer::schedule`] for `after` from `now` (cheaper: see
    /// [`TimerWheel::insert_after`]).
    ///
    /// [`TimerWheel::insert_after`]: crate::timer::TimerWheel::insert_after
    pub fn schedule_after(&mut self, now: Instant, after: Duration, token: u64) -> TimerHandle {
        self.timers
            .insert_after(now, after, TimerEntry::User { token })
    }

    /// Our CANCEL for the INVITE `invite` is out. RFC 3261 §9.1: when the INVITE still has
    /// no final response 64·T1 later, the client considers it cancelled and destroys its
    /// transaction, which then reports [`TxnEvent::Timeout`]. (In Calling, Timer B does
    /// the same; in Proceeding nothing else would ever end it.)
    pub fn cancel_sent(&mut self, now: Instant, invite: ClientTxnId) {
        let id = invite.0;
        if matches!(
            self.get_mut(id).map(|t| &t.state),
            Some(State::ClientInvite(
                client::ClientInvite::Calling { .. } | client::ClientInvite::Proceeding
            ))
        ) {
            self.set_timer(now, id, TimerName::CancelGiveUp, self.config.timeout());
        }
    }

    /// When a timer set with [`TransactionLayer::schedule_after`] is due, while it is.
    pub fn timer_deadline(&self, handle: TimerHandle) -> Option<Instant> {
        self.timers.deadline(handle)
    }

    /// Cancels a timer from [`TransactionLayer::schedule`]; stale handles are ignored.
    pub fn cancel_timer(&mut self, handle: TimerHandle) {
        self.timers.cancel(handle);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, entry)) = self.timers.poll_expired(now) {
            match entry {
                TimerEntry::User { token } => self.events.push_back(TxnEvent::UserTimer { token }),
                TimerEntry::Txn { id, name } => {
                    if self.get(id).is_some() {
                        self.on_timer(now, id, name);
                    }
                }
            }
        }
    }

    /// A request from the network. Errors mean the key headers (Via, CSeq, …) are malformed:
    /// the caller answers 400 statelessly or drops the request.
    pub fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        request: Message,
    ) -> Result<(), ParseError> {
        match request.method() {
            Some(Method::Ack) => self.on_ack(now, from, request),
            Some(Method::Cancel) => self.on_cancel(now, from, transport, request),
            _ => self.on_request(now, from, transport, request),
        }
    }

    /// A response from the network.
    pub fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        response: Message,
    ) -> Result<(), ParseError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let found = key::response_key(&mut scratch, &response).map(|()| self.lookup(&scratch));
        self.scratch = scratch;
        match found? {
            Some(index) => {
                let id = self.id_of(index);
                self.on_response(now, id, response);
            }
            None => {
                self.stats.stray_responses += 1;
                self.events
                    .push_back(TxnEvent::StrayResponse { response, from });
            }
        }
        Ok(())
    }

    /// Where a server transaction's responses go: the request's source address (with the
    /// source port when the top Via asked for rport). It is the `received`/`rport` the
    /// response's top Via must carry (§18.2.1, RFC 3581).
    pub fn response_target(&self, txn: ServerTxnId) -> Option<SocketAddr> {
        self.get(txn.0).map(|t| t.peer)
    }

    /// Ends a server transaction without a response: for requests so broken that no
    /// response can be built for them. Counted in [`TxnStats::discarded`].
    pub fn discard(&mut self, txn: ServerTxnId) {
        if self.get(txn.0).is_some() {
            self.stats.discarded += 1;
            self.terminate(txn.0);
        }
    }

    /// The runtime could not send for `txn`: the transaction ends (§17.1.4, §17.2.4).
    pub fn transport_error(&mut self, txn: TxnId) {
        let id = match txn {
            TxnId::Client(ClientTxnId(id)) | TxnId::Server(ServerTxnId(id)) => id,
        };
        if self.get(id).is_some() {
            self.events.push_back(TxnEvent::TransportError { txn });
            self.terminate(id);
        }
    }

    // ---- table plumbing -------------------------------------------------------------

    fn id_of(&self, index: u32) -> SlotId {
        SlotId {
            index,
            generation: self.slots[index as usize].generation,
        }
    }

    fn get(&self, id: SlotId) -> Option<&Transaction> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.txn.as_ref())
            .flatten()
    }

    /// Whether the transaction's transport is reliable.
    fn reliable(&self, id: SlotId) -> bool {
        self.transport(id).is_reliable()
    }

    /// The transaction's transport.
    fn transport(&self, id: SlotId) -> Transport {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .map_or(Transport::Udp, |s| s.transport)
    }

    fn get_mut(&mut self, id: SlotId) -> Option<&mut Transaction> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.txn.as_mut()
    }

    /// Writes the server key of `request` (top Via `via`) into `self.scratch` and looks it
    /// up; returns the key's hash (for an insert) and the slab index if found.
    fn find_server(
        &mut self,
        request: &Message,
        via: &crate::message::ViaKey<'_>,
        method: key::KeyMethod<'_>,
    ) -> Result<(u64, Option<u32>), ParseError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let written = key::server_key(&mut scratch, request, via, method);
        self.scratch = scratch;
        written?;
        let hash = self.hasher.hash_one(self.scratch.as_slice());
        Ok((hash, self.lookup_hashed(hash, &self.scratch)))
    }

    /// Ends a transaction whose Timer B, F or H fired.
    fn time_out(&mut self, txn: TxnId) {
        let id = match txn {
            TxnId::Client(ClientTxnId(id)) | TxnId::Server(ServerTxnId(id)) => id,
        };
        self.stats.timeouts += 1;
        self.events.push_back(TxnEvent::Timeout { txn });
        self.terminate(id);
    }

    /// Re-arms the retransmission timer of the transaction's current state with `interval`
    /// and sends `payload` to its peer again.
    fn retransmit(
        &mut self,
        now: Instant,
        id: SlotId,
        name: TimerName,
        interval: Duration,
        payload: Bytes,
    ) {
        let timer = self.set_timer(now, id, name, interval);
        let Some(txn) = self.get_mut(id) else { return };
        let slot = match &mut txn.state {
            State::ClientInvite(ClientInvite::Calling { retransmit, .. })
            | State::ClientNonInvite(
                ClientNonInvite::Trying { retransmit, .. }
                | ClientNonInvite::Proceeding { retransmit, .. },
            )
            | State::ServerInvite(ServerInvite::Completed { retransmit, .. }) => retransmit,
            _ => return,
        };
        if let Some(r) = slot {
            r.timer = timer;
        }
        let peer = txn.peer;
        if matches!(txn.state, State::ServerInvite(_)) {
            self.stats.response_retransmissions += 1;
        } else {
            self.stats.request_retransmissions += 1;
        }
        self.transmit(id, peer, payload);
    }

    /// The slab index of the transaction with this key.
    fn lookup(&self, key: &[u8]) -> Option<u32> {
        self.lookup_hashed(self.hasher.hash_one(key), key)
    }

    fn lookup_hashed(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.by_key.find(hash, |i| {
            slots[i as usize]
                .txn
                .as_ref()
                .is_some_and(|t| t.key.as_bytes() == key)
        })
    }

    /// Inserts a transaction under its key (which the caller checked is not taken).
    fn insert(&mut self, txn: Transaction, transport: Transport) -> SlotId {
        let hash = self.hasher.hash_one(txn.key.as_bytes());
        self.insert_hashed(hash, txn, transport)
    }

    /// Inserts a transaction whose key hashes to `hash`.
    fn insert_hashed(&mut self, hash: u64, txn: Transaction, transport: Transport) -> SlotId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    transport: Transport::Udp,
                    upgraded: false,
                    txn: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.txn = Some(txn);
        slot.transport = transport;
        slot.upgraded = false;
        let id = SlotId {
            index,
            generation: slot.generation,
        };
        self.by_key.insert(hash, index);
        id
    }

    fn set_timer(
        &mut self,
        now: Instant,
        id: SlotId,
        name: TimerName,
        after: Duration,
    ) -> TimerHandle {
        self.timers
            .insert_after(now, after, TimerEntry::Txn { id, name })
    }

    fn cancel(&mut self, handle: Option<TimerHandle>) {
        if let Some(h) = handle {
            self.timers.cancel(h);
        }
    }

    /// Sends `payload` to `destination` over the transport of the transaction `id`.
    fn transmit(&mut self, id: SlotId, destination: SocketAddr, payload: Bytes) {
        let transport = self.transport(id);
        self.transmits.push_back(Transmit {
            destination,
            payload,
            transport,
        });
    }

    /// Removes the transaction, cancels its timers, and tells the TU.
    fn terminate(&mut self, id: SlotId) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.generation != id.generation {
            return;
        }
        // Read in place and dropped in place: moving the transaction out is a copy of it.
        let Some(txn) = slot.txn.as_ref() else {
            return;
        };
        let hash = self.hasher.hash_one(txn.key.as_bytes());
        let kind = match &txn.state {
            State::ClientInvite(_) | State::ClientNonInvite(_) => TxnId::Client(ClientTxnId(id)),
            State::ServerInvite(_) | State::ServerNonInvite(_) => TxnId::Server(ServerTxnId(id)),
        };
        let timers = state_timers(&txn.state);
        if slot.transport.is_reliable() && matches!(kind, TxnId::Client(_)) {
            self.stream_clients -= 1;
        }
        slot.txn = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.by_key.remove(hash, id.index);
        for timer in timers.into_iter().flatten() {
            self.timers.cancel(timer);
        }
        self.events.push_back(TxnEvent::Terminated { txn: kind });
    }

    fn on_timer(&mut self, now: Instant, id: SlotId, name: TimerName) {
        match name {
            TimerName::A | TimerName::B | TimerName::D | TimerName::M | TimerName::CancelGiveUp => {
                self.client_invite_timer(now, id, name)
            }
            TimerName::E | TimerName::F | TimerName::K => {
                self.client_non_invite_timer(now, id, name)
            }
            TimerName::G | TimerName::H | TimerName::I | TimerName::L | TimerName::Trying => {
                self.server_invite_timer(now, id, name)
            }
            TimerName::J => self.terminate(id),
            TimerName::TuDeadline => {
                self.stats.tu_deadlines += 1;
                self.terminate(id)
            }
        }
    }

    fn on_response(&mut self, now: Instant, id: SlotId, response: Message) {
        let Some(txn) = self.get(id) else { return };
        match txn.state {
            State::ClientInvite(_) => self.client_invite_response(now, id, response),
            State::ClientNonInvite(_) => self.client_non_invite_response(now, id, response),
            // A server key can never be found by a response key: the first bytes differ.
            State::ServerInvite(_) | State::ServerNonInvite(_) => {}
        }
    }
}

/// Every timer a state holds, so that termination can cancel them all.
fn state_timers(state: &State) -> [Option<TimerHandle>; 2] {
    match state {
        State::ClientInvite(s) => s.timers(),
        State::ClientNonInvite(s) => s.timers(),
        State::ServerInvite(s) => s.timers(),
        State::ServerNonInvite(s) => s.timers(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory per transaction is a feature (issue: ≤ 300 bytes with timers); these sizes
    /// are what it is made of.
    #[test]
    fn per_transaction_structures_stay_small() {
        let sizes = [
            ("Slot", std::mem::size_of::<Slot>()),
            ("Transaction", std::mem::size_of::<Transaction>()),
            ("State", std::mem::size_of::<State>()),
            ("Key", std::mem::size_of::<Key>()),
            ("TimerEntry", std::mem::size_of::<TimerEntry>()),
            (
                "Option<TimerEntry>",
                std::mem::size_of::<Option<TimerEntry>>(),
            ),
        ];
        eprintln!("{sizes:?}");
        assert!(std::mem::size_of::<Slot>() <= 192, "{sizes:?}");
    }
}
