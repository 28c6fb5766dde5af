//! Shard benchmarks. Ids are fixed (outside checks call them): `shard/call_flow`,
//! `shard/call_flow_persisted`.
//!
//! `shard/call_flow`: one full call (INVITE, 180, 200, ACK, BYE, 200) between a UAC shard and
//! a UAS shard in memory, parse and build included, on one thread. Simulated time advances
//! 100 µs per call; T1 is 1 ms so that transactions and timers (64·T1) retire after ~640
//! calls and the tables stay at a steady size, as in a server under constant load.
//!
//! `shard/call_flow_persisted`: the same call with both shards persisting their dialogs
//! (issue 22) into an embedded store on this machine's disk (fsync off; another policy with
//! `SIPSHARD_BENCH_FSYNC=batch` or `=100ms`), the records drained before each exchange's
//! datagrams as the runtime drains them before a round's: each side writes its record at
//! the 2xx (or its ACK) and deletes it at the BYE. The calls go 32 at a time, as a loaded
//! shard's rounds (a `recvmmsg` batch) carry many calls each, so a batch holds the records
//! of 32 calls; criterion's time is per call. Its baseline is `shard/call_flow_rounds`, the
//! same rounds without a store; `shard/call_flow_persisted_single` is the worst case, one
//! call per round and a batch per record (four per call).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The allocator the `sipshard` binaries use, so the figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sipshard::runtime::{FsyncPolicy, ShardStore, StoreStats};
use sipshard::shard::{DialogCommand, PersistOp, SessionEvent, Shard, ShardConfig};
use sipshard::transaction::TimerConfig;

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

struct Pair {
    now: Instant,
    uac: Shard,
    uas: Shard,
    uac_addr: SocketAddr,
    uas_addr: SocketAddr,
    /// Each side's store, when persisting, and the buffer of its round's writes.
    stores: Option<[ShardStore; 2]>,
    ops: Vec<PersistOp>,
    store_stats: StoreStats,
}

impl Pair {
    fn new() -> Self {
        Self::with(None)
    }

    /// Both shards persist into a fresh store under `dir` with `fsync`.
    fn persisted(dir: &std::path::Path, fsync: FsyncPolicy) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        let open = |name: &str| ShardStore::open(dir.join(name), fsync).expect("a store opens");
        Self::with(Some([open("uac"), open("uas")]))
    }

    fn with(stores: Option<[ShardStore; 2]>) -> Self {
        let now = Instant::now();
        let uac_addr: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let uas_addr: SocketAddr = "127.0.0.1:5080".parse().unwrap();
        let timers = TimerConfig {
            t1: Duration::from_millis(1),
            t2: Duration::from_millis(8),
            t4: Duration::from_millis(10),
            timer_d: Duration::from_millis(64),
            resolution: Duration::from_millis(1),
            ..TimerConfig::default()
        };
        let config = |addr| ShardConfig {
            timers,
            persist: stores.is_some(),
            ..ShardConfig::new(addr)
        };
        Pair {
            now,
            uac: Shard::new(now, config(uac_addr)),
            uas: Shard::new(now, config(uas_addr)),
            uac_addr,
            uas_addr,
            stores,
            ops: Vec::new(),
            store_stats: StoreStats::default(),
        }
    }

    /// Each side's records of the call, to its store, in one batch (as a round would).
    fn persist(&mut self) {
        let Some(stores) = &mut self.stores else {
            return;
        };
        for (shard, store) in [&mut self.uac, &mut self.uas]
            .into_iter()
            .zip(stores.iter_mut())
        {
            self.ops.clear();
            self.ops.extend(std::iter::from_fn(|| shard.poll_persist()));
            store.write(self.now, &self.ops, &mut self.store_stats);
        }
    }

    /// One call from INVITE to the 200 for BYE; returns the datagrams exchanged.
    fn call(&mut self) -> usize {
        self.calls(1)
    }

    /// `n` calls in step, from INVITE to the 200 for BYE, as a loaded server's rounds
    /// carry many calls each; returns the datagrams exchanged.
    fn calls(&mut self, n: usize) -> usize {
        self.now += Duration::from_micros(100);
        let now = self.now;
        for _ in 0..n {
            self.uac
                .handle_command(
                    now,
                    DialogCommand::MakeCall {
                        from: Bytes::from_static(b"<sip:alice@127.0.0.1:5070>"),
                        to: Bytes::from_static(b"<sip:bob@127.0.0.1:5080>"),
                        request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
                        destination: self.uas_addr,
                        sdp: Bytes::from_static(SDP),
                        headers: Vec::new(),
                    },
                )
                .expect("MakeCall");
        }
        let mut datagrams = 0;
        loop {
            let mut moved = false;
            // Records before datagrams, as the runtime orders a round.
            self.persist();
            while let Some(t) = self.uac.poll_transmit() {
                self.uas.handle_datagram(now, self.uac_addr, t.payload);
                datagrams += 1;
                moved = true;
            }
            while let Some(e) = self.uas.poll_event() {
                if let SessionEvent::IncomingCall { dialog, .. } = e {
                    let _ = self.uas.handle_command(
                        now,
                        DialogCommand::Ringing {
                            dialog: dialog.clone(),
                        },
                    );
                    let _ = self.uas.handle_command(
                        now,
                        DialogCommand::Answer {
                            dialog,
                            sdp: Bytes::from_static(SDP),
                        },
                    );
                }
                moved = true;
            }
            while let Some(t) = self.uas.poll_transmit() {
                self.uac.handle_datagram(now, self.uas_addr, t.payload);
                datagrams += 1;
                moved = true;
            }
            while let Some(e) = self.uac.poll_event() {
                if let SessionEvent::CallAnswered { dialog, .. } = e {
                    let _ = self.uac.handle_command(now, DialogCommand::Bye { dialog });
                }
                moved = true;
            }
            if !moved {
                break;
            }
        }
        self.uac.handle_timeout(now);
        self.uas.handle_timeout(now);
        datagrams
    }
}

fn call_flow(c: &mut Criterion) {
    let mut pair = Pair::new();
    // Reach the steady state before measuring.
    for _ in 0..2_000 {
        pair.call();
    }
    assert_eq!(pair.call(), 6, "INVITE, 180, 200, ACK, BYE, 200");
    let mut g = c.benchmark_group("shard");
    g.throughput(Throughput::Elements(1));
    g.bench_function("call_flow", |b| b.iter(|| black_box(pair.call())));
    g.finish();
    eprintln!(
        "steady state: {} + {} dialogs, {} + {} transactions",
        pair.uac.dialog_count(),
        pair.uas.dialog_count(),
        pair.uac.transaction_count(),
        pair.uas.transaction_count()
    );
}

/// Calls per round in the round benchmarks: what one `recvmmsg` batch brings a loaded
/// shard (`runtime::udp::BATCH`).
const ROUND: usize = 32;

/// Per-call time of calls made `ROUND` at a time (criterion's time is per call).
fn per_call_in_rounds(pair: &mut Pair, iters: u64) -> Duration {
    let rounds = iters.div_ceil(ROUND as u64);
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(pair.calls(ROUND));
    }
    start
        .elapsed()
        .mul_f64(iters as f64 / (rounds * ROUND as u64) as f64)
}

/// `shard/call_flow_rounds`: calls `ROUND` at a time without a store, the baseline of
/// `shard/call_flow_persisted`.
fn call_flow_rounds(c: &mut Criterion) {
    let mut pair = Pair::new();
    for _ in 0..100 {
        pair.calls(ROUND);
    }
    assert_eq!(pair.calls(ROUND), 6 * ROUND);
    let mut g = c.benchmark_group("shard");
    g.throughput(Throughput::Elements(1));
    g.bench_function("call_flow_rounds", |b| {
        b.iter_custom(|iters| per_call_in_rounds(&mut pair, iters))
    });
    g.finish();
}

fn call_flow_persisted(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("sipshard-bench-store-{}", std::process::id()));
    let fsync = match std::env::var("SIPSHARD_BENCH_FSYNC") {
        Ok(policy) => policy.parse().expect("none, batch or <N>ms"),
        Err(_) => FsyncPolicy::Never,
    };
    let mut pair = Pair::persisted(&dir, fsync);
    for _ in 0..100 {
        pair.calls(ROUND);
    }
    assert_eq!(
        pair.calls(ROUND),
        6 * ROUND,
        "INVITE, 180, 200, ACK, BYE, 200"
    );
    assert_eq!(pair.store_stats.write_errors, 0);
    let mut g = c.benchmark_group("shard");
    g.throughput(Throughput::Elements(1));
    g.bench_function("call_flow_persisted", |b| {
        b.iter_custom(|iters| per_call_in_rounds(&mut pair, iters))
    });
    // The worst case: one call per round, every record a batch of its own.
    g.bench_function("call_flow_persisted_single", |b| {
        b.iter(|| black_box(pair.call()))
    });
    g.finish();
    let s = pair.store_stats;
    eprintln!(
        "store ({fsync:?}): {} batches, {} writes, {} syncs, {:.1} µs per batch (both benchmarks)",
        s.batches,
        s.writes,
        s.syncs,
        s.write_micros as f64 / s.batches.max(1) as f64
    );
    drop(pair);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, call_flow, call_flow_rounds, call_flow_persisted);
criterion_main!(benches);
