//! [`DialogManager`]: the async face of the runtime. It routes each command to the shard
//! that owns the dialog's Call-ID and gathers counters on demand; starting and stopping
//! the shard threads is the `lifecycle` module's.
//!
//! # What it owns, what it may not touch
//! The command facade: turning a call's arguments into a [`DialogCommand`], the hash to
//! its shard, the oneshot its answer comes back on. It holds no SIP state of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::queue::{Inbound, ShardHandle};
use super::{DialogStats, RuntimeConfig, SessionCoordinationEvent, ShardReport};
use super::{RequestHandle, TransactionHandle};
use crate::dialog::DialogId;
use crate::message::{Host, Method, Uri};
use crate::shard::{
    CommandOutcome, DialogCommand, DialogError, StandaloneRequest, shard_for_call_id,
};

/// The dialog layer on its threads: create, [`start`](Self::start), place and answer
/// calls, [`stop`](Self::stop).
///
/// Every command goes to the shard that owns its Call-ID, by the same hash the receive
/// path uses, and its answer comes back on a oneshot: the caller awaits, the shard never
/// blocks.
///
/// All methods take `&self`: share it in an `Arc` between the tasks that place calls, the
/// session coordinator and a metrics endpoint. It starts once; after
/// [`stop`](Self::stop) commands fail with [`DialogError::NotRunning`].
pub struct DialogManager {
    pub(super) config: RuntimeConfig,
    pub(super) coordinator: Mutex<Option<mpsc::Sender<Vec<SessionCoordinationEvent>>>>,
    pub(super) running: OnceLock<Running>,
    pub(super) stopped: AtomicBool,
}

pub(super) struct Running {
    pub(super) shards: Arc<Vec<ShardHandle>>,
    pub(super) threads: Mutex<Vec<JoinHandle<ShardReport>>>,
    pub(super) local_addr: SocketAddr,
    /// The shards listen on TCP too.
    pub(super) tcp: bool,
    /// Round-robin for new calls.
    pub(super) next_call: AtomicUsize,
    /// The shared store's writer, when clustered (finished at stop).
    pub(super) shared: Mutex<Option<super::shared::SharedStore>>,
}

impl DialogManager {
    /// The shared store's counters, when the node is clustered and running.
    pub fn shared_store_stats(&self) -> Option<super::SharedStoreStats> {
        let running = self.running.get()?;
        let shared = running.shared.lock().ok()?;
        shared.as_ref().map(|s| s.stats())
    }

    /// A manager that has not started: no socket, no thread yet.
    pub fn new(config: RuntimeConfig) -> Self {
        DialogManager {
            config,
            coordinator: Mutex::new(None),
            running: OnceLock::new(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Where session events go, in batches (set before [`start`](Self::start)). A bounded
    /// channel: when it is full, shards answer new calls 503 until there is room.
    pub fn set_session_coordinator(&self, sender: mpsc::Sender<Vec<SessionCoordinationEvent>>) {
        if let Ok(mut c) = self.coordinator.lock() {
            *c = Some(sender);
        }
    }

    /// The address the shards listen on (after start).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.get().map(|r| r.local_addr)
    }

    /// True once started with a TCP listener on [`local_addr`](Self::local_addr) as well
    /// (off by configuration, or when the port's TCP side was taken).
    pub fn tcp_listening(&self) -> bool {
        self.running.get().is_some_and(|r| r.tcp)
    }

    /// How many shards run.
    pub fn shard_count(&self) -> usize {
        self.running.get().map_or(0, |r| r.shards.len())
    }

    /// Places a call from `from` (a name-addr or URI, no tag) to the SIP URI `to`, sent to
    /// the address and port in `to`: an IP address, or a host name looked up by the system
    /// resolver (A/AAAA, as RFC 3263 §4.2 does when the URI has a port; there is no NAPTR
    /// or SRV step, so a name without a port goes to 5060). Use
    /// [`make_call_to`](Self::make_call_to) to name the next hop. Returns the call's
    /// handle; events then name it as `call`.
    pub async fn make_call(
        &self,
        from: &str,
        to: &str,
        sdp: Option<Bytes>,
    ) -> Result<DialogId, DialogError> {
        let destination = destination_of(to, self.local_addr()).await?;
        self.make_call_to(from, to, destination, sdp).await
    }

    /// Places a call to `to`, sending the INVITE to `destination`.
    pub async fn make_call_to(
        &self,
        from: &str,
        to: &str,
        destination: SocketAddr,
        sdp: Option<Bytes>,
    ) -> Result<DialogId, DialogError> {
        self.make_call_with_headers(from, to, destination, sdp, Vec::new())
            .await
    }

    /// Like [`DialogManager::make_call_to`], with extra INVITE headers
    /// (P-Asserted-Identity, a preloaded `Route: <sip:proxy;lr>`, …). Headers the dialog
    /// layer writes itself are refused (`BuildError::ReservedHeader`).
    pub async fn make_call_with_headers(
        &self,
        from: &str,
        to: &str,
        destination: SocketAddr,
        sdp: Option<Bytes>,
        headers: Vec<(String, Bytes)>,
    ) -> Result<DialogId, DialogError> {
        let running = self.running()?;
        let shard = running.next_call.fetch_add(1, Ordering::Relaxed) % running.shards.len();
        let command = DialogCommand::MakeCall {
            from: Bytes::from(angle(from)),
            to: Bytes::from(angle(to)),
            request_uri: Bytes::copy_from_slice(bare_uri(to).as_bytes()),
            destination,
            sdp: sdp.unwrap_or_default(),
            headers,
        };
        match self.command_on(shard, command).await? {
            CommandOutcome::Call(id) => Ok(id),
            other => Err(unexpected("MakeCall", &other)),
        }
    }

    /// Subscribes to `event` (`presence`, `dialog`, …) of the SIP URI `to` for `expires`
    /// seconds (RFC 6665), sent to the address in `to` (looked up as for
    /// [`make_call`](Self::make_call)). The shard refreshes it; events name the returned
    /// handle as `subscription`.
    pub async fn subscribe(
        &self,
        from: &str,
        to: &str,
        event: &str,
        expires: u32,
    ) -> Result<DialogId, DialogError> {
        let destination = destination_of(to, self.local_addr()).await?;
        let running = self.running()?;
        let shard = running.next_call.fetch_add(1, Ordering::Relaxed) % running.shards.len();
        let command = DialogCommand::Subscribe(Box::new(crate::shard::NewSubscription {
            from: Bytes::from(angle(from)),
            to: Bytes::from(angle(to)),
            request_uri: Bytes::copy_from_slice(bare_uri(to).as_bytes()),
            destination,
            event: Bytes::copy_from_slice(event.as_bytes()),
            expires,
            headers: Vec::new(),
            body: Bytes::new(),
        }));
        match self.command_on(shard, command).await? {
            CommandOutcome::Subscription(id) => Ok(id),
            other => Err(unexpected("Subscribe", &other)),
        }
    }

    /// Ends a subscription we hold (`Expires: 0`), by its handle or one of its dialogs.
    pub async fn unsubscribe(&self, subscription: &DialogId) -> Result<(), DialogError> {
        let subscription = subscription.clone();
        self.command(DialogCommand::Unsubscribe { subscription })
            .await
    }

    /// Sends a request outside any dialog (REGISTER, OPTIONS, MESSAGE …). A given Call-ID
    /// picks its owning shard; without one the shards take turns and each makes a Call-ID
    /// of its own. The final response arrives as a
    /// [`StandaloneResult`](crate::shard::SessionEvent::StandaloneResult) event from the
    /// shard the handle names.
    pub async fn send_standalone(
        &self,
        request: StandaloneRequest,
    ) -> Result<RequestHandle, DialogError> {
        let running = self.running()?;
        let shard = match &request.call_id {
            Some(c) => shard_for_call_id(c, running.shards.len()),
            None => running.next_call.fetch_add(1, Ordering::Relaxed) % running.shards.len(),
        };
        match self
            .command_on(shard, DialogCommand::SendStandalone(Box::new(request)))
            .await?
        {
            CommandOutcome::Request(request) => Ok(RequestHandle { shard, request }),
            other => Err(unexpected("SendStandalone", &other)),
        }
    }

    /// Sends 180 Ringing for an incoming call.
    pub async fn ringing(&self, dialog: &DialogId) -> Result<(), DialogError> {
        let dialog = dialog.clone();
        self.command(DialogCommand::Ringing { dialog }).await
    }

    /// Answers an incoming call (or re-INVITE) with 200 and this SDP.
    pub async fn answer(&self, dialog: &DialogId, sdp: Option<Bytes>) -> Result<(), DialogError> {
        let dialog = dialog.clone();
        let sdp = sdp.unwrap_or_default();
        self.command(DialogCommand::Answer { dialog, sdp }).await
    }

    /// Refuses an incoming call (or re-INVITE) with a final status (300–699).
    pub async fn reject(&self, dialog: &DialogId, status: u16) -> Result<(), DialogError> {
        let dialog = dialog.clone();
        self.command(DialogCommand::Reject { dialog, status }).await
    }

    /// Sends a re-INVITE with a new offer.
    pub async fn reinvite(&self, dialog: &DialogId, sdp: Option<Bytes>) -> Result<(), DialogError> {
        let dialog = dialog.clone();
        let sdp = sdp.unwrap_or_default();
        self.command(DialogCommand::ReInvite { dialog, sdp }).await
    }

    /// Sends a request inside a confirmed dialog: BYE ends it, INVITE is a re-INVITE,
    /// CANCEL cancels our pending call; any other method (INFO, MESSAGE, UPDATE, NOTIFY,
    /// REFER, OPTIONS, …) goes as is and its outcome arrives as a
    /// [`RequestResult`](crate::shard::SessionEvent::RequestResult) event.
    pub async fn send_request(
        &self,
        dialog: &DialogId,
        method: Method,
        body: Option<(&str, Bytes)>,
    ) -> Result<(), DialogError> {
        let dialog = dialog.clone();
        let command = match method {
            Method::Bye => DialogCommand::Bye { dialog },
            Method::Cancel => DialogCommand::Cancel { call: dialog },
            Method::Invite => DialogCommand::ReInvite {
                dialog,
                sdp: body.map(|(_, b)| b).unwrap_or_default(),
            },
            Method::Ack => {
                return Err(DialogError::InvalidDialogState {
                    current: "confirmed",
                    expected: "an ACK is sent by the dialog layer itself",
                });
            }
            other => {
                let name = other.as_str().ok_or(DialogError::InvalidDialogState {
                    current: "confirmed",
                    expected: "a named method",
                })?;
                let (headers, body) = match body {
                    Some((content_type, b)) => (
                        vec![(
                            "Content-Type".to_owned(),
                            Bytes::copy_from_slice(content_type.as_bytes()),
                        )],
                        b,
                    ),
                    None => (Vec::new(), Bytes::new()),
                };
                DialogCommand::SendRequest {
                    dialog,
                    method: Bytes::from_static(name.as_bytes()),
                    headers,
                    body,
                }
            }
        };
        self.command(command).await
    }

    /// Answers a request the application was handed (REGISTER in event mode, in-dialog
    /// INFO/MESSAGE/…), with extra headers.
    pub async fn send_response(
        &self,
        transaction: &TransactionHandle,
        status: u16,
        headers: Vec<(String, Bytes)>,
    ) -> Result<(), DialogError> {
        self.send_response_with_body(transaction, status, headers, Bytes::new())
            .await
    }

    /// Like [`DialogManager::send_response`], with a body (its Content-Type among
    /// `headers`): the SDP answer to an UPDATE's offer (RFC 3311 §5.2), for instance.
    pub async fn send_response_with_body(
        &self,
        transaction: &TransactionHandle,
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
    ) -> Result<(), DialogError> {
        let command = DialogCommand::Respond {
            txn: transaction.txn,
            status,
            headers,
            body,
        };
        self.command_on(transaction.shard, command).await.map(drop)
    }

    /// Sends a REFER in a confirmed dialog (RFC 3515): the peer is asked to send a request
    /// to `refer_to` (`<sip:carol@example.com>`). Its NOTIFYs come back as
    /// [`SessionEvent::ReferNotify`](crate::shard::SessionEvent::ReferNotify), already
    /// answered; the REFER's own final status as `RequestResult`.
    pub async fn refer(&self, dialog: &DialogId, refer_to: &str) -> Result<(), DialogError> {
        self.command(DialogCommand::Refer {
            dialog: dialog.clone(),
            refer_to: Bytes::copy_from_slice(refer_to.as_bytes()),
        })
        .await
    }

    /// Reports, for a peer's REFER this application accepted with a 2xx, how the referenced
    /// request went: a NOTIFY with the `message/sipfrag` status line (RFC 3515 §2.4.4).
    /// `refer_cseq` is the REFER's CSeq number; a final `status` ends the subscription.
    pub async fn refer_status(
        &self,
        dialog: &DialogId,
        refer_cseq: u32,
        status: u16,
    ) -> Result<(), DialogError> {
        self.command(DialogCommand::ReferStatus {
            dialog: dialog.clone(),
            refer_cseq,
            status,
        })
        .await
    }

    /// Sends a NOTIFY for a subscription this side serves (RFC 6665; the shard writes
    /// `Event` and `Subscription-State`); [`NotifyState::Terminated`] ends it.
    ///
    /// [`NotifyState::Terminated`]: crate::shard::NotifyState::Terminated
    pub async fn notify(
        &self,
        dialog: &DialogId,
        event: Bytes,
        state: crate::shard::NotifyState,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
    ) -> Result<(), DialogError> {
        self.command(DialogCommand::Notify {
            dialog: dialog.clone(),
            event,
            state,
            headers,
            body,
        })
        .await
    }

    /// Ends a dialog in whatever state it is: CANCEL, 480, or BYE.
    pub async fn terminate_dialog(&self, dialog: &DialogId) -> Result<(), DialogError> {
        let dialog = dialog.clone();
        self.command(DialogCommand::Terminate { dialog }).await
    }

    /// Any command, routed by its dialog's Call-ID.
    pub async fn command(&self, command: DialogCommand) -> Result<(), DialogError> {
        let call_id = match &command {
            DialogCommand::Ringing { dialog }
            | DialogCommand::Answer { dialog, .. }
            | DialogCommand::Reject { dialog, .. }
            | DialogCommand::ReInvite { dialog, .. }
            | DialogCommand::Bye { dialog }
            | DialogCommand::SendRequest { dialog, .. }
            | DialogCommand::ReferStatus { dialog, .. }
            | DialogCommand::Refer { dialog, .. }
            | DialogCommand::Notify { dialog, .. }
            | DialogCommand::Unsubscribe {
                subscription: dialog,
            }
            | DialogCommand::Terminate { dialog } => dialog.call_id(),
            DialogCommand::Cancel { call } => call.call_id(),
            // These name no dialog: the caller must pick the shard.
            _ => {
                return Err(DialogError::SessionCoordinationFailed(
                    "the command names no dialog: send it to a shard by index".to_owned(),
                ));
            }
        };
        let shard = shard_for_call_id(call_id, self.shard_count().max(1));
        self.command_on(shard, command).await.map(drop)
    }

    /// Runs `command` on shard `shard`: for the commands that name no dialog (`Respond`
    /// to a request that shard handed out, with [`SessionCoordinationEvent::shard`]),
    /// and for any other whose shard the caller knows.
    pub async fn command_on_shard(
        &self,
        shard: usize,
        command: DialogCommand,
    ) -> Result<CommandOutcome, DialogError> {
        self.command_on(shard, command).await
    }

    async fn command_on(
        &self,
        shard: usize,
        command: DialogCommand,
    ) -> Result<CommandOutcome, DialogError> {
        let running = self.running()?;
        let handle = running
            .shards
            .get(shard)
            .ok_or_else(|| DialogError::SessionCoordinationFailed(format!("no shard {shard}")))?;
        let (reply, answer) = oneshot::channel();
        handle
            .try_send(Inbound::Command(Box::new(command), reply))
            .map_err(|e| match e {
                crossbeam_channel::TrySendError::Full(_) => DialogError::Overloaded,
                crossbeam_channel::TrySendError::Disconnected(_) => {
                    DialogError::SessionCoordinationFailed(format!(
                        "shard {shard}'s thread is gone"
                    ))
                }
            })?;
        answer.await.map_err(|_| {
            DialogError::SessionCoordinationFailed(format!("shard {shard} dropped its reply"))
        })?
    }

    /// Live dialogs over all shards (each shard publishes its count after every round).
    pub fn dialog_count(&self) -> usize {
        self.running.get().map_or(0, |r| {
            r.shards
                .iter()
                .map(|s| s.dialogs.load(Ordering::Relaxed))
                .sum()
        })
    }

    /// Counters of every shard, summed (asked of each shard; nothing shared on the hot
    /// path).
    pub async fn stats(&self) -> Result<DialogStats, DialogError> {
        let running = self.running()?;
        let mut pending = Vec::with_capacity(running.shards.len());
        for handle in running.shards.iter() {
            let (tx, rx) = oneshot::channel();
            handle
                .try_send(Inbound::Stats(tx))
                .map_err(|_| DialogError::Overloaded)?;
            pending.push(rx);
        }
        let mut reports = Vec::with_capacity(pending.len());
        for rx in pending {
            reports.push(rx.await.map_err(|_| {
                DialogError::SessionCoordinationFailed("a shard dropped its report".to_owned())
            })?);
        }
        let mut stats = DialogStats::from_reports(reports);
        stats.shared_store = self.shared_store_stats();
        Ok(stats)
    }

    pub(super) fn running(&self) -> Result<&Running, DialogError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(DialogError::NotRunning);
        }
        self.running.get().ok_or(DialogError::NotRunning)
    }
}

/// `sip:bob@10.0.0.1:5070` → 10.0.0.1:5070 (default port 5060). A host name is looked up
/// with the system resolver (A and AAAA records, `/etc/hosts`; it may block, so it runs
/// on tokio's blocking pool), taking the first address of the family we listen on
/// (`local`), else the first.
async fn destination_of(to: &str, local: Option<SocketAddr>) -> Result<SocketAddr, DialogError> {
    let bad = || DialogError::InvalidTarget(to.to_owned());
    let (name, port) = match ip_destination(to)? {
        Destination::Ip(address) => return Ok(address),
        Destination::Name(name, port) => (name, port),
    };
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map_err(|_| bad())?
        .collect();
    super::preferred(&addresses, local.is_none_or(|l| l.is_ipv4())).ok_or_else(bad)
}

/// Where a target URI points before any lookup.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    Ip(SocketAddr),
    /// A host name and the port (5060 when the URI has none).
    Name(String, u16),
}

/// The address in a sip: or sips: URI `to`, or the host name to look up.
fn ip_destination(to: &str) -> Result<Destination, DialogError> {
    let uri = bare_uri(to);
    let bad = || DialogError::InvalidTarget(to.to_owned());
    let parsed = Uri::parse(uri.as_bytes()).map_err(|_| bad())?;
    let sip = parsed.as_sip().ok_or_else(bad)?;
    let port = sip.port.unwrap_or(5060);
    match sip.host {
        Host::Domain(name) => {
            let name = std::str::from_utf8(name).map_err(|_| bad())?;
            // A fully qualified name may end in a dot; the resolver takes it either way.
            Ok(Destination::Name(name.to_owned(), port))
        }
        ref h => Ok(Destination::Ip(SocketAddr::new(
            h.ip().ok_or_else(bad)?,
            port,
        ))),
    }
}

/// The URI inside `<…>` if any, else the whole text.
fn bare_uri(value: &str) -> &str {
    match (value.find('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.trim(),
    }
}

/// A name-addr for From/To: a bare URI is put in angle brackets (so its parameters stay
/// the URI's).
fn angle(value: &str) -> Vec<u8> {
    if value.contains('<') {
        value.as_bytes().to_vec()
    } else {
        format!("<{}>", value.trim()).into_bytes()
    }
}

/// A shard answered a command with an outcome of another kind.
fn unexpected(command: &str, outcome: &CommandOutcome) -> DialogError {
    DialogError::SessionCoordinationFailed(format!("{command} was answered {outcome:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_addresses_or_names_to_look_up() {
        assert_eq!(
            ip_destination("sip:bob@127.0.0.1:5070").unwrap(),
            Destination::Ip("127.0.0.1:5070".parse().unwrap())
        );
        assert_eq!(
            ip_destination("\"Bob\" <sip:bob@[::1]>").unwrap(),
            Destination::Ip("[::1]:5060".parse().unwrap())
        );
        assert_eq!(
            ip_destination("sip:bob@Example.com;transport=tcp").unwrap(),
            Destination::Name("Example.com".to_owned(), 5060)
        );
        assert!(ip_destination("tel:+123").is_err());
        assert!(ip_destination("sip:bob@exa mple.com").is_err());
    }

    #[tokio::test]
    async fn a_host_name_is_looked_up_in_the_family_we_listen_on() {
        let v4: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let v6: SocketAddr = "[::1]:5060".parse().unwrap();
        // `localhost` is in /etc/hosts: no DNS server needed.
        let found = destination_of("sip:bob@localhost:5070", Some(v4))
            .await
            .unwrap();
        assert_eq!(found, "127.0.0.1:5070".parse().unwrap());
        if let Ok(found) = destination_of("sip:bob@localhost:5070", Some(v6)).await {
            // Hosts without an IPv6 localhost entry answer with IPv4 only.
            assert_eq!(found.port(), 5070);
        }
        assert!(matches!(
            destination_of("sip:bob@no-such-host.invalid", Some(v4)).await,
            Err(DialogError::InvalidTarget(_))
        ));
    }

    #[test]
    fn name_addrs_are_bracketed() {
        assert_eq!(angle("sip:a@b;x=1"), b"<sip:a@b;x=1>");
        assert_eq!(angle("\"A\" <sip:a@b>"), b"\"A\" <sip:a@b>");
    }
}
