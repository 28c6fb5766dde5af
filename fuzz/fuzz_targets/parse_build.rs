//! parse → build → parse gives back the same fields (values compared with folding collapsed
//! to one SP, RFC 3261 §7.3.1).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sipshard::message::{HeaderName, Message, ParseLimits};

fn collapse(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for &c in v {
        let ws = matches!(c, b' ' | b'\t' | b'\r' | b'\n');
        if !(ws && out.last() == Some(&b' ')) {
            out.push(if ws { b' ' } else { c });
        }
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    out
}

fn fields(m: &Message) -> Vec<(HeaderName, Vec<u8>, Vec<u8>)> {
    m.headers()
        .filter(|h| h.name != HeaderName::ContentLength)
        .map(|h| (h.name, h.name_bytes.to_vec(), collapse(h.value)))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut buf = BytesMut::new();
    let built = m.write_to(&mut buf);
    if built.is_err() {
        return; // NUL in a value, or a line break in the reason phrase: refused, not written
    }
    let limits = ParseLimits {
        max_message_size: usize::MAX,
        max_headers: usize::MAX,
    };
    let again = Message::parse_with(buf.freeze(), &limits).expect("a built message parses");
    assert_eq!(m.method_bytes(), again.method_bytes());
    assert_eq!(m.request_uri_bytes(), again.request_uri_bytes());
    assert_eq!(m.status(), again.status());
    assert_eq!(m.reason(), again.reason());
    assert_eq!(fields(&m), fields(&again));
    assert_eq!(m.body_bytes(), again.body_bytes());
});
