//! The runtime on real loopback sockets: backpressure from a slow application, and the
//! graceful stop.

use std::sync::Arc;
use std::time::Duration;

use sipshard::runtime::{AppMode, AutoAnswer, DialogManager, RuntimeConfig, StopPolicy};
use sipshard::shard::{SessionEvent, TerminationReason};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

fn config(shards: usize, mode: AppMode) -> RuntimeConfig {
    let mut c = RuntimeConfig::new("127.0.0.1:0".parse().unwrap());
    c.shards = shards;
    c.mode = mode;
    c
}

/// Collects the callee-side outcome of each call until `count` calls ended.
async fn outcomes(
    events: &mut mpsc::Receiver<Vec<sipshard::runtime::SessionCoordinationEvent>>,
    count: usize,
) -> Vec<TerminationReason> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ended = Vec::new();
    while ended.len() < count {
        let Ok(batch) = timeout_at(deadline, events.recv()).await else {
            panic!("only {ended:?} ended in time");
        };
        let batch = batch.expect("channel open");
        for e in batch {
            if let SessionEvent::CallTerminated { reason, .. } = e.event {
                ended.push(reason);
            }
        }
    }
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_application_gets_503s_for_new_calls_until_it_catches_up() {
    // The server's application never reads its one-batch channel (yet).
    let server = DialogManager::new(config(1, AppMode::Application));
    let (tx, mut server_events) = mpsc::channel(1);
    server.set_session_coordinator(tx);
    server.start().await.unwrap();
    let to = format!("sip:slow@{}", server.local_addr().unwrap());

    let client = DialogManager::new(config(1, AppMode::Application));
    let (tx, mut events) = mpsc::channel(64);
    client.set_session_coordinator(tx);
    client.start().await.unwrap();
    // The first call's IncomingCall fills the channel; the second's waits in the shard's
    // backlog; from then on, new INVITEs are refused while the protocol runs on.
    for _ in 0..2 {
        client
            .make_call("sip:c@127.0.0.1", &to, None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        client
            .make_call("sip:c@127.0.0.1", &to, None)
            .await
            .unwrap();
    }
    let ended = outcomes(&mut events, 5).await;
    assert!(
        ended.iter().all(|r| *r == TerminationReason::Rejected(503)),
        "{ended:?}"
    );
    let stats = server.stats().await.unwrap();
    assert_eq!(stats.total.backpressure_rejections, 5);
    assert!(stats.io.event_channel_full > 0);
    assert_eq!(
        stats.io.event_backlog, 1,
        "the second IncomingCall waits in the shard"
    );

    // The application catches up: both held calls are there, in order, and new calls
    // are taken again.
    let mut incoming = Vec::new();
    while incoming.len() < 2 {
        let batch = server_events.recv().await.unwrap();
        for e in batch {
            if let SessionEvent::IncomingCall { dialog, .. } = e.event {
                incoming.push(dialog);
            }
        }
    }
    for d in &incoming {
        server.answer(d, None).await.unwrap();
    }
    // Each answer brings CallAnswered and AckReceived: read them, so the channel has room.
    let mut seen = 0;
    while seen < 4 {
        seen += server_events.recv().await.unwrap().len();
    }
    client
        .make_call("sip:c@127.0.0.1", &to, None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        let batch = timeout_at(deadline, server_events.recv())
            .await
            .unwrap()
            .unwrap();
        if let Some(d) = batch.into_iter().find_map(|e| match e.event {
            SessionEvent::IncomingCall { dialog, .. } => Some(dialog),
            _ => None,
        }) {
            break d;
        }
    };
    server.reject(&third, 486).await.unwrap();
    assert_eq!(
        outcomes(&mut events, 1).await,
        vec![TerminationReason::Rejected(486)]
    );
    client.stop(StopPolicy::Bye, Duration::ZERO).await.unwrap();
    server.stop(StopPolicy::Bye, Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_refuses_new_calls_then_byes_the_rest() {
    let server = Arc::new(DialogManager::new(config(
        2,
        AppMode::AutoAnswer(AutoAnswer::default()),
    )));
    server.start().await.unwrap();
    let to = format!("sip:stop@{}", server.local_addr().unwrap());
    let client = DialogManager::new(config(1, AppMode::Application));
    let (tx, mut events) = mpsc::channel(64);
    client.set_session_coordinator(tx);
    client.start().await.unwrap();

    for _ in 0..3 {
        client
            .make_call("sip:c@127.0.0.1", &to, None)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answered = 0;
    while answered < 3 {
        let batch = timeout_at(deadline, events.recv()).await.unwrap().unwrap();
        answered += batch
            .iter()
            .filter(|e| matches!(e.event, SessionEvent::CallAnswered { .. }))
            .count();
    }
    // Asked of the shards themselves: the `dialog_count` gauge is published at the end of
    // a server round, which may finish after its 200 reached us.
    assert_eq!(server.stats().await.unwrap().dialogs(), 3);

    let stopping = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .stop(StopPolicy::Bye, Duration::from_millis(500))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // While stopping: a new call is refused, the three up are ended by the server's BYE.
    client
        .make_call("sip:c@127.0.0.1", &to, None)
        .await
        .unwrap();
    let mut ended = outcomes(&mut events, 4).await;
    ended.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        ended,
        vec![
            TerminationReason::Rejected(503),
            TerminationReason::RemoteBye,
            TerminationReason::RemoteBye,
            TerminationReason::RemoteBye
        ]
    );
    let stats = stopping.await.unwrap().unwrap();
    assert_eq!(stats.dialogs(), 0);
    assert_eq!(stats.total.shutdown_rejections, 1);
    assert_eq!(stats.io.dialogs_abandoned, 0);
    assert_eq!(server.dialog_count(), 0);
    assert!(matches!(
        server.make_call("sip:x@127.0.0.1", &to, None).await,
        Err(sipshard::shard::DialogError::NotRunning)
    ));
    client.stop(StopPolicy::Wait, Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_another_process_holds_is_refused_not_shared() {
    // SO_REUSEPORT would otherwise let two servers split one port's traffic.
    let first = DialogManager::new(config(2, AppMode::AutoAnswer(AutoAnswer::default())));
    first.start().await.unwrap();
    let taken = first.local_addr().unwrap();
    let second = DialogManager::new(RuntimeConfig::new(taken));
    let err = second.start().await.unwrap_err();
    assert!(
        matches!(err, sipshard::shard::DialogError::Transport(_)),
        "{err:?}"
    );
    first
        .stop(StopPolicy::Wait, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_dialog_message_reaches_the_application_or_gets_480_without_one() {
    use bytes::Bytes;
    use sipshard::shard::StandaloneRequest;
    // One server with an application that answers MESSAGE 202, one with nobody listening.
    let answering = DialogManager::new(config(2, AppMode::Application));
    let (tx, mut inbox) = mpsc::channel(16);
    answering.set_session_coordinator(tx);
    answering.start().await.unwrap();
    let nobody = DialogManager::new(config(1, AppMode::Application));
    nobody.start().await.unwrap();

    let client = DialogManager::new(config(1, AppMode::Application));
    let (tx, mut events) = mpsc::channel(64);
    client.set_session_coordinator(tx);
    client.start().await.unwrap();
    let message = |destination| StandaloneRequest {
        method: Bytes::from_static(b"MESSAGE"),
        request_uri: Bytes::from(format!("sip:bob@{destination}")),
        from: Bytes::from_static(b"<sip:alice@127.0.0.1>"),
        to: Bytes::from_static(b"<sip:bob@example.com>"),
        call_id: None,
        cseq: 1,
        destination,
        headers: vec![("Content-Type".into(), Bytes::from_static(b"text/plain"))],
        body: Bytes::from_static(b"hello"),
    };
    let to_answering = client
        .send_standalone(message(answering.local_addr().unwrap()))
        .await
        .unwrap();
    let to_nobody = client
        .send_standalone(message(nobody.local_addr().unwrap()))
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let batch = timeout_at(deadline, inbox.recv()).await.unwrap().unwrap();
    let incoming = batch
        .iter()
        .find(|e| matches!(e.event, SessionEvent::IncomingRequest { .. }))
        .expect("the MESSAGE reached the application");
    if let SessionEvent::IncomingRequest { request, .. } = &incoming.event {
        assert_eq!(request.body_bytes(), b"hello");
    }
    let handle = incoming.transaction().expect("it carries a transaction");
    answering
        .send_response(&handle, 202, Vec::new())
        .await
        .unwrap();

    let mut results = Vec::new();
    while results.len() < 2 {
        let batch = timeout_at(deadline, events.recv()).await.unwrap().unwrap();
        for e in batch {
            if let SessionEvent::StandaloneResult {
                request, status, ..
            } = e.event
            {
                results.push((request, status));
            }
        }
    }
    results.sort_by_key(|(_, status)| *status);
    assert_eq!(
        results,
        vec![(to_answering.request, 202), (to_nobody.request, 480)]
    );
    for m in [&client, &answering, &nobody] {
        m.stop(StopPolicy::Wait, Duration::ZERO).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_host_name_goes_to_the_address_it_resolves_to() {
    let server = DialogManager::new(config(1, AppMode::AutoAnswer(AutoAnswer::default())));
    server.start().await.unwrap();
    let port = server.local_addr().unwrap().port();
    let client = DialogManager::new(config(1, AppMode::Application));
    let (tx, mut events) = mpsc::channel(64);
    client.set_session_coordinator(tx);
    client.start().await.unwrap();
    // `localhost` resolves through /etc/hosts; the client listens on IPv4, so it takes
    // 127.0.0.1 (where the server is) even where ::1 comes first.
    client
        .make_call(
            "sip:c@127.0.0.1",
            &format!("sip:bob@localhost:{port}"),
            None,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    'answered: loop {
        let batch = timeout_at(deadline, events.recv()).await.unwrap().unwrap();
        for e in batch {
            match e.event {
                SessionEvent::CallAnswered { .. } => break 'answered,
                SessionEvent::CallTerminated { reason, .. } => panic!("ended: {reason:?}"),
                _ => {}
            }
        }
    }
    assert!(matches!(
        client
            .make_call("sip:c@127.0.0.1", "sip:bob@no-such-host.invalid:5060", None)
            .await,
        Err(sipshard::shard::DialogError::InvalidTarget(_))
    ));
    client.stop(StopPolicy::Bye, Duration::ZERO).await.unwrap();
    server.stop(StopPolicy::Bye, Duration::ZERO).await.unwrap();
}
