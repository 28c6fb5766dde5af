//! Dialogs that survive `kill -9` (issue 22), with real processes: `sipshard serve
//! --state-dir` is killed with SIGKILL while SIPp holds its calls, started again on the
//! same port and directory, and answers every BYE as if it had never gone.

mod common;

use std::time::{Duration, Instant};

use common::peers::{
    Server, exchange, free_udp_port, register, sipp, spawn_sipp, wait_metric, wait_sipp,
};

/// A fresh state directory under the system's temporary one.
fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sipshard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A server in `mode` (UDP only) that persists into a fresh directory named after `name`,
/// on a port it keeps across restarts.
struct Persisting {
    dir: std::path::PathBuf,
    listen: String,
    args: Vec<String>,
}

impl Persisting {
    fn new(name: &str, mode: &str, more: &[&str]) -> Persisting {
        let dir = state_dir(name);
        let mut args: Vec<String> = ["--mode", mode, "--no-tcp", "--state-dir"]
            .map(String::from)
            .into();
        args.push(dir.to_str().expect("a UTF-8 temporary path").to_owned());
        args.extend(more.iter().map(|a| a.to_string()));
        Persisting {
            dir,
            listen: format!("127.0.0.1:{}", free_udp_port()),
            args,
        }
    }

    /// Starts it (again) on its port and directory.
    fn start(&self) -> Server {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Server::start_at(&self.listen, &args)
    }
}

/// Starts SIPp with `args` against `server` and waits until `calls` dialogs are confirmed
/// there (within `limit`); returns SIPp, still running.
fn sipp_with_calls_up(
    sipp: &std::path::Path,
    server: &Server,
    args: &[&str],
    calls: u64,
    limit: Duration,
) -> std::process::Child {
    let child = spawn_sipp(sipp, free_udp_port(), args, &std::env::temp_dir());
    let confirmed = wait_metric(
        server,
        "sipshard_dialogs",
        "state=\"confirmed\"",
        calls,
        limit,
    );
    assert_eq!(confirmed, calls, "every call is up before the kill");
    child
}

impl Drop for Persisting {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn calls_held_across_a_kill_9_of_the_callee_all_end_with_200() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let callee = Persisting::new("kill9-callee", "auto-answer", &["--shards", "2"]);
    let listen = callee.listen.clone();
    let server = callee.start();
    // SIPp's uac: 2,000 calls at 200 per second, each held 20 s after its ACK, then BYE.
    let calls = 2000u64;
    let child = sipp_with_calls_up(
        &sipp,
        &server,
        &[
            "-sn",
            "uac",
            &listen,
            "-m",
            "2000",
            "-r",
            "200",
            "-d",
            "20000",
            "-timeout",
            "90",
            "-timeout_error",
        ],
        calls,
        Duration::from_secs(30),
    );
    let killed_at = Instant::now();
    server.kill();

    let server = callee.start();
    assert_eq!(
        server.metric("sipshard_dialogs_restored_total", ""),
        calls,
        "every confirmed call came back"
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(8),
        "the restart took {:?}: the calls' BYEs may have come while it was down",
        killed_at.elapsed()
    );
    let run = wait_sipp(child, Duration::from_secs(120));
    run.assert_completed(calls as u32, "SIPp across the restart");
    assert_eq!(run.failed_calls, 0, "{}", run.screen);
    assert_eq!(
        wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
        0,
        "every recovered call ended"
    );
    let m = server.metrics();
    assert_eq!(
        common::peers::sum_metric(&m, "sipshard_requests_received_total", "method=\"BYE\""),
        calls
    );
    assert_eq!(
        common::peers::sum_metric(&m, "sipshard_store_events_total", "event=\"write_error\""),
        0
    );
    assert!(server.stop(), "graceful stop exits 0");
}

/// The built example `name` (cargo builds the examples for `cargo test`).
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples")
        .join(name)
}

#[test]
fn calls_placed_by_a_dialog_manager_killed_with_9_are_ended_by_its_restart() {
    use std::io::BufRead;
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let dir = state_dir("kill9-caller");
    let calls = 200;
    // SIPp's uas answers each call and waits for its BYE.
    let uas_port = free_udp_port();
    let uas = spawn_sipp(
        &sipp,
        uas_port,
        &[
            "-sn",
            "uas",
            "-m",
            &calls.to_string(),
            "-timeout",
            "90",
            "-timeout_error",
        ],
        &std::env::temp_dir(),
    );
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let target = format!("127.0.0.1:{uas_port}");
    let state = dir.to_str().expect("a UTF-8 temporary path");
    let binary = example("dialog_recovery");
    assert!(binary.is_file(), "{} not built", binary.display());
    let mut caller = std::process::Command::new(&binary)
        .args(["place", &target, &calls.to_string(), &listen, state])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the example starts");
    let stdout = caller.stdout.take().expect("piped");
    let first = std::io::BufReader::new(stdout)
        .lines()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    assert_eq!(
        first,
        format!("confirmed {calls}"),
        "every call answered before the kill"
    );
    // kill -9.
    caller.kill().expect("SIGKILL");
    caller.wait().expect("reaped");

    let out = std::process::Command::new(&binary)
        .args(["recover", &listen, state])
        .output()
        .expect("the example runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("recovered {calls}")), "{text}");
    assert!(text.contains(&format!("ended {calls}, 0 left")), "{text}");
    let run = wait_sipp(uas, Duration::from_secs(60));
    run.assert_completed(calls, "SIPp's uas");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `request` from `socket` to `to` and returns the final response's text.
#[test]
fn registrar_bindings_made_before_a_kill_9_are_listed_after_it() {
    let registrar = Persisting::new("kill9-registrar", "registrar", &[]);
    let listen = registrar.listen.clone();
    let server = registrar.start();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a client socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a timeout");
    let local = socket.local_addr().expect("its address");
    let ok = exchange(
        &socket,
        &listen,
        &register(
            &listen,
            local,
            "reg-1",
            7,
            Some("<sip:bob@192.0.2.10:5060>"),
        ),
    );
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    server.kill();

    let server = registrar.start();
    assert_eq!(server.metric("sipshard_bindings_restored_total", ""), 1);
    // A query (no Contact) from another UA lists the binding (§10.3 step 8).
    let listed = exchange(
        &socket,
        &listen,
        &register(&listen, local, "query-1", 1, None),
    );
    assert!(listed.starts_with("SIP/2.0 200"), "{listed}");
    assert!(listed.contains("sip:bob@192.0.2.10:5060"), "{listed}");
    // The binding's Call-ID and CSeq came back too: a replay of CSeq 7 is out of order.
    let replay = exchange(
        &socket,
        &listen,
        &register(
            &listen,
            local,
            "reg-1",
            7,
            Some("<sip:bob@192.0.2.10:5060>"),
        ),
    );
    assert!(replay.starts_with("SIP/2.0 500"), "{replay}");
    assert!(server.stop(), "graceful stop exits 0");
}

/// A small tmpfs mounted for a test, unmounted when dropped; `None` where this process may
/// not mount (not root, or no such privilege in this sandbox).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(name: &str, size: &str) -> Option<SmallDisk> {
        let dir = state_dir(name);
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_disk_leaves_calls_going_and_counts_the_failed_writes() {
    let Some(sipp) = sipp() else { return };
    let Some(disk) = SmallDisk::mount("full-disk", "1m") else {
        eprintln!("\n*** SKIPPED: cannot mount a tmpfs here (needs root) ***\n");
        return;
    };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let log_path = disk.0.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("a log file");
    let state = disk.0.join("state");
    let server = Server::start_with(
        &[
            "--mode",
            "auto-answer",
            "--no-tcp",
            "--state-dir",
            state.to_str().expect("a UTF-8 temporary path"),
        ],
        std::process::Stdio::from(log),
    );
    // 3,000 short calls: their records fill the 1 MB disk long before the last one.
    let run = common::peers::run_sipp(
        &sipp,
        &[
            "-sn",
            "uac",
            &server.sip.to_string(),
            "-m",
            "3000",
            "-r",
            "500",
            "-timeout",
            "60",
            "-timeout_error",
        ],
        Duration::from_secs(90),
    );
    run.assert_completed(3000, "3,000 calls on a full disk");
    assert_eq!(run.failed_calls, 0, "{}", run.screen);
    let errors = server.metric("sipshard_store_events_total", "event=\"write_error\"");
    assert!(errors > 0, "the disk filled up and writes failed");
    assert!(server.stop(), "graceful stop exits 0");
    // Logged once per 10 s per shard, not once per failed batch.
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let logged = text.matches("dialog store write failed").count() as u64;
    assert!(
        (1..=4).contains(&logged),
        "{logged} log lines for {errors} failed batches:\n{text}"
    );
    let _ = std::fs::remove_file(&log_path);
}

#[test]
fn a_session_timer_ends_a_restored_call_at_its_written_deadline() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let callee = Persisting::new(
        "kill9-session-timer",
        "auto-answer",
        &["--session-timers", "accept"],
    );
    let server = callee.start();
    // 20 calls whose 90 s session SIPp is to refresh and never does: the callee's BYE is
    // due 60 s after its 200 (RFC 4028 §10).
    let scenario = format!(
        "{}/tests/data/sipp/session_timer_unrefreshed.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let calls = 20u64;
    let child = sipp_with_calls_up(
        &sipp,
        &server,
        &[
            "-sf",
            &scenario,
            &callee.listen,
            "-m",
            "20",
            "-r",
            "20",
            "-timeout",
            "150",
            "-timeout_error",
        ],
        calls,
        Duration::from_secs(10),
    );
    let answered = Instant::now();
    // Killed 20 s into the session: a timer started afresh by the restart would BYE at
    // 80 s, the written deadline says 60.
    std::thread::sleep(Duration::from_secs(20));
    server.kill();
    let server = callee.start();
    assert_eq!(server.metric("sipshard_dialogs_restored_total", ""), calls);
    let run = wait_sipp(child, Duration::from_secs(120));
    let took = answered.elapsed();
    run.assert_completed(calls as u32, "SIPp across the restart");
    assert!(
        took >= Duration::from_secs(50) && took <= Duration::from_secs(72),
        "the BYEs came {took:?} after the 200s; due at 60 s"
    );
    assert_eq!(
        wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
        0
    );
    assert!(server.stop(), "graceful stop exits 0");
}
