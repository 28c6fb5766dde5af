//! What hostile peers and strict real clients found (issue 20), on one shard played by
//! hand over simulated time: real clients' messages we refused, the SHOULDs a peer relies
//! on, and what a registrar may be asked by whom.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sipshard::message::{HeaderName, Message};
use sipshard::shard::{DialogCommand, SessionEvent, Shard, ShardConfig};

fn local() -> SocketAddr {
    "127.0.0.1:5199".parse().unwrap()
}

fn peer() -> SocketAddr {
    "127.0.0.1:5198".parse().unwrap()
}

/// What the shard sent, parsed.
fn sent(s: &mut Shard) -> Vec<Message> {
    std::iter::from_fn(|| s.poll_transmit())
        .map(|t| Message::parse(t.payload).expect("we send what we parse"))
        .collect()
}

fn events(s: &mut Shard) -> Vec<SessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn header(m: &Message, name: HeaderName) -> Option<String> {
    m.header(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// baresip 1.0's INVITE, as it sent it to a socket of ours (`Supported:` with no option
/// tag, which RFC 3261 §25.1 allows).
fn baresip_invite() -> Bytes {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/baresip_invite.sip");
    Bytes::from(std::fs::read(path).unwrap())
}

/// A request from `peer()` with `extra` header lines (each ending in CRLF).
fn request(method: &str, call_id: &str, extra: &str) -> Bytes {
    Bytes::from(format!(
        "{method} sip:bob@127.0.0.1:5199 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5198;branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:alice@127.0.0.1:5198>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    ))
}

#[test]
fn baresips_invite_with_an_empty_supported_is_a_call_not_a_400() {
    let now = Instant::now();
    let mut s = Shard::new(now, ShardConfig::new(local()));
    s.handle_datagram(now, peer(), baresip_invite());
    let out = sent(&mut s);
    assert!(
        out.iter().all(|m| m.status() != Some(400)),
        "refused: {:?}",
        out.iter().map(|m| m.status()).collect::<Vec<_>>()
    );
    let dialog = events(&mut s)
        .into_iter()
        .find_map(|e| match e {
            SessionEvent::IncomingCall { dialog, .. } => Some(dialog),
            _ => None,
        })
        .expect("an incoming call");
    s.handle_command(
        now,
        DialogCommand::Answer {
            dialog,
            sdp: Bytes::new(),
        },
    )
    .unwrap();
    let ok = sent(&mut s)
        .into_iter()
        .find(|m| m.status() == Some(200))
        .expect("a 200");
    // §13.3.1.4: a 2xx to INVITE SHOULD carry Allow and Supported.
    let allow = header(&ok, HeaderName::Allow).expect("Allow in the 2xx");
    assert!(allow.contains("INVITE") && allow.contains("BYE"), "{allow}");
    let supported = header(&ok, HeaderName::Supported).expect("Supported in the 2xx");
    assert!(supported.contains("replaces"), "{supported}");
    // Nothing names the software unless configured.
    assert!(ok.header(HeaderName::Server).is_none());
}

#[test]
fn lists_that_may_be_empty_are_accepted_and_those_that_may_not_get_400() {
    let now = Instant::now();
    let mut s = Shard::new(now, ShardConfig::new(local()));
    // §25.1: Allow, Supported and Accept are `[ element *(COMMA element) ]`.
    for (i, line) in [
        "Supported:\r\n",
        "Allow: \r\n",
        "Accept:\r\n",
        "Supported:\r\nSupported: 100rel\r\n",
    ]
    .iter()
    .enumerate()
    {
        s.handle_datagram(now, peer(), request("OPTIONS", &format!("ok{i}"), line));
        let statuses: Vec<_> = sent(&mut s).iter().map(|m| m.status()).collect();
        assert_eq!(statuses, [Some(200)], "{line:?}");
    }
    // Require, Proxy-Require and Unsupported need at least one option tag.
    for (i, line) in ["Require:\r\n", "Proxy-Require: \r\n", "Unsupported:\r\n"]
        .iter()
        .enumerate()
    {
        s.handle_datagram(now, peer(), request("OPTIONS", &format!("bad{i}"), line));
        let statuses: Vec<_> = sent(&mut s).iter().map(|m| m.status()).collect();
        assert_eq!(statuses, [Some(400)], "{line:?}");
    }
}

#[test]
fn an_options_answer_lists_what_section_11_2_asks_for() {
    let now = Instant::now();
    let mut s = Shard::new(now, ShardConfig::new(local()));
    s.handle_datagram(now, peer(), request("OPTIONS", "opt1", ""));
    let ok = sent(&mut s).pop().expect("an answer");
    assert_eq!(ok.status(), Some(200));
    for name in [HeaderName::Allow, HeaderName::Accept, HeaderName::Supported] {
        assert!(ok.header(name).is_some(), "{name:?}");
    }
    let text = String::from_utf8_lossy(ok.as_bytes()).into_owned();
    assert!(text.contains("\r\nAccept-Encoding: identity\r\n"), "{text}");
    assert!(text.contains("\r\nAccept-Language: en\r\n"), "{text}");
}

#[test]
fn a_configured_server_header_goes_on_every_response() {
    let now = Instant::now();
    let mut s = Shard::new(
        now,
        ShardConfig {
            server: Some(Bytes::from_static(b"carrier-edge/1")),
            ..ShardConfig::new(local())
        },
    );
    s.handle_datagram(now, peer(), request("OPTIONS", "srv1", ""));
    s.handle_datagram(now, peer(), request("BYE", "srv2", ""));
    let out = sent(&mut s);
    assert_eq!(out.len(), 2);
    for m in out {
        assert_eq!(
            header(&m, HeaderName::Server).as_deref(),
            Some("carrier-edge/1")
        );
    }
}

#[test]
fn a_200_to_register_carries_the_date() {
    use sipshard::registrar::RegistrarConfig;
    use sipshard::shard::RegisterMode;
    let now = Instant::now();
    let mut s = Shard::new(
        now,
        ShardConfig {
            register: RegisterMode::Registrar(RegistrarConfig::default()),
            ..ShardConfig::new(local())
        },
    );
    // 2026-12-06 23:59:59 GMT, and a minute later.
    s.set_wall_clock(
        now,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_601_599),
    );
    let later = now + Duration::from_secs(60);
    let register = Bytes::from(
        "REGISTER sip:127.0.0.1:5199 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5198;branch=z9hG4bKreg1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=r1\r\n\
         To: <sip:alice@127.0.0.1>\r\n\
         Call-ID: reg1\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:alice@127.0.0.1:5198>\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n",
    );
    s.handle_datagram(later, peer(), register);
    let ok = sent(&mut s).pop().expect("an answer");
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        header(&ok, HeaderName::Date).as_deref(),
        Some("Mon, 07 Dec 2026 00:00:59 GMT")
    );
}

// ---- The registrar: who may change what, replays, guessing ----

mod registrar {
    use super::*;
    use sipshard::message::{DigestAlgorithm, DigestInput, digest_response};
    use sipshard::registrar::{RegistrarAuth, RegistrarConfig};
    use sipshard::shard::RegisterMode;

    const REALM: &str = "biloxi.example.com";

    /// A registrar for `biloxi.example.com` and `127.0.0.1`, where alice, carol and the
    /// admin `ops` have passwords.
    fn registrar(now: Instant, tune: impl FnOnce(&mut RegistrarAuth, &mut ShardConfig)) -> Shard {
        let mut auth = RegistrarAuth::new(
            REALM,
            vec![
                ("alice".to_owned(), "s3cret".to_owned()),
                ("carol".to_owned(), "c4rol".to_owned()),
                ("ops".to_owned(), "0ps".to_owned()),
            ],
            now,
        )
        .unwrap();
        auth.admins = vec!["ops".to_owned()];
        let mut config = ShardConfig {
            register: RegisterMode::Registrar(RegistrarConfig {
                domains: vec![REALM.to_owned(), "127.0.0.1".to_owned()],
                ..RegistrarConfig::default()
            }),
            ..ShardConfig::new(local())
        };
        tune(&mut auth, &mut config);
        config.registrar_auth = Some(auth);
        Shard::new(now, config)
    }

    /// What an `Authorization` is made of.
    struct Answer<'a> {
        user: &'a str,
        password: &'a str,
        nonce: String,
        nc: u32,
        qop: bool,
        algorithm: DigestAlgorithm,
    }

    /// A REGISTER for `aor_user@domain` with `contact` (`*` for all), Expires `expires`
    /// (none when `None`), answering with `answer`.
    fn register(
        call_id: &str,
        cseq: u32,
        aor: &str,
        contact: Option<&str>,
        expires: Option<u32>,
        answer: Option<&Answer<'_>>,
    ) -> Bytes {
        // A branch of its own for every request, so none is taken for a retransmission.
        static SENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let domain = aor.split_once('@').map_or(REALM, |(_, d)| d);
        let uri = format!("sip:{domain}");
        let mut text = format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5198;branch=z9hG4bK{call_id}x{cseq}x{n}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{aor}>;tag=f{call_id}\r\n\
             To: <sip:{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n"
        );
        if let Some(contact) = contact {
            text.push_str(&format!("Contact: {contact}\r\n"));
        }
        if let Some(expires) = expires {
            text.push_str(&format!("Expires: {expires}\r\n"));
        }
        if let Some(a) = answer {
            let nc = format!("{:08x}", a.nc);
            let qop = a.qop.then_some(&b"auth"[..]);
            let response = digest_response(
                &DigestInput {
                    algorithm: a.algorithm,
                    session: false,
                    username: a.user.as_bytes(),
                    realm: REALM.as_bytes(),
                    nonce: a.nonce.as_bytes(),
                    cnonce: b"c0ffee",
                    nc: nc.as_bytes(),
                    qop,
                },
                a.password.as_bytes(),
                b"REGISTER",
                uri.as_bytes(),
                b"",
            );
            let algorithm = match a.algorithm {
                DigestAlgorithm::Sha256 => "SHA-256",
                _ => "MD5",
            };
            text.push_str(&format!(
                "Authorization: Digest username=\"{}\", realm=\"{REALM}\", nonce=\"{}\", \
                 uri=\"{uri}\", response=\"{response}\", algorithm={algorithm}",
                a.user, a.nonce
            ));
            if a.qop {
                text.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"c0ffee\""));
            }
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        Bytes::from(text)
    }

    /// Sends `request` from `from` and returns the one answer (`None`: none came).
    fn ask(s: &mut Shard, now: Instant, from: SocketAddr, request: Bytes) -> Option<Message> {
        s.handle_datagram(now, from, request);
        let mut out = sent(s);
        assert!(out.len() <= 1, "one answer at most");
        out.pop()
    }

    /// The nonce of a 401's challenge for `algorithm`, and whether it said stale.
    fn nonce_of(challenge: &Message, algorithm: &str) -> (String, bool) {
        let value = challenge
            .header_values(HeaderName::WwwAuthenticate)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .find(|v| v.contains(&format!("algorithm={algorithm},")))
            .unwrap_or_else(|| panic!("no {algorithm} challenge"));
        let nonce = value
            .split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_owned();
        (nonce, value.contains("stale=true"))
    }

    /// A fresh nonce: the 401 to a REGISTER without credentials.
    fn fresh_nonce(s: &mut Shard, now: Instant) -> String {
        let r = ask(
            s,
            now,
            peer(),
            register("n", 1, "alice@biloxi.example.com", None, None, None),
        )
        .unwrap();
        assert_eq!(r.status(), Some(401));
        nonce_of(&r, "MD5").0
    }

    fn as_user<'a>(user: &'a str, password: &'a str, nonce: &str, nc: u32) -> Answer<'a> {
        Answer {
            user,
            password,
            nonce: nonce.to_owned(),
            nc,
            qop: true,
            algorithm: DigestAlgorithm::Md5,
        }
    }

    #[test]
    fn an_authenticated_user_may_change_only_its_own_bindings() {
        let now = Instant::now();
        let mut s = registrar(now, |_, _| {});
        let (nonce, theirs) = (fresh_nonce(&mut s, now), fresh_nonce(&mut s, now));
        let carol = "carol@biloxi.example.com";
        let alice = "alice@biloxi.example.com";
        // Carol registers herself.
        let own = as_user("carol", "c4rol", &theirs, 1);
        let r = ask(
            &mut s,
            now,
            peer(),
            register(
                "c1",
                1,
                carol,
                Some("<sip:carol@192.0.2.9>"),
                Some(600),
                Some(&own),
            ),
        );
        assert_eq!(r.unwrap().status(), Some(200));
        // With alice's credentials: a query, a new Contact and `*` for carol are 403.
        let attempts: [(Option<&str>, Option<u32>); 3] = [
            (None, None),
            (Some("<sip:mallory@192.0.2.66>"), Some(600)),
            (Some("*"), Some(0)),
        ];
        for (nc, (contact, expires)) in (1..).zip(attempts) {
            let a = as_user("alice", "s3cret", &nonce, nc);
            let r = ask(
                &mut s,
                now,
                peer(),
                register("a1", nc, carol, contact, expires, Some(&a)),
            );
            assert_eq!(r.unwrap().status(), Some(403), "{contact:?}");
        }
        // Carol's binding is untouched, and alice may still change her own.
        let bindings = s
            .registrar()
            .unwrap()
            .bindings(b"sip:carol@biloxi.example.com");
        assert_eq!(bindings.len(), 1);
        assert_eq!(&*bindings[0].contact, b"sip:carol@192.0.2.9");
        let a = as_user("alice", "s3cret", &nonce, 4);
        let r = ask(
            &mut s,
            now,
            peer(),
            register(
                "a2",
                1,
                alice,
                Some("<sip:alice@192.0.2.1>"),
                Some(600),
                Some(&a),
            ),
        );
        assert_eq!(r.unwrap().status(), Some(200));
        // The admin may change anyone's.
        let ops = as_user("ops", "0ps", &fresh_nonce(&mut s, now), 1);
        let r = ask(
            &mut s,
            now,
            peer(),
            register("o1", 1, carol, Some("*"), Some(0), Some(&ops)),
        );
        assert_eq!(r.unwrap().status(), Some(200));
        assert!(
            s.registrar()
                .unwrap()
                .bindings(b"sip:carol@biloxi.example.com")
                .is_empty()
        );
    }

    #[test]
    fn a_domain_we_do_not_serve_gets_404() {
        let now = Instant::now();
        let mut s = registrar(now, |_, _| {});
        let nonce = fresh_nonce(&mut s, now);
        let a = as_user("alice", "s3cret", &nonce, 1);
        let r = ask(
            &mut s,
            now,
            peer(),
            register(
                "e1",
                1,
                "alice@evil.example",
                Some("<sip:a@192.0.2.1>"),
                Some(600),
                Some(&a),
            ),
        );
        assert_eq!(r.unwrap().status(), Some(404));
        // Served domains are compared without case; an IP literal is a domain too.
        let r = ask(
            &mut s,
            now,
            peer(),
            register("e2", 1, "alice@BILOXI.example.com", None, None, None),
        );
        assert_eq!(r.unwrap().status(), Some(401));
        let r = ask(
            &mut s,
            now,
            peer(),
            register("e3", 1, "alice@127.0.0.1", None, None, None),
        );
        assert_eq!(r.unwrap().status(), Some(401));
    }

    #[test]
    fn a_replayed_authorization_is_refused_and_a_higher_count_is_not() {
        let now = Instant::now();
        let mut s = registrar(now, |_, _| {});
        let nonce = fresh_nonce(&mut s, now);
        let alice = "alice@biloxi.example.com";
        let first = as_user("alice", "s3cret", &nonce, 1);
        let r = ask(
            &mut s,
            now,
            peer(),
            register(
                "r1",
                1,
                alice,
                Some("<sip:alice@192.0.2.1>"),
                Some(600),
                Some(&first),
            ),
        );
        assert_eq!(r.unwrap().status(), Some(200));
        // The same credentials, captured, with another Call-ID and Contact.
        let r = ask(
            &mut s,
            now,
            peer(),
            register(
                "r2",
                1,
                alice,
                Some("<sip:alice@192.0.2.66>"),
                Some(600),
                Some(&first),
            ),
        )
        .unwrap();
        assert_eq!(r.status(), Some(401));
        assert!(nonce_of(&r, "MD5").1, "a replay is answered stale=true");
        assert_eq!(s.stats().guard.auth_failures, 1);
        // The honest client's next count goes through.
        let next = as_user("alice", "s3cret", &nonce, 2);
        let r = ask(
            &mut s,
            now,
            peer(),
            register(
                "r1",
                2,
                alice,
                Some("<sip:alice@192.0.2.1>"),
                Some(600),
                Some(&next),
            ),
        );
        assert_eq!(r.unwrap().status(), Some(200));
        let bindings = s
            .registrar()
            .unwrap()
            .bindings(b"sip:alice@biloxi.example.com");
        assert!(
            bindings
                .iter()
                .all(|b| &*b.contact != b"sip:alice@192.0.2.66")
        );
    }

    #[test]
    fn an_answer_without_qop_is_refused_unless_configured() {
        let now = Instant::now();
        let alice = "alice@biloxi.example.com";
        for allowed in [false, true] {
            let mut s = registrar(now, |auth, _| auth.allow_without_qop = allowed);
            let nonce = fresh_nonce(&mut s, now);
            let a = Answer {
                qop: false,
                ..as_user("alice", "s3cret", &nonce, 0)
            };
            let r = ask(
                &mut s,
                now,
                peer(),
                register(
                    "q1",
                    1,
                    alice,
                    Some("<sip:alice@192.0.2.1>"),
                    Some(600),
                    Some(&a),
                ),
            );
            let want = if allowed { 200 } else { 401 };
            assert_eq!(r.unwrap().status(), Some(want), "allowed: {allowed}");
        }
    }

    #[test]
    fn sha_256_is_offered_beside_md5_and_accepted() {
        use sipshard::message::DigestAlgorithm::{Md5, Sha256};
        let now = Instant::now();
        let mut s = registrar(now, |auth, _| auth.algorithms = vec![Md5, Sha256]);
        let r = ask(
            &mut s,
            now,
            peer(),
            register("s1", 1, "alice@biloxi.example.com", None, None, None),
        )
        .unwrap();
        let challenges: Vec<String> = r
            .header_values(HeaderName::WwwAuthenticate)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert_eq!(challenges.len(), 2, "{challenges:?}");
        assert!(challenges[0].contains("algorithm=MD5"));
        assert!(challenges[1].contains("algorithm=SHA-256"));
        let (nonce, _) = nonce_of(&r, "SHA-256");
        let a = Answer {
            algorithm: DigestAlgorithm::Sha256,
            ..as_user("alice", "s3cret", &nonce, 1)
        };
        let r = ask(
            &mut s,
            now,
            peer(),
            register(
                "s1",
                2,
                "alice@biloxi.example.com",
                Some("<sip:alice@192.0.2.1>"),
                Some(600),
                Some(&a),
            ),
        );
        assert_eq!(r.unwrap().status(), Some(200));
    }

    #[test]
    fn nonces_tell_nothing_of_uptime_and_differ_within_a_second() {
        let now = Instant::now();
        let mut a = registrar(now, |_, _| {});
        let mut b = registrar(now, |_, _| {});
        let (n1, n2, n3) = (
            fresh_nonce(&mut a, now),
            fresh_nonce(&mut a, now),
            fresh_nonce(&mut b, now),
        );
        assert_ne!(n1, n2, "a random part per challenge");
        // Two servers started at the same instant show unrelated times: the time counts
        // from a random origin, not from the start.
        assert_ne!(n1[..16], n3[..16]);
        assert!(u64::from_str_radix(&n1[..16], 16).unwrap() > 3600, "{n1}");
    }

    #[test]
    fn guessing_a_password_bans_the_source_and_the_ban_reaches_every_shard() {
        use sipshard::shard::{PeerMessage, ShardOwner};
        let now = Instant::now();
        let owner = |index| Some(ShardOwner { index, count: 2 });
        let mut s = registrar(now, |_, c| {
            c.owner = owner(0);
            c.guard.auth_failures_per_source = 5;
        });
        let mut other = registrar(now, |_, c| c.owner = owner(1));
        let attacker: SocketAddr = "192.0.2.66:5060".parse().unwrap();
        let alice = "alice@biloxi.example.com";
        let nonce = fresh_nonce(&mut s, now);
        for guess in 0..5 {
            let password = format!("guess{guess}");
            let a = as_user("alice", &password, &nonce, guess + 1);
            let r = ask(
                &mut s,
                now,
                attacker,
                register("g", guess + 1, alice, None, None, Some(&a)),
            );
            assert_eq!(r.unwrap().status(), Some(401), "guess {guess}");
        }
        // Banned: even the right password gets no answer at all.
        let right = as_user("alice", "s3cret", &nonce, 9);
        assert!(
            ask(
                &mut s,
                now,
                attacker,
                register("g", 9, alice, None, None, Some(&right))
            )
            .is_none()
        );
        assert_eq!(s.stats().guard.bans, 1);
        // The other shard hears of it and drops the address too.
        let told: Vec<_> = std::iter::from_fn(|| s.poll_peer()).collect();
        assert!(
            matches!(told.as_slice(), [(1, PeerMessage::Ban { .. })]),
            "{told:?}"
        );
        for (_, m) in told {
            other.handle_peer(now, m);
        }
        assert!(!other.screen(now, attacker));
        assert!(other.screen(now, peer()));
        // Another address with the right password is served meanwhile.
        let honest = as_user("alice", "s3cret", &nonce, 10);
        let r = ask(
            &mut s,
            now,
            peer(),
            register(
                "h",
                1,
                alice,
                Some("<sip:alice@192.0.2.1>"),
                Some(600),
                Some(&honest),
            ),
        );
        assert_eq!(r.unwrap().status(), Some(200));
        // Ten minutes on, the ban is over.
        let later = now + Duration::from_secs(601);
        let r = ask(
            &mut s,
            later,
            attacker,
            register("g2", 1, alice, None, None, None),
        );
        assert_eq!(r.unwrap().status(), Some(401));
    }

    #[test]
    fn a_user_guessed_at_from_many_addresses_is_locked() {
        let now = Instant::now();
        let mut s = registrar(now, |_, c| c.guard.auth_failures_per_user = 4);
        let alice = "alice@biloxi.example.com";
        let nonce = fresh_nonce(&mut s, now);
        for i in 0..4u8 {
            let from = SocketAddr::from(([192, 0, 2, 100 + i], 5060));
            let a = as_user("alice", "wrong", &nonce, u32::from(i) + 1);
            let r = ask(
                &mut s,
                now,
                from,
                register("u", 1, alice, None, None, Some(&a)),
            );
            assert_eq!(r.unwrap().status(), Some(401));
        }
        let right = as_user("alice", "s3cret", &nonce, 10);
        let r = ask(
            &mut s,
            now,
            peer(),
            register(
                "u2",
                1,
                alice,
                Some("<sip:alice@192.0.2.1>"),
                Some(600),
                Some(&right),
            ),
        );
        assert_eq!(r.unwrap().status(), Some(403), "locked");
        assert_eq!(s.stats().guard.user_locks, 1);
    }
}

#[test]
fn a_call_nobody_ends_is_ended_with_bye_at_the_longest_call_duration() {
    use sipshard::shard::TerminationReason;
    let t0 = Instant::now();
    let mut s = Shard::new(
        t0,
        ShardConfig {
            max_call_duration: Some(Duration::from_secs(3600)),
            ..ShardConfig::new(local())
        },
    );
    s.handle_datagram(t0, peer(), request("INVITE", "long1", ""));
    let dialog = events(&mut s)
        .into_iter()
        .find_map(|e| match e {
            SessionEvent::IncomingCall { dialog, .. } => Some(dialog),
            _ => None,
        })
        .unwrap();
    s.handle_command(
        t0,
        DialogCommand::Answer {
            dialog,
            sdp: Bytes::new(),
        },
    )
    .unwrap();
    let ok = sent(&mut s)
        .into_iter()
        .find(|m| m.status() == Some(200))
        .unwrap();
    let to = header(&ok, HeaderName::To).unwrap();
    let ack = format!(
        "ACK sip:bob@127.0.0.1:5199 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5198;branch=z9hG4bKack1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: {to}\r\n\
         Call-ID: long1\r\n\
         CSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n"
    );
    s.handle_datagram(t0, peer(), Bytes::from(ack));
    // Nothing until the limit; then one BYE.
    let mut now = t0;
    while now < t0 + Duration::from_secs(3599) {
        now += Duration::from_secs(60);
        s.handle_timeout(now.min(t0 + Duration::from_secs(3599)));
        assert!(
            sent(&mut s)
                .iter()
                .all(|m| m.method_bytes() != Some(b"BYE"))
        );
    }
    let limit = t0 + Duration::from_secs(3601);
    s.handle_timeout(limit);
    let bye = sent(&mut s)
        .into_iter()
        .find(|m| m.method_bytes() == Some(b"BYE"))
        .expect("a BYE at the limit");
    s.handle_datagram(limit, peer(), common::sip::response_to(&bye, 200));
    let ended = events(&mut s).into_iter().any(|e| {
        matches!(
            e,
            SessionEvent::CallTerminated {
                reason: TerminationReason::MaxDuration,
                ..
            }
        )
    });
    assert!(ended);
    assert_eq!(s.dialog_count(), 0);
    assert_eq!(s.stats().calls_over_limit, 1);
}

/// A response as the callee sends it to `invite`, with `extra_via` above its Via (a
/// response meant for a proxy) and `to_value` as its To (the INVITE's, tagged).
fn response_with(invite: &Message, status: u16, extra_via: bool, to_value: Option<&str>) -> Bytes {
    let mut r = format!("SIP/2.0 {status} Whatever\r\n");
    if extra_via {
        r.push_str("Via: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKproxy\r\n");
    }
    for name in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        for v in invite.header_values(name) {
            r.push_str(&format!("{}: {}\r\n", name, String::from_utf8_lossy(v)));
        }
    }
    let to = to_value.map_or_else(
        || format!("{};tag=callee1", header(invite, HeaderName::To).unwrap()),
        str::to_owned,
    );
    r.push_str(&format!(
        "To: {to}\r\nContact: <sip:bob@127.0.0.1:5198>\r\nContent-Length: 0\r\n\r\n"
    ));
    Bytes::from(r)
}

#[test]
fn bad_responses_are_discarded_before_any_transaction_acts_on_them() {
    let now = Instant::now();
    let mut s = Shard::new(now, ShardConfig::new(local()));
    let call = match s
        .handle_command(
            now,
            DialogCommand::MakeCall {
                from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
                to: Bytes::from_static(b"<sip:bob@127.0.0.1:5198>"),
                request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5198"),
                destination: peer(),
                sdp: Bytes::new(),
                headers: Vec::new(),
            },
        )
        .unwrap()
    {
        sipshard::shard::CommandOutcome::Call(id) => id,
        other => panic!("{other:?}"),
    };
    let invite = sent(&mut s).pop().expect("the INVITE");
    // §8.1.3.3: a 200 with two Vias was meant for a proxy; §18.1.2: a 200 whose To does
    // not parse is bad. Neither answers the call or draws an ACK.
    s.handle_datagram(now, peer(), response_with(&invite, 200, true, None));
    s.handle_datagram(
        now,
        peer(),
        response_with(&invite, 200, false, Some("<sip:bob@127.0.0.1;tag=x")),
    );
    assert!(sent(&mut s).is_empty(), "a bad response was acted on");
    assert!(events(&mut s).is_empty());
    assert_eq!(s.stats().bad_responses, 2);
    // The good one does.
    s.handle_datagram(now, peer(), response_with(&invite, 200, false, None));
    let out = sent(&mut s);
    assert!(
        out.iter().any(|m| m.method_bytes() == Some(b"ACK")),
        "no ACK"
    );
    let answered = events(&mut s)
        .into_iter()
        .any(|e| matches!(e, SessionEvent::CallAnswered { call: ref c, .. } if *c == call));
    assert!(answered);
}

#[test]
fn a_callee_that_rings_and_never_answers_is_cancelled_at_the_ring_timeout() {
    use sipshard::shard::TerminationReason;
    let t0 = Instant::now();
    let mut s = Shard::new(t0, ShardConfig::new(local()));
    s.handle_command(
        t0,
        DialogCommand::MakeCall {
            from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
            to: Bytes::from_static(b"<sip:bob@127.0.0.1:5198>"),
            request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5198"),
            destination: peer(),
            sdp: Bytes::new(),
            headers: Vec::new(),
        },
    )
    .unwrap();
    let invite = sent(&mut s).pop().expect("the INVITE");
    s.handle_datagram(t0, peer(), response_with(&invite, 180, false, None));
    let _ = events(&mut s);
    // Ringing, for ever: RFC 3261 gives the INVITE in Proceeding no timer of its own.
    let mut now = t0;
    for _ in 0..17 {
        now += Duration::from_secs(10);
        s.handle_timeout(now);
        assert!(sent(&mut s).is_empty(), "nothing before the ring timeout");
    }
    now = t0 + Duration::from_secs(181);
    s.handle_timeout(now);
    let cancel = sent(&mut s)
        .into_iter()
        .find(|m| m.method_bytes() == Some(b"CANCEL"))
        .expect("a CANCEL at the ring timeout");
    assert_eq!(s.stats().calls_unanswered, 1);
    // The callee answers the CANCEL 200 and its INVITE 487: the call ends.
    s.handle_datagram(now, peer(), common::sip::response_to(&cancel, 200));
    s.handle_datagram(now, peer(), response_with(&invite, 487, false, None));
    let ended = events(&mut s).into_iter().find_map(|e| match e {
        SessionEvent::CallTerminated { reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(ended, Some(TerminationReason::Cancelled));
    assert_eq!(s.dialog_count(), 0);
}
