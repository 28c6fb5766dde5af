//! The smallest correct SDP answerer (RFC 3264 over RFC 4566), for the auto-answer mode.
//!
//! The dialog layer passes offers and answers through untouched; this module exists only
//! so that a server answering calls by itself still follows offer/answer (RFC 3261 §13.2.1:
//! an INVITE with an offer gets its answer in the 2xx; one without gets an offer there).
//! It reads the offer's `m=` lines and direction attributes and nothing else: one answer
//! `m=` line per offered one, in order, same media, transport and formats (RFC 3264 §6.1),
//! with their `a=rtpmap` and `a=fmtp` lines and the mirrored direction (sendonly is
//! answered recvonly, so a call put on hold stays on hold); a port of 0 stays 0 (a refused
//! stream). The media ports it announces are
//! placeholders: sipshard carries no media.
//!
//! It may not touch sockets, clocks or dialogs: bytes in, bytes out.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::Bytes;

use crate::message::{HeaderName, MediaType, Message};

/// First media port announced; stream `i` gets `BASE_PORT + 2·i`.
const BASE_PORT: u32 = 16_000;

/// The SDP body of `request`: the whole body when its Content-Type is `application/sdp`,
/// the first `application/sdp` part of a `multipart/*` body (RFC 5621: SIP-I/SIP-T carry
/// ISUP beside the SDP), else nothing. Zero-copy: a slice of the datagram.
pub fn offer_of(request: &Message) -> &[u8] {
    // Most ACKs and responses carry no body: no Content-Type to read then.
    let body = request.body_bytes();
    if body.is_empty() {
        return &[];
    }
    if has_plain_sdp_type(request) {
        return body;
    }
    let Ok(Some(content_type)) = request.content_type() else {
        return &[];
    };
    if is_sdp(&content_type) {
        return body;
    }
    if content_type.mtype.eq_ignore_ascii_case(b"multipart")
        && let Some(Some(boundary)) = content_type.params.get("boundary")
    {
        return sdp_part(body, crate::message::unquote(boundary)).unwrap_or_default();
    }
    &[]
}

/// [`offer_of`] as shared bytes of the datagram (no copy), for events that carry the SDP
/// of a request or response.
pub fn sdp_bytes(message: &Message) -> Bytes {
    let sdp = offer_of(message);
    if sdp.is_empty() {
        Bytes::new()
    } else {
        message.datagram().slice_ref(sdp)
    }
}

/// True for a body type sipshard reads itself in INVITE, UPDATE and PRACK: SDP, or a
/// multipart body that may hold it.
pub fn is_understood_body(content_type: &MediaType<'_>) -> bool {
    is_sdp(content_type) || content_type.mtype.eq_ignore_ascii_case(b"multipart")
}

/// Whether the message's Content-Type is `application/sdp` as nearly every one is written
/// (any case, no parameters, no white space): read without parsing the media type.
pub(crate) fn has_plain_sdp_type(message: &Message) -> bool {
    message
        .header(HeaderName::ContentType)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"application/sdp"))
}

fn is_sdp(m: &MediaType<'_>) -> bool {
    m.mtype.eq_ignore_ascii_case(b"application") && m.subtype.eq_ignore_ascii_case(b"sdp")
}

/// The first part of a multipart body (RFC 2046 §5.1.1) whose Content-Type is
/// `application/sdp`. A part without Content-Type is `text/plain`; a body that breaks the
/// delimiter rules yields nothing.
fn sdp_part<'a>(body: &'a [u8], boundary: &[u8]) -> Option<&'a [u8]> {
    if boundary.is_empty() || boundary.len() > 70 {
        return None;
    }
    let mut delimiter = Vec::with_capacity(boundary.len() + 4);
    delimiter.extend_from_slice(b"\r\n--");
    delimiter.extend_from_slice(boundary);
    // The first delimiter may open the body, without the CRLF before it.
    let mut rest = if body.starts_with(&delimiter[2..]) {
        &body[delimiter.len() - 2..]
    } else {
        let at = memchr::memmem::find(body, &delimiter)?;
        &body[at + delimiter.len()..]
    };
    loop {
        if rest.starts_with(b"--") {
            return None; // the close delimiter: no SDP part
        }
        // Transport padding up to the end of the delimiter line.
        let eol = memchr::memmem::find(rest, b"\r\n")?;
        rest = &rest[eol + 2..];
        let end = memchr::memmem::find(rest, &delimiter)?;
        let part = &rest[..end];
        rest = &rest[end + delimiter.len()..];
        let (headers, content) = if let Some(content) = part.strip_prefix(b"\r\n") {
            (&b""[..], content)
        } else {
            match memchr::memmem::find(part, b"\r\n\r\n") {
                Some(i) => (&part[..i], &part[i + 4..]),
                None => (part, &b""[..]),
            }
        };
        let part_is_sdp = headers.split(|&b| b == b'\n').any(|line| {
            let Some(colon) = memchr::memchr(b':', line) else {
                return false;
            };
            let name = line[..colon].trim_ascii();
            (name.eq_ignore_ascii_case(b"content-type") || name.eq_ignore_ascii_case(b"c"))
                && MediaType::parse(&line[colon + 1..]).is_ok_and(|m| is_sdp(&m))
        });
        if part_is_sdp {
            return Some(content);
        }
    }
}

/// The `o=` line's session id and version (RFC 4566 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Session id: the same for every description of one session.
    pub session_id: u64,
    /// Version: higher in each new description of that session.
    pub version: u64,
}

impl Origin {
    /// The origin of our answer to `request` (RFC 3264 §8: a later description of the same
    /// session keeps the id and raises the version). The id is derived from the Call-ID and
    /// the requester's tag, which stay the same for the whole dialog; the version is the
    /// request's CSeq number, which grows with every offer the peer sends in it.
    pub fn for_request(request: &Message) -> Origin {
        // FNV-1a: stable across runs and shards, so no state is kept per dialog.
        let mut id: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in request
            .call_id()
            .unwrap_or_default()
            .iter()
            .chain(b"\0")
            .chain(request.from_tag().ok().flatten().unwrap_or_default())
        {
            id = (id ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Origin {
            // Kept below 2^62 so that it prints as a plain positive number everywhere.
            session_id: id >> 2,
            version: u64::from(request.cseq().map_or(1, |c| c.seq)),
        }
    }
}

/// The `o=` line's user name and the `s=` line of the descriptions we write (RFC 4566
/// §5.2, §5.3). By default `anonymous` and `-`, which name no software. (`o=-` would be
/// RFC 4566's own choice, but SIPp's `regexp` scenario, and tools built like it, read the
/// origin's user as `[[:alnum:]]*`.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpNames {
    /// `<username>` of `o=`: a token without spaces (`-` when there is none).
    pub origin_user: String,
    /// `s=`: the session name (`-` when there is none).
    pub session_name: String,
}

impl Default for SdpNames {
    fn default() -> Self {
        SdpNames {
            origin_user: "anonymous".to_owned(),
            session_name: "-".to_owned(),
        }
    }
}

/// Our answer to the offer in `request` (or an offer, when it carries none), with the
/// origin [`Origin::for_request`] gives and `names`.
pub fn answer_request(request: &Message, address: IpAddr, names: &SdpNames) -> Bytes {
    answer(
        offer_of(request),
        address,
        Origin::for_request(request),
        names,
    )
}

/// The answer to `offer` (an SDP body), or an audio offer (PCMU, PCMA, telephone-event)
/// when `offer` is empty or holds no `m=` line, with `origin` and `names` on its `o=`
/// and `s=` lines.
pub fn answer(offer: &[u8], address: IpAddr, origin: Origin, names: &SdpNames) -> Bytes {
    let ip = match address {
        IpAddr::V4(a) => format!("IP4 {a}"),
        IpAddr::V6(a) => format!("IP6 {a}"),
    };
    let mut out = String::with_capacity(256);
    let _ = write!(
        out,
        "v=0\r\no={} {} {} IN {ip}\r\ns={}\r\nc=IN {ip}\r\nt=0 0\r\n",
        names.origin_user, origin.session_id, origin.version, names.session_name
    );
    let mut streams = 0u32;
    let mut keep_attributes = false;
    // RFC 3264 §6.1: a stream offered sendonly is answered recvonly, recvonly sendonly,
    // inactive inactive. A session-level direction applies to every stream without its own.
    let mut session_direction = Direction::SendRecv;
    let mut in_media = false;
    // The current accepted stream's own direction, written when its section ends.
    let mut stream_direction: Option<Option<Direction>> = None;
    let close = |out: &mut String, stream: Option<Option<Direction>>, session: Direction| {
        if let Some(own) = stream {
            let answer = own.unwrap_or(session).answer();
            if answer != Direction::SendRecv {
                let _ = write!(out, "a={}\r\n", answer.as_str());
            }
        }
    };
    for line in offer.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(line) = std::str::from_utf8(line) else {
            keep_attributes = false;
            continue;
        };
        if let Some(media) = line.strip_prefix("m=") {
            close(&mut out, stream_direction.take(), session_direction);
            in_media = true;
            // m=<media> <port>[/<count>] <proto> <fmt> ...
            let mut fields = media.split(' ');
            let (Some(kind), Some(port), Some(proto)) =
                (fields.next(), fields.next(), fields.next())
            else {
                keep_attributes = false;
                continue;
            };
            let formats: Vec<&str> = fields.filter(|f| !f.is_empty()).collect();
            let refused = port.split('/').next() == Some("0") || formats.is_empty();
            let port = if refused { 0 } else { BASE_PORT + 2 * streams };
            let formats = if formats.is_empty() {
                "0".to_owned()
            } else {
                formats.join(" ")
            };
            let _ = write!(out, "m={kind} {port} {proto} {formats}\r\n");
            streams += 1;
            keep_attributes = !refused;
            if !refused {
                stream_direction = Some(None);
            }
        } else if let Some(direction) = line.strip_prefix("a=").and_then(Direction::parse) {
            match (in_media, stream_direction.as_mut()) {
                (false, _) => session_direction = direction,
                (true, Some(own)) => *own = Some(direction),
                (true, None) => {}
            }
        } else if keep_attributes && (line.starts_with("a=rtpmap:") || line.starts_with("a=fmtp:"))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    close(&mut out, stream_direction.take(), session_direction);
    if streams == 0 {
        let _ = write!(
            out,
            "m=audio {BASE_PORT} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
        );
    }
    Bytes::from(out)
}

/// A stream's direction attribute (RFC 3264 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(attribute: &str) -> Option<Direction> {
        match attribute.trim_end() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The direction that answers this offered one (§6.1).
    fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(n: u64) -> Origin {
        Origin {
            session_id: n,
            version: n,
        }
    }

    const OFFER: &[u8] = b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\na=sendrecv\r\nm=video 0 RTP/AVP 31\r\na=rtpmap:31 H261/90000\r\n";

    #[test]
    fn one_answer_line_per_offered_stream_with_its_formats() {
        let a = answer(
            OFFER,
            "192.0.2.7".parse().unwrap(),
            origin(42),
            &SdpNames::default(),
        );
        let text = std::str::from_utf8(&a).unwrap();
        assert!(
            text.starts_with("v=0\r\no=anonymous 42 42 IN IP4 192.0.2.7\r\ns=-\r\n"),
            "{text}"
        );
        assert!(text.contains("c=IN IP4 192.0.2.7\r\n"));
        let media: Vec<&str> = text.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(media, ["m=audio 16000 RTP/AVP 0 8", "m=video 0 RTP/AVP 31"]);
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\n"));
        // A refused stream's attributes are not repeated.
        assert!(!text.contains("H261"));
        assert!(text.ends_with("\r\n"));
    }

    #[test]
    fn no_offer_gets_an_offer() {
        for offer in [&b""[..], b"v=0\r\n", b"\xff\xfe"] {
            let a = answer(
                offer,
                "::1".parse().unwrap(),
                origin(1),
                &SdpNames::default(),
            );
            let text = std::str::from_utf8(&a).unwrap();
            assert!(text.contains("c=IN IP6 ::1\r\n"), "{text}");
            assert!(text.contains("m=audio 16000 RTP/AVP 0 8 101\r\n"), "{text}");
        }
    }

    #[test]
    fn directions_are_mirrored_per_rfc_3264() {
        let hold = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\na=sendonly\r\nm=video 6002 RTP/AVP 31\r\na=recvonly\r\n\
m=audio 6004 RTP/AVP 8\r\na=inactive\r\nm=audio 6006 RTP/AVP 0\r\na=sendrecv\r\n";
        let a = answer(
            hold,
            "192.0.2.7".parse().unwrap(),
            origin(1),
            &SdpNames::default(),
        );
        let text = std::str::from_utf8(&a).unwrap();
        let sections: Vec<&str> = text.split("m=").skip(1).collect();
        assert!(sections[0].contains("a=recvonly\r\n"), "{text}");
        assert!(sections[1].contains("a=sendonly\r\n"), "{text}");
        assert!(sections[2].contains("a=inactive\r\n"), "{text}");
        assert!(
            !sections[3].contains("a="),
            "sendrecv needs no attribute: {text}"
        );

        // A session-level sendonly covers every stream without its own attribute.
        let session = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
a=sendonly\r\nm=audio 6000 RTP/AVP 0\r\nm=audio 6002 RTP/AVP 0\r\na=sendrecv\r\n\
m=video 0 RTP/AVP 31\r\n";
        let a = answer(
            session,
            "192.0.2.7".parse().unwrap(),
            origin(1),
            &SdpNames::default(),
        );
        let text = std::str::from_utf8(&a).unwrap();
        let sections: Vec<&str> = text.split("m=").skip(1).collect();
        assert!(sections[0].contains("a=recvonly\r\n"), "{text}");
        assert!(!sections[1].contains("a=recvonly"), "{text}");
        assert!(
            !sections[2].contains("a="),
            "a refused stream gets no direction: {text}"
        );
    }

    #[test]
    fn the_origin_stays_for_a_dialog_and_its_version_grows_with_the_cseq() {
        let request = |cseq: u32, tag: &str| {
            Message::parse(bytes::Bytes::from(format!(
                "INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK{cseq}\r\n\
From: <sip:a@example.com>;tag={tag}\r\nTo: <sip:b@example.com>\r\nCall-ID: o1@h\r\n\
CSeq: {cseq} INVITE\r\n\r\n"
            )))
            .unwrap()
        };
        let first = Origin::for_request(&request(1, "x"));
        let again = Origin::for_request(&request(2, "x"));
        assert_eq!(first.session_id, again.session_id);
        assert_eq!((first.version, again.version), (1, 2));
        assert_ne!(
            first.session_id,
            Origin::for_request(&request(1, "y")).session_id
        );
        let a = answer_request(
            &request(2, "x"),
            "192.0.2.7".parse().unwrap(),
            &SdpNames {
                origin_user: "carrier".to_owned(),
                session_name: "call".to_owned(),
            },
        );
        let o_line = std::str::from_utf8(&a)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_owned();
        assert_eq!(
            o_line,
            format!("o=carrier {} 2 IN IP4 192.0.2.7", first.session_id)
        );
        assert!(std::str::from_utf8(&a).unwrap().contains("\r\ns=call\r\n"));
    }

    #[test]
    fn the_sdp_part_of_a_multipart_body() {
        let body = b"preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
--b1  \r\nc: Application/SDP\r\n\r\nv=0\r\n\r\n--b1--\r\nepilogue";
        assert_eq!(sdp_part(body, b"b1"), Some(&b"v=0\r\n"[..]));
        // The first delimiter may open the body; a part without headers is text/plain.
        let body =
            b"--b1\r\n\r\nplain\r\n--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b1--";
        assert_eq!(sdp_part(body, b"b1"), Some(&b"v=0"[..]));
        // No SDP part, an unclosed part, a boundary that never appears, an empty boundary.
        let isup_only = b"--b1\r\nContent-Type: application/isup\r\n\r\n\x01\r\n--b1--";
        assert_eq!(sdp_part(isup_only, b"b1"), None);
        let unclosed = b"--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n";
        assert_eq!(sdp_part(unclosed, b"b1"), None);
        assert_eq!(sdp_part(b"v=0\r\n", b"b1"), None);
        assert_eq!(sdp_part(b"--\r\n\r\n", b""), None);
    }
}
