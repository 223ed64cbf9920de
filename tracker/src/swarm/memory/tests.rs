use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use p4p_itracker::snapshot::PidSpec;
use p4p_itracker::SnapshotBuilder;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::entry::{Large, Peers};
use super::family::Family;
use super::index::{addr_hash, Index};
use super::record::{resolve, Peer4, Peer6, Record};
use super::*;
use crate::config::{PolicyKind, SelectionConfig};
use crate::selection::{Buckets, Scratch, Selector};
use crate::swarm::PeerSink;
use crate::types::Families;

/// The `sorted_max` of most tests: small, so a few peers reach the hashed form.
const SMALL_SORTED_MAX: usize = 4;

fn store() -> MemoryStore {
    store_with(SMALL_SORTED_MAX)
}

fn store_with(sorted_max: usize) -> MemoryStore {
    MemoryStore::with_sorted_max(SwarmConfig::default(), Clock::new(), sorted_max)
}

struct Env {
    snap: Snapshot,
    selector: Selector,
    rng: SmallRng,
    scratch: Scratch,
    sink: PeerSink,
}

impl Env {
    fn new(snap: Snapshot) -> Self {
        Self {
            snap,
            selector: Selector::new(SelectionConfig {
                policy: PolicyKind::Random,
                ..SelectionConfig::default()
            }),
            rng: SmallRng::seed_from_u64(7),
            scratch: Scratch::default(),
            sink: PeerSink::default(),
        }
    }

    fn announce(&mut self, store: &MemoryStore, a: Announce) -> Result<SwarmStats, StoreError> {
        self.announce_with(store, a, None)
    }

    /// An announce under the access list `access` applies (`None`: every torrent admitted).
    fn announce_with(
        &mut self,
        store: &MemoryStore,
        a: Announce,
        access: Option<crate::access::Admission<'_>>,
    ) -> Result<SwarmStats, StoreError> {
        self.sink.clear();
        let ctx = AnnounceContext {
            snapshot: &self.snap,
            selector: &self.selector,
            families: Families::Both,
            rng: &mut self.rng,
            scratch: &mut self.scratch,
            sink: &mut self.sink,
            access,
        };
        store.announce(&a, ctx).map(|(s, _)| s)
    }

    fn peers(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.sink.v4.iter().map(|a| SocketAddr::V4(*a)).collect();
        v.extend(self.sink.v6.iter().map(|a| SocketAddr::V6(*a)));
        v.sort();
        v
    }
}

const HASH: InfoHash = InfoHash([1; 20]);

fn ann(peer: &str, left: u64, event: Event) -> Announce {
    Announce {
        info_hash: HASH,
        peer: peer.parse().expect("socket address"),
        event,
        left,
        numwant: 50,
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = list.iter().map(|s| s.parse().expect("addr")).collect();
    v.sort();
    v
}

/// Every peer of a torrent as (address, seeder, PID), read through the selection view.
fn contents(store: &MemoryStore, hash: &InfoHash) -> Vec<(SocketAddr, bool, PidId)> {
    let shard = read(store.shard(hash));
    let Ok(at) = search(&shard, hash) else {
        return Vec::new();
    };
    let mut runs = Vec::new();
    shard[at].runs(&mut runs);
    let view = View::new(&shard[at], &runs);
    let mut out = Vec::new();
    for b in 0..view.count() {
        for i in 0..view.size(b) {
            out.push((view.peer(b, i), view.seeders(b), view.pid(b)));
        }
    }
    out.sort_by_key(|p| p.0);
    out
}

fn is_large(store: &MemoryStore, hash: &InfoHash) -> bool {
    let shard = read(store.shard(hash));
    let at = search(&shard, hash).expect("torrent");
    matches!(shard[at].peers, Peers::Large(_))
}

/// Checks the layout invariants of every swarm (see [`family_records`]) and that counts match
/// the records.
fn check_invariants(store: &MemoryStore) {
    fn family<P: Record + std::fmt::Debug>(f: &Family<P>, sorted_max: usize) -> (u32, u32) {
        let all = family_records(f, sorted_max);
        let seeders = all.iter().filter(|p| p.bucket().seeders()).count() as u32;
        (seeders, all.len() as u32 - seeders)
    }
    let mut torrents = 0;
    for shard in store.shards.iter() {
        let entries = read(shard);
        assert!(entries.windows(2).all(|w| w[0].hash < w[1].hash));
        // The prefetch hint says where the entries are (an empty vector's address is moot).
        assert_eq!(shard.hint_len.load(Ordering::Relaxed), entries.len());
        if !entries.is_empty() {
            assert_eq!(
                shard.hint_at.load(Ordering::Relaxed),
                entries.as_ptr() as usize
            );
        }
        torrents += entries.len();
        for e in entries.iter() {
            match &e.peers {
                Peers::Small(s) => {
                    let recs = s.slice();
                    assert!(recs.windows(2).all(|w| w[0].order() < w[1].order()));
                }
                Peers::Large(l) => {
                    let a = family(&l.v4, store.sorted_max);
                    let b =
                        l.v6.as_deref()
                            .map_or((0, 0), |f| family(f, store.sorted_max));
                    assert_eq!((l.seeders, l.leechers), (a.0 + b.0, a.1 + b.1));
                    assert_eq!(l.v6_seeders, b.0);
                }
            }
        }
    }
    assert_eq!(store.totals().torrents, torrents as u64);
}

#[test]
fn peers_come_back_without_the_requester_and_counts_are_exact() {
    let store = store();
    let mut env = Env::new(Snapshot::single_pid());
    env.announce(&store, ann("127.0.0.2:1000", 5, Event::Started))
        .expect("ok");
    env.announce(&store, ann("[::1]:1001", 5, Event::Started))
        .expect("ok");
    let stats = env
        .announce(&store, ann("127.0.0.3:1000", 0, Event::Started))
        .expect("ok");
    assert_eq!(
        stats,
        SwarmStats {
            complete: 1,
            incomplete: 2,
            downloaded: 0
        }
    );
    assert_eq!(env.peers(), addrs(&["127.0.0.2:1000", "[::1]:1001"]));
}

#[test]
fn seeders_are_never_handed_seeders() {
    let store = store();
    let mut env = Env::new(Snapshot::single_pid());
    for i in 2..10 {
        env.announce(&store, ann(&format!("127.0.0.{i}:1"), 0, Event::Started))
            .expect("ok");
    }
    env.announce(&store, ann("127.0.1.1:1", 10, Event::Started))
        .expect("ok");
    env.announce(&store, ann("127.0.1.2:1", 0, Event::None))
        .expect("ok");
    assert_eq!(env.peers(), addrs(&["127.0.1.1:1"]));
}

#[test]
fn identity_is_ip_and_port_and_stopped_removes_only_that_peer() {
    let store = store();
    let mut env = Env::new(Snapshot::single_pid());
    env.announce(&store, ann("127.0.0.2:1000", 5, Event::Started))
        .expect("ok");
    env.announce(&store, ann("127.0.0.2:1001", 5, Event::Started))
        .expect("ok");
    // Re-announcing the same (ip, port) updates, never duplicates.
    let s = env
        .announce(&store, ann("127.0.0.2:1000", 5, Event::None))
        .expect("ok");
    assert_eq!(s.incomplete, 2);
    let s = env
        .announce(&store, ann("127.0.0.2:1001", 5, Event::Stopped))
        .expect("ok");
    assert_eq!(s.incomplete, 1);
    assert!(env.peers().is_empty(), "stopped gets no peers");
    env.announce(&store, ann("127.0.0.9:1", 5, Event::None))
        .expect("ok");
    assert_eq!(env.peers(), addrs(&["127.0.0.2:1000"]));
}

#[test]
fn completed_counts_once_and_moves_leecher_to_seeders() {
    let store = store();
    let mut env = Env::new(Snapshot::single_pid());
    env.announce(&store, ann("127.0.0.2:1", 5, Event::Started))
        .expect("ok");
    let s = env
        .announce(&store, ann("127.0.0.2:1", 0, Event::Completed))
        .expect("ok");
    assert_eq!(
        s,
        SwarmStats {
            complete: 1,
            incomplete: 0,
            downloaded: 1
        }
    );
    let s = env
        .announce(&store, ann("127.0.0.2:1", 0, Event::Completed))
        .expect("ok");
    assert_eq!(
        s.downloaded, 1,
        "a seeder re-sending completed is not a new download"
    );
    assert_eq!(
        store.totals(),
        StoreTotals {
            torrents: 1,
            seeders: 1,
            leechers: 0
        }
    );
}

#[test]
fn peers_expire_through_the_injected_clock_and_empty_swarms_go() {
    let store = store();
    let mut env = Env::new(Snapshot::single_pid());
    env.announce(&store, ann("127.0.0.2:1", 5, Event::Started))
        .expect("ok");
    store.clock().advance(3000);
    env.announce(&store, ann("127.0.0.3:1", 5, Event::Started))
        .expect("ok");
    store.clock().advance(1000);
    let r = store.sweep(&env.snap);
    assert_eq!(r.peers_removed, 1);
    assert_eq!(store.scrape(&HASH).incomplete, 1);
    store.clock().advance(4000);
    let r = store.sweep(&env.snap);
    assert_eq!((r.peers_removed, r.torrents_removed), (1, 1));
    assert_eq!(store.totals(), StoreTotals::default());
}

#[test]
fn caps_refuse_new_torrents_and_peers_but_not_known_ones() {
    let limits = SwarmConfig {
        max_torrents: 1,
        max_peers_per_swarm: 2,
        ..SwarmConfig::default()
    };
    let store = MemoryStore::new(limits, Clock::new());
    let mut env = Env::new(Snapshot::single_pid());
    env.announce(&store, ann("127.0.0.2:1", 5, Event::Started))
        .expect("ok");
    env.announce(&store, ann("127.0.0.3:1", 5, Event::Started))
        .expect("ok");
    let full = env.announce(&store, ann("127.0.0.4:1", 5, Event::Started));
    assert_eq!(full, Err(StoreError::SwarmFull));
    env.announce(&store, ann("127.0.0.3:1", 0, Event::Completed))
        .expect("known peer");
    let mut other = ann("127.0.0.2:1", 5, Event::Started);
    other.info_hash = InfoHash([2; 20]);
    assert_eq!(
        env.announce(&store, other),
        Err(StoreError::TooManyTorrents)
    );
    assert_eq!(store.totals().torrents, 1);
}

#[test]
fn prefetching_any_batch_is_harmless() {
    let store = store();
    let mut env = Env::new(two_pid_snapshot("127.1.0.0/16"));
    let peer: SocketAddr = "127.0.0.2:6001".parse().expect("addr");
    let reqs: Vec<(InfoHash, SocketAddr)> = (0..100u8).map(|i| (InfoHash([i; 20]), peer)).collect();
    // Empty shards, then more requests than one call looks at, known and unknown.
    store.prefetch(&reqs);
    for (h, _) in &reqs[..50] {
        let a = Announce {
            info_hash: *h,
            ..ann("127.0.0.2:6001", 1, Event::Started)
        };
        env.announce(&store, a).expect("announce");
    }
    // Swarms of every shape: small, sorted, hashed, with IPv6 peers.
    for i in 0..80u32 {
        for (hash, n) in [(reqs[1].0, 5), (reqs[2].0, 80), (reqs[3].0, 3)] {
            if i < n {
                let addr = format!("127.{}.0.{}:{}", 1 + i % 2, i, 1000 + i);
                let a = Announce {
                    info_hash: hash,
                    ..ann(&addr, u64::from(i % 3), Event::None)
                };
                env.announce(&store, a).expect("announce");
            }
        }
    }
    let a = Announce {
        info_hash: reqs[3].0,
        ..ann("[::2]:1", 1, Event::None)
    };
    env.announce(&store, a).expect("announce");
    let mut mixed = reqs.clone();
    mixed[2].1 = "127.1.0.7:1007".parse().expect("known peer");
    mixed[3].1 = "[::2]:1".parse().expect("known peer");
    mixed[4].1 = "[::3]:1".parse().expect("unknown peer");
    store.prefetch(&mixed);
    store.prefetch(&[]);
    check_invariants(&store);
    assert_eq!(store.totals().torrents, 50);
}

#[test]
fn the_index_first_match_shares_the_tag_of_every_present_address() {
    let mut f = Family::<Peer4>::default();
    let mut addrs = Vec::new();
    for i in 0..300u32 {
        let addr = Peer4::addr_of(SocketAddrV4::new(Ipv4Addr::from(0x7F00_0000 + i), 7));
        let rec = Peer4::new(addr, 1, BucketKey::new(PidId(i % 3), i % 2 == 0));
        f.insert(rec, SMALL_SORTED_MAX);
        addrs.push(addr);
    }
    let Family::Hashed(h) = &f else {
        panic!("300 peers are past SMALL_SORTED_MAX")
    };
    for addr in addrs {
        let hash = addr_hash(&addr);
        let loc = h
            .index
            .first_match(hash)
            .expect("a present address matches");
        let at = h.buckets[loc.bucket as usize].recs[loc.idx as usize].addr();
        assert_eq!(addr_hash(&at) >> 48, hash >> 48);
    }
    assert_eq!(Index::default().first_match(1), None);
}

#[test]
fn the_torrent_count_follows_creation_and_sweeping_across_shards() {
    let store = store();
    let mut env = Env::new(Snapshot::single_pid());
    for t in 0..500u32 {
        let mut a = ann("127.0.0.2:1", 5, Event::Started);
        a.info_hash.0[..4].copy_from_slice(&t.to_be_bytes());
        env.announce(&store, a).expect("ok");
        // Stopped never creates a torrent.
        a.info_hash.0[4] = 9;
        a.event = Event::Stopped;
        env.announce(&store, a).expect("ok");
    }
    assert_eq!(store.totals().torrents, 500);
    check_invariants(&store);
    store
        .clock()
        .advance(u64::from(SwarmConfig::default().peer_timeout) + 1);
    let r = store.sweep(&env.snap);
    assert_eq!((r.torrents_removed, r.peers_removed), (500, 500));
    assert_eq!(store.totals(), StoreTotals::default());
    check_invariants(&store);
}

fn snapshot(pids: &[(&str, &str)]) -> Snapshot {
    let mut b = SnapshotBuilder::new("mem-test", 10.0);
    let isp = b.add_isp("mem-test");
    for (name, prefix) in pids {
        b.add_pid(PidSpec {
            name: (*name).into(),
            isp,
            internal: true,
            prefixes: vec![prefix.parse().expect("prefix")],
        });
    }
    b.build().expect("snapshot")
}

fn two_pid_snapshot(a_prefix: &str) -> Snapshot {
    snapshot(&[("mem-a", a_prefix), ("mem-b", "127.2.0.0/16")])
}

#[test]
fn a_new_snapshot_rebuckets_lazily_without_duplicates() {
    let store = store();
    let mut env = Env::new(two_pid_snapshot("127.1.0.0/16"));
    env.announce(&store, ann("127.1.0.2:1", 5, Event::Started))
        .expect("ok");
    env.announce(&store, ann("127.3.0.2:1", 5, Event::Started))
        .expect("ok");
    // A third peer makes the swarm large, so the lazy path searches other buckets.
    env.announce(&store, ann("127.2.0.2:1", 5, Event::Started))
        .expect("ok");
    assert!(is_large(&store, &HASH));
    let pid_of = |store: &MemoryStore, ip: &str| {
        let ip: IpAddr = ip.parse().expect("ip");
        let found = contents(store, &HASH).into_iter().find(|p| p.0.ip() == ip);
        found.map(|p| p.2.name().to_string())
    };
    assert_eq!(pid_of(&store, "127.3.0.2").as_deref(), Some("default"));
    // The map changes: 127.3/16 joins mem-a. The peer re-announces before any sweep.
    env.snap = two_pid_snapshot("127.0.0.0/14");
    let s = env
        .announce(&store, ann("127.3.0.2:1", 5, Event::None))
        .expect("ok");
    assert_eq!(s.incomplete, 3, "moved, not duplicated");
    assert_eq!(pid_of(&store, "127.3.0.2").as_deref(), Some("mem-a"));
    // The sweep moves the peers that did not re-announce (none moves here).
    let r = store.sweep(&env.snap);
    assert_eq!(
        r.peers_moved, 0,
        "127.1.0.2 stays in mem-a, 127.2.0.2 in mem-b"
    );
    assert_eq!(store.scrape(&HASH).incomplete, 3);
    // Back to the first map: the sweep moves 127.3.0.2 to the default PID.
    env.snap = two_pid_snapshot("127.1.0.0/16");
    let r = store.sweep(&env.snap);
    assert_eq!(r.peers_moved, 1);
    assert_eq!(pid_of(&store, "127.3.0.2").as_deref(), Some("default"));
    check_invariants(&store);
}

#[test]
fn a_small_swarm_is_rebucketed_by_the_sweep_and_found_after_a_change() {
    let store = store();
    let mut env = Env::new(two_pid_snapshot("127.1.0.0/16"));
    env.announce(&store, ann("127.3.0.2:1", 5, Event::Started))
        .expect("ok");
    env.announce(&store, ann("127.3.0.3:1", 5, Event::Started))
        .expect("ok");
    assert!(!is_large(&store, &HASH));
    env.snap = two_pid_snapshot("127.0.0.0/14");
    let r = store.sweep(&env.snap);
    assert_eq!(r.peers_moved, 2);
    assert!(contents(&store, &HASH)
        .iter()
        .all(|p| &*p.2.name() == "mem-a"));
    env.snap = two_pid_snapshot("127.1.0.0/16");
    let s = env
        .announce(&store, ann("127.3.0.2:1", 0, Event::Completed))
        .expect("ok");
    assert_eq!(
        s,
        SwarmStats {
            complete: 1,
            incomplete: 1,
            downloaded: 1
        }
    );
}

#[test]
fn small_swarms_grow_large_and_shrink_back() {
    let store = store();
    let mut env = Env::new(Snapshot::single_pid());
    env.announce(&store, ann("127.0.0.2:1", 5, Event::Started))
        .expect("ok");
    env.announce(&store, ann("127.0.0.3:1", 0, Event::Started))
        .expect("ok");
    assert!(
        !is_large(&store, &HASH),
        "two IPv4 peers stay inside the entry"
    );
    store.clock().advance(2000);
    env.announce(&store, ann("[::2]:1", 5, Event::Started))
        .expect("ok");
    assert!(is_large(&store, &HASH), "an IPv6 peer needs the heap");
    env.announce(&store, ann("127.0.0.4:1", 5, Event::Started))
        .expect("ok");
    let s = env
        .announce(&store, ann("127.0.0.5:1", 5, Event::Started))
        .expect("ok");
    assert_eq!(
        s,
        SwarmStats {
            complete: 1,
            incomplete: 4,
            downloaded: 0
        }
    );
    assert_eq!(env.peers().len(), 4);
    // The first two expire; the IPv6 peer stops: two IPv4 peers are left, back inline.
    env.announce(&store, ann("[::2]:1", 5, Event::Stopped))
        .expect("ok");
    store.clock().advance(2000);
    let r = store.sweep(&env.snap);
    assert_eq!(r.peers_removed, 2);
    assert!(!is_large(&store, &HASH));
    let left = contents(&store, &HASH)
        .into_iter()
        .map(|p| p.0)
        .collect::<Vec<_>>();
    assert_eq!(left, addrs(&["127.0.0.4:1", "127.0.0.5:1"]));
    assert_eq!(
        store.scrape(&HASH),
        SwarmStats {
            complete: 0,
            incomplete: 2,
            downloaded: 0
        }
    );
    check_invariants(&store);
}

#[test]
fn every_peer_is_reachable_in_a_hashed_family() {
    let store = store();
    let mut env = Env::new(two_pid_snapshot("127.1.0.0/16"));
    let mut all = Vec::new();
    for i in 0..60u32 {
        let addr = format!("127.{}.0.{}:{}", 1 + i % 3, i, 1000 + i);
        env.announce(&store, ann(&addr, u64::from(i % 4), Event::Started))
            .expect("ok");
        all.push(addr.parse::<SocketAddr>().expect("addr"));
    }
    check_invariants(&store);
    {
        let shard = read(store.shard(&HASH));
        let at = search(&shard, &HASH).expect("torrent");
        let Peers::Large(l) = &shard[at].peers else {
            panic!("60 peers are a large swarm")
        };
        let Family::Hashed(h) = &l.v4 else {
            panic!("60 peers are past SMALL_SORTED_MAX")
        };
        assert_eq!(h.buckets.len(), 6, "3 PIDs x seeders/leechers");
    }
    // A leecher asking for everything gets every other peer, once.
    let mut a = ann("127.1.0.1:1001", 1, Event::None);
    a.numwant = 1000;
    env.announce(&store, a).expect("ok");
    let got = env.peers();
    let mut want: Vec<SocketAddr> = all.iter().copied().filter(|p| *p != a.peer).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn pid_counts_sum_bucket_runs() {
    let store = store();
    let mut env = Env::new(two_pid_snapshot("127.1.0.0/16"));
    for i in 0..20u32 {
        let addr = format!("127.{}.0.{}:1", 1 + i % 2, i);
        env.announce(&store, ann(&addr, u64::from(i % 5 != 0), Event::Started))
            .expect("ok");
    }
    let mut other = ann("127.1.9.9:1", 0, Event::Started);
    other.info_hash = InfoHash([3; 20]);
    env.announce(&store, other).expect("ok");
    let counts = store.pid_counts();
    let a = counts[&PidId::intern("mem-a")];
    let b = counts[&PidId::intern("mem-b")];
    assert_eq!(a, (2 + 1, 8));
    assert_eq!(b, (2, 8));
}

/// A model of one swarm: address -> (seeder, epoch of last announce).
type Model = HashMap<SocketAddr, (bool, u32)>;

fn check_against_model(store: &MemoryStore, model: &Model, snap: &Snapshot, resolved: bool) {
    let got = contents(store, &HASH);
    let mut want: Vec<(SocketAddr, bool)> = model.iter().map(|(a, (s, _))| (*a, *s)).collect();
    want.sort();
    let have: Vec<(SocketAddr, bool)> = got.iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(have, want);
    if resolved {
        for (addr, _, pid) in &got {
            assert_eq!(*pid, resolve(snap, addr.ip()), "{addr} after the sweep");
        }
    }
    let seeders = model.values().filter(|(s, _)| *s).count() as u32;
    let stats = store.scrape(&HASH);
    assert_eq!(
        (stats.complete, stats.incomplete),
        (seeders, model.len() as u32 - seeders)
    );
    check_invariants(store);
}

#[test]
fn random_announces_stops_sweeps_and_map_changes_match_a_model() {
    announces_match_a_model(SMALL_SORTED_MAX);
}

#[test]
fn random_announces_match_a_model_with_the_production_sorted_max() {
    announces_match_a_model(SORTED_MAX);
}

/// Random announces, stops, sweeps and map changes to one swarm of up to 70 IPv4 and 10 IPv6
/// peers, checked against a model, in a store whose families turn hashed past `sorted_max`.
fn announces_match_a_model(sorted_max: usize) {
    // Two maps, rebuilt (as a reload would, with a new generation) at every change.
    let map = |which: usize| match which {
        0 => snapshot(&[
            ("mem-a", "127.1.0.0/16"),
            ("mem-b", "127.2.0.0/16"),
            ("mem-c", "::/1"),
        ]),
        _ => snapshot(&[("mem-a", "127.0.0.0/15"), ("mem-c", "127.2.0.0/16")]),
    };
    let store = store_with(sorted_max);
    let mut env = Env::new(map(0));
    let mut rng = SmallRng::seed_from_u64(11);
    let mut saw_hashed = false;
    let pool: Vec<SocketAddr> = (0..80u32)
        .map(|i| match i % 8 {
            7 => format!("[::{:x}]:{}", i, 6000 + i % 3),
            _ => format!("127.{}.{}.{}:{}", i % 3, i % 5, i, 5000 + i % 2),
        })
        .map(|s| s.parse().expect("addr"))
        .collect();
    let mut model = Model::new();
    let mut epoch = 0u32;
    for step in 0..4000 {
        if rng.random_ratio(1, 150) {
            // The map changes; peers move lazily as they announce, the rest at the next sweep.
            env.snap = map(rng.random_range(0..2));
        }
        if step % 400 == 399 {
            // A new epoch: time moves on, the sweep catches up.
            epoch += 1;
            store.clock().advance(2000);
            store.sweep(&env.snap);
            model.retain(|_, (_, at)| epoch - *at < 2);
            check_against_model(&store, &model, &env.snap, true);
            continue;
        }
        let peer = pool[rng.random_range(0..pool.len())];
        let seeder = rng.random_bool(0.3);
        let event = match rng.random_range(0..10) {
            0 => Event::Stopped,
            1 => Event::Completed,
            2 => Event::Started,
            _ => Event::None,
        };
        let a = Announce {
            info_hash: HASH,
            peer,
            event,
            left: u64::from(!seeder),
            numwant: if rng.random_bool(0.3) {
                200
            } else {
                rng.random_range(0..40)
            },
        };
        env.announce(&store, a).expect("no caps are reached");
        if event == Event::Stopped {
            model.remove(&peer);
            assert!(env.peers().is_empty());
        } else {
            model.insert(peer, (seeder, epoch));
            let got = env.peers();
            assert!(got.len() <= a.numwant);
            assert!(!got.contains(&peer), "the requester is never in its answer");
            assert_eq!(
                got.iter().collect::<HashSet<_>>().len(),
                got.len(),
                "no duplicates"
            );
            for p in &got {
                let (their_seeder, _) = model[p];
                assert!(!(seeder && their_seeder), "a seeder was handed a seeder");
            }
            let eligible = model
                .iter()
                .filter(|(p, (s, _))| **p != peer && !(seeder && *s));
            assert_eq!(got.len(), a.numwant.min(eligible.count()));
        }
        if step % 50 == 0 {
            check_against_model(&store, &model, &env.snap, false);
            saw_hashed |= v4_is_hashed(&store, &HASH);
        }
    }
    assert!(saw_hashed, "the IPv4 family grew past {sorted_max} records");
}

fn v4_is_hashed(store: &MemoryStore, hash: &InfoHash) -> bool {
    let shard = read(store.shard(hash));
    let Ok(at) = search(&shard, hash) else {
        return false;
    };
    matches!(&shard[at].peers, Peers::Large(l) if matches!(l.v4, Family::Hashed(_)))
}

/// Checks a family's layout and returns its records in (bucket, address) order: a sorted
/// family is sorted and at most `sorted_max` long; a hashed one has buckets in key order, each
/// holding only its key's records, and an index that finds every record where it is and holds
/// nothing else.
fn family_records<P: Record + std::fmt::Debug>(f: &Family<P>, sorted_max: usize) -> Vec<P> {
    let mut all = match f {
        Family::Sorted(recs) => {
            assert!(recs.len() <= sorted_max, "{recs:?}");
            assert!(
                recs.windows(2).all(|w| w[0].order() < w[1].order()),
                "sorted: {recs:?}"
            );
            return recs.clone();
        }
        Family::Hashed(h) => {
            assert!(h.buckets.windows(2).all(|w| w[0].key < w[1].key));
            let mut all = Vec::new();
            for (b, bucket) in h.buckets.iter().enumerate() {
                for (i, p) in bucket.recs.iter().enumerate() {
                    assert_eq!(p.bucket(), bucket.key, "{p:?} in bucket {b}");
                    assert_eq!(h.find(p.addr()), Some((b, i)), "{p:?} indexed");
                }
                all.extend_from_slice(&bucket.recs);
            }
            assert_eq!(
                h.index.len as usize,
                all.len(),
                "one index entry per record"
            );
            all
        }
    };
    all.sort_by_key(P::order);
    assert!(
        all.windows(2).all(|w| w[0].addr() != w[1].addr()),
        "one record per address: {all:?}"
    );
    all
}

#[test]
fn family_inserts_moves_removals_and_tidying_keep_the_layout_and_the_index() {
    family_keeps_its_layout(SMALL_SORTED_MAX);
}

#[test]
fn a_family_keeps_its_layout_with_the_production_sorted_max() {
    family_keeps_its_layout(SORTED_MAX);
}

/// Random inserts, moves and removals of 120 addresses in one family, checked against a model.
fn family_keeps_its_layout(sorted_max: usize) {
    let mut rng = SmallRng::seed_from_u64(5);
    let mut f: Family<Peer4> = Family::default();
    let mut model: std::collections::BTreeMap<u64, BucketKey> = Default::default();
    // Three big PIDs and many sparse ones, so buckets empty, get dropped and come back.
    let key = |rng: &mut SmallRng| {
        let pid = if rng.random() {
            rng.random_range(0..3)
        } else {
            rng.random_range(3..40)
        };
        BucketKey::new(PidId(pid), rng.random())
    };
    let mut expiry: std::collections::BTreeMap<u64, u16> = Default::default();
    for step in 0..6000 {
        let addr = u64::from(rng.random_range(0..120u32)) << 16 | 6881;
        match (model.get(&addr).copied(), rng.random_range(0..3)) {
            (None, _) => {
                let rec = Peer4::new(addr, 7, key(&mut rng));
                let (s, i) = f.insert(rec, sorted_max);
                assert_eq!(f.rec(s, i), rec, "insert returns the record's slot");
                model.insert(addr, rec.bucket);
                expiry.insert(addr, 7);
            }
            (Some(old), 0) => {
                let (s, i) = f.find(addr).expect("known address");
                assert_eq!(f.rec(s, i).bucket(), old);
                assert_eq!(f.remove(s, i).addr(), addr);
                model.remove(&addr);
                expiry.remove(&addr);
            }
            (Some(old), _) => {
                let (s, i) = f.find(addr).expect("known address");
                assert_eq!(f.rec(s, i).bucket(), old);
                let rec = Peer4::new(addr, 9, key(&mut rng));
                let (s, i) = f.rekey(s, i, rec);
                assert_eq!(f.rec(s, i), rec, "rekey returns the record's slot");
                model.insert(addr, rec.bucket);
                expiry.insert(addr, 9);
            }
        }
        if step % 97 == 0 {
            f.tidy(sorted_max);
        }
        let all = family_records(&f, sorted_max);
        let have: Vec<(u64, BucketKey)> = all.iter().map(|p| (p.addr(), p.bucket)).collect();
        let mut want: Vec<(u64, BucketKey)> = model.iter().map(|(a, b)| (*a, *b)).collect();
        want.sort_by_key(|&(a, b)| Peer4::order_of(b, a));
        assert_eq!(have, want, "step {step}");
    }
    // Expiring the peers never moved keeps the moved ones, still hashed and findable.
    assert!(
        matches!(f, Family::Hashed(_)),
        "120 addresses are past {sorted_max}"
    );
    let removed = f.expire(8, sorted_max);
    let survivors: Vec<u64> = expiry.iter().filter(|e| *e.1 == 9).map(|e| *e.0).collect();
    let gone = expiry.len() - survivors.len();
    assert_eq!((removed.0 + removed.1) as usize, gone);
    let have: Vec<u64> = family_records(&f, sorted_max)
        .iter()
        .map(|p| p.addr())
        .collect();
    assert_eq!(have.len(), survivors.len());
    for addr in survivors {
        assert!(f.find(addr).is_some(), "{addr} survived");
    }
    // Expiring everyone turns the family back into a sorted one.
    f.expire(9, sorted_max);
    assert_eq!(f.len(), 0);
    assert!(matches!(f, Family::Sorted(_)));
    family_records(&f, sorted_max);
}

#[test]
fn records_and_entries_are_as_small_as_the_docs_say() {
    assert_eq!(std::mem::size_of::<Peer4>(), 10);
    assert_eq!(std::mem::size_of::<Peer6>(), 22);
    assert_eq!(std::mem::size_of::<Peers>(), 24);
    assert_eq!(std::mem::size_of::<Entry>(), 48);
    // A hashed IPv4 family lives inside `Large`: one pointer less to chase per announce.
    assert_eq!(std::mem::size_of::<Family<Peer4>>(), 56);
    assert!(
        std::mem::size_of::<Large>() <= 88,
        "{}",
        std::mem::size_of::<Large>()
    );
}

/// MaxMind's GeoLite2-ASN test database (the iTracker's test copy).
fn test_asn_db() -> std::sync::Arc<p4p_itracker::source::asn::AsnDb> {
    let db = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../itracker/testdata/maxmind/GeoLite2-ASN-Test.mmdb"
    );
    std::sync::Arc::new(p4p_itracker::source::asn::AsnDb::open(db).expect("test ASN database"))
}

#[test]
fn with_an_asn_database_public_peers_of_the_requesters_as_come_first() {
    let asn = test_asn_db();
    let snap = p4p_itracker::embedded_default().snapshot_with_asn(Some(asn));
    let store = store();
    let mut env = Env::new(snap);
    env.selector = Selector::new(SelectionConfig::default());
    // AS 7018 (12.81.92.0/22, 12.81.96.0/19) and AS 1221 (1.128.0.0/11), all in the public
    // `default` PID of the embedded map; two seeders in each AS.
    for host in 1..=10u8 {
        let left = u64::from(host > 2);
        env.announce(
            &store,
            ann(&format!("12.81.96.{host}:6881"), left, Event::Started),
        )
        .expect("as7018");
        env.announce(
            &store,
            ann(&format!("1.128.0.{host}:6881"), left, Event::Started),
        )
        .expect("as1221");
    }
    let (mut same, mut total) = (0, 0);
    for round in 0..50u16 {
        // One address per round: a source's ports count against `max_peers_per_source`.
        let mut a = ann(&format!("12.81.93.{}:7000", round + 1), 5, Event::None);
        a.numwant = 4;
        env.announce(&store, a).expect("requester");
        for p in env.peers() {
            total += 1;
            same += usize::from(matches!(p.ip(), IpAddr::V4(v) if v.octets()[0] == 12));
        }
    }
    assert_eq!(total, 50 * 4);
    let share = same as f64 / total as f64;
    assert!(
        share >= 0.9,
        "same-AS share {share} (random would give about 0.5)"
    );
}

/// A store with these per-source quotas (and `SMALL_SORTED_MAX`, so a few peers reach the
/// hashed form).
fn quota_store(new_torrents_per_source: u32, max_peers_per_source: u32) -> MemoryStore {
    let limits = SwarmConfig {
        new_torrents_per_source,
        max_peers_per_source,
        ..SwarmConfig::default()
    };
    MemoryStore::with_sorted_max(limits, Clock::new(), SMALL_SORTED_MAX)
}

#[test]
fn one_source_cannot_fill_a_swarm_through_many_ports() {
    // Sorted (the production `sorted_max`): counted exactly. Hashed (`SMALL_SORTED_MAX`):
    // counted in cells other sources may share, so a source may be refused early, never late.
    for (sorted_max, exact) in [(SORTED_MAX, true), (SMALL_SORTED_MAX, false)] {
        let store = MemoryStore::with_sorted_max(
            SwarmConfig {
                max_peers_per_source: 5,
                ..SwarmConfig::default()
            },
            Clock::new(),
            sorted_max,
        );
        let mut env = Env::new(Snapshot::single_pid());
        for i in 0..40u32 {
            let peer = format!("127.0.1.{}:6881", i + 10);
            env.announce(&store, ann(&peer, 5, Event::Started))
                .expect("one peer per source");
        }
        let mut admitted = Vec::new();
        for port in 1..=10u16 {
            let peer = format!("127.0.0.2:{port}");
            match env.announce(&store, ann(&peer, u64::from(port % 2), Event::Started)) {
                Ok(_) => admitted.push(peer),
                Err(e) => {
                    assert_eq!(e, StoreError::SourceFull);
                    break;
                }
            }
        }
        assert!(
            admitted.len() <= 5,
            "{admitted:?} (sorted_max {sorted_max})"
        );
        if exact {
            assert_eq!(admitted.len(), 5);
        } else {
            assert!(!admitted.is_empty());
        }
        assert_eq!(
            StoreError::SourceFull.message(),
            "too many peers from your address in this swarm"
        );
        // Known peers of the source still announce; other sources still join.
        env.announce(&store, ann(&admitted[0], 0, Event::Completed))
            .expect("a known peer is never refused");
        env.announce(&store, ann("127.0.0.3:6", 5, Event::Started))
            .expect("another source");
        // A peer that stops frees its place, in every family form.
        env.announce(&store, ann(&admitted[0], 5, Event::Stopped))
            .expect("stop");
        env.announce(&store, ann("127.0.0.2:99", 5, Event::Started))
            .expect("a place was freed");
        assert_eq!(
            env.announce(&store, ann("127.0.0.2:100", 5, Event::Started)),
            Err(StoreError::SourceFull)
        );
        // Expired peers free theirs too (the sweep rebuilds the counts).
        store.clock().advance(4000);
        store.sweep(&env.snap);
        env.announce(&store, ann("127.0.0.2:200", 5, Event::Started))
            .expect("the source's peers expired");
    }
}

#[test]
fn the_peer_cap_counts_an_ipv6_slash_64_as_one_source() {
    let store = quota_store(0, 3);
    let mut env = Env::new(Snapshot::single_pid());
    for i in 1..=3 {
        let peer = format!("[2001:db8:0:1::{i}]:6881");
        env.announce(&store, ann(&peer, 5, Event::Started))
            .expect("within the cap");
    }
    assert_eq!(
        env.announce(
            &store,
            ann("[2001:db8:0:1:ffff::9]:6881", 5, Event::Started)
        ),
        Err(StoreError::SourceFull)
    );
    env.announce(&store, ann("[2001:db8:0:2::1]:6881", 5, Event::Started))
        .expect("another /64");
}

#[test]
fn no_peer_cap_lets_one_source_hold_many_ports() {
    let store = quota_store(0, 0);
    let mut env = Env::new(Snapshot::single_pid());
    for port in 1..=600 {
        env.announce(&store, ann(&format!("127.0.0.2:{port}"), 5, Event::Started))
            .expect("no cap");
    }
    assert_eq!(store.scrape(&HASH).incomplete, 600);
}

#[test]
fn a_large_swarm_counts_a_source_past_what_fits_one_cell() {
    // 300 peers of one source: the 8-bit cell saturates and stays, so the source stays
    // refused at a cap below it until the sweep rebuilds the counts.
    let store = quota_store(0, 0);
    let mut env = Env::new(Snapshot::single_pid());
    for port in 1..=300 {
        env.announce(&store, ann(&format!("127.0.0.2:{port}"), 5, Event::Started))
            .expect("no cap");
    }
    let shard = read(store.shard(&HASH));
    let at = search(&shard, &HASH).expect("swarm");
    let count = shard[at].host_peers("127.0.0.2:9999".parse().expect("addr"));
    assert!(count >= 250, "saturated count {count}");
    assert!(shard[at].host_peers("127.0.0.3:1".parse().expect("addr")) < 250);
}

#[test]
fn one_source_gets_a_budget_of_new_torrents_per_minute() {
    let store = quota_store(3, 0);
    let mut env = Env::new(Snapshot::single_pid());
    let torrent = |t: u8, peer: &str| {
        let mut a = ann(peer, 5, Event::Started);
        a.info_hash = InfoHash([t; 20]);
        a
    };
    for t in 1..=3 {
        env.announce(&store, torrent(t, "127.0.0.2:1"))
            .expect("within the budget");
    }
    assert_eq!(
        env.announce(&store, torrent(4, "127.0.0.2:2")),
        Err(StoreError::SourceBudgetSpent)
    );
    assert_eq!(
        store.totals().torrents,
        3,
        "a refused torrent is not created"
    );
    // Joining a torrent that exists costs nothing; other sources have their own budget.
    env.announce(&store, torrent(1, "127.0.0.2:3"))
        .expect("known torrent");
    env.announce(&store, torrent(4, "127.0.0.9:1"))
        .expect("another source");
    env.announce(&store, torrent(4, "127.0.0.2:2"))
        .expect("torrent 4 exists now");
    // A minute later the budget is back.
    store.clock().advance(60);
    env.announce(&store, torrent(5, "127.0.0.2:1"))
        .expect("a new minute");
    store.sweep(&env.snap);
    assert_eq!(store.budget.sources(), 1, "past minutes are forgotten");
}

mod access {
    use super::*;
    use crate::access::{AccessControl, AccessMode, UNCHECKED};
    use crate::swap::SwapCache;

    const OTHER: InfoHash = InfoHash([2; 20]);

    fn control(mode: AccessMode) -> AccessControl {
        AccessControl::new(mode, std::env::temp_dir().join("p4p-unused-access-list"))
    }

    /// The access-list generation the torrent's swarm holds (`None`: no swarm).
    fn admitted(store: &MemoryStore, hash: &InfoHash) -> Option<u16> {
        let shard = read(store.shard(hash));
        search(&shard, hash).ok().map(|at| shard[at].admitted())
    }

    #[test]
    fn a_swarm_admitted_under_the_list_in_use_is_not_looked_up_again() {
        let store = store();
        let mut env = Env::new(Snapshot::single_pid());
        let allow = control(AccessMode::Allow);
        let mut cache = SwapCache::default();
        allow.put_for_test(&[HASH], 2);
        let ok = env.announce_with(
            &store,
            ann("10.0.0.1:1", 5, Event::Started),
            Some(allow.admission(&mut cache)),
        );
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(admitted(&store, &HASH), Some(2));
        // A list that refuses the torrent but carries the generation the swarm was admitted
        // under: the announce is answered, so the list was not read.
        allow.put_for_test(&[], 2);
        let skipped = env.announce_with(
            &store,
            ann("10.0.0.2:1", 5, Event::Started),
            Some(allow.admission(&mut cache)),
        );
        assert_eq!(skipped.map(|s| s.incomplete), Ok(2));
        // The same list under a new generation is read, and refuses.
        allow.put_for_test(&[], 3);
        let refused = env.announce_with(
            &store,
            ann("10.0.0.3:1", 5, Event::Started),
            Some(allow.admission(&mut cache)),
        );
        assert_eq!(refused, Err(StoreError::NotAllowed));
    }

    #[test]
    fn a_new_list_that_drops_a_torrent_refuses_its_swarm_and_keeps_its_peers() {
        let store = store();
        let mut env = Env::new(Snapshot::single_pid());
        let allow = control(AccessMode::Allow);
        let mut cache = SwapCache::default();
        allow.put_for_test(&[HASH], 2);
        for peer in ["10.0.0.1:1", "10.0.0.2:1"] {
            let a = ann(peer, 5, Event::Started);
            let got = env.announce_with(&store, a, Some(allow.admission(&mut cache)));
            assert!(got.is_ok(), "{got:?}");
        }
        allow.put_for_test(&[OTHER], 3);
        for event in [Event::None, Event::Stopped] {
            let a = ann("10.0.0.1:1", 5, event);
            let got = env.announce_with(&store, a, Some(allow.admission(&mut cache)));
            assert_eq!(got, Err(StoreError::NotAllowed), "{event:?}");
        }
        // As before the verdict was cached: the refused swarm keeps its peers (they expire
        // after the peer timeout) and its generation.
        assert_eq!(store.scrape(&HASH).incomplete, 2);
        assert_eq!(admitted(&store, &HASH), Some(2));
        // A list that lists it again admits it under its own generation.
        allow.put_for_test(&[HASH, OTHER], 4);
        let a = ann("10.0.0.3:1", 5, Event::Started);
        let back = env.announce_with(&store, a, Some(allow.admission(&mut cache)));
        assert_eq!(back.map(|s| s.incomplete), Ok(3));
        assert_eq!(admitted(&store, &HASH), Some(4));
    }

    #[test]
    fn a_refused_torrent_gets_no_swarm_in_either_mode() {
        let store = store();
        let mut env = Env::new(Snapshot::single_pid());
        let mut cache = SwapCache::default();
        let deny = control(AccessMode::Deny);
        deny.put_for_test(&[HASH], 2);
        let a = ann("10.0.0.1:1", 5, Event::Started);
        let got = env.announce_with(&store, a, Some(deny.admission(&mut cache)));
        assert_eq!(got, Err(StoreError::NotAllowed));
        assert_eq!(admitted(&store, &HASH), None);
        let other = Announce {
            info_hash: OTHER,
            ..ann("10.0.0.1:1", 5, Event::Started)
        };
        let got = env.announce_with(&store, other, Some(deny.admission(&mut cache)));
        assert!(
            got.is_ok(),
            "an unlisted torrent is served in deny mode: {got:?}"
        );
        assert_eq!(admitted(&store, &OTHER), Some(2));

        let allow = control(AccessMode::Allow);
        let mut cache = SwapCache::default();
        allow.put_for_test(&[OTHER], 5);
        let a = ann("10.0.0.1:1", 5, Event::Started);
        let got = env.announce_with(&store, a, Some(allow.admission(&mut cache)));
        assert_eq!(got, Err(StoreError::NotAllowed));
        assert_eq!(admitted(&store, &HASH), None);
        assert_eq!(store.totals().torrents, 1);
        // A deny list that no longer lists it admits it.
        deny.put_for_test(&[], 6);
        let a = ann("10.0.0.1:1", 5, Event::Started);
        let got = env.announce_with(&store, a, Some(deny.admission(&mut cache)));
        assert!(got.is_ok(), "{got:?}");
        assert_eq!(admitted(&store, &HASH), Some(6));
    }

    #[test]
    fn forgotten_admissions_are_looked_up_again() {
        let store = store();
        let mut env = Env::new(Snapshot::single_pid());
        // Without an access list nothing is admitted, and a swarm grown to a large one keeps
        // its generation.
        let plain = env.announce(&store, ann("10.0.0.9:1", 5, Event::Started));
        assert!(plain.is_ok());
        assert_eq!(admitted(&store, &HASH), Some(UNCHECKED));
        let allow = control(AccessMode::Allow);
        let mut cache = SwapCache::default();
        allow.put_for_test(&[HASH], 7);
        for i in 1..=5 {
            let a = ann(&format!("10.0.0.{i}:1"), 5, Event::Started);
            let got = env.announce_with(&store, a, Some(allow.admission(&mut cache)));
            assert!(got.is_ok(), "{got:?}");
        }
        assert_eq!(admitted(&store, &HASH), Some(7));
        store.forget_admissions();
        assert_eq!(admitted(&store, &HASH), Some(UNCHECKED));
        allow.put_for_test(&[], 7);
        let a = ann("10.0.0.1:1", 5, Event::None);
        let got = env.announce_with(&store, a, Some(allow.admission(&mut cache)));
        assert_eq!(got, Err(StoreError::NotAllowed));
    }

    #[test]
    fn a_swarm_another_node_created_is_looked_up_at_its_first_local_announce() {
        let store = store();
        let snap = Snapshot::single_pid();
        let remote = crate::swarm::memory::RemotePeer {
            info_hash: HASH,
            peer: "10.0.0.1:1".parse().expect("addr"),
            seeder: false,
            completed: false,
            stopped: false,
            pid: snap.pids()[0].id,
            expires_in: 100,
        };
        assert!(store.apply_remote(&remote, &snap));
        assert_eq!(admitted(&store, &HASH), Some(UNCHECKED));
        let mut env = Env::new(snap);
        let deny = control(AccessMode::Deny);
        let mut cache = SwapCache::default();
        deny.put_for_test(&[HASH], 2);
        let a = ann("10.0.0.2:1", 5, Event::Started);
        let got = env.announce_with(&store, a, Some(deny.admission(&mut cache)));
        assert_eq!(got, Err(StoreError::NotAllowed));
        assert_eq!(
            store.scrape(&HASH).incomplete,
            1,
            "the other node's peer stays"
        );
    }
}

/// 300 PIDs of one ISP (`10.1.0.0/24` on, every 10th also `fd00:i::/48`) and 20 outside it
/// (`10.9.i.0/24`), costs `|i - j|`, 1,000 more across the boundary.
fn many_pids(tag: &str) -> Snapshot {
    many_pids_with(tag, None)
}

/// [`many_pids`], with an ASN database for the addresses outside the ISP.
fn many_pids_with(
    tag: &str,
    asn: Option<std::sync::Arc<p4p_itracker::source::asn::AsnDb>>,
) -> Snapshot {
    let mut b = SnapshotBuilder::new(tag, 5000.0);
    let with_asn = asn.is_some();
    if let Some(db) = asn {
        b = b.with_asn(db, 100.0, 200.0);
    }
    let isp = b.add_isp("A");
    for i in 0..320usize {
        let mut prefixes = vec![if i < 300 {
            format!("10.{}.{}.0/24", 1 + i / 256, i % 256)
        } else {
            format!("10.9.{}.0/24", i - 300)
        }
        .parse()
        .expect("prefix")];
        if i < 300 && i % 10 == 0 {
            prefixes.push(format!("fd00:{i:x}::/48").parse().expect("prefix"));
        }
        b.add_pid(PidSpec {
            name: format!("many-{tag}-{i}"),
            isp,
            internal: i < 300,
            prefixes,
        });
    }
    let costs = (0..320 * 320usize)
        .map(|x| {
            let (i, j) = (x / 320, x % 320);
            i.abs_diff(j) as f32 + if (i < 300) != (j < 300) { 1000.0 } else { 0.0 }
        })
        .collect();
    b.set_cost_matrix(costs);
    if with_asn {
        // The rest of the Internet, with costs: its AS locations (cost 10 from it, what the map
        // says of the default PID itself) come before the ISP's PIDs (1000).
        let rest = b.add_pid(PidSpec {
            name: p4p_itracker::pid::DEFAULT_PID_NAME.into(),
            isp,
            internal: false,
            prefixes: Vec::new(),
        });
        b.set_cost(rest, rest, 10.0);
        for to in 0..320 {
            b.set_cost(rest, to, 1000.0);
        }
    }
    b.build().expect("320 PIDs")
}

/// The address of peer `k` of a swarm over [`many_pids`]: PID `k % 320`, IPv6 for some.
fn many_addr(k: usize) -> SocketAddr {
    let pid = k % 320;
    let host = (k / 320 + 1) as u16;
    if (k / 320) % 2 == 0 && pid < 300 && pid % 10 == 0 {
        return format!("[fd00:{pid:x}::{host:x}]:6881")
            .parse()
            .expect("v6");
    }
    let (b, c) = if pid < 300 {
        (1 + pid / 256, pid % 256)
    } else {
        (9, pid - 300)
    };
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, b as u8, c as u8, host as u8),
        6881,
    ))
}

/// Issue 17: a swarm spread over hundreds of PIDs is read PID by PID ([`IndexedView`]): each
/// PID's runs are the ones a full listing has, the counts and uniform draws match the records,
/// and `p4p` answers from it are drawn as from the full listing (per-PID frequencies).
#[test]
fn a_swarm_over_many_pids_is_read_pid_by_pid_as_the_full_listing() {
    let s = store();
    let mut env = Env::new(many_pids("a"));
    env.selector = Selector::new(SelectionConfig::default());
    for k in 0..1600 {
        let left = u64::from((k / 320) % 5 != 0);
        let peer = many_addr(k).to_string();
        env.announce(&s, ann(&peer, left, Event::None))
            .expect("fill");
    }
    check_invariants(&s);
    assert!(indexed_matches_listing(&s, &env.snap), "read PID by PID");
    let all = contents(&s, &HASH);
    let shard = read(s.shard(&HASH));
    let entry = &shard[search(&shard, &HASH).expect("torrent")];
    let indexed = IndexedView::of(entry, Vec::new()).unwrap_or_else(|_| unreachable!());
    let snap = &env.snap;
    let count = |v6: Option<bool>, seeder: bool| {
        all.iter()
            .filter(|p| p.1 == seeder && v6.is_none_or(|v| p.0.is_ipv6() == v))
            .count()
    };
    for (families, v6) in [
        (Families::Both, None),
        (Families::V4, Some(false)),
        (Families::V6, Some(true)),
    ] {
        assert_eq!(
            indexed.totals(families),
            (count(v6, true), count(v6, false)),
            "{families:?}"
        );
    }
    assert!(
        count(Some(true), false) * count(Some(true), true) > 0,
        "IPv6 peers of both roles"
    );
    let mut rng = SmallRng::seed_from_u64(3);
    let draws = 4000;
    let seeders = (0..draws)
        .map(|_| indexed.any_peer(&mut rng).expect("a draw"))
        .inspect(|(pid, seeder, _)| {
            assert!(all.iter().any(|p| p.2 == *pid && p.1 == *seeder));
        })
        .filter(|d| d.1)
        .count();
    let share = count(None, true) as f64 / all.len() as f64;
    let drawn = seeders as f64 / f64::from(draws);
    assert!(
        (drawn - share).abs() < 0.03,
        "seeders drawn {drawn}, held {share}"
    );

    drop(indexed);
    drop(shard);
    // The same requester through both views: per-PID frequencies of 3,000 answers each.
    let me = many_addr(325); // a leecher of PID 5
    answers_read_pid_by_pid_are_drawn_as_listed(&s, snap, &env.selector, me);
    // And through the store: answers valid and full.
    env.announce(&s, ann(&me.to_string(), 1, Event::None))
        .expect("announce");
    let got = env.peers();
    assert_eq!(got.len(), 50);
    assert!(!got.contains(&me));
}

/// Every PID's runs read PID by PID are the full listing's (`false` when the swarm is not read
/// PID by PID).
fn indexed_matches_listing(store: &MemoryStore, snap: &Snapshot) -> bool {
    let shard = read(store.shard(&HASH));
    let entry = &shard[search(&shard, &HASH).expect("torrent")];
    let mut runs = Vec::new();
    entry.runs(&mut runs);
    let listed = View::new(entry, &runs);
    let Ok(indexed) = IndexedView::of(entry, Vec::new()) else {
        return false;
    };
    let peers_of = |view: &dyn Buckets, b: usize| {
        let mut p: Vec<SocketAddr> = (0..view.size(b)).map(|i| view.peer(b, i)).collect();
        p.sort();
        (view.seeders(b), view.v6(b), p)
    };
    for pid in snap.pids() {
        let mut got: Vec<_> = indexed
            .find(pid.id)
            .map(|b| peers_of(&indexed, b))
            .collect();
        let mut want: Vec<_> = (0..listed.count())
            .filter(|&b| listed.pid(b) == pid.id)
            .map(|b| peers_of(&listed, b))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "runs of {}", pid.name);
    }
    let all: Vec<_> = (0..listed.count()).collect();
    let count = |seeders: bool| -> usize {
        all.iter()
            .filter(|&&b| listed.seeders(b) == seeders)
            .map(|&b| listed.size(b))
            .sum()
    };
    assert_eq!(indexed.totals(Families::Both), (count(true), count(false)));
    true
}

/// The PID directory of a hashed family follows churn: peers leave (buckets emptied, then
/// dropped by the sweep), complete (new seeder buckets), expire, and a new map files every
/// peer under other PIDs; after each step every PID's runs read PID by PID are the listing's.
#[test]
fn the_pid_directory_follows_churn_and_map_changes() {
    let s = store();
    let mut env = Env::new(many_pids("churn"));
    env.selector = Selector::new(SelectionConfig::default());
    let role = |k: usize| u64::from((k / 320) % 5 != 0);
    for k in 0..1600 {
        env.announce(&s, ann(&many_addr(k).to_string(), role(k), Event::None))
            .expect("fill");
    }
    assert!(indexed_matches_listing(&s, &env.snap), "read PID by PID");
    // Every peer of a third of PIDs 0..150 leaves.
    for k in (0..1600).filter(|k| k % 320 < 150 && k % 3 == 0) {
        env.announce(&s, ann(&many_addr(k).to_string(), role(k), Event::Stopped))
            .expect("stop");
    }
    assert!(indexed_matches_listing(&s, &env.snap));
    s.sweep(&env.snap);
    assert!(indexed_matches_listing(&s, &env.snap));
    // The leechers of PIDs 150..250 complete: seeders' buckets appear.
    for k in (0..1600).filter(|k| (150..250).contains(&(k % 320)) && role(*k) == 1) {
        env.announce(&s, ann(&many_addr(k).to_string(), 0, Event::Completed))
            .expect("complete");
    }
    assert!(indexed_matches_listing(&s, &env.snap));
    // Half the peers announce again; the others expire.
    s.clock().advance(3000);
    for k in (0..1600).filter(|k| k % 320 % 2 == 0) {
        env.announce(&s, ann(&many_addr(k).to_string(), 1, Event::None))
            .expect("again");
    }
    s.clock().advance(1000);
    s.sweep(&env.snap);
    check_invariants(&s);
    assert!(indexed_matches_listing(&s, &env.snap), "still PID by PID");
    // A new map (other PID names) re-files every peer at the sweep.
    env.snap = many_pids("churn-2");
    s.sweep(&env.snap);
    assert!(indexed_matches_listing(&s, &env.snap), "after the new map");
    env.announce(&s, ann(&many_addr(2).to_string(), 1, Event::None))
        .expect("announce");
    assert_eq!(env.peers().len(), 50);
}

/// `p4p` answers to the swarm's peer `me` (a leecher) through an [`IndexedView`] and through
/// the full listing: valid, as many peers in all (within 1 %), drawn alike (how many of 3,000
/// answers each PID appears in, within about 5 standard deviations).
fn answers_read_pid_by_pid_are_drawn_as_listed(
    store: &MemoryStore,
    snap: &Snapshot,
    sel: &Selector,
    me: SocketAddr,
) {
    let all = contents(store, &HASH);
    let shard = read(store.shard(&HASH));
    let entry = &shard[search(&shard, &HASH).expect("torrent")];
    let mut runs = Vec::new();
    entry.runs(&mut runs);
    let listed = View::new(entry, &runs);
    let pos = entry.find(me).expect("requester");
    let mut indexed = IndexedView::of(entry, Vec::new()).unwrap_or_else(|_| unreachable!());
    let (pid_index, bucket_id) = crate::topology::location(snap, me.ip());
    let req = |position| Requester {
        pid_index,
        bucket_id,
        seeder: false,
        families: Families::Both,
        position,
        numwant: 20,
    };
    let at_indexed = req(indexed.own(bucket_id, pos));
    let at_listed = req(listed.run_pos(pos));
    assert!(at_indexed.position.is_some() && at_listed.position.is_some());
    let pid_of: HashMap<SocketAddr, PidId> = all.iter().map(|p| (p.0, p.2)).collect();
    let tally = |view: &dyn Fn(&mut SmallRng, &mut Scratch, &mut Vec<SocketAddr>)| {
        // Answers each PID appears in; the peers handed out under the key `None`.
        let mut counts: HashMap<Option<PidId>, u32> = HashMap::new();
        let (mut rng, mut scratch) = (SmallRng::seed_from_u64(11), Scratch::default());
        for _ in 0..3000 {
            let mut out = Vec::new();
            view(&mut rng, &mut scratch, &mut out);
            assert!(out.len() <= 20);
            assert!(!out.contains(&me));
            assert_eq!(out.iter().collect::<HashSet<_>>().len(), out.len());
            *counts.entry(None).or_default() += out.len() as u32;
            // Answers a PID appears in (whole small PIDs are taken at once: counting peers
            // would add their clustering to the noise).
            let in_answer: HashSet<PidId> = out.iter().map(|a| pid_of[a]).collect();
            for pid in in_answer {
                *counts.entry(Some(pid)).or_default() += 1;
            }
        }
        counts
    };
    let a = tally(&|rng, scratch, out| {
        sel.select(&indexed, snap, &at_indexed, rng, scratch, &mut |p| {
            out.push(p)
        });
    });
    let b = tally(&|rng, scratch, out| {
        sel.select(&listed, snap, &at_listed, rng, scratch, &mut |p| {
            out.push(p)
        });
    });
    let (x, y) = (a[&None], b[&None]);
    assert!(
        x.abs_diff(y) <= (x + y) / 100 + 20,
        "{x} peers handed out read PID by PID, {y} from the full listing"
    );
    let pids: HashSet<PidId> = a.keys().chain(b.keys()).filter_map(|&p| p).collect();
    for pid in pids {
        let pid = Some(pid);
        let (x, y) = (
            a.get(&pid).copied().unwrap_or(0),
            b.get(&pid).copied().unwrap_or(0),
        );
        let bound = 5.0 * f64::from(x + y).sqrt() + 10.0;
        assert!(
            f64::from(x.abs_diff(y)) <= bound,
            "PID {pid:?} ({:?}): in {x} answers read PID by PID, {y} from the full listing \
             (requester {me})",
            pid.and_then(|p| snap.index_of(p))
                .map(|i| snap.pid(i).name.clone())
        );
    }
}

/// `random` on a swarm spread over hundreds of PIDs draws its answers from the whole swarm
/// without listing it (the view lists nothing past the requester's PID), each answer valid
/// (distinct peers, not the requester, no seeder for a seeder, only the asked family), drawn
/// as from the full listing (per-PID frequencies); an answer that wants more than half the
/// eligible peers is read from the listing instead.
#[test]
fn random_draws_from_a_swarm_over_many_pids_as_from_the_full_listing() {
    let s = store();
    let mut env = Env::new(many_pids("rnd"));
    let random = Selector::new(SelectionConfig {
        policy: PolicyKind::Random,
        ..SelectionConfig::default()
    });
    env.selector = random.clone();
    for k in 0..1600 {
        let left = u64::from((k / 320) % 5 != 0);
        env.announce(&s, ann(&many_addr(k).to_string(), left, Event::None))
            .expect("fill");
    }
    let all = contents(&s, &HASH);
    let role: HashMap<SocketAddr, bool> = all.iter().map(|p| (p.0, p.1)).collect();
    let snap = &env.snap;
    let answer = |me: SocketAddr, seeder: bool, families: Families, numwant: usize| {
        let shard = read(s.shard(&HASH));
        let entry = &shard[search(&shard, &HASH).expect("torrent")];
        let mut indexed = IndexedView::of(entry, Vec::new()).unwrap_or_else(|_| unreachable!());
        let (pid_index, bucket_id) = crate::topology::location(snap, me.ip());
        let pos = entry.find(me).expect("requester");
        let req = Requester {
            pid_index,
            bucket_id,
            seeder,
            families,
            position: indexed.own(bucket_id, pos),
            numwant,
        };
        assert!(req.position.is_some());
        let (mut rng, mut scratch) = (SmallRng::seed_from_u64(5), Scratch::default());
        let mut out = Vec::new();
        random.select(&indexed, snap, &req, &mut rng, &mut scratch, &mut |p| {
            out.push(p)
        });
        (out, indexed.count())
    };
    let leecher = many_addr(325);
    let seeder = many_addr(5);
    assert!(!role[&leecher] && role[&seeder]);
    for (me, is_seeder, families) in [
        (leecher, false, Families::Both),
        (seeder, true, Families::Both),
        (leecher, false, Families::V4),
        (many_addr(650), false, Families::V6),
    ] {
        let (out, listed) = answer(me, is_seeder, families, 30);
        assert_eq!(out.len(), 30, "{me}");
        assert!(
            listed <= 4,
            "{me}: {listed} runs listed, none past its own PID's"
        );
        assert_eq!(
            out.iter().collect::<HashSet<_>>().len(),
            30,
            "{me}: repeats"
        );
        assert!(!out.contains(&me));
        assert!(out.iter().all(|p| role.contains_key(p)), "{me}: not a peer");
        assert!(
            !is_seeder || out.iter().all(|p| !role[p]),
            "{me}: a seeder got seeders"
        );
        match families {
            Families::V4 => assert!(out.iter().all(|p| p.is_ipv4())),
            Families::V6 => assert!(out.iter().all(|p| p.is_ipv6())),
            Families::Both => {}
        }
    }
    // More than half the eligible peers (the 1,280 leechers, for a seeder): from the listing.
    let (out, listed) = answer(seeder, true, Families::Both, 1000);
    assert_eq!(out.len(), 1000);
    assert!(listed >= 128, "{listed} runs listed");
    assert_eq!(out.iter().collect::<HashSet<_>>().len(), 1000);
    assert!(out.iter().all(|p| !role[p]) && !out.contains(&seeder));
    answers_read_pid_by_pid_are_drawn_as_listed(&s, snap, &random, leecher);
}

/// With an ASN database, public peers are filed under AS locations, which no preference order
/// lists: read PID by PID, answers still take them as the full listing ranks them (one far
/// cost class), for a requester inside the ISP and for one with an AS location of its own.
#[test]
fn as_locations_are_read_pid_by_pid_as_the_full_listing() {
    let asn = test_asn_db();
    let s = store();
    let mut env = Env::new(many_pids_with("asn", Some(asn)));
    env.selector = Selector::new(SelectionConfig::default());
    for k in 0..1600 {
        let left = u64::from((k / 320) % 5 != 0);
        env.announce(&s, ann(&many_addr(k).to_string(), left, Event::None))
            .expect("fill");
    }
    // AS 7018 (12.81.96.0/19) and AS 1221 (1.128.0.0/11): public, outside every PID of the map
    // but its default one; and the requester of AS 7018.
    for host in 1..=12u8 {
        let left = u64::from(host > 3);
        for net in ["12.81.96", "1.128.0"] {
            env.announce(&s, ann(&format!("{net}.{host}:6881"), left, Event::None))
                .expect("public peer");
        }
    }
    let public: SocketAddr = "12.81.93.7:7000".parse().expect("addr");
    env.announce(&s, ann(&public.to_string(), 1, Event::None))
        .expect("public requester");
    assert!(indexed_matches_listing(&s, &env.snap));
    answers_read_pid_by_pid_are_drawn_as_listed(&s, &env.snap, &env.selector, public);
    answers_read_pid_by_pid_are_drawn_as_listed(&s, &env.snap, &env.selector, many_addr(325));
}
