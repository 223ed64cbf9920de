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
//!   records, so selection lists buckets without reading records. Up to `sorted_max` records a
//!   family is one vector sorted by (bucket, ip, port), scanned to find a peer. Past it the
//!   family is hashed: a vector per bucket, unordered, plus an index from address to (bucket,
//!   position) in 8-byte index slots, at most 3/4 full (about 11-21 bytes per peer on top of the
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
//! A bucket key is `code << 1 | seeder` in 16 bits: the code is the PID id (below 16,384: the
//! interner reuses the ids of names out of use, see [`p4p_itracker::pid`]) or an AS location's
//! id (16,383 of them, from 16,384 up). More PID names in use at once than that share one
//! overflow code that [`Buckets::pid`](crate::selection::Buckets::pid) reports as an id no
//! snapshot holds: such peers are still stored, counted and returned, selection treats them
//! like peers of an unknown, far PID, and the interner counts them (`pid_ids_overflowed_total`).
//!
//! Per-source quotas (see [`crate::swarm::quota`]): a new torrent takes one from its source's
//! budget; a new peer is refused when its swarm holds `max_peers_per_source` of its source
//! already, counted on the lookup's miss path (exactly in a small or sorted swarm, from the
//! source cells of the address index in a hashed one).
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
//!
//! Words, each naming one thing:
//! - **bucket key** (`BucketKey`): PID x role (seeder or leecher), in 16 bits.
//! - **record** (`Peer4`, `Peer6`): one peer as stored.
//! - **bucket**: the records of one bucket key in one family.
//! - **small / large swarm** (`Small`, `Large`): peers inside the entry, or on the heap in one
//!   family per address family.
//! - **family** (`Family`): the records of one address family of a large swarm, *sorted* (one
//!   vector) or *hashed* (a vector per bucket, plus an index).
//! - **segment**: one vector of records: a sorted family's or a small swarm's (segment 0), or a
//!   hashed family's bucket (segment = bucket number, its place in the family's bucket list).
//! - **peer position** (`PeerPos`): where a peer is: family, segment, index in the segment.
//! - **index slot**: one 8-byte cell of a hashed family's address index, holding a tag and an
//!   `IndexLoc` (bucket number, index in the bucket). "Slot" means only this.
//! - **run** (`Run`): a contiguous range of one bucket's records in one segment: what selection
//!   calls a bucket. The `View` hands a swarm's runs to selection. A large swarm with at least
//!   `INDEXED_MIN` hashed buckets (spread over many PIDs of an ISP-scale map) is handed to
//!   `p4p` as an `IndexedView` instead: no run is listed until selection asks for a PID's.
//! - **directory**: a hashed family's table from PID code to its first bucket number (kept from
//!   64 buckets on, rebuilt when a bucket is added or dropped), how an `IndexedView` finds a
//!   PID's buckets with one load.
//! - **entry** (`Entry`): one torrent; **shard** (`Shard`): a lock over entries sorted by info
//!   hash.
//!
//! Files: `record.rs`, `family.rs`, `entry.rs`, `view.rs` and this one (the store: announce,
//! scrape, sweep) hold the design. Three files hold code that is there for speed and can be
//! skipped on a first read: `index.rs` (the address index, a hand-written hash table: read it
//! as a map from address to `IndexLoc`), `shard.rs` (the shard layout and an interpolating
//! search: read it as a binary search) and `prefetch.rs` (the batch prefetch rounds and the
//! crate's one `unsafe`).

mod entry;
mod family;
mod index;
mod prefetch;
mod record;
mod remote;
pub use remote::RemotePeer;
mod shard;
mod view;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use p4p_itracker::{PidId, Snapshot};
use rand::Rng;

use self::entry::{Entry, PeerPos};
use self::record::{reserve_one, shrink, BucketKey};
use self::shard::{read, search, write, Shard};
use self::view::{IndexedView, View, RUNS};
use super::quota::SourceBudget;
use super::{AnnounceContext, StoreError, StoreTotals, SweepReport};
use crate::access::UNCHECKED;
use crate::clock::Clock;
use crate::config::SwarmConfig;
use crate::selection::{Requester, SelectionStats};
use crate::types::{Announce, Event, InfoHash, SwarmStats};

/// Most records of a family kept in one sorted vector (scanned to find a peer); past it the
/// family is hashed. The store's `sorted_max` unless built by [`MemoryStore::with_sorted_max`].
const SORTED_MAX: usize = 64;

/// Torrents per shard aimed at when the store holds `max_torrents`: few, so the search reads
/// one or two cache lines of entries (a binary search over 256 entries misses ~8 lines). A
/// shard costs ~40 bytes when empty.
const TORRENTS_PER_SHARD: usize = 16;

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
    /// Most records of a family kept sorted ([`SORTED_MAX`] unless a test chose another).
    sorted_max: usize,
    /// New torrents per source per minute (see [`crate::swarm::quota`]).
    budget: SourceBudget,
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
        Self::with_sorted_max(limits, clock, SORTED_MAX)
    }

    /// A store whose families turn from sorted to hashed past `sorted_max` records (and back at
    /// half of it): tests use a small value to reach both forms with few peers.
    pub(crate) fn with_sorted_max(limits: SwarmConfig, clock: Clock, sorted_max: usize) -> Self {
        let shards = (limits.max_torrents / TORRENTS_PER_SHARD)
            .checked_next_power_of_two()
            .unwrap_or(1 << 17)
            .clamp(64, 1 << 17);
        Self {
            shards: (0..shards).map(|_| Shard::new()).collect(),
            hasher: foldhash::quality::RandomState::default(),
            torrents: AtomicUsize::new(0),
            clock,
            seeders: AtomicI64::new(0),
            leechers: AtomicI64::new(0),
            sorted_max,
            budget: SourceBudget::new(limits.new_torrents_per_source),
            limits,
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
        let found = search(&shard, &a.info_hash);
        let admitted = match (&ctx.access, found) {
            (None, _) => UNCHECKED,
            (Some(access), Ok(at)) => {
                let generation = access.generation();
                if shard[at].admitted() != generation {
                    if !access.allows(&a.info_hash) {
                        return Err(StoreError::NotAllowed);
                    }
                    shard[at].set_admitted(generation);
                }
                generation
            }
            (Some(access), Err(_)) if access.allows(&a.info_hash) => access.generation(),
            (Some(_), Err(_)) => return Err(StoreError::NotAllowed),
        };
        if a.event == Event::Stopped {
            let stats = found.map(|at| self.stop(&mut shard[at], a));
            return Ok((stats.unwrap_or_default(), SelectionStats::default()));
        }
        let at = self.swarm_at(
            here,
            &mut shard,
            found,
            &a.info_hash,
            Some(a.peer.ip()),
            (snap.generation() as u32, admitted),
        )?;
        let swarm = &mut shard[at];
        let pos = self.record(swarm, a, pid, snap)?;
        let stats = swarm.stats();
        if a.numwant == 0 {
            return Ok((stats, SelectionStats::default()));
        }
        let mut req = Requester {
            pid_index,
            bucket_id: pid,
            seeder: a.is_seeder(),
            families: ctx.families,
            position: None,
            numwant: a.numwant,
        };
        let sink = ctx.sink;
        let mut out = |p| sink.push(p);
        let runs = RUNS.take();
        // A swarm over many PIDs is not listed: `p4p` reads it PID by PID along the
        // snapshot's preference order, `random` draws from it.
        let view = IndexedView::of(swarm, runs);
        let (selection, runs) = match view {
            Ok(mut view) => {
                req.position = view.own(pid, pos);
                let selection =
                    ctx.selector
                        .select(&view, snap, &req, ctx.rng, ctx.scratch, &mut out);
                (selection, view.into_runs())
            }
            Err(mut runs) => {
                runs.clear();
                swarm.runs(&mut runs);
                let view = View::new(swarm, &runs);
                req.position = view.run_pos(pos);
                let selection =
                    ctx.selector
                        .select(&view, snap, &req, ctx.rng, ctx.scratch, &mut out);
                (selection, runs)
            }
        };
        RUNS.set(runs);
        Ok((stats, selection))
    }

    /// Index of the entry of a torrent, created when new (and the torrent cap and, for an
    /// announcing `source`, its budget of new torrents allow; deltas another node replicates
    /// were admitted there and pass no source); `entries` are `shard`'s, write-locked, and
    /// `found` is [`search`]'s answer in them. A new entry takes `generations`: the snapshot's
    /// and the access list's it was admitted under (see [`Entry::new`]).
    fn swarm_at(
        &self,
        shard: &Shard,
        entries: &mut Vec<Entry>,
        found: Result<usize, usize>,
        hash: &InfoHash,
        source: Option<std::net::IpAddr>,
        (generation, admitted): (u32, u16),
    ) -> Result<usize, StoreError> {
        match found {
            Ok(at) => Ok(at),
            Err(at) => {
                if self.torrents.fetch_add(1, Ordering::Relaxed) >= self.limits.max_torrents {
                    self.torrents.fetch_sub(1, Ordering::Relaxed);
                    return Err(StoreError::TooManyTorrents);
                }
                if source.is_some_and(|ip| !self.budget.take(ip, self.clock.now())) {
                    self.torrents.fetch_sub(1, Ordering::Relaxed);
                    return Err(StoreError::SourceBudgetSpent);
                }
                reserve_one(entries, 2);
                entries.insert(at, Entry::new(hash.0, generation, admitted));
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
    ) -> Result<PeerPos, StoreError> {
        let seeder = a.is_seeder();
        let bucket = BucketKey::new(pid, seeder);
        let expires = self.now16().wrapping_add(self.limits.peer_timeout as u16);
        match swarm.find(a.peer) {
            Some(pos) if swarm.bucket(pos) == bucket => {
                swarm.touch(pos, expires);
                Ok(pos)
            }
            Some(pos) => {
                let was_seeder = swarm.bucket(pos).seeders();
                self.gauge(was_seeder, -1);
                self.gauge(seeder, 1);
                if a.event == Event::Completed && !was_seeder {
                    swarm.downloaded = swarm.downloaded.saturating_add(1);
                }
                Ok(swarm.rekey(pos, bucket, expires))
            }
            None => {
                if swarm.len() >= self.limits.max_peers_per_swarm {
                    return Err(StoreError::SwarmFull);
                }
                let cap = self.limits.max_peers_per_source;
                if cap > 0 && swarm.host_peers(a.peer) >= cap {
                    return Err(StoreError::SourceFull);
                }
                if a.event == Event::Completed {
                    swarm.downloaded = swarm.downloaded.saturating_add(1);
                }
                self.gauge(seeder, 1);
                Ok(swarm.insert(a.peer, bucket, expires, snap, self.sorted_max))
            }
        }
    }

    fn stop(&self, swarm: &mut Entry, a: &Announce) -> SwarmStats {
        if let Some(pos) = swarm.find(a.peer) {
            let bucket = swarm.remove(pos);
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

    /// Calls `f` with every torrent's counts, one shard at a time under its read lock (announces
    /// to other shards go on meanwhile; `f` should be quick).
    pub fn for_each_swarm(&self, mut f: impl FnMut(InfoHash, SwarmStats)) {
        for shard in self.shards.iter() {
            for swarm in read(shard).iter() {
                f(InfoHash(swarm.hash), swarm.stats());
            }
        }
    }

    /// Makes every swarm forget the access-list generation it was admitted under, so its next
    /// announce looks the torrent up (see [`crate::access::Admission`]: before the generation
    /// counter wraps). One shard at a time, under its write lock.
    pub fn forget_admissions(&self) {
        for shard in self.shards.iter() {
            for swarm in write(shard).iter_mut() {
                swarm.set_admitted(UNCHECKED);
            }
        }
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
        self.budget.sweep(self.clock.now());
        let mut report = SweepReport::default();
        for shard in self.shards.iter() {
            let mut entries = write(shard);
            let before = entries.len();
            entries.retain_mut(|swarm| {
                let (seeders, leechers) = swarm.expire(now, self.sorted_max);
                self.gauge(true, -i64::from(seeders));
                self.gauge(false, -i64::from(leechers));
                report.peers_removed += u64::from(seeders + leechers);
                report.peers_moved += swarm.rebucket(snap, self.sorted_max) as u64;
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
