//! Taking dialogs over, the writer's side (issue 23): claims asked by the shards for
//! requests that reached this node, the sweep that takes a dead peer's dialogs before any
//! request asks (so their timers run: a session-timer BYE, a subscription's expiry), the
//! dialogs live peers took from this node, and, at start, leaving out what peers took while
//! this node was down.
//!
//! # What it owns, what it may not touch
//! The Redis calls of a takeover and the delivery of their results to the shard owning
//! each Call-ID (through its queue, never blocking: a full queue is tried again). What a
//! shard does with a record or a release is the shard's (`shard::takeover`).

use std::sync::atomic::Ordering;

use super::scripts::{self, HEARTBEAT_TTL_MS, MOVED_BATCH, SWEEP_BATCH, SWEEP_RUNS, redis_key};
use super::{IO_TIMEOUT, Inbound, SharedStoreConfig, Writer};
use crate::shard::{PersistOp, is_dialog_store_key, shard_for_call_id, store_key_routing_key};

impl Writer {
    /// Claims each record for this node, in one pipeline, and answers each shard: the
    /// record, or nothing (none, a live owner, or Redis failed).
    pub(super) fn claim(&mut self, claims: Vec<(usize, Vec<u8>)>) {
        let records: Vec<Option<Vec<u8>>> = match &mut self.connection {
            Some(c) => {
                let mut pipe = redis::pipe();
                for (_, key) in &claims {
                    if is_dialog_store_key(key) {
                        pipe.cmd("EVALSHA")
                            .arg(&c.scripts.claim)
                            .arg(1)
                            .arg(redis_key(key))
                            .arg(&self.config.node_id);
                    } else {
                        // An AOR's bindings: read, owned by nobody.
                        pipe.cmd("GET").arg(redis_key(key));
                    }
                }
                match pipe.query::<Vec<Option<Vec<u8>>>>(&mut c.connection) {
                    Ok(records) => records,
                    Err(e) => {
                        self.failed(&e.to_string());
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        let mut records = records.into_iter();
        for (shard, key) in claims {
            let record = records.next().flatten();
            if record.is_some() && is_dialog_store_key(&key) {
                self.counters.claims.fetch_add(1, Ordering::Relaxed);
            }
            self.deliver(shard, Inbound::Claimed { key, record });
        }
    }

    /// Takes over dialogs of dead peers (see `scripts::SWEEP_DEAD`), a batch per dead peer
    /// and run, until none is left or this heartbeat's runs are spent, and hands each
    /// record to its shard, which restores it and runs its timers from now on.
    pub(super) fn sweep(&mut self) {
        for _ in 0..SWEEP_RUNS {
            let Some(c) = &mut self.connection else {
                return;
            };
            let taken: redis::RedisResult<Vec<Vec<u8>>> = redis::cmd("EVALSHA")
                .arg(&c.scripts.sweep)
                .arg(0)
                .arg(&self.config.node_id)
                .arg(SWEEP_BATCH)
                .query(&mut c.connection);
            let taken = match taken {
                Ok(taken) => taken,
                Err(e) => return self.failed(&e.to_string()),
            };
            let full = taken.len() / 2 >= SWEEP_BATCH;
            let mut pairs = taken.into_iter();
            while let (Some(key), Some(record)) = (pairs.next(), pairs.next()) {
                let Some(key) = scripts::store_key(&key).map(<[u8]>::to_vec) else {
                    continue;
                };
                let Some(shard) = self.shard_of(&key) else {
                    continue;
                };
                self.counters.swept.fetch_add(1, Ordering::Relaxed);
                let record = Some(record);
                self.deliver(shard, Inbound::Claimed { key, record });
            }
            if !full {
                return;
            }
        }
    }

    /// Reads the dialogs live peers took from this node and has their shards drop them.
    pub(super) fn take_moved(&mut self) {
        let Some(c) = &mut self.connection else {
            return;
        };
        let moved: redis::RedisResult<Option<Vec<Vec<u8>>>> = redis::cmd("LPOP")
            .arg(scripts::moved_key(&self.config.node_id))
            .arg(MOVED_BATCH)
            .query(&mut c.connection);
        match moved {
            Ok(keys) => {
                let keys: Vec<Vec<u8>> = keys
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|k| scripts::store_key(k).map(<[u8]>::to_vec))
                    .collect();
                self.release(keys);
            }
            Err(e) => self.failed(&e.to_string()),
        }
    }

    /// Has the shards drop the dialogs at these store keys: a peer owns them now.
    pub(super) fn release(&mut self, keys: Vec<Vec<u8>>) {
        let mut per_shard: Vec<Vec<Vec<u8>>> = self.handles.iter().map(|_| Vec::new()).collect();
        for key in keys {
            if let Some(shard) = self.shard_of(&key) {
                per_shard[shard].push(key);
            }
        }
        for (shard, keys) in per_shard.into_iter().enumerate() {
            if !keys.is_empty() {
                self.deliver(shard, Inbound::Released(keys));
            }
        }
    }

    /// The shard of this node that owns a store key's Call-ID (or AOR).
    fn shard_of(&self, key: &[u8]) -> Option<usize> {
        let routing = store_key_routing_key(key)?;
        Some(shard_for_call_id(routing, self.handles.len().max(1)))
    }

    /// Queues `message` for shard `shard`, after any that wait: a full queue keeps it
    /// here for the next turn of the loop (a claim answer or a takeover is never lost).
    pub(super) fn deliver(&mut self, shard: usize, message: Inbound) {
        if self.handles.get(shard).is_none() {
            return;
        }
        if !self.undelivered.is_empty() {
            self.undelivered.push_back((shard, message));
            return;
        }
        if let Err(e) = self.handles[shard].try_send(message) {
            match e {
                crossbeam_channel::TrySendError::Full(m) => self.undelivered.push_back((shard, m)),
                crossbeam_channel::TrySendError::Disconnected(_) => {}
            }
        }
    }

    /// Sends what waits for full queues, in order, until one is full again.
    pub(super) fn deliver_again(&mut self) {
        while let Some((shard, message)) = self.undelivered.pop_front() {
            match self.handles[shard].try_send(message) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(m)) => {
                    self.undelivered.push_front((shard, m));
                    return;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// Leaves out of `restores` (per shard) the dialog records a peer owns in the shared store
/// now (it took them over while this node was down), and returns, per shard, the deletes
/// that remove them from the embedded store. When the shared store cannot be asked, no
/// dialog record is restored (this node cannot know which are still its own), and none
/// is deleted. Binding records always restore.
pub(crate) fn drop_taken_over(
    config: &SharedStoreConfig,
    restores: &mut [Vec<Vec<u8>>],
) -> Vec<Vec<PersistOp>> {
    let mut deletes: Vec<Vec<PersistOp>> = restores.iter().map(|_| Vec::new()).collect();
    let owners = (|| -> redis::RedisResult<Vec<Vec<Option<String>>>> {
        let client = redis::Client::open(config.url.as_str())?;
        let mut c = client.get_connection_with_timeout(IO_TIMEOUT)?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        // Alive before we look: from now on no peer claims what is still ours.
        redis::cmd("SET")
            .arg(scripts::heartbeat_key(&config.node_id))
            .arg(1)
            .arg("PX")
            .arg(HEARTBEAT_TTL_MS)
            .query::<()>(&mut c)?;
        // What peers took from this node before it died: it holds none of them any more.
        redis::cmd("DEL")
            .arg(scripts::moved_key(&config.node_id))
            .query::<()>(&mut c)?;
        let mut owners = Vec::new();
        for records in restores.iter() {
            // Each dialog record's owner (bindings have none: `None` in their places).
            let keys: Vec<Option<Vec<u8>>> = records
                .iter()
                .map(|r| {
                    let dialog = !r.starts_with(crate::registrar::BINDINGS_MAGIC);
                    dialog.then(|| crate::shard::record_store_key(r)).flatten()
                })
                .collect();
            let mut pipe = redis::pipe();
            for key in keys.iter().flatten() {
                pipe.cmd("HGET").arg(redis_key(key)).arg("owner");
            }
            let mut found: std::vec::IntoIter<Option<String>> = if keys.iter().any(Option::is_some)
            {
                pipe.query::<Vec<Option<String>>>(&mut c)?.into_iter()
            } else {
                Vec::new().into_iter()
            };
            owners.push(
                keys.iter()
                    .map(|k| k.as_ref().and_then(|_| found.next().flatten()))
                    .collect::<Vec<_>>(),
            );
        }
        Ok(owners)
    })();
    let owners = match owners {
        Ok(owners) => owners,
        Err(e) => {
            let held: usize = restores.iter().map(Vec::len).sum();
            tracing::error!(
                url = %config.url,
                error = %e,
                records = held,
                "shared store unreachable at start: no dialog is restored, for a peer may own it"
            );
            for records in restores.iter_mut() {
                records.retain(|r| r.starts_with(crate::registrar::BINDINGS_MAGIC));
            }
            return deletes;
        }
    };
    let mut dropped = 0;
    for ((records, owners), deletes) in restores.iter_mut().zip(owners).zip(&mut deletes) {
        let mut owners = owners.into_iter();
        records.retain(|record| {
            let owner = owners.next().flatten();
            let theirs = owner.is_some_and(|o| o != config.node_id);
            if theirs && let Some(key) = crate::shard::record_store_key(record) {
                deletes.push(PersistOp::Delete { key });
                dropped += 1;
            }
            !theirs
        });
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "dialogs taken over by peers while this node was down are theirs"
        );
    }
    deletes
}
