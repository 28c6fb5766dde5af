//! Reliable provisional responses (RFC 3262). As UAS: which INVITEs get them, the
//! `Require: 100rel` + `RSeq` 18x, its retransmission until the caller's PRACK (T1 doubling,
//! the INVITE refused with 500 after 64·T1 without one), and PRACK matching by RAck. As UAC:
//! the PRACK for each reliable 18x in order (§4), once per RSeq.
//!
//! An answer given while a reliable 18x awaits its PRACK is held until the PRACK comes, so
//! the caller sees 18x, PRACK and its 200, then the 2xx. §3 requires that only when the 18x
//! carried SDP (ours never do); doing it always gives every caller the same order, and a
//! PRACK can never cross the 2xx.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timers::DialogTimer;
use super::{DialogError, Entry, Phase, ReliableProvisionals, Shard, reply::Reply};
use crate::message::{Message, Method};
use crate::timer::TimerHandle;
use crate::transaction::ServerTxnId;

/// The option tag (RFC 3262 §8.1).
pub(super) const TAG_100REL: &[u8] = b"100rel";

/// 100rel state of one INVITE we are answering.
#[derive(Debug)]
pub(super) struct Reliable {
    /// RSeq of the next reliable provisional (§7.1: the first one random in 1..2^31-1,
    /// then one higher each).
    next_rseq: u32,
    /// The INVITE's CSeq number: the second field of a matching RAck.
    invite_cseq: u32,
    /// The reliable provisional sent and not yet acknowledged (§3 allows one at a time).
    unacked: Option<Unacked>,
    /// The application's answer (its SDP), held until `unacked` is acknowledged.
    deferred_answer: Option<Bytes>,
}

#[derive(Debug)]
struct Unacked {
    rseq: u32,
    status: u16,
    response: Bytes,
    interval: Duration,
    first_sent: Instant,
    timer: TimerHandle,
}

impl Reliable {
    /// The pending provisional's timer, when `rack` acknowledges it (§3: RSeq, CSeq number
    /// and method INVITE all match).
    fn acknowledge(&mut self, rack: &crate::message::RAck<'_>) -> Option<TimerHandle> {
        let u = self.unacked.as_ref()?;
        let matches =
            rack.rseq == u.rseq && rack.cseq == self.invite_cseq && rack.method == Method::Invite;
        matches
            .then(|| self.unacked.take().map(|u| u.timer))
            .flatten()
    }
}

/// Whether `tags` (a Require or Supported list) holds 100rel.
fn lists_100rel(tags: crate::message::TokenList<'_>) -> bool {
    tags.filter_map(Result::ok)
        .any(|t| t.eq_ignore_ascii_case(TAG_100REL))
}

impl Shard {
    /// Option tags of the request's Require that this shard does not support (§8.2.2.3).
    pub(super) fn unsupported_tags<'m>(&self, request: &'m Message) -> Vec<&'m [u8]> {
        let prack = self.config.reliable_provisionals != ReliableProvisionals::Never;
        let timer = self.session_timers_on();
        request
            .require()
            .filter_map(Result::ok)
            .filter(|t| !(prack && t.eq_ignore_ascii_case(TAG_100REL)))
            .filter(|t| !(timer && t.eq_ignore_ascii_case(super::session_timer::TAG_TIMER)))
            .filter(|t| {
                !(request.method() == Some(crate::message::Method::Invite)
                    && t.eq_ignore_ascii_case(super::replaces::TAG_REPLACES))
            })
            .filter(|t| {
                !(request.method() == Some(crate::message::Method::Refer)
                    && t.eq_ignore_ascii_case(super::refer::TAG_NOREFERSUB))
            })
            .collect()
    }

    /// `Supported: 100rel` for OPTIONS answers, unless reliable provisionals are off.
    pub(super) fn supported_header(&self) -> Option<(&'static str, &'static [u8])> {
        (self.config.reliable_provisionals != ReliableProvisionals::Never)
            .then_some(("Supported", TAG_100REL))
    }

    /// The 100rel state for a new incoming INVITE, when its 18x go out reliably.
    pub(super) fn reliable_for(&mut self, request: &Message, cseq: u32) -> Option<Box<Reliable>> {
        let wanted = match self.config.reliable_provisionals {
            ReliableProvisionals::Never => false,
            ReliableProvisionals::WhenRequired => lists_100rel(request.require()),
            ReliableProvisionals::WhenSupported => {
                lists_100rel(request.require()) || lists_100rel(request.supported())
            }
        };
        wanted.then(|| {
            Box::new(Reliable {
                next_rseq: (self.ids.random() % 0x7fff_ffff) as u32 + 1,
                invite_cseq: cseq,
                unacked: None,
                deferred_answer: None,
            })
        })
    }

    /// Before a provisional to the incoming INVITE at `index`: the RSeq it must carry
    /// (`None`: it goes unreliably), or an error while the previous one is unacknowledged.
    pub(super) fn next_rseq(&mut self, index: u32) -> Result<Option<u32>, DialogError> {
        let Some(Entry {
            phase: Phase::Incoming { reliable, .. },
            ..
        }) = self.entry_mut(index)
        else {
            return Ok(None);
        };
        match reliable {
            None => Ok(None),
            Some(r) if r.unacked.is_some() => Err(DialogError::InvalidDialogState {
                current: "reliable provisional unacknowledged",
                expected: "its PRACK",
            }),
            Some(r) => Ok(Some(r.next_rseq)),
        }
    }

    /// A reliable provisional went out: retransmit it until its PRACK.
    pub(super) fn reliable_sent(
        &mut self,
        now: Instant,
        index: u32,
        rseq: u32,
        status: u16,
        response: Bytes,
    ) {
        let t1 = self.config.timers.t1;
        let timer = self
            .txn
            .schedule_after(now, t1, self.token(index, DialogTimer::Reliable1xx));
        if let Some(Entry {
            phase: Phase::Incoming {
                reliable: Some(r), ..
            },
            ..
        }) = self.entry_mut(index)
        {
            r.next_rseq = rseq.wrapping_add(1).max(1);
            r.unacked = Some(Unacked {
                rseq,
                status,
                response,
                interval: t1,
                first_sent: now,
                timer,
            });
        }
    }

    /// Holds the application's answer while a reliable provisional awaits its PRACK;
    /// false when the 2xx may go now.
    pub(super) fn defer_answer(&mut self, index: u32, sdp: &Bytes) -> bool {
        match self.entry_mut(index) {
            Some(Entry {
                phase: Phase::Incoming {
                    reliable: Some(r), ..
                },
                ..
            }) if r.unacked.is_some() => {
                r.deferred_answer = Some(sdp.clone());
                true
            }
            _ => false,
        }
    }

    /// The retransmission timer of a reliable provisional (§3: T1 doubling, no cap; 64·T1
    /// without PRACK refuses the INVITE with a 5xx).
    pub(super) fn reliable_timer(&mut self, now: Instant, index: u32) {
        let give_up = self.config.timers.timeout();
        let token = self.token(index, DialogTimer::Reliable1xx);
        let Some(Entry {
            phase:
                Phase::Incoming {
                    invite,
                    reliable: Some(r),
                    ..
                },
            dialog,
            ..
        }) = self.entry_mut(index)
        else {
            return;
        };
        let invite = *invite;
        let Some(u) = r.unacked.as_mut() else { return };
        if now.saturating_duration_since(u.first_sent) >= give_up {
            let id = dialog.id.clone();
            r.unacked = None;
            let _ = self.reject(now, &id, 500);
            return;
        }
        u.interval *= 2;
        // The next retransmission, or the 64·T1 deadline if that comes first.
        let next = (now + u.interval).min(u.first_sent + give_up);
        let (status, response) = (u.status, u.response.clone());
        let timer = self.txn.schedule(next, token);
        if let Some(Entry {
            phase: Phase::Incoming {
                reliable: Some(r), ..
            },
            ..
        }) = self.entry_mut(index)
            && let Some(u) = r.unacked.as_mut()
        {
            u.timer = timer;
        }
        self.stats.provisional_retransmissions += 1;
        let _ = self.txn.send_response(now, invite, status, response);
    }

    /// A PRACK in the dialog at `index`: 200 when it acknowledges our pending reliable
    /// provisional, else 481 (§3); 400 without a readable RAck.
    pub(super) fn on_prack(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        index: u32,
    ) {
        let rack = match request.rack() {
            Ok(Some(rack)) => rack,
            _ => return self.reject_request(now, txn, &request, 400, &[]),
        };
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        let local = entry.dialog.id.local_tag().to_vec();
        let acknowledged = match &mut entry.phase {
            Phase::Incoming {
                reliable: Some(r), ..
            } => r
                .acknowledge(&rack)
                .map(|timer| (timer, r.deferred_answer.take())),
            _ => None,
        };
        let Some((timer, deferred)) = acknowledged else {
            return self.reject_request(now, txn, &request, 481, &[]);
        };
        self.txn.cancel_timer(timer);
        self.respond(now, txn, &request, Reply::new(200, Some(&local)));
        if let Some(sdp) = deferred
            && let Some(id) = self.entry_mut(index).map(|e| e.dialog.id.clone())
        {
            // The dialog is still Incoming with its INVITE transaction (a CANCEL or the
            // ring timeout would have removed it), so this answer goes out like the first.
            let _ = self.answer(now, &id, sdp);
        }
    }
}

impl Shard {
    /// §4: a provisional to our INVITE with `Require: 100rel` and an RSeq is acknowledged
    /// with a PRACK in its early dialog, when it is the first one of that dialog or the next
    /// in sequence; a retransmission (our PRACK's own transaction repeats itself) or one
    /// out of order is not.
    pub(super) fn prack_if_reliable(&mut self, now: Instant, index: u32, response: &Message) {
        let (Ok(Some(rseq)), Ok(cseq)) = (response.rseq(), response.cseq()) else {
            return;
        };
        if rseq == 0 || !lists_100rel(response.require()) {
            return;
        }
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        let last = match &mut entry.phase {
            Phase::Calling { last_rseq, .. } | Phase::Early { last_rseq, .. } => last_rseq,
            // Answered already (a late or reordered 18x): nothing to acknowledge.
            _ => return,
        };
        if *last != 0 && rseq != last.wrapping_add(1) {
            return;
        }
        *last = rseq;
        let rack = format!("{rseq} {} INVITE", cseq.seq);
        let prack = super::send::InDialog {
            method: b"PRACK",
            contact: false,
            headers: &[("RAck", rack.as_bytes())],
            body: b"",
        };
        // Its outcome needs no handling (no owner): a 481 means the early dialog is gone,
        // which the INVITE's own final response will say.
        if self.transmit_in_dialog(now, index, prack, None).is_ok() {
            self.stats.pracks_sent += 1;
        }
    }
}
