//! A dialog's entry in the shard's table: the dialog record, where it is in its INVITE
//! life ([`Phase`]), its re-INVITEs, its call timer and its other usages; and the small
//! types that point at entries (a slot reference, a placed call's dialogs, a request held
//! for the application).
//!
//! # What it owns, what it may not touch
//! The shapes of that state, no behaviour: the flows that move an entry from phase to
//! phase live in `uas`, `uac`, `reinvite`, `prack` and the usage modules.

use bytes::Bytes;

use super::timers::DialogTimer;
use super::usages::Usages;
use super::{TerminationReason, prack};
use crate::dialog::{Dialog, DialogId};
use crate::message::{Branch, Message};
use crate::timer::TimerHandle;
use crate::transaction::{ClientTxnId, ServerTxnId};

/// Where a dialog is in its INVITE life.
#[derive(Debug)]
pub(super) enum Phase {
    /// UAS: INVITE received, no final response yet. The request is boxed: every dialog
    /// slot is as large as the largest phase, and a Message is 192 bytes.
    Incoming {
        invite: ServerTxnId,
        request: Box<Message>,
        /// Our 18x go out reliably (RFC 3262); boxed, since most calls do without.
        reliable: Option<Box<prack::Reliable>>,
        /// The INVITE's `by_origin` key (merged-request detection, §8.2.2.2).
        origin: u64,
    },
    /// UAS: 2xx sent, waiting for the ACK (§13.3.1.4).
    Answered {
        invite: ServerTxnId,
        ok: Bytes,
        /// The current 2xx retransmission interval in milliseconds (T1 doubling to T2; a
        /// u32 rather than a 16-byte Duration keeps every dialog slot 8 bytes smaller).
        interval_ms: u32,
        retransmit: TimerHandle,
        give_up: TimerHandle,
        /// The application asked for BYE: §15 lets it leave only after the ACK (or when
        /// none came in 64·T1).
        bye_requested: bool,
        /// The INVITE's `by_origin` key, kept until the ACK: a copy of the INVITE that
        /// forked and merged back here while our 2xx is unacknowledged still gets 482.
        origin: u64,
        /// False for the 2xx to a re-INVITE, which holds no `by_origin` entry. (A flag
        /// beside `bye_requested`, in padding: an `Option<u64>` would add 8 bytes to
        /// every dialog slot.)
        holds_origin: bool,
    },
    /// UAC: INVITE sent, no final response yet (its transaction is in `calls`).
    Calling {
        /// Its INVITE client transaction.
        invite: ClientTxnId,
        request: Bytes,
        branch: Branch,
        /// A provisional response (any 1xx) has arrived: a CANCEL may be sent (§9.1).
        provisional: bool,
        /// The application asked to cancel before any provisional: sent on the first one.
        cancel_pending: bool,
        /// RSeq of the last reliable provisional we PRACKed in this early dialog (RFC 3262
        /// §4; 0: none yet, RSeq starts at 1).
        last_rseq: u32,
    },
    /// UAC: an early dialog created by a fork of our INVITE (another To tag), with the RSeq
    /// of the last reliable provisional we PRACKed in it (0: none), and whether our INVITE
    /// carried an offer (which each early dialog answers on its own, RFC 3261 §13.2.1).
    Early { last_rseq: u32, invite_offer: bool },
    /// Confirmed; for a UAC, the ACK to send again on a retransmitted 2xx.
    Established { ack: Option<Bytes> },
    /// A dialog a SUBSCRIBE created (RFC 6665): no INVITE usage; it ends with its last
    /// subscription (`notifier` module).
    Subscription,
    /// BYE sent, waiting for its response; a UAC keeps the ACK for a 2xx still being
    /// retransmitted (§13.2.2.4).
    Terminating {
        reason: TerminationReason,
        ack: Option<Bytes>,
    },
}

impl Phase {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Phase::Incoming { .. } => "incoming",
            Phase::Answered { .. } => "answered",
            Phase::Calling { .. } => "calling",
            Phase::Early { .. } => "early",
            Phase::Established { .. } => "established",
            Phase::Terminating { .. } => "terminating",
            Phase::Subscription => "subscription",
        }
    }
}

/// A call we placed, while its INVITE transaction lives: the dialog MakeCall created
/// (`primary`, which takes the first To tag), one more per other To tag (forks), and which
/// of them a 2xx confirmed first.
#[derive(Debug)]
pub(super) struct Call {
    pub(super) primary: SlotRef,
    pub(super) forks: Vec<SlotRef>,
    pub(super) answered: Option<SlotRef>,
}

/// A dialog slot as it was when referenced: the INVITE transaction outlives its dialogs by
/// up to 64·T1 (RFC 6026's Timer M), and by then the slot may hold another call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlotRef {
    pub(super) index: u32,
    pub(super) generation: u32,
}

/// Which usage of its dialog (RFC 5057) an in-dialog request of ours belongs to: what its
/// failure (481, 408, no answer) ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Usage {
    /// The session: its failure ends the dialog (§12.2.1.2).
    Session,
    /// A subscription we hold or asked for (SUBSCRIBE, REFER): only that ends.
    Subscription,
    /// A NOTIFY for a subscription we serve: the subscriber is gone.
    Notify,
    /// Our session refresh (RFC 4028 UPDATE): its failure ends the dialog, its outcome is
    /// the shard's own.
    Refresh,
    /// Our OPTIONS probing a restored dialog (`recovery` module): the shard's own.
    Probe,
}

/// re-INVITEs in progress on a confirmed dialog (boxed in the entry: most dialogs have
/// none). The two directions are separate: ours may wait out its §14.1 back-off while the
/// peer's is being answered.
#[derive(Debug, Default)]
pub(super) struct Reinvite {
    /// The peer's, waiting for the application's answer.
    pub(super) incoming: Option<(ServerTxnId, Box<Message>)>,
    /// Ours.
    pub(super) outgoing: Outgoing,
}

/// Our re-INVITE's progress.
#[derive(Debug, Default)]
pub(super) enum Outgoing {
    #[default]
    Idle,
    /// Sent with this offer (as a session refresh of the shard's own, RFC 4028, when
    /// `refresh`), waiting for its final response.
    InProgress { sdp: Bytes, refresh: bool },
    /// Got 491; goes again with this offer when the §14.1 wait ends.
    RetryPending { sdp: Bytes, refresh: bool },
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) dialog: Dialog,
    pub(super) phase: Phase,
    pub(super) reinvite: Option<Box<Reinvite>>,
    /// The MakeCall handle (UAC) so events can name the call the app knows.
    pub(super) call: Option<DialogId>,
    /// The call's own limit while it lasts, and which: the ring timeout while it is
    /// unanswered (either role: [`ShardConfig::ring_timeout`]), the longest duration once
    /// confirmed ([`ShardConfig::max_call_duration`]). Cancelled when the call moves on or
    /// ends, so no wheel entry outlives its use.
    pub(super) call_timer: Option<(TimerHandle, DialogTimer)>,
    /// Its usages besides the INVITE session, and its requests the application has not
    /// answered (`usages` module); they end with the entry.
    pub(super) usages: Option<Box<Usages>>,
    /// Where its record stands in the store, when the shard persists dialogs (`persist`
    /// module).
    pub(super) stored: Stored,
}

impl Entry {
    /// A new dialog's entry in `phase`, with the call handle `call` (a call we placed), no
    /// re-INVITE, timer or usage yet, and nothing in the store.
    pub(super) fn new(dialog: Dialog, phase: Phase, call: Option<DialogId>) -> Entry {
        Entry {
            dialog,
            phase,
            reinvite: None,
            call,
            call_timer: None,
            usages: None,
            stored: Stored::No,
        }
    }
}

/// A dialog's record in the store (`persist` module).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Stored {
    /// Not written, none queued.
    #[default]
    No,
    /// To be written at the next [`Shard::poll_persist`](super::Shard::poll_persist).
    Queued,
    /// Written, and unchanged since.
    Written,
    /// Written, and changed since: written again at the next poll.
    WrittenQueued,
}

pub(super) struct Slot {
    pub(super) generation: u32,
    pub(super) entry: Option<Entry>,
}

/// A request handed to the application, awaiting `Respond`.
pub(super) struct Pending {
    pub(super) request: Message,
    /// The slot of its dialog, for an in-dialog request.
    pub(super) dialog: Option<u32>,
}
