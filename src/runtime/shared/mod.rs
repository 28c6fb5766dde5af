//! The shared store (issue 23): confirmed dialogs and registrar bindings
//! written to Redis beside (or instead of) the embedded store, so that the nodes behind one
//! front can see each other's state.
//!
//! # What it owns, what it may not touch
//! One writer thread per runtime with its Redis connection, the queue of batches, the
//! heartbeat and the counters. Shard workers hand it each round's
//! records with [`SharedWriter::offer`] and never wait: a full queue or an unreachable Redis
//! costs a counted, lost batch and, once Redis answers again, a resync (each shard hands
//! every live record again, and the deletes that were lost go first), never a blocked
//! shard thread. What a record holds and when one is written are the shard's
//! (`shard::persist`); the Redis side of taking a peer's dialog over is `takeover`'s, the
//! key layout and scripts `scripts`'.
//!
//! # In Redis
//! Dialogs as hashes fenced by their `owner` field, bindings as strings, each node's
//! heartbeat, the set of nodes, each node's owned dialogs and the dialogs moved from it:
//! `scripts` has the layout. A dialog's TTL is its session timer's deadline plus a
//! minute, or `dialog_ttl` for a call without one (as Kamailio's dialog
//! `default_timeout`), renewed by every write; an AOR's bindings keep the TTL of its
//! latest binding. Any node may write bindings (REGISTER ordering is kept by the Call-ID
//! and CSeq inside the record).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use super::queue::{Inbound, ShardHandle};
use crate::shard::{PersistOp, is_dialog_store_key};
use scripts::{HEARTBEAT_EVERY, HEARTBEAT_TTL_MS, Loaded, redis_key};

mod scripts;
mod takeover;

pub(crate) use takeover::drop_taken_over;

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
    /// Resyncs asked of the shards (after lost batches, or a lapsed heartbeat).
    pub resyncs: u64,
    /// Dialog records claimed because a request for them reached this node (takeovers).
    pub claims: u64,
    /// Dialog records of dead peers taken over by the sweep, before any request asked.
    pub swept: u64,
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
    swept: AtomicU64,
    connected: AtomicBool,
}

/// One shard's round of records.
struct Batch {
    ops: Vec<PersistOp>,
    /// It holds a REGISTER's bindings: written at once (a query through another node
    /// may follow).
    urgent: bool,
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
    /// The writer thread, unparked for work that should not wait out its gather time.
    thread: std::thread::Thread,
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
            thread: self.thread.as_ref()?.thread().clone(),
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
            swept: get(&self.swept),
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
        let urgent = ops.iter().any(|op| match op {
            PersistOp::Put { key, .. } | PersistOp::Delete { key } => !is_dialog_store_key(key),
        });
        match self.tx.try_send(Work::Batch(Batch { ops, urgent })) {
            Ok(()) if urgent => self.thread.unpark(),
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
        let asked = self
            .tx
            .try_send(Work::Claim {
                shard: self.index,
                key,
            })
            .is_ok();
        // A request waits for it.
        if asked {
            self.thread.unpark();
        }
        asked
    }

    /// Whether the writer wants every live record of this shard again (asked once).
    pub(crate) fn take_resync(&self) -> bool {
        self.resync[self.index].swap(false, Ordering::Relaxed)
    }
}

/// Keys of lost deletes kept for the next connection; beyond, their TTL removes them.
const MAX_PENDING_DELETES: usize = 1 << 20;
/// Batches written in one pipeline at most.
const MAX_PIPELINE_BATCHES: usize = 256;
/// How often the writer looks at its queue while batches flow (parked between, so the
/// shards that send wake nobody). What is urgent (a claim, for which a request waits; a
/// REGISTER's bindings, which a query through another node may read next) unparks it and
/// is written at once.
const GATHER: Duration = Duration::from_millis(10);
/// A pipeline goes once it holds this many records, or its first batch is this old,
/// whichever comes first: Redis is at most this much behind a node (and a round trip).
/// A pipeline costs the node a send to Redis and Redis a wake-up (BENCHMARKS.md, session
/// 17): one per shard round, then one per 2 ms, cost a node +20 % CPU per call at 2,000
/// calls/s; gathering brought it to +9–14 %, and the size rule halves Redis's cost per
/// call at 1,000 calls/s. Kamailio's dialog module, for comparison, writes its database
/// every 60 s by default.
const FULL_PIPELINE: usize = 64;
const MAX_LAG: Duration = Duration::from_millis(50);
/// How often a failing Redis is logged, and how long between connection attempts.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How soon messages for a full shard queue are tried again.
const UNDELIVERED_RETRY: Duration = Duration::from_millis(2);
/// How long a connection attempt, a read or a write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Added to a deadline-bound TTL, so that the owner's timer fires before Redis forgets.
const TTL_MARGIN: Duration = Duration::from_secs(60);

struct Connected {
    connection: redis::Connection,
    scripts: Loaded,
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
    /// Messages for shards whose queues were full, sent again before anything newer.
    undelivered: std::collections::VecDeque<(usize, Inbound)>,
    /// The heartbeat has been renewed once (a gone one since is a lapse: Redis lost it,
    /// or this node could not renew it in time and peers may have taken its dialogs).
    has_beaten: bool,
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
            undelivered: std::collections::VecDeque::new(),
            has_beaten: false,
        }
    }

    fn run(mut self) {
        // Batches came on the last turn: more are likely, so this turn sleeps its gather
        // time and takes what came, instead of waiting on the queue (a shard that sends
        // to a thread waiting on it pays a futex wake, one per pipeline).
        let mut busy = false;
        // Batches waiting for a fuller pipeline, their records, and when the first came.
        let mut held: Vec<Batch> = Vec::new();
        let mut held_records = 0usize;
        let mut held_since = Instant::now();
        loop {
            let mut work = Vec::new();
            self.deliver_again();
            let wait = match self.undelivered.is_empty() {
                true => RETRY_EVERY,
                false => UNDELIVERED_RETRY,
            };
            if busy {
                std::thread::park_timeout(GATHER);
            } else {
                match self.rx.recv_timeout(wait) {
                    Ok(w) => {
                        // Let the shards' next rounds join this pipeline: fewer, fuller
                        // pipelines, and shards that send while this thread sleeps wake
                        // nobody. A claim does not wait: a request is waiting for it.
                        if matches!(w, Work::Batch(_)) {
                            std::thread::park_timeout(GATHER);
                        }
                        work.push(w);
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            // The shards are gone (a stop): what is queued is written, then the thread ends.
            let mut gone = false;
            while held.len() + work.len() < MAX_PIPELINE_BATCHES {
                match self.rx.try_recv() {
                    Ok(w) => work.push(w),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        gone = true;
                        break;
                    }
                }
            }
            if self.connection.is_none() && Instant::now() >= self.next_attempt {
                self.connect();
            }
            self.heartbeat();
            let mut claims = Vec::new();
            let mut urgent = false;
            for w in work {
                match w {
                    Work::Batch(b) => {
                        if held.is_empty() {
                            held_since = Instant::now();
                        }
                        held_records += b.ops.len();
                        urgent |= b.urgent;
                        held.push(b);
                    }
                    Work::Claim { shard, key } => claims.push((shard, key)),
                }
            }
            busy = !held.is_empty();
            let due = gone
                || urgent
                || held_records >= FULL_PIPELINE
                || held_since.elapsed() >= MAX_LAG
                || held.len() >= MAX_PIPELINE_BATCHES;
            if busy && due {
                let batches = std::mem::take(&mut held);
                held_records = 0;
                let written = match &mut self.connection {
                    Some(c) => write(c, &self.config, &batches, &self.counters),
                    None => Err("not connected".to_owned()),
                };
                match written {
                    // A peer owns what this node wrote: it took the dialog over while this
                    // node was thought dead. It leaves here.
                    Ok(fenced) => self.release(fenced),
                    Err(e) => {
                        self.failed(&e);
                        self.lose(&batches);
                    }
                }
            }
            if !claims.is_empty() {
                self.claim(claims);
            }
            if gone {
                return;
            }
        }
    }

    /// Renews this node's heartbeat when it is due (and Redis is there), then takes over
    /// the dialogs of dead peers and drops those live peers took from this node
    /// (`takeover`). A heartbeat found gone means peers thought this node dead and may
    /// have taken its dialogs: every shard writes its records again, and those fenced
    /// leave.
    fn heartbeat(&mut self) {
        let now = Instant::now();
        let Some(c) = &mut self.connection else {
            return;
        };
        if now < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = now + HEARTBEAT_EVERY;
        let beat: redis::RedisResult<(Option<String>, i64)> = redis::pipe()
            .cmd("SET")
            .arg(scripts::heartbeat_key(&self.config.node_id))
            .arg(1)
            .arg("PX")
            .arg(HEARTBEAT_TTL_MS)
            .arg("GET")
            .cmd("SADD")
            .arg(scripts::NODES)
            .arg(&self.config.node_id)
            .query(&mut c.connection);
        match beat {
            Ok((previous, _)) => {
                let lapsed = previous.is_none() && self.has_beaten;
                self.has_beaten = true;
                if lapsed {
                    tracing::warn!(
                        "this node's heartbeat had lapsed: its records are written again"
                    );
                    self.ask_resync();
                }
            }
            Err(e) => return self.failed(&e.to_string()),
        }
        self.sweep();
        self.take_moved();
    }

    /// Connects, loads the scripts, then writes the lost deletes and asks for a resync.
    fn connect(&mut self) {
        self.next_attempt = Instant::now() + RETRY_EVERY;
        let connected = (|| -> redis::RedisResult<Connected> {
            let mut connection = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
            connection.set_read_timeout(Some(IO_TIMEOUT))?;
            connection.set_write_timeout(Some(IO_TIMEOUT))?;
            let scripts = Loaded::load(&mut connection)?;
            Ok(Connected {
                connection,
                scripts,
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
            if let Err(e) = write(
                &mut c,
                &self.config,
                &[Batch { ops, urgent: false }],
                &self.counters,
            ) {
                return self.failed(&e);
            }
            self.pending_deletes.clear();
        }
        self.counters.connected.store(true, Ordering::Relaxed);
        tracing::info!(url = %self.config.url, "shared store connected");
        if std::mem::take(&mut self.lost) {
            self.ask_resync();
        }
        self.connection = Some(c);
    }

    /// Asks every shard for all its live records again.
    fn ask_resync(&mut self) {
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        for (flag, handle) in self.resync.iter().zip(self.handles.iter()) {
            flag.store(true, Ordering::Relaxed);
            handle.waker.wake();
        }
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

/// Writes `batches` in one pipeline: bindings as plain writes, dialog records through
/// [`scripts::WRITE_DIALOGS`] (one call per [`scripts::WRITE_BATCH`] records, in order);
/// counts what was written and what was fenced, and returns the keys of the records a
/// peer owns (their puts were fenced).
fn write(
    c: &mut Connected,
    config: &SharedStoreConfig,
    batches: &[Batch],
    counters: &Counters,
) -> Result<Vec<Vec<u8>>, String> {
    let mut pipe = redis::pipe();
    let wall = SystemTime::now();
    let mut plain = 0u64;
    // Each dialog op: its key, and its record (a put) or none (a delete).
    let mut dialogs: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
    for op in batches.iter().flat_map(|b| &b.ops) {
        match op {
            PersistOp::Put { key, record } if is_dialog_store_key(key) => {
                dialogs.push((key, Some(record)));
            }
            PersistOp::Delete { key } if is_dialog_store_key(key) => dialogs.push((key, None)),
            PersistOp::Put { key, record } => {
                let deadline = crate::registrar::bindings_record_latest_expiry(record);
                let ttl = ttl_ms(deadline, wall, config.dialog_ttl);
                pipe.cmd("SET")
                    .arg(redis_key(key))
                    .arg(record.as_slice())
                    .arg("PX")
                    .arg(ttl);
                plain += 1;
            }
            PersistOp::Delete { key } => {
                pipe.cmd("DEL").arg(redis_key(key));
                plain += 1;
            }
        }
    }
    if plain == 0 && dialogs.is_empty() {
        return Ok(Vec::new());
    }
    for chunk in dialogs.chunks(scripts::WRITE_BATCH) {
        let call = pipe.cmd("EVALSHA").arg(&c.scripts.write).arg(chunk.len());
        for (key, _) in chunk {
            call.arg(redis_key(key));
        }
        call.arg(&config.node_id);
        for (_, record) in chunk {
            match record {
                Some(record) => {
                    let ttl = ttl_ms(dialog_deadline(record), wall, config.dialog_ttl);
                    call.arg(*record).arg(ttl)
                }
                None => call.arg("").arg(""),
            };
        }
    }
    let results: Vec<redis::Value> = pipe.query(&mut c.connection).map_err(|e| e.to_string())?;
    // After the plain writes' answers, one array per script call: 1 done, 0 fenced.
    let done: Vec<bool> = results
        .iter()
        .skip(plain as usize)
        .flat_map(|r| match r {
            redis::Value::Array(items) => items.as_slice(),
            _ => &[],
        })
        .map(|r| matches!(r, redis::Value::Int(1)))
        .collect();
    if done.len() != dialogs.len() {
        return Err(format!(
            "the dialog script answered {} of {} records",
            done.len(),
            dialogs.len()
        ));
    }
    let mut fenced = 0;
    let mut taken = Vec::new();
    for ((key, record), done) in dialogs.iter().zip(done) {
        if !done {
            fenced += 1;
            if record.is_some() {
                taken.push(key.to_vec());
            }
        }
    }
    counters.pipelines.fetch_add(1, Ordering::Relaxed);
    counters
        .writes
        .fetch_add(plain + dialogs.len() as u64 - fenced, Ordering::Relaxed);
    counters.fenced.fetch_add(fenced, Ordering::Relaxed);
    Ok(taken)
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
            urgent: false,
        }]);
        w.lose(&[Batch {
            ops: vec![delete(b"c")],
            urgent: false,
        }]);
        let mut pending: Vec<_> = w.pending_deletes.iter().cloned().collect();
        pending.sort();
        assert_eq!(pending, [b"a".to_vec(), b"c".to_vec()]);
        assert!(w.lost);
        assert_eq!(w.counters.failed_batches.load(Ordering::Relaxed), 2);
    }
}
