//! The dedup keys of a data directory: a 64-bit hash of (auditID, stage) for every stored or
//! pending event, so that webhook retries and re-imports store each event once.
//!
//! The set grows by one key per event for as long as the writer runs, so its footprint is the
//! server's largest long-term memory. A hash set of all keys spends about 18 bytes per key
//! (load factor and control bytes) and half as much again while it grows, which was a few
//! hundred MiB after ten million events. Here the bulk is a sorted vector, 8 bytes per key
//! and grown in place, and only the newest keys sit in a small hash set that is merged into
//! the vector whenever it fills.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Keys added since the last merge; a merge moves every key once, so this bounds how often.
const RECENT_CAPACITY: usize = 1 << 20;

/// The set of dedup keys; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    sorted: Vec<u64>,
    recent: HashSet<u64, BuildHasherDefault<KeyHasher>>,
}

/// Keys are already uniform 64-bit hashes: the hash set uses them as they are instead of
/// hashing them again (SipHash, about as costly as the set's own work).
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

impl KeySet {
    /// Adds `key`; false when it was already there.
    pub(crate) fn insert(&mut self, key: u64) -> bool {
        if sorted_contains(&self.sorted, key) || !self.recent.insert(key) {
            return false;
        }
        if self.recent.len() >= RECENT_CAPACITY {
            self.merge_recent();
        }
        true
    }

    /// Keys held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Moves the recent keys into the sorted vector, merging from the back so the vector only
    /// grows by what it takes in (no second copy of it exists at any time).
    fn merge_recent(&mut self) {
        let mut recent: Vec<u64> = self.recent.drain().collect();
        recent.sort_unstable();
        let old_len = self.sorted.len();
        self.sorted.reserve_exact(recent.len());
        self.sorted.resize(old_len + recent.len(), 0);
        let (mut old, mut new) = (old_len, recent.len());
        for slot in (0..self.sorted.len()).rev() {
            if new == 0 {
                break;
            }
            if old > 0 && self.sorted[old - 1] > recent[new - 1] {
                self.sorted[slot] = self.sorted[old - 1];
                old -= 1;
            } else {
                self.sorted[slot] = recent[new - 1];
                new -= 1;
            }
        }
    }
}

/// Whether `sorted` holds `key`. Keys are hashes, spread evenly over `u64`, so a key's place
/// is close to `key / 2^64` of the way through the vector: the search starts there and widens
/// until the key is bracketed, touching two or three cache lines where a binary search over
/// millions of keys takes twenty misses.
fn sorted_contains(sorted: &[u64], key: u64) -> bool {
    let n = sorted.len();
    if n == 0 {
        return false;
    }
    let guess = ((u128::from(key) * n as u128) >> 64) as usize;
    let (mut low, mut high) = (guess, guess + 1);
    let mut step = 64;
    while low > 0 && sorted[low] > key {
        low = low.saturating_sub(step);
        step *= 2;
    }
    step = 64;
    while high < n && sorted[high - 1] < key {
        high = (high + step).min(n);
        step *= 2;
    }
    sorted[low..high].binary_search(&key).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_before_and_after_merges() {
        let mut keys = KeySet::default();
        // Pseudo-random keys in an order unrelated to their value, enough for several merges.
        let key = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i >> 7);
        let n = 3 * RECENT_CAPACITY as u64 + 12_345;
        for i in 0..n {
            assert!(keys.insert(key(i)), "{i} is new");
        }
        assert_eq!(keys.len() as u64, n);
        assert!(keys.sorted.windows(2).all(|w| w[0] < w[1]));
        for i in (0..n).step_by(997) {
            assert!(!keys.insert(key(i)), "{i} is a duplicate");
        }
        assert!(keys.insert(key(n)));
        assert_eq!(keys.len() as u64, n + 1);
    }

    #[test]
    fn the_interpolated_search_finds_exactly_the_keys_held() {
        let sorted: Vec<u64> = (0..10_000u64).map(|i| i * 1_000_003 + (i % 7)).collect();
        for (i, &key) in sorted.iter().enumerate() {
            assert!(sorted_contains(&sorted, key), "{i}");
            assert!(!sorted_contains(&sorted, key + 1), "{i} + 1");
        }
        assert!(!sorted_contains(&sorted, u64::MAX));
        assert!(!sorted_contains(&[], 5));
        assert!(sorted_contains(&[0, u64::MAX], u64::MAX));
    }
}
