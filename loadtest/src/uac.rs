//! The calling side, as a [`ShardApp`]: each generator shard places its share of the
//! load on its own thread, with no channel hop between the protocol and the scenario.
//!
//! Scenarios ([`Scenario`]): a basic call (INVITE → (180) → 200 → ACK → hold → BYE → 200),
//! REGISTER and OPTIONS (one request each, outside any dialog), CANCEL before the answer,
//! and a re-INVITE mid-call. Latencies are taken on the shard thread when the event
//! happens.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipshard::dialog::DialogId;
use sipshard::runtime::{ShardApp, ShardControl};
use sipshard::shard::{
    CommandOutcome, DialogCommand, NewSubscription, SessionEvent, StandaloneRequest,
    SubscriptionEnd, TerminationReason,
};
use sipshard::transaction::ClientTxnId;

use crate::stats::{BYE_TO_200, INVITE_TO_180, INVITE_TO_200, Interval, REQUEST_TO_FINAL};

/// What a shard reports to the main thread.
pub enum Report {
    /// A finished second.
    Interval(Box<Interval>),
    /// This shard placed all its calls and all have ended.
    Done,
}

/// What each attempt does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// INVITE, 180/200, ACK, hold, BYE.
    Basic,
    /// One REGISTER per attempt (a new address-of-record each), expecting 200.
    Register,
    /// One OPTIONS per attempt, expecting 200.
    Options,
    /// INVITE, then CANCEL once the peer rings (after --cancel-after), expecting 487.
    Cancel,
    /// A basic call with a re-INVITE (same offer) once it is answered; BYE after the
    /// re-INVITE's 200 and the hold time.
    Reinvite,
    /// A presence subscription (RFC 6665): SUBSCRIBE, its 2xx and first NOTIFY, then
    /// `Expires: 0` after the hold time and the notifier's terminated NOTIFY. The target
    /// must serve `presence` (`sipshard serve --event-packages presence`, or `uas`).
    Subscribe,
}

impl Scenario {
    /// The name in the JSON result.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Basic => "basic-call",
            Scenario::Register => "register",
            Scenario::Options => "options",
            Scenario::Cancel => "cancel",
            Scenario::Reinvite => "reinvite",
            Scenario::Subscribe => "subscribe",
        }
    }

    /// The latency the scenario is about (see [`crate::stats::LATENCIES`]).
    pub fn headline(self) -> usize {
        match self {
            Scenario::Basic | Scenario::Reinvite => INVITE_TO_200,
            _ => REQUEST_TO_FINAL,
        }
    }

    fn is_call(self) -> bool {
        !matches!(self, Scenario::Register | Scenario::Options)
    }
}

/// One shard's share of the load.
#[derive(Clone)]
pub struct UacPlan {
    pub scenario: Scenario,
    /// Attempts per second at full rate (this shard's share).
    pub rate: f64,
    /// Attempts to make (this shard's share).
    pub calls: u64,
    /// Stop placing calls after this long.
    pub duration: Option<Duration>,
    /// Linear ramp from 0 to `rate`.
    pub ramp: Duration,
    /// Most attempts outstanding at once (this shard's share).
    pub max_concurrent: usize,
    /// Time between the 200 and our BYE.
    pub hold: Duration,
    /// Cancel scenario: time between the INVITE and the CANCEL.
    pub cancel_after: Duration,
    pub destination: SocketAddr,
    pub from: Bytes,
    pub to: Bytes,
    pub request_uri: Bytes,
    pub sdp: Bytes,
    /// When the run started (shared by all shards so seconds line up).
    pub start: Instant,
    /// This shard's number, for distinct REGISTER addresses-of-record.
    pub shard: usize,
}

struct Call {
    invited: Instant,
    rang: bool,
    /// Early and confirmed dialogs of this call (usually one).
    dialogs: Vec<DialogId>,
    /// When the CANCEL, re-INVITE or BYE left.
    pending_since: Option<Instant>,
    /// A failure seen mid-call (the re-INVITE refused, the CANCEL lost to a 200): the call
    /// counts as failed with it when it ends.
    failure: Option<u16>,
}

/// A timed step of a call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Cancel,
    Bye,
}

pub struct UacApp {
    plan: UacPlan,
    reports: Sender<Report>,
    placed: u64,
    active: HashMap<DialogId, Call>,
    /// Early and confirmed dialog ids → the MakeCall handle.
    by_dialog: HashMap<DialogId, DialogId>,
    /// REGISTER/OPTIONS outstanding, with when they left.
    requests: HashMap<ClientTxnId, Instant>,
    /// Timed steps in due order (the delays are the same for all calls, so FIFO works).
    steps: VecDeque<(Instant, Step, DialogId, DialogId)>,
    interval: Interval,
    retransmissions_seen: u64,
    done: bool,
}

impl UacApp {
    pub fn new(plan: UacPlan, reports: Sender<Report>) -> Self {
        // Sized for the most calls up at once: growing a table of a million calls stalls
        // the shard thread for a second while it re-hashes, which would show as latency.
        let room = plan
            .max_concurrent
            .min(usize::try_from(plan.calls).unwrap_or(usize::MAX))
            .min(1 << 21);
        let (calls, requests) = if plan.scenario.is_call() {
            (room, 0)
        } else {
            (0, room)
        };
        UacApp {
            plan,
            reports,
            placed: 0,
            active: HashMap::with_capacity(calls),
            by_dialog: HashMap::with_capacity(calls),
            requests: HashMap::with_capacity(requests),
            steps: VecDeque::new(),
            interval: Interval::new(0),
            retransmissions_seen: 0,
            done: false,
        }
    }

    /// Attempts that should have been made `elapsed` into the run (linear ramp, then flat).
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

    fn outstanding(&self) -> usize {
        self.active.len() + self.requests.len()
    }

    fn step(
        &mut self,
        now: Instant,
        step: Step,
        dialog: DialogId,
        call: &DialogId,
        shard: &mut ShardControl<'_>,
    ) {
        let Some(c) = self.active.get_mut(call) else {
            return;
        };
        c.pending_since = Some(now);
        let command = match step {
            Step::Bye if self.plan.scenario == Scenario::Subscribe => DialogCommand::Unsubscribe {
                subscription: call.clone(),
            },
            Step::Bye => DialogCommand::Bye { dialog },
            Step::Cancel => DialogCommand::Cancel { call: call.clone() },
        };
        // An error means the call moved on meanwhile (answered, the peer's BYE): the
        // events that follow say how it ended.
        let _ = shard.command(now, command);
    }

    /// Hang up now, or after the hold time.
    fn hang_up_later(
        &mut self,
        now: Instant,
        dialog: DialogId,
        call: DialogId,
        shard: &mut ShardControl<'_>,
    ) {
        if self.plan.hold.is_zero() {
            self.step(now, Step::Bye, dialog, &call, shard);
        } else {
            self.steps
                .push_back((now + self.plan.hold, Step::Bye, dialog, call));
        }
    }

    fn call_answered(
        &mut self,
        now: Instant,
        dialog: DialogId,
        call: DialogId,
        shard: &mut ShardControl<'_>,
    ) {
        let Some(c) = self.active.get_mut(&call) else {
            return;
        };
        let _ = self.interval.latency[INVITE_TO_200].record(micros(now, c.invited));
        if !c.dialogs.contains(&dialog) {
            c.dialogs.push(dialog.clone());
        }
        self.by_dialog.insert(dialog.clone(), call.clone());
        match self.plan.scenario {
            Scenario::Cancel => {
                // The 200 won the race with our CANCEL (§9.1): not what was asked for.
                c.failure = Some(200);
                self.step(now, Step::Bye, dialog, &call, shard);
            }
            Scenario::Reinvite => {
                self.interval.established += 1;
                c.pending_since = Some(now);
                let sdp = self.plan.sdp.clone();
                if shard
                    .command(
                        now,
                        DialogCommand::ReInvite {
                            dialog: dialog.clone(),
                            sdp,
                        },
                    )
                    .is_err()
                {
                    c.failure = Some(0);
                    self.step(now, Step::Bye, dialog, &call, shard);
                }
            }
            _ => {
                self.interval.established += 1;
                self.hang_up_later(now, dialog, call, shard);
            }
        }
    }

    /// The SUBSCRIBE's 2xx (or first NOTIFY): measured as the request's final response;
    /// `Expires: 0` follows after the hold time.
    fn subscription_accepted(
        &mut self,
        now: Instant,
        dialog: DialogId,
        subscription: DialogId,
        shard: &mut ShardControl<'_>,
    ) {
        let Some(c) = self.active.get_mut(&subscription) else {
            return;
        };
        let _ = self.interval.latency[REQUEST_TO_FINAL].record(micros(now, c.invited));
        self.interval.established += 1;
        c.dialogs.push(dialog.clone());
        self.hang_up_later(now, dialog, subscription, shard);
    }

    /// A subscription ended: by the notifier after our `Expires: 0` (completed, measured
    /// from it), or otherwise (refused, lapsed, ended early: failed).
    fn subscription_ended(
        &mut self,
        now: Instant,
        subscription: DialogId,
        reason: SubscriptionEnd,
    ) {
        let Some(c) = self.active.remove(&subscription) else {
            return;
        };
        match (reason, c.pending_since) {
            (SubscriptionEnd::ByNotifier, Some(sent)) => {
                self.interval.completed += 1;
                let _ = self.interval.latency[BYE_TO_200].record(micros(now, sent));
            }
            (SubscriptionEnd::Rejected(code), _) => {
                *self.interval.failed.entry(code).or_default() += 1;
            }
            (SubscriptionEnd::Timeout, _) => self.interval.timeouts += 1,
            _ => *self.interval.failed.entry(0).or_default() += 1,
        }
    }

    fn call_ended(&mut self, now: Instant, dialog: DialogId, reason: TerminationReason) {
        let call = self.by_dialog.remove(&dialog).unwrap_or(dialog);
        let Some(c) = self.active.remove(&call) else {
            return;
        };
        for d in &c.dialogs {
            self.by_dialog.remove(d);
        }
        if let Some(code) = c.failure {
            *self.interval.failed.entry(code).or_default() += 1;
            return;
        }
        let cancelled = self.plan.scenario == Scenario::Cancel;
        match reason {
            TerminationReason::Rejected(487) | TerminationReason::Cancelled if cancelled => {
                self.interval.established += 1;
                self.interval.completed += 1;
                if let Some(sent) = c.pending_since {
                    let _ = self.interval.latency[REQUEST_TO_FINAL].record(micros(now, sent));
                }
            }
            TerminationReason::LocalBye => {
                self.interval.completed += 1;
                if let Some(sent) = c.pending_since {
                    let _ = self.interval.latency[BYE_TO_200].record(micros(now, sent));
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

    fn request_ended(&mut self, now: Instant, request: ClientTxnId, status: u16, answered: bool) {
        let Some(sent) = self.requests.remove(&request) else {
            return;
        };
        if !answered {
            self.interval.timeouts += 1;
            return;
        }
        let _ = self.interval.latency[REQUEST_TO_FINAL].record(micros(now, sent));
        if (200..300).contains(&status) {
            self.interval.established += 1;
            self.interval.completed += 1;
        } else {
            *self.interval.failed.entry(status).or_default() += 1;
        }
    }

    fn place(&mut self, now: Instant, shard: &mut ShardControl<'_>) {
        self.placed += 1;
        self.interval.attempted += 1;
        let command = match self.plan.scenario {
            Scenario::Register | Scenario::Options => {
                DialogCommand::SendStandalone(Box::new(self.standalone()))
            }
            Scenario::Subscribe => DialogCommand::Subscribe(Box::new(NewSubscription {
                from: self.plan.from.clone(),
                to: self.plan.to.clone(),
                request_uri: self.plan.request_uri.clone(),
                destination: self.plan.destination,
                event: Bytes::from_static(b"presence"),
                // Longer than any hold: the subscription ends by our Expires: 0.
                expires: 3600,
                headers: Vec::new(),
                body: Bytes::new(),
            })),
            _ => DialogCommand::MakeCall {
                from: self.plan.from.clone(),
                to: self.plan.to.clone(),
                request_uri: self.plan.request_uri.clone(),
                destination: self.plan.destination,
                sdp: self.plan.sdp.clone(),
                headers: Vec::new(),
            },
        };
        match shard.command(now, command) {
            Ok(CommandOutcome::Call(call) | CommandOutcome::Subscription(call)) => {
                self.active.insert(
                    call.clone(),
                    Call {
                        invited: now,
                        rang: false,
                        dialogs: Vec::new(),
                        pending_since: None,
                        failure: None,
                    },
                );
                if self.plan.scenario == Scenario::Cancel {
                    // The shard holds the CANCEL until a provisional came (§9.1).
                    self.steps.push_back((
                        now + self.plan.cancel_after,
                        Step::Cancel,
                        call.clone(),
                        call,
                    ));
                }
            }
            Ok(CommandOutcome::Request(txn)) => {
                self.requests.insert(txn, now);
            }
            // Refused locally (the generator's own limits): a failed attempt.
            _ => *self.interval.failed.entry(0).or_default() += 1,
        }
    }

    /// The REGISTER (a new address-of-record per attempt, so the registrar's table grows
    /// as under real load) or OPTIONS of one attempt.
    fn standalone(&self) -> StandaloneRequest {
        let register = self.plan.scenario == Scenario::Register;
        let (method, headers, to) = if register {
            let user = format!("load{}-{}", self.plan.shard, self.placed);
            let host = self.plan.destination;
            let local = self.plan.local_host();
            let aor = Bytes::from(format!("<sip:{user}@{host}>"));
            let contact = Bytes::from(format!("<sip:{user}@{local}>"));
            (
                "REGISTER",
                vec![
                    ("Contact".to_owned(), contact),
                    ("Expires".to_owned(), Bytes::from_static(b"3600")),
                ],
                aor,
            )
        } else {
            (
                "OPTIONS",
                vec![("Accept".to_owned(), Bytes::from_static(b"application/sdp"))],
                self.plan.to.clone(),
            )
        };
        let request_uri = if register {
            // The domain, over the transport the calls' Request-URI names.
            let transport = self
                .plan
                .request_uri
                .iter()
                .position(|&b| b == b';')
                .map_or(&b""[..], |i| &self.plan.request_uri[i..]);
            let mut uri = format!("sip:{}", self.plan.destination).into_bytes();
            uri.extend_from_slice(transport);
            Bytes::from(uri)
        } else {
            self.plan.request_uri.clone()
        };
        StandaloneRequest {
            method: Bytes::from_static(method.as_bytes()),
            request_uri,
            // REGISTER: From is the address-of-record too (§10.2, a first-party registration).
            from: if register {
                to.clone()
            } else {
                self.plan.from.clone()
            },
            to,
            call_id: None,
            cseq: 1,
            destination: self.plan.destination,
            headers,
            body: Bytes::new(),
        }
    }

    /// Closes the seconds that have passed.
    fn roll(&mut self, now: Instant, shard: &mut ShardControl<'_>) {
        let second = now.duration_since(self.plan.start).as_secs();
        while self.interval.second < second {
            let retrans = shard.stats().transactions.request_retransmissions;
            self.interval.retransmissions = retrans - self.retransmissions_seen;
            self.retransmissions_seen = retrans;
            self.interval.concurrent = self.outstanding() as u64;
            let next = Interval::new(self.interval.second + 1);
            let finished = std::mem::replace(&mut self.interval, next);
            let _ = self.reports.send(Report::Interval(Box::new(finished)));
        }
    }
}

impl UacPlan {
    /// The host part of our From (our address).
    fn local_host(&self) -> String {
        let from = String::from_utf8_lossy(&self.from);
        from.rsplit('@')
            .next()
            .unwrap_or("127.0.0.1")
            .trim_end_matches('>')
            .to_owned()
    }
}

fn micros(now: Instant, since: Instant) -> u64 {
    now.duration_since(since).as_micros().max(1) as u64
}

impl ShardApp for UacApp {
    fn on_event(
        &mut self,
        now: Instant,
        event: SessionEvent,
        shard: &mut ShardControl<'_>,
    ) -> Option<SessionEvent> {
        match event {
            SessionEvent::CallRinging { dialog, call } => {
                if let Some(c) = self.active.get_mut(&call) {
                    if !c.rang {
                        c.rang = true;
                        let _ = self.interval.latency[INVITE_TO_180].record(micros(now, c.invited));
                    }
                    if !c.dialogs.contains(&dialog) {
                        c.dialogs.push(dialog.clone());
                    }
                    self.by_dialog.insert(dialog, call);
                }
            }
            SessionEvent::CallAnswered { dialog, call, .. } => {
                self.call_answered(now, dialog, call, shard);
            }
            SessionEvent::ReInviteResult { dialog, status, .. } => {
                if let Some(call) = self.by_dialog.get(&dialog).cloned()
                    && let Some(c) = self.active.get_mut(&call)
                {
                    if let Some(sent) = c.pending_since.take() {
                        let _ = self.interval.latency[REQUEST_TO_FINAL].record(micros(now, sent));
                    }
                    if !(200..300).contains(&status) {
                        c.failure = Some(status);
                    }
                    self.hang_up_later(now, dialog, call, shard);
                }
            }
            SessionEvent::CallTerminated { dialog, reason } => self.call_ended(now, dialog, reason),
            SessionEvent::SubscriptionAccepted {
                subscription,
                dialog,
                ..
            } => self.subscription_accepted(now, dialog, subscription, shard),
            SessionEvent::SubscriptionTerminated {
                subscription: Some(subscription),
                reason,
                ..
            } => self.subscription_ended(now, subscription, reason),
            SessionEvent::StandaloneResult {
                request,
                status,
                response,
            } => self.request_ended(now, request, status, response.is_some()),
            _ => {}
        }
        None
    }

    fn poll(&mut self, now: Instant, shard: &mut ShardControl<'_>) -> Option<Instant> {
        self.roll(now, shard);
        while self.steps.front().is_some_and(|(due, ..)| *due <= now) {
            let Some((_, step, dialog, call)) = self.steps.pop_front() else {
                break;
            };
            self.step(now, step, dialog, &call, shard);
        }
        let due = self.due(now.duration_since(self.plan.start));
        while !self.placing_over(now)
            && self.placed < due
            && self.outstanding() < self.plan.max_concurrent
        {
            self.place(now, shard);
        }
        if self.placing_over(now) && self.outstanding() == 0 && !self.done {
            self.done = true;
            let last = std::mem::replace(&mut self.interval, Interval::new(u64::MAX));
            let _ = self.reports.send(Report::Interval(Box::new(last)));
            let _ = self.reports.send(Report::Done);
        }
        debug_assert!(self.plan.scenario.is_call() || self.active.is_empty());
        // A millisecond tick: attempts leave in per-millisecond batches.
        Some(now + Duration::from_millis(1))
    }
}
