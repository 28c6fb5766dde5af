//! The calling side, as a [`ShardApp`]: each generator shard places its share of the
//! calls on its own thread, with no channel hop between the protocol and the scenario.
//!
//! Basic call: INVITE → (180) → 200 → ACK → hold → BYE → 200. Latencies are taken on the
//! shard thread when the event happens.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipshard::dialog::DialogId;
use sipshard::runtime::{ShardApp, ShardControl};
use sipshard::shard::{CommandOutcome, DialogCommand, SessionEvent, TerminationReason};

use crate::stats::Interval;

/// What a shard reports to the main thread.
pub enum Report {
    /// A finished second.
    Interval(Box<Interval>),
    /// This shard placed all its calls and all have ended.
    Done,
}

/// One shard's share of the load.
#[derive(Clone)]
pub struct UacPlan {
    /// Calls per second at full rate (this shard's share).
    pub rate: f64,
    /// Calls to place (this shard's share).
    pub calls: u64,
    /// Stop placing calls after this long.
    pub duration: Option<Duration>,
    /// Linear ramp from 0 to `rate`.
    pub ramp: Duration,
    /// Most calls up at once (this shard's share).
    pub max_concurrent: usize,
    /// Time between the 200 and our BYE.
    pub hold: Duration,
    pub destination: SocketAddr,
    pub from: Bytes,
    pub to: Bytes,
    pub request_uri: Bytes,
    pub sdp: Bytes,
    /// When the run started (shared by all shards so seconds line up).
    pub start: Instant,
}

struct Call {
    invited: Instant,
    rang: bool,
    bye_sent: Option<Instant>,
}

pub struct UacApp {
    plan: UacPlan,
    reports: Sender<Report>,
    placed: u64,
    active: HashMap<DialogId, Call>,
    /// Early and confirmed dialog ids → the MakeCall handle.
    by_dialog: HashMap<DialogId, DialogId>,
    /// Answered calls waiting for their hold time (FIFO: the hold is the same for all).
    byes: VecDeque<(Instant, DialogId, DialogId)>,
    interval: Interval,
    retransmissions_seen: u64,
    done: bool,
}

impl UacApp {
    pub fn new(plan: UacPlan, reports: Sender<Report>) -> Self {
        UacApp {
            plan,
            reports,
            placed: 0,
            active: HashMap::new(),
            by_dialog: HashMap::new(),
            byes: VecDeque::new(),
            interval: Interval::new(0),
            retransmissions_seen: 0,
            done: false,
        }
    }

    /// Calls that should have been placed `elapsed` into the run (linear ramp, then flat).
    fn due(&self, elapsed: Duration) -> u64 {
        let t = elapsed.as_secs_f64();
        let ramp = self.plan.ramp.as_secs_f64();
        let rate = self.plan.rate;
        let n = if t < ramp {
            rate * t * t / (2.0 * ramp)
        } else {
            rate * ramp / 2.0 + rate * (t - ramp)
        };
        (n as u64).min(self.plan.calls)
    }

    fn placing_over(&self, now: Instant) -> bool {
        self.placed >= self.plan.calls
            || self
                .plan
                .duration
                .is_some_and(|d| now.duration_since(self.plan.start) >= d)
    }

    fn bye(
        &mut self,
        now: Instant,
        dialog: DialogId,
        call: &DialogId,
        shard: &mut ShardControl<'_>,
    ) {
        if let Some(c) = self.active.get_mut(call) {
            c.bye_sent = Some(now);
        }
        if shard.command(now, DialogCommand::Bye { dialog }).is_err() {
            // The dialog ended meanwhile (the peer's BYE): CallTerminated says so.
        }
    }

    /// Closes the seconds that have passed.
    fn roll(&mut self, now: Instant, shard: &mut ShardControl<'_>) {
        let second = now.duration_since(self.plan.start).as_secs();
        while self.interval.second < second {
            let retrans = shard.stats().transactions.request_retransmissions;
            self.interval.retransmissions = retrans - self.retransmissions_seen;
            self.retransmissions_seen = retrans;
            self.interval.concurrent = self.active.len() as u64;
            let next = Interval::new(self.interval.second + 1);
            let finished = std::mem::replace(&mut self.interval, next);
            let _ = self.reports.send(Report::Interval(Box::new(finished)));
        }
    }
}

impl ShardApp for UacApp {
    fn on_event(
        &mut self,
        now: Instant,
        event: SessionEvent,
        shard: &mut ShardControl<'_>,
    ) -> Option<SessionEvent> {
        let us = |since: Instant| now.duration_since(since).as_micros().max(1) as u64;
        match event {
            SessionEvent::CallRinging { dialog, call } => {
                if let Some(c) = self.active.get_mut(&call) {
                    if !c.rang {
                        c.rang = true;
                        let _ = self.interval.latency[0].record(us(c.invited));
                    }
                    self.by_dialog.insert(dialog, call);
                }
            }
            SessionEvent::CallAnswered { dialog, call, .. } => {
                if let Some(c) = self.active.get(&call) {
                    let _ = self.interval.latency[1].record(us(c.invited));
                    self.interval.established += 1;
                    self.by_dialog.insert(dialog.clone(), call.clone());
                    if self.plan.hold.is_zero() {
                        self.bye(now, dialog, &call, shard);
                    } else {
                        self.byes.push_back((now + self.plan.hold, dialog, call));
                    }
                }
            }
            SessionEvent::CallTerminated { dialog, reason } => {
                let call = self.by_dialog.remove(&dialog).unwrap_or(dialog);
                if let Some(c) = self.active.remove(&call) {
                    self.by_dialog.retain(|_, v| *v != call);
                    match reason {
                        TerminationReason::LocalBye => {
                            self.interval.completed += 1;
                            if let Some(sent) = c.bye_sent {
                                let _ = self.interval.latency[2].record(us(sent));
                            }
                        }
                        TerminationReason::RemoteBye => self.interval.completed += 1,
                        TerminationReason::Rejected(code) => {
                            *self.interval.failed.entry(code).or_default() += 1;
                        }
                        TerminationReason::Timeout => self.interval.timeouts += 1,
                        _ => *self.interval.failed.entry(0).or_default() += 1,
                    }
                }
            }
            _ => {}
        }
        None
    }

    fn poll(&mut self, now: Instant, shard: &mut ShardControl<'_>) -> Option<Instant> {
        self.roll(now, shard);
        while let Some((due, _, _)) = self.byes.front() {
            if *due > now {
                break;
            }
            let Some((_, dialog, call)) = self.byes.pop_front() else {
                break;
            };
            self.bye(now, dialog, &call, shard);
        }
        let due = self.due(now.duration_since(self.plan.start));
        while !self.placing_over(now)
            && self.placed < due
            && self.active.len() < self.plan.max_concurrent
        {
            let command = DialogCommand::MakeCall {
                from: self.plan.from.clone(),
                to: self.plan.to.clone(),
                request_uri: self.plan.request_uri.clone(),
                destination: self.plan.destination,
                sdp: self.plan.sdp.clone(),
            };
            self.placed += 1;
            self.interval.attempted += 1;
            match shard.command(now, command) {
                Ok(CommandOutcome::Call(call)) => {
                    self.active.insert(
                        call,
                        Call {
                            invited: now,
                            rang: false,
                            bye_sent: None,
                        },
                    );
                }
                // Refused locally (the generator's own limits): a failed attempt.
                _ => *self.interval.failed.entry(0).or_default() += 1,
            }
        }
        if self.placing_over(now) && self.active.is_empty() && !self.done {
            self.done = true;
            let last = std::mem::replace(&mut self.interval, Interval::new(u64::MAX));
            let _ = self.reports.send(Report::Interval(Box::new(last)));
            let _ = self.reports.send(Report::Done);
        }
        // A millisecond tick: calls leave in per-millisecond batches.
        Some(now + Duration::from_millis(1))
    }
}
