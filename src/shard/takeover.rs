//! Taking a peer's dialog over (issue 23): an in-dialog request for a dialog this shard
//! does not hold waits while the shared store is asked for the dialog's record; if a dead
//! peer owned it, the record comes back claimed for this node, the dialog is restored (its
//! timers re-armed: this node runs them now) and the request is handled as if the dialog
//! had always been here. Otherwise the request gets its 481.
//!
//! A peer may take a dialog from this node while it lives (the front sends the call's
//! requests to the peer now): the shared store tells this node, and
//! [`Shard::handle_released`] drops the dialog here without a word on the wire.
//!
//! A REGISTER waits the same way for its address-of-record's bindings as the shared store
//! holds them (any node may have changed them since): they replace this shard's copy, and
//! the REGISTER is handled against them, so a registration made through one node is what a
//! query through another sees.
//!
//! # What it owns, what it may not touch
//! The requests waiting for a claim and the claims asked for. It touches no store: claims
//! leave through [`Shard::poll_claim`] and their answers come back through
//! [`Shard::handle_claim`] (the runtime asks Redis, with the compare-and-set that makes
//! one node the owner); the restore is `persist`'s.

use std::net::SocketAddr;
use std::time::Instant;

use super::Shard;
use crate::dialog::DialogId;
use crate::message::Message;
use crate::transaction::ServerTxnId;

/// Requests that may wait for claims at once; beyond, they get their 481 at once.
const MAX_WAITING: usize = 4096;

/// The shard's side of takeovers (present when [`ShardConfig::takeover`] is on).
///
/// [`ShardConfig::takeover`]: super::ShardConfig::takeover
#[derive(Default)]
pub(super) struct Takeover {
    /// Requests waiting for the claim of their dialog's record.
    waiting: Vec<Waiting>,
    /// Store keys of records to claim, not yet handed out.
    asks: Vec<Vec<u8>>,
}

struct Waiting {
    key: Vec<u8>,
    txn: ServerTxnId,
    request: Message,
    /// A REGISTER from here (handled again as one); `None`: an in-dialog request.
    register_from: Option<SocketAddr>,
}

impl Shard {
    /// An in-dialog request for the dialog `id`, which this shard does not hold: with
    /// takeovers on, it waits for the claim of the dialog's record and this returns true;
    /// else the caller answers it 481.
    pub(super) fn wait_for_claim(
        &mut self,
        txn: ServerTxnId,
        request: &Message,
        id: &DialogId,
    ) -> bool {
        let key = super::persist::dialog_store_key(id);
        self.wait_for(key, txn, request, None)
    }

    /// A REGISTER for `aor` from `from`: with takeovers on it waits for the AOR's
    /// bindings as the shared store holds them, and this returns true.
    pub(super) fn wait_for_bindings(
        &mut self,
        txn: ServerTxnId,
        request: &Message,
        aor: &[u8],
        from: SocketAddr,
    ) -> bool {
        let key = super::persist::bindings_store_key(aor);
        self.wait_for(key, txn, request, Some(from))
    }

    fn wait_for(
        &mut self,
        key: Vec<u8>,
        txn: ServerTxnId,
        request: &Message,
        register_from: Option<SocketAddr>,
    ) -> bool {
        let Some(takeover) = &mut self.takeover else {
            return false;
        };
        if takeover.waiting.len() >= MAX_WAITING {
            return false;
        }
        if !takeover.waiting.iter().any(|w| w.key == key) {
            takeover.asks.push(key.clone());
        }
        takeover.waiting.push(Waiting {
            key,
            txn,
            request: request.clone(),
            register_from,
        });
        true
    }

    /// The store key of a dialog record to claim for this node (see the module doc);
    /// each is answered with [`Shard::handle_claim`].
    pub fn poll_claim(&mut self) -> Option<Vec<u8>> {
        self.takeover.as_mut()?.asks.pop()
    }

    /// The answer to a claim: the record, now this node's, or `None` (no such dialog, a
    /// live peer owns it, or the store could not be asked). The requests that waited for
    /// it are handled now: in the restored dialog, or with their 481. For an AOR's
    /// bindings key, the record (or its absence) replaces this shard's bindings of the
    /// AOR, and the REGISTERs that waited are handled against them.
    pub fn handle_claim(&mut self, now: Instant, key: &[u8], record: Option<&[u8]>) {
        let Some(takeover) = &mut self.takeover else {
            return;
        };
        let (done, rest): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut takeover.waiting)
            .into_iter()
            .partition(|w| w.key == key);
        takeover.waiting = rest;
        if let Some(aor) = super::persist::bindings_key_aor(key) {
            // An AOR's bindings: the shared store's copy replaces ours (none: it has none).
            if let Some(table) = &mut self.registrar {
                table.forget(aor);
            }
            if let Some(record) = record
                && let Err(e) = self.restore(now, record)
            {
                tracing::warn!(error = %e, "shared bindings did not restore");
            }
        } else if let Some(record) = record {
            match self.restore(now, record) {
                Ok(_) => self.stats.dialogs_taken_over += 1,
                // Both a request's claim and the sweep brought it: it is here.
                Err(super::RestoreError::Duplicate) => {}
                Err(e) => tracing::warn!(error = %e, "a claimed dialog record did not restore"),
            }
        }
        // Handled with takeovers off for the moment: a dialog still missing gets its 481
        // rather than another claim, a REGISTER is handled against what is here now.
        let takeover = self.takeover.take();
        for w in done {
            match w.register_from {
                Some(from) => self.on_register(now, w.txn, w.request, from),
                None => {
                    if let Ok(Some(local)) = w.request.to_tag() {
                        let local = local.to_vec();
                        self.in_dialog_request(now, w.txn, w.request, &local);
                    }
                }
            }
        }
        self.takeover = takeover;
    }
}

impl Shard {
    /// A peer took the dialog at store key `key` over while this node was alive (the front
    /// sends its requests there now; the shared store said so): it leaves this shard
    /// without a word on the wire (no BYE, no NOTIFY: its timers die with it), its record
    /// leaves the embedded store, and the application hears
    /// [`TerminationReason::TakenOver`](super::TerminationReason::TakenOver). Returns
    /// whether the dialog was here.
    pub fn handle_released(&mut self, key: &[u8]) -> bool {
        let Some(index) = super::persist::store_key_dialog_key(key).and_then(|k| self.find_key(k))
        else {
            return false;
        };
        let Some(entry) = self.remove(index) else {
            return false;
        };
        self.stats.dialogs_released += 1;
        self.events.push_back(super::SessionEvent::CallTerminated {
            dialog: entry.call.unwrap_or(entry.dialog.id),
            reason: super::TerminationReason::TakenOver,
        });
        true
    }
}

/// The shard's takeover state, when `on`.
pub(super) fn takeover_state(on: bool) -> Option<Takeover> {
    on.then(Takeover::default)
}
