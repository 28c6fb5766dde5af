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

/// The AOR of a REGISTER's To header (a full parse: REGISTER is not the call hot path).
fn register_aor(datagram: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::parse(Bytes::copy_from_slice(datagram)).ok()?;
    let to = msg.to_header().ok()?;
    crate::registrar::aor_of(&to.uri)
}
