//! `name-addr` / `addr-spec` values: From, To, Contact, Route, Record-Route, Refer-To,
//! Referred-By (RFC 3261 §20 and §25.1).
//!
//! `"Display" <uri>;params`, `token words <uri>;params` and bare `uri;params` are accepted.
//! A bare URI cannot carry `?headers` (§20: such a URI must be in angle brackets), and no LWS
//! is allowed inside the brackets (RFC 4475 §3.1.2.14).

use super::error::ValueError;
use super::lex::{self, ParamKind, Params};
use super::uri::Uri;

/// A parsed name-addr or addr-spec with its header parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name: for a quoted one, the text between the quotes (escapes kept); for an
    /// unquoted one, the tokens as written.
    pub display: Option<&'a [u8]>,
    /// The URI as written.
    pub uri_bytes: &'a [u8],
    /// The parsed URI.
    pub uri: Uri<'a>,
    /// True when the URI was in angle brackets.
    pub bracketed: bool,
    /// Header parameters after the URI (`;tag=…`, `;expires=…`, `;lr` on a bare route…).
    pub params: Params<'a>,
}

/// The parts of a name-addr/addr-spec, located but not yet parsed.
struct Parts<'a> {
    display: Option<&'a [u8]>,
    uri_bytes: &'a [u8],
    bracketed: bool,
    params_raw: &'a [u8],
}

/// Locates display name, URI and parameters (§20.10: without angle brackets, everything after
/// the first `;` is a header parameter).
fn split(value: &[u8]) -> Result<Parts<'_>, ValueError> {
    let s = lex::trim_lws(value);
    if s.is_empty() {
        return Err(ValueError::Empty);
    }
    let (display, angle_part) = if s[0] == b'"' {
        let q = lex::quoted_len(s)?;
        let rest = lex::trim_start_lws(&s[q..]);
        if rest.first() != Some(&b'<') {
            return Err(ValueError::Syntax);
        }
        (Some(&s[1..q - 1]), Some(rest))
    } else if let Some(lt) = lex::find_byte(b'<', s) {
        let name = lex::trim_end_lws(&s[..lt]);
        // display-name = *(token LWS); UTF-8 octets are tolerated unquoted.
        if !name
            .iter()
            .all(|&b| lex::is_token_char(b) || lex::is_lws(b) || b >= 0x80)
        {
            return Err(ValueError::Syntax);
        }
        ((!name.is_empty()).then_some(name), Some(&s[lt..]))
    } else {
        (None, None)
    };
    Ok(match angle_part {
        Some(rest) => {
            let gt = lex::find_byte(b'>', rest).ok_or(ValueError::Syntax)?;
            Parts {
                display,
                uri_bytes: &rest[1..gt],
                bracketed: true,
                params_raw: lex::trim_start_lws(&rest[gt + 1..]),
            }
        }
        None => {
            let semi = lex::find_byte(b';', s).unwrap_or(s.len());
            Parts {
                display: None,
                uri_bytes: lex::trim_end_lws(&s[..semi]),
                bracketed: false,
                params_raw: &s[semi..],
            }
        }
    })
}

/// The `tag` parameter of a From/To value, checking the parameters but not the URI: the
/// cheap path for matching. [`NameAddr::parse`] checks everything.
pub(crate) fn tag_param(value: &[u8]) -> Result<Option<&[u8]>, ValueError> {
    match plain_tag(value) {
        Some(tag) => Ok(tag),
        None => tag_by_lexer(value),
    }
}

/// [`tag_param`] for every shape: the name-addr split, then the parameter lexer.
fn tag_by_lexer(value: &[u8]) -> Result<Option<&[u8]>, ValueError> {
    let parts = split(value)?;
    let mut tag = None;
    Params::parse_visit(parts.params_raw, ParamKind::Header, |name, value| {
        if tag.is_none() && name.eq_ignore_ascii_case(b"tag") {
            tag = Some(value);
        }
        Ok(())
    })?;
    Ok(tag.flatten())
}

/// [`tag_param`] in one pass for the two shapes nearly every From and To has on the wire,
/// `<uri>` and `<uri>;tag=token`; `None` for anything else (display names, other
/// parameters, white space), which [`split`] and the parameter lexer then read. Where it
/// answers, it answers as they do.
fn plain_tag(value: &[u8]) -> Option<Option<&[u8]>> {
    let rest = value.strip_prefix(b"<")?;
    let gt = lex::find_byte(b'>', rest)?;
    let params = &rest[gt + 1..];
    if params.is_empty() {
        return Some(None);
    }
    let tag = params.strip_prefix(b";")?;
    if tag.len() < 5 || !tag[..4].eq_ignore_ascii_case(b"tag=") {
        return None;
    }
    let tag = &tag[4..];
    tag.iter()
        .all(|&b| lex::is_token_char(b))
        .then_some(Some(tag))
}

/// See [`super::fuzzing::assert_fast_paths_agree`]; true when the one-pass reader answered.
pub(super) fn assert_plain_agrees(value: &[u8]) -> bool {
    super::fuzzing::agrees("name-addr", value, NameAddr::parse_plain(value), || {
        NameAddr::parse_any(value)
    })
}

/// `token[=token]` parameters separated by `;`, without white space (the text after the
/// first `;`): a form the parameter lexer accepts as it is.
fn plain_params(raw: &[u8]) -> bool {
    let n = raw.len();
    let mut i = 0;
    loop {
        let name_start = i;
        while i < n && lex::is_token_char(raw[i]) {
            i += 1;
        }
        if i == name_start {
            return false;
        }
        if i < n && raw[i] == b'=' {
            i += 1;
            let value_start = i;
            while i < n && lex::is_token_char(raw[i]) {
                i += 1;
            }
            if i == value_start {
                return false;
            }
        }
        match raw.get(i) {
            None => return true,
            Some(b';') => i += 1,
            Some(_) => return false,
        }
    }
}

/// The URI of one name-addr or addr-spec value as written, without parsing it (`None` for
/// `*` and for a value whose brackets or quotes do not close). For values the message
/// checks have already validated.
pub(crate) fn uri_of(value: &[u8]) -> Option<&[u8]> {
    let parts = split(value).ok()?;
    (parts.uri_bytes != b"*").then_some(parts.uri_bytes)
}

impl<'a> NameAddr<'a> {
    /// Parses one value (one element of a list header).
    pub fn parse(value: &'a [u8]) -> Result<NameAddr<'a>, ValueError> {
        if let Some(plain) = Self::parse_plain(value) {
            return Ok(plain);
        }
        Self::parse_any(value)
    }

    /// One pass over the shape nearly every name-addr on the wire has: `<`, a plain SIP URI
    /// ([`Uri::parse_plain`]), `>`, then nothing or `;token[=token]` parameters, with no
    /// white space. `None` for anything else (display names, quoted values, LWS), which
    /// [`NameAddr::parse_any`] reads; where this answers, it answers as that does.
    fn parse_plain(value: &'a [u8]) -> Option<NameAddr<'a>> {
        let rest = value.strip_prefix(b"<")?;
        let gt = lex::find_byte(b'>', rest)?;
        let uri_bytes = &rest[..gt];
        let uri = Uri::parse_plain(uri_bytes)?;
        let after = &rest[gt + 1..];
        let params = match after.split_first() {
            None => Params::default(),
            Some((b';', raw)) if plain_params(raw) => Params::from_checked(raw, ParamKind::Header),
            Some(_) => return None,
        };
        Some(NameAddr {
            display: None,
            uri_bytes,
            uri,
            bracketed: true,
            params,
        })
    }

    /// Every form: the name-addr split, the URI parser, the parameter lexer.
    fn parse_any(value: &'a [u8]) -> Result<NameAddr<'a>, ValueError> {
        let parts = split(value)?;
        let uri = Uri::parse(parts.uri_bytes).map_err(ValueError::Uri)?;
        if !parts.bracketed
            && let Uri::Sip(u) = &uri
            && u.headers.is_some()
        {
            return Err(ValueError::Syntax);
        }
        Ok(NameAddr {
            display: parts.display,
            uri_bytes: parts.uri_bytes,
            uri,
            bracketed: parts.bracketed,
            params: Params::parse(parts.params_raw, ParamKind::Header)?,
        })
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.params.get("tag").flatten()
    }
}

/// One Contact value: `*` or an address with `expires` and `q`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *` (REGISTER removing all bindings).
    Star,
    /// An address.
    Addr(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// Parses one Contact value, checking `expires` and `q` when present.
    pub fn parse(value: &'a [u8]) -> Result<Contact<'a>, ValueError> {
        if lex::trim_lws(value) == b"*" {
            return Ok(Contact::Star);
        }
        let addr = NameAddr::parse(value)?;
        let c = Contact::Addr(addr);
        c.expires()?;
        c.q()?;
        Ok(c)
    }

    /// The address, unless this is `*`.
    pub fn addr(&self) -> Option<&NameAddr<'a>> {
        match self {
            Contact::Star => None,
            Contact::Addr(a) => Some(a),
        }
    }

    /// The `expires` parameter in seconds (delta-seconds, at most 2^32-1).
    pub fn expires(&self) -> Result<Option<u32>, ValueError> {
        let Some(v) = self.addr().and_then(|a| a.params.get("expires")) else {
            return Ok(None);
        };
        let v = v.ok_or(ValueError::InvalidParam)?;
        Ok(Some(lex::parse_decimal(v, u64::from(u32::MAX))? as u32))
    }

    /// The `q` parameter in thousandths (`q=0.7` is 700), from 0 to 1000.
    pub fn q(&self) -> Result<Option<u16>, ValueError> {
        let Some(v) = self.addr().and_then(|a| a.params.get("q")) else {
            return Ok(None);
        };
        let v = v.ok_or(ValueError::InvalidParam)?;
        parse_qvalue(v).map(Some)
    }
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in thousandths.
fn parse_qvalue(v: &[u8]) -> Result<u16, ValueError> {
    let (int, frac) = match lex::find_byte(b'.', v) {
        Some(d) => (&v[..d], &v[d + 1..]),
        None => (v, &v[v.len()..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return Err(ValueError::InvalidParam);
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Ok(thousandths),
        b"1" if thousandths == 0 => Ok(1000),
        _ => Err(ValueError::InvalidParam),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_of_finds_the_uri_without_parsing_it() {
        assert_eq!(
            uri_of(b"\"A, B\" <sip:a@b;lr>;expires=3"),
            Some(&b"sip:a@b;lr"[..])
        );
        assert_eq!(uri_of(b"sip:a@b;expires=3"), Some(&b"sip:a@b"[..]));
        assert_eq!(uri_of(b" * "), None);
        assert_eq!(uri_of(b"<sip:a@b"), None);
    }

    #[test]
    fn the_plain_tag_shapes_agree_with_the_full_lexer() {
        let plain: &[&[u8]] = &[
            b"<sip:alice@127.0.0.1:5070>;tag=a6c85cf",
            b"<sip:bob@example.com>",
            b"<sip:x@y;lr>;TAG=z9-._!%*+`'~",
        ];
        for v in plain {
            assert!(plain_tag(v).is_some(), "{v:?}");
            assert_eq!(Ok(plain_tag(v).flatten()), tag_by_lexer(v), "{v:?}");
        }
        let other: &[&[u8]] = &[
            b"\"A\" <sip:a@b>;tag=1",
            b"<sip:a@b> ;tag=1",
            b"<sip:a@b>;tag=1;x=2",
            b"<sip:a@b>;tag=\"q\"",
            b"<sip:a@b>;tag",
            b"<sip:a@b>;tag=",
            b"sip:a@b;tag=1",
            b"<sip:a@b",
        ];
        for v in other {
            assert_eq!(plain_tag(v), None, "{:?}", String::from_utf8_lossy(v));
        }
        let seeds: &[&[u8]] = &[b"<sip:alice@127.0.0.1:5070>;tag=a6c85cf", b"<sip:b@c>"];
        let alphabet = b"<>;=tagTAG\" ,:@1";
        for v in crate::message::mutations::mutated(seeds, alphabet, 20_000) {
            if let Some(fast) = plain_tag(&v) {
                assert_eq!(
                    Ok(fast),
                    tag_by_lexer(&v),
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }

    #[test]
    fn the_plain_name_addr_agrees_with_the_general_reader() {
        let plain: &[&[u8]] = &[
            b"<sip:alice@127.0.0.1:5070>;tag=a6c85cf",
            b"<sip:bob@example.com>",
            b"<SIPS:x@y;lr>;TAG=z9-._!%*+`'~;expires=30;lr",
            b"<sip:p1.example.com;lr>",
        ];
        for v in plain {
            assert!(assert_plain_agrees(v), "{v:?}");
        }
        let other: &[&[u8]] = &[
            b"\"A\" <sip:a@b>;tag=1",
            b"<sip:a@b> ;tag=1",
            b"<sip:a@b>;tag=\"q\"",
            b"<sip:a@b>;;",
            b"<sip:a@b>;",
            b"<sip:a@b>;tag=",
            b"<tel:+1234>",
            b"<sip:%61@b>",
            b"sip:a@b;tag=1",
            b"<sip:a@b",
        ];
        for v in other {
            assert_eq!(
                NameAddr::parse_plain(v),
                None,
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
        let seeds: &[&[u8]] = &[
            b"<sip:alice@127.0.0.1:5070>;tag=a6c85cf",
            b"<sips:b@c.example.com;transport=tcp>;expires=5;lr",
        ];
        let alphabet = b"<>;=:@.tagTAG\" ,[]1%";
        crate::message::mutations::assert_agreement(seeds, alphabet, assert_plain_agrees);
    }

    #[test]
    fn forms_of_name_addr() {
        let a = NameAddr::parse(br#""Bell, Alexander" <sip:a.g.bell@example.com>;tag=43"#).unwrap();
        assert_eq!(a.display, Some(&b"Bell, Alexander"[..]));
        assert_eq!(a.tag(), Some(&b"43"[..]));
        let b = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(b.display, Some(&b"caller"[..]));
        let c = NameAddr::parse(b"sip:caller@example.net ;tag=9").unwrap();
        assert!(!c.bracketed);
        assert_eq!(c.tag(), Some(&b"9"[..]));
    }

    #[test]
    fn malformed_name_addr() {
        assert!(NameAddr::parse(b"Bell, Alexander <sip:a@b>").is_err());
        assert!(NameAddr::parse(br#""Watson" < sip:t@example.org >"#).is_err());
        assert!(NameAddr::parse(br#""Mr. J. User <sip:j@example.com>"#).is_err());
        assert!(NameAddr::parse(b"sip:user@example.com?Route=%3Csip:x%3E").is_err());
        assert!(NameAddr::parse(br#""Joe" <sip:joe@example.org>;;;;"#).is_err());
    }

    #[test]
    fn contact_params() {
        let c = Contact::parse(b"<sip:u@h>;expires=3600;q=0.7").unwrap();
        assert_eq!(c.expires(), Ok(Some(3600)));
        assert_eq!(c.q(), Ok(Some(700)));
        assert_eq!(Contact::parse(b" * "), Ok(Contact::Star));
        assert_eq!(
            Contact::parse(b"<sip:u@h>;expires=280297596632815"),
            Err(ValueError::OutOfRange)
        );
        assert!(Contact::parse(b"<sip:u@h>;q=1.5").is_err());
    }
}
