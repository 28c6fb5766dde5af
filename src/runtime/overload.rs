//! Receive-side overload detection, kept apart from the I/O so it can be tested on its own.
//!
//! # What it owns, what it may not touch
//! One clock-free verdict per round (the worker passes `now`); it touches no socket.

use std::time::{Duration, Instant};

/// The socket counts as overloaded once it has stayed undrained for `after`, and stops
/// being so at the first round that drains it.
pub(crate) struct ReceiveBacklog {
    after: Duration,
    undrained_since: Option<Instant>,
    overloaded: bool,
}

/// What one observation changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backlog {
    Began,
    Ended,
    Steady,
}

impl ReceiveBacklog {
    /// `after` zero: never overloaded.
    pub(crate) fn new(after: Duration) -> Self {
        ReceiveBacklog {
            after,
            undrained_since: None,
            overloaded: false,
        }
    }

    pub(crate) fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// One round's outcome: whether it drained the socket.
    pub(crate) fn observe(&mut self, now: Instant, drained: bool) -> Backlog {
        let was = self.overloaded;
        if drained || self.after.is_zero() {
            self.undrained_since = None;
            self.overloaded = false;
        } else {
            let since = *self.undrained_since.get_or_insert(now);
            self.overloaded = now.duration_since(since) >= self.after;
        }
        match (was, self.overloaded) {
            (false, true) => Backlog::Began,
            (true, false) => Backlog::Ended,
            _ => Backlog::Steady,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_begins_after_the_socket_stays_undrained_and_ends_when_it_drains() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = ReceiveBacklog::new(Duration::from_millis(100));
        assert_eq!(b.observe(ms(0), true), Backlog::Steady);
        // Undrained, but not yet for long enough.
        assert_eq!(b.observe(ms(10), false), Backlog::Steady);
        assert_eq!(b.observe(ms(100), false), Backlog::Steady);
        assert!(!b.overloaded());
        assert_eq!(b.observe(ms(110), false), Backlog::Began);
        assert!(b.overloaded());
        assert_eq!(b.observe(ms(500), false), Backlog::Steady);
        assert_eq!(b.observe(ms(501), true), Backlog::Ended);
        assert!(!b.overloaded());
        // A drained round in between starts the wait over.
        b.observe(ms(600), false);
        b.observe(ms(650), true);
        assert_eq!(b.observe(ms(720), false), Backlog::Steady);
        assert!(!b.overloaded());
        // Zero: off.
        let mut off = ReceiveBacklog::new(Duration::ZERO);
        off.observe(ms(0), false);
        assert_eq!(off.observe(ms(10_000), false), Backlog::Steady);
        assert!(!off.overloaded());
    }
}
