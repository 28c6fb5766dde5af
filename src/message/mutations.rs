//! Test inputs shared by the message layer's unit tests: seeds and their mutations.

/// Runs `check` over 20,000 [`mutated`] forms of `seeds`. `check` asserts that a one-pass
/// reader agrees with the general one where it answers, and says whether it answered;
/// at least 2,000 must have, or the mutations do not reach the one-pass reader.
pub(crate) fn assert_agreement(seeds: &[&[u8]], alphabet: &[u8], check: impl Fn(&[u8]) -> bool) {
    let answered = mutated(seeds, alphabet, 20_000)
        .filter(|v| check(v))
        .count();
    assert!(
        answered > 2_000,
        "the mutations hardly reach the fast path: {answered}"
    );
}

/// `rounds` byte strings, each one of `seeds` (in turn) with one to three random edits
/// (replace, insert or remove a byte of `alphabet`), from a fixed xorshift seed.
pub(crate) fn mutated(
    seeds: &[&[u8]],
    alphabet: &[u8],
    rounds: usize,
) -> impl Iterator<Item = Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    let alphabet = alphabet.to_vec();
    (0..rounds).map(move |round| {
        let mut v = seeds[round % seeds.len()].clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % v.len();
            let b = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 => v[at] = b,
                1 => v.insert(at, b),
                _ => {
                    v.remove(at);
                }
            }
            if v.is_empty() {
                v.push(b'a');
            }
        }
        v
    })
}
