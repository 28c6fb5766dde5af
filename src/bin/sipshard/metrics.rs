//! `/metrics` in the Prometheus text exposition format.
//!
//! A small HTTP/1.1 endpoint on tokio rather than the `metrics` crate family: the shards
//! already keep plain per-shard counters and hand out a snapshot on request, so a recorder
//! with shared atomics would add hot-path cost for nothing. Each scrape asks every shard
//! for its [`DialogStats`] and renders it; the shards pay one queue message per scrape.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use sipshard::runtime::{DialogManager, DialogStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Depth of the application's event channel, when there is one.
pub type ChannelDepth = Arc<dyn Fn() -> usize + Send + Sync>;

/// Serves `/metrics` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    manager: Arc<DialogManager>,
    channel_depth: Option<ChannelDepth>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let manager = manager.clone();
        let depth = channel_depth.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 2048];
            let n = stream.read(&mut request).await.unwrap_or(0);
            let head = &request[..n];
            let (status, body) = if head.starts_with(b"GET /metrics ") {
                match manager.stats().await {
                    Ok(stats) => ("200 OK", render(&stats, depth.map(|d| d()))),
                    Err(e) => ("503 Service Unavailable", format!("{e}\n")),
                }
            } else {
                ("404 Not Found", "try /metrics\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// Binds the endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The exposition text.
pub fn render(stats: &DialogStats, channel_depth: Option<usize>) -> String {
    let mut out = String::with_capacity(8192);
    let mut family =
        |name: &str, kind: &str, help: &str, samples: &mut dyn Iterator<Item = (String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        };
    let per_shard = |f: &dyn Fn(&sipshard::runtime::ShardReport) -> u64| {
        stats
            .shards
            .iter()
            .map(|r| (format!("shard=\"{}\"", r.shard), f(r)))
            .collect::<Vec<_>>()
    };
    family(
        "sipshard_dialogs",
        "gauge",
        "Live dialogs by state.",
        &mut stats.shards.iter().flat_map(|r| {
            [
                (
                    format!("shard=\"{}\",state=\"early\"", r.shard),
                    r.stats.dialogs_early,
                ),
                (
                    format!("shard=\"{}\",state=\"confirmed\"", r.shard),
                    r.stats.dialogs_confirmed,
                ),
            ]
        }),
    );
    family(
        "sipshard_subscriptions",
        "gauge",
        "Subscriptions (RFC 6665): dialogs we serve them in as notifier, and those we hold.",
        &mut stats.shards.iter().flat_map(|r| {
            [
                (
                    format!("shard=\"{}\",role=\"notifier\"", r.shard),
                    r.stats.subscription_dialogs_served,
                ),
                (
                    format!("shard=\"{}\",role=\"subscriber\"", r.shard),
                    r.stats.subscriptions_held,
                ),
            ]
        }),
    );
    family(
        "sipshard_transactions",
        "gauge",
        "Live transactions.",
        &mut per_shard(&|r| r.transactions as u64).into_iter(),
    );
    family(
        "sipshard_dialogs_created_total",
        "counter",
        "Dialogs created.",
        &mut per_shard(&|r| r.stats.dialogs_created).into_iter(),
    );
    family(
        "sipshard_datagrams_received_total",
        "counter",
        "Datagrams read from the socket.",
        &mut per_shard(&|r| r.io.datagrams_received).into_iter(),
    );
    family(
        "sipshard_datagrams_sent_total",
        "counter",
        "Datagrams sent.",
        &mut per_shard(&|r| r.io.datagrams_sent).into_iter(),
    );
    family(
        "sipshard_datagrams_handed_over_total",
        "counter",
        "Datagrams moved to the shard owning their Call-ID.",
        &mut per_shard(&|r| r.io.handed_over).into_iter(),
    );

    family(
        "sipshard_requests_received_total",
        "counter",
        "Requests received, by method.",
        &mut stats.shards.iter().flat_map(|r| {
            sipshard::shard::REQUEST_METHODS
                .iter()
                .zip(r.stats.requests_in)
                .map(move |(m, v)| (format!("shard=\"{}\",method=\"{m}\"", r.shard), v))
        }),
    );
    for (name, help, pick) in [
        (
            "sipshard_responses_received_total",
            "Responses received, by class.",
            (|r: &sipshard::runtime::ShardReport| r.stats.responses_in) as fn(&_) -> [u64; 6],
        ),
        (
            "sipshard_responses_sent_total",
            "Responses sent by the dialog layer, by class.",
            |r: &sipshard::runtime::ShardReport| r.stats.responses_out,
        ),
    ] {
        family(
            name,
            "counter",
            help,
            &mut stats.shards.iter().flat_map(|r| {
                pick(r)
                    .into_iter()
                    .enumerate()
                    .map(move |(i, v)| (format!("shard=\"{}\",class=\"{}xx\"", r.shard, i + 1), v))
            }),
        );
    }
    family(
        "sipshard_retransmissions_total",
        "counter",
        "Retransmissions sent, by kind.",
        &mut stats.shards.iter().flat_map(|r| {
            let t = r.stats.transactions;
            [
                ("request", t.request_retransmissions),
                ("response", t.response_retransmissions),
                ("2xx", r.stats.ok_retransmissions),
                ("reliable-1xx", r.stats.provisional_retransmissions),
            ]
            .map(|(k, v)| (format!("shard=\"{}\",kind=\"{k}\"", r.shard), v))
        }),
    );
    family(
        "sipshard_retransmissions_absorbed_total",
        "counter",
        "Retransmissions received and absorbed by a transaction.",
        &mut per_shard(&|r| {
            r.stats.transactions.requests_absorbed + r.stats.transactions.responses_absorbed
        })
        .into_iter(),
    );
    family(
        "sipshard_transaction_timeouts_total",
        "counter",
        "Transactions ended by Timer B, F or H.",
        &mut per_shard(&|r| r.stats.transactions.timeouts).into_iter(),
    );
    family(
        "sipshard_drops_total",
        "counter",
        "Datagrams or events dropped, by reason.",
        &mut stats.shards.iter().flat_map(|r| {
            [
                ("parse_error", r.stats.parse_errors),
                ("bad_response", r.stats.bad_responses),
                ("handover_queue_full", r.io.handover_drops),
                ("banned_source", r.io.screened_out),
                ("oversize", r.io.truncated),
                ("send_failed", r.io.send_failures),
                ("stray_response", r.stats.transactions.stray_responses),
                ("events_undeliverable", r.io.events_undeliverable),
            ]
            .map(|(k, v)| (format!("shard=\"{}\",reason=\"{k}\"", r.shard), v))
        }),
    );
    family(
        "sipshard_guard_total",
        "counter",
        "Defence against hostile sources, by what happened: bans made, failed \
         authentications, users locked, requests refused for a locked user, sources not \
         counted for full tables.",
        &mut stats.shards.iter().flat_map(|r| {
            let g = r.stats.guard;
            [
                ("bans", g.bans),
                ("auth_failures", g.auth_failures),
                ("user_locks", g.user_locks),
                ("refused_locked_user", g.refused_locked),
                ("untracked", g.untracked),
            ]
            .map(|(k, v)| (format!("shard=\"{}\",event=\"{k}\"", r.shard), v))
        }),
    );
    family(
        "sipshard_calls_over_limit_total",
        "counter",
        "Calls ended with BYE for reaching the longest call duration.",
        &mut per_shard(&|r| r.stats.calls_over_limit).into_iter(),
    );
    family(
        "sipshard_calls_unanswered_total",
        "counter",
        "Our calls cancelled for ringing longer than the ring timeout.",
        &mut per_shard(&|r| r.stats.calls_unanswered).into_iter(),
    );
    family(
        "sipshard_rejected_503_total",
        "counter",
        "New INVITEs answered 503, by reason.",
        &mut stats.shards.iter().flat_map(|r| {
            [
                ("dialog_limit", r.stats.overload_rejections),
                ("backpressure", r.stats.backpressure_rejections),
                ("stopping", r.stats.shutdown_rejections),
            ]
            .map(|(k, v)| (format!("shard=\"{}\",reason=\"{k}\"", r.shard), v))
        }),
    );
    family(
        "sipshard_requests_rejected_total",
        "counter",
        "Requests refused by RFC 3261 checks (4xx/5xx from the dialog layer).",
        &mut per_shard(&|r| r.stats.requests_rejected).into_iter(),
    );
    family(
        "sipshard_event_backlog",
        "gauge",
        "Session events waiting in a shard for room in the application channel.",
        &mut per_shard(&|r| r.io.event_backlog).into_iter(),
    );
    family(
        "sipshard_receive_overloads_total",
        "counter",
        "Times a shard's socket stayed undrained for overload_after (new INVITEs got 503).",
        &mut per_shard(&|r| r.io.receive_overloads).into_iter(),
    );
    family(
        "sipshard_tcp_connections",
        "gauge",
        "Open TCP connections.",
        &mut per_shard(&|r| r.io.tcp_connections).into_iter(),
    );
    family(
        "sipshard_tcp_events_total",
        "counter",
        "TCP connections and messages, by event (large_request: a request over 1300 bytes sent over TCP instead of UDP; udp_fallback: one sent over UDP after all).",
        &mut stats.shards.iter().flat_map(|r| {
            let t = &r.io.tcp;
            [
                ("accepted", t.accepted),
                ("connected", t.connected),
                ("closed", t.closed),
                ("framing_error", t.framing_errors),
                ("failure", t.failures),
                ("message_in", t.messages_in),
                ("message_out", t.messages_out),
                ("keepalive", t.pings),
                ("dropped_queue_full", t.dropped),
                // Descriptors ran out: the listener paused; a source over its share
                // refused; a connection closed for not completing a message in time.
                ("accept_backoff", t.accept_backoffs),
                ("refused_per_source", t.refused_per_source),
                ("refused_banned", t.refused_banned),
                ("incomplete_closed", t.incomplete_closed),
                // RFC 3261 §18.1.1: requests too large for UDP, and those sent over UDP
                // after all when no connection could be made.
                (
                    "large_request",
                    r.stats.transactions.large_requests_over_tcp,
                ),
                ("udp_fallback", r.stats.transactions.stream_fallbacks),
            ]
            .map(|(k, v)| (format!("shard=\"{}\",event=\"{k}\"", r.shard), v))
        }),
    );
    family(
        "sipshard_dialogs_restored_total",
        "counter",
        "Dialogs taken back from the state directory at start.",
        &mut per_shard(&|r| r.stats.dialogs_restored).into_iter(),
    );
    family(
        "sipshard_dialogs_taken_over_total",
        "counter",
        "Dialogs of a peer taken over from the shared store (--cluster): a dead peer's, found by the sweep or asked for by an in-dialog request that came here, or a live peer's whose requests the front sends here now.",
        &mut per_shard(&|r| r.stats.dialogs_taken_over).into_iter(),
    );
    family(
        "sipshard_dialogs_released_total",
        "counter",
        "Dialogs a live peer took from this node (--cluster): dropped here without a word on the wire.",
        &mut per_shard(&|r| r.stats.dialogs_released).into_iter(),
    );
    family(
        "sipshard_bindings_restored_total",
        "counter",
        "Registrar bindings taken back from the state directory at start (lapsed ones are not).",
        &mut per_shard(&|r| r.stats.bindings_restored).into_iter(),
    );
    family(
        "sipshard_recovered_dialogs_ended_total",
        "counter",
        "Restored dialogs ended because their probe got 481 or no answer (RFC 5057).",
        &mut per_shard(&|r| r.stats.recovered_dialogs_ended).into_iter(),
    );
    family(
        "sipshard_store_events_total",
        "counter",
        "The dialog store (--state-dir), by event: records written or deleted, batches, fsyncs, failed batches, records that could not be restored.",
        &mut stats.shards.iter().flat_map(|r| {
            let s = &r.io.store;
            [
                ("write", s.writes),
                ("batch", s.batches),
                ("sync", s.syncs),
                ("write_error", s.write_errors),
                ("restore_failure", s.restore_failures),
            ]
            .map(|(k, v)| (format!("shard=\"{}\",event=\"{k}\"", r.shard), v))
        }),
    );
    family(
        "sipshard_store_write_micros_total",
        "counter",
        "Time spent writing dialog-store batches (microseconds).",
        &mut per_shard(&|r| r.io.store.write_micros).into_iter(),
    );
    family(
        "sipshard_store_write_micros_max",
        "gauge",
        "The longest dialog-store batch write (microseconds).",
        &mut per_shard(&|r| r.io.store.write_micros_max).into_iter(),
    );
    family(
        "sipshard_store_restore_micros",
        "gauge",
        "How long the shard's restore took at start (microseconds).",
        &mut per_shard(&|r| r.io.store.restore_micros).into_iter(),
    );
    if let Some(shared) = &stats.shared_store {
        family(
            "sipshard_shared_store_events_total",
            "counter",
            "The shared store (--cluster), by event: records written or deleted, pipelines, writes refused because a peer owns the dialog, batches lost to a failing or unreachable Redis, batches lost to a full queue, reconnections, resyncs (after lost batches or a lapsed heartbeat), dialogs claimed for a request that came here, dead peers' dialogs taken over by the sweep.",
            &mut [
                ("write", shared.writes),
                ("pipeline", shared.pipelines),
                ("fenced", shared.fenced),
                ("failed_batch", shared.failed_batches),
                ("dropped_batch", shared.dropped_batches),
                ("reconnect", shared.reconnects),
                ("resync", shared.resyncs),
                ("claim", shared.claims),
                ("sweep", shared.swept),
            ]
            .into_iter()
            .map(|(k, v)| (format!("event=\"{k}\""), v)),
        );
        family(
            "sipshard_shared_store_connected",
            "gauge",
            "1 while the shared store (Redis) is connected.",
            &mut std::iter::once((String::new(), shared.connected)),
        );
    }
    family(
        "sipshard_event_channel_full_total",
        "counter",
        "Times the application's event channel was full.",
        &mut per_shard(&|r| r.io.event_channel_full).into_iter(),
    );
    if let Some(depth) = channel_depth {
        let _ = writeln!(
            out,
            "# HELP sipshard_event_channel_depth Event batches queued for the application.\n\
             # TYPE sipshard_event_channel_depth gauge\nsipshard_event_channel_depth {depth}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_is_well_formed() {
        let mut stats = DialogStats::default();
        stats.shards.push(sipshard::runtime::ShardReport {
            shard: 0,
            stats: Default::default(),
            io: Default::default(),
            dialogs: 3,
            transactions: 2,
        });
        let text = render(&stats, Some(4));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("sipshard_"), "{line}");
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
        assert!(text.contains("sipshard_requests_received_total{shard=\"0\",method=\"INVITE\"} 0"));
        assert!(text.contains("sipshard_event_channel_depth 4"));
    }
}
