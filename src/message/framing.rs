//! Message framing on stream transports (RFC 3261 §18.3): where one message ends in the
//! bytes a TCP connection has delivered so far.
//!
//! # What it owns, what it may not touch
//! Only the boundary: the end of the header block and the Content-Length value, which a
//! stream message MUST carry. It does not parse the message (the shard does, once framed),
//! and it reads no socket: the runtime hands it its buffer.
//!
//! Before a start-line, CRLFs are ignored (§7.5); a double CRLF there is a keep-alive ping
//! (RFC 5626 §3.5.1), which the runtime answers with one CRLF.

/// What the front of a stream buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// A keep-alive ping (CRLF CRLF) of this many bytes: answer CRLF and drop them.
    KeepAlive(usize),
    /// Stray CRLFs before a start-line: drop this many bytes.
    Skip(usize),
    /// A whole message of this many bytes (headers, blank line and body).
    Message(usize),
}

/// Why a stream cannot be framed: the connection must be closed, since the next message's
/// start can no longer be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// The header block has no Content-Length (§18.3: MUST on stream transports).
    MissingContentLength,
    /// A Content-Length that is no decimal number, or two that disagree.
    BadContentLength,
    /// The header block or the whole message is over the limit given.
    TooLarge,
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FramingError::MissingContentLength => "stream message without Content-Length",
            FramingError::BadContentLength => "unreadable Content-Length",
            FramingError::TooLarge => "stream message over the size limit",
        })
    }
}

impl std::error::Error for FramingError {}

/// The header block (start-line through the blank line) at the start of `buf`, when
/// it is whole and at most `max` bytes: what an answer to a message [`next_frame`]
/// refused can be built from (§18.3: a request gets 400 where a response can be formed).
pub fn header_block(buf: &[u8], max: usize) -> Option<&[u8]> {
    let blank = memchr::memmem::find(&buf[..buf.len().min(max)], b"\r\n\r\n")?;
    Some(&buf[..blank + 4])
}

impl FramingError {
    /// The status and reason phrase a request refused for this gets: 400 for a missing or
    /// unreadable Content-Length (§18.3, §20.14), 513 for a message over the limit
    /// (§21.5.14).
    pub fn status(self) -> (u16, &'static str) {
        match self {
            FramingError::MissingContentLength => (400, "Missing Content-Length"),
            FramingError::BadContentLength => (400, "Bad Content-Length"),
            FramingError::TooLarge => (513, "Message Too Large"),
        }
    }
}

/// Finds the first frame of `buf`; messages longer than `max` bytes are refused.
pub fn next_frame(buf: &[u8], max: usize) -> Result<Frame, FramingError> {
    if buf.starts_with(b"\r\n\r\n") {
        return Ok(Frame::KeepAlive(4));
    }
    if buf.starts_with(b"\r\n") {
        // Two bytes may be the first half of a ping: wait for what follows them.
        return Ok(if buf.len() < 4 {
            Frame::Incomplete
        } else {
            Frame::Skip(2)
        });
    }
    if buf.len() == 1 && buf[0] == b'\r' {
        return Ok(Frame::Incomplete);
    }
    let Some(blank) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > max {
            Err(FramingError::TooLarge)
        } else {
            Ok(Frame::Incomplete)
        };
    };
    let headers_end = blank + 4;
    if headers_end > max {
        return Err(FramingError::TooLarge);
    }
    let body = content_length(&buf[..blank + 2])?.ok_or(FramingError::MissingContentLength)?;
    let total = headers_end
        .checked_add(body)
        .filter(|&t| t <= max)
        .ok_or(FramingError::TooLarge)?;
    Ok(if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    })
}

/// The Content-Length (long or compact name `l`) of a header block whose every line,
/// the start-line first, ends in CRLF; continuation lines (§7.3.1 folding) are joined.
fn content_length(block: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut found: Option<usize> = None;
    let mut lines = block.split(|&b| b == b'\n').peekable();
    lines.next(); // the start-line
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let mut value = line[colon + 1..].to_vec();
        while let Some(next) = lines.peek() {
            if !next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                break;
            }
            value.push(b' ');
            value.extend_from_slice(next.strip_suffix(b"\r").unwrap_or(next));
            lines.next();
        }
        let digits = value.trim_ascii();
        if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::BadContentLength);
        }
        let n = digits
            .iter()
            .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(FramingError::BadContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65_536;
    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
        Content-Length: 4\r\n\r\nbody";

    #[test]
    fn the_header_block_of_an_unframeable_message_is_there_to_answer() {
        let no_length =
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\nrest";
        assert_eq!(
            next_frame(no_length, MAX),
            Err(FramingError::MissingContentLength)
        );
        let block = header_block(no_length, MAX).unwrap();
        assert!(block.ends_with(b"z9hG4bK1\r\n\r\n"));
        // Not whole, or past the limit: nothing to answer from.
        assert_eq!(
            header_block(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n", MAX),
            None
        );
        assert_eq!(header_block(no_length, 20), None);
        assert_eq!(
            FramingError::MissingContentLength.status(),
            (400, "Missing Content-Length")
        );
        assert_eq!(FramingError::TooLarge.status().0, 513);
    }

    #[test]
    fn a_whole_message_is_framed_by_its_content_length() {
        assert_eq!(next_frame(OPTIONS, MAX), Ok(Frame::Message(OPTIONS.len())));
        let mut two = OPTIONS.to_vec();
        two.extend_from_slice(OPTIONS);
        assert_eq!(next_frame(&two, MAX), Ok(Frame::Message(OPTIONS.len())));
    }

    #[test]
    fn every_prefix_of_a_message_is_incomplete() {
        for end in 0..OPTIONS.len() {
            let got = next_frame(&OPTIONS[..end], MAX);
            assert!(
                matches!(got, Ok(Frame::Incomplete)),
                "{end}: {got:?} for {:?}",
                String::from_utf8_lossy(&OPTIONS[..end])
            );
        }
    }

    #[test]
    fn compact_folded_and_spaced_content_lengths_are_read() {
        let compact = b"BYE sip:a SIP/2.0\r\nl: 2\r\n\r\nhi";
        assert_eq!(next_frame(compact, MAX), Ok(Frame::Message(compact.len())));
        let folded = b"BYE sip:a SIP/2.0\r\nContent-Length :\r\n  2\r\n\r\nhi";
        assert_eq!(next_frame(folded, MAX), Ok(Frame::Message(folded.len())));
        let lower = b"SIP/2.0 200 OK\r\ncontent-length:0\r\n\r\n";
        assert_eq!(next_frame(lower, MAX), Ok(Frame::Message(lower.len())));
    }

    #[test]
    fn crlfs_before_a_start_line_are_pings_or_skipped() {
        assert_eq!(next_frame(b"\r\n\r\n", MAX), Ok(Frame::KeepAlive(4)));
        assert_eq!(next_frame(b"\r\n", MAX), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r", MAX), Ok(Frame::Incomplete));
        let mut lead = b"\r\nOP".to_vec();
        assert_eq!(next_frame(&lead, MAX), Ok(Frame::Skip(2)));
        lead.extend_from_slice(&OPTIONS[2..]);
        assert_eq!(
            next_frame(&lead[2..], MAX),
            Ok(Frame::Message(OPTIONS.len()))
        );
    }

    #[test]
    fn unframeable_streams_are_errors() {
        let missing = b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(
            next_frame(missing, MAX),
            Err(FramingError::MissingContentLength)
        );
        for bad in [
            &b"OPTIONS sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n"[..],
            b"OPTIONS sip:a SIP/2.0\r\nContent-Length: \r\n\r\n",
            b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
            b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n",
        ] {
            assert_eq!(next_frame(bad, MAX), Err(FramingError::BadContentLength));
        }
        let big = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 70000\r\n\r\n";
        assert_eq!(next_frame(big, MAX), Err(FramingError::TooLarge));
        let endless = vec![b'a'; MAX + 1];
        assert_eq!(next_frame(&endless, MAX), Err(FramingError::TooLarge));
    }

    #[test]
    fn agreeing_duplicate_lengths_and_any_mutation_never_panic() {
        let twice = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\nl: 0\r\n\r\n";
        assert_eq!(next_frame(twice, MAX), Ok(Frame::Message(twice.len())));
        for m in super::super::mutations::mutated(&[OPTIONS], b"\r\n: 0l9", 20_000) {
            if let Ok(Frame::Message(n) | Frame::Skip(n) | Frame::KeepAlive(n)) =
                next_frame(&m, MAX)
            {
                assert!(n <= m.len());
            }
        }
    }
}
