//! Requests in and outside dialogs between two shards (`common::pair::Pair`): re-INVITE and
//! UPDATE offers, glare, in-dialog requests for the application, standalone requests, what
//! is pending when a dialog ends, and what nobody answers.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pair::*;
use common::sim::Conditions;
use sipshard::message::Message;
use sipshard::shard::{CommandOutcome, DialogCommand, SessionEvent, Shard, ShardConfig};

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
