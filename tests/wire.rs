//! Bad input on the wire: every RFC 4475 message sent as a datagram to the `sipshard`
//! binary gets what the RFC asks for (a response of the right class, or a counted drop),
//! and the server keeps serving. The same messages over TCP, a connection each, get their
//! answers on that connection, or close it when the stream cannot be framed (§18.3).
//!
//! Responses go where §18.2.2 says (the sent-by port of each message's Via, mostly 5060),
//! not to this test's socket, so the outcome is read from the server's own counters.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::peers::{Server, sum_metric};

/// What the server did with one datagram, from its counter deltas.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    /// Responses sent, by class 1xx..6xx.
    sent: [u64; 6],
    parse_drops: u64,
    stray: u64,
    /// Responses received (a response datagram that parsed).
    responses_in: u64,
    /// Requests absorbed as retransmissions, and responses sent again for them.
    absorbed: u64,
    resent: u64,
}

fn snapshot(server: &Server) -> (u64, Outcome) {
    let m = server.metrics();
    let mut o = Outcome::default();
    for (i, slot) in o.sent.iter_mut().enumerate() {
        *slot = sum_metric(
            &m,
            "sipshard_responses_sent_total",
            &format!("class=\"{}xx\"", i + 1),
        );
    }
    o.parse_drops = sum_metric(&m, "sipshard_drops_total", "reason=\"parse_error\"");
    o.stray = sum_metric(&m, "sipshard_drops_total", "reason=\"stray_response\"");
    o.responses_in = sum_metric(&m, "sipshard_responses_received_total", "");
    o.absorbed = sum_metric(&m, "sipshard_retransmissions_absorbed_total", "");
    o.resent = sum_metric(&m, "sipshard_retransmissions_total", "kind=\"response\"");
    (sum_metric(&m, "sipshard_datagrams_received_total", ""), o)
}

fn delta(a: Outcome, b: Outcome) -> Outcome {
    let mut d = Outcome::default();
    for i in 0..6 {
        d.sent[i] = b.sent[i] - a.sent[i];
    }
    d.parse_drops = b.parse_drops - a.parse_drops;
    d.stray = b.stray - a.stray;
    d.responses_in = b.responses_in - a.responses_in;
    d.absorbed = b.absorbed - a.absorbed;
    d.resent = b.resent - a.resent;
    d
}

/// Marks a file the server must treat as a retransmission.
const RETRANSMISSION: usize = 0;

/// The response class RFC 4475 asks of an endpoint for this file, or `None` for "drop or
/// discard" (responses, and framing errors the RFC says to discard).
fn expected_class(file: &str) -> Option<usize> {
    match file {
        // Valid requests an auto-answer endpoint serves: INVITE → 180/200, others 2xx
        // (OPTIONS; MESSAGE outside a dialog, RFC 3428, multipart body and all: RFC 4475
        // §3.1.1.11) or 4xx (REGISTER is no method of auto-answer mode: 405).
        "esc01.dat" | "lwsdisp.dat" | "longreq.dat" | "semiuri.dat" | "transports.dat"
        | "inv2543.dat" | "mpart01.dat" => Some(2),
        // OPTIONS outside a dialog: 200. badbranch's bare magic cookie falls back to
        // RFC 2543 matching, which RFC 4475 §3.2.1 allows (or a 400).
        "zeromf.dat" | "badbranch.dat" => Some(2),
        // It carries a To tag: a request in a dialog we do not have, 481.
        "wsinv.dat" => Some(4),
        "escnull.dat" | "dblreq.dat" | "cparam01.dat" | "regescrt.dat" | "regaut01.dat" => Some(4),
        // Extension methods an endpoint does not know: 501 with Allow (§3.1.1.2, §3.1.1.5;
        // §3.1.2.18 prefers 501 to the 400 its CSeq mismatch would also earn).
        "intmeth.dat" | "esc02.dat" | "mismatch02.dat" => Some(5),
        // §3.3.6: an INVITE body of a type the endpoint cannot read gets 415.
        "invut.dat" => Some(4),
        // §3.1.2 and §3.3: refused with a 4xx (400, 416, 420, …) or 505.
        "badinv01.dat" | "clerr.dat" | "scalar02.dat" | "quotbal.dat" | "ltgtruri.dat"
        | "lwsruri.dat" | "lwsstart.dat" | "trws.dat" | "escruri.dat" | "baddate.dat"
        | "regbadct.dat" | "badaspec.dat" | "baddn.dat" | "mismatch01.dat" | "insuf.dat"
        | "unkscm.dat" | "unksm2.dat" | "bext01.dat" | "multi01.dat" | "sdp01.dat" | "ncl.dat"
        | "mcl01.dat" => Some(4),
        "badvers.dat" => Some(5),
        // Responses: discarded (they match nothing here). test.dat has no SIP version in
        // its request line: no response can be formed.
        "scalarlg.dat" | "bigcode.dat" | "unreason.dat" | "noreason.dat" | "bcast.dat"
        | "test.dat" => None,
        // Same branch, sent-by and method as an earlier file (unkscm.dat, cparam01.dat):
        // a retransmission of that request, §17.2.3, answered by repeating its response.
        "novelsc.dat" | "cparam02.dat" => Some(RETRANSMISSION),
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn every_rfc4475_message_gets_its_answer_and_the_server_keeps_serving() {
    let server = Server::start(&[
        "--mode",
        "auto-answer",
        "--shards",
        "2",
        "--stop-deadline-s",
        "1",
    ]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rows = common::manifest("rfc4475/manifest.tsv");
    assert!(rows.len() >= 50, "manifest lists the 50 files");
    let mut report = Vec::new();
    for row in &rows {
        let file = row[0].as_str();
        let datagram = common::read(&format!("rfc4475/{file}"));
        let (received_before, before) = snapshot(&server);
        client.send_to(&datagram, server.sip).unwrap();
        // Wait until the server has read it, then for its answer to be counted.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut after = before;
        while Instant::now() < deadline {
            let (received, now) = snapshot(&server);
            after = now;
            if received > received_before && after != before {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let d = delta(before, after);
        let answered: Vec<usize> = (0..6).filter(|&i| d.sent[i] > 0).map(|i| i + 1).collect();
        let dropped = d.parse_drops + d.stray;
        let ok = match expected_class(file) {
            Some(RETRANSMISSION) => answered.is_empty() && d.absorbed == 1 && d.resent == 1,
            Some(class) => {
                answered.contains(&class) && answered.iter().all(|&c| c == class || c == 1)
            }
            None => answered.is_empty() && (dropped > 0 || d.responses_in > 0),
        };
        report.push(format!(
            "{file:16} expected {:?} answered {answered:?} drops {dropped} {d:?} ok={ok}",
            expected_class(file)
        ));
    }
    let failed: Vec<&String> = report.iter().filter(|l| l.ends_with("ok=false")).collect();
    assert!(failed.is_empty(), "{}", report.join("\n"));

    // Still serving: an OPTIONS with rport comes back to us with 200.
    let options = format!(
        "OPTIONS sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {1};rport;branch=z9hG4bK-wire-1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@{1}>;tag=w1\r\nTo: <sip:{0}>\r\nCall-ID: wire-check\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        server.sip,
        client.local_addr().unwrap()
    );
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(options.as_bytes(), server.sip).unwrap();
    // Files whose Via asked for rport were answered to this socket too: skip those.
    let mut buf = [0u8; 4096];
    let answer = loop {
        let (n, _) = client
            .recv_from(&mut buf)
            .expect("the server still answers");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains("Call-ID: wire-check") {
            break text;
        }
    };
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(server.stop(), "graceful stop after the torture run");
}

/// What came back on one TCP connection: the status codes of whole responses, in order,
/// and whether the server closed the connection.
/// Reads until a final response of class `until` came, the connection closed, or `limit`.
fn answers_on(
    conn: &mut std::net::TcpStream,
    limit: Duration,
    until: Option<usize>,
) -> (Vec<u16>, bool) {
    use sipshard::message::{Frame, next_frame};
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut input, mut codes, mut closed) = (Vec::new(), Vec::new(), false);
    let deadline = Instant::now() + limit;
    let done = |codes: &[u16]| {
        until.is_some_and(|class| {
            codes
                .iter()
                .any(|&c| c >= 200 && usize::from(c / 100) == class)
        })
    };
    while Instant::now() < deadline && !done(&codes) {
        let mut buf = [0u8; 4096];
        match conn.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
        while let Ok(Frame::Message(n)) = next_frame(&input, 65_535) {
            let response = input.drain(..n).collect::<Vec<u8>>();
            let code = response
                .get(8..11)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse().ok());
            codes.push(code.expect("the server sends whole, parseable responses"));
        }
    }
    (codes, closed)
}

#[test]
fn every_rfc4475_message_over_tcp_is_answered_on_its_connection_or_closes_it() {
    use sipshard::message::{Frame, next_frame};
    use std::io::Write;
    let server = Server::start(&["--mode", "auto-answer", "--shards", "2"]);
    let rows = common::manifest("rfc4475/manifest.tsv");
    let mut report = Vec::new();
    let mut kept_open = Vec::new();
    for row in &rows {
        let file = row[0].as_str();
        let bytes = common::read(&format!("rfc4475/{file}"));
        let mut conn = std::net::TcpStream::connect(server.sip).unwrap();
        conn.write_all(&bytes).unwrap();
        // Over a stream the Content-Length decides where the message ends (§18.3): one
        // that says more than was sent leaves the server waiting for the rest, one that
        // cannot be read (negative, two that disagree) gets its 400 and ends the
        // connection; past a whole
        // message, whatever follows is the start of the next.
        let framing = next_frame(&bytes, 65_535);
        let limit = match (framing, expected_class(file)) {
            (Ok(Frame::Incomplete), _) => Duration::from_millis(500),
            // Closed after a 2 s grace for the answers to what came before the error.
            (Err(_), _) => Duration::from_secs(5),
            (_, None | Some(RETRANSMISSION)) => Duration::from_secs(1),
            _ => Duration::from_secs(5),
        };
        // An unframeable one is read to its close.
        let until = expected_class(file)
            .filter(|&c| c != RETRANSMISSION)
            .filter(|_| framing.is_ok());
        let (codes, closed) = answers_on(&mut conn, limit, until);
        let class = |c: &u16| usize::from(c / 100);
        let ok = match (framing, expected_class(file)) {
            // A request that cannot be framed gets 400 (513 when too large) with the
            // reason, then the connection closes.
            (Err(e), _) => closed && codes == [e.status().0],
            (Ok(Frame::Incomplete), _) => !closed && codes.is_empty(),
            // A request that repeats an earlier one's branch (another connection) matches
            // that transaction, whose response goes back on the earlier connection: here,
            // nothing, or (once the earlier transaction ended) a fresh answer.
            (_, Some(RETRANSMISSION)) => !closed,
            (_, None) => !closed && codes.is_empty(),
            // Over a stream, the INVITE after dblreq's REGISTER is a message of its own
            // (over UDP it is discarded with the rest of the datagram): both are answered.
            (_, Some(want)) if file == "dblreq.dat" => codes.iter().any(|c| class(c) == want),
            (_, Some(want)) => {
                !closed
                    && codes.iter().any(|c| class(c) == want)
                    && codes.iter().all(|c| class(c) == want || class(c) == 1)
            }
        };
        report.push(format!(
            "{file:16} framing {framing:?} expected {:?} got {codes:?} closed {closed} ok={ok}",
            expected_class(file)
        ));
        if !closed {
            kept_open.push(conn);
        }
    }
    let failed: Vec<&String> = report.iter().filter(|l| l.ends_with("ok=false")).collect();
    assert!(failed.is_empty(), "{}", report.join("\n"));
    let m = server.metrics();
    assert!(sum_metric(&m, "sipshard_tcp_events_total", "event=\"framing_error\"") >= 2);
    drop(kept_open);
    assert!(
        server.stop(),
        "graceful stop after the torture run over TCP"
    );
}

#[test]
fn a_stream_request_that_cannot_be_framed_gets_its_reason_then_the_connection_closes() {
    use std::io::{Read, Write};
    let server = Server::start(&["--mode", "auto-answer", "--shards", "1"]);
    let request = |content_length: &str| {
        format!(
            "OPTIONS sip:service@{0} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKnocl\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:service@{0}>\r\nCall-ID: nocl@test\r\n\
CSeq: 1 OPTIONS\r\n{content_length}\r\n",
            server.sip
        )
    };
    // §18.3, §20.14: no Content-Length on a stream; one beyond the 64 KiB limit (§21.5.14).
    for (content_length, want) in [
        ("", "SIP/2.0 400 Missing Content-Length\r\n"),
        (
            "Content-Length: 100000\r\n",
            "SIP/2.0 513 Message Too Large\r\n",
        ),
    ] {
        let mut conn = std::net::TcpStream::connect(server.sip).unwrap();
        conn.write_all(request(content_length).as_bytes()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        // The server answers, then closes the connection after its grace period.
        conn.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with(want), "{answer}");
        assert!(answer.contains("Call-ID: nocl@test\r\n"), "{answer}");
        assert!(answer.contains("CSeq: 1 OPTIONS\r\n"), "{answer}");
    }
    assert!(server.stop());
}
