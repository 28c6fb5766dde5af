//! Parser benchmarks. Ids are fixed (outside checks call them):
//! `parse/invite`, `parse_keys/invite`, `parse/response_200`, `parse/ack`,
//! `callid_scan/invite`; also `views/check_request_invite` and `views/top_via_invite`.
//! Messages live in `benches/data/`.

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

/// The views a UAS reads from every request, on an INVITE parsed once outside the loop:
/// its whole-message checks (§8.2: every typed header, 400/416/505) and the top Via alone.
fn views(c: &mut Criterion) {
    let m = Message::parse(Bytes::from_static(INVITE)).expect("bench message parses");
    let mut g = c.benchmark_group("views");
    g.bench_function("check_request_invite", |b| {
        b.iter(|| black_box(&m).check_request().expect("bench message passes"))
    });
    g.bench_function("top_via_invite", |b| {
        b.iter(|| black_box(&m).top_via().expect("Via").port)
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

criterion_group!(benches, parse, parse_keys, views, callid_scan);
criterion_main!(benches);
