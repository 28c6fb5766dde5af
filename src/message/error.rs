//! Typed errors of the message layer.
//!
//! [`ParseError`] says why a datagram is not a well-formed SIP message (framing, start line,
//! or a header whose value does not match its grammar). [`Rejection`] says why a well-formed
//! request must still be refused, with the status code RFC 3261 asks for.

use std::fmt;

use super::header::HeaderName;

/// Why a header value (or a URI inside one) does not match its grammar.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueError {
    /// The value is empty where the grammar needs something.
    Empty,
    /// The value does not match the header's grammar.
    Syntax,
    /// A quoted string is not closed.
    UnterminatedQuote,
    /// A comma-separated list has an empty element (`a,,b`).
    EmptyListElement,
    /// A `;name=value` parameter is malformed.
    InvalidParam,
    /// A number is larger than the grammar or RFC 3261 allows.
    OutOfRange,
    /// A URI is malformed.
    Uri(UriError),
    /// A header that must hold one value holds several.
    MultipleValues,
}

/// Why a URI is malformed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriError {
    /// No `scheme:` prefix, or a scheme with characters outside the RFC 3986 set.
    InvalidScheme,
    /// The user part has characters that must be escaped, or a bad `%` escape.
    InvalidUser,
    /// The password has characters that must be escaped, or a bad `%` escape.
    InvalidPassword,
    /// The host is not a hostname, an IPv4 address or a bracketed IPv6 reference.
    InvalidHost,
    /// The port is not a number from 0 to 65535.
    InvalidPort,
    /// A `;name=value` URI parameter is malformed.
    InvalidParam,
    /// The `?name=value&…` header part is malformed.
    InvalidHeaders,
    /// An absolute URI holds characters that cannot appear in one (white space, `<`, `>`, `"`).
    InvalidOpaque,
}

/// Why a datagram is not a well-formed SIP message.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but CRLFs (a keep-alive) or no bytes at all.
    Empty,
    /// The datagram is larger than the configured limit.
    TooLarge {
        /// Size of the datagram.
        size: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// More header lines than the configured limit.
    TooManyHeaders {
        /// The configured maximum.
        limit: usize,
    },
    /// The start line has the wrong number of elements or stray white space.
    InvalidStartLine,
    /// The method is not a token.
    InvalidMethod,
    /// The Request-URI is malformed.
    InvalidRequestUri(UriError),
    /// The SIP-Version is not `SIP/digits.digits`.
    InvalidVersion,
    /// The status code is not three digits from 100 to 699.
    InvalidStatusCode,
    /// The headers end in the middle of a line (no CRLF after the last header).
    TruncatedHeaders,
    /// A header line has no colon, or its name is not a token.
    InvalidHeaderLine {
        /// 1-based line number in the message (the start line is line 1).
        line: u32,
    },
    /// Content-Length is not a non-negative decimal number that fits in 32 bits.
    InvalidContentLength,
    /// Several Content-Length headers disagree.
    ConflictingContentLength,
    /// Content-Length says the body is longer than the datagram holds (RFC 3261 §18.3).
    ContentLengthExceedsDatagram {
        /// What Content-Length says.
        declared: usize,
        /// How many body bytes the datagram holds.
        available: usize,
    },
    /// A header needed for the operation is absent.
    MissingHeader(HeaderName),
    /// A header's value does not match its grammar.
    InvalidHeader {
        /// Which header.
        name: HeaderName,
        /// What is wrong with it.
        error: ValueError,
    },
}

impl ParseError {
    /// The status code a UAS answers a request with when it fails this way (RFC 3261 §21):
    /// 513 for an oversized message, 400 for everything else. Responses that fail to parse
    /// are dropped, never answered.
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::TooLarge { .. } => 513,
            _ => 400,
        }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Empty => f.write_str("empty value"),
            ValueError::Syntax => f.write_str("syntax error"),
            ValueError::UnterminatedQuote => f.write_str("unterminated quoted string"),
            ValueError::EmptyListElement => f.write_str("empty list element"),
            ValueError::InvalidParam => f.write_str("malformed parameter"),
            ValueError::OutOfRange => f.write_str("number out of range"),
            ValueError::Uri(e) => write!(f, "malformed URI: {e}"),
            ValueError::MultipleValues => f.write_str("several values where one is allowed"),
        }
    }
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UriError::InvalidScheme => "invalid scheme",
            UriError::InvalidUser => "invalid user part",
            UriError::InvalidPassword => "invalid password",
            UriError::InvalidHost => "invalid host",
            UriError::InvalidPort => "invalid port",
            UriError::InvalidParam => "invalid URI parameter",
            UriError::InvalidHeaders => "invalid URI headers",
            UriError::InvalidOpaque => "invalid characters in absolute URI",
        })
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty datagram"),
            ParseError::TooLarge { size, limit } => {
                write!(f, "message of {size} bytes exceeds the limit of {limit}")
            }
            ParseError::TooManyHeaders { limit } => write!(f, "more than {limit} header lines"),
            ParseError::InvalidStartLine => f.write_str("malformed start line"),
            ParseError::InvalidMethod => f.write_str("method is not a token"),
            ParseError::InvalidRequestUri(e) => write!(f, "malformed Request-URI: {e}"),
            ParseError::InvalidVersion => f.write_str("malformed SIP-Version"),
            ParseError::InvalidStatusCode => f.write_str("status code is not 100-699"),
            ParseError::TruncatedHeaders => f.write_str("header section ends mid-line"),
            ParseError::InvalidHeaderLine { line } => write!(f, "malformed header line {line}"),
            ParseError::InvalidContentLength => f.write_str("malformed Content-Length"),
            ParseError::ConflictingContentLength => {
                f.write_str("several Content-Length headers disagree")
            }
            ParseError::ContentLengthExceedsDatagram {
                declared,
                available,
            } => write!(
                f,
                "Content-Length {declared} exceeds the {available} body bytes received"
            ),
            ParseError::MissingHeader(h) => write!(f, "missing {h} header"),
            ParseError::InvalidHeader { name, error } => {
                write!(f, "invalid {name} header: {error}")
            }
        }
    }
}

impl std::error::Error for ParseError {}
impl std::error::Error for ValueError {}
impl std::error::Error for UriError {}

/// Why a well-formed request must be refused, with the status code RFC 3261 asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The status code to answer with.
    pub code: u16,
    /// Why.
    pub reason: RejectReason,
}

/// The reasons behind a [`Rejection`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// SIP-Version other than 2.0 (505, RFC 3261 §8.2.? and §21.5.6).
    VersionNotSupported,
    /// Request-URI scheme other than sip/sips (416, §8.2.2.1).
    UnsupportedUriScheme,
    /// A mandatory header (Via, From, To, Call-ID, CSeq) is absent (400, §8.1.1).
    MissingHeader(HeaderName),
    /// A header that may appear once appears several times (400).
    DuplicateHeader(HeaderName),
    /// The CSeq method differs from the Request-Line method (400, §8.1.1.5).
    CSeqMethodMismatch,
    /// The Request-URI carries `?headers`, which §19.1.1 forbids there (400).
    HeadersInRequestUri,
    /// A header value does not match its grammar (400).
    Malformed(ParseError),
    /// A response that reached a UA with more than one Via value (§8.1.3.3: the UA
    /// discards it, as it was meant for a proxy).
    ExtraVia,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.code)?;
        match &self.reason {
            RejectReason::VersionNotSupported => f.write_str("SIP version not supported"),
            RejectReason::UnsupportedUriScheme => f.write_str("unsupported Request-URI scheme"),
            RejectReason::MissingHeader(h) => write!(f, "missing {h} header"),
            RejectReason::DuplicateHeader(h) => write!(f, "{h} header appears more than once"),
            RejectReason::CSeqMethodMismatch => f.write_str("CSeq method differs from method"),
            RejectReason::HeadersInRequestUri => f.write_str("Request-URI carries headers"),
            RejectReason::Malformed(e) => write!(f, "{e}"),
            RejectReason::ExtraVia => f.write_str("a response with more than one Via"),
        }
    }
}

impl std::error::Error for Rejection {}
