//! REGISTER at a shard (`common::pair::Pair`): the registrar's bindings, and REGISTER handed
//! to the application in event mode.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pair::*;
use sipshard::message::Message;
use sipshard::shard::{DialogCommand, SessionEvent, Shard, ShardConfig};

#[test]
fn registrar_mode_binds_answers_423_and_expires_by_timer() {
    use sipshard::registrar::RegistrarConfig;
    use sipshard::shard::RegisterMode;
    let t0 = Instant::now();
    let config = ShardConfig {
        register: RegisterMode::Registrar(RegistrarConfig::default()),
        ..ShardConfig::new(uas_addr())
    };
    let mut shard = Shard::new(t0, config);
    let answer = |shard: &mut Shard, at: Instant, datagram: Bytes| {
        shard.handle_datagram(at, uac_addr(), datagram);
        Message::parse(shard.poll_transmit().unwrap().payload).unwrap()
    };
    let ok = answer(&mut shard, t0, register(1, "<sip:bob@192.0.2.4:5060>", 120));
    assert_eq!(ok.status(), Some(200));
    let c = ok.contacts().next().unwrap().unwrap();
    assert_eq!(c.expires(), Ok(Some(120)));
    let brief = answer(&mut shard, t0, register(2, "<sip:bob@192.0.2.4:5060>", 5));
    assert_eq!(brief.status(), Some(423));
    assert_eq!(brief.min_expires().unwrap(), Some(60));
    assert_eq!(shard.registrar().unwrap().aor_count(), 1);
    // The binding lapses by the shard's own timer.
    let mut now = t0;
    while let Some(next) = shard.poll_timeout() {
        if next - t0 > Duration::from_secs(200) {
            break;
        }
        now = next;
        shard.handle_timeout(now);
    }
    assert!(now - t0 >= Duration::from_secs(120));
    assert_eq!(shard.registrar().unwrap().aor_count(), 0);
}

#[test]
fn event_mode_hands_register_to_the_application() {
    use sipshard::shard::RegisterMode;
    let t0 = Instant::now();
    let config = ShardConfig {
        register: RegisterMode::Event,
        ..ShardConfig::new(uas_addr())
    };
    let mut shard = Shard::new(t0, config);
    shard.handle_datagram(t0, uac_addr(), register(1, "<sip:bob@192.0.2.4>", 300));
    let Some(SessionEvent::RegistrationRequest { txn, request, .. }) = shard.poll_event() else {
        panic!("no RegistrationRequest")
    };
    assert_eq!(request.expires().unwrap(), Some(300));
    shard
        .handle_command(
            t0,
            DialogCommand::Respond {
                txn,
                status: 200,
                headers: vec![(
                    "Contact".into(),
                    Bytes::from_static(b"<sip:bob@192.0.2.4>;expires=300"),
                )],
                body: bytes::Bytes::new(),
            },
        )
        .unwrap();
    let ok = Message::parse(shard.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.contacts().count(), 1);
}
