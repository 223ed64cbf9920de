//! One address family of a large swarm: a sorted vector while short, hashed past the store's
//! `sorted_max` (see [`super::MemoryStore`]). Both keep each bucket one contiguous run.

use std::ops::Range;

use p4p_itracker::{PidId, Snapshot};
use rand::{Rng, RngCore};

use super::index::{addr_hash, Index, IndexLoc};
use super::record::{expired, rekey_in, reserve_one, resolve, shrink, BucketKey, Record};
use super::view::Run;

/// One bucket of a hashed family: its records, in no particular order.
#[derive(Debug)]
pub(super) struct Bucket<P> {
    pub(super) key: BucketKey,
    pub(super) recs: Vec<P>,
}

/// A family past `sorted_max` records: a vector per bucket (sorted by bucket key, records
/// unordered inside) and an [`Index`] from address to where the record is. Finding, adding,
/// removing or moving a peer costs a probe of the index and a push or `swap_remove`, never a
/// search or a shift; a bucket stays one contiguous run for selection. Buckets left empty stay
/// until the sweep, so bucket numbers change only when a bucket is added (rare: a new PID or
/// role in the swarm) or during the sweep.
#[derive(Debug)]
pub(super) struct Hashed<P> {
    pub(super) buckets: Vec<Bucket<P>>,
    pub(super) index: Index,
    /// The number of each PID code's first bucket (`u16::MAX`: none), kept from
    /// [`DIRECTORY_MIN`] buckets on, so that selection finds a PID's buckets in one load
    /// ([`Family::pid_runs`]); none below, where a binary search is as quick. Boxed: one
    /// pointer in every large swarm.
    dir: Option<Box<Directory>>,
}

/// See [`Hashed::dir`]: bucket numbers by PID code.
#[derive(Debug, Default)]
struct Directory(Vec<u16>);

/// Buckets from which a hashed family keeps its directory: one `u16` per PID code up to the
/// largest in the swarm (4 KB with a 2,000-PID map), beside at least as many peers.
const DIRECTORY_MIN: usize = 64;

/// The keyed hashes of `addr` and of its source (see [`Index`]).
fn hashes<P: Record>(addr: P::Addr) -> (u64, u64) {
    (addr_hash(&addr), addr_hash(&P::host(addr)))
}

impl<P: Record> Hashed<P> {
    /// Takes records sorted by bucket.
    fn build(recs: &[P]) -> Self {
        let mut buckets: Vec<Bucket<P>> = Vec::new();
        for run in recs.chunk_by(|a, b| a.bucket() == b.bucket()) {
            buckets.push(Bucket {
                key: run[0].bucket(),
                recs: run.to_vec(),
            });
        }
        let mut hashed = Hashed {
            buckets,
            index: Index::default(),
            dir: None,
        };
        hashed.reindex();
        hashed.redirect();
        hashed
    }

    /// The address and source hashes of the record at `loc` (see [`Index::insert`]).
    fn hashes_at(buckets: &[Bucket<P>], loc: IndexLoc) -> (u64, u64) {
        hashes::<P>(buckets[loc.bucket as usize].recs[loc.idx as usize].addr())
    }

    /// Rebuilds the index (and its source counts) from the buckets.
    fn reindex(&mut self) {
        let len = self.buckets.iter().map(|b| b.recs.len()).sum();
        self.index = Index::sized(len);
        for (b, bucket) in self.buckets.iter().enumerate() {
            for (i, p) in bucket.recs.iter().enumerate() {
                let (hash, host) = hashes::<P>(p.addr());
                self.index.put(hash, IndexLoc::new(b, i));
                self.index.add_host(host);
            }
        }
    }

    /// Rebuilds the directory ([`Hashed::dir`]) after buckets were added or dropped.
    fn redirect(&mut self) {
        if self.buckets.len() < DIRECTORY_MIN {
            self.dir = None;
            return;
        }
        let dir = &mut self.dir.get_or_insert_with(Default::default).0;
        dir.clear();
        let pid_codes = p4p_itracker::pid::PID_CODES as u16;
        for (b, bucket) in self.buckets.iter().enumerate().rev() {
            let code = usize::from(bucket.key.code());
            if code >= usize::from(pid_codes) {
                continue;
            }
            if dir.len() <= code {
                dir.resize(code + 1, u16::MAX);
            }
            dir[code] = b as u16;
        }
    }

    /// The numbers of the buckets whose key has `key`'s code (at most two: leechers, seeders).
    fn pid_buckets(&self, key: BucketKey) -> Range<usize> {
        let code = key.code();
        let start = match &self.dir {
            // The directory covers every PID code up to the largest present.
            Some(dir) if u32::from(code) < p4p_itracker::pid::PID_CODES => {
                match dir.0.get(usize::from(code)) {
                    Some(&b) if b != u16::MAX => usize::from(b),
                    _ => return 0..0,
                }
            }
            _ => self.buckets.partition_point(|b| b.key.code() < code),
        };
        let len = self.buckets[start..]
            .iter()
            .take(2)
            .take_while(|b| b.key.code() == code)
            .count();
        start..start + len
    }

    /// Peers of `addr`'s source in the family (may run high, see [`Index`]).
    fn host_peers(&self, addr: P::Addr) -> u32 {
        self.index.host_count(addr_hash(&P::host(addr)))
    }

    fn len(&self) -> usize {
        self.index.len as usize
    }

    /// (bucket number, index in bucket) of the record of `addr`.
    pub(super) fn find(&self, addr: P::Addr) -> Option<(usize, usize)> {
        let buckets = &self.buckets;
        let i = self.index.find(addr_hash(&addr), |l| {
            buckets[l.bucket as usize].recs[l.idx as usize].addr() == addr
        })?;
        let loc = self.index.get(i);
        Some((loc.bucket as usize, loc.idx as usize))
    }

    /// The number of `key`'s bucket, added (and later buckets renumbered) when missing.
    fn bucket_number(&mut self, key: BucketKey) -> usize {
        match self.buckets.binary_search_by_key(&key, |b| b.key) {
            Ok(b) => b,
            Err(b) => {
                self.buckets.insert(
                    b,
                    Bucket {
                        key,
                        recs: Vec::new(),
                    },
                );
                self.index.locs_mut(|l| {
                    if usize::from(l.bucket) >= b {
                        l.bucket += 1;
                    }
                });
                self.redirect();
                b
            }
        }
    }

    /// Appends `rec` to its bucket (not to the index); returns where it is.
    fn push(&mut self, rec: P) -> IndexLoc {
        let b = self.bucket_number(rec.bucket());
        let recs = &mut self.buckets[b].recs;
        reserve_one(recs, 1);
        recs.push(rec);
        IndexLoc::new(b, recs.len() - 1)
    }

    fn insert(&mut self, rec: P) -> (usize, usize) {
        let loc = self.push(rec);
        let buckets = &self.buckets;
        let hashes = hashes::<P>(rec.addr());
        self.index
            .insert(hashes, loc, |l| Self::hashes_at(buckets, l));
        (loc.bucket as usize, loc.idx as usize)
    }

    /// Takes the record at `at` out of its bucket (`swap_remove`) and points the index entry of
    /// the record that took its place there; returns the record and its index slot.
    fn take(&mut self, at: IndexLoc) -> (P, usize) {
        let recs = &mut self.buckets[at.bucket as usize].recs;
        let rec = recs.swap_remove(at.idx as usize);
        // Found before the moved record's entry also points at `at`.
        let slot = self.index.find(addr_hash(&rec.addr()), |l| l == at);
        if let Some(moved) = recs.get(at.idx as usize) {
            let from = IndexLoc::new(at.bucket as usize, recs.len());
            if let Some(i) = self.index.find(addr_hash(&moved.addr()), |l| l == from) {
                self.index.set(i, at);
            }
        }
        (rec, slot.expect("every record is indexed"))
    }

    fn remove(&mut self, b: usize, i: usize) -> P {
        let (rec, slot) = self.take(IndexLoc::new(b, i));
        self.index.remove(slot);
        self.index.sub_host(hashes::<P>(rec.addr()).1);
        rec
    }

    /// Moves the record at (b, i) to `rec`'s bucket, as `rec`; the index entry stays and is
    /// pointed at the new place.
    fn rekey(&mut self, b: usize, i: usize, rec: P) -> (usize, usize) {
        let (_, slot) = self.take(IndexLoc::new(b, i));
        // Adding a bucket renumbers entries but moves none, so `slot` stays valid.
        let loc = self.push(rec);
        self.index.set(slot, loc);
        (loc.bucket as usize, loc.idx as usize)
    }

    /// Removes expired peers; returns how many (seeders, leechers).
    fn expire(&mut self, now: u16) -> (u32, u32) {
        let mut removed = (0, 0);
        for bucket in &mut self.buckets {
            let before = bucket.recs.len();
            bucket.recs.retain(|p| !expired(p.expires(), now));
            let gone = (before - bucket.recs.len()) as u32;
            if bucket.key.seeders() {
                removed.0 += gone;
            } else {
                removed.1 += gone;
            }
        }
        self.tidy(removed != (0, 0));
        removed
    }

    /// Drops empty buckets, returns spare capacity and rebuilds the index when records moved
    /// (`moved`, or a bucket dropped), it holds deleted slots or it is oversized: one rebuild
    /// at most.
    fn tidy(&mut self, moved: bool) {
        let before = self.buckets.len();
        self.buckets.retain(|b| !b.recs.is_empty());
        for bucket in &mut self.buckets {
            shrink(&mut bucket.recs);
        }
        let len = self.buckets.iter().map(|b| b.recs.len()).sum::<usize>();
        let (dropped, slots) = (self.buckets.len() != before, self.index.cap());
        if dropped {
            self.redirect();
        }
        if moved || dropped || self.index.deleted > 0 || slots > 4 * len + 8 {
            self.reindex();
        }
    }
}

/// One address family of a large swarm. Up to `sorted_max` records it is one vector sorted by
/// (bucket, ip, port), so a bucket is a contiguous run and a scan finds a peer; past it, a
/// [`Hashed`] family. `sorted_max` is the store's (see [`super::MemoryStore`]), passed to the
/// methods that may change the family's form.
#[derive(Debug)]
pub(super) enum Family<P> {
    Sorted(Vec<P>),
    Hashed(Hashed<P>),
}

impl<P> Default for Family<P> {
    fn default() -> Self {
        Family::Sorted(Vec::new())
    }
}

impl<P: Record> Family<P> {
    /// A family of `recs`, sorted here.
    pub(super) fn build(mut recs: Vec<P>, sorted_max: usize) -> Self {
        recs.sort_unstable_by_key(P::order);
        if recs.len() <= sorted_max {
            Family::Sorted(recs)
        } else {
            Family::Hashed(Hashed::build(&recs))
        }
    }

    /// Every record, bucket by bucket.
    pub(super) fn all(&self) -> Vec<P> {
        match self {
            Family::Sorted(recs) => recs.clone(),
            Family::Hashed(h) => h
                .buckets
                .iter()
                .flat_map(|b| b.recs.iter().copied())
                .collect(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Family::Sorted(recs) => recs.len(),
            Family::Hashed(h) => h.len(),
        }
    }

    /// The records of segment `seg`: the sorted vector (`seg` 0) or a bucket.
    pub(super) fn seg(&self, seg: usize) -> &[P] {
        match self {
            Family::Sorted(recs) => recs,
            Family::Hashed(h) => &h.buckets[seg].recs,
        }
    }

    pub(super) fn seg_mut(&mut self, seg: usize) -> &mut [P] {
        match self {
            Family::Sorted(recs) => recs,
            Family::Hashed(h) => &mut h.buckets[seg].recs,
        }
    }

    pub(super) fn rec(&self, seg: usize, idx: usize) -> P {
        self.seg(seg)[idx]
    }

    /// Where the peer is (segment, index), whatever bucket it is in.
    pub(super) fn find(&self, addr: P::Addr) -> Option<(usize, usize)> {
        match self {
            Family::Sorted(recs) => recs.iter().position(|p| p.addr() == addr).map(|i| (0, i)),
            Family::Hashed(h) => h.find(addr),
        }
    }

    /// How many peers of `addr`'s source (its IPv4 address or IPv6 /64) the family holds: exact
    /// while sorted, possibly high once hashed (see [`Index`]).
    pub(super) fn host_peers(&self, addr: P::Addr) -> u32 {
        match self {
            Family::Sorted(recs) => {
                let host = P::host(addr);
                recs.iter().filter(|p| P::host(p.addr()) == host).count() as u32
            }
            Family::Hashed(h) => h.host_peers(addr),
        }
    }

    /// Adds a new peer; returns where it is (segment, index).
    pub(super) fn insert(&mut self, rec: P, sorted_max: usize) -> (usize, usize) {
        match self {
            Family::Sorted(recs) if recs.len() < sorted_max => {
                let i = recs.partition_point(|p| p.order() < rec.order());
                reserve_one(recs, 1);
                recs.insert(i, rec);
                (0, i)
            }
            Family::Sorted(recs) => {
                let mut all = std::mem::take(recs);
                all.push(rec);
                *self = Family::build(all, sorted_max);
                self.find(rec.addr()).expect("the record was just added")
            }
            Family::Hashed(h) => h.insert(rec),
        }
    }

    pub(super) fn remove(&mut self, seg: usize, idx: usize) -> P {
        match self {
            Family::Sorted(recs) => recs.remove(idx),
            Family::Hashed(h) => h.remove(seg, idx),
        }
    }

    /// Replaces the record at (seg, idx) with `rec` (same address, new bucket); returns where
    /// it now is.
    pub(super) fn rekey(&mut self, seg: usize, idx: usize, rec: P) -> (usize, usize) {
        match self {
            Family::Sorted(recs) => (0, rekey_in(recs, idx, rec)),
            Family::Hashed(h) => h.rekey(seg, idx, rec),
        }
    }

    /// Removes expired peers; returns how many (seeders, leechers).
    pub(super) fn expire(&mut self, now: u16, sorted_max: usize) -> (u32, u32) {
        let removed = match self {
            Family::Sorted(recs) => {
                let mut removed = (0, 0);
                recs.retain(|p| {
                    let gone = expired(p.expires(), now);
                    if gone && p.bucket().seeders() {
                        removed.0 += 1;
                    } else if gone {
                        removed.1 += 1;
                    }
                    !gone
                });
                removed
            }
            Family::Hashed(h) => h.expire(now),
        };
        self.tidy(sorted_max);
        removed
    }

    /// Returns spare capacity; a hashed family that shrank to half of `sorted_max` becomes a
    /// sorted one again.
    pub(super) fn tidy(&mut self, sorted_max: usize) {
        match self {
            Family::Sorted(recs) => shrink(recs),
            Family::Hashed(h) if h.len() <= sorted_max / 2 => {
                *self = Family::build(self.all(), sorted_max)
            }
            Family::Hashed(h) => h.tidy(false),
        }
    }

    /// Re-resolves every record's PID under `snap`; returns how many changed bucket.
    pub(super) fn rebucket(&mut self, snap: &Snapshot, sorted_max: usize) -> usize {
        let mut all = self.all();
        let mut moved = 0;
        for p in &mut all {
            let to = BucketKey::new(resolve(snap, p.socket().ip()), p.bucket().seeders());
            if to != p.bucket() {
                p.set_bucket(to);
                moved += 1;
            }
        }
        if moved > 0 {
            *self = Family::build(all, sorted_max);
        }
        moved
    }

    /// Appends the runs of `pid`'s non-empty buckets (leechers, then seeders) to `out`; none
    /// for an id past the codes (its bucket is shared, not `pid`'s alone).
    pub(super) fn pid_runs(&self, pid: PidId, v6: bool, out: &mut Vec<Run>) {
        let key = BucketKey::new(pid, false);
        if !key.holds_only(pid) {
            return;
        }
        match self {
            Family::Sorted(recs) => {
                let mut start = recs.partition_point(|p| p.bucket() < key);
                for run in recs[start..]
                    .chunk_by(|a, b| a.bucket() == b.bucket())
                    .take(2)
                {
                    if run[0].bucket().code() != key.code() {
                        break;
                    }
                    out.push(Run::new(run[0].bucket(), v6, 0, start, start + run.len()));
                    start += run.len();
                }
            }
            Family::Hashed(h) => {
                for b in h.pid_buckets(key) {
                    let bucket = &h.buckets[b];
                    if !bucket.recs.is_empty() {
                        out.push(Run::new(bucket.key, v6, b, 0, bucket.recs.len()));
                    }
                }
            }
        }
    }

    /// Appends the runs of the non-empty buckets whose code is no PID's (AS locations, the
    /// overflow code) to `out`: the family's last buckets, by code.
    pub(super) fn unlisted_runs(&self, v6: bool, out: &mut Vec<Run>) {
        let unlisted = |key: BucketKey| u32::from(key.code()) >= p4p_itracker::pid::PID_CODES;
        match self {
            Family::Sorted(recs) => {
                let mut start = recs.partition_point(|p| !unlisted(p.bucket()));
                for run in recs[start..].chunk_by(|a, b| a.bucket() == b.bucket()) {
                    out.push(Run::new(run[0].bucket(), v6, 0, start, start + run.len()));
                    start += run.len();
                }
            }
            // Buckets come sorted by code: none is unlisted unless the last one is.
            Family::Hashed(h) if !h.buckets.last().is_some_and(|b| unlisted(b.key)) => {}
            Family::Hashed(h) => {
                let first = h.buckets.partition_point(|b| !unlisted(b.key));
                for (b, bucket) in h.buckets.iter().enumerate().skip(first) {
                    if !bucket.recs.is_empty() {
                        out.push(Run::new(bucket.key, v6, b, 0, bucket.recs.len()));
                    }
                }
            }
        }
    }

    /// Where a record drawn uniformly from the family is: (bucket key, segment, position), as
    /// [`Family::seg`] and the family's runs give them (a sorted family's records are segment
    /// 0); the record itself is not read. `None` when the family is empty or (hashed) 16
    /// random index slots in a row were free (at most 3/4 of them are).
    pub(super) fn any_record(&self, rng: &mut dyn RngCore) -> Option<(BucketKey, usize, usize)> {
        match self {
            Family::Sorted(recs) if recs.is_empty() => None,
            Family::Sorted(recs) => {
                let i = rng.random_range(0..recs.len());
                Some((recs[i].bucket(), 0, i))
            }
            Family::Hashed(h) => {
                let slots = h.index.table().len();
                if slots == 0 || h.len() == 0 {
                    return None;
                }
                (0..16).find_map(|_| {
                    let loc = h.index.entry(rng.random_range(0..slots))?;
                    let b = usize::from(loc.bucket);
                    Some((h.buckets[b].key, b, loc.idx as usize))
                })
            }
        }
    }

    /// Buckets of a hashed family (0 for a sorted one, whose runs are few).
    pub(super) fn hashed_buckets(&self) -> usize {
        match self {
            Family::Sorted(_) => 0,
            Family::Hashed(h) => h.buckets.len(),
        }
    }

    /// Appends the family's bucket runs to `out`.
    pub(super) fn runs(&self, v6: bool, out: &mut Vec<Run>) {
        match self {
            Family::Sorted(recs) => push_runs(recs, v6, out),
            Family::Hashed(h) => {
                for (b, bucket) in h.buckets.iter().enumerate() {
                    if !bucket.recs.is_empty() {
                        out.push(Run::new(bucket.key, v6, b, 0, bucket.recs.len()));
                    }
                }
            }
        }
    }
}

/// Appends the bucket runs of records sorted by bucket (a sorted family or a small swarm,
/// segment 0) to `out`.
pub(super) fn push_runs<P: Record>(recs: &[P], v6: bool, out: &mut Vec<Run>) {
    let mut start = 0;
    for run in recs.chunk_by(|a, b| a.bucket() == b.bucket()) {
        out.push(Run::new(run[0].bucket(), v6, 0, start, start + run.len()));
        start += run.len();
    }
}
