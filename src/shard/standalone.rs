//! Requests outside any dialog that we send (RFC 3261 §8.1): REGISTER (§10.2), OPTIONS
//! (§11), MESSAGE (RFC 3428) and the like. Each is one non-INVITE client transaction; its
//! final response (or 408 when none came) goes to the application as
//! [`SessionEvent::StandaloneResult`]. No dialog is created. A 401 or 407 the shard has
//! credentials for sends the request again, CSeq one higher, with its answer (§22.2,
//! `auth` module); the result still names the first transaction, the application's
//! handle (a registering UA's next REGISTER takes the CSeq of the result's response + 1).

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

/// A request of ours outside any dialog, awaiting its final response.
#[derive(Debug)]
pub(super) struct Sent {
    /// The transaction the application was given (the first one, whatever the retries).
    handle: ClientTxnId,
    /// The request as sent, to send again with credentials.
    request: Bytes,
    destination: SocketAddr,
    transport: crate::transaction::Transport,
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
        let request = buf.freeze();
        let txn = self
            .txn
            .send_request(
                now,
                r.destination,
                transport,
                &r.method,
                branch.as_bytes(),
                request.clone(),
            )
            .map_err(DialogError::TransactionError)?;
        self.owners.insert_standalone(
            txn,
            Sent {
                handle: txn,
                request,
                destination: r.destination,
                transport,
            },
        );
        Ok(txn)
    }

    /// A response to one of ours: only the final one goes up, unless it is a challenge
    /// we can answer (then the request goes again).
    pub(super) fn standalone_response(
        &mut self,
        now: Instant,
        txn: ClientTxnId,
        response: Message,
    ) {
        let Some(status) = response.status() else {
            return;
        };
        if status < 200 {
            return;
        }
        let Some(sent) = self.owners.take_standalone(&txn) else {
            return;
        };
        let sent = match self.standalone_with_credentials(now, sent, &response) {
            Ok(()) => return,
            Err(sent) => sent,
        };
        self.events.push_back(SessionEvent::StandaloneResult {
            request: sent.handle,
            status,
            response: Some(response),
        });
    }

    /// §22.2: a 401 or 407 with challenges we have credentials for sends the request
    /// again, CSeq one higher, new branch, with the answers; `Err` gives `sent` back when
    /// it did not go again.
    fn standalone_with_credentials(
        &mut self,
        now: Instant,
        sent: Sent,
        response: &Message,
    ) -> Result<(), Sent> {
        let Ok(old) = Message::parse(sent.request.clone()) else {
            return Err(sent);
        };
        let Some((header, answers)) = self.answer_challenges(&old, response) else {
            return Err(sent);
        };
        let (Ok(cseq), Some(method), Some(uri)) =
            (old.cseq(), old.method_bytes(), old.request_uri_bytes())
        else {
            return Err(sent);
        };
        let (via, branch) = self.via(sent.transport);
        let added: Vec<(&str, &[u8])> = answers
            .iter()
            .map(|a| (header.as_str(), a.as_bytes()))
            .collect();
        let Some(request) =
            super::uac::rebuilt(&old, method, uri, &via, cseq.seq + 1, &[header], &added)
        else {
            return Err(sent);
        };
        match self.txn.send_request(
            now,
            sent.destination,
            sent.transport,
            method,
            branch.as_bytes(),
            request.clone(),
        ) {
            Ok(txn) => {
                self.owners.insert(
                    txn,
                    super::owners::Owner::Standalone(Sent { request, ..sent }),
                );
                Ok(())
            }
            Err(_) => Err(sent),
        }
    }

    /// No final response came (Timer F) or the transport failed: 408, as §8.1.3.1 says a
    /// UAC treats a timeout.
    pub(super) fn standalone_failed(&mut self, txn: ClientTxnId) {
        if let Some(sent) = self.owners.take_standalone(&txn) {
            self.events.push_back(SessionEvent::StandaloneResult {
                request: sent.handle,
                status: 408,
                response: None,
            });
        }
    }
}
