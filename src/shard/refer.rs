//! REFER as its recipient (RFC 3515): the check that a REFER names exactly one Refer-To,
//! and the NOTIFYs of the implicit subscription a 2xx to a REFER creates.
//!
//! The shard keeps no subscription state. A 2xx to a REFER sends the initial NOTIFY at once
//! (`SIP/2.0 100 Trying`, RFC 6665 §4.2.1.2 by way of RFC 3515 §2.4.4). The application
//! reports how the referenced request went with [`super::DialogCommand::ReferStatus`]. A
//! final status ends the subscription; a BYE ends it with the dialog. Each NOTIFY names
//! its REFER with `id` (the REFER's CSeq number, §2.4.6), so several REFERs in one dialog
//! keep their subscriptions apart. The NOTIFYs are in-dialog requests like any other, sent
//! by [`Shard::send_in_dialog`](super::Shard), which owns the CSeq and the route set.

use std::time::Instant;

use bytes::Bytes;

use super::{DialogError, Shard};
use crate::dialog::DialogId;
use crate::message::{Message, default_reason};
use crate::transaction::ServerTxnId;

/// How long the implicit subscription is said to last while the reference is in progress.
/// RFC 3515 leaves it to the notifier; the final NOTIFY ends it sooner.
const REFER_SUBSCRIPTION_SECONDS: u32 = 60;

impl Shard {
    /// The peer's REFER in a dialog: 400 without a Refer-To (RFC 3515 §2.4.1; a second
    /// Refer-To is refused by the message checks), else the application decides.
    pub(super) fn on_refer(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        index: u32,
    ) {
        match request.refer_to() {
            Ok(Some(_)) => self.dialog_request(now, txn, request, index),
            _ => self.reject_request(now, txn, &request, 400, &[]),
        }
    }

    /// A 2xx went to the REFER with CSeq `refer_cseq` in the dialog at `index`: the
    /// subscription starts with NOTIFY `100 Trying`.
    pub(super) fn refer_accepted(&mut self, now: Instant, index: u32, refer_cseq: u32) {
        let Some(dialog) = self.entry_mut(index).map(|e| e.dialog.id.clone()) else {
            return;
        };
        // The dialog may be ending (a BYE crossed the REFER): no subscription then.
        let _ = self.refer_status(now, &dialog, refer_cseq, 100);
    }

    /// `ReferStatus`: a NOTIFY whose `message/sipfrag` body is the status line of the
    /// referenced request's response (`SIP/2.0 200 OK`). 1xx keeps the subscription
    /// active; a final status (200–699) terminates it.
    pub(super) fn refer_status(
        &mut self,
        now: Instant,
        dialog: &DialogId,
        refer_cseq: u32,
        status: u16,
    ) -> Result<(), DialogError> {
        if !(100..700).contains(&status) {
            return Err(DialogError::InvalidInput(
                crate::message::BuildError::InvalidStatusCode,
            ));
        }
        let state = if status < 200 {
            format!("active;expires={REFER_SUBSCRIPTION_SECONDS}")
        } else {
            "terminated;reason=noresource".to_owned()
        };
        let headers = [
            (
                "Event".to_owned(),
                Bytes::from(format!("refer;id={refer_cseq}")),
            ),
            ("Subscription-State".to_owned(), Bytes::from(state)),
            (
                "Content-Type".to_owned(),
                Bytes::from_static(b"message/sipfrag;version=2.0"),
            ),
        ];
        let body = format!("SIP/2.0 {status} {}\r\n", default_reason(status));
        self.send_in_dialog(now, dialog, b"NOTIFY", &headers, body.as_bytes())
    }
}
