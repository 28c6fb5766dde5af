//! URIs: SIP and SIPS URIs parsed into their parts (RFC 3261 §19.1), and every other scheme
//! (tel:, http:, anything) kept as an absolute URI so that the dialog layer can answer 416.
//!
//! Parts are slices of the datagram as written: escapes (`%41`) are not decoded, so two URIs
//! that differ only in escaping compare unequal here; §19.1.4 comparison belongs to callers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::UriError;
use super::lex::{self, ParamKind, Params, UriPart};

/// A parsed URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// Any other scheme, kept whole.
    Absolute(AbsoluteUri<'a>),
}

/// A `sip:`/`sips:` URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// True for `sips:`.
    pub secure: bool,
    /// The user part, escapes kept.
    pub user: Option<&'a [u8]>,
    /// The password, escapes kept.
    pub password: Option<&'a [u8]>,
    /// The host.
    pub host: Host<'a>,
    /// The port, when written.
    pub port: Option<u16>,
    /// URI parameters (`;transport=udp;lr`).
    pub params: Params<'a>,
    /// The `?name=value&…` part without its `?`, when present.
    pub headers: Option<&'a [u8]>,
}

impl<'a> SipUri<'a> {
    /// The value of the URI header `name` (`?Replaces=…&Require=replaces`, RFC 3261
    /// §19.1.1), escapes decoded: how a Refer-To carries the headers of the request it asks
    /// for (RFC 3515 §2.1). Names compare case-insensitively; `None` when absent.
    pub fn header(&self, name: &str) -> Option<std::borrow::Cow<'a, [u8]>> {
        let headers = self.headers?;
        headers.split(|&b| b == b'&').find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=').unwrap_or(pair.len());
            lex::unescape(&pair[..eq])
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| lex::unescape(pair.get(eq + 1..).unwrap_or_default()))
        })
    }
}

/// A URI of a scheme other than sip/sips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbsoluteUri<'a> {
    /// The scheme, as written (`tel`, `http`, `soap.beep`, …).
    pub scheme: &'a [u8],
    /// Everything after the `:`.
    pub rest: &'a [u8],
}

/// A host: a domain name, an IPv4 address or an IPv6 reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    /// A host name as written (case-insensitive).
    Domain(&'a [u8]),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written in brackets in URIs and Via).
    V6(Ipv6Addr),
}

impl Host<'_> {
    /// The address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Domain(_) => None,
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
        }
    }
}

impl<'a> Uri<'a> {
    /// Parses a complete URI (no surrounding white space or angle brackets): the plain SIP
    /// form in one pass, every other form by the general reader.
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, UriError> {
        if let Some(plain) = Self::parse_plain(s) {
            return Ok(plain);
        }
        let colon = lex::find_byte(b':', s).ok_or(UriError::InvalidScheme)?;
        let scheme = &s[..colon];
        if scheme.is_empty()
            || !scheme[0].is_ascii_alphabetic()
            || !scheme.iter().all(|&b| lex::is_scheme_char(b))
        {
            return Err(UriError::InvalidScheme);
        }
        let rest = &s[colon + 1..];
        if scheme.eq_ignore_ascii_case(b"sip") {
            SipUri::parse_any(rest, false).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case(b"sips") {
            SipUri::parse_any(rest, true).map(Uri::Sip)
        } else {
            if rest.is_empty()
                || rest
                    .iter()
                    .any(|&b| b <= b' ' || matches!(b, b'<' | b'>' | b'"' | 0x7f))
            {
                return Err(UriError::InvalidOpaque);
            }
            Ok(Uri::Absolute(AbsoluteUri { scheme, rest }))
        }
    }

    /// [`Uri::parse`] for `sip:` and `sips:` URIs of the plain form
    /// ([`SipUri::parse_plain`]) only; `None` for every other URI, which `parse` reads.
    pub(crate) fn parse_plain(s: &'a [u8]) -> Option<Uri<'a>> {
        let (rest, secure) = if s.len() > 4 && s[..4].eq_ignore_ascii_case(b"sip:") {
            (&s[4..], false)
        } else if s.len() > 5 && s[..5].eq_ignore_ascii_case(b"sips:") {
            (&s[5..], true)
        } else {
            return None;
        };
        SipUri::parse_plain(rest, secure).map(Uri::Sip)
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Absolute(_) => None,
        }
    }

    /// True for sip: and sips: URIs.
    pub fn is_sip(&self) -> bool {
        matches!(self, Uri::Sip(_))
    }
}

/// See [`super::fuzzing::assert_fast_paths_agree`]; true when the one-pass reader answered.
pub(super) fn assert_plain_agrees(value: &[u8]) -> bool {
    super::fuzzing::agrees("URI", value, Uri::parse_plain(value), || {
        // `parse_plain` answers only after "sip:" or "sips:", in either case.
        let secure = value[3] == b's' || value[3] == b'S';
        let rest = &value[if secure { 5 } else { 4 }..];
        SipUri::parse_any(rest, secure).map(Uri::Sip)
    })
}

impl<'a> SipUri<'a> {
    /// One pass over the plain form nearly every SIP URI on the wire has: an optional user of
    /// unreserved characters and `@`, a host name or IPv4 address, an optional port, then
    /// nothing or `;parameters`. `None` for anything else (escapes, passwords, IPv6,
    /// headers, a `@` further on), which [`SipUri::parse_any`] reads; where this answers, it
    /// answers as that does.
    fn parse_plain(s: &'a [u8], secure: bool) -> Option<SipUri<'a>> {
        let n = s.len();
        let mut i = 0;
        while i < n && lex::is_unreserved(s[i]) {
            i += 1;
        }
        // The user ends at the first '@'; all before it is unreserved, so this is that '@'.
        let (user, host_start) = match s.get(i) {
            Some(b'@') if i > 0 => (Some(&s[..i]), i + 1),
            _ => (None, 0),
        };
        let mut j = host_start;
        while j < n && lex::is_plain_host_char(s[j]) {
            j += 1;
        }
        if j == host_start {
            return None;
        }
        let host = parse_host(&s[host_start..j]).ok()?;
        let (port, j) = lex::plain_port(s, j)?;
        let after = &s[j..];
        // Headers, or a '@' the general reader would take as the end of a user part.
        if !after.is_empty()
            && (after[0] != b';'
                || lex::find_byte(b'?', after).is_some()
                || (user.is_none() && lex::find_byte(b'@', after).is_some()))
        {
            return None;
        }
        Some(SipUri {
            secure,
            user,
            password: None,
            host,
            port,
            params: Params::parse(after, ParamKind::Uri).ok()?,
            headers: None,
        })
    }

    /// Every form of RFC 3261 §19.1.1 after the scheme.
    fn parse_any(s: &'a [u8], secure: bool) -> Result<SipUri<'a>, UriError> {
        // '@' cannot appear unescaped in host, params or headers, so the first one ends
        // the userinfo (whose user part may itself hold ';' and '?', RFC 4475 §3.1.1.9).
        let (user, password, rest) = match lex::find_byte(b'@', s) {
            Some(at) => {
                let userinfo = &s[..at];
                let (user, password) = match lex::find_byte(b':', userinfo) {
                    Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                    None => (userinfo, None),
                };
                if user.is_empty() || !lex::check_uri_chars(user, UriPart::User) {
                    return Err(UriError::InvalidUser);
                }
                if let Some(p) = password
                    && !lex::check_uri_chars(p, UriPart::Password)
                {
                    return Err(UriError::InvalidPassword);
                }
                (Some(user), password, &s[at + 1..])
            }
            None => (None, None, s),
        };
        let (hostport, after) = match rest.iter().position(|&b| b == b';' || b == b'?') {
            Some(p) => (&rest[..p], &rest[p..]),
            None => (rest, &rest[rest.len()..]),
        };
        let (host, port) = parse_hostport(hostport)?;
        let (params_raw, headers) = match lex::find_byte(b'?', after) {
            Some(q) => (&after[..q], Some(&after[q + 1..])),
            None => (after, None),
        };
        let params =
            Params::parse(params_raw, ParamKind::Uri).map_err(|_| UriError::InvalidParam)?;
        if let Some(h) = headers {
            check_uri_headers(h)?;
        }
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// `transport` parameter.
    pub fn transport(&self) -> Option<&'a [u8]> {
        self.params.get("transport").flatten()
    }

    /// True when the `lr` parameter is present (a loose router, RFC 3261 §16.12.1.1).
    pub fn lr(&self) -> bool {
        self.params.contains("lr")
    }

    /// `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.params.get("maddr").flatten()
    }

    /// `user` parameter (`phone`, `ip`, …).
    pub fn user_param(&self) -> Option<&'a [u8]> {
        self.params.get("user").flatten()
    }

    /// `method` parameter.
    pub fn method_param(&self) -> Option<&'a [u8]> {
        self.params.get("method").flatten()
    }

    /// `ttl` parameter, when it is a number from 0 to 255.
    pub fn ttl(&self) -> Option<u8> {
        let v = self.params.get("ttl").flatten()?;
        lex::parse_decimal(v, 255).ok().map(|v| v as u8)
    }
}

fn check_uri_headers(h: &[u8]) -> Result<(), UriError> {
    // headers = hname "=" hvalue *( "&" hname "=" hvalue ); hvalue may be empty.
    for pair in h.split(|&b| b == b'&') {
        let eq = lex::find_byte(b'=', pair).ok_or(UriError::InvalidHeaders)?;
        let (name, value) = (&pair[..eq], &pair[eq + 1..]);
        if name.is_empty()
            || !lex::check_uri_chars(name, UriPart::Header)
            || !lex::check_uri_chars(value, UriPart::Header)
        {
            return Err(UriError::InvalidHeaders);
        }
    }
    Ok(())
}

/// Splits `host[:port]` and parses both parts.
pub(crate) fn parse_hostport(s: &[u8]) -> Result<(Host<'_>, Option<u16>), UriError> {
    let (host, port) = if s.first() == Some(&b'[') {
        let close = lex::find_byte(b']', s).ok_or(UriError::InvalidHost)?;
        let after = &s[close + 1..];
        let port = match after {
            [] => None,
            [b':', digits @ ..] => Some(digits),
            _ => return Err(UriError::InvalidHost),
        };
        (&s[..=close], port)
    } else {
        match lex::find_byte(b':', s) {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    let host = parse_host(host)?;
    let port = match port {
        Some(p) => Some(
            lex::parse_decimal(p, u64::from(u16::MAX)).map_err(|_| UriError::InvalidPort)? as u16,
        ),
        None => None,
    };
    Ok((host, port))
}

/// Parses a host exactly as written: `[IPv6]`, dotted IPv4, or a host name.
pub(crate) fn parse_host(s: &[u8]) -> Result<Host<'_>, UriError> {
    if s.is_empty() {
        return Err(UriError::InvalidHost);
    }
    if s[0] == b'[' {
        if s.len() < 3 || s[s.len() - 1] != b']' {
            return Err(UriError::InvalidHost);
        }
        return parse_ipv6(&s[1..s.len() - 1]).map(Host::V6);
    }
    // Digits and dots only: an IPv4 address or nothing (a top label starts with a letter).
    if s[0].is_ascii_digit() {
        if let Some(v4) = parse_ipv4(s) {
            return Ok(Host::V4(v4));
        }
        if s.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
            return Err(UriError::InvalidHost);
        }
    } else if s[0] == b'.' {
        return Err(UriError::InvalidHost);
    }
    // hostname = *( domainlabel "." ) toplabel [ "." ]: labels are non-empty.
    let name = s.strip_suffix(b".").unwrap_or(s);
    let mut prev_dot = true; // an empty first label is an error too
    for &b in name {
        if b == b'.' {
            if prev_dot {
                return Err(UriError::InvalidHost);
            }
            prev_dot = true;
        } else if lex::is_host_char(b) {
            prev_dot = false;
        } else {
            return Err(UriError::InvalidHost);
        }
    }
    if prev_dot {
        return Err(UriError::InvalidHost);
    }
    Ok(Host::Domain(s))
}

/// Dotted-decimal IPv4: four numbers 0-255 of one to three digits, in one pass, an octet
/// at a time.
pub(crate) fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u16;
        while let Some(&d) = s.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start == 3 {
                return None;
            }
            value = value * 10 + u16::from(d - b'0');
            i += 1;
        }
        if i == start || value > 255 {
            return None;
        }
        *octet = value as u8;
    }
    (i == s.len()).then(|| Ipv4Addr::from(octets))
}

/// The byte-at-a-time reader [`parse_ipv4`] replaced, kept to test it against.
#[cfg(test)]
fn parse_ipv4_bytewise(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let (mut idx, mut value, mut digits) = (0usize, 0u16, 0u8);
    for &b in s {
        match b {
            b'0'..=b'9' => {
                value = value * 10 + u16::from(b - b'0');
                digits += 1;
                if digits > 3 || value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && idx < 3 => {
                octets[idx] = value as u8;
                idx += 1;
                (value, digits) = (0, 0);
            }
            _ => return None,
        }
    }
    if idx != 3 || digits == 0 {
        return None;
    }
    octets[3] = value as u8;
    Some(Ipv4Addr::from(octets))
}

/// Parses the text of an IPv6 address (no brackets). Rejects what RFC 5118 §4.10 shows the
/// RFC 3261 ABNF admits by mistake (`2001:db8:::192.0.2.1`).
pub(crate) fn parse_ipv6(s: &[u8]) -> Result<Ipv6Addr, UriError> {
    let text = std::str::from_utf8(s).map_err(|_| UriError::InvalidHost)?;
    text.parse::<Ipv6Addr>().map_err(|_| UriError::InvalidHost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_headers_are_read_decoded() {
        let raw = b"sip:carol@h?Replaces=a%40h%3Bto-tag%3D1%3Bfrom-tag%3D2&require=replaces";
        let Ok(Uri::Sip(uri)) = Uri::parse(raw) else {
            panic!("a SIP URI")
        };
        assert_eq!(
            uri.header("replaces").as_deref(),
            Some(&b"a@h;to-tag=1;from-tag=2"[..])
        );
        assert_eq!(uri.header("Require").as_deref(), Some(&b"replaces"[..]));
        assert_eq!(uri.header("Subject"), None);
        let Ok(Uri::Sip(bare)) = Uri::parse(b"sip:carol@h") else {
            panic!("a SIP URI")
        };
        assert_eq!(bare.header("Replaces"), None);
    }

    #[test]
    fn ipv4_octet_reader_agrees_with_the_bytewise_one() {
        for v in [
            &b"127.0.0.1"[..],
            b"255.255.255.255",
            b"0.0.0.0",
            b"01.002.3.4",
        ] {
            assert!(parse_ipv4(v).is_some(), "{v:?}");
            assert_eq!(parse_ipv4(v), parse_ipv4_bytewise(v), "{v:?}");
        }
        for v in [
            &b"256.0.0.1"[..],
            b"1.2.3",
            b"1.2.3.4.",
            b"1..2.3",
            b"1234.1.1.1",
            b".1.2.3",
        ] {
            assert_eq!(parse_ipv4(v), None, "{v:?}");
        }
        let seeds: &[&[u8]] = &[b"192.0.2.4", b"10.255.0.99", b"1.1.1.1"];
        let mut some = 0;
        for v in crate::message::mutations::mutated(seeds, b"0123456789.a", 20_000) {
            let fast = parse_ipv4(&v);
            assert_eq!(
                fast,
                parse_ipv4_bytewise(&v),
                "{:?}",
                String::from_utf8_lossy(&v)
            );
            some += usize::from(fast.is_some());
        }
        assert!(
            some > 2_000,
            "the mutations hardly reach an address: {some}"
        );
    }

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s.as_bytes()) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn the_plain_form_agrees_with_the_general_reader() {
        let plain: &[&[u8]] = &[
            b"alice@127.0.0.1:5070",
            b"bob@biloxi.example.com",
            b"alice@client.atlanta.example.com;transport=udp",
            b"ss1.atlanta.example.com;lr",
            b"192.0.2.4",
            b"a.b-c_d!~*'()@host.:0",
            b"x@h;maddr=239.255.255.1;ttl=15",
        ];
        for s in plain {
            let fast = SipUri::parse_plain(s, false).expect("plain form");
            assert_eq!(Ok(fast), SipUri::parse_any(s, false), "{s:?}");
        }
        let other: &[&[u8]] = &[
            b"alice:secret@host",
            b"al%20ice@host",
            b"user;par=u%40example.net@example.com",
            b"[2001:db8::1]:5060",
            b"host?subject=x",
            b"host;lr@x",
            b"@host",
            b"host:",
            b"host:123456",
            b"host_name",
        ];
        for s in other {
            assert_eq!(
                SipUri::parse_plain(s, false),
                None,
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
        let seeds: &[&[u8]] = &[
            b"alice@127.0.0.1:5070;transport=udp",
            b"ss1.example.com;lr",
            b"bob@biloxi.example.com",
        ];
        let alphabet = b"@:;=?%.-_[]1a";
        for s in crate::message::mutations::mutated(seeds, alphabet, 20_000) {
            if let Some(fast) = SipUri::parse_plain(&s, true) {
                assert_eq!(
                    Ok(fast),
                    SipUri::parse_any(&s, true),
                    "{:?}",
                    String::from_utf8_lossy(&s)
                );
            }
        }
    }

    #[test]
    fn full_sip_uri() {
        let u = sip("sips:alice:secret@atlanta.com:5061;transport=tcp;lr?subject=project");
        assert!(u.secure);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.password, Some(&b"secret"[..]));
        assert_eq!(u.host, Host::Domain(b"atlanta.com"));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some(&b"tcp"[..]));
        assert!(u.lr());
        assert_eq!(u.headers, Some(&b"subject=project"[..]));
    }

    #[test]
    fn user_part_may_hold_semicolons() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, Host::Domain(b"example.com"));
        assert!(u.params.is_empty());
    }

    #[test]
    fn ipv6_references() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host, Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5070));
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.port, None);
        assert_eq!(Uri::parse(b"sip:2001:db8::10"), Err(UriError::InvalidHost));
        assert_eq!(
            Uri::parse(b"sip:user@[2001:db8:::192.0.2.1]"),
            Err(UriError::InvalidHost)
        );
        assert!(Uri::parse(b"sip:user@[2001:db8::192.0.2.1]").is_ok());
    }

    #[test]
    fn other_schemes_are_absolute() {
        match Uri::parse(b"soap.beep://192.0.2.103:3002").unwrap() {
            Uri::Absolute(a) => assert_eq!(a.scheme, b"soap.beep"),
            u => panic!("{u:?}"),
        }
        assert!(matches!(
            Uri::parse(b"tel:+1-555-0100"),
            Ok(Uri::Absolute(_))
        ));
        assert_eq!(Uri::parse(b"<sip:a@b>"), Err(UriError::InvalidScheme));
        assert_eq!(Uri::parse(b"sip:a@b c"), Err(UriError::InvalidHost));
    }

    #[test]
    fn bad_ports_and_hosts() {
        assert_eq!(Uri::parse(b"sip:a@b:65536"), Err(UriError::InvalidPort));
        assert_eq!(Uri::parse(b"sip:a@b..c"), Err(UriError::InvalidHost));
        assert_eq!(Uri::parse(b"sip:a@1.2.3.256"), Err(UriError::InvalidHost));
        assert_eq!(Uri::parse(b"sip:a@1.2.3"), Err(UriError::InvalidHost));
        assert_eq!(Uri::parse(b"sip:a@1.2.3.4.5"), Err(UriError::InvalidHost));
        assert_eq!(Uri::parse(b"sip:a@.b"), Err(UriError::InvalidHost));
        assert!(matches!(Uri::parse(b"sip:a@b.c."), Ok(Uri::Sip(_))));
        assert_eq!(
            parse_ipv4(b"192.0.2.255"),
            Some(Ipv4Addr::new(192, 0, 2, 255))
        );
        assert_eq!(Uri::parse(b"sip:a@b;;"), Err(UriError::InvalidParam));
    }
}
