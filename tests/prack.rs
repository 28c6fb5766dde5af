//! Reliable provisional responses as UAS (RFC 3262), on simulated time: the reliable 18x,
//! its retransmission until the PRACK, RAck matching, and the 5xx when no PRACK comes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipshard::dialog::DialogId;
use sipshard::message::Message;
use sipshard::shard::{
    DialogCommand, ReliableProvisionals, SessionEvent, Shard, ShardConfig, TerminationReason,
};

fn caller() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

fn shard(now: Instant, policy: ReliableProvisionals) -> Shard {
    let mut config = ShardConfig::new("127.0.0.1:5080".parse().unwrap());
    config.reliable_provisionals = policy;
    Shard::new(now, config)
}

fn invite(extra: &str) -> Bytes {
    Bytes::from(format!(
        "INVITE sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: prack@test\r\n\
CSeq: 7 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

fn prack(to_tag: &[u8], branch: &str, cseq: u32, rack: &str) -> Bytes {
    Bytes::from(format!(
        "PRACK sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag={}\r\nCall-ID: prack@test\r\n\
CSeq: {cseq} PRACK\r\nRAck: {rack}\r\nContent-Length: 0\r\n\r\n",
        String::from_utf8_lossy(to_tag)
    ))
}

/// Everything the shard sent, parsed.
fn sent(uas: &mut Shard) -> Vec<Message> {
    std::iter::from_fn(|| uas.poll_transmit())
        .map(|t| Message::parse(t.payload).unwrap())
        .collect()
}

/// The IncomingCall's dialog.
fn incoming(uas: &mut Shard) -> DialogId {
    match uas.poll_event() {
        Some(SessionEvent::IncomingCall { dialog, .. }) => dialog,
        other => panic!("expected IncomingCall, got {other:?}"),
    }
}

fn ring(uas: &mut Shard, now: Instant, dialog: &DialogId) -> Message {
    uas.handle_command(
        now,
        DialogCommand::Ringing {
            dialog: dialog.clone(),
        },
    )
    .unwrap();
    let mut out = sent(uas);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

#[test]
fn a_required_100rel_makes_the_180_reliable_until_its_prack() {
    let t0 = Instant::now();
    let mut uas = shard(t0, ReliableProvisionals::WhenRequired);
    uas.handle_datagram(
        t0,
        caller(),
        invite("Require: 100rel\r\nSupported: timer\r\n"),
    );
    let dialog = incoming(&mut uas);
    let ringing = ring(&mut uas, t0, &dialog);
    assert_eq!(ringing.status(), Some(180));
    assert!(
        ringing
            .require()
            .filter_map(Result::ok)
            .any(|t| t == b"100rel")
    );
    let rseq = ringing
        .rseq()
        .unwrap()
        .expect("RSeq on a reliable provisional");
    assert!(
        (1..=0x7fff_ffff).contains(&rseq),
        "§7.1: first RSeq in 1..2^31-1"
    );
    // A second reliable provisional must wait for the first one's PRACK (§3).
    assert!(
        uas.handle_command(
            t0,
            DialogCommand::Ringing {
                dialog: dialog.clone()
            }
        )
        .is_err()
    );
    // Retransmitted at T1, 2·T1, 4·T1 (0.5, 1.5, 3.5 s) while no PRACK comes.
    let mut resent_at = Vec::new();
    let mut now = t0;
    while now < t0 + Duration::from_secs(4) {
        now += Duration::from_millis(10);
        uas.handle_timeout(now);
        for m in sent(&mut uas) {
            assert_eq!(m.status(), Some(180));
            assert_eq!(m.rseq().unwrap(), Some(rseq));
            resent_at.push((now - t0).as_millis() / 10 * 10);
        }
    }
    assert_eq!(resent_at, vec![500, 1500, 3500]);
    assert_eq!(uas.stats().provisional_retransmissions, 3);

    let tag = ringing.to_tag().unwrap().unwrap().to_vec();
    // A PRACK for another RSeq, or for another INVITE, matches nothing: 481.
    for (branch, rack) in [
        ("p1", format!("{} 7 INVITE", rseq + 1)),
        ("p2", format!("{rseq} 6 INVITE")),
    ] {
        uas.handle_datagram(now, caller(), prack(&tag, branch, 8, &rack));
        let out = sent(&mut uas);
        assert_eq!(out[0].status(), Some(481), "{rack}");
    }
    // The right one: 200, and the retransmissions stop.
    uas.handle_datagram(
        now,
        caller(),
        prack(&tag, "p3", 9, &format!("{rseq} 7 INVITE")),
    );
    let out = sent(&mut uas);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status(), Some(200));
    assert_eq!(out[0].cseq().unwrap().method_bytes, b"PRACK");
    assert_eq!(out[0].to_tag().unwrap(), Some(&tag[..]));
    uas.handle_timeout(now + Duration::from_secs(10));
    assert!(
        sent(&mut uas).is_empty(),
        "no retransmission after the PRACK"
    );
    // The next provisional is reliable too, one RSeq higher.
    let again = ring(&mut uas, now, &dialog);
    assert_eq!(again.rseq().unwrap(), Some(rseq + 1));
    // An answer while that one awaits its PRACK is held (the 2xx would otherwise overtake
    // the PRACK); the PRACK brings its 200 and then the INVITE's.
    uas.handle_command(
        now,
        DialogCommand::Answer {
            dialog: dialog.clone(),
            sdp: Bytes::new(),
        },
    )
    .unwrap();
    assert!(sent(&mut uas).is_empty(), "the 2xx waits for the PRACK");
    uas.handle_datagram(
        now,
        caller(),
        prack(&tag, "p4", 10, &format!("{} 7 INVITE", rseq + 1)),
    );
    let out = sent(&mut uas);
    let answers: Vec<_> = out
        .iter()
        .map(|m| (m.status(), m.cseq().unwrap().method_bytes.to_vec()))
        .collect();
    assert_eq!(
        answers,
        vec![
            (Some(200), b"PRACK".to_vec()),
            (Some(200), b"INVITE".to_vec())
        ]
    );
    assert!(
        std::iter::from_fn(|| uas.poll_event())
            .any(|e| matches!(e, SessionEvent::CallAnswered { .. }))
    );
}

#[test]
fn no_prack_within_64_t1_refuses_the_invite_with_500() {
    let t0 = Instant::now();
    let mut uas = shard(t0, ReliableProvisionals::WhenSupported);
    // WhenSupported: Supported alone is enough.
    uas.handle_datagram(t0, caller(), invite("Supported: 100rel\r\n"));
    let dialog = incoming(&mut uas);
    let ringing = ring(&mut uas, t0, &dialog);
    assert!(ringing.rseq().unwrap().is_some());
    let mut now = t0;
    let mut finals = Vec::new();
    while now < t0 + Duration::from_secs(40) && finals.is_empty() {
        now += Duration::from_millis(100);
        uas.handle_timeout(now);
        finals.extend(
            sent(&mut uas)
                .into_iter()
                .filter_map(|m| m.status())
                .filter(|&s| s >= 200),
        );
    }
    assert_eq!(finals, vec![500]);
    let waited = now - t0;
    assert!(
        waited >= Duration::from_secs(32) && waited < Duration::from_secs(33),
        "{waited:?}"
    );
    let ended = std::iter::from_fn(|| uas.poll_event()).any(|e| {
        matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::Rejected(500),
                ..
            }
        )
    });
    assert!(ended);
    assert_eq!(uas.dialog_count(), 0);
}

#[test]
fn provisionals_stay_unreliable_unless_the_policy_and_the_invite_agree() {
    let t0 = Instant::now();
    // WhenRequired: Supported alone is not enough.
    let mut uas = shard(t0, ReliableProvisionals::WhenRequired);
    uas.handle_datagram(t0, caller(), invite("Supported: 100rel\r\n"));
    let dialog = incoming(&mut uas);
    let ringing = ring(&mut uas, t0, &dialog);
    assert_eq!(ringing.rseq().unwrap(), None);
    assert_eq!(ringing.require().count(), 0);
    // A PRACK without a reliable provisional to acknowledge: 481.
    let tag = ringing.to_tag().unwrap().unwrap().to_vec();
    uas.handle_datagram(t0, caller(), prack(&tag, "x1", 8, "1 7 INVITE"));
    assert_eq!(sent(&mut uas)[0].status(), Some(481));

    // Never: Require: 100rel is refused with 420 and Unsupported: 100rel; OPTIONS does not
    // advertise it.
    let mut never = shard(t0, ReliableProvisionals::Never);
    never.handle_datagram(t0, caller(), invite("Require: 100rel\r\n"));
    let r = &sent(&mut never)[0];
    assert_eq!(r.status(), Some(420));
    assert_eq!(
        r.unsupported().filter_map(Result::ok).collect::<Vec<_>>(),
        [&b"100rel"[..]]
    );
    let options = |branch: &str| {
        Bytes::from(format!(
            "OPTIONS sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=o1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: opt@test\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    never.handle_datagram(t0, caller(), options("o1"));
    let supported: Vec<_> = sent(&mut never)[0]
        .supported()
        .filter_map(Result::ok)
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(supported, [b"replaces".to_vec()], "replaces, not 100rel");
    uas.handle_datagram(t0, caller(), options("o2"));
    let ok = &sent(&mut uas)[0];
    assert!(
        ok.supported()
            .filter_map(Result::ok)
            .any(|t| t == b"100rel")
    );
    assert!(
        ok.header(sipshard::message::HeaderName::Allow)
            .is_some_and(|a| a.windows(5).any(|w| w == b"PRACK"))
    );
}

/// A response of the callee to `invite`, built with the message layer's builder.
fn answer_to(invite: &Message, status: u16, extra: &[(&str, &[u8])]) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    let mut b = sipshard::message::ResponseBuilder::to_request(
        &mut buf,
        invite,
        status,
        None,
        Some(b"callee1"),
    );
    b.header("Contact", b"<sip:bob@127.0.0.1:5080>");
    for (name, value) in extra {
        b.header(name, value);
    }
    b.finish(b"").unwrap();
    buf.freeze()
}

#[test]
fn as_caller_we_prack_once_and_ack_with_the_invites_cseq_even_after_our_bye() {
    let t0 = Instant::now();
    let callee: SocketAddr = "127.0.0.1:5080".parse().unwrap();
    let mut uac = shard(t0, ReliableProvisionals::WhenRequired);
    uac.handle_command(
        t0,
        DialogCommand::MakeCall {
            from: Bytes::from_static(b"<sip:alice@127.0.0.1:5070>"),
            to: Bytes::from_static(b"<sip:bob@127.0.0.1:5080>"),
            request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
            destination: callee,
            sdp: Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"),
            headers: Vec::new(),
        },
    )
    .unwrap();
    let invite = sent(&mut uac).remove(0);
    assert!(
        invite
            .supported()
            .filter_map(Result::ok)
            .any(|t| t == b"100rel"),
        "an INVITE with an offer says Supported: 100rel"
    );
    let reliable = answer_to(&invite, 180, &[("Require", b"100rel"), ("RSeq", b"5")]);
    uac.handle_datagram(t0, callee, reliable.clone());
    let prack = sent(&mut uac).remove(0);
    assert_eq!(prack.method_bytes(), Some(&b"PRACK"[..]));
    let rack = prack.rack().unwrap().unwrap();
    assert_eq!(
        (rack.rseq, rack.cseq, rack.method_bytes),
        (5, 1, &b"INVITE"[..])
    );
    assert_eq!(prack.cseq().unwrap().seq, 2);
    // Its retransmission is not PRACKed again (the PRACK's transaction repeats itself).
    uac.handle_datagram(t0, callee, reliable);
    assert!(sent(&mut uac).is_empty());

    let ok = answer_to(&invite, 200, &[]);
    uac.handle_datagram(t0, callee, ok.clone());
    let ack = sent(&mut uac).remove(0);
    assert_eq!(ack.method_bytes(), Some(&b"ACK"[..]));
    assert_eq!(
        ack.cseq().unwrap().seq,
        1,
        "§13.2.2.4: the INVITE's CSeq number, not the PRACK's"
    );
    let dialog = std::iter::from_fn(|| uac.poll_event())
        .find_map(|e| match e {
            SessionEvent::CallAnswered { dialog, .. } => Some(dialog),
            _ => None,
        })
        .expect("answered");
    uac.handle_command(t0, DialogCommand::Bye { dialog })
        .unwrap();
    let bye = sent(&mut uac).remove(0);
    assert_eq!(bye.cseq().unwrap().seq, 3);
    // The callee missed our ACK and sends its 2xx again: it gets the ACK again, BYE or not.
    uac.handle_datagram(t0 + Duration::from_millis(500), callee, ok);
    let again = sent(&mut uac);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].method_bytes(), Some(&b"ACK"[..]));
    assert_eq!(again[0].cseq().unwrap().seq, 1);
}
