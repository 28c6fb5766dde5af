//! The message layer: zero-copy parsing of one SIP message out of a datagram, typed views of
//! its headers, a builder that writes messages into a caller-owned buffer, and generators for
//! branch ids, tags and Call-IDs.
//!
//! # What it owns, what it may not touch
//! This module owns the bytes-to-structure boundary. It allocates at most once per parsed
//! message (the header index), never per header; it never panics on input; it knows nothing
//! of transactions, dialogs, clocks or sockets.
//!
//! # Three levels of checking
//! 1. [`Message::parse`] frames the datagram (RFC 3261 §18.3), checks the start line strictly
//!    (method token, Request-URI grammar, version, status code), splits and classifies the
//!    header lines, and applies Content-Length. This is all the hot path pays for.
//! 2. Typed views ([`Message::cseq`], [`Message::top_via`], [`Message::from_header`], …) parse one
//!    header on demand and return a typed [`ParseError`] when its value is malformed.
//!    [`Message::validate`] runs every view sipshard knows, for callers that want the whole
//!    message checked.
//! 3. [`Message::check_request`] applies RFC 3261's semantic rules that turn a well-formed
//!    request into an error response (505, 416, 400 for missing, duplicated or mismatched
//!    headers), as a [`Rejection`] carrying the status code.

mod access;
mod build;
mod date;
mod digest;
mod error;
mod framing;
mod header;
mod ids;
mod lex;
mod method;
mod name_addr;
mod salvage;
mod scan;
mod start_line;
mod stream_fallback;
mod uri;
mod validate;
mod values;
mod via;

#[cfg(test)]
pub(crate) mod mutations;

#[doc(hidden)]
pub mod fuzzing;

use std::fmt;

use arrayvec::ArrayVec;
use bytes::Bytes;
use start_line::parse_start_line;

pub(crate) use build::push_decimal;
pub use build::{BuildError, RequestBuilder, ResponseBuilder, default_reason};
pub use date::rfc1123_date;
pub use digest::{
    DigestAlgorithm, DigestChallenge, DigestCredentials, DigestInput, digest_response,
};
pub use error::{ParseError, RejectReason, Rejection, UriError, ValueError};
pub use framing::{Frame, FramingError, header_block, next_frame};
pub use header::HeaderName;
pub use ids::{Branch, CallIdValue, IdGenerator, Tag};
pub(crate) use lex::find_outside;
pub use lex::{ParamIter, Params, unescape, unquote};
pub use method::Method;
pub use name_addr::{Contact, NameAddr};
pub(crate) use name_addr::{tag_param, uri_of};
pub use salvage::{Salvaged, salvage_response};
pub use scan::{find_call_id, find_header};
pub use stream_fallback::{
    stream_request_fallback, stream_response_fallback, with_top_via_transport,
};
pub use uri::{AbsoluteUri, Host, SipUri, Uri};
pub use values::{
    Auth, CSeq, Event, MediaType, RAck, Replaces, SessionExpires, SubscriptionState, TokenList,
};
pub use via::{Via, ViaIter, ViaKey};

/// Limits applied while parsing. Beyond them parsing fails with a typed error; nothing grows
/// in proportion to the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest datagram accepted, in bytes (default 64 KiB, the largest UDP payload).
    pub max_message_size: usize,
    /// Most header lines accepted (default 256; at most 65,534, since the header index holds
    /// positions as u16).
    pub max_headers: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_message_size: 65_536,
            max_headers: 256,
        }
    }
}

/// Byte range in the datagram. u32 is enough: messages are limited far below 4 GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    #[inline]
    fn get(self, buf: &[u8]) -> &[u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

/// One header line: its name and its value with surrounding LWS trimmed, packed into two
/// words that the parser builds in registers. (A struct of mixed fields was built on the
/// stack with narrow stores and copied with one wide load: a store-forwarding stall per
/// header, a sixth of the parse time.)
///
/// `lo` = value start | value end << 32; `hi` = name start | name length << 32 | name << 48.
#[derive(Clone, Copy, Debug)]
struct HeaderEntry {
    lo: u64,
    hi: u64,
}

impl HeaderEntry {
    #[inline]
    fn new(name: HeaderName, name_start: usize, name_len: u16, value: Span) -> Self {
        HeaderEntry {
            lo: u64::from(value.start) | u64::from(value.end) << 32,
            hi: name_start as u64 & 0xffff_ffff
                | u64::from(name_len) << 32
                | u64::from(name as u8) << 48,
        }
    }

    /// The name's bit in a set of known names (bit `i` for [`HeaderName::KNOWN`]`[i]`);
    /// 0 for `Other`. Every known name has a bit in a u64 (checked at compile time below).
    #[inline]
    fn name_bit(self) -> u64 {
        let idx = u32::from((self.hi >> 48) as u8);
        if (idx as usize) < HeaderName::COUNT {
            1u64 << idx
        } else {
            0
        }
    }

    #[inline]
    fn name(self) -> HeaderName {
        let idx = usize::from((self.hi >> 48) as u8);
        HeaderName::KNOWN
            .get(idx)
            .copied()
            .unwrap_or(HeaderName::Other)
    }

    #[inline]
    fn value(self) -> Span {
        Span {
            start: self.lo as u32,
            end: (self.lo >> 32) as u32,
        }
    }

    #[inline]
    fn set_value_end(&mut self, end: u32) {
        self.lo = (self.lo & 0xffff_ffff) | u64::from(end) << 32;
    }

    #[inline]
    fn name_bytes(self, buf: &[u8]) -> &[u8] {
        let start = (self.hi & 0xffff_ffff) as usize;
        &buf[start..start + usize::from((self.hi >> 32) as u16)]
    }
}

const _: () = assert!(HeaderName::COUNT <= 64, "a set of known names is a u64");

/// Header lines kept on the stack while parsing; more than this spills to one bounded Vec.
const INLINE_HEADERS: usize = 64;
const NO_INDEX: u16 = u16::MAX;

#[derive(Clone, Copy, Debug)]
enum StartLine {
    Request {
        method: Method,
        method_span: Span,
        uri: Span,
        uri_form: UriForm,
    },
    Response {
        code: u16,
        reason: Span,
    },
}

/// What the parser learnt of the Request-URI, so that the request checks need not parse it
/// again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UriForm {
    /// sip: or sips:, without `?headers`.
    Sip,
    /// sip: or sips: with `?headers` (not allowed in a Request-URI, §19.1.5).
    SipWithHeaders,
    /// Any other scheme.
    Other,
}

/// One parsed SIP message: the datagram's bytes plus an index of spans into them.
#[derive(Clone)]
pub struct Message {
    buf: Bytes,
    start: StartLine,
    version: Span,
    /// Shared, so that a clone of the message (a dialog keeping its INVITE while the
    /// application reads it) takes two reference counts and no allocation.
    headers: std::sync::Arc<[HeaderEntry]>,
    /// Index of the first header of each known name, or `NO_INDEX`.
    first: [u16; HeaderName::COUNT],
    content_length: Option<u32>,
    body: Span,
    /// The first Via line read once by the parser (as Kamailio's parser reads `via1`):
    /// every message meets the transaction layer, which matches on it.
    top_via: Option<via::TopViaScan>,
}

/// A header line as seen by [`Message::headers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The classified name.
    pub name: HeaderName,
    /// The name as written (`v`, `VIA`, `X-Custom`).
    pub name_bytes: &'a [u8],
    /// The value, LWS-trimmed; folded lines keep their CRLF + white space.
    pub value: &'a [u8],
}

impl Message {
    /// Parses one datagram with the default [`ParseLimits`].
    pub fn parse(datagram: Bytes) -> Result<Message, ParseError> {
        Self::parse_with(datagram, &ParseLimits::default())
    }

    /// Parses one datagram: UDP framing (RFC 3261 §18.3), start line, header index.
    pub fn parse_with(datagram: Bytes, limits: &ParseLimits) -> Result<Message, ParseError> {
        let data: &[u8] = &datagram;
        if data.len() > limits.max_message_size || data.len() > u32::MAX as usize {
            return Err(ParseError::TooLarge {
                size: data.len(),
                limit: limits.max_message_size,
            });
        }
        // §7.5: CRLFs before the start line are ignored (keep-alives, stream leftovers).
        let pos = data
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if pos == data.len() {
            return Err(ParseError::Empty);
        }
        let nl = memchr::memchr(b'\n', &data[pos..]).ok_or(ParseError::TruncatedHeaders)?;
        let line_end = pos + nl;
        let line_end_trim = if line_end > pos && data[line_end - 1] == b'\r' {
            line_end - 1
        } else {
            line_end
        };
        let (start, version) = parse_start_line(data, pos, line_end_trim)?;

        // Header lines are collected on the stack (uninitialised slots cost nothing) and
        // copied once into an exact shared slice: the message's one allocation. A message
        // with more lines spills to a Vec sized by the configured limit first.
        let max_headers = limits.max_headers.min(usize::from(NO_INDEX) - 1);
        let mut inline: ArrayVec<HeaderEntry, INLINE_HEADERS> = ArrayVec::new();
        let mut spilled: Vec<HeaderEntry> = Vec::new();
        let mut first = [NO_INDEX; HeaderName::COUNT];
        let mut content_length: Option<u32> = None;
        let mut cur = line_end + 1;
        let mut line_no: u32 = 1;
        let body_start = loop {
            line_no += 1;
            match data.get(cur) {
                // The datagram ends after a complete header line without the empty line:
                // tolerated as an empty body (RFC 4475 baddn.dat ends like this).
                None => break cur,
                Some(b'\n') => break cur + 1,
                Some(b'\r') if data.get(cur + 1) == Some(&b'\n') => break cur + 2,
                Some(b' ' | b'\t') => return Err(ParseError::InvalidHeaderLine { line: line_no }),
                Some(_) => {}
            }
            // End of the logical line: an LF not followed by SP/HT (folding, §7.3.1).
            let mut search = cur;
            let lf = loop {
                let i =
                    memchr::memchr(b'\n', &data[search..]).ok_or(ParseError::TruncatedHeaders)?;
                let lf = search + i;
                match data.get(lf + 1) {
                    Some(b' ' | b'\t') => {
                        line_no += 1;
                        search = lf + 1;
                    }
                    _ => break lf,
                }
            };
            // header-name = token, then *(SP/HT) ":" (HCOLON), in one pass.
            // (Iterating over the line's slice leaves one bound check per byte, not two.)
            let mut i = cur
                + data[cur..lf]
                    .iter()
                    .position(|&b| !lex::is_token_char(b))
                    .unwrap_or(lf - cur);
            let name_end = i;
            while i < lf && (data[i] == b' ' || data[i] == b'\t') {
                i += 1;
            }
            if name_end == cur || i == lf || data[i] != b':' {
                let prev = match spilled.last_mut() {
                    Some(p) => Some(p),
                    None => inline.last_mut(),
                };
                if data[cur] == b'<'
                    && let Some(prev) = prev
                    && matches!(
                        prev.name(),
                        HeaderName::Route | HeaderName::RecordRoute | HeaderName::Contact
                    )
                    && prev.value().get(data).last() == Some(&b',')
                {
                    // An address on a line of its own after "…," in an address list: the
                    // fold lost its leading white space (RFC 3665 §3.10 F4 is printed so).
                    // '<' cannot start a header name, so the line can only continue the list.
                    let end = cur + lex::trim_end_lws(&data[cur..lf]).len();
                    prev.set_value_end(end as u32);
                    cur = lf + 1;
                    continue;
                }
                return Err(ParseError::InvalidHeaderLine { line: line_no });
            }
            let mut v_start = i + 1;
            while v_start < lf && lex::is_lws(data[v_start]) {
                v_start += 1;
            }
            let mut v_end = lf;
            while v_end > v_start && lex::is_lws(data[v_end - 1]) {
                v_end -= 1;
            }
            let name_len = name_end - cur;
            if name_len > usize::from(u16::MAX) {
                return Err(ParseError::InvalidHeaderLine { line: line_no });
            }
            let kind = HeaderName::from_token(&data[cur..name_end]);
            if kind == HeaderName::ContentLength {
                let v = lex::parse_decimal(&data[v_start..v_end], u64::from(u32::MAX))
                    .map_err(|_| ParseError::InvalidContentLength)? as u32;
                match content_length {
                    Some(prev) if prev != v => return Err(ParseError::ConflictingContentLength),
                    _ => content_length = Some(v),
                }
            }
            let count = if spilled.is_empty() {
                inline.len()
            } else {
                spilled.len()
            };
            if count >= max_headers {
                return Err(ParseError::TooManyHeaders { limit: max_headers });
            }
            if let Some(idx) = kind.index()
                && first[idx] == NO_INDEX
            {
                first[idx] = count as u16;
            }
            let entry = HeaderEntry::new(kind, cur, name_len as u16, Span::new(v_start, v_end));
            if !spilled.is_empty() {
                spilled.push(entry);
            } else if let Err(full) = inline.try_push(entry) {
                // Bounded by the configured limit and by what the datagram can hold (a header
                // line takes at least 3 bytes, "a:\n").
                spilled.reserve_exact(max_headers.min(data.len() / 3 + 1));
                spilled.extend_from_slice(&inline);
                spilled.push(full.element());
            }
            cur = lf + 1;
        };

        let headers: std::sync::Arc<[HeaderEntry]> = if spilled.is_empty() {
            std::sync::Arc::from(&inline[..])
        } else {
            std::sync::Arc::from(spilled)
        };
        let available = data.len() - body_start;
        let body_len = match content_length {
            Some(cl) if cl as usize > available => {
                return Err(ParseError::ContentLengthExceedsDatagram {
                    declared: cl as usize,
                    available,
                });
            }
            Some(cl) => cl as usize,
            None => available,
        };
        let top_via = match first[HeaderName::Via as usize] {
            NO_INDEX => None,
            i => via::TopViaScan::of(headers[usize::from(i)].value().get(data)),
        };
        Ok(Message {
            start,
            version,
            headers,
            first,
            content_length,
            body: Span::new(body_start, body_start + body_len),
            top_via,
            buf: datagram,
        })
    }

    /// The whole datagram this message was parsed from (trailing octets beyond
    /// Content-Length included).
    pub fn datagram(&self) -> &Bytes {
        &self.buf
    }

    /// The message's own bytes: start line, headers and body, without trailing octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.body.end as usize]
    }

    /// True for requests, false for responses.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method; `None` for responses.
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The method as written; `None` for responses.
    pub fn method_bytes(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Request { method_span, .. } => Some(method_span.get(&self.buf)),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as written; `None` for responses.
    pub fn request_uri_bytes(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri.get(&self.buf)),
            StartLine::Response { .. } => None,
        }
    }

    /// The parsed Request-URI; `None` for responses.
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        // The URI was checked by `parse`, so this parse succeeds; `ok()` keeps it panic-free.
        self.request_uri_bytes().and_then(|u| Uri::parse(u).ok())
    }

    /// The first Via value of the plain form, as the parser scanned it.
    pub(crate) fn top_via_scanned(&self) -> Option<via::TopVia<'_>> {
        let scan = self.top_via?;
        let line = self.header(HeaderName::Via)?;
        Some(scan.expand(line))
    }

    /// True when the parser read the first Via value and [`Via::parse`] accepts it.
    pub(crate) fn top_via_is_valid(&self) -> bool {
        self.top_via.is_some_and(|scan| scan.is_valid())
    }

    /// The Request-URI's form, as the parser found it; `None` for responses.
    pub(crate) fn request_uri_form(&self) -> Option<UriForm> {
        match self.start {
            StartLine::Request { uri_form, .. } => Some(uri_form),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code; `None` for requests.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase as written (may be empty or UTF-8); `None` for requests.
    pub fn reason(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Response { reason, .. } => Some(reason.get(&self.buf)),
            StartLine::Request { .. } => None,
        }
    }

    /// The SIP-Version as written (`SIP/2.0`).
    pub fn version(&self) -> &[u8] {
        self.version.get(&self.buf)
    }

    /// All header lines in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'_>> + '_ {
        self.headers.iter().map(move |h| self.entry(h))
    }

    /// Number of header lines.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// The value of the first header named `name`.
    #[inline]
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        let i = name.index()?;
        let idx = self.first[i];
        if idx == NO_INDEX {
            return None;
        }
        Some(self.headers[idx as usize].value().get(&self.buf))
    }

    /// The values of every header line named `name`, in order.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        let start = name
            .index()
            .map(|i| self.first[i])
            .filter(|&i| i != NO_INDEX)
            .map_or(self.headers.len(), usize::from);
        self.headers[start..]
            .iter()
            .filter(move |h| h.name() == name && name != HeaderName::Other)
            .map(move |h| h.value().get(&self.buf))
    }

    /// The values of every header line whose name is `name` (case-insensitive, as written;
    /// for extension headers).
    pub fn header_values_by_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.headers
            .iter()
            .filter(move |h| {
                h.name_bytes(&self.buf)
                    .eq_ignore_ascii_case(name.as_bytes())
            })
            .map(move |h| h.value().get(&self.buf))
    }

    /// How many header lines are named `name`.
    pub fn count(&self, name: HeaderName) -> usize {
        self.header_values(name).count()
    }

    /// Content-Length as written, when present.
    pub fn content_length(&self) -> Option<u32> {
        self.content_length
    }

    /// The body as a zero-copy slice of the datagram.
    pub fn body(&self) -> Bytes {
        self.buf
            .slice(self.body.start as usize..self.body.end as usize)
    }

    /// The body's bytes.
    pub fn body_bytes(&self) -> &[u8] {
        self.body.get(&self.buf)
    }

    fn entry<'a>(&'a self, h: &HeaderEntry) -> Header<'a> {
        Header {
            name: h.name(),
            name_bytes: h.name_bytes(&self.buf),
            value: h.value().get(&self.buf),
        }
    }
}

impl fmt::Debug for Message {
    /// Prints the start line and header names only: SIP carries phone numbers, and logs at
    /// info level must not dump whole messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        match self.start {
            StartLine::Request { method, .. } => d.field("method", &method),
            StartLine::Response { code, .. } => d.field("status", &code),
        };
        d.field("headers", &self.headers.len())
            .field("body_len", &(self.body.end - self.body.start))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message, ParseError> {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    const OPTIONS: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        To: <sip:bob@example.com>\r\n\
        From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710\r\n\
        CSeq: 63104 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn header_entries_are_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<HeaderEntry>(), 16);
        for &h in HeaderName::KNOWN.iter().chain([&HeaderName::Other]) {
            let e = HeaderEntry::new(h, 70_000, 300, Span::new(80_000, 90_000));
            assert_eq!(e.name(), h);
            assert_eq!(e.value(), Span::new(80_000, 90_000));
            assert_eq!(e.name_bytes(&[0u8; 70_300]).len(), 300);
        }
    }

    #[test]
    fn parses_request_line_and_headers() {
        let m = parse(OPTIONS).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some(Method::Options));
        assert_eq!(m.request_uri_bytes(), Some(&b"sip:bob@example.com"[..]));
        assert_eq!(m.header(HeaderName::CallId), Some(&b"a84b4c76e66710"[..]));
        assert_eq!(m.header_count(), 7);
        assert!(m.body_bytes().is_empty());
    }

    #[test]
    fn folding_and_leading_crlf() {
        let m = parse("\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nSubject: one\r\n  two\r\nl: 0\r\n\r\n")
            .unwrap();
        assert_eq!(m.header(HeaderName::Subject), Some(&b"one\r\n  two"[..]));
        assert_eq!(m.content_length(), Some(0));
    }

    #[test]
    fn lost_fold_in_a_list_is_joined_but_other_colonless_lines_fail() {
        let m = parse(
            "INVITE sip:a@b SIP/2.0\r\nRecord-Route: <sip:p1;lr>,\r\n<sip:p2;lr>\r\nl: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.record_routes().count(), 2);
        assert_eq!(
            parse("INVITE sip:a@b SIP/2.0\r\nRoute: <sip:p1;lr>\r\n<sip:p2;lr>\r\n\r\n")
                .unwrap_err(),
            ParseError::InvalidHeaderLine { line: 3 }
        );
        assert_eq!(
            parse("INVITE sip:a@b SIP/2.0\r\nFoobar roobar\r\n\r\n").unwrap_err(),
            ParseError::InvalidHeaderLine { line: 2 }
        );
    }

    #[test]
    fn udp_framing_rules() {
        let short = "MESSAGE sip:a@b SIP/2.0\r\nl: 3\r\n\r\nhello";
        assert_eq!(parse(short).unwrap().body_bytes(), b"hel");
        let none = "MESSAGE sip:a@b SIP/2.0\r\nc: text/plain\r\n\r\nhello";
        assert_eq!(parse(none).unwrap().body_bytes(), b"hello");
        let long = "MESSAGE sip:a@b SIP/2.0\r\nl: 9\r\n\r\nhello";
        assert_eq!(
            parse(long).unwrap_err(),
            ParseError::ContentLengthExceedsDatagram {
                declared: 9,
                available: 5
            }
        );
    }

    #[test]
    fn start_line_errors() {
        assert_eq!(parse("").unwrap_err(), ParseError::Empty);
        assert_eq!(parse("\r\n\r\n").unwrap_err(), ParseError::Empty);
        assert_eq!(
            parse("INVITE  sip:a@b SIP/2.0\r\n\r\n").unwrap_err(),
            ParseError::InvalidStartLine
        );
        assert_eq!(
            parse("SIP/2.0 4294967301 Huge\r\n\r\n").unwrap_err(),
            ParseError::InvalidStatusCode
        );
        assert_eq!(
            parse("INVITE sip:a@b SIP/2\r\n\r\n").unwrap_err(),
            ParseError::InvalidVersion
        );
        let r = parse("SIP/2.0 100 \r\nl: 0\r\n\r\n").unwrap();
        assert_eq!(r.status(), Some(100));
        assert_eq!(r.reason(), Some(&b""[..]));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = ParseLimits {
            max_message_size: 64,
            max_headers: 2,
        };
        let big = Bytes::from(vec![b'A'; 65]);
        assert!(matches!(
            Message::parse_with(big, &limits),
            Err(ParseError::TooLarge { .. })
        ));
        let many = Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n");
        assert_eq!(
            Message::parse_with(many, &limits).unwrap_err(),
            ParseError::TooManyHeaders { limit: 2 }
        );
    }

    #[test]
    fn huge_limits_are_capped_not_trusted() {
        let limits = ParseLimits {
            max_message_size: usize::MAX,
            max_headers: usize::MAX,
        };
        let mut s = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for i in 0..100 {
            s.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        s.push_str("\r\n");
        let m = Message::parse_with(Bytes::from(s), &limits).unwrap();
        assert_eq!(m.header_count(), 100);
    }

    #[test]
    fn many_headers_spill_once() {
        let mut s = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for i in 0..100 {
            s.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        s.push_str("Call-ID: spill\r\n\r\n");
        let m = parse(&s).unwrap();
        assert_eq!(m.header_count(), 101);
        assert_eq!(m.header(HeaderName::CallId), Some(&b"spill"[..]));
        assert_eq!(m.header_values_by_name("x-h99").next(), Some(&b"99"[..]));
    }
}
