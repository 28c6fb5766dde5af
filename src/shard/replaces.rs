//! RFC 3891 Replaces, as the UAS: an INVITE that names a dialog for the new call to take
//! the place of (attended transfer, call pickup).
//!
//! The named dialog has its own Call-ID, so it may live on another shard. The shard that
//! got the INVITE asks the owner with a [`PeerMessage`] and holds the INVITE until the
//! verdict comes back (its server transaction absorbs retransmissions and sends 100
//! Trying; a CANCEL meanwhile gets 200 and the INVITE 487). A Call-ID of its own, or a
//! single shard, is answered at once. No shard reads another's tables: the runtime only
//! carries the messages ([`Shard::poll_peer`], [`Shard::handle_peer`]).
//!
//! The verdict follows §3: no such dialog, 481; an early dialog the peer started (we are
//! its UAS), 481; a dialog already ending, 603; a confirmed one when the INVITE says
//! `early-only`, 486. Otherwise the call goes to the application as
//! [`SessionEvent::IncomingCall`] with `replaces` set, and when it is answered with a 2xx
//! the owner ends the replaced dialog: BYE if confirmed, CANCEL if it is our early call.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::timers::ShardTimer;
use super::{Phase, Shard, TerminationReason, shard_for_call_id};
use crate::dialog::DialogId;
use crate::message::{HeaderName, Message};
use crate::transaction::ServerTxnId;

/// The option tag (RFC 3891 §6.2), listed in our Supported and accepted in Require.
pub(super) const TAG_REPLACES: &[u8] = b"replaces";

/// A message from one shard to another, carried by the runtime (sans-IO: the shard hands
/// it out with [`Shard::poll_peer`] and takes it with [`Shard::handle_peer`]).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    /// May the INVITE of shard `from`'s transaction `txn` replace `dialog` (RFC 3891 §3)?
    ReplacesQuery {
        /// The asking shard's index.
        from: usize,
        /// The INVITE's server transaction there.
        txn: ServerTxnId,
        /// The dialog named, as the owner keys it (to-tag local, from-tag remote).
        dialog: DialogId,
        /// The Replaces header's `early-only` flag.
        early_only: bool,
    },
    /// The owner's answer to a [`PeerMessage::ReplacesQuery`].
    ReplacesVerdict {
        /// The INVITE's server transaction at the asking shard.
        txn: ServerTxnId,
        /// What the owner found.
        verdict: ReplacesVerdict,
    },
    /// The new call is answered: end the replaced dialog.
    EndReplaced {
        /// The dialog to end.
        dialog: DialogId,
    },
    /// The sender banned `source` until `until` ([`crate::guard`]): drop it here too.
    Ban {
        /// The banned address.
        source: std::net::IpAddr,
        /// Until when.
        until: Instant,
    },
}

/// What the owner of a dialog named by Replaces found.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplacesVerdict {
    /// The dialog may be replaced.
    Replaceable,
    /// No such dialog, or an early dialog we did not start: 481.
    NoDialog,
    /// The dialog is already ending: 603.
    Ending,
    /// The dialog is confirmed and the INVITE said `early-only`: 486.
    Confirmed,
}

impl ReplacesVerdict {
    /// The final status the INVITE gets, or `None` when it goes on to the application.
    fn refusal(&self) -> Option<u16> {
        match self {
            ReplacesVerdict::Replaceable => None,
            ReplacesVerdict::NoDialog => Some(481),
            ReplacesVerdict::Ending => Some(603),
            ReplacesVerdict::Confirmed => Some(486),
        }
    }
}

/// An INVITE waiting for the owner's verdict.
pub(super) struct AwaitingVerdict {
    request: Box<Message>,
    from: SocketAddr,
    replaced: DialogId,
    /// When the query went out: past [`VERDICT_WAIT`], the INVITE gets 503.
    asked: Instant,
}

/// How long an INVITE with Replaces waits for the owner shard's verdict. Shards answer
/// each other within a round (microseconds); one that has not in this long is stuck or
/// gone, and the caller is better told to retry than left until its Timer B.
pub(super) const VERDICT_WAIT: Duration = Duration::from_secs(2);

impl Shard {
    /// The next message for another shard: (its index, the message).
    pub fn poll_peer(&mut self) -> Option<(usize, PeerMessage)> {
        self.peer_out.pop_front()
    }

    /// A message from another shard.
    pub fn handle_peer(&mut self, now: Instant, message: PeerMessage) {
        match message {
            PeerMessage::ReplacesQuery {
                from,
                txn,
                dialog,
                early_only,
            } => {
                let verdict = self.replaces_verdict(&dialog, early_only);
                self.peer_out
                    .push_back((from, PeerMessage::ReplacesVerdict { txn, verdict }));
            }
            PeerMessage::ReplacesVerdict { txn, verdict } => {
                // Gone when the INVITE was cancelled or its transaction ended meanwhile.
                if let Some(waiting) = self.awaiting_verdict.remove(&txn) {
                    self.on_verdict(now, txn, waiting, &verdict);
                }
            }
            PeerMessage::EndReplaced { dialog } => self.end_replaced(now, &dialog),
            PeerMessage::Ban { source, until } => {
                self.guard.ban(crate::guard::Ban { source, until });
            }
        }
        self.drain(now);
    }

    /// This shard's index among the shards sharing Call-IDs (0 when alone).
    fn shard_index(&self) -> usize {
        self.config.owner.map_or(0, |o| o.index)
    }

    /// The shard owning `call_id`.
    fn owner_of(&self, call_id: &[u8]) -> usize {
        self.config
            .owner
            .map_or(0, |o| shard_for_call_id(call_id, o.count))
    }

    /// The §3 checks of an INVITE's Replaces header that need no dialog: `Some(status)`
    /// when it must be refused before any lookup.
    pub(super) fn replaces_syntax(request: &Message) -> Option<u16> {
        let count = request.count(HeaderName::Replaces);
        if count == 0 {
            return None;
        }
        // §3: more than one, or one beside Join's contradicting semantics (RFC 3911 §4).
        if count > 1 || request.header_values_by_name("Join").next().is_some() {
            return Some(400);
        }
        match request.replaces() {
            Ok(Some(_)) => None,
            _ => Some(400),
        }
    }

    /// A new INVITE with a (well-formed) Replaces header: asks the named dialog's owner,
    /// or answers at once when that is this shard.
    pub(super) fn invite_with_replaces(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        from: SocketAddr,
    ) {
        let Ok(Some(r)) = request.replaces() else {
            return self.reject_request(now, txn, &request, 400, &[]);
        };
        let (Some(to_tag), Some(from_tag)) = (r.to_tag(), r.from_tag()) else {
            return self.reject_request(now, txn, &request, 400, &[]);
        };
        // §3: the to-tag is compared with the local tag, the from-tag with the remote one.
        let replaced = DialogId::new(r.call_id, to_tag, from_tag);
        let early_only = r.early_only();
        let owner = self.owner_of(r.call_id);
        let waiting = AwaitingVerdict {
            request: Box::new(request),
            from,
            replaced,
            asked: now,
        };
        if owner == self.shard_index() {
            let verdict = self.replaces_verdict(&waiting.replaced, early_only);
            return self.on_verdict(now, txn, waiting, &verdict);
        }
        let query = PeerMessage::ReplacesQuery {
            from: self.shard_index(),
            txn,
            dialog: waiting.replaced.clone(),
            early_only,
        };
        if !self.verdict_sweep {
            self.verdict_sweep = true;
            self.txn
                .schedule(now + VERDICT_WAIT, ShardTimer::VerdictSweep.token());
        }
        self.awaiting_verdict.insert(txn, waiting);
        self.peer_out.push_back((owner, query));
    }

    /// The verdict sweep: INVITEs that waited [`VERDICT_WAIT`] for theirs get 503 with
    /// Retry-After (a late verdict then finds nothing); the sweep comes back for the rest.
    pub(super) fn verdicts_overdue(&mut self, now: Instant) {
        let overdue: Vec<ServerTxnId> = self
            .awaiting_verdict
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.asked) >= VERDICT_WAIT)
            .map(|(txn, _)| *txn)
            .collect();
        let retry = self.config.retry_after.to_string();
        for txn in overdue {
            if let Some(waiting) = self.awaiting_verdict.remove(&txn) {
                let headers = [("Retry-After", retry.as_bytes())];
                self.reject_request(now, txn, &waiting.request, 503, &headers);
            }
        }
        self.verdict_sweep = false;
        if let Some(oldest) = self.awaiting_verdict.values().map(|w| w.asked).min() {
            self.verdict_sweep = true;
            self.txn
                .schedule(oldest + VERDICT_WAIT, ShardTimer::VerdictSweep.token());
        }
    }

    /// The owner's side: may `dialog` be replaced (§3)?
    fn replaces_verdict(&self, dialog: &DialogId, early_only: bool) -> ReplacesVerdict {
        // A MakeCall handle (no remote tag) is not a dialog: Replaces needs both tags.
        let entry = self
            .find(dialog)
            .and_then(|i| self.slots[i as usize].entry.as_ref())
            .filter(|e| e.dialog.id == *dialog);
        let Some(entry) = entry else {
            return ReplacesVerdict::NoDialog;
        };
        match entry.phase {
            Phase::Established { .. } | Phase::Answered { .. } if early_only => {
                ReplacesVerdict::Confirmed
            }
            Phase::Established { .. } | Phase::Answered { .. } => ReplacesVerdict::Replaceable,
            // Our call, early in this dialog (or one of its forks).
            Phase::Calling { .. } | Phase::Early { .. } => ReplacesVerdict::Replaceable,
            // An early dialog the peer started: §3 leaves it alone and answers 481.
            Phase::Incoming { .. } => ReplacesVerdict::NoDialog,
            Phase::Terminating { .. } => ReplacesVerdict::Ending,
            // A subscription is no session to take the place of.
            Phase::Subscription => ReplacesVerdict::NoDialog,
        }
    }

    /// The verdict is in: refuse the INVITE, or make it an incoming call that replaces.
    fn on_verdict(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        waiting: AwaitingVerdict,
        verdict: &ReplacesVerdict,
    ) {
        if let Some(status) = verdict.refusal() {
            return self.reject_request(now, txn, &waiting.request, status, &[]);
        }
        let origin = super::origin_key(&self.key_hasher, &waiting.request);
        self.accept_invite(
            now,
            txn,
            *waiting.request,
            waiting.from,
            origin,
            Some(waiting.replaced),
        );
    }

    /// A CANCEL for an INVITE still waiting for its verdict: true when it was one (the
    /// INVITE then got 487).
    pub(super) fn cancel_awaiting(&mut self, now: Instant, invite: ServerTxnId) -> bool {
        if self.awaiting_verdict.is_empty() {
            return false;
        }
        let Some(waiting) = self.awaiting_verdict.remove(&invite) else {
            return false;
        };
        self.reject_request(now, invite, &waiting.request, 487, &[]);
        true
    }

    /// The INVITE transaction ended without an answer: forget its wait.
    pub(super) fn forget_awaiting(&mut self, txn: ServerTxnId) {
        if !self.awaiting_verdict.is_empty() {
            self.awaiting_verdict.remove(&txn);
        }
    }

    /// After the 2xx of the call at `index`: if it replaces a dialog, that dialog ends.
    pub(super) fn replacement_answered(&mut self, now: Instant, index: u32) {
        let Some(replaced) = self.usages_mut(index).and_then(|u| u.replacing.take()) else {
            return;
        };
        let owner = self.owner_of(replaced.call_id());
        if owner == self.shard_index() {
            self.end_replaced(now, &replaced);
        } else {
            self.peer_out
                .push_back((owner, PeerMessage::EndReplaced { dialog: replaced }));
        }
    }

    /// Ends a replaced dialog (§3): BYE when confirmed, CANCEL when it is our early call.
    /// One that ended meanwhile is left alone.
    fn end_replaced(&mut self, now: Instant, dialog: &DialogId) {
        let Some(index) = self.find(dialog) else {
            return;
        };
        let Some(entry) = self.slots[index as usize].entry.as_ref() else {
            return;
        };
        let call = entry.call.clone();
        let outcome = match entry.phase {
            Phase::Established { .. } => self.send_bye(now, index, TerminationReason::Replaced),
            Phase::Answered { .. } => self.bye(now, dialog),
            Phase::Calling { .. } | Phase::Early { .. } => match call {
                Some(call) => self.cancel(now, &call),
                None => Ok(()),
            },
            Phase::Incoming { .. } | Phase::Terminating { .. } | Phase::Subscription => Ok(()),
        };
        if let Err(e) = outcome {
            tracing::debug!(error = %e, "could not end a replaced dialog");
        }
    }
}
