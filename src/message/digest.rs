//! HTTP Digest answers to a SIP challenge (RFC 3261 §22.4, RFC 2617 §3.2.2, RFC 7616,
//! RFC 8760): what a UAC puts in `Authorization` or `Proxy-Authorization` after a 401 or
//! 407. MD5 and SHA-256, each also in its `-sess` form; `qop` `auth` or `auth-int`, or
//! none (RFC 2069 compatibility).
//!
//! Pure computation over the challenge's bytes: which credentials to use, and resending
//! the request, belong to the shard.

use md5::Md5;
use sha2::{Digest as _, Sha256};

use super::values::Auth;

/// A Digest hash algorithm sipshard can answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestAlgorithm {
    /// MD5 (RFC 2617; the default when a challenge names none).
    Md5,
    /// SHA-256 (RFC 7616, for SIP RFC 8760).
    Sha256,
}

/// One Digest challenge, read from a `WWW-Authenticate` or `Proxy-Authenticate` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestChallenge<'a> {
    /// The protection space the credentials belong to.
    pub realm: &'a [u8],
    /// The server's nonce.
    pub nonce: &'a [u8],
    /// Echoed back unchanged, when present.
    pub opaque: Option<&'a [u8]>,
    /// The hash.
    pub algorithm: DigestAlgorithm,
    /// `-sess`: HA1 also covers the nonces.
    pub session: bool,
    /// The `algorithm` token as written, echoed back (`None` when the challenge had none).
    pub algorithm_token: Option<&'a [u8]>,
    /// The `qop` chosen: `auth` when offered, else `auth-int`, else none.
    pub qop: Option<&'static str>,
    /// `stale=true`: the nonce expired, the credentials were right.
    pub stale: bool,
}

impl<'a> DigestChallenge<'a> {
    /// Reads a challenge value; `None` for another scheme, no realm or nonce, or an
    /// algorithm or a qop list sipshard cannot answer.
    pub fn parse(value: &'a [u8]) -> Option<DigestChallenge<'a>> {
        let auth = digest_auth(value)?;
        let algorithm_token = auth.param("algorithm");
        let (algorithm, session) = algorithm_of(algorithm_token)?;
        let qop = match auth.param("qop") {
            None => None,
            Some(list) => {
                let offered = |name: &[u8]| {
                    list.split(|&b| b == b',')
                        .any(|q| q.trim_ascii().eq_ignore_ascii_case(name))
                };
                if offered(b"auth") {
                    Some("auth")
                } else if offered(b"auth-int") {
                    Some("auth-int")
                } else {
                    return None;
                }
            }
        };
        Some(DigestChallenge {
            realm: auth.param("realm")?,
            nonce: auth.param("nonce")?,
            opaque: auth.param("opaque"),
            algorithm,
            session,
            algorithm_token,
            qop,
            stale: auth
                .param("stale")
                .is_some_and(|s| s.eq_ignore_ascii_case(b"true")),
        })
    }

    /// The credentials value answering this challenge for `method` to `uri` (the
    /// Request-URI as sent) with `body` (for `auth-int`), as `username`/`password`, with
    /// client nonce `cnonce` and nonce count 1.
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &[u8],
        uri: &[u8],
        body: &[u8],
        cnonce: &str,
    ) -> String {
        let nc = "00000001";
        let response = digest_response(
            &DigestInput {
                algorithm: self.algorithm,
                session: self.session,
                username: username.as_bytes(),
                realm: self.realm,
                nonce: self.nonce,
                cnonce: cnonce.as_bytes(),
                nc: nc.as_bytes(),
                qop: self.qop.map(str::as_bytes),
            },
            password.as_bytes(),
            method,
            uri,
            body,
        );
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut value = format!(
            "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\"",
            text(self.realm),
            text(self.nonce),
            text(uri),
        );
        if let Some(algorithm) = self.algorithm_token {
            value.push_str(&format!(", algorithm={}", text(algorithm)));
        }
        if let Some(qop) = self.qop {
            value.push_str(&format!(", cnonce=\"{cnonce}\", qop={qop}, nc={nc}"));
        }
        if let Some(opaque) = self.opaque {
            value.push_str(&format!(", opaque=\"{}\"", text(opaque)));
        }
        value
    }
}

/// What a Digest response is computed over, besides the password and the request.
#[derive(Clone, Copy, Debug)]
pub struct DigestInput<'a> {
    /// The hash.
    pub algorithm: DigestAlgorithm,
    /// `-sess`.
    pub session: bool,
    /// The user.
    pub username: &'a [u8],
    /// The realm.
    pub realm: &'a [u8],
    /// The server's nonce.
    pub nonce: &'a [u8],
    /// The client's nonce (with a qop).
    pub cnonce: &'a [u8],
    /// The nonce count, as written (`00000001`).
    pub nc: &'a [u8],
    /// `auth`, `auth-int`, or none.
    pub qop: Option<&'a [u8]>,
}

/// The `response` value (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1) for `input`, `password`, and
/// the request's `method`, `uri` (as in the credentials) and `body` (for `auth-int`).
pub fn digest_response(
    input: &DigestInput<'_>,
    password: &[u8],
    method: &[u8],
    uri: &[u8],
    body: &[u8],
) -> String {
    let h = |parts: &[&[u8]]| hex_hash(input.algorithm, parts);
    let mut ha1 = h(&[input.username, b":", input.realm, b":", password]);
    if input.session {
        ha1 = h(&[ha1.as_bytes(), b":", input.nonce, b":", input.cnonce]);
    }
    let ha2 = match input.qop {
        Some(q) if q.eq_ignore_ascii_case(b"auth-int") => {
            let body_hash = h(&[body]);
            h(&[method, b":", uri, b":", body_hash.as_bytes()])
        }
        _ => h(&[method, b":", uri]),
    };
    match input.qop {
        Some(qop) => h(&[
            ha1.as_bytes(),
            b":",
            input.nonce,
            b":",
            input.nc,
            b":",
            input.cnonce,
            b":",
            qop,
            b":",
            ha2.as_bytes(),
        ]),
        None => h(&[ha1.as_bytes(), b":", input.nonce, b":", ha2.as_bytes()]),
    }
}

/// Digest credentials as a client sent them (`Authorization`, `Proxy-Authorization`).
#[derive(Clone, Copy, Debug)]
pub struct DigestCredentials<'a> {
    /// The parameters the response covers.
    pub input: DigestInput<'a>,
    /// The `uri` parameter.
    pub uri: &'a [u8],
    /// The `response` parameter.
    pub response: &'a [u8],
}

impl<'a> DigestCredentials<'a> {
    /// Reads a credentials value; `None` for another scheme, a missing parameter, or an
    /// algorithm sipshard does not know.
    pub fn parse(value: &'a [u8]) -> Option<DigestCredentials<'a>> {
        let auth = digest_auth(value)?;
        let (algorithm, session) = algorithm_of(auth.param("algorithm"))?;
        Some(DigestCredentials {
            input: DigestInput {
                algorithm,
                session,
                username: auth.param("username")?,
                realm: auth.param("realm")?,
                nonce: auth.param("nonce")?,
                cnonce: auth.param("cnonce").unwrap_or_default(),
                nc: auth.param("nc").unwrap_or_default(),
                qop: auth.param("qop"),
            },
            uri: auth.param("uri")?,
            response: auth.param("response")?,
        })
    }
}

/// A `Digest` challenge or credentials value; `None` for another scheme.
fn digest_auth(value: &[u8]) -> Option<Auth<'_>> {
    let auth = Auth::parse(value).ok()?;
    auth.scheme.eq_ignore_ascii_case(b"Digest").then_some(auth)
}

/// The hash an `algorithm` token names, and whether it is a `-sess` one; MD5 when there is
/// none; `None` for one sipshard does not know.
fn algorithm_of(token: Option<&[u8]>) -> Option<(DigestAlgorithm, bool)> {
    let Some(token) = token else {
        return Some((DigestAlgorithm::Md5, false));
    };
    match token.to_ascii_uppercase().as_slice() {
        b"MD5" => Some((DigestAlgorithm::Md5, false)),
        b"MD5-SESS" => Some((DigestAlgorithm::Md5, true)),
        b"SHA-256" => Some((DigestAlgorithm::Sha256, false)),
        b"SHA-256-SESS" => Some((DigestAlgorithm::Sha256, true)),
        _ => None,
    }
}

/// The lowercase hex digest of the concatenated `parts`.
fn hex_hash(algorithm: DigestAlgorithm, parts: &[&[u8]]) -> String {
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    match algorithm {
        DigestAlgorithm::Md5 => {
            let mut d = Md5::new();
            parts.iter().for_each(|p| d.update(p));
            hex(&d.finalize())
        }
        DigestAlgorithm::Sha256 => {
            let mut d = Sha256::new();
            parts.iter().for_each(|p| d.update(p));
            hex(&d.finalize())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_2617_example_gets_its_response() {
        // RFC 2617 §3.5 (its method and URI are HTTP's; the computation is the same).
        let challenge = DigestChallenge::parse(
            b"Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
              nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
              opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(challenge.qop, Some("auth"));
        let value = challenge.answer(
            "Mufasa",
            "Circle Of Life",
            b"GET",
            b"/dir/index.html",
            b"",
            "0a4f113b",
        );
        assert!(
            value.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{value}"
        );
        assert!(value.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        assert!(value.contains("qop=auth, nc=00000001"));
    }

    #[test]
    fn the_rfc_7616_sha_256_example_gets_its_response() {
        // RFC 7616 §3.9.1.
        let challenge = DigestChallenge::parse(
            b"Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
              algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
              opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .unwrap();
        assert_eq!(challenge.algorithm, DigestAlgorithm::Sha256);
        let value = challenge.answer(
            "Mufasa",
            "Circle of Life",
            b"GET",
            b"/dir/index.html",
            b"",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            value.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{value}"
        );
        assert!(value.contains("algorithm=SHA-256"));
    }

    #[test]
    fn challenges_sipshard_cannot_answer_are_refused() {
        assert!(DigestChallenge::parse(b"Basic realm=\"x\"").is_none());
        assert!(
            DigestChallenge::parse(b"Digest realm=\"x\", nonce=\"n\", algorithm=SHA-512-256")
                .is_none()
        );
        assert!(
            DigestChallenge::parse(b"Digest realm=\"x\"").is_none(),
            "no nonce"
        );
        let plain = DigestChallenge::parse(b"Digest realm=\"x\", nonce=\"n\", stale=TRUE").unwrap();
        assert!(plain.stale);
        assert_eq!((plain.algorithm, plain.qop), (DigestAlgorithm::Md5, None));
        // Without qop (RFC 2069): response = H(HA1:nonce:HA2), no cnonce or nc.
        let value = plain.answer("u", "p", b"INVITE", b"sip:b@x", b"", "c");
        assert!(!value.contains("cnonce"), "{value}");
    }
}
