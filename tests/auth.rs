//! Digest authentication as a UAC (RFC 3261 §22.2), on simulated time: a 407 to our INVITE
//! and a 401 to our REGISTER are answered with the configured credentials, the request
//! going again with the next CSeq; refused credentials end it with the challenge; a stale
//! nonce is answered again. The answers are checked against an MD5/SHA-256 computed here.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use md5::{Digest as _, Md5};
use sipshard::message::{HeaderName, Message, ResponseBuilder};
use sipshard::shard::{
    CommandOutcome, Credentials, DialogCommand, SessionEvent, Shard, ShardConfig,
    StandaloneRequest, TerminationReason,
};

fn local() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

fn far() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

fn shard(now: Instant, credentials: Vec<Credentials>) -> Shard {
    Shard::new(
        now,
        ShardConfig {
            credentials,
            ..ShardConfig::new(local())
        },
    )
}

fn alice(realm: Option<&str>) -> Vec<Credentials> {
    vec![Credentials {
        realm: realm.map(str::to_owned),
        username: "alice".to_owned(),
        password: "s3cret".to_owned(),
    }]
}

fn sent(s: &mut Shard) -> Vec<Message> {
    std::iter::from_fn(|| s.poll_transmit())
        .map(|t| Message::parse(t.payload).unwrap())
        .collect()
}

fn events(s: &mut Shard) -> Vec<SessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// A `status` response to `request` carrying `challenge` under `header`.
fn challenge(request: &Message, status: u16, header: &str, challenge: &str) -> Bytes {
    let mut buf = BytesMut::new();
    let mut b = ResponseBuilder::to_request(&mut buf, request, status, None, Some(b"proxy1"));
    b.header(header, challenge.as_bytes());
    b.finish(b"").unwrap();
    buf.freeze()
}

fn respond(request: &Message, status: u16) -> Bytes {
    let mut buf = BytesMut::new();
    let mut b = ResponseBuilder::to_request(&mut buf, request, status, None, Some(b"bob1"));
    b.header("Contact", b"<sip:bob@127.0.0.1:5080>");
    b.finish(b"").unwrap();
    buf.freeze()
}

/// The parameters of a Digest credentials value.
fn params(value: &[u8]) -> std::collections::HashMap<String, String> {
    let text = std::str::from_utf8(value).unwrap();
    let rest = text.strip_prefix("Digest ").expect("a Digest answer");
    rest.split(", ")
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_hex(s: &str) -> String {
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks an answer with qop=auth as RFC 2617 §3.2.2.1 computes it.
fn assert_answers(value: &[u8], method: &str, hash: fn(&str) -> String) {
    let p = params(value);
    assert_eq!(p["username"], "alice");
    let ha1 = hash(&format!("alice:{}:s3cret", p["realm"]));
    let ha2 = hash(&format!("{method}:{}", p["uri"]));
    let want = hash(&format!(
        "{ha1}:{}:{}:{}:{}:{ha2}",
        p["nonce"], p["nc"], p["cnonce"], p["qop"]
    ));
    assert_eq!(p["response"], want, "{p:?}");
}

/// Alice's REGISTER to the registrar at `far()`, with `Expires` when given.
fn register_request(expires: Option<&'static [u8]>) -> StandaloneRequest {
    let mut headers = vec![(
        "Contact".to_owned(),
        Bytes::from_static(b"<sip:alice@127.0.0.1:5070>"),
    )];
    if let Some(expires) = expires {
        headers.push(("Expires".to_owned(), Bytes::from_static(expires)));
    }
    StandaloneRequest {
        method: Bytes::from_static(b"REGISTER"),
        request_uri: Bytes::from_static(b"sip:127.0.0.1:5080"),
        from: Bytes::from_static(b"<sip:alice@biloxi.example.com>"),
        to: Bytes::from_static(b"<sip:alice@biloxi.example.com>"),
        call_id: None,
        cseq: 1,
        destination: far(),
        headers,
        body: Bytes::new(),
    }
}

fn place_call(s: &mut Shard, now: Instant) -> Message {
    let out = s
        .handle_command(
            now,
            DialogCommand::MakeCall {
                from: Bytes::from_static(b"<sip:alice@atlanta.example.com>"),
                to: Bytes::from_static(b"<sip:bob@biloxi.example.com>"),
                request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
                destination: far(),
                sdp: Bytes::from_static(b"v=0\r\n"),
                headers: vec![("X-Keep".to_owned(), Bytes::from_static(b"1"))],
            },
        )
        .unwrap();
    assert!(matches!(out, CommandOutcome::Call(_)));
    sent(s).pop().expect("the INVITE")
}

const PROXY_CHALLENGE: &str =
    "Digest realm=\"atlanta.example.com\", nonce=\"n1\", qop=\"auth\", opaque=\"o1\"";

#[test]
fn a_407_to_our_invite_is_answered_and_the_call_goes_on() {
    let now = Instant::now();
    let mut s = shard(now, alice(Some("atlanta.example.com")));
    let first = place_call(&mut s, now);
    s.handle_message(
        now,
        far(),
        sipshard::transaction::Transport::Udp,
        challenge(&first, 407, "Proxy-Authenticate", PROXY_CHALLENGE),
    );
    let out = sent(&mut s);
    assert_eq!(
        out.len(),
        2,
        "the ACK to the 407 and the INVITE again: {out:?}"
    );
    assert_eq!(out[0].method_bytes(), Some(&b"ACK"[..]));
    let again = &out[1];
    assert_eq!(again.method_bytes(), Some(&b"INVITE"[..]));
    assert_eq!(again.cseq().unwrap().seq, 2, "§22.2: the next CSeq");
    assert_eq!(again.call_id(), first.call_id());
    assert_eq!(again.from_tag().unwrap(), first.from_tag().unwrap());
    assert_ne!(
        again.top_via_key().unwrap().branch,
        first.top_via_key().unwrap().branch
    );
    assert_eq!(again.body_bytes(), first.body_bytes());
    assert!(again.header_values_by_name("X-Keep").next().is_some());
    let answer = again
        .header(HeaderName::ProxyAuthorization)
        .expect("an answer");
    assert_answers(answer, "INVITE", md5_hex);
    assert_eq!(params(answer)["uri"], "sip:bob@127.0.0.1:5080");
    assert_eq!(params(answer)["opaque"], "o1");
    assert!(
        events(&mut s).is_empty(),
        "the application hears nothing of it"
    );

    // Answered: the dialog goes on from CSeq 2.
    s.handle_message(
        now,
        far(),
        sipshard::transaction::Transport::Udp,
        respond(again, 200),
    );
    let dialog = events(&mut s)
        .into_iter()
        .find_map(|e| match e {
            SessionEvent::CallAnswered { dialog, .. } => Some(dialog),
            _ => None,
        })
        .expect("CallAnswered");
    let ack = sent(&mut s).pop().unwrap();
    assert_eq!(ack.cseq().unwrap().seq, 2);
    s.handle_command(now, DialogCommand::Bye { dialog })
        .unwrap();
    assert_eq!(sent(&mut s).pop().unwrap().cseq().unwrap().seq, 3);
}

#[test]
fn refused_credentials_end_the_call_and_a_stale_nonce_is_answered_again() {
    let now = Instant::now();
    let udp = sipshard::transaction::Transport::Udp;
    let mut s = shard(now, alice(None));
    let first = place_call(&mut s, now);
    s.handle_message(
        now,
        far(),
        udp,
        challenge(&first, 407, "Proxy-Authenticate", PROXY_CHALLENGE),
    );
    let second = sent(&mut s).pop().unwrap();
    // The nonce expired: the same credentials, answered again.
    let stale = format!("{PROXY_CHALLENGE}, stale=true");
    s.handle_message(
        now,
        far(),
        udp,
        challenge(&second, 407, "Proxy-Authenticate", &stale),
    );
    let third = sent(&mut s).pop().unwrap();
    assert_eq!(third.cseq().unwrap().seq, 3);
    assert_eq!(
        third.header_values(HeaderName::ProxyAuthorization).count(),
        1,
        "the old answer is replaced"
    );
    // Challenged again, not stale: refused. The call fails with the 407.
    s.handle_message(
        now,
        far(),
        udp,
        challenge(&third, 407, "Proxy-Authenticate", PROXY_CHALLENGE),
    );
    let out = sent(&mut s);
    assert_eq!(out.len(), 1, "only the ACK: {out:?}");
    let ended = events(&mut s);
    assert!(
        ended.iter().any(|e| matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::Rejected(407),
                ..
            }
        )),
        "{ended:?}"
    );

    // Credentials for another realm, or none: the 407 is the result at once.
    for credentials in [alice(Some("elsewhere.example.com")), Vec::new()] {
        let mut s = shard(now, credentials);
        let first = place_call(&mut s, now);
        s.handle_message(
            now,
            far(),
            udp,
            challenge(&first, 407, "Proxy-Authenticate", PROXY_CHALLENGE),
        );
        assert_eq!(sent(&mut s).len(), 1, "only the ACK");
        assert!(events(&mut s).iter().any(|e| matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::Rejected(407),
                ..
            }
        )));
    }
}

#[test]
fn a_401_to_our_register_is_answered_with_sha_256_when_offered() {
    let now = Instant::now();
    let udp = sipshard::transaction::Transport::Udp;
    let mut s = shard(now, alice(Some("biloxi.example.com")));
    let register = register_request(Some(b"3600"));
    let Ok(CommandOutcome::Request(handle)) =
        s.handle_command(now, DialogCommand::SendStandalone(Box::new(register)))
    else {
        panic!("the REGISTER went out")
    };
    let first = sent(&mut s).pop().unwrap();
    // RFC 8760 §2.4: SHA-256 listed first, MD5 for older clients; we take SHA-256.
    let mut buf = BytesMut::new();
    let mut b = ResponseBuilder::to_request(&mut buf, &first, 401, None, Some(b"reg1"));
    b.header(
        "WWW-Authenticate",
        b"Digest realm=\"biloxi.example.com\", nonce=\"r1\", qop=\"auth\", algorithm=SHA-256",
    );
    b.header(
        "WWW-Authenticate",
        b"Digest realm=\"biloxi.example.com\", nonce=\"r1\", qop=\"auth\", algorithm=MD5",
    );
    b.finish(b"").unwrap();
    s.handle_message(now, far(), udp, buf.freeze());
    let again = sent(&mut s).pop().expect("the REGISTER again");
    assert_eq!(again.cseq().unwrap().seq, 2);
    assert_eq!(again.call_id(), first.call_id());
    assert_eq!(
        again.header(HeaderName::Contact),
        first.header(HeaderName::Contact)
    );
    let answer = again.header(HeaderName::Authorization).expect("an answer");
    assert_eq!(params(answer)["algorithm"], "SHA-256");
    assert_answers(answer, "REGISTER", sha256_hex);
    assert!(events(&mut s).is_empty());

    s.handle_message(now, far(), udp, respond(&again, 200));
    let result = events(&mut s);
    assert!(
        matches!(
            result.as_slice(),
            [SessionEvent::StandaloneResult { request, status: 200, .. }] if *request == handle
        ),
        "the result names the first transaction: {result:?}"
    );
}

/// Registrar-side authentication (RFC 3261 §10.3 step 3): a UAC shard with `credentials`
/// registers at a registrar shard requiring Digest; both of sipshard's sides, on simulated
/// time. Returns the UAC's result status.
fn register_through(credentials: Vec<Credentials>, delay: std::time::Duration) -> u16 {
    use sipshard::registrar::{RegistrarAuth, RegistrarConfig};
    use sipshard::shard::RegisterMode;
    let t0 = Instant::now();
    let mut auth = RegistrarAuth::new(
        "biloxi.example.com",
        vec![("alice".to_owned(), "s3cret".to_owned())],
        t0,
    )
    .unwrap();
    auth.nonce_lifetime = std::time::Duration::from_secs(1);
    let mut registrar = Shard::new(
        t0,
        ShardConfig {
            register: RegisterMode::Registrar(RegistrarConfig::default()),
            registrar_auth: Some(auth),
            ..ShardConfig::new(far())
        },
    );
    let mut uac = shard(t0, credentials);
    let register = register_request(None);
    let Ok(CommandOutcome::Request(handle)) =
        uac.handle_command(t0, DialogCommand::SendStandalone(Box::new(register)))
    else {
        panic!("the REGISTER went out")
    };
    let udp = sipshard::transaction::Transport::Udp;
    let mut now = t0;
    for round in 0..6 {
        // The first answer to a challenge comes `delay` late (a nonce that went stale).
        if round == 1 {
            now += delay;
        }
        for t in std::iter::from_fn(|| uac.poll_transmit()).collect::<Vec<_>>() {
            registrar.handle_message(now, local(), udp, t.payload);
        }
        for t in std::iter::from_fn(|| registrar.poll_transmit()).collect::<Vec<_>>() {
            uac.handle_message(now, far(), udp, t.payload);
        }
        for e in events(&mut uac) {
            if let SessionEvent::StandaloneResult {
                request, status, ..
            } = e
            {
                assert_eq!(request, handle);
                return status;
            }
        }
    }
    panic!("no result")
}

#[test]
fn a_registrar_requiring_digest_lets_only_the_right_password_register() {
    let zero = std::time::Duration::ZERO;
    assert_eq!(register_through(alice(None), zero), 200);
    // A stale nonce is answered again, and the REGISTER goes through.
    assert_eq!(
        register_through(alice(None), std::time::Duration::from_secs(3)),
        200
    );
    let wrong = vec![Credentials {
        realm: None,
        username: "alice".to_owned(),
        password: "guess".to_owned(),
    }];
    assert_eq!(register_through(wrong, zero), 401);
    let stranger = vec![Credentials {
        realm: None,
        username: "mallory".to_owned(),
        password: "s3cret".to_owned(),
    }];
    assert_eq!(register_through(stranger, zero), 401);
    assert_eq!(register_through(Vec::new(), zero), 401, "no credentials");
}
