//! How fast a restart takes its dialogs back (issue 22): N confirmed dialogs (default
//! 1,000,000; `SIPSHARD_RESTORE_N`) are written into a state directory for two shards, then
//! a `DialogManager` starts on it; the time from `start` until every dialog is restored is
//! the figure (reading the store, sorting records onto shards, decoding, re-inserting).
//!
//! `cargo bench --bench restore`
//!
//! Not a criterion benchmark: one restart of a million dialogs is the measurement, and
//! repeating it a hundred times would say nothing more.

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sipshard::dialog::{Dialog, DialogId, DialogRecord, DialogState, Role};
use sipshard::runtime::{
    DialogManager, FsyncPolicy, RecoveryConfig, RuntimeConfig, ShardStore, StopPolicy, StoreConfig,
    StoreStats,
};
use sipshard::shard::{PersistOp, record_store_key, shard_for_call_id};

const SHARDS: usize = 2;

fn config(dir: &std::path::Path) -> RuntimeConfig {
    let mut c = RuntimeConfig::new("127.0.0.1:0".parse().expect("an address"));
    c.shards = SHARDS;
    c.tcp = false;
    c.store = Some(StoreConfig {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
    });
    c.recovery = RecoveryConfig {
        enable_state_persistence: true,
        recovery_timeout: Duration::ZERO,
        ..RecoveryConfig::default()
    };
    c.shard.max_dialogs = 2_000_000;
    c
}

fn record(i: usize) -> (Vec<u8>, usize) {
    let call_id = format!("restore-{i:08}@bench.example");
    let id = DialogId::new(call_id.as_bytes(), b"local-tag-1", b"remote-tag-2");
    let dialog = Dialog::new(
        id,
        Role::Uas,
        DialogState::Confirmed,
        1,
        Some(1),
        b"<sip:service@127.0.0.1:5060>;tag=local-tag-1",
        b"\"sipp\" <sip:sipp@127.0.0.1:5061>;tag=remote-tag-2",
        b"sip:sipp@127.0.0.1:5061",
        &[],
        false,
        "127.0.0.1:5061".parse().expect("an address"),
    );
    let bytes = DialogRecord {
        dialog,
        call: None,
        call_limit_at: None,
        session_timer: None,
        usages: Default::default(),
    }
    .encode();
    let shard = shard_for_call_id(call_id.as_bytes(), SHARDS);
    (bytes, shard)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` lists benchmarks; this one is not a test
    }
    let n: usize = std::env::var("SIPSHARD_RESTORE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("sipshard-restore-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A first start lays the directory out.
    let manager = DialogManager::new(config(&dir));
    manager.start().await?;
    manager.stop(StopPolicy::Wait, Duration::ZERO).await?;

    let write_start = Instant::now();
    let mut stores = Vec::new();
    for i in 0..SHARDS {
        stores.push(ShardStore::open(
            dir.join(format!("shard-{i}")),
            FsyncPolicy::Never,
        )?);
    }
    let mut batches = vec![Vec::new(); SHARDS];
    let mut stats = StoreStats::default();
    for i in 0..n {
        let (record, shard) = record(i);
        batches[shard].push(PersistOp::Put {
            key: record_store_key(&record).expect("a record this build wrote"),
            record,
        });
        if batches[shard].len() == 1000 {
            stores[shard].write(Instant::now(), &batches[shard], &mut stats);
            batches[shard].clear();
        }
    }
    for (store, batch) in stores.iter_mut().zip(&batches) {
        store.write(Instant::now(), batch, &mut stats);
    }
    drop(stores);
    assert_eq!(stats.write_errors, 0);
    let written = write_start.elapsed();

    let manager = DialogManager::new(config(&dir));
    let start = Instant::now();
    manager.start().await?;
    let deadline = start + Duration::from_secs(300);
    let stats = loop {
        let stats = manager.stats().await?;
        if stats.total.dialogs_restored as usize >= n || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = start.elapsed();
    let restored = stats.total.dialogs_restored as usize;
    println!(
        "restore: {restored} of {n} dialogs in {:.2} s ({:.0} dialogs/s; written in {:.2} s); per shard restore {:?} µs, failures {}",
        took.as_secs_f64(),
        restored as f64 / took.as_secs_f64(),
        written.as_secs_f64(),
        stats
            .shards
            .iter()
            .map(|s| s.io.store.restore_micros)
            .collect::<Vec<_>>(),
        stats.io.store.restore_failures,
    );
    manager.stop(StopPolicy::Wait, Duration::ZERO).await?;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(restored, n, "every dialog restored");
    Ok(())
}
