//! What the transaction layer hands out and takes in: the transmits and the transport
//! they name, transaction ids, the events, the errors and the counters.
//!
//! # What it owns, what it may not touch
//! Those types and their small methods; the machines and the table are `mod.rs`'s,
//! `client`'s and `server`'s.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::message::Message;

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes (usually a zero-copy handle on a message built or received earlier).
    pub payload: Bytes,
    /// Over what: a datagram, or the stream connection to `destination` (the one the
    /// request came in on, for a response: §18.2.2).
    pub transport: Transport,
}

/// The transports sipshard speaks (RFC 3261 §18: UDP and TCP). Reliable transports get no
/// retransmission timers and zero-length wait states (§17).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Datagrams: the transaction layer retransmits.
    #[default]
    Udp,
    /// A stream connection: reliable, messages framed by Content-Length (§18.3).
    Tcp,
}

impl Transport {
    /// True for stream transports (§17: Timers A, E and G off; D, I, J and K zero).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// The transport token of a Via's sent-protocol and of a URI's `transport` parameter.
    pub fn token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// The transport a URI's `transport` parameter value names, if sipshard speaks it.
    pub fn from_token(token: &[u8]) -> Option<Transport> {
        if token.eq_ignore_ascii_case(b"udp") {
            Some(Transport::Udp)
        } else if token.eq_ignore_ascii_case(b"tcp") {
            Some(Transport::Tcp)
        } else {
            None
        }
    }
}

/// A slab position plus generation: a stale id never reaches a newer transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct SlotId {
    pub(super) index: u32,
    pub(super) generation: u32,
}

/// A client transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientTxnId(pub(super) SlotId);

/// A server transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerTxnId(pub(super) SlotId);

/// Either kind of transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnId {
    /// A client transaction.
    Client(ClientTxnId),
    /// A server transaction.
    Server(ServerTxnId),
}

/// What the transaction layer tells its user (the dialog layer, or a test).
#[non_exhaustive]
#[derive(Debug)]
pub enum TxnEvent {
    /// A request that created a server transaction (not ACK, not CANCEL). Answer it with
    /// [`TransactionLayer::send_response`](super::TransactionLayer::send_response).
    Request {
        /// The new server transaction.
        txn: ServerTxnId,
        /// The request.
        request: Message,
        /// Where it came from.
        from: SocketAddr,
    },
    /// A CANCEL (its own server transaction) and the INVITE transaction it cancels, if that
    /// is still known (§9.2). Answer the CANCEL; answer the INVITE 487 if it is pending.
    Cancel {
        /// The CANCEL's server transaction.
        txn: ServerTxnId,
        /// The INVITE server transaction with the same branch and sent-by, if any.
        invite: Option<ServerTxnId>,
        /// The CANCEL.
        request: Message,
        /// Where it came from.
        from: SocketAddr,
    },
    /// An ACK the transaction layer does not absorb: the ACK to a 2xx (its own branch, so it
    /// matches no transaction), or one reaching an INVITE server transaction in Accepted.
    Ack {
        /// The ACK.
        request: Message,
        /// Where it came from.
        from: SocketAddr,
    },
    /// A response passed up by a client transaction, including 2xx retransmissions and 2xx
    /// from other forks while the INVITE transaction is Accepted (RFC 6026).
    Response {
        /// The client transaction.
        txn: ClientTxnId,
        /// The response.
        response: Message,
    },
    /// A response that matches no client transaction (a 2xx retransmitted after Timer M):
    /// the dialog layer re-sends its ACK (§13.2.2.4).
    StrayResponse {
        /// The response.
        response: Message,
        /// Where it came from.
        from: SocketAddr,
    },
    /// Timer B or F (no final response), or Timer H (no ACK for a non-2xx final).
    Timeout {
        /// The transaction, which is now terminated.
        txn: TxnId,
    },
    /// The runtime reported that a message of this transaction could not be sent.
    TransportError {
        /// The transaction, which is now terminated.
        txn: TxnId,
    },
    /// The transaction ended (after any Timeout or TransportError for it).
    Terminated {
        /// The transaction.
        txn: TxnId,
    },
    /// A timer scheduled with [`TransactionLayer::schedule`](super::TransactionLayer::schedule) fired.
    UserTimer {
        /// The token given to `schedule`.
        token: u64,
    },
}

/// Why a command from the transaction user was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnError {
    /// No such transaction (never existed, or terminated).
    UnknownTransaction,
    /// The transaction cannot take this: e.g. a second final response.
    InvalidState {
        /// The state the transaction is in.
        current: &'static str,
    },
    /// The status code is outside 100-699.
    InvalidStatus,
    /// A client transaction with this branch and method already exists.
    DuplicateBranch,
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxnError::UnknownTransaction => f.write_str("unknown transaction"),
            TxnError::InvalidState { current } => write!(f, "transaction is {current}"),
            TxnError::InvalidStatus => f.write_str("status code outside 100-699"),
            TxnError::DuplicateBranch => f.write_str("branch already in use"),
        }
    }
}

impl TxnError {
    /// Whether the operation may succeed if tried again: only a branch already in use (a
    /// new branch is drawn on the next try). A transaction that is gone or in the wrong
    /// state, and a bad status code, fail the same way again.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, TxnError::DuplicateBranch)
    }
}

impl std::error::Error for TxnError {}

/// Counters of one transaction layer (one shard); summed across shards on demand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnStats {
    /// Client transactions created.
    pub client_created: u64,
    /// Server transactions created.
    pub server_created: u64,
    /// Requests re-sent by Timer A or E.
    pub request_retransmissions: u64,
    /// Responses re-sent by Timer G or for a retransmitted request.
    pub response_retransmissions: u64,
    /// Retransmitted requests absorbed by a server transaction.
    pub requests_absorbed: u64,
    /// Retransmitted responses absorbed by a client transaction.
    pub responses_absorbed: u64,
    /// 100 Trying sent on the TU's behalf.
    pub trying_sent: u64,
    /// Timers B, F and H.
    pub timeouts: u64,
    /// Responses matching no transaction.
    pub stray_responses: u64,
    /// Non-INVITE server transactions the TU never answered, ended after 64·T1.
    pub tu_deadlines: u64,
    /// Server transactions ended without a response ([`TransactionLayer::discard`](super::TransactionLayer::discard)).
    pub discarded: u64,
    /// Requests too large for UDP sent over TCP instead (§18.1.1).
    pub large_requests_over_tcp: u64,
    /// Of those, requests sent over UDP after all when the connection failed.
    pub stream_fallbacks: u64,
}

impl TxnStats {
    /// Adds another layer's counters (for totals across shards).
    pub fn merge(&mut self, o: &TxnStats) {
        self.client_created += o.client_created;
        self.server_created += o.server_created;
        self.request_retransmissions += o.request_retransmissions;
        self.response_retransmissions += o.response_retransmissions;
        self.requests_absorbed += o.requests_absorbed;
        self.responses_absorbed += o.responses_absorbed;
        self.trying_sent += o.trying_sent;
        self.timeouts += o.timeouts;
        self.stray_responses += o.stray_responses;
        self.tu_deadlines += o.tu_deadlines;
        self.discarded += o.discarded;
        self.large_requests_over_tcp += o.large_requests_over_tcp;
        self.stream_fallbacks += o.stream_fallbacks;
    }
}
