//! The two-shard harness of the shard tests (in the style of quinn's): a UAC shard and a
//! UAS shard over the simulated network, on simulated time, with the UAS application's
//! policy and the events each side saw; and the helpers the shard tests share.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipshard::dialog::DialogId;
use sipshard::message::{IdGenerator, Message};
use sipshard::shard::{CommandOutcome, DialogCommand, PersistOp, SessionEvent, Shard, ShardConfig};

use super::sim::{Conditions, Network};

pub fn uac_addr() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

pub fn uas_addr() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

pub const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

/// `Respond` with `status`, no extra headers, no body.
pub fn respond(txn: sipshard::transaction::ServerTxnId, status: u16) -> DialogCommand {
    DialogCommand::Respond {
        txn,
        status,
        headers: vec![],
        body: Bytes::new(),
    }
}

/// Places a call from Alice at the UAC shard to Bob at the UAS address; returns its handle.
pub fn place_call(
    uac: &mut Shard,
    now: Instant,
    from: &'static [u8],
    sdp: &'static [u8],
) -> DialogId {
    let out = uac
        .handle_command(
            now,
            DialogCommand::MakeCall {
                from: Bytes::from_static(from),
                to: Bytes::from_static(b"<sip:bob@127.0.0.1:5080>"),
                request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
                destination: uas_addr(),
                sdp: Bytes::from_static(sdp),
                headers: Vec::new(),
            },
        )
        .unwrap();
    match out {
        CommandOutcome::Call(id) => id,
        other => panic!("{other:?}"),
    }
}

/// What the UAS application does with each incoming call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum UasPolicy {
    /// 180, then 200 at once.
    Answer,
    /// 180 only (the test decides later).
    Ring,
    /// Final refusal with this status.
    Reject(u16),
}

pub struct Pair {
    pub now: Instant,
    pub uac: Shard,
    pub uas: Shard,
    pub net: Network,
    pub policy: UasPolicy,
    /// UAC hangs up as soon as the call is answered.
    pub bye_on_answer: bool,
    /// The UAS answers the peer's re-INVITEs at once.
    pub answer_reinvites: bool,
    pub uac_events: Vec<SessionEvent>,
    pub uas_events: Vec<SessionEvent>,
    /// What each side's store holds, by dialog key, when its shard persists dialogs: the
    /// records are taken before the round's datagrams, as the runtime does.
    pub uac_store: Store,
    pub uas_store: Store,
}

/// An in-memory store of dialog records (the persistence tests' disk).
pub type Store = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// Applies the shard's pending writes to `store`.
pub fn drain_persist(shard: &mut Shard, store: &mut Store) {
    while let Some(op) = shard.poll_persist() {
        match op {
            PersistOp::Put { key, record } => {
                store.insert(key, record);
            }
            PersistOp::Delete { key } => {
                store.remove(&key);
            }
            other => panic!("unknown store write {other:?}"),
        }
    }
}

impl Pair {
    pub fn new(seed: u64, conditions: Conditions, policy: UasPolicy) -> Self {
        Self::with_configs(
            seed,
            conditions,
            policy,
            ShardConfig::new(uac_addr()),
            ShardConfig::new(uas_addr()),
        )
    }

    /// A pair whose shards have these configurations (their addresses must be
    /// [`uac_addr`] and [`uas_addr`]).
    pub fn with_configs(
        seed: u64,
        conditions: Conditions,
        policy: UasPolicy,
        uac: ShardConfig,
        uas: ShardConfig,
    ) -> Self {
        let now = Instant::now();
        let mut s1 = [0u8; 32];
        s1[0] = seed as u8;
        let mut s2 = s1;
        s2[1] = 1;
        Pair {
            now,
            uac: Shard::with_ids(now, uac, IdGenerator::from_seed(s1)),
            uas: Shard::with_ids(now, uas, IdGenerator::from_seed(s2)),
            net: Network::new(seed, conditions),
            policy,
            bye_on_answer: true,
            answer_reinvites: true,
            uac_events: Vec::new(),
            uas_events: Vec::new(),
            uac_store: Store::new(),
            uas_store: Store::new(),
        }
    }

    pub fn call(&mut self) -> DialogId {
        place_call(
            &mut self.uac,
            self.now,
            b"\"Alice\" <sip:alice@127.0.0.1:5070>",
            SDP,
        )
    }

    /// The UAC re-INVITEs in `dialog` with the test SDP as its offer.
    pub fn uac_reinvites(&mut self, dialog: &DialogId) {
        self.uac
            .handle_command(
                self.now,
                DialogCommand::ReInvite {
                    dialog: dialog.clone(),
                    sdp: Bytes::from_static(SDP),
                },
            )
            .unwrap();
    }

    /// The UAC sends `method` in `dialog` (`SendRequest`), with a body of `content_type`
    /// when one is given.
    pub fn uac_sends(
        &mut self,
        dialog: &DialogId,
        method: &'static [u8],
        body: Option<(&'static [u8], &'static [u8])>,
    ) {
        let (headers, body) = match body {
            Some((content_type, body)) => (
                vec![("Content-Type".into(), Bytes::from_static(content_type))],
                Bytes::from_static(body),
            ),
            None => (Vec::new(), Bytes::new()),
        };
        self.uac
            .handle_command(
                self.now,
                DialogCommand::SendRequest {
                    dialog: dialog.clone(),
                    method: Bytes::from_static(method),
                    headers,
                    body,
                },
            )
            .unwrap();
    }

    pub fn flush(&mut self) {
        loop {
            let mut moved = false;
            drain_persist(&mut self.uac, &mut self.uac_store);
            drain_persist(&mut self.uas, &mut self.uas_store);
            while let Some(t) = self.uac.poll_transmit() {
                self.net
                    .send(self.now, uac_addr(), t.destination, t.payload);
                moved = true;
            }
            while let Some(t) = self.uas.poll_transmit() {
                self.net
                    .send(self.now, uas_addr(), t.destination, t.payload);
                moved = true;
            }
            while let Some(e) = self.uas.poll_event() {
                moved = true;
                if let SessionEvent::IncomingCall { dialog, .. } = &e {
                    let dialog = dialog.clone();
                    self.uas
                        .handle_command(
                            self.now,
                            DialogCommand::Ringing {
                                dialog: dialog.clone(),
                            },
                        )
                        .unwrap();
                    match self.policy {
                        UasPolicy::Answer => {
                            self.uas
                                .handle_command(
                                    self.now,
                                    DialogCommand::Answer {
                                        dialog,
                                        sdp: Bytes::from_static(SDP),
                                    },
                                )
                                .unwrap();
                        }
                        UasPolicy::Reject(status) => {
                            self.uas
                                .handle_command(self.now, DialogCommand::Reject { dialog, status })
                                .unwrap();
                        }
                        UasPolicy::Ring => {}
                    }
                }
                if let SessionEvent::ReInvite { dialog, .. } = &e
                    && self.answer_reinvites
                {
                    self.uas
                        .handle_command(
                            self.now,
                            DialogCommand::Answer {
                                dialog: dialog.clone(),
                                sdp: Bytes::from_static(SDP),
                            },
                        )
                        .unwrap();
                }
                self.uas_events.push(e);
            }
            while let Some(e) = self.uac.poll_event() {
                moved = true;
                if self.bye_on_answer
                    && let SessionEvent::CallAnswered { dialog, .. } = &e
                {
                    self.uac
                        .handle_command(
                            self.now,
                            DialogCommand::Bye {
                                dialog: dialog.clone(),
                            },
                        )
                        .unwrap();
                }
                if let SessionEvent::ReInvite { dialog, .. } = &e {
                    self.uac
                        .handle_command(
                            self.now,
                            DialogCommand::Answer {
                                dialog: dialog.clone(),
                                sdp: Bytes::from_static(SDP),
                            },
                        )
                        .unwrap();
                }
                self.uac_events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances to the next event (delivery or timer); false when nothing is left.
    pub fn step(&mut self) -> bool {
        self.flush();
        let next = [
            self.net.next_delivery(),
            self.uac.poll_timeout(),
            self.uas.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        for d in self.net.due(self.now) {
            let shard = if d.to == uas_addr() {
                &mut self.uas
            } else {
                &mut self.uac
            };
            shard.handle_datagram(self.now, d.from, d.payload);
        }
        self.uac.handle_timeout(self.now);
        self.uas.handle_timeout(self.now);
        self.flush();
        true
    }

    pub fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.now < end && self.step() {}
    }

    pub fn count(events: &[SessionEvent], f: impl Fn(&SessionEvent) -> bool) -> usize {
        events.iter().filter(|e| f(e)).count()
    }
}

pub fn register(cseq: u32, contact: &str, expires: u32) -> Bytes {
    Bytes::from(format!(
        "REGISTER sip:127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreg{cseq};rport\r\n\
Max-Forwards: 70\r\nTo: <sip:bob@example.com>\r\nFrom: <sip:bob@example.com>;tag=r1\r\nCall-ID: reg@test\r\n\
CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
    ))
}

/// Establishes one call without hanging up; returns (UAC's dialog, UAS's dialog).
pub fn established(p: &mut Pair) -> (DialogId, DialogId) {
    p.bye_on_answer = false;
    p.call();
    p.run(Duration::from_secs(1));
    let uac = p.uac_events.iter().find_map(|e| match e {
        SessionEvent::CallAnswered { dialog, .. } => Some(dialog.clone()),
        _ => None,
    });
    let uas = p.uas_events.iter().find_map(|e| match e {
        SessionEvent::AckReceived { dialog, .. } => Some(dialog.clone()),
        _ => None,
    });
    (uac.expect("answered"), uas.expect("acked"))
}

/// The final statuses (and responses) of our SendRequest requests, in order.
pub fn request_results(events: &[SessionEvent]) -> Vec<(u16, Option<Message>)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::RequestResult {
                status, response, ..
            } => Some((*status, response.clone())),
            _ => None,
        })
        .collect()
}

pub fn reinvite_results(events: &[SessionEvent]) -> Vec<u16> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::ReInviteResult { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

pub fn standalone(method: &'static str, to: &str, destination: SocketAddr) -> DialogCommand {
    let mut headers = Vec::new();
    if method == "REGISTER" {
        headers.push((
            "Contact".to_owned(),
            Bytes::from_static(b"<sip:alice@127.0.0.1:5070>"),
        ));
        headers.push(("Expires".to_owned(), Bytes::from_static(b"300")));
    }
    DialogCommand::SendStandalone(Box::new(sipshard::shard::StandaloneRequest {
        method: Bytes::from_static(method.as_bytes()),
        request_uri: Bytes::from(format!("sip:{destination}")),
        from: Bytes::from(to.to_owned()),
        to: Bytes::from(to.to_owned()),
        call_id: None,
        cseq: 1,
        destination,
        headers,
        body: Bytes::new(),
    }))
}

pub fn standalone_results(
    events: &[SessionEvent],
) -> Vec<(sipshard::transaction::ClientTxnId, u16)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::StandaloneResult {
                request, status, ..
            } => Some((*request, *status)),
            _ => None,
        })
        .collect()
}
