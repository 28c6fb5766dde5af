//! How the shard answers a request it received: the response built from it (§8.2.6), our
//! capabilities (Allow, Supported), and the refusals every handler shares (503 when new
//! dialogs are not taken, any other rejection).
//!
//! # What it owns, what it may not touch
//! Building and sending a response on a server transaction; which response a request
//! deserves is the handlers' choice.

use std::time::Instant;

use bytes::Bytes;

use super::Shard;
use crate::message::{HeaderName, Message, ResponseBuilder};
use crate::transaction::ServerTxnId;

/// A response the UAS core sends: status, our To tag (a fresh one when `None`), extra
/// headers, body.
pub(super) struct Reply<'a> {
    status: u16,
    to_tag: Option<&'a [u8]>,
    headers: &'a [(&'a str, &'a [u8])],
    body: &'a [u8],
}

impl<'a> Reply<'a> {
    pub(super) fn new(status: u16, to_tag: Option<&'a [u8]>) -> Self {
        Reply {
            status,
            to_tag,
            headers: &[],
            body: b"",
        }
    }

    pub(super) fn headers(mut self, headers: &'a [(&'a str, &'a [u8])]) -> Self {
        self.headers = headers;
        self
    }

    pub(super) fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }
}

/// What we answer in Allow.
const ALLOW: &[u8] =
    b"INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, INFO, MESSAGE, UPDATE, NOTIFY, REFER";
/// What we answer in Allow when serving subscriptions (RFC 6665).
const ALLOW_SUBSCRIBE: &[u8] =
    b"INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, INFO, MESSAGE, UPDATE, NOTIFY, REFER, SUBSCRIBE";

/// A header name and value known at compile time.
pub(super) type StaticHeader = (&'static str, &'static [u8]);

/// The body types sipshard reads in INVITE, UPDATE and PRACK (`Accept` of OPTIONS and 415).
pub(super) const ACCEPT: &[u8] = b"application/sdp, multipart/mixed";

impl Shard {
    /// The methods we serve, for Allow.
    pub(super) fn allow(&self) -> &'static [u8] {
        match self.config.subscriptions {
            Some(_) => ALLOW_SUBSCRIBE,
            None => ALLOW,
        }
    }

    /// The option tags we support (RFC 3262 unless reliable provisionals are off, RFC
    /// 3891, RFC 4028 when session timers are on).
    pub(super) fn supported_tags(&self) -> &'static [u8] {
        match (self.supported_header(), self.session_timers_on()) {
            (Some(_), true) => b"100rel, replaces, timer",
            (Some(_), false) => b"100rel, replaces",
            (None, true) => b"replaces, timer",
            (None, false) => super::replaces::TAG_REPLACES,
        }
    }

    /// `Allow` and `Supported` as we answer them: in OPTIONS answers (§11.2) and in every
    /// 2xx to an INVITE (§13.3.1.4: it SHOULD carry both).
    pub(super) fn capabilities(&self) -> [StaticHeader; 2] {
        [
            ("Allow", self.allow()),
            ("Supported", self.supported_tags()),
        ]
    }

    /// Sends `reply` to `request` on its server transaction; returns the bytes sent.
    pub(super) fn respond(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: &Message,
        reply: Reply<'_>,
    ) -> Option<Bytes> {
        let fresh;
        let tag = match reply.to_tag {
            Some(t) => t,
            None => {
                fresh = self.ids.tag();
                fresh.as_bytes()
            }
        };
        let source = self.txn.response_target(txn);
        let mut b = ResponseBuilder::to_request_from(
            &mut self.buf,
            request,
            source,
            reply.status,
            None,
            Some(tag),
        );
        for (name, value) in reply.headers {
            b.header(name, value);
        }
        if let Some(server) = &self.config.server {
            b.header_named(HeaderName::Server, server);
        }
        let bytes = match b.finish(reply.body) {
            Ok(_) => self.buf.split().freeze(),
            // The request lacks what a response copies (RFC 4475 §3.3.1 has no From, To or
            // Call-ID): answer with what it has, or end the transaction without an answer.
            Err(_) => match self.bare_response(request, reply.status) {
                Some(bytes) => bytes,
                None => {
                    self.txn.discard(txn);
                    return None;
                }
            },
        };
        self.txn
            .send_response(now, txn, reply.status, bytes.clone())
            .ok()?;
        self.stats.responses_out[super::class_slot(reply.status)] += 1;
        Some(bytes)
    }

    /// A response copying only the Via, From, To, Call-ID and CSeq the request has.
    fn bare_response(&mut self, request: &Message, status: u16) -> Option<Bytes> {
        let mut b = ResponseBuilder::new(&mut self.buf, status, None);
        for via in request.header_values(HeaderName::Via) {
            b.header_named(HeaderName::Via, via);
        }
        for name in [
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            if let Some(v) = request.header(name) {
                b.header_named(name, v);
            }
        }
        b.finish(b"").ok()?;
        Some(self.buf.split().freeze())
    }

    /// Over the dialog or transaction limit, with the application behind, or stopping: a
    /// request that would create a dialog gets 503 with Retry-After (counted by cause);
    /// true when it did.
    pub(super) fn refuse_new_dialog(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: &Message,
    ) -> bool {
        let refused = match self.admission {
            super::Admission::Open => {
                self.live >= self.config.max_dialogs
                    || self.txn.len() > self.config.max_transactions
            }
            super::Admission::Backpressure => true,
            super::Admission::Stopping => true,
        };
        if refused {
            match self.admission {
                super::Admission::Open => self.stats.overload_rejections += 1,
                super::Admission::Backpressure => self.stats.backpressure_rejections += 1,
                super::Admission::Stopping => self.stats.shutdown_rejections += 1,
            }
            let retry = self.config.retry_after.to_string();
            self.reject_request(now, txn, request, 503, &[("Retry-After", retry.as_bytes())]);
        }
        refused
    }

    pub(super) fn reject_request(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: &Message,
        status: u16,
        extra: &[(&str, &[u8])],
    ) {
        self.stats.requests_rejected += 1;
        self.respond(now, txn, request, Reply::new(status, None).headers(extra));
    }
}
