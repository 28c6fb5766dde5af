//! The small binary encoding the persisted records share (`dialog::record`, the
//! registrar's binding records): little-endian integers, length-prefixed byte strings,
//! socket addresses, wall-clock times in milliseconds, and a checksum.
//!
//! # What it owns, what it may not touch
//! Bytes in and out; no record's layout (each record module says its own).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why bytes could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// They end before the field.
    Truncated,
    /// A field holds a value no writer produces.
    Malformed(&'static str),
    /// The bytes do not start with the record's magic.
    NotARecord,
    /// Written by another version of the record.
    Version(u8),
    /// The checksum does not match.
    Checksum,
}

/// A record's first bytes: its three magic bytes and its version.
pub(crate) fn begin(magic: &[u8; 3], version: u8, capacity: usize) -> Vec<u8> {
    let mut w = Vec::with_capacity(capacity);
    w.extend_from_slice(magic);
    w.push(version);
    w
}

/// Ends a record begun with [`begin`]: appends the checksum of everything before it.
pub(crate) fn seal(mut w: Vec<u8>) -> Vec<u8> {
    let sum = fnv1a(&w);
    w.extend_from_slice(&sum.to_le_bytes());
    w
}

/// The fields of a sealed record of `magic` and `version`, after checking both and the
/// checksum.
pub(crate) fn unseal<'a>(
    bytes: &'a [u8],
    magic: &[u8; 3],
    version: u8,
) -> Result<Reader<'a>, ReadError> {
    unseal_versions(bytes, magic, version..=version).map(|(r, _)| r)
}

/// [`unseal`] for a format that reads any of `versions`: the body and the version found.
pub(crate) fn unseal_versions<'a>(
    bytes: &'a [u8],
    magic: &[u8; 3],
    versions: std::ops::RangeInclusive<u8>,
) -> Result<(Reader<'a>, u8), ReadError> {
    let head = magic.len() + 1;
    if bytes.len() < head {
        return Err(ReadError::Truncated);
    }
    if &bytes[..magic.len()] != magic {
        return Err(ReadError::NotARecord);
    }
    let version = bytes[magic.len()];
    if !versions.contains(&version) {
        return Err(ReadError::Version(version));
    }
    let body_len = bytes
        .len()
        .checked_sub(4)
        .filter(|n| *n >= head)
        .ok_or(ReadError::Truncated)?;
    let (body, sum) = bytes.split_at(body_len);
    if fnv1a(body) != u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]) {
        return Err(ReadError::Checksum);
    }
    Ok((Reader(&body[head..]), version))
}

pub(crate) fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    // Every string a dialog keeps came out of one datagram (≤ 65,535 bytes), and an SDP
    // body likewise; a u32 length holds any of them.
    w.extend_from_slice(&(b.len() as u32).to_le_bytes());
    w.extend_from_slice(b);
}

pub(crate) fn put_addr(w: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            w.push(4);
            w.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            w.push(6);
            w.extend_from_slice(&ip.octets());
        }
    }
    w.extend_from_slice(&a.port().to_le_bytes());
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// FNV-1a, 32 bits: enough to tell a damaged record from an intact one (the store's own
/// checksums guard its files; this guards the value).
pub(crate) fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A cursor over a record's bytes.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    /// Nothing is left: a record must end where its last field does.
    pub(crate) fn finish(&self) -> Result<(), ReadError> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(ReadError::Malformed("trailing bytes")),
        }
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if self.0.len() < n {
            return Err(ReadError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ReadError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ReadError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ReadError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], ReadError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub(crate) fn addr(&mut self) -> Result<SocketAddr, ReadError> {
        let ip = match self.u8()? {
            4 => {
                let b = self.take(4)?;
                IpAddr::from([b[0], b[1], b[2], b[3]])
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                IpAddr::from(a)
            }
            _ => return Err(ReadError::Malformed("address family")),
        };
        let p = self.take(2)?;
        Ok(SocketAddr::new(ip, u16::from_le_bytes([p[0], p[1]])))
    }
}
