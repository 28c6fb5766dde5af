//! A real client: baresip (Debian's `baresip-core`), which got 400 for its empty
//! `Supported:` (issue 20), registers with Digest at `sipshard serve --mode registrar`
//! and places a call that is answered, held, and ended with its BYE. Loopback only: its
//! interface is pinned to 127.0.0.1, and the media goes to our SDP's loopback address.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::peers::Server;

fn baresip() -> Option<PathBuf> {
    common::peers::required_tool("baresip", "baresip-core")
}

/// A port free for baresip's UDP and TCP, with the next one free for its TLS listener.
fn free_ports() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if port < u16::MAX
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
    panic!("no free pair of ports");
}

/// Five seconds of 8 kHz mono silence as a WAV file: baresip's audio source.
fn silence(path: &Path) {
    let samples = 8000 * 5;
    let data = (samples * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    wav.resize(44 + data as usize, 0);
    std::fs::write(path, wav).unwrap();
}

#[test]
fn baresip_registers_with_digest_and_its_call_is_answered() {
    let Some(baresip) = baresip() else { return };
    let server = Server::start(&[
        "--mode",
        "registrar",
        "--shards",
        "2",
        "--auth-user",
        "alice:s3cret",
    ]);
    let target = server.sip;
    let dir = std::env::temp_dir().join(format!("sipshard-baresip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("silence.wav");
    silence(&wav);
    let port = free_ports();
    std::fs::write(
        dir.join("accounts"),
        format!("<sip:alice@{target}>;auth_pass=s3cret;regint=600;answermode=manual\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config"),
        format!(
            "sip_listen 127.0.0.1:{port}\n\
             net_interface 127.0.0.1\n\
             audio_player aufile,/dev/null\n\
             audio_source aufile,{}\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aufile.so\n\
             module_app account.so\n\
             module_app menu.so\n",
            wav.display()
        ),
    )
    .unwrap();
    // Register, dial, hold the call until baresip quits at 5 s (its BYE ends the call).
    let out = Command::new(baresip)
        .arg("-f")
        .arg(&dir)
        .args(["-t", "5", "-e", &format!("/dial sip:bob@{target}")])
        .stdin(Stdio::null())
        .output()
        .expect("baresip runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        text.contains("200 OK") && text.contains("[1 binding]"),
        "no registration:\n{text}"
    );
    assert!(text.contains("Call established"), "no call:\n{text}");
    assert!(text.contains("terminated"), "the call did not end:\n{text}");
    let m = server.metrics();
    assert!(common::peers::sum_metric(&m, "sipshard_dialogs_created_total", "") >= 1);
    assert_eq!(
        common::peers::sum_metric(&m, "sipshard_responses_sent_total", "class=\"4xx\""),
        2,
        "the two 401s of the REGISTER and its removal at exit, and nothing else:\n{text}"
    );
    // An honest client's exchanges are no failed authentication (no replay either: it
    // answers each fresh nonce with nc=1, and asks afresh for its removal).
    assert_eq!(
        common::peers::sum_metric(&m, "sipshard_guard_total", "event=\"auth_failures\""),
        0
    );
    assert_eq!(
        common::peers::wait_metric(&server, "sipshard_dialogs", "", 0, Duration::from_secs(10)),
        0
    );
}
