//! Where each input goes: what the transaction layer reported (a request, a CANCEL, an
//! ACK, a response, a failed or ended transaction, a fired timer) is routed to the flow
//! that owns it, by one `match` per kind of input. A response or a failure finds its
//! owner by one lookup in the owner table (`owners` module), not by probing maps.
//!
//! # What it owns, what it may not touch
//! The routing only. It reads the owner table and the request's method and tags; what
//! each flow does with its input lives with the flow (`uas`, `uac`, `reinvite`,
//! `requests`, the usage modules). The shard's timers are routed in `timers`.

use std::net::SocketAddr;
use std::time::Instant;

use super::owners::Owner;
use super::reply::Reply;
use super::uas::{unreadable_body, with_allow_events};
use super::{Phase, SessionEvent, Shard, TerminationReason, Usage};
use crate::message::{HeaderName, Message, Method, RejectReason};
use crate::transaction::{ClientTxnId, ServerTxnId, TxnEvent, TxnId};

impl Shard {
    /// Processes what the transaction layer reported.
    pub(super) fn drain(&mut self, now: Instant) {
        loop {
            self.drain_txn_events(now);
            if self.orphaned.is_empty() {
                break;
            }
            // §15.1.2: the dialog ended, its pending requests still get a response.
            for (txn, request) in std::mem::take(&mut self.orphaned) {
                self.reject_request(now, txn, &request, 487, &[]);
            }
        }
    }

    fn drain_txn_events(&mut self, now: Instant) {
        while let Some(ev) = self.txn.poll_event() {
            match ev {
                TxnEvent::Request { txn, request, from } => {
                    self.on_request(now, txn, request, from)
                }
                TxnEvent::Cancel {
                    txn,
                    invite,
                    request,
                    ..
                } => self.on_cancel(now, txn, invite, request),
                TxnEvent::Ack { request, .. } => self.on_ack(now, request),
                TxnEvent::Response { txn, response } => self.on_response(now, txn, response),
                TxnEvent::StrayResponse { response, .. } => self.on_stray_response(response),
                TxnEvent::Timeout { txn } => {
                    self.on_txn_failure(now, txn, TerminationReason::Timeout)
                }
                TxnEvent::TransportError { txn } => {
                    self.on_txn_failure(now, txn, TerminationReason::TransportError)
                }
                TxnEvent::Terminated { txn } => match txn {
                    crate::transaction::TxnId::Client(c) => {
                        self.owners.forget_ended(&c);
                        self.standalone_failed(c);
                        self.invite_ended(c);
                    }
                    // Ended unanswered (the application never said; 64·T1 passed).
                    crate::transaction::TxnId::Server(s) => {
                        if let Some(p) = self.forget_pending(s)
                            && let Some(index) = p.dialog
                        {
                            // A SUBSCRIBE or REFER the application never answered creates
                            // nothing.
                            match p.request.method() {
                                Some(crate::message::Method::Subscribe) => {
                                    if let Ok(asked) = self.check_subscribe(&p.request) {
                                        let expires = asked.expires;
                                        self.subscribe_answered(now, index, &asked, 408, expires);
                                    }
                                }
                                Some(crate::message::Method::Refer) => {
                                    if let Ok(cseq) = p.request.cseq() {
                                        self.refer_answered_by_us(now, index, cseq.seq, 408, false);
                                    }
                                }
                                _ => {}
                            }
                        }
                        self.forget_awaiting(s);
                    }
                },
                TxnEvent::UserTimer { token } => self.on_timer(now, token),
            }
        }
    }

    pub(super) fn on_request(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        from: SocketAddr,
    ) {
        if let Err(rejection) = request.check_request() {
            // RFC 4475 §3.1.2.18 prefers 501 for an unknown method whose CSeq names another.
            if rejection.reason == RejectReason::CSeqMethodMismatch
                && request.method() == Some(Method::Extension)
            {
                return self.reject_request(now, txn, &request, 501, &[("Allow", self.allow())]);
            }
            return self.reject_request(now, txn, &request, rejection.code, &[]);
        }
        // §8.2.2.3: the only option tag sipshard supports is 100rel (RFC 3262).
        let unsupported = self.unsupported_tags(&request);
        if !unsupported.is_empty() {
            let unsupported = unsupported.join(&b", "[..]);
            return self.reject_request(now, txn, &request, 420, &[("Unsupported", &unsupported)]);
        }
        // RFC 3891 §3: Replaces only in an INVITE, once, well-formed, and not beside Join.
        if request.header(HeaderName::Replaces).is_some() {
            let status = match request.method() {
                Some(Method::Invite) => Self::replaces_syntax(&request),
                _ => Some(400),
            };
            if let Some(status) = status {
                return self.reject_request(now, txn, &request, status, &[]);
            }
        }
        if let Some((status, header)) = unreadable_body(&request) {
            return self.reject_request(now, txn, &request, status, header.as_slice());
        }
        let to_tag = request.to_tag().ok().flatten().map(<[u8]>::to_vec);
        match (request.method(), to_tag) {
            (_, Some(local)) => self.in_dialog_request(now, txn, request, &local),
            (Some(Method::Invite), None) => self.incoming_invite(now, txn, request, from),
            (Some(Method::Register), None) => self.on_register(now, txn, request, from),
            (Some(Method::Options), None) => {
                let (headers, allow_events) = self.options_headers();
                let headers = with_allow_events(&headers, &allow_events);
                self.respond(now, txn, &request, Reply::new(200, None).headers(&headers));
            }
            (Some(Method::Message), None) => self.standalone_request(txn, request, from),
            (Some(Method::Subscribe), None) => self.incoming_subscribe(now, txn, request, from),
            // §15.1.2 and §12.2.2: a BYE (or another method that only lives inside a
            // dialog: INFO per RFC 6086 §4.2.2, UPDATE, PRACK per RFC 3262 §3, NOTIFY
            // without a subscription per RFC 6665 §4.1.3) without To tag matches no dialog.
            (
                Some(Method::Bye | Method::Info | Method::Update | Method::Prack | Method::Notify),
                None,
            ) => self.reject_request(now, txn, &request, 481, &[]),
            (Some(Method::Refer), None) => self.incoming_refer(now, txn, request, from),
            _ => self.unsupported_method(now, txn, &request),
        }
    }

    pub(super) fn on_response(&mut self, now: Instant, txn: ClientTxnId, response: Message) {
        let bye = match self.owners.get(&txn) {
            None => return,
            Some(Owner::Subscribe(_)) => return self.subscribe_response(now, txn, &response),
            Some(Owner::Call(_)) => return self.invite_response(now, txn, &response),
            Some(Owner::Reinvite(r)) => {
                // The dialog may have ended (the peer's BYE) while our re-INVITE was out.
                let Some(index) = self.resolve(*r) else {
                    return;
                };
                return self.reinvite_response(now, index, &response);
            }
            Some(Owner::Standalone(_)) => return self.standalone_response(now, txn, response),
            Some(&Owner::Request(r, usage)) => {
                let Some(index) = self.resolve(r) else {
                    self.owners.remove(&txn);
                    return;
                };
                if response.status().is_some_and(|c| c >= 200) {
                    self.owners.remove(&txn);
                    return self.request_result(now, index, response, usage);
                }
                return;
            }
            Some(&Owner::Bye(r)) => r,
        };
        // A BYE's response: any final ends the dialog.
        let Some(index) = self.resolve(bye) else {
            return;
        };
        if response.status().is_some_and(|c| c >= 200) {
            self.owners.remove(&txn);
            if let Some(e) = self.remove(index)
                && let Phase::Terminating { reason, .. } = e.phase
            {
                self.events.push_back(SessionEvent::CallTerminated {
                    dialog: e.dialog.id,
                    reason,
                });
            }
        }
    }

    /// Timeout or transport error on a transaction the shard waits on.
    pub(super) fn on_txn_failure(&mut self, now: Instant, txn: TxnId, reason: TerminationReason) {
        let TxnId::Client(client) = txn else { return };
        match self.owners.get(&client) {
            Some(Owner::Call(_)) => return self.end_unanswered(client, reason),
            Some(Owner::Standalone(_)) => return self.standalone_failed(client),
            Some(Owner::Subscribe(_)) => return self.subscribe_failed(client),
            _ => {}
        }
        if let Some((r, usage)) = self.owners.take_request(&client) {
            let Some(index) = self.resolve(r) else { return };
            if usage == Usage::Refresh {
                // RFC 4028 §10: a refresh without an answer ends the session.
                return self.refresh_failed(index, 408);
            }
            if usage == Usage::Probe {
                return self.probe_failed(now, index);
            }
            if usage == Usage::Notify {
                // RFC 6665 §4.2.2: the subscriber does not answer.
                self.notify_failed(index, 408);
            }
            if usage != Usage::Session {
                // RFC 5057 §5.1: a NOTIFY, SUBSCRIBE or REFER that times out ends its
                // subscription usage; the call stays.
                if let Some(dialog) = self.entry_mut(index).map(|e| e.dialog.id.clone()) {
                    self.events.push_back(SessionEvent::RequestResult {
                        dialog,
                        status: 408,
                        response: None,
                    });
                }
                return;
            }
            // §12.2.1.2: no response to an in-dialog request ends the dialog.
            return self.request_failed(index, 408, None);
        }
        if let Some(r) = self.owners.take_reinvite(&client) {
            let Some(index) = self.resolve(r) else { return };
            // §12.2.1.2: no response to an in-dialog request ends the dialog.
            if let Some(e) = self.remove(index) {
                self.events.push_back(SessionEvent::CallTerminated {
                    dialog: e.dialog.id,
                    reason,
                });
            }
            return;
        }
        let Some(index) = self.owners.take_bye(&client).and_then(|r| self.resolve(r)) else {
            return;
        };
        if let Some(e) = self.remove(index) {
            let reason = match e.phase {
                Phase::Terminating { reason, .. } => reason,
                _ => reason,
            };
            self.events.push_back(SessionEvent::CallTerminated {
                dialog: e.call.unwrap_or(e.dialog.id),
                reason,
            });
        }
    }
}
