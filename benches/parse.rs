//! Parser benchmarks. Ids are fixed (outside checks call them):
//! `parse/invite`, `parse_keys/invite`, `parse/response_200`, `parse/ack`,
//! `callid_scan/invite`. Messages live in `benches/data/`.

use std::hint::black_box;

use bytes::Bytes;
/// The allocator the `sipshard` binaries use, so the figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sipshard::message::{Message, find_call_id};

static INVITE: &[u8] = include_bytes!("data/invite.sip");
static RESPONSE_200: &[u8] = include_bytes!("data/response_200.sip");
static ACK: &[u8] = include_bytes!("data/ack.sip");

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, data) in [
        ("invite", INVITE),
        ("response_200", RESPONSE_200),
        ("ack", ACK),
    ] {
        let bytes = Bytes::from_static(data);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| Message::parse(black_box(bytes.clone())).expect("bench message parses"))
        });
    }
    g.finish();
}

/// Parse plus the keys every message needs: Call-ID, CSeq, From tag, To tag, top Via branch.
fn parse_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_keys");
    let bytes = Bytes::from_static(INVITE);
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("invite", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(bytes.clone())).expect("bench message parses");
            let call_id = m.call_id().map_or(0, <[u8]>::len);
            let cseq = m.cseq().expect("CSeq").seq;
            let from_tag = m.from_tag().expect("From").map_or(0, <[u8]>::len);
            let to_tag = m.to_tag().expect("To").map_or(0, <[u8]>::len);
            let branch = m.top_via().expect("Via").branch().map_or(0, <[u8]>::len);
            black_box((call_id, cseq, from_tag, to_tag, branch));
            m
        })
    });
    g.finish();
}

fn callid_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("callid_scan");
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("invite", |b| {
        b.iter(|| find_call_id(black_box(INVITE)).map(<[u8]>::len))
    });
    g.finish();
}

criterion_group!(benches, parse, parse_keys, callid_scan);
criterion_main!(benches);
