//! The dialog table: slots with generations, the key index, and what goes with a slot's
//! life (insert, look up, remove and what removal forgets), and the identifiers a shard
//! hands out (Via branches, Call-IDs that hash to itself, its Contact).
//!
//! # What it owns, what it may not touch
//! The slots and keys of [`Shard`]; no protocol behaviour beyond forgetting what a removed
//! dialog held.

use bytes::Bytes;

use super::{DialogError, Entry, Phase, Shard, Slot, SlotRef, shard_for_call_id};
use crate::dialog::{Dialog, DialogId, DialogState};
use crate::message::Branch;
use crate::transaction::Transport;

impl Shard {
    pub(super) fn insert(&mut self, entry: Entry) -> u32 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let hash = self.key_hasher.hash_one(entry.dialog.id.key());
        self.by_key.insert(hash, index);
        self.slots[index as usize].entry = Some(entry);
        self.live += 1;
        self.stats.dialogs_created += 1;
        index
    }

    pub(super) fn find(&self, id: &DialogId) -> Option<u32> {
        self.find_key(id.key())
    }

    /// The slot of `id`, or [`DialogError::DialogNotFound`] naming it.
    pub(super) fn found(&self, id: &DialogId) -> Result<u32, DialogError> {
        self.find(id)
            .ok_or_else(|| DialogError::DialogNotFound(id.clone()))
    }

    /// The slot holding the dialog (or call handle) `key`.
    pub(super) fn find_key(&self, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.by_key.find(self.key_hasher.hash_one(key), |i| {
            slots[i as usize].entry.as_ref().is_some_and(|e| {
                e.dialog.id.key() == key || e.call.as_ref().is_some_and(|c| c.key() == key)
            })
        })
    }

    /// Looks a dialog up by its parts, building the key in a reused buffer (no allocation
    /// per in-dialog request).
    pub(super) fn find_parts(
        &mut self,
        call_id: &[u8],
        local: &[u8],
        remote: &[u8],
    ) -> Option<u32> {
        let mut key = std::mem::take(&mut self.key_scratch);
        crate::dialog::write_key(&mut key, call_id, local, remote);
        let found = self.find_key(&key);
        self.key_scratch = key;
        found
    }

    pub(super) fn entry_mut(&mut self, index: u32) -> Option<&mut Entry> {
        self.slots.get_mut(index as usize)?.entry.as_mut()
    }

    /// The transport of the dialog at `index` (UDP when there is none).
    pub(super) fn dialog_transport(&self, index: u32) -> Transport {
        self.slots
            .get(index as usize)
            .and_then(|s| s.entry.as_ref())
            .map_or(Transport::Udp, |e| e.dialog.transport)
    }

    /// Removes a dialog; its timers die with it (stale handles are ignored by the wheel).
    pub(super) fn remove(&mut self, index: u32) -> Option<Entry> {
        let slot = self.slots.get_mut(index as usize)?;
        let mut entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
        if entry.dialog.state == DialogState::Confirmed {
            self.confirmed -= 1;
        }
        self.by_key
            .remove(self.key_hasher.hash_one(entry.dialog.id.key()), index);
        if let Some(call) = &entry.call
            && *call != entry.dialog.id
        {
            // The call handle's alias, if this dialog was the call's first.
            self.by_key
                .remove(self.key_hasher.hash_one(call.key()), index);
        }
        debug_assert!(
            self.live != 0 || self.by_key.is_empty(),
            "dialog keys outlived their dialogs"
        );
        self.forget_stored(&entry);
        entry.dialog.state = DialogState::Terminated;
        if let Some((timer, _)) = entry.call_timer.take() {
            self.txn.cancel_timer(timer);
        }
        if let Some(incoming) = entry.reinvite.as_mut().and_then(|r| r.incoming.take()) {
            self.orphaned.push(incoming);
        }
        if let Some(usages) = entry.usages.take() {
            self.end_usages(&entry.dialog.id, *usages);
        }
        if let Phase::Incoming { invite, origin, .. } = entry.phase {
            self.by_server_txn.remove(&invite);
            self.forget_origin(Some(origin), index);
        }
        if let Phase::Answered {
            retransmit,
            give_up,
            origin,
            holds_origin,
            ..
        } = entry.phase
        {
            self.txn.cancel_timer(retransmit);
            self.txn.cancel_timer(give_up);
            self.forget_origin(holds_origin.then_some(origin), index);
        }
        Some(entry)
    }

    /// Drops the `by_origin` entry `origin` if it is the dialog at `index`'s (its INVITE
    /// no longer needs merged-request detection).
    pub(super) fn forget_origin(&mut self, origin: Option<u64>, index: u32) {
        if let Some(origin) = origin
            && self.by_origin.get(&origin) == Some(&index)
        {
            self.by_origin.remove(&origin);
        }
    }

    /// Changes a dialog's key (a UAC dialog learning the peer's tag).
    /// Replaces the dialog at `index` (a UAC dialog learning the peer's tag) and re-keys it.
    /// The MakeCall handle stays mapped as an alias while the dialog lives, so call-level
    /// commands (Cancel) keep finding it.
    pub(super) fn replace_dialog(&mut self, index: u32, dialog: Dialog) {
        if let Some(entry) = self
            .slots
            .get_mut(index as usize)
            .and_then(|s| s.entry.as_mut())
        {
            let old = std::mem::replace(&mut entry.dialog, dialog);
            if entry.call.as_ref() != Some(&old.id) {
                self.by_key
                    .remove(self.key_hasher.hash_one(old.id.key()), index);
            }
            self.by_key
                .insert(self.key_hasher.hash_one(entry.dialog.id.key()), index);
        }
    }

    pub(super) fn slot_ref(&self, index: u32) -> SlotRef {
        SlotRef {
            index,
            generation: self.slots.get(index as usize).map_or(0, |s| s.generation),
        }
    }

    /// The slot index, if it still holds the dialog `r` was taken of.
    pub(super) fn resolve(&self, r: SlotRef) -> Option<u32> {
        let slot = self.slots.get(r.index as usize)?;
        (slot.entry.is_some() && slot.generation == r.generation).then_some(r.index)
    }

    /// Our Via value for `transport` with a fresh branch; returns (via, branch).
    pub(super) fn via(&mut self, transport: Transport) -> (Vec<u8>, Branch) {
        let branch = self.ids.branch();
        let prefix = &self.via_prefixes[usize::from(transport.is_reliable())];
        let mut via = Vec::with_capacity(prefix.len() + 32);
        via.extend_from_slice(prefix);
        via.extend_from_slice(branch.as_bytes());
        via.extend_from_slice(b";rport");
        (via, branch)
    }

    /// A fresh Call-ID that hashes to this shard, so the runtime brings the peer's answers
    /// back here (expected `count` tries).
    pub(super) fn owned_call_id(&mut self) -> crate::message::CallIdValue {
        let mut call_id = self.ids.call_id();
        if let Some(owner) = self.config.owner {
            while shard_for_call_id(call_id.as_bytes(), owner.count) != owner.index {
                call_id = self.ids.call_id();
            }
        }
        call_id
    }

    /// Our Contact value for a dialog or request over `transport`.
    pub(super) fn contact(&self, transport: Transport) -> Bytes {
        self.contacts[usize::from(transport.is_reliable())].clone()
    }
}
