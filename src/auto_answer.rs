//! The auto-answer policy: what a callee that answers everything does with each session
//! event, as commands to run now or after a delay. One policy serves the runtime's inline
//! auto-answer mode (the benchmark target), `sipshard serve --mode app` over the async
//! `DialogManager`, and the load generator's callee; each runs the commands its own way
//! ([`Plan::run`]).
//!
//! # What it owns, what it may not touch
//! The choice of answers (ring then answer with an SDP answer to the offer, 200 to
//! in-dialog requests, 202 then `603 Declined` to a REFER, an accepted subscription with
//! its first NOTIFY); no state, no clock, no shard: it reads an event and hands back
//! commands.

use std::net::IpAddr;
use std::time::Duration;

use arrayvec::ArrayVec;
use bytes::Bytes;

use crate::message::{Message, Method};
use crate::shard::{DialogCommand, NotifyState, SessionEvent, refer_sub_declined};

/// How the auto-answer behaves.
#[derive(Clone, Debug)]
pub struct AutoAnswer {
    /// Wait before 180 Ringing.
    pub ring_delay: Duration,
    /// Wait between 180 and 200.
    pub answer_delay: Duration,
    /// Send 180 Ringing before the 200.
    pub send_ringing: bool,
    /// SDP of the 200; empty: an answer built from the INVITE's offer (an offer when it
    /// had none), as RFC 3261 §13.2.1 requires ([`crate::sdp`]).
    pub sdp: Bytes,
    /// The `o=` user and `s=` name of the SDP built when `sdp` is empty (`anonymous` and
    /// `-` by default: nothing names the software).
    pub sdp_names: crate::sdp::SdpNames,
}

impl Default for AutoAnswer {
    fn default() -> Self {
        AutoAnswer {
            ring_delay: Duration::ZERO,
            answer_delay: Duration::ZERO,
            send_ringing: true,
            sdp: Bytes::new(),
            sdp_names: crate::sdp::SdpNames::default(),
        }
    }
}

/// One command of a plan.
#[derive(Debug)]
pub struct Step {
    /// How long after the event.
    pub after: Duration,
    /// The command.
    pub command: DialogCommand,
    /// Run only if the step before it succeeded (a NOTIFY after the 200 that accepted
    /// its subscription).
    pub needs_previous: bool,
}

/// What the policy does about one event, in order.
#[derive(Debug, Default)]
pub struct Plan {
    /// The steps (at most three).
    pub steps: ArrayVec<Step, 3>,
}

impl Plan {
    fn now(mut self, command: DialogCommand) -> Self {
        self.steps.push(Step {
            after: Duration::ZERO,
            command,
            needs_previous: false,
        });
        self
    }

    fn then(mut self, command: DialogCommand) -> Self {
        self.steps.push(Step {
            after: Duration::ZERO,
            command,
            needs_previous: true,
        });
        self
    }

    fn after(mut self, after: Duration, command: DialogCommand) -> Self {
        self.steps.push(Step {
            after,
            command,
            needs_previous: false,
        });
        self
    }

    /// Runs the plan: each step due now through `run` (true when it succeeded), each
    /// later one handed to `later` with its delay; a step that needs the one before it is
    /// skipped when that one failed.
    pub fn run(
        self,
        mut run: impl FnMut(DialogCommand) -> bool,
        mut later: impl FnMut(Duration, DialogCommand),
    ) {
        let mut previous_ok = true;
        for step in self.steps {
            if step.needs_previous && !previous_ok {
                continue;
            }
            if step.after.is_zero() {
                previous_ok = run(step.command);
            } else {
                later(step.after, step.command);
                previous_ok = true;
            }
        }
    }
}

/// The auto-answer policy for a callee at `address` (the SDP's connection address).
#[derive(Clone, Debug)]
pub struct AutoAnswerPolicy {
    config: AutoAnswer,
    address: IpAddr,
}

impl AutoAnswerPolicy {
    /// The policy of `config`, answering with SDP for `address`.
    pub fn new(config: AutoAnswer, address: IpAddr) -> Self {
        AutoAnswerPolicy { config, address }
    }

    /// What to do about `event`; `None` for an event the policy leaves alone (call
    /// progress, ends, results), which the host passes on or drops.
    pub fn react(&self, event: &SessionEvent) -> Option<Plan> {
        let respond = |txn, status| DialogCommand::Respond {
            txn,
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        };
        Some(match event {
            SessionEvent::IncomingCall {
                dialog, request, ..
            } => {
                let c = &self.config;
                let answer = DialogCommand::Answer {
                    dialog: dialog.clone(),
                    sdp: self.sdp_for(request),
                };
                let plan = Plan::default();
                let plan = match c.send_ringing {
                    true => plan.after(
                        c.ring_delay,
                        DialogCommand::Ringing {
                            dialog: dialog.clone(),
                        },
                    ),
                    false => plan,
                };
                plan.after(c.ring_delay + c.answer_delay, answer)
            }
            // A re-INVITE gets the same treatment as the INVITE: its offer answered.
            SessionEvent::ReInvite { dialog, request } => {
                Plan::default().now(DialogCommand::Answer {
                    dialog: dialog.clone(),
                    sdp: self.sdp_for(request),
                })
            }
            // Subscriptions to the packages served are accepted, and the NOTIFY that must
            // follow at once (RFC 6665 §4.2.1.2) carries no state: there is none to report.
            SessionEvent::SubscriptionRequest {
                dialog,
                txn,
                request,
                ..
            } => Plan::default()
                .now(respond(*txn, 200))
                .then(DialogCommand::Notify {
                    dialog: dialog.clone(),
                    event: crate::shard::subscription_event(request).unwrap_or_default(),
                    state: NotifyState::Active,
                    headers: Vec::new(),
                    body: Bytes::new(),
                }),
            // It places no calls for a peer, so a REFER is accepted and its reference
            // reported declined: 202, NOTIFY `100 Trying` (the shard's), NOTIFY
            // `603 Declined` (RFC 3515 §2.4.4); none when the REFER declined the
            // subscription (RFC 4488).
            SessionEvent::DialogRequest {
                dialog,
                txn,
                request,
            } if request.method() == Some(Method::Refer) => {
                let plan = Plan::default().now(respond(*txn, 202));
                match refer_sub_declined(request) {
                    true => plan,
                    false => plan.then(DialogCommand::ReferStatus {
                        dialog: dialog.clone(),
                        refer_cseq: request.cseq().map_or(0, |c| c.seq),
                        status: 603,
                    }),
                }
            }
            // Other requests get 200; an UPDATE's offer is answered in it (RFC 3311 §5.2).
            SessionEvent::DialogRequest { txn, request, .. }
            | SessionEvent::IncomingRequest { txn, request, .. }
            | SessionEvent::RegistrationRequest { txn, request, .. } => {
                let (headers, body) = match request.method() {
                    Some(Method::Update) if !crate::sdp::offer_of(request).is_empty() => (
                        vec![(
                            "Content-Type".to_owned(),
                            Bytes::from_static(b"application/sdp"),
                        )],
                        self.sdp_for(request),
                    ),
                    _ => (Vec::new(), Bytes::new()),
                };
                Plan::default().now(DialogCommand::Respond {
                    txn: *txn,
                    status: 200,
                    headers,
                    body,
                })
            }
            _ => return None,
        })
    }

    /// The configured SDP, else the answer to the request's offer (or an offer when it
    /// has none), as RFC 3261 §13.2.1 asks of the 2xx.
    fn sdp_for(&self, request: &Message) -> Bytes {
        if !self.config.sdp.is_empty() {
            return self.config.sdp.clone();
        }
        crate::sdp::answer_request(request, self.address, &self.config.sdp_names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::DialogId;

    fn invite() -> Message {
        Message::parse(Bytes::from_static(
            b"INVITE sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
              From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: aa\r\n\
              CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap()
    }

    #[test]
    fn a_call_rings_then_is_answered_after_the_configured_delays() {
        let policy = AutoAnswerPolicy::new(
            AutoAnswer {
                ring_delay: Duration::from_millis(100),
                answer_delay: Duration::from_millis(400),
                ..AutoAnswer::default()
            },
            "127.0.0.1".parse().unwrap(),
        );
        let event = SessionEvent::IncomingCall {
            dialog: DialogId::new(b"aa", b"l", b"1"),
            from: "127.0.0.1:5060".parse().unwrap(),
            request: invite(),
            replaces: None,
        };
        let plan = policy.react(&event).unwrap();
        let (mut now, mut later) = (Vec::new(), Vec::new());
        plan.run(
            |c| {
                now.push(c);
                true
            },
            |after, c| later.push((after, c)),
        );
        assert!(now.is_empty());
        assert!(
            matches!(later[0], (d, DialogCommand::Ringing { .. }) if d == Duration::from_millis(100))
        );
        match &later[1] {
            (d, DialogCommand::Answer { sdp, .. }) => {
                assert_eq!(*d, Duration::from_millis(500));
                // The INVITE had no offer: the 200 carries one (§13.2.1).
                assert!(sdp.starts_with(b"v=0\r\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_step_that_needs_the_one_before_is_skipped_when_it_failed() {
        let plan = Plan::default()
            .now(DialogCommand::Ringing {
                dialog: DialogId::new(b"a", b"b", b"c"),
            })
            .then(DialogCommand::Terminate {
                dialog: DialogId::new(b"a", b"b", b"c"),
            });
        let mut ran = 0;
        plan.run(
            |_| {
                ran += 1;
                false
            },
            |_, _| {},
        );
        assert_eq!(ran, 1);
    }
}
