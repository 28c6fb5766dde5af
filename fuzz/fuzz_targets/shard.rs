//! Arbitrary datagrams and TCP messages, interleaved with timer runs and connection failures, into two UAS shards that share
//! Call-IDs by hash as the runtime's do (each datagram goes to its Call-ID's owner, and
//! their peer messages, the Replaces queries of RFC 3891, are carried between them) and
//! answer every call: nothing may panic, and the shards' tables stay consistent.
//!
//! The shards persist their confirmed dialogs and bindings (issue 22) into a map each, as
//! the runtime would before sending; a 0xFA byte crashes both and starts new ones from
//! those maps: every record restores, each is what the crashed shard would have written
//! for that dialog at the crash (no change a restart needs went unwritten), and the
//! restored shard holds exactly those dialogs, each writing the same record again.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipshard::message::IdGenerator;
use sipshard::registrar::RegistrarConfig;
use sipshard::shard::{
    DialogCommand, PersistOp, RegisterMode, Restored, SessionEvent, SessionTimers, Shard,
    ShardConfig, ShardOwner, shard_for_datagram,
};
use sipshard::transaction::Transport;

/// What each shard's store holds, by key.
type Store = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

fn wall(t0: Instant, now: Instant) -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + (now - t0)
}

fn new_shard(index: u8, t0: Instant, now: Instant) -> Shard {
    let config = ShardConfig {
        register: RegisterMode::Registrar(RegistrarConfig::default()),
        max_dialogs: 8,
        // Session timers on every call, at the shortest interval (RFC 4028).
        session_timers: Some(SessionTimers {
            session_expires: 90,
            ..SessionTimers::default()
        }),
        owner: Some(ShardOwner {
            index: usize::from(index),
            count: 2,
        }),
        persist: true,
        ..ShardConfig::new("127.0.0.1:5080".parse().unwrap())
    };
    let mut shard = Shard::with_ids(now, config, IdGenerator::from_seed([index + 1; 32]));
    shard.set_wall_clock(now, wall(t0, now));
    shard
}

/// Both shards crash; new ones take back what their stores hold.
fn crash_and_restore(shards: &mut [Shard; 2], stores: &[Store; 2], t0: Instant, now: Instant) {
    for (index, store) in stores.iter().enumerate() {
        let mut shard = new_shard(index as u8, t0, now);
        let mut dialogs = 0;
        for record in store.values() {
            match shard.restore(now, record) {
                Ok(Restored::Dialog(_)) => dialogs += 1,
                Ok(_) => {}
                Err(e) => panic!("a record the shard wrote does not restore: {e}"),
            }
        }
        assert_eq!(
            shard.dialog_count(),
            dialogs,
            "one dialog per dialog record"
        );
        // Each record is what the crashed shard held for its dialog, and the restored
        // shard holds the same.
        for record in store.values() {
            if let Ok(r) = sipshard::dialog::DialogRecord::decode(record) {
                let id = &r.dialog.id;
                assert_eq!(
                    shards[index].dialog_record(id).as_ref(),
                    Some(record),
                    "the crashed shard's record of {id:?}"
                );
                assert_eq!(
                    shard.dialog_record(id).as_ref(),
                    Some(record),
                    "the restored shard's record of {id:?}"
                );
            }
        }
        shards[index] = shard;
    }
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut shards = [0u8, 1].map(|index| new_shard(index, t0, t0));
    let mut stores: [Store; 2] = Default::default();
    let from: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let mut now = t0;
    let mut transport = Transport::Udp;
    // The input is a sequence of messages separated by 0xFF 0xFE; a 0xFD byte alone between
    // them advances time by a second, 0xFC switches between UDP and TCP for the messages
    // that follow, 0xFB fails the TCP connection to the peer.
    for chunk in data.split(|&b| b == 0xfe) {
        let chunk = chunk.strip_suffix(&[0xff]).unwrap_or(chunk);
        if chunk == [0xfd] {
            now += Duration::from_secs(1);
            shards.iter_mut().for_each(|s| s.handle_timeout(now));
        } else if chunk == [0xfc] {
            transport = match transport {
                Transport::Udp => Transport::Tcp,
                _ => Transport::Udp,
            };
        } else if chunk == [0xfa] {
            crash_and_restore(&mut shards, &stores, t0, now);
        } else if chunk == [0xfb] {
            shards
                .iter_mut()
                .for_each(|s| s.handle_transport_failure(now, from, Transport::Tcp));
        } else {
            let owner = shard_for_datagram(chunk, 2).unwrap_or(0);
            shards[owner].handle_message(now, from, transport, Bytes::copy_from_slice(chunk));
        }
        settle(&mut shards, &mut stores, now);
    }
    // Everything ends: after 5 minutes no transaction may be left.
    for _ in 0..400 {
        now += Duration::from_secs(1);
        for shard in &mut shards {
            shard.handle_timeout(now);
        }
        settle(&mut shards, &mut stores, now);
    }
    for shard in &shards {
        assert_eq!(shard.transaction_count(), 0);
    }
});

/// Answers every call, carries peer messages, drops what was sent, until all is quiet.
fn settle(shards: &mut [Shard; 2], stores: &mut [Store; 2], now: Instant) {
    loop {
        let mut busy = false;
        for index in 0..2 {
            while let Some(op) = shards[index].poll_persist() {
                match op {
                    PersistOp::Put { key, record } => {
                        stores[index].insert(key, record);
                    }
                    PersistOp::Delete { key } => {
                        stores[index].remove(&key);
                    }
                    _ => {}
                }
            }
            while let Some(e) = shards[index].poll_event() {
                let dialog = match e {
                    SessionEvent::IncomingCall { dialog, .. }
                    | SessionEvent::ReInvite { dialog, .. } => dialog,
                    _ => continue,
                };
                let shard = &mut shards[index];
                let _ = shard.handle_command(
                    now,
                    DialogCommand::Ringing {
                        dialog: dialog.clone(),
                    },
                );
                // Some calls get an answer over 1300 bytes: their session refreshes
                // (re-INVITEs with it) go over TCP, and 0xFB sends them back to UDP
                // (RFC 3261 §18.1.1).
                let sdp = if dialog.call_id().len() % 2 == 1 {
                    Bytes::from(large_sdp())
                } else {
                    Bytes::new()
                };
                let _ = shard.handle_command(now, DialogCommand::Answer { dialog, sdp });
                busy = true;
            }
            while let Some((to, message)) = shards[index].poll_peer() {
                assert_ne!(to, index, "a shard answers its own Call-IDs itself");
                shards[to].handle_peer(now, message);
                busy = true;
            }
            while shards[index].poll_transmit().is_some() {}
        }
        if !busy {
            return;
        }
    }
}

/// An SDP answer over 1300 bytes.
fn large_sdp() -> Vec<u8> {
    let mut sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".to_vec();
    for pt in 96..150 {
        sdp.extend_from_slice(format!("a=rtpmap:{pt} opus/48000/2\r\n").as_bytes());
    }
    sdp
}
