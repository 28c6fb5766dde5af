//! The shared store (issue 23, its first step): confirmed dialogs and registrar bindings
//! written to Redis beside (or instead of) the embedded store, so that the nodes behind one
//! front can see each other's state.
//!
//! # What it owns, what it may not touch
//! One writer thread per runtime with its Redis connection, the two Lua scripts that fence
//! dialog writes, the queue of batches and the counters. Shard workers hand it each round's
//! records with [`SharedWriter::offer`] and never wait: a full queue or an unreachable Redis
//! costs a counted, lost batch and, once Redis answers again, a resync (each shard hands
//! every live record again, and the deletes that were lost go first), never a blocked
//! shard thread. What a record holds and when one is written are the shard's
//! (`shard::persist`); taking a peer's dialog over is not here yet.
//!
//! # In Redis
//! A dialog is a hash at `sipshard:` and its store key (binary: a hash, a kind byte, the
//! dialog's Call-ID and tags), with fields `rec` (the record) and `owner` (the node id that
//! writes it). A node writes or deletes it only while it owns it (or nobody does), checked
//! in the same Lua script as the write, so a node a peer has taken a dialog from cannot
//! overwrite the peer's state (fencing). Its TTL is its session timer's deadline plus a
//! minute, or `dialog_ttl` for a call without one (as Kamailio's dialog `default_timeout`),
//! renewed by every write. An AOR's bindings are a string at `sipshard:` and its key, with
//! the TTL of its latest binding; any node may write them (REGISTER ordering is kept by the
//! Call-ID and CSeq inside the record).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::queue::{Inbound, ShardHandle};
use crate::shard::{PersistOp, is_dialog_store_key};

/// Where the shared store is and who this node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedStoreConfig {
    /// The Redis URL (`redis://127.0.0.1:6379/`).
    pub url: String,
    /// This node's id: the owner its dialogs are written under.
    pub node_id: String,
    /// The TTL of a dialog without a session timer, renewed by each write of its record.
    pub dialog_ttl: Duration,
    /// Batches that may wait for the writer thread; beyond, a batch is lost (counted) and
    /// a resync follows.
    pub queue: usize,
}

impl SharedStoreConfig {
    /// `url` for node `node_id`; a call without a session timer is kept 12 hours.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        SharedStoreConfig {
            url: url.into(),
            node_id: node_id.into(),
            dialog_ttl: Duration::from_secs(12 * 3600),
            queue: 4096,
        }
    }
}

/// What the shared store has done, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedStoreStats {
    /// Pipelines written (one or more shard batches each).
    pub pipelines: u64,
    /// Records written or deleted.
    pub writes: u64,
    /// Writes refused because another node owns the dialog.
    pub fenced: u64,
    /// Batches lost: Redis failed or could not be reached.
    pub failed_batches: u64,
    /// Batches lost: the writer's queue was full.
    pub dropped_batches: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Resyncs asked of the shards after lost batches.
    pub resyncs: u64,
    /// Dialog records claimed from a dead peer (takeovers).
    pub claims: u64,
    /// Connected to Redis now (1) or not (0).
    pub connected: u64,
}

#[derive(Default)]
struct Counters {
    pipelines: AtomicU64,
    writes: AtomicU64,
    fenced: AtomicU64,
    failed_batches: AtomicU64,
    dropped_batches: AtomicU64,
    reconnects: AtomicU64,
    resyncs: AtomicU64,
    claims: AtomicU64,
    connected: AtomicBool,
}

/// One shard's round of records.
struct Batch {
    ops: Vec<PersistOp>,
}

/// What a shard asks of the writer.
enum Work {
    /// A round's records.
    Batch(Batch),
    /// Claim the dialog record at this store key for this node (a takeover), or read an
    /// AOR's bindings record, and answer shard `shard`.
    Claim { shard: usize, key: Vec<u8> },
}

/// The writer thread and what the shards share with it.
pub(crate) struct SharedStore {
    tx: Option<Sender<Work>>,
    resync: Arc<[AtomicBool]>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

/// A shard worker's side of the shared store.
pub(crate) struct SharedWriter {
    index: usize,
    tx: Sender<Work>,
    resync: Arc<[AtomicBool]>,
    counters: Arc<Counters>,
}

impl SharedStore {
    /// Starts the writer for `shards` (it wakes them for a resync, and answers their
    /// claims through their queues). Redis need not be up: the writer connects when it
    /// can. Only a URL that cannot be one is an error.
    pub(crate) fn start(
        config: &SharedStoreConfig,
        handles: Arc<Vec<ShardHandle>>,
    ) -> Result<Self, String> {
        let shards = handles.len();
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("shared store {}: {e}", config.url))?;
        let (tx, rx) = crossbeam_channel::bounded(config.queue.max(1));
        let resync: Arc<[AtomicBool]> = (0..shards).map(|_| AtomicBool::new(false)).collect();
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(
            client,
            config,
            rx,
            resync.clone(),
            handles,
            counters.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("sipshard-shared".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("shared store thread: {e}"))?;
        Ok(SharedStore {
            tx: Some(tx),
            resync,
            counters,
            thread: Some(thread),
        })
    }

    /// Shard `index`'s side.
    pub(crate) fn writer(&self, index: usize) -> Option<SharedWriter> {
        Some(SharedWriter {
            index,
            tx: self.tx.clone()?,
            resync: self.resync.clone(),
            counters: self.counters.clone(),
        })
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> SharedStoreStats {
        self.counters.snapshot()
    }

    /// Lets the writer write what is queued (the shards have stopped) and waits for it,
    /// at most `within`.
    pub(crate) fn finish(&mut self, within: Duration) {
        drop(self.tx.take());
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + within;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

impl Counters {
    fn snapshot(&self) -> SharedStoreStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SharedStoreStats {
            pipelines: get(&self.pipelines),
            writes: get(&self.writes),
            fenced: get(&self.fenced),
            failed_batches: get(&self.failed_batches),
            dropped_batches: get(&self.dropped_batches),
            reconnects: get(&self.reconnects),
            resyncs: get(&self.resyncs),
            claims: get(&self.claims),
            connected: u64::from(self.connected.load(Ordering::Relaxed)),
        }
    }
}

impl SharedWriter {
    /// Hands a round's records to the writer, without waiting. A full queue loses them
    /// (counted) and asks this shard for a resync, which replaces them.
    pub(crate) fn offer(&self, ops: Vec<PersistOp>) {
        if ops.is_empty() {
            return;
        }
        match self.tx.try_send(Work::Batch(Batch { ops })) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters
                    .dropped_batches
                    .fetch_add(1, Ordering::Relaxed);
                self.resync[self.index].store(true, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Asks the writer to claim the dialog record at `key` for this node; false when it
    /// cannot be asked (its queue is full or it is gone): the caller answers the claim
    /// itself, with nothing.
    pub(crate) fn claim(&self, key: Vec<u8>) -> bool {
        self.tx
            .try_send(Work::Claim {
                shard: self.index,
                key,
            })
            .is_ok()
    }

    /// Whether the writer wants every live record of this shard again (asked once).
    pub(crate) fn take_resync(&self) -> bool {
        self.resync[self.index].swap(false, Ordering::Relaxed)
    }
}

/// Writes a dialog's record while this node owns it (or nobody does): 1, else 0.
const PUT_DIALOG: &str = "local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'rec', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1";

/// Claims a dialog's record for this node (ARGV[1]) when its owner is this node or a
/// dead one (its heartbeat key is gone): the record, else nil.
const CLAIM_DIALOG: &str = "local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return false end
if owner ~= ARGV[1] and redis.call('EXISTS', 'sipshard:node:' .. owner) == 1 then
  return false
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return redis.call('HGET', KEYS[1], 'rec')";

/// A live node's heartbeat: `sipshard:node:<id>`, renewed every second, gone 3 s after
/// its node stops renewing it (a takeover waits for that).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_TTL_MS: u64 = 3000;

/// Deletes a dialog's record while this node owns it (or nobody does): 1, else 0.
const DELETE_DIALOG: &str = "local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1";

/// Keys of lost deletes kept for the next connection; beyond, their TTL removes them.
const MAX_PENDING_DELETES: usize = 1 << 20;
/// Batches written in one pipeline at most.
const MAX_PIPELINE_BATCHES: usize = 256;
/// How long the writer lets batches gather after the first before it writes them: Redis
/// is this much behind the node at most (plus its round trip), for a pipeline per 2 ms at
/// most instead of one per shard round.
const GATHER: Duration = Duration::from_millis(2);
/// How often a failing Redis is logged, and how long between connection attempts.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How long a connection attempt, a read or a write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Added to a deadline-bound TTL, so that the owner's timer fires before Redis forgets.
const TTL_MARGIN: Duration = Duration::from_secs(60);

struct Connected {
    connection: redis::Connection,
    put_sha: String,
    delete_sha: String,
    claim_sha: String,
}

struct Writer {
    client: redis::Client,
    config: SharedStoreConfig,
    rx: Receiver<Work>,
    resync: Arc<[AtomicBool]>,
    /// Each shard's queue and waker: a resync must not wait for the shard's next
    /// datagram, and claims are answered there.
    handles: Arc<Vec<ShardHandle>>,
    counters: Arc<Counters>,
    connection: Option<Connected>,
    ever_connected: bool,
    next_attempt: Instant,
    /// A batch was lost since the last good write: resync at the next connection.
    lost: bool,
    /// Deletes that were lost, written first when Redis answers again.
    pending_deletes: ahash::HashSet<Vec<u8>>,
    last_error_log: Option<Instant>,
    /// When this node's heartbeat is due again.
    next_heartbeat: Instant,
}

impl Writer {
    /// A writer, not connected yet.
    fn new(
        client: redis::Client,
        config: &SharedStoreConfig,
        rx: Receiver<Work>,
        resync: Arc<[AtomicBool]>,
        handles: Arc<Vec<ShardHandle>>,
        counters: Arc<Counters>,
    ) -> Writer {
        Writer {
            client,
            config: config.clone(),
            rx,
            resync,
            handles,
            counters,
            connection: None,
            ever_connected: false,
            next_attempt: Instant::now(),
            lost: false,
            pending_deletes: ahash::HashSet::default(),
            last_error_log: None,
            next_heartbeat: Instant::now(),
        }
    }

    fn run(mut self) {
        loop {
            let mut work = Vec::new();
            match self.rx.recv_timeout(RETRY_EVERY) {
                Ok(w) => {
                    // Let the shards' next rounds join this pipeline: fewer, fuller
                    // pipelines, and shards that send while this thread sleeps wake
                    // nobody. A claim does not wait: a request is waiting for it.
                    if matches!(w, Work::Batch(_)) {
                        std::thread::sleep(GATHER);
                    }
                    work.push(w);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while work.len() < MAX_PIPELINE_BATCHES {
                match self.rx.try_recv() {
                    Ok(w) => work.push(w),
                    Err(_) => break,
                }
            }
            if self.connection.is_none() && Instant::now() >= self.next_attempt {
                self.connect();
            }
            self.heartbeat();
            let mut batches = Vec::new();
            let mut claims = Vec::new();
            for w in work {
                match w {
                    Work::Batch(b) => batches.push(b),
                    Work::Claim { shard, key } => claims.push((shard, key)),
                }
            }
            if !batches.is_empty() {
                let written = match &mut self.connection {
                    Some(c) => write(c, &self.config, &batches, &self.counters),
                    None => Err("not connected".to_owned()),
                };
                if let Err(e) = written {
                    self.failed(&e);
                    self.lose(&batches);
                }
            }
            if !claims.is_empty() {
                self.claim(claims);
            }
        }
    }

    /// Renews this node's heartbeat when it is due (and Redis is there).
    fn heartbeat(&mut self) {
        let now = Instant::now();
        let Some(c) = &mut self.connection else {
            return;
        };
        if now < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = now + HEARTBEAT_EVERY;
        let key = format!("sipshard:node:{}", self.config.node_id);
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("PX")
            .arg(HEARTBEAT_TTL_MS)
            .query(&mut c.connection);
        if let Err(e) = set {
            self.failed(&e.to_string());
        }
    }

    /// Claims each record for this node, in one pipeline, and answers each shard: the
    /// record, or nothing (none, a live owner, or Redis failed).
    fn claim(&mut self, claims: Vec<(usize, Vec<u8>)>) {
        let records: Vec<Option<Vec<u8>>> = match &mut self.connection {
            Some(c) => {
                let mut pipe = redis::pipe();
                for (_, key) in &claims {
                    if is_dialog_store_key(key) {
                        pipe.cmd("EVALSHA")
                            .arg(&c.claim_sha)
                            .arg(1)
                            .arg(redis_key(key))
                            .arg(&self.config.node_id);
                    } else {
                        // An AOR's bindings: read, owned by nobody.
                        pipe.cmd("GET").arg(redis_key(key));
                    }
                }
                match pipe.query::<Vec<Option<Vec<u8>>>>(&mut c.connection) {
                    Ok(records) => records,
                    Err(e) => {
                        self.failed(&e.to_string());
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        let mut records = records.into_iter();
        for (shard, key) in claims {
            let record = records.next().flatten();
            if record.is_some() && is_dialog_store_key(&key) {
                self.counters.claims.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(handle) = self.handles.get(shard) {
                let _ = handle.try_send(Inbound::Claimed { key, record });
            }
        }
    }

    /// Connects, loads the scripts, then writes the lost deletes and asks for a resync.
    fn connect(&mut self) {
        self.next_attempt = Instant::now() + RETRY_EVERY;
        let connected = (|| -> redis::RedisResult<Connected> {
            let mut connection = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
            connection.set_read_timeout(Some(IO_TIMEOUT))?;
            connection.set_write_timeout(Some(IO_TIMEOUT))?;
            let load = |c: &mut redis::Connection, script: &str| -> redis::RedisResult<String> {
                redis::cmd("SCRIPT").arg("LOAD").arg(script).query(c)
            };
            let put_sha = load(&mut connection, PUT_DIALOG)?;
            let delete_sha = load(&mut connection, DELETE_DIALOG)?;
            let claim_sha = load(&mut connection, CLAIM_DIALOG)?;
            Ok(Connected {
                connection,
                put_sha,
                delete_sha,
                claim_sha,
            })
        })();
        let mut c = match connected {
            Ok(c) => c,
            Err(e) => return self.failed(&e.to_string()),
        };
        if self.ever_connected {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.ever_connected = true;
        if !self.pending_deletes.is_empty() {
            let ops: Vec<PersistOp> = self
                .pending_deletes
                .iter()
                .map(|key| PersistOp::Delete { key: key.clone() })
                .collect();
            if let Err(e) = write(&mut c, &self.config, &[Batch { ops }], &self.counters) {
                return self.failed(&e);
            }
            self.pending_deletes.clear();
        }
        self.counters.connected.store(true, Ordering::Relaxed);
        tracing::info!(url = %self.config.url, "shared store connected");
        if std::mem::take(&mut self.lost) {
            self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
            for (flag, handle) in self.resync.iter().zip(self.handles.iter()) {
                flag.store(true, Ordering::Relaxed);
                handle.waker.wake();
            }
        }
        self.connection = Some(c);
    }

    /// Redis failed: the connection is dropped, and the failure logged at most once per
    /// interval.
    fn failed(&mut self, error: &str) {
        self.connection = None;
        self.counters.connected.store(false, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|at| now.saturating_duration_since(at) >= ERROR_LOG_EVERY)
        {
            self.last_error_log = Some(now);
            tracing::error!(
                url = %self.config.url,
                error,
                failed_batches = self.counters.failed_batches.load(Ordering::Relaxed),
                "shared store unreachable: calls go on, their records are written when it returns"
            );
        }
    }

    /// `batches` were not written: counted, their deletes kept for the next connection
    /// (in order: a later put of the same key supersedes a delete), a resync owed.
    fn lose(&mut self, batches: &[Batch]) {
        self.counters
            .failed_batches
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        self.lost = true;
        for op in batches.iter().flat_map(|b| &b.ops) {
            match op {
                PersistOp::Delete { key } => {
                    if self.pending_deletes.len() < MAX_PENDING_DELETES {
                        self.pending_deletes.insert(key.clone());
                    }
                }
                PersistOp::Put { key, .. } => {
                    self.pending_deletes.remove(key);
                }
            }
        }
    }
}

/// Leaves out of `restores` (per shard) the dialog records a peer owns in the shared store
/// now (it took them over while this node was down), and returns, per shard, the deletes
/// that remove them from the embedded store. When the shared store cannot be asked, no
/// dialog record is restored (this node cannot know which are still its own), and none
/// is deleted. Binding records always restore.
pub(crate) fn drop_taken_over(
    config: &SharedStoreConfig,
    restores: &mut [Vec<Vec<u8>>],
) -> Vec<Vec<PersistOp>> {
    let mut deletes: Vec<Vec<PersistOp>> = restores.iter().map(|_| Vec::new()).collect();
    let owners = (|| -> redis::RedisResult<Vec<Vec<Option<String>>>> {
        let client = redis::Client::open(config.url.as_str())?;
        let mut c = client.get_connection_with_timeout(IO_TIMEOUT)?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        // Alive before we look: from now on no peer claims what is still ours.
        redis::cmd("SET")
            .arg(format!("sipshard:node:{}", config.node_id))
            .arg(1)
            .arg("PX")
            .arg(HEARTBEAT_TTL_MS)
            .query::<()>(&mut c)?;
        let mut owners = Vec::new();
        for records in restores.iter() {
            // Each dialog record's owner (bindings have none: `None` in their places).
            let keys: Vec<Option<Vec<u8>>> = records
                .iter()
                .map(|r| {
                    let dialog = !r.starts_with(crate::registrar::BINDINGS_MAGIC);
                    dialog.then(|| crate::shard::record_store_key(r)).flatten()
                })
                .collect();
            let mut pipe = redis::pipe();
            for key in keys.iter().flatten() {
                pipe.cmd("HGET").arg(redis_key(key)).arg("owner");
            }
            let mut found: std::vec::IntoIter<Option<String>> = if keys.iter().any(Option::is_some)
            {
                pipe.query::<Vec<Option<String>>>(&mut c)?.into_iter()
            } else {
                Vec::new().into_iter()
            };
            owners.push(
                keys.iter()
                    .map(|k| k.as_ref().and_then(|_| found.next().flatten()))
                    .collect::<Vec<_>>(),
            );
        }
        Ok(owners)
    })();
    let owners = match owners {
        Ok(owners) => owners,
        Err(e) => {
            let held: usize = restores.iter().map(Vec::len).sum();
            tracing::error!(
                url = %config.url,
                error = %e,
                records = held,
                "shared store unreachable at start: no dialog is restored, for a peer may own it"
            );
            for records in restores.iter_mut() {
                records.retain(|r| r.starts_with(crate::registrar::BINDINGS_MAGIC));
            }
            return deletes;
        }
    };
    let mut dropped = 0;
    for ((records, owners), deletes) in restores.iter_mut().zip(owners).zip(&mut deletes) {
        let mut owners = owners.into_iter();
        records.retain(|record| {
            let owner = owners.next().flatten();
            let theirs = owner.is_some_and(|o| o != config.node_id);
            if theirs && let Some(key) = crate::shard::record_store_key(record) {
                deletes.push(PersistOp::Delete { key });
                dropped += 1;
            }
            !theirs
        });
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "dialogs taken over by peers while this node was down are theirs"
        );
    }
    deletes
}

/// The Redis key of a store key.
fn redis_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.extend_from_slice(b"sipshard:");
    k.extend_from_slice(key);
    k
}

/// Writes `batches` in one pipeline; counts what was written and what was fenced.
fn write(
    c: &mut Connected,
    config: &SharedStoreConfig,
    batches: &[Batch],
    counters: &Counters,
) -> Result<(), String> {
    let mut pipe = redis::pipe();
    let wall = SystemTime::now();
    let mut scripted = Vec::new();
    for op in batches.iter().flat_map(|b| &b.ops) {
        match op {
            PersistOp::Put { key, record } if is_dialog_store_key(key) => {
                let ttl = ttl_ms(dialog_deadline(record), wall, config.dialog_ttl);
                pipe.cmd("EVALSHA")
                    .arg(&c.put_sha)
                    .arg(1)
                    .arg(redis_key(key))
                    .arg(&config.node_id)
                    .arg(record.as_slice())
                    .arg(ttl);
                scripted.push(true);
            }
            PersistOp::Put { key, record } => {
                let deadline = crate::registrar::bindings_record_latest_expiry(record);
                let ttl = ttl_ms(deadline, wall, config.dialog_ttl);
                pipe.cmd("SET")
                    .arg(redis_key(key))
                    .arg(record.as_slice())
                    .arg("PX")
                    .arg(ttl);
                scripted.push(false);
            }
            PersistOp::Delete { key } if is_dialog_store_key(key) => {
                pipe.cmd("EVALSHA")
                    .arg(&c.delete_sha)
                    .arg(1)
                    .arg(redis_key(key))
                    .arg(&config.node_id);
                scripted.push(true);
            }
            PersistOp::Delete { key } => {
                pipe.cmd("DEL").arg(redis_key(key));
                scripted.push(false);
            }
        }
    }
    if scripted.is_empty() {
        return Ok(());
    }
    let results: Vec<redis::Value> = pipe.query(&mut c.connection).map_err(|e| e.to_string())?;
    let fenced = results
        .iter()
        .zip(&scripted)
        .filter(|(r, s)| **s && matches!(r, redis::Value::Int(0)))
        .count() as u64;
    counters.pipelines.fetch_add(1, Ordering::Relaxed);
    counters
        .writes
        .fetch_add(scripted.len() as u64 - fenced, Ordering::Relaxed);
    counters.fenced.fetch_add(fenced, Ordering::Relaxed);
    Ok(())
}

/// The session timer's deadline of a dialog record, if it has one.
fn dialog_deadline(record: &[u8]) -> Option<SystemTime> {
    let r = crate::dialog::DialogRecord::decode(record).ok()?;
    let held = r.usages.held.as_ref().map(|h| h.expires_at);
    let served = r.usages.served.iter().map(|s| s.expires_at).max();
    match (&r.session_timer, r.usages.subscription_only) {
        (Some(st), _) => Some(st.expires_at),
        // A dialog a SUBSCRIBE made lives as long as its subscriptions.
        (None, true) => held.max(served),
        (None, false) => None,
    }
}

/// A TTL in milliseconds: until `deadline` and a margin, or `default` without one.
fn ttl_ms(deadline: Option<SystemTime>, now: SystemTime, default: Duration) -> u64 {
    let ttl = deadline
        .and_then(|d| d.duration_since(now).ok())
        .map_or(default, |left| left + TTL_MARGIN);
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_gives_its_ttl_and_a_margin_else_the_default() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(
            ttl_ms(Some(now + Duration::from_secs(90)), now, day),
            150_000
        );
        assert_eq!(ttl_ms(None, now, day), 86_400_000);
        // A deadline already passed: the default (the owner's timer is about to act).
        assert_eq!(
            ttl_ms(Some(now - Duration::from_secs(1)), now, day),
            86_400_000
        );
    }

    #[test]
    fn lost_deletes_wait_for_the_next_connection_unless_a_later_put_supersedes_them() {
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let mut w = Writer::new(
            redis::Client::open("redis://127.0.0.1:1/").unwrap(),
            &SharedStoreConfig::new("redis://127.0.0.1:1/", "n1"),
            rx,
            Arc::from(vec![AtomicBool::new(false)]),
            Arc::new(Vec::new()),
            Arc::new(Counters::default()),
        );
        let delete = |k: &[u8]| PersistOp::Delete { key: k.to_vec() };
        let put = |k: &[u8]| PersistOp::Put {
            key: k.to_vec(),
            record: b"r".to_vec(),
        };
        w.lose(&[Batch {
            ops: vec![delete(b"a"), delete(b"b"), put(b"b")],
        }]);
        w.lose(&[Batch {
            ops: vec![delete(b"c")],
        }]);
        let mut pending: Vec<_> = w.pending_deletes.iter().cloned().collect();
        pending.sort();
        assert_eq!(pending, [b"a".to_vec(), b"c".to_vec()]);
        assert!(w.lost);
        assert_eq!(w.counters.failed_batches.load(Ordering::Relaxed), 2);
    }
}
