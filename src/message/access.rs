//! Typed accessors on [`Message`]: each parses one header on demand and maps a grammar error
//! to [`ParseError::InvalidHeader`] naming the header. Nothing here allocates.

use super::error::{ParseError, ValueError};
use super::header::HeaderName;
use super::lex::{self, ListSplit};
use super::name_addr::{self, Contact, NameAddr};
use super::values::{
    self, Auth, CSeq, Event, MediaType, RAck, Replaces, SessionExpires, SubscriptionState,
    TokenList,
};
use super::via::{Via, ViaIter, ViaKey};
use super::{Message, NO_INDEX};

/// Walks the comma-separated elements of every line of one header, in order.
#[derive(Clone, Debug)]
pub(crate) struct ListValues<'a> {
    msg: &'a Message,
    name: HeaderName,
    next_line: usize,
    current: Option<ListSplit<'a>>,
}

impl<'a> ListValues<'a> {
    pub(crate) fn new(msg: &'a Message, name: HeaderName) -> Self {
        let next_line = name
            .index()
            .map(|i| msg.first[i])
            .filter(|&i| i != NO_INDEX)
            .map_or(msg.headers.len(), usize::from);
        ListValues {
            msg,
            name,
            next_line,
            current: None,
        }
    }

    pub(crate) fn name(&self) -> HeaderName {
        self.name
    }
}

impl<'a> Iterator for ListValues<'a> {
    type Item = Result<&'a [u8], ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(split) = &mut self.current
                && let Some(item) = split.next()
            {
                return Some(item.map_err(|error| {
                    // A broken line ends the walk: its remaining elements cannot be trusted.
                    self.current = None;
                    self.next_line = self.msg.headers.len();
                    ParseError::InvalidHeader {
                        name: self.name,
                        error,
                    }
                }));
            }
            let msg = self.msg;
            let pos = msg.headers[self.next_line..]
                .iter()
                .position(|h| h.name() == self.name)?;
            let line = self.next_line + pos;
            self.next_line = line + 1;
            let value = msg.headers[line].value().get(&msg.buf);
            // An empty line of a list that may be empty (`Supported:`) lists nothing.
            if self.name.list_may_be_empty() && super::lex::trim_lws(value).is_empty() {
                continue;
            }
            self.current = Some(ListSplit::new(value));
        }
    }
}

fn invalid(name: HeaderName) -> impl Fn(ValueError) -> ParseError {
    move |error| ParseError::InvalidHeader { name, error }
}

impl Message {
    fn required(&self, name: HeaderName) -> Result<&[u8], ParseError> {
        self.header(name).ok_or(ParseError::MissingHeader(name))
    }

    fn optional<'a, T>(
        &'a self,
        name: HeaderName,
        parse: impl FnOnce(&'a [u8]) -> Result<T, ValueError>,
    ) -> Result<Option<T>, ParseError> {
        self.header(name)
            .map(|v| parse(v).map_err(invalid(name)))
            .transpose()
    }

    /// The Call-ID as written (syntax is checked by [`Message::validate`]).
    #[inline]
    pub fn call_id(&self) -> Option<&[u8]> {
        self.header(HeaderName::CallId)
    }

    /// CSeq.
    pub fn cseq(&self) -> Result<CSeq<'_>, ParseError> {
        CSeq::parse(self.required(HeaderName::CSeq)?).map_err(invalid(HeaderName::CSeq))
    }

    /// From.
    pub fn from_header(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.required(HeaderName::From)?).map_err(invalid(HeaderName::From))
    }

    /// To.
    pub fn to_header(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.required(HeaderName::To)?).map_err(invalid(HeaderName::To))
    }

    /// The From tag, if any. Checks From's structure and parameters, not its URI (the
    /// cheap path for matching; [`Message::from_header`] or [`Message::validate`] check all).
    pub fn from_tag(&self) -> Result<Option<&[u8]>, ParseError> {
        name_addr::tag_param(self.required(HeaderName::From)?).map_err(invalid(HeaderName::From))
    }

    /// The To tag, if any; checked like [`Message::from_tag`].
    pub fn to_tag(&self) -> Result<Option<&[u8]>, ParseError> {
        name_addr::tag_param(self.required(HeaderName::To)?).map_err(invalid(HeaderName::To))
    }

    /// The topmost Via value (the first element of the first Via line).
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        let line = self.required(HeaderName::Via)?;
        let first = match lex::find_outside(line, b',').map_err(invalid(HeaderName::Via))? {
            Some(comma) => &line[..comma],
            None => line,
        };
        Via::parse(first).map_err(invalid(HeaderName::Via))
    }

    /// What transactions match and answer by in the topmost Via: read in one pass for the
    /// plain form, by [`Via::parse`] otherwise (see [`ViaKey`]).
    pub fn top_via_key(&self) -> Result<ViaKey<'_>, ParseError> {
        match self.top_via_scanned() {
            Some(top) => Ok(top.key),
            None => self.top_via().map(|via| ViaKey::from(&via)),
        }
    }

    /// The topmost Via value as written (for copying into an ACK or CANCEL).
    pub fn top_via_bytes(&self) -> Option<&[u8]> {
        let line = self.header(HeaderName::Via)?;
        match lex::find_outside(line, b',') {
            Ok(Some(comma)) => Some(lex::trim_lws(&line[..comma])),
            Ok(None) => Some(line),
            Err(_) => None,
        }
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> ViaIter<'_> {
        ViaIter::new(ListValues::new(self, HeaderName::Via))
    }

    /// The comma-separated elements of every line of header `name`, as written (trimmed).
    pub fn list_values(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<&[u8], ParseError>> + '_ {
        ListValues::new(self, name)
    }

    /// Every Contact value.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, ParseError>> + '_ {
        self.name_addr_list(HeaderName::Contact, Contact::parse)
    }

    /// Every Route value, in order.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.name_addr_list(HeaderName::Route, NameAddr::parse)
    }

    /// Every Record-Route value, in order.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.name_addr_list(HeaderName::RecordRoute, NameAddr::parse)
    }

    fn name_addr_list<'a, T: 'a>(
        &'a self,
        name: HeaderName,
        parse: fn(&'a [u8]) -> Result<T, ValueError>,
    ) -> impl Iterator<Item = Result<T, ParseError>> + 'a {
        ListValues::new(self, name).map(move |v| v.and_then(|v| parse(v).map_err(invalid(name))))
    }

    /// Whether the Accept header admits `mtype/subtype` (§20.1): true without an Accept
    /// header, else when an element names it, `mtype/*` or `*/*`. An empty Accept admits
    /// nothing.
    pub fn accepts(&self, mtype: &str, subtype: &str) -> bool {
        if self.header(HeaderName::Accept).is_none() {
            return true;
        }
        self.list_values(HeaderName::Accept)
            .filter_map(Result::ok)
            .filter_map(|v| MediaType::parse(v).ok())
            .any(|m| {
                m.is(mtype, subtype)
                    || m.is("*", "*")
                    || (m.mtype.eq_ignore_ascii_case(mtype.as_bytes()) && m.subtype == b"*")
            })
    }

    /// Max-Forwards (0-255), when present.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.optional(HeaderName::MaxForwards, values::parse_max_forwards)
    }

    /// Content-Type, when present.
    pub fn content_type(&self) -> Result<Option<MediaType<'_>>, ParseError> {
        self.optional(HeaderName::ContentType, MediaType::parse)
    }

    /// Expires in seconds, when present.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.optional(HeaderName::Expires, values::parse_delta_seconds)
    }

    /// Min-Expires in seconds, when present.
    pub fn min_expires(&self) -> Result<Option<u32>, ParseError> {
        self.optional(HeaderName::MinExpires, values::parse_delta_seconds)
    }

    /// Option tags of every Require line.
    pub fn require(&self) -> TokenList<'_> {
        TokenList::new(ListValues::new(self, HeaderName::Require))
    }

    /// Option tags of every Proxy-Require line.
    pub fn proxy_require(&self) -> TokenList<'_> {
        TokenList::new(ListValues::new(self, HeaderName::ProxyRequire))
    }

    /// Option tags of every Supported line.
    pub fn supported(&self) -> TokenList<'_> {
        TokenList::new(ListValues::new(self, HeaderName::Supported))
    }

    /// Option tags of every Unsupported line.
    pub fn unsupported(&self) -> TokenList<'_> {
        TokenList::new(ListValues::new(self, HeaderName::Unsupported))
    }

    /// Methods of every Allow line.
    pub fn allow(&self) -> TokenList<'_> {
        TokenList::new(ListValues::new(self, HeaderName::Allow))
    }

    /// Event, when present.
    pub fn event(&self) -> Result<Option<Event<'_>>, ParseError> {
        self.optional(HeaderName::Event, Event::parse)
    }

    /// Subscription-State, when present.
    pub fn subscription_state(&self) -> Result<Option<SubscriptionState<'_>>, ParseError> {
        self.optional(HeaderName::SubscriptionState, SubscriptionState::parse)
    }

    /// Refer-To, when present.
    pub fn refer_to(&self) -> Result<Option<NameAddr<'_>>, ParseError> {
        self.optional(HeaderName::ReferTo, NameAddr::parse)
    }

    /// Replaces, when present.
    pub fn replaces(&self) -> Result<Option<Replaces<'_>>, ParseError> {
        self.optional(HeaderName::Replaces, Replaces::parse)
    }

    /// RSeq, when present.
    pub fn rseq(&self) -> Result<Option<u32>, ParseError> {
        self.optional(HeaderName::RSeq, values::parse_rseq)
    }

    /// RAck, when present.
    pub fn rack(&self) -> Result<Option<RAck<'_>>, ParseError> {
        self.optional(HeaderName::RAck, RAck::parse)
    }

    /// Session-Expires, when present.
    pub fn session_expires(&self) -> Result<Option<SessionExpires<'_>>, ParseError> {
        self.optional(HeaderName::SessionExpires, SessionExpires::parse)
    }

    /// Min-SE, when present.
    pub fn min_se(&self) -> Result<Option<SessionExpires<'_>>, ParseError> {
        self.optional(HeaderName::MinSE, SessionExpires::parse)
    }

    /// Authorization, when present.
    pub fn authorization(&self) -> Result<Option<Auth<'_>>, ParseError> {
        self.optional(HeaderName::Authorization, Auth::parse)
    }

    /// Proxy-Authorization, when present.
    pub fn proxy_authorization(&self) -> Result<Option<Auth<'_>>, ParseError> {
        self.optional(HeaderName::ProxyAuthorization, Auth::parse)
    }

    /// WWW-Authenticate, when present.
    pub fn www_authenticate(&self) -> Result<Option<Auth<'_>>, ParseError> {
        self.optional(HeaderName::WwwAuthenticate, Auth::parse)
    }

    /// Proxy-Authenticate, when present.
    pub fn proxy_authenticate(&self) -> Result<Option<Auth<'_>>, ParseError> {
        self.optional(HeaderName::ProxyAuthenticate, Auth::parse)
    }
}
