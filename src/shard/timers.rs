//! The shard's own timers, typed: what each one is for, and the one place where a timer
//! becomes the `u64` token the transaction layer's wheel carries and back.
//!
//! # What it owns, what it may not touch
//! The token encoding and the dispatch of a fired timer to its handler (one `match`).
//! The handlers live with the feature they serve; this module only routes.

use std::time::Instant;

use super::{Phase, Shard};

/// A dialog's timer kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum DialogTimer {
    /// Our 2xx again, T1 doubling to T2, until the ACK (§13.3.1.4).
    Retransmit2xx = 1,
    /// 64·T1 without the ACK: BYE (§13.3.1.4).
    AckGiveUp = 2,
    /// Our re-INVITE again after a 491, at the §14.1 wait.
    ReinviteRetry = 4,
    /// A call unanswered too long: an incoming one gets 480, ours is cancelled.
    RingTimeout = 5,
    /// Our reliable 18x again until its PRACK (RFC 3262).
    Reliable1xx = 6,
    /// A subscription we serve ends or refreshes (RFC 6665).
    Subscription = 7,
    /// A subscription we hold expires or refreshes.
    Watch = 8,
    /// The session timer (RFC 4028): refresh or BYE.
    Session = 9,
    /// The longest call duration: BYE.
    CallLimit = 10,
    /// A restored dialog's probe (`recovery` module).
    RecoveryProbe = 11,
}

impl DialogTimer {
    const ALL: [DialogTimer; 10] = [
        DialogTimer::Retransmit2xx,
        DialogTimer::AckGiveUp,
        DialogTimer::ReinviteRetry,
        DialogTimer::RingTimeout,
        DialogTimer::Reliable1xx,
        DialogTimer::Subscription,
        DialogTimer::Watch,
        DialogTimer::Session,
        DialogTimer::CallLimit,
        DialogTimer::RecoveryProbe,
    ];

    fn from_code(code: u8) -> Option<DialogTimer> {
        DialogTimer::ALL.into_iter().find(|k| *k as u8 == code)
    }
}

/// What a shard timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ShardTimer {
    /// A timer of the dialog in slot `index`, while the slot's generation (its low 24
    /// bits) is `generation`: a timer that outlives its dialog finds another generation
    /// and does nothing.
    Dialog {
        index: u32,
        generation: u32,
        kind: DialogTimer,
    },
    /// The registrar's expiry sweep.
    RegistrarSweep,
    /// INVITEs waiting too long for a Replaces verdict (`replaces` module).
    VerdictSweep,
}

/// Tokens of timers tied to no dialog have the top bit set.
const NOT_A_DIALOG: u64 = 1 << 63;
const GENERATION_BITS: u32 = 0x00ff_ffff;

impl ShardTimer {
    /// The wheel token: `index << 32 | generation << 8 | kind` for a dialog's timer.
    pub(super) fn token(self) -> u64 {
        match self {
            ShardTimer::Dialog {
                index,
                generation,
                kind,
            } => {
                (u64::from(index) << 32)
                    | (u64::from(generation & GENERATION_BITS) << 8)
                    | u64::from(kind as u8)
            }
            ShardTimer::RegistrarSweep => NOT_A_DIALOG | 3,
            ShardTimer::VerdictSweep => NOT_A_DIALOG | 4,
        }
    }

    /// The timer a token stands for (`None`: not one of ours).
    pub(super) fn from_token(token: u64) -> Option<ShardTimer> {
        match token {
            t if t == ShardTimer::RegistrarSweep.token() => Some(ShardTimer::RegistrarSweep),
            t if t == ShardTimer::VerdictSweep.token() => Some(ShardTimer::VerdictSweep),
            t if t & NOT_A_DIALOG != 0 => None,
            t => Some(ShardTimer::Dialog {
                index: (t >> 32) as u32,
                generation: ((t >> 8) as u32) & GENERATION_BITS,
                kind: DialogTimer::from_code(t as u8)?,
            }),
        }
    }
}

impl Shard {
    /// The token of `kind` for the dialog now in slot `index`.
    pub(super) fn token(&self, index: u32, kind: DialogTimer) -> u64 {
        ShardTimer::Dialog {
            index,
            generation: self.slots[index as usize].generation,
            kind,
        }
        .token()
    }

    /// A fired timer, to its owner: one decoding, one match.
    pub(super) fn on_timer(&mut self, now: Instant, token: u64) {
        let (index, kind) = match ShardTimer::from_token(token) {
            Some(ShardTimer::RegistrarSweep) => return self.registrar_sweep(now),
            Some(ShardTimer::VerdictSweep) => return self.verdicts_overdue(now),
            Some(ShardTimer::Dialog {
                index,
                generation,
                kind,
            }) => match self.slots.get(index as usize) {
                Some(slot)
                    if slot.entry.is_some() && slot.generation & GENERATION_BITS == generation =>
                {
                    (index, kind)
                }
                _ => return, // the dialog it belonged to has ended
            },
            None => return,
        };
        match kind {
            DialogTimer::ReinviteRetry => self.retry_reinvite(now, index),
            DialogTimer::Reliable1xx => self.reliable_timer(now, index),
            DialogTimer::Subscription => self.subscriptions_due(now, index),
            DialogTimer::CallLimit => self.call_limit_reached(now, index),
            DialogTimer::Session => self.session_timer_due(now, index),
            DialogTimer::Watch => self.watch_due(now, index),
            DialogTimer::RingTimeout => self.ring_timeout(now, index),
            DialogTimer::Retransmit2xx => self.retransmit_2xx(now, index),
            DialogTimer::AckGiveUp => self.ack_never_came(now, index),
            DialogTimer::RecoveryProbe => self.probe_due(now, index),
        }
    }

    /// Still unanswered when the ring timeout fires: an incoming call is refused (480)
    /// and its dialog-to-be ends; ours is cancelled (§9.1: at once after a provisional,
    /// else with the first one; the INVITE then ends with 487, or 64·T1 later).
    fn ring_timeout(&mut self, now: Instant, index: u32) {
        let Some(e) = self.entry_mut(index) else {
            return;
        };
        e.call_timer = None;
        match e.phase {
            Phase::Incoming { .. } => {
                let id = e.dialog.id.clone();
                let _ = self.reject(now, &id, 480);
            }
            Phase::Calling { .. } => {
                let call = e.call.clone().unwrap_or_else(|| e.dialog.id.clone());
                self.stats.calls_unanswered += 1;
                let _ = self.cancel(now, &call);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timer_survives_its_token() {
        for kind in DialogTimer::ALL {
            let t = ShardTimer::Dialog {
                index: 123_456,
                generation: 0x1234_5678,
                kind,
            };
            let back = ShardTimer::from_token(t.token()).unwrap();
            assert_eq!(
                back,
                ShardTimer::Dialog {
                    index: 123_456,
                    generation: 0x0034_5678,
                    kind
                }
            );
        }
        for t in [ShardTimer::RegistrarSweep, ShardTimer::VerdictSweep] {
            assert_eq!(ShardTimer::from_token(t.token()), Some(t));
        }
        assert_eq!(ShardTimer::from_token(NOT_A_DIALOG | 99), None);
        assert_eq!(ShardTimer::from_token(3 << 32 | 77), None, "no such kind");
    }
}
