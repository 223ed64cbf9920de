//! One torrent in its shard: a small swarm kept inside the entry, or a large one on the heap.

use std::net::SocketAddr;

use p4p_itracker::Snapshot;

use super::family::{push_runs, Family};
use super::record::{expired, rekey_in, resolve, BucketKey, Peer4, Peer6, Record};
use super::view::Run;
use crate::types::SwarmStats;

/// Peers a small swarm holds inside its entry.
const SMALL: usize = 2;

/// Up to [`SMALL`] IPv4 peers, sorted like a family, stored inside the entry.
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct Small {
    /// A type with three values, not a `u8`: its spare values hold the tag of [`Peers`], which
    /// keeps `Peers` at 24 bytes with [`Small::admitted`] inside.
    len: SmallLen,
    /// The access-list generation the torrent was last admitted under (see [`Entry::admitted`]).
    admitted: u16,
    /// Low 8 bits of the snapshot generation the PIDs were resolved under. A false match (256
    /// snapshots between two sweeps) only delays re-bucketing to the peer's next announce, as a
    /// small swarm is always searched in full.
    generation: u8,
    peers: [Peer4; SMALL],
}

/// How many peers a [`Small`] holds: 0 to [`SMALL`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
enum SmallLen {
    #[default]
    Zero = 0,
    One = 1,
    Two = 2,
}

impl SmallLen {
    fn get(self) -> usize {
        self as usize
    }

    fn of(n: usize) -> Self {
        match n {
            0 => SmallLen::Zero,
            1 => SmallLen::One,
            _ => SmallLen::Two,
        }
    }
}

const _: () = assert!(
    SMALL == 2,
    "SmallLen has a value for each length up to SMALL"
);

impl Small {
    pub(super) fn slice(&self) -> &[Peer4] {
        &self.peers[..self.len.get()]
    }

    fn slice_mut(&mut self) -> &mut [Peer4] {
        &mut self.peers[..self.len.get()]
    }

    /// Inserts in order; `None` when full.
    fn insert(&mut self, rec: Peer4) -> Option<usize> {
        let len = self.len.get();
        if len == SMALL {
            return None;
        }
        let at = self.slice().partition_point(|p| p.order() < rec.order());
        self.peers.copy_within(at..len, at + 1);
        self.peers[at] = rec;
        self.len = SmallLen::of(len + 1);
        Some(at)
    }

    fn remove(&mut self, at: usize) -> Peer4 {
        let rec = self.peers[at];
        let len = self.len.get();
        self.peers.copy_within(at + 1..len, at);
        self.len = SmallLen::of(len - 1);
        rec
    }

    fn counts(&self) -> (u32, u32) {
        let seeders = self.slice().iter().filter(|p| p.bucket.seeders()).count() as u32;
        (seeders, self.len.get() as u32 - seeders)
    }
}

/// A swarm past [`SMALL`] IPv4 peers, or with any IPv6 peer.
#[derive(Debug, Default)]
pub(super) struct Large {
    pub(super) v4: Family<Peer4>,
    /// Boxed: IPv6 peers are rare, and an empty family costs 8 bytes here, not 32.
    pub(super) v6: Option<Box<Family<Peer6>>>,
    pub(super) seeders: u32,
    pub(super) leechers: u32,
    /// Of `seeders`, those in the IPv6 family: an IPv4-only answer counts its eligible peers
    /// without a walk over the IPv6 buckets.
    pub(super) v6_seeders: u32,
    /// Snapshot generation the peers' PIDs were resolved under (low 32 bits).
    generation: u32,
    /// The access-list generation the torrent was last admitted under (in what was padding).
    admitted: u16,
}

impl Large {
    /// Takes over a small swarm's peers, re-resolved under `snap` so the generation is exact.
    fn from_small(small: &Small, snap: &Snapshot, sorted_max: usize) -> Self {
        let mut recs = Vec::with_capacity(SMALL + 1);
        recs.extend(small.slice().iter().map(|&p| {
            let mut p = p;
            p.bucket = BucketKey::new(resolve(snap, p.socket().ip()), p.bucket.seeders());
            p
        }));
        let (seeders, leechers) = small.counts();
        Large {
            v4: Family::build(recs, sorted_max),
            v6: None,
            seeders,
            leechers,
            v6_seeders: 0,
            generation: snap.generation() as u32,
            admitted: small.admitted,
        }
    }

    fn count(&mut self, seeder: bool, v6: bool, delta: i32) {
        let c = if seeder {
            &mut self.seeders
        } else {
            &mut self.leechers
        };
        *c = c.saturating_add_signed(delta);
        if seeder && v6 {
            self.v6_seeders = self.v6_seeders.saturating_add_signed(delta);
        }
    }

    fn v6_mut(&mut self) -> &mut Family<Peer6> {
        self.v6.get_or_insert_with(Box::default)
    }
}

/// The data of one torrent in its shard: 48 bytes.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) hash: [u8; 20],
    pub(super) downloaded: u32,
    pub(super) peers: Peers,
}

#[derive(Debug)]
pub(super) enum Peers {
    Small(Small),
    Large(Box<Large>),
}

/// A peer position: where a peer is in its swarm (family, segment, index in the segment).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct PeerPos {
    pub(super) v6: bool,
    pub(super) seg: usize,
    pub(super) idx: usize,
}

impl PeerPos {
    fn new(v6: bool, (seg, idx): (usize, usize)) -> Self {
        PeerPos { v6, seg, idx }
    }
}

impl Entry {
    /// A torrent without peers; `generation` is the snapshot's, `admitted` the access list's
    /// (see [`Entry::admitted`]).
    pub(super) fn new(hash: [u8; 20], generation: u32, admitted: u16) -> Self {
        Entry {
            hash,
            downloaded: 0,
            peers: Peers::Small(Small {
                generation: generation as u8,
                admitted,
                ..Small::default()
            }),
        }
    }

    /// The generation of the access list the torrent was last admitted under
    /// ([`crate::access::Admission::generation`]); [`crate::access::UNCHECKED`] when it never
    /// was (no access list, or a swarm another cluster node created). An announce under that
    /// same list needs no lookup in it.
    pub(super) fn admitted(&self) -> u16 {
        match &self.peers {
            Peers::Small(s) => s.admitted,
            Peers::Large(l) => l.admitted,
        }
    }

    pub(super) fn set_admitted(&mut self, generation: u16) {
        match &mut self.peers {
            Peers::Small(s) => s.admitted = generation,
            Peers::Large(l) => l.admitted = generation,
        }
    }

    /// (seeders, leechers): kept for large swarms, read off the records of small ones.
    fn counts(&self) -> (u32, u32) {
        match &self.peers {
            Peers::Small(s) => s.counts(),
            Peers::Large(l) => (l.seeders, l.leechers),
        }
    }

    pub(super) fn len(&self) -> usize {
        let (s, l) = self.counts();
        (s + l) as usize
    }

    pub(super) fn stats(&self) -> SwarmStats {
        let (complete, incomplete) = self.counts();
        SwarmStats {
            complete,
            incomplete,
            downloaded: self.downloaded,
        }
    }

    /// Where the peer is now, whatever its bucket (a PID may have changed since it was filed).
    pub(super) fn find(&self, peer: SocketAddr) -> Option<PeerPos> {
        match (&self.peers, peer) {
            (Peers::Small(s), SocketAddr::V4(a)) => {
                let addr = Peer4::addr_of(a);
                let at = s.slice().iter().position(|p| p.addr() == addr);
                at.map(|i| PeerPos::new(false, (0, i)))
            }
            (Peers::Small(_), SocketAddr::V6(_)) => None,
            (Peers::Large(l), SocketAddr::V4(a)) => {
                let found = l.v4.find(Peer4::addr_of(a));
                found.map(|at| PeerPos::new(false, at))
            }
            (Peers::Large(l), SocketAddr::V6(a)) => {
                let found = l.v6.as_ref()?.find(Peer6::addr_of(a));
                found.map(|at| PeerPos::new(true, at))
            }
        }
    }

    /// How many peers of `peer`'s source (its IPv4 address or IPv6 /64) the swarm holds (see
    /// [`Family::host_peers`]).
    pub(super) fn host_peers(&self, peer: SocketAddr) -> u32 {
        match (&self.peers, peer) {
            (Peers::Small(s), SocketAddr::V4(a)) => {
                let host = Peer4::host(Peer4::addr_of(a));
                let same = s.slice().iter().filter(|p| Peer4::host(p.addr()) == host);
                same.count() as u32
            }
            (Peers::Small(_), SocketAddr::V6(_)) => 0,
            (Peers::Large(l), SocketAddr::V4(a)) => l.v4.host_peers(Peer4::addr_of(a)),
            (Peers::Large(l), SocketAddr::V6(a)) => {
                l.v6.as_ref().map_or(0, |f| f.host_peers(Peer6::addr_of(a)))
            }
        }
    }

    pub(super) fn bucket(&self, pos: PeerPos) -> BucketKey {
        match &self.peers {
            Peers::Small(s) => s.peers[pos.idx].bucket,
            Peers::Large(l) if pos.v6 => {
                l.v6.as_ref()
                    .map_or(BucketKey::default(), |f| f.rec(pos.seg, pos.idx).bucket())
            }
            Peers::Large(l) => l.v4.rec(pos.seg, pos.idx).bucket(),
        }
    }

    /// When the peer at `pos` expires (16-bit wrapping seconds).
    pub(super) fn expires(&self, pos: PeerPos) -> u16 {
        match &self.peers {
            Peers::Small(s) => s.peers[pos.idx].expires,
            Peers::Large(l) if pos.v6 => {
                l.v6.as_ref()
                    .map_or(0, |f| f.rec(pos.seg, pos.idx).expires())
            }
            Peers::Large(l) => l.v4.rec(pos.seg, pos.idx).expires(),
        }
    }

    pub(super) fn touch(&mut self, pos: PeerPos, expires: u16) {
        match &mut self.peers {
            Peers::Small(s) => s.peers[pos.idx].expires = expires,
            Peers::Large(l) if pos.v6 => {
                l.v6_mut().seg_mut(pos.seg)[pos.idx].expires = expires;
            }
            Peers::Large(l) => l.v4.seg_mut(pos.seg)[pos.idx].expires = expires,
        }
    }

    /// Moves a known peer to another bucket; returns its new position.
    pub(super) fn rekey(&mut self, pos: PeerPos, bucket: BucketKey, expires: u16) -> PeerPos {
        fn rekey_family<P: Record>(
            f: &mut Family<P>,
            pos: PeerPos,
            bucket: BucketKey,
            expires: u16,
        ) -> PeerPos {
            let mut rec = f.rec(pos.seg, pos.idx);
            rec.set_bucket(bucket);
            rec.set_expires(expires);
            PeerPos::new(pos.v6, f.rekey(pos.seg, pos.idx, rec))
        }
        let old = self.bucket(pos);
        match &mut self.peers {
            Peers::Small(s) => {
                let mut rec = s.peers[pos.idx];
                rec.bucket = bucket;
                rec.expires = expires;
                PeerPos::new(false, (0, rekey_in(s.slice_mut(), pos.idx, rec)))
            }
            Peers::Large(l) => {
                l.count(old.seeders(), pos.v6, -1);
                l.count(bucket.seeders(), pos.v6, 1);
                if pos.v6 {
                    rekey_family(l.v6_mut(), pos, bucket, expires)
                } else {
                    rekey_family(&mut l.v4, pos, bucket, expires)
                }
            }
        }
    }

    /// Removes a peer; returns the bucket it was in.
    pub(super) fn remove(&mut self, pos: PeerPos) -> BucketKey {
        match &mut self.peers {
            Peers::Small(s) => s.remove(pos.idx).bucket,
            Peers::Large(l) => {
                let bucket = if pos.v6 {
                    l.v6_mut().remove(pos.seg, pos.idx).bucket
                } else {
                    l.v4.remove(pos.seg, pos.idx).bucket
                };
                l.count(bucket.seeders(), pos.v6, -1);
                bucket
            }
        }
    }

    /// Adds a new peer (a small swarm that cannot hold it becomes large); returns its
    /// position. `sorted_max` is the store's (see [`Family`]).
    pub(super) fn insert(
        &mut self,
        peer: SocketAddr,
        bucket: BucketKey,
        expires: u16,
        snap: &Snapshot,
        sorted_max: usize,
    ) -> PeerPos {
        if let Peers::Small(s) = &mut self.peers {
            if let SocketAddr::V4(a) = peer {
                if let Some(i) = s.insert(Peer4::new(Peer4::addr_of(a), expires, bucket)) {
                    return PeerPos::new(false, (0, i));
                }
            }
            let large = Large::from_small(s, snap, sorted_max);
            self.peers = Peers::Large(Box::new(large));
        }
        let Peers::Large(l) = &mut self.peers else {
            unreachable!("the swarm was made large above")
        };
        l.count(bucket.seeders(), peer.is_ipv6(), 1);
        match peer {
            SocketAddr::V4(a) => {
                let rec = Peer4::new(Peer4::addr_of(a), expires, bucket);
                PeerPos::new(false, l.v4.insert(rec, sorted_max))
            }
            SocketAddr::V6(a) => {
                let rec = Peer6::new(Peer6::addr_of(a), expires, bucket);
                PeerPos::new(true, l.v6_mut().insert(rec, sorted_max))
            }
        }
    }

    /// Removes expired peers; returns how many (seeders, leechers).
    pub(super) fn expire(&mut self, now: u16, sorted_max: usize) -> (u32, u32) {
        match &mut self.peers {
            Peers::Small(s) => {
                let before = s.counts();
                let mut n = 0;
                for i in 0..s.len.get() {
                    if !expired(s.peers[i].expires, now) {
                        s.peers[n] = s.peers[i];
                        n += 1;
                    }
                }
                s.len = SmallLen::of(n);
                let after = s.counts();
                (before.0 - after.0, before.1 - after.1)
            }
            Peers::Large(l) => {
                let a = l.v4.expire(now, sorted_max);
                let b = l.v6.as_mut().map_or((0, 0), |f| f.expire(now, sorted_max));
                l.seeders = l.seeders.saturating_sub(a.0 + b.0);
                l.leechers = l.leechers.saturating_sub(a.1 + b.1);
                l.v6_seeders = l.v6_seeders.saturating_sub(b.0);
                (a.0 + b.0, a.1 + b.1)
            }
        }
    }

    /// Re-resolves the PIDs of a swarm resolved under another snapshot; returns the peers
    /// that changed bucket.
    pub(super) fn rebucket(&mut self, snap: &Snapshot, sorted_max: usize) -> usize {
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
                l.v4.rebucket(snap, sorted_max)
                    + l.v6.as_mut().map_or(0, |f| f.rebucket(snap, sorted_max))
            }
            _ => 0,
        }
    }

    /// Gives back memory after peers left: drops an empty IPv6 family and turns a large swarm
    /// that fits back into a small one.
    pub(super) fn compact(&mut self) {
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
            admitted: l.admitted,
            ..Small::default()
        };
        let mut n = 0;
        for p in l.v4.all() {
            small.peers[n] = p;
            n += 1;
        }
        small.len = SmallLen::of(n);
        // Sorted already when the family is, but a small swarm must be whatever it came from.
        small.slice_mut().sort_unstable_by_key(Peer4::order);
        self.peers = Peers::Small(small);
    }

    /// Appends the swarm's bucket runs (IPv4 first) to `out`.
    pub(super) fn runs(&self, out: &mut Vec<Run>) {
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
