//! Calls placed through `DialogManager` into a SIPp callee, over UDP or TCP.

use std::time::Duration;

use sipshard::transaction::Transport;

/// A started two-shard `DialogManager` on an ephemeral port, with its event channel.
pub async fn start_manager() -> (
    sipshard::runtime::DialogManager,
    tokio::sync::mpsc::Receiver<Vec<sipshard::runtime::SessionCoordinationEvent>>,
) {
    let mut config = sipshard::runtime::RuntimeConfig::new("127.0.0.1:0".parse().unwrap());
    config.shards = 2;
    let manager = sipshard::runtime::DialogManager::new(config);
    let (tx, events) = tokio::sync::mpsc::channel(1024);
    manager.set_session_coordinator(tx);
    manager.start().await.unwrap();
    (manager, events)
}

/// Places `calls` calls (at most 100 at once) to a SIPp callee started with `scenario`
/// arguments, BYEs each when answered, and checks that all completed on both sides.
pub async fn place_calls_to_sipp(
    sipp: &std::path::Path,
    scenario: &[&str],
    calls: u32,
) -> sipshard::runtime::DialogStats {
    place_calls_to_sipp_then(sipp, scenario, calls, AfterAnswer::Bye, Transport::Udp).await
}

/// What [`place_calls_to_sipp_then`] does with an answered call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AfterAnswer {
    /// Hang up at once.
    Bye,
    /// REFER the callee to `sip:carol@example.com`, and hang up after the last NOTIFY,
    /// which must report 200.
    ReferThenBye,
}

/// Places `calls` calls through `DialogManager` into a SIPp callee running `scenario`
/// over `transport` (TCP: SIPp must be started with `-t t1` or `-t tn`), does `after` with
/// each answered call, and checks both sides finished them all.
pub async fn place_calls_to_sipp_then(
    sipp: &std::path::Path,
    scenario: &[&str],
    calls: u32,
    after: AfterAnswer,
    transport: Transport,
) -> sipshard::runtime::DialogStats {
    let sdp = bytes::Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n");
    place_calls_with_sdp(sipp, scenario, calls, after, transport, sdp).await
}

/// [`place_calls_to_sipp_then`] with `sdp` as every call's offer.
pub async fn place_calls_with_sdp(
    sipp: &std::path::Path,
    scenario: &[&str],
    calls: u32,
    after: AfterAnswer,
    transport: Transport,
    sdp: bytes::Bytes,
) -> sipshard::runtime::DialogStats {
    use sipshard::message::Method;
    use sipshard::runtime::StopPolicy;
    use sipshard::shard::{SessionEvent, TerminationReason};

    let port = super::peers::free_udp_port();
    let count = calls.to_string();
    let mut args = scenario.to_vec();
    args.extend(["-m", &count, "-timeout", "90", "-timeout_error"]);
    let uas = super::peers::spawn_sipp(sipp, port, &args, &std::env::temp_dir());
    let (manager, mut events) = start_manager().await;
    let sipp_over_tcp = scenario
        .windows(2)
        .any(|w| w[0] == "-t" && w[1].starts_with('t'));
    if sipp_over_tcp {
        // SIPp must listen before the first connect: a refused one fails its call, and
        // over TCP nothing retransmits the INVITE.
        let listening = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < listening,
                "sipp does not listen on TCP"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        // Give SIPp a moment to bind (an early INVITE would only be retransmitted).
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let to = match transport {
        Transport::Tcp => format!("sip:service@127.0.0.1:{port};transport=tcp"),
        _ => format!("sip:service@127.0.0.1:{port}"),
    };
    let (mut placed, mut ended, mut completed) = (0u32, 0u32, 0u32);
    let mut failures = Vec::new();
    // The Call-IDs of calls not yet ended, and what was last heard of each: on a timeout,
    // the test names the calls left without a final state.
    let mut open: std::collections::HashMap<Vec<u8>, &'static str> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while ended < calls {
        while placed < calls && placed - ended < 100 {
            let call = manager
                .make_call("sip:sipshard@127.0.0.1", &to, Some(sdp.clone()))
                .await
                .unwrap();
            open.insert(call.call_id().to_vec(), "placed");
            placed += 1;
        }
        let Ok(batch) = tokio::time::timeout_at(deadline, events.recv()).await else {
            let stats = manager.stats().await;
            panic!(
                "{} calls without a final state after 90 s: {:?}\nstats: {stats:?}",
                open.len(),
                open.iter()
                    .map(|(id, last)| (String::from_utf8_lossy(id).into_owned(), *last))
                    .collect::<Vec<_>>()
            );
        };
        let batch = batch.expect("event channel open");
        for e in batch {
            let last = match &e.event {
                SessionEvent::CallRinging { dialog, .. } => Some((dialog, "ringing")),
                SessionEvent::CallAnswered { dialog, .. } => Some((dialog, "answered")),
                SessionEvent::ReferNotify { dialog, .. } => Some((dialog, "refer notify")),
                _ => None,
            };
            if let Some((id, last)) = last
                && let Some(seen) = open.get_mut(id.call_id())
            {
                *seen = last;
            }
            match e.event {
                SessionEvent::CallAnswered { dialog, .. } if after == AfterAnswer::Bye => {
                    manager
                        .send_request(&dialog, Method::Bye, None)
                        .await
                        .unwrap();
                }
                SessionEvent::CallAnswered { dialog, .. } => {
                    manager
                        .refer(&dialog, "<sip:carol@example.com>")
                        .await
                        .unwrap();
                }
                SessionEvent::ReferNotify {
                    dialog,
                    status,
                    terminated: true,
                    ..
                } => {
                    assert_eq!(status, Some(200));
                    manager
                        .send_request(&dialog, Method::Bye, None)
                        .await
                        .unwrap();
                }
                SessionEvent::CallTerminated { reason, dialog } => {
                    open.remove(dialog.call_id());
                    ended += 1;
                    if reason == TerminationReason::LocalBye {
                        completed += 1;
                    } else {
                        failures.push(reason);
                    }
                }
                _ => {}
            }
        }
    }
    assert_eq!(completed, calls, "failures: {failures:?}");
    // SIPp first: over TCP, stopping the manager closes the connection, which SIPp counts
    // against a call still in its last state.
    let run = super::peers::wait_sipp(uas, Duration::from_secs(30));
    let stats = manager
        .stop(StopPolicy::Wait, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(stats.dialogs(), 0);
    assert!(run.success, "sipp callee failed:\n{}", run.screen);
    assert_eq!(
        u32::try_from(run.successful_calls).unwrap(),
        calls,
        "{}",
        run.screen
    );
    stats
}
