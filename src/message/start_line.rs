//! The start line (RFC 3261 §7.1, §7.2): a Request-Line or a Status-Line, and the
//! SIP-Version they carry.
//!
//! # What it owns, what it may not touch
//! The first line of a message only; the header lines are the parser's (`mod.rs`).

use super::{Method, ParseError, Span, StartLine, Uri, UriForm, lex};

pub(super) fn parse_start_line(
    data: &[u8],
    start: usize,
    end: usize,
) -> Result<(StartLine, Span), ParseError> {
    let line = &data[start..end];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase. Liberal in white space
        // between elements (RFC 3665 §3.9 prints "SIP/2.0  486 Busy Here").
        let sp = memchr::memchr(b' ', line).ok_or(ParseError::InvalidStartLine)?;
        let version = &line[..sp];
        check_version(version)?;
        let rest = &line[sp..];
        let skip = rest.iter().take_while(|&&b| b == b' ').count();
        let rest = &rest[skip..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits != 3 {
            return Err(ParseError::InvalidStatusCode);
        }
        let code = u16::from(rest[0] - b'0') * 100
            + u16::from(rest[1] - b'0') * 10
            + u16::from(rest[2] - b'0');
        if !(100..=699).contains(&code) {
            return Err(ParseError::InvalidStatusCode);
        }
        let after = &rest[3..];
        let reason_off = match after.first() {
            None => 0,
            Some(b' ') => 1,
            Some(_) => return Err(ParseError::InvalidStatusCode),
        };
        let reason_start = end - after.len() + reason_off;
        let version_span = Span::new(start, start + sp);
        return Ok((
            StartLine::Response {
                code,
                reason: Span::new(reason_start, end),
            },
            version_span,
        ));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP between elements
    // and none after (RFC 4475 §3.1.2.8-10 reject the other forms).
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::InvalidStartLine)?;
    let method = &line[..sp1];
    let rest = &line[sp1 + 1..];
    let sp2 = memchr::memchr(b' ', rest).ok_or(ParseError::InvalidStartLine)?;
    let uri = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    if uri.is_empty() || memchr::memchr2(b' ', b'\t', version).is_some() {
        return Err(ParseError::InvalidStartLine);
    }
    if !lex::is_token(method) {
        return Err(if method.is_empty() {
            ParseError::InvalidStartLine
        } else {
            ParseError::InvalidMethod
        });
    }
    check_version(version)?;
    let uri_form = match Uri::parse(uri).map_err(ParseError::InvalidRequestUri)? {
        Uri::Sip(u) if u.headers.is_some() => UriForm::SipWithHeaders,
        Uri::Sip(_) => UriForm::Sip,
        Uri::Absolute(_) => UriForm::Other,
    };
    let uri_start = start + sp1 + 1;
    let version_start = uri_start + sp2 + 1;
    Ok((
        StartLine::Request {
            method: Method::from_bytes(method),
            method_span: Span::new(start, start + sp1),
            uri: Span::new(uri_start, uri_start + sp2),
            uri_form,
        },
        Span::new(version_start, end),
    ))
}

/// SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (case-insensitive "SIP").
fn check_version(v: &[u8]) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    if v.len() < 7 || !v[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(ParseError::InvalidVersion);
    }
    let nums = &v[4..];
    let dot = memchr::memchr(b'.', nums).ok_or(ParseError::InvalidVersion)?;
    let (major, minor) = (&nums[..dot], &nums[dot + 1..]);
    if major.is_empty()
        || minor.is_empty()
        || !major.iter().all(u8::is_ascii_digit)
        || !minor.iter().all(u8::is_ascii_digit)
    {
        return Err(ParseError::InvalidVersion);
    }
    Ok(())
}
