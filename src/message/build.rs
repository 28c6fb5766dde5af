//! Writing messages into a caller-owned [`BytesMut`]: a request or response start line, header
//! lines, then Content-Length (always computed, never taken from the caller) and the body.
//! [`ResponseBuilder::to_request`] copies what RFC 3261 §8.2.6.2 says a response copies.

use bytes::{BufMut, BytesMut};

use super::Message;
use super::error::ParseError;
use super::header::HeaderName;
use super::lex;
use super::via::TopVia;

/// Why a builder refused to finish.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A header name is not a token.
    InvalidHeaderName,
    /// A reason phrase or Request-URI holds a line break (or a Request-URI white space), or
    /// a To tag is not a token. (Header values may hold any octet: line breaks in them are
    /// written as folds, and a NUL is legal in a quoted string, RFC 4475 §3.1.1.2.)
    InvalidHeaderValue,
    /// The status code is outside 100-699.
    InvalidStatusCode,
    /// The request being answered lacks a header a response must copy.
    Request(ParseError),
    /// An extra header the caller passed is one the dialog layer writes itself (Via,
    /// From, To, Call-ID, CSeq, Contact, …).
    ReservedHeader,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::InvalidHeaderName => f.write_str("header name is not a token"),
            BuildError::InvalidHeaderValue => {
                f.write_str("line break or white space where none may be")
            }
            BuildError::InvalidStatusCode => f.write_str("status code outside 100-699"),
            BuildError::Request(e) => write!(f, "cannot answer request: {e}"),
            BuildError::ReservedHeader => f.write_str("header written by the dialog layer"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Shared state of both builders: where the message starts in the buffer, and the first
/// error met (reported by `finish`, so that calls can be chained).
struct Writer<'a> {
    out: &'a mut BytesMut,
    start: usize,
    error: Option<BuildError>,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut BytesMut) -> Self {
        let start = out.len();
        Writer {
            out,
            start,
            error: None,
        }
    }

    fn fail(&mut self, e: BuildError) {
        self.error.get_or_insert(e);
    }

    fn header(&mut self, name: &[u8], value: &[u8]) {
        if !lex::is_token(name) {
            return self.fail(BuildError::InvalidHeaderName);
        }
        // Written by finish. (A length test first: classifying every name cost more than
        // writing it.)
        if matches!(name.len(), 1 | 14) && HeaderName::from_bytes(name) == HeaderName::ContentLength
        {
            return;
        }
        self.line(name, value);
    }

    /// [`Writer::header`] for a known name, whose canonical spelling needs no check.
    fn known_header(&mut self, name: HeaderName, value: &[u8]) {
        match name {
            HeaderName::ContentLength => {} // written by finish
            HeaderName::Other => self.fail(BuildError::InvalidHeaderName),
            _ => self.prefixed_line(name.line_prefix().as_bytes(), value),
        }
    }

    fn line(&mut self, name: &[u8], value: &[u8]) {
        self.out.reserve(name.len() + value.len() + 4);
        self.out.put_slice(name);
        self.out.put_slice(b": ");
        self.value_and_end(value);
    }

    /// A line from its `"Name: "` prefix: one copy fewer than name and separator apart.
    fn prefixed_line(&mut self, prefix: &[u8], value: &[u8]) {
        self.out.reserve(prefix.len() + value.len() + 2);
        self.out.put_slice(prefix);
        self.value_and_end(value);
    }

    /// The value, folded where it holds line breaks, and the CRLF that ends the line.
    fn value_and_end(&mut self, value: &[u8]) {
        if lex::may_hold_line_break(value) {
            put_folded(self.out, value);
        } else {
            self.out.put_slice(value);
        }
        self.out.put_slice(b"\r\n");
    }

    fn finish(self, body: &[u8]) -> Result<usize, BuildError> {
        if let Some(e) = self.error {
            self.out.truncate(self.start);
            return Err(e);
        }
        self.out.reserve(24 + body.len());
        self.out.put_slice(b"Content-Length: ");
        push_decimal(self.out, body.len() as u64);
        self.out.put_slice(b"\r\n\r\n");
        self.out.put_slice(body);
        Ok(self.out.len() - self.start)
    }
}

/// Writes a header value so that every line break in it is a fold (CRLF SP): a value can
/// never end its header line early and inject another header (or the body).
fn put_folded(out: &mut BytesMut, value: &[u8]) {
    let mut rest = value;
    while let Some(p) = memchr::memchr2(b'\r', b'\n', rest) {
        out.put_slice(&rest[..p]);
        let ws = rest[p..].iter().take_while(|&&b| lex::is_lws(b)).count();
        out.put_slice(b"\r\n ");
        rest = &rest[p + ws..];
    }
    out.put_slice(rest);
}

/// Appends `n` in decimal (to a `Vec<u8>` or a `BytesMut`).
pub(crate) fn push_decimal(out: &mut impl BufMut, mut n: u64) {
    if n < 10 {
        // Content-Length: 0 and CSeq 1, 2 …: one byte, no copy of a digit buffer.
        return out.put_u8(b'0' + n as u8);
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

/// Every octet value in decimal, left-aligned, with its length: an IPv4 address is written
/// by table, not by division.
static OCTETS: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut n = 0;
    while n < 256 {
        t[n] = if n >= 100 {
            (
                [
                    b'0' + (n / 100) as u8,
                    b'0' + (n / 10 % 10) as u8,
                    b'0' + (n % 10) as u8,
                ],
                3,
            )
        } else if n >= 10 {
            ([b'0' + (n / 10) as u8, b'0' + (n % 10) as u8, 0], 2)
        } else {
            ([b'0' + n as u8, 0, 0], 1)
        };
        n += 1;
    }
    t
};

/// Appends an address as text (dotted IPv4 by table, in one copy).
fn push_ip(out: &mut impl BufMut, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(a) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                let (digits, n) = OCTETS[usize::from(o)];
                text[len..len + 3].copy_from_slice(&digits);
                len += usize::from(n);
            }
            out.put_slice(&text[..len]);
        }
        std::net::IpAddr::V6(a) => out.put_slice(a.to_string().as_bytes()),
    }
}

/// Builds a request into a caller-owned buffer.
///
/// ```
/// # use bytes::BytesMut;
/// # use sipshard::message::RequestBuilder;
/// let mut buf = BytesMut::new();
/// let mut b = RequestBuilder::new(&mut buf, b"OPTIONS", b"sip:bob@example.com");
/// b.header("Via", b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKabc")
///     .header("Call-ID", b"x@y");
/// let len = b.finish(b"").unwrap();
/// assert_eq!(len, buf.len());
/// ```
pub struct RequestBuilder<'a> {
    w: Writer<'a>,
}

impl<'a> RequestBuilder<'a> {
    /// Starts `METHOD uri SIP/2.0`.
    pub fn new(out: &'a mut BytesMut, method: &[u8], uri: &[u8]) -> Self {
        let mut w = Writer::new(out);
        if !lex::is_token(method) {
            w.fail(BuildError::InvalidHeaderName);
        }
        if uri.is_empty() || uri.iter().any(|&b| b <= b' ') {
            w.fail(BuildError::InvalidHeaderValue);
        }
        w.out.reserve(method.len() + uri.len() + 12);
        w.out.put_slice(method);
        w.out.put_u8(b' ');
        w.out.put_slice(uri);
        w.out.put_slice(b" SIP/2.0\r\n");
        RequestBuilder { w }
    }

    /// Adds a header line. Content-Length is ignored: `finish` writes the right one.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.w.header(name.as_bytes(), value);
        self
    }

    /// Adds a header line by [`HeaderName`] (canonical spelling).
    pub fn header_named(&mut self, name: HeaderName, value: &[u8]) -> &mut Self {
        self.w.known_header(name, value);
        self
    }

    /// Writes Content-Length and the body; returns the message length, or the first error
    /// (in which case nothing of this message stays in the buffer).
    pub fn finish(self, body: &[u8]) -> Result<usize, BuildError> {
        self.w.finish(body)
    }
}

/// Builds a response into a caller-owned buffer.
pub struct ResponseBuilder<'a> {
    w: Writer<'a>,
}

impl<'a> ResponseBuilder<'a> {
    /// Starts `SIP/2.0 code reason`; `reason` defaults to the RFC 3261 phrase.
    pub fn new(out: &'a mut BytesMut, code: u16, reason: Option<&[u8]>) -> Self {
        let mut w = Writer::new(out);
        if !(100..=699).contains(&code) {
            w.fail(BuildError::InvalidStatusCode);
        }
        let reason = reason.unwrap_or(default_reason(code).as_bytes());
        if memchr::memchr2(b'\r', b'\n', reason).is_some() {
            w.fail(BuildError::InvalidHeaderValue);
        }
        w.out.reserve(reason.len() + 14);
        w.out.put_slice(b"SIP/2.0 ");
        push_decimal(w.out, u64::from(code.min(999)));
        w.out.put_u8(b' ');
        w.out.put_slice(reason);
        w.out.put_slice(b"\r\n");
        ResponseBuilder { w }
    }

    /// Starts a response to `request` (RFC 3261 §8.2.6.2): copies every Via in order, From,
    /// To, Call-ID and CSeq, Record-Route on a 101-299 (§12.1.1), and Timestamp on a 100
    /// (§8.2.6.1). When the request's To has no tag and the response is not a 100, `to_tag`
    /// is appended as the dialog's local tag.
    pub fn to_request(
        out: &'a mut BytesMut,
        request: &Message,
        code: u16,
        reason: Option<&[u8]>,
        to_tag: Option<&[u8]>,
    ) -> Self {
        Self::to_request_from(out, request, None, code, reason, to_tag)
    }

    /// Like [`ResponseBuilder::to_request`], for a request received from `source`: the top
    /// Via gets `received` when its sent-by is a name or another address (§18.2.1), and a
    /// bare `rport` gets the source port (RFC 3581).
    pub fn to_request_from(
        out: &'a mut BytesMut,
        request: &Message,
        source: Option<std::net::SocketAddr>,
        code: u16,
        reason: Option<&[u8]>,
        to_tag: Option<&[u8]>,
    ) -> Self {
        let mut b = ResponseBuilder::new(out, code, reason);
        for (i, via) in request.header_values(HeaderName::Via).enumerate() {
            match (i, source) {
                (0, Some(src)) => b.top_via(request, via, src),
                _ => b.w.known_header(HeaderName::Via, via),
            }
        }
        let copy = |b: &mut ResponseBuilder<'_>, name: HeaderName| match request.header(name) {
            Some(v) => {
                b.w.known_header(name, v);
                Some(v)
            }
            None => {
                b.w.fail(BuildError::Request(ParseError::MissingHeader(name)));
                None
            }
        };
        copy(&mut b, HeaderName::From);
        if let Some(to) = request.header(HeaderName::To) {
            // Only the tag is needed here: no URI parse (the request passed its checks).
            let has_tag = super::name_addr::tag_param(to).is_ok_and(|t| t.is_some());
            match to_tag {
                Some(tag) if !has_tag && code != 100 => {
                    b.w.out.put_slice(b"To: ");
                    b.w.out.put_slice(to);
                    b.w.out.put_slice(b";tag=");
                    b.w.out.put_slice(tag);
                    b.w.out.put_slice(b"\r\n");
                    if !lex::is_token(tag) {
                        b.w.fail(BuildError::InvalidHeaderValue);
                    }
                }
                _ => b.w.known_header(HeaderName::To, to),
            }
        } else {
            b.w.fail(BuildError::Request(ParseError::MissingHeader(
                HeaderName::To,
            )));
        }
        copy(&mut b, HeaderName::CallId);
        copy(&mut b, HeaderName::CSeq);
        // §12.1.1: a response that may establish a dialog (a tagged 1xx, a 2xx) carries every
        // Record-Route value of the request, in order, parameters and all; elsewhere the
        // UAC ignores them. (A 100 is hop-by-hop and makes no dialog.)
        if (101..300).contains(&code) {
            for rr in request.header_values(HeaderName::RecordRoute) {
                b.w.known_header(HeaderName::RecordRoute, rr);
            }
        }
        if code == 100
            && let Some(ts) = request.header(HeaderName::Timestamp)
        {
            b.w.known_header(HeaderName::Timestamp, ts);
        }
        b
    }

    /// Adds a header line. Content-Length is ignored: `finish` writes the right one.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.w.header(name.as_bytes(), value);
        self
    }

    /// Adds a header line by [`HeaderName`] (canonical spelling).
    pub fn header_named(&mut self, name: HeaderName, value: &[u8]) -> &mut Self {
        self.w.known_header(name, value);
        self
    }

    /// Writes Content-Length and the body; returns the message length, or the first error
    /// (in which case nothing of this message stays in the buffer).
    pub fn finish(self, body: &[u8]) -> Result<usize, BuildError> {
        self.w.finish(body)
    }
}

impl Message {
    /// Writes this message again through the builder: the start line and every header as
    /// parsed (line breaks in values become folds), a freshly computed Content-Length, the
    /// body. Returns the written length.
    pub fn write_to(&self, out: &mut BytesMut) -> Result<usize, BuildError> {
        let mut w = match (self.method_bytes(), self.request_uri_bytes(), self.status()) {
            (Some(method), Some(uri), _) => RequestBuilder::new(out, method, uri).w,
            (_, _, Some(code)) => ResponseBuilder::new(out, code, self.reason()).w,
            _ => return Err(BuildError::InvalidStatusCode),
        };
        for h in self.headers() {
            w.header(h.name_bytes, h.value);
        }
        w.finish(self.body_bytes())
    }
}

impl ResponseBuilder<'_> {
    /// Copies the first Via line, adding `received` and filling `rport` on its first value.
    /// `line` is `request`'s first Via line, which the parser has scanned.
    fn top_via(&mut self, request: &Message, line: &[u8], source: std::net::SocketAddr) {
        match request.top_via_scanned() {
            Some(top) => self.plain_top_via(line, &top, source),
            None => self.parsed_top_via(line, source),
        }
    }

    /// [`Self::top_via`] through [`super::Via::parse`], for any first value.
    fn parsed_top_via(&mut self, line: &[u8], source: std::net::SocketAddr) {
        let (first, rest) = match lex::find_outside(line, b',') {
            Ok(Some(comma)) => (lex::trim_lws(&line[..comma]), Some(&line[comma + 1..])),
            _ => (line, None),
        };
        let Ok(via) = super::Via::parse(first) else {
            return self.w.known_header(HeaderName::Via, line);
        };
        // Written straight into the message (no value buffer): every piece is request text
        // that passed the Via grammar, or digits we make, so only folding needs care.
        let out = &mut *self.w.out;
        out.reserve(line.len() + 48);
        out.put_slice(b"Via: ");
        // A bare `rport` becomes `rport=<port>`; every other parameter is kept as written.
        let bare_rport = via.rport() == Some(None);
        let params = via.params.as_bytes();
        let head_len = first.len() - params.len() - usize::from(!params.is_empty());
        put_folded(out, lex::trim_end_lws(&first[..head_len]));
        for (name, v) in via.params.iter() {
            out.put_u8(b';');
            out.put_slice(name);
            if name.eq_ignore_ascii_case(b"rport") && bare_rport {
                out.put_u8(b'=');
                push_decimal(out, u64::from(source.port()));
            } else if let Some(v) = v {
                out.put_u8(b'=');
                put_folded(out, v);
            }
        }
        let same_ip = via.host().ip() == Some(source.ip());
        if (!same_ip || bare_rport) && via.received().is_none() {
            out.put_slice(b";received=");
            push_ip(out, source.ip());
        }
        if let Some(rest) = rest {
            out.put_slice(b", ");
            put_folded(out, lex::trim_lws(rest));
        }
        out.put_slice(b"\r\n");
    }

    /// [`Self::top_via`] for a first value of the plain form (`via::scan_plain`): the same
    /// bytes, written by splicing the port after a bare `rport` and appending `received`,
    /// without parsing the value again.
    fn plain_top_via(&mut self, line: &[u8], plain: &TopVia<'_>, source: std::net::SocketAddr) {
        let out = &mut *self.w.out;
        out.reserve(line.len() + 48);
        out.put_slice(b"Via: ");
        let first = &line[..plain.end];
        match plain.bare_rport_end {
            Some(at) => {
                out.put_slice(&first[..at]);
                out.put_u8(b'=');
                push_decimal(out, u64::from(source.port()));
                out.put_slice(&first[at..]);
            }
            None => out.put_slice(first),
        }
        // With a bare rport, `received` goes in even when it equals the sent-by (RFC 3581
        // §4); else only when it differs. (A plain sent-by is a host name or dotted IPv4.)
        let needs_received = plain.bare_rport_end.is_some()
            || super::uri::parse_ipv4(plain.key.host)
                .is_none_or(|a| std::net::IpAddr::V4(a) != source.ip());
        if needs_received && !plain.has_received {
            out.put_slice(b";received=");
            push_ip(out, source.ip());
        }
        if plain.end < line.len() {
            out.put_slice(b", ");
            put_folded(out, lex::trim_lws(&line[plain.end + 1..]));
        }
        out.put_slice(b"\r\n");
    }
}

/// The reason phrase RFC 3261 §21 (and the registry for later codes) gives a status code;
/// the class name for codes without one.
pub fn default_reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match code / 100 {
            1 => "Provisional",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for o in 0..=255u8 {
            for ip in [
                [o, 0, 0, 1],
                [10, o, 255, 9],
                [192, 168, 99, o],
                [o, o, o, o],
            ] {
                let ip = std::net::IpAddr::from(ip);
                let mut out = Vec::new();
                push_ip(&mut out, ip);
                assert_eq!(out, ip.to_string().as_bytes());
            }
        }
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let mut out = Vec::new();
        push_ip(&mut out, v6);
        assert_eq!(out, b"2001:db8::1");
    }

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8\r\n\
        Via: SIP/2.0/UDP proxy.atlanta.com;branch=z9hG4bK77ef4c2312983.1\r\n\
        Max-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.com>\r\n\
        From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nTimestamp: 54\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn response_copies_and_tags() {
        let req = Message::parse(Bytes::from_static(INVITE)).unwrap();
        let mut buf = BytesMut::new();
        ResponseBuilder::to_request(&mut buf, &req, 180, None, Some(b"a6c85cf"))
            .finish(b"")
            .unwrap();
        let resp = Message::parse(buf.split().freeze()).unwrap();
        assert_eq!(resp.status(), Some(180));
        assert_eq!(resp.reason(), Some(&b"Ringing"[..]));
        assert_eq!(resp.vias().count(), 2);
        assert_eq!(resp.to_tag().unwrap(), Some(&b"a6c85cf"[..]));
        assert_eq!(resp.from_tag().unwrap(), Some(&b"1928301774"[..]));
        assert_eq!(resp.call_id(), req.call_id());
        assert_eq!(resp.cseq().unwrap(), req.cseq().unwrap());
        assert_eq!(resp.header(HeaderName::Timestamp), None);
        assert_eq!(resp.check_response(), Ok(()));

        ResponseBuilder::to_request(&mut buf, &req, 100, None, Some(b"x"))
            .finish(b"")
            .unwrap();
        let trying = Message::parse(buf.split().freeze()).unwrap();
        assert_eq!(trying.to_tag().unwrap(), None);
        assert_eq!(trying.header(HeaderName::Timestamp), Some(&b"54"[..]));
    }

    #[test]
    fn dialog_making_responses_copy_record_route_in_order() {
        let text = "INVITE sip:bob@biloxi.com SIP/2.0\r\n\
            Record-Route: <sip:p2.biloxi.com;lr>, <sip:p1.atlanta.com;lr;ftag=1928301774>\r\n\
            Via: SIP/2.0/UDP p2.biloxi.com;branch=z9hG4bK2\r\n\
            Record-Route: <sip:p0.example.com;lr>;x=y\r\n\
            Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK1\r\n\
            To: Bob <sip:bob@biloxi.com>\r\nFrom: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
            Call-ID: rr1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let req = Message::parse(Bytes::from(text)).unwrap();
        let mut buf = BytesMut::new();
        for (code, copied) in [(100, false), (180, true), (200, true), (486, false)] {
            ResponseBuilder::to_request(&mut buf, &req, code, None, Some(b"t"))
                .finish(b"")
                .unwrap();
            let resp = Message::parse(buf.split().freeze()).unwrap();
            let rr: Vec<&[u8]> = resp.header_values(HeaderName::RecordRoute).collect();
            let want: Vec<&[u8]> = if copied {
                vec![
                    b"<sip:p2.biloxi.com;lr>, <sip:p1.atlanta.com;lr;ftag=1928301774>",
                    b"<sip:p0.example.com;lr>;x=y",
                ]
            } else {
                Vec::new()
            };
            assert_eq!(rr, want, "{code}");
        }
    }

    use crate::message::via::TopViaScan;

    #[test]
    fn the_plain_top_via_path_writes_what_the_parser_path_writes() {
        let lines: &[&[u8]] = &[
            b"SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7;rport",
            b"SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7;RPORT;x=1",
            b"SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK1",
            b"SIP/2.0/UDP client.example.com:5070;rport=5070;branch=z9hG4bK2",
            b"SIP/2.0/TCP client.example.com;branch=z9hG4bK3;received=192.0.2.1;rport",
            b"SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK4, SIP/2.0/UDP  proxy.example.com;branch=z9hG4bK5",
        ];
        let sources: [std::net::SocketAddr; 3] = [
            "192.0.2.4:5060".parse().unwrap(),
            "192.0.2.99:40000".parse().unwrap(),
            "[2001:db8::1]:5062".parse().unwrap(),
        ];
        for line in lines {
            assert!(crate::message::via::scan_plain(line).is_some(), "{line:?}");
            for source in sources {
                let (mut fast, mut slow) = (BytesMut::new(), BytesMut::new());
                let plain = TopViaScan::of(line).unwrap().expand(line);
                ResponseBuilder::new(&mut fast, 200, None).plain_top_via(line, &plain, source);
                ResponseBuilder::new(&mut slow, 200, None).parsed_top_via(line, source);
                assert_eq!(fast, slow, "{line:?} from {source}");
            }
        }
    }

    #[test]
    fn both_top_via_paths_agree_on_mutated_vias() {
        let seed: &[u8] =
            b"SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKx7;rport, SIP/2.0/UDP p.example.com";
        let alphabet = b"aZ09.-:;=, \"[]rportreceivedbranch";
        let source: std::net::SocketAddr = "192.0.2.4:6000".parse().unwrap();
        for v in crate::message::mutations::mutated(&[seed], alphabet, 20_000) {
            let Some(plain) = TopViaScan::of(&v).map(|scan| scan.expand(&v)) else {
                continue;
            };
            // Where the parser refuses the value, the parser path copies the line as it is.
            if crate::message::Via::parse(&v[..plain.end]).is_err() {
                continue;
            }
            let (mut fast, mut slow) = (BytesMut::new(), BytesMut::new());
            ResponseBuilder::new(&mut fast, 200, None).plain_top_via(&v, &plain, source);
            ResponseBuilder::new(&mut slow, 200, None).parsed_top_via(&v, source);
            assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(&v));
        }
    }

    #[test]
    fn received_and_rport_are_added_to_the_top_via() {
        let req = Message::parse(Bytes::from_static(
            b"OPTIONS sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK1;rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0\r\n\
Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKz\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        ))
        .unwrap();
        let mut buf = BytesMut::new();
        let src = "192.0.2.7:6000".parse().unwrap();
        ResponseBuilder::to_request_from(&mut buf, &req, Some(src), 200, None, Some(b"t"))
            .finish(b"")
            .unwrap();
        let r = Message::parse(buf.freeze()).unwrap();
        let vias: Vec<_> = r.vias().map(|v| v.unwrap()).collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].rport(), Some(Some(6000)));
        assert_eq!(vias[0].received(), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(vias[0].branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(vias[1].received(), None, "only the top value");
        // Same IP as the sent-by and no rport: nothing added.
        let mut buf = BytesMut::new();
        let src = "10.0.0.2:5060".parse().unwrap();
        let req2 = Message::parse(Bytes::from_static(
            b"OPTIONS sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        ))
        .unwrap();
        ResponseBuilder::to_request_from(&mut buf, &req2, Some(src), 200, None, Some(b"t"))
            .finish(b"")
            .unwrap();
        let r = Message::parse(buf.freeze()).unwrap();
        assert_eq!(
            r.header(HeaderName::Via),
            Some(&b"SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2"[..])
        );
    }

    #[test]
    fn content_length_is_computed_and_injection_refused() {
        let mut buf = BytesMut::new();
        let mut b = RequestBuilder::new(&mut buf, b"MESSAGE", b"sip:a@b");
        b.header("Content-Length", b"999")
            .header("Content-Type", b"text/plain");
        b.finish(b"hello").unwrap();
        let m = Message::parse(buf.split().freeze()).unwrap();
        assert_eq!(m.content_length(), Some(5));
        assert_eq!(m.body_bytes(), b"hello");

        let mut b = RequestBuilder::new(&mut buf, b"MESSAGE", b"sip:a@b");
        b.header("Subject", b"hi\r\nVia: evil\nX: y");
        b.finish(b"").unwrap();
        let m = Message::parse(buf.split().freeze()).unwrap();
        assert_eq!(m.count(HeaderName::Via), 0, "line breaks become folds");
        assert_eq!(
            m.header(HeaderName::Subject),
            Some(&b"hi\r\n Via: evil\r\n X: y"[..])
        );

        // A NUL is copied as is (legal inside a quoted string).
        let mut b = RequestBuilder::new(&mut buf, b"MESSAGE", b"sip:a@b");
        b.header("To", b"\"a\\\0b\" <sip:a@b>");
        b.finish(b"").unwrap();
        buf.clear();

        let mut b = RequestBuilder::new(&mut buf, b"MESSAGE", b"sip:a@b c");
        b.header("Subject", b"x");
        assert_eq!(b.finish(b""), Err(BuildError::InvalidHeaderValue));
        assert!(buf.is_empty());
    }
}
