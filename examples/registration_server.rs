//! A registrar (RFC 3261 §10.3) on a dialog manager, and a UA registering with it over a
//! plain UDP socket: register, query, unregister.
//!
//! `cargo run --example registration_server` runs the exchange and exits;
//! `cargo run --example registration_server -- --serve` keeps the registrar up on
//! 127.0.0.1:5060 until Ctrl-C.

use std::net::UdpSocket;
use std::time::Duration;

use sipshard::registrar::RegistrarConfig;
use sipshard::runtime::{AppMode, AutoAnswer, DialogManager, RuntimeConfig, StopPolicy};
use sipshard::shard::RegisterMode;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().any(|a| a == "--serve");
    let listen = if serve {
        "127.0.0.1:5060"
    } else {
        "127.0.0.1:0"
    }
    .parse()?;
    let mut config = RuntimeConfig::new(listen);
    config.shard.register = RegisterMode::Registrar(RegistrarConfig::default());
    config.mode = AppMode::AutoAnswer(AutoAnswer::default());
    let registrar = DialogManager::new(config);
    registrar.start().await?;
    let addr = registrar.local_addr().ok_or("no address")?;
    println!("registrar on udp:{addr}");
    if serve {
        tokio::signal::ctrl_c().await?;
        registrar
            .stop(StopPolicy::Bye, Duration::from_secs(2))
            .await?;
        return Ok(());
    }

    let ua = UdpSocket::bind("127.0.0.1:0")?;
    ua.set_read_timeout(Some(Duration::from_secs(5)))?;
    let me = ua.local_addr()?;
    let exchange = |cseq: u32, extra: &str| -> Result<String, Box<dyn std::error::Error>> {
        let request = format!(
            "REGISTER sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bK-reg-{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:carol@example.com>;tag=c1\r\nTo: <sip:carol@example.com>\r\n\
             Call-ID: carol-registration\r\nCSeq: {cseq} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        ua.send_to(request.as_bytes(), addr)?;
        let mut buf = [0u8; 4096];
        let (n, _) = ua.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let status = |r: &str| r.lines().next().unwrap_or_default().to_owned();
    let contact = |r: &str| {
        r.lines()
            .find(|l| l.starts_with("Contact:"))
            .unwrap_or("(no Contact)")
            .to_owned()
    };
    let r = exchange(1, &format!("Contact: <sip:carol@{me}>\r\nExpires: 600\r\n"))?;
    println!("register:   {} / {}", status(&r), contact(&r));
    let r = exchange(2, "")?;
    println!("query:      {} / {}", status(&r), contact(&r));
    let r = exchange(3, "Contact: *\r\nExpires: 0\r\n")?;
    println!("unregister: {}", status(&r));
    let r = exchange(4, "")?;
    println!("query:      {} / {}", status(&r), contact(&r));
    registrar
        .stop(StopPolicy::Wait, Duration::from_secs(1))
        .await?;
    Ok(())
}
