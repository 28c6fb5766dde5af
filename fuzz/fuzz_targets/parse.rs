//! Arbitrary datagrams through the parser and every view: nothing may panic, and the fast
//! paths must agree with the full parse wherever both read: the Call-ID scan, the one-pass
//! top-Via key, the one-pass From/To tags, and the one-pass name-addr, Via, CSeq and URI
//! readers on every header value; URI headers decoded; stream framing stays in bounds.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipshard::message::{
    DigestChallenge, Frame, HeaderName, Message, ViaKey, find_call_id, fuzzing, header_block,
    next_frame, salvage_response, stream_response_fallback,
};

fuzz_target!(|data: &[u8]| {
    fuzzing::assert_fast_paths_agree(data);
    // Stream framing (§18.3): whatever it takes off the front is within the buffer, and a
    // framed message starts where a datagram would.
    match next_frame(data, 65_535) {
        Ok(Frame::Message(n) | Frame::Skip(n) | Frame::KeepAlive(n)) => assert!(n <= data.len()),
        // What an unframeable request is answered from (§18.3): a prefix of the buffer.
        Err(e) => {
            if let Some(block) = header_block(data, 65_535) {
                assert!(data.starts_with(block));
                let _ = salvage_response(block, e.status().0, e.status().1, b"tag");
            }
        }
        Ok(_) => {}
    }
    let _ = stream_response_fallback(&Bytes::copy_from_slice(data));
    let scanned = find_call_id(data);
    let Ok(m) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = (m.validate(), m.check_request(), m.check_response());
    fuzzing::assert_kept_top_via_agrees(&m);
    for h in m.headers() {
        fuzzing::assert_fast_paths_agree(h.value);
        // Any challenge sipshard reads, it can answer (RFC 3261 §22.4).
        if let Some(challenge) = DigestChallenge::parse(h.value) {
            let answer = challenge.answer("u", "p", b"INVITE", h.value, data, "c");
            assert!(answer.starts_with("Digest username=\"u\""));
        }
    }
    for name in [HeaderName::Via, HeaderName::Contact, HeaderName::Route] {
        for v in m.list_values(name).flatten() {
            fuzzing::assert_fast_paths_agree(v);
        }
    }
    if let Some(uri) = m.request_uri_bytes() {
        fuzzing::assert_fast_paths_agree(uri);
    }
    let _ = (
        m.cseq(),
        m.from_header(),
        m.to_header(),
        m.from_tag(),
        m.to_tag(),
    );
    let _ = (
        m.top_via(),
        m.max_forwards(),
        m.content_type(),
        m.expires(),
        m.min_expires(),
    );
    let _ = (
        m.event(),
        m.subscription_state(),
        m.refer_to(),
        m.replaces(),
    );
    // The URI headers a Refer-To carries, decoded (attended transfer).
    let _ = sipshard::shard::replaces_of_refer_to(&m);
    if let Ok(sipshard::message::Uri::Sip(uri)) =
        sipshard::message::Uri::parse(m.request_uri_bytes().unwrap_or_default())
    {
        let _ = (uri.header("Replaces"), uri.header(""));
    }
    let _ = (m.rseq(), m.rack(), m.session_expires(), m.min_se());
    let _ = (m.authorization(), m.www_authenticate(), m.request_uri());
    for v in m.vias().flatten() {
        let _ = (v.branch(), v.received(), v.rport(), v.ttl(), v.maddr());
    }
    for c in m.contacts().flatten() {
        let _ = (c.expires(), c.q());
    }
    let _ = m.routes().count() + m.record_routes().count();
    let _ = m.require().count() + m.supported().count() + m.allow().count();
    if let (Ok(key), Ok(via)) = (m.top_via_key(), m.top_via()) {
        assert_eq!(key, ViaKey::from(&via), "top-Via scan and parser disagree");
    }
    if let (Ok(tag), Ok(from)) = (m.from_tag(), m.from_header()) {
        assert_eq!(
            tag,
            from.tag(),
            "From tag: one pass and full parse disagree"
        );
    }
    if let (Ok(tag), Ok(to)) = (m.to_tag(), m.to_header()) {
        assert_eq!(tag, to.tag(), "To tag: one pass and full parse disagree");
    }
    if let Some(cid) = m.call_id()
        && !cid.is_empty()
    {
        assert_eq!(scanned, Some(cid), "scan and parse disagree on the Call-ID");
    }
});
