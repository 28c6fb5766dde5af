//! What other threads may hand a shard thread, and how they wake it: the inbound queue's
//! message type, the handle other threads keep, and the eventfd waker.
//!
//! # What it owns, what it may not touch
//! The cross-thread face of a shard thread. It carries messages and wake-ups; what a
//! message means is the worker's business.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{ShardReport, StopPolicy};
use crate::shard::{CommandOutcome, DialogCommand, DialogError};
use crate::transaction::Transmit;

/// How a command's answer comes back to the async caller.
pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<CommandOutcome, DialogError>>;

/// What reaches a shard thread from elsewhere.
pub(crate) enum Inbound {
    /// Datagrams another shard's socket received for our Call-IDs.
    Datagrams(Vec<(SocketAddr, Bytes)>),
    /// Messages a connection of shard `owner` carried for our Call-IDs: what we send back
    /// to those peers goes out through that shard.
    Stream {
        owner: usize,
        messages: Vec<(SocketAddr, Bytes)>,
    },
    /// Messages for connections this shard holds (another shard's dialogs reply over them).
    StreamSend(Vec<Transmit>),
    /// Connections shard `owner` held to these peers closed: replies to them no longer go
    /// through it.
    StreamClosed {
        owner: usize,
        /// Each peer, and whether it had opened the connection.
        peers: Vec<(SocketAddr, bool)>,
    },
    /// A command from the application (boxed: commands are rare next to datagrams, and
    /// this keeps every queue slot small).
    Command(Box<DialogCommand>, Reply),
    /// A message from another shard (Replaces, RFC 3891: the `shard` module's
    /// [`PeerMessage`](crate::shard::PeerMessage)).
    Peer(crate::shard::PeerMessage),
    /// A snapshot of the counters.
    Stats(tokio::sync::oneshot::Sender<ShardReport>),
    /// The shared store's answer to a claim (`shared` module): the dialog record at `key`,
    /// now this node's, or nothing.
    Claimed {
        key: Vec<u8>,
        record: Option<Vec<u8>>,
    },
    /// Store keys of dialogs a peer took from this node (`shared` module): they leave.
    Released(Vec<Vec<u8>>),
    /// Stop taking calls; end by `deadline` as the policy says.
    Stop {
        policy: StopPolicy,
        deadline: Instant,
    },
}

/// The part of a shard thread other threads may touch: its queue and its wake-up.
pub(crate) struct ShardHandle {
    pub(crate) inbound: Sender<Inbound>,
    pub(crate) waker: Arc<Waker>,
    /// Live dialogs, published by the shard after each round (read by `dialog_count`).
    pub(crate) dialogs: Arc<AtomicUsize>,
}

impl ShardHandle {
    /// Queues without blocking; wakes the shard.
    pub(crate) fn try_send(&self, message: Inbound) -> Result<(), TrySendError<Inbound>> {
        self.inbound.try_send(message)?;
        self.waker.wake();
        Ok(())
    }
}

/// An eventfd the shard sleeps on, written only when the shard says it is asleep (so a
/// busy shard costs its producers no syscall).
pub(crate) struct Waker {
    pub(super) sleeping: AtomicBool,
    pub(super) fd: EventFd,
    /// Wake-ups that needed the eventfd.
    pub(super) writes: AtomicU64,
}

impl Waker {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Waker {
            sleeping: AtomicBool::new(false),
            fd: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
            writes: AtomicU64::new(0),
        })
    }

    pub(crate) fn wake(&self) {
        // Pairs with the fence in `Worker::sleep`: either the shard sees our message in
        // its queue, or we see it asleep and write.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.writes.fetch_add(1, Ordering::Relaxed);
            let _ = self.fd.write(1);
        }
    }
}
