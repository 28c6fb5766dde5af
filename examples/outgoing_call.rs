//! Place one call and hang up after a hold time.
//!
//! `cargo run --example outgoing_call -- sip:bob@127.0.0.1:5060` calls a running server
//! (for instance `sipshard serve`); without an argument it starts its own auto-answer
//! manager on loopback and calls that.

use std::time::Duration;

use sipshard::message::Method;
use sipshard::runtime::{AppMode, AutoAnswer, DialogManager, RuntimeConfig, StopPolicy};
use sipshard::shard::{SessionEvent, TerminationReason};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loopback = "127.0.0.1:0".parse()?;
    // The callee: the argument, or a local auto-answer manager.
    let mut local_callee = None;
    let target = match std::env::args().nth(1) {
        Some(uri) => uri,
        None => {
            let mut config = RuntimeConfig::new(loopback);
            config.mode = AppMode::AutoAnswer(AutoAnswer::default());
            let callee = DialogManager::new(config);
            callee.start().await?;
            let addr = callee.local_addr().ok_or("callee has no address")?;
            local_callee = Some(callee);
            format!("sip:echo@{addr}")
        }
    };
    let caller = DialogManager::new(RuntimeConfig::new(loopback));
    let (tx, mut events) = mpsc::channel(64);
    caller.set_session_coordinator(tx);
    caller.start().await?;
    let started = tokio::time::Instant::now();
    caller
        .make_call("sip:caller@127.0.0.1", &target, None)
        .await?;
    println!("calling {target}");
    let mut outcome = None;
    let deadline = started + Duration::from_secs(40);
    while outcome.is_none() {
        let Ok(Some(batch)) = tokio::time::timeout_at(deadline, events.recv()).await else {
            break;
        };
        for e in batch {
            match e.event {
                SessionEvent::CallAnswered { dialog, .. } => {
                    println!("answered after {:?}", started.elapsed());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    caller.send_request(&dialog, Method::Bye, None).await?;
                }
                SessionEvent::CallTerminated { reason, .. } => outcome = Some(reason),
                _ => {}
            }
        }
    }
    caller
        .stop(StopPolicy::Wait, Duration::from_secs(1))
        .await?;
    if let Some(callee) = local_callee {
        callee
            .stop(StopPolicy::Wait, Duration::from_secs(1))
            .await?;
    }
    match outcome {
        Some(TerminationReason::LocalBye) => {
            println!("call completed in {:?}", started.elapsed());
            Ok(())
        }
        other => Err(format!("call failed: {other:?}").into()),
    }
}
