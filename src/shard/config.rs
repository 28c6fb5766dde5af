//! A shard's settings ([`ShardConfig`]) and the modes they choose between.
//!
//! # What it owns, what it may not touch
//! Plain data and its defaults; no behaviour of the shard.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::{Credentials, SessionTimers, Subscriptions};
use crate::transaction::TimerConfig;

/// Settings of one shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Our address: Via sent-by and Contact.
    pub local_addr: SocketAddr,
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Most dialogs this shard keeps; a new INVITE over it gets 503.
    pub max_dialogs: usize,
    /// Most live transactions; a new INVITE over it gets 503 (and MakeCall `Overloaded`).
    pub max_transactions: usize,
    /// Retry-After (seconds) on a 503 for overload.
    pub retry_after: u32,
    /// What REGISTER requests get.
    pub register: RegisterMode,
    /// How long a call may stay unanswered: an incoming one is then refused with 480 (so
    /// an application that never answers cannot hold transactions forever), and ours is
    /// cancelled (so a callee that rings and never answers, or whose answer never comes,
    /// cannot hold it either: RFC 3261 gives a UAC's INVITE in Proceeding no timer of its
    /// own, §17.1.1.2). 180 s by default, Timer C's value (§16.6).
    pub ring_timeout: Duration,
    /// When this shard is one of several sharing Call-IDs by hash: the Call-IDs it makes
    /// for MakeCall hash to itself (see [`shard_for_call_id`](super::shard_for_call_id)), so the runtime routes every
    /// message of its calls back here.
    pub owner: Option<ShardOwner>,
    /// When our provisional responses to an INVITE are sent reliably (RFC 3262).
    pub reliable_provisionals: ReliableProvisionals,
    /// The event packages served as notifier (RFC 6665, `notifier` module); `None`:
    /// SUBSCRIBE gets 405.
    pub subscriptions: Option<Subscriptions>,
    /// Session timers (RFC 4028, `session_timer` module); `None`: no `timer` support (an
    /// INVITE that requires it gets 420, and Session-Expires is ignored).
    pub session_timers: Option<SessionTimers>,
    /// The runtime can send over TCP: requests to `;transport=tcp` URIs are sent, not
    /// refused with [`DialogError::UnsupportedTransport`](super::DialogError::UnsupportedTransport). (Messages that arrive over TCP are
    /// answered over it either way.)
    pub tcp: bool,
    /// With `tcp`: a request larger than this many bytes that would go over UDP goes over
    /// TCP (RFC 3261 §18.1.1; 1300 by default, for a path MTU not known), back to UDP if
    /// no connection can be made. `None`: requests keep their transport.
    pub stream_above: Option<usize>,
    /// What a 401 or 407 to our INVITE or to our request outside a dialog is answered with
    /// (Digest, RFC 3261 §22.2; `auth` module): the first entry for the challenge's realm,
    /// or with no realm. Empty (the default): the 401 or 407 is the result.
    pub credentials: Vec<Credentials>,
    /// In [`RegisterMode::Registrar`]: REGISTERs must carry valid Digest credentials for
    /// its realm, else get 401 with a challenge (RFC 3261 §10.3 step 3, §22.4). Give every
    /// shard a clone of one, so that each accepts the others' nonces. `None` (the
    /// default): no authentication.
    pub registrar_auth: Option<crate::registrar::RegistrarAuth>,
    /// A `Server` header for every response we send (RFC 3261 §20.35). `None` (the
    /// default): none, so a scanner learns nothing of the software. (`User-Agent` on our
    /// requests is the application's: a header of `MakeCall` or `SendStandalone`.)
    pub server: Option<Bytes>,
    /// Limits on hostile sources: requests per source, failed authentications per source
    /// and per user, bans ([`crate::guard`]).
    pub guard: crate::guard::GuardConfig,
    /// Longest call: a call confirmed this long ago is ended with BYE
    /// ([`TerminationReason::MaxDuration`](super::TerminationReason::MaxDuration)), so a dialog nobody ends (no BYE, no session
    /// timer) cannot hold its slot forever. `None` (the library's default): no limit; the
    /// server's default is 2 hours.
    pub max_call_duration: Option<Duration>,
    /// Hand out a record of every confirmed dialog for a store ([`Shard::poll_persist`],
    /// [`Shard::restore`]; off by default).
    ///
    /// [`Shard::poll_persist`]: super::Shard::poll_persist
    /// [`Shard::restore`]: super::Shard::restore
    pub persist: bool,
    /// Probe each restored dialog with an in-dialog OPTIONS (`None`, the default: no
    /// probes; [`RecoveryProbes`](super::RecoveryProbes)).
    pub recovery_probes: Option<super::RecoveryProbes>,
    /// An in-dialog request for a dialog this shard does not hold waits for a claim of
    /// its record ([`Shard::poll_claim`](super::Shard::poll_claim)) instead of its 481:
    /// the dialog may be a dead peer's (a cluster node; off by default).
    pub takeover: bool,
}

/// When the UAS sends its 18x reliably (RFC 3262: `Require: 100rel`, `RSeq`, retransmitted
/// until the caller's PRACK).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReliableProvisionals {
    /// Never: an INVITE that requires 100rel gets 420.
    Never,
    /// When the INVITE requires it (`Require: 100rel`).
    #[default]
    WhenRequired,
    /// Whenever the caller supports it (`Supported: 100rel` or `Require: 100rel`).
    WhenSupported,
}

/// This shard's place among `count` shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardOwner {
    /// Its index.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
}

/// Whether the shard takes new calls.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Admission {
    /// New INVITEs become IncomingCall events.
    #[default]
    Open,
    /// The application is behind on events: new INVITEs get 503 + Retry-After.
    Backpressure,
    /// Stopping: new INVITEs get 503 + Retry-After, MakeCall is refused.
    Stopping,
}

/// How a shard handles REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterMode {
    /// 405 Method Not Allowed: this UA is no registrar.
    Refuse,
    /// The shard is a registrar with its own binding table (§10.3).
    Registrar(crate::registrar::RegistrarConfig),
    /// Each REGISTER becomes a [`SessionEvent::RegistrationRequest`](super::SessionEvent::RegistrationRequest); the application
    /// answers with [`DialogCommand::Respond`](super::DialogCommand::Respond).
    Event,
}

impl ShardConfig {
    /// Defaults for a shard at `local_addr`: RFC timers, 1,000,000 dialogs, Retry-After 5.
    pub fn new(local_addr: SocketAddr) -> Self {
        ShardConfig {
            local_addr,
            timers: TimerConfig::default(),
            max_dialogs: 1_000_000,
            max_transactions: 2_000_000,
            retry_after: 5,
            register: RegisterMode::Refuse,
            ring_timeout: Duration::from_secs(180),
            owner: None,
            reliable_provisionals: ReliableProvisionals::default(),
            subscriptions: None,
            session_timers: None,
            tcp: true,
            stream_above: Some(1300),
            credentials: Vec::new(),
            registrar_auth: None,
            server: None,
            guard: crate::guard::GuardConfig::default(),
            max_call_duration: None,
            persist: false,
            recovery_probes: None,
            takeover: false,
        }
    }
}
