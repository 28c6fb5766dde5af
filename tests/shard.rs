//! Two shards, UAC and UAS, over the simulated network (`Pair`, in the style of quinn's
//! tests): whole calls on simulated time, with and without loss, duplication and reordering.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::sim::{Conditions, Network};
use sipshard::dialog::DialogId;
use sipshard::message::{IdGenerator, Message};
use sipshard::shard::{
    CommandOutcome, DialogCommand, SessionEvent, Shard, ShardConfig, TerminationReason,
};

fn uac_addr() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

fn uas_addr() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

/// `Respond` with `status`, no extra headers, no body.
fn respond(txn: sipshard::transaction::ServerTxnId, status: u16) -> DialogCommand {
    DialogCommand::Respond {
        txn,
        status,
        headers: vec![],
        body: Bytes::new(),
    }
}

/// Places a call from Alice at the UAC shard to Bob at the UAS address; returns its handle.
fn place_call(uac: &mut Shard, now: Instant, from: &'static [u8], sdp: &'static [u8]) -> DialogId {
    let out = uac
        .handle_command(
            now,
            DialogCommand::MakeCall {
                from: Bytes::from_static(from),
                to: Bytes::from_static(b"<sip:bob@127.0.0.1:5080>"),
                request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
                destination: uas_addr(),
                sdp: Bytes::from_static(sdp),
                headers: Vec::new(),
            },
        )
        .unwrap();
    match out {
        CommandOutcome::Call(id) => id,
        other => panic!("{other:?}"),
    }
}

/// What the UAS application does with each incoming call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UasPolicy {
    /// 180, then 200 at once.
    Answer,
    /// 180 only (the test decides later).
    Ring,
    /// Final refusal with this status.
    Reject(u16),
}

struct Pair {
    now: Instant,
    uac: Shard,
    uas: Shard,
    net: Network,
    policy: UasPolicy,
    /// UAC hangs up as soon as the call is answered.
    bye_on_answer: bool,
    /// The UAS answers the peer's re-INVITEs at once.
    answer_reinvites: bool,
    uac_events: Vec<SessionEvent>,
    uas_events: Vec<SessionEvent>,
}

impl Pair {
    fn new(seed: u64, conditions: Conditions, policy: UasPolicy) -> Self {
        let now = Instant::now();
        let mut s1 = [0u8; 32];
        s1[0] = seed as u8;
        let mut s2 = s1;
        s2[1] = 1;
        Pair {
            now,
            uac: Shard::with_ids(
                now,
                ShardConfig::new(uac_addr()),
                IdGenerator::from_seed(s1),
            ),
            uas: Shard::with_ids(
                now,
                ShardConfig::new(uas_addr()),
                IdGenerator::from_seed(s2),
            ),
            net: Network::new(seed, conditions),
            policy,
            bye_on_answer: true,
            answer_reinvites: true,
            uac_events: Vec::new(),
            uas_events: Vec::new(),
        }
    }

    fn call(&mut self) -> DialogId {
        place_call(
            &mut self.uac,
            self.now,
            b"\"Alice\" <sip:alice@127.0.0.1:5070>",
            SDP,
        )
    }

    /// The UAC re-INVITEs in `dialog` with the test SDP as its offer.
    fn uac_reinvites(&mut self, dialog: &DialogId) {
        self.uac
            .handle_command(
                self.now,
                DialogCommand::ReInvite {
                    dialog: dialog.clone(),
                    sdp: Bytes::from_static(SDP),
                },
            )
            .unwrap();
    }

    /// The UAC sends `method` in `dialog` (`SendRequest`), with a body of `content_type`
    /// when one is given.
    fn uac_sends(
        &mut self,
        dialog: &DialogId,
        method: &'static [u8],
        body: Option<(&'static [u8], &'static [u8])>,
    ) {
        let (headers, body) = match body {
            Some((content_type, body)) => (
                vec![("Content-Type".into(), Bytes::from_static(content_type))],
                Bytes::from_static(body),
            ),
            None => (Vec::new(), Bytes::new()),
        };
        self.uac
            .handle_command(
                self.now,
                DialogCommand::SendRequest {
                    dialog: dialog.clone(),
                    method: Bytes::from_static(method),
                    headers,
                    body,
                },
            )
            .unwrap();
    }

    fn flush(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.uac.poll_transmit() {
                self.net
                    .send(self.now, uac_addr(), t.destination, t.payload);
                moved = true;
            }
            while let Some(t) = self.uas.poll_transmit() {
                self.net
                    .send(self.now, uas_addr(), t.destination, t.payload);
                moved = true;
            }
            while let Some(e) = self.uas.poll_event() {
                moved = true;
                if let SessionEvent::IncomingCall { dialog, .. } = &e {
                    let dialog = dialog.clone();
                    self.uas
                        .handle_command(
                            self.now,
                            DialogCommand::Ringing {
                                dialog: dialog.clone(),
                            },
                        )
                        .unwrap();
                    match self.policy {
                        UasPolicy::Answer => {
                            self.uas
                                .handle_command(
                                    self.now,
                                    DialogCommand::Answer {
                                        dialog,
                                        sdp: Bytes::from_static(SDP),
                                    },
                                )
                                .unwrap();
                        }
                        UasPolicy::Reject(status) => {
                            self.uas
                                .handle_command(self.now, DialogCommand::Reject { dialog, status })
                                .unwrap();
                        }
                        UasPolicy::Ring => {}
                    }
                }
                if let SessionEvent::ReInvite { dialog, .. } = &e
                    && self.answer_reinvites
                {
                    self.uas
                        .handle_command(
                            self.now,
                            DialogCommand::Answer {
                                dialog: dialog.clone(),
                                sdp: Bytes::from_static(SDP),
                            },
                        )
                        .unwrap();
                }
                self.uas_events.push(e);
            }
            while let Some(e) = self.uac.poll_event() {
                moved = true;
                if self.bye_on_answer
                    && let SessionEvent::CallAnswered { dialog, .. } = &e
                {
                    self.uac
                        .handle_command(
                            self.now,
                            DialogCommand::Bye {
                                dialog: dialog.clone(),
                            },
                        )
                        .unwrap();
                }
                if let SessionEvent::ReInvite { dialog, .. } = &e {
                    self.uac
                        .handle_command(
                            self.now,
                            DialogCommand::Answer {
                                dialog: dialog.clone(),
                                sdp: Bytes::from_static(SDP),
                            },
                        )
                        .unwrap();
                }
                self.uac_events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances to the next event (delivery or timer); false when nothing is left.
    fn step(&mut self) -> bool {
        self.flush();
        let next = [
            self.net.next_delivery(),
            self.uac.poll_timeout(),
            self.uas.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        for d in self.net.due(self.now) {
            let shard = if d.to == uas_addr() {
                &mut self.uas
            } else {
                &mut self.uac
            };
            shard.handle_datagram(self.now, d.from, d.payload);
        }
        self.uac.handle_timeout(self.now);
        self.uas.handle_timeout(self.now);
        self.flush();
        true
    }

    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.now < end && self.step() {}
    }

    fn count(events: &[SessionEvent], f: impl Fn(&SessionEvent) -> bool) -> usize {
        events.iter().filter(|e| f(e)).count()
    }
}

#[test]
fn a_basic_call_with_ringing_answer_ack_and_bye() {
    let mut p = Pair::new(1, Conditions::perfect(), UasPolicy::Answer);
    let call = p.call();
    p.run(Duration::from_secs(60));
    let kinds: Vec<_> = p
        .uac_events
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        ["CallRinging", "CallAnswered", "CallTerminated"],
        "{:?}",
        p.uac_events
    );
    match &p.uac_events[1] {
        SessionEvent::CallAnswered {
            call: c,
            dialog,
            sdp,
        } => {
            assert_eq!(c, &call);
            assert_eq!(dialog.call_id(), call.call_id());
            assert!(!dialog.remote_tag().is_empty());
            assert_eq!(&sdp[..], SDP);
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        p.uac_events[2],
        SessionEvent::CallTerminated {
            reason: TerminationReason::LocalBye,
            ..
        }
    ));
    let uas: Vec<_> = p
        .uas_events
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        uas,
        [
            "IncomingCall",
            "CallAnswered",
            "AckReceived",
            "CallTerminated"
        ]
    );
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
    assert_eq!(
        (p.uac.transaction_count(), p.uas.transaction_count()),
        (0, 0)
    );
}

#[test]
fn rejected_and_cancelled_calls() {
    let mut p = Pair::new(2, Conditions::perfect(), UasPolicy::Reject(486));
    p.call();
    p.run(Duration::from_secs(60));
    assert_eq!(
        Pair::count(&p.uac_events, |e| matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::Rejected(486),
                ..
            }
        )),
        1
    );
    assert_eq!(p.uas.dialog_count(), 0);

    let mut p = Pair::new(3, Conditions::perfect(), UasPolicy::Ring);
    let call = p.call();
    p.run(Duration::from_millis(100));
    assert_eq!(
        Pair::count(&p.uac_events, |e| matches!(
            e,
            SessionEvent::CallRinging { .. }
        )),
        1
    );
    p.uac
        .handle_command(p.now, DialogCommand::Cancel { call })
        .unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(
        Pair::count(&p.uas_events, |e| matches!(
            e,
            SessionEvent::CallCancelled { .. }
        )),
        1
    );
    assert_eq!(
        Pair::count(&p.uac_events, |e| matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::Cancelled,
                ..
            }
        )),
        1
    );
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
}

#[test]
fn the_uas_retransmits_2xx_and_byes_when_no_ack_comes() {
    // The UAS alone: an INVITE arrives, the app answers, the ACK never comes.
    let t0 = Instant::now();
    let mut uas = Shard::new(t0, ShardConfig::new(uas_addr()));
    let invite = Bytes::from_static(
        b"INVITE sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnoack;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: noack@test\r\n\
CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n",
    );
    uas.handle_datagram(t0, uac_addr(), invite);
    let Some(SessionEvent::IncomingCall { dialog, .. }) = uas.poll_event() else {
        panic!()
    };
    uas.handle_command(
        t0,
        DialogCommand::Answer {
            dialog,
            sdp: Bytes::new(),
        },
    )
    .unwrap();
    let mut oks = Vec::new();
    let mut byes = Vec::new();
    let mut now = t0;
    let mut terminated = None;
    loop {
        while let Some(t) = uas.poll_transmit() {
            let m = Message::parse(t.payload).unwrap();
            match (m.status(), m.method_bytes()) {
                (Some(200), _) => oks.push(now - t0),
                (_, Some(b"BYE")) => byes.push(now - t0),
                _ => {}
            }
        }
        while let Some(e) = uas.poll_event() {
            if let SessionEvent::CallTerminated { reason, .. } = e {
                terminated = Some((now - t0, reason));
            }
        }
        match uas.poll_timeout() {
            Some(next) if next - t0 <= Duration::from_secs(100) => {
                now = next;
                uas.handle_timeout(now);
            }
            _ => break,
        }
    }
    let secs = |v: &[f64]| {
        v.iter()
            .map(|s| Duration::from_secs_f64(*s))
            .collect::<Vec<_>>()
    };
    // 2xx at 0, then T1 doubling to T2 (§13.3.1.4) until 64·T1.
    assert_eq!(
        oks,
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    assert_eq!(byes.first(), Some(&Duration::from_secs(32)), "BYE at 64·T1");
    // Nobody answers the BYE either: its transaction times out (Timer F) and the dialog ends.
    assert_eq!(
        terminated,
        Some((Duration::from_secs(64), TerminationReason::AckTimeout))
    );
    assert_eq!(uas.dialog_count(), 0);
}

#[test]
fn requests_outside_a_dialog_get_481_and_options_200() {
    let t0 = Instant::now();
    let mut uas = Shard::new(t0, ShardConfig::new(uas_addr()));
    let req = |method: &str, to_tag: &str| {
        Bytes::from(format!(
            "{method} sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method}x;rport\r\n\
Max-Forwards: 0\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>{to_tag}\r\nCall-ID: x@test\r\n\
CSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    let status_of = |uas: &mut Shard, datagram: Bytes| {
        uas.handle_datagram(t0, uac_addr(), datagram);
        Message::parse(uas.poll_transmit().unwrap().payload)
            .unwrap()
            .status()
    };
    assert_eq!(status_of(&mut uas, req("BYE", ";tag=nope")), Some(481));
    // §11: an OPTIONS addressed to us is answered even with Max-Forwards 0.
    assert_eq!(status_of(&mut uas, req("OPTIONS", "")), Some(200));
    assert_eq!(status_of(&mut uas, req("SUBSCRIBE", "")), Some(405));
    // A REFER outside a dialog makes one (RFC 3515 §2.4.2), but not without a Refer-To.
    assert_eq!(status_of(&mut uas, req("REFER", "")), Some(400));
    // Methods that only live inside a dialog (RFC 6086 §4.2.2, RFC 3311, RFC 3262 §3,
    // RFC 6665 §4.1.3) match no dialog without a To tag.
    for method in ["BYE", "INFO", "UPDATE", "PRACK", "NOTIFY"] {
        assert_eq!(status_of(&mut uas, req(method, "")), Some(481), "{method}");
    }
    assert!(uas.poll_event().is_none());
}

#[test]
fn an_out_of_dialog_message_goes_to_the_application_and_its_answer_has_a_to_tag() {
    // RFC 3428 pager mode: MESSAGE outside any dialog. The application answers it; the 200
    // carries a To tag like every final response to a request without one (§8.2.6.2).
    let t0 = Instant::now();
    let mut uas = Shard::new(t0, ShardConfig::new(uas_addr()));
    let message = |n: u32| {
        Bytes::from(format!(
            "MESSAGE sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKmsg{n};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a{n}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: msg{n}@test\r\n\
CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        ))
    };
    uas.handle_datagram(t0, uac_addr(), message(1));
    assert!(
        uas.poll_transmit().is_none(),
        "nothing sent before the application says"
    );
    let Some(SessionEvent::IncomingRequest { txn, request, from }) = uas.poll_event() else {
        panic!("no IncomingRequest")
    };
    assert_eq!(from, uac_addr());
    assert_eq!(request.body_bytes(), b"hello");
    uas.handle_command(t0, respond(txn, 200)).unwrap();
    let ok = Message::parse(uas.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(ok.status(), Some(200));
    assert!(ok.to_tag().unwrap().is_some_and(|t| !t.is_empty()));
    assert_eq!(ok.call_id(), Some(&b"msg1@test"[..]));
    assert_eq!(uas.dialog_count(), 0, "a MESSAGE makes no dialog");
    // A second answer to the same request is refused, not sent.
    assert!(uas.handle_command(t0, respond(txn, 500),).is_err());
    // One the application never answers ends with its transaction and is forgotten.
    uas.handle_datagram(t0, uac_addr(), message(2));
    let Some(SessionEvent::IncomingRequest { txn, .. }) = uas.poll_event() else {
        panic!("no IncomingRequest")
    };
    uas.handle_timeout(t0 + Duration::from_secs(40));
    assert_eq!(uas.transaction_count(), 0);
    assert_eq!(
        uas.handle_command(t0 + Duration::from_secs(40), respond(txn, 200),),
        Err(sipshard::shard::DialogError::TransactionError(
            sipshard::transaction::TxnError::UnknownTransaction
        ))
    );
}

#[test]
fn a_thousand_calls_complete_over_a_lossy_network() {
    let conditions = Conditions {
        loss: 0.10,
        duplicate: 0.05,
        min_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(60),
    };
    let mut p = Pair::new(7, conditions, UasPolicy::Answer);
    for _ in 0..1000 {
        p.call();
    }
    p.run(Duration::from_secs(600));
    let answered = Pair::count(&p.uac_events, |e| {
        matches!(e, SessionEvent::CallAnswered { .. })
    });
    let ended = Pair::count(&p.uac_events, |e| {
        matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::LocalBye,
                ..
            }
        )
    });
    let failed: Vec<_> = p
        .uac_events
        .iter()
        .filter(|e| matches!(e, SessionEvent::CallTerminated { reason, .. } if *reason != TerminationReason::LocalBye))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(answered, 1000);
    assert_eq!(ended, 1000);
    let uas_ended = Pair::count(&p.uas_events, |e| {
        matches!(e, SessionEvent::CallTerminated { .. })
    });
    assert_eq!(uas_ended, 1000);
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
    eprintln!(
        "1000 calls: {} datagrams, {} dropped, {} duplicated; uas {:?}",
        p.net.sent,
        p.net.dropped,
        p.net.duplicated,
        p.uas.stats()
    );
}

#[test]
fn reliable_provisionals_both_ways_over_a_lossy_network() {
    // RFC 3262 end to end: our UAC offers 100rel with its SDP offer, the UAS (when
    // supported) sends its 180 reliably and holds the 200 for the PRACK; with 10 % loss
    // every call still completes, and each reliable 180 is PRACKed exactly once.
    let conditions = Conditions {
        loss: 0.10,
        duplicate: 0.05,
        min_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(60),
    };
    let mut p = Pair::new(23, conditions, UasPolicy::Answer);
    let config = ShardConfig {
        reliable_provisionals: sipshard::shard::ReliableProvisionals::WhenSupported,
        ..ShardConfig::new(uas_addr())
    };
    p.uas = Shard::with_ids(p.now, config, IdGenerator::from_seed([23; 32]));
    for _ in 0..200 {
        p.call();
    }
    p.run(Duration::from_secs(600));
    let failed = Pair::count(
        &p.uac_events,
        |e| matches!(e, SessionEvent::CallTerminated { reason, .. } if *reason != TerminationReason::LocalBye),
    );
    let answered = Pair::count(&p.uac_events, |e| {
        matches!(e, SessionEvent::CallAnswered { .. })
    });
    assert_eq!((answered, failed), (200, 0));
    assert_eq!(p.uac.stats().pracks_sent, 200);
    assert!(p.uas.stats().requests_in[9] >= 200, "PRACKs received");
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
}

fn register(cseq: u32, contact: &str, expires: u32) -> Bytes {
    Bytes::from(format!(
        "REGISTER sip:127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreg{cseq};rport\r\n\
Max-Forwards: 70\r\nTo: <sip:bob@example.com>\r\nFrom: <sip:bob@example.com>;tag=r1\r\nCall-ID: reg@test\r\n\
CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
    ))
}

#[test]
fn registrar_mode_binds_answers_423_and_expires_by_timer() {
    use sipshard::registrar::RegistrarConfig;
    use sipshard::shard::RegisterMode;
    let t0 = Instant::now();
    let config = ShardConfig {
        register: RegisterMode::Registrar(RegistrarConfig::default()),
        ..ShardConfig::new(uas_addr())
    };
    let mut shard = Shard::new(t0, config);
    let answer = |shard: &mut Shard, at: Instant, datagram: Bytes| {
        shard.handle_datagram(at, uac_addr(), datagram);
        Message::parse(shard.poll_transmit().unwrap().payload).unwrap()
    };
    let ok = answer(&mut shard, t0, register(1, "<sip:bob@192.0.2.4:5060>", 120));
    assert_eq!(ok.status(), Some(200));
    let c = ok.contacts().next().unwrap().unwrap();
    assert_eq!(c.expires(), Ok(Some(120)));
    let brief = answer(&mut shard, t0, register(2, "<sip:bob@192.0.2.4:5060>", 5));
    assert_eq!(brief.status(), Some(423));
    assert_eq!(brief.min_expires().unwrap(), Some(60));
    assert_eq!(shard.registrar().unwrap().aor_count(), 1);
    // The binding lapses by the shard's own timer.
    let mut now = t0;
    while let Some(next) = shard.poll_timeout() {
        if next - t0 > Duration::from_secs(200) {
            break;
        }
        now = next;
        shard.handle_timeout(now);
    }
    assert!(now - t0 >= Duration::from_secs(120));
    assert_eq!(shard.registrar().unwrap().aor_count(), 0);
}

#[test]
fn event_mode_hands_register_to_the_application() {
    use sipshard::shard::RegisterMode;
    let t0 = Instant::now();
    let config = ShardConfig {
        register: RegisterMode::Event,
        ..ShardConfig::new(uas_addr())
    };
    let mut shard = Shard::new(t0, config);
    shard.handle_datagram(t0, uac_addr(), register(1, "<sip:bob@192.0.2.4>", 300));
    let Some(SessionEvent::RegistrationRequest { txn, request, .. }) = shard.poll_event() else {
        panic!("no RegistrationRequest")
    };
    assert_eq!(request.expires().unwrap(), Some(300));
    shard
        .handle_command(
            t0,
            DialogCommand::Respond {
                txn,
                status: 200,
                headers: vec![(
                    "Contact".into(),
                    Bytes::from_static(b"<sip:bob@192.0.2.4>;expires=300"),
                )],
                body: bytes::Bytes::new(),
            },
        )
        .unwrap();
    let ok = Message::parse(shard.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.contacts().count(), 1);
}

#[test]
fn require_gets_420_and_a_merged_invite_gets_482() {
    let t0 = Instant::now();
    let mut uas = Shard::new(t0, ShardConfig::new(uas_addr()));
    let invite = |branch: &str, extra: &str| {
        Bytes::from(format!(
            "INVITE sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: merge@test\r\n\
CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n{extra}Content-Length: 0\r\n\r\n"
        ))
    };
    uas.handle_datagram(t0, uac_addr(), invite("req", "Require: 100rel, foo\r\n"));
    let r = Message::parse(uas.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.status(), Some(420));
    // 100rel is supported (RFC 3262); only the unknown tag is listed.
    assert_eq!(
        r.unsupported().filter_map(Result::ok).collect::<Vec<_>>(),
        [&b"foo"[..]]
    );

    uas.handle_datagram(t0, uac_addr(), invite("one", ""));
    assert!(matches!(
        uas.poll_event(),
        Some(SessionEvent::IncomingCall { .. })
    ));
    uas.handle_datagram(t0, uac_addr(), invite("two", ""));
    let r = Message::parse(uas.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.status(), Some(482));
    assert_eq!(uas.dialog_count(), 1);
}

/// §8.2.2.2 with RFC 6026: the INVITE transaction outlives its 2xx, so a copy that forked
/// and merged back after we answered, before the ACK, is still a merged request.
#[test]
fn a_merged_invite_after_the_2xx_gets_482_until_the_ack() {
    let t0 = Instant::now();
    let mut uas = Shard::new(t0, ShardConfig::new(uas_addr()));
    let invite = |branch: &str, call_id: &str| {
        Bytes::from(format!(
            "INVITE sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    let answer = |uas: &mut Shard| {
        let Some(SessionEvent::IncomingCall { dialog, .. }) = uas.poll_event() else {
            panic!("no IncomingCall")
        };
        uas.handle_command(
            t0,
            DialogCommand::Answer {
                dialog,
                sdp: Bytes::new(),
            },
        )
        .unwrap();
        let ok = Message::parse(uas.poll_transmit().unwrap().payload).unwrap();
        assert_eq!(ok.status(), Some(200));
        while uas.poll_event().is_some() {}
        ok
    };
    uas.handle_datagram(t0, uac_addr(), invite("one", "merge2@test"));
    let ok = answer(&mut uas);
    uas.handle_datagram(t0, uac_addr(), invite("two", "merge2@test"));
    let r = Message::parse(uas.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.status(), Some(482));
    assert_eq!(uas.dialog_count(), 1);
    assert!(
        uas.poll_event().is_none(),
        "the merged copy reached the application"
    );

    // The ACK ends the detection: a later INVITE with that origin is a new request.
    let to = std::str::from_utf8(ok.header(sipshard::message::HeaderName::To).unwrap()).unwrap();
    let ack = format!(
        "ACK sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack1;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: {to}\r\nCall-ID: merge2@test\r\n\
CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    uas.handle_datagram(t0, uac_addr(), Bytes::from(ack));
    assert!(matches!(
        uas.poll_event(),
        Some(SessionEvent::AckReceived { .. })
    ));
    uas.handle_datagram(t0, uac_addr(), invite("three", "merge2@test"));
    assert!(matches!(
        uas.poll_event(),
        Some(SessionEvent::IncomingCall { .. })
    ));

    // A call whose 2xx is never acknowledged: the BYE at 64·T1 ends the detection too.
    uas.handle_datagram(t0, uac_addr(), invite("four", "merge3@test"));
    answer(&mut uas);
    let later = t0 + Duration::from_secs(33);
    uas.handle_timeout(later);
    while uas.poll_transmit().is_some() {}
    uas.handle_datagram(later, uac_addr(), invite("five", "merge3@test"));
    assert!(uas.poll_transmit().is_none(), "no 482 this time");
    assert!(
        std::iter::from_fn(|| uas.poll_event())
            .any(|e| matches!(e, SessionEvent::IncomingCall { .. }))
    );
}

#[test]
fn forked_invite_makes_one_dialog_per_tag_and_byes_the_late_2xx() {
    use bytes::BytesMut;
    use sipshard::message::ResponseBuilder;
    let t0 = Instant::now();
    let mut uac = Shard::new(t0, ShardConfig::new(uac_addr()));
    let call = place_call(&mut uac, t0, b"<sip:alice@127.0.0.1:5070>", b"");
    let invite = Message::parse(uac.poll_transmit().unwrap().payload).unwrap();
    let respond = |uac: &mut Shard, code: u16, tag: &str, contact: &str| {
        let mut buf = BytesMut::new();
        let mut b =
            ResponseBuilder::to_request(&mut buf, &invite, code, None, Some(tag.as_bytes()));
        b.header("Contact", contact.as_bytes());
        b.finish(b"").unwrap();
        uac.handle_datagram(t0, uas_addr(), buf.freeze());
    };
    respond(&mut uac, 180, "forkA", "<sip:bob@192.0.2.10>");
    respond(&mut uac, 180, "forkB", "<sip:bob@192.0.2.11>");
    respond(&mut uac, 180, "forkB", "<sip:bob@192.0.2.11>"); // same fork again: no new event
    respond(&mut uac, 200, "forkB", "<sip:bob@192.0.2.11>");
    respond(&mut uac, 200, "forkA", "<sip:bob@192.0.2.10>");
    let events: Vec<_> = std::iter::from_fn(|| uac.poll_event()).collect();
    let ringing: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::CallRinging { dialog, call: c } => {
                assert_eq!(c, &call);
                Some(dialog.remote_tag().to_vec())
            }
            _ => None,
        })
        .collect();
    assert_eq!(ringing, [b"forkA".to_vec(), b"forkB".to_vec()]);
    let answered: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::CallAnswered { dialog, .. } => Some(dialog.remote_tag().to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(
        answered,
        [b"forkB".to_vec()],
        "only the first 2xx is announced"
    );
    // Sent: ACK to B, ACK to A, then BYE to A.
    let sent: Vec<_> = std::iter::from_fn(|| uac.poll_transmit())
        .map(|t| {
            let m = Message::parse(t.payload).unwrap();
            (
                m.method_bytes().unwrap().to_vec(),
                m.to_tag().unwrap().unwrap().to_vec(),
                m.request_uri_bytes().unwrap().to_vec(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            (
                b"ACK".to_vec(),
                b"forkB".to_vec(),
                b"sip:bob@192.0.2.11".to_vec()
            ),
            (
                b"ACK".to_vec(),
                b"forkA".to_vec(),
                b"sip:bob@192.0.2.10".to_vec()
            ),
            (
                b"BYE".to_vec(),
                b"forkA".to_vec(),
                b"sip:bob@192.0.2.10".to_vec()
            ),
        ]
    );
    assert_eq!(uac.dialog_count(), 2);
}

/// Establishes one call without hanging up; returns (UAC's dialog, UAS's dialog).
fn established(p: &mut Pair) -> (DialogId, DialogId) {
    p.bye_on_answer = false;
    p.call();
    p.run(Duration::from_secs(1));
    let uac = p.uac_events.iter().find_map(|e| match e {
        SessionEvent::CallAnswered { dialog, .. } => Some(dialog.clone()),
        _ => None,
    });
    let uas = p.uas_events.iter().find_map(|e| match e {
        SessionEvent::AckReceived { dialog, .. } => Some(dialog.clone()),
        _ => None,
    });
    (uac.expect("answered"), uas.expect("acked"))
}

/// The final statuses (and responses) of our SendRequest requests, in order.
fn request_results(events: &[SessionEvent]) -> Vec<(u16, Option<Message>)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::RequestResult {
                status, response, ..
            } => Some((*status, response.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn update_offers_get_an_answer_a_491_or_a_500_per_rfc_3311() {
    const ANSWER: &[u8] = b"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
    let mut p = Pair::new(41, Conditions::perfect(), UasPolicy::Answer);
    p.answer_reinvites = false;
    let (uac_dialog, uas_dialog) = established(&mut p);
    let update =
        |p: &mut Pair| p.uac_sends(&uac_dialog, b"UPDATE", Some((b"application/sdp", SDP)));
    // No offer outstanding: the application answers the offer in the 200 (§5.2).
    update(&mut p);
    p.run(Duration::from_millis(50));
    let txn = p
        .uas_events
        .iter()
        .find_map(|e| match e {
            SessionEvent::DialogRequest { txn, request, .. } => {
                assert_eq!(request.body_bytes(), SDP);
                Some(*txn)
            }
            _ => None,
        })
        .expect("the UPDATE reached the application");
    p.uas
        .handle_command(
            p.now,
            DialogCommand::Respond {
                txn,
                status: 200,
                headers: vec![(
                    "Content-Type".into(),
                    Bytes::from_static(b"application/sdp"),
                )],
                body: Bytes::from_static(ANSWER),
            },
        )
        .unwrap();
    p.run(Duration::from_millis(50));
    let results = request_results(&p.uac_events);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, 200);
    assert_eq!(results[0].1.as_ref().unwrap().body_bytes(), ANSWER);

    // Our re-INVITE's offer is out when the peer's UPDATE offer arrives: 491.
    p.uas
        .handle_command(
            p.now,
            DialogCommand::ReInvite {
                dialog: uas_dialog,
                sdp: Bytes::from_static(SDP),
            },
        )
        .unwrap();
    update(&mut p);
    p.run(Duration::from_secs(1));
    assert_eq!(request_results(&p.uac_events)[1].0, 491);

    // The peer's re-INVITE offer is still unanswered (the application holds it) when its
    // UPDATE offer arrives: 500 with a Retry-After of 0-10 s.
    p.uac_reinvites(&uac_dialog);
    p.run(Duration::from_millis(50));
    update(&mut p);
    p.run(Duration::from_millis(50));
    let (status, response) = request_results(&p.uac_events)[2].clone();
    assert_eq!(status, 500);
    let retry = response
        .unwrap()
        .header(sipshard::message::HeaderName::RetryAfter)
        .map(|v| String::from_utf8_lossy(v).parse::<u32>().unwrap())
        .expect("Retry-After");
    assert!(retry <= 10);
}

fn reinvite_results(events: &[SessionEvent]) -> Vec<u16> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::ReInviteResult { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

#[test]
fn reinvite_in_both_directions() {
    let mut p = Pair::new(11, Conditions::perfect(), UasPolicy::Answer);
    let (uac_dialog, uas_dialog) = established(&mut p);
    p.uac_reinvites(&uac_dialog);
    p.run(Duration::from_secs(1));
    assert_eq!(reinvite_results(&p.uac_events), [200]);
    assert_eq!(
        Pair::count(&p.uas_events, |e| matches!(
            e,
            SessionEvent::ReInvite { .. }
        )),
        1
    );
    assert_eq!(
        Pair::count(&p.uas_events, |e| matches!(
            e,
            SessionEvent::AckReceived { .. }
        )),
        2
    );
    // The other way: the UAS side re-INVITEs.
    p.uas
        .handle_command(
            p.now,
            DialogCommand::ReInvite {
                dialog: uas_dialog,
                sdp: Bytes::from_static(SDP),
            },
        )
        .unwrap();
    p.run(Duration::from_secs(1));
    assert_eq!(reinvite_results(&p.uas_events), [200]);
    // And the dialog still ends normally.
    p.uac
        .handle_command(p.now, DialogCommand::Bye { dialog: uac_dialog })
        .unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
}

#[test]
fn reinvite_glare_resolves_with_491_and_random_waits() {
    let mut p = Pair::new(12, Conditions::perfect(), UasPolicy::Answer);
    let (uac_dialog, uas_dialog) = established(&mut p);
    // Both send a re-INVITE at the same instant: each gets 491 (§14.2), then retries
    // after its §14.1 wait (Call-ID owner 2.1-4 s, the other 0-2 s).
    p.uac_reinvites(&uac_dialog);
    p.uas
        .handle_command(
            p.now,
            DialogCommand::ReInvite {
                dialog: uas_dialog,
                sdp: Bytes::from_static(SDP),
            },
        )
        .unwrap();
    let start = p.now;
    p.run(Duration::from_secs(10));
    assert_eq!(
        reinvite_results(&p.uac_events),
        [200],
        "UAC's re-INVITE succeeded in the end"
    );
    assert_eq!(
        reinvite_results(&p.uas_events),
        [200],
        "UAS's re-INVITE succeeded in the end"
    );
    // Each side refused the other's first attempt with 491, so the retries took a wait.
    assert!(p.uac.stats().requests_rejected >= 1 && p.uas.stats().requests_rejected >= 1);
    assert!(p.now - start >= Duration::from_millis(100));
}

#[test]
fn a_nul_in_a_quoted_to_is_copied_and_nothing_leaks() {
    // RFC 4475 §3.1.1.2: an extension method whose To display name holds NUL, BEL, DEL in
    // quoted-pairs. The 501 must copy that To; a shard once failed to build it and left the
    // server transaction waiting forever (found by the shard fuzz target).
    let t0 = Instant::now();
    let mut uas = Shard::new(t0, ShardConfig::new(uas_addr()));
    uas.handle_datagram(t0, uac_addr(), common::read("rfc4475/intmeth.dat"));
    let r = Message::parse(uas.poll_transmit().expect("a response").payload).unwrap();
    assert_eq!(r.status(), Some(501));
    assert!(
        r.header(sipshard::message::HeaderName::To)
            .unwrap()
            .contains(&0)
    );
    uas.handle_timeout(t0 + Duration::from_secs(40));
    assert_eq!(uas.transaction_count(), 0);
}

#[test]
fn a_request_the_application_never_answers_does_not_leak() {
    use sipshard::shard::RegisterMode;
    let t0 = Instant::now();
    let config = ShardConfig {
        register: RegisterMode::Event,
        ..ShardConfig::new(uas_addr())
    };
    let mut uas = Shard::new(t0, config);
    uas.handle_datagram(t0, uac_addr(), register(1, "<sip:bob@192.0.2.4>", 300));
    assert!(matches!(
        uas.poll_event(),
        Some(SessionEvent::RegistrationRequest { .. })
    ));
    assert_eq!(uas.transaction_count(), 1);
    uas.handle_timeout(t0 + Duration::from_secs(33));
    assert_eq!(
        uas.transaction_count(),
        0,
        "the TU deadline (64·T1) ended it"
    );
}

#[test]
fn an_unanswered_call_of_ours_is_cancelled_at_our_ring_timeout() {
    // The callee rings for ever (its own ring timeout is longer): ours cancels the call.
    let mut p = Pair::new(14, Conditions::perfect(), UasPolicy::Ring);
    p.uas = Shard::with_ids(
        p.now,
        ShardConfig {
            ring_timeout: Duration::from_secs(3600),
            ..ShardConfig::new(uas_addr())
        },
        IdGenerator::from_seed([14; 32]),
    );
    p.call();
    p.run(Duration::from_secs(400));
    assert_eq!(
        Pair::count(&p.uac_events, |e| matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::Cancelled,
                ..
            }
        )),
        1
    );
    assert_eq!(p.uac.stats().calls_unanswered, 1);
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
}

#[test]
fn an_invite_without_from_to_call_id_gets_400_and_nothing_leaks() {
    // RFC 4475 §3.3.1: the 400 copies what the request has (found by the shard fuzz target:
    // the INVITE server transaction once stayed in Proceeding forever).
    let t0 = Instant::now();
    let mut uas = Shard::new(t0, ShardConfig::new(uas_addr()));
    uas.handle_datagram(t0, uac_addr(), common::read("rfc4475/insuf.dat"));
    let r = Message::parse(uas.poll_transmit().expect("a 400").payload).unwrap();
    assert_eq!(r.status(), Some(400));
    uas.handle_timeout(t0 + Duration::from_secs(40));
    assert_eq!(uas.transaction_count(), 0);
}

#[test]
fn an_unanswered_call_is_refused_after_the_ring_timeout() {
    let mut p = Pair::new(13, Conditions::perfect(), UasPolicy::Ring);
    // The caller would give up at its own ring timeout, as long as the callee's: wait
    // longer, so that the callee's 480 is what ends the call.
    p.uac = Shard::with_ids(
        p.now,
        ShardConfig {
            ring_timeout: Duration::from_secs(300),
            ..ShardConfig::new(uac_addr())
        },
        IdGenerator::from_seed([13; 32]),
    );
    p.call();
    p.run(Duration::from_secs(400));
    assert_eq!(
        Pair::count(&p.uac_events, |e| matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::Rejected(480),
                ..
            }
        )),
        1
    );
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
    assert_eq!(
        (p.uac.transaction_count(), p.uas.transaction_count()),
        (0, 0)
    );
}

#[test]
fn stats_count_methods_classes_and_states() {
    let mut p = Pair::new(21, Conditions::perfect(), UasPolicy::Answer);
    p.bye_on_answer = false;
    p.call();
    p.run(Duration::from_secs(1));
    let s = p.uas.stats();
    assert_eq!((s.dialogs_confirmed, s.dialogs_early), (1, 0));
    assert_eq!(s.requests_in[0], 1, "one INVITE");
    assert_eq!(s.requests_in[1], 1, "one ACK");
    assert_eq!(s.responses_out[0], 1, "one 180 (1xx)");
    assert_eq!(s.responses_out[1], 1, "one 200 (2xx)");
    assert_eq!(p.uac.stats().responses_in[..2], [1, 1]);
    let mut total = p.uac.stats();
    total.merge(&p.uas.stats());
    assert_eq!(total.dialogs_confirmed, 2);
    assert_eq!(total.transactions.server_created, 1);
}

#[test]
fn over_the_dialog_limit_new_invites_get_503_and_existing_calls_go_on() {
    let mut p = Pair::new(22, Conditions::perfect(), UasPolicy::Answer);
    p.uas = Shard::new(
        p.now,
        ShardConfig {
            max_dialogs: 1,
            ..ShardConfig::new(uas_addr())
        },
    );
    p.bye_on_answer = false;
    p.call();
    p.run(Duration::from_secs(1));
    p.call();
    p.run(Duration::from_secs(1));
    assert_eq!(p.uas.stats().overload_rejections, 1);
    assert_eq!(
        Pair::count(&p.uac_events, |e| matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::Rejected(503),
                ..
            }
        )),
        1
    );
    // The first call is still up and ends normally.
    let first = p.uac_events.iter().find_map(|e| match e {
        SessionEvent::CallAnswered { dialog, .. } => Some(dialog.clone()),
        _ => None,
    });
    p.uac
        .handle_command(
            p.now,
            DialogCommand::Bye {
                dialog: first.unwrap(),
            },
        )
        .unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
}

#[test]
fn cancel_waits_for_a_provisional_and_old_handles_do_not_alias() {
    // §9.1: a CANCEL before any provisional response is held until the first 1xx.
    let t0 = Instant::now();
    let mut uac = Shard::new(t0, ShardConfig::new(uac_addr()));
    let make = |uac: &mut Shard| place_call(uac, t0, b"<sip:alice@127.0.0.1:5070>", b"");
    let call = make(&mut uac);
    let invite = Message::parse(uac.poll_transmit().unwrap().payload).unwrap();
    uac.handle_command(t0, DialogCommand::Cancel { call: call.clone() })
        .unwrap();
    assert!(
        uac.poll_transmit().is_none(),
        "no CANCEL before a provisional"
    );
    let mut buf = bytes::BytesMut::new();
    sipshard::message::ResponseBuilder::to_request(&mut buf, &invite, 100, None, None)
        .finish(b"")
        .unwrap();
    uac.handle_datagram(t0, uas_addr(), buf.freeze());
    let cancel =
        Message::parse(uac.poll_transmit().expect("CANCEL after the 100").payload).unwrap();
    assert_eq!(cancel.method_bytes(), Some(&b"CANCEL"[..]));
    assert_eq!(
        cancel.top_via().unwrap().branch(),
        invite.top_via().unwrap().branch()
    );
    // 487 ends the call; its handle then finds nothing, even after its slot is reused.
    let mut buf = bytes::BytesMut::new();
    sipshard::message::ResponseBuilder::to_request(&mut buf, &invite, 487, None, Some(b"x"))
        .finish(b"")
        .unwrap();
    uac.handle_datagram(t0, uas_addr(), buf.freeze());
    assert_eq!(uac.dialog_count(), 0);
    let _second = make(&mut uac);
    assert_eq!(
        uac.handle_command(t0, DialogCommand::Cancel { call: call.clone() }),
        Err(sipshard::shard::DialogError::DialogNotFound(call))
    );
}

#[test]
fn in_dialog_requests_reach_the_application_and_481_ends_the_dialog() {
    let mut p = Pair::new(31, Conditions::perfect(), UasPolicy::Answer);
    let (uac_dialog, _) = established(&mut p);
    p.uac_sends(
        &uac_dialog,
        b"INFO",
        Some((b"application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n")),
    );
    // The UAS application answers the INFO 200.
    p.flush();
    let mut delivered = false;
    for _ in 0..20 {
        p.step();
        while let Some(pos) = p
            .uas_events
            .iter()
            .position(|e| matches!(e, SessionEvent::DialogRequest { .. }))
        {
            if let SessionEvent::DialogRequest { txn, request, .. } = p.uas_events.remove(pos) {
                assert_eq!(request.method_bytes(), Some(&b"INFO"[..]));
                assert_eq!(request.body_bytes(), b"Signal=5\r\nDuration=160\r\n");
                p.uas.handle_command(p.now, respond(txn, 200)).unwrap();
                delivered = true;
            }
        }
    }
    assert!(delivered);
    p.run(Duration::from_secs(1));
    assert!(
        p.uac_events
            .iter()
            .any(|e| matches!(e, SessionEvent::RequestResult { status: 200, .. }))
    );
    // The peer forgets the dialog (restarts): our next request gets 481 and ends ours.
    p.uas = Shard::new(p.now, ShardConfig::new(uas_addr()));
    p.uac_sends(&uac_dialog, b"MESSAGE", Some((b"text/plain", b"hello")));
    p.run(Duration::from_secs(1));
    assert!(
        p.uac_events
            .iter()
            .any(|e| matches!(e, SessionEvent::RequestResult { status: 481, .. }))
    );
    assert_eq!(p.uac.dialog_count(), 0);
}

#[test]
fn terminate_ends_a_call_in_any_state() {
    let mut p = Pair::new(32, Conditions::perfect(), UasPolicy::Ring);
    let call = p.call();
    p.run(Duration::from_millis(100));
    p.uac
        .handle_command(p.now, DialogCommand::Terminate { dialog: call })
        .unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
    let mut p = Pair::new(33, Conditions::perfect(), UasPolicy::Answer);
    let (d, _) = established(&mut p);
    p.uac
        .handle_command(p.now, DialogCommand::Terminate { dialog: d })
        .unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!((p.uac.dialog_count(), p.uas.dialog_count()), (0, 0));
}

fn standalone(method: &'static str, to: &str, destination: SocketAddr) -> DialogCommand {
    let mut headers = Vec::new();
    if method == "REGISTER" {
        headers.push((
            "Contact".to_owned(),
            Bytes::from_static(b"<sip:alice@127.0.0.1:5070>"),
        ));
        headers.push(("Expires".to_owned(), Bytes::from_static(b"300")));
    }
    DialogCommand::SendStandalone(Box::new(sipshard::shard::StandaloneRequest {
        method: Bytes::from_static(method.as_bytes()),
        request_uri: Bytes::from(format!("sip:{destination}")),
        from: Bytes::from(to.to_owned()),
        to: Bytes::from(to.to_owned()),
        call_id: None,
        cseq: 1,
        destination,
        headers,
        body: Bytes::new(),
    }))
}

fn standalone_results(events: &[SessionEvent]) -> Vec<(sipshard::transaction::ClientTxnId, u16)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::StandaloneResult {
                request, status, ..
            } => Some((*request, *status)),
            _ => None,
        })
        .collect()
}

#[test]
fn register_and_options_outside_a_dialog_get_their_final_response() {
    use sipshard::registrar::RegistrarConfig;
    use sipshard::shard::RegisterMode;
    let lossy = Conditions {
        loss: 0.2,
        duplicate: 0.1,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(30),
    };
    let mut p = Pair::new(7, lossy, UasPolicy::Answer);
    let config = ShardConfig {
        register: RegisterMode::Registrar(RegistrarConfig::default()),
        ..ShardConfig::new(uas_addr())
    };
    p.uas = Shard::new(p.now, config);
    let mut sent = Vec::new();
    for method in ["REGISTER", "OPTIONS"] {
        let out = p
            .uac
            .handle_command(
                p.now,
                standalone(method, "<sip:alice@example.com>", uas_addr()),
            )
            .unwrap();
        let CommandOutcome::Request(txn) = out else {
            panic!("{out:?}")
        };
        sent.push(txn);
    }
    p.run(Duration::from_secs(40));
    // Loss may reorder them: each gets exactly one result.
    let results = standalone_results(&p.uac_events);
    assert_eq!(results.len(), 2, "{results:?}");
    for txn in &sent {
        assert!(results.contains(&(*txn, 200)), "{results:?}");
    }
    // The binding is in the registrar, with the Contact we gave.
    let registrar = p.uas.registrar().unwrap();
    assert_eq!(registrar.aor_count(), 1);
    let register_ok = p
        .uac_events
        .iter()
        .find_map(|e| match e {
            SessionEvent::StandaloneResult {
                request,
                response: Some(r),
                ..
            } if *request == sent[0] => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    let contact = register_ok.contacts().next().unwrap().unwrap();
    assert_eq!(contact.expires(), Ok(Some(300)));
    // Nothing left behind, and no dialog was made.
    assert_eq!(p.uac.transaction_count(), 0);
    assert_eq!(p.uac.dialog_count(), 0);
}

#[test]
fn a_standalone_request_nobody_answers_ends_in_408_and_invite_is_refused() {
    let t0 = Instant::now();
    let mut shard = Shard::new(t0, ShardConfig::new(uac_addr()));
    let silent: SocketAddr = "127.0.0.1:5999".parse().unwrap();
    let out = shard
        .handle_command(t0, standalone("OPTIONS", "<sip:x@example.com>", silent))
        .unwrap();
    let CommandOutcome::Request(txn) = out else {
        panic!("{out:?}")
    };
    let mut now = t0;
    let mut events = Vec::new();
    while let Some(next) = shard.poll_timeout() {
        now = next;
        shard.handle_timeout(now);
        while shard.poll_transmit().is_some() {}
        events.extend(std::iter::from_fn(|| shard.poll_event()));
        if !events.is_empty() {
            break;
        }
    }
    assert_eq!(standalone_results(&events), vec![(txn, 408)]);
    // Timer F: 64·T1.
    assert_eq!(now - t0, Duration::from_secs(32));
    assert!(
        shard
            .handle_command(now, standalone("INVITE", "<sip:x@example.com>", silent))
            .is_err()
    );
}

#[test]
fn an_old_invite_transaction_ending_does_not_touch_the_call_that_reused_its_slot() {
    // RFC 6026 keeps our INVITE transaction for 64·T1 after its 2xx; the dialog slot it
    // pointed to is free long before and may hold another call by then.
    let mut p = Pair::new(11, Conditions::perfect(), UasPolicy::Answer);
    let first = p.call();
    p.run(Duration::from_secs(1));
    assert!(p.uac_events.iter().any(|e| matches!(
        e,
        SessionEvent::CallTerminated {
            reason: TerminationReason::LocalBye,
            ..
        }
    )));
    assert_eq!(p.uac.dialog_count(), 0);
    p.policy = UasPolicy::Ring;
    let second = p.call();
    assert_ne!(first, second);
    p.uac_events.clear();
    // Past Timer M of the first call.
    p.run(Duration::from_secs(40));
    let ended: Vec<_> = p
        .uac_events
        .iter()
        .filter(|e| matches!(e, SessionEvent::CallTerminated { .. }))
        .collect();
    assert!(ended.is_empty(), "{ended:?}");
    assert_eq!(p.uac.dialog_count(), 1);
}

#[test]
fn a_cancelled_invite_with_no_final_response_ends_64_t1_after_the_cancel() {
    // §9.1: the callee rang, took our CANCEL, and never sent the INVITE's final response.
    // Nothing in the INVITE transaction's Proceeding state would ever end it.
    use sipshard::message::ResponseBuilder;
    let t0 = Instant::now();
    let mut uac = Shard::new(t0, ShardConfig::new(uac_addr()));
    let call = place_call(&mut uac, t0, b"<sip:alice@127.0.0.1:5070>", SDP);
    let invite = Message::parse(uac.poll_transmit().unwrap().payload).unwrap();
    let mut buf = bytes::BytesMut::new();
    ResponseBuilder::to_request(&mut buf, &invite, 180, None, Some(b"callee"))
        .finish(b"")
        .unwrap();
    uac.handle_datagram(t0, uas_addr(), buf.split().freeze());
    let cancelled_at = t0 + Duration::from_secs(1);
    uac.handle_command(cancelled_at, DialogCommand::Cancel { call })
        .unwrap();
    let cancel = Message::parse(uac.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(cancel.method_bytes(), Some(&b"CANCEL"[..]));
    let mut ended = None;
    while let Some(now) = uac.poll_timeout() {
        uac.handle_timeout(now);
        while uac.poll_transmit().is_some() {}
        while let Some(e) = uac.poll_event() {
            if let SessionEvent::CallTerminated { reason, .. } = e {
                ended.get_or_insert((now, reason));
            }
        }
        if now - t0 > Duration::from_secs(120) {
            break;
        }
    }
    let (at, reason) = ended.expect("the call ended");
    assert_eq!(reason, TerminationReason::Timeout);
    assert_eq!(
        at - cancelled_at,
        Duration::from_secs(32),
        "64·T1 after the CANCEL"
    );
    assert_eq!(uac.dialog_count(), 0);
    assert_eq!(uac.transaction_count(), 0);
}

#[test]
fn a_reinvite_pending_when_the_dialog_ends_gets_487() {
    // §15.1.2: after a BYE, the UAS still answers the dialog's pending requests (487).
    let mut p = Pair::new(13, Conditions::perfect(), UasPolicy::Answer);
    p.answer_reinvites = false;
    let (uac_dialog, _) = established(&mut p);
    p.uac_reinvites(&uac_dialog);
    p.run(Duration::from_millis(50));
    assert!(
        p.uas_events
            .iter()
            .any(|e| matches!(e, SessionEvent::ReInvite { .. }))
    );
    let before = p.uas.stats().responses_out[3];
    p.uac
        .handle_command(p.now, DialogCommand::Bye { dialog: uac_dialog })
        .unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(
        p.uas.stats().responses_out[3] - before,
        1,
        "one 487 for the re-INVITE"
    );
    assert_eq!(reinvite_results(&p.uac_events), Vec::<u16>::new());
    for shard in [&p.uac, &p.uas] {
        assert_eq!(shard.dialog_count(), 0);
        assert_eq!(shard.transaction_count(), 0);
    }
}

#[test]
fn an_in_dialog_request_pending_when_the_dialog_ends_gets_487() {
    // §15.1.2 for a non-INVITE: the application holds the peer's INFO, then the peer hangs
    // up; the INFO still gets a final response (487), and nothing is left behind.
    let mut p = Pair::new(17, Conditions::perfect(), UasPolicy::Answer);
    let (uac_dialog, _) = established(&mut p);
    p.uac_sends(&uac_dialog, b"INFO", None);
    p.run(Duration::from_millis(50));
    let txn = p
        .uas_events
        .iter()
        .find_map(|e| match e {
            SessionEvent::DialogRequest { txn, .. } => Some(*txn),
            _ => None,
        })
        .expect("the INFO reached the application");
    p.uac
        .handle_command(p.now, DialogCommand::Bye { dialog: uac_dialog })
        .unwrap();
    let (sent_before, received_before) = (
        p.uas.stats().responses_out[3],
        p.uac.stats().responses_in[3],
    );
    p.run(Duration::from_secs(60));
    assert_eq!(p.uas.stats().responses_out[3] - sent_before, 1, "one 487");
    assert_eq!(p.uac.stats().responses_in[3] - received_before, 1);
    // The application answering late finds nothing to answer.
    assert!(p.uas.handle_command(p.now, respond(txn, 200),).is_err());
    for shard in [&p.uac, &p.uas] {
        assert_eq!(shard.dialog_count(), 0);
        assert_eq!(shard.transaction_count(), 0);
    }
}

#[test]
fn the_callee_hangs_up_only_after_the_ack() {
    // §15: the callee MUST NOT send BYE before the ACK for its 2xx (or 64·T1 without one).
    let mut p = Pair::new(17, Conditions::perfect(), UasPolicy::Answer);
    p.bye_on_answer = false;
    p.call();
    while !p
        .uas_events
        .iter()
        .any(|e| matches!(e, SessionEvent::CallAnswered { .. }))
    {
        assert!(p.step());
    }
    assert!(
        !p.uas_events
            .iter()
            .any(|e| matches!(e, SessionEvent::AckReceived { .. }))
    );
    let dialog = p
        .uas_events
        .iter()
        .find_map(|e| match e {
            SessionEvent::CallAnswered { dialog, .. } => Some(dialog.clone()),
            _ => None,
        })
        .unwrap();
    p.uas
        .handle_command(p.now, DialogCommand::Bye { dialog })
        .unwrap();
    // Nothing goes out yet: the BYE waits for the ACK.
    let early: Vec<_> = std::iter::from_fn(|| p.uas.poll_transmit()).collect();
    assert!(
        early.iter().all(|t| !t.payload.starts_with(b"BYE")),
        "a BYE before the ACK"
    );
    for t in early {
        p.net.send(p.now, uas_addr(), t.destination, t.payload);
    }
    p.run(Duration::from_secs(5));
    let order: Vec<&str> = p
        .uas_events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::AckReceived { .. } => Some("ack"),
            SessionEvent::CallTerminated { reason, .. } => {
                assert_eq!(*reason, TerminationReason::LocalBye);
                Some("ended")
            }
            _ => None,
        })
        .collect();
    assert_eq!(order, ["ack", "ended"]);
    assert!(p.uac_events.iter().any(|e| matches!(
        e,
        SessionEvent::CallTerminated {
            reason: TerminationReason::RemoteBye,
            ..
        }
    )));
}

#[test]
fn unknown_methods_get_501_and_unreadable_bodies_415() {
    let t0 = Instant::now();
    let mut uas = Shard::new(t0, ShardConfig::new(uas_addr()));
    let req = |method: &str, branch: &str, extra: &str, body: &str| {
        Bytes::from(format!(
            "{method} sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: {branch}@test\r\n\
CSeq: 2 {method}\r\nContact: <sip:alice@127.0.0.1:5070>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let mut answer = |datagram: Bytes| {
        uas.handle_datagram(t0, uac_addr(), datagram);
        Message::parse(uas.poll_transmit().expect("an answer").payload).unwrap()
    };
    let header = |m: &Message, name: &str| {
        m.header_values_by_name(name)
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    // §8.2.1 / §21.5.2: a method we do not know is 501, one we know but do not serve 405;
    // both say what we serve.
    let r = answer(req("FROB", "m1", "", ""));
    assert_eq!(r.status(), Some(501));
    assert!(header(&r, "Allow").unwrap().contains("INVITE"));
    let r = answer(req("PUBLISH", "m2", "Event: presence\r\n", ""));
    assert_eq!(r.status(), Some(405));
    assert!(header(&r, "Allow").is_some());

    // §8.2.3: an INVITE whose body is neither SDP nor multipart, or is content-coded.
    let r = answer(req(
        "INVITE",
        "b1",
        "Content-Type: application/unknownformat\r\n",
        "<hello/>\r\n",
    ));
    assert_eq!(r.status(), Some(415));
    assert_eq!(
        header(&r, "Accept").as_deref(),
        Some("application/sdp, multipart/mixed")
    );
    let sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let r = answer(req(
        "INVITE",
        "b2",
        "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n",
        sdp,
    ));
    assert_eq!(r.status(), Some(415));
    assert_eq!(header(&r, "Accept-Encoding").as_deref(), Some("identity"));
    // §7.4.1: a body needs its Content-Type; without one it is no offer we could read.
    let r = answer(req("INVITE", "b4", "", sdp));
    assert_eq!(r.status(), Some(400));
    assert_eq!(uas.dialog_count(), 0);

    // SIP-I style: ISUP beside the SDP in multipart/mixed (RFC 5621) is a call with an offer.
    let body = format!(
        "--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n\
--unique-boundary-1\r\nContent-Type: application/isup;version=itu-t92+\r\n\
Content-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\r\n--unique-boundary-1--\r\n"
    );
    uas.handle_datagram(
        t0,
        uac_addr(),
        req(
            "INVITE",
            "b3",
            "Content-Type: multipart/mixed;boundary=unique-boundary-1\r\n",
            &body,
        ),
    );
    match uas.poll_event() {
        Some(SessionEvent::IncomingCall { request, .. }) => {
            assert_eq!(sipshard::sdp::offer_of(&request), sdp.as_bytes());
        }
        other => panic!("expected IncomingCall, got {other:?}"),
    }
}

#[test]
fn an_update_offer_before_our_invite_offer_is_answered_gets_491() {
    // RFC 3311 §5.2: our INVITE's offer is unanswered in the early dialog (the 180 is not
    // reliable), so the callee's UPDATE with an offer gets 491, in the first early dialog
    // and in a fork's; once the 2xx answered it, an UPDATE offer goes to the application.
    let t0 = Instant::now();
    let mut uac = Shard::new(t0, ShardConfig::new(uac_addr()));
    let sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let make = DialogCommand::MakeCall {
        from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
        to: Bytes::from_static(b"<sip:bob@127.0.0.1:5080>"),
        request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
        destination: uas_addr(),
        sdp: Bytes::from(sdp),
        headers: Vec::new(),
    };
    uac.handle_command(t0, make).unwrap();
    let invite = Message::parse(uac.poll_transmit().unwrap().payload).unwrap();
    let text = |name: sipshard::message::HeaderName| {
        String::from_utf8_lossy(invite.header(name).unwrap()).into_owned()
    };
    use sipshard::message::HeaderName as H;
    let (via, from, to, call_id) = (text(H::Via), text(H::From), text(H::To), text(H::CallId));
    let response = |code: &str, tag: &str, body: &str| {
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        Bytes::from(format!(
            "SIP/2.0 {code}\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to};tag={tag}\r\nCall-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5080>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let update = |cseq: u32, tag: &str, branch: &str| {
        Bytes::from(format!(
            "UPDATE sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch}\r\n\
Max-Forwards: 70\r\nFrom: {to};tag={tag}\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} UPDATE\r\n\
Contact: <sip:bob@127.0.0.1:5080>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ))
    };
    uac.handle_datagram(t0, uas_addr(), response("180 Ringing", "b1", ""));
    uac.handle_datagram(t0, uas_addr(), update(5, "b1", "up1"));
    let answer = Message::parse(uac.poll_transmit().expect("an answer").payload).unwrap();
    assert_eq!(answer.status(), Some(491));
    // A second fork rings: its early dialog has not answered our offer either.
    uac.handle_datagram(t0, uas_addr(), response("180 Ringing", "b2", ""));
    uac.handle_datagram(t0, uas_addr(), update(3, "b2", "upf"));
    let answer = Message::parse(uac.poll_transmit().expect("an answer").payload).unwrap();
    assert_eq!(answer.status(), Some(491), "the fork's UPDATE offer");
    assert_eq!(
        answer.from_tag().unwrap(),
        Some(&b"b2"[..]),
        "answered in the fork"
    );

    uac.handle_datagram(t0, uas_addr(), response("200 OK", "b1", sdp));
    while uac.poll_transmit().is_some() {} // the ACK
    while uac.poll_event().is_some() {}
    uac.handle_datagram(t0, uas_addr(), update(6, "b1", "up2"));
    assert!(uac.poll_transmit().is_none(), "no automatic answer");
    assert!(matches!(
        uac.poll_event(),
        Some(SessionEvent::DialogRequest { .. })
    ));
}

#[test]
fn make_call_carries_extra_headers_and_its_cancel_the_preloaded_route() {
    let t0 = Instant::now();
    let mut uac = Shard::new(t0, ShardConfig::new(uac_addr()));
    let make = |headers: Vec<(String, Bytes)>| DialogCommand::MakeCall {
        from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
        to: Bytes::from_static(b"<sip:bob@example.com>"),
        request_uri: Bytes::from_static(b"sip:bob@example.com"),
        destination: uas_addr(),
        sdp: Bytes::new(),
        headers,
    };
    let headers = vec![
        (
            "P-Asserted-Identity".to_owned(),
            Bytes::from_static(b"<sip:+15551234567@example.com>"),
        ),
        (
            "Route".to_owned(),
            Bytes::from_static(b"<sip:127.0.0.1:5080;lr>"),
        ),
    ];
    let call = match uac.handle_command(t0, make(headers)).unwrap() {
        CommandOutcome::Call(id) => id,
        other => panic!("{other:?}"),
    };
    let invite = Message::parse(uac.poll_transmit().unwrap().payload).unwrap();
    let pai = invite.header_values_by_name("P-Asserted-Identity").next();
    assert_eq!(pai, Some(&b"<sip:+15551234567@example.com>"[..]));
    assert_eq!(invite.routes().count(), 1);

    // §9.1: the CANCEL carries the INVITE's Route (sent once a provisional arrived).
    let text = |m: &Message, name| String::from_utf8_lossy(m.header(name).unwrap()).into_owned();
    use sipshard::message::HeaderName as H;
    let trying = format!(
        "SIP/2.0 100 Trying\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        text(&invite, H::Via),
        text(&invite, H::From),
        text(&invite, H::To),
        text(&invite, H::CallId)
    );
    uac.handle_datagram(t0, uas_addr(), Bytes::from(trying));
    uac.handle_command(t0, DialogCommand::Cancel { call })
        .unwrap();
    let cancel = Message::parse(uac.poll_transmit().expect("the CANCEL").payload).unwrap();
    assert_eq!(cancel.method(), Some(sipshard::message::Method::Cancel));
    assert_eq!(
        cancel.header(H::Route),
        Some(&b"<sip:127.0.0.1:5080;lr>"[..])
    );

    // Headers the dialog layer writes itself are refused, in either spelling.
    for name in ["Call-ID", "i", "cseq", "Via"] {
        let refused =
            uac.handle_command(t0, make(vec![(name.to_owned(), Bytes::from_static(b"x"))]));
        assert!(
            matches!(
                refused,
                Err(sipshard::shard::DialogError::InvalidInput(
                    sipshard::message::BuildError::ReservedHeader
                ))
            ),
            "{name}: {refused:?}"
        );
    }
}
