//! Timer values: RFC 3261 §17 Table 4 and RFC 6026 §8.

use std::time::Duration;

/// T1, T2, T4 and the derived timers. Defaults are RFC 3261's (500 ms, 4 s, 5 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Cap on non-INVITE request and INVITE response retransmission intervals (default 4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (default 5 s).
    pub t4: Duration,
    /// How long an INVITE server transaction waits for the TU before sending 100 Trying
    /// itself (§17.2.1: 200 ms).
    pub trying_delay: Duration,
    /// Timer D on unreliable transports (§17.1.1.2: at least 32 s).
    pub timer_d: Duration,
    /// Resolution of the shard's timer wheel (default 10 ms).
    pub resolution: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            trying_delay: Duration::from_millis(200),
            timer_d: Duration::from_secs(32),
            resolution: Duration::from_millis(10),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J (unreliable), L and M.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer A / E / G initial interval: T1, unreliable transports only.
    pub fn first_retransmit(&self, reliable: bool) -> Option<Duration> {
        (!reliable).then_some(self.t1)
    }

    /// Timer D: `timer_d` unreliable, zero reliable.
    pub fn d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.timer_d
        }
    }

    /// Timer I and K: T4 unreliable, zero reliable.
    pub fn i_k(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t4 }
    }

    /// Timer J: 64·T1 unreliable, zero reliable.
    pub fn j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.timeout()
        }
    }
}

/// The timers of §17 and RFC 6026, named as the RFCs name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerName {
    /// INVITE client request retransmission (doubles, no cap).
    A,
    /// INVITE client transaction timeout.
    B,
    /// INVITE client wait for response retransmissions (Completed).
    D,
    /// Non-INVITE client request retransmission (doubles up to T2).
    E,
    /// Non-INVITE client transaction timeout.
    F,
    /// INVITE server response retransmission (doubles up to T2).
    G,
    /// INVITE server wait for ACK.
    H,
    /// INVITE server wait for ACK retransmissions (Confirmed).
    I,
    /// Non-INVITE server wait for request retransmissions (Completed).
    J,
    /// Non-INVITE client wait for response retransmissions (Completed).
    K,
    /// INVITE server Accepted state (RFC 6026).
    L,
    /// INVITE client Accepted state (RFC 6026).
    M,
    /// INVITE client: 64·T1 after our CANCEL without a final response, the INVITE is
    /// considered cancelled (§9.1).
    CancelGiveUp,
    /// INVITE server: send 100 Trying if the TU has not answered (§17.2.1).
    Trying,
    /// Non-INVITE server: the TU's deadline to answer (64·T1; not in RFC 3261, which leaves
    /// these states without a timer).
    TuDeadline,
}
