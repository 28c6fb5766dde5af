//! A shard's counters ([`ShardStats`]) and the slots they count in.
//!
//! # What it owns, what it may not touch
//! Counters and their merging; the shard increments them.

/// The methods [`ShardStats::requests_in`] counts, in its order; `other` is any method
/// without a slot of its own.
pub const REQUEST_METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "MESSAGE",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "PUBLISH",
    "other",
];

/// Counters of one shard, summed across shards on demand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Datagrams handed to the shard.
    pub datagrams_in: u64,
    /// Datagrams that did not parse, or whose key headers were malformed (dropped).
    pub parse_errors: u64,
    /// Dialogs created (both roles).
    pub dialogs_created: u64,
    /// New INVITEs refused with 503 at the dialog limit.
    pub overload_rejections: u64,
    /// New INVITEs refused with 503 because the application was behind on events.
    pub backpressure_rejections: u64,
    /// New INVITEs refused with 503 while stopping.
    pub shutdown_rejections: u64,
    /// Requests refused by RFC 3261 checks (400/416/420/481/500/505 …).
    pub requests_rejected: u64,
    /// 2xx retransmissions sent by the UAS core.
    pub ok_retransmissions: u64,
    /// Reliable provisional (RFC 3262) retransmissions sent by the UAS core.
    pub provisional_retransmissions: u64,
    /// PRACKs sent for reliable provisionals we received (RFC 3262 §4).
    pub pracks_sent: u64,
    /// Live dialogs in the early state (including unanswered incoming calls).
    pub dialogs_early: u64,
    /// Live confirmed dialogs.
    pub dialogs_confirmed: u64,
    /// Dialogs in which we serve subscriptions as notifier (RFC 6665; usually one
    /// subscription each).
    pub subscription_dialogs_served: u64,
    /// Subscriptions we hold as subscriber, one per dialog.
    pub subscriptions_held: u64,
    /// Requests received, by method, in the order of [`REQUEST_METHODS`].
    pub requests_in: [u64; REQUEST_METHODS.len()],
    /// Responses received, by class 1xx..6xx.
    pub responses_in: [u64; 6],
    /// Responses sent by the dialog layer, by class 1xx..6xx (the transaction layer's own
    /// 100 Trying and retransmissions are in [`crate::transaction::TxnStats`]).
    pub responses_out: [u64; 6],
    /// Transaction-layer counters of this shard.
    pub transactions: crate::transaction::TxnStats,
    /// What the guard counted: bans, drops, failed authentications, locks.
    pub guard: crate::guard::GuardStats,
    /// Calls ended with BYE for reaching [`ShardConfig::max_call_duration`](super::ShardConfig::max_call_duration).
    pub calls_over_limit: u64,
    /// Responses discarded by [`Message::check_response_to_ua`](crate::message::Message::check_response_to_ua) (§18.1.2, §8.1.3.3).
    pub bad_responses: u64,
    /// Our calls cancelled for ringing longer than [`ShardConfig::ring_timeout`](super::ShardConfig::ring_timeout).
    pub calls_unanswered: u64,
    /// Dialog records handed to the store (written or rewritten; `persist` module).
    pub records_written: u64,
    /// Dialogs taken back from the store at start.
    pub dialogs_restored: u64,
    /// Registrar bindings taken back from the store at start.
    pub bindings_restored: u64,
    /// Restored dialogs ended because their probe got 481 or no answer (`recovery`).
    pub recovered_dialogs_ended: u64,
    /// Dialogs of a peer taken over from the shared store (`takeover`).
    pub dialogs_taken_over: u64,
    /// Dialogs a live peer took from this node, dropped here (`takeover`).
    pub dialogs_released: u64,
}

impl ShardStats {
    /// Adds another shard's counters (for totals across shards).
    pub fn merge(&mut self, other: &ShardStats) {
        let add = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        self.datagrams_in += other.datagrams_in;
        self.parse_errors += other.parse_errors;
        self.guard.merge(&other.guard);
        self.calls_over_limit += other.calls_over_limit;
        self.bad_responses += other.bad_responses;
        self.calls_unanswered += other.calls_unanswered;
        self.records_written += other.records_written;
        self.dialogs_restored += other.dialogs_restored;
        self.dialogs_taken_over += other.dialogs_taken_over;
        self.dialogs_released += other.dialogs_released;
        self.bindings_restored += other.bindings_restored;
        self.recovered_dialogs_ended += other.recovered_dialogs_ended;
        self.dialogs_created += other.dialogs_created;
        self.overload_rejections += other.overload_rejections;
        self.backpressure_rejections += other.backpressure_rejections;
        self.shutdown_rejections += other.shutdown_rejections;
        self.requests_rejected += other.requests_rejected;
        self.ok_retransmissions += other.ok_retransmissions;
        self.provisional_retransmissions += other.provisional_retransmissions;
        self.pracks_sent += other.pracks_sent;
        self.dialogs_early += other.dialogs_early;
        self.dialogs_confirmed += other.dialogs_confirmed;
        self.subscription_dialogs_served += other.subscription_dialogs_served;
        self.subscriptions_held += other.subscriptions_held;
        add(&mut self.requests_in, &other.requests_in);
        add(&mut self.responses_in, &other.responses_in);
        add(&mut self.responses_out, &other.responses_out);
        self.transactions.merge(&other.transactions);
    }
}

/// Index into [`ShardStats::requests_in`].
pub(super) fn method_slot(m: Option<crate::message::Method>) -> usize {
    use crate::message::Method;
    match m {
        Some(Method::Invite) => 0,
        Some(Method::Ack) => 1,
        Some(Method::Bye) => 2,
        Some(Method::Cancel) => 3,
        Some(Method::Options) => 4,
        Some(Method::Register) => 5,
        Some(Method::Info) => 6,
        Some(Method::Message) => 7,
        Some(Method::Update) => 8,
        Some(Method::Prack) => 9,
        Some(Method::Subscribe) => 10,
        Some(Method::Notify) => 11,
        Some(Method::Refer) => 12,
        Some(Method::Publish) => 13,
        _ => 14,
    }
}

/// Index into the by-class arrays (1xx → 0 … 6xx → 5).
pub(super) fn class_slot(code: u16) -> usize {
    usize::from(code / 100).clamp(1, 6) - 1
}
