//! REFER as its recipient (RFC 3515), on simulated time: the 400 for a REFER without
//! Refer-To, and the NOTIFYs of the implicit subscription that a 2xx starts.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use sipshard::dialog::DialogId;
use sipshard::message::{HeaderName, Message, Method};
use sipshard::shard::{DialogCommand, DialogError, SessionEvent, Shard, ShardConfig};
use sipshard::transaction::ServerTxnId;

fn caller() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

/// Everything the shard sent, parsed.
fn sent(uas: &mut Shard) -> Vec<Message> {
    std::iter::from_fn(|| uas.poll_transmit())
        .map(|t| Message::parse(t.payload).unwrap())
        .collect()
}

fn request(method: &str, cseq: u32, branch: &str, to_tag: &str, extra: &str) -> Bytes {
    let to_tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    Bytes::from(format!(
        "{method} sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>{to_tag}\r\nCall-ID: refer@test\r\n\
CSeq: {cseq} {method}\r\nContact: <sip:alice@127.0.0.1:5070>\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

/// A confirmed call from `caller()`: its dialog and the callee's tag.
fn confirmed_call(uas: &mut Shard, now: Instant) -> (DialogId, String) {
    uas.handle_datagram(now, caller(), request("INVITE", 1, "inv", "", ""));
    let dialog = match uas.poll_event() {
        Some(SessionEvent::IncomingCall { dialog, .. }) => dialog,
        other => panic!("expected IncomingCall, got {other:?}"),
    };
    let answer = DialogCommand::Answer {
        dialog: dialog.clone(),
        sdp: Bytes::new(),
    };
    uas.handle_command(now, answer).unwrap();
    let ok = sent(uas).pop().expect("the 200");
    assert_eq!(ok.status(), Some(200));
    let tag = String::from_utf8(ok.to_tag().unwrap().unwrap().to_vec()).unwrap();
    uas.handle_datagram(now, caller(), request("ACK", 1, "ack", &tag, ""));
    while uas.poll_event().is_some() {}
    (dialog, tag)
}

/// The peer's REFER as the application sees it.
fn refer_event(uas: &mut Shard) -> ServerTxnId {
    loop {
        match uas.poll_event() {
            Some(SessionEvent::DialogRequest { txn, request, .. }) => {
                assert_eq!(request.method(), Some(Method::Refer));
                return txn;
            }
            Some(_) => continue,
            None => panic!("the REFER did not reach the application"),
        }
    }
}

fn header<'m>(m: &'m Message, name: &str) -> &'m str {
    let value = m
        .headers()
        .find(|h| h.name_bytes.eq_ignore_ascii_case(name.as_bytes()))
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
        .value;
    std::str::from_utf8(value).unwrap()
}

#[test]
fn an_accepted_refer_is_followed_by_notifies_until_a_final_status() {
    let now = Instant::now();
    let mut uas = Shard::new(now, ShardConfig::new("127.0.0.1:5080".parse().unwrap()));
    let (dialog, tag) = confirmed_call(&mut uas, now);
    let refer_to = "Refer-To: <sip:carol@127.0.0.1:5090>\r\n";
    uas.handle_datagram(now, caller(), request("REFER", 2, "ref", &tag, refer_to));
    let txn = refer_event(&mut uas);
    let respond = DialogCommand::Respond {
        txn,
        status: 202,
        headers: Vec::new(),
        body: Bytes::new(),
    };
    uas.handle_command(now, respond).unwrap();

    // The 202, then at once the initial NOTIFY (RFC 6665 §4.2.1.2).
    let out = sent(&mut uas);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].status(), Some(202));
    let first = &out[1];
    assert_eq!(first.method(), Some(Method::Notify));
    assert_eq!(
        first.request_uri_bytes(),
        Some(&b"sip:alice@127.0.0.1:5070"[..]),
        "to the remote target"
    );
    assert_eq!(first.to_tag().unwrap(), Some(&b"a1"[..]));
    assert_eq!(first.from_tag().unwrap(), Some(tag.as_bytes()));
    assert_eq!(first.header(HeaderName::CallId), Some(&b"refer@test"[..]));
    assert_eq!(header(first, "Event"), "refer;id=2");
    assert_eq!(header(first, "Subscription-State"), "active;expires=60");
    assert_eq!(header(first, "Content-Type"), "message/sipfrag;version=2.0");
    assert_eq!(first.body_bytes(), b"SIP/2.0 100 Trying\r\n");
    let first_cseq = first.cseq().unwrap().seq;

    // The application reports the referenced call answered: the last NOTIFY.
    let status = DialogCommand::ReferStatus {
        dialog: dialog.clone(),
        refer_cseq: 2,
        status: 200,
    };
    uas.handle_command(now, status).unwrap();
    let out = sent(&mut uas);
    assert_eq!(out.len(), 1, "{out:?}");
    let last = &out[0];
    assert_eq!(last.method(), Some(Method::Notify));
    assert_eq!(last.cseq().unwrap().seq, first_cseq + 1);
    assert_eq!(header(last, "Event"), "refer;id=2");
    assert_eq!(
        header(last, "Subscription-State"),
        "terminated;reason=noresource"
    );
    assert_eq!(last.body_bytes(), b"SIP/2.0 200 OK\r\n");

    // Out-of-range statuses are refused without a message.
    let bad = DialogCommand::ReferStatus {
        dialog,
        refer_cseq: 2,
        status: 99,
    };
    assert!(matches!(
        uas.handle_command(now, bad),
        Err(DialogError::InvalidInput(_))
    ));
    assert!(sent(&mut uas).is_empty());
}

#[test]
fn a_refused_refer_starts_no_subscription() {
    let now = Instant::now();
    let mut uas = Shard::new(now, ShardConfig::new("127.0.0.1:5080".parse().unwrap()));
    let (_, tag) = confirmed_call(&mut uas, now);
    let refer_to = "Refer-To: <sip:carol@127.0.0.1:5090>\r\n";
    uas.handle_datagram(now, caller(), request("REFER", 2, "ref", &tag, refer_to));
    let txn = refer_event(&mut uas);
    let respond = DialogCommand::Respond {
        txn,
        status: 603,
        headers: Vec::new(),
        body: Bytes::new(),
    };
    uas.handle_command(now, respond).unwrap();
    let out = sent(&mut uas);
    assert_eq!(out.len(), 1, "no NOTIFY after a refusal: {out:?}");
    assert_eq!(out[0].status(), Some(603));
}

#[test]
fn a_refer_without_refer_to_gets_400_and_never_reaches_the_application() {
    let now = Instant::now();
    let mut uas = Shard::new(now, ShardConfig::new("127.0.0.1:5080".parse().unwrap()));
    let (_, tag) = confirmed_call(&mut uas, now);
    uas.handle_datagram(now, caller(), request("REFER", 2, "ref", &tag, ""));
    let out = sent(&mut uas);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].status(), Some(400));
    assert!(uas.poll_event().is_none());

    // Two Refer-To values are refused by the message checks (RFC 3515 §2.4.1).
    let two = "Refer-To: <sip:carol@127.0.0.1>\r\nRefer-To: <sip:dave@127.0.0.1>\r\n";
    uas.handle_datagram(now, caller(), request("REFER", 3, "ref2", &tag, two));
    let out = sent(&mut uas);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].status(), Some(400));
    assert!(uas.poll_event().is_none());
}
