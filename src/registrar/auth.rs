//! Digest authentication of REGISTER by the registrar (RFC 3261 §22.4, §10.3 step 3): a
//! REGISTER without valid credentials for our realm gets 401 with a `WWW-Authenticate`
//! challenge per algorithm of [`RegistrarAuth::algorithms`], in that order (RFC 8760 §2.4:
//! most preferred first), all `qop=auth` with one nonce. The default is MD5 alone: baresip
//! 1.0 (libre) fails the whole authentication when any challenge names SHA-256, and SIPp
//! answers the first challenge whatever its algorithm ("authentication must use MD5").
//! Add SHA-256 (after MD5, for SIPp) where the clients know it: sipshard's own UAC picks
//! SHA-256 wherever it stands.
//!
//! Nonces are stateless: `<time><salt><mac>` in hex, where the time counts seconds from a
//! random origin (so a nonce tells nothing of the server's uptime), the salt is random per
//! challenge, and the mac is SHA-256 over a random secret, time, salt and realm. Every
//! shard holding a clone of one [`RegistrarAuth`] accepts the others' nonces. A nonce older
//! than [`RegistrarAuth::nonce_lifetime`] is answered `stale=true`: the client answers
//! again without asking its user.
//!
//! Replays: each shard keeps, in a bounded [`NonceCounts`], the highest nonce-count seen per
//! nonce; credentials whose `nc` is not above it are a replay (RFC 7616 §3.4.5), as is any
//! answer without `qop` (RFC 2069 style, which carries no count) unless
//! [`RegistrarAuth::allow_without_qop`] is set.

use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::message::{DigestAlgorithm, DigestCredentials, HeaderName, Message, digest_response};

/// Who may register, in which realm.
#[derive(Clone)]
pub struct RegistrarAuth {
    /// The realm of the challenges.
    pub realm: String,
    /// Users and their passwords.
    pub users: Vec<(String, String)>,
    /// Users who may change any address-of-record's bindings; every other user may change
    /// only its own (`sip:USER@domain`, RFC 3261 §10.3 step 3: else 403).
    pub admins: Vec<String>,
    /// How long a nonce stays good (default 5 minutes).
    pub nonce_lifetime: Duration,
    /// The algorithms challenged with, in order (default MD5 alone: see the module doc);
    /// credentials in another are refused.
    pub algorithms: Vec<DigestAlgorithm>,
    /// Accept answers without `qop` (RFC 2069 clients). Off by default: such an answer
    /// carries no nonce-count, so it can be replayed for the nonce's whole lifetime.
    pub allow_without_qop: bool,
    secret: [u8; 32],
    epoch: Instant,
    /// Where nonce time starts counting, drawn at random.
    origin: u64,
}

impl std::fmt::Debug for RegistrarAuth {
    /// Passwords and the secret are not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrarAuth")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("admins", &self.admins)
            .finish_non_exhaustive()
    }
}

/// What a REGISTER's credentials come to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthVerdict {
    /// Valid for this known user.
    Authorized(Box<[u8]>),
    /// Right, but for a nonce past its lifetime: challenge again with `stale=true`.
    Stale,
    /// No credentials for our realm: challenge.
    Challenge,
    /// Credentials for our realm that are wrong (unknown user, wrong response, a nonce
    /// we did not make, another URI, an algorithm or qop we did not offer), for the user
    /// they name: a failed authentication, to be counted.
    Failed(Box<[u8]>),
    /// Right credentials sent again with a nonce-count already seen (or none): a replay.
    /// Counted as a failure; challenged with `stale=true`, so that an honest client that
    /// slipped answers a fresh nonce without asking its user.
    Replayed(Box<[u8]>),
}

/// The highest nonce-count seen per nonce, for one shard; bounded.
#[derive(Debug)]
pub struct NonceCounts {
    /// Nonce (time and salt) → (highest nc, the nonce's time).
    seen: ahash::HashMap<u128, (u32, u64)>,
    max: usize,
}

impl NonceCounts {
    /// A table of at most `max` nonces.
    pub fn new(max: usize) -> Self {
        NonceCounts {
            seen: ahash::HashMap::default(),
            max,
        }
    }

    /// Nonces tracked.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records `nc` for `nonce` issued at `time`; false when it is not above the last one
    /// seen, or when the table is full of live nonces (the client gets a fresh one).
    fn advance(&mut self, nonce: u128, time: u64, nc: u32, oldest_live: u64) -> bool {
        if let Some((last, _)) = self.seen.get_mut(&nonce) {
            if nc <= *last {
                return false;
            }
            *last = nc;
            return true;
        }
        if self.seen.len() >= self.max {
            self.seen.retain(|_, (_, t)| *t >= oldest_live);
            if self.seen.len() >= self.max {
                return false;
            }
        }
        self.seen.insert(nonce, (nc, time));
        true
    }
}

impl RegistrarAuth {
    /// An authenticator for `realm` and `users`, its nonce clock starting at `now`, with a
    /// fresh random secret.
    pub fn new(
        realm: impl Into<String>,
        users: Vec<(String, String)>,
        now: Instant,
    ) -> Result<RegistrarAuth, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        let mut origin = [0u8; 4];
        getrandom::fill(&mut origin)?;
        Ok(RegistrarAuth {
            realm: realm.into(),
            users,
            admins: Vec::new(),
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec![DigestAlgorithm::Md5],
            allow_without_qop: false,
            secret,
            epoch: now,
            origin: u64::from(u32::from_le_bytes(origin)) << 8,
        })
    }

    /// Whether `user` may change the bindings of `aor_user` (the user part of the To
    /// URI; its domain is the registrar's to check).
    pub fn may_change(&self, user: &[u8], aor_user: Option<&[u8]>) -> bool {
        aor_user == Some(user) || self.admins.iter().any(|a| a.as_bytes() == user)
    }

    fn mac(&self, time: u64, salt: u64) -> [u8; 16] {
        let mut d = Sha256::new();
        d.update(self.secret);
        d.update(time.to_be_bytes());
        d.update(salt.to_be_bytes());
        d.update(self.realm.as_bytes());
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&d.finalize()[..16]);
        mac
    }

    /// Nonce time at `now`.
    fn time(&self, now: Instant) -> u64 {
        self.origin + now.saturating_duration_since(self.epoch).as_secs()
    }

    /// A fresh nonce with `salt`.
    fn nonce(&self, now: Instant, salt: u64) -> String {
        let time = self.time(now);
        let mut out = format!("{time:016x}{salt:016x}");
        for b in self.mac(time, salt) {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Reads a nonce of ours: its time and salt, when the mac holds.
    fn read_nonce(&self, nonce: &[u8]) -> Option<(u64, u64)> {
        if nonce.len() != 64 {
            return None;
        }
        let hex = |s: &[u8]| u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok();
        let (time, salt) = (hex(&nonce[..16])?, hex(&nonce[16..32])?);
        let want = self.mac(time, salt);
        let mut got = [0u8; 16];
        for (i, pair) in nonce[32..].chunks(2).enumerate() {
            got[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        // Constant time, as for the response.
        let diff = want.iter().zip(got).fold(0u8, |d, (a, b)| d | (a ^ b));
        (diff == 0).then_some((time, salt))
    }

    /// The `WWW-Authenticate` values of a 401, one per algorithm of
    /// [`RegistrarAuth::algorithms`] in order (RFC 8760 §2.4), with one nonce (random part
    /// `salt`).
    pub fn challenges(&self, now: Instant, stale: bool, salt: u64) -> Vec<String> {
        let nonce = self.nonce(now, salt);
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms
            .iter()
            .map(|algorithm| {
                let algorithm = match algorithm {
                    DigestAlgorithm::Sha256 => "SHA-256",
                    _ => "MD5",
                };
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={algorithm}, qop=\"auth\"{stale}",
                    self.realm
                )
            })
            .collect()
    }

    /// Checks the `Authorization` of `request` for our realm, and its nonce-count against
    /// `counts`.
    pub fn verify(&self, now: Instant, request: &Message, counts: &mut NonceCounts) -> AuthVerdict {
        let Some(credentials) = request
            .header_values(HeaderName::Authorization)
            .filter_map(DigestCredentials::parse)
            .find(|c| c.input.realm == self.realm.as_bytes())
        else {
            return AuthVerdict::Challenge;
        };
        let user = credentials.input.username;
        let failed = || AuthVerdict::Failed(Box::from(user));
        let Some(password) = self
            .users
            .iter()
            .find(|(name, _)| name.as_bytes() == user)
            .map(|(_, password)| password)
        else {
            return failed();
        };
        // Ours, and when it was made.
        let Some((issued, salt)) = self.read_nonce(credentials.input.nonce) else {
            return failed();
        };
        let (Some(method), Some(request_uri)) =
            (request.method_bytes(), request.request_uri_bytes())
        else {
            return failed();
        };
        // RFC 2617 §3.2.2.5: the credentials are for this request's URI. Only what we
        // offered: SHA-256 or MD5, not their -sess forms.
        let offered =
            self.algorithms.contains(&credentials.input.algorithm) && !credentials.input.session;
        if credentials.uri != request_uri || !offered {
            return failed();
        }
        let with_qop = match credentials.input.qop {
            Some(q) => q.eq_ignore_ascii_case(b"auth") || q.eq_ignore_ascii_case(b"auth-int"),
            None => false,
        };
        if credentials.input.qop.is_some() && !with_qop {
            return failed();
        }
        let want = digest_response(
            &credentials.input,
            password.as_bytes(),
            method,
            credentials.uri,
            request.body_bytes(),
        );
        if !same_hex(want.as_bytes(), credentials.response) {
            return failed();
        }
        let now_time = self.time(now);
        if now_time.saturating_sub(issued) > self.nonce_lifetime.as_secs() {
            return AuthVerdict::Stale;
        }
        if !with_qop {
            return match self.allow_without_qop {
                true => AuthVerdict::Authorized(Box::from(user)),
                false => AuthVerdict::Replayed(Box::from(user)),
            };
        }
        let nc = std::str::from_utf8(credentials.input.nc)
            .ok()
            .filter(|nc| nc.len() == 8)
            .and_then(|nc| u32::from_str_radix(nc, 16).ok());
        let Some(nc) = nc.filter(|&nc| nc > 0) else {
            return failed();
        };
        let oldest_live = now_time.saturating_sub(self.nonce_lifetime.as_secs());
        let key = (u128::from(issued) << 64) | u128::from(salt);
        if !counts.advance(key, issued, nc, oldest_live) {
            return AuthVerdict::Replayed(Box::from(user));
        }
        AuthVerdict::Authorized(Box::from(user))
    }
}

/// Whether two hex digests are equal (any case), in time that does not depend on where
/// they differ.
fn same_hex(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |diff, (x, y)| {
            diff | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
        }) == 0
}
