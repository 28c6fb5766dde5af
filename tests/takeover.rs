//! Taking a dead node's calls over, checked on the wire (issue 23), with real processes:
//! two `sipshard serve --cluster` nodes on one `redis-server`, and a caller played by hand
//! over UDP that answers every request it gets and notes who sent it.
//!
//! And a node whose heartbeat lapsed (peers may have taken its calls) writes its records
//! again and lets go of those a peer owns.
//!
//! The caller talks to the nodes directly (the front's part, sending a dead node's requests
//! to a live one, is `tests/cluster.rs`'s): what is checked here is what each node sends
//! on its own, from its timers and at its stop.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::peers::{Server, free_udp_port, wait_metric, wait_until};
use common::redis::{Redis, clustered_node_with, stateful_node_args};
use sipshard::message::{Message, Method};

/// A request a node sent the caller.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    from: SocketAddr,
    method: String,
    call_id: String,
    branch: String,
    /// Its Subscription-State, for a NOTIFY.
    state: String,
}

/// The caller: one socket (a dialog's requests come back to where it began, the node's
/// `peer`), read by a thread that answers 200 to every request the nodes send and hands
/// the responses on.
struct Caller {
    socket: UdpSocket,
    contact: SocketAddr,
    responses: std::sync::mpsc::Receiver<Message>,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
}

/// One call's dialog, as the caller keeps it.
struct Call {
    call_id: String,
    remote_tag: String,
    cseq: u32,
}

impl Caller {
    fn new() -> Caller {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        let listen = socket.try_clone().expect("a second handle");
        listen
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        let contact = listen.local_addr().expect("bound");
        let (answers, responses) = std::sync::mpsc::channel();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, done) = (received.clone(), stop.clone());
        let listener = std::thread::spawn(move || {
            let mut buf = [0u8; 65_535];
            while !done.load(Ordering::Relaxed) {
                let Ok((n, from)) = listen.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(request) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                    continue;
                };
                if !request.is_request() {
                    let _ = answers.send(request);
                    continue;
                }
                if request.method() == Some(Method::Ack) {
                    continue;
                }
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or(b"")).into_owned();
                let branch = request
                    .top_via()
                    .ok()
                    .and_then(|v| v.branch().map(|b| String::from_utf8_lossy(b).into_owned()))
                    .unwrap_or_default();
                let state = text(request.header(sipshard::message::HeaderName::SubscriptionState));
                log.lock().expect("not poisoned").push(Received {
                    at: Instant::now(),
                    from,
                    method: text(request.method_bytes()),
                    call_id: text(request.call_id()),
                    branch,
                    state,
                });
                let _ = listen.send_to(&common::sip::response_to(&request, 200), from);
            }
        });
        Caller {
            socket,
            contact,
            responses,
            received,
            stop,
            listener: Some(listener),
        }
    }

    /// Sends `request` to `node` and returns the final response.
    fn transact(&self, node: SocketAddr, request: String) -> Message {
        self.socket.send_to(request.as_bytes(), node).expect("sent");
        loop {
            let response = self
                .responses
                .recv_timeout(Duration::from_secs(5))
                .expect("an answer in time");
            if response.status().is_some_and(|s| s >= 200) {
                return response;
            }
        }
    }

    /// Places a call to `node` with a 90 s session the caller is to refresh (RFC 4028), so
    /// the callee ends it with BYE 60 s after its answer if no refresh comes; ACKs the 200.
    fn call(&self, node: SocketAddr, call_id: &str) -> Call {
        let local = self.socket.local_addr().expect("bound");
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
        let invite = format!(
            "INVITE sip:callee@{node} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=caller-{call_id}\r\n\
             To: <sip:callee@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:caller@{contact}>\r\nSupported: timer\r\nSession-Expires: 90;refresher=uac\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len(),
            contact = self.contact,
        );
        let ok = self.transact(node, invite);
        assert_eq!(ok.status(), Some(200), "{ok:?}");
        let remote_tag =
            String::from_utf8_lossy(ok.to_tag().ok().flatten().expect("a To tag")).into_owned();
        let call = Call {
            call_id: call_id.to_owned(),
            remote_tag,
            cseq: 1,
        };
        let ack = self.in_dialog(&call, node, "ACK", 1);
        self.socket.send_to(ack.as_bytes(), node).expect("sent");
        call
    }

    /// Subscribes to `node`'s presence for `expires` seconds (RFC 6665), never to
    /// refresh: the node's initial NOTIFY reaches the listener, its last one comes at the
    /// expiry.
    fn subscribe(&self, node: SocketAddr, call_id: &str, expires: u32) {
        let local = self.socket.local_addr().expect("bound");
        let subscribe = format!(
            "SUBSCRIBE sip:callee@{node} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=caller-{call_id}\r\n\
             To: <sip:callee@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\n\
             Contact: <sip:caller@{contact}>\r\nEvent: presence\r\nExpires: {expires}\r\n\
             Content-Length: 0\r\n\r\n",
            contact = self.contact,
        );
        let ok = self.transact(node, subscribe);
        assert!(ok.status().is_some_and(|s| s / 100 == 2), "{ok:?}");
    }

    /// An in-dialog request of `call` to `node` (its remote target: the node's address).
    fn in_dialog(&self, call: &Call, node: SocketAddr, method: &str, cseq: u32) -> String {
        let local = self.socket.local_addr().expect("bound");
        format!(
            "{method} sip:callee@{node} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{id}-{method}-{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=caller-{id}\r\n\
             To: <sip:callee@example.com>;tag={tag}\r\nCall-ID: {id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{contact}>\r\nContent-Length: 0\r\n\r\n",
            id = call.call_id,
            tag = call.remote_tag,
            contact = self.contact,
        )
    }

    /// Sends an in-dialog `method` of `call` to `node`; its final status.
    fn request(&self, call: &mut Call, node: SocketAddr, method: &str) -> u16 {
        call.cseq += 1;
        let request = self.in_dialog(call, node, method, call.cseq);
        self.transact(node, request).status().unwrap_or(0)
    }

    /// The requests received so far, one per transaction (retransmissions left out).
    fn received(&self) -> Vec<Received> {
        let mut seen = std::collections::HashSet::new();
        let log = self.received.lock().expect("not poisoned");
        log.iter()
            .filter(|r| seen.insert((r.from, r.branch.clone())))
            .cloned()
            .collect()
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
    }
}

#[test]
fn a_dead_node_s_calls_are_carried_on_by_a_peer_and_the_returning_node_sends_nothing_for_them() {
    let Some(redis) = Redis::start() else { return };
    let dir = std::env::temp_dir().join(format!("sipshard-takeover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (url, dir_arg) = (redis.url(), dir.to_str().expect("UTF-8").to_owned());
    let mut a_args = stateful_node_args(&url, &dir_arg, "node-a");
    a_args.extend(["--stop-deadline-s", "1", "--event-packages", "presence"]);
    let a_listen = format!("127.0.0.1:{}", free_udp_port());
    let a = Server::start_at(&a_listen, &a_args);
    let b = clustered_node_with(&redis, "node-b", "2", &["--event-packages", "presence"]);
    let caller = Caller::new();

    // Two calls through node A, each to be ended by A's session timer 60 s on, and a
    // subscription to A that ends 65 s on with A's last NOTIFY.
    let x = caller.call(a.sip, "call-x");
    let mut y = caller.call(a.sip, "call-y");
    let answered = Instant::now();
    caller.subscribe(a.sip, "sub-z", 65);
    assert_eq!(redis.wait_dialogs(3, Duration::from_secs(10)), 3);
    a.kill();

    // No request comes for them: B finds them by its sweep, once A's heartbeat is gone.
    let limit = Duration::from_secs(15);
    assert_eq!(
        wait_metric(&b, "sipshard_dialogs_taken_over_total", "", 3, limit),
        3
    );
    let owners: Vec<String> = redis.dialogs().into_iter().map(|(_, o, _)| o).collect();
    assert_eq!(owners, ["node-b", "node-b", "node-b"]);

    // A comes back: all three are B's, A restores none.
    let a = Server::start_at(&a_listen, &a_args);
    assert_eq!(a.metric("sipshard_dialogs_restored_total", ""), 0);
    assert_eq!(a.metric("sipshard_dialogs", "state=\"confirmed\""), 0);

    // Y's requests reach A again (as the front sends a call back to its node once it is
    // up): A takes Y from B, which is alive and drops it without a word.
    assert_eq!(caller.request(&mut y, a.sip, "INFO"), 200);
    assert_eq!(
        wait_metric(&b, "sipshard_dialogs_released_total", "", 1, limit),
        1
    );
    assert_eq!(b.metric("sipshard_dialogs", "state=\"confirmed\""), 2);

    // A stops with its BYE policy: it ends Y, its own now, and nothing of X or Z, B's.
    let a_sip = a.sip;
    assert!(a.stop(), "node A stops cleanly");
    let stopped = Instant::now();

    // X still ends when its session runs out unrefreshed: one BYE, from B; and Z when
    // it expires: B's NOTIFY saying so.
    let ended = |r: &Received| {
        (r.call_id == "call-x" && r.method == "BYE")
            || (r.call_id == "sub-z" && r.state.starts_with("terminated"))
    };
    let limit = (answered + Duration::from_secs(80)).saturating_duration_since(Instant::now());
    wait_until(limit, Duration::from_millis(100), || {
        caller.received().iter().filter(|r| ended(r)).count() >= 2
    });
    // What must not come would come now: a BYE for Y from B (had B kept it, its session
    // ends with X's, answered the same moment), or a second one for X. Absence takes a
    // wait; 3 s covers the timer wheel's tick and a retransmission.
    std::thread::sleep(Duration::from_secs(3));
    let received = caller.received();
    let mut summary: Vec<(SocketAddr, &str, &str, &str)> = received
        .iter()
        .map(|r| {
            let state = r.state.split(';').next().unwrap_or("");
            (r.from, r.method.as_str(), r.call_id.as_str(), state)
        })
        .collect();
    summary.sort_by_key(|&(from, method, call_id, _)| (from == b.sip, method, call_id));
    assert_eq!(
        summary,
        [
            (a_sip, "BYE", "call-y", ""),
            (a_sip, "NOTIFY", "sub-z", "active"),
            (b.sip, "BYE", "call-x", ""),
            (b.sip, "NOTIFY", "sub-z", "terminated"),
        ],
        "Z's first NOTIFY from A; Y's BYE from A at its stop; X's BYE from B at its \
         session's end and Z's last NOTIFY from B at its expiry; nothing else"
    );
    let y_bye = received
        .iter()
        .find(|r| r.call_id == "call-y")
        .expect("Y's BYE");
    assert!(y_bye.at >= stopped - Duration::from_secs(20) && y_bye.at <= stopped);
    // RFC 4028 §10: 90 s session, BYE min(32 s, 30 s) before its end: 60 s on.
    let x_bye = received
        .iter()
        .find(|r| r.call_id == "call-x")
        .expect("X's BYE")
        .at
        .duration_since(answered);
    assert!(
        x_bye >= Duration::from_secs(55) && x_bye <= Duration::from_secs(66),
        "X's BYE {x_bye:?} after the answer"
    );
    assert_eq!(b.metric("sipshard_dialogs", "state=\"confirmed\""), 0);
    let _ = std::fs::remove_dir_all(&dir);
    drop(x);
}

#[test]
fn a_node_whose_heartbeat_lapsed_drops_the_calls_a_peer_took_meanwhile() {
    let Some(redis) = Redis::start() else { return };
    let a = clustered_node_with(&redis, "node-a", "1", &[]);
    let caller = Caller::new();
    let _x = caller.call(a.sip, "call-lapse");
    assert_eq!(redis.wait_dialogs(1, Duration::from_secs(10)), 1);
    // As if node A had not renewed its heartbeat for 3 s and a peer had swept its call:
    // the peer owns the record, A's heartbeat is gone.
    redis.set_owner(&redis.dialog_keys(), "node-b");
    let mut c = redis.connection().expect("redis answers");
    let _: i64 = redis::cmd("DEL")
        .arg("sipshard:node:node-a")
        .query(&mut c)
        .expect("DEL");
    // A finds its heartbeat gone, writes its records again, is fenced, and lets go.
    let limit = Duration::from_secs(10);
    assert_eq!(
        wait_metric(&a, "sipshard_dialogs_released_total", "", 1, limit),
        1
    );
    assert!(a.metric("sipshard_shared_store_events_total", "event=\"resync\"") >= 1);
    assert_eq!(a.metric("sipshard_dialogs", "state=\"confirmed\""), 0);
    let owners: Vec<String> = redis.dialogs().into_iter().map(|(_, o, _)| o).collect();
    assert_eq!(owners, ["node-b"], "the peer's record stands");
}
