//! The shard as UAC: placing calls, early and confirmed dialogs from responses (§12.1.2,
//! §13.2.2), the ACK for 2xx and its repetition, CANCEL (§9.1) and BYE (§15.1.1).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::timers::DialogTimer;
use super::{DialogError, Entry, Phase, SessionEvent, Shard, TerminationReason};
use crate::dialog::{self, Dialog, DialogId, DialogState, Role};
use crate::message::{BuildError, HeaderName, Message, RequestBuilder};
use crate::transaction::{ClientTxnId, Transport};

impl Shard {
    /// Whether a dialog of ours (MakeCall, Subscribe) may start: not over the dialog or
    /// transaction limit, not stopping.
    pub(super) fn admit_own_dialog(&self) -> Result<(), DialogError> {
        if self.live >= self.config.max_dialogs || self.txn.len() >= self.config.max_transactions {
            return Err(DialogError::Overloaded);
        }
        if self.admission == super::Admission::Stopping {
            return Err(DialogError::ShuttingDown);
        }
        Ok(())
    }

    pub(super) fn make_call(
        &mut self,
        now: Instant,
        call: NewCall<'_>,
    ) -> Result<DialogId, DialogError> {
        if call.headers.iter().any(|(name, _)| is_reserved(name)) {
            return Err(DialogError::InvalidInput(BuildError::ReservedHeader));
        }
        self.admit_own_dialog()?;
        let call_id = self.owned_call_id();
        let tag = self.ids.tag();
        let transport = self.request_transport(call.request_uri)?;
        let (via, branch) = self.via(transport);
        let contact = self.contact(transport);
        let local = dialog::with_tag(call.from, tag.as_bytes());
        let mut buf = BytesMut::with_capacity(512 + call.sdp.len());
        let mut b = RequestBuilder::new(&mut buf, b"INVITE", call.request_uri);
        let first = FirstRequest {
            via: &via,
            local: &local,
            to: call.to,
            call_id: call_id.as_bytes(),
            cseq: b"1 INVITE",
            contact: &contact,
        };
        first.headers(&mut b);
        for (name, value) in call.headers {
            b.header(name, value);
        }
        // RFC 3262 as UAC: offered only with an SDP offer of ours, so that a reliable 18x
        // never brings an offer our PRACK would have to answer.
        let prack = !call.sdp.is_empty() && self.supported_header().is_some();
        if !call.sdp.is_empty() {
            b.header_named(HeaderName::ContentType, b"application/sdp");
        }
        let timers = self.config.session_timers;
        let supported: &[u8] = match (prack, timers.is_some()) {
            (true, true) => b"100rel, timer",
            (true, false) => super::prack::TAG_100REL,
            (false, true) => super::session_timer::TAG_TIMER,
            (false, false) => b"",
        };
        if !supported.is_empty() {
            b.header_named(HeaderName::Supported, supported);
        }
        if timers.is_some() {
            // RFC 4028 refreshes by UPDATE only towards a peer that allows it: say we do.
            b.header_named(HeaderName::Allow, self.allow());
        }
        // RFC 4028 §7.1: the interval we ask for, and the least we accept.
        let own = |name: HeaderName| {
            call.headers
                .iter()
                .any(|(n, _)| HeaderName::from_bytes(n.trim().as_bytes()) == name)
        };
        let asked = timers
            .filter(|t| t.ask && !own(HeaderName::SessionExpires))
            .map(|t| t.session_expires.to_string());
        if let Some(asked) = &asked {
            b.header_named(HeaderName::SessionExpires, asked.as_bytes());
        }
        let min_se = timers
            .map(|t| t.min_se)
            .filter(|&m| m > super::MIN_SE_FLOOR && !own(HeaderName::MinSE))
            .map(|m| m.to_string());
        if let Some(min_se) = &min_se {
            b.header_named(HeaderName::MinSE, min_se.as_bytes());
        }
        b.finish(&call.sdp).map_err(DialogError::InvalidInput)?;
        let request = buf.freeze();
        let id = DialogId::new(call_id.as_bytes(), tag.as_bytes(), b"");
        let invite = self
            .txn
            .send_request(
                now,
                call.destination,
                transport,
                b"INVITE",
                branch.as_bytes(),
                request.clone(),
            )
            .map_err(DialogError::TransactionError)?;
        let d = uac_dialog(
            id.clone(),
            &local,
            call.to,
            call.request_uri,
            call.destination,
        );
        let index = self.insert(Entry::new(
            d,
            Phase::Calling {
                invite,
                request,
                branch,
                provisional: false,
                cancel_pending: false,
                last_rseq: 0,
            },
            Some(id.clone()),
        ));
        self.owners.insert_call(
            invite,
            super::Call {
                primary: self.slot_ref(index),
                forks: Vec::new(),
                answered: None,
            },
        );
        let ring = self.config.ring_timeout;
        self.arm_call_timer(now, index, DialogTimer::RingTimeout, ring);
        Ok(id)
    }

    pub(super) fn cancel(&mut self, now: Instant, call: &DialogId) -> Result<(), DialogError> {
        let index = self.found(call)?;
        let Some(Entry {
            phase:
                Phase::Calling {
                    provisional,
                    cancel_pending,
                    ..
                },
            ..
        }) = self.entry_mut(index)
        else {
            return Err(self.wrong_state(index, "calling"));
        };
        if !*provisional {
            // §9.1: no CANCEL before a provisional response; it goes out with the first.
            *cancel_pending = true;
            return Ok(());
        }
        self.send_cancel(now, index)
    }

    /// Sends the CANCEL for the INVITE of the call at `index` (its own transaction with the
    /// INVITE's branch; the INVITE then ends with 487, which terminates the call).
    pub(super) fn send_cancel(&mut self, now: Instant, index: u32) -> Result<(), DialogError> {
        let Some(Entry {
            phase:
                Phase::Calling {
                    invite,
                    request,
                    branch,
                    ..
                },
            dialog,
            ..
        }) = self.entry_mut(index)
        else {
            return Err(self.wrong_state(index, "calling"));
        };
        let (invite, request, branch, peer, transport) = (
            *invite,
            request.clone(),
            *branch,
            dialog.peer,
            dialog.transport,
        );
        let cancel = build_cancel(&request).ok_or(DialogError::InvalidDialogState {
            current: "calling",
            expected: "a parseable INVITE",
        })?;
        self.txn
            .send_request(now, peer, transport, b"CANCEL", branch.as_bytes(), cancel)
            .map_err(DialogError::TransactionError)?;
        // §9.1: no final response 64·T1 after the CANCEL ends the INVITE transaction.
        self.txn.cancel_sent(now, invite);
        Ok(())
    }

    pub(super) fn bye(&mut self, now: Instant, id: &DialogId) -> Result<(), DialogError> {
        let index = self.found(id)?;
        match self.entry_mut(index).map(|e| &e.phase) {
            Some(Phase::Answered { .. }) => {
                // §15: the callee MUST NOT send BYE before the ACK for its 2xx arrives (or
                // 64·T1 pass without one); it goes out then.
                if let Some(Entry {
                    phase: Phase::Answered { bye_requested, .. },
                    ..
                }) = self.entry_mut(index)
                {
                    *bye_requested = true;
                }
                Ok(())
            }
            Some(Phase::Established { .. }) => {
                self.send_bye(now, index, TerminationReason::LocalBye)
            }
            _ => Err(self.wrong_state(index, "established")),
        }
    }

    /// A response to our INVITE (§13.2.2): early and confirmed dialogs per To tag.
    pub(super) fn invite_response(&mut self, now: Instant, txn: ClientTxnId, response: &Message) {
        let Some(code) = response.status() else {
            return;
        };
        let to_tag = response.to_tag().ok().flatten();
        if code < 200
            && let Some(primary) = self.owners.call(&txn).and_then(|c| self.resolve(c.primary))
            && let Some(Entry {
                phase:
                    Phase::Calling {
                        provisional,
                        cancel_pending,
                        ..
                    },
                ..
            }) = self.entry_mut(primary)
        {
            *provisional = true;
            if std::mem::take(cancel_pending) {
                let _ = self.send_cancel(now, primary);
            }
        }
        match (code, to_tag) {
            (101..=199, Some(tag)) => {
                let Some((index, new)) = self.dialog_for_tag(txn, tag, response) else {
                    return;
                };
                self.prack_if_reliable(now, index, response);
                if new && let Some(e) = self.entry_mut(index) {
                    let dialog = e.dialog.id.clone();
                    let call = e.call.clone().unwrap_or_else(|| dialog.clone());
                    self.events
                        .push_back(SessionEvent::CallRinging { dialog, call });
                }
            }
            (200..=299, Some(tag)) => {
                let Some((index, _)) = self.dialog_for_tag(txn, tag, response) else {
                    return;
                };
                let answered = self.owners.call(&txn).and_then(|c| c.answered);
                let this = self.slot_ref(index);
                match answered {
                    None => {
                        if let Some(call) = self.owners.call_mut(&txn) {
                            call.answered = Some(this);
                        }
                        let offer = self.session_timers_on().then(|| self.invite_offer(txn));
                        self.confirm(now, index, response, true);
                        if let Some(offer) = offer {
                            self.session_confirmed(now, index, response, offer.as_ref());
                        }
                    }
                    Some(first) if first == this => self.ack_again(index),
                    // §13.2.2.4: a 2xx from another fork is ACKed, then ended with BYE.
                    Some(_) => {
                        if matches!(
                            self.entry_mut(index).map(|e| &e.phase),
                            Some(Phase::Established { .. })
                        ) {
                            self.ack_again(index);
                        } else {
                            self.confirm(now, index, response, false);
                            let _ = self.send_bye(now, index, TerminationReason::OtherForkAnswered);
                        }
                    }
                }
            }
            (422, _) if self.retry_interval(now, txn, response) => {}
            (401 | 407, _) if self.retry_with_credentials(now, txn, response) => {}
            (300..=699, _) => {
                let reason = if code == 487 {
                    TerminationReason::Cancelled
                } else {
                    TerminationReason::Rejected(code)
                };
                self.end_unanswered(txn, reason);
            }
            _ => {}
        }
    }

    /// §22.2: a 401 or 407 to our INVITE, before any early dialog, sends it again with
    /// our answers to its challenges (`auth` module). False when it did not go again (the
    /// call then fails with the 401 or 407).
    fn retry_with_credentials(
        &mut self,
        now: Instant,
        txn: ClientTxnId,
        response: &Message,
    ) -> bool {
        let Some((index, old)) = self.unanswered_invite(txn) else {
            return false;
        };
        let Some((header, answers)) = self.answer_challenges(&old, response) else {
            return false;
        };
        let name = header.as_str();
        let added: Vec<(&str, &[u8])> = answers.iter().map(|a| (name, a.as_bytes())).collect();
        self.reissue_invite(now, txn, index, &old, &[header], &added)
    }

    /// The call of INVITE transaction `txn`, when it has no early dialog yet: its dialog
    /// and the INVITE as sent (what [`Shard::reissue_invite`] sends again).
    pub(super) fn unanswered_invite(&mut self, txn: ClientTxnId) -> Option<(u32, Message)> {
        let call = self.owners.call(&txn).filter(|c| c.forks.is_empty())?;
        let index = self.resolve(call.primary)?;
        let Some(Entry {
            phase: Phase::Calling { request, .. },
            dialog,
            ..
        }) = self.entry_mut(index)
        else {
            return None;
        };
        if !dialog.id.remote_tag().is_empty() {
            return None;
        }
        let old = Message::parse(request.clone()).ok()?;
        Some((index, old))
    }

    /// Sends our unanswered INVITE `old` (transaction `txn`, dialog `index`) again as a
    /// new transaction: same Call-ID, From tag, To, Request-URI, body and other headers,
    /// the next CSeq (§8.1.3.5, §22.2; RFC 4028 §7.3), a new branch, without the header
    /// lines `replaced` names and with `added`. The call follows the new transaction.
    /// False when nothing went out.
    pub(super) fn reissue_invite(
        &mut self,
        now: Instant,
        txn: ClientTxnId,
        index: u32,
        old: &Message,
        replaced: &[HeaderName],
        added: &[(&str, &[u8])],
    ) -> bool {
        let (Ok(cseq), Some(uri)) = (old.cseq(), old.request_uri_bytes()) else {
            return false;
        };
        let seq = cseq.seq + 1;
        let transport = self.dialog_transport(index);
        let (via, branch) = self.via(transport);
        let Some(invite) = rebuilt(old, b"INVITE", uri, &via, seq, replaced, added) else {
            return false;
        };
        let Some(Entry { dialog, .. }) = self.entry_mut(index) else {
            return false;
        };
        let peer = dialog.peer;
        let Ok(new_txn) = self.txn.send_request(
            now,
            peer,
            transport,
            b"INVITE",
            branch.as_bytes(),
            invite.clone(),
        ) else {
            return false;
        };
        let Some(Entry { phase, dialog, .. }) = self.entry_mut(index) else {
            return false;
        };
        dialog.local_cseq = seq;
        if let Phase::Calling {
            invite: txn_slot,
            request,
            branch: branch_slot,
            provisional,
            last_rseq,
            ..
        } = phase
        {
            *txn_slot = new_txn;
            *request = invite;
            *branch_slot = branch;
            *provisional = false;
            *last_rseq = 0;
        }
        if let Some(call) = self.owners.take_call(&txn) {
            self.owners
                .insert(new_txn, super::owners::Owner::Call(call));
        }
        true
    }

    /// The dialog of our call with the peer's tag `tag`: the primary (learning the tag from
    /// the first tagged response), an existing fork, or a new fork. Returns it and whether
    /// it is new to the application.
    fn dialog_for_tag(
        &mut self,
        txn: ClientTxnId,
        tag: &[u8],
        response: &Message,
    ) -> Option<(u32, bool)> {
        let call = self.owners.call(&txn)?;
        // A dialog of the call that has ended leaves no fork to match or copy.
        let primary = self.resolve(call.primary)?;
        let forks: Vec<u32> = call.forks.iter().filter_map(|f| self.resolve(*f)).collect();
        let p = self.entry_mut(primary)?;
        if p.dialog.id.remote_tag().is_empty() {
            self.learn_remote(primary, response, tag);
            return Some((primary, true));
        }
        if p.dialog.id.remote_tag() == tag {
            return Some((primary, false));
        }
        for f in forks {
            if self
                .entry_mut(f)
                .is_some_and(|e| e.dialog.id.remote_tag() == tag)
            {
                return Some((f, false));
            }
        }
        // A new fork: a dialog of its own with the primary's local side.
        let tcp = self.config.tcp;
        let p = self.entry_mut(primary)?;
        let d = dialog_from_response(&p.dialog, tag, response, tcp);
        let call = p.call.clone();
        let invite_offer = matches!(&p.phase, Phase::Calling { request, .. } if super::requests::invite_has_body(request));
        let index = self.insert(Entry::new(
            d,
            Phase::Early {
                last_rseq: 0,
                invite_offer,
            },
            call,
        ));
        let fork = self.slot_ref(index);
        if let Some(c) = self.owners.call_mut(&txn) {
            c.forks.push(fork);
        }
        Some((index, true))
    }

    /// The INVITE failed (non-2xx final, Timer B, transport error): every dialog of the call
    /// that no 2xx confirmed ends.
    pub(super) fn end_unanswered(&mut self, txn: ClientTxnId, reason: TerminationReason) {
        let Some(call) = self.owners.take_call(&txn) else {
            return;
        };
        for r in std::iter::once(call.primary).chain(call.forks) {
            let Some(index) = self.resolve(r) else {
                continue;
            };
            if matches!(
                self.entry_mut(index).map(|e| &e.phase),
                Some(Phase::Calling { .. } | Phase::Early { .. })
            ) && let Some(e) = self.remove(index)
            {
                let dialog = match e.phase {
                    Phase::Calling { .. } => e.call.unwrap_or(e.dialog.id),
                    _ => e.dialog.id,
                };
                self.events
                    .push_back(SessionEvent::CallTerminated { dialog, reason });
            }
        }
    }

    /// Our INVITE transaction ended (after Timer M or D): early dialogs of other forks that
    /// never got a 2xx end too.
    pub(super) fn invite_ended(&mut self, txn: ClientTxnId) {
        if self.owners.call(&txn).is_some_and(|c| c.answered.is_some()) {
            self.end_unanswered(txn, TerminationReason::OtherForkAnswered);
        } else {
            self.owners.take_call(&txn);
        }
    }

    /// Fills in the peer's tag, To, target and route set from the first tagged response.
    fn learn_remote(&mut self, index: u32, response: &Message, remote_tag: &[u8]) {
        let tcp = self.config.tcp;
        let Some(e) = self.entry_mut(index) else {
            return;
        };
        let d = dialog_from_response(&e.dialog, remote_tag, response, tcp);
        self.replace_dialog(index, d);
    }

    /// A 2xx confirms the dialog at `index`: the ACK goes out (§13.2.2.4) and, when
    /// `announce`, the application hears CallAnswered.
    fn confirm(&mut self, now: Instant, index: u32, response: &Message, announce: bool) {
        let tcp = self.config.tcp;
        let Some(e) = self.entry_mut(index) else {
            return;
        };
        // The 2xx may carry a target and route set the 1xx did not.
        if let Some(target) = dialog::contact_uri(response)
            && target != e.dialog.remote_target()
        {
            let remote = e.dialog.remote().to_vec();
            let local = e.dialog.local().to_vec();
            let routes = dialog::uac_route_set(response);
            let transport = e.dialog.transport;
            e.dialog = Dialog::new(
                e.dialog.id.clone(),
                Role::Uac,
                e.dialog.state,
                e.dialog.local_cseq,
                None,
                &local,
                &remote,
                target,
                &routes,
                e.dialog.secure,
                e.dialog.peer,
            )
            .with_transport(transport);
        }
        let transport = target_transport(e.dialog.next_hop_uri(), e.dialog.transport, tcp);
        e.dialog.transport = transport;
        let (via, _) = self.via(transport);
        let Some(e) = self.entry_mut(index) else {
            return;
        };
        // An ACK is a few hundred bytes: one allocation, not a doubling per header.
        let mut buf = BytesMut::with_capacity(512);
        let invite_cseq = response.cseq().map_or(1, |c| c.seq);
        if e.dialog.build_ack(&mut buf, &via, invite_cseq).is_err() {
            return;
        }
        let ack = buf.freeze();
        let peer = e.dialog.peer;
        e.phase = Phase::Established {
            ack: Some(ack.clone()),
        };
        let dialog = e.dialog.id.clone();
        let call = e.call.clone().unwrap_or_else(|| dialog.clone());
        self.set_confirmed(index);
        self.limit_call_duration(now, index);
        self.txn.send_stateless(peer, transport, ack);
        if announce {
            self.events.push_back(SessionEvent::CallAnswered {
                dialog,
                call,
                sdp: crate::sdp::sdp_bytes(response),
            });
        }
    }

    /// §13.2.2.4: every retransmission of the 2xx gets the ACK again, also after our BYE.
    pub(super) fn ack_again(&mut self, index: u32) {
        if let Some(Entry {
            phase: Phase::Established { ack: Some(ack) } | Phase::Terminating { ack: Some(ack), .. },
            dialog,
            ..
        }) = self.entry_mut(index)
        {
            let (peer, transport, ack) = (dialog.peer, dialog.transport, ack.clone());
            self.txn.send_stateless(peer, transport, ack);
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

/// A UAC dialog for the peer tag `tag` of a response to our INVITE (§12.1.2): early, our side
/// from `base`, the peer's To, remote target from its Contact (else `base`'s), route set from
/// its Record-Route reversed. (Always early: a fork may answer after another confirmed.)
/// Over the transport its Contact names, if it names one we speak ([`target_transport`]).
fn dialog_from_response(base: &Dialog, tag: &[u8], response: &Message, tcp: bool) -> Dialog {
    let id = DialogId::new(base.id.call_id(), base.id.local_tag(), tag);
    let target = dialog::contact_uri(response).unwrap_or(base.remote_target());
    let remote = response.header(HeaderName::To).unwrap_or(base.remote());
    let routes = dialog::uac_route_set(response);
    let dialog = Dialog::new(
        id,
        Role::Uac,
        DialogState::Early,
        base.local_cseq,
        None,
        base.local(),
        remote,
        target,
        &routes,
        base.secure,
        base.peer,
    );
    let transport = target_transport(dialog.next_hop_uri(), base.transport, tcp);
    dialog.with_transport(transport)
}

/// The transport of in-dialog requests whose next hop is `next_hop` (the first route, or
/// the remote target: [`Dialog::next_hop_uri`]): the one its `transport` parameter names
/// when sipshard speaks it (RFC 3263 §4.1; e.g. a SIPp callee's `;transport=TCP`
/// Contact), else `current`, the one the dialog was made over (a URI without the
/// parameter does not move a TCP dialog to UDP).
pub(super) fn target_transport(next_hop: &[u8], current: Transport, tcp: bool) -> Transport {
    // Most URIs have no parameters at all: no parse for them.
    if memchr::memchr(b';', next_hop).is_none() {
        return current;
    }
    let named = crate::message::Uri::parse(next_hop).ok().and_then(|u| {
        u.as_sip()
            .and_then(|s| s.transport())
            .map(Transport::from_token)
    });
    match named {
        Some(Some(Transport::Tcp)) if !tcp => current,
        Some(Some(t)) => t,
        _ => current,
    }
}

/// Our request `old` (method `method`, Request-URI `uri`) built again for a new
/// transaction: top Via `via`, CSeq `seq`, every other header line as it was except those
/// `replaced` names, then `added`, and the same body. `None` when it cannot be built.
pub(super) fn rebuilt(
    old: &Message,
    method: &[u8],
    uri: &[u8],
    via: &[u8],
    seq: u32,
    replaced: &[HeaderName],
    added: &[(&str, &[u8])],
) -> Option<Bytes> {
    let mut buf = BytesMut::with_capacity(old.datagram().len() + 256);
    let mut b = RequestBuilder::new(&mut buf, method, uri);
    let mut cseq_value = format!("{seq} ").into_bytes();
    cseq_value.extend_from_slice(method);
    for h in old.headers() {
        match h.name {
            HeaderName::Via => b.header_named(HeaderName::Via, via),
            HeaderName::CSeq => b.header_named(HeaderName::CSeq, &cseq_value),
            HeaderName::ContentLength => continue,
            name if replaced.contains(&name) => continue,
            _ => match std::str::from_utf8(h.name_bytes) {
                Ok(name) => b.header(name, h.value),
                Err(_) => continue,
            },
        };
    }
    for (name, value) in added {
        b.header(name, value);
    }
    b.finish(old.body_bytes()).ok()?;
    Some(buf.freeze())
}

/// CANCEL for an INVITE we sent (§9.1): same Request-URI, Call-ID, To, From, CSeq number and
/// top Via; method CANCEL.
fn build_cancel(invite: &Bytes) -> Option<Bytes> {
    let req = Message::parse(invite.clone()).ok()?;
    let cseq = req.cseq().ok()?;
    let mut buf = BytesMut::with_capacity(invite.len());
    let mut b = RequestBuilder::new(&mut buf, b"CANCEL", req.request_uri_bytes()?);
    b.header_named(HeaderName::Via, req.top_via_bytes()?)
        .header_named(HeaderName::MaxForwards, b"70")
        .header_named(HeaderName::From, req.header(HeaderName::From)?)
        .header_named(HeaderName::To, req.header(HeaderName::To)?)
        .header_named(HeaderName::CallId, req.call_id()?)
        .header_named(HeaderName::CSeq, format!("{} CANCEL", cseq.seq).as_bytes());
    // §9.1: the Route of the request being cancelled (a preloaded route set).
    for route in req.header_values(HeaderName::Route) {
        b.header_named(HeaderName::Route, route);
    }
    b.finish(b"").ok()?;
    Some(buf.freeze())
}

/// The headers every request that opens a dialog of ours starts with (§8.1.1).
pub(super) struct FirstRequest<'a> {
    pub(super) via: &'a [u8],
    /// Our From value, with our tag.
    pub(super) local: &'a [u8],
    pub(super) to: &'a [u8],
    pub(super) call_id: &'a [u8],
    /// `1 INVITE`, `1 SUBSCRIBE`.
    pub(super) cseq: &'a [u8],
    pub(super) contact: &'a [u8],
}

impl FirstRequest<'_> {
    /// Via, Max-Forwards, From, To, Call-ID, CSeq and Contact.
    pub(super) fn headers(&self, b: &mut RequestBuilder<'_>) {
        b.header_named(HeaderName::Via, self.via)
            .header_named(HeaderName::MaxForwards, b"70")
            .header_named(HeaderName::From, self.local)
            .header_named(HeaderName::To, self.to)
            .header_named(HeaderName::CallId, self.call_id)
            .header_named(HeaderName::CSeq, self.cseq)
            .header_named(HeaderName::Contact, self.contact);
    }
}

/// Our dialog, as UAC, for a request we are sending to `request_uri` at `destination`: no
/// peer tag yet, CSeq 1, the target the Request-URI until a Contact says otherwise.
pub(super) fn uac_dialog(
    id: DialogId,
    local: &[u8],
    to: &[u8],
    request_uri: &[u8],
    destination: SocketAddr,
) -> Dialog {
    Dialog::new(
        id,
        Role::Uac,
        DialogState::Early,
        1,
        None,
        local,
        to,
        request_uri,
        &[],
        false,
        destination,
    )
    .with_transport(super::uri_transport(request_uri).unwrap_or_default())
}

/// What `MakeCall` carries, borrowed.
pub(super) struct NewCall<'a> {
    pub(super) from: &'a [u8],
    pub(super) to: &'a [u8],
    pub(super) request_uri: &'a [u8],
    pub(super) destination: SocketAddr,
    pub(super) sdp: Bytes,
    pub(super) headers: &'a [(String, Bytes)],
}

/// Headers of an INVITE that the dialog layer writes itself, in long or compact form (the
/// message layer's name classification knows both).
pub(super) fn is_reserved(name: &str) -> bool {
    matches!(
        HeaderName::from_bytes(name.trim().as_bytes()),
        HeaderName::Via
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CallId
            | HeaderName::CSeq
            | HeaderName::Contact
            | HeaderName::MaxForwards
            | HeaderName::ContentType
            | HeaderName::ContentLength
    )
}
