//! Confirmed dialogs outlive their shard (issue 22), on simulated time: the records a shard
//! hands out go to an in-memory store before its datagrams leave; a "crash" drops the
//! shard, a new one restores the records, and the peer's requests and ours go on as if
//! nothing had happened.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::pair::{
    Pair, UasPolicy, established, reinvite_results, request_results, uac_addr, uas_addr,
};
use common::sim::Conditions;
use sipshard::dialog::{DialogId, DialogRecord};
use sipshard::message::IdGenerator;
use sipshard::shard::{
    DialogCommand, RecoveryProbes, Refresher, RestoreError, SessionEvent, SessionTimers, Shard,
    ShardConfig, TerminationReason,
};

/// The wall-clock time both sides agree `now` is: the same mapping before and after a
/// restart, as a real clock would give.
fn wall(p: &Pair, start: Instant) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + (p.now - start)
}

fn persisting(addr: std::net::SocketAddr) -> ShardConfig {
    let mut config = ShardConfig::new(addr);
    config.persist = true;
    config
}

fn pair(uac: ShardConfig, uas: ShardConfig) -> (Pair, Instant) {
    let mut p = Pair::with_configs(7, Conditions::perfect(), UasPolicy::Answer, uac, uas);
    let start = p.now;
    let w = wall(&p, start);
    p.uac.set_wall_clock(p.now, w);
    p.uas.set_wall_clock(p.now, w);
    (p, start)
}

/// A new shard with `config` in place of the crashed one, its records restored; returns
/// it and the dialogs it announced.
fn restart(p: &Pair, start: Instant, config: ShardConfig, store: &common::pair::Store) -> Shard {
    let mut shard = Shard::with_ids(p.now, config, IdGenerator::from_seed([9; 32]));
    shard.set_wall_clock(p.now, wall(p, start));
    for record in store.values() {
        shard
            .restore(p.now, record)
            .expect("an intact record restores");
    }
    shard
}

fn recovered(shard: &mut Shard) -> Vec<(DialogId, DialogId)> {
    std::iter::from_fn(|| shard.poll_event())
        .filter_map(|e| match e {
            SessionEvent::DialogRecovered { dialog, call } => Some((dialog, call)),
            _ => None,
        })
        .collect()
}

fn ended(events: &[SessionEvent]) -> Vec<TerminationReason> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::CallTerminated { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn a_confirmed_call_survives_the_callee_s_restart() {
    let (mut p, start) = pair(persisting(uac_addr()), persisting(uas_addr()));
    let (uac_dialog, uas_dialog) = established(&mut p);
    assert_eq!(p.uas_store.len(), 1, "the callee wrote its dialog");
    assert_eq!(p.uac_store.len(), 1, "the caller wrote its dialog");

    // kill -9: the shard is gone; its store is all that is left.
    p.uas = restart(&p, start, persisting(uas_addr()), &p.uas_store);
    let back = recovered(&mut p.uas);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, uas_dialog);
    assert_eq!(p.uas.dialog_count(), 1);

    // An INFO and then the BYE from the caller: answered as before, not 481.
    p.uac_sends(&uac_dialog, b"INFO", None);
    p.run(Duration::from_secs(1));
    p.uac
        .handle_command(p.now, DialogCommand::Bye { dialog: uac_dialog })
        .unwrap();
    p.run(Duration::from_secs(1));
    assert_eq!(ended(&p.uac_events), vec![TerminationReason::LocalBye]);
    assert_eq!(p.uas.dialog_count(), 0);
    assert!(p.uas_store.is_empty(), "the ended call's record is deleted");
    assert!(p.uac_store.is_empty());
}

#[test]
fn the_caller_s_requests_after_its_restart_go_on_from_its_last_cseq() {
    let (mut p, start) = pair(persisting(uac_addr()), ShardConfig::new(uas_addr()));
    let (uac_dialog, _) = established(&mut p);
    // Two re-INVITEs move our CSeq on; each one's record is written before it leaves.
    for _ in 0..2 {
        p.uac_reinvites(&uac_dialog);
        p.run(Duration::from_secs(1));
    }
    assert_eq!(reinvite_results(&p.uac_events), vec![200, 200]);

    p.uac = restart(&p, start, persisting(uac_addr()), &p.uac_store);
    let back = recovered(&mut p.uac);
    assert_eq!(back.len(), 1);
    // The call handle MakeCall returned still names the call.
    let (dialog, call) = back[0].clone();
    assert_eq!(dialog, uac_dialog);
    p.uac_events.clear();
    // §12.2.1.1: our next request carries the next CSeq. Had it gone back, the callee
    // would answer 500 (§12.2.2) and the call would stay up on its side.
    p.uac
        .handle_command(p.now, DialogCommand::Bye { dialog: call })
        .unwrap();
    p.run(Duration::from_secs(1));
    assert_eq!(ended(&p.uac_events), vec![TerminationReason::LocalBye]);
    assert_eq!(p.uas.dialog_count(), 0, "the callee took our BYE");
    assert!(p.uac_store.is_empty());
}

#[test]
fn early_dialogs_are_not_written_and_a_refused_record_says_why() {
    let (mut p, start) = pair(persisting(uac_addr()), persisting(uas_addr()));
    p.policy = UasPolicy::Ring;
    p.bye_on_answer = false;
    p.call();
    p.run(Duration::from_secs(1));
    assert_eq!(p.uas.dialog_count(), 1);
    assert!(p.uas_store.is_empty(), "a ringing call is not persisted");
    assert!(p.uac_store.is_empty());
    assert_eq!(p.uas.stats().records_written, 0);

    // A record restored twice, and damaged bytes: refused with the reason.
    let (mut q, q_start) = pair(persisting(uac_addr()), persisting(uas_addr()));
    established(&mut q);
    let record = q.uas_store.values().next().unwrap().clone();
    let mut shard = restart(&q, q_start, persisting(uas_addr()), &q.uas_store);
    assert_eq!(shard.restore(q.now, &record), Err(RestoreError::Duplicate));
    let mut damaged = record.clone();
    let last = damaged.len() - 10;
    damaged[last] ^= 1;
    assert!(matches!(
        shard.restore(q.now, &damaged),
        Err(RestoreError::Record(_))
    ));
    assert_eq!(shard.dialog_count(), 1);
    let _ = start;
}

#[test]
fn a_session_timer_ends_a_restored_call_when_no_refresh_comes() {
    // The caller asks for a 90 s session the callee refreshes... and the callee never
    // comes back to: the caller, restarted meanwhile, sends its BYE at the deadline.
    let timers = SessionTimers {
        session_expires: 90,
        min_se: 90,
        refresher: Refresher::Uas,
        ..SessionTimers::default()
    };
    let mut uac = persisting(uac_addr());
    uac.session_timers = Some(timers);
    let mut uas = ShardConfig::new(uas_addr());
    uas.session_timers = Some(timers);
    let (mut p, start) = pair(uac, uas);
    let (_, _) = established(&mut p);
    let record = DialogRecord::decode(p.uac_store.values().next().unwrap()).unwrap();
    let expires_at = record.session_timer.expect("a session timer").expires_at;

    let mut config = persisting(uac_addr());
    config.session_timers = Some(timers);
    p.uac = restart(&p, start, config, &p.uac_store);
    assert_eq!(recovered(&mut p.uac).len(), 1);
    // The callee is gone too: nothing refreshes the session.
    p.uas = Shard::with_ids(
        p.now,
        ShardConfig::new(uas_addr()),
        IdGenerator::from_seed([3; 32]),
    );
    p.uac_events.clear();
    let limit = p.now + Duration::from_secs(200);
    while ended(&p.uac_events).is_empty() && p.now < limit && p.step() {}
    assert_eq!(
        ended(&p.uac_events),
        vec![TerminationReason::SessionExpired]
    );
    // RFC 4028 §10: the BYE goes min(32 s, interval / 3) before the session's end, by
    // the deadline written before the restart, not by a timer started afresh.
    let at = wall(&p, start);
    assert!(
        at >= expires_at - Duration::from_secs(31) && at <= expires_at,
        "BYE at {at:?}, session ends at {expires_at:?}"
    );
    assert_eq!(p.uac.dialog_count(), 0);
    assert!(p.uac_store.is_empty());
}

/// A callee shard that persists and probes what it restores: within 10 s, two attempts.
fn probing_callee() -> ShardConfig {
    let mut config = persisting(uas_addr());
    config.recovery_probes = Some(RecoveryProbes {
        within: Duration::from_secs(10),
        attempts: 2,
    });
    config
}

/// Establishes a call, restarts the callee with probes on; the caller is `caller`.
fn restarted_with_probes(replace_caller: bool) -> (Pair, DialogId) {
    let (mut p, start) = pair(persisting(uac_addr()), persisting(uas_addr()));
    let (_, uas_dialog) = established(&mut p);
    p.uas = restart(&p, start, probing_callee(), &p.uas_store);
    assert_eq!(recovered(&mut p.uas).len(), 1);
    if replace_caller {
        // The caller forgot the call while the callee was down (its BYE met nobody).
        p.uac = Shard::with_ids(
            p.now,
            ShardConfig::new(uac_addr()),
            IdGenerator::from_seed([5; 32]),
        );
    }
    p.uas_events.clear();
    (p, uas_dialog)
}

#[test]
fn a_restored_dialog_the_peer_no_longer_knows_ends_at_its_probe_s_481() {
    let (mut p, uas_dialog) = restarted_with_probes(true);
    p.run(Duration::from_secs(11));
    assert_eq!(ended(&p.uas_events), vec![TerminationReason::Rejected(481)]);
    assert_eq!(p.uas.dialog_count(), 0);
    assert_eq!(p.uas.stats().recovered_dialogs_ended, 1);
    assert!(p.uas_store.is_empty(), "its record is deleted");
    let _ = uas_dialog;
}

#[test]
fn a_restored_dialog_whose_peer_answers_its_probe_stays() {
    let (mut p, uas_dialog) = restarted_with_probes(false);
    p.run(Duration::from_secs(120));
    assert!(ended(&p.uas_events).is_empty(), "{:?}", p.uas_events);
    assert_eq!(p.uas.dialog_count(), 1);
    // The probe went out once, was answered, and none followed.
    let options = p.uac.stats().requests_in[4];
    assert_eq!(options, 1, "one OPTIONS reached the caller");
    let _ = uas_dialog;
}

#[test]
fn a_restored_dialog_whose_peer_never_answers_ends_after_its_attempts() {
    let (mut p, _) = restarted_with_probes(false);
    p.net.conditions.loss = 1.0;
    p.run(Duration::from_secs(300));
    assert_eq!(ended(&p.uas_events), vec![TerminationReason::Timeout]);
    assert_eq!(p.uas.dialog_count(), 0);
    assert!(p.uas_store.is_empty());
}

/// A persisting registrar shard whose wall clock follows `t0`.
fn registrar_shard(t0: Instant, now: Instant) -> Shard {
    use sipshard::registrar::RegistrarConfig;
    use sipshard::shard::RegisterMode;
    let config = ShardConfig {
        register: RegisterMode::Registrar(RegistrarConfig::default()),
        persist: true,
        ..ShardConfig::new(uas_addr())
    };
    let mut shard = Shard::new(now, config);
    shard.set_wall_clock(
        now,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + (now - t0),
    );
    shard
}

fn status_of(
    shard: &mut Shard,
    now: Instant,
    datagram: bytes::Bytes,
    store: &mut common::pair::Store,
) -> u16 {
    shard.handle_datagram(now, uac_addr(), datagram);
    common::pair::drain_persist(shard, store);
    let reply = shard.poll_transmit().expect("an answer");
    sipshard::message::Message::parse(reply.payload)
        .expect("our answer parses")
        .status()
        .expect("a response")
}

#[test]
fn registrar_bindings_survive_a_restart_and_lapsed_ones_do_not_come_back() {
    use common::pair::register;
    let t0 = Instant::now();
    let mut store = common::pair::Store::new();
    let mut shard = registrar_shard(t0, t0);
    assert_eq!(
        status_of(
            &mut shard,
            t0,
            register(5, "<sip:bob@192.0.2.4:5060>", 3600),
            &mut store
        ),
        200
    );
    assert_eq!(
        store.len(),
        1,
        "the AOR's record is written before the 200 leaves"
    );
    let aor = b"sip:bob@example.com";
    assert_eq!(shard.registrar().unwrap().bindings(aor).len(), 1);

    // A registrar restarted at `at` from the store; each record brings back `count`.
    let restarted = |at: Instant, store: &common::pair::Store, count: usize| {
        let mut shard = registrar_shard(t0, at);
        for record in store.values() {
            let back = shard.restore(at, record).expect("restores");
            let want = sipshard::shard::Restored::Bindings {
                aor: aor.to_vec(),
                count,
            };
            assert_eq!(back, want);
        }
        shard
    };
    // Restarted 10 minutes later: the binding is back, with its Call-ID and CSeq.
    let later = t0 + Duration::from_secs(600);
    let mut shard = restarted(later, &store, 1);
    let bindings = shard.registrar().unwrap().bindings(aor);
    assert_eq!(bindings.len(), 1);
    assert_eq!(&*bindings[0].contact, b"sip:bob@192.0.2.4:5060");
    assert_eq!(bindings[0].cseq, 5);
    // §10.3 step 7 across the restart: the same Call-ID with a CSeq not above 5 is out
    // of order.
    assert_eq!(
        status_of(
            &mut shard,
            later,
            register(5, "<sip:bob@192.0.2.4:5060>", 3600),
            &mut store
        ),
        500
    );
    // Restarted after the binding lapsed: nothing comes back.
    let shard = restarted(t0 + Duration::from_secs(3700), &store, 0);
    assert_eq!(shard.registrar().unwrap().aor_count(), 0);
    // Expires: 0 removes the binding, and its record.
    let mut shard = registrar_shard(t0, later);
    for record in store.clone().values() {
        shard.restore(later, record).expect("restores");
    }
    assert_eq!(
        status_of(
            &mut shard,
            later,
            register(6, "<sip:bob@192.0.2.4:5060>", 0),
            &mut store
        ),
        200
    );
    assert!(store.is_empty(), "no binding left, no record");
}

#[test]
fn a_stop_with_bye_ends_restored_calls_like_any_other() {
    let (mut p, start) = pair(persisting(uac_addr()), persisting(uas_addr()));
    established(&mut p);
    p.uas = restart(&p, start, persisting(uas_addr()), &p.uas_store);
    assert_eq!(recovered(&mut p.uas).len(), 1);
    // What a graceful stop does past its deadline with the BYE policy.
    assert_eq!(
        p.uas.terminate_all(p.now),
        1,
        "the restored call is asked to end"
    );
    p.uac_events.clear();
    p.run(Duration::from_secs(1));
    assert_eq!(ended(&p.uac_events), vec![TerminationReason::RemoteBye]);
    assert_eq!(p.uas.dialog_count(), 0);
    assert!(p.uas_store.is_empty() && p.uac_store.is_empty());
}

/// The callee's (only) record in its store.
fn callee_record(p: &Pair) -> Vec<u8> {
    p.uas_store
        .values()
        .next()
        .cloned()
        .expect("the callee's record")
}

/// A shard of another node (`takeover` on): no dialogs of its own, the wall clock of the
/// pair's.
fn peer_node(p: &Pair, start: Instant) -> Shard {
    peer_node_with(p, start, persisting(uas_addr()))
}

/// As [`peer_node`], configured as `config` otherwise.
fn peer_node_with(p: &Pair, start: Instant, mut config: ShardConfig) -> Shard {
    config.takeover = true;
    let mut shard = Shard::with_ids(p.now, config, IdGenerator::from_seed([11; 32]));
    shard.set_wall_clock(p.now, wall(p, start));
    shard
}

/// A call whose callee persists and would end it with BYE 60 s after the answer (a 90 s
/// session the caller must refresh); returns the pair, its start and the callee's record.
fn call_the_callee_times(timers_on_callee: bool) -> (Pair, Instant, Vec<u8>, SessionTimers) {
    let timers = SessionTimers {
        session_expires: 90,
        min_se: 90,
        refresher: Refresher::Uac,
        ..SessionTimers::default()
    };
    let mut uac = ShardConfig::new(uac_addr());
    uac.session_timers = Some(timers);
    let mut uas = persisting(uas_addr());
    uas.session_timers = timers_on_callee.then_some(timers);
    let (mut p, start) = pair(uac, uas);
    established(&mut p);
    let record = callee_record(&p);
    // The caller will never refresh (it forgot the call): only the callee's timer acts.
    p.uac = Shard::with_ids(
        p.now,
        ShardConfig::new(uac_addr()),
        IdGenerator::from_seed([3; 32]),
    );
    (p, start, record, timers)
}

#[test]
fn a_dead_node_s_call_swept_by_a_peer_ends_by_its_session_timer_there() {
    let (mut p, start, record, timers) = call_the_callee_times(true);
    let expires_at = DialogRecord::decode(&record)
        .unwrap()
        .session_timer
        .expect("a session timer")
        .expires_at;
    // The callee's node dies. No request comes: a peer's sweep hands it the record.
    let mut config = persisting(uas_addr());
    config.session_timers = Some(timers);
    p.uas = peer_node_with(&p, start, config);
    let key = sipshard::shard::record_store_key(&record).expect("a record's key");
    p.uas.handle_claim(p.now, &key, Some(&record));
    assert_eq!(p.uas.stats().dialogs_taken_over, 1);
    let limit = p.now + Duration::from_secs(200);
    while ended(&p.uas_events).is_empty() && p.now < limit && p.step() {}
    assert_eq!(
        ended(&p.uas_events),
        vec![TerminationReason::SessionExpired],
        "the new owner ends the unrefreshed call"
    );
    let at = wall(&p, start);
    assert!(
        at >= expires_at - Duration::from_secs(31) && at <= expires_at,
        "BYE at {at:?}, session ends at {expires_at:?}"
    );
    assert_eq!(
        p.uac.stats().requests_in.iter().sum::<u64>(),
        1,
        "one BYE reached the caller"
    );
}

#[test]
fn a_call_a_live_peer_took_leaves_without_a_word_and_its_timer_dies_with_it() {
    let (mut p, _, record, _) = call_the_callee_times(true);
    let key = sipshard::shard::record_store_key(&record).expect("a record's key");
    p.uas_events.clear();
    assert!(p.uas.handle_released(&key));
    assert!(!p.uas.handle_released(&key), "gone already");
    p.run(Duration::from_millis(1));
    assert_eq!(ended(&p.uas_events), vec![TerminationReason::TakenOver]);
    assert_eq!(p.uas.stats().dialogs_released, 1);
    assert_eq!(p.uas.dialog_count(), 0);
    assert!(
        p.uas_store.is_empty(),
        "its record left the node's own store"
    );
    // Past the session's end: the peer runs its timer now, this node sends nothing.
    p.run(Duration::from_secs(200));
    assert_eq!(p.uac.stats().datagrams_in, 0, "nothing reached the caller");
}

#[test]
fn a_peer_takes_a_dead_node_s_call_over_when_its_bye_arrives_and_answers_it() {
    let (mut p, start) = pair(persisting(uac_addr()), persisting(uas_addr()));
    let (uac_dialog, _) = established(&mut p);
    let record = callee_record(&p);
    // The callee's node dies; the caller's BYE reaches a peer that never saw the call.
    p.uas = peer_node(&p, start);
    p.uac
        .handle_command(p.now, DialogCommand::Bye { dialog: uac_dialog })
        .unwrap();
    p.flush();
    p.run(Duration::from_millis(1));
    // The BYE waits (no 481) while the record is claimed.
    let key = p.uas.poll_claim().expect("a claim of the call's record");
    assert_eq!(
        Some(key.clone()),
        sipshard::shard::record_store_key(&record)
    );
    assert!(p.uas.poll_claim().is_none(), "one claim per dialog");
    assert!(ended(&p.uac_events).is_empty(), "no answer yet");

    // The shared store hands the record over: the call is this node's, and ends here.
    p.uas.handle_claim(p.now, &key, Some(&record));
    p.run(Duration::from_secs(1));
    assert_eq!(ended(&p.uac_events), vec![TerminationReason::LocalBye]);
    assert_eq!(p.uas.stats().dialogs_taken_over, 1);
    assert_eq!(p.uas.dialog_count(), 0);
}

#[test]
fn a_claim_that_finds_nothing_answers_the_waiting_request_481() {
    let (mut p, start) = pair(persisting(uac_addr()), persisting(uas_addr()));
    let (uac_dialog, _) = established(&mut p);
    p.uas = peer_node(&p, start);
    p.uac_sends(&uac_dialog, b"INFO", None);
    p.flush();
    p.run(Duration::from_millis(1));
    let key = p.uas.poll_claim().expect("a claim");
    p.uas.handle_claim(p.now, &key, None);
    p.run(Duration::from_secs(1));
    assert_eq!(
        request_results(&p.uac_events)
            .into_iter()
            .map(|(status, _)| status)
            .collect::<Vec<_>>(),
        vec![481]
    );
    assert_eq!(p.uas.stats().dialogs_taken_over, 0);
}
