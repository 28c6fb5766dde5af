//! Interop with SIPp, the tool SIP engineers trust: its built-in scenarios against the
//! `sipshard` binary, and against calls placed through `DialogManager`.
//!
//! Bound to 127.0.0.1 on OS-chosen ports; bounded call counts and time limits. Without
//! sipp these tests skip loudly, except under `CI=true`, where they fail.

mod common;

use std::time::{Duration, Instant};

use sipshard::transaction::Transport;

use common::calls::{AfterAnswer, place_calls_to_sipp, place_calls_to_sipp_then, start_manager};
use common::peers::{Server, free_udp_port, run_sipp, sipp, sum_metric, wait_metric};

/// SIPp's built-in `scenario` against `target`: `calls` calls at `rate` per second, a call
/// that takes longer than `timeout_s` failing; the run itself gets 30 s more.
fn run_builtin(
    sipp: &std::path::Path,
    scenario: &str,
    target: &str,
    calls: u32,
    rate: u32,
    timeout_s: u64,
) -> common::peers::SippRun {
    let (calls, rate, timeout) = (calls.to_string(), rate.to_string(), timeout_s.to_string());
    run_sipp(
        sipp,
        &[
            "-sn",
            scenario,
            target,
            "-m",
            &calls,
            "-r",
            &rate,
            "-timeout",
            &timeout,
            "-timeout_error",
        ],
        Duration::from_secs(timeout_s + 30),
    )
}

#[test]
fn sipp_uac_5000_calls_at_500_cps_against_auto_answer() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let server = Server::start(&["--mode", "auto-answer", "--shards", "2"]);
    let target = server.sip.to_string();
    let run = run_builtin(&sipp, "uac", &target, 5000, 500, 90);
    assert!(run.success, "sipp failed:\n{}", run.screen);
    assert_eq!(run.successful_calls, 5000, "{}", run.screen);
    assert_eq!(run.failed_calls, 0, "{}", run.screen);
    // Every dialog ended: the count is back to 0 (BYE answered, nothing left behind).
    assert_eq!(
        wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
        0
    );
    let m = server.metrics();
    assert_eq!(sum_metric(&m, "sipshard_dialogs_created_total", ""), 5000);
    assert_eq!(
        sum_metric(&m, "sipshard_requests_received_total", "method=\"INVITE\""),
        5000
    );
    assert_eq!(
        sum_metric(&m, "sipshard_requests_received_total", "method=\"BYE\""),
        5000
    );
    assert_eq!(sum_metric(&m, "sipshard_rejected_503_total", ""), 0);
    assert_eq!(sum_metric(&m, "sipshard_drops_total", ""), 0);
    assert!(server.stop(), "graceful stop exits 0");
}

#[test]
fn four_shards_10000_calls_each_dialog_stays_on_one_shard() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let server = Server::start(&["--mode", "auto-answer", "--shards", "4"]);
    let target = server.sip.to_string();
    let run = run_sipp(
        &sipp,
        &[
            "-sn",
            "uac",
            &target,
            "-m",
            "10000",
            "-r",
            "2000",
            "-l",
            "4000",
            "-timeout",
            "90",
            "-timeout_error",
        ],
        Duration::from_secs(120),
    );
    assert!(run.success, "sipp failed:\n{}", run.screen);
    assert_eq!(run.successful_calls, 10_000, "{}", run.screen);
    assert_eq!(
        wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
        0
    );
    let m = server.metrics();
    let mut total = 0;
    for shard in 0..4 {
        let s = format!("shard=\"{shard}\"");
        let invites = sum_metric(
            &m,
            "sipshard_requests_received_total",
            &format!("{s},method=\"INVITE\""),
        );
        let acks = sum_metric(
            &m,
            "sipshard_requests_received_total",
            &format!("{s},method=\"ACK\""),
        );
        let byes = sum_metric(
            &m,
            "sipshard_requests_received_total",
            &format!("{s},method=\"BYE\""),
        );
        let created = sum_metric(&m, "sipshard_dialogs_created_total", &s);
        let absorbed = sum_metric(&m, "sipshard_retransmissions_absorbed_total", &s);
        // Every INVITE, ACK and BYE of a dialog reached the shard that created it: a
        // BYE anywhere else would have found no dialog (481, counted as rejected) and
        // failed the call. More INVITEs than dialogs are retransmissions (SIPp resends
        // after 500 ms when a busy machine stalls), which a transaction absorbed.
        assert!(created > 0, "shard {shard} got no calls:\n{m}");
        assert!(
            acks >= created && byes >= created && invites >= created,
            "shard {shard}: {invites} INVITEs, {acks} ACKs, {byes} BYEs, {created} dialogs"
        );
        assert!(
            invites - created <= absorbed,
            "shard {shard}: {invites} INVITEs for {created} dialogs, {absorbed} absorbed"
        );
        total += created;
    }
    assert_eq!(total, 10_000);
    assert_eq!(sum_metric(&m, "sipshard_requests_rejected_total", ""), 0);
    assert_eq!(sum_metric(&m, "sipshard_drops_total", ""), 0);
    // SIPp sends from one port, so one socket receives most of it: the hand-over between
    // shards carried the rest.
    assert!(sum_metric(&m, "sipshard_datagrams_handed_over_total", "") > 0);
}

#[test]
fn sipp_registers_at_a_registrar_that_requires_digest() {
    // RFC 3261 §10.3 step 3: SIPp's own MD5 answers our challenge (`--auth-user`) for 20
    // addresses of record, on both shards' nonces; a wrong password gets 401 again.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let server = Server::start(&[
        "--mode",
        "registrar",
        "--shards",
        "2",
        "--auth-user",
        "bob:other",
        "--auth-user",
        "alice:s3cret",
        // Each call's wrong password is a failed authentication from 127.0.0.1: 20 of
        // them would ban the address at the default 10.
        "--auth-failures-per-source",
        "100",
    ]);
    let target = server.sip.to_string();
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sipp/register_auth.xml"
    );
    let run = run_sipp(
        &sipp,
        &[
            "-sf",
            scenario,
            &target,
            "-m",
            "20",
            "-r",
            "20",
            "-timeout",
            "30",
            "-timeout_error",
        ],
        Duration::from_secs(60),
    );
    run.assert_completed(20, "registrar with Digest");
}

#[test]
fn sipp_register_scenario_against_registrar() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    // The scenario's AORs are `userN@example.com`: a domain served only when told.
    let server = Server::start(&[
        "--mode",
        "registrar",
        "--shards",
        "2",
        "--domain",
        "example.com",
        "--domain",
        "127.0.0.1",
    ]);
    let target = server.sip.to_string();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sipp/register.xml");
    let run = run_sipp(
        &sipp,
        &[
            "-sf",
            scenario,
            &target,
            "-m",
            "500",
            "-r",
            "250",
            "-timeout",
            "60",
            "-timeout_error",
        ],
        Duration::from_secs(90),
    );
    assert!(run.success, "sipp failed:\n{}", run.screen);
    assert_eq!(run.successful_calls, 500, "{}", run.screen);
    let m = server.metrics();
    assert_eq!(
        sum_metric(
            &m,
            "sipshard_requests_received_total",
            "method=\"REGISTER\""
        ),
        2500
    );
}

/// Our scenario `file` (in tests/data/sipp/) against the server at `target`: `calls` calls
/// at `rate`, every one of which must succeed (`context` names the run in failures).
fn run_our_scenario(
    sipp: &std::path::Path,
    file: &str,
    target: &str,
    calls: u32,
    rate: u32,
    context: &str,
) {
    let scenario = format!("{}/tests/data/sipp/{file}", env!("CARGO_MANIFEST_DIR"));
    let (count, rate) = (calls.to_string(), rate.to_string());
    let run = run_sipp(
        sipp,
        &[
            "-sf",
            &scenario,
            target,
            "-m",
            &count,
            "-r",
            &rate,
            "-timeout",
            "30",
            "-timeout_error",
        ],
        Duration::from_secs(60),
    );
    run.assert_completed(calls, context);
}

/// [`run_our_scenario`] against a fresh server in each answering mode (inline auto-answer,
/// and the application loop over the async API); `check` then reads that server's metrics.
fn scenario_in_both_modes(
    sipp: &std::path::Path,
    file: &str,
    calls: u32,
    rate: u32,
    check: impl Fn(&str, &Server),
) {
    for mode in ["auto-answer", "app"] {
        let server = Server::start(&["--mode", mode, "--shards", "2"]);
        run_our_scenario(sipp, file, &server.sip.to_string(), calls, rate, mode);
        check(mode, &server);
    }
}

/// At least `count` requests of `method` in the metrics `m` (a retransmission under a
/// stall counts again, so not exactly).
fn assert_received_at_least(m: &str, method: &str, count: u64, mode: &str) {
    let filter = format!("method=\"{method}\"");
    let received = sum_metric(m, "sipshard_requests_received_total", &filter);
    assert!(received >= count, "{mode}: {received} {method}");
}

#[test]
fn sipp_out_of_dialog_message_options_and_info() {
    // MESSAGE outside a dialog is answered (inline in auto-answer mode, by the application
    // loop in app mode); INFO outside a dialog is 481.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "message.xml", 200, 100, |mode, server| {
        let m = server.metrics();
        assert_received_at_least(&m, "MESSAGE", 200, mode);
        assert_eq!(sum_metric(&m, "sipshard_dialogs_created_total", ""), 0);
    });
}

#[test]
fn sipp_caller_requiring_100rel_gets_a_reliable_180_and_its_prack_answered() {
    // RFC 3262 as UAS: Require: 100rel → 180 with Require/RSeq, PRACK → 200, then the 200
    // to the INVITE (held until the PRACK, so the order is the same in every mode).
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "prack.xml", 200, 100, |mode, server| {
        let m = server.metrics();
        assert_received_at_least(&m, "PRACK", 200, mode);
        assert_eq!(
            wait_metric(server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
            0
        );
    });
}

#[test]
fn sipp_hold_reinvite_gets_a_recvonly_answer() {
    // RFC 3264 §6.1: a stream offered sendonly (a call put on hold) is answered recvonly,
    // in both server modes.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "hold.xml", 100, 50, |_, _| {});
}

#[test]
fn sipp_refer_gets_202_and_the_implicit_subscription_notifies() {
    // RFC 3515: a transferor's REFER gets 202, then NOTIFY 100 Trying (active) and a final
    // NOTIFY (terminated), whose 200s SIPp sends; both modes. The scenario checks Event,
    // Subscription-State, the sipfrag type and the status lines.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "refer.xml", 50, 25, |mode, server| {
        assert_received_at_least(&server.metrics(), "REFER", 50, mode);
    });
}

#[test]
fn sipp_refer_outside_a_dialog_makes_one_for_its_notifies() {
    // RFC 3515 §2.4.2: a REFER with no To tag gets a 202 with our tag and Contact, then
    // the two NOTIFYs in that new dialog (the scenario compares the tags); both modes.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "refer_out_of_dialog.xml", 50, 25, |mode, server| {
        assert_received_at_least(&server.metrics(), "REFER", 50, mode);
    });
}

#[test]
fn sipp_refer_declining_the_subscription_gets_no_notify() {
    // RFC 4488: Refer-Sub: false gets a 202 saying Refer-Sub: false and no NOTIFY (an
    // unexpected NOTIFY would fail SIPp's call), in both modes.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "refer_nosub.xml", 50, 25, |mode, server| {
        assert_received_at_least(&server.metrics(), "REFER", 50, mode);
    });
}

#[test]
fn sipp_subscribe_gets_a_notify_and_unsubscribe_the_last_one() {
    // RFC 6665 with the server as notifier (`--event-packages presence`): SUBSCRIBE gets 200
    // with Expires and a NOTIFY at once (active, with the time left); SUBSCRIBE Expires: 0
    // gets 200 and a NOTIFY saying terminated. Nothing is left afterwards.
    // Both modes: the worker's inline answer, and the application loop over DialogManager.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    for mode in ["auto-answer", "app"] {
        let server = Server::start(&[
            "--mode",
            mode,
            "--event-packages",
            "presence,dialog",
            "--shards",
            "2",
        ]);
        run_our_scenario(
            &sipp,
            "subscribe.xml",
            &server.sip.to_string(),
            100,
            50,
            mode,
        );
        assert_received_at_least(&server.metrics(), "SUBSCRIBE", 200, mode);
        let held = server.metric("sipshard_subscriptions", "role=\"notifier\"");
        assert_eq!(held, 0, "{mode}: every subscription ended with its dialog");
        assert_eq!(
            wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
            0,
            "{mode}"
        );
        assert!(server.stop(), "{mode}: the server stops cleanly");
    }
}

#[test]
fn sipp_cancel_while_ringing_gets_200_then_487_with_the_ringing_tag() {
    // §9.2: the CANCEL gets 200, the INVITE 487 carrying the To tag of the 180; the 487 is
    // ACKed and nothing is left. The callee rings for 10 s, so every CANCEL finds it ringing.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let server = Server::start(&["--mode", "auto-answer", "--answer-delay-ms", "10000"]);
    run_our_scenario(
        &sipp,
        "cancel.xml",
        &server.sip.to_string(),
        100,
        50,
        "cancel",
    );
    assert_eq!(
        wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
        0
    );
    let cancels = server.metric("sipshard_requests_received_total", "method=\"CANCEL\"");
    assert!(cancels >= 100, "{cancels}");
}

#[test]
fn sipp_late_offer_reinvite_gets_an_offer_in_the_200() {
    // A re-INVITE without SDP: the 200 must make the offer (RFC 3261 §14.2, §13.2.1), and
    // the answer comes in the ACK; in both server modes.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "late_offer.xml", 50, 25, |_, _| {});
}

#[test]
fn sipp_info_and_options_inside_a_call_get_200() {
    // In-dialog INFO (a DTMF digit, RFC 6086) and OPTIONS (§11, with Allow), both modes.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "info.xml", 50, 25, |mode, server| {
        assert_received_at_least(&server.metrics(), "INFO", 50, mode);
    });
}

#[test]
fn sipp_uac_pcap_plays_rtp_to_the_media_port_of_our_answer() {
    // SIPp's uac_pcap reads the media address of our 200's SDP and plays a G.711 pcap to
    // it during the call (sipshard carries no media: the datagrams are simply refused).
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let installed = std::path::Path::new("/usr/share/sip-tester/g711a.pcap");
    if !installed.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} missing: the sip-tester package ships it",
            installed.display()
        );
        eprintln!("SKIPPED: {} not found", installed.display());
        return;
    }
    // uac_pcap opens pcap/g711a.pcap and pcap/dtmf_2833_1.pcap relative to its working
    // directory.
    let dir = std::env::temp_dir().join(format!("sipshard-uac-pcap-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("pcap")).unwrap();
    for file in ["g711a.pcap", "dtmf_2833_1.pcap"] {
        let from = installed.with_file_name(file);
        std::fs::copy(&from, dir.join("pcap").join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    let server = Server::start(&["--mode", "auto-answer", "--shards", "2"]);
    let target = server.sip.to_string();
    let child = common::peers::spawn_sipp(
        &sipp,
        free_udp_port(),
        &[
            "-sn",
            "uac_pcap",
            &target,
            "-m",
            "3",
            "-r",
            "3",
            "-timeout",
            "60",
            "-timeout_error",
        ],
        &dir,
    );
    let run = common::peers::wait_sipp(child, Duration::from_secs(90));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.success, "sipp failed:\n{}", run.screen);
    assert_eq!(run.successful_calls, 3, "{}", run.screen);
    assert_eq!(
        wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
        0
    );
}

#[test]
fn sipp_update_offer_gets_its_answer_in_the_200() {
    // RFC 3311 §5.2: an UPDATE's SDP offer is answered in its 2xx (the scenario checks the
    // answer's m= line), in both server modes.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "update.xml", 100, 50, |mode, server| {
        let m = server.metrics();
        assert_received_at_least(&m, "UPDATE", 100, mode);
    });
}

#[test]
fn sipp_session_timer_422_then_a_2xx_that_settles_it_and_an_update_refresh() {
    // RFC 4028 with the server's default (accept): 422 with Min-SE for 60 s, then the
    // interval and refresher in the 200 with Require: timer, and 200 to the UPDATE
    // refresh (answered by the shard itself), in both server modes.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    scenario_in_both_modes(&sipp, "session_timer.xml", 50, 25, |mode, server| {
        let m = server.metrics();
        assert_received_at_least(&m, "UPDATE", 50, mode);
    });
}

#[test]
fn sipp_branchc_registers_then_calls_the_registrar() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    // branchc registers at `sip:CA.cym.com` for `ua1@nnl.cym`: domains a registrar
    // serves only when told (RFC 3261 §10.3 steps 1 and 5; otherwise 404).
    let server = Server::start(&[
        "--mode",
        "registrar",
        "--shards",
        "2",
        "--domain",
        "CA.cym.com",
        "--domain",
        "nnl.cym",
    ]);
    let target = server.sip.to_string();
    // branchc: REGISTER, INVITE, ACK, 5 s of call, BYE, 4 s pause.
    let run = run_builtin(&sipp, "branchc", &target, 20, 20, 60);
    assert!(run.success, "sipp failed:\n{}", run.screen);
    assert_eq!(run.successful_calls, 20, "{}", run.screen);
    assert_eq!(
        wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
        0
    );
}

#[test]
fn sipp_regexp_finds_an_sdp_answer_in_the_200() {
    // The regexp scenario checks the 200's body for an SDP o= line (check_it): the
    // auto-answer must answer the INVITE's offer (RFC 3261 §13.2.1), in both the inline
    // auto-answer mode and the async application mode.
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    for mode in ["auto-answer", "app"] {
        let server = Server::start(&["--mode", mode, "--shards", "2"]);
        let target = server.sip.to_string();
        let run = run_builtin(&sipp, "regexp", &target, 20, 20, 30);
        assert!(run.success, "{mode}: sipp failed:\n{}", run.screen);
        assert_eq!(run.successful_calls, 20, "{mode}: {}", run.screen);
    }
}

/// SIPp's built-in uas answering calls that sipshard places through `DialogManager`:
/// INVITE, 180, 200, ACK, then our BYE and its 200, 1,000 times (at most 100 at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The lock only orders whole tests; nothing in this runtime waits for it.
#[allow(clippy::await_holding_lock)]
async fn dialog_manager_places_1000_calls_to_sipp_uas() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let stats = place_calls_to_sipp(&sipp, &["-sn", "uas"], 1000).await;
    assert_eq!(stats.total.transactions.timeouts, 0);
}

/// A SIPp callee that sends its 180 reliably and waits for our PRACK before its 200
/// (RFC 3262 as UAC): 200 calls through `DialogManager`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The lock only orders whole tests; nothing in this runtime waits for it.
#[allow(clippy::await_holding_lock)]
async fn dialog_manager_pracks_a_sipp_callees_reliable_180() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sipp/uas_100rel.xml"
    );
    let stats = place_calls_to_sipp(&sipp, &["-sf", scenario], 200).await;
    assert_eq!(stats.total.pracks_sent, 200);
    assert_eq!(stats.total.transactions.timeouts, 0);
}

/// A SIPp callee behind two record-routing proxies checks that our ACK and BYE carry the
/// reversed Record-Route as Route (RFC 3261 §12.1.2, §12.2.1.1): 100 calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The lock only orders whole tests; nothing in this runtime waits for it.
#[allow(clippy::await_holding_lock)]
async fn dialog_manager_routes_in_dialog_requests_through_the_record_route() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sipp/uas_record_route.xml"
    );
    place_calls_to_sipp(&sipp, &["-sf", scenario], 100).await;
}

/// A SIPp transfer target: we REFER each answered call and hang up after its last NOTIFY
/// (RFC 3515 as the transferor): 100 calls, every NOTIFY answered by the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The lock only orders whole tests; nothing in this runtime waits for it.
#[allow(clippy::await_holding_lock)]
async fn dialog_manager_refers_a_sipp_callee_and_follows_its_notifies() {
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sipp/uas_refer.xml");
    let stats = place_calls_to_sipp_then(
        &sipp,
        &["-sf", scenario],
        100,
        AfterAnswer::ReferThenBye,
        Transport::Udp,
    )
    .await;
    assert_eq!(stats.total.transactions.timeouts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The lock only orders whole tests; nothing in this runtime waits for it.
#[allow(clippy::await_holding_lock)]
async fn dialog_manager_subscribes_to_a_sipp_notifier_and_unsubscribes() {
    // RFC 6665 with sipshard as subscriber: 20 subscriptions through DialogManager, each
    // accepted, notified (SIPp's NOTIFY answered 200 by the shard), then ended with
    // Expires: 0 and the notifier's terminated NOTIFY.
    use sipshard::runtime::StopPolicy;
    use sipshard::shard::{SessionEvent, SubscriptionEnd};

    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let subscriptions = 20u32;
    let port = common::peers::free_udp_port();
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sipp/uas_notifier.xml"
    );
    let count = subscriptions.to_string();
    let args = [
        "-sf",
        scenario,
        "-m",
        &count,
        "-timeout",
        "60",
        "-timeout_error",
    ];
    let notifier = common::peers::spawn_sipp(&sipp, port, &args, &std::env::temp_dir());
    let (manager, mut events) = start_manager().await;
    // No wait for SIPp to bind: a SUBSCRIBE sent before it listens is retransmitted (Timer E).

    let to = format!("sip:service@127.0.0.1:{port}");
    for _ in 0..subscriptions {
        manager
            .subscribe("sip:watcher@127.0.0.1", &to, "presence", 600)
            .await
            .unwrap();
    }
    let (mut accepted, mut notified, mut ended) = (0u32, 0u32, Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (ended.len() as u32) < subscriptions {
        let batch = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("subscriptions end within the time limit")
            .expect("event channel open");
        for e in batch {
            match e.event {
                SessionEvent::SubscriptionAccepted {
                    subscription,
                    expires,
                    ..
                } => {
                    assert_eq!(expires, 120, "the interval the 2xx granted");
                    accepted += 1;
                    manager.unsubscribe(&subscription).await.unwrap();
                }
                SessionEvent::Notification { request, .. }
                    if request.body_bytes().trim_ascii() == b"<presence/>" =>
                {
                    notified += 1;
                }
                SessionEvent::SubscriptionTerminated { reason, .. } => ended.push(reason),
                _ => {}
            }
        }
    }
    assert_eq!(accepted, subscriptions, "{ended:?}");
    assert_eq!(notified, subscriptions);
    assert!(
        ended.iter().all(|r| *r == SubscriptionEnd::ByNotifier),
        "{ended:?}"
    );
    let stats = manager
        .stop(StopPolicy::Wait, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(stats.dialogs(), 0);
    let run = common::peers::wait_sipp(notifier, Duration::from_secs(30));
    run.assert_completed(subscriptions, "sipp notifier");
}

/// A TCP port that was free a moment ago (for SIPp's `-3pcc` twin socket).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// True once something listens on 127.0.0.1:`port` (read from /proc, so that the probe
/// does not take the one twin connection SIPp accepts).
fn tcp_listening(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|table| {
        table.lines().skip(1).any(|line| {
            let mut cols = line.split_whitespace().skip(1);
            cols.next() == Some(wanted.as_str()) && cols.nth(1) == Some("0A")
        })
    })
}

#[test]
fn sipp_3pcc_controller_sets_up_calls_between_two_sipshard_parties() {
    // Third-party call control (RFC 3725 flow I): the controller's INVITE to A carries no
    // SDP, so A's 200 must make the offer, and the answer comes back in the ACK (§13.2.1),
    // relayed from B. Both parties are the same auto-answer server (distinct Call-IDs).
    let Some(sipp) = sipp() else { return };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let server = Server::start(&["--mode", "auto-answer", "--shards", "2"]);
    let target = server.sip.to_string();
    let twin = format!("127.0.0.1:{}", free_tcp_port());
    let dir = std::env::temp_dir();
    let b = common::peers::spawn_sipp(
        &sipp,
        free_udp_port(),
        &["-sn", "3pcc-C-B", "-3pcc", &twin, &target],
        &dir,
    );
    let twin_port: u16 = twin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tcp_listening(twin_port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let a = common::peers::spawn_sipp(
        &sipp,
        free_udp_port(),
        &[
            "-sf",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sipp/3pcc-C-A.xml"),
            "-3pcc",
            &twin,
            &target,
            "-m",
            "20",
            "-r",
            "10",
            "-timeout",
            "30",
            "-timeout_error",
        ],
        &dir,
    );
    let a = common::peers::wait_sipp(a, Duration::from_secs(60));
    let b = common::peers::wait_sipp(b, Duration::from_secs(10));
    assert!(a.success, "controller A failed:\n{}", a.screen);
    assert_eq!(a.successful_calls, 20, "{}", a.screen);
    assert_eq!(a.failed_calls, 0, "{}", a.screen);
    assert_eq!(b.failed_calls, 0, "controller B:\n{}", b.screen);
    assert_eq!(
        wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
        0
    );
    assert_eq!(
        sum_metric(&server.metrics(), "sipshard_dialogs_created_total", ""),
        40
    );
}
