//! Shard benchmarks. Ids are fixed (outside checks call them): `shard/call_flow`.
//!
//! `shard/call_flow`: one full call (INVITE, 180, 200, ACK, BYE, 200) between a UAC shard and
//! a UAS shard in memory, parse and build included, on one thread. Simulated time advances
//! 100 µs per call; T1 is 1 ms so that transactions and timers (64·T1) retire after ~640
//! calls and the tables stay at a steady size, as in a server under constant load.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The allocator the `sipshard` binaries use, so the figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sipshard::shard::{DialogCommand, SessionEvent, Shard, ShardConfig};
use sipshard::transaction::TimerConfig;

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

struct Pair {
    now: Instant,
    uac: Shard,
    uas: Shard,
    uac_addr: SocketAddr,
    uas_addr: SocketAddr,
}

impl Pair {
    fn new() -> Self {
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
            ..ShardConfig::new(addr)
        };
        Pair {
            now,
            uac: Shard::new(now, config(uac_addr)),
            uas: Shard::new(now, config(uas_addr)),
            uac_addr,
            uas_addr,
        }
    }

    /// One call from INVITE to the 200 for BYE; returns the datagrams exchanged.
    fn call(&mut self) -> usize {
        self.now += Duration::from_micros(100);
        let now = self.now;
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
        let mut datagrams = 0;
        loop {
            let mut moved = false;
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

criterion_group!(benches, call_flow);
criterion_main!(benches);
