//! Interop through a real record-routing proxy: SIPp → Kamailio → the `sipshard` server,
//! with Kamailio relaying to the server over UDP, and over TCP (a transport change at the
//! proxy, which then record-routes twice). The server's 18x and 2xx must carry Kamailio's
//! Record-Route (RFC 3261 §12.1.1), the caller's ACK and BYE then come through Kamailio's
//! loose routing, and a BYE of the server's own follows the route set back through it
//! (§12.2.1.1), over TCP on the proxy's connection.
//!
//! Kamailio (Debian package `kamailio`) is installed by `.ci/run`; elsewhere these tests
//! skip with a loud message when it is missing, as the SIPp tests do.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::peers::{
    Server, free_udp_port, run_sipp, sipp, sipp_run_lock, spawn_sipp, wait_metric, wait_sipp,
};

/// The kamailio binary, or `None` (loudly) where a skip is allowed; under `CI=true` a
/// missing one fails the test.
fn kamailio() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("kamailio"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kamailio is not installed, and CI=true: .ci/run must install it"
        );
        eprintln!("\n*** SKIPPED: kamailio not found (apt-get install kamailio) ***\n");
    }
    found
}

/// A stateful, record-routing Kamailio in front of `target`: requests without a To tag
/// are record-routed and relayed there; in-dialog ones follow their Route (loose routing).
const CONFIG: &str = r#"#!KAMAILIO
debug=1
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:@PORT@
listen=tcp:127.0.0.1:@PORT@
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"
modparam("rr", "append_fromtag", 1)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (has_totag()) {
        if (loose_route()) {
            t_relay();
            exit;
        }
        if (is_method("ACK") && t_check_trans()) {
            t_relay();
        }
        if (!is_method("ACK")) {
            sl_send_reply("404", "No route");
        }
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    record_route();
    $du = "sip:@TARGET@@LEG@";
    t_relay();
}
"#;

/// How Kamailio reaches the server.
#[derive(Clone, Copy, Debug)]
enum Leg {
    Udp,
    Tcp,
}

impl Leg {
    fn uri_param(self) -> &'static str {
        match self {
            Leg::Udp => "",
            Leg::Tcp => ";transport=tcp",
        }
    }
}

/// A running Kamailio, killed (and its directory removed) on drop.
struct Kamailio {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Kamailio {
    /// Starts Kamailio relaying to `target` over `leg` and waits until an OPTIONS goes
    /// through it and back.
    fn start(binary: &Path, target: SocketAddr, leg: Leg) -> Kamailio {
        let port = free_udp_port();
        let dir =
            std::env::temp_dir().join(format!("sipshard-kamailio-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let config = CONFIG
            .replace("@PORT@", &port.to_string())
            .replace("@TARGET@", &target.to_string())
            .replace("@LEG@", leg.uri_param());
        let file = dir.join("kamailio.cfg");
        std::fs::write(&file, config).expect("the config is written");
        // Its own process group: Kamailio forks workers, and all of them must go on drop.
        // Its log goes to a file (read on failure): a worker outliving the test must not
        // hold the test's output open.
        let log = std::fs::File::create(dir.join("kamailio.log")).expect("a log file");
        let child = Command::new(binary)
            .args(["-DD", "-E", "-m", "32", "-M", "4", "-f"])
            .arg(&file)
            .arg("-w")
            .arg(&dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kamailio starts");
        let kamailio = Kamailio {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        kamailio.wait_ready();
        kamailio
    }

    /// Sends OPTIONS through the proxy until the server's 200 comes back (10 s at most).
    fn wait_ready(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a client socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let local = socket.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for attempt in 0u32.. {
            assert!(
                Instant::now() < deadline,
                "kamailio did not relay OPTIONS in 10 s:\n{}",
                self.log()
            );
            let options = format!(
                "OPTIONS sip:service@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKready{attempt}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p{attempt}\r\nTo: <sip:service@{proxy}>\r\n\
Call-ID: ready-{attempt}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                proxy = self.addr
            );
            let _ = socket.send_to(options.as_bytes(), self.addr);
            let mut buf = [0u8; 4096];
            if let Ok((n, _)) = socket.recv_from(&mut buf)
                && buf[..n].starts_with(b"SIP/2.0 200")
            {
                return;
            }
        }
    }
}

impl Kamailio {
    /// What Kamailio logged.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
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

fn scenario(file: &str) -> String {
    format!("{}/tests/data/sipp/{file}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn calls_through_a_record_routing_proxy_complete_in_both_modes_over_udp_and_tcp() {
    let (Some(sipp), Some(kamailio)) = (sipp(), kamailio()) else {
        return;
    };
    let _one_at_a_time = sipp_run_lock();
    for (mode, leg) in [
        ("auto-answer", Leg::Udp),
        ("app", Leg::Udp),
        ("auto-answer", Leg::Tcp),
        ("app", Leg::Tcp),
    ] {
        let mode_and_leg = format!("{mode} over {leg:?}");
        let mode = mode_and_leg.as_str();
        let server = Server::start(&["--mode", mode.split(' ').next().unwrap(), "--shards", "2"]);
        let proxy = Kamailio::start(&kamailio, server.sip, leg);
        let run = run_sipp(
            &sipp,
            &[
                "-sf",
                &scenario("proxied_call.xml"),
                &proxy.addr.to_string(),
                "-m",
                "100",
                "-r",
                "50",
                "-timeout",
                "30",
                "-timeout_error",
            ],
            Duration::from_secs(60),
        );
        run.assert_completed(100, mode);
        let ok_retransmissions = server.metric("sipshard_retransmissions_total", "");
        assert_eq!(
            ok_retransmissions, 0,
            "{mode}: every ACK came through the proxy in time"
        );
        let over_tcp = server.metric("sipshard_tcp_events_total", "event=\"message_in\"");
        match leg {
            // INVITE, ACK and BYE of each call.
            Leg::Tcp => assert!(over_tcp >= 300, "{mode}: {over_tcp} over TCP"),
            Leg::Udp => assert_eq!(over_tcp, 0, "{mode}"),
        }
    }
}

#[test]
fn the_servers_own_bye_follows_the_route_set_through_the_proxy_over_udp_and_tcp() {
    let (Some(sipp), Some(kamailio)) = (sipp(), kamailio()) else {
        return;
    };
    let _one_at_a_time = sipp_run_lock();
    for leg in [Leg::Udp, Leg::Tcp] {
        own_bye_through_the_proxy(&sipp, &kamailio, leg);
    }
}

/// A call through the proxy (relaying to the server over `leg`) that the server ends.
fn own_bye_through_the_proxy(sipp: &Path, kamailio: &Path, leg: Leg) {
    let server = Server::start(&["--shards", "2", "--stop-deadline-s", "0"]);
    let proxy = Kamailio::start(kamailio, server.sip, leg);
    let dir = std::env::temp_dir();
    let caller = spawn_sipp(
        sipp,
        free_udp_port(),
        &[
            "-sf",
            &scenario("proxied_bye_from_sut.xml"),
            &proxy.addr.to_string(),
            "-m",
            "1",
            "-timeout",
            "30",
            "-timeout_error",
        ],
        &dir,
    );
    // The call is up once the server counts it confirmed; then a stop ends it with BYE.
    let up = wait_metric(
        &server,
        "sipshard_dialogs",
        "state=\"confirmed\"",
        1,
        Duration::from_secs(20),
    );
    assert_eq!(up, 1, "{leg:?}: the call did not come up");
    assert!(server.stop(), "{leg:?}: the server stops cleanly");
    let run = wait_sipp(caller, Duration::from_secs(30));
    run.assert_completed(1, &format!("{leg:?}"));
}
