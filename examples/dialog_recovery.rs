//! Dialogs that outlive their process: Bob answers Alice's call with his dialogs persisted
//! in a state directory, his process "dies" (his manager goes away without ending the call),
//! and a new manager on the same address and directory takes the call back: Alice's BYE is
//! answered 200, not 481.
//!
//! `cargo run --example dialog_recovery`
//!
//! With arguments it is one half of a crash test (`tests/recovery.rs` runs it):
//! - `place <target> <calls> <listen> <state-dir>`: places the calls, prints `confirmed N`
//!   once all are answered, and waits to be killed;
//! - `recover <listen> <state-dir>`: restores the calls, ends each with BYE, prints
//!   `ended N` once all are over, and exits.

use std::path::PathBuf;
use std::time::Duration;

use sipshard::runtime::{
    DialogManager, FsyncPolicy, RecoveryConfig, RuntimeConfig, SessionCoordinationEvent,
    StopPolicy, StoreConfig,
};
use sipshard::shard::SessionEvent;
use tokio::sync::mpsc;

type Events = mpsc::Receiver<Vec<SessionCoordinationEvent>>;

/// A manager on `listen` whose dialogs persist in `dir`; probes off (the peers here know
/// their calls).
async fn persisting(
    listen: &str,
    dir: PathBuf,
) -> Result<(DialogManager, Events), Box<dyn std::error::Error>> {
    let mut config = RuntimeConfig::new(listen.parse()?);
    config.shards = 2;
    config.store = Some(StoreConfig {
        dir,
        fsync: FsyncPolicy::Never,
    });
    config.recovery = RecoveryConfig {
        enable_state_persistence: true,
        recovery_timeout: Duration::ZERO,
        ..RecoveryConfig::default()
    };
    let manager = DialogManager::new(config);
    let (tx, rx) = mpsc::channel(1024);
    manager.set_session_coordinator(tx);
    manager.start().await?;
    Ok((manager, rx))
}

/// Waits up to `limit` for `want` events `matching`, answering incoming calls meanwhile.
async fn wait_for(
    manager: &DialogManager,
    events: &mut Events,
    want: usize,
    limit: Duration,
    matching: impl Fn(&SessionEvent) -> bool,
) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = 0;
    while seen < want {
        let Ok(Some(batch)) = tokio::time::timeout_at(deadline, events.recv()).await else {
            break;
        };
        for e in batch {
            if let SessionEvent::IncomingCall { dialog, .. } = &e.event {
                let _ = manager.answer(dialog, None).await;
            }
            if matching(&e.event) {
                seen += 1;
            }
        }
    }
    seen
}

async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sipshard-recovery-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Bob's address must stay the same across his restart: take a free port first.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bob_at = format!("127.0.0.1:{port}");

    let (bob, mut bob_events) = persisting(&bob_at, dir.clone()).await?;
    let alice = DialogManager::new(RuntimeConfig::new("127.0.0.1:0".parse()?));
    let (alice_tx, mut alice_events) = mpsc::channel(64);
    alice.set_session_coordinator(alice_tx);
    alice.start().await?;

    alice
        .make_call("<sip:alice@127.0.0.1>", &format!("sip:bob@{bob_at}"), None)
        .await?;
    let answer = tokio::spawn(async move {
        wait_for(&bob, &mut bob_events, 1, Duration::from_secs(5), |e| {
            matches!(e, SessionEvent::AckReceived { .. })
        })
        .await;
        // Bob's process dies: no BYE, the call is still up on Alice's side. (A stop that
        // waits for nothing leaves the call and its record as a crash would, and hands the
        // port back before it returns; `tests/recovery.rs` does it with a real kill -9.)
        let _ = bob.stop(StopPolicy::Wait, Duration::ZERO).await;
    });
    let mut dialog = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while dialog.is_none() {
        let Ok(Some(batch)) = tokio::time::timeout_at(deadline, alice_events.recv()).await else {
            return Err("the call was not answered".into());
        };
        for e in batch {
            if let SessionEvent::CallAnswered { dialog: d, .. } = e.event {
                dialog = Some(d);
            }
        }
    }
    answer.await?;
    println!("alice: answered; bob's process is gone");

    // Bob comes back on the same address and directory.
    let (bob, mut bob_events) = persisting(&bob_at, dir.clone()).await?;
    let recovered = wait_for(&bob, &mut bob_events, 1, Duration::from_secs(5), |e| {
        matches!(e, SessionEvent::DialogRecovered { .. })
    })
    .await;
    println!("bob: {recovered} dialog(s) recovered");

    let dialog = dialog.ok_or("no dialog")?;
    alice
        .send_request(&dialog, sipshard::message::Method::Bye, None)
        .await?;
    let ended = wait_for(&alice, &mut alice_events, 1, Duration::from_secs(5), |e| {
        matches!(e, SessionEvent::CallTerminated { .. })
    })
    .await;
    let bob_stats = bob.stop(StopPolicy::Wait, Duration::from_secs(1)).await?;
    alice.stop(StopPolicy::Wait, Duration::from_secs(1)).await?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "done: {recovered} recovered, {ended} ended with BYE, {} left at bob",
        bob_stats.dialogs()
    );
    Ok(())
}

async fn place(
    target: &str,
    calls: usize,
    listen: &str,
    dir: PathBuf,
) -> Result<(), Box<dyn std::error::Error>> {
    let (manager, mut events) = persisting(listen, dir).await?;
    for _ in 0..calls {
        manager
            .make_call(
                "<sip:caller@127.0.0.1>",
                &format!("sip:callee@{target}"),
                None,
            )
            .await?;
    }
    let answered = wait_for(&manager, &mut events, calls, Duration::from_secs(60), |e| {
        matches!(e, SessionEvent::CallAnswered { .. })
    })
    .await;
    println!("confirmed {answered}");
    // Wait to be killed.
    std::future::pending::<()>().await;
    Ok(())
}

async fn recover(listen: &str, dir: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let (manager, mut events) = persisting(listen, dir).await?;
    let mut recovered = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, events.recv()).await {
        for e in batch {
            if let SessionEvent::DialogRecovered { call, .. } = e.event {
                recovered.push(call);
            }
        }
    }
    println!("recovered {}", recovered.len());
    for call in &recovered {
        manager.terminate_dialog(call).await?;
    }
    let ended = wait_for(
        &manager,
        &mut events,
        recovered.len(),
        Duration::from_secs(60),
        |e| matches!(e, SessionEvent::CallTerminated { .. }),
    )
    .await;
    let stats = manager
        .stop(StopPolicy::Wait, Duration::from_secs(1))
        .await?;
    println!("ended {ended}, {} left", stats.dialogs());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => demo().await,
        ["place", target, calls, listen, dir] => {
            place(target, calls.parse()?, listen, PathBuf::from(dir)).await
        }
        ["recover", listen, dir] => recover(listen, PathBuf::from(dir)).await,
        _ => Err(
            "usage: dialog_recovery [place TARGET CALLS LISTEN DIR | recover LISTEN DIR]".into(),
        ),
    }
}
