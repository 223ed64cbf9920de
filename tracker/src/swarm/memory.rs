//! The in-memory swarm store: sharded by info hash (dashmap), peers in sorted vectors.
//!
//! Layout, chosen for memory (opentracker keeps an IPv4 peer in 8 bytes; so do we):
//! - a swarm is a short list of buckets, one per PID x family x seeder/leecher that has peers;
//! - a bucket is a vector of peers sorted by (ip, port), so finding a peer is a binary search;
//! - an IPv4 peer is 8 bytes: address, port and its expiry as 16-bit wrapping seconds (valid
//!   because the sweep runs far more often than every 2^15 s and timeouts are below 30000 s).
//!
//! Locks: one shard lock per announce, held only for the update and the selection (no `.await`
//! anywhere here). The sweep visits one shard at a time.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use p4p_itracker::{PidId, Snapshot};
use rand::Rng;

use super::{Families, PeerSink, StoreError, StoreTotals, SweepReport};
use crate::clock::Clock;
use crate::config::SwarmConfig;
use crate::selection::{Buckets, Requester, Scratch, SelectionStats, Selector};
use crate::types::{Announce, Event, InfoHash, SwarmStats};

/// An IPv4 peer: 8 bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Peer4 {
    ip: [u8; 4],
    port: u16,
    expires: u16,
}

/// An IPv6 peer: 20 bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Peer6 {
    ip: [u8; 16],
    port: u16,
    expires: u16,
}

/// What both peer records offer to the generic bucket code.
trait Record: Copy {
    type Key: Ord + Copy;
    fn key(&self) -> Self::Key;
    fn expires(&self) -> u16;
    fn set_expires(&mut self, t: u16);
    fn addr(&self) -> SocketAddr;
}

impl Record for Peer4 {
    type Key = ([u8; 4], u16);
    fn key(&self) -> Self::Key {
        (self.ip, self.port)
    }
    fn expires(&self) -> u16 {
        self.expires
    }
    fn set_expires(&mut self, t: u16) {
        self.expires = t;
    }
    fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(self.ip), self.port))
    }
}

impl Record for Peer6 {
    type Key = ([u8; 16], u16);
    fn key(&self) -> Self::Key {
        (self.ip, self.port)
    }
    fn expires(&self) -> u16 {
        self.expires
    }
    fn set_expires(&mut self, t: u16) {
        self.expires = t;
    }
    fn addr(&self) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(self.ip), self.port, 0, 0))
    }
}

#[derive(Debug)]
enum Peers {
    V4(Vec<Peer4>),
    V6(Vec<Peer6>),
}

#[derive(Debug)]
struct Bucket {
    pid: PidId,
    seeders: bool,
    peers: Peers,
}

/// The peer being announced, in both shapes.
#[derive(Copy, Clone)]
enum Key {
    V4(Peer4),
    V6(Peer6),
}

impl Key {
    fn new(addr: SocketAddr, expires: u16) -> Key {
        match addr {
            SocketAddr::V4(a) => Key::V4(Peer4 {
                ip: a.ip().octets(),
                port: a.port(),
                expires,
            }),
            SocketAddr::V6(a) => Key::V6(Peer6 {
                ip: a.ip().octets(),
                port: a.port(),
                expires,
            }),
        }
    }

    fn v6(&self) -> bool {
        matches!(self, Key::V6(_))
    }
}

impl Bucket {
    fn new(pid: PidId, seeders: bool, v6: bool) -> Self {
        let peers = if v6 {
            Peers::V6(Vec::new())
        } else {
            Peers::V4(Vec::new())
        };
        Self {
            pid,
            seeders,
            peers,
        }
    }

    fn v6(&self) -> bool {
        matches!(self.peers, Peers::V6(_))
    }

    fn len(&self) -> usize {
        match &self.peers {
            Peers::V4(v) => v.len(),
            Peers::V6(v) => v.len(),
        }
    }

    fn find(&self, key: &Key) -> Result<usize, usize> {
        match (&self.peers, key) {
            (Peers::V4(v), Key::V4(p)) => v.binary_search_by_key(&p.key(), Record::key),
            (Peers::V6(v), Key::V6(p)) => v.binary_search_by_key(&p.key(), Record::key),
            _ => Err(0),
        }
    }

    fn insert(&mut self, at: usize, key: Key) {
        match (&mut self.peers, key) {
            (Peers::V4(v), Key::V4(p)) => v.insert(at, p),
            (Peers::V6(v), Key::V6(p)) => v.insert(at, p),
            _ => unreachable!("bucket family is checked before insert"),
        }
    }

    fn remove(&mut self, at: usize) {
        match &mut self.peers {
            Peers::V4(v) => {
                v.remove(at);
            }
            Peers::V6(v) => {
                v.remove(at);
            }
        }
    }

    fn touch(&mut self, at: usize, expires: u16) {
        match &mut self.peers {
            Peers::V4(v) => v[at].set_expires(expires),
            Peers::V6(v) => v[at].set_expires(expires),
        }
    }

    fn peer(&self, at: usize) -> SocketAddr {
        match &self.peers {
            Peers::V4(v) => v[at].addr(),
            Peers::V6(v) => v[at].addr(),
        }
    }

    /// Removes expired peers; returns how many.
    fn expire(&mut self, now: u16) -> usize {
        fn go<P: Record>(v: &mut Vec<P>, now: u16) -> usize {
            let before = v.len();
            v.retain(|p| !expired(p.expires(), now));
            if v.capacity() > 2 * v.len() + 4 {
                v.shrink_to_fit();
            }
            before - v.len()
        }
        match &mut self.peers {
            Peers::V4(v) => go(v, now),
            Peers::V6(v) => go(v, now),
        }
    }
}

/// Whether a 16-bit wrapping expiry time has passed at `now`.
fn expired(expires: u16, now: u16) -> bool {
    (now.wrapping_sub(expires) as i16) >= 0
}

/// One torrent.
#[derive(Debug, Default)]
struct Swarm {
    buckets: Vec<Bucket>,
    seeders: u32,
    leechers: u32,
    downloaded: u32,
    /// Snapshot generation the peers' PIDs were resolved under (low 32 bits).
    generation: u32,
}

impl Buckets for Swarm {
    fn count(&self) -> usize {
        self.buckets.len()
    }
    fn pid(&self, bucket: usize) -> PidId {
        self.buckets[bucket].pid
    }
    fn seeders(&self, bucket: usize) -> bool {
        self.buckets[bucket].seeders
    }
    fn v6(&self, bucket: usize) -> bool {
        self.buckets[bucket].v6()
    }
    fn size(&self, bucket: usize) -> usize {
        self.buckets[bucket].len()
    }
    fn peer(&self, bucket: usize, index: usize) -> SocketAddr {
        self.buckets[bucket].peer(index)
    }
}

impl Swarm {
    fn stats(&self) -> SwarmStats {
        SwarmStats {
            complete: self.seeders,
            incomplete: self.leechers,
            downloaded: self.downloaded,
        }
    }

    fn bucket_index(&self, pid: PidId, seeders: bool, v6: bool) -> Option<usize> {
        self.buckets
            .iter()
            .position(|b| b.pid == pid && b.seeders == seeders && b.v6() == v6)
    }

    /// Where the peer is now: (bucket, position). Looks in the PID it resolves to first; when
    /// the swarm was resolved under another snapshot, in every bucket of its family too.
    fn find(&self, key: &Key, pid: PidId, stale: bool) -> Option<(usize, usize)> {
        let v6 = key.v6();
        for seeders in [false, true] {
            if let Some(b) = self.bucket_index(pid, seeders, v6) {
                if let Ok(pos) = self.buckets[b].find(key) {
                    return Some((b, pos));
                }
            }
        }
        if !stale {
            return None;
        }
        self.buckets.iter().enumerate().find_map(|(b, bucket)| {
            (bucket.pid != pid && bucket.v6() == v6)
                .then(|| bucket.find(key).ok().map(|pos| (b, pos)))
                .flatten()
        })
    }

    fn count(&mut self, seeders: bool, delta: i32) {
        let c = if seeders {
            &mut self.seeders
        } else {
            &mut self.leechers
        };
        *c = c.saturating_add_signed(delta);
    }

    /// Removes the peer at a slot, dropping the bucket when it empties.
    fn remove(&mut self, (b, pos): (usize, usize)) -> bool {
        let seeders = self.buckets[b].seeders;
        self.buckets[b].remove(pos);
        if self.buckets[b].len() == 0 {
            self.buckets.swap_remove(b);
        }
        self.count(seeders, -1);
        seeders
    }

    /// Inserts a peer into its bucket; returns its slot.
    fn insert(&mut self, key: Key, pid: PidId, seeders: bool) -> (usize, usize) {
        let b = match self.bucket_index(pid, seeders, key.v6()) {
            Some(b) => b,
            None => {
                self.buckets.push(Bucket::new(pid, seeders, key.v6()));
                self.buckets.len() - 1
            }
        };
        let pos = match self.buckets[b].find(&key) {
            Ok(pos) | Err(pos) => pos,
        };
        self.buckets[b].insert(pos, key);
        self.count(seeders, 1);
        (b, pos)
    }

    fn len(&self) -> usize {
        (self.seeders + self.leechers) as usize
    }
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

/// The in-memory store. See the module docs.
#[derive(Debug)]
pub struct MemoryStore {
    swarms: DashMap<InfoHash, Swarm>,
    clock: Clock,
    limits: SwarmConfig,
    seeders: AtomicI64,
    leechers: AtomicI64,
}

impl MemoryStore {
    pub fn new(limits: SwarmConfig, clock: Clock) -> Self {
        Self {
            swarms: DashMap::new(),
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

    /// Records an announce and writes the chosen peers into `ctx.sink`.
    pub fn announce<R: Rng>(
        &self,
        a: &Announce,
        ctx: AnnounceContext<'_, R>,
    ) -> Result<(SwarmStats, SelectionStats), StoreError> {
        let snap = ctx.snapshot;
        let pid_index = snap.locate(a.peer.ip());
        let pid = snap.pid(pid_index).id;
        let expires = self.now16().wrapping_add(self.limits.peer_timeout as u16);
        let key = Key::new(a.peer, expires);
        let generation = snap.generation() as u32;

        if a.event == Event::Stopped {
            return Ok((
                self.stop(a, &key, pid, generation),
                SelectionStats::default(),
            ));
        }
        let mut swarm = match self.swarms.get_mut(&a.info_hash) {
            Some(s) => s,
            None => {
                if self.swarms.len() >= self.limits.max_torrents {
                    return Err(StoreError::TooManyTorrents);
                }
                self.swarms.entry(a.info_hash).or_insert_with(|| Swarm {
                    generation,
                    ..Swarm::default()
                })
            }
        };
        let stale = swarm.generation != generation;
        let seeder = a.is_seeder();
        let slot = match swarm.find(&key, pid, stale) {
            Some((b, pos)) if swarm.buckets[b].pid == pid && swarm.buckets[b].seeders == seeder => {
                swarm.buckets[b].touch(pos, expires);
                (b, pos)
            }
            Some(old) => {
                let was_seeder = swarm.remove(old);
                self.gauge(was_seeder, -1);
                if a.event == Event::Completed && !was_seeder {
                    swarm.downloaded = swarm.downloaded.saturating_add(1);
                }
                self.gauge(seeder, 1);
                swarm.insert(key, pid, seeder)
            }
            None => {
                if swarm.len() >= self.limits.max_peers_per_swarm {
                    return Err(StoreError::SwarmFull);
                }
                if a.event == Event::Completed {
                    swarm.downloaded = swarm.downloaded.saturating_add(1);
                }
                self.gauge(seeder, 1);
                swarm.insert(key, pid, seeder)
            }
        };
        let req = Requester {
            pid: pid_index,
            seeder,
            families: ctx.families,
            slot: Some(slot),
            numwant: a.numwant,
        };
        let sink = ctx.sink;
        let stats = ctx
            .selector
            .select(&*swarm, snap, &req, ctx.rng, ctx.scratch, &mut |p| {
                sink.push(p)
            });
        Ok((swarm.stats(), stats))
    }

    fn stop(&self, a: &Announce, key: &Key, pid: PidId, generation: u32) -> SwarmStats {
        let Some(mut swarm) = self.swarms.get_mut(&a.info_hash) else {
            return SwarmStats::default();
        };
        let stale = swarm.generation != generation;
        if let Some(slot) = swarm.find(key, pid, stale) {
            let was_seeder = swarm.remove(slot);
            self.gauge(was_seeder, -1);
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
        self.swarms
            .get(info_hash)
            .map(|s| s.stats())
            .unwrap_or_default()
    }

    /// Store-wide totals for metrics.
    pub fn totals(&self) -> StoreTotals {
        StoreTotals {
            torrents: self.swarms.len() as u64,
            seeders: self.seeders.load(Ordering::Relaxed).max(0) as u64,
            leechers: self.leechers.load(Ordering::Relaxed).max(0) as u64,
        }
    }

    /// Seeders and leechers per PID, over every swarm (walks buckets, not peers).
    pub fn pid_counts(&self) -> std::collections::HashMap<PidId, (u64, u64)> {
        let mut counts = std::collections::HashMap::new();
        for swarm in self.swarms.iter() {
            for b in &swarm.buckets {
                let c: &mut (u64, u64) = counts.entry(b.pid).or_default();
                if b.seeders {
                    c.0 += b.len() as u64;
                } else {
                    c.1 += b.len() as u64;
                }
            }
        }
        counts
    }

    /// Removes expired peers and empty swarms, and re-resolves the PIDs of swarms resolved
    /// under an older snapshot. Visits one shard at a time, so announces to other shards go
    /// on meanwhile.
    pub fn sweep(&self, snap: &Snapshot) -> SweepReport {
        let now = self.now16();
        let generation = snap.generation() as u32;
        let mut report = SweepReport::default();
        self.swarms.retain(|_, swarm| {
            for b in &mut swarm.buckets {
                let removed = b.expire(now);
                report.peers_removed += removed as u64;
                let s = b.seeders;
                let delta = i32::try_from(removed).unwrap_or(i32::MAX);
                if s {
                    swarm.seeders = swarm.seeders.saturating_sub(delta as u32);
                } else {
                    swarm.leechers = swarm.leechers.saturating_sub(delta as u32);
                }
                self.gauge(s, -(removed as i64));
            }
            swarm.buckets.retain(|b| b.len() > 0);
            if swarm.generation != generation {
                report.peers_moved += rebucket(swarm, snap) as u64;
                swarm.generation = generation;
            }
            let keep = swarm.len() > 0;
            if !keep {
                report.torrents_removed += 1;
            }
            keep
        });
        report
    }
}

/// Moves every peer whose address now resolves to another PID into that PID's bucket.
fn rebucket(swarm: &mut Swarm, snap: &Snapshot) -> usize {
    let mut moving: Vec<(Key, PidId, bool)> = Vec::new();
    for bucket in &mut swarm.buckets {
        let (pid, seeders) = (bucket.pid, bucket.seeders);
        let mut keep = |addr: SocketAddr, expires: u16| {
            let to = snap.pid(snap.locate(addr.ip())).id;
            if to == pid {
                return true;
            }
            moving.push((Key::new(addr, expires), to, seeders));
            false
        };
        match &mut bucket.peers {
            Peers::V4(v) => v.retain(|p| keep(p.addr(), p.expires)),
            Peers::V6(v) => v.retain(|p| keep(p.addr(), p.expires)),
        }
    }
    swarm.buckets.retain(|b| b.len() > 0);
    let moved = moving.len();
    for (key, pid, seeders) in moving {
        swarm.count(seeders, -1);
        swarm.insert(key, pid, seeders);
    }
    moved
}

#[cfg(test)]
mod tests;
