//! The generator against itself on loopback: `uas` answers, `uac` calls; the JSON result,
//! the report files, `compare`, and the `--max-failed` exit status.

use std::io::BufRead;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sipshard-load");

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn uas(port: u16, extra: &[&str]) -> Child {
    let mut child = Command::new(BIN)
        .args([
            "uas",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--duration",
            "30s",
            "--shards",
            "1",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once it says where it listens (printed after the sockets are bound); the rest
    // of its stderr is drained so it can never block on a full pipe.
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("sipshard-load on udp:"));
    assert!(ready, "the uas did not start");
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn uac(port: u16, dir: &std::path::Path, name: &str, extra: &[&str]) -> (bool, serde_json::Value) {
    let json = dir.join(format!("{name}.json"));
    // `extra` may set its own rate and call count.
    let defaults: &[&str] = if extra.contains(&"--rate") {
        &[]
    } else {
        &["--rate", "500", "--calls", "1000"]
    };
    let mut child = Command::new(BIN)
        .args(["uac", "--target", &format!("127.0.0.1:{port}")])
        .args(defaults)
        .args(["--shards", "2", "--json"])
        .arg(&json)
        .arg("--report")
        .arg(dir.join(format!("{name}.html")))
        .arg("--hgrm")
        .arg(dir.join(format!("{name}.hgrm")))
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "uac did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&json).unwrap();
    (status.success(), serde_json::from_str(&text).unwrap())
}

#[test]
fn calls_against_the_own_uas_with_results_reports_and_gating() {
    let dir = std::env::temp_dir().join(format!("sipshard-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let port = free_port();
    let mut answering = uas(port, &[]);
    let (ok, r) = uac(port, &dir, "a", &["--max-failed", "0"]);
    let _ = answering.kill();
    let _ = answering.wait();
    assert!(ok, "{r}");
    assert_eq!(r["established"], 1000);
    assert_eq!(r["failed"], 0);
    let rate = r["achieved_rate"].as_f64().unwrap();
    assert!((400.0..=600.0).contains(&rate), "achieved_rate {rate}");
    let p = &r["latency_ms"]["invite_to_200"];
    assert!(
        p["count"].as_u64().unwrap() > 0 && p["p50"].as_f64().unwrap() > 0.0,
        "{p}"
    );
    let html = std::fs::read_to_string(dir.join("a.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("1000</b> established"));
    let hgrm = std::fs::read_to_string(dir.join("a.hgrm")).unwrap();
    assert!(hgrm.contains("Percentile") && hgrm.contains("Total count"));

    // Half the calls refused with 486: the run fails the gate, and says why.
    let port = free_port();
    let mut refusing = uas(port, &["--answer-ratio", "0.5", "--failure-codes", "486"]);
    let (ok, r) = uac(port, &dir, "b", &["--max-failed", "0.01"]);
    let _ = refusing.kill();
    let _ = refusing.wait();
    assert!(!ok, "the failure ratio is over the gate");
    let refused = r["failed_by_code"]["486"].as_u64().unwrap();
    assert!((350..=650).contains(&refused), "{refused} refused");
    assert_eq!(refused + r["established"].as_u64().unwrap(), 1000);

    let out = Command::new(BIN)
        .arg("compare")
        .arg(dir.join("a.json"))
        .arg(dir.join("b.json"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("achieved_rate") && text.contains("invite_to_200 p99"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn register_options_reinvite_subscribe_and_cancel_scenarios() {
    let dir = std::env::temp_dir().join(format!("sipshard-load-scn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut answering = uas(port, &["--registrar"]);
    let ringing_port = free_port();
    let mut ringing = uas(ringing_port, &["--ring", "10s"]);
    let runs = [
        ("register", port, "request_to_final", vec![]),
        ("options", port, "request_to_final", vec![]),
        ("reinvite", port, "invite_to_200", vec![]),
        ("subscribe", port, "request_to_final", vec![]),
        // Calls and REGISTERs over TCP: a connection per generator shard, reused.
        ("basic", port, "invite_to_200", vec!["--transport", "tcp"]),
        (
            "register",
            port,
            "request_to_final",
            vec!["--transport", "tcp"],
        ),
        (
            "cancel",
            ringing_port,
            "request_to_final",
            vec!["--cancel-after", "50ms"],
        ),
    ];
    let mut results = Vec::new();
    for (scenario, port, headline, extra) in runs {
        let mut args = vec!["--scenario", scenario, "--rate", "400", "--calls", "400"];
        args.extend(extra);
        let name = format!("{scenario}-{}", results.len());
        results.push((scenario, headline, uac(port, &dir, &name, &args)));
    }
    for child in [&mut answering, &mut ringing] {
        let _ = child.kill();
        let _ = child.wait();
    }
    for (scenario, headline, (ok, r)) in results {
        assert!(ok, "{scenario}: {r}");
        let over_tcp = r["transport"] == "tcp";
        assert_eq!(
            r["scenario"].as_str().unwrap().split('-').next(),
            Some(scenario.split('-').next().unwrap())
        );
        assert_eq!(r["established"], 400, "{scenario}: {r}");
        assert_eq!(r["failed"], 0, "{scenario}");
        assert_eq!(r["headline"], headline, "{scenario}");
        let p = &r["latency_ms"][headline];
        assert!(p["count"].as_u64().unwrap() > 0, "{scenario}: {p}");
        if over_tcp {
            // Nothing is retransmitted over a reliable transport.
            assert_eq!(r["retransmissions"], 0, "{scenario} over TCP: {r}");
        }
        if scenario == "reinvite" {
            // Every call's re-INVITE was answered and measured.
            let all: u64 = r["intervals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    i["latency_ms"]["request_to_final"]["count"]
                        .as_u64()
                        .unwrap()
                })
                .sum();
            assert_eq!(all, 400, "re-INVITEs measured");
        }
        if scenario == "subscribe" {
            // Every subscription ended by the notifier's NOTIFY after our Expires: 0.
            assert_eq!(r["completed"], 400, "{r}");
            assert!(r["latency_ms"]["bye_to_200"]["count"].as_u64().unwrap() > 0);
        }
        if scenario == "cancel" {
            // Cancelled before the 10 s ring time: nothing was answered.
            assert_eq!(r["latency_ms"]["invite_to_200"]["count"], 0);
            assert!(r["latency_ms"]["invite_to_180"]["count"].as_u64().unwrap() > 0);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kernel-floor` answers an INVITE with 180 and 200 and a BYE with 200, copying the
/// request's Via, From, Call-ID and CSeq and tagging the To, then reports its CPU time.
#[test]
fn kernel_floor_answers_invite_and_bye() {
    let port = free_port();
    let mut floor = Command::new(env!("CARGO_BIN_EXE_kernel-floor"))
        .args([&format!("127.0.0.1:{port}"), "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(floor.stdout.take().unwrap()).lines();
    let ready = out.next().and_then(Result::ok).unwrap_or_default();
    assert!(ready.starts_with("kernel-floor on udp:"), "{ready}");
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    caller
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = |method: &str, to: &str| {
        format!(
            "{method} sip:floor@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{method}\r\n\
From: <sip:a@127.0.0.1>;tag=f1\r\nTo: {to}\r\nCall-ID: floor-1\r\nCSeq: 1 {method}\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let mut answers = Vec::new();
    let mut buf = [0u8; 2048];
    caller
        .send_to(
            request("INVITE", "<sip:floor@127.0.0.1>").as_bytes(),
            ("127.0.0.1", port),
        )
        .unwrap();
    for _ in 0..2 {
        let (n, _) = caller.recv_from(&mut buf).unwrap();
        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    caller
        .send_to(
            request("BYE", "<sip:floor@127.0.0.1>;tag=floor").as_bytes(),
            ("127.0.0.1", port),
        )
        .unwrap();
    let (n, _) = caller.recv_from(&mut buf).unwrap();
    answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    let first_lines: Vec<&str> = answers.iter().map(|a| a.lines().next().unwrap()).collect();
    assert_eq!(
        first_lines,
        ["SIP/2.0 180 Ringing", "SIP/2.0 200 OK", "SIP/2.0 200 OK"]
    );
    for a in &answers {
        assert!(
            a.contains("Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK"),
            "{a}"
        );
        assert!(
            a.contains("Call-ID: floor-1\r\n") && a.contains(";tag=floor\r\n"),
            "{a}"
        );
        assert!(a.ends_with("Content-Length: 0\r\n\r\n"), "{a}");
    }
    assert!(
        answers[2].contains("To: <sip:floor@127.0.0.1>;tag=floor\r\n"),
        "no second tag"
    );
    let report = out.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        report.starts_with("kernel-floor answered 1 INVITEs and 1 BYEs; CPU"),
        "{report}"
    );
    assert!(floor.wait().unwrap().success());
}
