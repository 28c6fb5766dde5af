//! SUBSCRIBE/NOTIFY (RFC 6665) as the subscriber.
//!
//! [`DialogCommand::Subscribe`](super::DialogCommand::Subscribe) sends a SUBSCRIBE outside
//! any dialog and returns a handle, as `MakeCall` does. The dialog comes from the 2xx or
//! from a NOTIFY, whichever arrives first (§4.1.2.4: the NOTIFY may overtake the 2xx); a
//! NOTIFY from another notifier (a forked SUBSCRIBE) makes a dialog and a subscription of
//! its own. Each NOTIFY is answered 200 here (400 without Subscription-State) and reported
//! as [`SessionEvent::Notification`]; one saying `terminated` ends its subscription.
//!
//! The shard refreshes each subscription at nine tenths of its interval (the interval of
//! the 2xx, shortened by a NOTIFY's `expires`), and ends it if no refresh succeeded by its
//! expiry. `Unsubscribe` sends `Expires: 0` and waits up to 64·T1 for the last NOTIFY. A
//! 423 to the first SUBSCRIBE sends it once more with the Min-Expires it names; any other
//! refused SUBSCRIBE ends it at once; a refused refresh leaves it to its expiry, except a
//! 481, which ends it (§4.1.2.2). A dialog SUBSCRIBE made ends with its last subscription.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::notifier::SubscriptionEnd;
use super::reply::Reply;
use super::timers::DialogTimer;
use super::{CommandOutcome, DialogError, Entry, Phase, SessionEvent, Shard, SlotRef};
use crate::dialog::{self, Dialog, DialogId, DialogState, HeldRecord, Role};
use crate::message::{BuildError, HeaderName, Message, RequestBuilder};
use crate::timer::TimerHandle;
use crate::transaction::{ClientTxnId, ServerTxnId};

/// What `Subscribe` carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSubscription {
    /// From value without tag (`<sip:alice@example.com>`).
    pub from: Bytes,
    /// To value: the resource watched (`<sip:bob@example.com>`).
    pub to: Bytes,
    /// Request-URI.
    pub request_uri: Bytes,
    /// Where to send it (sipshard does no DNS).
    pub destination: SocketAddr,
    /// The Event value (`presence`, `dialog;id=1`).
    pub event: Bytes,
    /// The interval asked for (seconds).
    pub expires: u32,
    /// Extra headers (Accept, …); the ones the dialog layer writes are refused.
    pub headers: Vec<(String, Bytes)>,
    /// Body (a filter); its Content-Type among `headers`.
    pub body: Bytes,
}

/// A subscription we hold, per dialog (the handle's first slot holds it until a dialog
/// forms).
#[derive(Debug)]
pub(super) struct Watch {
    /// The handle `Subscribe` returned.
    handle: DialogId,
    /// The Event value sent.
    event: Bytes,
    /// The interval asked for.
    expires: u32,
    /// When it lapses without a successful refresh.
    expires_at: Instant,
    /// The refresh or expiry timer.
    timer: Option<TimerHandle>,
    /// A 2xx or a NOTIFY has come: the application heard SubscriptionAccepted.
    accepted: bool,
    /// `Expires: 0` is out: the next timer ends it.
    unsubscribing: bool,
    /// Other dialogs of the same handle (forks), kept on the first one.
    forks: Vec<SlotRef>,
    /// What `Subscribe` asked, until a 423 has been answered with a retry (§4.1.2.1).
    retry: Option<Box<NewSubscription>>,
}

impl Watch {
    /// What is left of it when its dialog ends: the handle, the Event value and the timer
    /// to cancel.
    pub(super) fn into_parts(self) -> (DialogId, Bytes, Option<TimerHandle>) {
        (self.handle, self.event, self.timer)
    }

    /// The handle `Subscribe` returned.
    pub(super) fn handle(&self) -> &DialogId {
        &self.handle
    }

    /// A 2xx or a NOTIFY has accepted it.
    pub(super) fn accepted(&self) -> bool {
        self.accepted
    }

    /// Its refresh or expiry timer.
    pub(super) fn timer(&self) -> Option<TimerHandle> {
        self.timer
    }

    /// Its record, once accepted (before, its dialog is not kept): `fork` when the
    /// handle names another dialog, `due_at` its timer's deadline, in wall-clock time.
    pub(super) fn to_record(
        &self,
        fork: bool,
        due_at: Option<SystemTime>,
        wall: impl Fn(Instant) -> Option<SystemTime>,
    ) -> Option<HeldRecord> {
        if !self.accepted {
            return None;
        }
        Some(HeldRecord {
            event: self.event.to_vec(),
            expires: self.expires,
            expires_at: wall(self.expires_at)?,
            due_at,
            accepted: self.accepted,
            unsubscribing: self.unsubscribing,
            fork,
        })
    }
}

impl Shard {
    /// `Subscribe`: the SUBSCRIBE outside any dialog; the handle names the subscription.
    pub(super) fn subscribe(
        &mut self,
        now: Instant,
        new: &NewSubscription,
    ) -> Result<CommandOutcome, DialogError> {
        if new
            .headers
            .iter()
            .any(|(n, _)| super::uac::is_reserved(n) || n.eq_ignore_ascii_case("Event"))
        {
            return Err(DialogError::InvalidInput(BuildError::ReservedHeader));
        }
        self.admit_own_dialog()?;
        let call_id = self.owned_call_id();
        let tag = self.ids.tag();
        let local = dialog::with_tag(&new.from, tag.as_bytes());
        let id = DialogId::new(call_id.as_bytes(), tag.as_bytes(), b"");
        let txn = self.send_first_subscribe(now, new, &id, &local, 1, new.expires)?;
        let d = super::uac::uac_dialog(
            id.clone(),
            &local,
            &new.to,
            &new.request_uri,
            new.destination,
        );
        let index = self.insert(Entry::new(d, Phase::Subscription, Some(id.clone())));
        self.set_watch(
            index,
            Watch {
                handle: id.clone(),
                event: new.event.clone(),
                expires: new.expires,
                expires_at: now + Duration::from_secs(u64::from(new.expires)),
                timer: None,
                accepted: false,
                unsubscribing: false,
                forks: Vec::new(),
                retry: Some(Box::new(new.clone())),
            },
        );
        let r = self.slot_ref(index);
        self.owners.insert(txn, super::owners::Owner::Subscribe(r));
        Ok(CommandOutcome::Subscription(id))
    }

    /// The SUBSCRIBE outside a dialog for the handle `id` (our From `local`), with CSeq
    /// `cseq` and `expires`; returns its transaction.
    fn send_first_subscribe(
        &mut self,
        now: Instant,
        new: &NewSubscription,
        id: &DialogId,
        local: &[u8],
        cseq: u32,
        expires: u32,
    ) -> Result<ClientTxnId, DialogError> {
        let transport = self.request_transport(&new.request_uri)?;
        let (via, branch) = self.via(transport);
        let contact = self.contact(transport);
        let (expires, cseq) = (expires.to_string(), format!("{cseq} SUBSCRIBE"));
        let mut buf = BytesMut::with_capacity(512 + new.body.len());
        let mut b = RequestBuilder::new(&mut buf, b"SUBSCRIBE", &new.request_uri);
        let first = super::uac::FirstRequest {
            via: &via,
            local,
            to: &new.to,
            call_id: id.call_id(),
            cseq: cseq.as_bytes(),
            contact: &contact,
        };
        first.headers(&mut b);
        b.header_named(HeaderName::Event, &new.event)
            .header_named(HeaderName::Expires, expires.as_bytes());
        for (name, value) in &new.headers {
            b.header(name, value);
        }
        b.finish(&new.body).map_err(DialogError::InvalidInput)?;
        self.txn
            .send_request(
                now,
                new.destination,
                transport,
                b"SUBSCRIBE",
                branch.as_bytes(),
                buf.freeze(),
            )
            .map_err(DialogError::TransactionError)
    }

    /// A 423 to the first SUBSCRIBE of the handle at `index` (RFC 6665 §4.1.2.1): sent
    /// again, once, with the notifier's Min-Expires. True when it went.
    fn retry_with_min_expires(&mut self, now: Instant, index: u32, response: &Message) -> bool {
        let Some(min) = response.min_expires().ok().flatten() else {
            return false;
        };
        let Some(w) = self.watch_mut(index) else {
            return false;
        };
        let Some(new) = w.retry.take().filter(|_| min > w.expires) else {
            return false;
        };
        w.expires = min;
        let Some(entry) = self.entry_mut(index) else {
            return false;
        };
        entry.dialog.local_cseq += 1;
        let (id, local, cseq) = (
            entry.dialog.id.clone(),
            entry.dialog.local().to_vec(),
            entry.dialog.local_cseq,
        );
        let Ok(txn) = self.send_first_subscribe(now, &new, &id, &local, cseq, min) else {
            return false;
        };
        let r = self.slot_ref(index);
        self.owners.insert(txn, super::owners::Owner::Subscribe(r));
        true
    }

    /// A final response to one of our SUBSCRIBEs (initial, refresh or unsubscribe).
    pub(super) fn subscribe_response(
        &mut self,
        now: Instant,
        txn: ClientTxnId,
        response: &Message,
    ) {
        let Some(code) = response.status().filter(|&c| c >= 200) else {
            return;
        };
        let Some(r) = self.owners.take_subscribe(&txn) else {
            return;
        };
        let Some(index) = self.resolve(r) else { return };
        if (200..300).contains(&code) {
            let Some(tag) = response.to_tag().ok().flatten() else {
                // A 2xx without To tag makes no dialog; the subscription waits for a NOTIFY.
                return;
            };
            let Some(dialog) = self.watch_dialog(index, tag, response, None) else {
                return;
            };
            // §4.1.2.1: the 2xx's Expires is the interval granted.
            let granted = response.expires().ok().flatten();
            self.watch_granted(now, dialog, granted);
            return;
        }
        let initial = self.watch(index).is_some_and(|w| !w.accepted);
        if initial && code == 423 && self.retry_with_min_expires(now, index, response) {
            return;
        }
        if initial || code == 481 {
            self.end_watch(index, SubscriptionEnd::Rejected(code));
        }
        // Any other refusal of a refresh: the subscription stands until its expiry.
    }

    /// Our SUBSCRIBE got no answer (Timer F) or could not be sent.
    pub(super) fn subscribe_failed(&mut self, txn: ClientTxnId) {
        let Some(r) = self.owners.take_subscribe(&txn) else {
            return;
        };
        let Some(index) = self.resolve(r) else { return };
        if self.watch(index).is_some_and(|w| !w.accepted) {
            self.end_watch(index, SubscriptionEnd::Rejected(408));
        }
    }

    /// The dialog of the subscription at `index` (the handle's first slot, or a fork)
    /// with the notifier's tag `tag`: the first slot learns it, or a fork is made
    /// (§4.1.2.4). `notify_source`: `msg` is a NOTIFY that came from there (our side is
    /// its To, the notifier's its From, Record-Route in order, and requests go where it
    /// came from) rather than a 2xx (Record-Route reversed, requests where the SUBSCRIBE
    /// went).
    fn watch_dialog(
        &mut self,
        index: u32,
        tag: &[u8],
        msg: &Message,
        notify_source: Option<SocketAddr>,
    ) -> Option<u32> {
        let from_notify = notify_source.is_some();
        let entry = self.entry_mut(index)?;
        if entry.dialog.id.remote_tag() == tag {
            return Some(index);
        }
        let base = &entry.dialog;
        let id = DialogId::new(base.id.call_id(), base.id.local_tag(), tag);
        let target = dialog::contact_uri(msg).unwrap_or(base.remote_target());
        let remote = if from_notify {
            msg.header(HeaderName::From)
        } else {
            msg.header(HeaderName::To)
        }
        .unwrap_or(base.remote());
        let routes = if from_notify {
            dialog::uas_route_set(msg)
        } else {
            dialog::uac_route_set(msg)
        };
        let remote_cseq = if from_notify {
            msg.cseq().ok().map(|c| c.seq)
        } else {
            None
        };
        // Made early and confirmed through `set_confirmed`, which keeps the count.
        let d = Dialog::new(
            id.clone(),
            Role::Uac,
            DialogState::Early,
            base.local_cseq,
            remote_cseq,
            base.local(),
            remote,
            target,
            &routes,
            base.secure,
            notify_source.unwrap_or(base.peer),
        )
        .with_transport(base.transport);
        if base.id.remote_tag().is_empty() {
            self.replace_dialog(index, d);
            self.set_confirmed(index);
            return Some(index);
        }
        // Another notifier answered the same SUBSCRIBE: a subscription of its own.
        if let Some(existing) = self.find(&id) {
            return Some(existing);
        }
        let handle = self.entry_mut(index)?.call.clone();
        let fork = self.insert(Entry::new(d, Phase::Subscription, handle));
        self.set_confirmed(fork);
        let watch = self.watch(index)?;
        let copy = Watch {
            handle: watch.handle.clone(),
            event: watch.event.clone(),
            expires: watch.expires,
            expires_at: watch.expires_at,
            timer: None,
            accepted: false,
            unsubscribing: watch.unsubscribing,
            forks: Vec::new(),
            retry: None,
        };
        self.set_watch(fork, copy);
        let r = self.slot_ref(fork);
        if let Some(w) = self.watch_mut(index) {
            w.forks.push(r);
        }
        Some(fork)
    }

    /// The subscription of the dialog at `index` is granted for `granted` seconds (the
    /// asked interval when `None`): the refresh is scheduled, and the application told
    /// the first time.
    fn watch_granted(&mut self, now: Instant, index: u32, granted: Option<u32>) {
        let Some(w) = self.watch_mut(index) else {
            return;
        };
        let seconds = granted.unwrap_or(w.expires);
        let first = !w.accepted;
        w.accepted = true;
        w.retry = None;
        if seconds == 0 || w.unsubscribing {
            // `Unsubscribe` came before there was a dialog to send `Expires: 0` in: it
            // goes now.
            if first && w.unsubscribing {
                let event = w.event.clone();
                let _ = self.send_watch_subscribe(now, index, event, 0);
            }
            // Ending: the last NOTIFY will say so; the timer ends it if none comes.
            let grace = self.config.timers.timeout();
            self.arm_watch(index, now + grace, true);
            self.dialog_changed(index);
            return;
        }
        w.expires_at = now + Duration::from_secs(u64::from(seconds));
        let refresh = now + Duration::from_millis(u64::from(seconds) * 900);
        self.arm_watch(index, refresh, false);
        self.dialog_changed(index);
        if first && let Some(e) = self.entry_mut(index) {
            let dialog = e.dialog.id.clone();
            let subscription = self.watch(index).map(|w| w.handle.clone());
            if let Some(subscription) = subscription {
                self.events.push_back(SessionEvent::SubscriptionAccepted {
                    subscription,
                    dialog,
                    expires: seconds,
                });
            }
        }
    }

    /// (Re)sets the timer of the watch at `index` to `at`; `expiry` makes `expires_at`
    /// that instant too.
    fn arm_watch(&mut self, index: u32, at: Instant, expiry: bool) {
        let token = self.token(index, DialogTimer::Watch);
        let Some(w) = self.watch_mut(index) else {
            return;
        };
        if expiry {
            w.expires_at = at;
        }
        let old = w.timer.take();
        if let Some(old) = old {
            self.txn.cancel_timer(old);
        }
        let timer = self.txn.schedule(at, token);
        if let Some(w) = self.watch_mut(index) {
            w.timer = Some(timer);
        }
    }

    /// The watch timer of the dialog at `index`: refresh, or end at expiry.
    pub(super) fn watch_due(&mut self, now: Instant, index: u32) {
        let Some(w) = self.watch_mut(index) else {
            return;
        };
        w.timer = None;
        if now >= w.expires_at || w.unsubscribing {
            return self.end_watch(index, SubscriptionEnd::Timeout);
        }
        let (event, expires, at) = (w.event.clone(), w.expires, w.expires_at);
        if self
            .send_watch_subscribe(now, index, event, expires)
            .is_err()
        {
            return self.end_watch(index, SubscriptionEnd::Timeout);
        }
        // If no refresh succeeds, it lapses at its expiry.
        self.arm_watch(index, at, true);
    }

    /// An in-dialog SUBSCRIBE (refresh, or `Expires: 0`) for the watch at `index`.
    fn send_watch_subscribe(
        &mut self,
        now: Instant,
        index: u32,
        event: Bytes,
        expires: u32,
    ) -> Result<(), DialogError> {
        let dialog = self
            .entry_mut(index)
            .map(|e| e.dialog.id.clone())
            .ok_or(DialogError::ended("a subscription"))?;
        let headers = [
            ("Event".to_owned(), event),
            ("Expires".to_owned(), Bytes::from(expires.to_string())),
        ];
        let txn = self.send_in_dialog(now, &dialog, b"SUBSCRIBE", &headers, b"")?;
        self.owners.take_request(&txn);
        let r = self.slot_ref(index);
        self.owners.insert(txn, super::owners::Owner::Subscribe(r));
        Ok(())
    }

    /// `Unsubscribe`: `Expires: 0` in every dialog of the subscription (or the one
    /// named); each ends with its last NOTIFY, or 64·T1 after.
    pub(super) fn unsubscribe(&mut self, now: Instant, id: &DialogId) -> Result<(), DialogError> {
        let index = self.found(id)?;
        let w = self.watch(index).ok_or(DialogError::InvalidDialogState {
            current: "no subscription of ours",
            expected: "a subscription",
        })?;
        let mut targets = vec![index];
        if w.handle == *id {
            targets.extend(w.forks.iter().filter_map(|f| self.resolve(*f)));
        }
        let grace = self.config.timers.timeout();
        for index in targets {
            // Already ending (a second Unsubscribe, or a stop ending each dialog of one
            // handle): nothing more to send.
            let Some(w) = self.watch_mut(index).filter(|w| !w.unsubscribing) else {
                continue;
            };
            w.unsubscribing = true;
            let event = w.event.clone();
            let tagged = self
                .entry_mut(index)
                .is_some_and(|e| !e.dialog.id.remote_tag().is_empty());
            if tagged {
                self.send_watch_subscribe(now, index, event, 0)?;
            }
            // Without a dialog yet, the 2xx or NOTIFY that makes one finds it ending.
            self.arm_watch(index, now + grace, true);
            self.dialog_changed(index);
        }
        Ok(())
    }

    /// A NOTIFY whose dialog the shard does not know: for one of our SUBSCRIBEs (before
    /// its 2xx, or from another notifier) it makes the dialog; true when it was one.
    pub(super) fn notify_for_watch(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: &Message,
    ) -> bool {
        if self.usage_counts.watching == 0 {
            return false;
        }
        let (Some(call_id), Ok(Some(local)), Ok(Some(remote))) =
            (request.call_id(), request.to_tag(), request.from_tag())
        else {
            return false;
        };
        let Some(first) = self.find_parts(call_id, local, b"") else {
            return false;
        };
        if !self
            .watch(first)
            .is_some_and(|w| same_event(&w.event, request))
        {
            return false;
        }
        let remote = remote.to_vec();
        let source = self.txn.response_target(txn);
        let Some(index) = self.watch_dialog(first, &remote, request, source) else {
            return false;
        };
        self.watched_notify(now, txn, request.clone(), index);
        true
    }

    /// Whether a NOTIFY in the dialog at `index` is for a subscription we hold there.
    pub(super) fn is_watched_notify(&self, index: u32, request: &Message) -> bool {
        self.usage_counts.watching != 0
            && self
                .watch(index)
                .is_some_and(|w| same_event(&w.event, request))
    }

    /// A NOTIFY for the subscription we hold in the dialog at `index` (§4.1.3).
    pub(super) fn watched_notify(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        index: u32,
    ) {
        let Ok(Some(state)) = request.subscription_state() else {
            return self.reject_request(now, txn, &request, 400, &[]);
        };
        let terminated = state.state.eq_ignore_ascii_case(b"terminated");
        let expires = state
            .params
            .get("expires")
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok());
        // NOTIFY is a target refresh request (§4.1.3).
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        if let Some(target) = dialog::contact_uri(&request) {
            entry.dialog.set_remote_target(target);
        }
        let local = entry.dialog.id.local_tag().to_vec();
        let dialog = entry.dialog.id.clone();
        self.respond(now, txn, &request, Reply::new(200, Some(&local)));
        let Some(w) = self.watch(index) else {
            return;
        };
        let (subscription, accepted, unsubscribing) =
            (w.handle.clone(), w.accepted, w.unsubscribing);
        if !accepted && !terminated {
            // §4.1.2.4: a NOTIFY may come before the 2xx; it starts the subscription.
            self.watch_granted(now, index, expires);
        } else if let Some(seconds) = expires
            && !terminated
            && !unsubscribing
            && self
                .watch(index)
                .is_some_and(|w| now + Duration::from_secs(u64::from(seconds)) < w.expires_at)
        {
            // The notifier shortened it: refresh sooner.
            self.watch_granted(now, index, Some(seconds));
        }
        self.events.push_back(SessionEvent::Notification {
            subscription,
            dialog,
            request,
        });
        if terminated {
            self.end_watch(index, SubscriptionEnd::ByNotifier);
        }
    }

    /// Ends the subscription we hold in the dialog at `index` (and, for the handle's first
    /// slot before any dialog, the handle); the dialog ends with it when SUBSCRIBE made it.
    fn end_watch(&mut self, index: u32, reason: SubscriptionEnd) {
        let Some(w) = self.take_watch(index) else {
            return;
        };
        if let Some(timer) = w.timer {
            self.txn.cancel_timer(timer);
        }
        let dialog = self
            .entry_mut(index)
            .map_or_else(|| w.handle.clone(), |e| e.dialog.id.clone());
        self.events.push_back(SessionEvent::SubscriptionTerminated {
            subscription: Some(w.handle),
            dialog,
            event: w.event,
            reason,
        });
        if matches!(
            self.entry_mut(index).map(|e| &e.phase),
            Some(Phase::Subscription)
        ) && self.served(index).is_empty()
        {
            self.remove(index);
        } else {
            self.dialog_changed(index);
        }
    }

    /// Takes back the subscription we held in the restored dialog at `index` (its
    /// handle `handle`), its timer re-armed at its deadline (now, if that passed while
    /// the process was down: the refresh goes, or it ends). A fork is found again by
    /// the handle's first dialog, whichever of the two is restored first.
    pub(super) fn restore_watch(
        &mut self,
        now: Instant,
        index: u32,
        handle: DialogId,
        held: &HeldRecord,
        instant: impl Fn(SystemTime) -> Instant,
    ) {
        let expires_at = instant(held.expires_at);
        let mut forks = Vec::new();
        if held.fork {
            let me = self.slot_ref(index);
            match self
                .find(&handle)
                .filter(|&first| self.watch(first).is_some())
            {
                Some(first) => {
                    if let Some(w) = self.watch_mut(first) {
                        w.forks.push(me);
                    }
                }
                None => self.unlinked_fork(handle.clone(), me),
            }
        } else {
            forks = self.linked_forks(&handle);
        }
        self.set_watch(
            index,
            Watch {
                handle,
                event: Bytes::from(held.event.clone()),
                expires: held.expires,
                expires_at,
                timer: None,
                accepted: held.accepted,
                unsubscribing: held.unsubscribing,
                forks,
                retry: None,
            },
        );
        let due = held.due_at.map_or(expires_at, &instant).max(now);
        self.arm_watch(index, due, false);
    }

    /// Whether the dialog at `index` holds a subscription of ours.
    pub(super) fn watches_at(&self, index: u32) -> bool {
        self.watch(index).is_some()
    }
}

/// Whether a NOTIFY's Event is the one we subscribed with (package and `id`, §8.2.1).
fn same_event(ours: &[u8], request: &Message) -> bool {
    let (Ok(ours), Ok(Some(theirs))) = (crate::message::Event::parse(ours), request.event()) else {
        return false;
    };
    ours.package == theirs.package
        && ours.params.get("id").flatten() == theirs.params.get("id").flatten()
}
