//! Server transactions: INVITE (§17.2.1, RFC 6026 Accepted) and non-INVITE (§17.2.2), plus
//! ACK and CANCEL matching (§17.2.3, §9.2).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::key::KeyMethod;
use super::{
    Retransmit, ServerTxnId, SlotId, State, TimerEntry, Transaction, TransactionLayer, Transport,
    TxnError, TxnEvent, TxnId,
};
use crate::message::{Message, Method, ParseError, ResponseBuilder, ViaKey};
use crate::timer::TimerHandle;
use crate::transaction::TimerName;

/// INVITE server transaction states (Terminated = removed from the table).
#[derive(Debug)]
pub(super) enum ServerInvite {
    /// Waiting for the TU; the Trying timer sends 100 if the TU is slow. Retransmitted
    /// INVITEs get the last provisional response again.
    Proceeding {
        trying: Option<TimerHandle>,
        provisional: Option<Bytes>,
    },
    /// A 300-699 was sent; Timer G retransmits it (unreliable only), Timer H waits for ACK.
    Completed {
        response: Bytes,
        retransmit: Option<Retransmit>,
        timeout: TimerHandle,
    },
    /// The ACK arrived; Timer I absorbs ACK retransmissions.
    Confirmed { wait: TimerHandle },
    /// A 2xx was sent (RFC 6026): INVITE retransmissions are absorbed (the TU retransmits
    /// the 2xx), ACKs pass up, until Timer L.
    Accepted { wait: TimerHandle },
}

/// Non-INVITE server transaction states. Trying and Proceeding carry a deadline for the TU
/// (64·T1: by then the client's Timer F has given up), so a TU that never answers cannot
/// leak transactions; RFC 3261 itself gives these states no timer.
#[derive(Debug)]
pub(super) enum ServerNonInvite {
    /// Waiting for the TU; retransmissions are absorbed.
    Trying { deadline: Option<TimerHandle> },
    /// A provisional was sent; retransmissions get it again.
    Proceeding {
        provisional: Bytes,
        deadline: Option<TimerHandle>,
    },
    /// A final was sent; retransmissions get it again until Timer J.
    Completed { response: Bytes, wait: TimerHandle },
}

impl ServerInvite {
    pub(super) fn timers(&self) -> [Option<TimerHandle>; 2] {
        match self {
            ServerInvite::Proceeding { trying, .. } => [*trying, None],
            ServerInvite::Completed {
                retransmit,
                timeout,
                ..
            } => [retransmit.map(|r| r.timer), Some(*timeout)],
            ServerInvite::Confirmed { wait } | ServerInvite::Accepted { wait } => {
                [Some(*wait), None]
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ServerInvite::Proceeding { .. } => "Proceeding",
            ServerInvite::Completed { .. } => "Completed",
            ServerInvite::Confirmed { .. } => "Confirmed",
            ServerInvite::Accepted { .. } => "Accepted",
        }
    }
}

impl ServerNonInvite {
    pub(super) fn timers(&self) -> [Option<TimerHandle>; 2] {
        match self {
            ServerNonInvite::Completed { wait, .. } => [Some(*wait), None],
            ServerNonInvite::Trying { deadline } | ServerNonInvite::Proceeding { deadline, .. } => {
                [*deadline, None]
            }
        }
    }
}

/// Where responses to this request go: over a stream, back on the connection it came in on
/// (§18.2.2); on UDP, back to the source when the top Via asks for it with rport (RFC 3581),
/// else to the source address (the `received` of §18.2.1) at the sent-by port (§18.2.2).
fn response_destination(via: &ViaKey<'_>, from: SocketAddr, transport: Transport) -> SocketAddr {
    if via.rport || transport.is_reliable() {
        from
    } else {
        SocketAddr::new(from.ip(), via.port.unwrap_or(5060))
    }
}

impl TransactionLayer {
    /// A request other than ACK and CANCEL: a retransmission, or a new server transaction.
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        request: Message,
    ) -> Result<(), ParseError> {
        let via = request.top_via_key()?;
        let (hash, found) = self.find_server(&request, &via, KeyMethod::OfRequest)?;
        if let Some(index) = found {
            let id = self.id_of(index);
            self.absorb_retransmission(id);
            return Ok(());
        }
        let key = super::Key::new(&self.scratch);
        let peer = response_destination(&via, from, transport);
        let is_invite = request.method() == Some(Method::Invite);
        let state = if is_invite {
            State::ServerInvite(ServerInvite::Proceeding {
                trying: None,
                provisional: None,
            })
        } else {
            State::ServerNonInvite(ServerNonInvite::Trying { deadline: None })
        };
        let id = self.insert_hashed(
            hash,
            Transaction {
                key,
                peer,
                // Kept only to build a 100 Trying for an INVITE the TU has not answered yet:
                // released with the first response, so a transaction in Accepted or
                // Completed (32 s on UDP) does not pin the request's datagram.
                request: if is_invite {
                    request.datagram().clone()
                } else {
                    Bytes::new()
                },
                state,
            },
            transport,
        );
        self.stats.server_created += 1;
        if is_invite {
            let trying = self.set_timer(now, id, TimerName::Trying, self.config.trying_delay);
            if let Some(Transaction {
                state: State::ServerInvite(ServerInvite::Proceeding { trying: t, .. }),
                ..
            }) = self.get_mut(id)
            {
                *t = Some(trying);
            }
        } else {
            let timer = self.set_timer(now, id, TimerName::TuDeadline, self.config.timeout());
            if let Some(Transaction {
                state: State::ServerNonInvite(ServerNonInvite::Trying { deadline }),
                ..
            }) = self.get_mut(id)
            {
                *deadline = Some(timer);
            }
        }
        self.events.push_back(TxnEvent::Request {
            txn: ServerTxnId(id),
            request,
            from,
        });
        Ok(())
    }

    /// A request retransmission reached its server transaction: resend the last response,
    /// or absorb it.
    fn absorb_retransmission(&mut self, id: SlotId) {
        self.stats.requests_absorbed += 1;
        let Some(txn) = self.get(id) else { return };
        let resend = match &txn.state {
            State::ServerInvite(ServerInvite::Proceeding { provisional, .. }) => {
                provisional.clone()
            }
            State::ServerInvite(ServerInvite::Completed { response, .. }) => Some(response.clone()),
            State::ServerNonInvite(ServerNonInvite::Proceeding { provisional, .. }) => {
                Some(provisional.clone())
            }
            State::ServerNonInvite(ServerNonInvite::Completed { response, .. }) => {
                Some(response.clone())
            }
            _ => None,
        };
        if let Some(bytes) = resend {
            let peer = txn.peer;
            self.stats.response_retransmissions += 1;
            self.transmit(id, peer, bytes);
        }
    }

    /// ACK: to a non-2xx it belongs to the INVITE server transaction; to a 2xx it is the
    /// TU's (the dialog layer's).
    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request: Message,
    ) -> Result<(), ParseError> {
        let via = request.top_via_key()?;
        let Some(index) = self.find_server(&request, &via, KeyMethod::OfRequest)?.1 else {
            self.events.push_back(TxnEvent::Ack { request, from });
            return Ok(());
        };
        let id = self.id_of(index);
        let reliable = self.reliable(id);
        let Some(txn) = self.get_mut(id) else {
            return Ok(());
        };
        match &mut txn.state {
            State::ServerInvite(ServerInvite::Completed {
                retransmit,
                timeout,
                ..
            }) => {
                let (g, h) = (retransmit.map(|r| r.timer), *timeout);
                self.cancel(g);
                self.timers.cancel(h);
                let i = self.config.i_k(reliable);
                if i.is_zero() {
                    self.terminate(id);
                } else {
                    let wait = self.set_timer(now, id, TimerName::I, i);
                    self.set_server_invite(id, ServerInvite::Confirmed { wait });
                }
            }
            State::ServerInvite(ServerInvite::Accepted { .. }) => {
                self.events.push_back(TxnEvent::Ack { request, from });
            }
            _ => self.stats.requests_absorbed += 1,
        }
        Ok(())
    }

    /// CANCEL: its own non-INVITE server transaction, plus an O(1) lookup of the INVITE it
    /// cancels (same branch and sent-by, method INVITE).
    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        request: Message,
    ) -> Result<(), ParseError> {
        let via = request.top_via_key()?;
        let (_, invite) = self.find_server(&request, &via, KeyMethod::Fixed(b"INVITE"))?;
        let invite = invite.map(|i| self.id_of(i)).filter(|&id| {
            matches!(
                self.get(id),
                Some(Transaction {
                    state: State::ServerInvite(_),
                    ..
                })
            )
        });
        let before = self.stats.server_created;
        // Created like any non-INVITE request; the Request event is rewritten as Cancel.
        self.on_request(now, from, transport, request)?;
        if self.stats.server_created != before
            && let Some(TxnEvent::Request { txn, request, from }) = self.events.pop_back()
        {
            self.events.push_back(TxnEvent::Cancel {
                txn,
                invite: invite.map(ServerTxnId),
                request,
                from,
            });
        }
        Ok(())
    }

    /// Sends the TU's response on a server transaction; `status` is its status code.
    pub fn send_response(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        status: u16,
        response: Bytes,
    ) -> Result<(), TxnError> {
        if !(100..=699).contains(&status) {
            return Err(TxnError::InvalidStatus);
        }
        let id = txn.0;
        let reliable = self.reliable(id);
        let t = self.get_mut(id).ok_or(TxnError::UnknownTransaction)?;
        let peer = t.peer;
        if matches!(
            t.state,
            State::ServerInvite(ServerInvite::Proceeding { .. })
        ) {
            // The TU answers: no 100 Trying will be built from the request any more.
            t.request = Bytes::new();
        }
        match &mut t.state {
            State::ServerInvite(state) => match state {
                ServerInvite::Proceeding {
                    trying,
                    provisional,
                } => {
                    let trying = trying.take();
                    if status < 200 {
                        *provisional = Some(response.clone());
                        self.cancel(trying);
                    } else if status < 300 {
                        self.cancel(trying);
                        let wait = self.set_timer(now, id, TimerName::L, self.config.timeout());
                        self.set_server_invite(id, ServerInvite::Accepted { wait });
                    } else {
                        self.cancel(trying);
                        let timeout = self.set_timer(now, id, TimerName::H, self.config.timeout());
                        let retransmit = self.config.first_retransmit(reliable).map(|interval| {
                            Retransmit::new(
                                self.set_timer(now, id, TimerName::G, interval),
                                interval,
                            )
                        });
                        self.set_server_invite(
                            id,
                            ServerInvite::Completed {
                                response: response.clone(),
                                retransmit,
                                timeout,
                            },
                        );
                    }
                }
                // RFC 6026 §8.5: 2xx from the TU in Accepted (its retransmissions, or 2xx to
                // other forks' requests) go out.
                ServerInvite::Accepted { .. } if (200..300).contains(&status) => {}
                other => {
                    return Err(TxnError::InvalidState {
                        current: other.name(),
                    });
                }
            },
            State::ServerNonInvite(state) => match state {
                ServerNonInvite::Trying { deadline }
                | ServerNonInvite::Proceeding { deadline, .. } => {
                    let deadline = *deadline;
                    if status < 200 {
                        *state = ServerNonInvite::Proceeding {
                            provisional: response.clone(),
                            deadline,
                        };
                    } else {
                        let j = self.config.j(reliable);
                        if j.is_zero() {
                            self.cancel(deadline);
                            self.transmit(id, peer, response);
                            self.terminate(id);
                            return Ok(());
                        }
                        // The TU deadline's timer becomes Timer J.
                        let entry = TimerEntry::Txn {
                            id,
                            name: TimerName::J,
                        };
                        let wait = match deadline {
                            Some(d) => self.timers.reschedule(d, now, j, entry),
                            None => self.set_timer(now, id, TimerName::J, j),
                        };
                        if let Some(t) = self.get_mut(id) {
                            t.state = State::ServerNonInvite(ServerNonInvite::Completed {
                                response: response.clone(),
                                wait,
                            });
                        }
                    }
                }
                ServerNonInvite::Completed { .. } => {
                    return Err(TxnError::InvalidState {
                        current: "Completed",
                    });
                }
            },
            State::ClientInvite(_) | State::ClientNonInvite(_) => {
                return Err(TxnError::UnknownTransaction);
            }
        }
        self.transmit(id, peer, response);
        Ok(())
    }

    fn set_server_invite(&mut self, id: SlotId, state: ServerInvite) {
        if let Some(t) = self.get_mut(id) {
            t.state = State::ServerInvite(state);
        }
    }

    pub(super) fn server_invite_timer(&mut self, now: Instant, id: SlotId, name: TimerName) {
        let t2 = self.config.t2;
        let Some(txn) = self.get_mut(id) else { return };
        let peer = txn.peer;
        let State::ServerInvite(state) = &mut txn.state else {
            return;
        };
        match (name, state) {
            (
                TimerName::Trying,
                ServerInvite::Proceeding {
                    trying,
                    provisional,
                },
            ) => {
                *trying = None;
                if provisional.is_none() {
                    let request = std::mem::take(&mut txn.request);
                    if let Some(bytes) = build_trying(&request, peer) {
                        self.stats.trying_sent += 1;
                        if let Some(Transaction {
                            state: State::ServerInvite(ServerInvite::Proceeding { provisional, .. }),
                            ..
                        }) = self.get_mut(id)
                        {
                            *provisional = Some(bytes.clone());
                        }
                        self.transmit(id, peer, bytes);
                    }
                }
            }
            (
                TimerName::G,
                ServerInvite::Completed {
                    response,
                    retransmit: Some(r),
                    ..
                },
            ) => {
                let interval = (r.interval() * 2).min(t2);
                r.set_interval(interval);
                let bytes = response.clone();
                self.retransmit(now, id, TimerName::G, interval, bytes);
            }
            (TimerName::H, ServerInvite::Completed { .. }) => {
                self.time_out(TxnId::Server(ServerTxnId(id)))
            }
            (TimerName::I, ServerInvite::Confirmed { .. })
            | (TimerName::L, ServerInvite::Accepted { .. }) => self.terminate(id),
            _ => {}
        }
    }
}

/// 100 Trying for a stored INVITE (§8.2.6.1: no To tag, Timestamp copied).
fn build_trying(request: &Bytes, source: SocketAddr) -> Option<Bytes> {
    let req = Message::parse(request.clone()).ok()?;
    let mut buf = BytesMut::with_capacity(512);
    ResponseBuilder::to_request_from(&mut buf, &req, Some(source), 100, None, None)
        .finish(b"")
        .ok()?;
    Some(buf.freeze())
}
