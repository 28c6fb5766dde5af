//! RFC 5118 IPv6 torture tests: the 12 messages of `corpus/rfc5118/wire/`, handled as the
//! manifest says.

mod common;

use std::net::{IpAddr, Ipv6Addr};

use bytes::Bytes;
use sipshard::message::{Host, Message, ParseError, UriError};

fn v6(s: &str) -> Host<'static> {
    Host::V6(s.parse().unwrap())
}

fn parse(name: &str) -> Result<Message, ParseError> {
    Message::parse(common::read(&format!("rfc5118/wire/{name}.sip")))
}

fn valid(name: &str) -> Message {
    let m = parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    m.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    m.check_request().unwrap_or_else(|e| panic!("{name}: {e}"));
    m
}

fn request_uri_host(m: &Message) -> (Host<'_>, Option<u16>) {
    let uri = m.request_uri().unwrap();
    let u = *uri.as_sip().unwrap();
    (u.host, u.port)
}

#[test]
fn s4_1_valid_ipv6_references() {
    let m = valid("ipv6-good");
    assert_eq!(request_uri_host(&m), (v6("2001:db8::10"), None));
    assert_eq!(m.top_via().unwrap().host(), v6("2001:db8::9:1"));
    let c = m.contacts().next().unwrap().unwrap();
    assert_eq!(
        c.addr().unwrap().uri.as_sip().unwrap().host,
        v6("2001:db8::1")
    );
}

#[test]
fn s4_2_ipv6_without_brackets_is_rejected() {
    assert!(matches!(
        parse("ipv6-bad"),
        Err(ParseError::InvalidRequestUri(UriError::InvalidHost))
    ));
}

#[test]
fn s4_3_and_4_4_port_ambiguity() {
    // Parses, but the last group is part of the address, not a port: the caller sees no port.
    let m = valid("port-ambiguous");
    assert_eq!(request_uri_host(&m), (v6("2001:db8::10:5070"), None));
    let m = valid("port-unambiguous");
    assert_eq!(request_uri_host(&m), (v6("2001:db8::10"), Some(5070)));
}

#[test]
fn s4_5_received_with_and_without_brackets() {
    let want = Some(IpAddr::V6("2001:db8::9:255".parse::<Ipv6Addr>().unwrap()));
    for name in [
        "via-received-param-with-delim",
        "via-received-param-no-delim",
    ] {
        let m = valid(name);
        assert_eq!(m.top_via().unwrap().received(), want, "{name}");
    }
}

#[test]
fn s4_6_ipv6_in_sdp_and_the_rfcs_wrong_content_length() {
    // As printed, Content-Length (268) exceeds the body (251 bytes with CRLF): RFC 3261
    // §18.3 makes that a framing error on UDP, which wins over the manifest's "accept".
    let raw = common::read("rfc5118/wire/ipv6-in-sdp.sip");
    assert!(matches!(
        Message::parse(raw.clone()),
        Err(ParseError::ContentLengthExceedsDatagram {
            declared: 268,
            available: 251
        })
    ));
    // With the length corrected, the message is valid and the SDP travels untouched.
    let fixed = String::from_utf8(raw.to_vec())
        .unwrap()
        .replace("Content-Length: 268", "Content-Length: 251");
    let m = Message::parse(Bytes::from(fixed)).unwrap();
    m.check_request().unwrap();
    assert!(
        m.body_bytes()
            .windows(20)
            .any(|w| w == b"c=IN IP6 2001:db8::2")
    );
    assert_eq!(request_uri_host(&m), (v6("2001:db8::10"), None));
}

#[test]
fn s4_7_multiple_ip_versions_in_vias() {
    let m = valid("mult-ip-in-header");
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[0].host(), vias[0].port),
        (v6("2001:db8::9:1"), Some(6050))
    );
    assert_eq!(vias[1].host(), Host::V4("192.0.2.1".parse().unwrap()));
    assert_eq!(vias[2].received(), Some("192.0.2.200".parse().unwrap()));
}

#[test]
fn s4_8_and_4_9_bodies_shorter_than_the_datagram() {
    // Content-Length shorter than the datagram: the body is truncated to it (§18.3).
    let m = valid("mult-ip-in-sdp");
    assert_eq!(m.body_bytes().len(), 181);
    let m = valid("ipv4-mapped-ipv6");
    assert_eq!(m.body_bytes().len(), 236);
    let top = m.top_via().unwrap();
    assert_eq!(
        (top.host(), top.port),
        (v6("::ffff:192.0.2.10"), Some(19823))
    );
}

#[test]
fn s4_10_abnf_bug() {
    assert!(matches!(
        parse("ipv6-bug-abnf-3-colons"),
        Err(ParseError::InvalidRequestUri(UriError::InvalidHost))
    ));
    let m = valid("ipv6-correct-abnf-2-colons");
    assert_eq!(request_uri_host(&m), (v6("2001:db8::192.0.2.1"), None));
}

#[test]
fn manifest_is_covered() {
    let rows = common::manifest("rfc5118/manifest.tsv");
    assert_eq!(rows.len(), 12);
    for row in rows {
        let outcome = parse(&row[0]);
        match row[2].as_str() {
            "invalid-parse" => assert!(outcome.is_err(), "{}", row[0]),
            // 4.6 is the documented exception above (the RFC's own Content-Length is wrong).
            _ if row[0] == "ipv6-in-sdp" => assert!(outcome.is_err()),
            _ => assert!(outcome.is_ok(), "{}: {:?}", row[0], outcome.err()),
        }
    }
}
