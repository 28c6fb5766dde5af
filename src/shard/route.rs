//! Which shard owns a message: Call-ID hashing, and a REGISTER by its address-of-record.
//! Used by the runtime to route what a socket received, and by the shards to make
//! Call-IDs that hash to themselves.
//!
//! # What it owns, what it may not touch
//! The hash and the scan of a datagram's routing key; no shard state.

use bytes::Bytes;

use crate::message::Message;

/// Which of `shards` shards owns a Call-ID: ahash with fixed keys, so every thread (and
/// every process restart) agrees.
pub fn shard_for_call_id(call_id: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let state = ahash::RandomState::with_seeds(
        0x5349_5053_4841_5244,
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
    );
    (state.hash_one(call_id) % shards as u64) as usize
}

/// Which of `shards` shards owns a datagram: a REGISTER by its address-of-record (so all
/// bindings of one AOR live in one registrar table, whatever Call-ID each UA uses), any
/// other message by its Call-ID. `None` when it names neither (the receiving shard then
/// parses it and answers 400 if it can).
pub fn shard_for_datagram(datagram: &[u8], shards: usize) -> Option<usize> {
    if datagram.starts_with(b"REGISTER ")
        && let Some(aor) = register_aor(datagram)
    {
        return Some(shard_for_call_id(&aor, shards));
    }
    crate::message::find_call_id(datagram).map(|c| shard_for_call_id(c, shards))
}

/// The AOR of a REGISTER's To header: the header found by a scan and only its value
/// parsed, on the receiving thread, with no copy of the datagram; a full parse only when
/// the scan's value does not parse alone (a folded line, say), so that both agree.
fn register_aor(datagram: &[u8]) -> Option<Vec<u8>> {
    if let Some(value) = crate::message::find_header(datagram, b"to", b't')
        && let Ok(to) = crate::message::NameAddr::parse(value)
    {
        return crate::registrar::aor_of(&to.uri);
    }
    let msg = Message::parse(Bytes::copy_from_slice(datagram)).ok()?;
    let to = msg.to_header().ok()?;
    crate::registrar::aor_of(&to.uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_goes_by_its_aor_whatever_its_call_id() {
        let register = |call_id: &str, to: &str| {
            format!(
                "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\
                 From: <sip:alice@example.com>;tag=1\r\n{to}\r\nCall-ID: {call_id}\r\n\
                 CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes()
        };
        let a = register("one", "To: <sip:alice@example.com>");
        let b = register("two", "t: \"Alice\" <sip:alice@EXAMPLE.com>");
        let folded = register("three", "To:\r\n <sip:alice@example.com>");
        assert_eq!(
            register_aor(&a).as_deref(),
            Some(&b"sip:alice@example.com"[..])
        );
        assert_eq!(register_aor(&a), register_aor(&b));
        assert_eq!(register_aor(&a), register_aor(&folded));
        for shards in [2, 3, 8] {
            assert_eq!(
                shard_for_datagram(&a, shards),
                shard_for_datagram(&b, shards)
            );
        }
    }
}
