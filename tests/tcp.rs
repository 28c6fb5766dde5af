//! SIP over TCP (RFC 3261 §18) against SIPp: calls into the server over one shared
//! connection (handed between shards by Call-ID) and over a connection per call, the
//! server's own BYE over the caller's connection (or to its Contact once that connection
//! is closed), calls placed through `DialogManager` to a SIPp callee listening on TCP, and
//! calls too large for UDP (§18.1.1).
//!
//! Bound to 127.0.0.1 on OS-chosen ports; bounded call counts and time limits. Without
//! sipp these tests skip loudly, except under `CI=true`, where they fail.

mod common;

use std::time::Duration;

use sipshard::transaction::Transport;

use common::calls::{AfterAnswer, place_calls_to_sipp_then, place_calls_with_sdp};
use common::peers::{
    Server, free_udp_port, run_sipp, sipp, spawn_sipp, sum_metric, wait_metric, wait_sipp,
};

/// SIPp's built-in uac over TCP in `mode` (`t1`: one connection for every call, `tn`: one
/// per call) against a two-shard server in each answering mode; every call must complete
/// and leave nothing behind. Returns each run's metrics text.
fn uac_over_tcp(sipp: &std::path::Path, mode: &str, calls: u32) -> Vec<String> {
    let mut texts = Vec::new();
    for answering in ["auto-answer", "app"] {
        let server = Server::start(&["--mode", answering, "--shards", "2"]);
        let count = calls.to_string();
        let run = run_sipp(
            sipp,
            &[
                "-sn",
                "uac",
                &server.sip.to_string(),
                "-t",
                mode,
                // tn: SIPp asks for 50,000 sockets unless told, over this machine's limit.
                "-max_socket",
                "1000",
                "-m",
                &count,
                "-r",
                "100",
                "-timeout",
                "60",
                "-timeout_error",
            ],
            Duration::from_secs(90),
        );
        run.assert_completed(calls, answering);
        wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10));
        let m = server.metrics();
        assert_eq!(sum_metric(&m, "sipshard_dialogs", ""), 0, "{answering}");
        assert_eq!(
            sum_metric(&m, "sipshard_requests_received_total", "method=\"INVITE\""),
            u64::from(calls),
            "{answering}: an INVITE retransmitted over TCP"
        );
        assert_eq!(sum_metric(&m, "sipshard_drops_total", ""), 0, "{answering}");
        // INVITE, ACK and BYE of every call came framed out of the stream.
        assert!(
            sum_metric(&m, "sipshard_tcp_events_total", "event=\"message_in\"")
                >= 3 * u64::from(calls),
            "{answering}: {m}"
        );
        assert_eq!(
            sum_metric(&m, "sipshard_tcp_events_total", "event=\"framing_error\""),
            0
        );
        // Nothing went out or came in over UDP: every response went back on the stream.
        assert_eq!(
            sum_metric(&m, "sipshard_datagrams_sent_total", ""),
            0,
            "{m}"
        );
        assert_eq!(sum_metric(&m, "sipshard_datagrams_received_total", ""), 0);
        texts.push(m);
        assert!(server.stop(), "{answering}: graceful stop exits 0");
    }
    texts
}

#[test]
fn sipp_calls_over_one_tcp_connection_shared_by_two_shards() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    for m in uac_over_tcp(&sipp, "t1", 300) {
        // One connection, accepted by one shard: the other shard's calls were handed over
        // and answered back through it.
        assert_eq!(
            sum_metric(&m, "sipshard_tcp_events_total", "event=\"accepted\""),
            1
        );
        assert_eq!(
            sum_metric(&m, "sipshard_tcp_events_total", "event=\"connected\""),
            0,
            "no connection of our own was needed"
        );
    }
}

#[test]
fn sipp_calls_over_a_tcp_connection_each() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    for m in uac_over_tcp(&sipp, "tn", 200) {
        assert_eq!(
            sum_metric(&m, "sipshard_tcp_events_total", "event=\"accepted\""),
            200
        );
        assert_eq!(
            sum_metric(&m, "sipshard_tcp_events_total", "event=\"connected\""),
            0
        );
    }
}

#[test]
fn the_servers_bye_goes_over_the_callers_tcp_connection() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let server = Server::start(&[
        "--mode",
        "auto-answer",
        "--shards",
        "2",
        "--stop-deadline-s",
        "1",
    ]);
    let scenario = format!(
        "{}/tests/data/sipp/bye_from_sut.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let caller = spawn_sipp(
        &sipp,
        free_udp_port(),
        &[
            "-sf",
            &scenario,
            &server.sip.to_string(),
            "-t",
            "t1",
            "-m",
            "5",
            "-timeout",
            "30",
            "-timeout_error",
        ],
        &std::env::temp_dir(),
    );
    let up = wait_metric(
        &server,
        "sipshard_dialogs",
        "state=\"confirmed\"",
        5,
        Duration::from_secs(20),
    );
    assert_eq!(up, 5, "the calls did not come up");
    assert!(server.stop(), "the server stops cleanly");
    let run = wait_sipp(caller, Duration::from_secs(30));
    run.assert_completed(5, "the caller of the calls the server ends");
}

#[test]
fn calls_placed_to_a_tcp_uri_open_a_connection_to_the_sipp_callee() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let stats = block_on(place_calls_to_sipp_then(
        &sipp,
        &["-sn", "uas", "-t", "t1"],
        50,
        AfterAnswer::Bye,
        Transport::Tcp,
    ));
    assert!(stats.io.tcp.connected >= 1, "{:?}", stats.io.tcp);
    assert_eq!(stats.io.datagrams_sent, 0, "nothing went over UDP");
    assert_eq!(stats.io.datagrams_received, 0);
}

/// An SDP offer over 1300 bytes (one stream, many formats).
fn large_sdp() -> bytes::Bytes {
    let mut sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n".to_vec();
    for pt in 96..150 {
        sdp.extend_from_slice(format!("a=rtpmap:{pt} opus/48000/2\r\n").as_bytes());
    }
    assert!(sdp.len() > 1300);
    bytes::Bytes::from(sdp)
}

#[test]
fn a_call_too_large_for_udp_to_a_tcp_callee_stays_on_tcp_as_its_contact_says() {
    // RFC 3261 §18.1.1: the INVITE to a plain URI goes over TCP for its size; SIPp over TCP
    // answers with a `;transport=TCP` Contact, so the ACK and BYE follow over TCP (RFC
    // 3263 §4.1): not one datagram either way.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let stats = block_on(place_calls_with_sdp(
        &sipp,
        &["-sn", "uas", "-t", "t1"],
        20,
        AfterAnswer::Bye,
        Transport::Udp,
        large_sdp(),
    ));
    let txn = stats.total.transactions;
    assert_eq!(txn.large_requests_over_tcp, 20, "{txn:?}");
    assert_eq!(txn.stream_fallbacks, 0, "{txn:?}");
    assert_eq!(stats.io.datagrams_sent, 0, "nothing went over UDP");
}

#[test]
fn a_call_too_large_for_udp_tries_tcp_and_falls_back_to_udp_at_a_udp_only_callee() {
    // RFC 3261 §18.1.1: an INVITE over 1300 bytes to a plain (UDP) URI goes over TCP; SIPp
    // in UDP mode refuses the connection, and the INVITE goes over UDP after all ("SHOULD
    // retry the request, using UDP"). The calls complete.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let stats = block_on(place_calls_with_sdp(
        &sipp,
        &["-sn", "uas"],
        20,
        AfterAnswer::Bye,
        Transport::Udp,
        large_sdp(),
    ));
    let txn = stats.total.transactions;
    assert_eq!(txn.large_requests_over_tcp, 20, "{txn:?}");
    assert_eq!(txn.stream_fallbacks, 20, "{txn:?}");
    assert!(stats.io.tcp.failures >= 1, "{:?}", stats.io.tcp);
}

/// Runs `calls` on a current-thread runtime.
fn block_on<F: std::future::Future>(calls: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(calls)
}

/// Reads whole messages from `conn` until one starts with `prefix`; returns it.
fn read_until(conn: &mut std::net::TcpStream, prefix: &str, limit: Duration) -> String {
    use sipshard::message::{Frame, next_frame};
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    let mut input = Vec::new();
    while std::time::Instant::now() < deadline {
        while let Ok(Frame::Message(n)) = next_frame(&input, 65_535) {
            let message = String::from_utf8(input.drain(..n).collect()).unwrap();
            if message.starts_with(prefix) {
                return message;
            }
        }
        let mut buf = [0u8; 4096];
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    panic!("no {prefix:?} within {limit:?}");
}

/// The value of header `name` in `message`.
fn header_of<'m>(message: &'m str, name: &str) -> &'m str {
    message
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

#[test]
fn the_servers_bye_reaches_a_caller_whose_connection_closed_at_its_contact() {
    // A caller whose TCP connection (from an ephemeral port) closed after the ACK: the
    // server's BYE at its stop cannot go back on that connection, nor to that port; it
    // goes to the request's next hop, the caller's Contact (RFC 3261 §12.2.1.1).
    use std::io::Write;
    let server = Server::start(&[
        "--mode",
        "auto-answer",
        "--shards",
        "2",
        "--stop-deadline-s",
        "0",
    ]);
    let contact = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = contact.local_addr().unwrap().port();
    let sip = server.sip;
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
    let mut conn = std::net::TcpStream::connect(sip).unwrap();
    let invite = format!(
        "INVITE sip:service@{sip};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKgone1\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:service@{sip}>\r\n\
         Call-ID: gone-source@test\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:alice@127.0.0.1:{port};transport=tcp>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    conn.write_all(invite.as_bytes()).unwrap();
    let ok = read_until(&mut conn, "SIP/2.0 200", Duration::from_secs(10));
    let to = header_of(&ok, "To");
    let ack = format!(
        "ACK sip:service@{sip};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKgone2\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: {to}\r\nCall-ID: gone-source@test\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    conn.write_all(ack.as_bytes()).unwrap();
    let up = wait_metric(
        &server,
        "sipshard_dialogs",
        "state=\"confirmed\"",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(up, 1, "the call is up");
    drop(conn);
    let closed = wait_metric(
        &server,
        "sipshard_tcp_events_total",
        "event=\"closed\"",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(closed, 1, "the server saw the connection close");

    // The caller, at its Contact: takes the BYE and answers it.
    let caller = std::thread::spawn(move || {
        // Bounded: a BYE that never comes fails the test instead of hanging it.
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut ready = [PollFd::new(contact.as_fd(), PollFlags::POLLIN)];
        let waited = poll(&mut ready, PollTimeout::from(20_000u16)).unwrap();
        assert_eq!(
            waited, 1,
            "no connection to the caller's Contact within 20 s"
        );
        let (mut conn, _) = contact.accept().unwrap();
        let bye = read_until(&mut conn, "BYE ", Duration::from_secs(15));
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            ok.push_str(&format!("{name}: {}\r\n", header_of(&bye, name)));
        }
        ok.push_str("Content-Length: 0\r\n\r\n");
        conn.write_all(ok.as_bytes()).unwrap();
        bye
    });
    assert!(server.stop(), "the server stops once its BYE is answered");
    let bye = caller.join().unwrap();
    assert!(
        bye.starts_with(&format!(
            "BYE sip:alice@127.0.0.1:{port};transport=tcp SIP/2.0"
        )),
        "{bye}"
    );
    assert!(header_of(&bye, "Via").starts_with("SIP/2.0/TCP "), "{bye}");
}
