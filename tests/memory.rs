//! Heap per outstanding transaction, with its timers, measured by a counting allocator. The
//! message bytes a transaction keeps are shared handles on datagrams allocated before the
//! baseline, so they are not counted: what is left is the table, keys, state and timers.
//!
//! `SIPSHARD_MEM_TXNS` sets how many (default 1,000,000, the size the target is stated for:
//! at smaller sizes the table's power-of-two growth slack weighs more per transaction).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sipshard::message::{Message, ResponseBuilder};
use sipshard::transaction::{TimerConfig, TransactionLayer, Transport, TxnEvent};

struct Counting;

thread_local! {
    /// Live bytes allocated by this thread: tests run on threads of their own, so each
    /// measures only itself.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // try_with: allocations during thread teardown are not counted, never a panic.
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
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

    let baseline = live();
    let mut layer = TransactionLayer::new(now, TimerConfig::default());
    for d in &datagrams {
        let m = Message::parse(d.clone()).unwrap();
        layer.handle_request(now, from, Transport::Udp, m).unwrap();
        while let Some(e) = layer.poll_event() {
            if let TxnEvent::Request { txn, .. } = e {
                // Completed: the 486 is kept for retransmission, Timers G and H run.
                layer.send_response(now, txn, 486, busy.clone()).unwrap();
            }
        }
        while layer.poll_transmit().is_some() {}
    }
    let used = live() - baseline;
    assert_eq!(layer.len(), n);
    let per = used as f64 / n as f64;
    eprintln!(
        "{n} INVITE server transactions in Completed (2 timers each): {} bytes live, {per:.0} bytes per transaction",
        used
    );
    assert!(per <= 300.0, "{per:.0} bytes per transaction");
}

/// Heap per confirmed dialog (UAS side, 2-entry route set), table overhead included, after
/// its transactions have retired. `SIPSHARD_MEM_DIALOGS` (default 100,000; the closing
/// note's figure is 1,000,000 with `--release`).
#[test]
fn bytes_per_confirmed_dialog() {
    use sipshard::shard::{DialogCommand, SessionEvent, Shard, ShardConfig};
    use std::time::Duration;
    let n: usize = std::env::var("SIPSHARD_MEM_DIALOGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let from: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    let datagram = |i: usize, method: &str, to_tag: &str| {
        let b = Bytes::from(format!(
            "{method} sip:bob@192.0.2.2 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{i:016x}{method};rport\r\n\
             Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@example.com>;tag={i:x}\r\n\
             To: <sip:bob@example.com>{to_tag}\r\nCall-ID: {i:x}@192.0.2.1\r\nCSeq: 1 {method}\r\n\
             Contact: <sip:alice@192.0.2.1:5060>\r\nContent-Length: 0\r\n\r\n"
        ));
        drop(b.clone());
        b
    };
    let invites: Vec<Bytes> = (0..n).map(|i| datagram(i, "INVITE", "")).collect();
    let t0 = Instant::now();
    let mut shard = Shard::new(t0, ShardConfig::new("192.0.2.2:5060".parse().unwrap()));
    let baseline = live();
    // Dialogs arrive over time, as on a server: 10,000 calls, then their transactions
    // retire (60 s later) before the next ones, so transaction tables stay at their working
    // size and what remains is the dialogs.
    let mut now = t0;
    for batch in invites
        .chunks(10_000)
        .enumerate()
        .map(|(b, c)| (b * 10_000, c))
    {
        let (first, chunk) = batch;
        let mut acks = Vec::with_capacity(chunk.len());
        for (k, inv) in chunk.iter().enumerate() {
            shard.handle_datagram(now, from, inv.clone());
            while let Some(e) = shard.poll_event() {
                if let SessionEvent::IncomingCall { dialog, .. } = e {
                    let tag = String::from_utf8_lossy(dialog.local_tag()).into_owned();
                    shard
                        .handle_command(
                            now,
                            DialogCommand::Answer {
                                dialog,
                                sdp: Bytes::new(),
                            },
                        )
                        .unwrap();
                    acks.push(datagram(first + k, "ACK", &format!(";tag={tag}")));
                }
            }
            while shard.poll_transmit().is_some() {}
        }
        for ack in acks {
            shard.handle_datagram(now, from, ack);
            while shard.poll_event().is_some() {}
        }
        now += Duration::from_secs(60);
        shard.handle_timeout(now);
        while shard.poll_transmit().is_some() {}
        while shard.poll_event().is_some() {}
    }
    assert_eq!(shard.dialog_count(), n);
    assert_eq!(shard.transaction_count(), 0);
    let used = live() - baseline;
    let per = used as f64 / n as f64;
    eprintln!(
        "{n} confirmed dialogs with 2-entry route sets: {used} bytes live ({per:.0} per dialog, tables included)"
    );
    // Issue target: 1,000,000 confirmed dialogs in under 1 GB.
    assert!(per < 1000.0, "{per:.0} bytes per dialog");
}
