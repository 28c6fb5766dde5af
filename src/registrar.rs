//! A registrar's binding table (RFC 3261 §10.3): bindings per address-of-record, with
//! expiry, q, and the Call-ID/CSeq ordering that keeps delayed REGISTERs from undoing newer
//! ones.
//!
//! # What it owns, what it may not touch
//! The bindings of one shard (REGISTERs are sharded by Call-ID like everything else, so a UA
//! that keeps its Call-ID, as §10.2 asks, always reaches the same table). Sans-IO: time comes
//! in as `now`; the shard turns [`Registrar::next_expiry`] into a wheel timer and calls
//! [`Registrar::expire`] when it fires. With a [`RegistrarAuth`], REGISTERs are
//! authenticated first (Digest, `auth` module).

mod auth;
mod record;

pub use auth::{AuthVerdict, NonceCounts, RegistrarAuth};
pub(crate) use record::MAGIC as BINDINGS_MAGIC;
pub use record::{bindings_record_aor, bindings_record_latest_expiry};

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::message::{Contact, Message, Uri};

/// Registrar policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// The domains whose bindings we keep (host names or IP literals, compared without
    /// case and without port): a REGISTER whose Request-URI or To names another gets 404
    /// (RFC 3261 §10.3 steps 1 and 5). Empty: any domain (the library's default; the
    /// server fills it with its listen address and that host's names).
    pub domains: Vec<String>,
    /// Shortest interval accepted; shorter (but non-zero, below an hour) gets 423.
    pub min_expires: u32,
    /// Longest interval granted; longer requests are shortened to it.
    pub max_expires: u32,
    /// Interval when the request names none.
    pub default_expires: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            domains: Vec::new(),
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
        }
    }
}

/// One binding of an address-of-record to a contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI as registered.
    pub contact: Box<[u8]>,
    /// Call-ID of the REGISTER that last wrote it.
    pub call_id: Box<[u8]>,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// When it lapses.
    pub expires_at: Instant,
    /// Preference in thousandths, when given.
    pub q: Option<u16>,
}

/// One binding as a 200 to REGISTER lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The contact URI.
    pub contact: Box<[u8]>,
    /// Seconds left.
    pub expires: u32,
    /// Preference in thousandths, when given.
    pub q: Option<u16>,
}

/// What the registrar answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 200 OK listing every current binding of the AOR.
    Ok(Vec<Granted>),
    /// 423 Interval Too Brief with this Min-Expires.
    IntervalTooBrief(u32),
    /// A final error status: 400 (malformed, not a SIP AOR, `*` misused) or 500 (an
    /// out-of-order REGISTER for an existing binding).
    Error(u16),
}

/// The binding table.
#[derive(Debug, Default)]
pub struct Registrar {
    config: RegistrarConfig,
    aors: ahash::HashMap<Box<[u8]>, Vec<Binding>>,
    /// (expiry, AOR) pairs; stale entries are skipped when they come up.
    expiries: BinaryHeap<Reverse<(Instant, Box<[u8]>)>>,
}

impl Registrar {
    /// An empty table.
    pub fn new(config: RegistrarConfig) -> Self {
        Registrar {
            config,
            ..Registrar::default()
        }
    }

    /// Whether the Request-URI and the To of `request` both name one of our domains
    /// (always, when none is configured): RFC 3261 §10.3 steps 1 and 5, else 404.
    pub fn serves(&self, request: &Message) -> bool {
        if self.config.domains.is_empty() {
            return true;
        }
        let ours = |uri: Option<Uri<'_>>| match uri {
            Some(Uri::Sip(u)) => {
                let host = host_text(&u.host);
                self.config
                    .domains
                    .iter()
                    .any(|d| d.as_bytes().eq_ignore_ascii_case(&host))
            }
            _ => false,
        };
        ours(request.request_uri()) && ours(request.to_header().ok().map(|to| to.uri))
    }

    /// Number of addresses-of-record with bindings.
    pub fn aor_count(&self) -> usize {
        self.aors.len()
    }

    /// The addresses-of-record with bindings.
    pub fn aors(&self) -> impl Iterator<Item = &[u8]> {
        self.aors.keys().map(|aor| &aor[..])
    }

    /// The bindings of an AOR (canonical form, see [`aor_of`]).
    pub fn bindings(&self, aor: &[u8]) -> &[Binding] {
        self.aors.get(aor).map_or(&[], Vec::as_slice)
    }

    /// When the next binding lapses.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.peek().map(|Reverse((t, _))| *t)
    }

    /// Adds restored bindings of `aor` (none lapsed) to the table, beside any it has.
    fn insert_bindings(&mut self, aor: Box<[u8]>, bindings: Vec<Binding>) {
        if bindings.is_empty() {
            return;
        }
        for b in &bindings {
            self.expiries.push(Reverse((b.expires_at, aor.clone())));
        }
        let list = self.aors.entry(aor).or_default();
        for b in bindings {
            list.retain(|old| old.contact != b.contact);
            list.push(b);
        }
    }

    /// Forgets `aor`'s bindings here (another copy, a shared store's, is about to take
    /// their place); nothing is written anywhere.
    pub fn forget(&mut self, aor: &[u8]) {
        self.aors.remove(aor);
    }

    /// Drops every binding that lapsed by `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.expiries.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, aor))) = self.expiries.pop() else {
                break;
            };
            if let Some(list) = self.aors.get_mut(&aor) {
                list.retain(|b| b.expires_at > now);
                if list.is_empty() {
                    self.aors.remove(&aor);
                }
            }
        }
    }

    /// Processes a REGISTER (§10.3 steps 5–8; authentication and domain checks are the
    /// caller's). All contacts are checked before any binding changes: a failing request
    /// changes nothing.
    pub fn register(&mut self, now: Instant, request: &Message) -> RegisterOutcome {
        self.expire(now);
        let Some(aor) = request.to_header().ok().and_then(|to| aor_of(&to.uri)) else {
            return RegisterOutcome::Error(400);
        };
        let (Some(call_id), Ok(cseq)) = (request.call_id(), request.cseq()) else {
            return RegisterOutcome::Error(400);
        };
        let Ok(contacts) = request.contacts().collect::<Result<Vec<_>, _>>() else {
            return RegisterOutcome::Error(400);
        };
        let header_expires = match request.expires() {
            Ok(e) => e,
            Err(_) => return RegisterOutcome::Error(400),
        };
        let existing = self.aors.get(aor.as_slice()).map_or(&[][..], Vec::as_slice);
        // May this REGISTER (Call-ID, CSeq) change `b`? Same Call-ID needs a higher CSeq.
        let in_order = |b: &Binding| *b.call_id != *call_id || cseq.seq > b.cseq;

        if contacts.iter().any(|c| matches!(c, Contact::Star)) {
            // §10.2.2: `*` only alone and with Expires: 0.
            if contacts.len() != 1 || header_expires != Some(0) {
                return RegisterOutcome::Error(400);
            }
            if !existing.iter().all(in_order) {
                return RegisterOutcome::Error(500);
            }
            self.aors.remove(aor.as_slice());
            return RegisterOutcome::Ok(Vec::new());
        }

        // First pass: intervals and ordering, nothing changed yet.
        let mut changes = Vec::with_capacity(contacts.len());
        for c in &contacts {
            let Some(addr) = c.addr() else {
                return RegisterOutcome::Error(400);
            };
            let Ok(param) = c.expires() else {
                return RegisterOutcome::Error(400);
            };
            let asked = param
                .or(header_expires)
                .unwrap_or(self.config.default_expires);
            if asked > 0 && asked < 3600 && asked < self.config.min_expires {
                return RegisterOutcome::IntervalTooBrief(self.config.min_expires);
            }
            let granted = asked.min(self.config.max_expires);
            if let Some(b) = existing.iter().find(|b| *b.contact == *addr.uri_bytes)
                && !in_order(b)
            {
                return RegisterOutcome::Error(500);
            }
            changes.push((addr.uri_bytes, granted, c.q().ok().flatten()));
        }

        // Second pass: apply.
        let list = self.aors.entry(aor.clone().into_boxed_slice()).or_default();
        for (uri, granted, q) in changes {
            list.retain(|b| *b.contact != *uri);
            if granted > 0 {
                let expires_at = now + Duration::from_secs(u64::from(granted));
                list.push(Binding {
                    contact: uri.into(),
                    call_id: call_id.into(),
                    cseq: cseq.seq,
                    expires_at,
                    q,
                });
                self.expiries
                    .push(Reverse((expires_at, aor.clone().into_boxed_slice())));
            }
        }
        let current = list
            .iter()
            .map(|b| {
                let left = b
                    .expires_at
                    .saturating_duration_since(now)
                    .as_millis()
                    .div_ceil(1000) as u64;
                Granted {
                    contact: b.contact.clone(),
                    expires: left.min(u64::from(u32::MAX)) as u32,
                    q: b.q,
                }
            })
            .collect();
        if list.is_empty() {
            self.aors.remove(aor.as_slice());
        }
        RegisterOutcome::Ok(current)
    }
}

/// The canonical address-of-record of a SIP/SIPS URI: scheme, user and host (host in lower
/// case), port when given; parameters and headers dropped. `None` for other schemes.
pub fn aor_of(uri: &Uri<'_>) -> Option<Vec<u8>> {
    let Uri::Sip(u) = uri else { return None };
    let mut aor = Vec::with_capacity(48);
    aor.extend_from_slice(if u.secure { b"sips:" } else { b"sip:" });
    if let Some(user) = u.user {
        aor.extend_from_slice(user);
        aor.push(b'@');
    }
    aor.extend_from_slice(&host_text(&u.host));
    if let Some(port) = u.port {
        aor.extend_from_slice(format!(":{port}").as_bytes());
    }
    Some(aor)
}

/// A host as an AOR writes it: a name in lowercase, an IPv6 address in brackets.
fn host_text(host: &crate::message::Host<'_>) -> Vec<u8> {
    match host {
        crate::message::Host::Domain(d) => d.to_ascii_lowercase(),
        crate::message::Host::V4(a) => a.to_string().into_bytes(),
        crate::message::Host::V6(a) => format!("[{a}]").into_bytes(),
    }
}

/// The Contact header values of a 200 to REGISTER: `<uri>;expires=N[;q=0.x]`, comma-joined.
pub fn contact_header(bindings: &[Granted]) -> Vec<u8> {
    let mut v = Vec::new();
    for (
        i,
        Granted {
            contact: uri,
            expires: left,
            q,
        },
    ) in bindings.iter().enumerate()
    {
        if i > 0 {
            v.extend_from_slice(b", ");
        }
        v.push(b'<');
        v.extend_from_slice(uri);
        v.extend_from_slice(format!(">;expires={left}").as_bytes());
        if let Some(q) = q {
            v.extend_from_slice(format!(";q={}.{:03}", q / 1000, q % 1000).as_bytes());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn register(call_id: &str, cseq: u32, contacts: &str, expires: Option<u32>) -> Message {
        let expires = expires.map_or(String::new(), |e| format!("Expires: {e}\r\n"));
        let contact = if contacts.is_empty() {
            String::new()
        } else {
            format!("Contact: {contacts}\r\n")
        };
        Message::parse(Bytes::from(format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK{call_id}{cseq}\r\n\
             To: <sip:Bob@EXAMPLE.com>\r\nFrom: <sip:bob@example.com>;tag=1\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n{contact}{expires}Content-Length: 0\r\n\r\n"
        )))
        .unwrap()
    }

    const AOR: &[u8] = b"sip:Bob@example.com";

    #[test]
    fn bindings_are_added_refreshed_listed_and_removed() {
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarConfig::default());
        let out = r.register(
            t0,
            &register(
                "c1",
                1,
                "<sip:bob@192.0.2.4>;q=0.7, <sip:bob@192.0.2.5>",
                Some(600),
            ),
        );
        let RegisterOutcome::Ok(list) = out else {
            panic!("{out:?}")
        };
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0],
            Granted {
                contact: b"sip:bob@192.0.2.4".to_vec().into(),
                expires: 600,
                q: Some(700)
            }
        );
        assert_eq!(r.bindings(AOR).len(), 2, "host canonicalised to lower case");
        // A query (no Contact) lists the bindings unchanged.
        let RegisterOutcome::Ok(list) = r.register(t0, &register("c1", 2, "", None)) else {
            panic!()
        };
        assert_eq!(list.len(), 2);
        // Expires 0 on one contact removes it.
        r.register(
            t0,
            &register("c1", 3, "<sip:bob@192.0.2.5>;expires=0", None),
        );
        assert_eq!(r.bindings(AOR).len(), 1);
        assert_eq!(
            contact_header(&[Granted {
                contact: b"sip:a@b".to_vec().into(),
                expires: 60,
                q: Some(500)
            }]),
            b"<sip:a@b>;expires=60;q=0.500"
        );
    }

    #[test]
    fn out_of_order_registers_fail_and_change_nothing() {
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarConfig::default());
        r.register(t0, &register("c1", 5, "<sip:bob@192.0.2.4>", Some(600)));
        assert_eq!(
            r.register(
                t0,
                &register("c1", 4, "<sip:bob@192.0.2.4>;expires=0", None)
            ),
            RegisterOutcome::Error(500)
        );
        assert_eq!(r.bindings(AOR).len(), 1);
        // Another Call-ID may replace it regardless of CSeq.
        assert!(matches!(
            r.register(t0, &register("c2", 1, "<sip:bob@192.0.2.4>", Some(300))),
            RegisterOutcome::Ok(_)
        ));
        assert_eq!(r.bindings(AOR)[0].call_id.as_ref(), b"c2");
    }

    #[test]
    fn star_needs_expires_zero_and_removes_all() {
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarConfig::default());
        r.register(
            t0,
            &register(
                "c1",
                1,
                "<sip:bob@192.0.2.4>, <sip:bob@192.0.2.5>",
                Some(600),
            ),
        );
        assert_eq!(
            r.register(t0, &register("c1", 2, "*", None)),
            RegisterOutcome::Error(400)
        );
        assert_eq!(
            r.register(t0, &register("c1", 3, "*", Some(0))),
            RegisterOutcome::Ok(vec![])
        );
        assert_eq!(r.aor_count(), 0);
    }

    #[test]
    fn too_brief_intervals_get_423_and_long_ones_are_capped() {
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarConfig::default());
        assert_eq!(
            r.register(t0, &register("c1", 1, "<sip:bob@192.0.2.4>", Some(10))),
            RegisterOutcome::IntervalTooBrief(60)
        );
        assert_eq!(r.aor_count(), 0);
        let RegisterOutcome::Ok(list) =
            r.register(t0, &register("c1", 2, "<sip:bob@192.0.2.4>", Some(100_000)))
        else {
            panic!()
        };
        assert_eq!(list[0].expires, 7200);
    }

    #[test]
    fn bindings_expire_on_time() {
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarConfig::default());
        r.register(
            t0,
            &register(
                "c1",
                1,
                "<sip:bob@192.0.2.4>;expires=60, <sip:bob@192.0.2.5>;expires=120",
                None,
            ),
        );
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(60)));
        r.expire(t0 + Duration::from_secs(59));
        assert_eq!(r.bindings(AOR).len(), 2);
        r.expire(t0 + Duration::from_secs(60));
        assert_eq!(r.bindings(AOR).len(), 1);
        r.expire(t0 + Duration::from_secs(120));
        assert_eq!(r.aor_count(), 0);
        assert_eq!(r.next_expiry(), None);
    }

    #[test]
    fn non_sip_aors_are_refused() {
        // RFC 4475 §3.3.4: a registrar answers 400 when To is not a SIP/SIPS URI.
        let m = Message::parse(Bytes::from_static(
            b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKx\r\n\
To: isbn:2983792873\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let mut r = Registrar::new(RegistrarConfig::default());
        assert_eq!(r.register(Instant::now(), &m), RegisterOutcome::Error(400));
    }
}
