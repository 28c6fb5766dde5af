//! Real peers for interop tests: the `sipshard` binary as a child process, and SIPp.
//!
//! Everything binds to 127.0.0.1 on ports the OS picks (SIPp's port is found by binding
//! and releasing a UDP socket just before it starts). Every child is killed on drop and
//! every run has a time limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Held by each SIPp test for its whole run: on two cores, two SIPp load runs at once
/// (say the 4-shard 10,000-call test beside another) delay datagrams past T1, and
/// SIPp's scripted scenarios cannot take a retransmission they did not script.
static ONE_SIPP_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the SIPp run lock (see [`ONE_SIPP_RUN_AT_A_TIME`]); a test that panicked while
/// holding it does not stop the others.
pub fn sipp_run_lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_SIPP_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sipp binary, or `None` (with a loud message) where a skip is allowed: under
/// `CI=true` a missing sipp fails the test, because `.ci/run` installs it.
pub fn sipp() -> Option<PathBuf> {
    required_tool("sipp", "sip-tester")
}

/// `program` on the PATH, or `None` with a loud message where a skip is allowed: under
/// `CI=true` a missing one fails the test, because `.ci/run` installs its Debian
/// `package`.
pub fn required_tool(program: &str, package: &str) -> Option<PathBuf> {
    required_tool_in(program, package, &[])
}

/// [`required_tool`], looking in the directories `also` after the PATH.
pub fn required_tool_in(program: &str, package: &str, also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(also.iter().map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is not installed, and CI=true: .ci/run must install {package}"
        );
        eprintln!("\n*** SKIPPED: {program} not found on PATH (apt-get install {package}) ***\n");
    }
    found
}

/// A `sipshard serve` child process.
pub struct Server {
    child: Child,
    /// Its SIP address.
    pub sip: SocketAddr,
    /// Its metrics address, when asked for.
    pub metrics: Option<SocketAddr>,
}

impl Server {
    /// Starts `sipshard serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0 <args>` and waits
    /// for it to print its addresses.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(args, Stdio::inherit())
    }

    /// As [`Server::start`], its log (stderr, at `warn`) going to `stderr`.
    pub fn start_with(args: &[&str], stderr: Stdio) -> Server {
        Server::start_under(&[], args, stderr)
    }

    /// As [`Server::start_with`], run by `wrapper` (`prlimit --nofile=64`, say).
    pub fn start_under(wrapper: &[&str], args: &[&str], stderr: Stdio) -> Server {
        Server::spawn(wrapper, "127.0.0.1:0", args, stderr)
    }

    /// As [`Server::start`], on `listen` (a restart on the address a killed one had).
    pub fn start_at(listen: &str, args: &[&str]) -> Server {
        Server::spawn(&[], listen, args, Stdio::inherit())
    }

    fn spawn(wrapper: &[&str], listen: &str, args: &[&str], stderr: Stdio) -> Server {
        let binary = env!("CARGO_BIN_EXE_sipshard");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["serve", "--listen", listen, "--metrics", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("sipshard binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut sip = None;
        let mut metrics = None;
        while sip.is_none() || metrics.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("sipshard exited before printing its addresses");
            };
            if let Some(rest) = line.split("udp:").nth(1) {
                sip = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = line.split("http://").nth(1) {
                metrics = rest.split('/').next().and_then(|a| a.parse().ok());
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            sip: sip.expect("loop ends with an address"),
            metrics,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let addr = self.metrics.expect("started with --metrics");
        let mut s = TcpStream::connect(addr).expect("metrics endpoint accepts");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text
    }

    /// Sum of a metric's samples whose labels contain `filter`.
    pub fn metric(&self, name: &str, filter: &str) -> u64 {
        sum_metric(&self.metrics(), name, filter)
    }

    /// `kill -9`: no stop, no flush, nothing but what the kernel already has.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops with SIGTERM (a graceful stop) and waits; true if it exited 0 in time.
    pub fn stop(mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums `name{labels} value` lines whose labels contain `filter`.
pub fn sum_metric(text: &str, name: &str, filter: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// What a SIPp run ended with.
#[derive(Debug)]
pub struct SippRun {
    /// Exit status 0 (every call succeeded).
    pub success: bool,
    pub successful_calls: u64,
    pub failed_calls: u64,
    /// The last screen, for failure messages.
    pub screen: String,
}

impl SippRun {
    /// Asserts that SIPp exited 0 with `calls` successful calls (`context` names the run).
    pub fn assert_completed(&self, calls: u32, context: &str) {
        assert!(self.success, "{context}: sipp failed:\n{}", self.screen);
        assert_eq!(
            self.successful_calls,
            u64::from(calls),
            "{context}: {}",
            self.screen
        );
    }
}

/// Polls the server's metrics until `name` (filtered) reaches `want`, up to `limit`;
/// returns the last value read.
pub fn wait_metric(server: &Server, name: &str, filter: &str, want: u64, limit: Duration) -> u64 {
    let mut v = 0;
    wait_until(limit, Duration::from_millis(100), || {
        v = server.metric(name, filter);
        v == want
    });
    v
}

/// Asks `done` every `every` until it says yes or `limit` has passed; whether it did. For
/// what a real process (a server, Redis, SIPp) does in its own time.
pub fn wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// A UDP port that was free a moment ago (for SIPp's `-p`).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// Starts SIPp on 127.0.0.1:`port` with `args`; returns the child (for a uas) to wait on
/// with [`wait_sipp`].
pub fn spawn_sipp(sipp: &Path, port: u16, args: &[&str], dir: &Path) -> Child {
    Command::new(sipp)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-nostdin",
            "-nd",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp starts")
}

/// Waits for a SIPp child up to `limit` (killed after), and reads its final screen.
pub fn wait_sipp(mut child: Child, limit: Duration) -> SippRun {
    let deadline = Instant::now() + limit;
    let mut status = None;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
        status = child.wait().ok();
    }
    let mut screen = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut screen);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut screen);
    }
    SippRun {
        success: status.is_some_and(|s| s.success()),
        successful_calls: last_count(&screen, "Successful call"),
        failed_calls: last_count(&screen, "Failed call"),
        screen,
    }
}

/// Runs SIPp to the end.
pub fn run_sipp(sipp: &Path, args: &[&str], limit: Duration) -> SippRun {
    let dir = std::env::temp_dir();
    wait_sipp(spawn_sipp(sipp, free_udp_port(), args, &dir), limit)
}

/// The cumulative column of the last screen line starting with `label`.
fn last_count(screen: &str, label: &str) -> u64 {
    screen
        .lines()
        .rfind(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.rsplit('|').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The kamailio binary (also looked for in the sbin directories), or `None` (loudly)
/// where a skip is allowed; under `CI=true` a missing one fails the test, because
/// `.ci/run` installs it.
pub fn kamailio() -> Option<PathBuf> {
    required_tool_in("kamailio", "kamailio", &["/usr/sbin", "/usr/local/sbin"])
}

/// A Kamailio process group, its working directory (config and log), taken down on drop.
pub struct KamailioProcess {
    child: Child,
    /// Its working directory: its config and `kamailio.log`.
    pub dir: PathBuf,
}

impl KamailioProcess {
    /// Runs `binary -DD -E -m 32 -M 4 -f config <extra>` in its own process group (it
    /// forks workers, and all must go on drop), in `dir`, its log in `dir/kamailio.log`
    /// (read on failure: a worker outliving the test must not hold the test's output).
    pub fn spawn(binary: &Path, config: &Path, extra: &[&str], dir: PathBuf) -> KamailioProcess {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(dir.join("kamailio.log")).expect("a log file");
        let child = Command::new(binary)
            .args(["-DD", "-E", "-m", "32", "-M", "4", "-f"])
            .arg(config)
            .arg("-w")
            .arg(&dir)
            .args(extra)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kamailio starts");
        KamailioProcess { child, dir }
    }

    /// What Kamailio logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for KamailioProcess {
    fn drop(&mut self) {
        // SIGTERM to the group lets the main process take its workers down; SIGKILL to the
        // group after a second leaves none behind either way.
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("kamailio's log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends OPTIONS to the proxy at `proxy` until a 200 comes back through it (10 s at most);
/// `log` says what the proxy logged, for the failure message.
pub fn wait_options_through(proxy: SocketAddr, log: impl Fn() -> String) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a client socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    let local = socket.local_addr().expect("a local address");
    let deadline = Instant::now() + Duration::from_secs(10);
    for attempt in 0u32.. {
        assert!(
            Instant::now() < deadline,
            "the proxy did not relay OPTIONS in 10 s:\n{}",
            log()
        );
        let options = format!(
            "OPTIONS sip:service@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKready{attempt}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p{attempt}\r\nTo: <sip:service@{proxy}>\r\n\
Call-ID: ready-{attempt}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = socket.send_to(options.as_bytes(), proxy);
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && buf[..n].starts_with(b"SIP/2.0 200")
        {
            return;
        }
    }
}

/// The path of the SIPp scenario `file` in `tests/data/sipp/`.
pub fn scenario(file: &str) -> String {
    format!("{}/tests/data/sipp/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// Sends `request` to `to` from `socket` and returns the first final answer (as text).
pub fn exchange(socket: &UdpSocket, to: &str, request: &str) -> String {
    socket.send_to(request.as_bytes(), to).expect("sent");
    let mut buf = [0u8; 65_535];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .expect("an answer within the timeout");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

/// A REGISTER for `sip:bob@<domain>` from `local`, binding `contact` for an hour (a
/// query without one).
pub fn register(
    domain: &str,
    local: SocketAddr,
    call_id: &str,
    cseq: u32,
    contact: Option<&str>,
) -> String {
    let contact = contact.map_or(String::new(), |c| {
        format!("Contact: {c}\r\nExpires: 3600\r\n")
    });
    format!(
        "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@{domain}>;tag=b{cseq}\r\nTo: <sip:bob@{domain}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{contact}Content-Length: 0\r\n\r\n"
    )
}
