//! SUBSCRIBE/NOTIFY (RFC 6665) with the shard as subscriber, against a notifier shard, on
//! simulated time: acceptance, NOTIFYs, refresh before expiry, unsubscribe, refusal, a
//! NOTIFY that overtakes the 2xx, a forked SUBSCRIBE, and a notifier that went away.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sipshard::dialog::{DialogId, DialogRecord};
use sipshard::message::{HeaderName, Message, Method};
use sipshard::shard::{
    CommandOutcome, DialogCommand, NewSubscription, NotifyState, SessionEvent, Shard, ShardConfig,
    SubscriptionEnd, Subscriptions,
};
use sipshard::transaction::Transmit;

mod common;
use common::pair::{Store, drain_persist};

/// The wall-clock time at each test's start.
fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn persisting_alice() -> ShardConfig {
    let mut config = ShardConfig::new(alice_addr());
    config.persist = true;
    config
}

fn alice_addr() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

fn bob_addr() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

/// Alice subscribes; Bob serves presence.
struct Pair {
    alice: Shard,
    bob: Shard,
    now: Instant,
    /// What Alice's application saw.
    seen: Vec<SessionEvent>,
    /// Alice's store, when she persists.
    store: Store,
    start: Instant,
    /// Bob's application: how it answers SUBSCRIBEs.
    bob_answers: u16,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let mut config = ShardConfig::new(bob_addr());
        config.subscriptions = Some(Subscriptions::new(["presence"]));
        Pair {
            alice: Shard::new(now, ShardConfig::new(alice_addr())),
            bob: Shard::new(now, config),
            now,
            seen: Vec::new(),
            store: Store::new(),
            start: now,
            bob_answers: 200,
        }
    }

    /// Alice persists her dialogs (issue 22), on a wall clock that reads [`wall`] at start.
    fn persisting() -> Pair {
        let mut p = Pair::new();
        p.alice = Shard::new(p.now, persisting_alice());
        p.alice.set_wall_clock(p.now, wall());
        p.start = p.now;
        p
    }

    /// Alice's store after her writes so far.
    fn alice_store(&mut self) -> Store {
        drain_persist(&mut self.alice, &mut self.store);
        self.store.clone()
    }

    /// Alice is killed and starts again from her store, the records in `order`; returns
    /// the recovered dialogs' call handles.
    fn restart_alice(&mut self, order: impl Fn(&DialogRecord) -> bool) -> Vec<DialogId> {
        let store = self.alice_store();
        self.alice = Shard::new(self.now, persisting_alice());
        self.alice
            .set_wall_clock(self.now, wall() + (self.now - self.start));
        let mut records: Vec<&Vec<u8>> = store.values().collect();
        records.sort_by_key(|r| order(&DialogRecord::decode(r).unwrap()));
        for r in records {
            self.alice.restore(self.now, r).unwrap();
        }
        std::iter::from_fn(|| self.alice.poll_event())
            .filter_map(|e| match e {
                SessionEvent::DialogRecovered { call, .. } => Some(call),
                _ => None,
            })
            .collect()
    }

    fn subscribe(&mut self, expires: u32) -> DialogId {
        let new = NewSubscription {
            from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
            to: Bytes::from_static(b"<sip:bob@127.0.0.1>"),
            request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
            destination: bob_addr(),
            event: Bytes::from_static(b"presence"),
            expires,
            headers: vec![(
                "Accept".to_owned(),
                Bytes::from_static(b"application/pidf+xml"),
            )],
            body: Bytes::new(),
        };
        match self
            .alice
            .handle_command(self.now, DialogCommand::Subscribe(Box::new(new)))
        {
            Ok(CommandOutcome::Subscription(handle)) => handle,
            other => panic!("Subscribe: {other:?}"),
        }
    }

    /// Bob's application: answers each SUBSCRIBE and NOTIFYs at once (RFC 6665 §4.2.1.2).
    fn bob_app(&mut self) {
        while let Some(e) = self.bob.poll_event() {
            if let SessionEvent::SubscriptionRequest { dialog, txn, .. } = e {
                let respond = DialogCommand::Respond {
                    txn,
                    status: self.bob_answers,
                    headers: Vec::new(),
                    body: Bytes::new(),
                };
                self.bob.handle_command(self.now, respond).unwrap();
                if self.bob_answers == 200 {
                    self.bob_notify(&dialog, NotifyState::Active, "<open/>");
                }
            }
        }
    }

    fn bob_notify(&mut self, dialog: &DialogId, state: NotifyState, body: &str) {
        let notify = DialogCommand::Notify {
            dialog: dialog.clone(),
            event: Bytes::from_static(b"presence"),
            state,
            headers: Vec::new(),
            body: Bytes::from(body.to_owned()),
        };
        self.bob.handle_command(self.now, notify).unwrap();
    }

    /// Delivers everything both sides send until both are quiet; returns what went
    /// Bob → Alice, in order.
    fn run(&mut self) -> Vec<Message> {
        let mut to_alice = Vec::new();
        loop {
            self.bob_app();
            let a: Vec<Transmit> = std::iter::from_fn(|| self.alice.poll_transmit()).collect();
            let b: Vec<Transmit> = std::iter::from_fn(|| self.bob.poll_transmit()).collect();
            if a.is_empty() && b.is_empty() {
                break;
            }
            // What goes elsewhere (another notifier) is lost.
            for t in a.into_iter().filter(|t| t.destination == bob_addr()) {
                self.bob.handle_datagram(self.now, alice_addr(), t.payload);
            }
            for t in b {
                to_alice.push(Message::parse(t.payload.clone()).unwrap());
                self.alice.handle_datagram(self.now, bob_addr(), t.payload);
            }
        }
        self.seen
            .extend(std::iter::from_fn(|| self.alice.poll_event()));
        to_alice
    }

    /// Moves time on in one-second steps, running both sides each step.
    fn advance(&mut self, seconds: u64) {
        for _ in 0..seconds {
            self.now += Duration::from_secs(1);
            self.alice.handle_timeout(self.now);
            self.bob.handle_timeout(self.now);
            self.run();
        }
    }

    fn accepted(&self) -> Vec<(DialogId, u32)> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                SessionEvent::SubscriptionAccepted {
                    dialog, expires, ..
                } => Some((dialog.clone(), *expires)),
                _ => None,
            })
            .collect()
    }

    fn notifications(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                SessionEvent::Notification { request, .. } => {
                    Some(String::from_utf8_lossy(request.body_bytes()).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    fn ended(&self) -> Vec<SubscriptionEnd> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                SessionEvent::SubscriptionTerminated { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_subscription_is_accepted_notified_and_refreshed_before_it_ends() {
    let mut p = Pair::new();
    let handle = p.subscribe(600);
    p.run();
    let accepted = p.accepted();
    assert_eq!(accepted.len(), 1);
    let (dialog, expires) = accepted[0].clone();
    assert_eq!(expires, 600);
    assert_eq!(dialog.call_id(), handle.call_id());
    assert!(!dialog.remote_tag().is_empty());
    assert_eq!(p.notifications(), ["<open/>"]);

    // At nine tenths of the interval Alice refreshes; Bob's NOTIFY follows.
    p.advance(539);
    assert_eq!(p.notifications().len(), 1, "no refresh before 540 s");
    p.advance(1);
    assert_eq!(p.notifications().len(), 2, "refreshed at 540 s");
    // Well past the first interval it lives on, refreshed again and again.
    p.advance(1200);
    assert!(p.ended().is_empty(), "{:?}", p.ended());
    assert!(p.notifications().len() >= 4);
    assert_eq!(p.alice.dialog_count(), 1);
    assert_eq!(p.bob.dialog_count(), 1);
    assert_eq!(p.alice.stats().subscriptions_held, 1);
    assert_eq!(p.bob.stats().subscription_dialogs_served, 1);
}

#[test]
fn unsubscribing_ends_both_sides_with_the_last_notify() {
    let mut p = Pair::new();
    let handle = p.subscribe(600);
    p.run();
    let unsubscribe = DialogCommand::Unsubscribe {
        subscription: handle,
    };
    p.alice.handle_command(p.now, unsubscribe).unwrap();
    let to_alice = p.run();
    let last = to_alice
        .iter()
        .rev()
        .find(|m| m.method() == Some(Method::Notify))
        .unwrap();
    let state = last.subscription_state().unwrap().unwrap();
    assert_eq!(state.state, b"terminated");
    assert_eq!(p.ended(), [SubscriptionEnd::ByNotifier]);
    assert_eq!(p.alice.dialog_count(), 0);
    assert_eq!(p.bob.dialog_count(), 0);
}

#[test]
fn the_notifier_ending_it_ends_it_here() {
    let mut p = Pair::new();
    p.subscribe(600);
    p.run();
    let dialog = p.accepted()[0].0.clone();
    // Bob's dialog has the tags the other way round.
    let bobs = DialogId::new(dialog.call_id(), dialog.remote_tag(), dialog.local_tag());
    p.bob_notify(&bobs, NotifyState::Terminated("deactivated".to_owned()), "");
    p.run();
    assert_eq!(p.ended(), [SubscriptionEnd::ByNotifier]);
    assert_eq!(p.alice.dialog_count(), 0);
}

#[test]
fn a_refused_subscribe_ends_it_and_leaves_nothing() {
    let mut p = Pair::new();
    p.bob_answers = 403;
    p.subscribe(600);
    p.run();
    assert_eq!(p.ended(), [SubscriptionEnd::Rejected(403)]);
    assert!(p.accepted().is_empty());
    assert_eq!(p.alice.dialog_count(), 0);

    // A package the notifier does not serve: 489.
    let mut p = Pair::new();
    p.bob
        .handle_command(
            p.now,
            DialogCommand::Terminate {
                dialog: DialogId::new(b"none", b"x", b"y"),
            },
        )
        .unwrap_err();
    let new = NewSubscription {
        from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
        to: Bytes::from_static(b"<sip:bob@127.0.0.1>"),
        request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
        destination: bob_addr(),
        event: Bytes::from_static(b"message-summary"),
        expires: 600,
        headers: Vec::new(),
        body: Bytes::new(),
    };
    p.alice
        .handle_command(p.now, DialogCommand::Subscribe(Box::new(new)))
        .unwrap();
    p.run();
    assert_eq!(p.ended(), [SubscriptionEnd::Rejected(489)]);
    assert_eq!(p.alice.dialog_count(), 0);
}

#[test]
fn a_notify_that_overtakes_the_2xx_starts_the_subscription() {
    let mut p = Pair::new();
    p.subscribe(600);
    // Alice's SUBSCRIBE reaches Bob; Bob answers and notifies; the NOTIFY arrives first.
    let subscribe = p.alice.poll_transmit().unwrap();
    p.bob
        .handle_datagram(p.now, alice_addr(), subscribe.payload);
    p.bob_app();
    let ok = p.bob.poll_transmit().unwrap();
    let notify = p.bob.poll_transmit().unwrap();
    assert_eq!(
        Message::parse(ok.payload.clone()).unwrap().status(),
        Some(200)
    );
    p.alice.handle_datagram(p.now, bob_addr(), notify.payload);
    p.alice.handle_datagram(p.now, bob_addr(), ok.payload);
    p.run();
    assert_eq!(p.accepted().len(), 1, "one subscription, once");
    assert_eq!(p.notifications(), ["<open/>"]);
    assert_eq!(p.alice.dialog_count(), 1);
    // The NOTIFY was answered 200 in the dialog it made.
    let answered = p.bob.dialog_count();
    assert_eq!(answered, 1);
}

/// A NOTIFY from another notifier the SUBSCRIBE of `dialog` forked to (another From
/// tag, at 127.0.0.1:5090), answered 200 by Alice.
fn fork_notify(p: &mut Pair, dialog: &DialogId) {
    let fork = format!(
        "NOTIFY sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKfork1\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=other\r\nTo: <sip:alice@127.0.0.1>;tag={}\r\n\
Call-ID: {}\r\nCSeq: 1 NOTIFY\r\nContact: <sip:bob@127.0.0.1:5090>\r\nEvent: presence\r\n\
Subscription-State: active;expires=300\r\nContent-Length: 5\r\n\r\n<on/>",
        String::from_utf8_lossy(dialog.local_tag()),
        String::from_utf8_lossy(dialog.call_id()),
    );
    let other: SocketAddr = "127.0.0.1:5090".parse().unwrap();
    p.alice.handle_datagram(p.now, other, Bytes::from(fork));
    let answer = p.alice.poll_transmit().unwrap();
    assert_eq!(answer.destination, other);
    assert_eq!(Message::parse(answer.payload).unwrap().status(), Some(200));
}

#[test]
fn a_second_notifier_makes_a_second_subscription_and_unsubscribe_ends_both() {
    let mut p = Pair::new();
    let handle = p.subscribe(600);
    p.run();
    let dialog = p.accepted()[0].0.clone();
    fork_notify(&mut p, &dialog);
    p.run();
    let accepted = p.accepted();
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert_eq!(accepted[1].0.remote_tag(), b"other");
    assert_eq!(accepted[1].1, 300, "the NOTIFY's expires");
    assert_eq!(p.alice.dialog_count(), 2);

    // Unsubscribe by the handle: Expires: 0 in both dialogs.
    let unsubscribe = DialogCommand::Unsubscribe {
        subscription: handle,
    };
    p.alice.handle_command(p.now, unsubscribe).unwrap();
    let out: Vec<Transmit> = std::iter::from_fn(|| p.alice.poll_transmit()).collect();
    let targets: Vec<SocketAddr> = out.iter().map(|t| t.destination).collect();
    assert_eq!(out.len(), 2, "{targets:?}");
    for t in &out {
        let m = Message::parse(t.payload.clone()).unwrap();
        assert_eq!(m.method(), Some(Method::Subscribe));
        assert_eq!(m.header(HeaderName::Expires), Some(&b"0"[..]));
    }
    // Bob ends his; the other notifier never answers: 64·T1 later it is over too.
    for t in out {
        if t.destination == bob_addr() {
            p.bob.handle_datagram(p.now, alice_addr(), t.payload);
        }
    }
    p.run();
    p.advance(33);
    let mut ended = p.ended();
    ended.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        ended,
        [SubscriptionEnd::ByNotifier, SubscriptionEnd::Timeout]
    );
    assert_eq!(p.alice.dialog_count(), 0);
}

#[test]
fn a_notifier_that_went_away_lets_the_subscription_lapse_at_its_expiry() {
    let mut p = Pair::new();
    p.subscribe(100);
    p.run();
    // Bob is gone: nothing reaches him any more.
    p.bob = Shard::new(p.now, ShardConfig::new("127.0.0.1:5081".parse().unwrap()));
    for _ in 0..99 {
        p.now += Duration::from_secs(1);
        p.alice.handle_timeout(p.now);
        while p.alice.poll_transmit().is_some() {}
        p.seen.extend(std::iter::from_fn(|| p.alice.poll_event()));
    }
    assert!(
        p.ended().is_empty(),
        "the refresh at 90 s is unanswered, not refused"
    );
    p.now += Duration::from_secs(1);
    p.alice.handle_timeout(p.now);
    p.seen.extend(std::iter::from_fn(|| p.alice.poll_event()));
    assert_eq!(p.ended(), [SubscriptionEnd::Timeout]);
    assert_eq!(p.alice.dialog_count(), 0);
}

#[test]
fn too_brief_an_interval_is_asked_again_with_min_expires() {
    // RFC 6665 §4.1.2.1: a 423 names the shortest interval; the SUBSCRIBE goes again with it.
    let mut p = Pair::new();
    p.subscribe(30);
    let to_alice = p.run();
    let codes: Vec<u16> = to_alice.iter().filter_map(Message::status).collect();
    assert_eq!(codes, [423, 200], "{codes:?}");
    assert_eq!(p.accepted().len(), 1);
    assert_eq!(p.accepted()[0].1, 60);
    assert!(p.ended().is_empty());
    assert_eq!(p.alice.dialog_count(), 1);
}

#[test]
fn an_unsubscribe_before_any_answer_goes_out_once_the_dialog_exists() {
    let mut p = Pair::new();
    let handle = p.subscribe(600);
    // Before the SUBSCRIBE has reached Bob: nothing to send it in yet.
    let unsubscribe = DialogCommand::Unsubscribe {
        subscription: handle,
    };
    p.alice.handle_command(p.now, unsubscribe).unwrap();
    p.run();
    assert_eq!(p.ended(), [SubscriptionEnd::ByNotifier]);
    assert_eq!(p.alice.dialog_count(), 0);
    assert_eq!(p.bob.dialog_count(), 0, "Bob's subscription ended too");
}

#[test]
fn a_held_subscription_survives_a_restart_and_is_refreshed_when_it_was_due() {
    let mut p = Pair::persisting();
    let handle = p.subscribe(600);
    p.run();
    assert_eq!(
        p.alice_store().len(),
        1,
        "the accepted subscription's dialog is kept"
    );
    p.advance(300);
    assert_eq!(p.restart_alice(|_| false), std::slice::from_ref(&handle));
    assert_eq!(p.alice.stats().subscriptions_held, 1);

    // Bob's NOTIFY in the restored dialog is answered and reported under the handle.
    let dialog = p.accepted()[0].0.clone();
    let bobs = DialogId::new(dialog.call_id(), dialog.remote_tag(), dialog.local_tag());
    p.bob_notify(&bobs, NotifyState::Active, "<busy/>");
    p.run();
    assert_eq!(
        p.notifications().last().map(String::as_str),
        Some("<busy/>")
    );
    let reported = p.seen.iter().rev().find_map(|e| match e {
        SessionEvent::Notification { subscription, .. } => Some(subscription.clone()),
        _ => None,
    });
    assert_eq!(reported, Some(handle));

    // The refresh is due at 540 s, as written before the restart.
    let before = p.notifications().len();
    p.advance(239);
    assert_eq!(p.notifications().len(), before, "no refresh before 540 s");
    p.advance(1);
    assert_eq!(p.notifications().len(), before + 1, "refreshed at 540 s");
    p.advance(1200);
    assert!(p.ended().is_empty(), "{:?}", p.ended());
    assert_eq!((p.alice.dialog_count(), p.bob.dialog_count()), (1, 1));
}

#[test]
fn a_restored_fork_is_found_by_its_handle_and_unsubscribe_ends_both_dialogs() {
    let mut p = Pair::persisting();
    let handle = p.subscribe(600);
    p.run();
    let dialog = p.accepted()[0].0.clone();
    fork_notify(&mut p, &dialog);
    p.run();
    p.advance(100);
    // The fork's record first: it waits for the first dialog to be restored.
    let calls = p.restart_alice(|r| !r.usages.held.as_ref().unwrap().fork);
    assert_eq!(calls, [handle.clone(), handle.clone()]);
    assert_eq!(p.alice.dialog_count(), 2);

    let unsubscribe = DialogCommand::Unsubscribe {
        subscription: handle,
    };
    p.alice.handle_command(p.now, unsubscribe).unwrap();
    let out: Vec<Transmit> = std::iter::from_fn(|| p.alice.poll_transmit()).collect();
    let mut targets: Vec<SocketAddr> = out.iter().map(|t| t.destination).collect();
    targets.sort();
    assert_eq!(targets, [bob_addr(), "127.0.0.1:5090".parse().unwrap()]);
    for t in &out {
        let m = Message::parse(t.payload.clone()).unwrap();
        assert_eq!(m.method(), Some(Method::Subscribe));
        assert_eq!(m.header(HeaderName::Expires), Some(&b"0"[..]));
        assert!(
            m.cseq().unwrap().seq > 1,
            "the CSeq goes on from the record"
        );
    }
}
