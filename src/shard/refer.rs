//! REFER (RFC 3515) both ways.
//!
//! As sender: [`super::DialogCommand::Refer`] sends the REFER and keeps its CSeq number per
//! dialog while its implicit subscription is open. The peer's NOTIFYs for it (`Event:
//! refer`, matched by `id`, §2.4.6) are answered 200 here and reported as
//! [`super::SessionEvent::ReferNotify`] with the sipfrag's status code; a `terminated`
//! NOTIFY, a non-2xx to the REFER or the dialog's end closes it. A refer NOTIFY that matches
//! no open REFER gets 481 (RFC 6665 §4.1.3).
//!
//! As recipient: the check that a REFER names exactly one Refer-To, and the NOTIFYs of the
//! implicit subscription a 2xx to a REFER creates. A REFER with `Refer-Sub: false` (RFC
//! 4488) gets its 2xx with `Refer-Sub: false` and no subscription: no NOTIFY is sent.
//!
//! In an INVITE dialog the shard keeps no subscription state. A REFER outside any dialog
//! makes a dialog (§2.4.2) whose only usage is its subscription, which the subscription
//! table (`notifier` module) then holds, so that its expiry or end ends the dialog.
//! A 2xx to a REFER sends the initial NOTIFY at once
//! (`SIP/2.0 100 Trying`, RFC 6665 §4.2.1.2 by way of RFC 3515 §2.4.4). The application
//! reports how the referenced request went with [`super::DialogCommand::ReferStatus`]. A
//! final status ends the subscription; a BYE ends it with the dialog. Each NOTIFY names
//! its REFER with `id` (the REFER's CSeq number, §2.4.6), so several REFERs in one dialog
//! keep their subscriptions apart. The NOTIFYs are in-dialog requests like any other, sent
//! by [`Shard::send_in_dialog`](super::Shard), which owns the CSeq and the route set.

use std::time::Instant;

use bytes::Bytes;

use super::{DialogError, SessionEvent, Shard};
use crate::dialog::DialogId;
use crate::message::{Message, default_reason};
use crate::transaction::ServerTxnId;

/// The option tag of RFC 4488 (a REFER without an implicit subscription).
pub(super) const TAG_NOREFERSUB: &[u8] = b"norefersub";

/// True when a REFER asks for no implicit subscription (`Refer-Sub: false`, RFC 4488 §4).
/// The application, which decides whether to report progress, reads it here too.
pub fn refer_sub_declined(request: &Message) -> bool {
    request
        .header_values_by_name("Refer-Sub")
        .next()
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"false"))
}

/// The Replaces header a REFER asks its recipient to send (attended transfer, RFC 5589
/// §7: `Refer-To: <sip:carol@example.com?Replaces=call%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>`),
/// decoded and checked (RFC 3891 §6.1): pass it as the `Replaces` header of the
/// [`DialogCommand::MakeCall`](super::DialogCommand::MakeCall) that carries the reference
/// out. `None` when the Refer-To has none, or one that is not a valid Replaces value.
pub fn replaces_of_refer_to(request: &Message) -> Option<Vec<u8>> {
    let refer_to = request.refer_to().ok()??;
    let crate::message::Uri::Sip(uri) = refer_to.uri else {
        return None;
    };
    let value = uri.header("Replaces")?.into_owned();
    crate::message::Replaces::parse(&value).ok()?;
    Some(value)
}

/// How long the implicit subscription is said to last while the reference is in progress.
/// RFC 3515 leaves it to the notifier; the final NOTIFY ends it sooner.
const REFER_SUBSCRIPTION_SECONDS: u32 = 60;

/// The Content-Type of a REFER NOTIFY's body (RFC 3515 §2.4.5).
pub(super) const SIPFRAG: &[u8] = b"message/sipfrag;version=2.0";

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

    /// A REFER outside any dialog (RFC 3515 §2.4.2, RFC 7647 §4): it makes a dialog, as a
    /// SUBSCRIBE does, whose only usage is the REFER's implicit subscription; the
    /// application sees it as a [`SessionEvent::DialogRequest`] in that new dialog and
    /// answers it as one inside a dialog. A refusal, `Refer-Sub: false`, the final
    /// `ReferStatus` or the subscription's expiry ends the dialog.
    pub(super) fn incoming_refer(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        from: std::net::SocketAddr,
    ) {
        let (Ok(Some(_)), Ok(cseq)) = (request.refer_to(), request.cseq()) else {
            return self.reject_request(now, txn, &request, 400, &[]);
        };
        let Some(index) = self.subscription_dialog(now, txn, &request, from) else {
            return;
        };
        self.open_refer_subscription(now, index, cseq.seq);
        let Some(dialog) = self.entry_mut(index).map(|e| e.dialog.id.clone()) else {
            return;
        };
        self.hold_for_application(txn, &request, index);
        self.events.push_back(SessionEvent::DialogRequest {
            dialog,
            txn,
            request,
        });
    }

    /// The application answered the REFER with CSeq `refer_cseq` in the dialog at
    /// `index` with `status`: a 2xx starts the implicit subscription (unless `declined`,
    /// RFC 4488) with NOTIFY `100 Trying`.
    pub(super) fn refer_answered_by_us(
        &mut self,
        now: Instant,
        index: u32,
        refer_cseq: u32,
        status: u16,
        declined: bool,
    ) {
        let accepted = (200..300).contains(&status) && !declined;
        if self.has_refer_subscription(index, refer_cseq) {
            if (200..300).contains(&status) {
                self.set_confirmed(index);
            }
            self.refer_subscription_answered(
                now,
                index,
                refer_cseq,
                accepted,
                REFER_SUBSCRIPTION_SECONDS,
            );
        }
        if accepted {
            self.refer_accepted(now, index, refer_cseq);
        }
    }

    /// A 2xx went to the REFER with CSeq `refer_cseq` in the dialog at `index`: the
    /// subscription starts with NOTIFY `100 Trying`.
    fn refer_accepted(&mut self, now: Instant, index: u32, refer_cseq: u32) {
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
        let body = format!("SIP/2.0 {status} {}\r\n", default_reason(status));
        if let Some(index) = self.find(dialog)
            && self.has_refer_subscription(index, refer_cseq)
        {
            let headers = [("Content-Type".to_owned(), Bytes::from_static(SIPFRAG))];
            return self.refer_subscription_notify(
                now,
                index,
                refer_cseq,
                status >= 200,
                &headers,
                body.as_bytes(),
            );
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
            ("Content-Type".to_owned(), Bytes::from_static(SIPFRAG)),
        ];
        self.send_in_dialog(now, dialog, b"NOTIFY", &headers, body.as_bytes())
            .map(drop)
    }

    /// `Refer`: a REFER asking the peer to send a request to `refer_to` (a name-addr or
    /// URI, e.g. `<sip:carol@example.com>`); its NOTIFYs come back as `ReferNotify`.
    pub(super) fn send_refer(
        &mut self,
        now: Instant,
        dialog: &DialogId,
        refer_to: &Bytes,
    ) -> Result<(), DialogError> {
        let headers = [("Refer-To".to_owned(), refer_to.clone())];
        self.send_in_dialog(now, dialog, b"REFER", &headers, b"")
            .map(drop)
    }

    /// A REFER of ours (however it was asked for) went out with CSeq `cseq`: its
    /// subscription is open until closed.
    pub(super) fn refer_sent(&mut self, index: u32, cseq: u32) {
        if let Some(usages) = self.usages_made(index) {
            usages.refers_sent.push(cseq);
            self.dialog_changed(index);
        }
    }

    /// The final response to our REFER: anything but a 2xx means no subscription.
    pub(super) fn refer_answered(&mut self, index: u32, response: &Message) {
        let status = response.status().unwrap_or(500);
        if (200..300).contains(&status) {
            return;
        }
        if let Ok(cseq) = response.cseq() {
            self.close_refer(index, cseq.seq);
        }
    }

    fn close_refer(&mut self, index: u32, cseq: u32) {
        if let Some(usages) = self.usages_mut(index) {
            usages.refers_sent.retain(|&c| c != cseq);
            self.dialog_changed(index);
        }
    }

    /// The peer's NOTIFY in a dialog: a refer NOTIFY for one of our REFERs is answered and
    /// reported here; any other goes to the application.
    pub(super) fn on_notify(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        index: u32,
    ) {
        if self.is_watched_notify(index, &request) {
            return self.watched_notify(now, txn, request, index);
        }
        let id = match request.event() {
            Ok(Some(event)) if event.package.eq_ignore_ascii_case(b"refer") => {
                // §2.4.6: `id` is the REFER's CSeq; without it, the dialog's first REFER.
                match event.params.get("id") {
                    Some(Some(v)) => std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()),
                    Some(None) => None,
                    None => self
                        .usages(index)
                        .and_then(|u| u.refers_sent.first().copied()),
                }
            }
            _ => return self.dialog_request(now, txn, request, index),
        };
        let open = id.filter(|id| {
            self.usages(index)
                .is_some_and(|u| u.refers_sent.contains(id))
        });
        let Some(refer_cseq) = open else {
            return self.reject_request(now, txn, &request, 481, &[]);
        };
        let terminated = request
            .subscription_state()
            .ok()
            .flatten()
            .is_some_and(|s| s.state.eq_ignore_ascii_case(b"terminated"));
        let status = sipfrag_status(request.body_bytes());
        self.respond(now, txn, &request, super::reply::Reply::new(200, None));
        if terminated {
            self.close_refer(index, refer_cseq);
        }
        if let Some(dialog) = self.entry_mut(index).map(|e| e.dialog.id.clone()) {
            self.events.push_back(SessionEvent::ReferNotify {
                dialog,
                refer_cseq,
                status,
                terminated,
            });
        }
    }
}

/// The status code of a `message/sipfrag` status line (`SIP/2.0 200 OK`), if it is one.
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let rest = body.strip_prefix(b"SIP/2.0 ")?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&b| b != b' ' && b != b'\r')
    {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}
