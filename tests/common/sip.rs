//! Building what a SIP peer sends back, for tests that play the peer by hand.

use bytes::Bytes;
use sipshard::message::{HeaderName, Message};

/// A response with `status` to `request`, as its peer sends it: the request's Via, From,
/// To, Call-ID and CSeq, no body.
pub fn response_to(request: &Message, status: u16) -> Bytes {
    let mut r = format!("SIP/2.0 {status} Test\r\n").into_bytes();
    for name in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        for value in request.header_values(name) {
            r.extend_from_slice(format!("{name}: ").as_bytes());
            r.extend_from_slice(value);
            r.extend_from_slice(b"\r\n");
        }
    }
    r.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Bytes::from(r)
}
