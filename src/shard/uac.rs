//! The shard as UAC: placing calls, early and confirmed dialogs from responses (§12.1.2,
//! §13.2.2), the ACK for 2xx and its repetition, CANCEL (§9.1) and BYE (§15.1.1).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{DialogError, Entry, Phase, SessionEvent, Shard, TerminationReason};
use crate::dialog::{self, Dialog, DialogId, DialogState, Role};
use crate::message::{HeaderName, Message, RequestBuilder};
use crate::transaction::ClientTxnId;

impl Shard {
    pub(super) fn make_call(
        &mut self,
        now: Instant,
        from: &[u8],
        to: &[u8],
        request_uri: &[u8],
        destination: SocketAddr,
        sdp: Bytes,
    ) -> Result<DialogId, DialogError> {
        if self.live >= self.config.max_dialogs {
            return Err(DialogError::Overloaded);
        }
        let call_id = self.ids.call_id();
        let tag = self.ids.tag();
        let (via, branch) = self.via();
        let contact = self.contact();
        let local = dialog::with_tag(from, tag.as_bytes());
        let mut buf = BytesMut::with_capacity(512 + sdp.len());
        let mut b = RequestBuilder::new(&mut buf, b"INVITE", request_uri);
        b.header("Via", &via)
            .header("Max-Forwards", b"70")
            .header("From", &local)
            .header("To", to)
            .header("Call-ID", call_id.as_bytes())
            .header("CSeq", b"1 INVITE")
            .header("Contact", &contact);
        if !sdp.is_empty() {
            b.header("Content-Type", b"application/sdp");
        }
        b.finish(&sdp).map_err(DialogError::InvalidInput)?;
        let request = buf.freeze();
        let id = DialogId::new(call_id.as_bytes(), tag.as_bytes(), b"");
        let invite = self
            .txn
            .send_request(now, destination, false, b"INVITE", &branch, request.clone())
            .map_err(DialogError::TransactionError)?;
        let d = Dialog::new(
            id.clone(),
            Role::Uac,
            DialogState::Early,
            1,
            None,
            &local,
            to,
            request_uri,
            &[],
            false,
            destination,
        );
        let index = self.insert(Entry {
            dialog: d,
            phase: Phase::Calling { request, branch },
            call: Some(id.clone()),
        });
        self.by_client_txn.insert(invite, index);
        Ok(id)
    }

    pub(super) fn cancel(&mut self, now: Instant, call: &DialogId) -> Result<(), DialogError> {
        let index = self.find(call).ok_or(DialogError::DialogNotFound)?;
        let Some(Entry {
            phase: Phase::Calling {
                request, branch, ..
            },
            dialog,
            ..
        }) = self.entry_mut(index)
        else {
            return Err(self.wrong_state(index, "calling"));
        };
        let (request, branch, peer) = (request.clone(), branch.clone(), dialog.peer);
        let cancel = build_cancel(&request).ok_or(DialogError::InvalidDialogState {
            current: "calling",
            expected: "a parseable INVITE",
        })?;
        // The CANCEL is its own transaction with the INVITE's branch; the INVITE then ends
        // with 487, which terminates the call.
        self.txn
            .send_request(now, peer, false, b"CANCEL", &branch, cancel)
            .map_err(DialogError::TransactionError)?;
        Ok(())
    }

    pub(super) fn bye(&mut self, now: Instant, id: &DialogId) -> Result<(), DialogError> {
        let index = self.find(id).ok_or(DialogError::DialogNotFound)?;
        match self.entry_mut(index).map(|e| &e.phase) {
            Some(Phase::Established { .. } | Phase::Answered { .. }) => {
                if let Some(Entry {
                    phase:
                        Phase::Answered {
                            retransmit,
                            give_up,
                            ..
                        },
                    ..
                }) = self.entry_mut(index)
                {
                    let (r, g) = (*retransmit, *give_up);
                    self.txn.cancel_timer(r);
                    self.txn.cancel_timer(g);
                }
                self.send_bye(now, index, TerminationReason::LocalBye)
            }
            _ => Err(self.wrong_state(index, "established")),
        }
    }

    pub(super) fn on_response(&mut self, now: Instant, txn: ClientTxnId, response: Message) {
        let Some(&index) = self.by_client_txn.get(&txn) else {
            return;
        };
        let Some(code) = response.status() else {
            return;
        };
        let phase = self.entry_mut(index).map(|e| e.phase.name());
        match (phase, code) {
            (Some("calling"), 101..=199) => self.early(index, &response),
            (Some("calling"), 200..=299) => self.confirmed(now, index, &response),
            (Some("calling"), 300..=699) => {
                self.by_client_txn.remove(&txn);
                if let Some(e) = self.remove(index) {
                    let reason = if code == 487 {
                        TerminationReason::Cancelled
                    } else {
                        TerminationReason::Rejected(code)
                    };
                    self.events.push_back(SessionEvent::CallTerminated {
                        dialog: e.call.unwrap_or(e.dialog.id),
                        reason,
                    });
                }
            }
            // A 2xx retransmission reaching the Accepted INVITE transaction: ACK again.
            (Some("established"), 200..=299) => self.ack_again(index),
            (Some("terminating"), 200..=699) => {
                self.by_client_txn.remove(&txn);
                if let Some(e) = self.remove(index)
                    && let Phase::Terminating { reason } = e.phase
                {
                    self.events.push_back(SessionEvent::CallTerminated {
                        dialog: e.dialog.id,
                        reason,
                    });
                }
            }
            _ => {}
        }
    }

    /// A tagged 1xx: the call's dialog becomes early with the peer's tag. (A second,
    /// different tag would be a fork: not handled yet.)
    fn early(&mut self, index: u32, response: &Message) {
        let Ok(Some(remote_tag)) = response.to_tag() else {
            return;
        };
        if !self.learn_remote(index, response, remote_tag) {
            return;
        }
        if let Some(e) = self.entry_mut(index) {
            let (dialog, call) = (
                e.dialog.id.clone(),
                e.call.clone().unwrap_or_else(|| e.dialog.id.clone()),
            );
            self.events
                .push_back(SessionEvent::CallRinging { dialog, call });
        }
    }

    /// Fills in the peer's tag, To, target and route set from the first tagged response;
    /// false when the response carries a different tag than the dialog already has.
    fn learn_remote(&mut self, index: u32, response: &Message, remote_tag: &[u8]) -> bool {
        let Some(e) = self.entry_mut(index) else {
            return false;
        };
        if !e.dialog.id.remote_tag().is_empty() {
            return e.dialog.id.remote_tag() == remote_tag;
        }
        let id = DialogId::new(e.dialog.id.call_id(), e.dialog.id.local_tag(), remote_tag);
        let target = dialog::contact_uri(response)
            .unwrap_or(e.dialog.remote_target())
            .to_vec();
        let remote = response
            .header(HeaderName::To)
            .unwrap_or(e.dialog.remote())
            .to_vec();
        let routes = dialog::uac_route_set(response);
        let local = e.dialog.local().to_vec();
        e.dialog = Dialog::new(
            id.clone(),
            Role::Uac,
            e.dialog.state,
            e.dialog.local_cseq,
            None,
            &local,
            &remote,
            &target,
            &routes,
            e.dialog.secure,
            e.dialog.peer,
        );
        self.rekey(index, id);
        true
    }

    /// A 2xx: the dialog is confirmed and the ACK goes out (§13.2.2.4).
    fn confirmed(&mut self, _now: Instant, index: u32, response: &Message) {
        let Ok(Some(remote_tag)) = response.to_tag() else {
            return;
        };
        if !self.learn_remote(index, response, remote_tag) {
            return;
        }
        let (via, _) = self.via();
        let Some(e) = self.entry_mut(index) else {
            return;
        };
        let mut buf = BytesMut::new();
        if e.dialog
            .build_request(&mut buf, b"ACK", &via, b"", &[], b"")
            .is_err()
        {
            return;
        }
        let ack = buf.freeze();
        let peer = e.dialog.peer;
        e.dialog.state = DialogState::Confirmed;
        e.phase = Phase::Established {
            ack: Some(ack.clone()),
        };
        let (dialog, call) = (
            e.dialog.id.clone(),
            e.call.clone().unwrap_or_else(|| e.dialog.id.clone()),
        );
        self.txn.send_stateless(peer, ack);
        self.events.push_back(SessionEvent::CallAnswered {
            dialog,
            call,
            sdp: response.body(),
        });
    }

    fn ack_again(&mut self, index: u32) {
        if let Some(Entry {
            phase: Phase::Established { ack: Some(ack) },
            dialog,
            ..
        }) = self.entry_mut(index)
        {
            let (peer, ack) = (dialog.peer, ack.clone());
            self.txn.send_stateless(peer, ack);
        }
    }

    /// A response no transaction claims: a 2xx retransmitted after the INVITE transaction
    /// ended gets its ACK again.
    pub(super) fn on_stray_response(&mut self, response: Message) {
        if !response.status().is_some_and(|c| (200..300).contains(&c)) {
            return;
        }
        let (Some(call_id), Ok(Some(local)), Ok(Some(remote))) =
            (response.call_id(), response.from_tag(), response.to_tag())
        else {
            return;
        };
        if let Some(index) = self.find_parts(call_id, local, remote) {
            self.ack_again(index);
        }
    }
}

/// CANCEL for an INVITE we sent (§9.1): same Request-URI, Call-ID, To, From, CSeq number and
/// top Via; method CANCEL.
fn build_cancel(invite: &Bytes) -> Option<Bytes> {
    let req = Message::parse(invite.clone()).ok()?;
    let cseq = req.cseq().ok()?;
    let mut buf = BytesMut::with_capacity(invite.len());
    let mut b = RequestBuilder::new(&mut buf, b"CANCEL", req.request_uri_bytes()?);
    b.header("Via", req.top_via_bytes()?)
        .header("Max-Forwards", b"70")
        .header("From", req.header(HeaderName::From)?)
        .header("To", req.header(HeaderName::To)?)
        .header("Call-ID", req.call_id()?)
        .header("CSeq", format!("{} CANCEL", cseq.seq).as_bytes());
    b.finish(b"").ok()?;
    Some(buf.freeze())
}
