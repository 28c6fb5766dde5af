//! Transaction keys (RFC 3261 §17.1.3, §17.2.3), written into a reusable buffer so that a
//! lookup allocates nothing.
//!
//! Server keys: branch + sent-by + method, where ACK counts as INVITE (an ACK to a non-2xx
//! matches the INVITE server transaction) and a CANCEL looks up the INVITE it cancels with
//! the method replaced. Requests whose branch lacks the magic cookie fall back to RFC 2543
//! matching: Request-URI, From tag, Call-ID, CSeq number, top Via and method (the To tag is
//! left out, since the ACK to a non-2xx carries the tag the INVITE lacked).
//! Client keys: our own branch + CSeq method.

use crate::message::{Message, Method, ParseError, ViaKey};

/// First byte of a key, so the kinds can never collide.
const SERVER_3261: u8 = b'S';
const SERVER_2543: u8 = b'L';
const CLIENT: u8 = b'C';

/// Which method a server key is computed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyMethod<'a> {
    /// The request's own method, except that ACK becomes INVITE.
    OfRequest,
    /// A fixed method (CANCEL looking up its INVITE).
    Fixed(&'a [u8]),
}

/// Writes the server transaction key of `msg`, whose top Via is `via`, into `out`.
pub(crate) fn server_key(
    out: &mut Vec<u8>,
    msg: &Message,
    via: &ViaKey<'_>,
    method: KeyMethod<'_>,
) -> Result<(), ParseError> {
    out.clear();
    let method = match method {
        KeyMethod::Fixed(m) => m,
        KeyMethod::OfRequest => match msg.method() {
            Some(Method::Ack) => b"INVITE",
            _ => msg.method_bytes().unwrap_or_default(),
        },
    };
    if via.has_rfc3261_branch() {
        out.push(SERVER_3261);
        out.extend_from_slice(via.branch.unwrap_or_default());
        out.push(0);
        let host_start = out.len();
        out.extend_from_slice(via.host);
        out[host_start..].make_ascii_lowercase();
        out.push(0);
        out.extend_from_slice(&via.port.unwrap_or(0).to_be_bytes());
    } else {
        let cseq = msg.cseq()?;
        out.push(SERVER_2543);
        out.extend_from_slice(msg.request_uri_bytes().unwrap_or_default());
        out.push(0);
        out.extend_from_slice(msg.from_tag()?.unwrap_or_default());
        out.push(0);
        out.extend_from_slice(msg.call_id().ok_or(ParseError::MissingHeader(
            crate::message::HeaderName::CallId,
        ))?);
        out.push(0);
        out.extend_from_slice(&cseq.seq.to_be_bytes());
        out.extend_from_slice(via.host);
        out.push(0);
        out.extend_from_slice(via.branch.unwrap_or_default());
    }
    out.push(0);
    out.extend_from_slice(method);
    Ok(())
}

/// Writes a client transaction key: our branch and the CSeq method.
pub(crate) fn client_key(out: &mut Vec<u8>, branch: &[u8], method: &[u8]) {
    out.clear();
    out.push(CLIENT);
    out.extend_from_slice(branch);
    out.push(0);
    out.extend_from_slice(method);
}

/// Writes the client key a response matches: top Via branch + CSeq method.
pub(crate) fn response_key(out: &mut Vec<u8>, msg: &Message) -> Result<(), ParseError> {
    let via = msg.top_via_key()?;
    let cseq = msg.cseq()?;
    client_key(out, via.branch.unwrap_or_default(), cseq.method_bytes);
    Ok(())
}
