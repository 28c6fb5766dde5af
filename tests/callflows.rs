//! RFC 3261 §24 and RFC 3665 call flows: every message parses, passes the message-level
//! checks (except the RFC's own typos, listed), and survives a round trip through the
//! builder with the same fields.

mod common;

use bytes::BytesMut;
use sipshard::message::{HeaderName, Message, RejectReason};

/// Messages the RFCs print with an error of their own, and what our checks say of them.
const KNOWN_TYPOS: &[(&str, &str)] = &[(
    "rfc3665/s2.01-successful-new-registration/F03-register.sip",
    "Authorization lacks the comma after realm=\"…\"",
)];

fn files() -> Vec<String> {
    let mut files: Vec<String> = common::manifest("callflows/flows.tsv")
        .into_iter()
        .map(|row| row[5].clone())
        .collect();
    files.sort();
    files.dedup();
    files
}

fn rebuild(m: &Message) -> Message {
    let mut buf = BytesMut::new();
    m.write_to(&mut buf)
        .expect("corpus messages can be written again");
    Message::parse(buf.freeze()).expect("built message parses")
}

fn same_fields(a: &Message, b: &Message, file: &str) {
    assert_eq!(a.method_bytes(), b.method_bytes(), "{file}");
    assert_eq!(a.request_uri_bytes(), b.request_uri_bytes(), "{file}");
    assert_eq!(a.status(), b.status(), "{file}");
    assert_eq!(a.reason(), b.reason(), "{file}");
    // Folding is equivalent to one SP (RFC 3261 §7.3.1): compare values with LWS runs
    // collapsed, since the builder writes any line break inside a value as a proper fold.
    let collapse = |v: &[u8]| {
        let mut out = Vec::with_capacity(v.len());
        for &c in v {
            let ws = matches!(c, b' ' | b'\t' | b'\r' | b'\n');
            if !(ws && out.last() == Some(&b' ')) {
                out.push(if ws { b' ' } else { c });
            }
        }
        out
    };
    let strip = |m: &Message| {
        m.headers()
            .filter(|h| h.name != HeaderName::ContentLength)
            .map(|h| (h.name, h.name_bytes.to_vec(), collapse(h.value)))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(a), strip(b), "{file}");
    assert_eq!(a.body_bytes(), b.body_bytes(), "{file}");
    assert_eq!(
        b.content_length(),
        Some(a.body_bytes().len() as u32),
        "{file}"
    );
    assert_eq!(a.call_id(), b.call_id(), "{file}");
    assert_eq!(a.cseq().unwrap(), b.cseq().unwrap(), "{file}");
    assert_eq!(a.from_tag().unwrap(), b.from_tag().unwrap(), "{file}");
    assert_eq!(a.to_tag().unwrap(), b.to_tag().unwrap(), "{file}");
    let vias = |m: &Message| {
        m.vias()
            .map(|v| v.unwrap().branch().map(<[u8]>::to_vec))
            .collect::<Vec<_>>()
    };
    assert_eq!(vias(a), vias(b), "{file}");
}

#[test]
fn every_call_flow_message_parses_checks_and_round_trips() {
    let files = files();
    assert_eq!(files.len(), 197, "181 RFC 3665 + 16 RFC 3261 §24 files");
    for file in &files {
        let m = Message::parse(common::read(&format!("callflows/{file}")))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let checked = if m.is_request() {
            m.check_request().map_err(|r| r.reason)
        } else {
            m.check_response()
        };
        match KNOWN_TYPOS.iter().find(|(f, _)| f == file) {
            Some(_) => assert!(
                matches!(
                    checked,
                    Err(RejectReason::Malformed(
                        sipshard::message::ParseError::InvalidHeader {
                            name: HeaderName::Authorization,
                            ..
                        }
                    ))
                ),
                "{file}: {checked:?}"
            ),
            None => checked.unwrap_or_else(|e| panic!("{file}: {e:?}")),
        }
        let again = rebuild(&m);
        same_fields(&m, &again, file);
    }
}
