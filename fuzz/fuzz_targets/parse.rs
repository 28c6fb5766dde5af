//! Arbitrary datagrams through the parser and every view: nothing may panic, and the fast
//! Call-ID scan must agree with the full parse.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipshard::message::{Message, find_call_id};

fuzz_target!(|data: &[u8]| {
    let scanned = find_call_id(data);
    let Ok(m) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = (m.validate(), m.check_request(), m.check_response());
    let _ = (m.cseq(), m.from_header(), m.to_header(), m.from_tag(), m.to_tag());
    let _ = (m.top_via(), m.max_forwards(), m.content_type(), m.expires(), m.min_expires());
    let _ = (m.event(), m.subscription_state(), m.refer_to(), m.replaces());
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
    if let Some(cid) = m.call_id()
        && !cid.is_empty()
    {
        assert_eq!(scanned, Some(cid), "scan and parse disagree on the Call-ID");
    }
});
