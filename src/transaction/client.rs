//! Client transactions: INVITE (§17.1.1, RFC 6026 Accepted) and non-INVITE (§17.1.2).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{
    ClientTxnId, Retransmit, SlotId, State, Transaction, TransactionLayer, Transport, TxnError,
    TxnEvent, TxnId, key,
};
use crate::message::{HeaderName, Message, Method, RequestBuilder};
use crate::timer::TimerHandle;
use crate::transaction::TimerName;

/// INVITE client transaction states (Terminated = removed from the table).
#[derive(Debug)]
pub(super) enum ClientInvite {
    /// Request sent; Timer A (unreliable only) retransmits, Timer B times out.
    Calling {
        retransmit: Option<Retransmit>,
        timeout: TimerHandle,
    },
    /// A provisional response arrived: no more retransmissions, no timeout here.
    Proceeding,
    /// A 300-699 arrived and was ACKed; Timer D absorbs its retransmissions.
    Completed { ack: Bytes, wait: TimerHandle },
    /// A 2xx arrived (RFC 6026): further 2xx pass up until Timer M.
    Accepted { wait: TimerHandle },
}

/// Non-INVITE client transaction states.
#[derive(Debug)]
pub(super) enum ClientNonInvite {
    /// Request sent; Timer E retransmits (unreliable only), Timer F times out.
    Trying {
        retransmit: Option<Retransmit>,
        timeout: TimerHandle,
    },
    /// A provisional response arrived; E keeps retransmitting at T2.
    Proceeding {
        retransmit: Option<Retransmit>,
        timeout: TimerHandle,
    },
    /// A final response arrived; Timer K absorbs its retransmissions.
    Completed { wait: TimerHandle },
}

impl ClientInvite {
    pub(super) fn timers(&self) -> [Option<TimerHandle>; 2] {
        match self {
            ClientInvite::Calling {
                retransmit,
                timeout,
            } => [retransmit.map(|r| r.timer), Some(*timeout)],
            ClientInvite::Proceeding => [None, None],
            ClientInvite::Completed { wait, .. } | ClientInvite::Accepted { wait } => {
                [Some(*wait), None]
            }
        }
    }
}

impl ClientNonInvite {
    pub(super) fn timers(&self) -> [Option<TimerHandle>; 2] {
        match self {
            ClientNonInvite::Trying {
                retransmit,
                timeout,
            }
            | ClientNonInvite::Proceeding {
                retransmit,
                timeout,
            } => [retransmit.map(|r| r.timer), Some(*timeout)],
            ClientNonInvite::Completed { wait } => [Some(*wait), None],
        }
    }
}

impl TransactionLayer {
    /// The TCP connection for a request sent over TCP only for its size failed (§18.1.1):
    /// if no response has come, the request goes over UDP now, its top Via saying UDP
    /// again, with Timer A or E from here (Timer B or F keeps running). False when the
    /// transaction is not such a one, or is past its first state.
    pub(super) fn fall_back_to_udp(&mut self, now: Instant, id: SlotId) -> bool {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return false;
        };
        if slot.generation != id.generation || !slot.upgraded {
            return false;
        }
        let Some(txn) = slot.txn.as_mut() else {
            return false;
        };
        let invite = match txn.state {
            State::ClientInvite(ClientInvite::Calling { .. }) => true,
            State::ClientNonInvite(ClientNonInvite::Trying { .. }) => false,
            _ => return false,
        };
        let Some(over_udp) =
            crate::message::with_top_via_transport(&txn.request, Transport::Udp.token())
        else {
            return false;
        };
        txn.request = over_udp.clone();
        let peer = txn.peer;
        slot.transport = Transport::Udp;
        slot.upgraded = false;
        self.stream_clients -= 1;
        self.stats.stream_fallbacks += 1;
        self.transmit(id, peer, over_udp);
        let Some(interval) = self.config.first_retransmit(false) else {
            return true;
        };
        let name = if invite { TimerName::A } else { TimerName::E };
        let timer = self.set_timer(now, id, name, interval);
        let retransmit = Some(Retransmit::new(timer, interval));
        match self.get_mut(id).map(|t| &mut t.state) {
            Some(State::ClientInvite(ClientInvite::Calling { retransmit: r, .. }))
            | Some(State::ClientNonInvite(ClientNonInvite::Trying { retransmit: r, .. })) => {
                *r = retransmit;
            }
            _ => {}
        }
        true
    }
}

impl TransactionLayer {
    /// Starts a client transaction: sends `request` (built by the caller, whose top Via
    /// carries `branch`) to `destination` and retransmits it as §17.1 says. `method` is the
    /// request's method as written. ACK is not a transaction: use
    /// [`TransactionLayer::send_stateless`].
    pub fn send_request(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        transport: Transport,
        method: &[u8],
        branch: &[u8],
        request: Bytes,
    ) -> Result<ClientTxnId, TxnError> {
        let kind = Method::from_bytes(method);
        if kind == Method::Ack {
            return Err(TxnError::InvalidState {
                current: "ACK has no transaction",
            });
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        key::client_key(&mut scratch, branch, method);
        let duplicate = self.lookup(&scratch).is_some();
        let key = super::Key::new(&scratch);
        self.scratch = scratch;
        if duplicate {
            return Err(TxnError::DuplicateBranch);
        }
        // §18.1.1: too large for UDP (the path MTU being unknown) goes over TCP, and the
        // top Via says so.
        let (transport, request, upgraded) = match self.stream_above {
            Some(limit) if transport == Transport::Udp && request.len() > limit => {
                match crate::message::with_top_via_transport(&request, Transport::Tcp.token()) {
                    Some(over_tcp) => (Transport::Tcp, over_tcp, true),
                    None => (transport, request, false),
                }
            }
            _ => (transport, request, false),
        };
        // Placeholder state; replaced below once the timers (which need the id) exist.
        let id = self.insert(
            Transaction {
                key,
                peer: destination,
                request: request.clone(),
                state: State::ClientInvite(ClientInvite::Proceeding),
            },
            transport,
        );
        self.stats.client_created += 1;
        if transport.is_reliable() {
            self.stream_clients += 1;
        }
        if upgraded {
            self.slots[id.index as usize].upgraded = true;
            self.stats.large_requests_over_tcp += 1;
        }
        self.transmit(id, destination, request);
        let timeout = self.set_timer(
            now,
            id,
            if kind == Method::Invite {
                TimerName::B
            } else {
                TimerName::F
            },
            self.config.timeout(),
        );
        let retransmit = self
            .config
            .first_retransmit(transport.is_reliable())
            .map(|interval| {
                let name = if kind == Method::Invite {
                    TimerName::A
                } else {
                    TimerName::E
                };
                Retransmit::new(self.set_timer(now, id, name, interval), interval)
            });
        let state = if kind == Method::Invite {
            State::ClientInvite(ClientInvite::Calling {
                retransmit,
                timeout,
            })
        } else {
            State::ClientNonInvite(ClientNonInvite::Trying {
                retransmit,
                timeout,
            })
        };
        if let Some(txn) = self.get_mut(id) {
            txn.state = state;
        }
        Ok(ClientTxnId(id))
    }

    pub(super) fn client_invite_timer(&mut self, now: Instant, id: SlotId, name: TimerName) {
        let Some(txn) = self.get_mut(id) else { return };
        let State::ClientInvite(state) = &mut txn.state else {
            return;
        };
        match (name, state) {
            (
                TimerName::A,
                ClientInvite::Calling {
                    retransmit: Some(r),
                    ..
                },
            ) => {
                // Timer A doubles without a cap (§17.1.1.2); only E and G stop at T2.
                let interval = r.interval() * 2;
                r.set_interval(interval);
                let request = txn.request.clone();
                self.retransmit(now, id, TimerName::A, interval, request);
            }
            (TimerName::B, ClientInvite::Calling { .. })
            | (TimerName::CancelGiveUp, ClientInvite::Calling { .. } | ClientInvite::Proceeding) => {
                self.time_out(TxnId::Client(ClientTxnId(id)))
            }
            (TimerName::D, ClientInvite::Completed { .. })
            | (TimerName::M, ClientInvite::Accepted { .. }) => self.terminate(id),
            _ => {}
        }
    }

    pub(super) fn client_non_invite_timer(&mut self, now: Instant, id: SlotId, name: TimerName) {
        let t2 = self.config.t2;
        let Some(txn) = self.get_mut(id) else { return };
        let State::ClientNonInvite(state) = &mut txn.state else {
            return;
        };
        match (name, state) {
            // Timer E: the next interval doubles up to T2 in Trying, is T2 in Proceeding.
            (
                TimerName::E,
                ClientNonInvite::Trying {
                    retransmit: Some(r),
                    ..
                },
            ) => {
                let interval = (r.interval() * 2).min(t2);
                r.set_interval(interval);
                let request = txn.request.clone();
                self.retransmit(now, id, TimerName::E, interval, request);
            }
            (
                TimerName::E,
                ClientNonInvite::Proceeding {
                    retransmit: Some(r),
                    ..
                },
            ) => {
                r.set_interval(t2);
                let request = txn.request.clone();
                self.retransmit(now, id, TimerName::E, t2, request);
            }
            (TimerName::F, ClientNonInvite::Trying { .. } | ClientNonInvite::Proceeding { .. }) => {
                self.time_out(TxnId::Client(ClientTxnId(id)))
            }
            (TimerName::K, ClientNonInvite::Completed { .. }) => self.terminate(id),
            _ => {}
        }
    }

    pub(super) fn client_invite_response(&mut self, now: Instant, id: SlotId, response: Message) {
        let Some(code) = response.status() else {
            return;
        };
        let reliable = self.reliable(id);
        let Some(txn) = self.get_mut(id) else { return };
        let State::ClientInvite(state) = &mut txn.state else {
            return;
        };
        let txn_id = ClientTxnId(id);
        match state {
            ClientInvite::Calling { .. } | ClientInvite::Proceeding => {
                let old = std::mem::replace(state, ClientInvite::Proceeding);
                // A final response ends the need for the request (the non-2xx ACK is built
                // now): Accepted and Completed keep no datagram for their 32 s.
                let request = if code >= 200 {
                    std::mem::take(&mut txn.request)
                } else {
                    Bytes::new()
                };
                let peer = txn.peer;
                for t in old.timers().into_iter().flatten() {
                    self.timers.cancel(t);
                }
                match code {
                    100..=199 => {}
                    200..=299 => {
                        let wait = self.set_timer(now, id, TimerName::M, self.config.timeout());
                        self.set_client_invite(id, ClientInvite::Accepted { wait });
                    }
                    _ => {
                        let ack = build_ack(&request, &response);
                        if let Some(ack) = &ack {
                            self.transmit(id, peer, ack.clone());
                        }
                        let d = self.config.d(reliable);
                        self.events.push_back(TxnEvent::Response {
                            txn: txn_id,
                            response,
                        });
                        if d.is_zero() {
                            return self.terminate(id);
                        }
                        let wait = self.set_timer(now, id, TimerName::D, d);
                        self.set_client_invite(
                            id,
                            ClientInvite::Completed {
                                ack: ack.unwrap_or_default(),
                                wait,
                            },
                        );
                        return;
                    }
                }
                self.events.push_back(TxnEvent::Response {
                    txn: txn_id,
                    response,
                });
            }
            ClientInvite::Completed { ack, .. } => {
                // A retransmitted non-2xx final: ACK it again, do not pass it up.
                let (peer, ack) = (txn.peer, ack.clone());
                self.stats.responses_absorbed += 1;
                if code >= 300 && !ack.is_empty() {
                    self.transmit(id, peer, ack);
                }
            }
            ClientInvite::Accepted { .. } => {
                if (200..300).contains(&code) {
                    self.events.push_back(TxnEvent::Response {
                        txn: txn_id,
                        response,
                    });
                } else {
                    self.stats.responses_absorbed += 1;
                }
            }
        }
    }

    fn set_client_invite(&mut self, id: SlotId, state: ClientInvite) {
        if let Some(txn) = self.get_mut(id) {
            txn.state = State::ClientInvite(state);
        }
    }

    pub(super) fn client_non_invite_response(
        &mut self,
        now: Instant,
        id: SlotId,
        response: Message,
    ) {
        let Some(code) = response.status() else {
            return;
        };
        let reliable = self.reliable(id);
        let Some(txn) = self.get_mut(id) else { return };
        let State::ClientNonInvite(state) = &mut txn.state else {
            return;
        };
        match state {
            ClientNonInvite::Completed { .. } => {
                self.stats.responses_absorbed += 1;
                return;
            }
            ClientNonInvite::Trying {
                retransmit,
                timeout,
            } if code < 200 => {
                *state = ClientNonInvite::Proceeding {
                    retransmit: *retransmit,
                    timeout: *timeout,
                };
            }
            ClientNonInvite::Proceeding { .. } if code < 200 => {}
            _ => {
                for t in state.timers().into_iter().flatten() {
                    self.timers.cancel(t);
                }
                self.events.push_back(TxnEvent::Response {
                    txn: ClientTxnId(id),
                    response,
                });
                let k = self.config.i_k(reliable);
                if k.is_zero() {
                    return self.terminate(id);
                }
                let wait = self.set_timer(now, id, TimerName::K, k);
                if let Some(txn) = self.get_mut(id) {
                    txn.state = State::ClientNonInvite(ClientNonInvite::Completed { wait });
                    txn.request = Bytes::new();
                }
                return;
            }
        }
        self.events.push_back(TxnEvent::Response {
            txn: ClientTxnId(id),
            response,
        });
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3): Request-URI, Call-ID, From, CSeq
/// number and the top Via of the request (same branch), To of the response, the request's
/// Route headers.
fn build_ack(request: &Bytes, response: &Message) -> Option<Bytes> {
    let req = Message::parse(request.clone()).ok()?;
    let cseq = req.cseq().ok()?;
    let mut buf = BytesMut::with_capacity(request.len().min(1024));
    let mut b = RequestBuilder::new(&mut buf, b"ACK", req.request_uri_bytes()?);
    b.header_named(HeaderName::Via, req.top_via_bytes()?);
    for route in req.header_values(HeaderName::Route) {
        b.header_named(HeaderName::Route, route);
    }
    b.header_named(HeaderName::MaxForwards, b"70")
        .header_named(HeaderName::From, req.header(HeaderName::From)?)
        .header_named(HeaderName::To, response.header(HeaderName::To)?)
        .header_named(HeaderName::CallId, req.call_id()?)
        .header_named(HeaderName::CSeq, format!("{} ACK", cseq.seq).as_bytes());
    b.finish(b"").ok()?;
    Some(buf.freeze())
}
