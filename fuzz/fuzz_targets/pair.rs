//! A UAC shard and a UAS shard over a network the fuzzer runs: each input byte is one step
//! (place a call, hang up, cancel, re-INVITE, subscribe (RFC 6665, the UAS notifies),
//! terminate, deliver / drop / duplicate the
//! next datagram, let time pass), so calls overlap, race and outlive their transactions
//! (RFC 6026 keeps an INVITE's for 32 s, long after its dialog's slot is reused). Nothing
//! may panic; once every call is terminated and time runs out, no transaction and no
//! dialog may be left on either side.
#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipshard::dialog::DialogId;
use sipshard::message::IdGenerator;
use sipshard::shard::{
    CommandOutcome, DialogCommand, NewSubscription, NotifyState, ReliableProvisionals,
    SessionEvent, SessionTimers, Shard, ShardConfig, Subscriptions,
};

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

struct Side {
    shard: Shard,
    addr: SocketAddr,
    /// Dialogs and call handles this side has heard of.
    known: Vec<DialogId>,
}

fn drain(
    from: &mut Side,
    wire: &mut VecDeque<(bool, Bytes)>,
    to_uas: bool,
    answer: bool,
    now: Instant,
) {
    while let Some(t) = from.shard.poll_transmit() {
        wire.push_back((to_uas, t.payload));
    }
    while let Some(e) = from.shard.poll_event() {
        match e {
            SessionEvent::IncomingCall { dialog, .. } | SessionEvent::ReInvite { dialog, .. } => {
                let _ = from.shard.handle_command(
                    now,
                    DialogCommand::Ringing {
                        dialog: dialog.clone(),
                    },
                );
                if answer {
                    let sdp = Bytes::from_static(SDP);
                    let _ = from.shard.handle_command(
                        now,
                        DialogCommand::Answer {
                            dialog: dialog.clone(),
                            sdp,
                        },
                    );
                }
                from.known.push(dialog);
            }
            SessionEvent::CallRinging { dialog, .. }
            | SessionEvent::CallAnswered { dialog, .. }
            | SessionEvent::SubscriptionAccepted { dialog, .. } => from.known.push(dialog),
            // The notifier accepts and notifies at once (RFC 6665 §4.2.1.2), or leaves the
            // SUBSCRIBE unanswered.
            SessionEvent::SubscriptionRequest { dialog, txn, .. } => {
                if answer {
                    let _ = from.shard.handle_command(
                        now,
                        DialogCommand::Respond {
                            txn,
                            status: 200,
                            headers: Vec::new(),
                            body: Bytes::new(),
                        },
                    );
                    let _ = from.shard.handle_command(
                        now,
                        DialogCommand::Notify {
                            dialog: dialog.clone(),
                            event: Bytes::from_static(b"presence"),
                            state: NotifyState::Active,
                            headers: Vec::new(),
                            body: Bytes::new(),
                        },
                    );
                }
                from.known.push(dialog);
            }
            // A REFER is accepted and its reference reported at once (RFC 3515).
            SessionEvent::DialogRequest {
                txn,
                request,
                dialog,
            } if answer && request.method() == Some(sipshard::message::Method::Refer) => {
                let _ = from.shard.handle_command(
                    now,
                    DialogCommand::Respond {
                        txn,
                        status: 202,
                        headers: Vec::new(),
                        body: Bytes::new(),
                    },
                );
                let refer_cseq = request.cseq().map_or(0, |c| c.seq);
                let _ = from.shard.handle_command(
                    now,
                    DialogCommand::ReferStatus {
                        dialog,
                        refer_cseq,
                        status: 200,
                    },
                );
            }
            SessionEvent::DialogRequest { txn, .. } if answer => {
                let _ = from.shard.handle_command(
                    now,
                    DialogCommand::Respond {
                        txn,
                        status: 200,
                        headers: vec![(
                            "Content-Type".into(),
                            Bytes::from_static(b"application/sdp"),
                        )],
                        body: Bytes::from_static(SDP),
                    },
                );
            }
            _ => {}
        }
    }
    while let Some(t) = from.shard.poll_transmit() {
        wire.push_back((to_uas, t.payload));
    }
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let side = |port: u16, seed: u8| {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Side {
            shard: Shard::with_ids(
                t0,
                // Reliable provisionals whenever supported: our UAC offers 100rel, so
                // most calls go through PRACK and the answer held for it.
                ShardConfig {
                    max_dialogs: 16,
                    reliable_provisionals: ReliableProvisionals::WhenSupported,
                    subscriptions: Some(Subscriptions::new(["presence"])),
                    // Session timers on every call, at the shortest interval (RFC 4028).
                    session_timers: Some(SessionTimers {
                        session_expires: 90,
                        ..SessionTimers::default()
                    }),
                    ..ShardConfig::new(addr)
                },
                IdGenerator::from_seed([seed; 32]),
            ),
            addr,
            known: Vec::new(),
        }
    };
    let (mut uac, mut uas) = (side(5070, 1), side(5080, 2));
    let mut wire: VecDeque<(bool, Bytes)> = VecDeque::new();
    let mut now = t0;
    let mut answer = true;
    for &b in data {
        let pick =
            |known: &Vec<DialogId>| known.get(usize::from(b >> 4) % known.len().max(1)).cloned();
        match b & 0x0f {
            0 => {
                if let Ok(CommandOutcome::Call(id)) = uac.shard.handle_command(
                    now,
                    DialogCommand::MakeCall {
                        from: Bytes::from_static(b"<sip:alice@127.0.0.1:5070>"),
                        to: Bytes::from_static(b"<sip:bob@127.0.0.1:5080>"),
                        request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
                        destination: uas.addr,
                        sdp: Bytes::from_static(SDP),
                        headers: Vec::new(),
                    },
                ) {
                    uac.known.push(id);
                }
            }
            1 => {
                if let Some(d) = pick(&uac.known) {
                    let _ = uac
                        .shard
                        .handle_command(now, DialogCommand::Bye { dialog: d });
                }
            }
            2 => {
                if let Some(d) = pick(&uac.known) {
                    let _ = uac
                        .shard
                        .handle_command(now, DialogCommand::Cancel { call: d });
                }
            }
            3 => {
                if let Some(d) = pick(&uac.known) {
                    let sdp = Bytes::from_static(SDP);
                    let _ = uac
                        .shard
                        .handle_command(now, DialogCommand::ReInvite { dialog: d, sdp });
                }
            }
            4 => {
                if let Some(d) = pick(&uas.known) {
                    let _ = uas
                        .shard
                        .handle_command(now, DialogCommand::Terminate { dialog: d });
                }
            }
            5 => {
                if let Some(d) = pick(&uas.known) {
                    let sdp = Bytes::from_static(SDP);
                    let _ = uas
                        .shard
                        .handle_command(now, DialogCommand::ReInvite { dialog: d, sdp });
                }
            }
            6 => answer = !answer,
            // Lose the next datagram.
            7 => {
                wire.pop_front();
            }
            // Duplicate it.
            8 => {
                if let Some(d) = wire.front().cloned() {
                    wire.push_back(d);
                }
            }
            // Reorder: the next goes to the back.
            9 => {
                if let Some(d) = wire.pop_front() {
                    wire.push_back(d);
                }
            }
            // Time passes: 10 ms to ~40 s.
            10 | 11 => {
                let step = if b & 1 == 0 { 10 } else { 2_500 };
                now += Duration::from_millis(u64::from(b >> 4) * step + 10);
                uac.shard.handle_timeout(now);
                uas.shard.handle_timeout(now);
            }
            // An UPDATE with an offer (RFC 3311), early or confirmed.
            12 => {
                if let Some(d) = pick(&uac.known) {
                    let _ = uac.shard.handle_command(
                        now,
                        DialogCommand::SendRequest {
                            dialog: d,
                            method: Bytes::from_static(b"UPDATE"),
                            headers: vec![(
                                "Content-Type".into(),
                                Bytes::from_static(b"application/sdp"),
                            )],
                            body: Bytes::from_static(SDP),
                        },
                    );
                }
            }
            // A REFER from the caller (RFC 3515), whose NOTIFYs come back.
            13 => {
                if let Some(d) = pick(&uac.known) {
                    let _ = uac.shard.handle_command(
                        now,
                        DialogCommand::Refer {
                            dialog: d,
                            refer_to: Bytes::from_static(b"<sip:carol@127.0.0.1>"),
                        },
                    );
                }
            }
            // A subscription to the UAS's presence, for 60 to 210 s.
            14 => {
                let new = NewSubscription {
                    from: Bytes::from_static(b"<sip:alice@127.0.0.1:5070>"),
                    to: Bytes::from_static(b"<sip:bob@127.0.0.1:5080>"),
                    request_uri: Bytes::from_static(b"sip:bob@127.0.0.1:5080"),
                    destination: uas.addr,
                    event: Bytes::from_static(b"presence"),
                    expires: 60 + u32::from(b >> 4) * 10,
                    headers: Vec::new(),
                    body: Bytes::new(),
                };
                if let Ok(CommandOutcome::Subscription(id)) = uac
                    .shard
                    .handle_command(now, DialogCommand::Subscribe(Box::new(new)))
                {
                    uac.known.push(id);
                }
            }
            // Deliver the next datagram.
            _ => {
                if let Some((to_uas, payload)) = wire.pop_front() {
                    if to_uas {
                        uas.shard.handle_datagram(now, uac.addr, payload);
                    } else {
                        uac.shard.handle_datagram(now, uas.addr, payload);
                    }
                }
            }
        }
        drain(&mut uac, &mut wire, true, answer, now);
        drain(&mut uas, &mut wire, false, answer, now);
    }
    // End every call, then let the network run and time pass.
    answer = false;
    for side in [&mut uac, &mut uas] {
        for d in side.known.clone() {
            let _ = side
                .shard
                .handle_command(now, DialogCommand::Terminate { dialog: d });
        }
    }
    for _ in 0..700 {
        now += Duration::from_millis(500);
        uac.shard.handle_timeout(now);
        uas.shard.handle_timeout(now);
        for _ in 0..64 {
            drain(&mut uac, &mut wire, true, answer, now);
            drain(&mut uas, &mut wire, false, answer, now);
            let Some((to_uas, payload)) = wire.pop_front() else {
                break;
            };
            if to_uas {
                uas.shard.handle_datagram(now, uac.addr, payload);
            } else {
                uac.shard.handle_datagram(now, uas.addr, payload);
            }
        }
        // Calls that got answered meanwhile end too.
        for side in [&mut uac, &mut uas] {
            for d in std::mem::take(&mut side.known) {
                let _ = side
                    .shard
                    .handle_command(now, DialogCommand::Terminate { dialog: d });
            }
        }
    }
    assert_eq!(uac.shard.transaction_count(), 0, "UAC transactions left");
    assert_eq!(uas.shard.transaction_count(), 0, "UAS transactions left");
    assert_eq!(uac.shard.dialog_count(), 0, "UAC dialogs left");
    assert_eq!(uas.shard.dialog_count(), 0, "UAS dialogs left");
});
