//! A counting global allocator shows the parser's allocation budget: exactly one heap
//! allocation per parsed message of up to 64 header lines (the header index; two past
//! that), none per header, none in the typed views, `validate`, the Call-ID scan or a clone.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use sipshard::message::{Message, find_call_id};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls on this thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

fn check(name: &str, data: Bytes) {
    let (n, parsed) = allocations_during(|| Message::parse(data.clone()));
    let m = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        n,
        1,
        "{name}: {n} allocations to parse {} headers",
        m.header_count()
    );
    let (n, _) = allocations_during(|| {
        let keys = (
            m.call_id().map(<[u8]>::len),
            m.cseq().map(|c| c.seq),
            m.from_tag().map(|t| t.map(<[u8]>::len)),
            m.to_tag().map(|t| t.map(<[u8]>::len)),
            m.top_via().map(|v| v.branch().map(<[u8]>::len)),
        );
        let all = (
            m.validate(),
            m.check_request().err(),
            m.check_response().err(),
        );
        let lists = m.vias().count() + m.contacts().count() + m.record_routes().count();
        let scan = find_call_id(&data).map(<[u8]>::len);
        std::hint::black_box((keys, all, lists, scan))
    });
    assert_eq!(n, 0, "{name}: views allocated {n} times");
}

#[test]
fn one_allocation_per_message() {
    for (name, data) in [
        ("invite", &include_bytes!("../benches/data/invite.sip")[..]),
        (
            "response_200",
            &include_bytes!("../benches/data/response_200.sip")[..],
        ),
        ("ack", &include_bytes!("../benches/data/ack.sip")[..]),
    ] {
        check(name, Bytes::from_static(data));
    }
    // The torture messages that parse, including longreq's 34 Vias on 40-odd lines.
    for row in common::manifest("rfc4475/manifest.tsv") {
        let data = common::read(&format!("rfc4475/{}", row[0]));
        if Message::parse(data.clone()).is_ok() {
            check(&row[0], data);
        }
    }
}

/// Past the inline array the lines spill to a Vec, which is then copied into the shared
/// slice: two allocations for such rare messages, so that every clone of every message
/// allocates nothing.
#[test]
fn more_headers_than_the_inline_array_allocate_twice() {
    let mut text = String::from("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n");
    for i in 0..200 {
        text.push_str(&format!("X-{i}: {i}\r\n"));
    }
    text.push_str("\r\n");
    let data = Bytes::from(text);
    let (n, m) = allocations_during(|| Message::parse(data.clone()));
    let m = m.unwrap();
    assert_eq!(m.header_count(), 201);
    assert_eq!(n, 2);
    let (n, _copy) = allocations_during(|| m.clone());
    assert_eq!(n, 0, "a clone shares the datagram and the header index");
}
