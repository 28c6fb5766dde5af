//! A dialog's usages besides its INVITE session (RFC 5057) and the requests it has open,
//! kept in the dialog's own entry: the subscriptions it serves and the one it holds, its
//! session timer, the REFERs we sent in it, the dialog an unanswered call of it replaces,
//! and the peer's requests the application has not answered yet. Ending the dialog takes
//! them with its entry; [`Shard::end_usages`] is the one place that says what each leaves
//! behind (a timer to cancel, an event, a request that still needs its 487).
//!
//! # What it owns, what it may not touch
//! The box in the entry, its accessors and the counts the statistics read. The behaviour
//! of each usage lives with it (`notifier`, `subscriber`, `session_timer`, `refer`,
//! `replaces`, `requests`); this module only holds and hands out their state.

use super::notifier::Subscription;
use super::session_timer::SessionTimer;
use super::subscriber::Watch;
use super::{SessionEvent, Shard, SubscriptionEnd};
use crate::dialog::DialogId;
use crate::transaction::ServerTxnId;

/// What a dialog holds besides its INVITE session; boxed in the entry (most dialogs have
/// none of it, and every dialog slot is as large as its largest entry).
#[derive(Debug, Default)]
pub(super) struct Usages {
    /// Subscriptions served as notifier (`notifier` module); never an empty `Vec` while
    /// counted in [`UsageCounts::serving`].
    pub(super) served: Vec<Subscription>,
    /// The subscription we hold as subscriber (`subscriber` module).
    pub(super) watch: Option<Watch>,
    /// The session timer (RFC 4028, `session_timer` module).
    pub(super) session_timer: Option<SessionTimer>,
    /// REFERs we sent whose implicit subscription is open: their CSeq numbers (RFC 3515,
    /// `refer` module).
    pub(super) refers_sent: Vec<u32>,
    /// The dialog this unanswered incoming call replaces (RFC 3891, `replaces` module).
    pub(super) replacing: Option<DialogId>,
    /// The peer's in-dialog requests handed to the application and not yet answered:
    /// when the dialog ends they get 487 (§15.1.2).
    pub(super) pending: Vec<ServerTxnId>,
    /// A restored dialog being probed (`recovery` module): the probes that failed so far.
    pub(super) probes_failed: Option<u32>,
}

/// Dialogs with served subscriptions and held ones, kept as they change (the statistics
/// read them without a scan).
#[derive(Debug, Default)]
pub(super) struct UsageCounts {
    pub(super) serving: usize,
    pub(super) watching: usize,
}

impl Shard {
    /// The usages of the dialog at `index`, if it has any.
    pub(super) fn usages(&self, index: u32) -> Option<&Usages> {
        self.slots
            .get(index as usize)?
            .entry
            .as_ref()?
            .usages
            .as_deref()
    }

    /// The usages of the dialog at `index`, if it has any, to change.
    pub(super) fn usages_mut(&mut self, index: u32) -> Option<&mut Usages> {
        self.entry_mut(index)?.usages.as_deref_mut()
    }

    /// The usages of the dialog at `index`, made empty if it had none; `None` when no
    /// dialog is there.
    pub(super) fn usages_made(&mut self, index: u32) -> Option<&mut Usages> {
        Some(self.entry_mut(index)?.usages.get_or_insert_default())
    }

    /// The subscription held in the dialog at `index`.
    pub(super) fn watch(&self, index: u32) -> Option<&Watch> {
        self.usages(index)?.watch.as_ref()
    }

    /// The subscription held in the dialog at `index`, to change.
    pub(super) fn watch_mut(&mut self, index: u32) -> Option<&mut Watch> {
        self.usages_mut(index)?.watch.as_mut()
    }

    /// Holds `watch` in the dialog at `index`.
    pub(super) fn set_watch(&mut self, index: u32, watch: Watch) {
        let Some(usages) = self.usages_made(index) else {
            return;
        };
        if usages.watch.replace(watch).is_none() {
            self.usage_counts.watching += 1;
        }
    }

    /// Takes the subscription held in the dialog at `index`.
    pub(super) fn take_watch(&mut self, index: u32) -> Option<Watch> {
        let watch = self.usages_mut(index)?.watch.take()?;
        self.usage_counts.watching -= 1;
        Some(watch)
    }

    /// The subscriptions served in the dialog at `index` (empty for none).
    pub(super) fn served(&self, index: u32) -> &[Subscription] {
        self.usages(index).map_or(&[], |u| &u.served)
    }

    /// The subscriptions served in the dialog at `index`, to change in place (none is
    /// added or removed this way).
    pub(super) fn served_mut(&mut self, index: u32) -> &mut [Subscription] {
        self.usages_mut(index).map_or(&mut [], |u| &mut u.served)
    }

    /// Serves one more subscription in the dialog at `index`.
    pub(super) fn push_served(&mut self, index: u32, subscription: Subscription) {
        let Some(usages) = self.usages_made(index) else {
            return;
        };
        usages.served.push(subscription);
        if usages.served.len() == 1 {
            self.usage_counts.serving += 1;
        }
    }

    /// Changes the subscriptions served in the dialog at `index` with `change`, which
    /// may remove some; returns what it returned (`None`: no dialog there).
    pub(super) fn change_served<T>(
        &mut self,
        index: u32,
        change: impl FnOnce(&mut Vec<Subscription>) -> T,
    ) -> Option<T> {
        let usages = self.usages_mut(index)?;
        let before = !usages.served.is_empty();
        let out = change(&mut usages.served);
        match (before, !usages.served.is_empty()) {
            (true, false) => self.usage_counts.serving -= 1,
            (false, true) => self.usage_counts.serving += 1,
            _ => {}
        }
        Some(out)
    }

    /// Takes every subscription served in the dialog at `index`.
    pub(super) fn take_served(&mut self, index: u32) -> Vec<Subscription> {
        self.change_served(index, std::mem::take)
            .unwrap_or_default()
    }

    /// The session timer of the dialog at `index`.
    pub(super) fn session_timer(&self, index: u32) -> Option<&SessionTimer> {
        self.usages(index)?.session_timer.as_ref()
    }

    /// The session timer of the dialog at `index`, to change.
    pub(super) fn session_timer_mut(&mut self, index: u32) -> Option<&mut SessionTimer> {
        self.usages_mut(index)?.session_timer.as_mut()
    }

    /// The dialog whose entry is being removed had `usages`: what each leaves behind.
    /// Its session timer's and subscriptions' timers are cancelled (the wheel would keep
    /// them until due), the application hears that its subscriptions ended with the
    /// dialog, and the requests it had not answered get 487 (§15.1.2).
    pub(super) fn end_usages(&mut self, dialog: &DialogId, usages: Usages) {
        let Usages {
            served,
            watch,
            session_timer,
            refers_sent: _,
            replacing: _,
            pending,
            // Its timer finds the slot taken by another generation, and does nothing.
            probes_failed: _,
        } = usages;
        if let Some(timer) = session_timer.and_then(|st| st.timer()) {
            self.txn.cancel_timer(timer);
        }
        if let Some(watch) = watch {
            self.usage_counts.watching -= 1;
            let (handle, event, timer) = watch.into_parts();
            if let Some(timer) = timer {
                self.txn.cancel_timer(timer);
            }
            self.events.push_back(SessionEvent::SubscriptionTerminated {
                subscription: Some(handle),
                dialog: dialog.clone(),
                event,
                reason: SubscriptionEnd::DialogEnded,
            });
        }
        if !served.is_empty() {
            self.usage_counts.serving -= 1;
        }
        for subscription in served {
            if let Some(timer) = subscription.timer() {
                self.txn.cancel_timer(timer);
            }
            self.events.push_back(SessionEvent::SubscriptionTerminated {
                subscription: None,
                dialog: dialog.clone(),
                event: subscription.event(),
                reason: SubscriptionEnd::DialogEnded,
            });
        }
        for txn in pending {
            if let Some(p) = self.pending.remove(&txn) {
                self.orphaned.push((txn, Box::new(p.request)));
            }
        }
    }

    /// Checks the usage counts against a scan of the slots (debug builds).
    pub(super) fn debug_assert_usage_counts(&self) {
        if cfg!(debug_assertions) {
            let usages = || {
                self.slots
                    .iter()
                    .filter_map(|s| s.entry.as_ref()?.usages.as_deref())
            };
            let serving = usages().filter(|u| !u.served.is_empty()).count();
            let watching = usages().filter(|u| u.watch.is_some()).count();
            assert_eq!(
                (serving, watching),
                (self.usage_counts.serving, self.usage_counts.watching),
                "usage counts"
            );
        }
    }
}
