//! `kernel-floor`: the least a UDP callee can do for SIPp's basic call, to measure what the
//! kernel alone costs per call on a machine.
//!
//! One thread, one blocking socket, no SIP stack: for each INVITE it sends a 180 and a 200
//! (the request's Via, From, Call-ID and CSeq lines copied, a fixed To tag), for each BYE a
//! 200, and nothing for anything else. No retransmissions, no state, no checks: it answers
//! SIPp's `uac` scenario on loopback and nothing more. Its CPU time per call under that load
//! is the floor under any real server's figure (BENCHMARKS.md, "the kernel floor").
//!
//! ```text
//! kernel-floor 127.0.0.1:5090 [SECONDS]
//! ```
//! It prints `kernel-floor on udp:<addr>`, serves for SECONDS (default 60), then prints its
//! own CPU time (utime and stime from getrusage) and the number of calls it answered.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:5090".to_owned());
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let socket = UdpSocket::bind(&listen)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    println!("kernel-floor on udp:{}", socket.local_addr()?);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(1_024);
    let (mut calls, mut byes) = (0u64, 0u64);
    while Instant::now() < end {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let request = &buf[..n];
        if request.starts_with(b"INVITE ") {
            for (code, reason) in [(180, "Ringing"), (200, "OK")] {
                response(&mut out, request, code, reason);
                socket.send_to(&out, peer)?;
            }
            calls += 1;
        } else if request.starts_with(b"BYE ") {
            response(&mut out, request, 200, "OK");
            socket.send_to(&out, peer)?;
            byes += 1;
        }
    }
    let (user, system) = cpu_seconds();
    println!(
        "kernel-floor answered {calls} INVITEs and {byes} BYEs; CPU user {user:.3} s system {system:.3} s"
    );
    Ok(())
}

/// A response copying the request's Via, From, Call-ID and CSeq lines, with a To tag.
fn response(out: &mut Vec<u8>, request: &[u8], code: u16, reason: &str) {
    out.clear();
    out.extend_from_slice(format!("SIP/2.0 {code} {reason}\r\n").as_bytes());
    for line in request.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let name_end = line.iter().position(|&b| b == b':').unwrap_or(0);
        let name = &line[..name_end];
        let copy = ["Via", "v", "From", "f", "Call-ID", "i", "CSeq"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()));
        if copy {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        } else if name.eq_ignore_ascii_case(b"To") || name.eq_ignore_ascii_case(b"t") {
            out.extend_from_slice(line);
            if !line.windows(5).any(|w| w.eq_ignore_ascii_case(b";tag=")) {
                out.extend_from_slice(b";tag=floor");
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Contact: <sip:floor@127.0.0.1>\r\nContent-Length: 0\r\n\r\n");
}

/// This process's user and system CPU seconds, from /proc/self/stat (Linux).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / tick
    };
    (get(11), get(12))
}
