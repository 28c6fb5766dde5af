//! REGISTER in the shard: refused, served by the registrar (§10.3), or handed to the
//! application, per [`super::RegisterMode`].

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::reply::Reply;
use super::timers::ShardTimer;
use super::{DialogError, RegisterMode, SessionEvent, Shard};
use crate::message::{HeaderName, Message, Method};
use crate::registrar::{self, RegisterOutcome};
use crate::transaction::ServerTxnId;

impl Shard {
    pub(super) fn on_register(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: Message,
        from: SocketAddr,
    ) {
        match self.config.register {
            RegisterMode::Refuse => {
                self.reject_request(now, txn, &request, 405, &[("Allow", self.allow())])
            }
            RegisterMode::Event => {
                self.pending.insert(
                    txn,
                    super::Pending {
                        request: request.clone(),
                        dialog: None,
                    },
                );
                self.events
                    .push_back(SessionEvent::RegistrationRequest { txn, request, from });
            }
            RegisterMode::Registrar(_) => {
                // §10.3 steps 1 and 5: only our domains (404 before any authentication).
                if self.registrar.as_ref().is_some_and(|r| !r.serves(&request)) {
                    return self.reject_request(now, txn, &request, 404, &[]);
                }
                // In a cluster, the AOR's bindings as the shared store holds them first
                // (before authentication, which runs once, on the REGISTER's return).
                if self.takeover.is_some()
                    && let Some(aor) = request
                        .to_header()
                        .ok()
                        .and_then(|to| registrar::aor_of(&to.uri))
                    && self.wait_for_bindings(txn, &request, &aor, from)
                {
                    return;
                }
                if self.config.registrar_auth.is_some() && !self.authorize(now, txn, &request, from)
                {
                    return;
                }
                let Some(table) = self.registrar.as_mut() else {
                    return;
                };
                match table.register(now, &request) {
                    RegisterOutcome::Ok(bindings) => {
                        // A query (no Contact, §10.3 step 6) changed nothing: nothing to
                        // write (in a cluster, it must not overwrite another node's newer
                        // record with this one's view).
                        if request.header(HeaderName::Contact).is_some()
                            && let Some(aor) = request
                                .to_header()
                                .ok()
                                .and_then(|to| registrar::aor_of(&to.uri))
                        {
                            self.bindings_changed(&aor);
                        }
                        let contact = registrar::contact_header(&bindings);
                        let mut headers: Vec<(&str, &[u8])> = if contact.is_empty() {
                            Vec::new()
                        } else {
                            vec![("Contact", &contact)]
                        };
                        // §10.3 step 8: the 200 SHOULD carry a Date.
                        let date = self.wall_time(now).map(crate::message::rfc1123_date);
                        if let Some(date) = &date {
                            headers.push(("Date", date.as_bytes()));
                        }
                        self.respond(now, txn, &request, Reply::new(200, None).headers(&headers));
                    }
                    RegisterOutcome::IntervalTooBrief(min) => {
                        let min = min.to_string();
                        self.reject_request(
                            now,
                            txn,
                            &request,
                            423,
                            &[("Min-Expires", min.as_bytes())],
                        );
                    }
                    RegisterOutcome::Error(status) => {
                        self.reject_request(now, txn, &request, status, &[])
                    }
                }
                self.rearm_registrar(now);
            }
        }
    }

    /// §10.3 step 3 with [`ShardConfig::registrar_auth`](super::ShardConfig): valid
    /// credentials for a user who may change the To's address-of-record. Answers 401
    /// (a challenge: none, wrong, stale or replayed credentials) or 403 (a user changing
    /// another's bindings, or a user locked for failed authentications) and returns false
    /// otherwise; failures are counted per source and per user ([`crate::guard`]).
    fn authorize(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        request: &Message,
        from: SocketAddr,
    ) -> bool {
        let Some(auth) = self.config.registrar_auth.as_ref() else {
            return true;
        };
        let verdict = auth.verify(now, request, &mut self.nonce_counts);
        let realm = auth.realm.clone();
        let stale = match verdict {
            registrar::AuthVerdict::Authorized(user) => {
                if self.guard.user_locked(now, &user) {
                    self.reject_request(now, txn, request, 403, &[]);
                    return false;
                }
                let aor_user = request.to_header().ok().and_then(|to| match to.uri {
                    crate::message::Uri::Sip(u) => u.user,
                    _ => None,
                });
                if !auth.may_change(&user, aor_user) {
                    self.reject_request(now, txn, request, 403, &[]);
                    return false;
                }
                return true;
            }
            registrar::AuthVerdict::Failed(user) => {
                self.auth_failed(now, from, &user, &realm);
                false
            }
            registrar::AuthVerdict::Replayed(user) => {
                self.auth_failed(now, from, &user, &realm);
                true
            }
            registrar::AuthVerdict::Stale => true,
            _ => false,
        };
        let salt = self.ids.random();
        let challenges = self
            .config
            .registrar_auth
            .as_ref()
            .map(|auth| auth.challenges(now, stale, salt));
        let headers: Vec<(&str, &[u8])> = challenges
            .iter()
            .flatten()
            .map(|c| ("WWW-Authenticate", c.as_bytes()))
            .collect();
        self.reject_request(now, txn, request, 401, &headers);
        false
    }

    /// Counts a failed authentication; a ban it causes reaches every shard.
    fn auth_failed(&mut self, now: Instant, from: SocketAddr, user: &[u8], realm: &str) {
        if let Some(ban) = self.guard.auth_failed(now, from.ip(), user, realm) {
            self.tell_peers_of_ban(ban);
        }
    }

    /// Keeps one wheel timer at the registrar's next expiry.
    pub(super) fn rearm_registrar(&mut self, _now: Instant) {
        let next = self.registrar.as_ref().and_then(|r| r.next_expiry());
        match (next, self.registrar_timer) {
            (Some(at), Some((_, armed))) if armed <= at => {}
            (Some(at), old) => {
                if let Some((h, _)) = old {
                    self.txn.cancel_timer(h);
                }
                let h = self.txn.schedule(at, ShardTimer::RegistrarSweep.token());
                self.registrar_timer = Some((h, at));
            }
            (None, _) => {}
        }
    }

    pub(super) fn registrar_sweep(&mut self, now: Instant) {
        self.registrar_timer = None;
        if let Some(r) = self.registrar.as_mut() {
            r.expire(now);
        }
        self.rearm_registrar(now);
    }

    /// Answers a request handed to the application (event mode).
    pub(super) fn respond_pending(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        status: u16,
        headers: &[(String, Bytes)],
        body: &[u8],
    ) -> Result<(), DialogError> {
        let pending = self
            .forget_pending(txn)
            .ok_or(DialogError::TransactionError(
                crate::transaction::TxnError::UnknownTransaction,
            ))?;
        let mut headers: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        // RFC 4488 §4: a REFER that declines the implicit subscription gets none, and the
        // 2xx says so.
        let refer = pending.request.method() == Some(Method::Refer);
        let subscription_declined = refer && super::refer::refer_sub_declined(&pending.request);
        if subscription_declined
            && (200..300).contains(&status)
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("Refer-Sub"))
        {
            headers.push(("Refer-Sub", b"false"));
        }
        // RFC 6665 §4.2.1.1: a 2xx to SUBSCRIBE says for how long (what the application
        // wrote, else what the shard grants).
        let subscribe = (pending.request.method() == Some(Method::Subscribe))
            .then(|| self.check_subscribe(&pending.request).ok())
            .flatten();
        let written = super::notifier::written_expires(&headers);
        let granted = subscribe.as_ref().map(|a| written.unwrap_or(a.expires));
        let added = granted
            .filter(|_| written.is_none() && (200..300).contains(&status))
            .map(|g| g.to_string());
        if let Some(expires) = &added {
            headers.push(("Expires", expires.as_bytes()));
        }
        // A 2xx to a request that makes a dialog (SUBSCRIBE, RFC 6665 §4.2.1.1; REFER
        // outside one, RFC 3515 §2.4.2) or refreshes its target (SUBSCRIBE, UPDATE: RFC
        // 6665 §4.1.2.1, RFC 3311 §5.2) carries our Contact.
        let contact = self.contact(self.txn.server_transport(txn));
        let wants_contact = match pending.request.method() {
            Some(Method::Subscribe | Method::Update) => true,
            Some(Method::Refer) => pending.request.to_tag().ok().flatten().is_none(),
            _ => false,
        };
        if (200..300).contains(&status)
            && wants_contact
            && !headers.iter().any(|(n, _)| {
                crate::message::HeaderName::from_bytes(n.trim().as_bytes())
                    == crate::message::HeaderName::Contact
            })
        {
            headers.push(("Contact", &contact));
        }
        // RFC 4028 §9: a 2xx to an UPDATE settles the session timer it asked for.
        let update_in = (pending.request.method() == Some(Method::Update))
            .then_some(pending.dialog)
            .flatten();
        let timer = update_in
            .filter(|_| (200..300).contains(&status))
            .and_then(|i| self.answer_headers(i));
        if let Some(timer) = &timer {
            headers.extend(timer.pairs());
            headers.extend(self.capabilities());
        }
        // A request in (or making) a dialog is answered with that dialog's tag: a SUBSCRIBE
        // outside one has no To tag yet, and its dialog's tag was chosen on arrival.
        let local_tag = pending
            .dialog
            .and_then(|i| self.entry_mut(i))
            .map(|e| e.dialog.id.local_tag().to_vec());
        self.respond(
            now,
            txn,
            &pending.request,
            Reply::new(status, local_tag.as_deref())
                .headers(&headers)
                .body(body),
        )
        .ok_or(DialogError::InvalidDialogState {
            current: "answered",
            expected: "pending",
        })?;
        if let Some(index) = update_in
            && status >= 200
        {
            match timer {
                Some(_) => self.refresh_answered(now, index, None),
                None => self.expect_refresh(now, index, &pending.request, None),
            }
        }
        if let (Some(asked), Some(granted), Some(index)) = (&subscribe, granted, pending.dialog) {
            self.subscribe_answered(now, index, asked, status, granted);
        }
        // A 2xx to a REFER starts its implicit subscription (RFC 3515 §2.4.4).
        if refer
            && status >= 200
            && let (Some(index), Ok(cseq)) = (pending.dialog, pending.request.cseq())
        {
            self.refer_answered_by_us(now, index, cseq.seq, status, subscription_declined);
        }
        Ok(())
    }

    /// The registrar's bindings for an AOR (registrar mode), for tests and status.
    pub fn registrar(&self) -> Option<&registrar::Registrar> {
        self.registrar.as_ref()
    }
}
