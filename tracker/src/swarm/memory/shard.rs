//! A shard: a lock over torrent entries sorted by info hash, and the interpolating search that
//! finds one, tuned for speed. A reader can take [`search`] as a binary search and skip the
//! rest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::entry::Entry;
use crate::types::InfoHash;

/// One shard: entries sorted by info hash, behind its lock, plus where they sat after their
/// last move or change of number, kept for [`super::MemoryStore::prefetch`] (a hint that may be
/// stale, read without the lock and never dereferenced). One cache line, so taking the lock and
/// reading the hint cost one miss, and no two shards share a line.
#[repr(align(64))]
pub(super) struct Shard {
    entries: RwLock<Vec<Entry>>,
    pub(super) hint_at: AtomicUsize,
    pub(super) hint_len: AtomicUsize,
}

impl Shard {
    pub(super) fn new() -> Self {
        Shard {
            entries: RwLock::new(Vec::new()),
            hint_at: AtomicUsize::new(0),
            hint_len: AtomicUsize::new(0),
        }
    }

    /// Records where `entries` (this shard's, still locked) are now.
    pub(super) fn publish(&self, entries: &[Entry]) {
        self.hint_at
            .store(entries.as_ptr() as usize, Ordering::Relaxed);
        self.hint_len.store(entries.len(), Ordering::Relaxed);
    }
}

pub(super) fn read(shard: &Shard) -> RwLockReadGuard<'_, Vec<Entry>> {
    shard.entries.read().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn write(shard: &Shard) -> RwLockWriteGuard<'_, Vec<Entry>> {
    shard.entries.write().unwrap_or_else(|e| e.into_inner())
}

/// Where a hash whose first 8 bytes are `head` would sit among `n` evenly spread ones.
pub(super) fn guess(head: u64, n: usize) -> usize {
    ((u128::from(head) * n as u128) >> 64) as usize
}

/// Finds an info hash in a shard. Info hashes are SHA-1 (SHA-256 for v2) output, so a shard's
/// first 8 bytes are spread evenly over the integers: the search starts where the hash would sit
/// if they were exactly even, usually a neighbour of the right entry (one or two cache lines,
/// where a binary search reads four or five), then gallops outwards, so hashes chosen to bunch
/// up cost at most a binary search's steps twice over. Compares the first 8 bytes as one
/// integer (the rest decide only on a tie): no `memcmp` call per step.
pub(super) fn search(entries: &[Entry], hash: &InfoHash) -> Result<usize, usize> {
    let head = hash_head(&hash.0);
    let cmp = |e: &Entry| {
        hash_head(&e.hash)
            .cmp(&head)
            .then_with(|| e.hash[8..].cmp(&hash.0[8..]))
    };
    let n = entries.len();
    if n == 0 {
        return Err(0);
    }
    let guess = guess(head, n);
    match cmp(&entries[guess]) {
        std::cmp::Ordering::Equal => Ok(guess),
        std::cmp::Ordering::Less => {
            // The hash is above `guess`: widen (guess, guess + step] until it ends above it.
            let (mut lo, mut step) = (guess + 1, 1);
            while lo + step <= n && cmp(&entries[lo + step - 1]).is_lt() {
                lo += step;
                step *= 2;
            }
            let hi = (lo + step).min(n);
            offset(entries[lo..hi].binary_search_by(cmp), lo)
        }
        std::cmp::Ordering::Greater => {
            // The hash is below `guess`: widen [guess - step, guess) until it starts below it.
            let (mut hi, mut step) = (guess, 1);
            while hi >= step && cmp(&entries[hi - step]).is_gt() {
                hi -= step;
                step *= 2;
            }
            let lo = hi.saturating_sub(step);
            offset(entries[lo..hi].binary_search_by(cmp), lo)
        }
    }
}

fn offset(found: Result<usize, usize>, by: usize) -> Result<usize, usize> {
    found.map(|i| i + by).map_err(|i| i + by)
}

/// The first 8 bytes of a hash, as an integer that sorts as the bytes do.
pub(super) fn hash_head(hash: &[u8; 20]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(head)
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn shard_search_agrees_with_binary_search_for_even_and_bunched_hashes() {
        let mut rng = SmallRng::seed_from_u64(3);
        for n in [0usize, 1, 2, 5, 16, 40, 300] {
            // Even spread (real info hashes), all bunched low, and all sharing their first 8
            // bytes.
            for shape in 0..3 {
                let hash = |rng: &mut SmallRng| {
                    let mut h: [u8; 20] = rng.random();
                    match shape {
                        1 => h[..7].fill(0),
                        2 => h[..8].fill(0xAB),
                        _ => {}
                    }
                    h
                };
                let mut hashes: Vec<[u8; 20]> = (0..n).map(|_| hash(&mut rng)).collect();
                hashes.sort_unstable();
                hashes.dedup();
                let entries: Vec<Entry> = hashes.iter().map(|&h| Entry::new(h, 0, 0)).collect();
                let mut probes: Vec<[u8; 20]> = (0..50).map(|_| hash(&mut rng)).collect();
                probes.extend_from_slice(&hashes);
                probes.push([0; 20]);
                probes.push([0xFF; 20]);
                for probe in probes {
                    let want = entries.binary_search_by(|e| e.hash.cmp(&probe));
                    assert_eq!(
                        search(&entries, &InfoHash(probe)),
                        want,
                        "n {n} shape {shape}"
                    );
                }
            }
        }
    }
}
