//! A confirmed dialog as it is kept in a store, so that it outlives its process: the values
//! RFC 3261 §12 says a dialog keeps, the call it belongs to, and the deadlines of its call
//! limit and session timer as wall-clock times.
//!
//! # What it owns, what it may not touch
//! The record's shape and its bytes: a versioned, checksummed encoding that a damaged or
//! foreign value fails to decode with a typed [`RecordError`] (never a panic). It knows
//! nothing of stores, shards or timers: the shard says what goes in and re-arms what comes
//! out.
//!
//! # The encoding
//! `SDR` and a version byte, then the fields in a fixed order (integers little-endian,
//! byte strings with a length prefix), then an FNV-1a checksum of everything before it.
//! A new field means a new version; a decoder reads the versions before its own (version
//! 1 had no held subscription and no REFERs sent) and refuses later ones.

use std::time::SystemTime;

use bytes::Bytes;

use super::{Dialog, DialogId, DialogState, Role};
use crate::codec::{
    ReadError, Reader, begin, from_unix_ms, put_addr, put_bytes, seal, unix_ms, unseal_versions,
};
use crate::transaction::Transport;

/// The first bytes of every record.
const MAGIC: &[u8; 3] = b"SDR";
/// The version this build writes (it reads this one and every earlier one).
pub const RECORD_VERSION: u8 = 2;
/// The oldest version this build reads.
const OLDEST_VERSION: u8 = 1;

/// A confirmed dialog and what its usages need to go on after a restart.
#[derive(Debug)]
pub struct DialogRecord {
    /// The dialog (its state is [`DialogState::Confirmed`]).
    pub dialog: Dialog,
    /// The call handle the application knows, when it differs from the dialog's id (a
    /// call we placed, named before any To tag existed).
    pub call: Option<DialogId>,
    /// When the call reaches its length limit, if it has one.
    pub call_limit_at: Option<SystemTime>,
    /// Its session timer (RFC 4028), if one was settled.
    pub session_timer: Option<SessionTimerRecord>,
    /// Its subscription usages (RFC 6665, RFC 3515) in both roles, and whether it is a
    /// dialog a SUBSCRIBE made (no INVITE usage).
    pub usages: UsageRecords,
}

/// A dialog's subscription usages in its record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageRecords {
    /// The dialog was made by a SUBSCRIBE (or a REFER outside a dialog) and ends with its
    /// last subscription.
    pub subscription_only: bool,
    /// The subscriptions we serve in it, as notifier.
    pub served: Vec<ServedRecord>,
    /// The subscription we hold in it, as subscriber.
    pub held: Option<HeldRecord>,
    /// The REFERs we sent in it whose implicit subscription is open: their CSeq numbers,
    /// which the peer's NOTIFYs name in their `id` (RFC 3515 §2.4.6).
    pub refers_sent: Vec<u32>,
}

impl UsageRecords {
    fn is_empty(&self) -> bool {
        !self.subscription_only
            && self.served.is_empty()
            && self.held.is_none()
            && self.refers_sent.is_empty()
    }
}

/// A subscription we hold (RFC 6665 §4.1) as kept across a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRecord {
    /// The Event value we subscribed with (package and parameters).
    pub event: Vec<u8>,
    /// The interval we ask for in each refresh, in seconds.
    pub expires: u32,
    /// When it lapses without a successful refresh.
    pub expires_at: SystemTime,
    /// When its timer is due: the next refresh, or its end.
    pub due_at: Option<SystemTime>,
    /// A 2xx or a NOTIFY accepted it.
    pub accepted: bool,
    /// `Expires: 0` is out: the last NOTIFY (or the timer) ends it.
    pub unsubscribing: bool,
    /// It is another notifier's answer to the same SUBSCRIBE (§4.1.2.4): its handle names
    /// the first dialog, not this one.
    pub fork: bool,
}

/// A subscription we serve (RFC 6665 §4.2) as kept across a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedRecord {
    /// The event package.
    pub package: Vec<u8>,
    /// The Event header's `id`, if any.
    pub id: Option<Vec<u8>>,
    /// When it lapses without a refresh.
    pub expires_at: SystemTime,
    /// A 2xx went to its SUBSCRIBE.
    pub accepted: bool,
    /// It is ending: every NOTIFY now says terminated.
    pub ending: bool,
}

/// What a running session timer needs across a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTimerRecord {
    /// The interval in seconds.
    pub interval: u32,
    /// We send the refreshes.
    pub we_refresh: bool,
    /// Min-SE for our refreshes.
    pub min_se: u32,
    /// The peer allows UPDATE.
    pub peer_update: bool,
    /// When the session ends without a refresh.
    pub expires_at: SystemTime,
    /// Our last SDP (for a re-INVITE refresh).
    pub local_sdp: Bytes,
}

/// Why bytes are not a record.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// It ends before its last field.
    Truncated,
    /// It does not start with the record's magic bytes.
    NotARecord,
    /// Written by another version of the format.
    Version(u8),
    /// The checksum does not match: bytes changed after it was written.
    Checksum,
    /// A field holds a value no writer produces.
    Malformed(&'static str),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Truncated => write!(f, "record truncated"),
            RecordError::NotARecord => write!(f, "not a dialog record"),
            RecordError::Version(v) => {
                write!(f, "record version {v} (this build reads {RECORD_VERSION})")
            }
            RecordError::Checksum => write!(f, "record checksum mismatch"),
            RecordError::Malformed(what) => write!(f, "malformed record field: {what}"),
        }
    }
}

impl std::error::Error for RecordError {}

impl From<ReadError> for RecordError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated => RecordError::Truncated,
            ReadError::Malformed(what) => RecordError::Malformed(what),
            ReadError::NotARecord => RecordError::NotARecord,
            ReadError::Version(v) => RecordError::Version(v),
            ReadError::Checksum => RecordError::Checksum,
        }
    }
}

// Flag bits of the record's flags byte.
const F_UAS: u8 = 1;
const F_SECURE: u8 = 1 << 1;
const F_TCP: u8 = 1 << 2;
const F_REMOTE_CSEQ: u8 = 1 << 3;
const F_CALL: u8 = 1 << 4;
const F_CALL_LIMIT: u8 = 1 << 5;
const F_SESSION_TIMER: u8 = 1 << 6;
/// Subscription usages follow (a count of served subscriptions, each as written).
const F_USAGES: u8 = 1 << 7;

impl DialogRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_record(
            &self.dialog,
            self.call.as_ref(),
            self.call_limit_at,
            self.session_timer.as_ref(),
            &self.usages,
        )
    }

    /// A record from its bytes.
    pub fn decode(bytes: &[u8]) -> Result<DialogRecord, RecordError> {
        let (mut r, version) = unseal_versions(bytes, MAGIC, OLDEST_VERSION..=RECORD_VERSION)?;
        let flags = r.u8()?;
        let local_cseq = r.u32()?;
        let remote_cseq = r.u32()?;
        let peer = r.addr()?;
        let id = key_to_id(r.bytes()?)?;
        let (local, remote, target, routes) = (r.bytes()?, r.bytes()?, r.bytes()?, r.bytes()?);
        let call = if flags & F_CALL != 0 {
            Some(key_to_id(r.bytes()?)?)
        } else {
            None
        };
        let call_limit_at = if flags & F_CALL_LIMIT != 0 {
            Some(from_unix_ms(r.u64()?))
        } else {
            None
        };
        let session_timer = if flags & F_SESSION_TIMER != 0 {
            let interval = r.u32()?;
            let min_se = r.u32()?;
            let bits = r.u8()?;
            let expires_at = from_unix_ms(r.u64()?);
            let local_sdp = Bytes::copy_from_slice(r.bytes()?);
            Some(SessionTimerRecord {
                interval,
                we_refresh: bits & 1 != 0,
                min_se,
                peer_update: bits & 2 != 0,
                expires_at,
                local_sdp,
            })
        } else {
            None
        };
        let mut usages = UsageRecords::default();
        if flags & F_USAGES != 0 {
            usages.subscription_only = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(RecordError::Malformed("usage kind")),
            };
            let count = r.u32()?;
            for _ in 0..count {
                let package = r.bytes()?.to_vec();
                let bits = r.u8()?;
                let id = if bits & 1 != 0 {
                    Some(r.bytes()?.to_vec())
                } else {
                    None
                };
                let expires_at = from_unix_ms(r.u64()?);
                usages.served.push(ServedRecord {
                    package,
                    id,
                    expires_at,
                    accepted: bits & 2 != 0,
                    ending: bits & 4 != 0,
                });
            }
            if version >= 2 {
                let refers = r.u32()?;
                for _ in 0..refers {
                    usages.refers_sent.push(r.u32()?);
                }
                usages.held = match r.u8()? {
                    0 => None,
                    1 => Some(read_held(&mut r)?),
                    _ => return Err(RecordError::Malformed("held subscription")),
                };
            }
        }
        r.finish()?;
        let role = if flags & F_UAS != 0 {
            Role::Uas
        } else {
            Role::Uac
        };
        let route_set: Vec<&[u8]> = if routes.is_empty() {
            Vec::new()
        } else {
            vec![routes]
        };
        let dialog = Dialog::new(
            id,
            role,
            DialogState::Confirmed,
            local_cseq,
            (flags & F_REMOTE_CSEQ != 0).then_some(remote_cseq),
            local,
            remote,
            target,
            &route_set,
            flags & F_SECURE != 0,
            peer,
        )
        .with_transport(if flags & F_TCP != 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        });
        Ok(DialogRecord {
            dialog,
            call,
            call_limit_at,
            session_timer,
            usages,
        })
    }
}

/// The bytes of the record of `dialog` (see [`DialogRecord`]), from borrowed parts: a
/// shard writes its live dialogs without copying them first.
pub fn encode_record(
    dialog: &Dialog,
    call: Option<&DialogId>,
    call_limit_at: Option<SystemTime>,
    session_timer: Option<&SessionTimerRecord>,
    usages: &UsageRecords,
) -> Vec<u8> {
    let d = dialog;
    let mut w = begin(MAGIC, RECORD_VERSION, 256 + d.strings.len());
    let has_usages = !usages.is_empty();
    let flags = [
        (d.role == Role::Uas, F_UAS),
        (d.secure, F_SECURE),
        (d.transport == Transport::Tcp, F_TCP),
        (d.remote_cseq.is_some(), F_REMOTE_CSEQ),
        (call.is_some(), F_CALL),
        (call_limit_at.is_some(), F_CALL_LIMIT),
        (session_timer.is_some(), F_SESSION_TIMER),
        (has_usages, F_USAGES),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |flags, (_, bit)| flags | bit);
    w.push(flags);
    w.extend_from_slice(&d.local_cseq.to_le_bytes());
    w.extend_from_slice(&d.remote_cseq.unwrap_or(0).to_le_bytes());
    put_addr(&mut w, d.peer);
    put_bytes(&mut w, d.id.key());
    put_bytes(&mut w, d.local());
    put_bytes(&mut w, d.remote());
    put_bytes(&mut w, d.remote_target());
    put_bytes(&mut w, d.route_set());
    if let Some(call) = call {
        put_bytes(&mut w, call.key());
    }
    if let Some(at) = call_limit_at {
        w.extend_from_slice(&unix_ms(at).to_le_bytes());
    }
    if let Some(st) = session_timer {
        w.extend_from_slice(&st.interval.to_le_bytes());
        w.extend_from_slice(&st.min_se.to_le_bytes());
        w.push(u8::from(st.we_refresh) | u8::from(st.peer_update) << 1);
        w.extend_from_slice(&unix_ms(st.expires_at).to_le_bytes());
        put_bytes(&mut w, &st.local_sdp);
    }
    if has_usages {
        w.push(u8::from(usages.subscription_only));
        w.extend_from_slice(&(usages.served.len() as u32).to_le_bytes());
        for s in &usages.served {
            put_bytes(&mut w, &s.package);
            w.push(u8::from(s.id.is_some()) | u8::from(s.accepted) << 1 | u8::from(s.ending) << 2);
            if let Some(id) = &s.id {
                put_bytes(&mut w, id);
            }
            w.extend_from_slice(&unix_ms(s.expires_at).to_le_bytes());
        }
        w.extend_from_slice(&(usages.refers_sent.len() as u32).to_le_bytes());
        for cseq in &usages.refers_sent {
            w.extend_from_slice(&cseq.to_le_bytes());
        }
        match &usages.held {
            None => w.push(0),
            Some(h) => {
                w.push(1);
                put_bytes(&mut w, &h.event);
                w.extend_from_slice(&h.expires.to_le_bytes());
                w.extend_from_slice(&unix_ms(h.expires_at).to_le_bytes());
                w.push(
                    u8::from(h.accepted)
                        | u8::from(h.unsubscribing) << 1
                        | u8::from(h.fork) << 2
                        | u8::from(h.due_at.is_some()) << 3,
                );
                if let Some(at) = h.due_at {
                    w.extend_from_slice(&unix_ms(at).to_le_bytes());
                }
            }
        }
    }
    seal(w)
}

fn read_held(r: &mut Reader<'_>) -> Result<HeldRecord, RecordError> {
    let event = r.bytes()?.to_vec();
    let expires = r.u32()?;
    let expires_at = from_unix_ms(r.u64()?);
    let bits = r.u8()?;
    if bits > 0b1111 {
        return Err(RecordError::Malformed("held subscription flags"));
    }
    let due_at = if bits & 8 != 0 {
        Some(from_unix_ms(r.u64()?))
    } else {
        None
    };
    Ok(HeldRecord {
        event,
        expires,
        expires_at,
        due_at,
        accepted: bits & 1 != 0,
        unsubscribing: bits & 2 != 0,
        fork: bits & 4 != 0,
    })
}

/// The Call-ID of the record `bytes`, read without decoding the rest (a restore sorts
/// records onto shards by it). `None` when the bytes are not a record of this version.
pub fn record_call_id(bytes: &[u8]) -> Option<&[u8]> {
    super::key_call_id(record_dialog_key(bytes)?)
}

/// The dialog key (Call-ID and tags, length-prefixed) of the record `bytes`, read without decoding the
/// rest. `None` when the bytes are not a record of this version.
pub fn record_dialog_key(bytes: &[u8]) -> Option<&[u8]> {
    let head = MAGIC.len() + 1 + 1 + 4 + 4;
    let mut r = Reader(bytes.get(head..)?);
    r.addr().ok()?;
    r.bytes().ok()
}

fn key_to_id(key: &[u8]) -> Result<DialogId, RecordError> {
    let bad = RecordError::Malformed("dialog key");
    if key.len() < 4 {
        return Err(bad);
    }
    let call_id = usize::from(u16::from_le_bytes([key[0], key[1]]));
    let local = usize::from(u16::from_le_bytes([key[2], key[3]]));
    let rest = &key[4..];
    if call_id + local > rest.len() {
        return Err(bad);
    }
    let (call_id, rest) = rest.split_at(call_id);
    let (local, remote) = rest.split_at(local);
    Ok(DialogId::new(call_id, local, remote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record() -> DialogRecord {
        let dialog = Dialog::new(
            DialogId::new(b"call-1@host", b"ours", b"theirs"),
            Role::Uac,
            DialogState::Confirmed,
            7,
            Some(3),
            b"<sip:a@h>;tag=ours",
            b"<sip:b@h>;tag=theirs",
            b"sip:b@10.0.0.2:5070",
            &[b"<sip:p1;lr>", b"<sip:p2;lr>"],
            false,
            "10.0.0.2:5070".parse().unwrap(),
        )
        .with_transport(Transport::Tcp);
        DialogRecord {
            dialog,
            call: Some(DialogId::new(b"call-1@host", b"ours", b"")),
            call_limit_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            session_timer: Some(SessionTimerRecord {
                interval: 1800,
                we_refresh: true,
                min_se: 90,
                peer_update: true,
                expires_at: UNIX_EPOCH + Duration::from_millis(1_700_000_900_000),
                local_sdp: Bytes::from_static(b"v=0\r\n"),
            }),
            usages: UsageRecords {
                subscription_only: false,
                served: vec![
                    ServedRecord {
                        package: b"refer".to_vec(),
                        id: Some(b"7".to_vec()),
                        expires_at: UNIX_EPOCH + Duration::from_millis(1_700_000_060_000),
                        accepted: true,
                        ending: false,
                    },
                    ServedRecord {
                        package: b"dialog".to_vec(),
                        id: None,
                        expires_at: UNIX_EPOCH + Duration::from_millis(1_700_003_600_000),
                        accepted: false,
                        ending: true,
                    },
                ],
                held: Some(HeldRecord {
                    event: b"presence;id=4".to_vec(),
                    expires: 600,
                    expires_at: UNIX_EPOCH + Duration::from_millis(1_700_000_600_000),
                    due_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_540_000)),
                    accepted: true,
                    unsubscribing: false,
                    fork: true,
                }),
                refers_sent: vec![8, 11],
            },
        }
    }

    /// A version-1 record (written by the build before held subscriptions were kept) of
    /// [`record`] without its held subscription and REFERs.
    const VERSION_1: &str = concat!(
        "53445201fc0700000003000000040a000002ce13190000000b00040063616c6c2d3140686f73746f",
        "757273746865697273120000003c7369703a6140683e3b7461673d6f757273140000003c7369703a",
        "6240683e3b7461673d746865697273130000007369703a624031302e302e302e323a353037301700",
        "00003c7369703a70313b6c723e2c3c7369703a70323b6c723e130000000b00040063616c6c2d3140",
        "686f73746f7572737b68e5cf8b010000080700005a00000003a023f3cf8b01000005000000763d30",
        "0d0a00020000000500000072656665720301000000376052e6cf8b010000060000006469616c6f67",
        "0480561cd08b010000084c9b55",
    );

    #[test]
    fn a_version_1_record_still_decodes() {
        let bytes: Vec<u8> = (0..VERSION_1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&VERSION_1[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(bytes[3], 1);
        let back = DialogRecord::decode(&bytes).unwrap();
        let mut want = record();
        want.usages.held = None;
        want.usages.refers_sent.clear();
        assert_eq!(back.usages, want.usages);
        assert_eq!(back.session_timer, want.session_timer);
        assert_eq!(back.dialog.id, want.dialog.id);
        assert_eq!(back.dialog.local_cseq, 7);
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        let original = record();
        let bytes = original.encode();
        assert_eq!(record_call_id(&bytes), Some(&b"call-1@host"[..]));
        let back = DialogRecord::decode(&bytes).unwrap();
        let (a, b) = (&original.dialog, &back.dialog);
        assert_eq!(a.id, b.id);
        assert_eq!(
            (
                a.role,
                a.local_cseq,
                a.remote_cseq,
                a.secure,
                a.peer,
                a.transport
            ),
            (
                b.role,
                b.local_cseq,
                b.remote_cseq,
                b.secure,
                b.peer,
                b.transport
            )
        );
        assert_eq!(b.state, DialogState::Confirmed);
        assert_eq!(a.local(), b.local());
        assert_eq!(a.remote(), b.remote());
        assert_eq!(a.remote_target(), b.remote_target());
        assert_eq!(a.route_set(), b.route_set());
        assert_eq!(original.call, back.call);
        assert_eq!(original.call_limit_at, back.call_limit_at);
        assert_eq!(original.session_timer, back.session_timer);
        assert_eq!(original.usages, back.usages);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error_not_a_panic() {
        let bytes = record().encode();
        for len in 0..bytes.len() {
            assert!(DialogRecord::decode(&bytes[..len]).is_err(), "length {len}");
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(DialogRecord::decode(&damaged).is_err(), "byte {i}");
        }
        let mut other = bytes.clone();
        other[3] = RECORD_VERSION + 1;
        assert_eq!(
            DialogRecord::decode(&other).unwrap_err(),
            RecordError::Version(RECORD_VERSION + 1)
        );
    }
}
