//! One call between two dialog managers on loopback: Bob's application answers through
//! the session coordinator, Alice calls, talks for a moment and hangs up.
//!
//! `cargo run --example basic_dialog`

use std::time::Duration;

use sipshard::message::Method;
use sipshard::runtime::{DialogManager, RuntimeConfig, StopPolicy};
use sipshard::shard::SessionEvent;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loopback = "127.0.0.1:0".parse()?;
    let bob = DialogManager::new(RuntimeConfig::new(loopback));
    let (bob_tx, mut bob_events) = mpsc::channel(64);
    bob.set_session_coordinator(bob_tx);
    bob.start().await?;
    let bob_addr = bob.local_addr().ok_or("bob has no address")?;

    let alice = DialogManager::new(RuntimeConfig::new(loopback));
    let (alice_tx, mut alice_events) = mpsc::channel(64);
    alice.set_session_coordinator(alice_tx);
    alice.start().await?;

    let sdp = bytes::Bytes::from_static(b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n");
    let call = alice
        .make_call(
            "\"Alice\" <sip:alice@127.0.0.1>",
            &format!("sip:bob@{bob_addr}"),
            Some(sdp),
        )
        .await?;
    println!("alice: calling, handle {call:?}");

    // Bob's side: ring, then answer.
    let bob_task = tokio::spawn(async move {
        while let Some(batch) = bob_events.recv().await {
            for e in batch {
                match e.event {
                    SessionEvent::IncomingCall {
                        dialog, request, ..
                    } => {
                        println!(
                            "bob: incoming call, {} bytes of SDP offer",
                            request.body_bytes().len()
                        );
                        bob.ringing(&dialog).await?;
                        bob.answer(&dialog, None).await?;
                    }
                    SessionEvent::CallTerminated { reason, .. } => {
                        println!("bob: call ended ({reason:?})");
                        bob.stop(StopPolicy::Wait, Duration::from_secs(1)).await?;
                        return Ok::<_, sipshard::shard::DialogError>(());
                    }
                    other => println!("bob: {other:?}"),
                }
            }
        }
        Ok(())
    });

    // Alice's side: hang up once answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    'calling: while let Ok(Some(batch)) =
        tokio::time::timeout_at(deadline, alice_events.recv()).await
    {
        for e in batch {
            match e.event {
                SessionEvent::CallRinging { .. } => println!("alice: ringing"),
                SessionEvent::CallAnswered { dialog, .. } => {
                    println!("alice: answered, dialog {dialog:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    alice.send_request(&dialog, Method::Bye, None).await?;
                }
                SessionEvent::CallTerminated { reason, .. } => {
                    println!("alice: call ended ({reason:?})");
                    break 'calling;
                }
                _ => {}
            }
        }
    }
    bob_task.await??;
    let stats = alice.stop(StopPolicy::Wait, Duration::from_secs(1)).await?;
    println!(
        "done: {} dialog(s) created, {} left",
        stats.total.dialogs_created,
        stats.dialogs()
    );
    Ok(())
}
