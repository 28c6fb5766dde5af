//! Transaction layer and timer wheel benchmarks. Ids are fixed (outside checks call them):
//! `txn/server_noninvite_roundtrip`, `timer/insert_cancel`, `timer/advance_1m`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
/// The allocator the `sipshard` binaries use, so the figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sipshard::message::{Message, ResponseBuilder};
use sipshard::timer::TimerWheel;
use sipshard::transaction::{TimerConfig, TransactionLayer, Transport, TxnEvent};

const REGISTER: &[u8] = b"REGISTER sip:registrar.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\nTo: Bob <sip:bob@example.com>\r\n\
From: Bob <sip:bob@example.com>;tag=456248\r\nCall-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\nContact: <sip:bob@192.0.2.4>\r\nExpires: 7200\r\nContent-Length: 0\r\n\r\n";

/// Create a server non-INVITE transaction, match a retransmission, respond 200, and let
/// Timer J terminate it; the request is parsed outside the measurement. In criterion's
/// `LargeInput` batches (1,000 per sample, tens to hundreds of messages each): a shard
/// handles a datagram right after parsing it, so the parsed messages a batch holds should
/// stay in cache. (`SmallInput` makes 10 batches per sample, tens of thousands of messages
/// held at once; 2 % to 5 % slower here.)
fn server_noninvite_roundtrip(c: &mut Criterion) {
    let from: SocketAddr = "192.0.2.4:5060".parse().unwrap();
    let request = Bytes::from_static(REGISTER);
    let mut buf = BytesMut::new();
    ResponseBuilder::to_request(
        &mut buf,
        &Message::parse(request.clone()).unwrap(),
        200,
        None,
        Some(b"tag1"),
    )
    .finish(b"")
    .unwrap();
    let ok = buf.freeze();
    let start = Instant::now();
    let mut layer = TransactionLayer::new(start, TimerConfig::default());
    let mut now = start;
    let j = TimerConfig::default().timeout();
    let mut g = c.benchmark_group("txn");
    g.bench_function("server_noninvite_roundtrip", |b| {
        b.iter_batched(
            || {
                let m = Message::parse(request.clone()).unwrap();
                (m.clone(), m)
            },
            |(first, retransmission)| {
                now += Duration::from_secs(40);
                roundtrip(&mut layer, now, j, from, [first, retransmission], &ok);
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// One iteration of `txn/server_noninvite_roundtrip`. Not inlined, so that
/// `scripts/instructions.sh` can count the instructions of exactly this.
#[inline(never)]
fn roundtrip(
    layer: &mut TransactionLayer,
    now: Instant,
    j: Duration,
    from: SocketAddr,
    [first, retransmission]: [Message; 2],
    ok: &Bytes,
) {
    layer
        .handle_request(now, from, Transport::Udp, first)
        .unwrap();
    let Some(TxnEvent::Request { txn, .. }) = layer.poll_event() else {
        panic!("no Request event")
    };
    layer
        .handle_request(now, from, Transport::Udp, retransmission)
        .unwrap();
    layer.send_response(now, txn, 200, ok.clone()).unwrap();
    while let Some(t) = layer.poll_transmit() {
        black_box(t);
    }
    layer.handle_timeout(now + j);
    while let Some(e) = layer.poll_event() {
        black_box(e);
    }
    debug_assert!(layer.is_empty());
}

fn timer_insert_cancel(c: &mut Criterion) {
    let start = Instant::now();
    let mut wheel: TimerWheel<u64> = TimerWheel::new(start, Duration::from_millis(10));
    // A realistic background population: 100k timers spread over a minute.
    for i in 0..100_000u64 {
        wheel.insert(start + Duration::from_millis(i % 60_000), i);
    }
    let deadline = start + Duration::from_secs(32);
    let mut g = c.benchmark_group("timer");
    g.bench_function("insert_cancel", |b| {
        b.iter(|| {
            let h = wheel.insert(black_box(deadline), 7);
            black_box(wheel.cancel(h))
        })
    });
    g.sample_size(10);
    g.bench_function("advance_1m", |b| {
        b.iter_batched(
            || {
                let mut w: TimerWheel<u32> = TimerWheel::new(start, Duration::from_millis(10));
                let mut x = 0x2545_f491_4f6c_dd1du64;
                for i in 0..1_000_000u32 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    w.insert(start + Duration::from_millis(1 + x % 64_000), i);
                }
                w
            },
            |mut w| {
                // Fire all one million timers, waking at each tick as a shard would.
                let mut fired = 0u32;
                while let Some(next) = w.next_deadline() {
                    while let Some((_, v)) = w.poll_expired(next) {
                        fired = fired.wrapping_add(v);
                    }
                }
                black_box(fired)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, server_noninvite_roundtrip, timer_insert_cancel);
criterion_main!(benches);
