//! Every example in `examples/` runs to a successful end (cargo builds them for `cargo
//! test`; this runs the built binaries with a time limit and checks what they print).

use std::process::Command;
use std::time::{Duration, Instant};

/// Held by each test while its example runs: the examples are small load runs (one places
/// 2,000 calls), and five of them at once on two cores in a debug build starve the servers'
/// shards into their receive-overload 503s.
static ONE_EXAMPLE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_example(name: &str, expect: &str) {
    let _one_at_a_time = ONE_EXAMPLE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not built (cargo test builds examples)",
        path.display()
    );
    let mut child = Command::new(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("example starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(expect), "{name} printed:\n{stdout}");
}

#[test]
fn basic_dialog() {
    run_example("basic_dialog", "1 dialog(s) created, 0 left");
}

#[test]
fn outgoing_call() {
    run_example("outgoing_call", "call completed");
}

#[test]
fn registration_server() {
    run_example(
        "registration_server",
        "query:      SIP/2.0 200 OK / (no Contact)",
    );
}

#[test]
fn session_coordination() {
    run_example(
        "session_coordination",
        "policy applied: alice through, mallory busy",
    );
}

#[test]
fn multi_dialog() {
    run_example("multi_dialog", "2000/2000 calls completed");
}

#[test]
fn dialog_recovery() {
    run_example(
        "dialog_recovery",
        "done: 1 recovered, 1 ended with BYE, 0 left at bob",
    );
}
