//! Transaction layer on simulated time: exact firing times of every timer of RFC 3261 Table 4
//! and RFC 6026, each state transition of the four machines, CANCEL/ACK matching, RFC 2543
//! fallback, and retransmission behaviour over a lossy, duplicating, reordering network.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::sim::{Conditions, Network};
use sipshard::message::{Message, ResponseBuilder};
use sipshard::transaction::{
    ClientTxnId, ServerTxnId, TimerConfig, TransactionLayer, Transport, TxnError, TxnEvent, TxnId,
};

fn client_addr() -> SocketAddr {
    "127.0.0.1:5061".parse().unwrap()
}

fn server_addr() -> SocketAddr {
    "127.0.0.1:5062".parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn request(method: &str, branch: &str, cseq: u32) -> Bytes {
    Bytes::from(format!(
        "{method} sip:bob@127.0.0.1:5062 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=abc\r\nTo: <sip:bob@127.0.0.1>\r\n\
         Call-ID: {branch}@test\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ))
}

fn parse(b: &Bytes) -> Message {
    Message::parse(b.clone()).expect("test message parses")
}

fn response(req: &Bytes, code: u16) -> Bytes {
    let mut buf = BytesMut::new();
    ResponseBuilder::to_request(&mut buf, &parse(req), code, None, Some(b"srvtag"))
        .finish(b"")
        .unwrap();
    buf.freeze()
}

fn kind(e: &TxnEvent) -> &'static str {
    match e {
        TxnEvent::Request { .. } => "Request",
        TxnEvent::Cancel { .. } => "Cancel",
        TxnEvent::Ack { .. } => "Ack",
        TxnEvent::Response { .. } => "Response",
        TxnEvent::StrayResponse { .. } => "StrayResponse",
        TxnEvent::Timeout { .. } => "Timeout",
        TxnEvent::TransportError { .. } => "TransportError",
        TxnEvent::Terminated { .. } => "Terminated",
        TxnEvent::UserTimer { .. } => "UserTimer",
        _ => "other",
    }
}

/// One layer driven alone on simulated time: what it sent and what it said, with times.
struct Solo {
    t0: Instant,
    now: Instant,
    layer: TransactionLayer,
    sent: Vec<(Duration, Bytes)>,
    events: Vec<(Duration, TxnEvent)>,
}

impl Solo {
    fn new(config: TimerConfig) -> Self {
        let t0 = Instant::now();
        Solo {
            t0,
            now: t0,
            layer: TransactionLayer::new(t0, config),
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        let at = self.now - self.t0;
        while let Some(t) = self.layer.poll_transmit() {
            self.sent.push((at, t.payload));
        }
        while let Some(e) = self.layer.poll_event() {
            self.events.push((at, e));
        }
    }

    /// Fires timers until `until` (or until none is left).
    fn run_until(&mut self, until: Duration) {
        self.drain();
        while let Some(next) = self.layer.poll_timeout() {
            if next - self.t0 > until {
                break;
            }
            self.now = self.now.max(next);
            self.layer.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.now.max(self.t0 + until);
    }

    fn at(&mut self, t: Duration) {
        self.run_until(t);
        self.now = self.t0 + t;
    }

    fn sent_times(&self) -> Vec<Duration> {
        self.sent.iter().map(|(t, _)| *t).collect()
    }

    fn event_times(&self, k: &str) -> Vec<Duration> {
        self.events
            .iter()
            .filter(|(_, e)| kind(e) == k)
            .map(|(t, _)| *t)
            .collect()
    }

    /// Starts a client transaction for a fresh `method` request with `branch` (UDP).
    fn send(&mut self, method: &str, branch: &str) -> (ClientTxnId, Bytes) {
        self.send_over(method, branch, Transport::Udp)
    }

    fn send_over(
        &mut self,
        method: &str,
        branch: &str,
        transport: Transport,
    ) -> (ClientTxnId, Bytes) {
        let req = request(method, branch, 1);
        let txn = self
            .layer
            .send_request(
                self.now,
                server_addr(),
                transport,
                method.as_bytes(),
                branch.as_bytes(),
                req.clone(),
            )
            .unwrap();
        (txn, req)
    }

    fn deliver_request(&mut self, req: &Bytes) {
        self.layer
            .handle_request(self.now, client_addr(), Transport::Udp, parse(req))
            .unwrap();
        self.drain();
    }

    fn deliver_response(&mut self, resp: &Bytes) {
        self.layer
            .handle_response(self.now, server_addr(), parse(resp))
            .unwrap();
        self.drain();
    }

    fn server_txn(&self) -> ServerTxnId {
        self.events
            .iter()
            .find_map(|(_, e)| match e {
                TxnEvent::Request { txn, .. } => Some(*txn),
                _ => None,
            })
            .expect("a Request event")
    }
}

fn secs(list: &[f64]) -> Vec<Duration> {
    list.iter().map(|s| Duration::from_secs_f64(*s)).collect()
}

// ---- exact timer firing times with the default T1 = 500 ms, T2 = 4 s, T4 = 5 s -----------

#[test]
fn timer_a_doubles_without_cap_and_timer_b_ends_at_64_t1() {
    let mut s = Solo::new(TimerConfig::default());
    s.send("INVITE", "z9hG4bKa");
    s.run_until(Duration::from_secs(40));
    assert_eq!(s.sent_times(), secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]));
    assert_eq!(s.event_times("Timeout"), secs(&[32.0]));
    assert_eq!(s.event_times("Terminated"), secs(&[32.0]));
    assert!(s.layer.is_empty());
}

#[test]
fn timer_a_is_not_used_on_reliable_transports() {
    let mut s = Solo::new(TimerConfig::default());
    s.send_over("INVITE", "z9hG4bKr", Transport::Tcp);
    s.run_until(Duration::from_secs(40));
    assert_eq!(s.sent_times(), secs(&[0.0]));
    assert_eq!(s.event_times("Timeout"), secs(&[32.0]));
}

#[test]
fn timer_e_caps_at_t2_and_timer_f_ends_at_64_t1() {
    let mut s = Solo::new(TimerConfig::default());
    s.send("OPTIONS", "z9hG4bKe");
    s.run_until(Duration::from_secs(40));
    assert_eq!(
        s.sent_times(),
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    assert_eq!(s.event_times("Timeout"), secs(&[32.0]));
}

#[test]
fn timer_e_in_proceeding_retransmits_every_t2() {
    let mut s = Solo::new(TimerConfig::default());
    let (_, opt) = s.send("OPTIONS", "z9hG4bKp");
    s.at(ms(200));
    s.deliver_response(&response(&opt, 100));
    s.run_until(Duration::from_secs(40));
    // First E was armed for T1 at t=0; from then on, every T2.
    assert_eq!(
        s.sent_times(),
        secs(&[0.0, 0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5])
    );
    assert_eq!(s.event_times("Response"), secs(&[0.2]));
    assert_eq!(s.event_times("Timeout"), secs(&[32.0]));
}

#[test]
fn timer_d_waits_32s_and_acks_every_retransmitted_final() {
    let mut s = Solo::new(TimerConfig::default());
    let (_, inv) = s.send("INVITE", "z9hG4bKd");
    s.at(ms(100));
    let busy = response(&inv, 486);
    s.deliver_response(&busy);
    s.at(ms(1100));
    s.deliver_response(&busy);
    s.run_until(Duration::from_secs(40));
    // INVITE, ACK at 0.1 s, ACK again for the retransmitted 486; D fires at 0.1 + 32 s.
    assert_eq!(s.sent_times(), secs(&[0.0, 0.1, 1.1]));
    let ack = parse(&s.sent[1].1);
    assert_eq!(ack.method_bytes(), Some(&b"ACK"[..]));
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(
        ack.top_via().unwrap().branch(),
        Some(&b"z9hG4bKd"[..]),
        "same branch as the INVITE"
    );
    assert_eq!(
        ack.to_tag().unwrap(),
        Some(&b"srvtag"[..]),
        "To of the response"
    );
    assert_eq!(
        s.event_times("Response"),
        secs(&[0.1]),
        "the retransmission is not passed up"
    );
    assert_eq!(s.event_times("Terminated"), secs(&[32.1]));
}

#[test]
fn timer_d_is_zero_on_reliable_transports() {
    let mut s = Solo::new(TimerConfig::default());
    let (_, inv) = s.send_over("INVITE", "z9hG4bKdr", Transport::Tcp);
    s.deliver_response(&response(&inv, 603));
    assert_eq!(s.event_times("Terminated"), secs(&[0.0]));
}

#[test]
fn timer_g_caps_at_t2_and_timer_h_ends_at_64_t1() {
    let mut s = Solo::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKg", 1);
    s.deliver_request(&inv);
    let txn = s.server_txn();
    s.layer
        .send_response(s.now, txn, 486, response(&inv, 486))
        .unwrap();
    s.run_until(Duration::from_secs(40));
    assert_eq!(
        s.sent_times(),
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    assert_eq!(s.event_times("Timeout"), secs(&[32.0]));
    assert_eq!(s.event_times("Terminated"), secs(&[32.0]));
    assert_eq!(
        s.layer.stats().trying_sent,
        0,
        "the TU answered before 200 ms"
    );
}

#[test]
fn timer_i_absorbs_acks_for_t4() {
    let mut s = Solo::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKi", 1);
    s.deliver_request(&inv);
    let txn = s.server_txn();
    s.layer
        .send_response(s.now, txn, 404, response(&inv, 404))
        .unwrap();
    s.at(ms(1000));
    let ack = request("ACK", "z9hG4bKi", 1);
    s.deliver_request(&ack);
    s.at(ms(2000));
    s.deliver_request(&ack);
    s.run_until(Duration::from_secs(40));
    // 404 at 0, G at 0.5; the ACK at 1 s stops G and H; I ends it at 1 + 5 s.
    assert_eq!(s.sent_times(), secs(&[0.0, 0.5]));
    assert!(
        s.event_times("Ack").is_empty(),
        "ACK to a non-2xx is absorbed"
    );
    assert_eq!(s.event_times("Terminated"), secs(&[6.0]));
    assert!(s.event_times("Timeout").is_empty());
}

#[test]
fn timer_j_answers_retransmissions_for_64_t1() {
    let mut s = Solo::new(TimerConfig::default());
    let reg = request("REGISTER", "z9hG4bKj", 1);
    s.deliver_request(&reg);
    let txn = s.server_txn();
    s.layer
        .send_response(s.now, txn, 200, response(&reg, 200))
        .unwrap();
    s.at(Duration::from_secs(10));
    s.deliver_request(&reg);
    s.run_until(Duration::from_secs(40));
    assert_eq!(s.sent_times(), secs(&[0.0, 10.0]));
    assert_eq!(s.event_times("Request"), secs(&[0.0]), "passed up once");
    assert_eq!(s.event_times("Terminated"), secs(&[32.0]));
    assert_eq!(
        s.layer.send_response(s.now, txn, 200, response(&reg, 200)),
        Err(TxnError::UnknownTransaction)
    );
}

#[test]
fn timer_k_absorbs_responses_for_t4() {
    let mut s = Solo::new(TimerConfig::default());
    let (_, bye) = s.send("BYE", "z9hG4bKk");
    s.at(ms(300));
    let ok = response(&bye, 200);
    s.deliver_response(&ok);
    s.at(ms(2000));
    s.deliver_response(&ok);
    s.run_until(Duration::from_secs(40));
    assert_eq!(
        s.sent_times(),
        secs(&[0.0]),
        "E stopped by the final response"
    );
    assert_eq!(s.event_times("Response"), secs(&[0.3]));
    assert_eq!(s.event_times("Terminated"), secs(&[5.3]));
    assert_eq!(s.layer.stats().responses_absorbed, 1);
}

#[test]
fn timer_l_accepted_server_absorbs_invites_passes_acks() {
    let mut s = Solo::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKl", 1);
    s.deliver_request(&inv);
    let txn = s.server_txn();
    let ok = response(&inv, 200);
    s.layer.send_response(s.now, txn, 200, ok.clone()).unwrap();
    s.at(ms(500));
    s.deliver_request(&inv); // retransmitted INVITE: absorbed, 200 not resent by the txn
    // The TU retransmits its 2xx (RFC 6026 §8.5): it goes out.
    s.layer.send_response(s.now, txn, 200, ok).unwrap();
    s.drain();
    s.at(ms(1000));
    // The ACK to the 2xx has its own branch: it reaches the TU.
    s.deliver_request(&request("ACK", "z9hG4bKack", 1));
    s.run_until(Duration::from_secs(40));
    assert_eq!(s.sent_times(), secs(&[0.0, 0.5]));
    assert_eq!(s.event_times("Ack"), secs(&[1.0]));
    assert_eq!(s.event_times("Terminated"), secs(&[32.0]));
    assert_eq!(s.layer.stats().requests_absorbed, 1);
    assert!(matches!(
        s.layer.send_response(s.now, txn, 486, Bytes::new()),
        Err(TxnError::UnknownTransaction)
    ));
}

#[test]
fn timer_m_accepted_client_passes_2xx_retransmissions_up() {
    let mut s = Solo::new(TimerConfig::default());
    let (_, inv) = s.send("INVITE", "z9hG4bKm");
    s.at(ms(100));
    let ok = response(&inv, 200);
    s.deliver_response(&ok);
    s.at(ms(600));
    s.deliver_response(&ok);
    s.at(ms(1600));
    s.deliver_response(&ok);
    s.run_until(Duration::from_secs(33));
    s.deliver_response(&ok);
    assert_eq!(
        s.sent_times(),
        secs(&[0.0]),
        "no ACK from the transaction for a 2xx"
    );
    assert_eq!(s.event_times("Response"), secs(&[0.1, 0.6, 1.6]));
    assert_eq!(s.event_times("Terminated"), secs(&[32.1]));
    assert_eq!(s.event_times("StrayResponse"), secs(&[33.0]));
}

#[test]
fn trying_is_sent_after_200ms_of_tu_silence() {
    let mut s = Solo::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKt", 1);
    s.deliver_request(&inv);
    s.at(ms(1000));
    s.deliver_request(&inv); // retransmission gets the 100 again
    assert_eq!(s.sent_times(), secs(&[0.2, 1.0]));
    let trying = parse(&s.sent[0].1);
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.to_tag().unwrap(), None);
    assert_eq!(s.layer.stats().trying_sent, 1);
}

#[test]
fn provisional_then_final_on_both_machines() {
    let mut s = Solo::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKpf", 1);
    s.deliver_request(&inv);
    let txn = s.server_txn();
    s.layer
        .send_response(s.now, txn, 180, response(&inv, 180))
        .unwrap();
    s.at(ms(100));
    s.deliver_request(&inv); // gets the 180 again
    s.layer
        .send_response(s.now, txn, 486, response(&inv, 486))
        .unwrap();
    s.drain();
    assert_eq!(s.sent.len(), 3);
    assert_eq!(parse(&s.sent[1].1).status(), Some(180));
    assert!(matches!(
        s.layer.send_response(s.now, txn, 200, response(&inv, 200)),
        Err(TxnError::InvalidState {
            current: "Completed"
        })
    ));

    let mut n = Solo::new(TimerConfig::default());
    let sub = request("SUBSCRIBE", "z9hG4bKsub", 1);
    n.deliver_request(&sub);
    let txn = n.server_txn();
    n.layer
        .send_response(n.now, txn, 100, response(&sub, 100))
        .unwrap();
    n.deliver_request(&sub);
    n.layer
        .send_response(n.now, txn, 202, response(&sub, 202))
        .unwrap();
    n.drain();
    let codes: Vec<_> = n
        .sent
        .iter()
        .map(|(_, b)| parse(b).status().unwrap())
        .collect();
    assert_eq!(codes, [100, 100, 202]);
    assert_eq!(
        n.layer.send_response(n.now, txn, 99, Bytes::new()),
        Err(TxnError::InvalidStatus)
    );
}

#[test]
fn client_invite_proceeding_then_final() {
    let mut s = Solo::new(TimerConfig::default());
    let (_, inv) = s.send("INVITE", "z9hG4bKcp");
    s.at(ms(100));
    s.deliver_response(&response(&inv, 180));
    s.run_until(Duration::from_secs(60));
    assert_eq!(
        s.sent_times(),
        secs(&[0.0]),
        "no retransmission in Proceeding"
    );
    assert!(
        s.event_times("Timeout").is_empty(),
        "no Timer B in Proceeding"
    );
    s.deliver_response(&response(&inv, 200));
    assert_eq!(s.event_times("Response").len(), 2);
}

#[test]
fn cancel_finds_its_invite() {
    let mut s = Solo::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKc", 1);
    s.deliver_request(&inv);
    let invite_txn = s.server_txn();
    s.deliver_request(&request("CANCEL", "z9hG4bKc", 1));
    let (cancel_txn, found) = s
        .events
        .iter()
        .find_map(|(_, e)| match e {
            TxnEvent::Cancel { txn, invite, .. } => Some((*txn, *invite)),
            _ => None,
        })
        .expect("Cancel event");
    assert_eq!(found, Some(invite_txn));
    assert_ne!(cancel_txn, invite_txn);
    // A CANCEL for an unknown INVITE still gets its own transaction (the TU answers 481).
    s.deliver_request(&request("CANCEL", "z9hG4bKnone", 1));
    assert!(
        s.events
            .iter()
            .any(|(_, e)| matches!(e, TxnEvent::Cancel { invite: None, .. }))
    );
}

#[test]
fn transport_error_terminates() {
    let mut s = Solo::new(TimerConfig::default());
    let (txn, _) = s.send("INVITE", "z9hG4bKx");
    s.layer.transport_error(TxnId::Client(txn));
    s.drain();
    let kinds: Vec<_> = s.events.iter().map(|(_, e)| kind(e)).collect();
    assert_eq!(kinds, ["TransportError", "Terminated"]);
    assert!(s.layer.is_empty());
    s.run_until(Duration::from_secs(40));
    assert_eq!(s.sent.len(), 1, "timers died with the transaction");
}

#[test]
fn rfc2543_requests_match_without_a_magic_cookie() {
    let mut s = Solo::new(TimerConfig::default());
    let inv = request("INVITE", "oldstyle1", 7);
    s.deliver_request(&inv);
    let txn = s.server_txn();
    s.deliver_request(&inv);
    assert_eq!(
        s.event_times("Request").len(),
        1,
        "retransmission matched by RFC 2543 rules"
    );
    s.layer
        .send_response(s.now, txn, 486, response(&inv, 486))
        .unwrap();
    // The ACK carries the To tag of our response; it still matches.
    let ack = Bytes::from(
        String::from_utf8(request("ACK", "oldstyle1", 7).to_vec())
            .unwrap()
            .replace(
                "To: <sip:bob@127.0.0.1>",
                "To: <sip:bob@127.0.0.1>;tag=srvtag",
            ),
    );
    s.deliver_request(&ack);
    s.run_until(Duration::from_secs(40));
    assert!(s.event_times("Ack").is_empty());
    assert_eq!(
        s.event_times("Terminated"),
        secs(&[5.0]),
        "Confirmed, then Timer I"
    );
}

#[test]
fn duplicate_branch_and_ack_are_refused() {
    let mut s = Solo::new(TimerConfig::default());
    let (_, r) = s.send("OPTIONS", "z9hG4bKdup");
    assert_eq!(
        s.layer.send_request(
            s.now,
            server_addr(),
            Transport::Udp,
            b"OPTIONS",
            b"z9hG4bKdup",
            r.clone()
        ),
        Err(TxnError::DuplicateBranch)
    );
    assert!(
        s.layer
            .send_request(
                s.now,
                server_addr(),
                Transport::Udp,
                b"ACK",
                b"z9hG4bKdup2",
                r
            )
            .is_err()
    );
}

#[test]
fn user_timers_share_the_wheel() {
    let mut s = Solo::new(TimerConfig::default());
    let h = s.layer.schedule(s.now + ms(300), 7);
    s.layer.schedule(s.now + ms(200), 9);
    s.layer.cancel_timer(h);
    s.run_until(Duration::from_secs(1));
    let tokens: Vec<_> = s
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            TxnEvent::UserTimer { token } => Some((*t, *token)),
            _ => None,
        })
        .collect();
    assert_eq!(tokens, [(ms(200), 9)]);
}

// ---- two layers over a simulated network ----------------------------------------------

struct Pair {
    now: Instant,
    client: TransactionLayer,
    server: TransactionLayer,
    net: Network,
    client_events: Vec<TxnEvent>,
    server_requests: usize,
}

impl Pair {
    fn new(seed: u64, conditions: Conditions) -> Self {
        let now = Instant::now();
        Pair {
            now,
            client: TransactionLayer::new(now, TimerConfig::default()),
            server: TransactionLayer::new(now, TimerConfig::default()),
            net: Network::new(seed, conditions),
            client_events: Vec::new(),
            server_requests: 0,
        }
    }

    fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            self.net
                .send(self.now, client_addr(), t.destination, t.payload);
        }
        // The server's TU answers every request at once: INVITE 486, others 200.
        while let Some(e) = self.server.poll_event() {
            if let TxnEvent::Request { txn, request, .. } = e {
                self.server_requests += 1;
                let code = if request.method_bytes() == Some(b"INVITE") {
                    486
                } else {
                    200
                };
                let resp = response(request.datagram(), code);
                self.server
                    .send_response(self.now, txn, code, resp)
                    .unwrap();
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            self.net
                .send(self.now, server_addr(), t.destination, t.payload);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
    }

    fn step(&mut self) -> bool {
        self.flush();
        let next = [
            self.net.next_delivery(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        for d in self.net.due(self.now) {
            let m = Message::parse(d.payload).unwrap();
            let layer = if d.to == server_addr() {
                &mut self.server
            } else {
                &mut self.client
            };
            if m.is_request() {
                layer
                    .handle_request(self.now, d.from, Transport::Udp, m)
                    .unwrap();
            } else {
                layer.handle_response(self.now, d.from, m).unwrap();
            }
        }
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.flush();
        true
    }
}

#[test]
fn a_thousand_transactions_survive_loss_duplication_and_reordering() {
    let conditions = Conditions {
        loss: 0.2,
        duplicate: 0.1,
        min_delay: ms(5),
        max_delay: ms(120),
    };
    let mut p = Pair::new(42, conditions);
    let total = 1000;
    for i in 0..total {
        let (method, branch) = if i % 2 == 0 {
            ("INVITE", format!("z9hG4bKinv{i}"))
        } else {
            ("OPTIONS", format!("z9hG4bKopt{i}"))
        };
        let req = request(method, &branch, 1);
        p.client
            .send_request(
                p.now,
                server_addr(),
                Transport::Udp,
                method.as_bytes(),
                branch.as_bytes(),
                req,
            )
            .unwrap();
    }
    let mut steps = 0;
    while p.step() {
        steps += 1;
        assert!(steps < 5_000_000, "simulation does not settle");
    }
    let finals = p
        .client_events
        .iter()
        .filter(
            |e| matches!(e, TxnEvent::Response { response, .. } if response.status() >= Some(200)),
        )
        .count();
    let timeouts = p
        .client_events
        .iter()
        .filter(|e| matches!(e, TxnEvent::Timeout { .. }))
        .count();
    assert_eq!(timeouts, 0);
    assert_eq!(
        finals, total,
        "every transaction got exactly one final response up"
    );
    assert_eq!(
        p.server_requests, total,
        "each request reached the server TU exactly once"
    );
    assert!(p.client.is_empty() && p.server.is_empty());
    let (c, s) = (p.client.stats(), p.server.stats());
    assert!(c.request_retransmissions > 100, "{c:?}");
    assert!(s.response_retransmissions > 100, "{s:?}");
    assert!(s.requests_absorbed > 0 && c.responses_absorbed > 0);
    eprintln!(
        "lossy run: {} datagrams sent, {} dropped, {} duplicated; client {c:?}; server {s:?}",
        p.net.sent, p.net.dropped, p.net.duplicated
    );
}
