//! The in-memory swarm store: torrents in sorted vectors behind sharded locks, each swarm's peers
//! in sorted vectors of 10-byte records. Laid out for memory first: opentracker keeps 2 M peers
//! over 1 M torrents in about 75 MB, and so should we.
//!
//! Where the bytes go:
//! - **Torrents.** A fixed number of shards (a power of two sized from `max_torrents`, about 16
//!   torrents each when full), picked by a keyed hash of the info hash so no client can crowd one
//!   shard. A shard is a vector of 48-byte `Entry`s sorted by info hash, searched by binary
//!   search: unlike a hash table (45-87 % full) it wastes no slots. The torrent count is an
//!   atomic, not a walk over the shards.
//! - **Small swarms** (at most two IPv4 peers: most torrents) keep their peers inside the entry,
//!   with no allocation. Their seeder and leecher counts are read off those two records.
//! - **Larger swarms** own one heap block (`Large`: counts, snapshot generation) and, per address
//!   family, a sorted vector of records (`Family`). A bucket (PID x seeder/leecher) is not stored:
//!   records carry their bucket key and sort by (bucket, ip, port), so a bucket is a contiguous
//!   run. Up to `MIXED_MAX` records a family is that one vector; past it, big buckets get vectors
//!   ("segments") of their own, cut in halves past `SEG_MAX`. So the announce path lists buckets
//!   without reading records (or reads at most `MIXED_MAX` of them), an insert shifts at most one
//!   segment, and nothing is O(peers).
//! - **A peer** is 10 bytes (IPv6: 22): address, port, bucket key, and its expiry as 16-bit
//!   wrapping seconds (valid because the sweep runs far more often than every 2^15 s and timeouts
//!   are below 30000 s, which the config enforces).
//! - Vectors grow one element at a time while short, then by a 32nd: little spare capacity, and
//!   little memory the allocator cannot reuse while the store fills. The sweep returns spare
//!   capacity, merges small segments and turns large swarms that shrank back into small ones.
//!
//! A bucket key is `pid << 1 | seeder` in 16 bits, so PID ids must fit in 15 bits. Ids from
//! 32767 up (a process that has interned that many distinct PID names) share one overflow code
//! that [`Buckets::pid`] reports as an id no snapshot holds: such peers are still stored, counted
//! and returned, and selection treats them like peers of an unknown, far PID.
//!
//! Locks: one shard lock per announce, held only for the update and the selection (no `.await`
//! anywhere here). The sweep visits one shard at a time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use p4p_itracker::{PidId, Snapshot};
use rand::Rng;

use super::{Families, PeerSink, StoreError, StoreTotals, SweepReport};
use crate::clock::Clock;
use crate::config::SwarmConfig;
use crate::selection::{Buckets, Requester, Scratch, SelectionStats, Selector};
use crate::types::{Announce, Event, InfoHash, SwarmStats};

/// Most records in a segment holding several buckets. Past it the segment splits at a bucket
/// boundary, so in a large swarm every big bucket has segments of its own and listing the
/// buckets reads no record; small buckets (many sparse PIDs) still share segments.
const MIXED_MAX: usize = if cfg!(test) { 4 } else { 64 };

/// Most records in a segment of one bucket; past it the segment splits in half, so an insert
/// shifts at most this many records (2.6 MB) while a 1 M-peer swarm still lists about ten
/// buckets.
const SEG_MAX: usize = if cfg!(test) { 8 } else { 1 << 18 };

/// Peers a small swarm holds inside its entry.
const SMALL: usize = 2;

/// Torrents per shard aimed at when the store holds `max_torrents`: few, so the binary search
/// reads about four entries that lie close together (256 per shard cost ~8 cache misses per
/// announce in the race profile). A shard costs ~40 bytes when empty.
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
    /// Identity inside a swarm, (ip, port), ordered as (ip, port).
    type Addr: Ord + Copy;
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

/// End of the bucket run starting at `start`: runs are often short, so a few records are read
/// before bisecting the rest.
fn run_end<P: Record>(recs: &[P], start: usize) -> usize {
    let bucket = recs[start].bucket();
    let near = (start + 8).min(recs.len());
    match recs[start + 1..near]
        .iter()
        .position(|p| p.bucket() != bucket)
    {
        Some(i) => start + 1 + i,
        None => near + recs[near..].partition_point(|p| p.bucket() == bucket),
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

/// A sorted, non-empty part of a family, with the buckets of its first and last records kept
/// beside the pointer so searches and run listing rarely touch the records.
#[derive(Clone, Debug)]
struct Seg<P> {
    first: BucketKey,
    last: BucketKey,
    recs: Vec<P>,
}

impl<P: Record> Seg<P> {
    fn new(recs: Vec<P>) -> Self {
        let mut seg = Seg {
            first: BucketKey::default(),
            last: BucketKey::default(),
            recs,
        };
        seg.refresh();
        seg
    }

    fn refresh(&mut self) {
        if let (Some(first), Some(last)) = (self.recs.first(), self.recs.last()) {
            self.first = first.bucket();
            self.last = last.bucket();
        }
    }

    /// Whether the segment is past its size limit (see [`MIXED_MAX`], [`SEG_MAX`]).
    fn over_full(&self) -> bool {
        let max = if self.first == self.last {
            SEG_MAX
        } else {
            MIXED_MAX
        };
        self.recs.len() > max
    }

    /// Whether `self` and the segment after it fit in half a segment together.
    fn merges_with(&self, next: &Seg<P>) -> bool {
        let max = if self.first == next.last {
            SEG_MAX
        } else {
            MIXED_MAX
        };
        self.recs.len() + next.recs.len() <= max / 2
    }
}

/// One address family of a large swarm: records sorted by (bucket, ip, port), cut into
/// non-empty segments (see [`MIXED_MAX`], [`SEG_MAX`]). A family of up to [`MIXED_MAX`]
/// records is one segment, kept inline.
#[derive(Debug)]
enum Family<P> {
    One(Seg<P>),
    /// Never exactly one segment; empty when the family has no peers.
    Many(Box<[Seg<P>]>),
}

impl<P> Default for Family<P> {
    fn default() -> Self {
        Family::Many(Box::default())
    }
}

impl<P: Record> Family<P> {
    fn segs(&self) -> &[Seg<P>] {
        match self {
            Family::One(seg) => std::slice::from_ref(seg),
            Family::Many(segs) => segs,
        }
    }

    fn segs_mut(&mut self) -> &mut [Seg<P>] {
        match self {
            Family::One(seg) => std::slice::from_mut(seg),
            Family::Many(segs) => segs,
        }
    }

    fn take(&mut self) -> Vec<Seg<P>> {
        match std::mem::take(self) {
            Family::One(seg) => vec![seg],
            Family::Many(segs) => segs.into_vec(),
        }
    }

    fn set(&mut self, mut segs: Vec<Seg<P>>) {
        *self = match segs.len() {
            1 => Family::One(segs.remove(0)),
            _ => Family::Many(segs.into_boxed_slice()),
        };
    }

    fn is_empty(&self) -> bool {
        self.segs().is_empty()
    }

    fn len(&self) -> usize {
        self.segs().iter().map(|s| s.recs.len()).sum()
    }

    fn rec(&self, seg: usize, idx: usize) -> P {
        self.segs()[seg].recs[idx]
    }

    /// The segment that holds, or should receive, the record sorting at `key` (in `bucket`).
    /// Needs at least one segment. Every segment before it ends below `key` and every one after
    /// starts above it.
    fn seg_for(&self, bucket: BucketKey, key: P::Order) -> usize {
        let segs = self.segs();
        let lo = segs.partition_point(|s| s.last < bucket);
        let hi = segs.partition_point(|s| s.first <= bucket);
        if lo >= hi {
            // No segment holds the bucket: append to the one before the gap.
            return lo.saturating_sub(1);
        }
        lo + segs[lo..hi - 1].partition_point(|s| s.recs.last().is_some_and(|r| r.order() < key))
    }

    fn find_exact(&self, bucket: BucketKey, addr: P::Addr) -> Option<(usize, usize)> {
        if self.is_empty() {
            return None;
        }
        let key = P::order_of(bucket, addr);
        let s = self.seg_for(bucket, key);
        let found = self.segs()[s].recs.binary_search_by_key(&key, P::order);
        found.ok().map(|i| (s, i))
    }

    /// Searches every bucket, run by run.
    fn find_anywhere(&self, addr: P::Addr) -> Option<(usize, usize)> {
        for (s, seg) in self.segs().iter().enumerate() {
            let recs = &seg.recs;
            let mut start = 0;
            while start < recs.len() {
                let end = run_end(recs, start);
                if let Ok(i) = recs[start..end].binary_search_by_key(&addr, P::addr) {
                    return Some((s, start + i));
                }
                start = end;
            }
        }
        None
    }

    /// Where the peer is. A short family is scanned; a longer one is searched in the buckets of
    /// `pid` (the `seeder` one first: a peer usually announces the role it has) and, when
    /// resolved under another snapshot, in every bucket.
    fn find(&self, addr: P::Addr, pid: PidId, seeder: bool, stale: bool) -> Option<(usize, usize)> {
        if let Family::One(seg) = self {
            if seg.recs.len() <= MIXED_MAX {
                return seg
                    .recs
                    .iter()
                    .position(|p| p.addr() == addr)
                    .map(|i| (0, i));
            }
        }
        [seeder, !seeder]
            .into_iter()
            .find_map(|seeder| self.find_exact(BucketKey::new(pid, seeder), addr))
            .or_else(|| stale.then(|| self.find_anywhere(addr)).flatten())
    }

    fn insert(&mut self, rec: P) -> (usize, usize) {
        if self.is_empty() {
            *self = Family::One(Seg::new(vec![rec]));
            return (0, 0);
        }
        let key = rec.order();
        let s = self.seg_for(rec.bucket(), key);
        let seg = &mut self.segs_mut()[s];
        let i = seg.recs.partition_point(|p| p.order() < key);
        reserve_one(&mut seg.recs, 1);
        seg.recs.insert(i, rec);
        seg.refresh();
        if seg.over_full() {
            self.split(s, i)
        } else {
            (s, i)
        }
    }

    /// Splits segment `s` at the bucket boundary nearest its middle (in the middle when it holds
    /// one bucket); returns where the record at `i` ends up.
    fn split(&mut self, s: usize, i: usize) -> (usize, usize) {
        let seg = &mut self.segs_mut()[s];
        let cut = cut_point(&seg.recs);
        let tail = seg.recs.split_off(cut);
        seg.recs.shrink_to(cut + cut / 8);
        seg.refresh();
        let mut segs = self.take();
        segs.insert(s + 1, Seg::new(tail));
        self.set(segs);
        if i < cut {
            (s, i)
        } else {
            (s + 1, i - cut)
        }
    }

    fn remove(&mut self, s: usize, i: usize) -> P {
        let seg = &mut self.segs_mut()[s];
        let rec = seg.recs.remove(i);
        if seg.recs.is_empty() {
            let mut segs = self.take();
            segs.remove(s);
            self.set(segs);
        } else {
            seg.refresh();
        }
        rec
    }

    /// Replaces the record at (s, i) with `rec` (same address, new bucket) at its sorted place.
    fn rekey(&mut self, s: usize, i: usize, rec: P) -> (usize, usize) {
        if self.seg_for(rec.bucket(), rec.order()) == s {
            let seg = &mut self.segs_mut()[s];
            let j = rekey_in(&mut seg.recs, i, rec);
            seg.refresh();
            // A segment of one bucket that now holds two may be too long for a mixed one.
            return if seg.over_full() {
                self.split(s, j)
            } else {
                (s, j)
            };
        }
        self.remove(s, i);
        self.insert(rec)
    }

    /// Removes expired peers; returns how many (seeders, leechers).
    fn expire(&mut self, now: u16) -> (u32, u32) {
        let mut removed = (0, 0);
        for seg in self.segs_mut() {
            seg.recs.retain(|p| {
                let gone = expired(p.expires(), now);
                if gone && p.bucket().seeders() {
                    removed.0 += 1;
                } else if gone {
                    removed.1 += 1;
                }
                !gone
            });
            seg.refresh();
        }
        self.tidy();
        removed
    }

    /// Drops empty segments, merges neighbours that fit in half a segment, and returns spare
    /// capacity.
    fn tidy(&mut self) {
        let segs = self.segs();
        let merge = segs.iter().any(|s| s.recs.is_empty())
            || segs.windows(2).any(|w| w[0].merges_with(&w[1]));
        if merge {
            let mut out: Vec<Seg<P>> = Vec::new();
            for seg in self.take() {
                match out.last_mut() {
                    _ if seg.recs.is_empty() => {}
                    Some(prev) if prev.merges_with(&seg) => {
                        prev.recs.extend_from_slice(&seg.recs);
                        prev.refresh();
                    }
                    _ => out.push(seg),
                }
            }
            self.set(out);
        }
        for seg in self.segs_mut() {
            shrink(&mut seg.recs);
        }
    }

    /// Re-resolves every record's PID under `snap`; returns how many changed bucket.
    fn rebucket(&mut self, snap: &Snapshot) -> usize {
        let mut moved = 0;
        for seg in self.segs_mut() {
            for p in &mut seg.recs {
                let to = BucketKey::new(resolve(snap, p.socket().ip()), p.bucket().seeders());
                if to != p.bucket() {
                    p.set_bucket(to);
                    moved += 1;
                }
            }
        }
        if moved > 0 {
            let segs = self.take();
            let mut all: Vec<P> = match <[_; 1]>::try_from(segs) {
                Ok([one]) => one.recs,
                Err(segs) => segs.into_iter().flat_map(|s| s.recs).collect(),
            };
            all.sort_unstable_by_key(P::order);
            self.set(chunk(all));
        }
        moved
    }

    /// Appends the bucket runs of every segment to `out`.
    fn runs(&self, v6: bool, out: &mut Vec<Run>) {
        for (s, seg) in self.segs().iter().enumerate() {
            if seg.first == seg.last {
                out.push(Run::new(seg.first, v6, s, 0, seg.recs.len()));
            } else {
                push_runs(&seg.recs, v6, s, out);
            }
        }
    }
}

/// Where to split an over-full segment: the bucket boundary nearest the middle, or the middle
/// of a segment of one bucket.
fn cut_point<P: Record>(recs: &[P]) -> usize {
    let (len, mid) = (recs.len(), recs.len() / 2);
    let bucket = recs[mid].bucket();
    let lo = recs.partition_point(|p| p.bucket() < bucket);
    let hi = recs.partition_point(|p| p.bucket() <= bucket);
    match (lo > 0, hi < len) {
        (true, true) if mid - lo <= hi - mid => lo,
        (_, true) => hi,
        (true, false) => lo,
        (false, false) => mid,
    }
}

/// Cuts sorted records into segments: runs longer than half a mixed segment get segments of
/// their own (halves of [`SEG_MAX`] at most), shorter ones share segments of up to half
/// [`MIXED_MAX`].
fn chunk<P: Record>(recs: Vec<P>) -> Vec<Seg<P>> {
    let (Some(first), Some(last)) = (recs.first(), recs.last()) else {
        return Vec::new();
    };
    let one_bucket = first.bucket() == last.bucket();
    if recs.len() <= MIXED_MAX || (one_bucket && recs.len() <= SEG_MAX) {
        return vec![Seg::new(recs)];
    }
    let mut segs = Vec::new();
    let (mut open, mut start) = (0, 0);
    while start < recs.len() {
        let end = run_end(&recs, start);
        if end - start > MIXED_MAX / 2 {
            if open < start {
                segs.push(Seg::new(recs[open..start].to_vec()));
            }
            let pieces = recs[start..end].chunks(SEG_MAX / 2);
            segs.extend(pieces.map(|piece| Seg::new(piece.to_vec())));
            open = end;
        } else if end - open > MIXED_MAX / 2 {
            segs.push(Seg::new(recs[open..start].to_vec()));
            open = start;
        }
        start = end;
    }
    if open < recs.len() {
        segs.push(Seg::new(recs[open..].to_vec()));
    }
    segs
}

/// Appends the bucket runs of sorted records (segment `seg` of a family) to `out`: one pass
/// over a short segment, searches in a long one.
fn push_runs<P: Record>(recs: &[P], v6: bool, seg: usize, out: &mut Vec<Run>) {
    let Some(first) = recs.first() else {
        return;
    };
    let mut start = 0;
    if recs.len() <= MIXED_MAX {
        let mut bucket = first.bucket();
        for (i, p) in recs.iter().enumerate().skip(1) {
            if p.bucket() != bucket {
                out.push(Run::new(bucket, v6, seg, start, i));
                (start, bucket) = (i, p.bucket());
            }
        }
        out.push(Run::new(bucket, v6, seg, start, recs.len()));
        return;
    }
    while start < recs.len() {
        let end = run_end(recs, start);
        out.push(Run::new(recs[start].bucket(), v6, seg, start, end));
        start = end;
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
        recs.sort_unstable_by_key(Peer4::order);
        let (seeders, leechers) = small.counts();
        let mut v4 = Family::default();
        v4.set(chunk(recs));
        Large {
            v4,
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

    fn seg4(&self, seg: usize) -> &[Peer4] {
        match &self.peers {
            Peers::Small(s) => s.slice(),
            Peers::Large(l) => &l.v4.segs()[seg].recs,
        }
    }

    fn seg6(&self, seg: usize) -> &[Peer6] {
        match &self.peers {
            Peers::Small(_) => &[],
            Peers::Large(l) => l.v6.as_ref().map_or(&[], |f| &f.segs()[seg].recs),
        }
    }

    /// Where the peer is now. A small swarm is searched in full; a large one in the buckets of
    /// `pid` first (`seeder`'s first) and, when resolved under another snapshot, in every bucket
    /// of the family.
    fn find(&self, peer: SocketAddr, pid: PidId, seeder: bool, generation: u32) -> Option<Slot> {
        match (&self.peers, peer) {
            (Peers::Small(s), SocketAddr::V4(a)) => {
                let addr = Peer4::addr_of(a);
                let at = s.slice().iter().position(|p| p.addr() == addr);
                at.map(|i| Slot::new(false, (0, i)))
            }
            (Peers::Small(_), SocketAddr::V6(_)) => None,
            (Peers::Large(l), SocketAddr::V4(a)) => {
                let found =
                    l.v4.find(Peer4::addr_of(a), pid, seeder, l.generation != generation);
                found.map(|at| Slot::new(false, at))
            }
            (Peers::Large(l), SocketAddr::V6(a)) => {
                let family = l.v6.as_ref()?;
                let found = family.find(Peer6::addr_of(a), pid, seeder, l.generation != generation);
                found.map(|at| Slot::new(true, at))
            }
        }
    }

    fn bucket(&self, slot: Slot) -> BucketKey {
        if slot.v6 {
            self.seg6(slot.seg)[slot.idx].bucket()
        } else {
            self.seg4(slot.seg)[slot.idx].bucket()
        }
    }

    fn touch(&mut self, slot: Slot, expires: u16) {
        match &mut self.peers {
            Peers::Small(s) => s.peers[slot.idx].expires = expires,
            Peers::Large(l) if slot.v6 => {
                l.v6_mut().segs_mut()[slot.seg].recs[slot.idx].expires = expires;
            }
            Peers::Large(l) => l.v4.segs_mut()[slot.seg].recs[slot.idx].expires = expires,
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
        for seg in l.v4.segs() {
            for &p in &seg.recs {
                small.peers[usize::from(small.len)] = p;
                small.len += 1;
            }
        }
        self.peers = Peers::Small(small);
    }

    /// Appends the swarm's bucket runs (IPv4 first) to `out`.
    fn runs(&self, out: &mut Vec<Run>) {
        match &self.peers {
            Peers::Small(s) => push_runs(s.slice(), false, 0, out),
            Peers::Large(l) => {
                l.v4.runs(false, out);
                if let Some(f) = &l.v6 {
                    f.runs(true, out);
                }
            }
        }
    }
}

/// One bucket run of one segment: what selection sees as a bucket. A bucket split over several
/// segments shows as several runs of the same PID, which selection groups anyway.
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
    v4: &'a [Seg<Peer4>],
    v6: &'a [Seg<Peer6>],
    runs: &'a [Run],
}

impl<'a> View<'a> {
    fn new(entry: &'a Entry, runs: &'a [Run]) -> Self {
        match &entry.peers {
            Peers::Small(s) => View {
                small: s.slice(),
                v4: &[],
                v6: &[],
                runs,
            },
            Peers::Large(l) => View {
                small: &[],
                v4: l.v4.segs(),
                v6: l.v6.as_deref().map_or(&[], Family::segs),
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
        if r.v6 {
            self.v6[r.seg as usize].recs[at].socket()
        } else if let Some(seg) = self.v4.get(r.seg as usize) {
            seg.recs[at].socket()
        } else {
            self.small[at].socket()
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

/// One shard: entries sorted by info hash.
type Shard = RwLock<Vec<Entry>>;

fn read(shard: &Shard) -> RwLockReadGuard<'_, Vec<Entry>> {
    shard.read().unwrap_or_else(|e| e.into_inner())
}

fn write(shard: &Shard) -> RwLockWriteGuard<'_, Vec<Entry>> {
    shard.write().unwrap_or_else(|e| e.into_inner())
}

/// Binary search by info hash, comparing the first 8 bytes as one integer (the rest decide only
/// on a tie): no `memcmp` call per step.
fn search(entries: &[Entry], hash: &InfoHash) -> Result<usize, usize> {
    let head = hash_head(&hash.0);
    entries.binary_search_by(|e| {
        hash_head(&e.hash)
            .cmp(&head)
            .then_with(|| e.hash[8..].cmp(&hash.0[8..]))
    })
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
            shards: (0..shards).map(|_| RwLock::new(Vec::new())).collect(),
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

    fn shard(&self, hash: &InfoHash) -> &Shard {
        let mut h = self.hasher.build_hasher();
        h.write(&hash.0);
        &self.shards[h.finish() as usize & (self.shards.len() - 1)]
    }

    /// Records an announce and writes the chosen peers into `ctx.sink`.
    pub fn announce<R: Rng>(
        &self,
        a: &Announce,
        ctx: AnnounceContext<'_, R>,
    ) -> Result<(SwarmStats, SelectionStats), StoreError> {
        let snap = ctx.snapshot;
        let (pid_index, pid) = crate::topology::location(snap, a.peer.ip());
        let mut shard = write(self.shard(&a.info_hash));
        if a.event == Event::Stopped {
            let stats = self.stop(&mut shard, a, pid, snap.generation() as u32);
            return Ok((stats, SelectionStats::default()));
        }
        let at = self.swarm_at(&mut shard, &a.info_hash, snap.generation() as u32)?;
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

    /// Index of the torrent's entry, created when new (and the torrent cap allows).
    fn swarm_at(
        &self,
        shard: &mut Vec<Entry>,
        hash: &InfoHash,
        generation: u32,
    ) -> Result<usize, StoreError> {
        match search(shard, hash) {
            Ok(at) => Ok(at),
            Err(at) => {
                if self.torrents.fetch_add(1, Ordering::Relaxed) >= self.limits.max_torrents {
                    self.torrents.fetch_sub(1, Ordering::Relaxed);
                    return Err(StoreError::TooManyTorrents);
                }
                reserve_one(shard, 2);
                shard.insert(at, Entry::new(hash.0, generation));
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
        match swarm.find(a.peer, pid, seeder, snap.generation() as u32) {
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

    fn stop(&self, shard: &mut [Entry], a: &Announce, pid: PidId, generation: u32) -> SwarmStats {
        let Ok(at) = search(shard, &a.info_hash) else {
            return SwarmStats::default();
        };
        let swarm = &mut shard[at];
        if let Some(slot) = swarm.find(a.peer, pid, a.is_seeder(), generation) {
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
        }
        report
    }
}

#[cfg(test)]
mod tests;
