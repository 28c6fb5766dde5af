//! The error contract users port code against (the reference's names): what each error
//! carries, where it comes from, and `DialogError::is_recoverable` as the reference
//! defines it — not found → true, a transaction error → its own answer, an invalid state →
//! false, a failed coordination → true.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use sipshard::dialog::DialogId;
use sipshard::runtime::{DialogManager, RuntimeConfig};
use sipshard::shard::{DialogCommand, DialogError, Shard, ShardConfig};
use sipshard::transaction::TxnError;

fn local() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

#[test]
fn is_recoverable_follows_the_reference() {
    let id = DialogId::new(b"call", b"ours", b"theirs");
    assert!(DialogError::DialogNotFound(id).is_recoverable());
    assert!(
        !DialogError::InvalidDialogState {
            current: "established",
            expected: "incoming",
        }
        .is_recoverable()
    );
    assert!(DialogError::SessionCoordinationFailed("gone".to_owned()).is_recoverable());
    // A transaction error answers for itself.
    for (e, recoverable) in [
        (TxnError::UnknownTransaction, false),
        (TxnError::InvalidStatus, false),
        (
            TxnError::InvalidState {
                current: "completed",
            },
            false,
        ),
        (TxnError::DuplicateBranch, true),
    ] {
        assert_eq!(e.is_recoverable(), recoverable, "{e:?}");
        assert_eq!(
            DialogError::TransactionError(e).is_recoverable(),
            recoverable,
            "{e:?}"
        );
    }
    // sipshard's own kinds.
    assert!(DialogError::Overloaded.is_recoverable());
    assert!(DialogError::Transport("reset".to_owned()).is_recoverable());
    assert!(!DialogError::ShuttingDown.is_recoverable());
    assert!(!DialogError::NotRunning.is_recoverable());
    assert!(!DialogError::InvalidTarget("x".to_owned()).is_recoverable());
}

#[test]
fn the_shard_says_which_dialog_it_did_not_find_and_what_state_it_found() {
    let now = Instant::now();
    let mut s = Shard::new(now, ShardConfig::new(local()));
    let unknown = DialogId::new(b"nowhere", b"a", b"b");
    let e = s
        .handle_command(
            now,
            DialogCommand::Answer {
                dialog: unknown.clone(),
                sdp: Bytes::new(),
            },
        )
        .unwrap_err();
    assert_eq!(e, DialogError::DialogNotFound(unknown));
    assert!(e.to_string().contains("nowhere"), "{e}");
    assert!(e.is_recoverable());
    // Ending a call the shard never had.
    let e = s
        .handle_command(
            now,
            DialogCommand::Terminate {
                dialog: DialogId::new(b"gone", b"x", b""),
            },
        )
        .unwrap_err();
    assert!(matches!(e, DialogError::DialogNotFound(_)), "{e:?}");
}

#[tokio::test]
async fn the_manager_reports_coordination_failures_with_their_cause() {
    let manager = DialogManager::new(RuntimeConfig::new("127.0.0.1:0".parse().unwrap()));
    // Not started: not running, and not worth retrying as is.
    let e = manager
        .terminate_dialog(&DialogId::new(b"c", b"l", b"r"))
        .await
        .unwrap_err();
    assert_eq!(e, DialogError::NotRunning);
    assert!(!e.is_recoverable());
    manager.start().await.unwrap();
    // A command that names no dialog cannot be routed: the exchange failed, and says why.
    let e = manager
        .command(DialogCommand::SendStandalone(Box::new(
            sipshard::shard::StandaloneRequest {
                method: Bytes::from_static(b"OPTIONS"),
                request_uri: Bytes::from_static(b"sip:127.0.0.1:9"),
                from: Bytes::from_static(b"<sip:a@127.0.0.1>"),
                to: Bytes::from_static(b"<sip:b@127.0.0.1>"),
                call_id: None,
                cseq: 1,
                destination: "127.0.0.1:9".parse().unwrap(),
                headers: Vec::new(),
                body: Bytes::new(),
            },
        )))
        .await
        .unwrap_err();
    match &e {
        DialogError::SessionCoordinationFailed(why) => {
            assert!(why.contains("names no dialog"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_recoverable());
    manager
        .stop(
            sipshard::runtime::StopPolicy::Wait,
            std::time::Duration::from_secs(1),
        )
        .await
        .unwrap();
}
