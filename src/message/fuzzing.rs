//! For the fuzz targets: the one-pass readers checked against the general ones.

/// Panics when a one-pass reader (name-addr, Via, CSeq, URI) answers for `value` and
/// the general reader it stands in for answers differently.
pub fn assert_fast_paths_agree(value: &[u8]) {
    super::name_addr::assert_plain_agrees(value);
    super::via::assert_plain_agrees(value);
    super::values::assert_plain_cseq_agrees(value);
    super::uri::assert_plain_agrees(value);
}

/// Asserts that `general` reads `value` as `fast` did, when `fast` answered; true then.
pub(super) fn agrees<T: PartialEq + std::fmt::Debug, E: PartialEq + std::fmt::Debug>(
    what: &str,
    value: &[u8],
    fast: Option<T>,
    general: impl FnOnce() -> Result<T, E>,
) -> bool {
    let Some(fast) = fast else { return false };
    assert_eq!(Ok(fast), general(), "{what} {value:?}");
    true
}

/// Panics when the parser's kept scan of the top Via disagrees with a fresh scan, or
/// calls the first value valid where [`super::Via::parse`] refuses it.
pub fn assert_kept_top_via_agrees(m: &super::Message) {
    let Some(line) = m.header(super::HeaderName::Via) else {
        return;
    };
    let fresh = super::via::scan_plain(line);
    assert_eq!(
        m.top_via_scanned(),
        fresh.map(|p| p.top),
        "kept top-Via scan {line:?}"
    );
    if m.top_via_is_valid() {
        let end = fresh.map_or(line.len(), |p| p.top.end);
        assert!(
            super::Via::parse(&line[..end]).is_ok(),
            "valid top Via {line:?}"
        );
    }
}
