//! INVITE sessions between two shards, UAC and UAS, over the simulated network
//! (`common::pair::Pair`): whole calls on simulated time, with and without loss, duplication
//! and reordering; cancels, forks, merged requests, limits and the calls' own timers.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pair::*;
use common::sim::Conditions;
use sipshard::message::{IdGenerator, Message};
use sipshard::shard::{
    CommandOutcome, DialogCommand, SessionEvent, Shard, ShardConfig, TerminationReason,
};

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
