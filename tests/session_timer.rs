//! Session timers (RFC 4028) on simulated time: what the INVITE and its 2xx settle (§9
//! Table 2, 422, the errata 1687 raise), refreshes by UPDATE or re-INVITE that the
//! applications never see, the BYE of the side that hears no refresh, a caller's retry
//! after 422, and refreshes that fail.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipshard::dialog::DialogId;
use sipshard::message::{Message, Method};
use sipshard::shard::{
    CommandOutcome, DialogCommand, Refresher, SessionEvent, SessionTimers, Shard, ShardConfig,
    TerminationReason,
};

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn alice_addr() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

fn bob_addr() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

fn shard(now: Instant, addr: SocketAddr, timers: Option<SessionTimers>) -> Shard {
    let mut config = ShardConfig::new(addr);
    config.session_timers = timers;
    Shard::new(now, config)
}

fn accept_mode() -> SessionTimers {
    SessionTimers {
        ask: false,
        ..SessionTimers::default()
    }
}

fn header<'m>(m: &'m Message, name: &str) -> Option<&'m str> {
    m.headers()
        .find(|h| h.name_bytes.eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| std::str::from_utf8(h.value).unwrap())
}

fn sent(shard: &mut Shard) -> Vec<Message> {
    std::iter::from_fn(|| shard.poll_transmit())
        .map(|t| Message::parse(t.payload).unwrap())
        .collect()
}

fn events(shard: &mut Shard) -> Vec<SessionEvent> {
    std::iter::from_fn(|| shard.poll_event()).collect()
}

/// An INVITE from a peer at Alice's address, with `extra` headers and an SDP offer.
fn invite(extra: &str) -> Bytes {
    Bytes::from(format!(
        "INVITE sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: st@test\r\n\
CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n{extra}Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    ))
}

/// A request of the peer's in the dialog Bob's 2xx made (`to_tag` is Bob's tag).
fn in_dialog(method: &str, cseq: u32, to_tag: &str, extra: &str, body: &str) -> Bytes {
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    Bytes::from(format!(
        "{method} sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method}{cseq}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag={to_tag}\r\nCall-ID: st@test\r\n\
CSeq: {cseq} {method}\r\nContact: <sip:alice@127.0.0.1:5070>\r\n{extra}{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A response of the peer's to `request` (copying Via, From, To with `tag`, Call-ID, CSeq).
fn reply(request: &Message, status: u16, tag: &str, extra: &str, body: &str) -> Bytes {
    let to = request.header(sipshard::message::HeaderName::To).unwrap();
    let to = if to.contains(&b';') {
        String::from_utf8_lossy(to).into_owned()
    } else {
        format!("{};tag={tag}", String::from_utf8_lossy(to))
    };
    let text = |name| String::from_utf8_lossy(request.header(name).unwrap()).into_owned();
    use sipshard::message::HeaderName as H;
    Bytes::from(format!(
        "SIP/2.0 {status} X\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
Contact: <sip:alice@127.0.0.1:5070>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        text(H::Via),
        text(H::From),
        text(H::CallId),
        text(H::CSeq),
        body.len()
    ))
}

/// Bob (UAS) receives `invite`, answers it with SDP; returns the 2xx and Bob's dialog.
fn answered(bob: &mut Shard, now: Instant, invite: Bytes) -> (Message, DialogId) {
    bob.handle_datagram(now, alice_addr(), invite);
    let dialog = events(bob)
        .into_iter()
        .find_map(|e| match e {
            SessionEvent::IncomingCall { dialog, .. } => Some(dialog),
            _ => None,
        })
        .expect("an IncomingCall");
    bob.handle_command(
        now,
        DialogCommand::Answer {
            dialog: dialog.clone(),
            sdp: Bytes::from_static(SDP.as_bytes()),
        },
    )
    .unwrap();
    let ok = sent(bob)
        .into_iter()
        .find(|m| m.status() == Some(200))
        .expect("a 200");
    (ok, dialog)
}

fn ack(bob: &mut Shard, now: Instant, to_tag: &str) {
    bob.handle_datagram(now, alice_addr(), in_dialog("ACK", 1, to_tag, "", ""));
}

fn tag_of(dialog: &DialogId) -> String {
    String::from_utf8(dialog.local_tag().to_vec()).unwrap()
}

/// Alice's MakeCall to Bob with `sdp` and extra `headers`.
fn make_call(sdp: Bytes, headers: Vec<(String, Bytes)>) -> DialogCommand {
    DialogCommand::MakeCall {
        from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
        to: Bytes::from_static(b"<sip:bob@127.0.0.1>"),
        request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
        destination: bob_addr(),
        sdp,
        headers,
    }
}

/// Why the calls that ended (by the events so far) ended.
fn ended(shard: &mut Shard) -> Vec<TerminationReason> {
    events(shard)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::CallTerminated { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

#[test]
fn the_2xx_settles_interval_and_refresher_as_table_2_says() {
    let now = Instant::now();
    // A caller that supports timers and names no refresher: ours (the caller) is chosen.
    let mut bob = shard(now, bob_addr(), Some(accept_mode()));
    let (ok, _) = answered(
        &mut bob,
        now,
        invite("Supported: timer\r\nSession-Expires: 7200\r\n"),
    );
    assert_eq!(header(&ok, "Session-Expires"), Some("1800;refresher=uac"));
    assert_eq!(header(&ok, "Require"), Some("timer"));
    assert!(header(&ok, "Allow").is_some_and(|a| a.contains("UPDATE")));

    // It asks for refresher=uas and a short interval: both kept.
    let mut bob = shard(now, bob_addr(), Some(accept_mode()));
    let (ok, _) = answered(
        &mut bob,
        now,
        invite("Supported: timer\r\nx: 300;refresher=uas\r\n"),
    );
    assert_eq!(header(&ok, "Session-Expires"), Some("300;refresher=uas"));

    // A proxy asked for 60 s on behalf of a caller without support: raised to 90, we
    // refresh, and no Require (errata 1687, Table 2).
    let mut bob = shard(now, bob_addr(), Some(accept_mode()));
    let (ok, _) = answered(&mut bob, now, invite("Session-Expires: 60\r\n"));
    assert_eq!(header(&ok, "Session-Expires"), Some("90;refresher=uas"));
    assert_eq!(header(&ok, "Require"), None);

    // Nobody asked, and we only accept: no timer.
    let mut bob = shard(now, bob_addr(), Some(accept_mode()));
    let (ok, _) = answered(&mut bob, now, invite("Supported: timer\r\n"));
    assert_eq!(header(&ok, "Session-Expires"), None);

    // Without session timers at all, the header is ignored.
    let mut bob = shard(now, bob_addr(), None);
    let (ok, _) = answered(
        &mut bob,
        now,
        invite("Supported: timer\r\nSession-Expires: 1800\r\n"),
    );
    assert_eq!(header(&ok, "Session-Expires"), None);
}

#[test]
fn too_small_an_interval_gets_422_and_require_timer_needs_support() {
    let now = Instant::now();
    let strict = SessionTimers {
        min_se: 600,
        ..accept_mode()
    };
    let mut bob = shard(now, bob_addr(), Some(strict));
    bob.handle_datagram(
        now,
        alice_addr(),
        invite("Supported: timer\r\nSession-Expires: 300\r\n"),
    );
    let out = sent(&mut bob);
    assert_eq!(out[0].status(), Some(422));
    assert_eq!(header(&out[0], "Min-SE"), Some("600"));
    assert!(events(&mut bob).is_empty(), "no call for the application");

    let mut plain = shard(now, bob_addr(), None);
    plain.handle_datagram(
        now,
        alice_addr(),
        invite("Require: timer\r\nSession-Expires: 1800\r\n"),
    );
    let out = sent(&mut plain);
    assert_eq!(out[0].status(), Some(420));
    assert_eq!(header(&out[0], "Unsupported"), Some("timer"));

    let mut bob = shard(now, bob_addr(), Some(accept_mode()));
    let (ok, _) = answered(
        &mut bob,
        now,
        invite("Require: timer\r\nSession-Expires: 1800\r\n"),
    );
    assert_eq!(header(&ok, "Session-Expires"), Some("1800;refresher=uac"));
}

/// Bob (accepting timers) in a call whose caller refreshes every 90 s, ACKed, events
/// drained: Bob, the start, the dialog and Bob's tag.
fn bob_in_call() -> (Shard, Instant, DialogId, String) {
    let start = Instant::now();
    let mut bob = shard(start, bob_addr(), Some(accept_mode()));
    let (_, dialog) = answered(
        &mut bob,
        start,
        invite("Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n"),
    );
    let tag = tag_of(&dialog);
    ack(&mut bob, start, &tag);
    events(&mut bob);
    (bob, start, dialog, tag)
}

#[test]
fn the_side_that_hears_no_refresh_sends_bye_before_the_end() {
    let (mut bob, start, _, _) = bob_in_call();
    // The end less min(32 s, 90 / 3 = 30 s): BYE at 60 s, not before.
    bob.handle_timeout(start + Duration::from_secs(59));
    assert!(sent(&mut bob).is_empty());
    let at = start + Duration::from_secs(60);
    bob.handle_timeout(at);
    let bye = sent(&mut bob);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].method(), Some(Method::Bye));
    bob.handle_datagram(at, alice_addr(), reply(&bye[0], 200, "", "", ""));
    let ended: Vec<_> = ended(&mut bob);
    assert_eq!(ended, [TerminationReason::SessionExpired]);
}

#[test]
fn a_call_ended_by_the_peer_leaves_no_timer_of_its_session_on_the_wheel() {
    let (mut bob, start, _, tag) = bob_in_call();
    let at = start + Duration::from_secs(5);
    bob.handle_datagram(at, alice_addr(), in_dialog("BYE", 2, &tag, "", ""));
    assert_eq!(ended(&mut bob), [TerminationReason::RemoteBye]);
    assert_eq!(bob.dialog_count(), 0);
    // The BYE's server transaction lingers for Timer J (64·T1 over UDP); the session
    // timer (due at 60 s) went with the dialog's entry.
    while let Some(next) = bob.poll_timeout() {
        assert!(
            next <= at + Duration::from_secs(33),
            "a timer outlived the call: due {:?} after the BYE",
            next - at
        );
        bob.handle_timeout(next);
    }
    assert!(sent(&mut bob).iter().all(|m| m.status() == Some(200)));
}

#[test]
fn the_peers_refreshes_keep_the_call_and_the_application_never_sees_them() {
    let (mut bob, start, dialog, tag) = bob_in_call();
    let mut now = start;
    // Five refreshes by offerless UPDATE, 45 s apart: each answered 200 with the interval.
    for cseq in 2..7 {
        now += Duration::from_secs(45);
        bob.handle_timeout(now);
        let extra = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
        bob.handle_datagram(
            now,
            alice_addr(),
            in_dialog("UPDATE", cseq, &tag, extra, ""),
        );
        let out = sent(&mut bob);
        assert_eq!(out.len(), 1, "only the 200 to the UPDATE: {out:?}");
        assert_eq!(out[0].status(), Some(200));
        assert_eq!(header(&out[0], "Session-Expires"), Some("90;refresher=uac"));
        assert_eq!(header(&out[0], "Require"), Some("timer"));
    }
    assert!(events(&mut bob).is_empty(), "refreshes are the shard's own");
    // An UPDATE with an offer is the application's; its 2xx refreshes too.
    now += Duration::from_secs(45);
    let extra = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
    bob.handle_datagram(now, alice_addr(), in_dialog("UPDATE", 7, &tag, extra, SDP));
    let Some(SessionEvent::DialogRequest { txn, .. }) = bob.poll_event() else {
        panic!("the UPDATE's offer is for the application");
    };
    let respond = DialogCommand::Respond {
        txn,
        status: 200,
        headers: vec![(
            "Content-Type".to_owned(),
            Bytes::from_static(b"application/sdp"),
        )],
        body: Bytes::from_static(SDP.as_bytes()),
    };
    bob.handle_command(now, respond).unwrap();
    let ok = sent(&mut bob).remove(0);
    assert_eq!(header(&ok, "Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(
        header(&ok, "Contact"),
        Some("<sip:127.0.0.1:5080>"),
        "RFC 3311 §5.2"
    );
    // A re-INVITE refresh goes to the application (its SDP is an offer) and re-arms.
    now += Duration::from_secs(45);
    let extra = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
    bob.handle_datagram(now, alice_addr(), in_dialog("INVITE", 8, &tag, extra, SDP));
    assert!(matches!(
        events(&mut bob).as_slice(),
        [SessionEvent::ReInvite { .. }]
    ));
    let answer = DialogCommand::Answer {
        dialog: dialog.clone(),
        sdp: Bytes::from_static(SDP.as_bytes()),
    };
    bob.handle_command(now, answer).unwrap();
    let ok = sent(&mut bob);
    assert_eq!(header(&ok[0], "Session-Expires"), Some("90;refresher=uac"));
    bob.handle_datagram(now, alice_addr(), in_dialog("ACK", 8, &tag, "", ""));
    events(&mut bob);
    // No more refreshes: the BYE comes 60 s after the last one.
    bob.handle_timeout(now + Duration::from_secs(59));
    assert!(sent(&mut bob).is_empty());
    bob.handle_timeout(now + Duration::from_secs(60));
    assert_eq!(sent(&mut bob)[0].method(), Some(Method::Bye));
}

#[test]
fn as_refresher_for_a_peer_without_update_we_reinvite_with_our_sdp() {
    let start = Instant::now();
    let mut bob = shard(start, bob_addr(), Some(accept_mode()));
    // A proxy asked for a timer; the caller neither supports timers nor allows UPDATE.
    let (ok, dialog) = answered(&mut bob, start, invite("Session-Expires: 120\r\n"));
    assert_eq!(header(&ok, "Session-Expires"), Some("120;refresher=uas"));
    let tag = tag_of(&dialog);
    ack(&mut bob, start, &tag);
    events(&mut bob);
    bob.handle_timeout(start + Duration::from_secs(59));
    assert!(sent(&mut bob).is_empty());
    let now = start + Duration::from_secs(60);
    bob.handle_timeout(now);
    let out = sent(&mut bob);
    assert_eq!(out.len(), 1);
    let reinvite = &out[0];
    assert_eq!(reinvite.method(), Some(Method::Invite));
    assert_eq!(
        header(reinvite, "Session-Expires"),
        Some("120;refresher=uac")
    );
    assert_eq!(
        reinvite.body_bytes(),
        SDP.as_bytes(),
        "the same SDP, unchanged"
    );
    // The 2xx settles the next interval (here the same, Bob refreshing again); one
    // without Session-Expires would end the timer (§7.2, tested below).
    let extra = "Session-Expires: 120;refresher=uac\r\nContent-Type: application/sdp\r\n";
    bob.handle_datagram(now, alice_addr(), reply(reinvite, 200, "a1", extra, SDP));
    let out = sent(&mut bob);
    assert_eq!(out[0].method(), Some(Method::Ack));
    assert!(
        events(&mut bob).is_empty(),
        "no ReInviteResult for a refresh"
    );
    // The next refresh 60 s later.
    bob.handle_timeout(now + Duration::from_secs(60));
    assert_eq!(sent(&mut bob)[0].method(), Some(Method::Invite));
}

/// Alice calls Bob, both with session timers: Alice asks, Bob accepts; Alice refreshes.
struct Pair {
    alice: Shard,
    bob: Shard,
    now: Instant,
    alice_seen: Vec<SessionEvent>,
    bob_seen: Vec<SessionEvent>,
    wire: Vec<Message>,
    /// Bob's answer to in-dialog requests of the application's.
    bob_refuses_updates_with: Option<u16>,
}

impl Pair {
    fn new(alice: SessionTimers, bob: SessionTimers) -> Pair {
        let now = Instant::now();
        Pair {
            alice: shard(now, alice_addr(), Some(alice)),
            bob: shard(now, bob_addr(), Some(bob)),
            now,
            alice_seen: Vec::new(),
            bob_seen: Vec::new(),
            wire: Vec::new(),
            bob_refuses_updates_with: None,
        }
    }

    fn call(&mut self) -> DialogId {
        let call = make_call(Bytes::from_static(SDP.as_bytes()), Vec::new());
        match self.alice.handle_command(self.now, call) {
            Ok(CommandOutcome::Call(id)) => id,
            other => panic!("MakeCall: {other:?}"),
        }
    }

    fn bob_app(&mut self) {
        while let Some(e) = self.bob.poll_event() {
            match &e {
                SessionEvent::IncomingCall { dialog, .. }
                | SessionEvent::ReInvite { dialog, .. } => {
                    let answer = DialogCommand::Answer {
                        dialog: dialog.clone(),
                        sdp: Bytes::from_static(SDP.as_bytes()),
                    };
                    self.bob.handle_command(self.now, answer).unwrap();
                }
                SessionEvent::DialogRequest { txn, .. } => {
                    let respond = DialogCommand::Respond {
                        txn: *txn,
                        status: self.bob_refuses_updates_with.unwrap_or(200),
                        headers: Vec::new(),
                        body: Bytes::new(),
                    };
                    self.bob.handle_command(self.now, respond).unwrap();
                }
                _ => {}
            }
            self.bob_seen.push(e);
        }
    }

    fn run(&mut self) {
        loop {
            self.bob_app();
            let a: Vec<_> = std::iter::from_fn(|| self.alice.poll_transmit()).collect();
            let b: Vec<_> = std::iter::from_fn(|| self.bob.poll_transmit()).collect();
            if a.is_empty() && b.is_empty() {
                break;
            }
            for t in a {
                self.wire.push(Message::parse(t.payload.clone()).unwrap());
                self.bob.handle_datagram(self.now, alice_addr(), t.payload);
            }
            for t in b {
                self.wire.push(Message::parse(t.payload.clone()).unwrap());
                self.alice.handle_datagram(self.now, bob_addr(), t.payload);
            }
        }
        self.alice_seen
            .extend(std::iter::from_fn(|| self.alice.poll_event()));
    }

    fn advance(&mut self, seconds: u64) {
        for _ in 0..seconds {
            self.now += Duration::from_secs(1);
            self.alice.handle_timeout(self.now);
            self.bob.handle_timeout(self.now);
            self.run();
        }
    }

    fn requests(&self, method: Method) -> Vec<&Message> {
        self.wire
            .iter()
            .filter(|m| m.method() == Some(method))
            .collect()
    }
}

fn asks(seconds: u32) -> SessionTimers {
    SessionTimers {
        session_expires: seconds,
        ..SessionTimers::default()
    }
}

#[test]
fn a_call_between_two_shards_is_refreshed_by_update_for_as_long_as_it_lasts() {
    let mut pair = Pair::new(asks(120), accept_mode());
    pair.call();
    pair.run();
    let invite = pair.requests(Method::Invite)[0].clone();
    assert_eq!(header(&invite, "Session-Expires"), Some("120"));
    assert!(header(&invite, "Supported").is_some_and(|s| s.contains("timer")));
    assert!(header(&invite, "Allow").is_some_and(|s| s.contains("UPDATE")));
    // One hour: 60 refreshes, one each minute, by Alice (the caller, Bob's choice).
    pair.advance(3600);
    let updates = pair.requests(Method::Update);
    assert_eq!(updates.len(), 60);
    for u in &updates {
        assert_eq!(header(u, "Session-Expires"), Some("120;refresher=uac"));
        assert!(u.body_bytes().is_empty());
    }
    assert!(pair.requests(Method::Bye).is_empty(), "the call lives");
    assert!(
        pair.alice_seen
            .iter()
            .all(|e| matches!(e, SessionEvent::CallAnswered { .. })),
        "Alice's application hears of the answer only: {:?}",
        pair.alice_seen
    );
    assert!(
        pair.bob_seen.iter().all(|e| matches!(
            e,
            SessionEvent::IncomingCall { .. }
                | SessionEvent::CallAnswered { .. }
                | SessionEvent::AckReceived { .. }
        )),
        "Bob's application hears of no refresh: {:?}",
        pair.bob_seen
    );
}

#[test]
fn when_bob_refreshes_by_preference_alice_keeps_quiet() {
    let bob = SessionTimers {
        refresher: Refresher::Uas,
        ..accept_mode()
    };
    let mut pair = Pair::new(asks(100), bob);
    pair.call();
    pair.run();
    pair.advance(1000);
    // Bob refreshes every 50 s: Alice's INVITE allowed UPDATE.
    let updates = pair.requests(Method::Update);
    assert_eq!(updates.len(), 20);
    assert!(
        updates
            .iter()
            .all(|u| u.request_uri_bytes() == Some(b"sip:127.0.0.1:5070"))
    );
    assert!(pair.requests(Method::Bye).is_empty());
}

#[test]
fn a_refresh_refused_with_481_ends_the_call() {
    let mut pair = Pair::new(asks(120), accept_mode());
    let call = pair.call();
    pair.run();
    // Bob forgets the dialog (a restart): every refresh gets 481.
    pair.bob = shard(pair.now, bob_addr(), Some(accept_mode()));
    pair.advance(61);
    let ended: Vec<_> = pair
        .alice_seen
        .iter()
        .filter_map(|e| match e {
            SessionEvent::CallTerminated { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(ended, [TerminationReason::Rejected(481)]);
    assert_eq!(pair.alice.dialog_state(&call), None);
}

/// Alice (a shard asking for `interval`) calls a scripted peer whose 2xx says
/// `session_expires` and allows UPDATE; returns Alice, the call's start and its dialog.
fn alice_called(interval: u32, session_expires: &str) -> (Shard, Instant, DialogId) {
    let start = Instant::now();
    let mut alice = shard(start, alice_addr(), Some(asks(interval)));
    let call = make_call(Bytes::from_static(SDP.as_bytes()), Vec::new());
    alice.handle_command(start, call).unwrap();
    let invite = sent(&mut alice).remove(0);
    let extra = format!(
        "Session-Expires: {session_expires}\r\nRequire: timer\r\nAllow: INVITE, ACK, BYE, UPDATE\r\n\
Content-Type: application/sdp\r\n"
    );
    alice.handle_datagram(start, bob_addr(), reply(&invite, 200, "b1", &extra, SDP));
    sent(&mut alice);
    let dialog = events(&mut alice)
        .into_iter()
        .find_map(|e| match e {
            SessionEvent::CallAnswered { dialog, .. } => Some(dialog),
            _ => None,
        })
        .expect("answered");
    (alice, start, dialog)
}

#[test]
fn a_refresh_refused_otherwise_is_tried_again_before_the_end() {
    let (mut alice, start, _) = alice_called(120, "120;refresher=uac");
    let at = start + Duration::from_secs(60);
    alice.handle_timeout(at);
    let update = sent(&mut alice).remove(0);
    assert_eq!(update.method(), Some(Method::Update));
    alice.handle_datagram(at, bob_addr(), reply(&update, 500, "", "", ""));
    // Halfway from 60 s to the give-up point (120 - 32 = 88 s): 74 s.
    alice.handle_timeout(start + Duration::from_secs(73));
    assert!(
        sent(&mut alice)
            .iter()
            .all(|m| m.method() != Some(Method::Update))
    );
    let at = start + Duration::from_secs(74);
    alice.handle_timeout(at);
    let again = sent(&mut alice)
        .into_iter()
        .find(|m| m.method() == Some(Method::Update))
        .expect("the refresh again");
    let extra = "Session-Expires: 120;refresher=uac\r\n";
    alice.handle_datagram(at, bob_addr(), reply(&again, 200, "", extra, ""));
    // Refreshed at 74 s: the next one at 134 s, and no event for any of it.
    alice.handle_timeout(start + Duration::from_secs(133));
    assert!(
        sent(&mut alice)
            .iter()
            .all(|m| m.method() != Some(Method::Update))
    );
    alice.handle_timeout(start + Duration::from_secs(134));
    assert!(
        sent(&mut alice)
            .iter()
            .any(|m| m.method() == Some(Method::Update))
    );
    assert!(events(&mut alice).is_empty());
}

#[test]
fn an_update_refused_as_unknown_is_followed_by_a_reinvite() {
    let (mut alice, start, _) = alice_called(120, "120;refresher=uac");
    let at = start + Duration::from_secs(60);
    alice.handle_timeout(at);
    let update = sent(&mut alice).remove(0);
    alice.handle_datagram(at, bob_addr(), reply(&update, 501, "", "", ""));
    let out = sent(&mut alice);
    let reinvite = out
        .iter()
        .find(|m| m.method() == Some(Method::Invite))
        .expect("a re-INVITE at once");
    assert_eq!(
        header(reinvite, "Session-Expires"),
        Some("120;refresher=uac")
    );
    assert_eq!(reinvite.body_bytes(), SDP.as_bytes());
}

#[test]
fn a_refresh_without_answer_ends_the_call() {
    let (mut alice, start, dialog) = alice_called(120, "120;refresher=uac");
    alice.handle_timeout(start + Duration::from_secs(60));
    assert_eq!(sent(&mut alice)[0].method(), Some(Method::Update));
    // Timer F: 64·T1 later, the UPDATE has timed out.
    for s in 61..=93 {
        alice.handle_timeout(start + Duration::from_secs(s));
    }
    let ended: Vec<_> = events(&mut alice)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::CallTerminated { dialog: d, reason } => Some((d, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(ended, [(dialog, TerminationReason::Timeout)]);
}

#[test]
fn a_2xx_without_session_expires_means_no_timer() {
    let (mut alice, start, dialog) = alice_called(120, "120;refresher=uas");
    // Bob refreshes: Alice only watches (BYE at 120 - 32 = 88 s unless refreshed).
    alice.handle_timeout(start + Duration::from_secs(79));
    assert!(sent(&mut alice).is_empty());
    // Alice's application re-INVITEs; the 2xx has no Session-Expires: the timer is off.
    let at = start + Duration::from_secs(80);
    let reinvite = DialogCommand::ReInvite {
        dialog: dialog.clone(),
        sdp: Bytes::from_static(SDP.as_bytes()),
    };
    alice.handle_command(at, reinvite).unwrap();
    let sent_reinvite = sent(&mut alice).remove(0);
    assert_eq!(
        header(&sent_reinvite, "Session-Expires"),
        Some("120;refresher=uas"),
        "the roles stay as they were"
    );
    let extra = "Content-Type: application/sdp\r\n";
    alice.handle_datagram(at, bob_addr(), reply(&sent_reinvite, 200, "", extra, SDP));
    sent(&mut alice);
    alice.handle_timeout(start + Duration::from_secs(3600));
    assert!(
        sent(&mut alice)
            .iter()
            .all(|m| m.method() != Some(Method::Bye))
    );
}

#[test]
fn a_caller_retries_after_422_with_the_asked_minimum() {
    let start = Instant::now();
    let mut alice = shard(start, alice_addr(), Some(asks(120)));
    let call = make_call(
        Bytes::from_static(SDP.as_bytes()),
        vec![("X-Keep".to_owned(), Bytes::from_static(b"me"))],
    );
    let Ok(CommandOutcome::Call(handle)) = alice.handle_command(start, call) else {
        panic!("MakeCall refused");
    };
    let first = sent(&mut alice).remove(0);
    alice.handle_datagram(
        start,
        bob_addr(),
        reply(&first, 422, "b1", "Min-SE: 600\r\n", ""),
    );
    let out = sent(&mut alice);
    let second = out
        .iter()
        .find(|m| m.method() == Some(Method::Invite))
        .expect("the INVITE again");
    assert!(
        out.iter().any(|m| m.method() == Some(Method::Ack)),
        "the 422 is ACKed"
    );
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(second.from_tag().unwrap(), first.from_tag().unwrap());
    assert_eq!(second.cseq().unwrap().seq, 2);
    assert_ne!(
        second.top_via_key().unwrap().branch,
        first.top_via_key().unwrap().branch
    );
    assert_eq!(header(second, "Session-Expires"), Some("600"));
    assert_eq!(header(second, "Min-SE"), Some("600"));
    assert_eq!(header(second, "X-Keep"), Some("me"));
    assert_eq!(second.body_bytes(), SDP.as_bytes());
    assert!(
        events(&mut alice).is_empty(),
        "the 422 is not the call's end"
    );
    // Answered: the call is up, and Alice refreshes at 300 s.
    let ok = reply(
        second,
        200,
        "b1",
        "Session-Expires: 600;refresher=uac\r\nRequire: timer\r\nContent-Type: application/sdp\r\n",
        SDP,
    );
    alice.handle_datagram(start, bob_addr(), ok);
    let acked = sent(&mut alice);
    assert_eq!(acked[0].method(), Some(Method::Ack));
    assert_eq!(acked[0].cseq().unwrap().seq, 2);
    let seen = events(&mut alice);
    assert!(
        matches!(seen.as_slice(), [SessionEvent::CallAnswered { call, .. }] if *call == handle)
    );
    alice.handle_timeout(start + Duration::from_secs(299));
    assert!(sent(&mut alice).is_empty());
    alice.handle_timeout(start + Duration::from_secs(300));
    let refresh = sent(&mut alice);
    // The 2xx had no Allow: a re-INVITE with the same SDP, CSeq 3.
    assert_eq!(refresh[0].method(), Some(Method::Invite));
    assert_eq!(refresh[0].cseq().unwrap().seq, 3);
    assert_eq!(header(&refresh[0], "Min-SE"), Some("600"));
}

#[test]
fn a_second_422_that_asks_no_more_ends_the_call() {
    let start = Instant::now();
    let mut alice = shard(start, alice_addr(), Some(asks(120)));
    let call = make_call(Bytes::new(), Vec::new());
    alice.handle_command(start, call).unwrap();
    let first = sent(&mut alice).remove(0);
    alice.handle_datagram(
        start,
        bob_addr(),
        reply(&first, 422, "b1", "Min-SE: 600\r\n", ""),
    );
    let second = sent(&mut alice)
        .into_iter()
        .find(|m| m.method() == Some(Method::Invite))
        .unwrap();
    alice.handle_datagram(
        start,
        bob_addr(),
        reply(&second, 422, "b1", "Min-SE: 600\r\n", ""),
    );
    let ended: Vec<_> = ended(&mut alice);
    assert_eq!(ended, [TerminationReason::Rejected(422)]);
}
