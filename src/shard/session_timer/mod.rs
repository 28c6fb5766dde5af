//! Session timers (RFC 4028): the keep-alive of a call. Either side may ask for one with
//! `Session-Expires` (and `Supported: timer`); the UAS settles the interval and who
//! refreshes (`refresher=uac|uas`) in its 2xx. The refresher sends a re-INVITE or UPDATE
//! at half the interval; the other side, when no refresh came, sends BYE a little before
//! the interval ends (the smaller of 32 s and a third of it, §10).
//!
//! # What it owns, what it may not touch
//! Each dialog's session timer (in its entry's usages, only for dialogs with a timer) and
//! its `DialogTimer::Session` wheel entry; what a request settles is `negotiate`'s.
//! Requests go out through the dialog's own builders, the re-INVITE machinery (`reinvite`
//! module) and the in-dialog request book (`requests`); the application never sees a
//! refresh: no event for an offerless UPDATE refresh we answer, for our refresh's outcome,
//! or for our own refresh's 2xx.
//!
//! # Choices
//! - The peer's refresh request is answered with the interval it asked for, lowered to
//!   [`SessionTimers::session_expires`] (never below either side's Min-SE); one below our
//!   Min-SE gets 422 when the peer supports timers, else is raised (RFC 4028 errata 1687).
//! - Our refresh is an offerless UPDATE when the peer allows UPDATE, else a re-INVITE with
//!   our last SDP unchanged (RFC 3264 §8: the same version, no change to the session).
//! - A refresh that fails with 422 goes again at once with the asked Min-SE; one that gets
//!   405/501 to UPDATE goes again as re-INVITE; 408/481 or no answer ends the dialog
//!   (§12.2.1.2); any other failure is tried again halfway to the end of the interval.

mod negotiate;

pub use negotiate::{MIN_SE_FLOOR, Refresher, SessionTimers};
pub(super) use negotiate::{Negotiated, TAG_TIMER, negotiate};

use std::time::{Duration, Instant};

use bytes::Bytes;

use negotiate::{MAX_INTERVAL, allows_update};

use super::reply::Reply;
use super::timers::DialogTimer;
use super::{Entry, Outgoing, Phase, SessionEvent, Shard, TerminationReason};
use crate::message::{HeaderName, Message};
use crate::timer::TimerHandle;
use crate::transaction::{ClientTxnId, ServerTxnId};

/// The session timer of one dialog.
#[derive(Debug)]
pub(super) struct SessionTimer {
    /// The running interval in seconds; 0 before the first 2xx settles one.
    interval: u32,
    /// We send the refreshes.
    we_refresh: bool,
    /// When the session ends without a refresh.
    expires_at: Instant,
    /// The refresh or expiry timer on the wheel.
    timer: Option<TimerHandle>,
    /// Min-SE for our refresh requests: the largest either side asked for.
    min_se: u32,
    /// The peer allows UPDATE (its Allow said so): refreshes need no offer.
    peer_update: bool,
    /// Our last SDP, for a re-INVITE refresh.
    local_sdp: Bytes,
    /// Settled for the peer's request we are answering; takes effect with our 2xx.
    pending: Option<Negotiated>,
    /// A refresh of ours is out.
    refreshing: bool,
}

impl SessionTimer {
    /// What a restarted shard needs of it, its deadline in wall-clock time (`wall`); `None`
    /// before an interval is settled, or without a wall clock.
    pub(super) fn to_record(
        &self,
        wall: impl Fn(Instant) -> Option<std::time::SystemTime>,
    ) -> Option<crate::dialog::SessionTimerRecord> {
        if self.interval == 0 {
            return None;
        }
        Some(crate::dialog::SessionTimerRecord {
            interval: self.interval,
            we_refresh: self.we_refresh,
            min_se: self.min_se,
            peer_update: self.peer_update,
            expires_at: wall(self.expires_at)?,
            local_sdp: self.local_sdp.clone(),
        })
    }

    /// Its refresh or expiry timer on the wheel.
    pub(super) fn timer(&self) -> Option<TimerHandle> {
        self.timer
    }

    fn new(now: Instant, min_se: u32, peer_update: bool, local_sdp: Bytes) -> Self {
        SessionTimer {
            interval: 0,
            we_refresh: false,
            expires_at: now,
            timer: None,
            min_se,
            peer_update,
            local_sdp,
            pending: None,
            refreshing: false,
        }
    }

    /// How long before the end the non-refresher sends BYE: min(32 s, interval / 3) (§10).
    fn margin(&self) -> Duration {
        Duration::from_secs(u64::from(32.min(self.interval / 3)))
    }

    /// When the session is given up: the end, less the margin.
    fn backstop(&self) -> Instant {
        self.expires_at - self.margin()
    }
}

/// The headers our 2xx to a refresh request carries for `n`: Session-Expires with the
/// refresher, and Require: timer when the peer supports it. (Supported, with `timer`, and
/// Allow, so that the peer may refresh by UPDATE, come from
/// [`Shard::capabilities`](super::Shard).)
pub(super) struct AnswerHeaders {
    session_expires: String,
    require: bool,
}

impl AnswerHeaders {
    /// As (name, value) pairs, borrowed.
    pub(super) fn pairs(&self) -> Vec<(&'static str, &[u8])> {
        let mut out: Vec<(&'static str, &[u8])> =
            vec![("Session-Expires", self.session_expires.as_bytes())];
        if self.require {
            out.push(("Require", TAG_TIMER));
        }
        out
    }
}

impl Shard {
    /// Session timers are on, and `timer` in a Require is understood.
    pub(super) fn session_timers_on(&self) -> bool {
        self.config.session_timers.is_some()
    }

    /// RFC 4028 §9 for a request of the peer's that may start or refresh the session
    /// timer (a new INVITE: `index` is `None`). `Err(min_se)`: answer it 422 with Min-SE.
    pub(super) fn check_session_timer(
        &self,
        request: &Message,
        index: Option<u32>,
    ) -> Result<Option<Negotiated>, u32> {
        let Some(config) = &self.config.session_timers else {
            return Ok(None);
        };
        let current = index
            .and_then(|i| self.session_timer(i))
            .map(|st| st.interval)
            .filter(|&i| i > 0);
        negotiate(config, request, current)
    }

    /// Answers `request` 422 with our Min-SE (§9).
    pub(super) fn reject_interval(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: &Message,
        min_se: u32,
    ) {
        let min = min_se.to_string();
        self.reject_request(now, txn, request, 422, &[("Min-SE", min.as_bytes())]);
    }

    /// Books what the peer's request at `index` settled, to take effect with our 2xx.
    pub(super) fn expect_refresh(
        &mut self,
        now: Instant,
        index: u32,
        request: &Message,
        n: Option<Negotiated>,
    ) {
        let Some(config) = self.config.session_timers else {
            return;
        };
        let Some(n) = n else {
            if let Some(st) = self.session_timer_mut(index) {
                st.pending = None;
            }
            return;
        };
        let their_min = request.min_se().ok().flatten().map_or(0, |m| m.seconds);
        let Some(usages) = self.usages_made(index) else {
            return;
        };
        let st = usages.session_timer.get_or_insert_with(|| {
            SessionTimer::new(now, config.min_se, allows_update(request), Bytes::new())
        });
        st.min_se = st.min_se.max(their_min);
        st.peer_update |= allows_update(request);
        st.pending = Some(n);
    }

    /// The headers our 2xx to the peer's request at `index` adds (none without a timer
    /// settled for it).
    pub(super) fn answer_headers(&self, index: u32) -> Option<AnswerHeaders> {
        let n = self.session_timer(index)?.pending?;
        Some(AnswerHeaders {
            session_expires: format!("{};refresher={}", n.interval, n.refresher.parameter()),
            require: n.peer_supports,
        })
    }

    /// Our 2xx to the peer's request at `index` went out (with `sdp`, when it is an answer
    /// to an INVITE): the settled interval runs from now.
    pub(super) fn refresh_answered(&mut self, now: Instant, index: u32, sdp: Option<&Bytes>) {
        let Some(st) = self.session_timer_mut(index) else {
            return;
        };
        if let Some(sdp) = sdp.filter(|s| !s.is_empty()) {
            st.local_sdp = sdp.clone();
        }
        let Some(n) = st.pending.take() else {
            return;
        };
        st.interval = n.interval;
        st.we_refresh = n.refresher == Refresher::Uas;
        st.expires_at = now + Duration::from_secs(u64::from(n.interval));
        self.arm_session_timer(now, index);
    }

    /// A 2xx to our INVITE, re-INVITE or UPDATE at `index` (`offer`: the SDP we sent, if
    /// any): its Session-Expires starts or refreshes the timer, its absence ends it (§7.2).
    pub(super) fn session_confirmed(
        &mut self,
        now: Instant,
        index: u32,
        response: &Message,
        offer: Option<&Bytes>,
    ) {
        let Some(config) = self.config.session_timers else {
            return;
        };
        let Ok(Some(se)) = response.session_expires() else {
            if let Some(st) = self.usages_mut(index).and_then(|u| u.session_timer.take())
                && let Some(timer) = st.timer
            {
                self.txn.cancel_timer(timer);
            }
            return;
        };
        let Some(usages) = self.usages_made(index) else {
            return;
        };
        let st = usages
            .session_timer
            .get_or_insert_with(|| SessionTimer::new(now, config.min_se, false, Bytes::new()));
        st.peer_update |= allows_update(response);
        if let Some(offer) = offer.filter(|s| !s.is_empty()) {
            st.local_sdp = offer.clone();
        }
        st.interval = se.seconds.max(MIN_SE_FLOOR);
        // §7.2: the UAS must name the refresher; without it, we keep the session alive.
        st.we_refresh = se.refresher().and_then(Refresher::parse) != Some(Refresher::Uas);
        st.expires_at = now + Duration::from_secs(u64::from(st.interval));
        st.refreshing = false;
        self.arm_session_timer(now, index);
    }

    /// The headers of a refresh request of ours (and of any re-INVITE in a dialog with a
    /// timer): Session-Expires naming the refresher as it stands, Supported, Min-SE.
    pub(super) fn refresh_request_headers(&self, index: u32) -> Option<(String, Option<String>)> {
        let st = self.session_timer(index).filter(|st| st.interval > 0)?;
        let refresher = if st.we_refresh {
            Refresher::Uac
        } else {
            Refresher::Uas
        };
        let se = format!("{};refresher={}", st.interval, refresher.parameter());
        let min = (st.min_se > MIN_SE_FLOOR).then(|| st.min_se.to_string());
        Some((se, min))
    }

    /// (Re)schedules the refresh (at half the interval) or the BYE (the end less the
    /// margin) of the dialog at `index`.
    fn arm_session_timer(&mut self, now: Instant, index: u32) {
        let Some(st) = self.session_timer(index) else {
            return;
        };
        let at = if st.we_refresh && !st.refreshing {
            now + Duration::from_secs(u64::from(st.interval / 2))
        } else {
            st.backstop()
        };
        self.set_session_timer(index, at.max(now));
        // Its deadline must survive a restart.
        self.dialog_changed(index);
    }

    /// Takes back a session timer from a restored record (`persist` module): the refresh at
    /// half the interval before `expires_at` when we refresh, else the BYE before it; at
    /// once when that has passed.
    pub(super) fn restore_session_timer(
        &mut self,
        now: Instant,
        index: u32,
        record: &crate::dialog::SessionTimerRecord,
        expires_at: Instant,
    ) {
        let Some(usages) = self.usages_made(index) else {
            return;
        };
        let mut st = SessionTimer::new(
            now,
            record.min_se,
            record.peer_update,
            record.local_sdp.clone(),
        );
        st.interval = record.interval.max(MIN_SE_FLOOR);
        st.we_refresh = record.we_refresh;
        st.expires_at = expires_at;
        let at = if st.we_refresh {
            expires_at
                .checked_sub(Duration::from_secs(u64::from(st.interval / 2)))
                .unwrap_or(now)
        } else {
            st.backstop()
        };
        usages.session_timer = Some(st);
        self.set_session_timer(index, at.max(now));
    }

    /// Puts the dialog's one session timer at `at`, in place of any earlier one.
    fn set_session_timer(&mut self, index: u32, at: Instant) {
        let token = self.token(index, DialogTimer::Session);
        let Some(old) = self.session_timer_mut(index).map(|st| st.timer.take()) else {
            return;
        };
        if let Some(old) = old {
            self.txn.cancel_timer(old);
        }
        let handle = self.txn.schedule(at, token);
        if let Some(st) = self.session_timer_mut(index) {
            st.timer = Some(handle);
        }
    }

    /// The session timer of the dialog at `index` fired: refresh, or give the session up.
    pub(super) fn session_timer_due(&mut self, now: Instant, index: u32) {
        let Some(st) = self.session_timer_mut(index) else {
            return;
        };
        st.timer = None;
        let backstop = st.backstop();
        if st.we_refresh && !st.refreshing && now + Duration::from_secs(1) < backstop {
            if self.send_refresh(now, index) {
                if let Some(st) = self.session_timer_mut(index) {
                    st.refreshing = true;
                }
                return self.arm_session_timer(now, index);
            }
            // An INVITE of either side is in progress: its 2xx refreshes; look again
            // halfway to the end.
            return self.retry_refresh_later(now, index);
        }
        if now < backstop {
            return self.arm_session_timer(now, index);
        }
        self.session_expired(now, index);
    }

    /// No refresh in time: BYE (after the ACK, if our 2xx still waits for one).
    fn session_expired(&mut self, now: Instant, index: u32) {
        self.usages_mut(index).and_then(|u| u.session_timer.take());
        match self.entry_mut(index).map(|e| &mut e.phase) {
            Some(Phase::Established { .. }) => {
                let _ = self.send_bye(now, index, TerminationReason::SessionExpired);
            }
            Some(Phase::Answered { bye_requested, .. }) => *bye_requested = true,
            _ => {}
        }
    }

    /// Our refresh, as UPDATE or re-INVITE; false when an INVITE is in progress.
    fn send_refresh(&mut self, now: Instant, index: u32) -> bool {
        let Some(st) = self.session_timer(index) else {
            return false;
        };
        let (peer_update, sdp) = (st.peer_update, st.local_sdp.clone());
        if peer_update {
            return self.send_update_refresh(now, index).is_ok();
        }
        let idle = matches!(
            self.entry_mut(index),
            Some(Entry { phase: Phase::Established { .. }, reinvite, .. })
                if reinvite.as_deref().is_none_or(|r| r.incoming.is_none()
                    && matches!(r.outgoing, Outgoing::Idle))
        );
        idle && self.transmit_reinvite(now, index, sdp, true).is_ok()
    }

    /// An offerless UPDATE with the timer's headers (RFC 4028 §7.4, RFC 3311).
    fn send_update_refresh(&mut self, now: Instant, index: u32) -> Result<(), ()> {
        let (se, min) = self.refresh_request_headers(index).ok_or(())?;
        let mut headers: Vec<(&str, &[u8])> =
            vec![("Session-Expires", se.as_bytes()), ("Supported", TAG_TIMER)];
        if let Some(min) = &min {
            headers.push(("Min-SE", min.as_bytes()));
        }
        let update = super::send::InDialog {
            method: b"UPDATE",
            contact: true,
            headers: &headers,
            body: b"",
        };
        let owner = |r| super::owners::Owner::Request(r, super::Usage::Refresh);
        self.transmit_in_dialog(now, index, update, Some(owner))
            .map(drop)
            .map_err(drop)
    }

    /// The final response to our refresh (UPDATE, or a re-INVITE sent as one) that did not
    /// end the dialog: 2xx refreshes; 422 and a refused UPDATE go again at once; anything
    /// else is tried again later.
    pub(super) fn refresh_result(&mut self, now: Instant, index: u32, response: &Message) {
        let status = response.status().unwrap_or(500);
        if (200..300).contains(&status) {
            return self.session_confirmed(now, index, response, None);
        }
        let Some(st) = self.session_timer_mut(index) else {
            return;
        };
        st.refreshing = false;
        let again_now = match status {
            422 => match response.min_se() {
                Ok(Some(min)) if min.seconds > st.interval => {
                    st.min_se = st.min_se.max(min.seconds);
                    st.interval = min.seconds;
                    true
                }
                _ => false,
            },
            405 | 501 if response.cseq().is_ok_and(|c| c.method_bytes == b"UPDATE") => {
                let retry = st.peer_update;
                st.peer_update = false;
                retry
            }
            _ => false,
        };
        if again_now
            && now + Duration::from_secs(1) < st.backstop()
            && self.send_refresh(now, index)
        {
            if let Some(st) = self.session_timer_mut(index) {
                st.refreshing = true;
            }
            return self.arm_session_timer(now, index);
        }
        self.retry_refresh_later(now, index);
    }

    /// Tries the refresh again halfway between now and the backstop (or gives up there).
    fn retry_refresh_later(&mut self, now: Instant, index: u32) {
        let Some(st) = self.session_timer_mut(index) else {
            return;
        };
        st.refreshing = false;
        let at = now + st.backstop().saturating_duration_since(now) / 2;
        self.set_session_timer(index, at);
    }

    /// The peer's offerless UPDATE in a dialog with a timer settled for it: a refresh the
    /// shard answers itself (200 with the timer's headers), without troubling the
    /// application. False when it is not one.
    pub(super) fn answer_update_refresh(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: &Message,
        index: u32,
    ) -> bool {
        if !request.body_bytes().is_empty() || request.session_expires().ok().flatten().is_none() {
            return false;
        }
        let Some(headers) = self.answer_headers(index) else {
            return false;
        };
        let Some(local) = self
            .entry_mut(index)
            .map(|e| e.dialog.id.local_tag().to_vec())
        else {
            return false;
        };
        let contact = self.contact(self.dialog_transport(index));
        let mut pairs = headers.pairs();
        pairs.extend(self.capabilities());
        pairs.push(("Contact", &contact));
        self.respond(
            now,
            txn,
            request,
            Reply::new(200, Some(&local)).headers(&pairs),
        );
        self.refresh_answered(now, index, None);
        true
    }

    /// Reports a refresh that failed for good (408, 481, no answer): the dialog is gone
    /// (§12.2.1.2).
    pub(super) fn refresh_failed(&mut self, index: u32, status: u16) {
        if let Some(e) = self.remove(index) {
            let reason = if status == 408 {
                TerminationReason::Timeout
            } else {
                TerminationReason::Rejected(status)
            };
            self.events.push_back(SessionEvent::CallTerminated {
                dialog: e.dialog.id,
                reason,
            });
        }
    }
}

impl Shard {
    /// The SDP offer our INVITE (of the call whose INVITE transaction is `txn`) carried:
    /// the body of the request as sent, shared.
    pub(super) fn invite_offer(&mut self, txn: ClientTxnId) -> Option<Bytes> {
        let primary = self
            .owners
            .call(&txn)
            .and_then(|c| self.resolve(c.primary))?;
        let Some(Entry {
            phase: Phase::Calling { request, .. },
            ..
        }) = self.entry_mut(primary)
        else {
            return None;
        };
        let end = memchr::memmem::find(request, b"\r\n\r\n")? + 4;
        (end < request.len()).then(|| request.slice(end..))
    }

    /// RFC 4028 §7.3 (with errata 1681): a 422 to our INVITE sends it again with the same
    /// Call-ID and From tag, the next CSeq, and the 422's Min-SE as both Session-Expires and
    /// Min-SE. Twice at most, only for a call with no early dialog yet, and only upwards.
    /// False when no retry went out (the call then fails with the 422).
    pub(super) fn retry_interval(
        &mut self,
        now: Instant,
        txn: ClientTxnId,
        response: &Message,
    ) -> bool {
        if !self.session_timers_on() {
            return false;
        }
        let Ok(Some(min)) = response.min_se() else {
            return false;
        };
        let Some((index, old)) = self.unanswered_invite(txn) else {
            return false;
        };
        let Ok(cseq) = old.cseq() else {
            return false;
        };
        let asked = old
            .session_expires()
            .ok()
            .flatten()
            .map_or(0, |s| s.seconds);
        if cseq.seq >= 3 || min.seconds <= asked || min.seconds > MAX_INTERVAL {
            return false;
        }
        let interval = min.seconds.to_string();
        let replaced = [HeaderName::SessionExpires, HeaderName::MinSE];
        let added = [
            ("Session-Expires", interval.as_bytes()),
            ("Min-SE", interval.as_bytes()),
        ];
        if !self.reissue_invite(now, txn, index, &old, &replaced, &added) {
            return false;
        }
        // Later refreshes in the dialog ask for at least this too (§7.4).
        let floor = self
            .config
            .session_timers
            .map_or(MIN_SE_FLOOR, |c| c.min_se);
        let Some(usages) = self.usages_made(index) else {
            return true;
        };
        let st = usages
            .session_timer
            .get_or_insert_with(|| SessionTimer::new(now, floor, false, Bytes::new()));
        st.min_se = st.min_se.max(min.seconds);
        true
    }
}
