//! A shard thread's side of the stores: the restore before any traffic, each round's
//! records handed to the embedded store (before the round's datagrams leave) and to the
//! shared one (without waiting), the shared store's resyncs, and the shard's claims.
//!
//! # What it owns, what it may not touch
//! Only the moves between the shard (`poll_persist`, `restore`, `poll_claim`,
//! `handle_claim`) and the stores (`store`, `shared`); what is written and when is the
//! shard's, how it is written the stores'.

use std::time::Instant;

use super::worker::{Round, Worker};

impl Worker {
    /// Takes back the dialogs of the store, before any traffic.
    pub(super) fn restore(&mut self, now: Instant, round: &mut Round) {
        let records = std::mem::take(&mut self.restore);
        if records.is_empty() {
            return;
        }
        let started = Instant::now();
        for record in &records {
            if let Err(e) = self.shard.restore(now, record) {
                round.io.store.restore_failures += 1;
                tracing::warn!(shard = self.index, error = %e, "dialog record not restored");
            }
        }
        round.io.store.restore_micros =
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            shard = self.index,
            restored = records.len() as u64 - round.io.store.restore_failures,
            failed = round.io.store.restore_failures,
            micros = round.io.store.restore_micros,
            "dialogs restored"
        );
    }

    /// Hands the round's dialog records to the store: before its events reach the
    /// application and again before its datagrams leave (for what the application's
    /// commands changed), so no datagram that confirms a dialog, and no event that says it
    /// is confirmed, goes out ahead of its record.
    ///
    /// The shared store (when clustered) gets the same records after the embedded one,
    /// without waiting: they are queued for its writer thread. When it asks for a resync
    /// (it lost batches), every live record of this shard goes first.
    pub(super) fn persist(&mut self, now: &mut Option<Instant>, round: &mut Round) {
        if self.store.is_none() && self.shared.is_none() {
            return;
        }
        if let Some(shared) = &self.shared
            && shared.take_resync()
        {
            shared.offer(self.shard.persisted_records());
        }
        self.ask_claims(now);
        round.persist.clear();
        round
            .persist
            .extend(std::iter::from_fn(|| self.shard.poll_persist()));
        if round.persist.is_empty() {
            return;
        }
        if let Some(store) = &mut self.store {
            let now = *now.get_or_insert_with(Instant::now);
            store.write(now, &round.persist, &mut round.io.store);
        }
        if let Some(shared) = &self.shared {
            shared.offer(std::mem::take(&mut round.persist));
        }
    }

    /// Hands the shard's claims (takeovers) to the shared store; one it cannot take is
    /// answered at once, with nothing (the request gets its 481).
    fn ask_claims(&mut self, now: &mut Option<Instant>) {
        let Some(shared) = &self.shared else {
            return;
        };
        while let Some(key) = self.shard.poll_claim() {
            if !shared.claim(key.clone()) {
                let now = *now.get_or_insert_with(Instant::now);
                self.shard.handle_claim(now, &key, None);
            }
        }
    }
}
