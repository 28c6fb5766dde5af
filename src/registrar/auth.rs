//! Digest authentication of REGISTER by the registrar (RFC 3261 §22.4, §10.3 step 3): a
//! REGISTER without valid credentials for our realm gets 401 with a `WWW-Authenticate`
//! challenge (MD5, `qop=auth`).
//!
//! Nonces are stateless: `<seconds>.<mac>`, where the seconds count from the
//! authenticator's creation and the mac is SHA-256 over a random secret, the seconds and
//! the realm. Every shard holding a clone of one [`RegistrarAuth`] accepts the others'
//! nonces, and none stores one. A nonce older than [`RegistrarAuth::nonce_lifetime`] is
//! answered `stale=true`: the client answers again without asking its user. Not checked:
//! nonce counts (a replayed REGISTER within a nonce's lifetime is accepted, as RFC 2617
//! allows a server to do).

use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::message::{DigestCredentials, HeaderName, Message, digest_response};

/// Who may register, in which realm.
#[derive(Clone)]
pub struct RegistrarAuth {
    /// The realm of the challenges.
    pub realm: String,
    /// Users and their passwords.
    pub users: Vec<(String, String)>,
    /// How long a nonce stays good (default 5 minutes).
    pub nonce_lifetime: Duration,
    secret: [u8; 32],
    epoch: Instant,
}

impl std::fmt::Debug for RegistrarAuth {
    /// Passwords and the secret are not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrarAuth")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// What a REGISTER's credentials come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthVerdict {
    /// Valid for a known user.
    Authorized,
    /// Right, but for a nonce past its lifetime: challenge again with `stale=true`.
    Stale,
    /// None for our realm, or wrong: challenge.
    Challenge,
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
        Ok(RegistrarAuth {
            realm: realm.into(),
            users,
            nonce_lifetime: Duration::from_secs(300),
            secret,
            epoch: now,
        })
    }

    fn mac(&self, seconds: u64) -> String {
        let mut d = Sha256::new();
        d.update(self.secret);
        d.update(seconds.to_be_bytes());
        d.update(self.realm.as_bytes());
        d.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A fresh nonce.
    fn nonce(&self, now: Instant) -> String {
        let seconds = now.saturating_duration_since(self.epoch).as_secs();
        format!("{seconds:x}.{}", self.mac(seconds))
    }

    /// The `WWW-Authenticate` value of a 401.
    pub fn challenge(&self, now: Instant, stale: bool) -> String {
        let mut value = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"",
            self.realm,
            self.nonce(now)
        );
        if stale {
            value.push_str(", stale=true");
        }
        value
    }

    /// Checks the `Authorization` of `request` for our realm.
    pub fn verify(&self, now: Instant, request: &Message) -> AuthVerdict {
        let Some(credentials) = request
            .header_values(HeaderName::Authorization)
            .filter_map(DigestCredentials::parse)
            .find(|c| c.input.realm == self.realm.as_bytes())
        else {
            return AuthVerdict::Challenge;
        };
        let Some(password) = self
            .users
            .iter()
            .find(|(user, _)| user.as_bytes() == credentials.input.username)
            .map(|(_, password)| password)
        else {
            return AuthVerdict::Challenge;
        };
        // Ours, and when it was made.
        let Some(issued) = std::str::from_utf8(credentials.input.nonce)
            .ok()
            .and_then(|n| n.split_once('.'))
            .filter(|(seconds, mac)| {
                u64::from_str_radix(seconds, 16).is_ok_and(|s| self.mac(s) == *mac)
            })
            .and_then(|(seconds, _)| u64::from_str_radix(seconds, 16).ok())
        else {
            return AuthVerdict::Challenge;
        };
        let (Some(method), Some(request_uri)) =
            (request.method_bytes(), request.request_uri_bytes())
        else {
            return AuthVerdict::Challenge;
        };
        // RFC 2617 §3.2.2.5: the credentials are for this request's URI.
        if credentials.uri != request_uri {
            return AuthVerdict::Challenge;
        }
        let want = digest_response(
            &credentials.input,
            password.as_bytes(),
            method,
            credentials.uri,
            request.body_bytes(),
        );
        if !same_hex(want.as_bytes(), credentials.response) {
            return AuthVerdict::Challenge;
        }
        let age = now
            .saturating_duration_since(self.epoch)
            .as_secs()
            .saturating_sub(issued);
        if age > self.nonce_lifetime.as_secs() {
            return AuthVerdict::Stale;
        }
        AuthVerdict::Authorized
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
