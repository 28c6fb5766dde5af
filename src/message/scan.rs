//! Finding the Call-ID in a datagram without parsing it, as the runtime does to pick the
//! shard that owns the dialog. The answer is the same value a full parse gives.

use super::lex;

/// The Call-ID of the datagram (long form `Call-ID` or compact `i`, any case), LWS-trimmed,
/// or `None` when the header section has none. Stops at the end of the headers, so a body
/// that happens to contain "Call-ID:" is never read.
#[inline]
pub fn find_call_id(datagram: &[u8]) -> Option<&[u8]> {
    find_header(datagram, b"call-id", b'i')
}

/// The value of the first header named `long` (lowercase) or `compact` (any case), as
/// [`find_call_id`] finds the Call-ID: no parse, no copy, never past the headers. A
/// folded value comes with its line breaks.
#[inline]
pub fn find_header<'a>(datagram: &'a [u8], long: &[u8], compact: u8) -> Option<&'a [u8]> {
    let lead = datagram
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let d = &datagram[lead..];
    let mut pos = memchr::memchr(b'\n', d)? + 1;
    let first = long[0];
    loop {
        let line = d.get(pos..)?;
        let c = *line.first()?;
        if c == b'\r' || c == b'\n' {
            return None;
        }
        let lower = c.to_ascii_lowercase();
        let after_name = if lower == first
            && line.len() > long.len()
            && line[..long.len()].eq_ignore_ascii_case(long)
        {
            Some(&line[long.len()..])
        } else if lower == compact {
            Some(&line[1..])
        } else {
            None
        };
        if let Some(rest) = after_name
            && let Some(value) = value_after_colon(rest)
        {
            return Some(value);
        }
        pos += memchr::memchr(b'\n', line)? + 1;
    }
}

/// `rest` follows a candidate header name: `*(SP/HT) ":" value CRLF`, folding allowed.
fn value_after_colon(rest: &[u8]) -> Option<&[u8]> {
    let ws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    if rest.get(ws) != Some(&b':') {
        return None;
    }
    let value = &rest[ws + 1..];
    let mut end = 0;
    loop {
        let lf = end + memchr::memchr(b'\n', &value[end..])?;
        match value.get(lf + 1) {
            Some(b' ' | b'\t') => end = lf + 1,
            _ => {
                end = lf;
                break;
            }
        }
    }
    let v = lex::trim_lws(&value[..end]);
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_long_and_compact_forms() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCALL-ID : abc@h \r\n\r\n";
        assert_eq!(find_call_id(m), Some(&b"abc@h"[..]));
        let m = b"\r\nBYE sip:a@b SIP/2.0\r\nIf-Match: q\r\ni:xyz\r\n\r\n";
        assert_eq!(find_call_id(m), Some(&b"xyz"[..]));
    }

    #[test]
    fn finds_other_headers_by_both_forms_and_not_by_a_prefix() {
        let m = b"REGISTER sip:h SIP/2.0\r\nTopic: no\r\nTO : <sip:a@h>;tag=1\r\n\r\n";
        assert_eq!(find_header(m, b"to", b't'), Some(&b"<sip:a@h>;tag=1"[..]));
        let m = b"REGISTER sip:h SIP/2.0\r\nt:<sip:b@h>\r\n\r\n";
        assert_eq!(find_header(m, b"to", b't'), Some(&b"<sip:b@h>"[..]));
        let m = b"REGISTER sip:h SIP/2.0\r\nl: 9\r\n\r\nTo: <sip:c@h>\r\n";
        assert_eq!(find_header(m, b"to", b't'), None);
    }

    #[test]
    fn never_reads_the_body() {
        let m = b"MESSAGE sip:a@b SIP/2.0\r\nl: 12\r\n\r\nCall-ID: no\r\n";
        assert_eq!(find_call_id(m), None);
        assert_eq!(find_call_id(b"garbage"), None);
        assert_eq!(find_call_id(b""), None);
    }
}
