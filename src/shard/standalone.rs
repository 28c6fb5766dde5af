//! Requests outside any dialog that we send (RFC 3261 §8.1): REGISTER (§10.2), OPTIONS
//! (§11), MESSAGE (RFC 3428) and the like. Each is one non-INVITE client transaction; its
//! final response (or 408 when none came) goes to the application as
//! [`SessionEvent::StandaloneResult`]. No dialog is created.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{DialogError, SessionEvent, Shard, shard_for_call_id};
use crate::dialog;
use crate::message::{HeaderName, Message, Method, RequestBuilder};
use crate::transaction::ClientTxnId;

/// What [`DialogCommand::SendStandalone`](super::DialogCommand::SendStandalone) asks for.
#[derive(Clone, Debug)]
pub struct StandaloneRequest {
    /// The method (not INVITE, ACK, CANCEL or BYE).
    pub method: Bytes,
    /// Request-URI.
    pub request_uri: Bytes,
    /// From value without tag; the shard adds a fresh tag.
    pub from: Bytes,
    /// To value.
    pub to: Bytes,
    /// The Call-ID to use (a registering UA keeps one across refreshes, §10.2), or `None`
    /// for a fresh one. In a runtime with several shards it must be one that hashes to
    /// the shard the command is given to.
    pub call_id: Option<Bytes>,
    /// CSeq number (§10.2: one higher for each REGISTER on the same Call-ID).
    pub cseq: u32,
    /// Where to send it (sipshard does no DNS).
    pub destination: SocketAddr,
    /// Extra headers (Contact, Expires, Content-Type …).
    pub headers: Vec<(String, Bytes)>,
    /// Body (its Content-Type among `headers`).
    pub body: Bytes,
}

impl Shard {
    /// `SendStandalone`: builds and sends the request; returns its transaction, which names
    /// the result event.
    pub(super) fn send_standalone(
        &mut self,
        now: Instant,
        r: &StandaloneRequest,
    ) -> Result<ClientTxnId, DialogError> {
        if matches!(
            Method::from_bytes(&r.method),
            Method::Invite | Method::Ack | Method::Cancel | Method::Bye
        ) {
            return Err(DialogError::InvalidDialogState {
                current: "no dialog",
                expected: "a method without its own command",
            });
        }
        if self.txn.len() >= self.config.max_transactions {
            return Err(DialogError::Overloaded);
        }
        if self.admission == super::Admission::Stopping {
            return Err(DialogError::ShuttingDown);
        }
        let call_id = match &r.call_id {
            Some(c) => {
                if let Some(owner) = self.config.owner
                    && shard_for_call_id(c, owner.count) != owner.index
                {
                    return Err(DialogError::InvalidTarget(
                        "the Call-ID belongs to another shard".to_owned(),
                    ));
                }
                c.clone()
            }
            None => Bytes::copy_from_slice(self.owned_call_id().as_bytes()),
        };
        let tag = self.ids.tag();
        let transport = self.request_transport(&r.request_uri)?;
        let (via, branch) = self.via(transport);
        let local = dialog::with_tag(&r.from, tag.as_bytes());
        let mut cseq = format!("{} ", r.cseq).into_bytes();
        cseq.extend_from_slice(&r.method);
        let mut buf = BytesMut::with_capacity(512 + r.body.len());
        let mut b = RequestBuilder::new(&mut buf, &r.method, &r.request_uri);
        b.header_named(HeaderName::Via, &via)
            .header_named(HeaderName::MaxForwards, b"70")
            .header_named(HeaderName::From, &local)
            .header_named(HeaderName::To, &r.to)
            .header_named(HeaderName::CallId, &call_id)
            .header_named(HeaderName::CSeq, &cseq);
        for (name, value) in &r.headers {
            b.header(name, value);
        }
        b.finish(&r.body).map_err(DialogError::InvalidInput)?;
        let txn = self
            .txn
            .send_request(
                now,
                r.destination,
                transport,
                &r.method,
                branch.as_bytes(),
                buf.freeze(),
            )
            .map_err(DialogError::TransactionError)?;
        self.standalone.insert(txn);
        Ok(txn)
    }

    /// A response to one of ours: only the final one goes up.
    pub(super) fn standalone_response(&mut self, txn: ClientTxnId, response: Message) {
        let Some(status) = response.status() else {
            return;
        };
        if status >= 200 && self.standalone.remove(&txn) {
            self.events.push_back(SessionEvent::StandaloneResult {
                request: txn,
                status,
                response: Some(response),
            });
        }
    }

    /// No final response came (Timer F) or the transport failed: 408, as §8.1.3.1 says a
    /// UAC treats a timeout.
    pub(super) fn standalone_failed(&mut self, txn: ClientTxnId) {
        if self.standalone.remove(&txn) {
            self.events.push_back(SessionEvent::StandaloneResult {
                request: txn,
                status: 408,
                response: None,
            });
        }
    }
}
