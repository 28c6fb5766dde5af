//! re-INVITE in a confirmed dialog (RFC 3261 §14): the peer's (target refresh, answer or
//! refusal, 500 and 491 when INVITEs overlap) and ours (ACK for its 2xx, §14.1 random wait and
//! retry after 491, dialog end after 481/408 or no answer).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::reply::Reply;
use super::timers::DialogTimer;
use super::{
    DialogError, Entry, Outgoing, Phase, Reinvite, SessionEvent, Shard, TerminationReason,
};
use crate::dialog::{self, DialogId, Role};
use crate::message::Message;
use crate::transaction::ServerTxnId;

impl Shard {
    pub(super) fn has_incoming_reinvite(&mut self, index: u32) -> bool {
        self.entry_mut(index)
            .and_then(|e| e.reinvite.as_deref())
            .is_some_and(|r| r.incoming.is_some())
    }

    /// The entry's re-INVITE state, created on first use.
    fn reinvite_state(entry: &mut Entry) -> &mut Reinvite {
        entry.reinvite.get_or_insert_with(Box::default)
    }

    /// The peer's re-INVITE (§14.2).
    pub(super) fn incoming_reinvite(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        index: u32,
    ) {
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        let (incoming, outgoing) = match entry.reinvite.as_deref() {
            Some(r) => (
                r.incoming.is_some(),
                matches!(r.outgoing, Outgoing::InProgress { .. }),
            ),
            None => (false, false),
        };
        if incoming {
            // A second INVITE before our final response to the first: 500 + Retry-After 0-10 s.
            let wait = (self.ids.random() % 11).to_string();
            return self.reject_request(
                now,
                txn,
                &request,
                500,
                &[("Retry-After", wait.as_bytes())],
            );
        }
        if outgoing || !matches!(entry.phase, Phase::Established { .. }) {
            // Ours is in progress (glare), or the dialog is not settled yet: 491.
            return self.reject_request(now, txn, &request, 491, &[]);
        }
        // RFC 4028 §9: a re-INVITE refreshes the session timer, or starts one.
        let timer = match self.check_session_timer(&request, Some(index)) {
            Ok(timer) => timer,
            Err(min_se) => return self.reject_interval(now, txn, &request, min_se),
        };
        self.expect_refresh(now, index, &request, timer);
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        if let Some(target) = dialog::contact_uri(&request) {
            entry.dialog.set_remote_target(target);
        }
        let id = entry.dialog.id.clone();
        Self::reinvite_state(entry).incoming = Some((txn, Box::new(request.clone())));
        self.events.push_back(SessionEvent::ReInvite {
            dialog: id,
            request,
        });
    }

    /// 200 to the peer's re-INVITE; retransmitted until its ACK like any 2xx (§13.3.1.4).
    pub(super) fn answer_reinvite(
        &mut self,
        now: Instant,
        index: u32,
        sdp: Bytes,
    ) -> Result<(), DialogError> {
        let Some(entry) = self.entry_mut(index) else {
            return Err(DialogError::ended("a re-INVITE to answer"));
        };
        let Some((txn, request)) = entry.reinvite.as_mut().and_then(|r| r.incoming.take()) else {
            return Err(DialogError::InvalidDialogState {
                current: "no re-INVITE pending",
                expected: "re-INVITE pending",
            });
        };
        let local = entry.dialog.id.local_tag().to_vec();
        self.send_2xx(now, index, txn, &request, &local, &sdp)
    }

    /// A final refusal of the peer's re-INVITE; the dialog goes on as before (§14.2).
    pub(super) fn reject_reinvite(
        &mut self,
        now: Instant,
        index: u32,
        status: u16,
    ) -> Result<(), DialogError> {
        if !(300..=699).contains(&status) {
            return Err(DialogError::InvalidInput(
                crate::message::BuildError::InvalidStatusCode,
            ));
        }
        let Some(entry) = self.entry_mut(index) else {
            return Err(DialogError::ended("a re-INVITE to answer"));
        };
        if let Some((txn, request)) = entry.reinvite.as_mut().and_then(|r| r.incoming.take()) {
            let local = entry.dialog.id.local_tag().to_vec();
            self.respond(now, txn, &request, Reply::new(status, Some(&local)));
            // The refused re-INVITE settles no session timer: the running one goes on.
            self.expect_refresh(now, index, &request, None);
        }
        Ok(())
    }

    /// Our re-INVITE (§14.1): only on a confirmed dialog with no INVITE in progress.
    pub(super) fn send_reinvite(
        &mut self,
        now: Instant,
        id: &DialogId,
        sdp: Bytes,
    ) -> Result<(), DialogError> {
        let index = self.found(id)?;
        match self.entry_mut(index) {
            Some(Entry {
                phase: Phase::Established { .. },
                reinvite,
                ..
            }) if reinvite
                .as_deref()
                .is_none_or(|r| r.incoming.is_none() && matches!(r.outgoing, Outgoing::Idle)) => {}
            Some(_) => {
                return Err(self.wrong_state(index, "established with no INVITE in progress"));
            }
            None => return Err(DialogError::ended("established")),
        }
        self.transmit_reinvite(now, index, sdp, false)
    }

    /// Sends a re-INVITE with `sdp`: the application's, or (`refresh`) the shard's own
    /// session refresh (RFC 4028), whose outcome the application does not hear. In a dialog
    /// with a session timer it carries the timer's headers either way.
    pub(super) fn transmit_reinvite(
        &mut self,
        now: Instant,
        index: u32,
        sdp: Bytes,
        refresh: bool,
    ) -> Result<(), DialogError> {
        let timer = self.refresh_request_headers(index);
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if !sdp.is_empty() {
            headers.push(("Content-Type", b"application/sdp"));
        }
        if let Some((se, min)) = &timer {
            headers.push(("Session-Expires", se.as_bytes()));
            headers.push(("Supported", super::session_timer::TAG_TIMER));
            if let Some(min) = min {
                headers.push(("Min-SE", min.as_bytes()));
            }
        }
        let reinvite = super::send::InDialog {
            method: b"INVITE",
            contact: true,
            headers: &headers,
            body: &sdp,
        };
        self.transmit_in_dialog(now, index, reinvite, Some(super::owners::Owner::Reinvite))?;
        // The offer is kept in case a 491 asks for a retry.
        if let Some(entry) = self.entry_mut(index) {
            Self::reinvite_state(entry).outgoing = Outgoing::InProgress { sdp, refresh };
        }
        Ok(())
    }

    /// A response to our re-INVITE.
    pub(super) fn reinvite_response(&mut self, now: Instant, index: u32, response: &Message) {
        let Some(code) = response.status() else {
            return;
        };
        if code < 200 {
            return;
        }
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        let was = entry
            .reinvite
            .as_mut()
            .map(|r| std::mem::take(&mut r.outgoing))
            .unwrap_or_default();
        let dialog = entry.dialog.id.clone();
        let refresh = matches!(was, Outgoing::InProgress { refresh: true, .. });
        match (code, was) {
            (200..=299, Outgoing::InProgress { sdp, .. }) => {
                self.session_confirmed(now, index, response, Some(&sdp));
                let Some(entry) = self.entry_mut(index) else {
                    return;
                };
                if let Some(target) = dialog::contact_uri(response) {
                    entry.dialog.set_remote_target(target);
                }
                self.dialog_changed(index);
                let transport = self.dialog_transport(index);
                let (via, _) = self.via(transport);
                let Some(entry) = self.entry_mut(index) else {
                    return;
                };
                let mut buf = BytesMut::with_capacity(512);
                let invite_cseq = response.cseq().map_or(entry.dialog.local_cseq, |c| c.seq);
                if entry.dialog.build_ack(&mut buf, &via, invite_cseq).is_ok() {
                    let ack = buf.freeze();
                    let peer = entry.dialog.peer;
                    entry.phase = Phase::Established {
                        ack: Some(ack.clone()),
                    };
                    self.txn.send_stateless(peer, transport, ack);
                }
                if !refresh {
                    self.events.push_back(SessionEvent::ReInviteResult {
                        dialog,
                        status: code,
                        sdp: crate::sdp::sdp_bytes(response),
                    });
                }
            }
            // A retransmitted 2xx: the same ACK again.
            (200..=299, other) => {
                self.restore_outgoing(index, other);
                self.ack_again(index);
            }
            (491, Outgoing::InProgress { sdp, refresh }) => {
                self.schedule_retry(now, index);
                if let Some(entry) = self.entry_mut(index) {
                    Self::reinvite_state(entry).outgoing = Outgoing::RetryPending { sdp, refresh };
                }
            }
            // §12.2.1.2: 481 or 408 means the dialog is gone.
            (481 | 408, _) => {
                if let Some(e) = self.remove(index) {
                    self.events.push_back(SessionEvent::CallTerminated {
                        dialog: e.dialog.id,
                        reason: TerminationReason::Rejected(code),
                    });
                }
            }
            (_, Outgoing::InProgress { refresh: true, .. }) => {
                self.refresh_result(now, index, response)
            }
            (_, _) => {
                if code == 422 {
                    // RFC 4028 §7.3: a later re-INVITE asks for at least the Min-SE given.
                    self.refresh_result(now, index, response);
                }
                self.events.push_back(SessionEvent::ReInviteResult {
                    dialog,
                    status: code,
                    sdp: Bytes::new(),
                })
            }
        }
    }

    fn restore_outgoing(&mut self, index: u32, outgoing: Outgoing) {
        if let Some(entry) = self.entry_mut(index) {
            Self::reinvite_state(entry).outgoing = outgoing;
        }
    }

    /// §14.1: the Call-ID's owner waits 2.1-4 s, the other side 0-2 s, in 10 ms steps.
    fn schedule_retry(&mut self, now: Instant, index: u32) {
        let owner = self
            .entry_mut(index)
            .is_some_and(|e| e.dialog.role == Role::Uac);
        let steps = if owner {
            210 + self.ids.random() % 191
        } else {
            self.ids.random() % 201
        };
        let token = self.token(index, DialogTimer::ReinviteRetry);
        self.txn
            .schedule(now + Duration::from_millis(steps * 10), token);
    }

    /// The §14.1 wait after a 491 ended: send the re-INVITE again, or wait once more if the
    /// peer's re-INVITE is being answered.
    pub(super) fn retry_reinvite(&mut self, now: Instant, index: u32) {
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        let Some(r) = entry.reinvite.as_mut() else {
            return;
        };
        if !matches!(r.outgoing, Outgoing::RetryPending { .. }) {
            return;
        }
        let busy = r.incoming.is_some() || !matches!(entry.phase, Phase::Established { .. });
        if busy {
            return self.schedule_retry(now, index);
        }
        let Outgoing::RetryPending { sdp, refresh } = std::mem::take(&mut r.outgoing) else {
            return;
        };
        if self.transmit_reinvite(now, index, sdp, refresh).is_err() {
            self.restore_outgoing(index, Outgoing::Idle);
        }
    }
}
