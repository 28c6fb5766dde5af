//! The answering side, as a [`ShardApp`]: refuses a share of the calls with the configured
//! failure codes, and answers the rest as sipshard's own auto-answer policy does
//! (`sipshard::auto_answer`: ring at once, answer after the ring time, the same SDP for
//! re-INVITEs, 200 to other requests, subscriptions and REFERs as there). A cancelled call
//! counts as completed (the caller asked for it). OPTIONS are answered by the shard itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sipshard::auto_answer::{AutoAnswer, AutoAnswerPolicy};
use sipshard::runtime::{ShardApp, ShardControl};
use sipshard::shard::{DialogCommand, SessionEvent, TerminationReason};

use crate::stats::Interval;
use crate::uac::Report;

#[derive(Clone)]
pub struct UasPlan {
    pub ring_time: Duration,
    /// Share of calls answered (the rest are refused).
    pub answer_ratio: f64,
    /// Statuses for refused calls, used in turn.
    pub failure_codes: Vec<u16>,
    pub sdp: bytes::Bytes,
    pub start: Instant,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many calls have ended.
    pub calls: u64,
}

pub struct UasApp {
    plan: UasPlan,
    reports: std::sync::mpsc::Sender<Report>,
    policy: AutoAnswerPolicy,
    /// The policy's later steps (all one delay after their event, so in order).
    answers: VecDeque<(Instant, DialogCommand)>,
    interval: Interval,
    /// A cheap, seeded generator (xorshift) for the answer ratio.
    rng: u64,
    next_code: usize,
    incoming: u64,
    ended: u64,
    up: u64,
    done: bool,
}

impl UasApp {
    pub fn new(plan: UasPlan, reports: std::sync::mpsc::Sender<Report>, seed: u64) -> Self {
        let policy = AutoAnswerPolicy::new(
            AutoAnswer {
                answer_delay: plan.ring_time,
                sdp: plan.sdp.clone(),
                ..AutoAnswer::default()
            },
            std::net::Ipv4Addr::LOCALHOST.into(),
        );
        UasApp {
            plan,
            reports,
            policy,
            answers: VecDeque::new(),
            interval: Interval::new(0),
            rng: seed | 1,
            next_code: 0,
            incoming: 0,
            ended: 0,
            up: 0,
            done: false,
        }
    }

    fn chance(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl ShardApp for UasApp {
    fn on_event(
        &mut self,
        now: Instant,
        event: SessionEvent,
        shard: &mut ShardControl<'_>,
    ) -> Option<SessionEvent> {
        match &event {
            SessionEvent::IncomingCall { dialog, .. } => {
                self.incoming += 1;
                self.up += 1;
                self.interval.attempted += 1;
                if self.chance() >= self.plan.answer_ratio && !self.plan.failure_codes.is_empty() {
                    let status =
                        self.plan.failure_codes[self.next_code % self.plan.failure_codes.len()];
                    self.next_code += 1;
                    let dialog = dialog.clone();
                    let _ = shard.command(now, DialogCommand::Reject { dialog, status });
                    return None;
                }
            }
            SessionEvent::CallAnswered { .. } => self.interval.established += 1,
            _ => {}
        }
        if let Some(plan) = self.policy.react(&event) {
            let answers = &mut self.answers;
            plan.run(
                |command| shard.command(now, command).is_ok(),
                |after, command| answers.push_back((now + after, command)),
            );
            return None;
        }
        if let SessionEvent::CallTerminated { reason, .. } = event {
            self.ended += 1;
            self.up = self.up.saturating_sub(1);
            match reason {
                TerminationReason::RemoteBye
                | TerminationReason::LocalBye
                | TerminationReason::Cancelled => {
                    self.interval.completed += 1;
                }
                TerminationReason::Rejected(code) => {
                    *self.interval.failed.entry(code).or_default() += 1;
                }
                TerminationReason::Timeout | TerminationReason::AckTimeout => {
                    self.interval.timeouts += 1;
                }
                _ => *self.interval.failed.entry(0).or_default() += 1,
            }
        }
        None
    }

    fn poll(&mut self, now: Instant, shard: &mut ShardControl<'_>) -> Option<Instant> {
        let second = now.duration_since(self.plan.start).as_secs();
        while self.interval.second < second && !self.done {
            self.interval.concurrent = self.up;
            let next = Interval::new(self.interval.second + 1);
            let finished = std::mem::replace(&mut self.interval, next);
            let _ = self.reports.send(Report::Interval(Box::new(finished)));
        }
        while self.answers.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, command)) = self.answers.pop_front() {
                let _ = shard.command(now, command);
            }
        }
        let over = self
            .plan
            .duration
            .is_some_and(|d| now.duration_since(self.plan.start) >= d)
            || (self.ended >= self.plan.calls && self.up == 0);
        if over && !self.done {
            self.done = true;
            let last = std::mem::replace(&mut self.interval, Interval::new(u64::MAX));
            let _ = self.reports.send(Report::Interval(Box::new(last)));
            let _ = self.reports.send(Report::Done);
        }
        Some(now + Duration::from_millis(if self.answers.is_empty() { 10 } else { 1 }))
    }
}
