//! The shard as UAS: incoming INVITEs, answers, 2xx retransmission until the ACK
//! (§13.3.1.4), CANCEL (§9.2), in-dialog requests (§12.2.2) and out-of-dialog ones.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::reply::{ACCEPT, Reply, StaticHeader};
use super::timers::DialogTimer;
use super::{DialogError, Entry, Phase, SessionEvent, Shard, TerminationReason};
use crate::dialog::{self, Dialog, DialogId, DialogState, Role};
use crate::message::{HeaderName, Message, Method};
use crate::transaction::ServerTxnId;

impl Shard {
    /// What an OPTIONS answer says of us, in or out of a dialog (§11.2), and the event
    /// packages we serve (RFC 6665 §8.2.2 `Allow-Events`; empty for none).
    pub(super) fn options_headers(&self) -> (Vec<StaticHeader>, String) {
        let [allow, supported] = self.capabilities();
        // §11.2: Allow, Accept, Accept-Encoding, Accept-Language and Supported SHOULD be
        // present. No content coding is applied to bodies (§20.2: identity), and every
        // reason phrase and body we write is English.
        let headers = vec![
            allow,
            ("Accept", ACCEPT),
            ("Accept-Encoding", b"identity"),
            ("Accept-Language", b"en"),
            supported,
        ];
        let allow_events = self
            .config
            .subscriptions
            .as_ref()
            .map(super::Subscriptions::allow_events)
            .unwrap_or_default();
        (headers, allow_events)
    }

    /// §8.2.1 and §21.5.2: 405 for a method sipshard knows but does not serve here
    /// (SUBSCRIBE, PUBLISH), 501 for one it does not know; both list what it serves.
    pub(super) fn unsupported_method(&mut self, now: Instant, txn: ServerTxnId, request: &Message) {
        let status = match request.method() {
            Some(Method::Extension) => 501,
            _ => 405,
        };
        self.reject_request(now, txn, request, status, &[("Allow", self.allow())]);
    }

    pub(super) fn incoming_invite(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        from: SocketAddr,
    ) {
        let origin = super::origin_key(&self.key_hasher, &request);
        let merged = self.by_origin.get(&origin).copied().is_some_and(|i| {
            self.entry_mut(i).is_some_and(|e| match &e.phase {
                Phase::Incoming {
                    request: pending, ..
                } => super::same_origin(pending, &request),
                Phase::Answered { .. } => super::answered_origin(&e.dialog, &request),
                _ => false,
            })
        });
        if merged {
            // §8.2.2.2: same From tag, Call-ID and CSeq as an INVITE still in its
            // transaction (unanswered, or its 2xx not yet acknowledged: RFC 6026 keeps the
            // transaction until then and beyond), another branch: the request forked and
            // merged back here.
            return self.reject_request(now, txn, &request, 482, &[]);
        }
        if self.refuse_new_dialog(now, txn, &request) {
            return;
        }
        if !request.accepts("application", "sdp") {
            // RFC 4475 §3.3.15: our answer would be SDP, which the caller refuses.
            let warning = format!(
                "399 {} \"Only application/sdp is supported\"",
                self.config.local_addr
            );
            return self.reject_request(
                now,
                txn,
                &request,
                406,
                &[
                    ("Accept", b"application/sdp"),
                    ("Warning", warning.as_bytes()),
                ],
            );
        }
        if request.header(HeaderName::Replaces).is_some() {
            return self.invite_with_replaces(now, txn, request, from);
        }
        self.accept_invite(now, txn, request, from, origin, None);
    }

    /// Makes a new INVITE that passed every check an incoming call, in a new early dialog;
    /// `origin` is its [`super::origin_key`], `replaces` the dialog it is to replace (RFC
    /// 3891, `replaces` module), ended when this call is answered.
    pub(super) fn accept_invite(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        from: SocketAddr,
        origin: u64,
        replaces: Option<DialogId>,
    ) {
        // RFC 4028 §9: an interval below our minimum, from a peer that can retry, gets 422.
        let timer = match self.check_session_timer(&request, None) {
            Ok(timer) => timer,
            Err(min_se) => return self.reject_interval(now, txn, &request, min_se),
        };
        // RFC 2543 peers (RFC 4475 §3.4.1) send no From tag, and may send no Contact: the
        // remote tag is then null (§12.1.1) and the target is the From URI.
        let target = dialog::contact_uri(&request)
            .or_else(|| request.from_header().ok().map(|f| f.uri_bytes));
        let tag = self.ids.tag();
        let made = match (target, request.from_tag()) {
            (Some(target), Ok(remote_tag)) => uas_dialog(
                &request,
                tag.as_bytes(),
                remote_tag.unwrap_or_default(),
                target,
                from,
            )
            .map(|d| d.with_transport(self.txn.server_transport(txn))),
            _ => None,
        };
        let Some(d) = made else {
            // An INVITE must carry a readable From (and Contact or From URI) to make a
            // dialog.
            return self.reject_request(now, txn, &request, 400, &[]);
        };
        let id = d.id.clone();
        let cseq = d.remote_cseq.unwrap_or_default();
        let reliable = self.reliable_for(&request, cseq);
        let index = self.insert(Entry::new(
            d,
            Phase::Incoming {
                invite: txn,
                request: Box::new(request.clone()),
                reliable,
                origin,
            },
            None,
        ));
        self.by_server_txn.insert(txn, index);
        if timer.is_some() {
            self.expect_refresh(now, index, &request, timer);
        }
        // On a hash collision with another pending INVITE, the first keeps the key.
        self.by_origin.entry(origin).or_insert(index);
        let ring = self.config.ring_timeout;
        self.arm_call_timer(now, index, DialogTimer::RingTimeout, ring);
        if let Some(replaced) = &replaces
            && let Some(usages) = self.usages_made(index)
        {
            usages.replacing = Some(replaced.clone());
        }
        self.events.push_back(SessionEvent::IncomingCall {
            dialog: id,
            from,
            request,
            replaces: replaces.map(Box::new),
        });
    }

    pub(super) fn in_dialog_request(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        local: &[u8],
    ) {
        // No From tag: an RFC 2543 peer, whose dialog has a null remote tag (§12.1.1).
        let (Some(call_id), Ok(remote), Ok(cseq)) =
            (request.call_id(), request.from_tag(), request.cseq())
        else {
            return self.reject_request(now, txn, &request, 400, &[]);
        };
        let remote = remote.unwrap_or_default();
        let Some(index) = self.find_parts(call_id, local, remote) else {
            // A NOTIFY for our SUBSCRIBE may come before its 2xx, or from a second
            // notifier (RFC 6665 §4.1.2.4): it makes the dialog.
            if request.method() == Some(Method::Notify) && self.notify_for_watch(now, txn, &request)
            {
                return;
            }
            // In a cluster the dialog may be a dead peer's: claimed from the shared store.
            if request.method() != Some(Method::Ack)
                && self.wait_for_claim(txn, &request, &DialogId::new(call_id, local, remote))
            {
                return;
            }
            return self.reject_request(now, txn, &request, 481, &[]);
        };
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        // §12.2.2: a lower CSeq than the last one is out of order.
        if entry.dialog.remote_cseq.is_some_and(|last| cseq.seq < last) {
            return self.reject_request(now, txn, &request, 500, &[]);
        }
        entry.dialog.remote_cseq = Some(cseq.seq);
        let local = entry.dialog.id.local_tag().to_vec();
        // The peer's CSeq (and, for a target refresh, its Contact) must survive a restart.
        self.dialog_changed(index);
        match request.method() {
            Some(Method::Bye) => {
                self.respond(now, txn, &request, Reply::new(200, Some(&local)));
                // A BYE for our call's early dialog (the callee thinks it answered, and its
                // 2xx never reached us): our INVITE still waits for a final response that
                // will not come. Cancel it, which also bounds its wait (§9.1).
                if matches!(
                    self.entry_mut(index).map(|e| &e.phase),
                    Some(Phase::Calling {
                        provisional: true,
                        ..
                    })
                ) {
                    let _ = self.send_cancel(now, index);
                }
                if let Some(e) = self.remove(index) {
                    self.events.push_back(SessionEvent::CallTerminated {
                        dialog: e.dialog.id,
                        reason: TerminationReason::RemoteBye,
                    });
                }
            }
            Some(Method::Options) => {
                let (headers, allow_events) = self.options_headers();
                let headers = with_allow_events(&headers, &allow_events);
                self.respond(
                    now,
                    txn,
                    &request,
                    Reply::new(200, Some(&local)).headers(&headers),
                );
            }
            Some(Method::Invite) => self.incoming_reinvite(now, txn, request, index),
            Some(Method::Prack) => self.on_prack(now, txn, request, index),
            Some(Method::Info | Method::Message | Method::Update) => {
                self.dialog_request(now, txn, request, index)
            }
            Some(Method::Notify) => self.on_notify(now, txn, request, index),
            Some(Method::Refer) => self.on_refer(now, txn, request, index),
            Some(Method::Subscribe) => self.in_dialog_subscribe(now, txn, request, index),
            // PUBLISH and extension methods are not supported in a dialog.
            _ => self.unsupported_method(now, txn, &request),
        }
    }

    /// CANCEL: 200 to the CANCEL; if the INVITE is still unanswered, 487 to it (§9.2).
    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        invite: Option<ServerTxnId>,
        request: Message,
    ) {
        // O(1): pending INVITE server transactions are indexed to their dialog.
        let pending = invite.and_then(|inv| self.by_server_txn.get(&inv).copied());
        let Some(index) = pending else {
            if let Some(invite) = invite
                && self.cancel_awaiting(now, invite)
            {
                // An INVITE with Replaces still waiting for its verdict (§9.2: 200, 487).
                return self.reject_request(now, txn, &request, 200, &[]);
            }
            let status = if invite.is_some() { 200 } else { 481 };
            return self.reject_request(now, txn, &request, status, &[]);
        };
        // §9.2: the 200 to the CANCEL carries the To tag the INVITE's response carries.
        let local = self
            .entry_mut(index)
            .map(|e| e.dialog.id.local_tag().to_vec())
            .unwrap_or_default();
        self.respond(now, txn, &request, Reply::new(200, Some(&local)));
        if let Some(e) = self.remove(index)
            && let Phase::Incoming {
                invite,
                request: inv,
                ..
            } = e.phase
        {
            let local = e.dialog.id.local_tag().to_vec();
            self.respond(now, invite, &inv, Reply::new(487, Some(&local)));
            self.events.push_back(SessionEvent::CallCancelled {
                dialog: e.dialog.id,
            });
        }
    }

    /// An ACK outside the transaction layer: the ACK for our 2xx (§13.3.1.4).
    pub(super) fn on_ack(&mut self, now: Instant, request: Message) {
        let (Some(call_id), Ok(Some(local)), Ok(remote)) =
            (request.call_id(), request.to_tag(), request.from_tag())
        else {
            return;
        };
        let remote = remote.unwrap_or_default();
        let Some(index) = self.find_parts(call_id, local, remote) else {
            return;
        };
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        if let Phase::Answered {
            retransmit,
            give_up,
            bye_requested,
            origin,
            holds_origin,
            ..
        } = entry.phase
        {
            entry.phase = Phase::Established { ack: None };
            let id = entry.dialog.id.clone();
            self.txn.cancel_timer(retransmit);
            self.txn.cancel_timer(give_up);
            self.forget_origin(holds_origin.then_some(origin), index);
            self.events.push_back(SessionEvent::AckReceived {
                dialog: id,
                sdp: crate::sdp::sdp_bytes(&request),
            });
            if bye_requested {
                // The BYE the application asked for while the ACK was outstanding (§15).
                let _ = self.send_bye(now, index, TerminationReason::LocalBye);
            }
        }
    }

    /// The pending INVITE of an incoming call: its transaction, the request, and the dialog
    /// id (for our tag). Clones that share their bytes: no allocation.
    fn incoming_parts(
        &mut self,
        index: u32,
    ) -> Result<(ServerTxnId, Message, DialogId), DialogError> {
        match self.entry_mut(index) {
            Some(Entry {
                phase: Phase::Incoming {
                    invite, request, ..
                },
                dialog,
                ..
            }) => Ok((*invite, (**request).clone(), dialog.id.clone())),
            _ => Err(self.wrong_state(index, "incoming")),
        }
    }

    pub(super) fn ringing(&mut self, now: Instant, id: &DialogId) -> Result<(), DialogError> {
        let index = self.found(id)?;
        let (invite, request, id) = self.incoming_parts(index)?;
        let local = id.local_tag();
        let rseq = self.next_rseq(index)?;
        let contact = self.contact(self.dialog_transport(index));
        let rseq_text = rseq.map(|n| n.to_string()).unwrap_or_default();
        let all: [(&str, &[u8]); 3] = [
            ("Contact", &contact),
            ("Require", super::prack::TAG_100REL),
            ("RSeq", rseq_text.as_bytes()),
        ];
        let headers = if rseq.is_some() { &all[..] } else { &all[..1] };
        let sent = self.respond(
            now,
            invite,
            &request,
            Reply::new(180, Some(local)).headers(headers),
        );
        if let (Some(rseq), Some(bytes)) = (rseq, sent) {
            self.reliable_sent(now, index, rseq, 180, bytes);
        }
        Ok(())
    }

    pub(super) fn answer(
        &mut self,
        now: Instant,
        id: &DialogId,
        sdp: Bytes,
    ) -> Result<(), DialogError> {
        let index = self.found(id)?;
        if self.has_incoming_reinvite(index) {
            return self.answer_reinvite(now, index, sdp);
        }
        let (invite, request, id) = self.incoming_parts(index)?;
        if self.defer_answer(index, &sdp) {
            // Our reliable 18x awaits its PRACK: the 2xx follows it (RFC 3262 §3).
            return Ok(());
        }
        self.send_2xx(now, index, invite, &request, id.local_tag(), &sdp)?;
        self.by_server_txn.remove(&invite);
        self.set_confirmed(index);
        self.limit_call_duration(now, index);
        if let Some(entry) = self.entry_mut(index) {
            let dialog = entry.dialog.id.clone();
            self.events.push_back(SessionEvent::CallAnswered {
                call: dialog.clone(),
                dialog,
                sdp,
            });
        }
        Ok(())
    }

    /// Sends 200 (Contact, SDP) to an INVITE or re-INVITE and waits for its ACK: the 2xx is
    /// retransmitted T1 doubling to T2, and 64·T1 without ACK ends the session (§13.3.1.4).
    pub(super) fn send_2xx(
        &mut self,
        now: Instant,
        index: u32,
        invite: ServerTxnId,
        request: &Message,
        local: &[u8],
        sdp: &Bytes,
    ) -> Result<(), DialogError> {
        let contact = self.contact(self.dialog_transport(index));
        let [allow, supported] = self.capabilities();
        let all: [(&str, &[u8]); 4] = [
            ("Contact", &contact),
            allow,
            supported,
            ("Content-Type", b"application/sdp"),
        ];
        let mut headers = if sdp.is_empty() { &all[..3] } else { &all[..] };
        // RFC 4028 §9: the 2xx settles the session timer the INVITE asked for.
        let timer = self.answer_headers(index);
        let with_timer;
        if let Some(timer) = &timer {
            with_timer = [headers, &timer.pairs()].concat();
            headers = &with_timer;
        }
        let ok = self
            .respond(
                now,
                invite,
                request,
                Reply::new(200, Some(local)).headers(headers).body(sdp),
            )
            .ok_or(DialogError::InvalidDialogState {
                current: "transaction gone",
                expected: "an INVITE to answer",
            })?;
        let t1 = self.config.timers.t1;
        let retransmit =
            self.txn
                .schedule_after(now, t1, self.token(index, DialogTimer::Retransmit2xx));
        let give_up = self.txn.schedule_after(
            now,
            self.config.timers.timeout(),
            self.token(index, DialogTimer::AckGiveUp),
        );
        if let Some(entry) = self.entry_mut(index) {
            // The initial INVITE's origin stays until the ACK; a re-INVITE has none.
            let (origin, holds_origin) = match entry.phase {
                Phase::Incoming { origin, .. } => (origin, true),
                _ => (0, false),
            };
            entry.phase = Phase::Answered {
                invite,
                ok,
                interval_ms: duration_ms(t1),
                retransmit,
                give_up,
                bye_requested: false,
                origin,
                holds_origin,
            };
        }
        if timer.is_some() {
            self.refresh_answered(now, index, Some(sdp));
        }
        self.replacement_answered(now, index);
        Ok(())
    }

    pub(super) fn reject(
        &mut self,
        now: Instant,
        id: &DialogId,
        status: u16,
    ) -> Result<(), DialogError> {
        let index = self.found(id)?;
        if self.has_incoming_reinvite(index) {
            return self.reject_reinvite(now, index, status);
        }
        if !matches!(
            self.entry_mut(index).map(|e| &e.phase),
            Some(Phase::Incoming { .. })
        ) {
            return Err(self.wrong_state(index, "incoming"));
        }
        if !(300..=699).contains(&status) {
            return Err(DialogError::InvalidInput(
                crate::message::BuildError::InvalidStatusCode,
            ));
        }
        if let Some(e) = self.remove(index)
            && let Phase::Incoming {
                invite, request, ..
            } = e.phase
        {
            let local = e.dialog.id.local_tag().to_vec();
            self.respond(now, invite, &request, Reply::new(status, Some(&local)));
            self.events.push_back(SessionEvent::CallTerminated {
                dialog: e.dialog.id,
                reason: TerminationReason::Rejected(status),
            });
        }
        Ok(())
    }

    pub(super) fn wrong_state(&mut self, index: u32, expected: &'static str) -> DialogError {
        DialogError::InvalidDialogState {
            current: self.entry_mut(index).map_or("gone", |e| e.phase.name()),
            expected,
        }
    }

    /// Our 2xx again (RFC 6026: the INVITE transaction, Accepted, sends it), T1 doubling
    /// to T2, until the ACK (§13.3.1.4).
    pub(super) fn retransmit_2xx(&mut self, now: Instant, index: u32) {
        let t2 = self.config.timers.t2;
        let next_token = self.token(index, DialogTimer::Retransmit2xx);
        let Some(Entry {
            phase:
                Phase::Answered {
                    invite,
                    ok,
                    interval_ms,
                    ..
                },
            ..
        }) = self.entry_mut(index)
        else {
            return;
        };
        *interval_ms = interval_ms.saturating_mul(2).min(duration_ms(t2));
        let wait = Duration::from_millis(u64::from(*interval_ms));
        let (invite, ok) = (*invite, ok.clone());
        let timer = self.txn.schedule_after(now, wait, next_token);
        if let Some(Entry {
            phase: Phase::Answered { retransmit, .. },
            ..
        }) = self.entry_mut(index)
        {
            *retransmit = timer;
        }
        self.stats.ok_retransmissions += 1;
        let _ = self.txn.send_response(now, invite, 200, ok);
    }

    /// 64·T1 and no ACK for our 2xx: confirmed without it, but the session ends with a
    /// BYE (§13.3.1.4). If the BYE cannot even be sent, the dialog ends here.
    pub(super) fn ack_never_came(&mut self, now: Instant, index: u32) {
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        let Phase::Answered {
            retransmit,
            origin,
            holds_origin,
            ..
        } = entry.phase
        else {
            return;
        };
        entry.phase = Phase::Established { ack: None };
        self.txn.cancel_timer(retransmit);
        self.forget_origin(holds_origin.then_some(origin), index);
        if self
            .send_bye(now, index, TerminationReason::AckTimeout)
            .is_err()
            && let Some(e) = self.remove(index)
        {
            self.events.push_back(SessionEvent::CallTerminated {
                dialog: e.dialog.id,
                reason: TerminationReason::AckTimeout,
            });
        }
    }

    /// Sends BYE in the dialog at `index`; the dialog ends when the BYE transaction does.
    pub(super) fn send_bye(
        &mut self,
        now: Instant,
        index: u32,
        reason: TerminationReason,
    ) -> Result<(), DialogError> {
        let bye = super::send::InDialog {
            method: b"BYE",
            contact: false,
            headers: &[],
            body: b"",
        };
        self.transmit_in_dialog(now, index, bye, Some(super::owners::Owner::Bye))?;
        let Some(entry) = self.entry_mut(index) else {
            return Err(DialogError::ended("a dialog to end"));
        };
        let (ack, answered_origin) = match &mut entry.phase {
            Phase::Established { ack } => (ack.take(), None),
            Phase::Answered {
                origin,
                holds_origin,
                ..
            } => (None, holds_origin.then_some(*origin)),
            _ => (None, None),
        };
        entry.phase = Phase::Terminating { reason, ack };
        self.forget_origin(answered_origin, index);
        Ok(())
    }
}

/// A timer interval in whole milliseconds, at least 1 (so that doubling always grows it;
/// saturating, though SIP timers are far below u32::MAX ms).
fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// `headers`, and `Allow-Events` when `allow_events` names any package.
pub(super) fn with_allow_events<'a>(
    headers: &[StaticHeader],
    allow_events: &'a str,
) -> Vec<(&'a str, &'a [u8])> {
    let mut all: Vec<(&str, &[u8])> = headers.to_vec();
    if !allow_events.is_empty() {
        all.push(("Allow-Events", allow_events.as_bytes()));
    }
    all
}

/// Our new dialog, as UAS, for the dialog-creating `request` (§12.1.1): our tag `tag` on
/// its To, the peer's From and `remote_tag`, `target` (its Contact), its Record-Route in
/// order, secure for a sips Request-URI; in-dialog requests go to `from`. `None` without a
/// Call-ID, From, To or CSeq.
pub(super) fn uas_dialog(
    request: &Message,
    tag: &[u8],
    remote_tag: &[u8],
    target: &[u8],
    from: SocketAddr,
) -> Option<Dialog> {
    let call_id = request.call_id()?;
    let to = request.header(HeaderName::To)?;
    let remote = request.header(HeaderName::From)?;
    let cseq = request.cseq().ok()?;
    let id = DialogId::new(call_id, tag, remote_tag);
    // check_request made it a sip: or sips: URI; only the scheme is needed here.
    let secure = request
        .request_uri_bytes()
        .is_some_and(|u| u.get(..5).is_some_and(|s| s.eq_ignore_ascii_case(b"sips:")));
    let local = dialog::with_tag(to, tag);
    let routes = dialog::uas_route_set(request);
    Some(Dialog::new(
        id,
        Role::Uas,
        DialogState::Early,
        0,
        Some(cseq.seq),
        &local,
        remote,
        target,
        &routes,
        secure,
        from,
    ))
}

/// §8.2.3: the body of an INVITE, UPDATE or PRACK is an offer or answer sipshard reads, so
/// one it cannot read gets 415 with the header that says what it can: `Accept` for another
/// type, `Accept-Encoding` for a content coding other than identity. A body without
/// Content-Type (§7.4.1: it MUST be there) is a 400: reading it as no offer would answer
/// with an offer of ours. `None`: readable.
pub(super) fn unreadable_body(request: &Message) -> Option<(u16, Option<StaticHeader>)> {
    if !matches!(
        request.method(),
        Some(Method::Invite | Method::Update | Method::Prack)
    ) || request.body_bytes().is_empty()
    {
        return None;
    }
    let encoded = request
        .header_values(HeaderName::ContentEncoding)
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|coding| !coding.trim_ascii().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Some((415, Some(("Accept-Encoding", b"identity"))));
    }
    if crate::sdp::has_plain_sdp_type(request) {
        return None;
    }
    match request.content_type() {
        Ok(Some(content_type)) if !crate::sdp::is_understood_body(&content_type) => {
            Some((415, Some(("Accept", ACCEPT))))
        }
        Ok(None) => Some((400, None)),
        _ => None,
    }
}
