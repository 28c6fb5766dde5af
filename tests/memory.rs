//! Heap per outstanding transaction, with its timers, measured by a counting allocator. The
//! message bytes a transaction keeps are shared handles on datagrams allocated before the
//! baseline, so they are not counted: what is left is the table, keys, state and timers.
//!
//! `SIPSHARD_MEM_TXNS` sets how many (default 1,000,000, the size the target is stated for:
//! at smaller sizes the table's power-of-two growth slack weighs more per transaction).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sipshard::message::{Message, ResponseBuilder};
use sipshard::transaction::{TimerConfig, TransactionLayer, TxnEvent};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn invite(i: usize) -> Bytes {
    let b = Bytes::from(format!(
        "INVITE sip:bob@192.0.2.2 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{i:016x}x;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@192.0.2.1>;tag={i:x}\r\nTo: <sip:bob@192.0.2.2>\r\n\
         Call-ID: {i:x}@192.0.2.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ));
    // Promote to a shared buffer now, so that later clones allocate nothing.
    drop(b.clone());
    b
}

#[test]
fn bytes_per_outstanding_transaction() {
    let n: usize = std::env::var("SIPSHARD_MEM_TXNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let from: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    let datagrams: Vec<Bytes> = (0..n).map(invite).collect();
    let mut buf = BytesMut::new();
    let first = Message::parse(datagrams[0].clone()).unwrap();
    ResponseBuilder::to_request(&mut buf, &first, 486, None, Some(b"t"))
        .finish(b"")
        .unwrap();
    let busy = buf.freeze();
    drop(busy.clone());
    drop(first);
    let now = Instant::now();

    let baseline = LIVE.load(Ordering::Relaxed);
    let mut layer = TransactionLayer::new(now, TimerConfig::default());
    for d in &datagrams {
        let m = Message::parse(d.clone()).unwrap();
        layer.handle_request(now, from, false, m).unwrap();
        while let Some(e) = layer.poll_event() {
            if let TxnEvent::Request { txn, .. } = e {
                // Completed: the 486 is kept for retransmission, Timers G and H run.
                layer.send_response(now, txn, 486, busy.clone()).unwrap();
            }
        }
        while layer.poll_transmit().is_some() {}
    }
    let used = LIVE.load(Ordering::Relaxed) - baseline;
    assert_eq!(layer.len(), n);
    let per = used as f64 / n as f64;
    eprintln!(
        "{n} INVITE server transactions in Completed (2 timers each): {} bytes live, {per:.0} bytes per transaction",
        used
    );
    assert!(per <= 300.0, "{per:.0} bytes per transaction");
}
