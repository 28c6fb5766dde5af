//! Helpers shared by the conformance tests: where the shared corpus lives, and reading it
//! byte-exact, and the simulated network.
#![allow(dead_code)]

pub mod calls;
pub mod pair;
pub mod peers;
pub mod redis;
pub mod sim;
pub mod sip;

use std::path::PathBuf;

use bytes::Bytes;

/// The corpus folder: `$SIPSHARD_CORPUS`, else `../shared/corpus` beside the repository.
/// A missing corpus fails the test loudly: CI has it, and a silent skip would hide that.
pub fn corpus_dir() -> PathBuf {
    let dir = std::env::var_os("SIPSHARD_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    assert!(
        dir.is_dir(),
        "SIP corpus not found at {} (set SIPSHARD_CORPUS)",
        dir.display()
    );
    dir
}

/// Reads a corpus file byte-exact.
pub fn read(rel: &str) -> Bytes {
    let path = corpus_dir().join(rel);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Reads a tab-separated manifest: rows after the header line, split on tabs.
pub fn manifest(rel: &str) -> Vec<Vec<String>> {
    let text = String::from_utf8(read(rel).to_vec()).expect("manifest is UTF-8");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}
