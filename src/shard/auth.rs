//! Digest authentication as a UAC (RFC 3261 §22.2, §22.3): a 401 or 407 to our INVITE, or
//! to a request of ours outside any dialog, is answered with the credentials
//! [`ShardConfig::credentials`](super::ShardConfig::credentials) has for its realm. The
//! request goes again with the next CSeq, the same Call-ID and From tag, and an
//! `Authorization` (401) or `Proxy-Authorization` (407) header per challenge answered;
//! a header of the other kind from an earlier round stays. The application hears only the
//! final outcome. When the challenge comes back for credentials already sent, without
//! `stale=true`, they were refused: the 401 or 407 is the result.
//!
//! The Digest computation is [`DigestChallenge`]; this module picks the challenge and the
//! credentials.

use crate::message::{DigestAlgorithm, DigestChallenge, HeaderName, Message};

use super::Shard;

/// A username and password for a realm; with `realm` `None`, for any realm.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The realm they belong to (compared exactly), or `None` for any.
    pub realm: Option<String>,
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    /// The password is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// The header lines answering the challenges of `response` (a 401 or 407) to our
    /// `request`, as sent: one per realm we have credentials for, SHA-256 chosen over
    /// MD5 where both are offered (RFC 8760 §2.4). `None` when there is nothing to
    /// answer with, or when `request` already carried credentials for a realm that
    /// challenges again without `stale=true` (they were refused).
    pub(super) fn answer_challenges(
        &mut self,
        request: &Message,
        response: &Message,
    ) -> Option<(HeaderName, Vec<String>)> {
        if self.config.credentials.is_empty() {
            return None;
        }
        let (challenge_header, answer_header) = match response.status()? {
            401 => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
            407 => (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            ),
            _ => return None,
        };
        let mut chosen: Vec<(DigestChallenge<'_>, &super::Credentials)> = Vec::new();
        for challenge in response
            .header_values(challenge_header)
            .filter_map(DigestChallenge::parse)
        {
            let Some(credentials) = self.config.credentials.iter().find(|c| {
                c.realm
                    .as_deref()
                    .is_none_or(|r| r.as_bytes() == challenge.realm)
            }) else {
                continue;
            };
            match chosen.iter_mut().find(|(c, _)| c.realm == challenge.realm) {
                Some(slot) => {
                    if challenge.algorithm == DigestAlgorithm::Sha256
                        && slot.0.algorithm != DigestAlgorithm::Sha256
                    {
                        *slot = (challenge, credentials);
                    }
                }
                None => chosen.push((challenge, credentials)),
            }
        }
        let refused = chosen.iter().any(|(challenge, _)| {
            !challenge.stale
                && request.header_values(answer_header).any(|sent| {
                    crate::message::Auth::parse(sent)
                        .ok()
                        .and_then(|a| a.param("realm"))
                        == Some(challenge.realm)
                })
        });
        if chosen.is_empty() || refused {
            return None;
        }
        let (method, uri) = (request.method_bytes()?, request.request_uri_bytes()?);
        let answers = chosen
            .iter()
            .map(|(challenge, credentials)| {
                let cnonce = self.ids.tag();
                challenge.answer(
                    &credentials.username,
                    &credentials.password,
                    method,
                    uri,
                    request.body_bytes(),
                    cnonce.as_str(),
                )
            })
            .collect();
        Some((answer_header, answers))
    }
}
