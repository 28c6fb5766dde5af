//! An application deciding about calls: the session coordinator receives event batches
//! and answers calls from Alice, turns away everyone else with 486 Busy Here.
//!
//! `cargo run --example session_coordination`

use std::collections::HashMap;
use std::time::Duration;

use sipshard::message::Method;
use sipshard::runtime::{DialogManager, RuntimeConfig, SessionCoordinationEvent, StopPolicy};
use sipshard::shard::{SessionEvent, TerminationReason};
use tokio::sync::mpsc;

/// The policy: who gets through.
fn admit(from_header: &[u8]) -> bool {
    from_header
        .windows(b"sip:alice@".len())
        .any(|w| w == b"sip:alice@")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loopback = "127.0.0.1:0".parse()?;
    let pbx = std::sync::Arc::new(DialogManager::new(RuntimeConfig::new(loopback)));
    let (tx, mut pbx_events) = mpsc::channel::<Vec<SessionCoordinationEvent>>(64);
    pbx.set_session_coordinator(tx);
    pbx.start().await?;
    let pbx_addr = pbx.local_addr().ok_or("no address")?;

    let coordinator = {
        let pbx = pbx.clone();
        tokio::spawn(async move {
            while let Some(batch) = pbx_events.recv().await {
                println!(
                    "coordinator: batch of {} event(s) from shard {}",
                    batch.len(),
                    batch[0].shard
                );
                for e in batch {
                    if let SessionEvent::IncomingCall {
                        dialog, request, ..
                    } = e.event
                    {
                        let from = request
                            .header(sipshard::message::HeaderName::From)
                            .unwrap_or_default();
                        if admit(from) {
                            println!("coordinator: answering {}", String::from_utf8_lossy(from));
                            let _ = pbx.answer(&dialog, None).await;
                        } else {
                            println!("coordinator: busy for {}", String::from_utf8_lossy(from));
                            let _ = pbx.reject(&dialog, 486).await;
                        }
                    }
                }
            }
        })
    };

    let phones = DialogManager::new(RuntimeConfig::new(loopback));
    let (tx, mut events) = mpsc::channel(64);
    phones.set_session_coordinator(tx);
    phones.start().await?;
    let to = format!("sip:desk@{pbx_addr}");
    let mut callers = HashMap::new();
    for who in ["alice", "mallory"] {
        let call = phones
            .make_call(&format!("sip:{who}@127.0.0.1"), &to, None)
            .await?;
        callers.insert(call, who);
    }
    let mut results = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while results.len() < 2 {
        let Ok(Some(batch)) = tokio::time::timeout_at(deadline, events.recv()).await else {
            break;
        };
        for e in batch {
            match e.event {
                SessionEvent::CallAnswered { dialog, call, .. } => {
                    println!("{}: answered", callers[&call]);
                    phones.send_request(&dialog, Method::Bye, None).await?;
                }
                SessionEvent::CallTerminated { dialog, reason } => {
                    let who = callers
                        .iter()
                        .find(|(call, _)| call.call_id() == dialog.call_id())
                        .map_or("?", |(_, w)| *w);
                    println!("{who}: ended ({reason:?})");
                    results.insert(who, reason);
                }
                _ => {}
            }
        }
    }
    phones
        .stop(StopPolicy::Wait, Duration::from_secs(1))
        .await?;
    pbx.stop(StopPolicy::Wait, Duration::from_secs(1)).await?;
    coordinator.abort();
    if results.get("alice") == Some(&TerminationReason::LocalBye)
        && results.get("mallory") == Some(&TerminationReason::Rejected(486))
    {
        println!("policy applied: alice through, mallory busy");
        Ok(())
    } else {
        Err(format!("unexpected outcome: {results:?}").into())
    }
}
