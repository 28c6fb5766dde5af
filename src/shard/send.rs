//! The one way a request goes out in a dialog: our Via with a fresh branch, our Contact
//! where the method refreshes the target, the dialog's next CSeq, route set and remote
//! target (§12.2.1.1), sent on a client transaction whose owner is booked at once.
//!
//! # What it owns, what it may not touch
//! The send sequence only; what a method carries and what its response does belong to the
//! feature that sends it.

use std::time::Instant;

use bytes::BytesMut;

use super::owners::Owner;
use super::{DialogError, Shard, SlotRef};
use crate::transaction::ClientTxnId;

/// One in-dialog request to send.
pub(super) struct InDialog<'a> {
    /// The method.
    pub(super) method: &'a [u8],
    /// Our Contact goes in (a target refresh: INVITE, UPDATE, SUBSCRIBE, NOTIFY, REFER).
    pub(super) contact: bool,
    /// Header lines besides those the dialog writes.
    pub(super) headers: &'a [(&'a str, &'a [u8])],
    /// The body.
    pub(super) body: &'a [u8],
}

impl Shard {
    /// Builds `request` in the dialog at `index` and sends it; `owner` (given the dialog's
    /// slot) is what its responses and failure go to (`None`: nothing waits for them).
    /// Returns the transaction and the CSeq number used.
    pub(super) fn transmit_in_dialog(
        &mut self,
        now: Instant,
        index: u32,
        request: InDialog<'_>,
        owner: Option<fn(SlotRef) -> Owner>,
    ) -> Result<(ClientTxnId, u32), DialogError> {
        let transport = self.dialog_transport(index);
        let (via, branch) = self.via(transport);
        let contact = match request.contact {
            true => self.contact(transport),
            false => bytes::Bytes::new(),
        };
        let Some(entry) = self.entry_mut(index) else {
            return Err(DialogError::ended("a dialog to send in"));
        };
        let mut buf = BytesMut::with_capacity(512 + request.body.len());
        entry
            .dialog
            .build_request(
                &mut buf,
                request.method,
                &via,
                &contact,
                request.headers,
                request.body,
            )
            .map_err(DialogError::InvalidInput)?;
        let (peer, cseq) = (entry.dialog.peer, entry.dialog.local_cseq);
        self.dialog_changed(index);
        let txn = self
            .txn
            .send_request(
                now,
                peer,
                transport,
                request.method,
                branch.as_bytes(),
                buf.freeze(),
            )
            .map_err(DialogError::TransactionError)?;
        if let Some(owner) = owner {
            let r = self.slot_ref(index);
            self.owners.insert(txn, owner(r));
        }
        Ok((txn, cseq))
    }
}
