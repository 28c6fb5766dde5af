//! What the shared store keeps in Redis, and the Lua scripts that change it atomically.
//!
//! # What it owns, what it may not touch
//! The key layout and the scripts (each runs whole inside Redis, so a check and its write
//! cannot be split by a peer's). When they run is the writer's (`mod.rs`, `takeover.rs`).
//!
//! # The keys
//! - `sipshard:<store key>` of a dialog: a hash, fields `rec` (the record) and `owner` (the
//!   node id that may write it). Its TTL follows the dialog's deadline.
//! - `sipshard:<store key>` of an address-of-record: a string, its bindings record.
//! - `sipshard:node:<id>`: a live node's heartbeat, renewed every second, gone 3 s after
//!   its node stopped renewing it. A node whose heartbeat is gone is dead.
//! - `sipshard:nodes`: a set of the node ids that have written (so a peer can find the
//!   dead ones); a dead node leaves it once its dialogs have all been taken over.
//! - `sipshard:owned:<id>`: a set of the Redis keys of the dialogs node `id` owns, so its
//!   peers can take them over when it dies (even those no request ever asks for).
//! - `sipshard:moved:<id>`: a list of the Redis keys of dialogs a peer took from node `id`
//!   while `id` was alive (the front sent their requests to the peer): `id` drops them.

use std::time::Duration;

/// Writes and deletes dialog records (KEYS), each while this node (ARGV[1]) owns it or
/// nobody does, filing each under this node's dialogs: for key `i`, ARGV[2i] is the record
/// and ARGV[2i+1] its TTL in ms, or both empty for a delete. Returns, per key, 1 (done) or
/// 0 (fenced: a peer owns it). One script call per pipeline, not per record: a Lua call
/// costs Redis more than the few commands inside it.
pub(super) const WRITE_DIALOGS: &str = "local me = ARGV[1]
local owned = 'sipshard:owned:' .. me
local out = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('HGET', key, 'owner')
  local rec = ARGV[2 * i]
  if owner and owner ~= me then
    out[i] = 0
  elseif rec == '' then
    redis.call('DEL', key)
    redis.call('SREM', owned, key)
    out[i] = 1
  else
    redis.call('HSET', key, 'owner', me, 'rec', rec)
    redis.call('PEXPIRE', key, ARGV[2 * i + 1])
    redis.call('SADD', owned, key)
    out[i] = 1
  end
end
return out";

/// Dialog records written by one call of [`WRITE_DIALOGS`] at most (a script blocks Redis
/// while it runs).
pub(super) const WRITE_BATCH: usize = 256;

/// Claims a dialog's record for this node (ARGV[1]), because a request for it reached this
/// node: the record, else nil (no such dialog). From a dead owner it is a takeover; from a
/// live one (the front sends the call here now: its node was down and came back, or the
/// probes flapped) the owner is told to drop it, through its `moved` list.
pub(super) const CLAIM_DIALOG: &str = "local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return false end
if owner ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1])
  redis.call('SREM', 'sipshard:owned:' .. owner, KEYS[1])
  redis.call('SADD', 'sipshard:owned:' .. ARGV[1], KEYS[1])
  if redis.call('EXISTS', 'sipshard:node:' .. owner) == 1 then
    redis.call('RPUSH', 'sipshard:moved:' .. owner, KEYS[1])
    redis.call('PEXPIRE', 'sipshard:moved:' .. owner, 60000)
  end
end
return redis.call('HGET', KEYS[1], 'rec')";

/// Takes over, for this node (ARGV[1]), at most ARGV[2] dialogs of each dead node (a member
/// of `sipshard:nodes` whose heartbeat is gone): their keys and records, flat
/// (`key, record, key, record, …`). A dead node whose dialogs are all taken leaves the set.
pub(super) const SWEEP_DEAD: &str = "local out = {}
for _, node in ipairs(redis.call('SMEMBERS', 'sipshard:nodes')) do
  if node ~= ARGV[1] and redis.call('EXISTS', 'sipshard:node:' .. node) == 0 then
    local owned = 'sipshard:owned:' .. node
    for _, key in ipairs(redis.call('SPOP', owned, ARGV[2])) do
      if redis.call('HGET', key, 'owner') == node then
        redis.call('HSET', key, 'owner', ARGV[1])
        redis.call('SADD', 'sipshard:owned:' .. ARGV[1], key)
        table.insert(out, key)
        table.insert(out, redis.call('HGET', key, 'rec'))
      end
    end
    if redis.call('SCARD', owned) == 0 then
      redis.call('SREM', 'sipshard:nodes', node)
      redis.call('DEL', 'sipshard:moved:' .. node)
    end
  end
end
return out";

/// A live node's heartbeat is renewed this often, and is gone this long after its node
/// stops renewing it (a takeover waits for that).
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
pub(super) const HEARTBEAT_TTL_MS: u64 = 3000;

/// Dialogs taken over from each dead node by one run of [`SWEEP_DEAD`].
pub(super) const SWEEP_BATCH: usize = 256;
/// Runs of [`SWEEP_DEAD`] per heartbeat at most (then the next heartbeat goes on).
pub(super) const SWEEP_RUNS: usize = 16;
/// Keys of moved dialogs read per heartbeat at most.
pub(super) const MOVED_BATCH: usize = 4096;

/// The prefix of every key.
const PREFIX: &[u8] = b"sipshard:";

/// The Redis key of a store key.
pub(super) fn redis_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + key.len());
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(key);
    k
}

/// The store key of a Redis key (`None`: not one of ours).
pub(super) fn store_key(redis_key: &[u8]) -> Option<&[u8]> {
    redis_key.strip_prefix(PREFIX)
}

/// Node `id`'s heartbeat key.
pub(super) fn heartbeat_key(id: &str) -> String {
    format!("sipshard:node:{id}")
}

/// The set of node ids.
pub(super) const NODES: &str = "sipshard:nodes";

/// Node `id`'s list of dialogs a live peer took from it.
pub(super) fn moved_key(id: &str) -> String {
    format!("sipshard:moved:{id}")
}

/// The scripts as loaded on one connection (their SHA1s).
pub(super) struct Loaded {
    pub(super) write: String,
    pub(super) claim: String,
    pub(super) sweep: String,
}

impl Loaded {
    /// Loads every script on `c`.
    pub(super) fn load(c: &mut redis::Connection) -> redis::RedisResult<Loaded> {
        let mut load = |script: &str| -> redis::RedisResult<String> {
            redis::cmd("SCRIPT").arg("LOAD").arg(script).query(c)
        };
        Ok(Loaded {
            write: load(WRITE_DIALOGS)?,
            claim: load(CLAIM_DIALOG)?,
            sweep: load(SWEEP_DEAD)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_key_round_trips_through_its_redis_key() {
        let key = b"\x01\x02\x03\x04dcall";
        assert_eq!(store_key(&redis_key(key)), Some(&key[..]));
        assert_eq!(store_key(b"other:x"), None);
    }
}
