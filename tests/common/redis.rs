//! A `redis-server` child for the cluster tests, and a `sipshard serve` node clustered on it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::peers::{Server, required_tool, wait_until};

/// A `redis-server` child on a loopback port, keeping nothing on disk.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// Starts one on a free port; `None` where a skip is allowed and it is not installed.
    pub fn start() -> Option<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free TCP port")
            .port();
        Redis::start_on(port)
    }

    pub fn start_on(port: u16) -> Option<Redis> {
        let binary = required_tool("redis-server", "redis-server")?;
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Redis { child, port };
        let every = Duration::from_millis(20);
        assert!(
            wait_until(Duration::from_secs(10), every, || redis
                .connection()
                .is_some()),
            "redis-server on {port} never answered"
        );
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    /// The keys under `sipshard:` whose Redis type is `kind`, and the connection.
    fn keys_of_type(&self, kind: &str) -> (redis::Connection, Vec<Vec<u8>>) {
        let mut c = self.connection().expect("redis answers");
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("sipshard:*")
            .query(&mut c)
            .expect("KEYS");
        let keys = keys
            .into_iter()
            .filter(|key| {
                redis::cmd("TYPE")
                    .arg(key)
                    .query::<String>(&mut c)
                    .is_ok_and(|t| t == kind)
            })
            .collect();
        (c, keys)
    }

    /// The dialog records it holds (hashes under `sipshard:`), with their owner and TTL.
    pub fn dialogs(&self) -> Vec<(Vec<u8>, String, i64)> {
        let (mut c, keys) = self.keys_of_type("hash");
        keys.into_iter()
            .filter_map(|key| {
                let (record, owner): (Vec<u8>, String) = redis::cmd("HMGET")
                    .arg(&key)
                    .arg("rec")
                    .arg("owner")
                    .query(&mut c)
                    .ok()?;
                let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).ok()?;
                Some((record, owner, ttl))
            })
            .collect()
    }

    /// The keys of the dialog records it holds (hashes under `sipshard:`; the nodes'
    /// heartbeats, sets and lists are not).
    pub fn dialog_keys(&self) -> Vec<Vec<u8>> {
        self.keys_of_type("hash").1
    }

    /// Makes `owner` the owner of the dialog records at `keys` (what a peer's takeover
    /// leaves behind).
    pub fn set_owner(&self, keys: &[Vec<u8>], owner: &str) {
        let mut c = self.connection().expect("redis answers");
        for key in keys {
            let _: i64 = redis::cmd("HSET")
                .arg(key)
                .arg("owner")
                .arg(owner)
                .query(&mut c)
                .expect("HSET");
        }
    }

    /// The bindings records it holds (strings under `sipshard:`, heartbeats left out).
    pub fn bindings(&self) -> Vec<Vec<u8>> {
        let (mut c, keys) = self.keys_of_type("string");
        keys.iter()
            .filter(|k| !k.starts_with(b"sipshard:node:"))
            .filter_map(|k| {
                redis::cmd("GET")
                    .arg(k)
                    .query::<Option<Vec<u8>>>(&mut c)
                    .ok()?
            })
            .collect()
    }

    /// Waits (within `limit`) until it holds `want` dialog records; returns how many.
    pub fn wait_dialogs(&self, want: usize, limit: Duration) -> usize {
        self.wait_dialogs_until(|n| n == want, limit)
    }

    /// Waits (within `limit`) until the number of dialog records it holds passes `done`;
    /// returns the last number seen. (The node writes after it answers, not before.)
    pub fn wait_dialogs_until(&self, done: impl Fn(usize) -> bool, limit: Duration) -> usize {
        let mut n = 0;
        wait_until(limit, Duration::from_millis(50), || {
            n = self.dialogs().len();
            done(n)
        });
        n
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `sipshard serve` auto-answering over UDP with `shards` shards, clustered on `redis` as
/// `node_id`.
pub fn clustered_node(redis: &Redis, node_id: &str, shards: &str) -> Server {
    clustered_node_with(redis, node_id, shards, &[])
}

/// As [`clustered_node`], with `extra` arguments.
pub fn clustered_node_with(redis: &Redis, node_id: &str, shards: &str, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec![
        "--mode",
        "auto-answer",
        "--no-tcp",
        "--shards",
        shards,
        "--cluster",
        &url,
        "--node-id",
        node_id,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `sipshard serve` arguments of an auto-answering UDP node clustered on `url` as
/// `node_id`, keeping its own records in `state_dir` too.
pub fn stateful_node_args<'a>(url: &'a str, state_dir: &'a str, node_id: &'a str) -> Vec<&'a str> {
    vec![
        "--mode",
        "auto-answer",
        "--no-tcp",
        "--state-dir",
        state_dir,
        "--cluster",
        url,
        "--node-id",
        node_id,
    ]
}
