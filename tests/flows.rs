//! RFC 3665 §3 and RFC 3261 §24.2 call flows replayed against a sipshard UAS playing Bob:
//! the messages the flow sends to Bob go into the shard, our application does what Bob does
//! (ring, answer, refuse, hang up), and each message Bob sends in the flow is compared with
//! what the shard sent: status code, and the headers RFC 3261 §8.2.6.2 says a response copies
//! (Via list, From, Call-ID, CSeq, To with a tag). Bob's tag in the RFC is mapped to ours in
//! later inputs; Alice's responses to our own requests are built from those requests.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sipshard::dialog::DialogId;
use sipshard::message::{HeaderName, Message, ResponseBuilder};
use sipshard::shard::{DialogCommand, SessionEvent, Shard, ShardConfig, TerminationReason};

struct Row {
    step: String,
    from: String,
    to: String,
    file: String,
    retransmission: bool,
}

fn flows() -> Vec<(String, Vec<Row>)> {
    let mut out: Vec<(String, Vec<Row>)> = Vec::new();
    for r in common::manifest("callflows/flows.tsv") {
        let (flow, step, direction, file, notes) = (&r[1], &r[2], &r[4], &r[5], &r[8]);
        let Some((from, to)) = direction.split_once(" -> ") else {
            continue;
        };
        let row = Row {
            step: step.clone(),
            from: from.trim().to_string(),
            to: to.trim().to_string(),
            file: file.clone(),
            retransmission: notes.contains("retransmission"),
        };
        match out.last_mut() {
            Some((name, rows)) if name == flow => rows.push(row),
            _ => out.push((flow.clone(), vec![row])),
        }
    }
    out
}

fn headers(m: &Message, name: HeaderName) -> Vec<Vec<u8>> {
    m.header_values(name).map(<[u8]>::to_vec).collect()
}

/// Replays one flow; returns why it was not replayed, if it was not.
fn replay(name: &str, rows: &[Row]) -> Result<usize, String> {
    if rows.iter().any(|r| {
        r.from == "Bob"
            && !r.file.contains("-bye")
            && !r.file.contains("ringing")
            && !r.file.contains("-ok")
            && !r.file.contains("busy")
            && !r.file.contains("unavailable")
            && !r.file.contains("request-terminated")
            && !r.file.contains("trying")
    }) {
        return Err("Bob sends a request other than BYE".into());
    }
    if rows
        .iter()
        .any(|r| r.file.contains("authorization-required") && r.to == "Bob")
    {
        return Err("authentication towards Bob".into());
    }
    let t0 = Instant::now();
    let mut now = t0;
    let peer: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let mut bob = Shard::new(t0, ShardConfig::new("127.0.0.1:5080".parse().unwrap()));
    let mut outputs: VecDeque<Message> = VecDeque::new();
    let mut events: Vec<SessionEvent> = Vec::new();
    let mut dialog: Option<DialogId> = None;
    let mut tag_map: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut last_request_to_bob: Option<Message> = None;
    let mut our_requests: Vec<Message> = Vec::new();
    let mut compared = 0;

    let drain = |bob: &mut Shard,
                 outputs: &mut VecDeque<Message>,
                 events: &mut Vec<SessionEvent>,
                 dialog: &mut Option<DialogId>| {
        while let Some(t) = bob.poll_transmit() {
            outputs.push_back(Message::parse(t.payload).unwrap());
        }
        while let Some(e) = bob.poll_event() {
            if let SessionEvent::IncomingCall { dialog: d, .. } = &e {
                *dialog = Some(d.clone());
            }
            events.push(e);
        }
    };

    for row in rows.iter().filter(|r| !r.retransmission) {
        let bytes = common::read(&format!("callflows/{}", row.file));
        let flow_msg = Message::parse(bytes.clone()).unwrap();
        if row.to == "Bob" {
            let input = if flow_msg.is_request() {
                let mut text = bytes.to_vec();
                for (rfc, ours) in &tag_map {
                    text = replace(&text, rfc, ours);
                }
                Bytes::from(text)
            } else {
                // Alice's response to a request we sent: built from our request.
                let ours = our_requests
                    .pop()
                    .ok_or(format!("{}: response to nothing", row.step))?;
                let mut buf = BytesMut::new();
                ResponseBuilder::to_request(
                    &mut buf,
                    &ours,
                    flow_msg.status().unwrap(),
                    None,
                    None,
                )
                .finish(b"")
                .unwrap();
                buf.freeze()
            };
            if flow_msg.is_request() {
                last_request_to_bob = Some(Message::parse(input.clone()).unwrap());
            }
            bob.handle_datagram(now, peer, input);
            drain(&mut bob, &mut outputs, &mut events, &mut dialog);
        } else if row.from == "Bob" {
            if flow_msg.is_request() {
                // Bob hangs up.
                let d = dialog.clone().ok_or("BYE without a dialog")?;
                bob.handle_command(now, DialogCommand::Bye { dialog: d })
                    .map_err(|e| e.to_string())?;
                drain(&mut bob, &mut outputs, &mut events, &mut dialog);
                let ours = outputs
                    .pop_front()
                    .ok_or(format!("{}: no BYE sent", row.step))?;
                assert_eq!(
                    ours.method_bytes(),
                    flow_msg.method_bytes(),
                    "{name} {}",
                    row.step
                );
                assert_eq!(ours.call_id(), flow_msg.call_id(), "{name} {}", row.step);
                our_requests.push(ours);
                compared += 1;
                continue;
            }
            let code = flow_msg.status().unwrap();
            if !outputs.iter().any(|m| m.status() == Some(code)) {
                let d = dialog
                    .clone()
                    .ok_or(format!("{}: no call to answer", row.step))?;
                let cmd = match code {
                    100 => {
                        // Our INVITE transaction sends 100 itself after 200 ms of silence.
                        now += Duration::from_millis(250);
                        bob.handle_timeout(now);
                        None
                    }
                    180 => Some(DialogCommand::Ringing { dialog: d }),
                    200..=299 => Some(DialogCommand::Answer {
                        dialog: d,
                        sdp: flow_msg.body(),
                    }),
                    _ => Some(DialogCommand::Reject {
                        dialog: d,
                        status: code,
                    }),
                };
                if let Some(cmd) = cmd {
                    bob.handle_command(now, cmd).map_err(|e| e.to_string())?;
                }
                drain(&mut bob, &mut outputs, &mut events, &mut dialog);
            }
            let pos = outputs
                .iter()
                .position(|m| m.status() == Some(code))
                .ok_or(format!("{} {}: we did not send {code}", name, row.step))?;
            let ours = outputs.remove(pos).unwrap();
            let request = last_request_to_bob
                .as_ref()
                .ok_or("response before any request")?;
            // §8.2.6.2: Via (all, in order), From, Call-ID, CSeq copied; To copied plus tag.
            for h in [HeaderName::From, HeaderName::CallId] {
                assert_eq!(
                    headers(&ours, h),
                    headers(&flow_msg, h),
                    "{name} {} {h}",
                    row.step
                );
            }
            // Vias: the same list; where the RFC's Bob added `received` (§18.2.1), ours
            // carries the address the request really came from.
            let vias = |m: &Message| {
                m.vias()
                    .map(|v| {
                        let v = v.unwrap();
                        (
                            v.transport.to_vec(),
                            v.host_bytes.to_vec(),
                            v.port,
                            v.branch().map(<[u8]>::to_vec),
                            v.received().is_some(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(vias(&ours), vias(&flow_msg), "{name} {} Via", row.step);
            if flow_msg.top_via().unwrap().received().is_some() {
                assert_eq!(
                    ours.top_via().unwrap().received(),
                    Some(peer.ip()),
                    "{name} {}",
                    row.step
                );
            }
            assert_eq!(
                ours.cseq().unwrap(),
                flow_msg.cseq().unwrap(),
                "{name} {}",
                row.step
            );
            assert_eq!(
                ours.to_header().unwrap().uri_bytes,
                flow_msg.to_header().unwrap().uri_bytes,
                "{name} {}",
                row.step
            );
            match (ours.to_tag().unwrap(), flow_msg.to_tag().unwrap()) {
                (Some(o), Some(f)) => {
                    if !tag_map.iter().any(|(rfc, _)| rfc == f) {
                        tag_map.push((f.to_vec(), o.to_vec()));
                    }
                }
                (None, None) => {}
                // RFC 3665 prints the 200 to CANCEL without a tag; RFC 3261 §9.2 says it
                // SHOULD carry the INVITE response's tag, which ours does.
                (Some(o), None) if request.method_bytes() == Some(b"CANCEL") => {
                    assert!(
                        tag_map.iter().any(|(_, ours)| ours == o)
                            || outputs.iter().any(|m| m.to_tag().ok().flatten() == Some(o)),
                        "{name} {}",
                        row.step
                    );
                }
                (o, f) => panic!("{name} {}: To tag {o:?} vs {f:?}", row.step),
            }
            if (101..300).contains(&code) && request.method_bytes() == Some(b"INVITE") {
                assert!(
                    ours.header(HeaderName::Contact).is_some(),
                    "{name} {}: Contact",
                    row.step
                );
            }
            compared += 1;
        }
    }
    // Let timers run out (past the 180 s ring timeout a silent Bob hits in §3.10, then
    // Timer H): no transaction may be left.
    for _ in 0..2 {
        now += Duration::from_secs(200);
        bob.handle_timeout(now);
        drain(&mut bob, &mut outputs, &mut events, &mut dialog);
    }
    let ended = events.iter().any(|e| {
        matches!(
            e,
            SessionEvent::CallTerminated { .. } | SessionEvent::CallCancelled { .. }
        )
    });
    let acked = events
        .iter()
        .any(|e| matches!(e, SessionEvent::AckReceived { .. }));
    if ended {
        assert_eq!(bob.dialog_count(), 0, "{name}");
    }
    if events.iter().any(|e| {
        matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::LocalBye,
                ..
            }
        )
    }) {
        assert!(acked, "{name}: the 2xx was ACKed before the BYE");
    }
    assert_eq!(bob.transaction_count(), 0, "{name}: transactions left");
    Ok(compared)
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let needle = [b"tag=", from].concat();
    let with = [b"tag=", to].concat();
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(&needle) {
            out.extend_from_slice(&with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn bob_side_of_the_call_flows() {
    let mut replayed = Vec::new();
    let mut skipped = Vec::new();
    for (name, rows) in flows() {
        if !rows.iter().any(|r| r.to == "Bob") {
            continue;
        }
        match replay(&name, &rows) {
            Ok(n) => replayed.push((name, n)),
            Err(why) => skipped.push((name, why)),
        }
    }
    eprintln!("replayed: {replayed:?}\nnot replayed: {skipped:?}");
    let names: Vec<&str> = replayed.iter().map(|(n, _)| n.as_str()).collect();
    for must in [
        "3.1 Successful Session Establishment",
        "3.8 Unsuccessful No Answer",
        "3.9 Unsuccessful Busy",
        "3.11 Unsuccessful Temporarily Unavailable",
    ] {
        assert!(
            names.contains(&must),
            "{must} was not replayed: {skipped:?}"
        );
    }
    // Every replayed flow compared something, but §3.10, where Bob never answers.
    assert!(
        replayed
            .iter()
            .all(|(name, n)| *n > 0 || name.starts_with("3.10 "))
    );
    assert!(replayed.len() >= 10, "{replayed:?}");
}

/// The registrar side of RFC 3665 §2.2–§2.4 and RFC 3261 §24.1: statuses and the bindings
/// the 200s list. The §2 examples are separate illustrations (same Call-ID, CSeq and branch),
/// so each runs on a registrar seeded with the binding the RFC assumes from §2.1. §2.1 and
/// §2.5 need authentication, which is the application's (RFC 3261 §10.3 step 3).
#[test]
fn registrar_side_of_the_registration_flows() {
    use sipshard::registrar::RegistrarConfig;
    use sipshard::shard::RegisterMode;
    let t0 = Instant::now();
    let bob: SocketAddr = "127.0.0.1:5061".parse().unwrap();
    let fresh = || {
        let config = ShardConfig {
            register: RegisterMode::Registrar(RegistrarConfig::default()),
            ..ShardConfig::new("127.0.0.1:5060".parse().unwrap())
        };
        Shard::new(t0, config)
    };
    let exchange = |registrar: &mut Shard, req: Bytes| {
        registrar.handle_datagram(t0, bob, req);
        let resp = Message::parse(registrar.poll_transmit().expect("a response").payload).unwrap();
        let mut contacts: Vec<Vec<u8>> = resp
            .contacts()
            .map(|c| c.unwrap().addr().unwrap().uri_bytes.to_vec())
            .collect();
        contacts.sort();
        (resp.status().unwrap(), contacts)
    };
    let flow_contacts = |file: &str| {
        let m = Message::parse(common::read(&format!("callflows/{file}"))).unwrap();
        let mut v: Vec<Vec<u8>> = m
            .contacts()
            .map(|c| c.unwrap().addr().unwrap().uri_bytes.to_vec())
            .collect();
        v.sort();
        v
    };
    // The bindings each example assumes: §2.1's for §2.2 and §2.4, §2.2's for §2.3.
    let seed = |contacts: &str| {
        Bytes::from(format!(
            "REGISTER sips:ss2.biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS client.biloxi.example.com:5061;branch=z9hG4bKseed\r\nMax-Forwards: 70\r\n\
From: Bob <sips:bob@biloxi.example.com>;tag=a73kszlfl\r\nTo: Bob <sips:bob@biloxi.example.com>\r\n\
Call-ID: 1j9FpLxk3uxtm8tn@biloxi.example.com\r\nCSeq: 0 REGISTER\r\n\
Contact: {contacts}\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    let after_2_1 = "<sips:bob@client.biloxi.example.com>";
    let after_2_2 = "<sips:bob@client.biloxi.example.com>, <mailto:bob@biloxi.example.com>";
    let dir = "rfc3665/s2.0";
    for (example, state) in [
        ("2-update-of-contact-list", after_2_1),
        ("3-request-for-current-contact-list", after_2_2),
        ("4-cancellation-of-registration", after_2_1),
    ] {
        let reply = "F02-200-ok.sip";
        let mut registrar = fresh();
        assert_eq!(exchange(&mut registrar, seed(state)).0, 200);
        let (status, contacts) = exchange(
            &mut registrar,
            common::read(&format!("callflows/{dir}{example}/F01-register.sip")),
        );
        assert_eq!(status, 200, "{example}");
        assert_eq!(
            contacts,
            flow_contacts(&format!("{dir}{example}/{reply}")),
            "{example}"
        );
    }
    // RFC 3261 §24.1.
    let mut registrar = fresh();
    let (status, contacts) = exchange(
        &mut registrar,
        common::read("callflows/rfc3261-s24/s24.1-registration/F01-register.sip"),
    );
    assert_eq!(status, 200);
    assert_eq!(
        contacts,
        flow_contacts("rfc3261-s24/s24.1-registration/F02-200-ok.sip")
    );
}
