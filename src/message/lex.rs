//! Lexical building blocks of the RFC 3261 §25 grammar: byte classes, linear white space
//! (including folded lines), quoted strings, comma-separated lists and `;name=value`
//! parameter lists, and bounded decimal numbers.
//!
//! Everything here works on borrowed slices of the datagram and never allocates. Header
//! values handed to these helpers may still contain the CRLF of a folded line: a CR or LF can
//! only survive header splitting as part of folding, so it counts as white space here.

use super::error::ValueError;

const TOKEN: u8 = 1;
const WORD: u8 = 2;
const HOSTCHAR: u8 = 4;
const URI_USER: u8 = 8;
const URI_PASSWORD: u8 = 16;
const URI_PARAM: u8 = 32;
const URI_HEADER: u8 = 64;
const SCHEME: u8 = 128;

const fn build_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let alnum = c.is_ascii_alphanumeric();
        // unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
        let mark = matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        );
        let unreserved = alnum || mark;
        let mut v = 0u8;
        if alnum
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            v |= TOKEN | WORD;
        }
        if matches!(
            c,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        ) {
            v |= WORD;
        }
        // Liberal hostname chars: RFC 3261 allows alphanum, '-' and '.'; '_' is common in
        // the wild (and in RFC 5118's own examples), so it is accepted too.
        if alnum || matches!(c, b'-' | b'.' | b'_') {
            v |= HOSTCHAR;
        }
        // user = 1*( unreserved / escaped / user-unreserved ); escapes checked separately.
        if unreserved || matches!(c, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            v |= URI_USER;
        }
        if unreserved || matches!(c, b'&' | b'=' | b'+' | b'$' | b',') {
            v |= URI_PASSWORD;
        }
        // paramchar = param-unreserved / unreserved / escaped
        if unreserved || matches!(c, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            v |= URI_PARAM;
        }
        // hname/hvalue = hnv-unreserved / unreserved / escaped
        if unreserved || matches!(c, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            v |= URI_HEADER;
        }
        if alnum || matches!(c, b'+' | b'-' | b'.') {
            v |= SCHEME;
        }
        t[b] = v;
        b += 1;
    }
    t
}

static CLASSES: [u8; 256] = build_classes();

/// Classes of the one-pass readers of plain forms (the top Via, plain SIP URIs): a host name
/// or IPv4 byte (letters, digits, `.`, `-`), and an unreserved byte (RFC 3261 §25.1).
const PLAIN_HOST: u8 = 1;
const UNRESERVED: u8 = 2;

static PLAIN_CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alnum = c.is_ascii_alphanumeric();
        if alnum || c == b'.' || c == b'-' {
            t[b] |= PLAIN_HOST;
        }
        if alnum
            || matches!(
                c,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
        {
            t[b] |= UNRESERVED;
        }
        b += 1;
    }
    t
};

/// The `:port` of a plain host:port form at `i`, for the one-pass readers: `Some((None,
/// i))` when there is no `:`, `Some((Some(port), end))` for one to five digits up to 65535,
/// `None` for anything else (which the general readers then judge).
pub(crate) fn plain_port(s: &[u8], mut i: usize) -> Option<(Option<u16>, usize)> {
    if s.get(i) != Some(&b':') {
        return Some((None, i));
    }
    i += 1;
    let digits_start = i;
    let mut value: u32 = 0;
    while i < s.len() && s[i].is_ascii_digit() && i - digits_start < 5 {
        value = value * 10 + u32::from(s[i] - b'0');
        i += 1;
    }
    if i == digits_start || value > u32::from(u16::MAX) {
        return None;
    }
    Some((Some(value as u16), i))
}

/// A byte of a plain host name or IPv4 address: a letter, a digit, `.` or `-`.
#[inline]
pub(crate) fn is_plain_host_char(b: u8) -> bool {
    PLAIN_CLASSES[b as usize] & PLAIN_HOST != 0
}

/// An unreserved byte: a letter, a digit or one of `-_.!~*'()`.
#[inline]
pub(crate) fn is_unreserved(b: u8) -> bool {
    PLAIN_CLASSES[b as usize] & UNRESERVED != 0
}

#[inline]
pub(crate) fn is_token_char(b: u8) -> bool {
    CLASSES[b as usize] & TOKEN != 0
}

#[inline]
pub(crate) fn is_word_char(b: u8) -> bool {
    CLASSES[b as usize] & WORD != 0
}

#[inline]
pub(crate) fn is_host_char(b: u8) -> bool {
    CLASSES[b as usize] & HOSTCHAR != 0
}

#[inline]
pub(crate) fn is_scheme_char(b: u8) -> bool {
    CLASSES[b as usize] & SCHEME != 0
}

/// Whether `v` may hold a CR or LF: false only when it holds none. Eight bytes per step,
/// no call: true for any byte below 0x0E (CR, LF, but also HTAB or NUL), so a `true` is
/// checked again exactly by whoever writes the value.
#[inline]
pub(crate) fn may_hold_line_break(v: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `w` is below 0x0E (exact for a bound up to 0x80).
    let below = |w: u64| w.wrapping_sub(ONES * 0x0E) & !w & HIGHS != 0;
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().expect("a slice of eight bytes"));
    if v.len() < 8 {
        return v.iter().any(|&b| b < 0x0E);
    }
    let mut chunks = v.chunks_exact(8);
    if chunks.any(|c| below(word(c))) {
        return true;
    }
    // The last eight bytes again, overlapping: covers the remainder without a byte loop.
    !chunks.remainder().is_empty() && below(word(&v[v.len() - 8..]))
}

/// Whether `v` is a non-empty list of tokens separated by commas, with spaces or tabs
/// only around the commas (`INVITE, ACK,CANCEL`): the form nearly every Allow, Supported
/// and Require line has, checked in one pass. `false` says nothing: the list reader then
/// decides (empty elements, folds, quoted strings…).
pub(crate) fn is_plain_token_list(v: &[u8]) -> bool {
    // `expect`: a token must come next (at the start, after a comma); `in_token`: the
    // previous byte was a token character.
    let (mut expect, mut in_token) = (true, false);
    for &b in v {
        if is_token_char(b) {
            if !in_token && !expect {
                return false; // two tokens with only white space between them
            }
            (expect, in_token) = (false, true);
        } else if b == b',' {
            if expect {
                return false; // an empty element
            }
            (expect, in_token) = (true, false);
        } else if b == b' ' || b == b'\t' {
            in_token = false;
        } else {
            return false;
        }
    }
    !expect
}

/// SP, HTAB, and the CR/LF of a folded line.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Which URI component a run of characters belongs to, for [`check_uri_chars`].
#[derive(Clone, Copy)]
pub(crate) enum UriPart {
    User,
    Password,
    Param,
    Header,
}

/// Checks that `s` consists of the characters allowed in `part`, with every `%` starting a
/// valid `%HEX HEX` escape.
pub(crate) fn check_uri_chars(s: &[u8], part: UriPart) -> bool {
    let mask = match part {
        UriPart::User => URI_USER,
        UriPart::Password => URI_PASSWORD,
        UriPart::Param => URI_PARAM,
        UriPart::Header => URI_HEADER,
    };
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'%' {
            match (s.get(i + 1), s.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if CLASSES[c as usize] & mask != 0 {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Position of `byte` in `s`. Short haystacks (most parameters, tags, hosts) are scanned
/// inline: cheaper than `memchr`'s dispatch call, which wins from a few dozen bytes on.
#[inline]
pub(crate) fn find_byte(byte: u8, s: &[u8]) -> Option<usize> {
    if s.len() < 32 {
        s.iter().position(|&b| b == byte)
    } else {
        memchr::memchr(byte, s)
    }
}

#[inline]
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

#[inline]
pub(crate) fn is_word(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_word_char(b))
}

#[inline]
pub(crate) fn trim_start_lws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_lws(b)).count();
    &s[n..]
}

#[inline]
pub(crate) fn trim_end_lws(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|&&b| is_lws(b)).count();
    &s[..s.len() - n]
}

#[inline]
pub(crate) fn trim_lws(s: &[u8]) -> &[u8] {
    trim_end_lws(trim_start_lws(s))
}

/// Length of the quoted string at the start of `s` (which must start with `"`), including
/// both quotes. Escapes (`\` followed by any octet but CR/LF) are honoured.
pub(crate) fn quoted_len(s: &[u8]) -> Result<usize, ValueError> {
    debug_assert_eq!(s.first(), Some(&b'"'));
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Ok(i + 1),
            b'\\' => {
                match s.get(i + 1) {
                    Some(b'\r') | Some(b'\n') | None => return Err(ValueError::UnterminatedQuote),
                    Some(_) => {}
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    Err(ValueError::UnterminatedQuote)
}

/// Position of the first `delim` in `s` that is outside quoted strings and `<...>`.
/// An unterminated quote is an error; an unterminated `<` just ends the search.
pub(crate) fn find_outside(s: &[u8], delim: u8) -> Result<Option<usize>, ValueError> {
    let mut i = 0;
    loop {
        // Short values (most parameters) are scanned inline; long ones jump with memchr3.
        let rest = &s[i..];
        let hit = if rest.len() < 48 {
            rest.iter()
                .position(|&b| b == delim || b == b'"' || b == b'<')
        } else {
            memchr::memchr3(delim, b'"', b'<', rest)
        };
        let Some(p) = hit else { return Ok(None) };
        let at = i + p;
        match s[at] {
            b'"' => i = at + quoted_len(&s[at..])?,
            b'<' => match find_byte(b'>', &s[at..]) {
                Some(gt) => i = at + gt + 1,
                None => return Ok(None),
            },
            _ => return Ok(Some(at)),
        }
    }
}

/// Splits a header value list at commas outside quotes and angle brackets.
/// Yields trimmed elements; an empty element is an error (`a,,b`).
#[derive(Clone, Debug)]
pub(crate) struct ListSplit<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> ListSplit<'a> {
    pub(crate) fn new(value: &'a [u8]) -> Self {
        ListSplit { rest: Some(value) }
    }
}

impl<'a> Iterator for ListSplit<'a> {
    type Item = Result<&'a [u8], ValueError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let (item, tail) = match find_outside(rest, b',') {
            Ok(Some(pos)) => (&rest[..pos], Some(&rest[pos + 1..])),
            Ok(None) => (rest, None),
            Err(e) => {
                self.rest = None;
                return Some(Err(e));
            }
        };
        self.rest = tail;
        let item = trim_lws(item);
        if item.is_empty() {
            self.rest = None;
            return Some(Err(ValueError::EmptyListElement));
        }
        Some(Ok(item))
    }
}

/// Parses a `1*DIGIT` run into a u64 no larger than `max`.
pub(crate) fn parse_decimal(s: &[u8], max: u64) -> Result<u64, ValueError> {
    if s.is_empty() {
        return Err(ValueError::Syntax);
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(ValueError::Syntax);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(ValueError::OutOfRange)?;
        if v > max {
            return Err(ValueError::OutOfRange);
        }
    }
    Ok(v)
}

/// A validated `;name[=value]` parameter list (header params or URI params).
///
/// Construction checks the whole list once; iteration afterwards cannot fail. The raw slice
/// starts just after the first `;` (or is empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a [u8],
    kind: ParamKind,
}

/// How strictly a parameter list is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ParamKind {
    /// generic-param: token [ "=" ( token / host / quoted-string ) ], LWS allowed around.
    #[default]
    Header,
    /// uri-parameter: 1*paramchar [ "=" 1*paramchar ], no LWS.
    Uri,
    /// via-params: generic-param, plus `received` may be an IPv6 address without brackets
    /// (RFC 3261 grammar; RFC 5118 §4.5), so ':' is accepted in unquoted values.
    Via,
}

impl<'a> Params<'a> {
    /// Parameters already checked for `kind` by a caller's own one-pass reader; `raw` is the
    /// text after the first `;`, as [`Params::parse`] keeps it.
    pub(crate) fn from_checked(raw: &'a [u8], kind: ParamKind) -> Self {
        Params { raw, kind }
    }

    /// Parses `s`, which must start with `;` or be empty, up to its end.
    pub(crate) fn parse(s: &'a [u8], kind: ParamKind) -> Result<Self, ValueError> {
        Self::parse_visit(s, kind, |_, _| Ok(()))
    }

    /// Parses like [`Params::parse`] and shows every `(name, value)` (trimmed) to `visit`
    /// in the same pass, so callers can check or pick parameters without a second walk.
    pub(crate) fn parse_visit(
        s: &'a [u8],
        kind: ParamKind,
        mut visit: impl FnMut(&'a [u8], Option<&'a [u8]>) -> Result<(), ValueError>,
    ) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Ok(Params { raw: s, kind });
        }
        if s[0] != b';' {
            return Err(ValueError::Syntax);
        }
        let raw = &s[1..];
        if kind == ParamKind::Uri {
            for one in raw.split(|&b| b == b';') {
                let (name, value) = check_uri_param(one)?;
                visit(name, value)?;
            }
            return Ok(Params { raw, kind });
        }
        let mut i = 0;
        while let Some((name, value)) = next_param(raw, &mut i, kind)? {
            visit(name, value)?;
        }
        Ok(Params { raw, kind })
    }

    /// The raw text after the leading `;`, as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Iterates over `(name, value)`; names and values are trimmed, quotes kept on values.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter {
            rest: if self.raw.is_empty() {
                None
            } else {
                Some(self.raw)
            },
            pos: 0,
            kind: self.kind,
        }
    }

    /// The first parameter named `name` (case-insensitive): `Some(None)` for a flag such as
    /// `;lr`, `Some(Some(value))` for `name=value`.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// True when a parameter named `name` is present (with or without a value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Checks one URI parameter (`1*paramchar [ "=" 1*paramchar ]`, no LWS).
fn check_uri_param(one: &[u8]) -> Result<(&[u8], Option<&[u8]>), ValueError> {
    let (name, value) = match find_byte(b'=', one) {
        Some(eq) => (&one[..eq], Some(&one[eq + 1..])),
        None => (one, None),
    };
    if name.is_empty() || !check_uri_chars(name, UriPart::Param) {
        return Err(ValueError::InvalidParam);
    }
    if let Some(v) = value
        && (v.is_empty() || !check_uri_chars(v, UriPart::Param))
    {
        return Err(ValueError::InvalidParam);
    }
    Ok((name, value))
}

/// One parameter: its name and, unless it is a flag, its value.
type Param<'a> = (&'a [u8], Option<&'a [u8]>);

/// Reads the header parameter at `*i` in `b` (the list after its first `;`), one pass:
/// `LWS token LWS [ "=" LWS ( token / quoted-string / "[" IPv6 "]" ) LWS ] ( ";" / end )`.
/// Via parameters also take unbracketed IPv6 values (`received`, RFC 5118 §4.5).
/// Returns `None` at the end of the list.
fn next_param<'a>(
    b: &'a [u8],
    i: &mut usize,
    kind: ParamKind,
) -> Result<Option<Param<'a>>, ValueError> {
    let n = b.len();
    if *i > n {
        return Ok(None);
    }
    let mut j = *i;
    while j < n && is_lws(b[j]) {
        j += 1;
    }
    let name_start = j;
    while j < n && is_token_char(b[j]) {
        j += 1;
    }
    if j == name_start {
        return Err(ValueError::InvalidParam);
    }
    let name = &b[name_start..j];
    while j < n && is_lws(b[j]) {
        j += 1;
    }
    let mut value = None;
    if j < n && b[j] == b'=' {
        j += 1;
        while j < n && is_lws(b[j]) {
            j += 1;
        }
        let v_start = j;
        match b.get(j) {
            Some(b'"') => j += quoted_len(&b[j..])?,
            Some(b'[') => {
                let close = find_byte(b']', &b[j..]).ok_or(ValueError::InvalidParam)?;
                if !b[j + 1..j + close]
                    .iter()
                    .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
                {
                    return Err(ValueError::InvalidParam);
                }
                j += close + 1;
            }
            _ => {
                let via = kind == ParamKind::Via;
                while j < n && (is_token_char(b[j]) || (via && b[j] == b':')) {
                    j += 1;
                }
            }
        }
        if j == v_start {
            return Err(ValueError::InvalidParam);
        }
        value = Some(&b[v_start..j]);
        while j < n && is_lws(b[j]) {
            j += 1;
        }
    }
    if j < n && b[j] != b';' {
        return Err(ValueError::InvalidParam);
    }
    *i = j + 1;
    Ok(Some((name, value)))
}

/// Iterator over a validated parameter list.
#[derive(Clone, Debug)]
pub struct ParamIter<'a> {
    rest: Option<&'a [u8]>,
    pos: usize,
    kind: ParamKind,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let raw = self.rest?;
        if self.kind == ParamKind::Uri {
            let rest = raw.get(self.pos..)?;
            let one = &rest[..find_byte(b';', rest).unwrap_or(rest.len())];
            self.pos += one.len() + 1;
            return Some(match find_byte(b'=', one) {
                Some(eq) => (&one[..eq], Some(&one[eq + 1..])),
                None => (one, None),
            });
        }
        // The list was validated, so an error cannot occur here; it would just end the walk.
        match next_param(raw, &mut self.pos, self.kind) {
            Ok(Some(p)) => Some(p),
            _ => {
                self.rest = None;
                None
            }
        }
    }
}

/// Decodes `%HH` escapes (RFC 3261 §19.1.2, §25.1 `escaped`); a `%` not followed by two
/// hex digits is kept as written. Borrows when there is nothing to decode.
pub fn unescape(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let decoded = (s[i] == b'%')
            .then(|| Some(hex(*s.get(i + 1)?)? << 4 | hex(*s.get(i + 2)?)?))
            .flatten();
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Removes the quotes and unescapes nothing: returns the content between the quotes of a
/// quoted string (escapes kept as written), or `s` itself when it is not quoted.
pub fn unquote(s: &[u8]) -> &[u8] {
    if s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"' {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_token_lists_are_lists_of_tokens() {
        // Every string over a small alphabet up to six bytes: where the one-pass check
        // says yes, splitting at commas gives non-empty tokens with white space around.
        let alphabet = b"a,; \t\"";
        let mut yes = 0;
        for len in 0..=6u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let mut v = Vec::new();
                for _ in 0..len {
                    v.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                let reference = v.split(|&b| b == b',').all(|e| is_token(trim_lws(e)));
                if is_plain_token_list(&v) {
                    yes += 1;
                    assert!(reference, "{:?}", String::from_utf8_lossy(&v));
                } else if !v.is_empty() && !v.contains(&b';') && !v.contains(&b'"') {
                    // The white space is only ever around commas when it says no to a list
                    // of tokens: then some element has inner white space or is empty.
                    assert!(!reference, "{:?}", String::from_utf8_lossy(&v));
                }
            }
        }
        assert!(yes > 100);
        assert!(is_plain_token_list(b"INVITE, ACK,CANCEL ,\tBYE"));
        assert!(!is_plain_token_list(b"INVITE ACK"));
        assert!(!is_plain_token_list(b""));
    }

    #[test]
    fn line_break_check_flags_exactly_the_bytes_below_0x0e() {
        for len in 0..40 {
            for background in [b'a', 0x0E, 0x7F, 0x80, 0xFF] {
                let mut v = vec![background; len];
                assert!(
                    !may_hold_line_break(&v),
                    "len {len} background {background}"
                );
                for at in 0..len {
                    for b in 0..=255u8 {
                        v[at] = b;
                        assert_eq!(
                            may_hold_line_break(&v),
                            b < 0x0E,
                            "len {len} at {at} byte {b}"
                        );
                    }
                    v[at] = background;
                }
            }
        }
    }

    #[test]
    fn unescape_decodes_hex_escapes_only() {
        assert_eq!(&*unescape(b"abc"), b"abc");
        assert!(matches!(unescape(b"abc"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*unescape(b"a%40b%3Bto-tag%3d1"), b"a@b;to-tag=1");
        assert_eq!(&*unescape(b"100%"), b"100%");
        assert_eq!(&*unescape(b"%4"), b"%4");
        assert_eq!(&*unescape(b"%zz%41"), b"%zzA");
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v = br#""a, b" <sip:x@y;p=1,2>;q=1 , <sip:z>"#;
        let parts: Vec<_> = ListSplit::new(v).map(|r| r.unwrap()).collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], b"<sip:z>");
    }

    #[test]
    fn list_split_rejects_empty_elements() {
        let mut it = ListSplit::new(b"a,,b");
        assert!(it.next().unwrap().is_ok());
        assert_eq!(it.next().unwrap(), Err(ValueError::EmptyListElement));
    }

    #[test]
    fn quoted_strings_honour_escapes() {
        assert_eq!(quoted_len(br#""a\"b" x"#), Ok(6));
        assert_eq!(quoted_len(br#""abc"#), Err(ValueError::UnterminatedQuote));
    }

    #[test]
    fn header_params_validate_and_lookup() {
        let p = Params::parse(b";tag=abc ; lr; x=\"q;v\"", ParamKind::Header).unwrap();
        assert_eq!(p.get("TAG"), Some(Some(&b"abc"[..])));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("x"), Some(Some(&b"\"q;v\""[..])));
        assert!(Params::parse(b";;", ParamKind::Header).is_err());
        assert!(Params::parse(b";a=", ParamKind::Header).is_err());
    }

    #[test]
    fn decimal_bounds() {
        assert_eq!(parse_decimal(b"0070", 255), Ok(70));
        assert_eq!(parse_decimal(b"300", 255), Err(ValueError::OutOfRange));
        assert_eq!(
            parse_decimal(b"36893488147419103232", u64::MAX),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(parse_decimal(b"-1", 10), Err(ValueError::Syntax));
    }

    #[test]
    fn uri_chars_check_escapes() {
        assert!(check_uri_chars(b"user%20x", UriPart::User));
        assert!(!check_uri_chars(b"user%2", UriPart::User));
        assert!(!check_uri_chars(b"us er", UriPart::User));
    }
}
