//! sipshard: a high-throughput, sharded SIP dialog layer (RFC 3261).
//!
//! The crate is built in layers, each a module with a narrow face (see
//! `../shared/design/ARCHITECTURE.md`):
//!
//! - [`message`]: zero-copy parsing of SIP messages over [`bytes::Bytes`], typed header
//!   views, a builder, and id generators.
//! - [`timer`]: the hierarchical timer wheel each shard owns.
//! - [`transaction`]: RFC 3261 §17 client and server transactions (RFC 6026), sans-IO.
//! - [`registrar`]: REGISTER bindings (§10.3), used by the shard in registrar mode.
//! - [`guard`]: per-source request limits, failed-authentication limits and bans.
//! - [`dialog`] and [`shard`]: dialogs (§12–§15) and the per-core shard that owns them
//!   (in progress: see the shard module's "Scope so far").
//!
//! Later layers (transactions, dialogs, the shard, the runtime) build on it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

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
