//! sipshard: a high-throughput, sharded SIP dialog layer (RFC 3261).
//!
//! # The crate map
//!
//! Layers, each a module with a narrow face; no import runs from a lower layer to a higher
//! one (`../shared/design/ARCHITECTURE.md`):
//!
//! | layer | module | owns |
//! |---|---|---|
//! | message | [`message`], [`sdp`] | zero-copy parsing over [`bytes::Bytes`], typed views, a builder, id generators; SDP answers |
//! | timers | [`timer`] | the hierarchical timer wheel a shard runs its timers on |
//! | transactions | [`transaction`] | RFC 3261 §17 client and server transactions (RFC 6026), sans-IO |
//! | dialogs | [`dialog`] | a dialog's identity, state, route set and in-dialog request building (§12) |
//! | out of dialog | [`registrar`], [`guard`] | REGISTER bindings and Digest (§10.3, §22); limits and bans for hostile sources |
//! | the shard | [`shard`] | one core's tables and timers: the dialog behaviour of §12–§15 and the extensions, sans-IO |
//! | the runtime | [`runtime`] | threads, sockets, queues and the clock: Call-ID hashing onto shards, [`runtime::DialogManager`] |
//! | applications | [`auto_answer`] | the callee that answers everything: one policy, run by the runtime's auto-answer mode, the server's app mode and the load generator |
//!
//! Everything below [`runtime`] is sans-IO: it takes `now` and bytes in and hands back
//! transmits, events and its next deadline; it reads no clock and touches no socket.
//!
//! # Two ways in
//!
//! [`runtime::DialogManager`] runs the shards on threads and sockets of its own, with an
//! async face (`make_call`, `answer`, a session-event channel): see `examples/`.
//!
//! A [`shard::Shard`] can also be driven by hand, as a test, a simulator or another
//! runtime would. The loop is always the same: hand it what arrived, drain what it wants
//! sent and what it has to say, and sleep until its deadline.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use bytes::Bytes;
//! use sipshard::shard::{DialogCommand, SessionEvent, Shard, ShardConfig};
//!
//! let now = Instant::now();
//! let mut shard = Shard::new(now, ShardConfig::new("127.0.0.1:5060".parse().unwrap()));
//! let caller = "127.0.0.1:5070".parse().unwrap();
//! let invite = Bytes::from_static(
//!     b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
//!       Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKdoc1\r\n\
//!       Max-Forwards: 70\r\n\
//!       From: <sip:alice@127.0.0.1>;tag=a1\r\n\
//!       To: <sip:bob@127.0.0.1>\r\n\
//!       Call-ID: doc-example-1\r\n\
//!       CSeq: 1 INVITE\r\n\
//!       Contact: <sip:alice@127.0.0.1:5070>\r\n\
//!       Content-Length: 0\r\n\r\n",
//! );
//!
//! // What arrived, at `now` (a runtime reads the clock; a test picks the time).
//! shard.handle_datagram(now, caller, invite);
//! // What the shard has to say: answer each incoming call at once.
//! while let Some(event) = shard.poll_event() {
//!     if let SessionEvent::IncomingCall { dialog, .. } = event {
//!         shard
//!             .handle_command(now, DialogCommand::Answer { dialog, sdp: Bytes::new() })
//!             .unwrap();
//!     }
//! }
//! // What it wants sent: here, the 200 (with the body the application gave: none).
//! let mut sent = Vec::new();
//! while let Some(transmit) = shard.poll_transmit() {
//!     assert_eq!(transmit.destination, caller);
//!     sent.push(transmit.payload);
//! }
//! assert!(sent.iter().any(|m| m.starts_with(b"SIP/2.0 200")));
//! // When to come back: the 2xx is retransmitted until the ACK (§13.3.1.4).
//! let deadline = shard.poll_timeout().expect("a timer runs");
//! assert!(deadline <= now + Duration::from_secs(1));
//! shard.handle_timeout(deadline);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auto_answer;
mod codec;
pub mod dialog;
pub mod guard;
mod index_table;
pub mod message;
pub mod registrar;
pub mod runtime;
pub mod sdp;
pub mod shard;
pub mod timer;
pub mod transaction;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
