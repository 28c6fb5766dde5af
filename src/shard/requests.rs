//! In-dialog requests other than INVITE and BYE (RFC 3261 §12.2): the peer's INFO, MESSAGE,
//! UPDATE, NOTIFY and REFER go to the application; ours are sent with `SendRequest`, and a
//! 481, 408 or no answer ends the dialog (§12.2.1.2). Also `Terminate`, the out-of-dialog
//! MESSAGE handed to the application, and the book of requests the application holds.

use std::time::Instant;

use bytes::Bytes;

use super::{DialogError, Pending, Phase, SessionEvent, Shard, TerminationReason};
use crate::dialog::{self, DialogId};
use crate::message::{Message, Method};
use crate::transaction::ServerTxnId;

impl Shard {
    /// The peer's in-dialog request for the application.
    pub(super) fn dialog_request(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        index: u32,
    ) {
        if request.method() == Some(Method::Update)
            && !crate::sdp::offer_of(&request).is_empty()
            && let Some((status, retry)) = self.update_offer_conflict(index)
        {
            let retry = retry.then(|| (self.ids.random() % 11).to_string());
            let headers: Vec<(&str, &[u8])> = retry
                .as_deref()
                .map(|r| ("Retry-After", r.as_bytes()))
                .into_iter()
                .collect();
            return self.reject_request(now, txn, &request, status, &headers);
        }
        let update = request.method() == Some(Method::Update);
        if update && self.session_timers_on() {
            // RFC 4028 §9: an UPDATE refreshes the session timer, or starts one.
            match self.check_session_timer(&request, Some(index)) {
                Ok(timer) => self.expect_refresh(now, index, &request, timer),
                Err(min_se) => return self.reject_interval(now, txn, &request, min_se),
            }
        }
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        // RFC 3311 §5.2: UPDATE is a target refresh request.
        if update && let Some(target) = dialog::contact_uri(&request) {
            entry.dialog.set_remote_target(target);
        }
        if update && self.answer_update_refresh(now, txn, &request, index) {
            return;
        }
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        let dialog = entry.dialog.id.clone();
        self.hold_for_application(txn, &request, index);
        self.events.push_back(SessionEvent::DialogRequest {
            dialog,
            txn,
            request,
        });
    }

    /// RFC 3311 §5.2, for an UPDATE carrying an offer: 491 while an offer of ours awaits
    /// its answer (our re-INVITE, or our INVITE before a reliable 18x answered it in this
    /// early dialog, the first or a fork's), 500 with a Retry-After of 0–10 s while an offer
    /// of the peer's awaits ours (the unanswered INVITE or re-INVITE, or an earlier UPDATE
    /// the application holds). `None`: no offer is outstanding.
    fn update_offer_conflict(&mut self, index: u32) -> Option<(u16, bool)> {
        let pending_update_offer = self.usages(index).is_some_and(|u| {
            u.pending.iter().any(|t| {
                self.pending.get(t).is_some_and(|p| {
                    p.request.method() == Some(Method::Update)
                        && !crate::sdp::offer_of(&p.request).is_empty()
                })
            })
        });
        let entry = self.entry_mut(index)?;
        let ours = matches!(
            entry.reinvite.as_deref(),
            Some(super::Reinvite {
                outgoing: super::Outgoing::InProgress { sdp, .. },
                ..
            }) if !sdp.is_empty()
        ) || matches!(&entry.phase, Phase::Calling { request, last_rseq: 0, .. }
                if invite_has_body(request))
            || matches!(
                entry.phase,
                Phase::Early {
                    last_rseq: 0,
                    invite_offer: true
                }
            );
        if ours {
            return Some((491, false));
        }
        let theirs = pending_update_offer
            || entry
                .reinvite
                .as_deref()
                .and_then(|r| r.incoming.as_ref())
                .is_some_and(|(_, re)| !crate::sdp::offer_of(re).is_empty())
            || matches!(&entry.phase, Phase::Incoming { request, .. }
                if !crate::sdp::offer_of(request).is_empty());
        theirs.then_some((500, true))
    }

    /// Books the peer's request in the dialog at `index` as the application's to answer:
    /// `Respond` finds it, and the dialog's end answers it 487 (§15.1.2).
    pub(super) fn hold_for_application(&mut self, txn: ServerTxnId, request: &Message, index: u32) {
        self.pending.insert(
            txn,
            Pending {
                request: request.clone(),
                dialog: Some(index),
            },
        );
        if let Some(usages) = self.usages_made(index) {
            usages.pending.push(txn);
        }
    }

    /// An out-of-dialog MESSAGE (RFC 3428 pager mode) for the application.
    pub(super) fn standalone_request(
        &mut self,
        txn: ServerTxnId,
        request: Message,
        from: std::net::SocketAddr,
    ) {
        self.pending.insert(
            txn,
            Pending {
                request: request.clone(),
                dialog: None,
            },
        );
        self.events
            .push_back(SessionEvent::IncomingRequest { txn, request, from });
    }

    /// Takes a request handed to the application off the books (answered, or its
    /// transaction ended); returns it with its dialog's slot.
    pub(super) fn forget_pending(&mut self, txn: ServerTxnId) -> Option<Pending> {
        if self.pending.is_empty() {
            return None;
        }
        let pending = self.pending.remove(&txn)?;
        if let Some(index) = pending.dialog
            && let Some(usages) = self.usages_mut(index)
        {
            usages.pending.retain(|t| *t != txn);
        }
        Some(pending)
    }

    /// `SendRequest`: a non-INVITE request in a confirmed dialog; returns its transaction.
    pub(super) fn send_in_dialog(
        &mut self,
        now: Instant,
        id: &DialogId,
        method: &[u8],
        headers: &[(String, Bytes)],
        body: &[u8],
    ) -> Result<crate::transaction::ClientTxnId, DialogError> {
        let index = self.found(id)?;
        if matches!(
            Method::from_bytes(method),
            Method::Invite | Method::Ack | Method::Cancel | Method::Bye
        ) {
            return Err(DialogError::InvalidDialogState {
                current: "established",
                expected: "a method without its own command",
            });
        }
        if !matches!(
            self.entry_mut(index).map(|e| &e.phase),
            Some(Phase::Established { .. } | Phase::Subscription)
        ) {
            return Err(self.wrong_state(index, "established"));
        }
        let extra: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        // What its failure ends (RFC 5057 §5.1).
        let owner: fn(super::SlotRef) -> super::owners::Owner = match method {
            b"NOTIFY" => |r| super::owners::Owner::Request(r, super::Usage::Notify),
            b"SUBSCRIBE" | b"REFER" => {
                |r| super::owners::Owner::Request(r, super::Usage::Subscription)
            }
            _ => |r| super::owners::Owner::Request(r, super::Usage::Session),
        };
        let request = super::send::InDialog {
            method,
            contact: true,
            headers: &extra,
            body,
        };
        let (txn, cseq) = self.transmit_in_dialog(now, index, request, Some(owner))?;
        if method == b"REFER" {
            self.refer_sent(index, cseq);
        }
        Ok(txn)
    }

    /// The final response to our in-dialog request, of the `usage` recorded when it was
    /// sent.
    pub(super) fn request_result(
        &mut self,
        now: Instant,
        index: u32,
        response: Message,
        usage: super::Usage,
    ) {
        let status = response.status().unwrap_or(500);
        if usage == super::Usage::Probe {
            return self.probe_answered(now, index, status);
        }
        if usage == super::Usage::Refresh {
            return match status {
                481 | 408 => self.refresh_failed(index, status),
                _ => self.refresh_result(now, index, &response),
            };
        }
        if usage == super::Usage::Subscription
            && response.cseq().is_ok_and(|c| c.method_bytes == b"REFER")
        {
            self.refer_answered(index, &response);
        }
        // RFC 5057 §5.1: a 481 or 408 to NOTIFY, SUBSCRIBE or REFER ends that
        // subscription usage only; to any other request it ends the dialog.
        if matches!(status, 481 | 408) {
            match usage {
                super::Usage::Session => {
                    return self.request_failed(index, status, Some(response));
                }
                // RFC 6665 §4.2.2: the subscriber is gone.
                super::Usage::Notify => self.notify_failed(index, status),
                super::Usage::Subscription | super::Usage::Refresh | super::Usage::Probe => {}
            }
        }
        if let Some(e) = self.entry_mut(index) {
            let dialog = e.dialog.id.clone();
            self.events.push_back(SessionEvent::RequestResult {
                dialog,
                status,
                response: Some(response),
            });
        }
    }

    /// §12.2.1.2: 481, 408 or no response ends the dialog.
    pub(super) fn request_failed(&mut self, index: u32, status: u16, response: Option<Message>) {
        if let Some(e) = self.remove(index) {
            self.events.push_back(SessionEvent::RequestResult {
                dialog: e.dialog.id.clone(),
                status,
                response,
            });
            self.events.push_back(SessionEvent::CallTerminated {
                dialog: e.dialog.id,
                reason: TerminationReason::Rejected(status),
            });
        }
    }

    /// `Terminate`: CANCEL while calling, 480 while incoming, BYE once confirmed.
    pub(super) fn terminate(&mut self, now: Instant, id: &DialogId) -> Result<(), DialogError> {
        let index = self.found(id)?;
        match self.entry_mut(index).map(|e| &e.phase) {
            Some(Phase::Calling { .. }) => self.cancel(now, id),
            Some(Phase::Incoming { .. }) => self.reject(now, id, 480),
            Some(Phase::Established { .. } | Phase::Answered { .. }) => self.bye(now, id),
            Some(Phase::Terminating { .. }) => Ok(()),
            Some(Phase::Subscription) => {
                if self.watches_at(index) {
                    self.unsubscribe(now, id)
                } else {
                    self.terminate_subscriptions(now, id)
                }
            }
            Some(Phase::Early { .. }) | None => Err(self.wrong_state(index, "a live call")),
        }
    }
}

/// True when our INVITE (as sent) carries a body: its offer, which stays unanswered in the
/// early dialog until a reliable provisional or the 2xx brings the answer (RFC 3262 §5,
/// RFC 3261 §13.2.1): the "ours" of RFC 3311 §5.2.
pub(super) fn invite_has_body(invite: &[u8]) -> bool {
    memchr::memmem::find(invite, b"\r\n\r\n").is_some_and(|end| end + 4 < invite.len())
}
