//! Interop through a real record-routing proxy: SIPp → Kamailio → the `sipshard` server,
//! with Kamailio relaying to the server over UDP, and over TCP (a transport change at the
//! proxy, which then record-routes twice). The server's 18x and 2xx must carry Kamailio's
//! Record-Route (RFC 3261 §12.1.1), the caller's ACK and BYE then come through Kamailio's
//! loose routing, and a BYE of the server's own follows the route set back through it
//! (§12.2.1.1), over TCP on the proxy's connection. And Digest authentication (§22.2)
//! against Kamailio's auth module: `DialogManager`'s REGISTER and INVITEs answer its
//! challenges.
//!
//! Kamailio (Debian package `kamailio`) is installed by `.ci/run`; elsewhere these tests
//! skip with a loud message when it is missing, as the SIPp tests do.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::peers::{
    KamailioProcess, Server, free_udp_port, kamailio, run_sipp, scenario, sipp, sipp_run_lock,
    spawn_sipp, wait_metric, wait_options_through, wait_sipp,
};

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
loadmodule "auth.so"
modparam("rr", "append_fromtag", 1)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
@AUTH@
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

/// With [`Kamailio::start_with_auth`]: REGISTER is answered by Kamailio itself after a
/// 401 Digest challenge (realm: the To domain), and a new INVITE is relayed only after a
/// 407 one (realm: the From domain); any user with password `s3cret` passes, qop=auth.
const AUTH: &str = r#"
    if (is_method("REGISTER")) {
        if (!pv_www_authenticate("$td", "s3cret", "0")) {
            www_challenge("$td", "1");
            exit;
        }
        sl_send_reply("200", "OK");
        exit;
    }
    if (is_method("INVITE") && !has_totag()) {
        if (!pv_proxy_authenticate("$fd", "s3cret", "0")) {
            proxy_challenge("$fd", "1");
            exit;
        }
        consume_credentials();
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
    process: KamailioProcess,
    addr: SocketAddr,
}

impl Kamailio {
    /// Starts Kamailio relaying to `target` over `leg` and waits until an OPTIONS goes
    /// through it and back.
    fn start(binary: &Path, target: SocketAddr, leg: Leg) -> Kamailio {
        Self::start_configured(binary, target, leg, "")
    }

    /// [`Kamailio::start`], challenging REGISTER and new INVITEs ([`AUTH`]).
    fn start_with_auth(binary: &Path, target: SocketAddr) -> Kamailio {
        Self::start_configured(binary, target, Leg::Udp, AUTH)
    }

    fn start_configured(binary: &Path, target: SocketAddr, leg: Leg, auth: &str) -> Kamailio {
        let port = free_udp_port();
        let dir =
            std::env::temp_dir().join(format!("sipshard-kamailio-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let config = CONFIG
            .replace("@PORT@", &port.to_string())
            .replace("@TARGET@", &target.to_string())
            .replace("@LEG@", leg.uri_param())
            .replace("@AUTH@", auth);
        let file = dir.join("kamailio.cfg");
        std::fs::write(&file, config).expect("the config is written");
        let kamailio = Kamailio {
            process: KamailioProcess::spawn(binary, &file, &[], dir),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        kamailio.wait_ready();
        kamailio
    }

    /// Sends OPTIONS through the proxy until the server's 200 comes back (10 s at most).
    fn wait_ready(&self) {
        wait_options_through(self.addr, || self.log());
    }
}

impl Kamailio {
    /// What Kamailio logged.
    fn log(&self) -> String {
        self.process.log()
    }
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

#[test]
fn dialog_manager_answers_kamailios_digest_challenges_for_register_and_invite() {
    // RFC 3261 §22.2 against a real challenger: Kamailio's auth module checks the
    // answers (MD5, qop=auth). The REGISTER gets its 200 after a 401, each call is relayed
    // to the server after a 407 and completes; a wrong password ends in the challenge.
    let Some(kamailio) = kamailio() else {
        return;
    };
    let _one_at_a_time = sipp_run_lock();
    let server = Server::start(&["--mode", "auto-answer", "--shards", "1"]);
    let proxy = Kamailio::start_with_auth(&kamailio, server.sip);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (password, want) in [("s3cret", 200), ("wrong", 401)] {
            let (manager, mut events) = manager_with(password).await;
            let register = sipshard::shard::StandaloneRequest {
                method: bytes::Bytes::from_static(b"REGISTER"),
                request_uri: bytes::Bytes::from(format!("sip:{}", proxy.addr)),
                from: bytes::Bytes::from_static(b"<sip:alice@atlanta.example.com>"),
                to: bytes::Bytes::from_static(b"<sip:alice@atlanta.example.com>"),
                call_id: None,
                cseq: 1,
                destination: proxy.addr,
                headers: vec![
                    (
                        "Contact".to_owned(),
                        bytes::Bytes::from(format!(
                            "<sip:alice@{}>",
                            manager.local_addr().unwrap()
                        )),
                    ),
                    ("Expires".to_owned(), bytes::Bytes::from_static(b"600")),
                ],
                body: bytes::Bytes::new(),
            };
            manager.send_standalone(register).await.unwrap();
            let status = next_event(&mut events, |e| match e {
                sipshard::shard::SessionEvent::StandaloneResult { status, .. } => Some(*status),
                _ => None,
            })
            .await;
            assert_eq!(status, want, "REGISTER with password {password:?}");
            manager
                .stop(sipshard::runtime::StopPolicy::Bye, Duration::from_secs(2))
                .await
                .unwrap();
        }

        let (manager, mut events) = manager_with("s3cret").await;
        let to = format!("sip:service@{}", proxy.addr);
        const CALLS: u32 = 5;
        for _ in 0..CALLS {
            manager
                .make_call("sip:alice@atlanta.example.com", &to, None)
                .await
                .unwrap();
        }
        let mut answered = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while answered < CALLS {
            let batch = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("the calls are answered within 20 s")
                .expect("the channel is open");
            for e in batch {
                match e.event {
                    sipshard::shard::SessionEvent::CallAnswered { dialog, .. } => {
                        manager
                            .send_request(&dialog, sipshard::message::Method::Bye, None)
                            .await
                            .unwrap();
                        answered += 1;
                    }
                    sipshard::shard::SessionEvent::CallTerminated { reason, .. } => assert_eq!(
                        reason,
                        sipshard::shard::TerminationReason::LocalBye,
                        "a call failed"
                    ),
                    _ => {}
                }
            }
        }
        let stats = manager
            .stop(sipshard::runtime::StopPolicy::Wait, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(stats.total.transactions.client_created >= u64::from(2 * CALLS + CALLS));
    });
    let invites = server.metric("sipshard_requests_received_total", "method=\"INVITE\"");
    assert_eq!(
        invites, 5,
        "each call reached the server once, after its 407"
    );
}

/// A one-shard `DialogManager` on an ephemeral port whose credentials are alice's with
/// `password`, for any realm.
async fn manager_with(
    password: &str,
) -> (
    sipshard::runtime::DialogManager,
    tokio::sync::mpsc::Receiver<Vec<sipshard::runtime::SessionCoordinationEvent>>,
) {
    let mut config = sipshard::runtime::RuntimeConfig::new("127.0.0.1:0".parse().unwrap());
    config.shards = 1;
    config.shard.credentials = vec![sipshard::shard::Credentials {
        realm: None,
        username: "alice".to_owned(),
        password: password.to_owned(),
    }];
    let manager = sipshard::runtime::DialogManager::new(config);
    let (tx, events) = tokio::sync::mpsc::channel(1024);
    manager.set_session_coordinator(tx);
    manager.start().await.unwrap();
    (manager, events)
}

/// The first event `pick` returns something for (10 s at most).
async fn next_event<T>(
    events: &mut tokio::sync::mpsc::Receiver<Vec<sipshard::runtime::SessionCoordinationEvent>>,
    mut pick: impl FnMut(&sipshard::shard::SessionEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let batch = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the event within 10 s")
            .expect("the channel is open");
        if let Some(found) = batch.iter().find_map(|e| pick(&e.event)) {
            return found;
        }
    }
}
