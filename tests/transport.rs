//! The shard over TCP, on simulated time (RFC 3261 §17, §18): responses go back to the
//! connection's source whatever the Via's sent-by port says, our Via and Contact name TCP,
//! nothing is retransmitted hop by hop, the wait states last no time, and a failed
//! connection fails the transactions sending over it at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipshard::message::Message;
use sipshard::shard::{
    CommandOutcome, DialogCommand, SessionEvent, Shard, ShardConfig, TerminationReason,
};
use sipshard::transaction::{Transmit, Transport};

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn local() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

/// The far end of the caller's connection: an ephemeral port, not the Via's 5070.
fn connection_source() -> SocketAddr {
    "127.0.0.1:40001".parse().unwrap()
}

fn shard(now: Instant) -> Shard {
    Shard::new(now, ShardConfig::new(local()))
}

fn invite(branch: &str) -> Bytes {
    let sdp = std::str::from_utf8(SDP).unwrap();
    Bytes::from(format!(
        "INVITE sip:bob@127.0.0.1:5080;transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5070;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>\r\nCall-ID: tcp-call-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:alice@127.0.0.1:5070;transport=tcp>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ))
}

fn transmits(s: &mut Shard) -> Vec<Transmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn events(s: &mut Shard) -> Vec<SessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The call ended because its connection failed.
fn assert_ended_by_transport_error(events: &[SessionEvent]) {
    assert!(
        events.iter().any(|e| matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::TransportError,
                ..
            }
        )),
        "{events:?}"
    );
}

fn parse(t: &Transmit) -> Message {
    Message::parse(t.payload.clone()).expect("we send parseable messages")
}

/// An answered call from the caller's TCP connection; returns its dialog and the 200.
fn answered_call(s: &mut Shard, now: Instant) -> (sipshard::dialog::DialogId, Message) {
    s.handle_message(
        now,
        connection_source(),
        Transport::Tcp,
        invite("z9hG4bKtcp1"),
    );
    let dialog = events(s)
        .into_iter()
        .find_map(|e| match e {
            SessionEvent::IncomingCall { dialog, .. } => Some(dialog),
            _ => None,
        })
        .expect("IncomingCall");
    s.handle_command(
        now,
        DialogCommand::Answer {
            dialog: dialog.clone(),
            sdp: Bytes::from_static(SDP),
        },
    )
    .unwrap();
    let sent = transmits(s);
    let ok = sent
        .iter()
        .find(|t| parse(t).status() == Some(200))
        .expect("a 200");
    assert_eq!(
        ok.destination,
        connection_source(),
        "§18.2.2: the connection"
    );
    assert_eq!(ok.transport, Transport::Tcp);
    (dialog, parse(ok))
}

#[test]
fn a_call_over_tcp_is_answered_on_its_connection_and_our_bye_follows_it() {
    let start = Instant::now();
    let mut s = shard(start);
    let (dialog, ok) = answered_call(&mut s, start);
    let contact = ok.header(sipshard::message::HeaderName::Contact).unwrap();
    assert!(
        contact.windows(13).any(|w| w == b"transport=tcp"),
        "{}",
        String::from_utf8_lossy(contact)
    );
    let ack = format!(
        "ACK sip:bob@127.0.0.1:5080;transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKack1\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag={}\r\n\
         Call-ID: tcp-call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        String::from_utf8_lossy(dialog.local_tag())
    );
    s.handle_message(start, connection_source(), Transport::Tcp, Bytes::from(ack));
    events(&mut s);
    s.handle_command(start, DialogCommand::Bye { dialog })
        .unwrap();
    let bye = transmits(&mut s);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].transport, Transport::Tcp);
    assert_eq!(bye[0].destination, connection_source());
    let via = parse(&bye[0]).top_via_bytes().unwrap().to_vec();
    assert!(
        via.starts_with(b"SIP/2.0/TCP "),
        "{}",
        String::from_utf8_lossy(&via)
    );
    // No Timer E on a reliable transport: nothing is sent again while the BYE waits.
    let mut now = start;
    for _ in 0..20 {
        now += Duration::from_millis(500);
        s.handle_timeout(now);
        assert!(transmits(&mut s).is_empty(), "a retransmission over TCP");
    }
    // The connection fails: the BYE's transaction ends at once, and the dialog with it.
    s.handle_transport_failure(now, connection_source(), Transport::Tcp);
    let ended = events(&mut s);
    assert!(
        ended
            .iter()
            .any(|e| matches!(e, SessionEvent::CallTerminated { .. })),
        "{ended:?}"
    );
    assert_eq!(s.dialog_count(), 0);
}

#[test]
fn a_non_invite_over_tcp_leaves_no_transaction_behind_its_response() {
    let now = Instant::now();
    let mut s = shard(now);
    let options = "OPTIONS sip:bob@127.0.0.1:5080 SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKopt1\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=o1\r\nTo: <sip:bob@127.0.0.1>\r\n\
         Call-ID: tcp-options-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    s.handle_message(
        now,
        connection_source(),
        Transport::Tcp,
        Bytes::from(options),
    );
    let sent = transmits(&mut s);
    assert_eq!(sent.len(), 1);
    assert_eq!(parse(&sent[0]).status(), Some(200));
    assert_eq!(
        (sent[0].destination, sent[0].transport),
        (connection_source(), Transport::Tcp)
    );
    // Timer J is zero on TCP: the transaction is gone at the next timer tick.
    s.handle_timeout(now + Duration::from_millis(20));
    assert_eq!(s.transaction_count(), 0);
}

#[test]
fn an_unparseable_request_over_tcp_gets_its_400_on_the_connection() {
    let now = Instant::now();
    let mut s = shard(now);
    let broken = "OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKbad1\r\n\
         From: <sip:alice@127.0.0.1>;tag=b1\r\nTo: <sip:bob@127.0.0.1>\r\n\
         Call-ID: tcp-bad-1\r\nCSeq: not-a-number OPTIONS\r\nContent-Length: 0\r\n\r\n";
    s.handle_message(
        now,
        connection_source(),
        Transport::Tcp,
        Bytes::from(broken),
    );
    let sent = transmits(&mut s);
    assert_eq!(sent.len(), 1);
    assert_eq!(parse(&sent[0]).status(), Some(400));
    assert_eq!(
        (sent[0].destination, sent[0].transport),
        (connection_source(), Transport::Tcp),
        "not the Via's port: over TCP the response rides the connection"
    );
}

#[test]
fn a_call_to_a_tcp_uri_goes_over_tcp_unretransmitted_and_fails_with_its_connection() {
    let start = Instant::now();
    let mut s = shard(start);
    let far: SocketAddr = "127.0.0.1:5090".parse().unwrap();
    let out = s
        .handle_command(
            start,
            DialogCommand::MakeCall {
                from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
                to: Bytes::from_static(b"<sip:carol@127.0.0.1:5090>"),
                request_uri: Bytes::from_static(b"sip:carol@127.0.0.1:5090;transport=tcp"),
                destination: far,
                sdp: Bytes::from_static(SDP),
                headers: Vec::new(),
            },
        )
        .unwrap();
    assert!(matches!(out, CommandOutcome::Call(_)));
    let sent = transmits(&mut s);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].destination, sent[0].transport),
        (far, Transport::Tcp)
    );
    let invite = parse(&sent[0]);
    assert!(invite.top_via_bytes().unwrap().starts_with(b"SIP/2.0/TCP "));
    let contact = invite
        .header(sipshard::message::HeaderName::Contact)
        .unwrap();
    assert!(contact.ends_with(b";transport=tcp>"));
    // No Timer A over TCP.
    s.handle_timeout(start + Duration::from_secs(5));
    assert!(transmits(&mut s).is_empty());
    // A failure for another peer changes nothing; one for ours ends the call now, not at
    // Timer B.
    s.handle_transport_failure(start, "127.0.0.1:5091".parse().unwrap(), Transport::Tcp);
    assert!(events(&mut s).is_empty());
    s.handle_transport_failure(start, far, Transport::Tcp);
    assert_ended_by_transport_error(&events(&mut s));
    assert_eq!(s.dialog_count(), 0);
}

#[test]
fn a_call_to_a_transport_sipshard_does_not_speak_or_has_off_is_refused_not_sent_over_udp() {
    let now = Instant::now();
    let mut s = shard(now);
    let refused = s.handle_command(
        now,
        DialogCommand::MakeCall {
            from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
            to: Bytes::from_static(b"<sip:carol@127.0.0.1:5061>"),
            request_uri: Bytes::from_static(b"sip:carol@127.0.0.1:5061;transport=tls"),
            destination: "127.0.0.1:5061".parse().unwrap(),
            sdp: Bytes::from_static(SDP),
            headers: Vec::new(),
        },
    );
    assert!(
        matches!(&refused, Err(sipshard::shard::DialogError::UnsupportedTransport(t)) if t == "tls"),
        "{refused:?}"
    );
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.dialog_count(), 0);

    // A runtime without TCP (`--no-tcp`) refuses TCP the same way.
    let mut config = ShardConfig::new(local());
    config.tcp = false;
    let mut udp_only = Shard::new(now, config);
    let refused = udp_only.handle_command(
        now,
        DialogCommand::MakeCall {
            from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
            to: Bytes::from_static(b"<sip:carol@127.0.0.1:5090>"),
            request_uri: Bytes::from_static(b"sip:carol@127.0.0.1:5090;transport=tcp"),
            destination: "127.0.0.1:5090".parse().unwrap(),
            sdp: Bytes::from_static(SDP),
            headers: Vec::new(),
        },
    );
    assert!(
        matches!(
            refused,
            Err(sipshard::shard::DialogError::UnsupportedTransport(_))
        ),
        "{refused:?}"
    );
    assert!(transmits(&mut udp_only).is_empty());
}

/// A call to a plain (UDP) URI whose INVITE is `sdp_len` bytes of SDP or so.
fn call_with_sdp(s: &mut Shard, now: Instant, far: SocketAddr, sdp: &[u8]) {
    s.handle_command(
        now,
        DialogCommand::MakeCall {
            from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
            to: Bytes::from_static(b"<sip:carol@127.0.0.1:5090>"),
            request_uri: Bytes::from_static(b"sip:carol@127.0.0.1:5090"),
            destination: far,
            sdp: Bytes::copy_from_slice(sdp),
            headers: Vec::new(),
        },
    )
    .unwrap();
}

/// An SDP offer of about `len` bytes (one audio stream, many formats).
fn large_sdp(len: usize) -> Vec<u8> {
    let mut sdp = SDP.to_vec();
    let mut pt = 96;
    while sdp.len() < len {
        sdp.extend_from_slice(format!("a=rtpmap:{pt} opus/48000/2\r\n").as_bytes());
        pt += 1;
    }
    sdp
}

#[test]
fn a_request_too_large_for_udp_goes_over_tcp_and_back_to_udp_if_no_connection() {
    // RFC 3261 §18.1.1: over 1300 bytes with the path MTU unknown, a request that would
    // go over UDP MUST go over a congestion-controlled transport, its top Via changed.
    let start = Instant::now();
    let far: SocketAddr = "127.0.0.1:5090".parse().unwrap();
    let mut s = shard(start);
    call_with_sdp(&mut s, start, far, SDP);
    let small = transmits(&mut s);
    assert_eq!(
        small[0].transport,
        Transport::Udp,
        "a small INVITE stays on UDP"
    );

    let mut s = shard(start);
    call_with_sdp(&mut s, start, far, &large_sdp(1400));
    let sent = transmits(&mut s);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].destination, sent[0].transport),
        (far, Transport::Tcp)
    );
    assert!(sent[0].payload.len() > 1300);
    let over_tcp = parse(&sent[0]);
    assert!(
        over_tcp
            .top_via_bytes()
            .unwrap()
            .starts_with(b"SIP/2.0/TCP ")
    );
    // Over TCP: no Timer A.
    s.handle_timeout(start + Duration::from_secs(1));
    assert!(transmits(&mut s).is_empty());

    // The connection is refused before any response: "the element SHOULD retry the
    // request, using UDP" — the same request, its Via saying UDP again, with Timer A.
    let t = start + Duration::from_secs(1);
    s.handle_transport_failure(t, far, Transport::Tcp);
    assert!(events(&mut s).is_empty(), "the call goes on");
    let retried = transmits(&mut s);
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].destination, retried[0].transport),
        (far, Transport::Udp)
    );
    let over_udp = parse(&retried[0]);
    assert!(
        over_udp
            .top_via_bytes()
            .unwrap()
            .starts_with(b"SIP/2.0/UDP ")
    );
    assert_eq!(
        over_udp.top_via_key().unwrap().branch,
        over_tcp.top_via_key().unwrap().branch,
        "the same transaction"
    );
    s.handle_timeout(t + Duration::from_millis(500));
    let again = transmits(&mut s);
    assert_eq!(again.len(), 1, "Timer A retransmits over UDP");
    assert_eq!(again[0].transport, Transport::Udp);

    // With TCP off, or the limit off, the large INVITE goes over UDP as given.
    for config in [
        ShardConfig {
            tcp: false,
            ..ShardConfig::new(local())
        },
        ShardConfig {
            stream_above: None,
            ..ShardConfig::new(local())
        },
    ] {
        let mut s = Shard::new(start, config);
        call_with_sdp(&mut s, start, far, &large_sdp(1400));
        assert_eq!(transmits(&mut s)[0].transport, Transport::Udp);
    }
}

#[test]
fn a_large_request_over_tcp_that_got_an_answer_fails_with_its_connection() {
    // Once a response came over the connection, the request was delivered: a later
    // failure ends the transaction as on any TCP transaction, without a UDP retry.
    let start = Instant::now();
    let far: SocketAddr = "127.0.0.1:5090".parse().unwrap();
    let mut s = shard(start);
    call_with_sdp(&mut s, start, far, &large_sdp(1400));
    let invite = parse(&transmits(&mut s)[0]);
    let mut buf = bytes::BytesMut::new();
    sipshard::message::ResponseBuilder::to_request(&mut buf, &invite, 180, None, Some(b"c1"))
        .finish(b"")
        .unwrap();
    s.handle_message(start, far, Transport::Tcp, buf.freeze());
    events(&mut s);
    s.handle_transport_failure(start, far, Transport::Tcp);
    assert!(
        transmits(&mut s)
            .iter()
            .all(|t| t.transport == Transport::Tcp)
    );
    assert_ended_by_transport_error(&events(&mut s));
}

/// A 200 to `invite` with Contact `contact` and, when given, a Record-Route.
fn ok_to(invite: &Message, contact: &str, record_route: Option<&str>) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    let mut b =
        sipshard::message::ResponseBuilder::to_request(&mut buf, invite, 200, None, Some(b"c1"));
    b.header("Contact", contact.as_bytes());
    if let Some(rr) = record_route {
        b.header("Record-Route", rr.as_bytes());
    }
    b.finish(b"").unwrap();
    buf.freeze()
}

#[test]
fn in_dialog_requests_take_the_transport_the_next_hop_names() {
    // RFC 3263 §4.1 on the next hop of §12.2.1.1: a callee reached over UDP whose Contact
    // says `;transport=tcp` gets its ACK and BYE over TCP; behind a Record-Route, the first
    // route's URI decides instead.
    let start = Instant::now();
    let far: SocketAddr = "127.0.0.1:5090".parse().unwrap();
    for (contact, record_route, want) in [
        (
            "<sip:carol@127.0.0.1:5090;transport=tcp>",
            None,
            Transport::Tcp,
        ),
        (
            "<sip:carol@127.0.0.1:5090;transport=UDP>",
            None,
            Transport::Udp,
        ),
        ("<sip:carol@127.0.0.1:5090>", None, Transport::Udp),
        (
            "<sip:carol@127.0.0.1:5090;transport=tcp>",
            Some("<sip:127.0.0.1:5090;lr>"),
            Transport::Udp,
        ),
        (
            "<sip:carol@127.0.0.1:5090>",
            Some("<sip:127.0.0.1:5090;lr;transport=tcp>"),
            Transport::Tcp,
        ),
    ] {
        let mut s = shard(start);
        call_with_sdp(&mut s, start, far, SDP);
        let sent = transmits(&mut s);
        assert_eq!(sent[0].transport, Transport::Udp);
        let invite = parse(&sent[0]);
        s.handle_message(
            start,
            far,
            Transport::Udp,
            ok_to(&invite, contact, record_route),
        );
        let ack = transmits(&mut s);
        assert_eq!(ack.len(), 1);
        assert_eq!(ack[0].transport, want, "{contact} {record_route:?}");
        assert!(
            parse(&ack[0])
                .top_via_bytes()
                .unwrap()
                .starts_with(format!("SIP/2.0/{} ", want.token()).as_bytes())
        );
        let dialog = events(&mut s)
            .into_iter()
            .find_map(|e| match e {
                SessionEvent::CallAnswered { dialog, .. } => Some(dialog),
                _ => None,
            })
            .expect("CallAnswered");
        s.handle_command(start, DialogCommand::Bye { dialog })
            .unwrap();
        let bye = transmits(&mut s);
        assert_eq!(bye[0].transport, want, "the BYE too");
    }
}
