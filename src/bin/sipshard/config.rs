//! The server's settings: an embedded default, an optional TOML file over it, command-line
//! flags over both.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// What the server does with calls and registrations.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Answer every INVITE (180 then 200), accept BYE: the benchmark target.
    #[default]
    AutoAnswer,
    /// A registrar: REGISTER bindings (§10.3); INVITEs are answered as in auto-answer,
    /// so a UA can register and then call.
    Registrar,
    /// Session events go to an application loop over the async API (this binary's own
    /// loop answers calls through `DialogManager`, showing the channel path).
    App,
}

/// Session timers (RFC 4028).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TimerMode {
    /// No `timer` support: Session-Expires is ignored, `Require: timer` gets 420.
    Off,
    /// A timer runs where the caller (or a proxy) asks for one.
    #[default]
    Accept,
    /// A timer runs on every call: asked for in our 2xx when the INVITE had none.
    Ask,
}

/// Who refreshes when a caller that supports timers leaves the choice to us.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RefresherChoice {
    /// The caller.
    #[default]
    Uac,
    /// We do.
    Uas,
}

/// What a stop does with calls still up when its deadline passes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StopWith {
    /// End them with BYE (CANCEL, 480 for unanswered ones).
    #[default]
    Bye,
    /// Leave them.
    Wait,
}

/// When our 18x go out reliably (RFC 3262: `Require: 100rel`, `RSeq`, PRACK).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Reliable1xx {
    /// Never: an INVITE requiring 100rel gets 420.
    Never,
    /// When the INVITE requires it.
    #[default]
    WhenRequired,
    /// Whenever the caller supports it.
    WhenSupported,
}

impl From<Reliable1xx> for sipshard::shard::ReliableProvisionals {
    fn from(v: Reliable1xx) -> Self {
        match v {
            Reliable1xx::Never => Self::Never,
            Reliable1xx::WhenRequired => Self::WhenRequired,
            Reliable1xx::WhenSupported => Self::WhenSupported,
        }
    }
}

/// The whole file; every key is optional.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP, and TCP on the same port when `tcp` is on.
    pub listen: SocketAddr,
    /// Listen and send on TCP too (RFC 3261 §18).
    pub tcp: bool,
    /// Address for Via/Contact when `listen` is a wildcard.
    pub advertised: Option<SocketAddr>,
    /// 0: one per core.
    pub shards: usize,
    pub mode: Mode,
    /// Reliable provisional responses (RFC 3262).
    pub reliable_provisionals: Reliable1xx,
    /// Prometheus endpoint (`/metrics`), off when absent.
    pub metrics: Option<SocketAddr>,
    /// Event packages whose SUBSCRIBEs are served (RFC 6665); empty: SUBSCRIBE gets 405.
    /// In auto-answer mode each is accepted with a NOTIFY that carries no state.
    pub event_packages: Vec<String>,
    /// A `Server` header on every response; empty (the default): none.
    pub server_header: String,
    pub auto_answer: AutoAnswerConfig,
    pub session_timers: SessionTimersSection,
    pub registrar: RegistrarSection,
    pub limits: Limits,
    pub security: SecuritySection,
    pub stop: StopSection,
    pub state: StateSection,
    pub cluster: ClusterSection,
}

/// The shared store of a cluster's nodes (`sipshard::runtime::SharedStoreConfig`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// The Redis URL (`redis://127.0.0.1:6379/`); empty (the default): not clustered.
    pub redis: String,
    /// This node's id, unique in the cluster; empty: the listen address.
    pub node_id: String,
    /// Seconds a call without a session timer is kept in Redis after its last write.
    pub dialog_ttl_s: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            redis: String::new(),
            node_id: String::new(),
            dialog_ttl_s: 43_200,
        }
    }
}

impl ClusterSection {
    /// The runtime's shared store setting (`None` without a Redis URL); `listen` names
    /// the node when no id is given.
    pub fn shared(&self, listen: SocketAddr) -> Option<sipshard::runtime::SharedStoreConfig> {
        if self.redis.is_empty() {
            return None;
        }
        let node_id = match self.node_id.as_str() {
            "" => listen.to_string(),
            id => id.to_owned(),
        };
        let mut config = sipshard::runtime::SharedStoreConfig::new(self.redis.clone(), node_id);
        config.dialog_ttl = Duration::from_secs(self.dialog_ttl_s.max(1));
        Some(config)
    }
}

/// Where confirmed dialogs are persisted (`sipshard::runtime::StoreConfig`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StateSection {
    /// The state directory; empty (the default): dialogs live in memory only.
    pub dir: String,
    /// When writes reach the disk: `none` (the kernel has them: they survive the process
    /// being killed), `<N>ms` (fsync at most that often), `batch` (fsync each round).
    pub fsync: String,
    /// Probe each restored dialog with an in-dialog OPTIONS within this many seconds of
    /// the restart (0, the default: no probes; SIPp's scenarios, say, do not expect one).
    pub recovery_timeout_s: u64,
    /// Probes that may go unanswered before a restored dialog ends (481 ends it at once).
    pub max_recovery_attempts: u32,
}

impl StateSection {
    /// The runtime's recovery setting.
    pub fn recovery(&self) -> sipshard::runtime::RecoveryConfig {
        sipshard::runtime::RecoveryConfig {
            enable_state_persistence: !self.dir.is_empty(),
            recovery_timeout: Duration::from_secs(self.recovery_timeout_s),
            max_recovery_attempts: self.max_recovery_attempts,
        }
    }

    /// The runtime's store setting (`None` without a directory).
    pub fn store(&self) -> Result<Option<sipshard::runtime::StoreConfig>, String> {
        if self.dir.is_empty() {
            return Ok(None);
        }
        let fsync = match self.fsync.as_str() {
            "" => sipshard::runtime::FsyncPolicy::Never,
            other => other.parse()?,
        };
        Ok(Some(sipshard::runtime::StoreConfig {
            dir: self.dir.clone().into(),
            fsync,
        }))
    }
}

/// Limits on hostile sources (`sipshard::guard`), per shard.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    /// Requests per source address per window before a ban; 0: no limit (the default:
    /// behind an SBC every request comes from one address).
    pub requests_per_source: u32,
    /// Failed authentications per source address per window before a ban; 0: none.
    pub auth_failures_per_source: u32,
    /// Failed authentications per user per window before the user is locked; 0: none.
    pub auth_failures_per_user: u32,
    /// The counting window (seconds).
    pub window_s: u64,
    /// How long a ban or a lock lasts (seconds).
    pub ban_s: u64,
    /// Addresses never limited nor banned.
    pub exempt: Vec<std::net::IpAddr>,
}

impl SecuritySection {
    /// The shards' guard settings.
    pub fn guard(&self) -> sipshard::guard::GuardConfig {
        sipshard::guard::GuardConfig {
            requests_per_source: self.requests_per_source,
            auth_failures_per_source: self.auth_failures_per_source,
            auth_failures_per_user: self.auth_failures_per_user,
            window: Duration::from_secs(self.window_s.max(1)),
            ban: Duration::from_secs(self.ban_s),
            exempt: self.exempt.clone(),
            ..sipshard::guard::GuardConfig::default()
        }
    }
}

impl Default for SecuritySection {
    fn default() -> Self {
        let d = sipshard::guard::GuardConfig::default();
        SecuritySection {
            requests_per_source: d.requests_per_source,
            auth_failures_per_source: d.auth_failures_per_source,
            auth_failures_per_user: d.auth_failures_per_user,
            window_s: d.window.as_secs(),
            ban_s: d.ban.as_secs(),
            exempt: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AutoAnswerConfig {
    pub ring_delay_ms: u64,
    pub answer_delay_ms: u64,
    pub send_ringing: bool,
    /// SDP of the 200 (empty: an answer to the INVITE's offer, or an offer when it had
    /// none, RFC 3264).
    pub sdp: String,
    /// The `o=` user name of the SDP built when `sdp` is empty.
    pub sdp_origin_user: String,
    /// The `s=` line of that SDP (`-`: none).
    pub sdp_session_name: String,
}

impl AutoAnswerConfig {
    /// The names of the SDP we build.
    pub fn sdp_names(&self) -> sipshard::sdp::SdpNames {
        sipshard::sdp::SdpNames {
            origin_user: self.sdp_origin_user.clone(),
            session_name: self.sdp_session_name.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionTimersSection {
    pub mode: TimerMode,
    /// The most we grant and what we ask for (seconds).
    pub session_expires: u32,
    /// The least we accept (seconds, at least 90): a smaller ask gets 422.
    pub min_se: u32,
    pub refresher: RefresherChoice,
}

impl SessionTimersSection {
    /// The shard's setting (`None` when off).
    pub fn shard_setting(&self) -> Option<sipshard::shard::SessionTimers> {
        let refresher = match self.refresher {
            RefresherChoice::Uac => sipshard::shard::Refresher::Uac,
            RefresherChoice::Uas => sipshard::shard::Refresher::Uas,
        };
        let ask = match self.mode {
            TimerMode::Off => return None,
            TimerMode::Accept => false,
            TimerMode::Ask => true,
        };
        Some(
            sipshard::shard::SessionTimers {
                session_expires: self.session_expires,
                min_se: self.min_se,
                ask,
                refresher,
            }
            .normalized(),
        )
    }
}

impl Default for SessionTimersSection {
    fn default() -> Self {
        let d = sipshard::shard::SessionTimers::default();
        SessionTimersSection {
            mode: TimerMode::Accept,
            session_expires: d.session_expires,
            min_se: d.min_se,
            refresher: RefresherChoice::Uac,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarSection {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    /// `user:password` entries; when any, REGISTERs must authenticate (Digest, RFC 3261
    /// §22.4) in `realm`.
    pub users: Vec<String>,
    /// The realm of the challenges; empty: the listen address's host.
    pub realm: String,
    /// The domains served (404 for others); empty: the listen address and its names.
    pub domains: Vec<String>,
    /// Users who may change any address-of-record's bindings (others: only their own).
    pub admins: Vec<String>,
    /// Accept Digest answers without qop (RFC 2069 clients; replayable).
    pub allow_without_qop: bool,
    /// The Digest algorithms challenged with, in order: `MD5`, `SHA-256`.
    pub algorithms: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Per shard.
    pub max_dialogs: usize,
    /// Retry-After on a 503 (seconds).
    pub retry_after: u32,
    /// Event batches the application channel holds (app mode).
    pub event_channel: usize,
    /// Kernel socket buffer per socket and direction (bytes).
    pub socket_buffer: usize,
    /// Under load, gather datagrams this long between rounds (µs; 0: wake per datagram).
    pub coalesce_us: u64,
    /// Seconds without traffic after which a TCP connection is closed.
    pub tcp_idle_s: u64,
    /// Most TCP connections per shard; more are refused at accept.
    /// 0: three quarters of the descriptor limit, shared by the shards.
    pub tcp_max_connections: usize,
    /// Most TCP connections one source address may hold per shard.
    pub tcp_max_per_source: usize,
    /// Seconds a connection a peer opened may go without completing a message.
    pub tcp_incomplete_s: u64,
    /// A request over this many bytes that would go over UDP goes over TCP (RFC 3261
    /// §18.1.1, 1300 for a path MTU not known); 0: never.
    pub udp_max_request: usize,
    /// Longest call (seconds): a call still up then is ended with BYE, so a dialog
    /// nobody ends cannot hold its slot forever; 0: no limit.
    pub max_call_s: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StopSection {
    /// Seconds calls get to end after SIGINT/SIGTERM.
    pub deadline_s: u64,
    pub policy: StopWith,
}

/// The embedded default: a loopback auto-answer server on 5060.
pub const DEFAULT_TOML: &str = r#"
listen = "127.0.0.1:5060"
tcp = true
shards = 0
mode = "auto-answer"
reliable_provisionals = "when-required"
event_packages = []
server_header = ""

[auto_answer]
ring_delay_ms = 0
answer_delay_ms = 0
send_ringing = true
sdp = ""
sdp_origin_user = "anonymous"
sdp_session_name = "-"

[session_timers]
mode = "accept"
session_expires = 1800
min_se = 90
refresher = "uac"

[registrar]
min_expires = 60
max_expires = 7200
default_expires = 3600
users = []
realm = ""
domains = []
admins = []
allow_without_qop = false
algorithms = ["MD5"]

[limits]
max_dialogs = 1000000
retry_after = 5
event_channel = 1024
socket_buffer = 8388608
coalesce_us = 0
tcp_idle_s = 300
tcp_max_connections = 0
tcp_max_per_source = 64
tcp_incomplete_s = 10
udp_max_request = 1300
max_call_s = 7200

[security]
requests_per_source = 0
auth_failures_per_source = 10
auth_failures_per_user = 30
window_s = 60
ban_s = 600
exempt = []

[stop]
deadline_s = 5
policy = "bye"

[state]
dir = ""
fsync = "none"
recovery_timeout_s = 0
max_recovery_attempts = 3

[cluster]
redis = ""
node_id = ""
dialog_ttl_s = 43200
"#;

impl Default for Config {
    /// The same as [`DEFAULT_TOML`] (a test holds them equal).
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            tcp: true,
            advertised: None,
            shards: 0,
            mode: Mode::AutoAnswer,
            reliable_provisionals: Reliable1xx::WhenRequired,
            metrics: None,
            event_packages: Vec::new(),
            server_header: String::new(),
            auto_answer: AutoAnswerConfig::default(),
            session_timers: SessionTimersSection::default(),
            registrar: RegistrarSection::default(),
            limits: Limits::default(),
            security: SecuritySection::default(),
            stop: StopSection::default(),
            state: StateSection {
                dir: String::new(),
                fsync: "none".into(),
                recovery_timeout_s: 0,
                max_recovery_attempts: 3,
            },
            cluster: ClusterSection::default(),
        }
    }
}

impl Default for AutoAnswerConfig {
    fn default() -> Self {
        AutoAnswerConfig {
            ring_delay_ms: 0,
            answer_delay_ms: 0,
            send_ringing: true,
            sdp: String::new(),
            sdp_origin_user: "anonymous".to_owned(),
            sdp_session_name: "-".to_owned(),
        }
    }
}

impl Default for RegistrarSection {
    fn default() -> Self {
        let d = sipshard::registrar::RegistrarConfig::default();
        RegistrarSection {
            min_expires: d.min_expires,
            max_expires: d.max_expires,
            default_expires: d.default_expires,
            users: Vec::new(),
            realm: String::new(),
            domains: Vec::new(),
            admins: Vec::new(),
            allow_without_qop: false,
            algorithms: vec!["MD5".to_owned()],
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_dialogs: 1_000_000,
            retry_after: 5,
            event_channel: 1024,
            socket_buffer: 8 << 20,
            coalesce_us: 0,
            tcp_idle_s: 300,
            tcp_max_connections: 0,
            tcp_max_per_source: 64,
            tcp_incomplete_s: 10,
            udp_max_request: 1300,
            max_call_s: 7200,
        }
    }
}

impl Default for StopSection {
    fn default() -> Self {
        StopSection {
            deadline_s: 5,
            policy: StopWith::Bye,
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn stop_deadline(&self) -> Duration {
        Duration::from_secs(self.stop.deadline_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.mode, Mode::AutoAnswer);
        assert_eq!(c.listen, "127.0.0.1:5060".parse().unwrap());
        assert!(c.auto_answer.send_ringing);
    }

    #[test]
    fn partial_files_keep_defaults_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str("mode = \"registrar\"\n[stop]\npolicy = \"wait\"").unwrap();
        assert_eq!(c.mode, Mode::Registrar);
        assert_eq!(c.stop.policy, StopWith::Wait);
        assert_eq!(c.stop.deadline_s, 5);
        assert!(toml::from_str::<Config>("lisen = \"1.2.3.4:5\"").is_err());
    }
}
