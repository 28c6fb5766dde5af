//! SIP over TCP (RFC 3261 §18) against SIPp: calls into the server over one shared
//! connection (handed between shards by Call-ID) and over a connection per call, the
//! server's own BYE over the caller's connection, and calls placed through
//! `DialogManager` to a SIPp callee listening on TCP.
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
