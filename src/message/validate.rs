//! Whole-message checks: every typed view at once ([`Message::validate`]) and RFC 3261's
//! semantic rules for requests and responses ([`Message::check_request`],
//! [`Message::check_response`]).

use super::access::ListValues;
use super::error::{ParseError, RejectReason, Rejection, ValueError};
use super::header::HeaderName;
use super::name_addr::NameAddr;
use super::values::{self, Auth, CSeq, Event, MediaType, RAck, Replaces, SessionExpires};
use super::{Message, Method, UriForm};

/// Headers without which no request or response can be processed (RFC 3261 §8.1.1; Max-Forwards
/// is left out so that RFC 2543 requests, RFC 4475 §3.4.1, are still served).
const MANDATORY: [HeaderName; 5] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
];

/// Headers that may appear at most once.
const SINGLE: [HeaderName; 15] = [
    HeaderName::CallId,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CSeq,
    HeaderName::MaxForwards,
    HeaderName::ContentType,
    HeaderName::Expires,
    HeaderName::MinExpires,
    HeaderName::RSeq,
    HeaderName::RAck,
    HeaderName::Event,
    HeaderName::SubscriptionState,
    HeaderName::ReferTo,
    HeaderName::Replaces,
    HeaderName::SessionExpires,
];

impl Message {
    /// Checks every header sipshard has a typed view for against its grammar, in message
    /// order, and reports the first failure. Unknown headers are not checked.
    pub fn validate(&self) -> Result<(), ParseError> {
        for h in self.headers.iter() {
            let v = h.value().get(&self.buf);
            let res: Result<(), ValueError> = match h.name() {
                HeaderName::CallId => values::check_call_id(v),
                HeaderName::CSeq => CSeq::parse(v).map(drop),
                HeaderName::From
                | HeaderName::To
                | HeaderName::ReferTo
                | HeaderName::ReferredBy => NameAddr::parse(v).map(drop),
                HeaderName::MaxForwards => values::parse_max_forwards(v).map(drop),
                HeaderName::Expires | HeaderName::MinExpires => {
                    values::parse_delta_seconds(v).map(drop)
                }
                HeaderName::ContentType if v.eq_ignore_ascii_case(b"application/sdp") => Ok(()),
                HeaderName::ContentType => MediaType::parse(v).map(drop),
                HeaderName::Event => Event::parse(v).map(drop),
                HeaderName::SubscriptionState => {
                    super::values::SubscriptionState::parse(v).map(drop)
                }
                HeaderName::Replaces => Replaces::parse(v).map(drop),
                HeaderName::RSeq => values::parse_rseq(v).map(drop),
                HeaderName::RAck => RAck::parse(v).map(drop),
                HeaderName::SessionExpires | HeaderName::MinSE => {
                    SessionExpires::parse(v).map(drop)
                }
                HeaderName::Authorization
                | HeaderName::ProxyAuthorization
                | HeaderName::WwwAuthenticate
                | HeaderName::ProxyAuthenticate => Auth::parse(v).map(drop),
                HeaderName::Date => values::check_date(v),
                HeaderName::RetryAfter => values::check_retry_after(v),
                HeaderName::Warning => values::check_warning(v),
                HeaderName::Accept => values::check_accept(v),
                _ => Ok(()),
            };
            res.map_err(|error| ParseError::InvalidHeader {
                name: h.name(),
                error,
            })?;
        }
        // List headers: every element of every line. The parser has checked the first Via
        // value when it had the plain form.
        let mut vias = ListValues::new(self, HeaderName::Via);
        if self.top_via_is_valid() {
            vias.next();
        }
        for v in vias {
            super::Via::parse(v?).map_err(|error| ParseError::InvalidHeader {
                name: HeaderName::Via,
                error,
            })?;
        }
        for c in self.contacts() {
            c?;
        }
        for r in self.routes().chain(self.record_routes()) {
            r?;
        }
        for name in [
            HeaderName::Require,
            HeaderName::ProxyRequire,
            HeaderName::Supported,
            HeaderName::Unsupported,
            HeaderName::Allow,
        ] {
            // Nearly every such line is tokens and commas: one pass over each.
            if self
                .header_values(name)
                .all(super::lex::is_plain_token_list)
            {
                continue;
            }
            for t in super::values::TokenList::new(ListValues::new(self, name)) {
                t?;
            }
        }
        Ok(())
    }

    /// Applies RFC 3261's rules that turn a well-formed request into an error response:
    /// 505 for a version other than 2.0, 400 for missing, repeated, malformed or
    /// inconsistent headers, 400 for headers in the Request-URI, 416 for a Request-URI scheme
    /// other than sip/sips. Method-specific rules (405, 420, 481, …) belong to the dialog
    /// layer. Calling this on a response is a 400 with `MissingHeader` at worst; use
    /// [`Message::check_response`] for responses.
    pub fn check_request(&self) -> Result<(), Rejection> {
        let bad = |reason| Rejection { code: 400, reason };
        if !self.version().eq_ignore_ascii_case(b"SIP/2.0") {
            return Err(Rejection {
                code: 505,
                reason: RejectReason::VersionNotSupported,
            });
        }
        self.check_common().map_err(bad)?;
        let cseq = self.cseq().map_err(|e| bad(RejectReason::Malformed(e)))?;
        if Some(cseq.method_bytes) != self.method_bytes() {
            return Err(bad(RejectReason::CSeqMethodMismatch));
        }
        // A dialog-creating request names exactly one target (§8.1.1.8).
        // Counted as written: `check_common` has parsed every Contact value already.
        if matches!(
            self.method(),
            Some(Method::Invite | Method::Subscribe | Method::Refer)
        ) && ListValues::new(self, HeaderName::Contact).count() > 1
        {
            return Err(bad(RejectReason::DuplicateHeader(HeaderName::Contact)));
        }
        match self.request_uri_form() {
            Some(UriForm::SipWithHeaders) => Err(bad(RejectReason::HeadersInRequestUri)),
            Some(UriForm::Sip) => Ok(()),
            _ => Err(Rejection {
                code: 416,
                reason: RejectReason::UnsupportedUriScheme,
            }),
        }
    }

    /// Checks a response before it is matched to a transaction: mandatory headers present,
    /// single-valued ones not repeated, every typed header well-formed. A response that fails
    /// is discarded (RFC 3261 §18.1.2, RFC 4475 §3.1.2.5), so this returns why.
    pub fn check_response(&self) -> Result<(), RejectReason> {
        if !self.version().eq_ignore_ascii_case(b"SIP/2.0") {
            return Err(RejectReason::VersionNotSupported);
        }
        self.check_common()
    }

    /// The gate of a response reaching a user agent, before any transaction acts on it
    /// (§18.1.2: bad responses are discarded): SIP/2.0, the mandatory headers present,
    /// single-valued ones not repeated, exactly one Via (§8.1.3.3: more were meant for a
    /// proxy), and From and To tags that can be read. The shard calls it on every
    /// response.
    ///
    /// It is narrower than [`Message::check_response`]: headers a UA reads only in some
    /// responses (Contact, Require, RSeq, the body's type) get their typed errors where
    /// they are read, and the CSeq and Call-ID where the transaction layer keys the
    /// response, instead of every typed header being parsed twice for every response.
    pub fn check_response_to_ua(&self) -> Result<(), RejectReason> {
        if !self.version().eq_ignore_ascii_case(b"SIP/2.0") {
            return Err(RejectReason::VersionNotSupported);
        }
        let repeated = self.check_present_and_single()?;
        // A second Via is a second line, or a comma in the one line (outside quotes: a
        // comma is rare enough there that only then is the line split properly).
        let one_line = repeated & name_bit(HeaderName::Via) == 0;
        let comma = self
            .header(HeaderName::Via)
            .is_some_and(|v| memchr::memchr(b',', v).is_some());
        if !one_line || comma && ListValues::new(self, HeaderName::Via).nth(1).is_some() {
            return Err(RejectReason::ExtraVia);
        }
        // The tags, with the name-addr shape and parameters they stand in (the URIs are
        // read where a dialog is made from them).
        self.from_tag().map_err(RejectReason::Malformed)?;
        self.to_tag().map_err(RejectReason::Malformed)?;
        Ok(())
    }

    fn check_common(&self) -> Result<(), RejectReason> {
        self.check_present_and_single()?;
        self.validate().map_err(RejectReason::Malformed)
    }

    /// The mandatory headers present and the single-valued ones not repeated; returns the
    /// set of repeated names ([`Message::repeated_names`]).
    fn check_present_and_single(&self) -> Result<u64, RejectReason> {
        for name in MANDATORY {
            if self.header(name).is_none() {
                return Err(RejectReason::MissingHeader(name));
            }
        }
        let repeated = self.repeated_names();
        if let Some(&name) = SINGLE.iter().find(|n| repeated & name_bit(**n) != 0) {
            return Err(RejectReason::DuplicateHeader(name));
        }
        Ok(repeated)
    }

    /// The known names that appear on more than one header line, as a bit set
    /// ([`name_bit`]): one pass over the lines instead of a count per name.
    fn repeated_names(&self) -> u64 {
        let (mut seen, mut repeated) = (0u64, 0u64);
        for h in self.headers.iter() {
            let bit = h.name_bit();
            repeated |= seen & bit;
            seen |= bit;
        }
        repeated
    }
}

/// The bit of a known name in [`Message::repeated_names`]'s set; none for `Other`.
fn name_bit(name: HeaderName) -> u64 {
    name.index().map_or(0, |i| 1u64 << i)
}
