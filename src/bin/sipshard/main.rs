//! `sipshard`: the sharded SIP server.
//!
//! `sipshard serve` runs on an embedded default config (loopback 5060, auto-answer, a
//! shard per core); `--config FILE` (TOML) and flags override it. SIGINT/SIGTERM stop it
//! gracefully: new calls get 503, calls still up get `stop.deadline_s`, then BYE.

mod config;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use sipshard::runtime::{
    AppMode, AutoAnswer, DialogManager, RuntimeConfig, SessionCoordinationEvent, StopPolicy,
};
use sipshard::shard::RegisterMode;
use tokio::sync::mpsc;

use config::{Config, Mode, StopWith};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sipshard",
    version,
    about = "A sharded SIP dialog server (RFC 3261)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Print the embedded default configuration (TOML).
    DefaultConfig,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (over the embedded default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, UDP and TCP (port 0: any free port; the chosen one is printed);
    /// `host:port` with a name is looked up (`localhost:5060`).
    #[arg(long, value_parser = sipshard::runtime::socket_addr)]
    listen: Option<SocketAddr>,
    /// Address put in Via and Contact when listening on a wildcard address.
    #[arg(long)]
    advertised: Option<SocketAddr>,
    /// Shard threads (0: one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// What to do with calls and registrations.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// When 18x responses go out reliably (RFC 3262 100rel/PRACK).
    #[arg(long, value_enum)]
    reliable_provisionals: Option<config::Reliable1xx>,
    /// Event packages to serve SUBSCRIBE for (RFC 6665), comma-separated: `presence,dialog`.
    #[arg(long, value_delimiter = ',')]
    event_packages: Option<Vec<String>>,
    /// Session timers (RFC 4028): off, accept (where the caller asks) or ask (every call).
    #[arg(long, value_enum)]
    session_timers: Option<config::TimerMode>,
    /// Session timers: the interval we grant at most and ask for (seconds).
    #[arg(long)]
    session_expires: Option<u32>,
    /// Session timers: the least interval we accept (seconds, at least 90).
    #[arg(long)]
    min_se: Option<u32>,
    /// auto-answer: wait before 180 Ringing (ms).
    #[arg(long)]
    ring_delay_ms: Option<u64>,
    /// auto-answer: wait between 180 and 200 (ms).
    #[arg(long)]
    answer_delay_ms: Option<u64>,
    /// auto-answer: answer with 200 only, no 180.
    #[arg(long)]
    no_ringing: bool,
    /// Seconds calls get to end on SIGINT/SIGTERM.
    #[arg(long)]
    stop_deadline_s: Option<u64>,
    /// What the stop does with calls still up at its deadline.
    #[arg(long, value_enum)]
    stop_policy: Option<StopWith>,
    /// Most dialogs per shard (over it, new INVITEs get 503).
    #[arg(long)]
    max_dialogs: Option<usize>,
    /// Under load, gather datagrams this long between rounds (µs; 0: wake per datagram).
    #[arg(long)]
    coalesce_us: Option<u64>,
    /// UDP only: no TCP listener, no TCP connections.
    #[arg(long)]
    no_tcp: bool,
    /// In registrar mode, a user who may register (`user:password`; repeat for more):
    /// REGISTERs must then authenticate (Digest).
    #[arg(long = "auth-user")]
    auth_users: Vec<String>,
    /// A domain the registrar serves (repeatable; default: the listen address, and
    /// `localhost` and this host's name when it is loopback or a wildcard).
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// A user who may change any address-of-record's bindings (repeatable).
    #[arg(long = "auth-admin")]
    auth_admins: Vec<String>,
    /// Requests per source address per window before a ban (0: no limit).
    #[arg(long)]
    requests_per_source: Option<u32>,
    /// Failed authentications per source address per window before a ban (0: no limit).
    #[arg(long)]
    auth_failures_per_source: Option<u32>,
    /// An address never limited nor banned (repeatable): an upstream proxy or SBC.
    #[arg(long = "exempt")]
    exempt: Vec<std::net::IpAddr>,
    /// Longest call in seconds: a call up this long is ended with BYE (0: no limit).
    #[arg(long)]
    max_call_s: Option<u64>,
    /// Most TCP connections per shard (0: from the descriptor limit).
    #[arg(long)]
    tcp_max_connections: Option<usize>,
    /// Most TCP connections one source address may hold per shard.
    #[arg(long)]
    tcp_max_per_source: Option<usize>,
    /// Seconds a peer's connection may go without completing a message.
    #[arg(long)]
    tcp_incomplete_s: Option<u64>,
    /// Requests over this many bytes go over TCP instead of UDP (RFC 3261 §18.1.1; 0: never).
    #[arg(long)]
    udp_max_request: Option<usize>,
    /// Persist confirmed dialogs in this directory and restore them at start (created
    /// when missing); without it they live in memory only.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// When persisted dialogs reach the disk: none, batch, or <N>ms.
    #[arg(long)]
    fsync: Option<String>,
    /// Probe each restored dialog with an in-dialog OPTIONS within this many seconds
    /// (0: no probes); 481 or no answer ends it (RFC 5057 §5.1).
    #[arg(long)]
    recovery_timeout_s: Option<u64>,
    /// Probes that may go unanswered before a restored dialog ends.
    #[arg(long)]
    max_recovery_attempts: Option<u32>,
    /// Write confirmed dialogs and bindings to this Redis too (`redis://HOST:PORT/`), for
    /// the nodes of a cluster.
    #[arg(long, value_name = "REDIS_URL")]
    cluster: Option<String>,
    /// This node's id in the cluster (default: its listen address).
    #[arg(long)]
    node_id: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", config::DEFAULT_TOML.trim_start());
            std::process::ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let config = match settle(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sipshard: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("sipshard: cannot start tokio: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipshard: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// The default, then the file, then the flags.
fn settle(args: ServeArgs) -> Result<Config, String> {
    let mut c = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if args.advertised.is_some() {
        c.advertised = args.advertised;
    }
    if let Some(v) = args.shards {
        c.shards = v;
    }
    if let Some(v) = args.mode {
        c.mode = v;
    }
    if args.metrics.is_some() {
        c.metrics = args.metrics;
    }
    if let Some(v) = args.reliable_provisionals {
        c.reliable_provisionals = v;
    }
    if let Some(v) = args.event_packages {
        c.event_packages = v;
    }
    if let Some(v) = args.session_timers {
        c.session_timers.mode = v;
    }
    if let Some(v) = args.session_expires {
        c.session_timers.session_expires = v;
    }
    if let Some(v) = args.min_se {
        c.session_timers.min_se = v;
    }
    if let Some(v) = args.ring_delay_ms {
        c.auto_answer.ring_delay_ms = v;
    }
    if let Some(v) = args.answer_delay_ms {
        c.auto_answer.answer_delay_ms = v;
    }
    if args.no_ringing {
        c.auto_answer.send_ringing = false;
    }
    if let Some(v) = args.stop_deadline_s {
        c.stop.deadline_s = v;
    }
    if let Some(v) = args.stop_policy {
        c.stop.policy = v;
    }
    if let Some(v) = args.max_dialogs {
        c.limits.max_dialogs = v;
    }
    if let Some(v) = args.coalesce_us {
        c.limits.coalesce_us = v;
    }
    if args.no_tcp {
        c.tcp = false;
    }
    if let Some(v) = args.udp_max_request {
        c.limits.udp_max_request = v;
    }
    c.registrar.users.extend(args.auth_users);
    c.registrar.domains.extend(args.domains);
    c.registrar.admins.extend(args.auth_admins);
    if let Some(v) = args.requests_per_source {
        c.security.requests_per_source = v;
    }
    if let Some(v) = args.auth_failures_per_source {
        c.security.auth_failures_per_source = v;
    }
    c.security.exempt.extend(args.exempt);
    if let Some(v) = args.max_call_s {
        c.limits.max_call_s = v;
    }
    if let Some(v) = args.tcp_max_connections {
        c.limits.tcp_max_connections = v;
    }
    if let Some(v) = args.tcp_max_per_source {
        c.limits.tcp_max_per_source = v;
    }
    if let Some(v) = args.tcp_incomplete_s {
        c.limits.tcp_incomplete_s = v;
    }
    if let Some(v) = args.state_dir {
        c.state.dir = v.to_string_lossy().into_owned();
    }
    if let Some(v) = args.fsync {
        c.state.fsync = v;
    }
    if let Some(v) = args.recovery_timeout_s {
        c.state.recovery_timeout_s = v;
    }
    if let Some(v) = args.max_recovery_attempts {
        c.state.max_recovery_attempts = v;
    }
    if let Some(v) = args.cluster {
        c.cluster.redis = v;
    }
    if let Some(v) = args.node_id {
        c.cluster.node_id = v;
    }
    if let Some(bad) = c.registrar.users.iter().find(|u| !u.contains(':')) {
        return Err(format!("--auth-user {bad:?}: expected user:password"));
    }
    Ok(c)
}

/// The auto-answer of the configuration, for the inline mode and the app mode alike.
fn auto_answer_config(c: &config::AutoAnswerConfig) -> AutoAnswer {
    AutoAnswer {
        ring_delay: Duration::from_millis(c.ring_delay_ms),
        answer_delay: Duration::from_millis(c.answer_delay_ms),
        send_ringing: c.send_ringing,
        sdp: Bytes::from(c.sdp.clone().into_bytes()),
        sdp_names: c.sdp_names(),
    }
}

fn runtime_config(c: &Config) -> Result<RuntimeConfig, String> {
    let mut r = RuntimeConfig::new(c.listen);
    r.shards = c.shards;
    r.advertised = c.advertised;
    r.socket_buffer = c.limits.socket_buffer;
    r.coalesce = Duration::from_micros(c.limits.coalesce_us);
    r.tcp = c.tcp;
    r.tcp_idle = Duration::from_secs(c.limits.tcp_idle_s.max(1));
    r.tcp_max_connections = c.limits.tcp_max_connections;
    r.tcp_max_per_source = c.limits.tcp_max_per_source;
    r.tcp_incomplete_after = Duration::from_secs(c.limits.tcp_incomplete_s.max(1));
    r.shard.stream_above = (c.limits.udp_max_request > 0).then_some(c.limits.udp_max_request);
    r.shard.max_dialogs = c.limits.max_dialogs;
    r.shard.server =
        (!c.server_header.is_empty()).then(|| Bytes::from(c.server_header.clone().into_bytes()));
    r.shard.retry_after = c.limits.retry_after;
    r.shard.reliable_provisionals = c.reliable_provisionals.into();
    r.shard.session_timers = c.session_timers.shard_setting();
    r.shard.subscriptions = (!c.event_packages.is_empty())
        .then(|| sipshard::shard::Subscriptions::new(c.event_packages.iter().cloned()));
    r.mode = match c.mode {
        // A registrar answers calls too, so a UA can register and then call (SIPp's
        // branchc does exactly that).
        Mode::AutoAnswer | Mode::Registrar => {
            AppMode::AutoAnswer(auto_answer_config(&c.auto_answer))
        }
        Mode::App => AppMode::Application,
    };
    r.shard.guard = c.security.guard();
    r.store = c.state.store()?;
    r.recovery = c.state.recovery();
    r.shared = c.cluster.shared(c.listen);
    r.shard.max_call_duration =
        (c.limits.max_call_s > 0).then(|| Duration::from_secs(c.limits.max_call_s));
    if c.mode == Mode::Registrar {
        r.shard.register = RegisterMode::Registrar(sipshard::registrar::RegistrarConfig {
            domains: served_domains(c),
            min_expires: c.registrar.min_expires,
            max_expires: c.registrar.max_expires,
            default_expires: c.registrar.default_expires,
        });
        if !c.registrar.users.is_empty() {
            let realm = if c.registrar.realm.is_empty() {
                c.advertised.unwrap_or(c.listen).ip().to_string()
            } else {
                c.registrar.realm.clone()
            };
            let users = c
                .registrar
                .users
                .iter()
                .filter_map(|u| u.split_once(':'))
                .map(|(user, password)| (user.to_owned(), password.to_owned()))
                .collect();
            // One authenticator, cloned into every shard: each accepts the others' nonces.
            let mut auth =
                sipshard::registrar::RegistrarAuth::new(realm, users, std::time::Instant::now())
                    .map_err(|e| format!("no randomness for the registrar's nonces: {e}"))?;
            auth.admins = c.registrar.admins.clone();
            auth.allow_without_qop = c.registrar.allow_without_qop;
            auth.algorithms = c
                .registrar
                .algorithms
                .iter()
                .map(|a| match a.to_ascii_uppercase().as_str() {
                    "MD5" => Ok(sipshard::message::DigestAlgorithm::Md5),
                    "SHA-256" => Ok(sipshard::message::DigestAlgorithm::Sha256),
                    other => Err(format!(
                        "[registrar] algorithms: {other:?} is not MD5 or SHA-256"
                    )),
                })
                .collect::<Result<_, _>>()?;
            if auth.algorithms.is_empty() {
                return Err("[registrar] algorithms: none listed".to_owned());
            }
            r.shard.registrar_auth = Some(auth);
        }
    }
    Ok(r)
}

/// The registrar's domains: the configured ones, else the listen (or advertised) address,
/// with `localhost` and this host's name when that is loopback or a wildcard, and every
/// interface address for a wildcard.
fn served_domains(c: &Config) -> Vec<String> {
    if !c.registrar.domains.is_empty() {
        return c.registrar.domains.clone();
    }
    let mut out = Vec::new();
    for ip in [Some(c.listen.ip()), c.advertised.map(|a| a.ip())]
        .into_iter()
        .flatten()
    {
        if ip.is_unspecified() {
            if let Ok(interfaces) = nix::ifaddrs::getifaddrs() {
                for i in interfaces {
                    let address = i.address.as_ref();
                    if let Some(v4) = address.and_then(|a| a.as_sockaddr_in()) {
                        out.push(v4.ip().to_string());
                    } else if let Some(v6) = address.and_then(|a| a.as_sockaddr_in6()) {
                        out.push(format!("[{}]", v6.ip()));
                    }
                }
            }
        } else if ip.is_ipv6() {
            out.push(format!("[{ip}]"));
        } else {
            out.push(ip.to_string());
        }
        if ip.is_loopback() || ip.is_unspecified() {
            out.push("localhost".to_owned());
            if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                out.push(name.trim().to_owned());
            }
        }
    }
    if !c.registrar.realm.is_empty() {
        out.push(c.registrar.realm.clone());
    }
    out.retain(|d| !d.is_empty());
    out.sort();
    out.dedup();
    out
}

async fn serve(c: Config) -> Result<(), String> {
    let manager = Arc::new(DialogManager::new(runtime_config(&c)?));
    let mut app_events = None;
    let mut depth: Option<metrics::ChannelDepth> = None;
    if c.mode == Mode::App {
        let (tx, rx) = mpsc::channel(c.limits.event_channel.max(1));
        let probe = tx.clone();
        depth = Some(Arc::new(move || probe.max_capacity() - probe.capacity()));
        manager.set_session_coordinator(tx);
        app_events = Some(rx);
    }
    manager.start().await.map_err(|e| e.to_string())?;
    let local = manager
        .local_addr()
        .ok_or_else(|| "manager did not start".to_owned())?;
    // Scripts and tests read this line to learn the port.
    let tcp = if manager.tcp_listening() {
        format!(" tcp:{local}")
    } else {
        String::new()
    };
    println!(
        "sipshard listening on udp:{local}{tcp} shards={} mode={:?}",
        manager.shard_count(),
        c.mode
    );
    if let Some(addr) = c.metrics {
        let listener = metrics::bind(addr)
            .await
            .map_err(|e| format!("metrics {addr}: {e}"))?;
        if let Ok(bound) = listener.local_addr() {
            println!("sipshard metrics on http://{bound}/metrics");
        }
        tokio::spawn(metrics::serve(listener, manager.clone(), depth));
    }
    if let Some(rx) = app_events {
        tokio::spawn(application(
            manager.clone(),
            rx,
            auto_answer_config(&c.auto_answer),
        ));
    }
    wait_for_signal().await;
    tracing::info!(deadline_s = c.stop.deadline_s, "stopping");
    let policy = match c.stop.policy {
        StopWith::Bye => StopPolicy::Bye,
        StopWith::Wait => StopPolicy::Wait,
    };
    let stats = manager
        .stop(policy, c.stop_deadline())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        dialogs_created = stats.total.dialogs_created,
        datagrams_in = stats.io.datagrams_received,
        datagrams_out = stats.io.datagrams_sent,
        abandoned = stats.io.dialogs_abandoned,
        "stopped"
    );
    Ok(())
}

/// The `app` mode's application: the auto-answer policy (`sipshard::auto_answer`, the one
/// the inline mode runs) over the async API (the path an embedding B2BUA takes), its
/// delays as tasks; other events are logged at debug level.
async fn application(
    manager: Arc<DialogManager>,
    mut events: mpsc::Receiver<Vec<SessionCoordinationEvent>>,
    config: AutoAnswer,
) {
    let ip = manager
        .local_addr()
        .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |a| a.ip());
    let policy = sipshard::auto_answer::AutoAnswerPolicy::new(config, ip);
    while let Some(batch) = events.recv().await {
        for e in batch {
            let Some(plan) = policy.react(&e.event) else {
                tracing::debug!(event = ?e.event, "session event");
                continue;
            };
            // The steps due now, in order (one may need the one before it); the later
            // ones on tasks of their own.
            let mut now = Vec::new();
            plan.run(
                |command| {
                    now.push(command);
                    true
                },
                |after, command| {
                    let manager = manager.clone();
                    let shard = e.shard;
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        if let Err(err) = manager.command_on_shard(shard, command).await {
                            tracing::debug!(%err, "delayed auto-answer step failed");
                        }
                    });
                },
            );
            for command in now {
                if let Err(err) = manager.command_on_shard(e.shard, command).await {
                    tracing::debug!(%err, "auto-answer step failed");
                    break;
                }
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // No signal handling: run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
