//! Arbitrary datagrams, interleaved with timer runs, into a UAS shard that answers every
//! call: nothing may panic, and the shard's tables stay consistent.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipshard::message::IdGenerator;
use sipshard::registrar::RegistrarConfig;
use sipshard::shard::{DialogCommand, RegisterMode, SessionEvent, Shard, ShardConfig};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let config = ShardConfig {
        register: RegisterMode::Registrar(RegistrarConfig::default()),
        max_dialogs: 8,
        ..ShardConfig::new("127.0.0.1:5080".parse().unwrap())
    };
    let mut shard = Shard::with_ids(t0, config, IdGenerator::from_seed([1; 32]));
    let from: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let mut now = t0;
    // The input is a sequence of datagrams separated by 0xFF 0xFE; a 0xFD byte alone between
    // them advances time by a second.
    for chunk in data.split(|&b| b == 0xfe) {
        let chunk = chunk.strip_suffix(&[0xff]).unwrap_or(chunk);
        if chunk == [0xfd] {
            now += Duration::from_secs(1);
            shard.handle_timeout(now);
        } else {
            shard.handle_datagram(now, from, Bytes::copy_from_slice(chunk));
        }
        while let Some(e) = shard.poll_event() {
            let dialog = match e {
                SessionEvent::IncomingCall { dialog, .. }
                | SessionEvent::ReInvite { dialog, .. } => dialog,
                _ => continue,
            };
            let _ = shard.handle_command(
                now,
                DialogCommand::Ringing {
                    dialog: dialog.clone(),
                },
            );
            let _ = shard.handle_command(
                now,
                DialogCommand::Answer {
                    dialog,
                    sdp: Bytes::new(),
                },
            );
        }
        while shard.poll_transmit().is_some() {}
    }
    // Everything ends: after 5 minutes no transaction may be left.
    for _ in 0..400 {
        now += Duration::from_secs(1);
        shard.handle_timeout(now);
        while shard.poll_transmit().is_some() {}
        while shard.poll_event().is_some() {}
    }
    assert_eq!(shard.transaction_count(), 0);
});
