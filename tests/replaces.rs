//! Replaces (RFC 3891) as the UAS, on simulated time: the §3 verdicts, the replaced
//! dialog ended when the new call is answered (BYE, or CANCEL for our early call), and the
//! query between two shards when the two Call-IDs hash apart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipshard::dialog::DialogId;
use sipshard::message::{HeaderName, Message, Method};
use sipshard::shard::{
    DialogCommand, PeerMessage, SessionEvent, Shard, ShardConfig, ShardOwner, TerminationReason,
    shard_for_call_id,
};

fn alice() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

fn carol() -> SocketAddr {
    "127.0.0.1:5090".parse().unwrap()
}

fn bob() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

/// Everything the shard sent: (destination, message).
fn sent(shard: &mut Shard) -> Vec<(SocketAddr, Message)> {
    std::iter::from_fn(|| shard.poll_transmit())
        .map(|t| (t.destination, Message::parse(t.payload).unwrap()))
        .collect()
}

fn statuses(out: &[(SocketAddr, Message)]) -> Vec<u16> {
    out.iter().filter_map(|(_, m)| m.status()).collect()
}

/// A request to Bob (`from_tag` is the sender's, `to_tag` empty outside a dialog).
struct Request<'a> {
    method: &'a str,
    call_id: &'a str,
    cseq: u32,
    branch: &'a str,
    from_tag: &'a str,
    to_tag: &'a str,
    port: u16,
    extra: &'a str,
}

impl Request<'_> {
    fn bytes(&self) -> Bytes {
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        let Request {
            method,
            call_id,
            cseq,
            branch,
            from_tag,
            port,
            extra,
            ..
        } = self;
        Bytes::from(format!(
            "{method} sip:bob@127.0.0.1:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
From: <sip:peer@127.0.0.1>;tag={from_tag}\r\nTo: <sip:bob@127.0.0.1>{to_tag}\r\n\
Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:peer@127.0.0.1:{port}>\r\n\
{extra}Content-Length: 0\r\n\r\n"
        ))
    }
}

fn invite<'a>(call_id: &'a str, branch: &'a str, from_tag: &'a str, extra: &'a str) -> Request<'a> {
    Request {
        method: "INVITE",
        call_id,
        cseq: 1,
        branch,
        from_tag,
        to_tag: "",
        port: 5090,
        extra,
    }
}

/// The next IncomingCall: its dialog and what it replaces.
fn incoming(shard: &mut Shard) -> (DialogId, Option<DialogId>) {
    loop {
        match shard.poll_event() {
            Some(SessionEvent::IncomingCall {
                dialog, replaces, ..
            }) => return (dialog, replaces.map(|r| *r)),
            Some(_) => continue,
            None => panic!("no IncomingCall"),
        }
    }
}

/// Alice's call to Bob on `call_id`, answered and ACKed: its dialog at Bob.
fn confirmed_call(bob: &mut Shard, now: Instant, call_id: &str) -> DialogId {
    let token: String = call_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let (branch, ack_branch) = (format!("{token}-inv"), format!("{token}-ack"));
    let mut request = invite(call_id, &branch, "a1", "");
    request.port = 5070;
    bob.handle_datagram(now, alice(), request.bytes());
    let (dialog, replaces) = incoming(bob);
    assert_eq!(replaces, None);
    let answer = DialogCommand::Answer {
        dialog: dialog.clone(),
        sdp: Bytes::new(),
    };
    bob.handle_command(now, answer).unwrap();
    assert_eq!(statuses(&sent(bob)), [200]);
    let tag = std::str::from_utf8(dialog.local_tag()).unwrap().to_owned();
    let ack = Request {
        method: "ACK",
        branch: &ack_branch,
        to_tag: &tag,
        ..request
    };
    bob.handle_datagram(now, alice(), ack.bytes());
    while bob.poll_event().is_some() {}
    dialog
}

/// `Replaces:` naming `dialog` as Bob sees it (to-tag Bob's, from-tag the peer's).
fn replaces_header(dialog: &DialogId, flags: &str) -> String {
    format!(
        "Replaces: {};to-tag={};from-tag={}{flags}\r\n",
        String::from_utf8_lossy(dialog.call_id()),
        String::from_utf8_lossy(dialog.local_tag()),
        String::from_utf8_lossy(dialog.remote_tag()),
    )
}

fn shard(now: Instant) -> Shard {
    Shard::new(now, ShardConfig::new(bob()))
}

/// Bob with a confirmed call from Alice (`old`), and Carol's INVITE replacing it (with
/// `extra` headers beside its Replaces) as the IncomingCall `new`.
struct Replacing {
    bob: Shard,
    old: DialogId,
    new: DialogId,
    replaces: Option<DialogId>,
}

fn replacing(now: Instant, extra: &str) -> Replacing {
    let mut bob = shard(now);
    let old = confirmed_call(&mut bob, now, "old@test");
    let header = format!("{}{extra}", replaces_header(&old, ""));
    bob.handle_datagram(
        now,
        carol(),
        invite("new@test", "c-inv", "c1", &header).bytes(),
    );
    let (new, replaces) = incoming(&mut bob);
    Replacing {
        bob,
        old,
        new,
        replaces,
    }
}

#[test]
fn an_answered_replacement_ends_the_confirmed_dialog_with_bye() {
    let now = Instant::now();
    let Replacing {
        mut bob,
        old,
        new,
        replaces,
    } = replacing(now, "");
    assert_eq!(
        replaces.as_ref(),
        Some(&old),
        "the event names the dialog replaced"
    );
    assert!(
        sent(&mut bob).is_empty(),
        "nothing happens before the answer"
    );

    let answer = DialogCommand::Answer {
        dialog: new.clone(),
        sdp: Bytes::new(),
    };
    bob.handle_command(now, answer).unwrap();
    let out = sent(&mut bob);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!((out[0].0, out[0].1.status()), (carol(), Some(200)));
    let (to, bye) = &out[1];
    assert_eq!(*to, alice(), "BYE to the replaced dialog's peer");
    assert_eq!(bye.method(), Some(Method::Bye));
    assert_eq!(bye.call_id(), Some(&b"old@test"[..]));
    assert_eq!(bye.to_tag().unwrap(), Some(&b"a1"[..]));

    // Alice answers the BYE: the old dialog ends, replaced; the new one stays.
    bob.handle_datagram(now, alice(), common::sip::response_to(bye, 200));
    let ended: Vec<_> = std::iter::from_fn(|| bob.poll_event())
        .filter_map(|e| match e {
            SessionEvent::CallTerminated { dialog, reason } => Some((dialog, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(ended, [(old.clone(), TerminationReason::Replaced)]);
    assert!(bob.dialog_state(&old).is_none());
    assert!(bob.dialog_state(&new).is_some());
}

#[test]
fn a_refused_replacement_leaves_the_dialog_alone() {
    let now = Instant::now();
    let Replacing {
        mut bob, old, new, ..
    } = replacing(now, "");
    let reject = DialogCommand::Reject {
        dialog: new,
        status: 603,
    };
    bob.handle_command(now, reject).unwrap();
    assert_eq!(statuses(&sent(&mut bob)), [603]);
    assert!(sent(&mut bob).is_empty(), "no BYE");
    assert!(bob.dialog_state(&old).is_some());
}

#[test]
fn the_rfc_3891_refusals() {
    let now = Instant::now();
    let mut bob = shard(now);
    let old = confirmed_call(&mut bob, now, "old@test");
    let (call_id, local, remote) = (
        String::from_utf8_lossy(old.call_id()).into_owned(),
        String::from_utf8_lossy(old.local_tag()).into_owned(),
        String::from_utf8_lossy(old.remote_tag()).into_owned(),
    );
    let good = replaces_header(&old, "");
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("Replaces: nosuch@test;to-tag={local};from-tag={remote}\r\n"),
            481,
            "no such dialog",
        ),
        (
            // The tags as the peer sees them, not as we do (§3: to-tag is our tag).
            format!("Replaces: {call_id};to-tag={remote};from-tag={local}\r\n"),
            481,
            "tags swapped",
        ),
        (
            replaces_header(&old, ";early-only"),
            486,
            "early-only, confirmed",
        ),
        (format!("{good}{good}"), 400, "two Replaces"),
        (
            format!("{good}Join: {call_id};to-tag=x;from-tag=y\r\n"),
            400,
            "with Join",
        ),
        (
            format!("Replaces: {call_id};to-tag={local}\r\n"),
            400,
            "no from-tag",
        ),
    ];
    for (i, (extra, status, why)) in cases.iter().enumerate() {
        let branch = format!("case{i}");
        let call_id = format!("new{i}@test");
        bob.handle_datagram(now, carol(), invite(&call_id, &branch, "c1", extra).bytes());
        let out = sent(&mut bob);
        assert_eq!(statuses(&out), [*status], "{why}");
        assert!(out.iter().all(|(to, _)| *to == carol()), "{why}: no BYE");
        assert!(bob.poll_event().is_none(), "{why}: no event");
    }
    assert!(bob.dialog_state(&old).is_some(), "the dialog lives on");

    // Replaces outside an INVITE is a 400 (§3).
    let options = Request {
        method: "OPTIONS",
        call_id: "opt@test",
        cseq: 1,
        branch: "opt",
        from_tag: "c1",
        to_tag: "",
        port: 5090,
        extra: &good,
    };
    bob.handle_datagram(now, carol(), options.bytes());
    assert_eq!(statuses(&sent(&mut bob)), [400]);
}

#[test]
fn an_early_dialog_the_peer_started_is_not_replaced_and_an_ending_one_gets_603() {
    let now = Instant::now();
    let mut bob = shard(now);
    // Alice's INVITE, unanswered: an early dialog Bob did not start.
    let mut request = invite("early@test", "a-inv", "a1", "");
    request.port = 5070;
    bob.handle_datagram(now, alice(), request.bytes());
    let (early, _) = incoming(&mut bob);
    let header = replaces_header(&early, "");
    bob.handle_datagram(
        now,
        carol(),
        invite("new1@test", "c1", "c1", &header).bytes(),
    );
    assert_eq!(statuses(&sent(&mut bob)), [481]);

    // A confirmed dialog whose BYE is out: already ending.
    let old = confirmed_call(&mut bob, now, "old@test");
    bob.handle_command(
        now,
        DialogCommand::Bye {
            dialog: old.clone(),
        },
    )
    .unwrap();
    let _bye = sent(&mut bob);
    let header = replaces_header(&old, "");
    bob.handle_datagram(
        now,
        carol(),
        invite("new2@test", "c2", "c1", &header).bytes(),
    );
    assert_eq!(statuses(&sent(&mut bob)), [603]);
}

#[test]
fn replacing_our_early_call_cancels_it() {
    let now = Instant::now();
    let mut bob = shard(now);
    let call = bob
        .handle_command(
            now,
            DialogCommand::MakeCall {
                from: Bytes::from_static(b"<sip:bob@127.0.0.1>"),
                to: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
                request_uri: Bytes::from_static(b"sip:alice@127.0.0.1:5070"),
                destination: alice(),
                sdp: Bytes::new(),
                headers: Vec::new(),
            },
        )
        .unwrap();
    let sipshard::shard::CommandOutcome::Call(call) = call else {
        panic!("MakeCall returns its handle")
    };
    let out = sent(&mut bob);
    let inv = &out[0].1;
    // Alice rings, with her tag: an early dialog Bob started.
    let ringing = format!(
        "SIP/2.0 180 Ringing\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=al\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n",
        String::from_utf8_lossy(inv.header(HeaderName::Via).unwrap()),
        String::from_utf8_lossy(inv.header(HeaderName::From).unwrap()),
        String::from_utf8_lossy(inv.header(HeaderName::To).unwrap()),
        String::from_utf8_lossy(call.call_id()),
    );
    bob.handle_datagram(now, alice(), Bytes::from(ringing));
    while bob.poll_event().is_some() {}
    let early = DialogId::new(call.call_id(), call.local_tag(), b"al");

    // Carol picks the call up (RFC 3891 §7.1): the new call replaces the early dialog.
    let header = replaces_header(&early, ";early-only");
    bob.handle_datagram(
        now,
        carol(),
        invite("pickup@test", "c-inv", "c1", &header).bytes(),
    );
    let (new, replaces) = incoming(&mut bob);
    assert_eq!(replaces, Some(early));
    bob.handle_command(
        now,
        DialogCommand::Answer {
            dialog: new,
            sdp: Bytes::new(),
        },
    )
    .unwrap();
    let out = sent(&mut bob);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].1.status(), Some(200));
    assert_eq!(out[1].0, alice());
    assert_eq!(out[1].1.method(), Some(Method::Cancel));
    assert_eq!(out[1].1.call_id(), Some(call.call_id()));
}

#[test]
fn require_replaces_is_accepted_and_options_lists_it() {
    let now = Instant::now();
    let Replacing {
        mut bob,
        old,
        replaces,
        ..
    } = replacing(now, "Require: replaces\r\n");
    assert_eq!(replaces, Some(old));

    let options = Request {
        method: "OPTIONS",
        call_id: "opt@test",
        cseq: 1,
        branch: "opt",
        from_tag: "c1",
        to_tag: "",
        port: 5090,
        extra: "",
    };
    bob.handle_datagram(now, carol(), options.bytes());
    let out = sent(&mut bob);
    let ok = &out.last().unwrap().1;
    assert_eq!(ok.status(), Some(200));
    let supported: Vec<&[u8]> = ok.supported().filter_map(Result::ok).collect();
    assert!(supported.contains(&&b"replaces"[..]), "{supported:?}");
}

/// A Call-ID that hashes to shard `index` of 2.
fn call_id_on(index: usize, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}{n}@test"))
        .find(|c| shard_for_call_id(c.as_bytes(), 2) == index)
        .expect("one in two Call-IDs hashes to each shard")
}

fn two_shards(now: Instant) -> [Shard; 2] {
    [0, 1].map(|index| {
        let mut config = ShardConfig::new(bob());
        config.owner = Some(ShardOwner { index, count: 2 });
        Shard::new(now, config)
    })
}

/// Carries every peer message between the two shards until none is left; returns how
/// many went.
fn carry(shards: &mut [Shard; 2], now: Instant) -> usize {
    let mut carried = 0;
    loop {
        let mut moved = false;
        for from in 0..2 {
            while let Some((to, message)) = shards[from].poll_peer() {
                assert_ne!(to, from, "a shard answers its own Call-IDs itself");
                shards[to].handle_peer(now, message);
                carried += 1;
                moved = true;
            }
        }
        if !moved {
            return carried;
        }
    }
}

#[test]
fn across_shards_the_owner_gives_the_verdict_and_ends_the_dialog() {
    let now = Instant::now();
    let mut shards = two_shards(now);
    let (old_call, new_call) = (call_id_on(0, "old"), call_id_on(1, "new"));
    let old = confirmed_call(&mut shards[0], now, &old_call);

    // The INVITE reaches shard 1 (its Call-ID's owner), which asks shard 0.
    let header = replaces_header(&old, "");
    shards[1].handle_datagram(
        now,
        carol(),
        invite(&new_call, "c-inv", "c1", &header).bytes(),
    );
    assert!(shards[1].poll_event().is_none(), "held until the verdict");
    let (to, query) = shards[1].poll_peer().expect("a query to the owner");
    assert_eq!(to, 0);
    assert!(matches!(
        query,
        PeerMessage::ReplacesQuery {
            early_only: false,
            ..
        }
    ));
    shards[0].handle_peer(now, query);
    assert_eq!(carry(&mut shards, now), 1, "the verdict");
    let (new, replaces) = incoming(&mut shards[1]);
    assert_eq!(replaces.as_ref(), Some(&old));

    shards[1]
        .handle_command(
            now,
            DialogCommand::Answer {
                dialog: new,
                sdp: Bytes::new(),
            },
        )
        .unwrap();
    assert_eq!(statuses(&sent(&mut shards[1])), [200]);
    assert_eq!(carry(&mut shards, now), 1, "end the replaced dialog");
    let out = sent(&mut shards[0]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, alice());
    assert_eq!(out[0].1.method(), Some(Method::Bye));
    assert_eq!(out[0].1.call_id(), Some(old_call.as_bytes()));
}

#[test]
fn across_shards_no_such_dialog_is_481_and_a_cancel_before_the_verdict_wins() {
    let now = Instant::now();
    let mut shards = two_shards(now);
    let old_call = call_id_on(0, "old");
    let old = confirmed_call(&mut shards[0], now, &old_call);

    let missing = format!("Replaces: {old_call};to-tag=nobody;from-tag=a1\r\n");
    let new_call = call_id_on(1, "new");
    shards[1].handle_datagram(
        now,
        carol(),
        invite(&new_call, "c1", "c1", &missing).bytes(),
    );
    assert_eq!(carry(&mut shards, now), 2, "query and verdict");
    assert_eq!(statuses(&sent(&mut shards[1])), [481]);

    // A CANCEL before the verdict: 200 and 487 at once; the late verdict changes nothing.
    let header = replaces_header(&old, "");
    let call = call_id_on(1, "cancelled");
    shards[1].handle_datagram(now, carol(), invite(&call, "c2", "c1", &header).bytes());
    let query = shards[1].poll_peer().expect("the query");
    let cancel = Request {
        method: "CANCEL",
        ..invite(&call, "c2", "c1", "")
    };
    shards[1].handle_datagram(now, carol(), cancel.bytes());
    let mut codes = statuses(&sent(&mut shards[1]));
    codes.sort_unstable();
    assert_eq!(codes, [200, 487]);
    shards[0].handle_peer(now, query.1);
    assert_eq!(carry(&mut shards, now), 1, "the late verdict");
    assert!(sent(&mut shards[1]).is_empty());
    assert!(
        shards[1].poll_event().is_none(),
        "no IncomingCall for a cancelled INVITE"
    );
    assert!(
        sent(&mut shards[0]).is_empty(),
        "the old dialog is untouched"
    );
}

#[test]
fn a_verdict_that_does_not_come_gets_503_after_two_seconds() {
    let start = Instant::now();
    let mut shards = two_shards(start);
    let old_call = call_id_on(0, "old");
    let old = confirmed_call(&mut shards[0], start, &old_call);
    sent(&mut shards[0]);
    // The owner never answers (a stuck shard): the query is lost.
    let header = replaces_header(&old, "");
    let call = call_id_on(1, "stuck");
    shards[1].handle_datagram(start, carol(), invite(&call, "s1", "c1", &header).bytes());
    let (_, query) = shards[1].poll_peer().expect("the query");
    sent(&mut shards[1]);
    shards[1].handle_timeout(start + Duration::from_millis(1990));
    assert!(
        statuses(&sent(&mut shards[1])).iter().all(|&c| c < 200),
        "still waiting (a 100 Trying at most)"
    );
    let late = start + Duration::from_secs(2);
    shards[1].handle_timeout(late);
    let out = sent(&mut shards[1]);
    assert_eq!(statuses(&out), [503]);
    assert_eq!(out[0].1.header(HeaderName::RetryAfter), Some(&b"5"[..]));
    // The verdict, if it comes after all, finds nothing to answer.
    shards[0].handle_peer(late, query);
    assert_eq!(carry(&mut shards, late), 1);
    assert!(sent(&mut shards[1]).is_empty());
    assert!(shards[1].poll_event().is_none());
    assert!(sent(&mut shards[0]).is_empty(), "the old call goes on");
}

mod common;

/// A UDP peer of the `sipshard` binary: sends requests, reads what comes back.
struct Peer {
    socket: std::net::UdpSocket,
    server: SocketAddr,
}

impl Peer {
    fn new(server: SocketAddr) -> Peer {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        Peer { socket, server }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Sends `request` (its Via and Contact name this peer's port).
    fn send(&self, mut request: Request<'_>) {
        request.port = self.port();
        self.socket.send_to(&request.bytes(), self.server).unwrap();
    }

    fn send_raw(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).unwrap();
    }

    /// The first message within 10 s that `want` accepts (others are skipped).
    fn expect(&self, what: &str, want: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            let m = Message::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
            if want(&m) {
                return m;
            }
        }
        panic!("no {what} within 10 s");
    }
}

#[test]
fn the_server_ends_a_call_on_its_other_shard_when_a_replacement_is_answered() {
    let server = common::peers::Server::start(&[
        "--mode",
        "auto-answer",
        "--shards",
        "2",
        "--stop-deadline-s",
        "1",
    ]);
    let (alice, carol) = (Peer::new(server.sip), Peer::new(server.sip));
    let (old_call, new_call) = (call_id_on(0, "e2e-old"), call_id_on(1, "e2e-new"));

    // Alice's call, answered by the server's auto-answer and ACKed.
    alice.send(invite(&old_call, "a-inv", "a1", ""));
    let ok = alice.expect("200 to Alice's INVITE", |m| m.status() == Some(200));
    let bob_tag = String::from_utf8(ok.to_tag().unwrap().unwrap().to_vec()).unwrap();
    alice.send(Request {
        method: "ACK",
        branch: "a-ack",
        to_tag: &bob_tag,
        ..invite(&old_call, "", "a1", "")
    });

    // Carol's INVITE replaces it; its Call-ID lives on the other shard.
    let header = format!("Replaces: {old_call};to-tag={bob_tag};from-tag=a1\r\n");
    carol.send(invite(&new_call, "c-inv", "c1", &header));
    let ok = carol.expect("200 to Carol's INVITE", |m| m.status() == Some(200));
    assert_eq!(ok.call_id(), Some(new_call.as_bytes()));
    let carol_dialog_tag = String::from_utf8(ok.to_tag().unwrap().unwrap().to_vec()).unwrap();
    carol.send(Request {
        method: "ACK",
        branch: "c-ack",
        to_tag: &carol_dialog_tag,
        ..invite(&new_call, "", "c1", "")
    });

    // The replaced call gets its BYE from the shard that holds it.
    let bye = alice.expect("BYE of the replaced call", |m| {
        m.method() == Some(Method::Bye)
    });
    assert_eq!(bye.call_id(), Some(old_call.as_bytes()));
    assert_eq!(bye.to_tag().unwrap(), Some(&b"a1"[..]));
    alice.send_raw(&common::sip::response_to(&bye, 200));

    // The new call is up: Carol ends it normally.
    carol.send(Request {
        method: "BYE",
        cseq: 2,
        branch: "c-bye",
        to_tag: &carol_dialog_tag,
        ..invite(&new_call, "", "c1", "")
    });
    let ok = carol.expect("200 to Carol's BYE", |m| {
        m.status() == Some(200) && m.cseq().is_ok_and(|c| c.method == Method::Bye)
    });
    assert_eq!(ok.call_id(), Some(new_call.as_bytes()));
    assert!(server.stop(), "the server stops cleanly");
}

/// Three shards on simulated time, datagrams delivered by destination, events kept per
/// shard for the test to act on.
struct Three {
    shards: Vec<(SocketAddr, Shard)>,
    events: Vec<Vec<SessionEvent>>,
    now: Instant,
}

impl Three {
    fn new(addrs: [SocketAddr; 3]) -> Three {
        let now = Instant::now();
        Three {
            shards: addrs
                .iter()
                .map(|&a| (a, Shard::new(now, ShardConfig::new(a))))
                .collect(),
            events: vec![Vec::new(), Vec::new(), Vec::new()],
            now,
        }
    }

    fn run(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..3 {
                let from = self.shards[i].0;
                let out: Vec<_> = std::iter::from_fn(|| self.shards[i].1.poll_transmit()).collect();
                for t in out {
                    if let Some((_, to)) = self.shards.iter_mut().find(|(a, _)| *a == t.destination)
                    {
                        to.handle_datagram(self.now, from, t.payload);
                        moved = true;
                    }
                }
                self.events[i].extend(std::iter::from_fn(|| self.shards[i].1.poll_event()));
            }
            if !moved {
                return;
            }
        }
    }

    fn command(&mut self, i: usize, command: DialogCommand) -> sipshard::shard::CommandOutcome {
        let outcome = self.shards[i].1.handle_command(self.now, command).unwrap();
        self.run();
        outcome
    }

    /// Shard `from` calls shard `to`, which answers; (caller's dialog, callee's dialog).
    fn call(&mut self, from: usize, to: usize) -> (DialogId, DialogId) {
        let target = self.shards[to].0;
        self.command(
            from,
            DialogCommand::MakeCall {
                from: Bytes::from(format!("<sip:{}>", self.shards[from].0)),
                to: Bytes::from(format!("<sip:{target}>")),
                request_uri: Bytes::from(format!("sip:{target}")),
                destination: target,
                sdp: Bytes::new(),
                headers: Vec::new(),
            },
        );
        let callee = self.take(to, |e| match e {
            SessionEvent::IncomingCall { dialog, .. } => Some(dialog.clone()),
            _ => None,
        });
        self.command(
            to,
            DialogCommand::Answer {
                dialog: callee.clone(),
                sdp: Bytes::new(),
            },
        );
        let caller = self.take(from, |e| match e {
            SessionEvent::CallAnswered { dialog, .. } => Some(dialog.clone()),
            _ => None,
        });
        (caller, callee)
    }

    /// The first event of shard `i` that `pick` takes, removed.
    fn take<T>(&mut self, i: usize, pick: impl Fn(&SessionEvent) -> Option<T>) -> T {
        let at = self.events[i]
            .iter()
            .position(|e| pick(e).is_some())
            .unwrap_or_else(|| panic!("shard {i}: no such event in {:?}", self.events[i]));
        pick(&self.events[i].remove(at)).expect("position found it")
    }
}

#[test]
fn an_attended_transfer_replaces_the_consultation_call_at_the_target() {
    // RFC 5589 §7.1: Alice (0) talks to Bob (1) and consults Carol (2); she REFERs Bob to
    // Carol with Replaces naming her call with Carol. Bob calls Carol with that Replaces;
    // Carol's answer ends her call with Alice.
    let (a, b, c) = (alice(), bob(), carol());
    let mut net = Three::new([a, b, c]);
    let (alice_bob, _) = net.call(0, 1);
    let (alice_carol, carol_alice) = net.call(0, 2);

    let replaces = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        String::from_utf8_lossy(alice_carol.call_id()).replace('@', "%40"),
        String::from_utf8_lossy(alice_carol.remote_tag()),
        String::from_utf8_lossy(alice_carol.local_tag()),
    );
    net.command(
        0,
        DialogCommand::Refer {
            dialog: alice_bob,
            refer_to: Bytes::from(format!("<sip:carol@{c}?Replaces={replaces}>")),
        },
    );
    let (txn, request) = net.take(1, |e| match e {
        SessionEvent::DialogRequest { txn, request, .. } => Some((*txn, request.clone())),
        _ => None,
    });
    net.command(
        1,
        DialogCommand::Respond {
            txn,
            status: 202,
            headers: Vec::new(),
            body: Bytes::new(),
        },
    );
    let header = sipshard::shard::replaces_of_refer_to(&request).expect("a Replaces to send");
    net.command(
        1,
        DialogCommand::MakeCall {
            from: Bytes::from(format!("<sip:bob@{b}>")),
            to: Bytes::from(format!("<sip:carol@{c}>")),
            request_uri: Bytes::from(format!("sip:carol@{c}")),
            destination: c,
            sdp: Bytes::new(),
            headers: vec![("Replaces".to_owned(), Bytes::from(header))],
        },
    );
    let (carol_bob, replaced) = net.take(2, |e| match e {
        SessionEvent::IncomingCall {
            dialog, replaces, ..
        } => Some((dialog.clone(), replaces.clone())),
        _ => None,
    });
    assert_eq!(replaced.as_deref(), Some(&carol_alice));
    net.command(
        2,
        DialogCommand::Answer {
            dialog: carol_bob.clone(),
            sdp: Bytes::new(),
        },
    );
    // Carol's call with Alice is over, replaced; Alice heard the BYE; Bob and Carol talk.
    let ended = net.take(2, |e| match e {
        SessionEvent::CallTerminated { dialog, reason } if *dialog == carol_alice => Some(*reason),
        _ => None,
    });
    assert_eq!(ended, TerminationReason::Replaced);
    let reason = net.take(0, |e| match e {
        SessionEvent::CallTerminated { dialog, reason } if *dialog == alice_carol => Some(*reason),
        _ => None,
    });
    assert_eq!(reason, TerminationReason::RemoteBye);
    assert_eq!(
        net.shards[2].1.dialog_state(&carol_bob),
        Some(sipshard::dialog::DialogState::Confirmed)
    );
    assert!(net.shards[2].1.dialog_state(&carol_alice).is_none());
}
