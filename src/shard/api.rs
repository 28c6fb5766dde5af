//! What the application and a shard say to each other: the session events a shard hands
//! out ([`SessionEvent`]), the commands it takes ([`DialogCommand`]) with their outcomes
//! and errors ([`CommandOutcome`], [`DialogError`]).
//!
//! # What it owns, what it may not touch
//! The types of the shard's face and their documentation; no behaviour.

use std::net::SocketAddr;

use bytes::Bytes;

use super::{NewSubscription, NotifyState, StandaloneRequest, SubscriptionEnd};
use crate::dialog::DialogId;
use crate::message::{BuildError, Message};
use crate::transaction::{ClientTxnId, ServerTxnId, TxnError};

/// Why a dialog ended.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationReason {
    /// We sent BYE.
    LocalBye,
    /// The peer sent BYE.
    RemoteBye,
    /// We answered 2xx and no ACK came within 64·T1 (§13.3.1.4); we sent BYE.
    AckTimeout,
    /// Our request got no final response (Timer B or F).
    Timeout,
    /// The INVITE was answered (by us or the peer) with this final status.
    Rejected(u16),
    /// The peer cancelled the INVITE (we answered 487).
    Cancelled,
    /// The runtime could not send.
    TransportError,
    /// Another fork of our INVITE answered first: this early dialog ends, or (a second
    /// 2xx) is ACKed and then ended with BYE (§13.2.2.4).
    OtherForkAnswered,
    /// An INVITE with Replaces took this dialog's place and was answered (RFC 3891 §3);
    /// we sent BYE. (A dialog whose 2xx still waited for its ACK sends that BYE after the
    /// ACK, as §15 asks, and reports `LocalBye`.)
    Replaced,
    /// The session timer ran out (RFC 4028 §10): no refresh came, or ours got no answer in
    /// time; we sent BYE.
    SessionExpired,
    /// The call lasted [`ShardConfig::max_call_duration`](super::ShardConfig::max_call_duration); we sent BYE.
    MaxDuration,
    /// Another node of the cluster took the dialog over (the front sends its requests
    /// there now): it left this node without a word on the wire, and lives on there.
    TakenOver,
}

/// What the shard tells the application (names as the reference's session coordination).
#[non_exhaustive]
#[derive(Debug)]
pub enum SessionEvent {
    /// A new INVITE: answer with [`DialogCommand::Ringing`], [`DialogCommand::Answer`] or
    /// [`DialogCommand::Reject`].
    IncomingCall {
        /// The dialog it will create.
        dialog: DialogId,
        /// Where it came from.
        from: SocketAddr,
        /// The INVITE (headers and SDP offer).
        request: Message,
        /// The dialog this call is to replace (RFC 3891): the INVITE's Replaces header
        /// named it, and its owner found it replaceable. Answering the call with a 2xx ends
        /// that dialog (BYE, or CANCEL for our early call); rejecting it leaves it alone.
        /// (Boxed: it is rare, and the event stays within 256 bytes, which moves faster.)
        replaces: Option<Box<DialogId>>,
    },
    /// A tagged provisional response created an early dialog for our call.
    CallRinging {
        /// The early dialog (with the peer's tag).
        dialog: DialogId,
        /// The handle [`DialogCommand::MakeCall`] returned.
        call: DialogId,
    },
    /// The call is answered: we received the 2xx (UAC) or sent it (UAS).
    CallAnswered {
        /// The confirmed dialog.
        dialog: DialogId,
        /// The handle MakeCall returned (UAC), or the dialog itself (UAS).
        call: DialogId,
        /// The SDP of the 2xx (UAC) or the answer we sent (UAS).
        sdp: Bytes,
    },
    /// A re-INVITE in a confirmed dialog (§14.2): answer with [`DialogCommand::Answer`] or
    /// [`DialogCommand::Reject`] (the dialog stays either way).
    ReInvite {
        /// The dialog.
        dialog: DialogId,
        /// The re-INVITE (its SDP is the new offer).
        request: Message,
    },
    /// The outcome of our re-INVITE (after any 491 retries, §14.1).
    ReInviteResult {
        /// The dialog.
        dialog: DialogId,
        /// The final status.
        status: u16,
        /// SDP of the 2xx, if any.
        sdp: Bytes,
    },
    /// The peer's NOTIFY about a REFER we sent (RFC 3515 §2.4.4), already answered 200.
    ReferNotify {
        /// The dialog the REFER went in.
        dialog: DialogId,
        /// Our REFER's CSeq number.
        refer_cseq: u32,
        /// The status code of the referenced request (the sipfrag's status line), when the
        /// body holds one.
        status: Option<u16>,
        /// True on the last NOTIFY: the subscription is over.
        terminated: bool,
    },
    /// The ACK for our 2xx arrived.
    AckReceived {
        /// The dialog.
        dialog: DialogId,
        /// SDP carried in the ACK, if any.
        sdp: Bytes,
    },
    /// The peer cancelled an INVITE we had not answered finally.
    CallCancelled {
        /// The dialog that will not be.
        dialog: DialogId,
    },
    /// An in-dialog INFO, MESSAGE, UPDATE, NOTIFY or REFER for the application: answer with
    /// [`DialogCommand::Respond`]. (UPDATE's Contact has already refreshed the target.) A
    /// REFER outside any dialog comes this way too, in the dialog it made (RFC 3515 §2.4.2).
    DialogRequest {
        /// The dialog.
        dialog: DialogId,
        /// The server transaction to answer on.
        txn: ServerTxnId,
        /// The request.
        request: Message,
    },
    /// A SUBSCRIBE for an event package the shard serves (RFC 6665), new (outside a
    /// dialog: `dialog` is the one a 2xx creates) or refreshing (`Expires: 0` ends it).
    /// Answer with [`DialogCommand::Respond`]: a 2xx accepts (the shard adds `Expires:
    /// <expires>` unless the answer has one), after which a NOTIFY must follow at once
    /// ([`DialogCommand::Notify`], RFC 6665 §4.2.1.2); anything else refuses.
    SubscriptionRequest {
        /// The subscription's dialog.
        dialog: DialogId,
        /// The server transaction to answer on.
        txn: ServerTxnId,
        /// The SUBSCRIBE (Event, Accept, body).
        request: Message,
        /// The interval the shard grants: the asked one within the configured bounds.
        expires: u32,
    },
    /// A subscription ended: one served here, without a NOTIFY of the application's
    /// saying so, or one we hold (`subscription` is then its handle).
    SubscriptionTerminated {
        /// The `Subscribe` handle, for a subscription we hold; `None` for one we serve.
        subscription: Option<DialogId>,
        /// Its dialog (the handle, when no dialog formed).
        dialog: DialogId,
        /// Its Event value (`presence`, `dialog;id=7`).
        event: Bytes,
        /// Why.
        reason: SubscriptionEnd,
    },
    /// A subscription we asked for with [`DialogCommand::Subscribe`] is accepted (its 2xx,
    /// or a NOTIFY before it); one event per dialog (a forked SUBSCRIBE may get several).
    SubscriptionAccepted {
        /// The handle `Subscribe` returned.
        subscription: DialogId,
        /// The subscription's dialog.
        dialog: DialogId,
        /// The interval granted (seconds); the shard refreshes before it ends.
        expires: u32,
    },
    /// A NOTIFY for a subscription we hold, already answered 200: its state document is
    /// the body, `Subscription-State` says active, pending or terminated (which ends it).
    Notification {
        /// The handle `Subscribe` returned.
        subscription: DialogId,
        /// The dialog it came in.
        dialog: DialogId,
        /// The NOTIFY.
        request: Message,
    },
    /// An out-of-dialog request the shard leaves to the application: a MESSAGE (RFC 3428
    /// pager mode). Answer with [`DialogCommand::Respond`]; unanswered, its transaction
    /// ends without a response after 64·T1.
    IncomingRequest {
        /// The server transaction to answer on.
        txn: ServerTxnId,
        /// The request.
        request: Message,
        /// Where it came from.
        from: SocketAddr,
    },
    /// The final response to a request sent with [`DialogCommand::SendRequest`].
    RequestResult {
        /// The dialog.
        dialog: DialogId,
        /// The final status (408 when none came).
        status: u16,
        /// The response, when one came.
        response: Option<Message>,
    },
    /// The final response to a request sent with [`DialogCommand::SendStandalone`].
    StandaloneResult {
        /// What the command returned.
        request: ClientTxnId,
        /// The final status (408 when none came).
        status: u16,
        /// The response, when one came.
        response: Option<Message>,
    },
    /// A REGISTER, in [`RegisterMode::Event`](super::RegisterMode::Event): answer with [`DialogCommand::Respond`].
    RegistrationRequest {
        /// The server transaction to answer on.
        txn: ServerTxnId,
        /// The REGISTER.
        request: Message,
        /// Where it came from.
        from: SocketAddr,
    },
    /// The dialog ended.
    CallTerminated {
        /// The dialog (for a call that never got a tag: the MakeCall handle).
        dialog: DialogId,
        /// Why.
        reason: TerminationReason,
    },
    /// A dialog taken back from the store at start ([`Shard::restore`](super::Shard::restore)):
    /// confirmed, as it was before the restart. An application above re-attaches its own
    /// state to it; the dialog is live, its requests answered as before.
    DialogRecovered {
        /// The dialog.
        dialog: DialogId,
        /// The call handle the application knew it by (the dialog's id, or for a call we
        /// placed, the handle `MakeCall` returned).
        call: DialogId,
    },
}

/// What the application asks of the shard.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum DialogCommand {
    /// Place a call: INVITE `request_uri` at `destination`.
    MakeCall {
        /// From value without tag (`"Alice" <sip:alice@example.com>`).
        from: Bytes,
        /// To value (`<sip:bob@example.com>`).
        to: Bytes,
        /// Request-URI.
        request_uri: Bytes,
        /// Where to send it (sipshard does no DNS).
        destination: SocketAddr,
        /// SDP offer (empty for none).
        sdp: Bytes,
        /// Extra headers for the INVITE: P-Asserted-Identity, Privacy, a preloaded Route
        /// (§8.1.2, copied into a CANCEL, §9.1), … Headers the dialog layer writes itself
        /// (Via, From, To, Call-ID, CSeq, Contact, Max-Forwards, Content-Type,
        /// Content-Length) are refused with [`BuildError::ReservedHeader`].
        headers: Vec<(String, Bytes)>,
    },
    /// Send 180 Ringing for an incoming call.
    Ringing {
        /// The dialog from IncomingCall.
        dialog: DialogId,
    },
    /// Answer an incoming call with 200 OK.
    Answer {
        /// The dialog from IncomingCall.
        dialog: DialogId,
        /// SDP answer (empty for none).
        sdp: Bytes,
    },
    /// Refuse an incoming call with a final status (300-699).
    Reject {
        /// The dialog from IncomingCall.
        dialog: DialogId,
        /// The status code.
        status: u16,
    },
    /// Cancel a call we placed that has no final response yet.
    Cancel {
        /// The MakeCall handle.
        call: DialogId,
    },
    /// Send a re-INVITE in a confirmed dialog (new offer in `sdp`).
    ReInvite {
        /// The dialog.
        dialog: DialogId,
        /// SDP offer (empty for none).
        sdp: Bytes,
    },
    /// End a confirmed dialog with BYE.
    Bye {
        /// The dialog.
        dialog: DialogId,
    },
    /// Send a non-INVITE request (INFO, MESSAGE, UPDATE, NOTIFY, REFER, OPTIONS …) in a
    /// confirmed dialog; the outcome comes as [`SessionEvent::RequestResult`].
    SendRequest {
        /// The dialog.
        dialog: DialogId,
        /// The method (not INVITE, ACK, CANCEL or BYE: they have their own commands).
        method: Bytes,
        /// Extra headers.
        headers: Vec<(String, Bytes)>,
        /// Body (with its Content-Type among `headers`).
        body: Bytes,
    },
    /// End a call whatever its state: CANCEL while calling, refuse (480) while incoming,
    /// BYE once confirmed.
    Terminate {
        /// The dialog, or the MakeCall handle.
        dialog: DialogId,
    },
    /// Send a request outside any dialog (REGISTER, OPTIONS, MESSAGE …); the outcome
    /// comes as [`SessionEvent::StandaloneResult`].
    SendStandalone(Box<StandaloneRequest>),
    /// Answer a request the application was handed (RegistrationRequest, DialogRequest).
    Respond {
        /// Its server transaction.
        txn: ServerTxnId,
        /// Status code.
        status: u16,
        /// Extra headers (e.g. Contact with expires for a 200 to REGISTER; the
        /// Content-Type of `body`).
        headers: Vec<(String, Bytes)>,
        /// The body (e.g. the SDP answer to an UPDATE's offer, RFC 3311 §5.2); empty for
        /// none.
        body: Bytes,
    },
    /// Send a REFER (RFC 3515) asking the peer to send a request to `refer_to`; the
    /// peer's NOTIFYs about it arrive as [`SessionEvent::ReferNotify`].
    Refer {
        /// The confirmed dialog.
        dialog: DialogId,
        /// The Refer-To value (`<sip:carol@example.com>`, with `?Replaces=…` for an
        /// attended transfer).
        refer_to: Bytes,
    },
    /// Subscribe to an event package at a notifier (RFC 6665): the outcome comes as
    /// [`SessionEvent::SubscriptionAccepted`], [`SessionEvent::Notification`]s and, at the
    /// end, [`SessionEvent::SubscriptionTerminated`]; the shard refreshes it.
    Subscribe(Box<NewSubscription>),
    /// End a subscription we hold (`Expires: 0`), by its handle (every dialog of it) or
    /// one of its dialogs.
    Unsubscribe {
        /// The `Subscribe` handle or a dialog of it.
        subscription: DialogId,
    },
    /// Send a NOTIFY for a subscription the shard serves (RFC 6665): `Event` and
    /// `Subscription-State` (with the seconds left) are written by the shard.
    Notify {
        /// The subscription's dialog (from [`SessionEvent::SubscriptionRequest`]).
        dialog: DialogId,
        /// Which subscription: its Event value (`presence`, `dialog;id=7`).
        event: Bytes,
        /// The state to report; `Terminated` ends the subscription.
        state: NotifyState,
        /// Extra headers (the body's Content-Type).
        headers: Vec<(String, Bytes)>,
        /// The body (the package's state document); empty for none.
        body: Bytes,
    },
    /// Report how the request a peer's REFER asked for went (RFC 3515 §2.4.4): a NOTIFY
    /// with `message/sipfrag` body `SIP/2.0 <status> <reason>`. A 1xx keeps the implicit
    /// subscription active; 200–699 ends it. (The 2xx to the REFER already sent
    /// `100 Trying`.)
    ReferStatus {
        /// The dialog the REFER came in.
        dialog: DialogId,
        /// The REFER's CSeq number (the NOTIFY's `Event: refer;id=`).
        refer_cseq: u32,
        /// The referenced request's status so far.
        status: u16,
    },
}

/// What a command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Done.
    Done,
    /// MakeCall: the handle of the new call.
    Call(DialogId),
    /// SendStandalone: the request's transaction, which its
    /// [`SessionEvent::StandaloneResult`] names.
    Request(ClientTxnId),
    /// Subscribe: the handle of the new subscription.
    Subscription(DialogId),
}

/// Why a command was refused.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialogError {
    /// No such dialog in this shard (or it has ended).
    DialogNotFound(DialogId),
    /// The dialog is not in a state that allows the command.
    InvalidDialogState {
        /// Where it is.
        current: &'static str,
        /// What the command needs.
        expected: &'static str,
    },
    /// The transaction layer refused.
    TransactionError(TxnError),
    /// A message could not be built from what the command gave.
    InvalidInput(BuildError),
    /// The shard is at its dialog limit.
    Overloaded,
    /// The shard is stopping and takes no new calls.
    ShuttingDown,
    /// The exchange between the application and a shard failed: its thread is gone, a
    /// reply was dropped, or the shard answered with something the call did not expect.
    SessionCoordinationFailed(String),
    /// The manager has not been started (or was stopped).
    NotRunning,
    /// A call target sipshard cannot send to (no IP address: sipshard does no DNS).
    InvalidTarget(String),
    /// A Request-URI whose `transport` parameter names a transport sipshard does not speak
    /// (it speaks UDP and TCP).
    UnsupportedTransport(String),
    /// A socket could not be opened or used.
    Transport(String),
}

impl DialogError {
    /// Whether the operation may succeed if tried again, as the reference
    /// (rvoip-dialog-core) defines it, which code ported from it relies on:
    /// - `DialogNotFound`: true (the dialog may not have reached this shard yet, or a
    ///   retry names another);
    /// - `TransactionError(e)`: what `e.is_recoverable()` says;
    /// - `InvalidDialogState`: false (the same command in the same state fails again);
    /// - `SessionCoordinationFailed`: true (the exchange, not the dialog, failed).
    ///
    /// sipshard's own kinds: `Overloaded` and `Transport` true (they pass); bad input,
    /// unknown targets and transports, a stopping or stopped runtime false.
    pub fn is_recoverable(&self) -> bool {
        match self {
            DialogError::DialogNotFound(_) => true,
            DialogError::TransactionError(e) => e.is_recoverable(),
            DialogError::InvalidDialogState { .. } => false,
            DialogError::SessionCoordinationFailed(_) => true,
            DialogError::Overloaded | DialogError::Transport(_) => true,
            DialogError::InvalidInput(_)
            | DialogError::ShuttingDown
            | DialogError::NotRunning
            | DialogError::InvalidTarget(_)
            | DialogError::UnsupportedTransport(_) => false,
        }
    }

    /// A dialog whose slot emptied between its lookup and its use: it has ended.
    pub(crate) fn ended(expected: &'static str) -> DialogError {
        DialogError::InvalidDialogState {
            current: "terminated",
            expected,
        }
    }
}

impl std::fmt::Display for DialogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialogError::DialogNotFound(id) => write!(f, "dialog not found: {id}"),
            DialogError::InvalidDialogState { current, expected } => {
                write!(f, "dialog is {current}, needs {expected}")
            }
            DialogError::TransactionError(e) => write!(f, "transaction: {e}"),
            DialogError::InvalidInput(e) => write!(f, "cannot build message: {e}"),
            DialogError::Overloaded => f.write_str("shard overloaded"),
            DialogError::ShuttingDown => f.write_str("shard is stopping"),
            DialogError::SessionCoordinationFailed(why) => {
                write!(f, "session coordination failed: {why}")
            }
            DialogError::NotRunning => f.write_str("dialog manager not running"),
            DialogError::InvalidTarget(t) => write!(f, "cannot send to {t}: need an IP address"),
            DialogError::UnsupportedTransport(t) => {
                write!(f, "cannot send over {t}: sipshard speaks UDP and TCP")
            }
            DialogError::Transport(e) => write!(f, "transport: {e}"),
        }
    }
}

impl std::error::Error for DialogError {}
