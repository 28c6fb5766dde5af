//! SUBSCRIBE/NOTIFY (RFC 6665) as the notifier, for the event packages the application
//! serves ([`Subscriptions`]).
//!
//! A SUBSCRIBE outside a dialog creates one (a dialog with no INVITE usage); inside a
//! dialog it refreshes, ends (`Expires: 0`) or adds a subscription. Either way the shard
//! checks it (489 with Allow-Events for a package not served, 423 with Min-Expires for too
//! short an interval, 400 without Event) and hands it to the application as
//! [`SessionEvent::SubscriptionRequest`] with the interval it would grant. The application
//! answers with `Respond`: a 2xx (to which the shard adds that `Expires` when the
//! application wrote none) starts or refreshes the subscription, anything else refuses it.
//! It then sends its NOTIFYs with [`DialogCommand::Notify`](super::DialogCommand::Notify):
//! the shard writes `Event` and `Subscription-State` (with the seconds left), and a
//! `terminated` state ends the subscription. At expiry the shard sends the last NOTIFY
//! itself (`terminated;reason=timeout`) and reports
//! [`SessionEvent::SubscriptionTerminated`]; after `Expires: 0`, whatever the application
//! sends says `terminated;reason=timeout`, and the shard sends it after 64·T1 if the
//! application has not. A dialog made by SUBSCRIBE ends with its last subscription.
//!
//! A subscription is named by its dialog, its event package and the Event `id` parameter
//! (§4.1.2.1 and §8.2.1); state lives in a side table by dialog slot, so dialogs without
//! subscriptions pay nothing for them.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timers::DialogTimer;
use super::{DialogError, Entry, Phase, SessionEvent, Shard};
use crate::dialog::{self, DialogId};
use crate::message::Message;
use crate::timer::TimerHandle;
use crate::transaction::ServerTxnId;

/// What a shard serves as notifier (RFC 6665). Without it ([`ShardConfig::subscriptions`]
/// `None`), SUBSCRIBE gets 405.
///
/// [`ShardConfig::subscriptions`]: super::ShardConfig::subscriptions
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriptions {
    /// The event packages served (`presence`, `dialog`, `message-summary`, …), compared
    /// exactly; any other gets 489 with these in Allow-Events.
    pub packages: Vec<String>,
    /// The interval when the SUBSCRIBE gives none, and the longest granted (seconds).
    pub default_expires: u32,
    /// The shortest interval accepted; a shorter one but 0 gets 423 (seconds).
    pub min_expires: u32,
}

impl Subscriptions {
    /// Serves `packages`, 3,600 s by default and at most, 60 s at least.
    pub fn new<S: Into<String>>(packages: impl IntoIterator<Item = S>) -> Self {
        Subscriptions {
            packages: packages.into_iter().map(Into::into).collect(),
            default_expires: 3600,
            min_expires: 60,
        }
    }

    /// The packages as `Allow-Events` lists them.
    pub(super) fn allow_events(&self) -> String {
        self.packages.join(", ")
    }
}

/// The Event value that names a SUBSCRIBE's subscription (`presence`, `dialog;id=7`): what
/// [`DialogCommand::Notify`](super::DialogCommand::Notify) takes as `event`. `None` when the
/// request has no readable Event.
pub fn subscription_event(request: &Message) -> Option<Bytes> {
    let event = request.event().ok().flatten()?;
    Some(event_value(event.package, event.params.get("id").flatten()))
}

/// The event package of REFER's implicit subscription (RFC 3515 §2.4.4).
const REFER: &[u8] = b"refer";

/// `package` or `package;id=<id>`: how an Event value names a subscription.
fn event_value(package: &[u8], id: Option<&[u8]>) -> Bytes {
    let mut value = package.to_vec();
    if let Some(id) = id {
        value.extend_from_slice(b";id=");
        value.extend_from_slice(id);
    }
    Bytes::from(value)
}

/// A subscription's name within its dialog, owned: its package and Event `id`.
type SubscriptionKey = (Box<[u8]>, Option<Box<[u8]>>);

/// What a NOTIFY reports, borrowed from the `Notify` command.
struct Note<'a> {
    state: &'a NotifyState,
    headers: &'a [(String, Bytes)],
    body: &'a [u8],
}

/// The state a NOTIFY reports (RFC 6665 §8.2.3, `Subscription-State`).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyState {
    /// The subscription is accepted.
    Active,
    /// Waiting for authorization.
    Pending,
    /// Ended, with a reason (`noresource`, `rejected`, `deactivated`, `giveup`, …); the
    /// subscription ends with this NOTIFY.
    Terminated(String),
}

/// Why a subscription ended.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// It expired without refresh; the shard sent `terminated;reason=timeout`.
    Timeout,
    /// The subscriber answered a NOTIFY with 481 or 408, or not at all (RFC 6665 §4.2.2).
    NotifyFailed(u16),
    /// Its dialog ended (BYE, `Terminate`).
    DialogEnded,
    /// Subscriber side: the SUBSCRIBE was refused with this status (or got none: 408), or
    /// a refresh got 481 (RFC 6665 §4.1.2.2).
    Rejected(u16),
    /// Subscriber side: a NOTIFY said `terminated` (its reason is in the
    /// [`SessionEvent::Notification`] before).
    ByNotifier,
}

/// One subscription of a dialog.
#[derive(Debug)]
pub(super) struct Subscription {
    package: Box<[u8]>,
    id: Option<Box<[u8]>>,
    expires_at: Instant,
    timer: Option<TimerHandle>,
    /// A 2xx went to its SUBSCRIBE.
    accepted: bool,
    /// `Expires: 0` was granted: every NOTIFY now says terminated.
    ending: bool,
}

impl Subscription {
    /// What a restarted shard needs of it, its expiry in wall-clock time (`wall`); `None`
    /// while its SUBSCRIBE is unanswered (that transaction does not survive a restart), or
    /// without a wall clock.
    pub(super) fn to_record(
        &self,
        wall: impl Fn(Instant) -> Option<std::time::SystemTime>,
    ) -> Option<crate::dialog::ServedRecord> {
        if !self.accepted {
            return None;
        }
        Some(crate::dialog::ServedRecord {
            package: self.package.to_vec(),
            id: self.id.as_ref().map(|id| id.to_vec()),
            expires_at: wall(self.expires_at)?,
            accepted: self.accepted,
            ending: self.ending,
        })
    }

    /// A 2xx went to its SUBSCRIBE.
    pub(super) fn accepted(&self) -> bool {
        self.accepted
    }

    /// Its refresh or expiry timer on the wheel.
    pub(super) fn timer(&self) -> Option<TimerHandle> {
        self.timer
    }

    fn is(&self, package: &[u8], id: Option<&[u8]>) -> bool {
        &*self.package == package && self.id.as_deref() == id
    }

    pub(super) fn event(&self) -> Bytes {
        event_value(&self.package, self.id.as_deref())
    }
}

/// A refusal before the application sees a SUBSCRIBE: status and extra headers.
type Refusal = (u16, Vec<(&'static str, String)>);

/// A SUBSCRIBE's event and asked interval, once checked.
pub(super) struct Asked<'m> {
    package: &'m [u8],
    id: Option<&'m [u8]>,
    /// The interval the shard grants.
    pub(super) expires: u32,
}

impl Shard {
    /// The checks of §4.2.1.1 before the application sees a SUBSCRIBE; `Err` has the
    /// response.
    pub(super) fn check_subscribe<'m>(&self, request: &'m Message) -> Result<Asked<'m>, Refusal> {
        let Some(config) = &self.config.subscriptions else {
            return Err((405, Vec::new()));
        };
        let Ok(Some(event)) = request.event() else {
            return Err((400, Vec::new()));
        };
        if !config
            .packages
            .iter()
            .any(|p| p.as_bytes() == event.package)
        {
            return Err((489, vec![("Allow-Events", config.allow_events())]));
        }
        let expires = match request.expires() {
            Ok(Some(0)) => 0,
            Ok(Some(e)) if e < config.min_expires => {
                return Err((423, vec![("Min-Expires", config.min_expires.to_string())]));
            }
            Ok(Some(e)) => e.min(config.default_expires),
            Ok(None) => config.default_expires,
            Err(_) => return Err((400, Vec::new())),
        };
        Ok(Asked {
            package: event.package,
            id: event.params.get("id").flatten(),
            expires,
        })
    }

    fn refuse_subscribe(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: &Message,
        (status, headers): Refusal,
    ) {
        if status == 405 {
            return self.unsupported_method(now, txn, request);
        }
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        self.reject_request(now, txn, request, status, &headers);
    }

    /// A SUBSCRIBE outside any dialog: a new dialog for the subscription, once the
    /// application accepts it.
    pub(super) fn incoming_subscribe(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        from: std::net::SocketAddr,
    ) {
        let asked = match self.check_subscribe(&request) {
            Ok(a) => a,
            Err(refusal) => return self.refuse_subscribe(now, txn, &request, refusal),
        };
        let Some(index) = self.subscription_dialog(now, txn, &request, from) else {
            return;
        };
        let subscription = new_subscription(&asked, now);
        let expires = asked.expires;
        self.push_served(index, subscription);
        self.subscription_request(txn, request, index, expires);
    }

    /// The dialog a request outside any dialog makes for a subscription usage alone (a
    /// SUBSCRIBE, RFC 6665 §4.1.2.1; a REFER, RFC 3515 §2.4.2): its index, or `None` when
    /// the request was refused (503 over a limit; 400 without the From tag and Contact the
    /// dialog needs).
    pub(super) fn subscription_dialog(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: &Message,
        from: std::net::SocketAddr,
    ) -> Option<u32> {
        if self.refuse_new_dialog(now, txn, request) {
            return None;
        }
        let tag = self.ids.tag();
        let made = match (dialog::contact_uri(request), request.from_tag()) {
            (Some(target), Ok(Some(remote_tag))) => {
                super::uas::uas_dialog(request, tag.as_bytes(), remote_tag, target, from)
                    .map(|d| d.with_transport(self.txn.server_transport(txn)))
            }
            _ => None,
        };
        let Some(d) = made else {
            self.reject_request(now, txn, request, 400, &[]);
            return None;
        };
        Some(self.insert(Entry::new(d, Phase::Subscription, None)))
    }

    /// A SUBSCRIBE in the dialog at `index`: refreshes or ends the subscription it names,
    /// or adds one.
    pub(super) fn in_dialog_subscribe(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        index: u32,
    ) {
        let asked = match self.check_subscribe(&request) {
            Ok(a) => a,
            Err(refusal) => return self.refuse_subscribe(now, txn, &request, refusal),
        };
        if !self
            .served(index)
            .iter()
            .any(|s| s.is(asked.package, asked.id))
        {
            self.push_served(index, new_subscription(&asked, now));
        }
        let expires = asked.expires;
        self.subscription_request(txn, request, index, expires);
    }

    fn subscription_request(
        &mut self,
        txn: ServerTxnId,
        request: Message,
        index: u32,
        expires: u32,
    ) {
        let Some(dialog) = self.entry_mut(index).map(|e| e.dialog.id.clone()) else {
            return;
        };
        self.hold_for_application(txn, &request, index);
        self.events.push_back(SessionEvent::SubscriptionRequest {
            dialog,
            txn,
            request,
            expires,
        });
    }

    /// The application answered the SUBSCRIBE `asked` in the dialog at `index` with
    /// `status`, granting `expires` seconds when a 2xx.
    pub(super) fn subscribe_answered(
        &mut self,
        now: Instant,
        index: u32,
        asked: &Asked<'_>,
        status: u16,
        expires: u32,
    ) {
        let (package, id) = (asked.package, asked.id);
        if (200..300).contains(&status) {
            self.set_confirmed(index);
            let grace = self.config.timers.timeout();
            let token = self.token(index, DialogTimer::Subscription);
            let Some(sub) = self
                .served_mut(index)
                .iter_mut()
                .find(|s| s.is(package, id))
            else {
                return;
            };
            sub.accepted = true;
            sub.ending = expires == 0;
            sub.expires_at = if expires == 0 {
                now + grace
            } else {
                now + Duration::from_secs(u64::from(expires))
            };
            let old = sub.timer.take();
            let at = sub.expires_at;
            if let Some(old) = old {
                self.txn.cancel_timer(old);
            }
            let timer = self.txn.schedule(at, token);
            if let Some(sub) = self
                .served_mut(index)
                .iter_mut()
                .find(|s| s.is(package, id))
            {
                sub.timer = Some(timer);
            }
            // Its expiry must survive a restart.
            self.dialog_changed(index);
            return;
        }
        // Refused: a subscription this SUBSCRIBE would have created is dropped; a refused
        // refresh leaves the existing one to its expiry.
        let never_accepted = self
            .served(index)
            .iter()
            .find(|s| s.is(package, id))
            .is_some_and(|s| !s.accepted);
        if never_accepted {
            self.drop_subscription(index, package, id);
        }
    }

    /// The implicit subscription of a REFER outside any dialog (RFC 3515 §2.4.2, RFC
    /// 7647 §4): `refer;id=<cseq>` in the table, not yet accepted, so that it expires and
    /// ends its dialog as one a SUBSCRIBE made does. A REFER inside an INVITE dialog keeps
    /// no state (`refer` module).
    pub(super) fn open_refer_subscription(&mut self, now: Instant, index: u32, refer_cseq: u32) {
        let id = refer_cseq.to_string();
        let asked = Asked {
            package: REFER,
            id: Some(id.as_bytes()),
            expires: 0,
        };
        self.push_served(index, new_subscription(&asked, now));
    }

    /// Whether the REFER with CSeq `refer_cseq` in the dialog at `index` has its
    /// subscription in the table (the dialog was made by it).
    pub(super) fn has_refer_subscription(&self, index: u32, refer_cseq: u32) -> bool {
        let id = refer_cseq.to_string();
        self.served(index)
            .iter()
            .any(|s| s.is(REFER, Some(id.as_bytes())))
    }

    /// The application answered such a REFER: a 2xx starts its subscription for
    /// `seconds`; anything else, or `Refer-Sub: false` (`accepted` false), drops it, and
    /// with it the dialog.
    pub(super) fn refer_subscription_answered(
        &mut self,
        now: Instant,
        index: u32,
        refer_cseq: u32,
        accepted: bool,
        seconds: u32,
    ) {
        let id = refer_cseq.to_string();
        if accepted {
            let asked = Asked {
                package: REFER,
                id: Some(id.as_bytes()),
                expires: seconds,
            };
            self.subscribe_answered(now, index, &asked, 200, seconds);
        } else {
            self.drop_subscription(index, REFER, Some(id.as_bytes()));
        }
    }

    /// A NOTIFY for such a REFER's subscription: `active` (with the time left) or, when
    /// `last`, `terminated;reason=noresource`, which ends the subscription and the dialog.
    pub(super) fn refer_subscription_notify(
        &mut self,
        now: Instant,
        index: u32,
        refer_cseq: u32,
        last: bool,
        headers: &[(String, Bytes)],
        body: &[u8],
    ) -> Result<(), DialogError> {
        let dialog = self
            .entry_mut(index)
            .map(|e| e.dialog.id.clone())
            .ok_or(DialogError::ended("a subscription"))?;
        let id = refer_cseq.to_string();
        let state = if last {
            NotifyState::Terminated("noresource".to_owned())
        } else {
            NotifyState::Active
        };
        let note = Note {
            state: &state,
            headers,
            body,
        };
        self.notify(now, &dialog, index, (REFER, Some(id.as_bytes())), note)
    }

    /// `Notify`: a NOTIFY for the subscription `event` (`package` or `package;id=…`) of
    /// `dialog`, with `Subscription-State` from `state` and the time left.
    pub(super) fn send_notify(
        &mut self,
        now: Instant,
        id: &DialogId,
        event: &[u8],
        state: &NotifyState,
        headers: &[(String, Bytes)],
        body: &[u8],
    ) -> Result<(), DialogError> {
        let index = self.found(id)?;
        let parsed = crate::message::Event::parse(event).map_err(|_| {
            DialogError::InvalidInput(crate::message::BuildError::InvalidHeaderValue)
        })?;
        let (package, sub_id) = (parsed.package, parsed.params.get("id").flatten());
        let note = Note {
            state,
            headers,
            body,
        };
        self.notify(now, id, index, (package, sub_id), note)
    }

    /// The NOTIFY of [`Shard::send_notify`] for the subscription (`package`, `id`) of the
    /// dialog `dialog` at `index`.
    fn notify(
        &mut self,
        now: Instant,
        dialog: &DialogId,
        index: u32,
        (package, sub_id): (&[u8], Option<&[u8]>),
        note: Note<'_>,
    ) -> Result<(), DialogError> {
        let Note {
            state,
            headers,
            body,
        } = note;
        let sub = self
            .served(index)
            .iter()
            .find(|s| s.is(package, sub_id))
            .ok_or(DialogError::InvalidDialogState {
                current: "no such subscription",
                expected: "an accepted subscription",
            })?;
        if !sub.accepted {
            return Err(DialogError::InvalidDialogState {
                current: "subscription not yet accepted",
                expected: "an accepted subscription",
            });
        }
        let left = sub.expires_at.saturating_duration_since(now).as_secs();
        let (value, ends) = match state {
            _ if sub.ending => ("terminated;reason=timeout".to_owned(), true),
            NotifyState::Active => (format!("active;expires={left}"), false),
            NotifyState::Pending => (format!("pending;expires={left}"), false),
            NotifyState::Terminated(reason) => (format!("terminated;reason={reason}"), true),
        };
        let event = sub.event();
        let mut all = vec![
            ("Event".to_owned(), event),
            ("Subscription-State".to_owned(), Bytes::from(value)),
        ];
        all.extend(headers.iter().cloned());
        self.send_in_dialog(now, dialog, b"NOTIFY", &all, body)?;
        if ends {
            self.drop_subscription(index, package, sub_id);
        }
        Ok(())
    }

    /// The subscription timer of the dialog at `index` fired: each expired subscription
    /// gets its last NOTIFY (§4.2.2) and ends.
    pub(super) fn subscriptions_due(&mut self, now: Instant, index: u32) {
        let subs = self.served(index);
        let due: Vec<SubscriptionKey> = subs
            .iter()
            .filter(|s| s.accepted && s.expires_at <= now)
            .map(|s| (s.package.clone(), s.id.clone()))
            .collect();
        let Some(dialog) = self.entry_mut(index).map(|e| e.dialog.id.clone()) else {
            return;
        };
        for (package, id) in due {
            let key = (&*package, id.as_deref());
            if let Some(s) = self
                .served_mut(index)
                .iter_mut()
                .find(|s| s.is(key.0, key.1))
            {
                // Whatever the application would say, this NOTIFY ends it.
                s.ending = true;
            }
            // RFC 3515 §2.4.5: every NOTIFY of a REFER's subscription has a sipfrag body;
            // the reference is still where its last NOTIFY said, as far as we know.
            let refer = key.0 == REFER;
            let sipfrag = [(
                "Content-Type".to_owned(),
                Bytes::from_static(super::refer::SIPFRAG),
            )];
            let last = Note {
                state: &NotifyState::Active,
                headers: if refer { &sipfrag } else { &[] },
                body: if refer {
                    b"SIP/2.0 100 Trying\r\n"
                } else {
                    b""
                },
            };
            if self.notify(now, &dialog, index, key, last).is_err() {
                // The dialog cannot send (it is ending): end the subscription all the same.
                self.drop_subscription(index, key.0, key.1);
            }
            self.events.push_back(SessionEvent::SubscriptionTerminated {
                subscription: None,
                dialog: dialog.clone(),
                event: event_value(key.0, key.1),
                reason: SubscriptionEnd::Timeout,
            });
        }
    }

    /// Our NOTIFY in the dialog at `index` got 481 or 408, or no answer: the subscriber
    /// is gone (§4.2.2), and with it every subscription of the dialog.
    pub(super) fn notify_failed(&mut self, index: u32, status: u16) {
        let subs = self.take_served(index);
        if subs.is_empty() {
            return;
        }
        let Some(dialog) = self.entry_mut(index).map(|e| e.dialog.id.clone()) else {
            return;
        };
        for sub in subs {
            if let Some(timer) = sub.timer {
                self.txn.cancel_timer(timer);
            }
            self.events.push_back(SessionEvent::SubscriptionTerminated {
                subscription: None,
                dialog: dialog.clone(),
                event: sub.event(),
                reason: SubscriptionEnd::NotifyFailed(status),
            });
        }
        self.end_if_unused(index);
    }

    /// Removes one subscription; the dialog ends with it when SUBSCRIBE made it and it
    /// was the last.
    fn drop_subscription(&mut self, index: u32, package: &[u8], id: Option<&[u8]>) {
        let Some(timers) = self.change_served(index, |subs| {
            let timers: Vec<TimerHandle> = subs
                .iter_mut()
                .filter(|s| s.is(package, id))
                .filter_map(|s| s.timer.take())
                .collect();
            subs.retain(|s| !s.is(package, id));
            timers
        }) else {
            return;
        };
        for timer in timers {
            self.txn.cancel_timer(timer);
        }
        self.dialog_changed(index);
        self.end_if_unused(index);
    }

    /// Takes back the subscriptions a restored dialog served, their expiry timers at
    /// their wall-clock deadlines (`instant` converts them; at once when passed: the
    /// final NOTIFY goes out then).
    pub(super) fn restore_served(
        &mut self,
        now: Instant,
        index: u32,
        served: &[crate::dialog::ServedRecord],
        instant: impl Fn(std::time::SystemTime) -> Instant,
    ) {
        for s in served {
            let expires_at = instant(s.expires_at).max(now);
            let token = self.token(index, DialogTimer::Subscription);
            let timer = self.txn.schedule(expires_at, token);
            self.push_served(
                index,
                Subscription {
                    package: s.package.clone().into(),
                    id: s.id.clone().map(Into::into),
                    expires_at,
                    timer: Some(timer),
                    accepted: s.accepted,
                    ending: s.ending,
                },
            );
        }
    }

    /// A dialog SUBSCRIBE made, without subscriptions left: it ends (§4.4.1).
    fn end_if_unused(&mut self, index: u32) {
        let unused = self.served(index).is_empty()
            && matches!(
                self.entry_mut(index).map(|e| &e.phase),
                Some(Phase::Subscription)
            );
        if unused {
            self.remove(index);
        }
    }

    /// `Terminate` of a dialog SUBSCRIBE made: each subscription gets its last NOTIFY
    /// (`terminated;reason=noresource`) and the dialog ends with the last.
    pub(super) fn terminate_subscriptions(
        &mut self,
        now: Instant,
        id: &DialogId,
    ) -> Result<(), DialogError> {
        let index = self.found(id)?;
        let accepted: Vec<SubscriptionKey> = self
            .served(index)
            .iter()
            .filter(|s| s.accepted)
            .map(|s| (s.package.clone(), s.id.clone()))
            .collect();
        let ended = NotifyState::Terminated("noresource".to_owned());
        for (package, sub_id) in &accepted {
            let last = Note {
                state: &ended,
                headers: &[],
                body: b"",
            };
            self.notify(now, id, index, (package, sub_id.as_deref()), last)?;
        }
        if let Some(index) = self.find(id) {
            for left in self.take_served(index) {
                if let Some(timer) = left.timer {
                    self.txn.cancel_timer(timer);
                }
            }
            self.end_if_unused(index);
        }
        Ok(())
    }
}

/// The `Expires` the application wrote in its answer, if any.
pub(super) fn written_expires(headers: &[(&str, &[u8])]) -> Option<u32> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Expires"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<u32>().ok())
}

fn new_subscription(asked: &Asked<'_>, now: Instant) -> Subscription {
    Subscription {
        package: asked.package.into(),
        id: asked.id.map(Into::into),
        expires_at: now,
        timer: None,
        accepted: false,
        ending: false,
    }
}
