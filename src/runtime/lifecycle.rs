//! Starting and stopping a [`DialogManager`]: the sockets bound for every shard, the shard
//! threads started once all have their descriptors, and the stop that ends them.
//!
//! # What it owns, what it may not touch
//! The manager's lifecycle: binding, threads, joining. Commands to running shards are the
//! `manager` module's; what a shard thread does is the `worker` module's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::manager::{DialogManager, Running};
use super::queue::{Inbound, ShardHandle, Waker};
use super::tcp::listen_shared;
use super::udp::bind_shared;
use super::worker::Worker;
use super::{DialogStats, RuntimeConfig, StopPolicy};
use crate::shard::{DialogError, Shard, ShardOwner};

impl DialogManager {
    /// Binds the sockets and starts the shard threads.
    pub async fn start(&self) -> Result<(), DialogError> {
        if self.running.get().is_some() {
            return Err(DialogError::InvalidDialogState {
                current: "running",
                expected: "stopped",
            });
        }
        let count = match self.config.shards {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let transport = |e: std::io::Error| DialogError::Transport(e.to_string());
        let (sockets, listeners, local_addr) = bind_all(&self.config, count).map_err(transport)?;
        let advertised = self.config.advertised.unwrap_or(local_addr);
        let mut handles = Vec::with_capacity(count);
        let mut receivers = Vec::with_capacity(count);
        for _ in 0..count {
            let (tx, rx) = crossbeam_channel::bounded(self.config.queue_capacity);
            handles.push(ShardHandle {
                inbound: tx,
                waker: Arc::new(Waker::new().map_err(transport)?),
                dialogs: Arc::new(AtomicUsize::new(0)),
            });
            receivers.push(rx);
        }
        let shards = Arc::new(handles);
        let store = match (
            self.config.recovery.enable_state_persistence,
            &self.config.store,
        ) {
            (true, Some(store)) => Some(store),
            (false, None) => None,
            (true, None) => {
                return Err(DialogError::SessionCoordinationFailed(
                    "RecoveryConfig::enable_state_persistence needs RuntimeConfig::store".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(DialogError::SessionCoordinationFailed(
                    "RuntimeConfig::store is set but RecoveryConfig::enable_state_persistence is off"
                        .into(),
                ));
            }
        };
        let (mut stores, mut restores) = match store {
            Some(config) => {
                let opened = super::store::open(config, count)
                    .map_err(|e| DialogError::Transport(format!("dialog store: {e}")))?;
                (
                    opened.stores.into_iter().map(Some).collect::<Vec<_>>(),
                    opened.records,
                )
            }
            None => ((0..count).map(|_| None).collect(), vec![Vec::new(); count]),
        };
        if let Some(config) = &self.config.shared
            && restores.iter().any(|r| !r.is_empty())
        {
            // A peer may have taken some of our calls over while we were down: those are
            // its now, and this node must not act on them.
            let dropped = super::shared::drop_taken_over(config, &mut restores);
            for (store, deletes) in stores.iter_mut().zip(dropped) {
                if let Some(store) = store
                    && !deletes.is_empty()
                {
                    store.write(Instant::now(), &deletes, &mut Default::default());
                }
            }
        }
        let shared = match &self.config.shared {
            Some(config) => Some(
                super::shared::SharedStore::start(config, shards.clone())
                    .map_err(DialogError::Transport)?,
            ),
            None => None,
        };
        let coordinator = self.coordinator.lock().ok().and_then(|c| c.clone());
        let now = Instant::now();
        let mut threads = Vec::with_capacity(count);
        let mut workers = Vec::with_capacity(count);
        let stopped = Arc::new(AtomicUsize::new(0));
        let tcp_listening = !listeners.is_empty();
        let mut listeners = listeners.into_iter();
        for (index, (socket, inbound)) in sockets.into_iter().zip(receivers).enumerate() {
            let tcp = match listeners.next() {
                Some(listener) => Some(
                    super::tcp::TcpSide::new(
                        listener,
                        super::tcp::TcpSettings {
                            idle_after: self.config.tcp_idle,
                            max_connections: super::tcp::connection_cap(
                                self.config.tcp_max_connections,
                                count,
                            ),
                            max_per_source: self.config.tcp_max_per_source.max(1),
                            incomplete_after: self.config.tcp_incomplete_after,
                        },
                        now,
                    )
                    .map_err(transport)?,
                ),
                None => None,
            };
            let mut shard_config = self.config.shard.clone();
            shard_config.local_addr = advertised;
            shard_config.owner = Some(ShardOwner { index, count });
            shard_config.tcp = tcp_listening;
            shard_config.persist = store.is_some() || shared.is_some();
            shard_config.takeover = shared.is_some();
            let recovery = self.config.recovery;
            shard_config.recovery_probes = (store.is_some()
                && !recovery.recovery_timeout.is_zero()
                && recovery.max_recovery_attempts > 0)
                .then_some(crate::shard::RecoveryProbes {
                    within: recovery.recovery_timeout,
                    attempts: recovery.max_recovery_attempts,
                });
            let worker = Worker {
                index,
                shard: Shard::new(now, shard_config),
                socket,
                inbound,
                waker: shards[index].waker.clone(),
                peers: shards.clone(),
                mode: self.config.mode.clone(),
                coordinator: coordinator.clone(),
                dialogs: shards[index].dialogs.clone(),
                coalesce: self.config.coalesce,
                backlog: super::overload::ReceiveBacklog::new(self.config.overload_after),
                stopped: stopped.clone(),
                tcp,
                stream_routes: ahash::HashMap::default(),
                store: stores[index].take(),
                shared: shared.as_ref().and_then(|s| s.writer(index)),
                restore: std::mem::take(&mut restores[index]),
            };
            let epoll = worker
                .epoll()
                .map_err(|e| DialogError::Transport(format!("shard {index}: epoll: {e}")))?;
            workers.push((index, worker, epoll));
        }
        // Every shard has all its descriptors before any takes traffic.
        for (index, worker, epoll) in workers {
            let thread = std::thread::Builder::new()
                .name(format!("sipshard-{index}"))
                .spawn(move || worker.run(epoll))
                .map_err(transport)?;
            threads.push(thread);
        }
        tracing::info!(%local_addr, shards = count, "dialog manager started");
        let running = Running {
            shards,
            threads: Mutex::new(threads),
            local_addr,
            tcp: tcp_listening,
            next_call: AtomicUsize::new(0),
            shared: Mutex::new(shared),
        };
        if self.running.set(running).is_err() {
            // Two concurrent starts: the other won; ours never took a socket's traffic.
            return Err(DialogError::InvalidDialogState {
                current: "running",
                expected: "stopped",
            });
        }
        Ok(())
    }

    /// Stops: new INVITEs get 503 at once; calls still up get until `deadline` to end,
    /// then [`StopPolicy`] says what happens. Returns the final counters.
    pub async fn stop(
        &self,
        policy: StopPolicy,
        deadline: Duration,
    ) -> Result<DialogStats, DialogError> {
        let running = self.running()?;
        self.stopped.store(true, Ordering::Release);
        let at = Instant::now() + deadline;
        for handle in running.shards.iter() {
            // A stop must get through: wait for room rather than give up.
            let mut message = Inbound::Stop {
                policy,
                deadline: at,
            };
            loop {
                match handle.try_send(message) {
                    Ok(()) => break,
                    Err(crossbeam_channel::TrySendError::Full(m)) => {
                        message = m;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(crossbeam_channel::TrySendError::Disconnected(_)) => break,
                }
            }
        }
        let threads = std::mem::take(&mut *running.threads.lock().map_err(|_| {
            DialogError::SessionCoordinationFailed("the thread list is poisoned".to_owned())
        })?);
        let reports = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .filter_map(|t| t.join().ok())
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| DialogError::SessionCoordinationFailed(format!("joining the shards: {e}")))?;
        // The shards are gone: the shared store's writer writes what they queued last.
        let shared = running.shared.lock().ok().and_then(|mut s| s.take());
        if let Some(mut shared) = shared {
            let _ =
                tokio::task::spawn_blocking(move || shared.finish(Duration::from_secs(5))).await;
        }
        tracing::info!("dialog manager stopped");
        Ok(DialogStats::from_reports(reports))
    }
}

impl Drop for DialogManager {
    fn drop(&mut self) {
        // Without `stop`, shard threads would run on: tell them to leave now.
        if let Some(running) = self.running.get()
            && !self.stopped.load(Ordering::Acquire)
        {
            for handle in running.shards.iter() {
                let _ = handle.try_send(Inbound::Stop {
                    policy: StopPolicy::Wait,
                    deadline: Instant::now(),
                });
            }
        }
    }
}

/// Binds a UDP socket per shard on `config.listen` and, with TCP on, a TCP listener per
/// shard on the same port; returns them and the address they share. A fixed port whose TCP
/// side is taken by another process leaves the server on UDP alone, with a warning: UDP is
/// what was asked for by address, TCP only by default. (Port 0 tries other ports instead.)
fn bind_all(
    config: &RuntimeConfig,
    count: usize,
) -> std::io::Result<(
    Vec<std::net::UdpSocket>,
    Vec<std::net::TcpListener>,
    SocketAddr,
)> {
    let listen = config.listen;
    let mut tcp = config.tcp;
    // SO_REUSEPORT would let us share a port with another process (the kernel would split
    // the traffic between us): make sure nobody holds it first.
    if listen.port() != 0 {
        drop(std::net::UdpSocket::bind(listen)?);
        if tcp && let Err(e) = std::net::TcpListener::bind(listen) {
            tracing::warn!(%listen, error = %e, "TCP port taken: serving UDP only");
            tcp = false;
        }
    }
    // Port 0: the first UDP socket picks the port, whose TCP twin may be taken; then the
    // next free UDP port is tried.
    let attempts = if listen.port() == 0 { 16 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let first = bind_shared(listen, config.socket_buffer)?;
        let local_addr = first.local_addr()?;
        let mut listeners = Vec::new();
        if tcp {
            let bound: std::io::Result<Vec<_>> =
                (0..count).map(|_| listen_shared(local_addr)).collect();
            match bound {
                Ok(l) => listeners = l,
                Err(e) if listen.port() == 0 => {
                    last_error = Some(e);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%listen, error = %e, "TCP port taken: serving UDP only");
                }
            }
        }
        let mut sockets = vec![first];
        for _ in 1..count {
            sockets.push(bind_shared(local_addr, config.socket_buffer)?);
        }
        return Ok((sockets, listeners, local_addr));
    }
    Err(last_error
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_tcp_port_leaves_a_fixed_port_on_udp_and_port_0_on_both() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Someone else listens on TCP at a port whose UDP side is free.
            let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = holder.local_addr().unwrap().port();
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
                return; // its UDP twin is taken too: nothing to show here
            }
            let mut config = RuntimeConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
            config.shards = 1;
            let manager = DialogManager::new(config);
            manager.start().await.unwrap();
            assert!(!manager.tcp_listening());
            assert_eq!(manager.local_addr().unwrap().port(), port);
            manager
                .stop(StopPolicy::Wait, Duration::from_secs(1))
                .await
                .unwrap();

            let mut config = RuntimeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
            config.shards = 2;
            let manager = DialogManager::new(config);
            manager.start().await.unwrap();
            assert!(manager.tcp_listening());
            let addr = manager.local_addr().unwrap();
            assert!(std::net::TcpStream::connect(addr).is_ok());
            manager
                .stop(StopPolicy::Wait, Duration::from_secs(1))
                .await
                .unwrap();
        });
    }
}
