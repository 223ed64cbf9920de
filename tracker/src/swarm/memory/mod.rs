//! The in-memory swarm store: torrents in sorted vectors behind sharded locks, each swarm's peers
//! in vectors of 10-byte records grouped by bucket. Laid out for memory first: opentracker keeps
//! 2 M peers over 1 M torrents in about 75 MB, and so should we.
//!
//! Where the bytes go:
//! - **Torrents.** A fixed number of shards (a power of two sized from `max_torrents`, about 16
//!   torrents each when full), picked by a keyed hash of the info hash so no client can crowd one
//!   shard. A shard is a vector of 48-byte `Entry`s sorted by info hash, searched from where an
//!   evenly spread hash would sit (info hashes are): unlike a hash table (45-87 % full) it
//!   wastes no slots. The torrent count is an atomic, not a walk over the shards.
//! - **Small swarms** (at most two IPv4 peers: most torrents) keep their peers inside the entry,
//!   with no allocation. Their seeder and leecher counts are read off those two records.
//! - **Larger swarms** own one heap block (`Large`: counts, snapshot generation) and, per address
//!   family, a `Family`. A bucket (PID x seeder/leecher) is always one contiguous run of
//!   records, so selection lists buckets without reading records. Up to `MIXED_MAX` records a
//!   family is one vector sorted by (bucket, ip, port), scanned to find a peer. Past it the
//!   family is hashed: a vector per bucket, unordered, plus an index from address to (bucket,
//!   position) in 8-byte slots, at most 3/4 full (about 11-21 bytes per peer on top of the
//!   record, up to ~32 before the sweep shrinks an index that emptied; a bucket costs 32 bytes
//!   and an allocation of its own, which a swarm spread over many sparse PIDs or AS locations
//!   feels). The hot swarms that take most announces then find, add, remove or move a peer
//!   with one probe and a push or `swap_remove`: no binary search over hundreds of records, no
//!   shifting. Adding a bucket renumbers the index (a walk over its slots), once per new PID
//!   or role in a swarm between sweeps.
//! - **A peer** is 10 bytes (IPv6: 22): address, port, bucket key, and its expiry as 16-bit
//!   wrapping seconds (valid because the sweep runs far more often than every 2^15 s and timeouts
//!   are below 30000 s, which the config enforces).
//! - Vectors grow one element at a time while short, then by a 32nd: little spare capacity, and
//!   little memory the allocator cannot reuse while the store fills. The sweep returns spare
//!   capacity, drops empty buckets, turns hashed families that shrank back into sorted ones and
//!   large swarms that shrank back into small ones.
//!
//! A bucket key is `pid << 1 | seeder` in 16 bits, so PID ids must fit in 15 bits. Ids from
//! 32767 up (a process that has interned that many distinct PID names) share one overflow code
//! that [`Buckets::pid`] reports as an id no snapshot holds: such peers are still stored, counted
//! and returned, and selection treats them like peers of an unknown, far PID.
//!
//! Locks: one shard lock per announce, held only for the update and the selection (no `.await`
//! anywhere here). The sweep visits one shard at a time.
//!
//! Prefetching: most of an announce's time is cache misses, one after another (shard, entry,
//! swarm block, index slot, record, peers). A UDP worker hands a batch's (info hash, peer)
//! pairs to [`MemoryStore::prefetch`] before answering the first. It requests lines in rounds
//! over the whole batch, each round reaching one level deeper than the last: every shard's
//! line; each entry's, from a hint the shard keeps beside its lock (where its entries were when
//! last written; read without the lock, never dereferenced); then, under a read lock, each
//! swarm's block, its index slot and bucket list, and the record. The misses of a batch then
//! overlap and the announces find their lines cached. The one `unsafe` in the crate is the
//! prefetch instruction, which cannot fault or change memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{LazyLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use p4p_itracker::{PidId, Snapshot};
use rand::Rng;

use super::{Families, PeerSink, StoreError, StoreTotals, SweepReport};
use crate::clock::Clock;
use crate::config::SwarmConfig;
use crate::selection::{Buckets, Requester, Scratch, SelectionStats, Selector};
use crate::types::{Announce, Event, InfoHash, SwarmStats};

/// Most records of a family kept in one sorted vector (scanned to find a peer); past it the
/// family is hashed (see [`Hashed`]).
const MIXED_MAX: usize = if cfg!(test) { 4 } else { 64 };

/// Peers a small swarm holds inside its entry.
const SMALL: usize = 2;

/// Torrents per shard aimed at when the store holds `max_torrents`: few, so the search reads
/// one or two cache lines of entries (256 per shard cost ~8 cache misses per announce in the
/// race profile, with a binary search). A shard costs ~40 bytes when empty.
const TORRENTS_PER_SHARD: usize = 16;

/// The 15-bit PID code shared by every PID id that does not fit (see the module docs).
const PID_OVERFLOW: u16 = 0x7FFF;

/// What [`Buckets::pid`] reports for [`PID_OVERFLOW`]: an id no snapshot holds.
const PID_UNKNOWN: PidId = PidId(u32::MAX);

/// A bucket: PID x seeder/leecher, packed as `pid << 1 | seeder` so records sort by PID first.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct BucketKey(u16);

impl BucketKey {
    fn new(pid: PidId, seeder: bool) -> Self {
        let code = u16::try_from(pid.0)
            .ok()
            .filter(|&c| c < PID_OVERFLOW)
            .unwrap_or(PID_OVERFLOW);
        BucketKey((code << 1) | u16::from(seeder))
    }

    fn pid(self) -> PidId {
        match self.0 >> 1 {
            PID_OVERFLOW => PID_UNKNOWN,
            code => PidId(u32::from(code)),
        }
    }

    fn seeders(self) -> bool {
        self.0 & 1 == 1
    }
}

/// An IPv4 peer: 10 bytes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer4 {
    ip: [u8; 4],
    port: u16,
    expires: u16,
    bucket: BucketKey,
}

/// An IPv6 peer: 22 bytes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer6 {
    ip: [u8; 16],
    port: u16,
    expires: u16,
    bucket: BucketKey,
}

/// What both peer records offer to the generic family code.
trait Record: Copy {
    /// Identity inside a swarm: (ip, port), hashed by the address index.
    type Addr: Eq + Copy + Hash;
    /// Sort order of a family: (bucket, ip, port).
    type Order: Ord + Copy;
    fn new(addr: Self::Addr, expires: u16, bucket: BucketKey) -> Self;
    fn addr(&self) -> Self::Addr;
    fn order_of(bucket: BucketKey, addr: Self::Addr) -> Self::Order;
    fn bucket(&self) -> BucketKey;
    fn set_bucket(&mut self, bucket: BucketKey);
    fn expires(&self) -> u16;
    fn set_expires(&mut self, t: u16);
    fn socket(&self) -> SocketAddr;

    fn order(&self) -> Self::Order {
        Self::order_of(self.bucket(), self.addr())
    }
}

impl Peer4 {
    fn addr_of(a: SocketAddrV4) -> u64 {
        (u64::from(a.ip().to_bits()) << 16) | u64::from(a.port())
    }
}

impl Record for Peer4 {
    type Addr = u64;
    type Order = u64;
    fn new(addr: u64, expires: u16, bucket: BucketKey) -> Self {
        Peer4 {
            ip: ((addr >> 16) as u32).to_be_bytes(),
            port: addr as u16,
            expires,
            bucket,
        }
    }
    fn addr(&self) -> u64 {
        (u64::from(u32::from_be_bytes(self.ip)) << 16) | u64::from(self.port)
    }
    fn order_of(bucket: BucketKey, addr: u64) -> u64 {
        (u64::from(bucket.0) << 48) | addr
    }
    fn bucket(&self) -> BucketKey {
        self.bucket
    }
    fn set_bucket(&mut self, bucket: BucketKey) {
        self.bucket = bucket;
    }
    fn expires(&self) -> u16 {
        self.expires
    }
    fn set_expires(&mut self, t: u16) {
        self.expires = t;
    }
    fn socket(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(self.ip), self.port))
    }
}

impl Peer6 {
    fn addr_of(a: SocketAddrV6) -> (u128, u16) {
        (a.ip().to_bits(), a.port())
    }
}

impl Record for Peer6 {
    type Addr = (u128, u16);
    type Order = (BucketKey, u128, u16);
    fn new((ip, port): (u128, u16), expires: u16, bucket: BucketKey) -> Self {
        Peer6 {
            ip: ip.to_be_bytes(),
            port,
            expires,
            bucket,
        }
    }
    fn addr(&self) -> (u128, u16) {
        (u128::from_be_bytes(self.ip), self.port)
    }
    fn order_of(bucket: BucketKey, (ip, port): (u128, u16)) -> Self::Order {
        (bucket, ip, port)
    }
    fn bucket(&self) -> BucketKey {
        self.bucket
    }
    fn set_bucket(&mut self, bucket: BucketKey) {
        self.bucket = bucket;
    }
    fn expires(&self) -> u16 {
        self.expires
    }
    fn set_expires(&mut self, t: u16) {
        self.expires = t;
    }
    fn socket(&self) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(self.ip), self.port, 0, 0))
    }
}

/// Whether a 16-bit wrapping expiry time has passed at `now`.
fn expired(expires: u16, now: u16) -> bool {
    (now.wrapping_sub(expires) as i16) >= 0
}

/// The bucket id of `ip` in `snap`: its PID's stable id, or its AS location (see
/// [`crate::topology::location`]).
fn resolve(snap: &Snapshot, ip: IpAddr) -> PidId {
    crate::topology::location(snap, ip).1
}

/// Makes room for one more element, by at least `min_step` and at most a 32nd at a time. Small
/// steps cost more copying (still less than the insert's own shift) but leave little spare
/// capacity and, while a store fills, fewer freed blocks the allocator cannot reuse: filling
/// 1 M two-peer torrents took 53 MB growing shards by a 32nd, 60 MB by an 8th, 68 MB by half.
fn reserve_one<T>(v: &mut Vec<T>, min_step: usize) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 32).max(min_step));
    }
}

/// Returns spare capacity once a vector is more than a quarter too big.
fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > v.len() + v.len() / 4 + 4 {
        v.shrink_to(v.len() + v.len() / 8);
    }
}

/// Moves the record at `from` to where `rec` sorts, writing `rec` there; returns its index.
/// Shifts only the records in between.
fn rekey_in<P: Record>(recs: &mut [P], from: usize, rec: P) -> usize {
    let key = rec.order();
    let to = recs.partition_point(|p| p.order() < key);
    if to > from {
        recs[from..to].rotate_left(1);
        recs[to - 1] = rec;
        to - 1
    } else {
        recs[to..=from].rotate_right(1);
        recs[to] = rec;
        to
    }
}

/// Keyed once per process (so no client can aim addresses at one probe sequence), shared by
/// every swarm's address index.
static ADDR_HASHER: LazyLock<foldhash::quality::RandomState> = LazyLock::new(Default::default);

fn addr_hash<A: Hash>(addr: &A) -> u64 {
    ADDR_HASHER.hash_one(addr)
}

/// One bucket of a hashed family: its records, in no particular order.
#[derive(Debug)]
struct Bucket<P> {
    key: BucketKey,
    recs: Vec<P>,
}

/// Where a record of a hashed family is: bucket slot and index in it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Loc {
    bucket: u16,
    idx: u32,
}

impl Loc {
    fn new(bucket: usize, idx: usize) -> Self {
        Loc {
            bucket: bucket as u16,
            idx: idx as u32,
        }
    }
}

/// The address index of a hashed family: open addressing with linear probing over 8-byte
/// slots, each a 16-bit tag of the address's hash and the record's [`Loc`]. A probe compares
/// tags inside one or two cache lines and reads a record only when a tag matches, so finding a
/// peer costs the slot's line and the record's. (A general hash table keeps control bytes and
/// entries apart: one more miss, which the race profile showed.) At most 3/4 full, counting
/// deleted slots.
#[derive(Debug, Default)]
struct Index {
    slots: Box<[u64]>,
    len: u32,
    deleted: u32,
}

const EMPTY: u64 = 0;
const DELETED: u64 = 1;
const TAG: u64 = 0xFFFF << 48;

impl Index {
    /// An empty index sized for `n` entries.
    fn sized(n: usize) -> Self {
        let cap = (n + n / 3 + 1).next_power_of_two().max(8);
        Index {
            slots: vec![EMPTY; cap].into_boxed_slice(),
            len: 0,
            deleted: 0,
        }
    }

    /// A tag never equal to [`EMPTY`] or [`DELETED`].
    fn tag(hash: u64) -> u64 {
        (hash >> 48).max(2)
    }

    fn pack(hash: u64, loc: Loc) -> u64 {
        Self::with_loc(Self::tag(hash) << 48, loc)
    }

    /// `slot`'s tag with `loc`.
    fn with_loc(slot: u64, loc: Loc) -> u64 {
        (slot & TAG) | (u64::from(loc.bucket) << 32) | u64::from(loc.idx)
    }

    fn loc(slot: u64) -> Loc {
        Loc {
            bucket: (slot >> 32) as u16,
            idx: slot as u32,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot a probe for `hash` starts at.
    fn slot_of(&self, hash: u64) -> Option<&u64> {
        self.slots.get(hash as usize & self.mask())
    }

    /// Where the first entry whose tag matches `hash` points: most likely the one a
    /// [`Index::find`] would return (for prefetching; compares no record).
    fn first_match(&self, hash: u64) -> Option<Loc> {
        self.find(hash, |_| true).map(|i| self.get(i))
    }

    /// The slot of the entry with `hash` for which `eq` holds.
    fn find(&self, hash: u64, mut eq: impl FnMut(Loc) -> bool) -> Option<usize> {
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

    fn get(&self, i: usize) -> Loc {
        Self::loc(self.slots[i])
    }

    /// Points the entry in slot `i` at `loc` (same address, so same tag).
    fn set(&mut self, i: usize, loc: Loc) {
        self.slots[i] = Self::with_loc(self.slots[i], loc);
    }

    /// Adds an entry; `hash_of` gives the hash of an entry already in (to rebuild on growth).
    fn insert(&mut self, hash: u64, loc: Loc, hash_of: impl Fn(Loc) -> u64) {
        let used = (self.len + self.deleted) as usize + 1;
        if used * 4 > self.slots.len() * 3 {
            // At most half full afterwards, so the next rebuild is a quarter of the table's
            // inserts away: sized for exactly `len + 1`, a table just under 3/4 full with a
            // few deleted slots would rebuild on nearly every insert (a client stopping and
            // starting its own peers could force that).
            let n = self.len as usize + 1;
            self.rebuild(n + n / 2, &hash_of);
        }
        self.put(hash, loc);
    }

    fn put(&mut self, hash: u64, loc: Loc) {
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
    fn remove(&mut self, i: usize) {
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

    /// Re-inserts every entry into a table sized for `n`, dropping deleted slots.
    fn rebuild(&mut self, n: usize, hash_of: &impl Fn(Loc) -> u64) {
        let old = std::mem::replace(self, Index::sized(n));
        for &slot in old.slots.iter().filter(|&&s| s > DELETED) {
            let loc = Self::loc(slot);
            self.put(hash_of(loc), loc);
        }
    }

    /// Every entry's location, to renumber buckets.
    fn locs_mut(&mut self, mut f: impl FnMut(&mut Loc)) {
        for slot in self.slots.iter_mut().filter(|s| **s > DELETED) {
            let mut loc = Self::loc(*slot);
            f(&mut loc);
            *slot = Self::with_loc(*slot, loc);
        }
    }
}

/// A family past [`MIXED_MAX`] records: a vector per bucket (sorted by bucket key, records
/// unordered inside) and an [`Index`] from address to where the record is. Finding, adding,
/// removing or moving a peer costs a probe of the index and a push or `swap_remove`, never a
/// search or a shift; a bucket stays one contiguous run for selection. Buckets left empty stay
/// until the sweep, so slots change only when a bucket is added (rare: a new PID or role in the
/// swarm) or during the sweep.
#[derive(Debug)]
struct Hashed<P> {
    buckets: Vec<Bucket<P>>,
    index: Index,
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
        };
        hashed.reindex();
        hashed
    }

    fn hash_at(buckets: &[Bucket<P>], loc: Loc) -> u64 {
        addr_hash(&buckets[loc.bucket as usize].recs[loc.idx as usize].addr())
    }

    /// Rebuilds the index from the buckets.
    fn reindex(&mut self) {
        let len = self.buckets.iter().map(|b| b.recs.len()).sum();
        self.index = Index::sized(len);
        for (b, bucket) in self.buckets.iter().enumerate() {
            for (i, p) in bucket.recs.iter().enumerate() {
                self.index.put(addr_hash(&p.addr()), Loc::new(b, i));
            }
        }
    }

    fn len(&self) -> usize {
        self.index.len as usize
    }

    fn find(&self, addr: P::Addr) -> Option<(usize, usize)> {
        let buckets = &self.buckets;
        let i = self.index.find(addr_hash(&addr), |l| {
            buckets[l.bucket as usize].recs[l.idx as usize].addr() == addr
        })?;
        let loc = self.index.get(i);
        Some((loc.bucket as usize, loc.idx as usize))
    }

    /// The slot of `key`'s bucket, added (and later slots renumbered) when missing.
    fn bucket_slot(&mut self, key: BucketKey) -> usize {
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
                b
            }
        }
    }

    /// Appends `rec` to its bucket (not to the index); returns where it is.
    fn push(&mut self, rec: P) -> Loc {
        let b = self.bucket_slot(rec.bucket());
        let recs = &mut self.buckets[b].recs;
        reserve_one(recs, 1);
        recs.push(rec);
        Loc::new(b, recs.len() - 1)
    }

    fn insert(&mut self, rec: P) -> (usize, usize) {
        let loc = self.push(rec);
        let buckets = &self.buckets;
        let hash = addr_hash(&rec.addr());
        self.index.insert(hash, loc, |l| Self::hash_at(buckets, l));
        (loc.bucket as usize, loc.idx as usize)
    }

    /// Takes the record at `at` out of its bucket (`swap_remove`) and points the index entry of
    /// the record that took its place there; returns the record and its index slot.
    fn take(&mut self, at: Loc) -> (P, usize) {
        let recs = &mut self.buckets[at.bucket as usize].recs;
        let rec = recs.swap_remove(at.idx as usize);
        // Found before the moved record's entry also points at `at`.
        let slot = self.index.find(addr_hash(&rec.addr()), |l| l == at);
        if let Some(moved) = recs.get(at.idx as usize) {
            let from = Loc::new(at.bucket as usize, recs.len());
            if let Some(i) = self.index.find(addr_hash(&moved.addr()), |l| l == from) {
                self.index.set(i, at);
            }
        }
        (rec, slot.expect("every record is indexed"))
    }

    fn remove(&mut self, b: usize, i: usize) -> P {
        let (rec, slot) = self.take(Loc::new(b, i));
        self.index.remove(slot);
        rec
    }

    /// Moves the record at (b, i) to `rec`'s bucket, as `rec`; the index entry stays and is
    /// pointed at the new place.
    fn rekey(&mut self, b: usize, i: usize, rec: P) -> (usize, usize) {
        let (_, slot) = self.take(Loc::new(b, i));
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
        let (dropped, slots) = (self.buckets.len() != before, self.index.slots.len());
        if moved || dropped || self.index.deleted > 0 || slots > 4 * len + 8 {
            self.reindex();
        }
    }
}

/// One address family of a large swarm. Up to [`MIXED_MAX`] records it is one vector sorted by
/// (bucket, ip, port), so a bucket is a contiguous run and a scan finds a peer; past it, a
/// [`Hashed`] family.
#[derive(Debug)]
enum Family<P> {
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
    fn build(mut recs: Vec<P>) -> Self {
        recs.sort_unstable_by_key(P::order);
        if recs.len() <= MIXED_MAX {
            Family::Sorted(recs)
        } else {
            Family::Hashed(Hashed::build(&recs))
        }
    }

    /// Every record, bucket by bucket.
    fn all(&self) -> Vec<P> {
        match self {
            Family::Sorted(recs) => recs.clone(),
            Family::Hashed(h) => h
                .buckets
                .iter()
                .flat_map(|b| b.recs.iter().copied())
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        match self {
            Family::Sorted(recs) => recs.len(),
            Family::Hashed(h) => h.len(),
        }
    }

    /// The records of segment `seg`: the sorted vector (`seg` 0) or a bucket.
    fn seg(&self, seg: usize) -> &[P] {
        match self {
            Family::Sorted(recs) => recs,
            Family::Hashed(h) => &h.buckets[seg].recs,
        }
    }

    fn seg_mut(&mut self, seg: usize) -> &mut [P] {
        match self {
            Family::Sorted(recs) => recs,
            Family::Hashed(h) => &mut h.buckets[seg].recs,
        }
    }

    fn rec(&self, seg: usize, idx: usize) -> P {
        self.seg(seg)[idx]
    }

    /// Requests the lines of a lookup of `addr` that `stage` reaches: the sorted vector, or the
    /// index slot and the bucket list, then the record the first matching tag points at.
    fn prefetch(&self, addr: P::Addr, stage: Stage) {
        match (self, stage) {
            (Family::Sorted(recs), Stage::Index) => prefetch_slice(recs),
            (Family::Hashed(h), Stage::Index) => {
                if let Some(slot) = h.index.slot_of(addr_hash(&addr)) {
                    prefetch_slice(std::slice::from_ref(slot));
                }
                prefetch_slice(&h.buckets);
            }
            (Family::Hashed(h), Stage::Record) => {
                let loc = h.index.first_match(addr_hash(&addr));
                let rec =
                    loc.and_then(|l| h.buckets.get(l.bucket as usize)?.recs.get(l.idx as usize));
                if let Some(rec) = rec {
                    prefetch_slice(std::slice::from_ref(rec));
                }
            }
            _ => {}
        }
    }

    /// Where the peer is, whatever bucket it is in.
    fn find(&self, addr: P::Addr) -> Option<(usize, usize)> {
        match self {
            Family::Sorted(recs) => recs.iter().position(|p| p.addr() == addr).map(|i| (0, i)),
            Family::Hashed(h) => h.find(addr),
        }
    }

    fn insert(&mut self, rec: P) -> (usize, usize) {
        match self {
            Family::Sorted(recs) if recs.len() < MIXED_MAX => {
                let i = recs.partition_point(|p| p.order() < rec.order());
                reserve_one(recs, 1);
                recs.insert(i, rec);
                (0, i)
            }
            Family::Sorted(recs) => {
                let mut all = std::mem::take(recs);
                all.push(rec);
                *self = Family::build(all);
                self.find(rec.addr()).expect("the record was just added")
            }
            Family::Hashed(h) => h.insert(rec),
        }
    }

    fn remove(&mut self, seg: usize, idx: usize) -> P {
        match self {
            Family::Sorted(recs) => recs.remove(idx),
            Family::Hashed(h) => h.remove(seg, idx),
        }
    }

    /// Replaces the record at (seg, idx) with `rec` (same address, new bucket); returns where
    /// it now is.
    fn rekey(&mut self, seg: usize, idx: usize, rec: P) -> (usize, usize) {
        match self {
            Family::Sorted(recs) => (0, rekey_in(recs, idx, rec)),
            Family::Hashed(h) => h.rekey(seg, idx, rec),
        }
    }

    /// Removes expired peers; returns how many (seeders, leechers).
    fn expire(&mut self, now: u16) -> (u32, u32) {
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
        self.tidy();
        removed
    }

    /// Returns spare capacity; a hashed family that shrank to half of [`MIXED_MAX`] becomes a
    /// sorted one again.
    fn tidy(&mut self) {
        match self {
            Family::Sorted(recs) => shrink(recs),
            Family::Hashed(h) if h.len() <= MIXED_MAX / 2 => *self = Family::build(self.all()),
            Family::Hashed(h) => h.tidy(false),
        }
    }

    /// Re-resolves every record's PID under `snap`; returns how many changed bucket.
    fn rebucket(&mut self, snap: &Snapshot) -> usize {
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
            *self = Family::build(all);
        }
        moved
    }

    /// Appends the family's bucket runs to `out`.
    fn runs(&self, v6: bool, out: &mut Vec<Run>) {
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
fn push_runs<P: Record>(recs: &[P], v6: bool, out: &mut Vec<Run>) {
    let mut start = 0;
    for run in recs.chunk_by(|a, b| a.bucket() == b.bucket()) {
        out.push(Run::new(run[0].bucket(), v6, 0, start, start + run.len()));
        start += run.len();
    }
}

/// Up to [`SMALL`] IPv4 peers, sorted like a family, stored inside the entry.
#[derive(Copy, Clone, Debug, Default)]
struct Small {
    len: u8,
    /// Low 8 bits of the snapshot generation the PIDs were resolved under. A false match (256
    /// snapshots between two sweeps) only delays re-bucketing to the peer's next announce, as a
    /// small swarm is always searched in full.
    generation: u8,
    peers: [Peer4; SMALL],
}

impl Small {
    fn slice(&self) -> &[Peer4] {
        &self.peers[..usize::from(self.len)]
    }

    fn slice_mut(&mut self) -> &mut [Peer4] {
        &mut self.peers[..usize::from(self.len)]
    }

    /// Inserts in order; `None` when full.
    fn insert(&mut self, rec: Peer4) -> Option<usize> {
        let len = usize::from(self.len);
        if len == SMALL {
            return None;
        }
        let at = self.slice().partition_point(|p| p.order() < rec.order());
        self.peers.copy_within(at..len, at + 1);
        self.peers[at] = rec;
        self.len += 1;
        Some(at)
    }

    fn remove(&mut self, at: usize) -> Peer4 {
        let rec = self.peers[at];
        self.peers.copy_within(at + 1..usize::from(self.len), at);
        self.len -= 1;
        rec
    }

    fn counts(&self) -> (u32, u32) {
        let seeders = self.slice().iter().filter(|p| p.bucket.seeders()).count() as u32;
        (seeders, u32::from(self.len) - seeders)
    }
}

/// A swarm past [`SMALL`] IPv4 peers, or with any IPv6 peer.
#[derive(Debug, Default)]
struct Large {
    v4: Family<Peer4>,
    /// Boxed: IPv6 peers are rare, and an empty family costs 8 bytes here, not 32.
    v6: Option<Box<Family<Peer6>>>,
    seeders: u32,
    leechers: u32,
    /// Snapshot generation the peers' PIDs were resolved under (low 32 bits).
    generation: u32,
}

impl Large {
    /// Takes over a small swarm's peers, re-resolved under `snap` so the generation is exact.
    fn from_small(small: &Small, snap: &Snapshot) -> Self {
        let mut recs = Vec::with_capacity(SMALL + 1);
        recs.extend(small.slice().iter().map(|&p| {
            let mut p = p;
            p.bucket = BucketKey::new(resolve(snap, p.socket().ip()), p.bucket.seeders());
            p
        }));
        let (seeders, leechers) = small.counts();
        Large {
            v4: Family::build(recs),
            v6: None,
            seeders,
            leechers,
            generation: snap.generation() as u32,
        }
    }

    fn count(&mut self, seeder: bool, delta: i32) {
        let c = if seeder {
            &mut self.seeders
        } else {
            &mut self.leechers
        };
        *c = c.saturating_add_signed(delta);
    }

    fn v6_mut(&mut self) -> &mut Family<Peer6> {
        self.v6.get_or_insert_with(Box::default)
    }
}

/// The data of one torrent in its shard: 48 bytes.
#[derive(Debug)]
struct Entry {
    hash: [u8; 20],
    downloaded: u32,
    peers: Peers,
}

#[derive(Debug)]
enum Peers {
    Small(Small),
    Large(Box<Large>),
}

/// Where a peer is: family, segment, index.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Slot {
    v6: bool,
    seg: usize,
    idx: usize,
}

impl Slot {
    fn new(v6: bool, (seg, idx): (usize, usize)) -> Self {
        Slot { v6, seg, idx }
    }
}

impl Entry {
    fn new(hash: [u8; 20], generation: u32) -> Self {
        Entry {
            hash,
            downloaded: 0,
            peers: Peers::Small(Small {
                generation: generation as u8,
                ..Small::default()
            }),
        }
    }

    /// (seeders, leechers): kept for large swarms, read off the records of small ones.
    fn counts(&self) -> (u32, u32) {
        match &self.peers {
            Peers::Small(s) => s.counts(),
            Peers::Large(l) => (l.seeders, l.leechers),
        }
    }

    fn len(&self) -> usize {
        let (s, l) = self.counts();
        (s + l) as usize
    }

    fn stats(&self) -> SwarmStats {
        let (complete, incomplete) = self.counts();
        SwarmStats {
            complete,
            incomplete,
            downloaded: self.downloaded,
        }
    }

    /// Requests the lines of a lookup of `peer` that `stage` reaches (see [`Stage`]).
    fn prefetch(&self, peer: SocketAddr, stage: Stage) {
        let Peers::Large(l) = &self.peers else {
            return; // A small swarm's peers are in the entry.
        };
        match (stage, peer) {
            (Stage::Block, _) => prefetch_slice(std::slice::from_ref(&**l)),
            (_, SocketAddr::V4(a)) => l.v4.prefetch(Peer4::addr_of(a), stage),
            (_, SocketAddr::V6(a)) => {
                if let Some(f) = &l.v6 {
                    f.prefetch(Peer6::addr_of(a), stage);
                }
            }
        }
    }

    /// Where the peer is now, whatever its bucket (a PID may have changed since it was filed).
    fn find(&self, peer: SocketAddr) -> Option<Slot> {
        match (&self.peers, peer) {
            (Peers::Small(s), SocketAddr::V4(a)) => {
                let addr = Peer4::addr_of(a);
                let at = s.slice().iter().position(|p| p.addr() == addr);
                at.map(|i| Slot::new(false, (0, i)))
            }
            (Peers::Small(_), SocketAddr::V6(_)) => None,
            (Peers::Large(l), SocketAddr::V4(a)) => {
                let found = l.v4.find(Peer4::addr_of(a));
                found.map(|at| Slot::new(false, at))
            }
            (Peers::Large(l), SocketAddr::V6(a)) => {
                let found = l.v6.as_ref()?.find(Peer6::addr_of(a));
                found.map(|at| Slot::new(true, at))
            }
        }
    }

    fn bucket(&self, slot: Slot) -> BucketKey {
        match &self.peers {
            Peers::Small(s) => s.peers[slot.idx].bucket,
            Peers::Large(l) if slot.v6 => {
                l.v6.as_ref()
                    .map_or(BucketKey::default(), |f| f.rec(slot.seg, slot.idx).bucket())
            }
            Peers::Large(l) => l.v4.rec(slot.seg, slot.idx).bucket(),
        }
    }

    fn touch(&mut self, slot: Slot, expires: u16) {
        match &mut self.peers {
            Peers::Small(s) => s.peers[slot.idx].expires = expires,
            Peers::Large(l) if slot.v6 => {
                l.v6_mut().seg_mut(slot.seg)[slot.idx].expires = expires;
            }
            Peers::Large(l) => l.v4.seg_mut(slot.seg)[slot.idx].expires = expires,
        }
    }

    /// Moves a known peer to another bucket; returns its new slot.
    fn rekey(&mut self, slot: Slot, bucket: BucketKey, expires: u16) -> Slot {
        fn re<P: Record>(f: &mut Family<P>, slot: Slot, bucket: BucketKey, expires: u16) -> Slot {
            let mut rec = f.rec(slot.seg, slot.idx);
            rec.set_bucket(bucket);
            rec.set_expires(expires);
            Slot::new(slot.v6, f.rekey(slot.seg, slot.idx, rec))
        }
        let old = self.bucket(slot);
        match &mut self.peers {
            Peers::Small(s) => {
                let mut rec = s.peers[slot.idx];
                rec.bucket = bucket;
                rec.expires = expires;
                Slot::new(false, (0, rekey_in(s.slice_mut(), slot.idx, rec)))
            }
            Peers::Large(l) => {
                l.count(old.seeders(), -1);
                l.count(bucket.seeders(), 1);
                if slot.v6 {
                    re(l.v6_mut(), slot, bucket, expires)
                } else {
                    re(&mut l.v4, slot, bucket, expires)
                }
            }
        }
    }

    /// Removes a peer; returns the bucket it was in.
    fn remove(&mut self, slot: Slot) -> BucketKey {
        match &mut self.peers {
            Peers::Small(s) => s.remove(slot.idx).bucket,
            Peers::Large(l) => {
                let bucket = if slot.v6 {
                    l.v6_mut().remove(slot.seg, slot.idx).bucket
                } else {
                    l.v4.remove(slot.seg, slot.idx).bucket
                };
                l.count(bucket.seeders(), -1);
                bucket
            }
        }
    }

    /// Adds a new peer (a small swarm that cannot hold it becomes large); returns its slot.
    fn insert(
        &mut self,
        peer: SocketAddr,
        bucket: BucketKey,
        expires: u16,
        snap: &Snapshot,
    ) -> Slot {
        if let Peers::Small(s) = &mut self.peers {
            if let SocketAddr::V4(a) = peer {
                if let Some(i) = s.insert(Peer4::new(Peer4::addr_of(a), expires, bucket)) {
                    return Slot::new(false, (0, i));
                }
            }
            let large = Large::from_small(s, snap);
            self.peers = Peers::Large(Box::new(large));
        }
        let Peers::Large(l) = &mut self.peers else {
            unreachable!("the swarm was made large above")
        };
        l.count(bucket.seeders(), 1);
        match peer {
            SocketAddr::V4(a) => {
                let at = l.v4.insert(Peer4::new(Peer4::addr_of(a), expires, bucket));
                Slot::new(false, at)
            }
            SocketAddr::V6(a) => {
                let at = l
                    .v6_mut()
                    .insert(Peer6::new(Peer6::addr_of(a), expires, bucket));
                Slot::new(true, at)
            }
        }
    }

    /// Removes expired peers; returns how many (seeders, leechers).
    fn expire(&mut self, now: u16) -> (u32, u32) {
        match &mut self.peers {
            Peers::Small(s) => {
                let before = s.counts();
                let mut n = 0;
                for i in 0..usize::from(s.len) {
                    if !expired(s.peers[i].expires, now) {
                        s.peers[n] = s.peers[i];
                        n += 1;
                    }
                }
                s.len = n as u8;
                let after = s.counts();
                (before.0 - after.0, before.1 - after.1)
            }
            Peers::Large(l) => {
                let a = l.v4.expire(now);
                let b = l.v6.as_mut().map_or((0, 0), |f| f.expire(now));
                l.seeders = l.seeders.saturating_sub(a.0 + b.0);
                l.leechers = l.leechers.saturating_sub(a.1 + b.1);
                (a.0 + b.0, a.1 + b.1)
            }
        }
    }

    /// Re-resolves the PIDs of a swarm resolved under another snapshot; returns the peers
    /// that changed bucket.
    fn rebucket(&mut self, snap: &Snapshot) -> usize {
        let generation = snap.generation() as u32;
        match &mut self.peers {
            Peers::Small(s) if s.generation != generation as u8 => {
                s.generation = generation as u8;
                let mut moved = 0;
                for p in s.slice_mut() {
                    let to = BucketKey::new(resolve(snap, p.socket().ip()), p.bucket.seeders());
                    moved += usize::from(to != p.bucket);
                    p.bucket = to;
                }
                s.slice_mut().sort_unstable_by_key(Peer4::order);
                moved
            }
            Peers::Large(l) if l.generation != generation => {
                l.generation = generation;
                l.v4.rebucket(snap) + l.v6.as_mut().map_or(0, |f| f.rebucket(snap))
            }
            _ => 0,
        }
    }

    /// Gives back memory after peers left: drops an empty IPv6 family and turns a large swarm
    /// that fits back into a small one.
    fn compact(&mut self) {
        let Peers::Large(l) = &mut self.peers else {
            return;
        };
        if l.v6.as_ref().is_some_and(|f| f.is_empty()) {
            l.v6 = None;
        }
        if l.v6.is_some() || l.v4.len() > SMALL {
            return;
        }
        let mut small = Small {
            generation: l.generation as u8,
            ..Small::default()
        };
        for p in l.v4.all() {
            small.peers[usize::from(small.len)] = p;
            small.len += 1;
        }
        // Sorted already when the family is, but a small swarm must be whatever it came from.
        small.slice_mut().sort_unstable_by_key(Peer4::order);
        self.peers = Peers::Small(small);
    }

    /// Appends the swarm's bucket runs (IPv4 first) to `out`.
    fn runs(&self, out: &mut Vec<Run>) {
        match &self.peers {
            Peers::Small(s) => push_runs(s.slice(), false, out),
            Peers::Large(l) => {
                l.v4.runs(false, out);
                if let Some(f) = &l.v6 {
                    f.runs(true, out);
                }
            }
        }
    }
}

/// One bucket run: what selection sees as a bucket. In a sorted family or a small swarm it is a
/// range of segment 0; in a hashed family, a whole bucket (segment = bucket slot).
#[derive(Copy, Clone, Debug)]
struct Run {
    /// Decoded once here: selection asks for it many times.
    pid: PidId,
    seeders: bool,
    v6: bool,
    seg: u32,
    start: u32,
    end: u32,
}

impl Run {
    fn new(bucket: BucketKey, v6: bool, seg: usize, start: usize, end: usize) -> Self {
        Run {
            pid: bucket.pid(),
            seeders: bucket.seeders(),
            v6,
            seg: seg as u32,
            start: start as u32,
            end: end as u32,
        }
    }
}

/// A swarm as selection reads it: the entry plus its runs, listed once per announce.
struct View<'a> {
    /// A small swarm's peers (empty for a large swarm).
    small: &'a [Peer4],
    v4: Option<&'a Family<Peer4>>,
    v6: Option<&'a Family<Peer6>>,
    runs: &'a [Run],
}

impl<'a> View<'a> {
    fn new(entry: &'a Entry, runs: &'a [Run]) -> Self {
        match &entry.peers {
            Peers::Small(s) => View {
                small: s.slice(),
                v4: None,
                v6: None,
                runs,
            },
            Peers::Large(l) => View {
                small: &[],
                v4: Some(&l.v4),
                v6: l.v6.as_deref(),
                runs,
            },
        }
    }

    /// The selection slot (run, position in run) of a peer.
    fn slot(&self, slot: Slot) -> Option<(usize, usize)> {
        self.runs.iter().enumerate().find_map(|(b, r)| {
            let inside = r.v6 == slot.v6
                && r.seg as usize == slot.seg
                && (r.start as usize..r.end as usize).contains(&slot.idx);
            inside.then(|| (b, slot.idx - r.start as usize))
        })
    }
}

impl Buckets for View<'_> {
    fn count(&self) -> usize {
        self.runs.len()
    }
    fn pid(&self, bucket: usize) -> PidId {
        self.runs[bucket].pid
    }
    fn seeders(&self, bucket: usize) -> bool {
        self.runs[bucket].seeders
    }
    fn v6(&self, bucket: usize) -> bool {
        self.runs[bucket].v6
    }
    fn size(&self, bucket: usize) -> usize {
        let r = &self.runs[bucket];
        (r.end - r.start) as usize
    }
    fn peer(&self, bucket: usize, index: usize) -> SocketAddr {
        let r = &self.runs[bucket];
        let at = r.start as usize + index;
        match (r.v6, self.v4, self.v6) {
            (true, _, Some(f)) => f.seg(r.seg as usize)[at].socket(),
            (false, Some(f), _) => f.seg(r.seg as usize)[at].socket(),
            _ => self.small[at].socket(),
        }
    }
    fn adjacent_reads_pay(&self) -> bool {
        true
    }
}

thread_local! {
    /// Run lists reused between announces, so the hot path does not allocate.
    static RUNS: RefCell<Vec<Run>> = const { RefCell::new(Vec::new()) };
}

/// Everything an announce needs besides the announce itself.
pub struct AnnounceContext<'a, R> {
    pub snapshot: &'a Snapshot,
    pub selector: &'a Selector,
    pub families: Families,
    pub rng: &'a mut R,
    pub scratch: &'a mut Scratch,
    pub sink: &'a mut PeerSink,
}

/// One shard: entries sorted by info hash, behind its lock, plus where they sat after their
/// last move or change of number, kept for [`MemoryStore::prefetch`] (a hint that may be stale,
/// read without the lock and never dereferenced). One cache line, so taking the lock and reading
/// the hint cost one miss, and no two shards share a line.
#[repr(align(64))]
struct Shard {
    entries: RwLock<Vec<Entry>>,
    hint_at: AtomicUsize,
    hint_len: AtomicUsize,
}

impl Shard {
    fn new() -> Self {
        Shard {
            entries: RwLock::new(Vec::new()),
            hint_at: AtomicUsize::new(0),
            hint_len: AtomicUsize::new(0),
        }
    }

    /// Records where `entries` (this shard's, still locked) are now.
    fn publish(&self, entries: &[Entry]) {
        self.hint_at
            .store(entries.as_ptr() as usize, Ordering::Relaxed);
        self.hint_len.store(entries.len(), Ordering::Relaxed);
    }
}

fn read(shard: &Shard) -> RwLockReadGuard<'_, Vec<Entry>> {
    shard.entries.read().unwrap_or_else(|e| e.into_inner())
}

fn write(shard: &Shard) -> RwLockWriteGuard<'_, Vec<Entry>> {
    shard.entries.write().unwrap_or_else(|e| e.into_inner())
}

/// Asks the CPU to start loading the cache line holding `addr` (a hint: nothing is read).
#[allow(unsafe_code)]
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults, writes nothing and changes no later load's result,
    // whatever the address (Intel SDM, PREFETCHh); the pointer is never dereferenced. `sse`,
    // which the intrinsic needs, is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Requests every cache line of `s` (at most 16; the rest is left to the hardware prefetcher).
fn prefetch_slice<T>(s: &[T]) {
    prefetch_span(s.as_ptr() as usize, std::mem::size_of_val(s));
}

/// Requests the cache lines of `len` bytes from `addr` (at most 16).
fn prefetch_span(addr: usize, len: usize) {
    for line in (addr & !63..addr.wrapping_add(len)).step_by(64).take(16) {
        prefetch(line);
    }
}

/// The rounds of [`MemoryStore::prefetch`] that read the store (under a read lock).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// The swarm's heap block.
    Block,
    /// The family's sorted vector, or its index slot and bucket list.
    Index,
    /// The record the index points at.
    Record,
}

/// Where a hash whose first 8 bytes are `head` would sit among `n` evenly spread ones.
fn guess(head: u64, n: usize) -> usize {
    ((u128::from(head) * n as u128) >> 64) as usize
}

/// Finds an info hash in a shard. Info hashes are SHA-1 (SHA-256 for v2) output, so a shard's
/// first 8 bytes are spread evenly over the integers: the search starts where the hash would sit
/// if they were exactly even, usually a neighbour of the right entry (one or two cache lines,
/// where a binary search reads four or five), then gallops outwards, so hashes chosen to bunch
/// up cost at most a binary search's steps twice over. Compares the first 8 bytes as one
/// integer (the rest decide only on a tie): no `memcmp` call per step.
fn search(entries: &[Entry], hash: &InfoHash) -> Result<usize, usize> {
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
fn hash_head(hash: &[u8; 20]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(head)
}

/// The in-memory store. See the module docs.
pub struct MemoryStore {
    shards: Box<[Shard]>,
    /// Keyed (random per process), so clients cannot aim torrents at one shard.
    hasher: foldhash::quality::RandomState,
    torrents: AtomicUsize,
    clock: Clock,
    limits: SwarmConfig,
    seeders: AtomicI64,
    leechers: AtomicI64,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("totals", &self.totals())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    pub fn new(limits: SwarmConfig, clock: Clock) -> Self {
        let shards = (limits.max_torrents / TORRENTS_PER_SHARD)
            .checked_next_power_of_two()
            .unwrap_or(1 << 17)
            .clamp(64, 1 << 17);
        Self {
            shards: (0..shards).map(|_| Shard::new()).collect(),
            hasher: foldhash::quality::RandomState::default(),
            torrents: AtomicUsize::new(0),
            clock,
            limits,
            seeders: AtomicI64::new(0),
            leechers: AtomicI64::new(0),
        }
    }

    /// The store's clock (tests advance it).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn now16(&self) -> u16 {
        self.clock.now() as u16
    }

    fn shard_index(&self, hash: &InfoHash) -> usize {
        let mut h = self.hasher.build_hasher();
        h.write(&hash.0);
        h.finish() as usize & (self.shards.len() - 1)
    }

    fn shard(&self, hash: &InfoHash) -> &Shard {
        &self.shards[self.shard_index(hash)]
    }

    /// Starts loading the cache lines announces of `reqs` (info hash, announcing peer) will
    /// miss on, so a batch's misses overlap instead of coming one after another. In rounds, each
    /// over the whole batch, each round requesting the lines the previous one made available:
    /// every shard; each entry, from the hint the shard keeps (no lock); then, under a read lock
    /// (a shared lock's atomics do not wait for prefetches), each swarm's block, its family's
    /// index slot or sorted vector, and the record the index points at. Looks at the first 64.
    pub fn prefetch(&self, reqs: &[(InfoHash, SocketAddr)]) {
        const MAX: usize = 64;
        let reqs = &reqs[..reqs.len().min(MAX)];
        let mut shards = [0usize; MAX];
        for (slot, (hash, _)) in shards.iter_mut().zip(reqs) {
            *slot = self.shard_index(hash);
            prefetch(&self.shards[*slot] as *const Shard as usize);
        }
        for (&i, (hash, _)) in shards.iter().zip(reqs) {
            let shard = &self.shards[i];
            let at = shard.hint_at.load(Ordering::Relaxed);
            let n = shard.hint_len.load(Ordering::Relaxed);
            if n > 0 {
                let size = std::mem::size_of::<Entry>();
                prefetch_span(at.wrapping_add(guess(hash_head(&hash.0), n) * size), size);
            }
        }
        for stage in [Stage::Block, Stage::Index, Stage::Record] {
            for (&i, (hash, peer)) in shards.iter().zip(reqs) {
                let entries = read(&self.shards[i]);
                if let Ok(at) = search(&entries, hash) {
                    entries[at].prefetch(*peer, stage);
                }
            }
        }
    }

    /// Records an announce and writes the chosen peers into `ctx.sink`.
    pub fn announce<R: Rng>(
        &self,
        a: &Announce,
        ctx: AnnounceContext<'_, R>,
    ) -> Result<(SwarmStats, SelectionStats), StoreError> {
        let snap = ctx.snapshot;
        let (pid_index, pid) = crate::topology::location(snap, a.peer.ip());
        let here = self.shard(&a.info_hash);
        let mut shard = write(here);
        if a.event == Event::Stopped {
            let stats = self.stop(&mut shard, a);
            return Ok((stats, SelectionStats::default()));
        }
        let at = self.swarm_at(here, &mut shard, &a.info_hash, snap.generation() as u32)?;
        let swarm = &mut shard[at];
        let slot = self.record(swarm, a, pid, snap)?;
        let stats = swarm.stats();
        if a.numwant == 0 {
            return Ok((stats, SelectionStats::default()));
        }
        let mut runs = RUNS.take();
        runs.clear();
        swarm.runs(&mut runs);
        let view = View::new(swarm, &runs);
        let req = Requester {
            pid: pid_index,
            location: pid,
            seeder: a.is_seeder(),
            families: ctx.families,
            slot: view.slot(slot),
            numwant: a.numwant,
        };
        let sink = ctx.sink;
        let selection = ctx
            .selector
            .select(&view, snap, &req, ctx.rng, ctx.scratch, &mut |p| {
                sink.push(p)
            });
        RUNS.set(runs);
        Ok((stats, selection))
    }

    /// Index of the torrent's entry, created when new (and the torrent cap allows);
    /// `entries` are `shard`'s, write-locked.
    fn swarm_at(
        &self,
        shard: &Shard,
        entries: &mut Vec<Entry>,
        hash: &InfoHash,
        generation: u32,
    ) -> Result<usize, StoreError> {
        match search(entries, hash) {
            Ok(at) => Ok(at),
            Err(at) => {
                if self.torrents.fetch_add(1, Ordering::Relaxed) >= self.limits.max_torrents {
                    self.torrents.fetch_sub(1, Ordering::Relaxed);
                    return Err(StoreError::TooManyTorrents);
                }
                reserve_one(entries, 2);
                entries.insert(at, Entry::new(hash.0, generation));
                shard.publish(entries);
                Ok(at)
            }
        }
    }

    /// Adds, refreshes or moves the announcing peer; returns where it now is.
    fn record(
        &self,
        swarm: &mut Entry,
        a: &Announce,
        pid: PidId,
        snap: &Snapshot,
    ) -> Result<Slot, StoreError> {
        let seeder = a.is_seeder();
        let bucket = BucketKey::new(pid, seeder);
        let expires = self.now16().wrapping_add(self.limits.peer_timeout as u16);
        match swarm.find(a.peer) {
            Some(slot) if swarm.bucket(slot) == bucket => {
                swarm.touch(slot, expires);
                Ok(slot)
            }
            Some(slot) => {
                let was_seeder = swarm.bucket(slot).seeders();
                self.gauge(was_seeder, -1);
                self.gauge(seeder, 1);
                if a.event == Event::Completed && !was_seeder {
                    swarm.downloaded = swarm.downloaded.saturating_add(1);
                }
                Ok(swarm.rekey(slot, bucket, expires))
            }
            None => {
                if swarm.len() >= self.limits.max_peers_per_swarm {
                    return Err(StoreError::SwarmFull);
                }
                if a.event == Event::Completed {
                    swarm.downloaded = swarm.downloaded.saturating_add(1);
                }
                self.gauge(seeder, 1);
                Ok(swarm.insert(a.peer, bucket, expires, snap))
            }
        }
    }

    fn stop(&self, shard: &mut [Entry], a: &Announce) -> SwarmStats {
        let Ok(at) = search(shard, &a.info_hash) else {
            return SwarmStats::default();
        };
        let swarm = &mut shard[at];
        if let Some(slot) = swarm.find(a.peer) {
            let bucket = swarm.remove(slot);
            self.gauge(bucket.seeders(), -1);
        }
        swarm.stats()
    }

    fn gauge(&self, seeder: bool, delta: i64) {
        let g = if seeder {
            &self.seeders
        } else {
            &self.leechers
        };
        g.fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts for one torrent; unknown torrents are all zeros.
    pub fn scrape(&self, info_hash: &InfoHash) -> SwarmStats {
        let shard = read(self.shard(info_hash));
        search(&shard, info_hash)
            .map(|at| shard[at].stats())
            .unwrap_or_default()
    }

    /// Store-wide totals for metrics.
    pub fn totals(&self) -> StoreTotals {
        StoreTotals {
            torrents: self.torrents.load(Ordering::Relaxed) as u64,
            seeders: self.seeders.load(Ordering::Relaxed).max(0) as u64,
            leechers: self.leechers.load(Ordering::Relaxed).max(0) as u64,
        }
    }

    /// Seeders and leechers per PID, over every swarm (walks bucket runs, not peers). Peers of
    /// PIDs past the 15-bit range count under an id no snapshot holds.
    pub fn pid_counts(&self) -> HashMap<PidId, (u64, u64)> {
        let mut counts = HashMap::new();
        let mut runs = Vec::new();
        for shard in self.shards.iter() {
            for swarm in read(shard).iter() {
                runs.clear();
                swarm.runs(&mut runs);
                for r in &runs {
                    let c: &mut (u64, u64) = counts.entry(r.pid).or_default();
                    let n = u64::from(r.end - r.start);
                    if r.seeders {
                        c.0 += n;
                    } else {
                        c.1 += n;
                    }
                }
            }
        }
        counts
    }

    /// Removes expired peers and empty swarms, re-resolves the PIDs of swarms resolved under an
    /// older snapshot, and gives back memory swarms no longer need. Visits one shard at a time,
    /// so announces to other shards go on meanwhile.
    pub fn sweep(&self, snap: &Snapshot) -> SweepReport {
        let now = self.now16();
        let mut report = SweepReport::default();
        for shard in self.shards.iter() {
            let mut entries = write(shard);
            let before = entries.len();
            entries.retain_mut(|swarm| {
                let (seeders, leechers) = swarm.expire(now);
                self.gauge(true, -i64::from(seeders));
                self.gauge(false, -i64::from(leechers));
                report.peers_removed += u64::from(seeders + leechers);
                report.peers_moved += swarm.rebucket(snap) as u64;
                swarm.compact();
                swarm.len() > 0
            });
            let removed = before - entries.len();
            self.torrents.fetch_sub(removed, Ordering::Relaxed);
            report.torrents_removed += removed as u64;
            shrink(&mut entries);
            shard.publish(&entries);
        }
        report
    }
}

#[cfg(test)]
mod tests;
