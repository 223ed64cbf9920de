//! The address index of a hashed family: a hand-written hash table, tuned for speed. A reader
//! can take it as "a map from address to [`IndexLoc`]" and skip the rest.

use std::hash::{BuildHasher, Hash};
use std::sync::LazyLock;

/// Keyed once per process (so no client can aim addresses at one probe sequence), shared by
/// every swarm's address index.
static ADDR_HASHER: LazyLock<foldhash::quality::RandomState> = LazyLock::new(Default::default);

pub(super) fn addr_hash<A: Hash>(addr: &A) -> u64 {
    ADDR_HASHER.hash_one(addr)
}

/// Where a record of a hashed family is: the number of its bucket (its position in the
/// family's bucket list) and its index in that bucket.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct IndexLoc {
    pub(super) bucket: u16,
    pub(super) idx: u32,
}

impl IndexLoc {
    pub(super) fn new(bucket: usize, idx: usize) -> Self {
        IndexLoc {
            bucket: bucket as u16,
            idx: idx as u32,
        }
    }
}

/// The address index of a hashed family: open addressing with linear probing over 8-byte
/// slots, each a 16-bit tag of the address's hash and the record's [`IndexLoc`]. A probe
/// compares tags inside one or two cache lines and reads a record only when a tag matches, so
/// finding a peer costs the slot's line and the record's. (A general hash table keeps control
/// bytes and entries apart: one more miss.) At most 3/4 full, counting deleted slots.
///
/// The same allocation holds, after the slots, one 8-bit *source cell* per slot: how many
/// entries' sources (see `Record::Host`) hash to it, for `max_peers_per_source` (an eighth
/// more memory, no pointer more in the family). A cell may also count other sources that share
/// it, so a count runs high, never low; no client can aim for a cell (the hash is keyed per
/// process). A cell that reaches 255 stays there until the next rebuild, which is why the cap
/// is at most 250.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// `cap` slots, then `cap / 8` words of source cells.
    slots: Box<[u64]>,
    pub(super) len: u32,
    pub(super) deleted: u32,
}

/// A source cell that has reached this stays until the table is rebuilt.
const CELL_MAX: u64 = 0xFF;

const EMPTY: u64 = 0;
const DELETED: u64 = 1;
const TAG: u64 = 0xFFFF << 48;

impl Index {
    /// An empty index sized for `n` entries.
    pub(super) fn sized(n: usize) -> Self {
        let cap = (n + n / 3 + 1).next_power_of_two().max(8);
        Index {
            slots: vec![EMPTY; cap + cap / 8].into_boxed_slice(),
            len: 0,
            deleted: 0,
        }
    }

    /// Slots in the table: the power of two below the allocation's `cap + cap / 8` words (a
    /// shift, not a division, on the probe path).
    pub(super) fn cap(&self) -> usize {
        match self.slots.len() {
            0 => 0,
            n => 1 << (usize::BITS - 1 - n.leading_zeros()),
        }
    }

    /// The slots (without the source cells).
    pub(super) fn table(&self) -> &[u64] {
        &self.slots[..self.cap()]
    }

    /// (word, bit shift) of the source cell of `host_hash`.
    fn cell_at(&self, host_hash: u64) -> (usize, u32) {
        let cell = host_hash as usize & self.mask();
        (self.cap() + cell / 8, (cell % 8) as u32 * 8)
    }

    /// Entries whose source hashes like `host_hash` (see the type's docs).
    pub(super) fn host_count(&self, host_hash: u64) -> u32 {
        if self.slots.is_empty() {
            return 0;
        }
        let (word, shift) = self.cell_at(host_hash);
        ((self.slots[word] >> shift) & CELL_MAX) as u32
    }

    /// Counts one more entry of the source of `host_hash`.
    pub(super) fn add_host(&mut self, host_hash: u64) {
        let (word, shift) = self.cell_at(host_hash);
        if (self.slots[word] >> shift) & CELL_MAX != CELL_MAX {
            self.slots[word] += 1 << shift;
        }
    }

    /// Counts one entry less of the source of `host_hash` (a saturated cell stays).
    pub(super) fn sub_host(&mut self, host_hash: u64) {
        let (word, shift) = self.cell_at(host_hash);
        let cell = (self.slots[word] >> shift) & CELL_MAX;
        if cell != CELL_MAX && cell > 0 {
            self.slots[word] -= 1 << shift;
        }
    }

    /// A tag never equal to [`EMPTY`] or [`DELETED`].
    fn tag(hash: u64) -> u64 {
        (hash >> 48).max(2)
    }

    fn pack(hash: u64, loc: IndexLoc) -> u64 {
        Self::with_loc(Self::tag(hash) << 48, loc)
    }

    /// `slot`'s tag with `loc`.
    fn with_loc(slot: u64, loc: IndexLoc) -> u64 {
        (slot & TAG) | (u64::from(loc.bucket) << 32) | u64::from(loc.idx)
    }

    fn loc(slot: u64) -> IndexLoc {
        IndexLoc {
            bucket: (slot >> 32) as u16,
            idx: slot as u32,
        }
    }

    fn mask(&self) -> usize {
        self.cap() - 1
    }

    /// The slot a probe for `hash` starts at (for prefetching).
    pub(super) fn slot_of(&self, hash: u64) -> Option<&u64> {
        self.slots.get(hash as usize & self.mask())
    }

    /// Where the first entry whose tag matches `hash` points: most likely the one a
    /// [`Index::find`] would return (for prefetching; compares no record).
    pub(super) fn first_match(&self, hash: u64) -> Option<IndexLoc> {
        self.find(hash, |_| true).map(|i| self.get(i))
    }

    /// The slot of the entry with `hash` for which `eq` holds.
    pub(super) fn find(&self, hash: u64, mut eq: impl FnMut(IndexLoc) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = Self::tag(hash);
        let mut i = hash as usize & self.mask();
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            if slot >> 48 == tag && eq(Self::loc(slot)) {
                return Some(i);
            }
            i = (i + 1) & self.mask();
        }
    }

    pub(super) fn get(&self, i: usize) -> IndexLoc {
        Self::loc(self.slots[i])
    }

    /// Where the entry in slot `i` points, `None` for a free slot. Every entry has one slot, so
    /// a slot drawn at random until one is taken draws an entry uniformly.
    pub(super) fn entry(&self, i: usize) -> Option<IndexLoc> {
        match self.slots[i] {
            EMPTY | DELETED => None,
            slot => Some(Self::loc(slot)),
        }
    }

    /// Points the entry in slot `i` at `loc` (same address, so same tag).
    pub(super) fn set(&mut self, i: usize, loc: IndexLoc) {
        self.slots[i] = Self::with_loc(self.slots[i], loc);
    }

    /// Adds an entry and counts its source; `hash_of` gives the address and source hashes of
    /// an entry already in (to rebuild on growth).
    pub(super) fn insert(
        &mut self,
        (hash, host): (u64, u64),
        loc: IndexLoc,
        hash_of: impl Fn(IndexLoc) -> (u64, u64),
    ) {
        let used = (self.len + self.deleted) as usize + 1;
        if used * 4 > self.cap() * 3 {
            // At most half full afterwards, so the next rebuild is a quarter of the table's
            // inserts away: sized for exactly `len + 1`, a table just under 3/4 full with a
            // few deleted slots would rebuild on nearly every insert (a client stopping and
            // starting its own peers could force that).
            let n = self.len as usize + 1;
            self.rebuild(n + n / 2, &hash_of);
        }
        self.put(hash, loc);
        self.add_host(host);
    }

    /// Adds an entry to a table with room for it (its source is counted by the caller).
    pub(super) fn put(&mut self, hash: u64, loc: IndexLoc) {
        let mut i = hash as usize & self.mask();
        while self.slots[i] > DELETED {
            i = (i + 1) & self.mask();
        }
        if self.slots[i] == DELETED {
            self.deleted -= 1;
        }
        self.slots[i] = Self::pack(hash, loc);
        self.len += 1;
    }

    /// Removes the entry in slot `i`. A run of deleted slots that ends at an empty one becomes
    /// empty again.
    pub(super) fn remove(&mut self, i: usize) {
        self.len -= 1;
        if self.slots[(i + 1) & self.mask()] != EMPTY {
            self.slots[i] = DELETED;
            self.deleted += 1;
            return;
        }
        self.slots[i] = EMPTY;
        let mut j = i.wrapping_sub(1) & self.mask();
        while self.slots[j] == DELETED {
            self.slots[j] = EMPTY;
            self.deleted -= 1;
            j = j.wrapping_sub(1) & self.mask();
        }
    }

    /// Re-inserts every entry into a table sized for `n`, dropping deleted slots and
    /// recounting sources.
    fn rebuild(&mut self, n: usize, hash_of: &impl Fn(IndexLoc) -> (u64, u64)) {
        let old = std::mem::replace(self, Index::sized(n));
        for &slot in old.table().iter().filter(|&&s| s > DELETED) {
            let loc = Self::loc(slot);
            let (hash, host) = hash_of(loc);
            self.put(hash, loc);
            self.add_host(host);
        }
    }

    /// Every entry's location, to renumber buckets.
    pub(super) fn locs_mut(&mut self, mut f: impl FnMut(&mut IndexLoc)) {
        let cap = self.cap();
        for slot in self.slots[..cap].iter_mut().filter(|s| **s > DELETED) {
            let mut loc = Self::loc(*slot);
            f(&mut loc);
            *slot = Self::with_loc(*slot, loc);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn the_address_index_finds_what_it_holds_through_deletes_and_growth() {
        // Keys are the locations themselves, hashed so that many share a home slot and tag.
        let hash =
            |l: IndexLoc| u64::from(l.idx % 37).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (7 << 48);
        let hashes = |l: IndexLoc| (hash(l), u64::from(l.idx % 5));
        let mut rng = SmallRng::seed_from_u64(11);
        let mut index = Index::default();
        let mut model: HashSet<u32> = HashSet::new();
        for step in 0..20_000 {
            let idx = rng.random_range(0..400u32);
            let loc = IndexLoc { bucket: 3, idx };
            let found = index.find(hash(loc), |l| l == loc);
            assert_eq!(found.is_some(), model.contains(&idx), "step {step}");
            match found {
                Some(i) => {
                    assert_eq!(index.get(i), loc);
                    index.remove(i);
                    index.sub_host(u64::from(idx % 5));
                    model.remove(&idx);
                }
                None => {
                    index.insert(hashes(loc), loc, hashes);
                    model.insert(idx);
                }
            }
            assert_eq!(index.len as usize, model.len());
            let live = index.table().iter().filter(|&&s| s > DELETED).count();
            let deleted = index.table().iter().filter(|&&s| s == DELETED).count();
            assert_eq!(
                (live, deleted),
                (index.len as usize, index.deleted as usize)
            );
            assert!((live + deleted) * 4 <= index.cap() * 3, "at most 3/4 full");
            // Five sources, each in its own cell: the counts are exact.
            for host in 0..5u32 {
                let n = model.iter().filter(|&&i| i % 5 == host).count();
                assert_eq!(index.host_count(u64::from(host)), n as u32, "step {step}");
            }
        }
        // Renumbering and repointing keep every entry findable under its new location.
        index.locs_mut(|l| l.bucket = 4);
        for &idx in &model {
            let (old, new) = (IndexLoc { bucket: 3, idx }, IndexLoc { bucket: 4, idx });
            assert_eq!(index.find(hash(old), |l| l == old), None);
            let i = index
                .find(hash(old), |l| l == new)
                .expect("renumbered entry");
            index.set(i, IndexLoc { bucket: 5, idx });
            assert_eq!(index.get(i), IndexLoc { bucket: 5, idx });
        }
    }

    #[test]
    fn an_index_just_under_its_limit_does_not_rebuild_on_every_insert() {
        let hash = |l: IndexLoc| (u64::from(l.idx).wrapping_mul(0x9E37_79B9_7F4A_7C15), 0);
        let mut index = Index::default();
        // Fill a 4096-slot table to one entry below 3/4, then stop and start peers: each stop
        // leaves a deleted slot that the next start pushes over the limit.
        for idx in 0..3071 {
            let loc = IndexLoc { bucket: 0, idx };
            index.insert(hash(loc), loc, hash);
        }
        assert_eq!(index.cap(), 4096);
        let mut rebuilds = 0;
        for cycle in 0..1000u32 {
            let (gone, new) = (
                IndexLoc {
                    bucket: 0,
                    idx: cycle,
                },
                IndexLoc {
                    bucket: 0,
                    idx: 10_000 + cycle,
                },
            );
            let i = index.find(hash(gone).0, |l| l == gone).expect("present");
            index.remove(i);
            let before = index.slots.as_ptr();
            index.insert(hash(new), new, hash);
            rebuilds += usize::from(index.slots.as_ptr() != before);
        }
        assert!(
            rebuilds <= 2,
            "{rebuilds} rebuilds in 1000 stop/start cycles"
        );
    }
}
