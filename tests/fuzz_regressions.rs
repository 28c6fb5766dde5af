//! Inputs the fuzzers found, kept as regression tests (`tests/data/fuzz/`). Each runs through
//! the same checks as the fuzz targets: no panic, the Call-ID scan agrees with the parse, and
//! parse → build → parse keeps the fields.

use bytes::{Bytes, BytesMut};
use sipshard::message::{HeaderName, Message, find_call_id};

fn check(data: &[u8]) {
    let scanned = find_call_id(data);
    let Ok(m) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = (m.validate(), m.check_request(), m.check_response());
    if let Some(cid) = m.call_id().filter(|c| !c.is_empty()) {
        assert_eq!(scanned, Some(cid));
    }
    let mut buf = BytesMut::new();
    let built = m.write_to(&mut buf);
    if built.is_ok() {
        let again = Message::parse(buf.freeze()).unwrap();
        assert_eq!(m.body_bytes(), again.body_bytes());
        assert_eq!(
            m.headers()
                .filter(|h| h.name != HeaderName::ContentLength)
                .count(),
            again
                .headers()
                .filter(|h| h.name != HeaderName::ContentLength)
                .count()
        );
    }
}

#[test]
fn fuzz_findings_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}

#[test]
fn lost_fold_only_joins_address_lists() {
    // A Call-ID ending in ',' followed by a '<' line is a malformed message, not a fold.
    let m = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: abc,\r\n<sip:x>\r\n\r\n";
    assert!(Message::parse(Bytes::from_static(m)).is_err());
}
