//! An address-of-record's bindings as kept in a store (issue 22): each binding's contact,
//! the Call-ID and CSeq that last wrote it (so the §10.3 ordering holds across a restart),
//! its expiry as a wall-clock time, and its q.
//!
//! # What it owns, what it may not touch
//! The record's bytes (the shared `codec`: versioned, checksummed); the registrar turns
//! its table into records and back.

use std::time::{Instant, SystemTime};

use super::{Binding, Registrar};
use crate::codec::{ReadError, begin, from_unix_ms, put_bytes, seal, unix_ms, unseal};
use crate::dialog::RecordError;

/// The first bytes of a bindings record.
pub(crate) const MAGIC: &[u8; 3] = b"SBR";
/// The version this build writes and reads.
const VERSION: u8 = 1;

/// The AOR a bindings record is of, read without decoding the rest (REGISTERs, and so
/// their records, go to the shard their AOR hashes to).
pub fn bindings_record_aor(bytes: &[u8]) -> Option<&[u8]> {
    let mut r = crate::codec::Reader(bytes.get(MAGIC.len() + 1..)?);
    (bytes.get(..MAGIC.len())? == MAGIC).then_some(())?;
    r.bytes().ok()
}

/// The latest expiry among the bindings of a bindings record (how long a store keeps
/// it); `None` when it does not decode.
pub fn bindings_record_latest_expiry(bytes: &[u8]) -> Option<SystemTime> {
    let mut r = unseal(bytes, MAGIC, VERSION).ok()?;
    r.bytes().ok()?;
    let count = r.u32().ok()?;
    let mut latest = None;
    for _ in 0..count {
        r.bytes().ok()?;
        r.bytes().ok()?;
        r.u32().ok()?;
        let expires = from_unix_ms(r.u64().ok()?);
        r.take(2).ok()?;
        latest = latest.max(Some(expires));
    }
    latest
}

impl Registrar {
    /// The record of `aor`'s bindings, their expiries in wall-clock time (`wall`); `None`
    /// when it has none left (its record is deleted) or there is no wall clock.
    pub fn bindings_record(
        &self,
        aor: &[u8],
        wall: impl Fn(Instant) -> Option<SystemTime>,
    ) -> Option<Vec<u8>> {
        let bindings = self.bindings(aor);
        if bindings.is_empty() {
            return None;
        }
        let mut w = begin(MAGIC, VERSION, 64 + aor.len() + 128 * bindings.len());
        put_bytes(&mut w, aor);
        w.extend_from_slice(&(bindings.len() as u32).to_le_bytes());
        for b in bindings {
            put_bytes(&mut w, &b.contact);
            put_bytes(&mut w, &b.call_id);
            w.extend_from_slice(&b.cseq.to_le_bytes());
            w.extend_from_slice(&unix_ms(wall(b.expires_at)?).to_le_bytes());
            // q in thousandths (0..=1000); u16::MAX: none given.
            w.extend_from_slice(&b.q.unwrap_or(u16::MAX).to_le_bytes());
        }
        Some(seal(w))
    }

    /// Takes back the bindings of a record; those whose expiry has passed by `wall_now`
    /// (the wall-clock time at `now`) are dropped. Returns the AOR and how many were
    /// restored.
    pub fn restore_bindings(
        &mut self,
        now: Instant,
        wall_now: SystemTime,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, usize), RecordError> {
        let mut r = unseal(bytes, MAGIC, VERSION)?;
        let aor = r.bytes()?.to_vec();
        let count = r.u32()?;
        let mut restored = Vec::new();
        for _ in 0..count {
            let contact: Box<[u8]> = r.bytes()?.into();
            let call_id: Box<[u8]> = r.bytes()?.into();
            let cseq = r.u32()?;
            let expires = from_unix_ms(r.u64()?);
            let q = match u16::from_le_bytes(
                r.take(2)?.try_into().map_err(|_| ReadError::Truncated)?,
            ) {
                u16::MAX => None,
                q => Some(q),
            };
            let Ok(left) = expires.duration_since(wall_now) else {
                continue; // lapsed while we were down
            };
            restored.push(Binding {
                contact,
                call_id,
                cseq,
                expires_at: now + left,
                q,
            });
        }
        r.finish()?;
        let n = restored.len();
        self.insert_bindings(aor.clone().into_boxed_slice(), restored);
        Ok((aor, n))
    }
}
