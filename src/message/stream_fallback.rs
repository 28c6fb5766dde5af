//! Where a message goes when its stream transport fails it, read from the message itself
//! (RFC 3261 §18.2.2 for a response, the next hop for a request), and the top Via's
//! transport rewritten for a request that goes over another transport (§18.1.1). Used by
//! the runtime on the rare paths where a connection is gone.
//!
//! # What it owns, what it may not touch
//! Those three readings of a whole datagram; the Via grammar is `via`'s.

/// Where a response goes over a stream transport when the connection its request came on
/// is gone (RFC 3261 §18.2.2): the top Via's `received` address, else its sent-by host when
/// that is an IP address, at the sent-by port (else 5060). `None` when `response` is not a
/// parseable response or its Via names no address (sipshard does no DNS).
pub fn stream_response_fallback(response: &bytes::Bytes) -> Option<std::net::SocketAddr> {
    let msg = super::Message::parse(response.clone()).ok()?;
    msg.status()?;
    let via = msg.top_via().ok()?;
    let ip = via.received().or_else(|| via.host().ip())?;
    Some(std::net::SocketAddr::new(ip, via.port.unwrap_or(5060)))
}

/// Where a request goes over a stream transport when the address it was meant for is
/// the source of a connection a client opened and has since closed (an ephemeral port
/// nobody listens on): the request's own next hop (RFC 3261 §12.2.1.1, §8.1.2), the
/// first Route when it is a loose router, else the Request-URI (the remote target, or a
/// strict router), when that names an IP address (sipshard does no DNS); port 5060 when
/// none is written. `None` for a response, an unparseable request, a sips: or non-SIP
/// next hop, or a host name.
pub fn stream_request_fallback(request: &bytes::Bytes) -> Option<std::net::SocketAddr> {
    let msg = super::Message::parse(request.clone()).ok()?;
    msg.method()?;
    let first_route = msg.routes().next().and_then(Result::ok);
    let uri = match &first_route {
        Some(route) if matches!(&route.uri, super::Uri::Sip(u) if u.lr()) => route.uri,
        _ => msg.request_uri()?,
    };
    let super::Uri::Sip(sip) = uri else {
        return None;
    };
    if sip.secure {
        return None;
    }
    Some(std::net::SocketAddr::new(
        sip.host.ip()?,
        sip.port.unwrap_or(5060),
    ))
}

/// `request` with the transport of its top Via's sent-protocol replaced by `token` (`UDP`
/// ↔ `TCP`, which have the same length, so nothing else moves): for a request that goes
/// over another transport than it was built for (RFC 3261 §18.1.1: "the value in the top
/// Via MUST be changed"). `None` when the request does not parse, has no Via, or its
/// transport token is not as long as `token`.
pub fn with_top_via_transport(request: &bytes::Bytes, token: &str) -> Option<bytes::Bytes> {
    let msg = super::Message::parse(request.clone()).ok()?;
    let via = msg.top_via().ok()?;
    if via.transport.len() != token.len() {
        return None;
    }
    // `via.transport` borrows from the request's bytes: its offset is where to write.
    let start = (via.transport.as_ptr() as usize).checked_sub(request.as_ptr() as usize)?;
    let end = start
        .checked_add(token.len())
        .filter(|&e| e <= request.len())?;
    let mut out = bytes::BytesMut::from(&request[..]);
    out[start..end].copy_from_slice(token.as_bytes());
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_falls_back_to_its_next_hop() {
        let request = |route: &str| {
            bytes::Bytes::from(format!(
                "BYE sip:alice@192.0.2.7:5070;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n{route}Call-ID: x\r\nContent-Length: 0\r\n\r\n"
            ))
        };
        let at = |s: &str| Some(s.parse::<std::net::SocketAddr>().unwrap());
        assert_eq!(stream_request_fallback(&request("")), at("192.0.2.7:5070"));
        assert_eq!(
            stream_request_fallback(&request("Route: <sip:192.0.2.9;lr>\r\n")),
            at("192.0.2.9:5060"),
            "a loose router"
        );
        assert_eq!(
            stream_request_fallback(&request("Route: <sip:proxy.example.com;lr>\r\n")),
            None,
            "no DNS"
        );
        let response = bytes::Bytes::from_static(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(stream_request_fallback(&response), None);
    }

    #[test]
    fn the_top_via_transport_is_rewritten_in_place() {
        let request = bytes::Bytes::from_static(
            b"INVITE sip:b@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1, \
SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK2\r\n\
Via: SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n",
        );
        let tcp = with_top_via_transport(&request, "TCP").unwrap();
        assert_eq!(tcp.len(), request.len());
        let text = std::str::from_utf8(&tcp).unwrap();
        assert!(text.contains("Via: SIP/2.0/TCP 192.0.2.9:5060;branch=z9hG4bK1, SIP/2.0/UDP"));
        assert!(
            text.contains("Via: SIP/2.0/UDP 192.0.2.8;"),
            "only the top Via"
        );
        assert_eq!(with_top_via_transport(&tcp, "UDP").unwrap(), request);
        assert_eq!(with_top_via_transport(&request, "SCTP"), None);
    }

    #[test]
    fn a_stream_response_falls_back_to_received_or_the_sent_by_address() {
        let response = |via: &str| {
            bytes::Bytes::from(format!(
                "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\n\
                 Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ))
        };
        let at = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            stream_response_fallback(&response("SIP/2.0/TCP 192.0.2.1:5070;branch=z9hG4bK1")),
            at("192.0.2.1:5070")
        );
        assert_eq!(
            stream_response_fallback(&response(
                "SIP/2.0/TCP pc.example.com;branch=z9hG4bK1;received=192.0.2.9"
            )),
            at("192.0.2.9:5060")
        );
        assert_eq!(
            stream_response_fallback(&response("SIP/2.0/TCP [2001:db8::1]:5080;branch=z9hG4bK1")),
            at("[2001:db8::1]:5080")
        );
        assert_eq!(
            stream_response_fallback(&response("SIP/2.0/TCP pc.example.com;branch=z9hG4bK1")),
            None,
            "no DNS"
        );
        let request = bytes::Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n\
              Content-Length: 0\r\n\r\n",
        );
        assert_eq!(
            stream_response_fallback(&request),
            None,
            "requests follow their target"
        );
    }
}
