//! `sipshard-load`: a SIP load generator built on sipshard's shards.
//!
//! `sipshard-load uac --target 127.0.0.1:5060 --rate 10000 --calls 300000 --hold 0ms
//!  --json out.json --report out.html` places calls; `sipshard-load uas --listen …`
//! answers them; `sipshard-load compare a.json b.json` prints two runs side by side.
//! The scenario code runs on the shard threads themselves (`AppMode::Inline`), so the
//! generator costs about what the server costs per call.

mod report;
mod stats;
mod uac;
mod uas;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use sipshard::runtime::{AppMode, DialogManager, InlineApp, RuntimeConfig, StopPolicy};

use stats::Interval;
use uac::Report;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sipshard-load",
    version,
    about = "SIP load generator on sipshard's shards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Place calls or requests (--scenario basic|register|options|cancel|reinvite|subscribe).
    Uac(Box<UacArgs>),
    /// Answer calls.
    Uas(Box<UasArgs>),
    /// Print two JSON results side by side.
    Compare { a: PathBuf, b: PathBuf },
}

#[derive(clap::Args)]
struct Common {
    /// Generator shards (threads).
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the INVITE→200 percentile distribution (.hgrm) here.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Exit non-zero when failed/attempted exceeds this ratio.
    #[arg(long, default_value_t = 0.0)]
    max_failed: f64,
}

#[derive(clap::Args)]
struct UacArgs {
    /// Where to send the calls (`host:port`; a name is looked up).
    #[arg(long, value_parser = sipshard::runtime::socket_addr)]
    target: SocketAddr,
    /// What each attempt does.
    #[arg(long, value_enum, default_value = "basic")]
    scenario: uac::Scenario,
    /// Attempts (calls, REGISTERs, OPTIONS) per second at full rate.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Calls to place.
    #[arg(long)]
    calls: Option<u64>,
    /// Or: place calls for this long (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Ramp up linearly over this long.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    ramp: Duration,
    /// Most calls up at once.
    #[arg(long, default_value_t = 100_000)]
    max_concurrent: usize,
    /// Hold time between answer (or the re-INVITE's 200) and BYE.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    hold: Duration,
    /// Cancel scenario: time from the INVITE to the CANCEL (sent once the peer has sent a
    /// provisional response, §9.1).
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    cancel_after: Duration,
    /// Local address.
    #[arg(long, default_value = "127.0.0.1:0")]
    local: SocketAddr,
    /// Over what: UDP, or TCP (a connection per shard thread, opened by the first
    /// request and reused by every call after it).
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    #[command(flatten)]
    common: Common,
}

/// `--transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
}

impl TransportArg {
    /// The Request-URI parameter that makes the dialog layer use it.
    fn uri_param(self) -> &'static str {
        match self {
            TransportArg::Udp => "",
            TransportArg::Tcp => ";transport=tcp",
        }
    }
}

#[derive(clap::Args)]
struct UasArgs {
    /// Where to listen (`host:port`; a name is looked up).
    #[arg(long, default_value = "127.0.0.1:5060", value_parser = sipshard::runtime::socket_addr)]
    listen: SocketAddr,
    /// Time between 180 and 200.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    ring: Duration,
    /// Share of calls answered; the rest get --failure-codes in turn.
    #[arg(long, default_value_t = 1.0)]
    answer_ratio: f64,
    #[arg(long, value_delimiter = ',', default_value = "486")]
    failure_codes: Vec<u16>,
    /// Keep REGISTER bindings (a registrar) instead of refusing REGISTER with 405.
    #[arg(long)]
    registrar: bool,
    /// Stop after this many calls ended.
    #[arg(long)]
    calls: Option<u64>,
    /// Or after this long.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    common: Common,
}

/// `250ms`, `30s`, `2m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = number.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Compare { a, b } => compare(&a, &b),
        Command::Uac(args) => run_uac(*args),
        Command::Uas(args) => run_uas(*args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sipshard-load: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

type Outcome = Result<std::process::ExitCode, Box<dyn std::error::Error>>;

fn compare(a: &PathBuf, b: &PathBuf) -> Outcome {
    let read = |p: &PathBuf| -> Result<stats::RunResult, Box<dyn std::error::Error>> {
        Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?)
    };
    print!("{}", report::compare(&read(a)?, &read(b)?));
    Ok(std::process::ExitCode::SUCCESS)
}

fn run_uac(args: UacArgs) -> Outcome {
    let shards = args.common.shards.max(1);
    let calls = match (args.calls, args.duration) {
        (None, None) => return Err("give --calls or --duration".into()),
        (c, _) => c.unwrap_or(u64::MAX),
    };
    let (tx, rx) = mpsc::channel();
    let start = Instant::now() + Duration::from_millis(200);
    let to = format!("<sip:load@{}>", args.target);
    let plan = uac::UacPlan {
        scenario: args.scenario,
        cancel_after: args.cancel_after,
        shard: 0,
        rate: args.rate / shards as f64,
        calls: 0,
        duration: args.duration,
        ramp: args.ramp,
        max_concurrent: args.max_concurrent.div_ceil(shards),
        hold: args.hold,
        destination: args.target,
        from: Bytes::from(format!("<sip:sipshard-load@{}>", args.local.ip())),
        to: Bytes::from(to),
        request_uri: Bytes::from(format!(
            "sip:load@{}{}",
            args.target,
            args.transport.uri_param()
        )),
        sdp: Bytes::from_static(
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
        ),
        start,
    };
    let factory = move |index: usize, count: usize| -> Box<dyn sipshard::runtime::ShardApp> {
        let mut p = plan.clone();
        p.shard = index;
        // Shard i places calls i, i+count, …: the shares add up to `calls`.
        p.calls = if calls == u64::MAX {
            u64::MAX
        } else {
            calls / count as u64 + u64::from((index as u64) < calls % count as u64)
        };
        Box::new(uac::UacApp::new(p, tx.clone()))
    };
    let mut config = RuntimeConfig::new(args.local);
    config.shards = shards;
    config.mode = AppMode::Inline(InlineApp(Arc::new(factory)));
    // Placing, then the last calls' hold, then 45 s for stragglers (Timer B is 32 s).
    let limit = args.duration.unwrap_or_else(|| {
        Duration::from_secs_f64(calls as f64 / args.rate.max(0.001) + args.ramp.as_secs_f64())
    }) + args.hold
        + Duration::from_secs(45);
    let intervals = drive(
        config,
        rx,
        shards,
        start,
        limit,
        None,
        args.scenario.headline(),
    )?;
    let last_placed = intervals
        .iter()
        .filter(|i| i.attempted > 0)
        .map(|i| i.second)
        .max()
        .unwrap_or(0);
    let meta = stats::RunMeta {
        role: "uac",
        scenario: args.scenario.name(),
        headline: args.scenario.headline(),
        target: args.target.to_string(),
        rate: args.rate,
    };
    let mut result = stats::result(
        &intervals,
        meta,
        args.ramp.as_secs_f64().ceil() as u64,
        last_placed,
    );
    if args.transport == TransportArg::Tcp {
        result.transport = "tcp".to_owned();
    }
    finish(&args.common, &intervals, result)
}

fn run_uas(args: UasArgs) -> Outcome {
    let shards = args.common.shards.max(1);
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let plan = uas::UasPlan {
        ring_time: args.ring,
        answer_ratio: args.answer_ratio,
        failure_codes: args.failure_codes.clone(),
        sdp: Bytes::from_static(
            b"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\n",
        ),
        start,
        duration: args.duration,
        calls: u64::MAX,
    };
    let factory = move |index: usize, _count: usize| -> Box<dyn sipshard::runtime::ShardApp> {
        Box::new(uas::UasApp::new(
            plan.clone(),
            tx.clone(),
            0x9e37_79b9_7f4a_7c15 ^ index as u64,
        ))
    };
    let mut config = RuntimeConfig::new(args.listen);
    config.shards = shards;
    config.mode = AppMode::Inline(InlineApp(Arc::new(factory)));
    // The `subscribe` scenario's target.
    config.shard.subscriptions = Some(sipshard::shard::Subscriptions::new(["presence"]));
    if args.registrar {
        config.shard.register = sipshard::shard::RegisterMode::Registrar(
            sipshard::registrar::RegistrarConfig::default(),
        );
    }
    let limit = args.duration.unwrap_or(Duration::from_secs(24 * 3600)) + Duration::from_secs(5);
    let intervals = drive(
        config,
        rx,
        shards,
        start,
        limit,
        args.calls,
        stats::INVITE_TO_200,
    )?;
    let meta = stats::RunMeta {
        role: "uas",
        scenario: "answer",
        headline: stats::INVITE_TO_200,
        target: args.listen.to_string(),
        rate: 0.0,
    };
    let result = stats::result(&intervals, meta, 0, intervals.len() as u64);
    finish(&args.common, &intervals, result)
}

/// Starts the shards, shows progress each second, and gathers the intervals until every
/// shard is done (or `limit`, or `calls` calls ended).
fn drive(
    config: RuntimeConfig,
    rx: mpsc::Receiver<Report>,
    shards: usize,
    start: Instant,
    limit: Duration,
    calls: Option<u64>,
    headline: usize,
) -> Result<Vec<Interval>, Box<dyn std::error::Error>> {
    let headline_name = report::headline_title(stats::LATENCIES[headline]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let manager = DialogManager::new(config);
    runtime.block_on(manager.start())?;
    if let Some(addr) = manager.local_addr() {
        eprintln!("sipshard-load on udp:{addr} with {shards} shard(s)");
    }
    let tty = std::io::stdout().is_terminal();
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    let mut seconds: BTreeMap<u64, Interval> = BTreeMap::new();
    let mut done = 0;
    let mut shown = 0u64;
    let deadline = start + limit;
    while done < shards && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Report::Interval(i)) => {
                let second = if i.second == u64::MAX {
                    start.elapsed().as_secs()
                } else {
                    i.second
                };
                seconds
                    .entry(second)
                    .or_insert_with(|| Interval::new(second))
                    .merge(&i);
            }
            Ok(Report::Done) => done += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Show each second once all shards have had the chance to report it.
        let now_s = start.elapsed().as_secs();
        while shown + 1 < now_s {
            if let Some(i) = seconds.get(&shown) {
                let line = format!(
                    "t={:>4}s attempted {:>7}/s established {:>7}/s failed {:>5} timeouts {:>4} retrans {:>5} up {:>8} {headline_name} p99 {:.2} ms",
                    i.second,
                    i.attempted,
                    i.established,
                    i.failed_total() - i.timeouts,
                    i.timeouts,
                    i.retransmissions,
                    i.concurrent,
                    stats::Percentiles::of(&i.latency[headline]).p99
                );
                match &bar {
                    Some(b) => b.set_message(line),
                    None => println!("{line}"),
                }
            }
            shown += 1;
        }
        if let Some(target) = calls {
            let ended: u64 = seconds
                .values()
                .map(|i| i.completed + i.failed_total())
                .sum();
            if ended >= target {
                break;
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    runtime.block_on(manager.stop(StopPolicy::Bye, Duration::from_secs(2)))?;
    // Late reports of the last second.
    while let Ok(r) = rx.try_recv() {
        if let Report::Interval(i) = r
            && i.second != u64::MAX
        {
            seconds
                .entry(i.second)
                .or_insert_with(|| Interval::new(i.second))
                .merge(&i);
        }
    }
    let last = seconds.keys().next_back().copied().unwrap_or(0);
    Ok((0..=last)
        .map(|s| seconds.remove(&s).unwrap_or_else(|| Interval::new(s)))
        .collect())
}

fn finish(common: &Common, intervals: &[Interval], result: stats::RunResult) -> Outcome {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    if let Some(path) = &common.report {
        std::fs::write(path, report::html(&result, &command))?;
    }
    let headline = stats::LATENCIES
        .iter()
        .position(|l| *l == result.headline)
        .unwrap_or(stats::INVITE_TO_200);
    if let Some(path) = &common.hgrm {
        let mut all = stats::histogram();
        for i in intervals {
            let _ = all.add(&i.latency[headline]);
        }
        std::fs::write(path, stats::hgrm(&all))?;
    }
    let ratio = if result.attempted > 0 {
        result.failed as f64 / result.attempted as f64
    } else {
        0.0
    };
    println!(
        "{} {}: attempted {} established {} failed {} ({:.4} %) timeouts {} achieved {:.0}/s; {} p50 {:.3} ms p99 {:.3} ms",
        result.role,
        result.scenario,
        result.attempted,
        result.established,
        result.failed,
        ratio * 100.0,
        result.timeouts,
        result.achieved_rate,
        report::headline_title(&result.headline),
        result.latency_ms[&result.headline].p50,
        result.latency_ms[&result.headline].p99,
    );
    if ratio > common.max_failed {
        eprintln!(
            "failure ratio {ratio:.6} exceeds --max-failed {}",
            common.max_failed
        );
        return Ok(std::process::ExitCode::from(1));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
