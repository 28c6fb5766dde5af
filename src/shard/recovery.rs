//! Probing the dialogs a shard restored (issue 22, RFC 5057 §5.1): the peer may have
//! ended a call while we were down, and its BYE met nobody. Each restored dialog is sent
//! an in-dialog OPTIONS at a random moment within [`RecoveryProbes::within`] of the
//! restart (spread, so a restart does not burst); a 481 ends it at once, a 408 or no answer
//! counts as a failed attempt and is tried again, up to [`RecoveryProbes::attempts`]; any
//! other answer (200, 405, …) means the peer still knows the dialog, and it is kept.
//!
//! # What it owns, what it may not touch
//! The probe's schedule and its verdict; the OPTIONS goes through the one in-dialog sender
//! and its response comes back through the owner table like any request of ours.

use std::time::{Duration, Instant};

use super::owners::Owner;
use super::send::InDialog;
use super::timers::DialogTimer;
use super::{Phase, SessionEvent, Shard, TerminationReason, Usage};

/// How the dialogs a shard restores are checked with their peers (off by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryProbes {
    /// Each restored dialog is probed within this long after its restore.
    pub within: Duration,
    /// Probes that may go unanswered (408 or a timeout) before the dialog ends.
    pub attempts: u32,
}

impl Shard {
    /// Puts the first probe of the restored dialog at `index` on the wheel.
    pub(super) fn schedule_probe(&mut self, now: Instant, index: u32) {
        let Some(probes) = self.config.recovery_probes else {
            return;
        };
        if probes.attempts == 0 {
            return;
        }
        let spread = u64::try_from(probes.within.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let after = Duration::from_millis(self.ids.random() % spread);
        let token = self.token(index, DialogTimer::RecoveryProbe);
        self.txn.schedule_after(now, after, token);
        if let Some(usages) = self.usages_made(index) {
            usages.probes_failed = Some(0);
        }
    }

    /// The probe of the dialog at `index` is due: OPTIONS, unless the dialog moved on
    /// (a request from the peer already showed it alive, or it is ending).
    pub(super) fn probe_due(&mut self, now: Instant, index: u32) {
        let probing = self
            .usages(index)
            .is_some_and(|u| u.probes_failed.is_some());
        let established = matches!(
            self.entry_mut(index).map(|e| &e.phase),
            Some(Phase::Established { .. })
        );
        if !probing || !established {
            return;
        }
        let request = InDialog {
            method: b"OPTIONS",
            contact: false,
            headers: &[],
            body: &[],
        };
        let owner = |r| Owner::Request(r, Usage::Probe);
        if self
            .transmit_in_dialog(now, index, request, Some(owner))
            .is_err()
        {
            self.probe_failed(now, index);
        }
    }

    /// The final answer to a probe.
    pub(super) fn probe_answered(&mut self, now: Instant, index: u32, status: u16) {
        match status {
            481 => self.end_unrecovered(index, TerminationReason::Rejected(481)),
            408 => self.probe_failed(now, index),
            // The peer knows the dialog: it goes on, probed no more.
            _ => {
                if let Some(usages) = self.usages_mut(index) {
                    usages.probes_failed = None;
                }
            }
        }
    }

    /// A probe got 408 or nothing: once more, or the dialog ends when that was the last.
    pub(super) fn probe_failed(&mut self, now: Instant, index: u32) {
        let Some(probes) = self.config.recovery_probes else {
            return;
        };
        let failed = self.usages_mut(index).and_then(|u| {
            let n = u.probes_failed.as_mut()?;
            *n += 1;
            Some(*n)
        });
        match failed {
            Some(n) if n >= probes.attempts => {
                self.end_unrecovered(index, TerminationReason::Timeout);
            }
            Some(n) => {
                // The next one after the same spread, further off with each failure.
                let after = probes.within.max(Duration::from_secs(1)) * n;
                let token = self.token(index, DialogTimer::RecoveryProbe);
                self.txn.schedule_after(now, after, token);
            }
            None => {}
        }
    }

    /// §12.2.1.2, RFC 5057 §5.1: the peer does not know the dialog (481) or cannot be
    /// reached: it ends here, without a BYE.
    fn end_unrecovered(&mut self, index: u32, reason: TerminationReason) {
        if let Some(e) = self.remove(index) {
            self.stats.recovered_dialogs_ended += 1;
            self.events.push_back(SessionEvent::CallTerminated {
                dialog: e.call.unwrap_or(e.dialog.id),
                reason,
            });
        }
    }
}
