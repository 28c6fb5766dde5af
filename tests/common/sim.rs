//! A simulated datagram network on simulated time: each datagram is dropped, duplicated and
//! delayed (uniformly between `min_delay` and `max_delay`, which reorders) by a seeded RNG,
//! so a failing run repeats exactly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// One datagram in flight.
#[derive(Clone, Debug)]
pub struct Datagram {
    pub deliver_at: Instant,
    pub seq: u64,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Bytes,
}

/// Network conditions.
#[derive(Clone, Copy, Debug)]
pub struct Conditions {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a delivered datagram arrives twice.
    pub duplicate: f64,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Conditions {
    pub fn perfect() -> Self {
        Conditions {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        }
    }
}

pub struct Network {
    rng: ChaCha8Rng,
    pub conditions: Conditions,
    in_flight: Vec<Datagram>,
    seq: u64,
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

impl Network {
    pub fn new(seed: u64, conditions: Conditions) -> Self {
        Network {
            rng: ChaCha8Rng::seed_from_u64(seed),
            conditions,
            in_flight: Vec::new(),
            seq: 0,
            sent: 0,
            dropped: 0,
            duplicated: 0,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    fn delay(&mut self) -> Duration {
        let c = self.conditions;
        let span = c.max_delay.saturating_sub(c.min_delay).as_nanos() as u64;
        c.min_delay
            + Duration::from_nanos(if span == 0 {
                0
            } else {
                self.rng.next_u64() % span
            })
    }

    pub fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, payload: Bytes) {
        self.sent += 1;
        if self.chance(self.conditions.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if self.chance(self.conditions.duplicate) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let deliver_at = now + self.delay();
            self.seq += 1;
            self.in_flight.push(Datagram {
                deliver_at,
                seq: self.seq,
                from,
                to,
                payload: payload.clone(),
            });
        }
    }

    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.iter().map(|d| d.deliver_at).min()
    }

    /// Removes and returns the datagrams due at `now`, earliest first.
    pub fn due(&mut self, now: Instant) -> Vec<Datagram> {
        let (mut due, rest): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|d| d.deliver_at <= now);
        self.in_flight = rest;
        due.sort_by_key(|d| (d.deliver_at, d.seq));
        due
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }
}
