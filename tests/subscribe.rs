//! SUBSCRIBE/NOTIFY (RFC 6665) with the shard as notifier, on simulated time: the checks
//! before the application sees a SUBSCRIBE, the dialog a 2xx creates, NOTIFYs with the
//! time left, refresh, unsubscribe, expiry, and a subscriber that has gone away.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipshard::dialog::DialogId;
use sipshard::message::{HeaderName, Message, Method};
use sipshard::shard::{
    DialogCommand, DialogError, NotifyState, SessionEvent, Shard, ShardConfig, SubscriptionEnd,
    Subscriptions,
};
use sipshard::transaction::ServerTxnId;

mod common;

fn watcher() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

fn notifier(now: Instant) -> Shard {
    let mut config = ShardConfig::new("127.0.0.1:5080".parse().unwrap());
    config.subscriptions = Some(Subscriptions::new(["presence", "dialog"]));
    Shard::new(now, config)
}

fn sent(shard: &mut Shard) -> Vec<Message> {
    std::iter::from_fn(|| shard.poll_transmit())
        .map(|t| Message::parse(t.payload).unwrap())
        .collect()
}

fn header<'m>(m: &'m Message, name: &str) -> Option<&'m str> {
    m.headers()
        .find(|h| h.name_bytes.eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| std::str::from_utf8(h.value).unwrap())
}

fn subscribe(cseq: u32, branch: &str, to_tag: &str, extra: &str) -> Bytes {
    let to_tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    Bytes::from(format!(
        "SUBSCRIBE sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=w1\r\nTo: <sip:bob@127.0.0.1>{to_tag}\r\nCall-ID: sub@test\r\n\
CSeq: {cseq} SUBSCRIBE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

/// The next SubscriptionRequest: (dialog, txn, expires).
fn request_event(shard: &mut Shard) -> (DialogId, ServerTxnId, u32) {
    loop {
        match shard.poll_event() {
            Some(SessionEvent::SubscriptionRequest {
                dialog,
                txn,
                request,
                expires,
            }) => {
                assert_eq!(request.method(), Some(Method::Subscribe));
                return (dialog, txn, expires);
            }
            Some(_) => continue,
            None => panic!("no SubscriptionRequest"),
        }
    }
}

fn respond(shard: &mut Shard, now: Instant, txn: ServerTxnId, status: u16) {
    let respond = DialogCommand::Respond {
        txn,
        status,
        headers: Vec::new(),
        body: Bytes::new(),
    };
    shard.handle_command(now, respond).unwrap();
}

fn notify(shard: &mut Shard, now: Instant, dialog: &DialogId, state: NotifyState, body: &str) {
    shard
        .handle_command(
            now,
            DialogCommand::Notify {
                dialog: dialog.clone(),
                event: Bytes::from_static(b"presence"),
                state,
                headers: vec![(
                    "Content-Type".to_owned(),
                    Bytes::from_static(b"application/pidf+xml"),
                )],
                body: Bytes::from(body.to_owned()),
            },
        )
        .unwrap();
}

/// A presence subscription for `expires` seconds, accepted; its dialog.
fn accepted(shard: &mut Shard, now: Instant, expires: u32) -> DialogId {
    let extra = format!("Event: presence\r\nExpires: {expires}\r\n");
    shard.handle_datagram(now, watcher(), subscribe(1, "s1", "", &extra));
    let (dialog, txn, granted) = request_event(shard);
    assert_eq!(granted, expires.min(3600));
    respond(shard, now, txn, 200);
    dialog
}

/// [`accepted`], with what the shard sent dropped, and our tag.
fn subscribed(shard: &mut Shard, now: Instant, expires: u32) -> (DialogId, String) {
    let dialog = accepted(shard, now, expires);
    sent(shard);
    let tag = std::str::from_utf8(dialog.local_tag()).unwrap().to_owned();
    (dialog, tag)
}

#[test]
fn an_accepted_subscribe_makes_a_dialog_and_notifies_carry_the_time_left() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    let dialog = accepted(&mut bob, t0, 7200);
    assert_eq!(bob.stats().subscription_dialogs_served, 1);
    let ok = sent(&mut bob).pop().unwrap();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        header(&ok, "Expires"),
        Some("3600"),
        "shortened to the maximum"
    );
    assert_eq!(ok.to_tag().unwrap(), Some(dialog.local_tag()));
    assert_eq!(
        header(&ok, "Contact"),
        Some("<sip:127.0.0.1:5080>"),
        "a 2xx that makes a dialog names our target (RFC 6665 §4.2.1.1)"
    );
    assert_eq!(dialog.remote_tag(), b"w1");

    let later = t0 + Duration::from_secs(100);
    notify(&mut bob, later, &dialog, NotifyState::Active, "<presence/>");
    let n = sent(&mut bob).pop().unwrap();
    assert_eq!(n.method(), Some(Method::Notify));
    assert_eq!(
        n.request_uri_bytes(),
        Some(&b"sip:alice@127.0.0.1:5070"[..])
    );
    assert_eq!(n.to_tag().unwrap(), Some(&b"w1"[..]));
    assert_eq!(n.from_tag().unwrap(), Some(dialog.local_tag()));
    assert_eq!(n.header(HeaderName::CallId), Some(&b"sub@test"[..]));
    assert_eq!(header(&n, "Event"), Some("presence"));
    assert_eq!(
        header(&n, "Subscription-State"),
        Some("active;expires=3500")
    );
    assert_eq!(header(&n, "Content-Type"), Some("application/pidf+xml"));
    assert_eq!(n.body_bytes(), b"<presence/>");
    assert!(
        header(&n, "Contact").is_some(),
        "NOTIFY is a target refresh request"
    );
}

#[test]
fn a_refresh_restarts_the_interval_and_expiry_sends_the_last_notify() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    let (dialog, tag) = subscribed(&mut bob, t0, 600);

    // A refresh half-way, in the dialog.
    let t1 = t0 + Duration::from_secs(300);
    let extra = "Event: presence\r\nExpires: 600\r\n";
    bob.handle_datagram(t1, watcher(), subscribe(2, "s2", &tag, extra));
    let (same, txn, expires) = request_event(&mut bob);
    assert_eq!((same.clone(), expires), (dialog.clone(), 600));
    respond(&mut bob, t1, txn, 200);
    notify(&mut bob, t1, &dialog, NotifyState::Active, "");
    let out = sent(&mut bob);
    assert_eq!(out[0].status(), Some(200));
    assert_eq!(header(&out[0], "Expires"), Some("600"));
    assert_eq!(
        header(&out[1], "Subscription-State"),
        Some("active;expires=600")
    );
    bob.handle_datagram(t1, watcher(), common::sip::response_to(&out[1], 200));

    // Past the first interval nothing happens; past the refreshed one the shard ends it.
    let t2 = t0 + Duration::from_secs(700);
    bob.handle_timeout(t2);
    assert!(sent(&mut bob).is_empty());
    let t3 = t1 + Duration::from_secs(601);
    bob.handle_timeout(t3);
    let last = sent(&mut bob).pop().expect("the last NOTIFY");
    assert_eq!(last.method(), Some(Method::Notify));
    assert_eq!(
        header(&last, "Subscription-State"),
        Some("terminated;reason=timeout")
    );
    let ended: Vec<_> = std::iter::from_fn(|| bob.poll_event())
        .filter_map(|e| match e {
            SessionEvent::SubscriptionTerminated { event, reason, .. } => Some((event, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        [(Bytes::from_static(b"presence"), SubscriptionEnd::Timeout)]
    );
    assert!(
        bob.dialog_state(&dialog).is_none(),
        "the dialog ended with it"
    );
}

#[test]
fn unsubscribing_makes_the_next_notify_the_last() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    let (dialog, tag) = subscribed(&mut bob, t0, 600);
    let extra = "Event: presence\r\nExpires: 0\r\n";
    bob.handle_datagram(t0, watcher(), subscribe(2, "s2", &tag, extra));
    let (_, txn, expires) = request_event(&mut bob);
    assert_eq!(expires, 0);
    respond(&mut bob, t0, txn, 200);
    // The application reports the state it has: the shard says terminated.
    notify(&mut bob, t0, &dialog, NotifyState::Active, "<presence/>");
    let out = sent(&mut bob);
    assert_eq!(header(&out[0], "Expires"), Some("0"));
    assert_eq!(
        header(&out[1], "Subscription-State"),
        Some("terminated;reason=timeout")
    );
    assert_eq!(out[1].body_bytes(), b"<presence/>");
    assert!(bob.dialog_state(&dialog).is_none());
}

#[test]
fn an_unsubscribe_the_application_leaves_unanswered_is_ended_by_the_shard() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    let (dialog, tag) = subscribed(&mut bob, t0, 600);
    let extra = "Event: presence\r\nExpires: 0\r\n";
    bob.handle_datagram(t0, watcher(), subscribe(2, "s2", &tag, extra));
    let (_, txn, _) = request_event(&mut bob);
    respond(&mut bob, t0, txn, 200);
    sent(&mut bob);
    bob.handle_timeout(t0 + Duration::from_secs(33));
    let last = sent(&mut bob)
        .pop()
        .expect("the shard's last NOTIFY, after 64·T1");
    assert_eq!(
        header(&last, "Subscription-State"),
        Some("terminated;reason=timeout")
    );
    assert!(bob.dialog_state(&dialog).is_none());
}

#[test]
fn what_the_notifier_refuses_before_the_application_sees_it() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    let cases = [
        ("Event: message-summary\r\n", 489, "a package not served"),
        ("", 400, "no Event"),
        ("Event: presence\r\nExpires: 10\r\n", 423, "too brief"),
    ];
    for (i, (extra, status, why)) in cases.iter().enumerate() {
        bob.handle_datagram(t0, watcher(), subscribe(1, &format!("r{i}"), "", extra));
        let r = sent(&mut bob).pop().unwrap();
        assert_eq!(r.status(), Some(*status), "{why}");
        assert!(bob.poll_event().is_none(), "{why}");
    }
    bob.handle_datagram(t0, watcher(), subscribe(1, "r9", "", "Event: x\r\n"));
    let r = sent(&mut bob).pop().unwrap();
    assert_eq!(header(&r, "Allow-Events"), Some("presence, dialog"));
    bob.handle_datagram(
        t0,
        watcher(),
        subscribe(1, "r8", "", "Event: presence\r\nExpires: 1\r\n"),
    );
    let r = sent(&mut bob).pop().unwrap();
    assert_eq!(header(&r, "Min-Expires"), Some("60"));
    assert_eq!(bob.dialog_count(), 0, "no dialog left behind");

    // OPTIONS says what is served (RFC 6665 §8.2.2).
    let options = Bytes::from_static(
        b"OPTIONS sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=o1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: opt@test\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    bob.handle_datagram(t0, watcher(), options);
    let ok = sent(&mut bob).pop().unwrap();
    assert_eq!(header(&ok, "Allow-Events"), Some("presence, dialog"));
    assert!(header(&ok, "Allow").unwrap().contains("SUBSCRIBE"));

    // Without subscriptions configured, SUBSCRIBE is a method not served.
    let mut plain = Shard::new(t0, ShardConfig::new("127.0.0.1:5080".parse().unwrap()));
    plain.handle_datagram(t0, watcher(), subscribe(1, "p", "", "Event: presence\r\n"));
    let r = sent(&mut plain).pop().unwrap();
    assert_eq!(r.status(), Some(405));
    assert!(!header(&r, "Allow").unwrap().contains("SUBSCRIBE"));
    bob.handle_datagram(t0, watcher(), subscribe(1, "q", "", "Event: bad event\r\n"));
    assert_eq!(sent(&mut bob).pop().unwrap().status(), Some(400));
}

#[test]
fn a_refused_subscribe_leaves_no_dialog_and_no_notify_goes_before_a_2xx() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    bob.handle_datagram(t0, watcher(), subscribe(1, "s1", "", "Event: presence\r\n"));
    let (dialog, txn, expires) = request_event(&mut bob);
    assert_eq!(expires, 3600, "the default interval");
    let early = bob.handle_command(
        t0,
        DialogCommand::Notify {
            dialog: dialog.clone(),
            event: Bytes::from_static(b"presence"),
            state: NotifyState::Active,
            headers: Vec::new(),
            body: Bytes::new(),
        },
    );
    assert!(matches!(early, Err(DialogError::InvalidDialogState { .. })));
    respond(&mut bob, t0, txn, 403);
    assert_eq!(sent(&mut bob).pop().unwrap().status(), Some(403));
    assert!(bob.dialog_state(&dialog).is_none());
    assert_eq!(bob.dialog_count(), 0);
}

#[test]
fn a_481_to_a_notify_ends_the_subscription_and_terminate_sends_the_last_notify() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    let dialog = accepted(&mut bob, t0, 600);
    sent(&mut bob);
    notify(&mut bob, t0, &dialog, NotifyState::Active, "");
    let n = sent(&mut bob).pop().unwrap();
    bob.handle_datagram(t0, watcher(), common::sip::response_to(&n, 481));
    let reasons: Vec<_> = std::iter::from_fn(|| bob.poll_event())
        .filter_map(|e| match e {
            SessionEvent::SubscriptionTerminated { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [SubscriptionEnd::NotifyFailed(481)]);
    assert!(bob.dialog_state(&dialog).is_none());

    // Terminate: the last NOTIFY says noresource, and the dialog ends.
    let other = {
        let extra = "Event: presence\r\n";
        let datagram = subscribe(1, "t1", "", extra);
        let datagram = Bytes::from(
            String::from_utf8(datagram.to_vec())
                .unwrap()
                .replace("sub@test", "sub2@test"),
        );
        bob.handle_datagram(t0, watcher(), datagram);
        let (dialog, txn, _) = request_event(&mut bob);
        respond(&mut bob, t0, txn, 200);
        dialog
    };
    sent(&mut bob);
    bob.handle_command(
        t0,
        DialogCommand::Terminate {
            dialog: other.clone(),
        },
    )
    .unwrap();
    let last = sent(&mut bob).pop().unwrap();
    assert_eq!(
        header(&last, "Subscription-State"),
        Some("terminated;reason=noresource")
    );
    assert!(bob.dialog_state(&other).is_none());
}

#[test]
fn subscriptions_in_one_dialog_are_told_apart_by_event_id() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    bob.handle_datagram(
        t0,
        watcher(),
        subscribe(1, "s1", "", "Event: dialog;id=1\r\n"),
    );
    let (dialog, txn, _) = request_event(&mut bob);
    respond(&mut bob, t0, txn, 200);
    let tag = std::str::from_utf8(dialog.local_tag()).unwrap().to_owned();
    bob.handle_datagram(
        t0,
        watcher(),
        subscribe(2, "s2", &tag, "Event: dialog;id=2\r\n"),
    );
    let (_, txn, _) = request_event(&mut bob);
    respond(&mut bob, t0, txn, 200);
    sent(&mut bob);
    let end = |bob: &mut Shard, id: &'static [u8]| {
        bob.handle_command(
            t0,
            DialogCommand::Notify {
                dialog: dialog.clone(),
                event: Bytes::from_static(id),
                state: NotifyState::Terminated("deactivated".to_owned()),
                headers: Vec::new(),
                body: Bytes::new(),
            },
        )
    };
    end(&mut bob, b"dialog;id=1").unwrap();
    let n = sent(&mut bob).pop().unwrap();
    assert_eq!(header(&n, "Event"), Some("dialog;id=1"));
    assert!(bob.dialog_state(&dialog).is_some(), "id=2 keeps the dialog");
    assert!(end(&mut bob, b"dialog;id=1").is_err(), "id=1 is over");
    end(&mut bob, b"dialog;id=2").unwrap();
    assert!(
        bob.dialog_state(&dialog).is_none(),
        "the last one ends the dialog"
    );
}

#[test]
fn a_notify_nobody_answers_ends_the_subscription() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    let dialog = accepted(&mut bob, t0, 600);
    notify(&mut bob, t0, &dialog, NotifyState::Active, "");
    for s in 1..=33 {
        bob.handle_timeout(t0 + Duration::from_secs(s));
    }
    let reasons: Vec<_> = std::iter::from_fn(|| bob.poll_event())
        .filter_map(|e| match e {
            SessionEvent::SubscriptionTerminated { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [SubscriptionEnd::NotifyFailed(408)]);
    assert!(bob.dialog_state(&dialog).is_none());
}

#[test]
fn a_subscribe_the_application_never_answers_leaves_nothing() {
    let t0 = Instant::now();
    let mut bob = notifier(t0);
    bob.handle_datagram(t0, watcher(), subscribe(1, "s1", "", "Event: presence\r\n"));
    let (dialog, _, _) = request_event(&mut bob);
    assert_eq!(bob.dialog_count(), 1);
    for s in 1..=40 {
        bob.handle_timeout(t0 + Duration::from_secs(s));
    }
    assert!(bob.dialog_state(&dialog).is_none());
    assert_eq!(bob.dialog_count(), 0);
    assert_eq!(bob.transaction_count(), 0);
}

#[test]
fn a_served_subscription_survives_a_restart_and_expires_with_its_final_notify() {
    use common::pair::{Store, drain_persist};
    let t0 = Instant::now();
    let wall = |at: Instant| {
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + (at - t0)
    };
    let persisting = |now: Instant| {
        let mut config = ShardConfig::new("127.0.0.1:5080".parse().unwrap());
        config.subscriptions = Some(Subscriptions::new(["presence", "dialog"]));
        config.persist = true;
        let mut shard = Shard::new(now, config);
        shard.set_wall_clock(now, wall(now));
        shard
    };
    let mut store = Store::new();
    let mut bob = persisting(t0);
    let (dialog, _) = subscribed(&mut bob, t0, 600);
    drain_persist(&mut bob, &mut store);
    assert_eq!(store.len(), 1, "the subscription's dialog is written");

    // kill -9 at 100 s; a new notifier takes the subscription back.
    let t1 = t0 + Duration::from_secs(100);
    let mut bob = persisting(t1);
    for record in store.values() {
        bob.restore(t1, record).expect("restores");
    }
    assert_eq!(bob.stats().subscription_dialogs_served, 1);
    assert!(bob.dialog_state(&dialog).is_some());
    // The application's NOTIFY goes out in the restored dialog, with the time left.
    notify(&mut bob, t1, &dialog, NotifyState::Active, "<presence/>");
    let n = sent(&mut bob).pop().expect("a NOTIFY");
    assert_eq!(header(&n, "Subscription-State"), Some("active;expires=500"));
    bob.handle_datagram(t1, watcher(), common::sip::response_to(&n, 200));
    drain_persist(&mut bob, &mut store);

    // At the deadline written before the restart, the last NOTIFY, and the dialog ends.
    bob.handle_timeout(t0 + Duration::from_secs(599));
    assert!(sent(&mut bob).is_empty(), "not before its time");
    bob.handle_timeout(t0 + Duration::from_secs(601));
    let last = sent(&mut bob).pop().expect("the last NOTIFY");
    assert_eq!(
        header(&last, "Subscription-State"),
        Some("terminated;reason=timeout")
    );
    bob.handle_datagram(
        t0 + Duration::from_secs(601),
        watcher(),
        common::sip::response_to(&last, 200),
    );
    assert!(bob.dialog_state(&dialog).is_none());
    drain_persist(&mut bob, &mut store);
    assert!(store.is_empty(), "its record is deleted");
}
