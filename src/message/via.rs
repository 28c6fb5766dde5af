//! Via values (RFC 3261 §20.42, §18.2.1, RFC 3581 rport, RFC 5118 §4.5 received).

use std::net::IpAddr;

use super::access::ListValues;
use super::error::{ParseError, ValueError};
use super::header::HeaderName;
use super::lex::{self, ParamKind, Params};
use super::uri::{self, Host};

/// The RFC 3261 branch prefix that marks a globally unique transaction id.
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// One Via value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name and version as written (`SIP` and `2.0`).
    pub protocol: (&'a [u8], &'a [u8]),
    /// Transport as written (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, or any token).
    pub transport: &'a [u8],
    /// sent-by host as written (brackets kept for IPv6); see [`Via::host`].
    pub host_bytes: &'a [u8],
    /// sent-by port, when written.
    pub port: Option<u16>,
    /// Via parameters.
    pub params: Params<'a>,
    /// The branch, found while the parameters were checked.
    branch: Option<&'a [u8]>,
}

impl<'a> Via<'a> {
    /// Parses one Via value (one element of the comma-separated list).
    pub fn parse(value: &'a [u8]) -> Result<Via<'a>, ValueError> {
        match Self::parse_plain(value) {
            Some(via) => Ok(via),
            None => Self::parse_any(value),
        }
    }

    /// The plain form of [`scan_plain`] whose parameters need no check of their value
    /// beyond `rport`'s port (no `received`, `maddr` or `ttl`), read in that one pass plus a
    /// look at the host. `None` for anything else, which
    /// [`Via::parse_any`] reads; where this answers, it answers as that does.
    fn parse_plain(value: &'a [u8]) -> Option<Via<'a>> {
        let plain = scan_plain(value)?;
        if plain.top.end != value.len() || !plain_is_valid(&plain) {
            return None;
        }
        let key = plain.top.key;
        // `scan_plain` read "SIP/2.0/", a transport token and one space before the host.
        let host_at = key.host.as_ptr() as usize - value.as_ptr() as usize;
        let params = value.get(plain.params_at + 1..).unwrap_or_default();
        Some(Via {
            protocol: (&value[..3], &value[4..7]),
            transport: &value[8..host_at - 1],
            host_bytes: key.host,
            port: key.port,
            params: Params::from_checked(params, ParamKind::Via),
            branch: key.branch,
        })
    }

    /// Every form: LWS anywhere it may be, IPv6 sent-by, quoted parameter values.
    fn parse_any(value: &'a [u8]) -> Result<Via<'a>, ValueError> {
        let s = lex::trim_lws(value);
        let (name, version, s) = match s.get(..8) {
            // The usual form, without LWS inside sent-protocol.
            Some(p) if p.eq_ignore_ascii_case(b"SIP/2.0/") => (&s[..3], &s[4..7], &s[8..]),
            _ => {
                let (name, s) = take_token(s)?;
                let s = expect_slash(s)?;
                let (version, s) = take_token(s)?;
                (name, version, expect_slash(s)?)
            }
        };
        let (transport, s) = take_token(s)?;
        let trimmed = lex::trim_start_lws(s);
        if trimmed.len() == s.len() {
            return Err(ValueError::Syntax); // LWS between sent-protocol and sent-by
        }
        let s = trimmed;
        let semi = lex::find_byte(b';', s).unwrap_or(s.len());
        // COLON = SWS ":" SWS would allow `host : port`; such a rare sent-by is rejected
        // rather than rebuilt, because views are zero-copy.
        let sent_by = lex::trim_end_lws(&s[..semi]);
        // The parsed host is not kept: a `Host` (address bytes unaligned after its tag)
        // copied out of here cost a store-forwarding stall; `host()` re-reads host_bytes.
        let (_, port) = uri::parse_hostport(sent_by).map_err(ValueError::Uri)?;
        let host_len = match port {
            Some(_) => sent_by
                .iter()
                .rposition(|&b| b == b':')
                .unwrap_or(sent_by.len()),
            None => sent_by.len(),
        };
        let mut branch = None;
        let params = Params::parse_visit(&s[semi..], ParamKind::Via, |name, value| {
            check_param(name, value, &mut branch)
        })?;
        Ok(Via {
            protocol: (name, version),
            transport,
            host_bytes: &sent_by[..host_len],
            port,
            params,
            branch,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.branch
    }

    /// The sent-by host (checked when the Via was parsed).
    pub fn host(&self) -> Host<'a> {
        uri::parse_host(self.host_bytes).unwrap_or(Host::Domain(self.host_bytes))
    }

    /// True when the branch starts with the magic cookie and has something after it, so
    /// that RFC 3261 §17.2.3 matching applies (RFC 4475 §3.2.1: the bare cookie does not).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    /// The `received` parameter (IPv4, or IPv6 with or without brackets).
    pub fn received(&self) -> Option<IpAddr> {
        self.params
            .get("received")
            .flatten()
            .and_then(parse_received)
    }

    /// `rport`: `None` when absent, `Some(None)` when present without a value (a request
    /// for symmetric response routing, RFC 3581), `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| {
            v.and_then(|v| {
                lex::parse_decimal(v, u64::from(u16::MAX))
                    .ok()
                    .map(|p| p as u16)
            })
        })
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.params.get("maddr").flatten()
    }

    /// The `ttl` parameter.
    pub fn ttl(&self) -> Option<u8> {
        let v = self.params.get("ttl").flatten()?;
        lex::parse_decimal(v, 255).ok().map(|v| v as u8)
    }
}

/// What a transaction is matched and answered by in the top Via (§17.2.3, §18.2.2, RFC 3581):
/// the branch, the sent-by and whether `rport` was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViaKey<'a> {
    /// The first `branch` parameter.
    pub branch: Option<&'a [u8]>,
    /// sent-by host as written.
    pub host: &'a [u8],
    /// sent-by port, when written.
    pub port: Option<u16>,
    /// True when an `rport` parameter is present (with or without a value).
    pub rport: bool,
}

impl ViaKey<'_> {
    /// See [`Via::has_rfc3261_branch`].
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }
}

impl<'a> From<&Via<'a>> for ViaKey<'a> {
    fn from(via: &Via<'a>) -> Self {
        ViaKey {
            branch: via.branch(),
            host: via.host_bytes,
            port: via.port,
            rport: via.rport().is_some(),
        }
    }
}

/// What transactions and responses need of a plain first Via value (see [`scan_plain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopVia<'a> {
    /// Branch, sent-by and rport.
    pub key: ViaKey<'a>,
    /// Where the first value ends in the line: its length, or the position of the comma.
    pub end: usize,
    /// Just after the name of a valueless `rport` (RFC 3581: to be filled in), if any.
    pub bare_rport_end: Option<usize>,
    /// True when a `received` parameter is present.
    pub has_received: bool,
}

/// What one pass over a plain first Via value finds: the [`TopVia`], and the parameter
/// details [`Via::parse`] needs besides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlainVia<'a> {
    /// What transactions and responses use.
    pub top: TopVia<'a>,
    /// Where the parameters start in the line (at their first `;`), or `top.end`.
    pub params_at: usize,
    /// True when a `ttl` or `maddr` parameter is present (values this scan does not check).
    pub has_ttl_or_maddr: bool,
    /// The value of `rport`, when it has one (not checked to be a port here).
    pub rport_value: Option<&'a [u8]>,
}

/// A [`TopVia`] kept in a parsed message, as 16-bit offsets into the first Via line: the
/// parser scans the top Via once, and the transaction key, the response's Via and the
/// checks read it from here. `None` (see [`TopViaScan::of`]) when the line is not of the
/// plain form or is longer than 64 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopViaScan {
    branch: (u16, u16),
    host: (u16, u16),
    end: u16,
    /// 0 for none (a bare `rport` never ends at 0).
    bare_rport_end: u16,
    port: u16,
    flags: u8,
}

const HAS_BRANCH: u8 = 1;
const HAS_PORT: u8 = 2;
const HAS_RPORT: u8 = 4;
const HAS_RECEIVED: u8 = 8;
/// [`Via::parse`] accepts the first value (no parameter value left to check).
const VALID: u8 = 16;

impl TopViaScan {
    /// Scans the first Via line `line`.
    pub(crate) fn of(line: &[u8]) -> Option<TopViaScan> {
        if line.len() > usize::from(u16::MAX) {
            return None;
        }
        let plain = scan_plain(line)?;
        let valid = plain_is_valid(&plain);
        let plain_top = plain.top;
        let span = |part: &[u8]| {
            let at = part.as_ptr() as usize - line.as_ptr() as usize;
            (at as u16, part.len() as u16)
        };
        let key = plain_top.key;
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        Some(TopViaScan {
            branch: key.branch.map_or((0, 0), span),
            host: span(key.host),
            end: plain_top.end as u16,
            bare_rport_end: plain_top.bare_rport_end.map_or(0, |e| e as u16),
            port: key.port.unwrap_or(0),
            flags: flag(key.branch.is_some(), HAS_BRANCH)
                | flag(key.port.is_some(), HAS_PORT)
                | flag(key.rport, HAS_RPORT)
                | flag(plain_top.has_received, HAS_RECEIVED)
                | flag(valid, VALID),
        })
    }

    /// True when [`Via::parse`] accepts the first value (so the checks need not read it).
    pub(crate) fn is_valid(&self) -> bool {
        self.flags & VALID != 0
    }

    /// The scan again, over the line it was made from.
    pub(crate) fn expand<'a>(&self, line: &'a [u8]) -> TopVia<'a> {
        let part =
            |(at, len): (u16, u16)| &line[usize::from(at)..usize::from(at) + usize::from(len)];
        TopVia {
            key: ViaKey {
                branch: (self.flags & HAS_BRANCH != 0).then(|| part(self.branch)),
                host: part(self.host),
                port: (self.flags & HAS_PORT != 0).then_some(self.port),
                rport: self.flags & HAS_RPORT != 0,
            },
            end: usize::from(self.end),
            bare_rport_end: (self.bare_rport_end != 0).then_some(usize::from(self.bare_rport_end)),
            has_received: self.flags & HAS_RECEIVED != 0,
        }
    }
}

/// The first Via value of `line`, read in one pass when it has the plain form nearly every
/// Via has: `SIP/2.0/<transport> host[:port]` and parameters of token characters without
/// white space, quotes or brackets. `None` for anything else (and when `rport` appears
/// twice), which [`Via::parse`] then reads. Where both read a value they agree; the
/// values of `received`, `ttl` and `maddr` are not checked here: [`Via::parse`] and
/// [`Message::validate`] do that.
///
/// [`Message::validate`]: super::Message::validate
#[inline]
pub(crate) fn scan_plain(line: &[u8]) -> Option<PlainVia<'_>> {
    let n = line.len();
    // "SIP/2.0/" with its three letters in either case, as one word: OR-ing 0x20 into the
    // letter positions maps exactly `S`/`s`, `I`/`i`, `P`/`p` onto the lower-case letter;
    // the other five bytes must match as they are.
    const LETTER_BITS: u64 = u64::from_le_bytes([0x20, 0x20, 0x20, 0, 0, 0, 0, 0]);
    let head = u64::from_le_bytes(line.get(..8)?.try_into().ok()?);
    if n < 10 || head | LETTER_BITS != u64::from_le_bytes(*b"sip/2.0/") {
        return None;
    }
    let mut i = 8;
    while i < n && lex::is_token_char(line[i]) {
        i += 1;
    }
    if i == 8 || line.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let host_start = i;
    while i < n && lex::is_plain_host_char(line[i]) {
        i += 1;
    }
    let host = &line[host_start..i];
    if host.is_empty() || host[0] == b'.' || host[0] == b'-' {
        return None;
    }
    let (port, mut i) = lex::plain_port(line, i)?;
    let params_at = i;
    let (mut branch, mut rport, mut bare_rport_end, mut has_received) = (None, false, None, false);
    let (mut has_ttl_or_maddr, mut rport_value) = (false, None);
    loop {
        match line.get(i) {
            None | Some(b',') => break,
            Some(b';') => i += 1,
            Some(_) => return None,
        }
        let name_start = i;
        while i < n && lex::is_token_char(line[i]) {
            i += 1;
        }
        let (name, name_end) = (&line[name_start..i], i);
        let mut value = None;
        if line.get(i) == Some(&b'=') {
            i += 1;
            let value_start = i;
            while i < n && lex::is_token_char(line[i]) {
                i += 1;
            }
            if i == value_start {
                return None;
            }
            value = Some(&line[value_start..i]);
        }
        match name.len() {
            0 => return None,
            6 if token_is(name, b"branch") => {
                let value = value?; // a bare `branch` is malformed
                branch = branch.or(Some(value));
            }
            5 if token_is(name, b"rport") => {
                if rport {
                    return None;
                }
                rport = true;
                rport_value = value;
                if value.is_none() {
                    bare_rport_end = Some(name_end);
                }
            }
            3 if token_is(name, b"ttl") => has_ttl_or_maddr = true,
            5 if token_is(name, b"maddr") => has_ttl_or_maddr = true,
            8 if token_is(name, b"received") => has_received = true,
            _ => {}
        }
    }
    Some(PlainVia {
        top: TopVia {
            key: ViaKey {
                branch,
                host,
                port,
                rport,
            },
            end: i,
            bare_rport_end,
            has_received,
        },
        params_at,
        has_ttl_or_maddr,
        rport_value,
    })
}

/// See [`super::fuzzing::assert_fast_paths_agree`]; true when the one-pass reader answered.
pub(super) fn assert_plain_agrees(value: &[u8]) -> bool {
    super::fuzzing::agrees("Via", value, Via::parse_plain(value), || {
        Via::parse_any(value)
    })
}

/// Whether [`Via::parse`] accepts the first value `plain` read: its host is one, and no
/// parameter has a value the scan did not check (`received`, `ttl`, `maddr`, a bad `rport`).
fn plain_is_valid(plain: &PlainVia<'_>) -> bool {
    !plain.top.has_received
        && !plain.has_ttl_or_maddr
        && plain
            .rport_value
            .is_none_or(|port| lex::parse_decimal(port, u64::from(u16::MAX)).is_ok())
        && uri::parse_host(plain.top.key.host).is_ok()
}

/// Whether the token `name` is the lower-case word `lower` in any case. OR-ing 0x20 is
/// exact here: among token characters only a letter's two cases land on a lower-case letter.
fn token_is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.iter().zip(lower).all(|(&b, &l)| b | 0x20 == l)
}

/// Checks the value of a parameter RFC 3261 or RFC 3581 defines; remembers the branch.
fn check_param<'a>(
    name: &'a [u8],
    value: Option<&'a [u8]>,
    branch: &mut Option<&'a [u8]>,
) -> Result<(), ValueError> {
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    let ok = match name.len() {
        6 if is(b"branch") => {
            if branch.is_none() {
                *branch = value;
            }
            value.is_some_and(lex::is_token)
        }
        3 if is(b"ttl") => value.is_some_and(|v| lex::parse_decimal(v, 255).is_ok()),
        5 if is(b"maddr") => value.is_some_and(|v| uri::parse_host(v).is_ok()),
        8 if is(b"received") => value.is_some_and(|v| parse_received(v).is_some()),
        5 if is(b"rport") => {
            value.is_none_or(|v| lex::parse_decimal(v, u64::from(u16::MAX)).is_ok())
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(ValueError::InvalidParam)
    }
}

fn parse_received(v: &[u8]) -> Option<IpAddr> {
    let inner = v
        .strip_prefix(b"[")
        .and_then(|v| v.strip_suffix(b"]"))
        .unwrap_or(v);
    if lex::find_byte(b':', inner).is_some() {
        uri::parse_ipv6(inner).ok().map(IpAddr::V6)
    } else {
        uri::parse_ipv4(inner).map(IpAddr::V4)
    }
}

fn take_token(s: &[u8]) -> Result<(&[u8], &[u8]), ValueError> {
    let n = s.iter().take_while(|&&b| lex::is_token_char(b)).count();
    if n == 0 {
        return Err(ValueError::Syntax);
    }
    Ok((&s[..n], &s[n..]))
}

fn expect_slash(s: &[u8]) -> Result<&[u8], ValueError> {
    match lex::trim_start_lws(s) {
        [b'/', rest @ ..] => Ok(lex::trim_start_lws(rest)),
        _ => Err(ValueError::Syntax),
    }
}

/// Iterator over every Via value of a message, across lines and commas, top first.
pub struct ViaIter<'a> {
    values: ListValues<'a>,
}

impl<'a> ViaIter<'a> {
    pub(crate) fn new(values: ListValues<'a>) -> Self {
        ViaIter { values }
    }
}

impl<'a> Iterator for ViaIter<'a> {
    type Item = Result<Via<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.values.next()?;
        Some(item.and_then(|v| {
            Via::parse(v).map_err(|error| ParseError::InvalidHeader {
                name: HeaderName::Via,
                error,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_key(line: &[u8]) -> Option<ViaKey<'_>> {
        scan_plain(line).map(|plain| plain.top.key)
    }

    #[test]
    fn parses_via_with_params() {
        let v = Via::parse(
            b"SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776;received=192.0.2.1;rport",
        )
        .unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host(), Host::Domain(b"pc33.atlanta.com"));
        assert_eq!(v.host_bytes, b"pc33.atlanta.com");
        assert_eq!(v.port, Some(5066));
        assert_eq!(v.branch(), Some(&b"z9hG4bK776"[..]));
        assert_eq!(v.rport(), Some(None));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn lws_inside_sent_protocol() {
        let v = Via::parse(b"SIP  /   2.0  / UDP\r\n 192.0.2.2;branch=z9hG4bK").unwrap();
        assert_eq!(v.protocol, (&b"SIP"[..], &b"2.0"[..]));
        assert!(!v.has_rfc3261_branch());
    }

    #[test]
    fn received_ipv6_with_and_without_brackets() {
        let a = Via::parse(b"SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255]").unwrap();
        let b = Via::parse(b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255").unwrap();
        assert_eq!(a.received(), b.received());
        assert!(a.received().is_some());
        assert_eq!(a.host_bytes, b"[2001:db8::9:1]");
    }

    #[test]
    fn the_key_scan_agrees_with_the_parser() {
        let plain: &[&[u8]] = &[
            b"SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776;received=192.0.2.1;rport",
            b"SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7;RPORT=5070",
            b"sip/2.0/tcp Host-1.example.COM:5060;BRANCH=z9hG4bK-a.b_c!~*'+%,SIP/2.0/UDP x",
            b"SIP/2.0/UDP a;branch=one;branch=two",
            b"SIP/2.0/UDP a:0",
        ];
        for line in plain {
            let key = scan_key(line).expect("plain form");
            let first = &line[..lex::find_outside(line, b',').unwrap().unwrap_or(line.len())];
            assert_eq!(key, ViaKey::from(&Via::parse(first).unwrap()), "{line:?}");
        }
        // Anything else is left to the parser.
        let unusual: &[&[u8]] = &[
            b"SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1",
            b"SIP / 2.0 / UDP a;branch=z9hG4bK1",
            b"SIP/2.0/UDP  a;branch=z9hG4bK1",
            b"SIP/2.0/UDP a ;branch=z9hG4bK1",
            b"SIP/2.0/UDP a;branch=\"z9hG4bK1\"",
            b"SIP/2.0/UDP a;branch",
            b"SIP/2.0/UDP a:65536;branch=z9hG4bK1",
            b"SIP/2.0/UDP a:123456",
            b"SIP/2.0/UDP a;;branch=z9hG4bK1",
            b"SIP/2.0/UDP a;received=[2001:db8::1]",
        ];
        for line in unusual {
            assert_eq!(scan_key(line), None, "{line:?}");
        }
    }

    #[test]
    fn the_key_scan_never_disagrees_with_the_parser_on_mutated_vias() {
        // Random byte edits of realistic Vias: whenever both read a value, they agree.
        let seeds: &[&[u8]] = &[
            b"SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776;received=192.0.2.1;rport",
            b"SIP/2.0/UDP 10.0.0.1:5060;rport=5060;branch=z9hG4bKabc.def, SIP/2.0/TCP b",
        ];
        let alphabet = b"aZ09.-:;=, \t\"[]/!%rportbranch";
        for v in crate::message::mutations::mutated(seeds, alphabet, 20_000) {
            let Some(key) = scan_key(&v) else { continue };
            let Ok(Some(comma)) = lex::find_outside(&v, b',').map(|c| Some(c.unwrap_or(v.len())))
            else {
                continue;
            };
            if let Ok(via) = Via::parse_any(&v[..comma]) {
                assert_eq!(key, ViaKey::from(&via), "{:?}", String::from_utf8_lossy(&v));
            }
        }
    }

    #[test]
    fn the_kept_scan_expands_to_the_scan() {
        let seeds: &[&[u8]] = &[
            b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK74bf9;rport",
            b"SIP/2.0/UDP h;rport;received=192.0.2.1, SIP/2.0/UDP p",
            b"SIP/2.0/TCP pc33.atlanta.com:5066;branch=z9hG4bK776",
        ];
        let (mut kept, mut valid) = (0, 0);
        for v in crate::message::mutations::mutated(seeds, b"aZ09.-:;=, rportbranch", 20_000) {
            let scan = scan_plain(&v);
            assert_eq!(
                TopViaScan::of(&v).map(|t| t.expand(&v)),
                scan.map(|p| p.top),
                "{:?}",
                String::from_utf8_lossy(&v)
            );
            kept += usize::from(scan.is_some());
            // Valid means the parser accepts; not valid means "read it again" (a `received`
            // value, say, is left to the parser).
            if let (Some(t), Some(p)) = (TopViaScan::of(&v), scan)
                && t.is_valid()
            {
                valid += 1;
                assert!(
                    Via::parse_any(&v[..p.top.end]).is_ok(),
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
        assert!(kept > 2_000, "the mutations hardly reach the scan: {kept}");
        assert!(
            valid > 1_000,
            "the mutations hardly reach a valid scan: {valid}"
        );
    }

    #[test]
    fn the_plain_via_agrees_with_the_general_reader() {
        let plain: &[&[u8]] = &[
            b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK74bf9;rport",
            b"sip/2.0/tcp pc33.atlanta.com;rport=5066;branch=z9hG4bK776asdhds;x-y=z",
            b"SIP/2.0/UDP h",
        ];
        for v in plain {
            assert!(assert_plain_agrees(v), "{v:?}");
        }
        let other: &[&[u8]] = &[
            b"SIP/2.0/UDP a;received=192.0.2.1",
            b"SIP/2.0/UDP a;ttl=1",
            b"SIP/2.0/UDP a;MADDR=b",
            b"SIP/2.0/UDP a;rport=x",
            b"SIP/2.0/UDP a..b;branch=z9hG4bK1",
            b"SIP/2.0/UDP 1.2.3.4.5",
            b"SIP/2.0/UDP a, SIP/2.0/UDP b",
        ];
        for v in other {
            assert_eq!(
                Via::parse_plain(v),
                None,
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
        let seeds: &[&[u8]] = &[
            b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK74bf9;rport",
            b"SIP/2.0/TLS pc33.atlanta.com:5066;rport=5066;branch=z9hG4bK776;lr",
        ];
        let alphabet = b"aZ09.-:;=, \t\"[]/!%rportbranchttlmaddr";
        crate::message::mutations::assert_agreement(seeds, alphabet, assert_plain_agrees);
    }

    #[test]
    fn malformed_vias() {
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP host;ttl=300").is_err());
        assert!(Via::parse(b"SIP/2.0 UDP host").is_err());
    }
}
