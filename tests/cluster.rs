//! A cluster's parts (issue 23, its first steps), with real processes: `sipshard serve
//! --cluster` writes each confirmed call to a real `redis-server` under its node id,
//! deletes it when the call ends, goes on answering while Redis is killed, and catches
//! Redis up when it comes back; and the front, Kamailio with `deploy/kamailio/front.cfg`,
//! spreads calls over three nodes by Call-ID and leaves a dead one out.

mod common;

use std::time::{Duration, Instant};

use common::peers::{
    KamailioProcess, Server, exchange, free_udp_port, kamailio, register, run_sipp, scenario, sipp,
    spawn_sipp, sum_metric, wait_metric, wait_options_through, wait_sipp, wait_until,
};
use common::redis::{Redis, clustered_node, clustered_node_with, stateful_node_args};
use sipshard::dialog::{DialogRecord, DialogState};

#[test]
fn calls_are_kept_in_redis_while_up_and_redis_is_caught_up_after_a_kill() {
    let Some(sipp) = sipp() else { return };
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let server = clustered_node(&redis, "node-a", "2");
    let listen = server.sip.to_string();

    // 300 calls at 100 per second, each held 8 s after its ACK.
    let calls = 300u64;
    let child = spawn_sipp(
        &sipp,
        free_udp_port(),
        &[
            "-sn",
            "uac",
            &listen,
            "-m",
            "300",
            "-r",
            "100",
            "-d",
            "8000",
            "-timeout",
            "60",
            "-timeout_error",
        ],
        &std::env::temp_dir(),
    );
    // The first hundred calls are up, and each is in Redis under this node.
    let up = || server.metric("sipshard_dialogs", "state=\"confirmed\"") >= 100;
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), up),
        "100 calls never came up"
    );
    let held = redis.wait_dialogs_until(|n| n >= 100, Duration::from_secs(5));
    assert!(
        held >= 100,
        "{held} records for 100 calls; {}",
        server
            .metrics()
            .lines()
            .filter(|l| l.starts_with("sipshard_shared") || l.starts_with("sipshard_dialogs{"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let held = redis.dialogs();
    for (record, owner, ttl) in &held {
        assert_eq!(owner, "node-a");
        assert!(
            *ttl > 0 && *ttl <= 12 * 3600 * 1000,
            "a call without a session timer is kept 12 h: {ttl} ms"
        );
        let record = DialogRecord::decode(record).expect("a record this build wrote");
        assert_eq!(record.dialog.state, DialogState::Confirmed);
    }

    // Redis dies while calls are up and new ones come: they are answered all the same.
    redis.kill();
    let down_at = Instant::now();
    wait_metric(
        &server,
        "sipshard_dialogs",
        "state=\"confirmed\"",
        calls,
        Duration::from_secs(10),
    );
    assert!(
        down_at.elapsed() < Duration::from_secs(6),
        "the calls made while Redis was down were not answered in time"
    );
    let redis = Redis::start_on(redis.port).expect("redis-server starts again");
    // It comes back empty; the node writes every live call again.
    assert_eq!(
        redis.wait_dialogs(calls as usize, Duration::from_secs(5)),
        calls as usize,
        "Redis holds the live calls again"
    );
    let m = server.metrics();
    assert!(
        sum_metric(
            &m,
            "sipshard_shared_store_events_total",
            "event=\"failed_batch\""
        ) > 0
    );
    assert!(sum_metric(&m, "sipshard_shared_store_events_total", "event=\"resync\"") >= 1);
    assert_eq!(sum_metric(&m, "sipshard_shared_store_connected", ""), 1);

    let run = wait_sipp(child, Duration::from_secs(60));
    run.assert_completed(calls as u32, "SIPp across a Redis kill");
    assert_eq!(run.failed_calls, 0, "{}", run.screen);
    // Every call ended: its record is deleted.
    assert_eq!(
        redis.wait_dialogs(0, Duration::from_secs(5)),
        0,
        "ended calls leave no record"
    );
    assert!(server.stop(), "graceful stop exits 0");
}

#[test]
fn a_node_never_overwrites_nor_deletes_a_dialog_a_peer_owns() {
    let Some(sipp) = sipp() else { return };
    let Some(redis) = Redis::start() else {
        return;
    };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let server = clustered_node(&redis, "node-a", "1");
    let listen = server.sip.to_string();
    // 20 calls held 3 s after their ACK.
    let calls = 20usize;
    let child = spawn_sipp(
        &sipp,
        free_udp_port(),
        &[
            "-sn", "uac", &listen, "-m", "20", "-r", "50", "-d", "3000", "-timeout", "30",
        ],
        &std::env::temp_dir(),
    );
    assert_eq!(
        redis.wait_dialogs(calls, Duration::from_secs(10)),
        calls,
        "every call is in Redis"
    );
    // A peer takes every dialog over (what a takeover's compare-and-set leaves behind).
    redis.set_owner(&redis.dialog_keys(), "node-b");
    // The calls end on node-a: its deletes are refused, the peer's records stay.
    let run = wait_sipp(child, Duration::from_secs(30));
    run.assert_completed(calls as u32, "SIPp");
    let fenced =
        || server.metric("sipshard_shared_store_events_total", "event=\"fenced\"") >= calls as u64;
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), fenced),
        "the deletes were not fenced"
    );
    let left = redis.dialogs();
    assert_eq!(left.len(), calls, "the peer's records are still there");
    assert!(left.iter().all(|(_, owner, _)| owner == "node-b"));
    assert!(server.stop(), "graceful stop exits 0");
}

/// `deploy/kamailio/front.cfg`, run as the README says, in front of `nodes`.
fn front(binary: &std::path::Path, nodes: &[std::net::SocketAddr]) -> (KamailioProcess, String) {
    let port = free_udp_port();
    let dir = std::env::temp_dir().join(format!("sipshard-front-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let list = dir.join("dispatcher.list");
    let lines: String = nodes.iter().map(|n| format!("1 sip:{n} 0 0\n")).collect();
    std::fs::write(&list, lines).expect("the list is written");
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kamailio/front.cfg");
    let listen = format!("LISTEN=udp:127.0.0.1:{port}");
    let list = format!("DISPATCHER_LIST=\"{}\"", list.display());
    let process = KamailioProcess::spawn(binary, &config, &["-A", &listen, "-A", &list], dir);
    let addr = format!("127.0.0.1:{port}");
    wait_options_through(addr.parse().expect("an address"), || process.log());
    (process, addr)
}

/// INVITEs a node received.
fn invites(node: &Server) -> u64 {
    node.metric("sipshard_requests_received_total", "method=\"INVITE\"")
}

#[test]
fn the_front_spreads_calls_by_call_id_and_leaves_a_dead_node_out() {
    let (Some(sipp), Some(kamailio)) = (sipp(), kamailio()) else {
        return;
    };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let nodes: Vec<Server> = (0..3)
        .map(|_| Server::start(&["--mode", "auto-answer", "--no-tcp", "--shards", "1"]))
        .collect();
    let addrs: Vec<_> = nodes.iter().map(|n| n.sip).collect();
    let (front, at) = front(&kamailio, &addrs);
    let scenario = format!(
        "{}/tests/data/sipp/proxied_call.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let calls = |n: &str| {
        run_sipp(
            &sipp,
            &[
                "-sf",
                &scenario,
                &at,
                "-m",
                n,
                "-r",
                "100",
                "-timeout",
                "60",
                "-timeout_error",
            ],
            Duration::from_secs(90),
        )
    };

    // Every call through the front completes, ACK and BYE by its Record-Route, and the
    // Call-ID hash gives each node a share.
    let run = calls("300");
    run.assert_completed(300, "through the front");
    assert_eq!(run.failed_calls, 0, "{}", run.screen);
    let shares: Vec<u64> = nodes.iter().map(invites).collect();
    assert_eq!(shares.iter().sum::<u64>(), 300, "{shares:?}");
    assert!(
        shares.iter().all(|&s| s >= 45),
        "each node a share: {shares:?}"
    );

    // One node dies: the probes mark it inactive, and the next calls go to the others.
    let mut nodes = nodes;
    let dead = nodes.remove(1);
    dead.kill();
    // The front probes every second and marks a node inactive at its first unanswered
    // probe; nothing outside Kamailio shows when it has, so this waits three probes.
    std::thread::sleep(Duration::from_secs(3));
    let before: u64 = nodes.iter().map(invites).sum();
    let run = calls("150");
    run.assert_completed(150, "with a node dead");
    assert_eq!(run.failed_calls, 0, "{}", run.screen);
    assert_eq!(nodes.iter().map(invites).sum::<u64>() - before, 150);
    drop(front);
}

#[test]
fn a_dead_nodes_calls_are_taken_over_by_its_peers_and_every_bye_gets_200() {
    let (Some(sipp), Some(kamailio)) = (sipp(), kamailio()) else {
        return;
    };
    let Some(redis) = Redis::start() else {
        return;
    };
    let _one_at_a_time = common::peers::sipp_run_lock();
    // Each call rings 20 ms before its answer, as phones do: the 180 and the 200 sent
    // back to back could pass each other between two Kamailio children, and SIPp's
    // scenario would abort a call on a 180 after its 200.
    let nodes: Vec<Server> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|id| clustered_node_with(&redis, id, "1", &["--answer-delay-ms", "20"]))
        .collect();
    let addrs: Vec<_> = nodes.iter().map(|n| n.sip).collect();
    let (front, at) = front(&kamailio, &addrs);
    let scenario = scenario("proxied_call_hold.xml");
    // 3,000 calls at 300 per second, each held 20 s after its ACK, then BYE: all are up
    // from the 10th second to the 20th.
    let calls = 3000u64;
    let child = spawn_sipp(
        &sipp,
        free_udp_port(),
        &[
            "-sf",
            &scenario,
            &at,
            "-m",
            "3000",
            "-r",
            "300",
            "-d",
            "20000",
            "-timeout",
            "90",
            "-timeout_error",
        ],
        &std::env::temp_dir(),
    );
    assert_eq!(
        redis.wait_dialogs(calls as usize, Duration::from_secs(40)),
        calls as usize,
        "every call is up, and in Redis"
    );
    // The second node dies with its calls up; its peers carry them on.
    let mut nodes = nodes;
    let dead = nodes.remove(1);
    let dead_calls = invites(&dead);
    assert!(dead_calls > 0, "the dead node had calls");
    dead.kill();

    let run = wait_sipp(child, Duration::from_secs(90));
    run.assert_completed(calls as u32, "calls across a node's death");
    assert_eq!(run.failed_calls, 0, "{}", run.screen);
    // A call the sweep gave one peer while the front sent its BYE to the other moved
    // again: taken by the second, released by the first (which reads what it lost once a
    // second).
    let sum = |name: &str| -> u64 { nodes.iter().map(|n| n.metric(name, "")).sum() };
    let counts = || {
        (
            sum("sipshard_dialogs_taken_over_total"),
            sum("sipshard_dialogs_released_total"),
        )
    };
    let (mut taken, mut released) = (0, 0);
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        (taken, released) = counts();
        taken.saturating_sub(released) == dead_calls
    });
    assert_eq!(
        taken.saturating_sub(released),
        dead_calls,
        "each of the dead node's calls lives on one peer (taken {taken}, released {released})"
    );
    assert_eq!(
        redis.wait_dialogs(0, Duration::from_secs(5)),
        0,
        "every call ended, taken over or not"
    );
    drop(front);
}

#[test]
fn a_returning_node_restores_only_the_calls_no_peer_took_over() {
    let Some(sipp) = sipp() else { return };
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let _one_at_a_time = common::peers::sipp_run_lock();
    let dir = std::env::temp_dir().join(format!("sipshard-returning-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = redis.url();
    let dir_arg = dir.to_str().expect("a UTF-8 temporary path").to_owned();
    let args = stateful_node_args(&url, &dir_arg, "node-a");
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let node = Server::start_at(&listen, &args);
    // 20 calls held a minute.
    let mut child = spawn_sipp(
        &sipp,
        free_udp_port(),
        &["-sn", "uac", &listen, "-m", "20", "-r", "50", "-d", "60000"],
        &std::env::temp_dir(),
    );
    assert_eq!(redis.wait_dialogs(20, Duration::from_secs(10)), 20);
    node.kill();

    // While it is down, a live peer takes half of its calls over.
    let mut c = redis.connection().expect("redis answers");
    let _: () = redis::cmd("SET")
        .arg("sipshard:node:node-b")
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .query(&mut c)
        .expect("node-b's heartbeat");
    let dialogs = redis.dialog_keys();
    assert_eq!(dialogs.len(), 20);
    redis.set_owner(&dialogs[..10], "node-b");

    // Back, it holds only its own ten, and has let go of the others for good.
    let node = Server::start_at(&listen, &args);
    assert_eq!(node.metric("sipshard_dialogs_restored_total", ""), 10);
    assert_eq!(node.metric("sipshard_dialogs", "state=\"confirmed\""), 10);
    node.kill();
    let node = Server::start_at(&listen, &args);
    assert_eq!(
        node.metric("sipshard_dialogs_restored_total", ""),
        10,
        "the peer's calls left the node's own store too"
    );
    let owners: Vec<String> = redis
        .dialogs()
        .into_iter()
        .map(|(_, owner, _)| owner)
        .collect();
    assert_eq!(owners.iter().filter(|o| *o == "node-b").count(), 10);
    node.kill();

    // A node that cannot ask the shared store does not pretend to own what it cannot
    // check: it restores no dialog, and keeps the records for a start that can.
    redis.kill();
    let node = Server::start_at(&listen, &args);
    assert_eq!(node.metric("sipshard_dialogs_restored_total", ""), 0);
    node.kill();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_registration_made_through_one_node_is_what_a_query_through_another_sees() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let url = redis.url();
    let registrar = |id: &str| {
        Server::start(&[
            "--mode",
            "registrar",
            "--no-tcp",
            "--cluster",
            &url,
            "--node-id",
            id,
            "--domain",
            "example.com",
        ])
    };
    let (a, b) = (registrar("node-a"), registrar("node-b"));
    let (a_at, b_at) = (a.sip.to_string(), b.sip.to_string());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a client socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a timeout");
    let local = socket.local_addr().expect("its address");
    let domain = "example.com";
    // Binds `contact` through the node at `at`, then waits until Redis holds it: the node
    // writes after it answers, a couple of milliseconds behind.
    let bind = |at: &str, call_id: &str, contact: &str| {
        let ok = exchange(
            &socket,
            at,
            &register(domain, local, call_id, 1, Some(contact)),
        );
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        let uri = contact.trim_matches(|c| c == '<' || c == '>').as_bytes();
        let stored = || {
            redis
                .bindings()
                .iter()
                .any(|r| r.windows(uri.len()).any(|w| w == uri))
        };
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(5), stored),
            "the binding never reached Redis"
        );
    };
    let query = |at: &str, call_id: &str| {
        let listed = exchange(&socket, at, &register(domain, local, call_id, 1, None));
        assert!(listed.starts_with("SIP/2.0 200"), "{listed}");
        listed
    };

    // Bob's phone registers through node A; a query through node B lists it.
    bind(&a_at, "phone", "<sip:bob@192.0.2.10:5060>");
    let listed = query(&b_at, "query-1");
    assert!(listed.contains("sip:bob@192.0.2.10:5060"), "{listed}");
    // His softphone registers through node B; node A's next query lists both.
    bind(&b_at, "softphone", "<sip:bob@192.0.2.20:5060>");
    let listed = query(&a_at, "query-2");
    assert!(listed.contains("sip:bob@192.0.2.10:5060"), "{listed}");
    assert!(listed.contains("sip:bob@192.0.2.20:5060"), "{listed}");
}
