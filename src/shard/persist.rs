//! Persisted dialogs: what the shard hands a store so that its confirmed calls outlive the
//! process, and how it takes them back at start.
//!
//! # What it owns, what it may not touch
//! When a dialog's record is written, rewritten or deleted, and the restore of a record
//! into a live, confirmed dialog with its timers re-armed. It touches no store: records
//! leave through [`Shard::poll_persist`] and come back through [`Shard::restore`], so the
//! shard stays sans-IO (the runtime writes them before the round's datagrams leave).
//!
//! # What is written
//! A confirmed INVITE dialog in either role, or a dialog a SUBSCRIBE (or REFER) made with
//! an accepted subscription in it, served as notifier or held as subscriber
//! ([`DialogRecord`]), and a registrar's bindings per AOR: written when it is confirmed
//! (our 2xx, or our ACK to the peer's 2xx), again when something a restarted shard needs
//! changes (our CSeq: every request we send in it, RFC 3261 §12.2.1.1 wants them
//! contiguous; the peer's CSeq; the remote target; the session timer; a subscription
//! accepted, refreshed, ending or ended; a REFER's implicit subscription opened or
//! closed), and deleted when the dialog ends or our BYE leaves. Changes within one round are written once.
//! Early dialogs and transactions are not persisted: an INVITE whose 2xx had not left is
//! lost, and its retransmission after a restart is a new call.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use super::entry::{Entry, Stored};
use super::{Phase, SessionEvent, Shard, SlotRef, shard_for_call_id};
use crate::dialog::{DialogId, DialogRecord, DialogState, RecordError};

/// The kind byte of a dialog's key in the store; a binding set's is [`BINDINGS_KEY`]. The
/// two never collide, whatever Call-ID or AOR a peer chooses.
const DIALOG_KEY: u8 = b'd';
/// The kind byte of an address-of-record's key in the store.
const BINDINGS_KEY: u8 = b'r';

/// A record's key in the store: four bytes of an FNV-1a hash of the dialog's key (or the
/// AOR), the kind byte, then the dialog's key (or the AOR) itself, so keys stay unique.
///
/// The hash comes first because an ordered store compares keys on every write: keys that
/// share long prefixes (`d` and a Call-ID's first characters, a SIPp Call-ID's counter)
/// make each comparison a `memcmp` over a pointer chase, and fjall's memtable compares
/// its keys' first four bytes inline before it looks further. Measured on
/// `shard/call_flow_persisted`: the memtable's `memcmp` fell from 8.9 % to 2.2 % of the
/// profile.
fn store_key(kind: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + key.len());
    k.extend_from_slice(&crate::codec::fnv1a(key).to_be_bytes());
    k.push(kind);
    k.extend_from_slice(key);
    k
}

/// The store key of the dialog `id`'s record.
pub(super) fn dialog_store_key(id: &DialogId) -> Vec<u8> {
    store_key(DIALOG_KEY, id.key())
}

/// The store key of `aor`'s bindings record.
pub(super) fn bindings_store_key(aor: &[u8]) -> Vec<u8> {
    store_key(BINDINGS_KEY, aor)
}

/// The AOR of an address-of-record's bindings key (`None`: not one).
pub(super) fn bindings_key_aor(key: &[u8]) -> Option<&[u8]> {
    (key.get(4) == Some(&BINDINGS_KEY)).then(|| &key[5..])
}

/// Whether a store key is a dialog's (else an address-of-record's bindings).
pub fn is_dialog_store_key(key: &[u8]) -> bool {
    key.get(4) == Some(&DIALOG_KEY)
}

/// The key the record `record` is stored under by this build (a store written by an
/// earlier layout is re-keyed by it at start). `None`: not a record of this build.
pub fn record_store_key(record: &[u8]) -> Option<Vec<u8>> {
    if record.starts_with(crate::registrar::BINDINGS_MAGIC) {
        let aor = crate::registrar::bindings_record_aor(record)?;
        Some(store_key(BINDINGS_KEY, aor))
    } else {
        Some(store_key(
            DIALOG_KEY,
            crate::dialog::record_dialog_key(record)?,
        ))
    }
}

/// What a record routes by: a dialog record's Call-ID, a binding record's AOR (the keys
/// the runtime hashes datagrams onto shards by). `None`: not a record of this build.
pub fn record_routing_key(record: &[u8]) -> Option<&[u8]> {
    if record.starts_with(crate::registrar::BINDINGS_MAGIC) {
        crate::registrar::bindings_record_aor(record)
    } else {
        crate::dialog::record_call_id(record)
    }
}

/// What a store key routes by (as [`record_routing_key`] for its record): a dialog's
/// Call-ID, an address-of-record itself. `None`: not a key of this build.
pub fn store_key_routing_key(key: &[u8]) -> Option<&[u8]> {
    match *key.get(4)? {
        DIALOG_KEY => crate::dialog::key_call_id(&key[5..]),
        BINDINGS_KEY => Some(&key[5..]),
        _ => None,
    }
}

/// The dialog key (as the table holds it) inside a dialog's store key.
pub(super) fn store_key_dialog_key(key: &[u8]) -> Option<&[u8]> {
    is_dialog_store_key(key).then(|| &key[5..])
}

/// What a record brought back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restored {
    /// A confirmed dialog.
    Dialog(DialogId),
    /// An address-of-record's bindings (those not lapsed meanwhile).
    Bindings {
        /// The AOR.
        aor: Vec<u8>,
        /// Bindings restored.
        count: usize,
    },
}

/// A write for the store.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersistOp {
    /// Write (or overwrite) a dialog's record.
    Put {
        /// The dialog's key (its [`DialogId`]'s bytes, Call-ID first).
        key: Vec<u8>,
        /// The record ([`DialogRecord::decode`] reads it).
        record: Vec<u8>,
    },
    /// Delete an ended dialog's record.
    Delete {
        /// The dialog's key.
        key: Vec<u8>,
    },
}

/// Why a record was not restored.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The bytes are not a record this build reads.
    Record(RecordError),
    /// Its Call-ID belongs to another shard.
    WrongShard,
    /// The shard already holds a dialog with its id.
    Duplicate,
    /// A binding record, and this shard keeps no registrar.
    NoRegistrar,
    /// The shard is at its dialog limit.
    Full,
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Record(e) => write!(f, "{e}"),
            RestoreError::WrongShard => write!(f, "the dialog belongs to another shard"),
            RestoreError::Duplicate => write!(f, "the dialog is already live"),
            RestoreError::Full => write!(f, "the shard is at its dialog limit"),
            RestoreError::NoRegistrar => write!(f, "a binding record, and no registrar here"),
        }
    }
}

impl std::error::Error for RestoreError {}

/// The shard's side of persistence (present when [`ShardConfig::persist`] is on).
///
/// [`ShardConfig::persist`]: super::ShardConfig::persist
#[derive(Default)]
pub(super) struct Persist {
    /// Dialogs changed this round, written at the next poll.
    dirty: Vec<SlotRef>,
    /// Writes ready for the store, in order.
    out: VecDeque<PersistOp>,
    /// Restored forks of a held subscription whose first dialog (the one its handle
    /// names) has not been restored yet: it takes them when it is.
    unlinked_forks: Vec<(DialogId, SlotRef)>,
}

impl Entry {
    /// What the store keeps: a confirmed INVITE dialog still up, or a dialog a SUBSCRIBE
    /// made with an accepted subscription in it, served (as notifier) or held (as
    /// subscriber).
    fn persistable(&self) -> bool {
        let usages = self.usages.as_deref();
        self.dialog.state == DialogState::Confirmed
            && match self.phase {
                Phase::Answered { .. } | Phase::Established { .. } => true,
                Phase::Subscription => usages.is_some_and(|u| {
                    u.watch.as_ref().is_some_and(|w| w.accepted())
                        || u.served.iter().any(|s| s.accepted())
                }),
                _ => false,
            }
    }
}

impl Shard {
    /// Something of the dialog at `index` that a restart needs has changed (or it was
    /// just confirmed, or its BYE is out): its record is written, or deleted, at the next
    /// [`Shard::poll_persist`].
    pub(super) fn dialog_changed(&mut self, index: u32) {
        let Some(persist) = &mut self.persist else {
            return;
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        let generation = slot.generation;
        let Some(entry) = slot.entry.as_mut() else {
            return;
        };
        let queue = |persist: &mut Persist| persist.dirty.push(SlotRef { index, generation });
        entry.stored = match entry.stored {
            Stored::No if entry.dialog.state == DialogState::Confirmed => {
                queue(persist);
                Stored::Queued
            }
            Stored::Written => {
                queue(persist);
                Stored::WrittenQueued
            }
            other => other,
        };
    }

    /// An entry leaves the table: its record, if one was written, is deleted.
    pub(super) fn forget_stored(&mut self, entry: &Entry) {
        if let Some(persist) = &mut self.persist
            && matches!(entry.stored, Stored::Written | Stored::WrittenQueued)
        {
            persist.out.push_back(PersistOp::Delete {
                key: store_key(DIALOG_KEY, entry.dialog.id.key()),
            });
        }
    }

    /// The next write for the store. The runtime takes them all after each round and
    /// hands them to the store before it sends the round's datagrams, so no 2xx or ACK
    /// that confirms a dialog leaves before its record does.
    pub fn poll_persist(&mut self) -> Option<PersistOp> {
        let persist = self.persist.as_mut()?;
        if !persist.dirty.is_empty() {
            let dirty = std::mem::take(&mut persist.dirty);
            for r in &dirty {
                self.write_record(*r);
            }
            if let Some(persist) = &mut self.persist {
                // Keep the allocation for the next round.
                persist.dirty = dirty;
                persist.dirty.clear();
            }
        }
        self.persist.as_mut()?.out.pop_front()
    }

    /// The record the store would hold for `dialog` now: `None` when it is not kept (not
    /// confirmed, ended, or not a kind of dialog the store keeps). A later store (a
    /// peer's takeover) starts from it; the shard fuzz target checks that what a shard
    /// wrote is what it holds.
    pub fn dialog_record(&self, dialog: &DialogId) -> Option<Vec<u8>> {
        let entry = self.slots[self.find(dialog)? as usize].entry.as_ref()?;
        entry.persistable().then(|| self.record_of(entry))
    }

    /// Every record the store should hold now, as writes: each kept dialog's and each
    /// address-of-record's bindings. A store that lost writes (a shared store that was
    /// unreachable) is brought back up to date with them.
    pub fn persisted_records(&self) -> Vec<PersistOp> {
        let mut ops: Vec<PersistOp> = self
            .slots
            .iter()
            .filter_map(|slot| slot.entry.as_ref())
            .filter(|entry| entry.persistable())
            .map(|entry| PersistOp::Put {
                key: store_key(DIALOG_KEY, entry.dialog.id.key()),
                record: self.record_of(entry),
            })
            .collect();
        if let Some(table) = &self.registrar
            && self.wall_clock.is_some()
        {
            ops.extend(table.aors().filter_map(|aor| {
                let record = table.bindings_record(aor, |at| self.wall_time(at))?;
                Some(PersistOp::Put {
                    key: store_key(BINDINGS_KEY, aor),
                    record,
                })
            }));
        }
        ops
    }

    /// Writes (or deletes) the record of the dialog `r` points at, if it is still there.
    fn write_record(&mut self, r: SlotRef) {
        let Some(index) = self.resolve(r) else {
            return;
        };
        let op = {
            let Some(entry) = self.slots[index as usize].entry.as_ref() else {
                return;
            };
            let was_written = entry.stored == Stored::WrittenQueued;
            if entry.persistable() {
                Some(PersistOp::Put {
                    key: store_key(DIALOG_KEY, entry.dialog.id.key()),
                    record: self.record_of(entry),
                })
            } else if was_written {
                Some(PersistOp::Delete {
                    key: store_key(DIALOG_KEY, entry.dialog.id.key()),
                })
            } else {
                None
            }
        };
        let Some(entry) = self.entry_mut(index) else {
            return;
        };
        entry.stored = match op {
            Some(PersistOp::Put { .. }) => Stored::Written,
            _ => Stored::No,
        };
        self.stats.records_written += u64::from(matches!(op, Some(PersistOp::Put { .. })));
        if let (Some(op), Some(persist)) = (op, &mut self.persist) {
            persist.out.push_back(op);
        }
    }

    /// The record of `entry`, its deadlines in wall-clock time.
    fn record_of(&self, entry: &Entry) -> Vec<u8> {
        let wall = |at: Instant| self.wall_time(at);
        let call_limit_at = entry
            .call_timer
            .filter(|(_, kind)| *kind == super::timers::DialogTimer::CallLimit)
            .and_then(|(handle, _)| self.txn.timer_deadline(handle))
            .and_then(wall);
        let session_timer = entry
            .usages
            .as_ref()
            .and_then(|u| u.session_timer.as_ref())
            .and_then(|st| st.to_record(wall));
        let held = entry.usages.as_ref().and_then(|u| {
            let w = u.watch.as_ref()?;
            // A fork: the handle names the first dialog, not this one.
            let fork = self.find(w.handle()) != self.find(&entry.dialog.id);
            let due_at = w
                .timer()
                .and_then(|t| self.txn.timer_deadline(t))
                .and_then(wall);
            w.to_record(fork, due_at, wall)
        });
        let usages = crate::dialog::UsageRecords {
            subscription_only: matches!(entry.phase, Phase::Subscription),
            served: entry
                .usages
                .as_ref()
                .map(|u| u.served.iter().filter_map(|s| s.to_record(wall)).collect())
                .unwrap_or_default(),
            held,
            refers_sent: entry
                .usages
                .as_ref()
                .map(|u| u.refers_sent.clone())
                .unwrap_or_default(),
        };
        crate::dialog::encode_record(
            &entry.dialog,
            entry.call.as_ref().filter(|c| **c != entry.dialog.id),
            call_limit_at,
            session_timer.as_ref(),
            &usages,
        )
    }

    /// Takes a dialog back from its record, as it was before the restart: confirmed, its
    /// CSeqs, target and route set as written, its call limit and session timer re-armed
    /// at their wall-clock deadlines (at once, when they passed while the process was
    /// down: the BYE goes out now). Announced with [`SessionEvent::DialogRecovered`].
    ///
    /// Call it before the shard takes traffic, with [`Shard::set_wall_clock`] said.
    pub fn restore(&mut self, now: Instant, bytes: &[u8]) -> Result<Restored, RestoreError> {
        if bytes.starts_with(crate::registrar::BINDINGS_MAGIC) {
            return self.restore_bindings(now, bytes);
        }
        self.restore_dialog(now, bytes).map(Restored::Dialog)
    }

    fn restore_dialog(&mut self, now: Instant, bytes: &[u8]) -> Result<DialogId, RestoreError> {
        let record = DialogRecord::decode(bytes).map_err(RestoreError::Record)?;
        let id = record.dialog.id.clone();
        if let Some(owner) = self.config.owner
            && shard_for_call_id(id.call_id(), owner.count) != owner.index
        {
            return Err(RestoreError::WrongShard);
        }
        if self.find(&id).is_some() {
            return Err(RestoreError::Duplicate);
        }
        if self.live >= self.config.max_dialogs {
            return Err(RestoreError::Full);
        }
        let call_limit_at = record.call_limit_at.map(|at| self.instant_of_wall(now, at));
        let session_timer = record
            .session_timer
            .clone()
            .map(|st| (self.instant_of_wall(now, st.expires_at), st));
        let call = record.call.clone().unwrap_or_else(|| id.clone());
        let served = record.usages.served.clone();
        let held = record.usages.held.clone();
        let refers_sent = record.usages.refers_sent.clone();
        let phase = match record.usages.subscription_only {
            true => Phase::Subscription,
            false => Phase::Established { ack: None },
        };
        let mut entry = Entry::new(record.dialog, phase, record.call);
        // What the store holds is this record.
        entry.stored = Stored::Written;
        let index = self.insert(entry);
        if call != id && !held.as_ref().is_some_and(|h| h.fork) {
            // The call handle names this dialog too, as it did before (a fork of a held
            // subscription was never named by its handle).
            let hash = self.key_hasher.hash_one(call.key());
            self.by_key.insert(hash, index);
        }
        self.confirmed += 1;
        if let Some(at) = call_limit_at {
            let after = at.saturating_duration_since(now);
            self.arm_call_timer(now, index, super::timers::DialogTimer::CallLimit, after);
        }
        if let Some((expires_at, st)) = session_timer {
            self.restore_session_timer(now, index, &st, expires_at);
        }
        let wall_now = self.wall_time(now);
        if !served.is_empty() {
            self.restore_served(now, index, &served, |at| instant_at(now, wall_now, at));
        }
        if let Some(held) = held {
            let handle = call.clone();
            self.restore_watch(now, index, handle, &held, |at| {
                instant_at(now, wall_now, at)
            });
        }
        if !refers_sent.is_empty()
            && let Some(usages) = self.usages_made(index)
        {
            usages.refers_sent = refers_sent;
        }
        self.stats.dialogs_restored += 1;
        self.schedule_probe(now, index);
        self.events.push_back(SessionEvent::DialogRecovered {
            dialog: id.clone(),
            call,
        });
        Ok(id)
    }

    fn restore_bindings(&mut self, now: Instant, bytes: &[u8]) -> Result<Restored, RestoreError> {
        let wall_now = self.wall_time(now).unwrap_or_else(SystemTime::now);
        let owner = self.config.owner;
        let table = self.registrar.as_mut().ok_or(RestoreError::NoRegistrar)?;
        if let (Some(owner), Some(aor)) = (owner, crate::registrar::bindings_record_aor(bytes))
            && shard_for_call_id(aor, owner.count) != owner.index
        {
            return Err(RestoreError::WrongShard);
        }
        let (aor, count) = table
            .restore_bindings(now, wall_now, bytes)
            .map_err(RestoreError::Record)?;
        self.rearm_registrar(now);
        self.stats.bindings_restored += count as u64;
        Ok(Restored::Bindings { aor, count })
    }

    /// A REGISTER changed `aor`'s bindings: its record is rewritten (or deleted when none
    /// are left), in this round's batch, before the 200 leaves.
    pub(super) fn bindings_changed(&mut self, aor: &[u8]) {
        let Some(table) = &self.registrar else {
            return;
        };
        if self.persist.is_none() || self.wall_clock.is_none() {
            // Expiries are written in wall-clock time: without a clock (the runtime always
            // sets one) nothing sensible can be written.
            return;
        }
        let record = table.bindings_record(aor, |at| self.wall_time(at));
        let key = store_key(BINDINGS_KEY, aor);
        let op = match record {
            Some(record) => PersistOp::Put { key, record },
            None => PersistOp::Delete { key },
        };
        self.stats.records_written += u64::from(matches!(op, PersistOp::Put { .. }));
        if let Some(persist) = &mut self.persist {
            persist.out.push_back(op);
        }
    }

    /// A restored fork of a held subscription whose first dialog is not back yet.
    pub(super) fn unlinked_fork(&mut self, handle: DialogId, fork: SlotRef) {
        if let Some(persist) = &mut self.persist {
            persist.unlinked_forks.push((handle, fork));
        }
    }

    /// The restored forks waiting for the first dialog of `handle`, which is being
    /// restored now.
    pub(super) fn linked_forks(&mut self, handle: &DialogId) -> Vec<SlotRef> {
        let Some(persist) = &mut self.persist else {
            return Vec::new();
        };
        let mut forks = Vec::new();
        persist.unlinked_forks.retain(|(h, fork)| {
            let mine = h == handle;
            if mine {
                forks.push(*fork);
            }
            !mine
        });
        forks
    }

    /// The instant at which the wall clock reads `at`, by the clock [`Shard::set_wall_clock`]
    /// gave (`now` without one, or when `at` has passed).
    fn instant_of_wall(&self, now: Instant, at: SystemTime) -> Instant {
        instant_at(now, self.wall_time(now), at)
    }
}

/// The instant at which the wall clock reads `at`, when it reads `wall_now` at `now`
/// (`now` without a clock, or when `at` has passed).
fn instant_at(now: Instant, wall_now: Option<SystemTime>, at: SystemTime) -> Instant {
    match wall_now.map(|w| at.duration_since(w)) {
        Some(Ok(ahead)) => now + ahead,
        _ => now,
    }
}

/// Whether `persist` is on: the shard's [`Persist`] state, made at creation.
pub(super) fn persist_state(on: bool) -> Option<Persist> {
    on.then(Persist::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_key_routes_by_its_call_id_or_its_aor() {
        let id = DialogId::new(b"call-1@h", b"ours", b"theirs");
        let key = dialog_store_key(&id);
        assert_eq!(store_key_routing_key(&key), Some(&b"call-1@h"[..]));
        assert_eq!(store_key_dialog_key(&key), Some(id.key()));
        let key = bindings_store_key(b"sip:alice@example.com");
        assert_eq!(
            store_key_routing_key(&key),
            Some(&b"sip:alice@example.com"[..])
        );
        assert_eq!(store_key_dialog_key(&key), None);
        // Cut short, or of no kind this build writes.
        assert_eq!(store_key_routing_key(b"\0\0\0\0d\x05"), None);
        assert_eq!(store_key_routing_key(b"\0\0\0\0x\x05"), None);
        assert_eq!(store_key_routing_key(b"\0\0"), None);
    }
}
