//! A 400 for a request too broken to parse (RFC 3261 §8.2.2, §18.3; RFC 4475 §3.1.2 asks
//! for "400 Bad Request" on UDP where a response can be formed).
//!
//! [`Message::parse`](super::Message::parse) refuses the whole datagram on the first
//! error, so it cannot say where to answer. This reads the datagram line by line, keeps
//! only what a response must copy (§8.2.6.2: Via, From, To, Call-ID, CSeq), and builds the
//! response from those lines. No line that is not a well-formed header line is copied, and
//! control characters never are.

use bytes::{BufMut, Bytes, BytesMut};

use super::via::Via;

/// A response to an unparseable request, and where §18.2.2 says it goes.
#[derive(Debug)]
pub struct Salvaged {
    /// The response bytes.
    pub response: Bytes,
    /// `Some(port)` when the top Via parsed without rport: the sent-by port (5060 if
    /// none) at the source address. `None`: answer the source address and port.
    pub via_port: Option<u16>,
}

/// Builds a `status` response to a request datagram that did not parse; `None` for a
/// response, a datagram with no request line, or a request without a Via.
pub fn salvage_response(
    datagram: &[u8],
    status: u16,
    reason: &str,
    tag: &[u8],
) -> Option<Salvaged> {
    let start = datagram.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let mut lines = logical_lines(&datagram[start..]);
    let request_line = lines.next()?;
    // An ACK is never answered (§17.1.1.3, §17.2.1).
    if !looks_like_request_line(&request_line) || request_line.starts_with(b"ACK ") {
        return None;
    }
    let mut out = BytesMut::with_capacity(512);
    out.put_slice(b"SIP/2.0 ");
    out.put_slice(status.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason.as_bytes());
    out.put_slice(b"\r\n");
    let mut top_via: Option<Vec<u8>> = None;
    let mut vias = 0;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        let value = trim(&line[colon + 1..]);
        let kind = copied_header(name);
        if kind.is_none() || value.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
            continue;
        }
        let canonical = kind.unwrap_or_default();
        if canonical == "Via" {
            vias += 1;
            if top_via.is_none() {
                let first = value.split(|&b| b == b',').next().unwrap_or(value);
                top_via = Some(trim(first).to_vec());
            }
        }
        out.put_slice(canonical.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value);
        if canonical == "To" && !contains_tag(value) && !tag.is_empty() {
            out.put_slice(b";tag=");
            out.put_slice(tag);
        }
        out.put_slice(b"\r\n");
    }
    if vias == 0 {
        return None;
    }
    out.put_slice(b"Content-Length: 0\r\n\r\n");
    let via_port = top_via
        .as_deref()
        .and_then(|v| Via::parse(v).ok())
        .filter(|v| v.rport().is_none())
        .map(|v| v.port.unwrap_or(5060));
    Some(Salvaged {
        response: out.freeze(),
        via_port,
    })
}

/// Header lines up to the blank line, folds joined with one space (§7.3.1).
fn logical_lines(head: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut raw = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .peekable();
    std::iter::from_fn(move || {
        let mut line = raw.next()?.to_vec();
        while let Some(next) = raw.next_if(|l| l.first().is_some_and(|&b| b == b' ' || b == b'\t'))
        {
            line.push(b' ');
            line.extend_from_slice(trim(next));
        }
        Some(line)
    })
}

fn looks_like_request_line(line: &[u8]) -> bool {
    let method_len = line
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        .count();
    method_len > 0
        && line.get(method_len) == Some(&b' ')
        && !line.starts_with(b"SIP/")
        && line.windows(5).any(|w| w.eq_ignore_ascii_case(b" SIP/"))
}

/// The headers a response copies from its request, by long or compact name.
fn copied_header(name: &[u8]) -> Option<&'static str> {
    const NAMES: [(&[u8], &[u8], &str); 5] = [
        (b"via", b"v", "Via"),
        (b"from", b"f", "From"),
        (b"to", b"t", "To"),
        (b"call-id", b"i", "Call-ID"),
        (b"cseq", b"", "CSeq"),
    ];
    NAMES
        .iter()
        .find(|(long, short, _)| {
            name.eq_ignore_ascii_case(long)
                || (!short.is_empty() && name.eq_ignore_ascii_case(short))
        })
        .map(|(_, _, canonical)| *canonical)
}

fn contains_tag(value: &[u8]) -> bool {
    value.windows(4).any(|w| w.eq_ignore_ascii_case(b"tag="))
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    const BROKEN: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\r\n\
        v: SIP/2.0/UDP 192.0.2.9\r\n\
        To: <sip:bob@example.com>\r\n\
        From: <sip:alice@example.com>;tag=a\r\n\
        Call-ID: x\r\n\
        CSeq: 1\r\n INVITE\r\n\
        Content-Length: 9999\r\n\r\nv=0\r\n";

    #[test]
    fn copies_what_a_response_needs_and_parses() {
        let s = salvage_response(BROKEN, 400, "Bad Request", b"t1").unwrap();
        assert_eq!(s.via_port, Some(5070));
        let m = Message::parse(s.response.clone()).unwrap();
        assert_eq!(m.status(), Some(400));
        assert_eq!(m.vias().count(), 2);
        assert_eq!(m.to_tag().unwrap(), Some(&b"t1"[..]));
        assert_eq!(m.cseq().unwrap().seq, 1);
        assert!(m.validate().is_ok());
    }

    #[test]
    fn refuses_responses_and_requests_without_via() {
        assert!(
            salvage_response(
                b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n",
                400,
                "x",
                b"t"
            )
            .is_none()
        );
        assert!(
            salvage_response(
                b"INVITE sip:a SIP/2.0\r\nTo: <sip:a>\r\n\r\n",
                400,
                "x",
                b"t"
            )
            .is_none()
        );
        assert!(salvage_response(b"garbage", 400, "x", b"t").is_none());
        assert!(
            salvage_response(
                b"ACK sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",
                400,
                "x",
                b"t"
            )
            .is_none()
        );
    }

    #[test]
    fn an_unreadable_top_via_means_answer_the_source_and_rport_too() {
        let s = salvage_response(
            b"OPTIONS sip:a SIP/2.0\r\nVia: ;;,;\r\n\r\n",
            400,
            "x",
            b"t",
        )
        .unwrap();
        assert_eq!(s.via_port, None);
        let s = salvage_response(
            b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h:7;rport;branch=z9hG4bKx\r\n\r\n",
            400,
            "x",
            b"t",
        )
        .unwrap();
        assert_eq!(s.via_port, None);
    }

    #[test]
    fn control_characters_are_never_copied() {
        let s = salvage_response(
            b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:a>\x00x\r\n\r\n",
            400,
            "x",
            b"t",
        )
        .unwrap();
        assert!(!s.response.contains(&0));
    }
}
