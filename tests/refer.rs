//! REFER as its recipient (RFC 3515), on simulated time: the 400 for a REFER without
//! Refer-To, the NOTIFYs of the implicit subscription that a 2xx starts, and the dialog a
//! REFER outside any dialog makes (§2.4.2).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use sipshard::dialog::{DialogId, DialogRecord};
use sipshard::message::{HeaderName, Message, Method};
use sipshard::shard::{DialogCommand, DialogError, PersistOp, SessionEvent, Shard, ShardConfig};
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

/// A confirmed call on a fresh shard, then the caller's REFER (CSeq 2) answered with
/// `status` by the application; the dialog and the callee's tag.
fn refer_answered(now: Instant, status: u16) -> (Shard, DialogId, String) {
    let mut uas = Shard::new(now, ShardConfig::new("127.0.0.1:5080".parse().unwrap()));
    let (dialog, tag) = confirmed_call(&mut uas, now);
    let refer_to = "Refer-To: <sip:carol@127.0.0.1:5090>\r\n";
    uas.handle_datagram(now, caller(), request("REFER", 2, "ref", &tag, refer_to));
    let txn = refer_event(&mut uas);
    let respond = DialogCommand::Respond {
        txn,
        status,
        headers: Vec::new(),
        body: Bytes::new(),
    };
    uas.handle_command(now, respond).unwrap();
    (uas, dialog, tag)
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
    let (mut uas, dialog, tag) = refer_answered(now, 202);

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
    let (mut uas, _, _) = refer_answered(now, 603);
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

/// A REFER outside any dialog (RFC 3515 §2.4.2), with `extra` headers beside Refer-To,
/// on a fresh shard; the application's view of it.
fn out_of_dialog_refer(now: Instant, extra: &str) -> (Shard, DialogId, ServerTxnId) {
    let mut uas = Shard::new(now, ShardConfig::new("127.0.0.1:5080".parse().unwrap()));
    let headers = format!("Refer-To: <sip:carol@127.0.0.1:5090>\r\n{extra}");
    uas.handle_datagram(now, caller(), request("REFER", 1, "ref", "", &headers));
    assert_eq!(uas.dialog_count(), 1, "the REFER makes a dialog");
    match uas.poll_event() {
        Some(SessionEvent::DialogRequest {
            dialog,
            txn,
            request,
        }) => {
            assert_eq!(request.method(), Some(Method::Refer));
            (uas, dialog, txn)
        }
        other => panic!("expected the REFER as a DialogRequest, got {other:?}"),
    }
}

fn respond(txn: ServerTxnId, status: u16) -> DialogCommand {
    DialogCommand::Respond {
        txn,
        status,
        headers: Vec::new(),
        body: Bytes::new(),
    }
}

#[test]
fn a_refer_outside_a_dialog_makes_one_that_ends_with_its_subscription() {
    let now = Instant::now();
    let (mut uas, dialog, txn) = out_of_dialog_refer(now, "");
    uas.handle_command(now, respond(txn, 202)).unwrap();
    let out = sent(&mut uas);
    assert_eq!(out.len(), 2, "{out:?}");
    let accepted = &out[0];
    assert_eq!(accepted.status(), Some(202));
    // §12.1.1: the response that makes the dialog has our tag and a Contact.
    assert_eq!(
        accepted.to_tag().unwrap(),
        Some(dialog.local_tag()),
        "the dialog's tag"
    );
    assert!(accepted.header(HeaderName::Contact).is_some());
    let first = &out[1];
    assert_eq!(first.method(), Some(Method::Notify));
    assert_eq!(
        first.request_uri_bytes(),
        Some(&b"sip:alice@127.0.0.1:5070"[..])
    );
    assert_eq!(first.to_tag().unwrap(), Some(&b"a1"[..]));
    assert_eq!(first.from_tag().unwrap(), Some(dialog.local_tag()));
    assert_eq!(header(first, "Event"), "refer;id=1");
    assert_eq!(header(first, "Subscription-State"), "active;expires=60");
    assert_eq!(header(first, "Content-Type"), "message/sipfrag;version=2.0");
    assert_eq!(first.body_bytes(), b"SIP/2.0 100 Trying\r\n");

    let status = DialogCommand::ReferStatus {
        dialog: dialog.clone(),
        refer_cseq: 1,
        status: 486,
    };
    uas.handle_command(now, status).unwrap();
    let out = sent(&mut uas);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        header(&out[0], "Subscription-State"),
        "terminated;reason=noresource"
    );
    assert_eq!(out[0].body_bytes(), b"SIP/2.0 486 Busy Here\r\n");
    assert_eq!(
        uas.dialog_count(),
        0,
        "the last usage ended, and the dialog"
    );
}

#[test]
fn a_refer_outside_a_dialog_that_is_refused_declined_or_unanswered_leaves_nothing() {
    let now = Instant::now();
    // Refused: the 603, no NOTIFY, no dialog.
    let (mut uas, _, txn) = out_of_dialog_refer(now, "");
    uas.handle_command(now, respond(txn, 603)).unwrap();
    let out = sent(&mut uas);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].status(), Some(603));
    assert_eq!(uas.dialog_count(), 0);

    // RFC 4488: accepted without a subscription, the dialog has no usage left.
    let (mut uas, _, txn) = out_of_dialog_refer(now, "Refer-Sub: false\r\n");
    uas.handle_command(now, respond(txn, 202)).unwrap();
    let out = sent(&mut uas);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(header(&out[0], "Refer-Sub"), "false");
    assert_eq!(uas.dialog_count(), 0);

    // Never answered: the transaction gives up after 64·T1, and the dialog with it.
    let (mut uas, _, _) = out_of_dialog_refer(now, "");
    uas.handle_timeout(now + std::time::Duration::from_secs(33));
    while uas.poll_transmit().is_some() {}
    assert_eq!(uas.dialog_count(), 0);
}

#[test]
fn an_out_of_dialog_refer_subscription_expires_with_a_last_sipfrag() {
    let now = Instant::now();
    let (mut uas, dialog, txn) = out_of_dialog_refer(now, "");
    uas.handle_command(now, respond(txn, 202)).unwrap();
    let notify = sent(&mut uas).pop().unwrap();
    // The subscriber answers the NOTIFY; the application never reports a final status.
    let mut buf = bytes::BytesMut::new();
    sipshard::message::ResponseBuilder::to_request(&mut buf, &notify, 200, None, None)
        .finish(b"")
        .unwrap();
    uas.handle_datagram(now, caller(), buf.freeze());
    while uas.poll_event().is_some() {}

    let later = now + std::time::Duration::from_secs(61);
    uas.handle_timeout(later);
    let out = sent(&mut uas);
    let last = out
        .iter()
        .find(|m| m.method() == Some(Method::Notify))
        .expect("the last NOTIFY");
    assert_eq!(
        header(last, "Subscription-State"),
        "terminated;reason=timeout"
    );
    assert_eq!(header(last, "Content-Type"), "message/sipfrag;version=2.0");
    assert_eq!(last.body_bytes(), b"SIP/2.0 100 Trying\r\n");
    assert!(std::iter::from_fn(|| uas.poll_event()).any(|e| matches!(
        e,
        SessionEvent::SubscriptionTerminated { dialog: d, .. } if d == dialog
    )));
    assert_eq!(uas.dialog_count(), 0);
}

/// Two shards on a perfect network: `a` at 5070 calls `b` at 5080.
struct Two {
    now: Instant,
    a: Shard,
    b: Shard,
}

impl Two {
    fn new() -> Self {
        let now = Instant::now();
        Two {
            now,
            a: Shard::new(now, ShardConfig::new(caller())),
            b: Shard::new(now, ShardConfig::new("127.0.0.1:5080".parse().unwrap())),
        }
    }

    /// `a` persists its dialogs (issue 22), on a wall clock that reads `wall` now.
    fn persisting_a(wall: std::time::SystemTime) -> Self {
        let mut two = Two::new();
        let mut config = ShardConfig::new(caller());
        config.persist = true;
        two.a = Shard::new(two.now, config);
        two.a.set_wall_clock(two.now, wall);
        two
    }

    /// Delivers datagrams both ways until both are quiet; returns each side's events.
    fn pump(&mut self) -> (Vec<SessionEvent>, Vec<SessionEvent>) {
        let (mut a_events, mut b_events) = (Vec::new(), Vec::new());
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                self.b.handle_datagram(self.now, caller(), t.payload);
                moved = true;
            }
            while let Some(t) = self.b.poll_transmit() {
                self.a
                    .handle_datagram(self.now, "127.0.0.1:5080".parse().unwrap(), t.payload);
                moved = true;
            }
            a_events.extend(std::iter::from_fn(|| self.a.poll_event()));
            b_events.extend(std::iter::from_fn(|| self.b.poll_event()));
            if !moved {
                return (a_events, b_events);
            }
        }
    }

    /// A confirmed call; the dialog ids on `a` and on `b`.
    fn call(&mut self) -> (DialogId, DialogId) {
        let make = DialogCommand::MakeCall {
            from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
            to: Bytes::from_static(b"<sip:bob@127.0.0.1:5080>"),
            request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
            destination: "127.0.0.1:5080".parse().unwrap(),
            sdp: Bytes::new(),
            headers: Vec::new(),
        };
        self.a.handle_command(self.now, make).unwrap();
        let (_, b_events) = self.pump();
        let b_dialog = b_events
            .into_iter()
            .find_map(|e| match e {
                SessionEvent::IncomingCall { dialog, .. } => Some(dialog),
                _ => None,
            })
            .expect("IncomingCall");
        let answer = DialogCommand::Answer {
            dialog: b_dialog.clone(),
            sdp: Bytes::new(),
        };
        self.b.handle_command(self.now, answer).unwrap();
        let (a_events, _) = self.pump();
        let a_dialog = a_events
            .into_iter()
            .find_map(|e| match e {
                SessionEvent::CallAnswered { dialog, .. } => Some(dialog),
                _ => None,
            })
            .expect("CallAnswered");
        (a_dialog, b_dialog)
    }

    /// `a` REFERs the peer of `a_dialog` to carol; `b`'s application answers `status`.
    /// Returns `a`'s events after that answer.
    fn refer_answered(&mut self, a_dialog: &DialogId, status: u16) -> Vec<SessionEvent> {
        let refer = DialogCommand::Refer {
            dialog: a_dialog.clone(),
            refer_to: Bytes::from_static(b"<sip:carol@127.0.0.1:5090>"),
        };
        self.a.handle_command(self.now, refer).unwrap();
        let (_, b_events) = self.pump();
        let txn = b_events
            .into_iter()
            .find_map(|e| match e {
                SessionEvent::DialogRequest { txn, request, .. } => {
                    assert_eq!(
                        request.refer_to().unwrap().unwrap().uri_bytes,
                        b"sip:carol@127.0.0.1:5090"
                    );
                    Some(txn)
                }
                _ => None,
            })
            .expect("the REFER reached b's application");
        let answer = DialogCommand::Respond {
            txn,
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        };
        self.b.handle_command(self.now, answer).unwrap();
        self.pump().0
    }
}

/// The ReferNotify events among `events`: (status, terminated).
fn refer_notifies(events: &[SessionEvent]) -> Vec<(Option<u16>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::ReferNotify {
                status, terminated, ..
            } => Some((*status, *terminated)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_refer_we_send_reports_the_peers_notifies_until_the_last() {
    let mut two = Two::new();
    let (a_dialog, b_dialog) = two.call();
    let a_events = two.refer_answered(&a_dialog, 202);
    assert!(
        a_events
            .iter()
            .any(|e| matches!(e, SessionEvent::RequestResult { status: 202, .. }))
    );
    assert_eq!(refer_notifies(&a_events), [(Some(100), false)]);

    let done = DialogCommand::ReferStatus {
        dialog: b_dialog.clone(),
        refer_cseq: 2,
        status: 486,
    };
    two.b.handle_command(two.now, done).unwrap();
    let (a_events, b_events) = two.pump();
    assert_eq!(refer_notifies(&a_events), [(Some(486), true)]);
    assert!(
        b_events
            .iter()
            .any(|e| matches!(e, SessionEvent::RequestResult { status: 200, .. })),
        "a answered the NOTIFY: {b_events:?}"
    );

    // The subscription is over: another refer NOTIFY is 481 (RFC 6665 §4.1.3), which ends
    // that usage only; the call stays up (RFC 5057 §5.1).
    let late = DialogCommand::ReferStatus {
        dialog: b_dialog,
        refer_cseq: 2,
        status: 200,
    };
    two.b.handle_command(two.now, late).unwrap();
    let (a_events, b_events) = two.pump();
    assert!(refer_notifies(&a_events).is_empty());
    assert!(
        b_events
            .iter()
            .any(|e| matches!(e, SessionEvent::RequestResult { status: 481, .. }))
    );
    assert!(
        !b_events
            .iter()
            .any(|e| matches!(e, SessionEvent::CallTerminated { .. })),
        "{b_events:?}"
    );
    assert_eq!((two.a.dialog_count(), two.b.dialog_count()), (1, 1));
}

#[test]
fn a_refer_we_sent_is_still_open_after_a_restart_and_its_last_notify_reported() {
    let wall = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let mut two = Two::persisting_a(wall);
    let (a_dialog, b_dialog) = two.call();
    assert_eq!(
        refer_notifies(&two.refer_answered(&a_dialog, 202)),
        [(Some(100), false)]
    );
    let mut store = std::collections::BTreeMap::new();
    while let Some(op) = two.a.poll_persist() {
        match op {
            PersistOp::Put { key, record } => drop(store.insert(key, record)),
            PersistOp::Delete { key } => drop(store.remove(&key)),
            other => panic!("{other:?}"),
        }
    }
    let [record] = store.values().collect::<Vec<_>>()[..] else {
        panic!("one record: {store:?}");
    };
    assert_eq!(
        DialogRecord::decode(record).unwrap().usages.refers_sent,
        [2],
        "the REFER's CSeq is kept"
    );

    // `a` is killed and starts again from its store.
    let mut config = ShardConfig::new(caller());
    config.persist = true;
    two.a = Shard::new(two.now, config);
    two.a.set_wall_clock(two.now, wall);
    two.a.restore(two.now, record).unwrap();
    while two.a.poll_event().is_some() {}

    let done = DialogCommand::ReferStatus {
        dialog: b_dialog,
        refer_cseq: 2,
        status: 200,
    };
    two.b.handle_command(two.now, done).unwrap();
    let (a_events, b_events) = two.pump();
    assert_eq!(refer_notifies(&a_events), [(Some(200), true)]);
    assert!(
        b_events
            .iter()
            .any(|e| matches!(e, SessionEvent::RequestResult { status: 200, .. })),
        "the restarted `a` answered the last NOTIFY 200, not 481: {b_events:?}"
    );
    // The closed subscription is written too: a second restart would 481 a late NOTIFY.
    let rewritten = std::iter::from_fn(|| two.a.poll_persist()).find_map(|op| match op {
        PersistOp::Put { record, .. } => Some(record),
        _ => None,
    });
    let rewritten = rewritten.expect("the record is rewritten");
    assert!(
        DialogRecord::decode(&rewritten)
            .unwrap()
            .usages
            .refers_sent
            .is_empty()
    );
}

#[test]
fn a_declined_refer_closes_its_subscription_and_other_notifies_reach_the_application() {
    let mut two = Two::new();
    let (a_dialog, _) = two.call();
    let a_events = two.refer_answered(&a_dialog, 603);
    assert!(
        a_events
            .iter()
            .any(|e| matches!(e, SessionEvent::RequestResult { status: 603, .. }))
    );
    assert!(refer_notifies(&a_events).is_empty());

    // A NOTIFY of another package is the application's to answer.
    let id = a_dialog.clone();
    let (call_id, local, remote) = (
        String::from_utf8_lossy(id.call_id()).into_owned(),
        String::from_utf8_lossy(id.local_tag()).into_owned(),
        String::from_utf8_lossy(id.remote_tag()).into_owned(),
    );
    let notify = |event: &str, branch: &str| {
        Bytes::from(format!(
            "NOTIFY sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag={remote}\r\nTo: <sip:alice@127.0.0.1>;tag={local}\r\n\
Call-ID: {call_id}\r\nCSeq: 50 NOTIFY\r\nEvent: {event}\r\nSubscription-State: active\r\n\
Content-Length: 0\r\n\r\n"
        ))
    };
    two.a.handle_datagram(
        two.now,
        "127.0.0.1:5080".parse().unwrap(),
        notify("dialog", "n1"),
    );
    let events: Vec<_> = std::iter::from_fn(|| two.a.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SessionEvent::DialogRequest { .. })),
        "{events:?}"
    );
    // A refer NOTIFY for the declined REFER matches no subscription: 481.
    two.a.handle_datagram(
        two.now,
        "127.0.0.1:5080".parse().unwrap(),
        notify("refer;id=2", "n2"),
    );
    let answer = Message::parse(two.a.poll_transmit().expect("an answer").payload).unwrap();
    assert_eq!(answer.status(), Some(481));
}

#[test]
fn an_unanswered_notify_ends_the_subscription_not_the_call() {
    // RFC 5057 §5.1: a NOTIFY that times out (Timer F) ends its subscription usage only.
    let now = Instant::now();
    let (mut uas, _, _) = refer_answered(now, 202);
    assert_eq!(sent(&mut uas).len(), 2, "202 and the NOTIFY");
    // The caller never answers the NOTIFY.
    let mut events = Vec::new();
    let mut t = now;
    while t < now + std::time::Duration::from_secs(40) {
        t += std::time::Duration::from_millis(500);
        uas.handle_timeout(t);
        events.extend(std::iter::from_fn(|| uas.poll_event()));
        sent(&mut uas);
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SessionEvent::RequestResult { status: 408, .. })),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SessionEvent::CallTerminated { .. })),
        "{events:?}"
    );
    assert_eq!(uas.dialog_count(), 1);
}

#[test]
fn a_refer_declining_the_subscription_gets_refer_sub_false_and_no_notify() {
    // RFC 4488: `Refer-Sub: false` (here also `Require: norefersub`, which we support).
    let now = Instant::now();
    let mut uas = Shard::new(now, ShardConfig::new("127.0.0.1:5080".parse().unwrap()));
    let (_, tag) = confirmed_call(&mut uas, now);
    let extra =
        "Refer-To: <sip:carol@127.0.0.1:5090>\r\nRefer-Sub: false\r\nRequire: norefersub\r\n";
    uas.handle_datagram(now, caller(), request("REFER", 2, "ref", &tag, extra));
    let txn = refer_event(&mut uas);
    let accept = DialogCommand::Respond {
        txn,
        status: 202,
        headers: Vec::new(),
        body: Bytes::new(),
    };
    uas.handle_command(now, accept).unwrap();
    let out = sent(&mut uas);
    assert_eq!(out.len(), 1, "the 202 and no NOTIFY: {out:?}");
    assert_eq!(out[0].status(), Some(202));
    assert_eq!(header(&out[0], "Refer-Sub"), "false");

    // norefersub extends REFER only: another request requiring it still gets 420.
    uas.handle_datagram(
        now,
        caller(),
        request("OPTIONS", 3, "opt", &tag, "Require: norefersub\r\n"),
    );
    let out = sent(&mut uas);
    assert_eq!(out[0].status(), Some(420));
    // In the dialog, OPTIONS says what we accept as well as what we allow (§11.2).
    uas.handle_datagram(now, caller(), request("OPTIONS", 4, "opt2", &tag, ""));
    let out = sent(&mut uas);
    assert_eq!(out[0].status(), Some(200));
    assert!(header(&out[0], "Allow").contains("REFER"));
    assert_eq!(
        header(&out[0], "Accept"),
        "application/sdp, multipart/mixed"
    );
}
