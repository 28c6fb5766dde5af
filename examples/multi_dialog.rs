//! Many dialogs at once across shards: 2,000 calls from one manager to a 4-shard
//! auto-answer manager, at most 500 up at a time, each hung up once answered.
//!
//! `cargo run --release --example multi_dialog`

use std::time::{Duration, Instant};

use sipshard::message::Method;
use sipshard::runtime::{AppMode, AutoAnswer, DialogManager, RuntimeConfig, StopPolicy};
use sipshard::shard::{SessionEvent, TerminationReason};
use tokio::sync::mpsc;

const CALLS: u32 = 2_000;
const AT_ONCE: u32 = 500;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loopback = "127.0.0.1:0".parse()?;
    let mut config = RuntimeConfig::new(loopback);
    config.shards = 4;
    config.mode = AppMode::AutoAnswer(AutoAnswer::default());
    // One shard reads every datagram of this one-address client and hands most of them
    // over. A debug build on two cores can keep it behind the opening burst of 500 INVITEs
    // for longer than the default 100 ms, after which new calls get 503 (the receive-side
    // overload control). Overload is not what this example shows, so it waits longer.
    config.overload_after = Duration::from_secs(2);
    let server = DialogManager::new(config);
    server.start().await?;
    let to = format!("sip:load@{}", server.local_addr().ok_or("no address")?);

    let mut config = RuntimeConfig::new(loopback);
    config.shards = 2;
    let client = DialogManager::new(config);
    let (tx, mut events) = mpsc::channel(1024);
    client.set_session_coordinator(tx);
    client.start().await?;

    let started = Instant::now();
    let (mut placed, mut ended, mut completed, mut peak) = (0u32, 0u32, 0u32, 0usize);
    let mut failures = std::collections::BTreeMap::new();
    while ended < CALLS {
        while placed < CALLS && placed - ended < AT_ONCE {
            client.make_call("sip:load@127.0.0.1", &to, None).await?;
            placed += 1;
        }
        peak = peak.max(server.dialog_count());
        let batch = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await?
            .ok_or("event channel closed")?;
        for e in batch {
            match e.event {
                SessionEvent::CallAnswered { dialog, .. } => {
                    client.send_request(&dialog, Method::Bye, None).await?;
                }
                SessionEvent::CallTerminated { reason, .. } => {
                    ended += 1;
                    if reason == TerminationReason::LocalBye {
                        completed += 1;
                    } else {
                        *failures.entry(format!("{reason:?}")).or_insert(0u32) += 1;
                    }
                }
                _ => {}
            }
        }
    }
    let elapsed = started.elapsed();
    let stats = server.stats().await?;
    for shard in &stats.shards {
        println!(
            "server shard {}: {} dialogs created, {} datagrams handed over to it or by it",
            shard.shard, shard.stats.dialogs_created, shard.io.handed_over
        );
    }
    println!(
        "{completed}/{CALLS} calls completed in {elapsed:.2?} ({:.0} calls/s), peak {peak} concurrent server dialogs",
        f64::from(completed) / elapsed.as_secs_f64()
    );
    client
        .stop(StopPolicy::Wait, Duration::from_secs(1))
        .await?;
    server
        .stop(StopPolicy::Wait, Duration::from_secs(1))
        .await?;
    if completed == CALLS {
        Ok(())
    } else {
        Err(format!("{} calls failed: {failures:?}", CALLS - completed).into())
    }
}
