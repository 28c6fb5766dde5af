//! Values of the headers that are neither addresses nor Via: CSeq, Content-Type, option-tag
//! lists, Event, Subscription-State, Replaces, RSeq/RAck, Session-Expires/Min-SE,
//! Authorization/WWW-Authenticate, and the checks behind `validate` for Call-ID, Date,
//! Retry-After, Warning and Accept.

use super::error::{ParseError, ValueError};
use super::lex::{self, ListSplit, ParamKind, Params};
use super::method::Method;

/// Largest CSeq sequence number plus one (RFC 3261 §8.1.1.5: less than 2^31).
const CSEQ_LIMIT: u64 = 1 << 31;

/// CSeq: a sequence number and a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number, below 2^31.
    pub seq: u32,
    /// The method.
    pub method: Method,
    /// The method as written.
    pub method_bytes: &'a [u8],
}

impl<'a> CSeq<'a> {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(value: &'a [u8]) -> Result<CSeq<'a>, ValueError> {
        match Self::parse_plain(value) {
            Some(cseq) => Ok(cseq),
            None => Self::parse_any(value),
        }
    }

    /// One pass over the form nearly every CSeq has, `1*9DIGIT SP token` with nothing
    /// around it (nine digits stay below 2^31, so no range check). `None` for anything
    /// else, which [`CSeq::parse_any`] reads; where this answers, it answers as that does.
    fn parse_plain(value: &'a [u8]) -> Option<CSeq<'a>> {
        let mut seq = 0u32;
        let mut i = 0;
        while let Some(&d) = value.get(i).filter(|d| d.is_ascii_digit()) {
            if i == 9 {
                return None;
            }
            seq = seq * 10 + u32::from(d - b'0');
            i += 1;
        }
        if i == 0 || value.get(i) != Some(&b' ') {
            return None;
        }
        let method_bytes = &value[i + 1..];
        if method_bytes.is_empty() || !method_bytes.iter().all(|&b| lex::is_token_char(b)) {
            return None;
        }
        Some(CSeq {
            seq,
            method: Method::from_bytes(method_bytes),
            method_bytes,
        })
    }

    /// Every form: LWS around and between, leading zeros, the full range.
    fn parse_any(value: &'a [u8]) -> Result<CSeq<'a>, ValueError> {
        let s = lex::trim_lws(value);
        let (seq, rest) = split_number(s, CSEQ_LIMIT - 1)?;
        let method_bytes = lex::trim_start_lws(rest);
        if method_bytes.len() == rest.len() || !lex::is_token(method_bytes) {
            return Err(ValueError::Syntax);
        }
        Ok(CSeq {
            seq: seq as u32,
            method: Method::from_bytes(method_bytes),
            method_bytes,
        })
    }
}

/// See [`super::fuzzing::assert_fast_paths_agree`]; true when the one-pass reader answered.
pub(super) fn assert_plain_cseq_agrees(value: &[u8]) -> bool {
    super::fuzzing::agrees("CSeq", value, CSeq::parse_plain(value), || {
        CSeq::parse_any(value)
    })
}

/// Splits a leading `1*DIGIT` (at most `max`) from the rest.
fn split_number(s: &[u8], max: u64) -> Result<(u64, &[u8]), ValueError> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let v = lex::parse_decimal(&s[..n], max)?;
    Ok((v, &s[n..]))
}

/// `delta-seconds`: a number of seconds up to 2^32-1.
pub(crate) fn parse_delta_seconds(value: &[u8]) -> Result<u32, ValueError> {
    lex::parse_decimal(lex::trim_lws(value), u64::from(u32::MAX)).map(|v| v as u32)
}

/// Max-Forwards: 0 to 255.
pub(crate) fn parse_max_forwards(value: &[u8]) -> Result<u8, ValueError> {
    lex::parse_decimal(lex::trim_lws(value), 255).map(|v| v as u8)
}

/// RSeq: 1 to 2^31-1 (RFC 3262 §7.1).
pub(crate) fn parse_rseq(value: &[u8]) -> Result<u32, ValueError> {
    match lex::parse_decimal(lex::trim_lws(value), CSEQ_LIMIT - 1)? {
        0 => Err(ValueError::OutOfRange),
        v => Ok(v as u32),
    }
}

/// A media type with parameters (Content-Type, one Accept element).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaType<'a> {
    /// `application` in `application/sdp`.
    pub mtype: &'a [u8],
    /// `sdp` in `application/sdp`.
    pub subtype: &'a [u8],
    /// Parameters (`;charset=…`, `;boundary=…`).
    pub params: Params<'a>,
}

impl<'a> MediaType<'a> {
    /// Parses `type "/" subtype *(";" param)`.
    pub fn parse(value: &'a [u8]) -> Result<MediaType<'a>, ValueError> {
        let s = lex::trim_lws(value);
        let slash = lex::find_byte(b'/', s).ok_or(ValueError::Syntax)?;
        let mtype = lex::trim_end_lws(&s[..slash]);
        let rest = lex::trim_start_lws(&s[slash + 1..]);
        let semi = lex::find_byte(b';', rest).unwrap_or(rest.len());
        let subtype = lex::trim_end_lws(&rest[..semi]);
        if !lex::is_token(mtype) || !lex::is_token(subtype) {
            return Err(ValueError::Syntax);
        }
        let params = Params::parse(&rest[semi..], ParamKind::Header)?;
        Ok(MediaType {
            mtype,
            subtype,
            params,
        })
    }

    /// True when this is `type/subtype` (case-insensitive).
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype.as_bytes())
            && self.subtype.eq_ignore_ascii_case(subtype.as_bytes())
    }
}

/// The comma-separated tokens of every line of one header (Require, Supported, Allow, …).
#[derive(Clone, Debug)]
pub struct TokenList<'a> {
    values: super::access::ListValues<'a>,
}

impl<'a> TokenList<'a> {
    pub(crate) fn new(values: super::access::ListValues<'a>) -> Self {
        TokenList { values }
    }

    /// True when `token` is listed (exact, case-sensitive comparison, as for option tags
    /// and methods).
    pub fn contains(&self, token: &str) -> bool {
        self.clone().any(|t| t.is_ok_and(|t| t == token.as_bytes()))
    }
}

impl<'a> Iterator for TokenList<'a> {
    type Item = Result<&'a [u8], ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.values.next()?;
        Some(item.and_then(|t| {
            if lex::is_token(t) {
                Ok(t)
            } else {
                Err(ParseError::InvalidHeader {
                    name: self.values.name(),
                    error: ValueError::Syntax,
                })
            }
        }))
    }
}

/// Event (RFC 6665 §8.2.1): an event package and parameters (`id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event type (`presence`, `refer`, `dialog.winfo`).
    pub package: &'a [u8],
    /// Parameters.
    pub params: Params<'a>,
}

impl<'a> Event<'a> {
    /// Parses `event-type *(";" param)`.
    pub fn parse(value: &'a [u8]) -> Result<Event<'a>, ValueError> {
        let (package, params) = token_with_params(value)?;
        Ok(Event { package, params })
    }

    /// The `id` parameter.
    pub fn id(&self) -> Option<&'a [u8]> {
        self.params.get("id").flatten()
    }
}

/// Subscription-State (RFC 6665 §8.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionState<'a> {
    /// `active`, `pending`, `terminated` or an extension.
    pub state: &'a [u8],
    /// Parameters (`expires`, `reason`, `retry-after`).
    pub params: Params<'a>,
}

impl<'a> SubscriptionState<'a> {
    /// Parses `substate-value *(";" param)`, checking `expires` and `retry-after`.
    pub fn parse(value: &'a [u8]) -> Result<SubscriptionState<'a>, ValueError> {
        let (state, params) = token_with_params(value)?;
        let s = SubscriptionState { state, params };
        for name in ["expires", "retry-after"] {
            if let Some(v) = params.get(name) {
                parse_delta_seconds(v.ok_or(ValueError::InvalidParam)?)?;
            }
        }
        Ok(s)
    }

    /// The `expires` parameter.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(|v| parse_delta_seconds(v).ok())
    }

    /// The `reason` parameter.
    pub fn reason(&self) -> Option<&'a [u8]> {
        self.params.get("reason").flatten()
    }
}

/// Replaces (RFC 3891 §6.1): the dialog to replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replaces<'a> {
    /// The Call-ID of the dialog to replace.
    pub call_id: &'a [u8],
    /// Parameters; `to-tag` and `from-tag` are present.
    pub params: Params<'a>,
}

impl<'a> Replaces<'a> {
    /// Parses `callid *(";" replaces-param)`; both tags are required.
    pub fn parse(value: &'a [u8]) -> Result<Replaces<'a>, ValueError> {
        let s = lex::trim_lws(value);
        let semi = lex::find_byte(b';', s).unwrap_or(s.len());
        let call_id = lex::trim_end_lws(&s[..semi]);
        check_call_id(call_id)?;
        let params = Params::parse(&s[semi..], ParamKind::Header)?;
        let r = Replaces { call_id, params };
        if r.to_tag().is_none() || r.from_tag().is_none() {
            return Err(ValueError::Syntax);
        }
        Ok(r)
    }

    /// `to-tag`.
    pub fn to_tag(&self) -> Option<&'a [u8]> {
        self.params.get("to-tag").flatten()
    }

    /// `from-tag`.
    pub fn from_tag(&self) -> Option<&'a [u8]> {
        self.params.get("from-tag").flatten()
    }

    /// True with `early-only`.
    pub fn early_only(&self) -> bool {
        self.params.contains("early-only")
    }
}

/// RAck (RFC 3262 §7.2): the reliable provisional response being acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RAck<'a> {
    /// RSeq of the provisional response.
    pub rseq: u32,
    /// CSeq number of the request it answered.
    pub cseq: u32,
    /// CSeq method.
    pub method: Method,
    /// CSeq method as written.
    pub method_bytes: &'a [u8],
}

impl<'a> RAck<'a> {
    /// Parses `response-num LWS CSeq-num LWS Method`.
    pub fn parse(value: &'a [u8]) -> Result<RAck<'a>, ValueError> {
        let s = lex::trim_lws(value);
        let (rseq, rest) = split_number(s, CSEQ_LIMIT - 1)?;
        let rest2 = lex::trim_start_lws(rest);
        if rest2.len() == rest.len() {
            return Err(ValueError::Syntax);
        }
        let cseq = CSeq::parse(rest2)?;
        Ok(RAck {
            rseq: rseq as u32,
            cseq: cseq.seq,
            method: cseq.method,
            method_bytes: cseq.method_bytes,
        })
    }
}

/// Session-Expires or Min-SE (RFC 4028): seconds and parameters (`refresher`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionExpires<'a> {
    /// The interval in seconds.
    pub seconds: u32,
    /// Parameters.
    pub params: Params<'a>,
}

impl<'a> SessionExpires<'a> {
    /// Parses `delta-seconds *(";" param)`.
    pub fn parse(value: &'a [u8]) -> Result<SessionExpires<'a>, ValueError> {
        let s = lex::trim_lws(value);
        let semi = lex::find_byte(b';', s).unwrap_or(s.len());
        let seconds = parse_delta_seconds(&s[..semi])?;
        let params = Params::parse(&s[semi..], ParamKind::Header)?;
        Ok(SessionExpires { seconds, params })
    }

    /// `refresher=uac` or `refresher=uas`.
    pub fn refresher(&self) -> Option<&'a [u8]> {
        self.params.get("refresher").flatten()
    }
}

/// Credentials or a challenge (Authorization, WWW-Authenticate, Proxy-*): a scheme and
/// comma-separated `name=value` parameters. Unknown schemes parse too (RFC 4475 §3.3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Auth<'a> {
    /// The scheme (`Digest`, or anything).
    pub scheme: &'a [u8],
    /// The parameter list as written.
    pub params_raw: &'a [u8],
}

impl<'a> Auth<'a> {
    /// Parses `scheme LWS auth-param *(COMMA auth-param)`.
    pub fn parse(value: &'a [u8]) -> Result<Auth<'a>, ValueError> {
        let s = lex::trim_lws(value);
        let n = s.iter().take_while(|&&b| lex::is_token_char(b)).count();
        if n == 0 {
            return Err(ValueError::Syntax);
        }
        let (scheme, rest) = (&s[..n], &s[n..]);
        let params_raw = lex::trim_start_lws(rest);
        if !params_raw.is_empty() && params_raw.len() == rest.len() {
            return Err(ValueError::Syntax);
        }
        let auth = Auth { scheme, params_raw };
        if !params_raw.is_empty() {
            for p in ListSplit::new(params_raw) {
                let p = p?;
                let eq = lex::find_byte(b'=', p).ok_or(ValueError::InvalidParam)?;
                let name = lex::trim_lws(&p[..eq]);
                let v = lex::trim_lws(&p[eq + 1..]);
                let ok_value = if v.first() == Some(&b'"') {
                    lex::quoted_len(v)? == v.len()
                } else {
                    lex::is_token(v)
                };
                if !lex::is_token(name) || !ok_value {
                    return Err(ValueError::InvalidParam);
                }
            }
        }
        Ok(auth)
    }

    /// The value of parameter `name` (case-insensitive), quotes removed.
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        ListSplit::new(self.params_raw).find_map(|p| {
            let p = p.ok()?;
            let eq = lex::find_byte(b'=', p)?;
            lex::trim_lws(&p[..eq])
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| lex::unquote(lex::trim_lws(&p[eq + 1..])))
        })
    }
}

fn token_with_params(value: &[u8]) -> Result<(&[u8], Params<'_>), ValueError> {
    let s = lex::trim_lws(value);
    let semi = lex::find_byte(b';', s).unwrap_or(s.len());
    let token = lex::trim_end_lws(&s[..semi]);
    if !lex::is_token(token) {
        return Err(ValueError::Syntax);
    }
    Ok((token, Params::parse(&s[semi..], ParamKind::Header)?))
}

/// callid = word [ "@" word ].
pub(crate) fn check_call_id(v: &[u8]) -> Result<(), ValueError> {
    let ok = match lex::find_byte(b'@', v) {
        Some(at) => lex::is_word(&v[..at]) && lex::is_word(&v[at + 1..]),
        None => lex::is_word(v),
    };
    if ok { Ok(()) } else { Err(ValueError::Syntax) }
}

/// rfc1123-date = wkday "," SP 2DIGIT SP month SP 4DIGIT SP 2DIGIT ":" 2DIGIT ":" 2DIGIT SP "GMT"
/// (RFC 3261 §20.17: only GMT; RFC 4475 §3.1.2.12).
pub(crate) fn check_date(v: &[u8]) -> Result<(), ValueError> {
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let d = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let ok = v.len() == 29
        && DAYS.contains(&&v[0..3])
        && &v[3..5] == b", "
        && d(&v[5..7])
        && v[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && v[11] == b' '
        && d(&v[12..16])
        && v[16] == b' '
        && d(&v[17..19])
        && v[19] == b':'
        && d(&v[20..22])
        && v[22] == b':'
        && d(&v[23..25])
        && &v[25..] == b" GMT";
    if ok { Ok(()) } else { Err(ValueError::Syntax) }
}

/// Retry-After = delta-seconds [ comment ] *( SEMI retry-param ).
pub(crate) fn check_retry_after(v: &[u8]) -> Result<(), ValueError> {
    let s = lex::trim_lws(v);
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    parse_delta_seconds(&s[..n])?;
    let mut rest = lex::trim_start_lws(&s[n..]);
    if rest.first() == Some(&b'(') {
        let close = memchr::memrchr(b')', rest).ok_or(ValueError::Syntax)?;
        rest = lex::trim_start_lws(&rest[close + 1..]);
    }
    let params = Params::parse(rest, ParamKind::Header)?;
    if let Some(d) = params.get("duration") {
        parse_delta_seconds(d.ok_or(ValueError::InvalidParam)?)?;
    }
    Ok(())
}

/// Warning = warning-value *(COMMA warning-value);
/// warning-value = 3DIGIT SP warn-agent SP quoted-string.
pub(crate) fn check_warning(v: &[u8]) -> Result<(), ValueError> {
    for item in ListSplit::new(v) {
        let item = item?;
        let ok = item.len() > 4 && item[..3].iter().all(u8::is_ascii_digit) && item[3] == b' ' && {
            let rest = &item[4..];
            match lex::find_byte(b' ', rest) {
                Some(sp) => {
                    let text = &rest[sp + 1..];
                    sp > 0 && text.first() == Some(&b'"') && lex::quoted_len(text)? == text.len()
                }
                None => false,
            }
        };
        if !ok {
            return Err(ValueError::Syntax);
        }
    }
    Ok(())
}

/// Accept = [ accept-range *(COMMA accept-range) ]: an empty Accept is allowed.
pub(crate) fn check_accept(v: &[u8]) -> Result<(), ValueError> {
    if lex::trim_lws(v).is_empty() {
        return Ok(());
    }
    for item in ListSplit::new(v) {
        MediaType::parse(item?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_cseq_agrees_with_the_general_reader() {
        for v in [
            &b"1 INVITE"[..],
            b"314159 ACK",
            b"123456789 x-Custom.Method!",
        ] {
            assert!(assert_plain_cseq_agrees(v), "{v:?}");
        }
        for v in [
            &b"1234567890 INVITE"[..],
            b"1  INVITE",
            b" 1 INVITE",
            b"1 INVITE ",
            b"1 ",
            b"x",
        ] {
            assert_eq!(CSeq::parse_plain(v), None, "{v:?}");
        }
        let seeds: &[&[u8]] = &[b"1 INVITE", b"2147483647 BYE", b"999999999 OPTIONS"];
        crate::message::mutations::assert_agreement(
            seeds,
            b"0123456789 \t\r\n-.:A",
            assert_plain_cseq_agrees,
        );
    }

    #[test]
    fn cseq_bounds_and_form() {
        let c = CSeq::parse(b"0009 INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert_eq!(
            CSeq::parse(b"2147483648 INVITE"),
            Err(ValueError::OutOfRange)
        );
        assert!(CSeq::parse(b"1INVITE").is_err());
        assert!(CSeq::parse(b"1 INVITE x").is_err());
    }

    #[test]
    fn rack_and_session_expires() {
        let r = RAck::parse(b"776656 1 INVITE").unwrap();
        assert_eq!((r.rseq, r.cseq, r.method), (776656, 1, Method::Invite));
        let s = SessionExpires::parse(b"1800;refresher=uac").unwrap();
        assert_eq!(s.seconds, 1800);
        assert_eq!(s.refresher(), Some(&b"uac"[..]));
    }

    #[test]
    fn replaces_requires_both_tags() {
        let r = Replaces::parse(b"425928@bobster.example.org;to-tag=7743;from-tag=6472;early-only")
            .unwrap();
        assert_eq!(r.call_id, b"425928@bobster.example.org");
        assert!(r.early_only());
        assert!(Replaces::parse(b"425928@bobster.example.org;to-tag=7743").is_err());
    }

    #[test]
    fn auth_params() {
        let a =
            Auth::parse(br#"Digest username="bob", realm="atlanta.example.com", nonce="ea9c8e88""#)
                .unwrap();
        assert_eq!(a.scheme, b"Digest");
        assert_eq!(a.param("realm"), Some(&b"atlanta.example.com"[..]));
        assert!(Auth::parse(b"NoOneKnowsThisScheme opaque-data=here").is_ok());
        assert!(Auth::parse(br#"Digest realm="a" nonce="b""#).is_err());
    }

    #[test]
    fn dates_warnings_retry_after() {
        assert!(check_date(b"Sat, 13 Nov 2010 23:29:00 GMT").is_ok());
        assert!(check_date(b"Fri, 01 Jan 2010 16:00:00 EST").is_err());
        assert!(check_warning(br#"370 devnull "Choose a bigger pipe""#).is_ok());
        assert!(check_warning(br#"1812 overture "In Progress""#).is_err());
        assert!(check_retry_after(b"120 (I'm in a meeting);duration=60").is_ok());
        assert!(check_retry_after(b"949302838503028349304023988").is_err());
    }

    #[test]
    fn media_types() {
        let m = MediaType::parse(b"multipart/mixed;boundary=7a9cbec02ceef655").unwrap();
        assert!(m.is("Multipart", "MIXED"));
        assert!(check_accept(b"").is_ok());
        assert!(check_accept(b"application/sdp, text/*;q=0.5").is_ok());
        assert!(MediaType::parse(b"application").is_err());
    }
}
