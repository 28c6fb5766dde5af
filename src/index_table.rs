//! A hash index from keys to slab slots, built so that growing it never stalls a shard.
//!
//! A plain `HashTable<u32>` whose keys live in the slab must re-hash every key when it
//! grows or purges tombstones, chasing a pointer into the slab per entry: with 600,000
//! transactions alive (10,000 calls/s and RFC 6026's 32 s of Accepted state) that is a
//! stall of tens of milliseconds, seen as p99 latency. This table keeps 32 bits of each
//! entry's hash beside its slot number (8 bytes an entry; the rehash never touches the
//! slab) and is split into [`PARTS`] independent tables by hash bits, so one rehash moves
//! 1/64 of the entries.
//!
//! It owns no keys: callers pass the hash and an equality test on the slot.

use hashbrown::HashTable;

/// Independent parts; a power of two.
pub const PARTS: usize = 64;

/// Slot numbers by key hash.
pub struct IndexTable {
    /// (32 bits of the key's hash, slot).
    parts: Box<[HashTable<(u32, u32)>]>,
    len: usize,
}

impl Default for IndexTable {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexTable {
    /// An empty table.
    pub fn new() -> Self {
        IndexTable {
            parts: (0..PARTS).map(|_| HashTable::new()).collect(),
            len: 0,
        }
    }

    /// The kept 32 bits, the part, and the 64-bit hash hashbrown places by (spread again
    /// from the kept bits, so a rehash can recompute it from the entry alone).
    fn split(hash: u64) -> (u32, usize, u64) {
        let kept = hash as u32;
        let part = (hash >> 40) as usize & (PARTS - 1);
        (kept, part, Self::spread(kept))
    }

    fn spread(kept: u32) -> u64 {
        u64::from(kept).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot whose entry has `hash` and passes `eq`.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let (kept, part, placed) = Self::split(hash);
        self.parts[part]
            .find(placed, |&(h, slot)| h == kept && eq(slot))
            .map(|&(_, slot)| slot)
    }

    /// Adds `slot` under `hash` (the caller knows the key is not there yet).
    pub fn insert(&mut self, hash: u64, slot: u32) {
        let (kept, part, placed) = Self::split(hash);
        self.parts[part].insert_unique(placed, (kept, slot), |&(h, _)| Self::spread(h));
        self.len += 1;
    }

    /// Removes `slot` from under `hash`; false when it was not there.
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let (kept, part, placed) = Self::split(hash);
        match self.parts[part].find_entry(placed, |&(h, s)| h == kept && s == slot) {
            Ok(entry) => {
                entry.remove();
                self.len -= 1;
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_and_forgets_what_was_removed() {
        let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
        let mut t = IndexTable::new();
        for (i, k) in keys.iter().enumerate() {
            t.insert(hasher.hash_one(k), i as u32);
        }
        assert_eq!(t.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            let found = t.find(hasher.hash_one(k), |s| keys[s as usize] == *k);
            assert_eq!(found, Some(i as u32));
        }
        for (i, k) in keys.iter().enumerate().step_by(2) {
            assert!(t.remove(hasher.hash_one(k), i as u32));
            assert!(!t.remove(hasher.hash_one(k), i as u32));
        }
        assert_eq!(t.len(), keys.len() / 2);
        for (i, k) in keys.iter().enumerate() {
            let found = t.find(hasher.hash_one(k), |s| keys[s as usize] == *k);
            assert_eq!(found.is_some(), i % 2 == 1, "{k}");
        }
        // The same hash with another slot is a different entry (a collision).
        let h = hasher.hash_one("x");
        t.insert(h, 1);
        t.insert(h, 2);
        assert_eq!(t.find(h, |s| s == 2), Some(2));
        assert!(t.remove(h, 1));
        assert_eq!(t.find(h, |s| s == 1), None);
        assert_eq!(t.find(h, |s| s == 2), Some(2));
    }
}
