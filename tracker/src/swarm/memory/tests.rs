use std::net::IpAddr;

use p4p_itracker::snapshot::PidSpec;
use p4p_itracker::SnapshotBuilder;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::*;
use crate::config::{PolicyKind, SelectionConfig};

fn store() -> MemoryStore {
    MemoryStore::new(SwarmConfig::default(), Clock::new())
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
        self.sink.clear();
        let ctx = AnnounceContext {
            snapshot: &self.snap,
            selector: &self.selector,
            families: Families::Both,
            rng: &mut self.rng,
            scratch: &mut self.scratch,
            sink: &mut self.sink,
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

fn ann(peer: &str, left: u64, event: Event) -> Announce {
    Announce {
        info_hash: InfoHash([1; 20]),
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
    assert_eq!(store.scrape(&InfoHash([1; 20])).incomplete, 1);
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

fn two_pid_snapshot(a_prefix: &str) -> Snapshot {
    let mut b = SnapshotBuilder::new(a_prefix, 10.0);
    let isp = b.add_isp("mem-test");
    for (name, prefix) in [("mem-a", a_prefix), ("mem-b", "127.2.0.0/16")] {
        b.add_pid(PidSpec {
            name: name.into(),
            isp,
            internal: true,
            prefixes: vec![prefix.parse().expect("prefix")],
        });
    }
    b.build().expect("snapshot")
}

#[test]
fn a_new_snapshot_rebuckets_lazily_without_duplicates() {
    let store = store();
    let mut env = Env::new(two_pid_snapshot("127.1.0.0/16"));
    env.announce(&store, ann("127.1.0.2:1", 5, Event::Started))
        .expect("ok");
    env.announce(&store, ann("127.3.0.2:1", 5, Event::Started))
        .expect("ok");
    let pid_of = |store: &MemoryStore, ip: &str| {
        let swarm = store.swarms.get(&InfoHash([1; 20])).expect("swarm");
        let ip: IpAddr = ip.parse().expect("ip");
        let found = swarm
            .buckets
            .iter()
            .find(|b| (0..b.len()).any(|i| b.peer(i).ip() == ip));
        found.map(|b| b.pid.name().to_string())
    };
    assert_eq!(pid_of(&store, "127.3.0.2").as_deref(), Some("default"));
    // The map changes: 127.3/16 joins mem-a. The peer re-announces before any sweep.
    env.snap = two_pid_snapshot("127.0.0.0/14");
    let s = env
        .announce(&store, ann("127.3.0.2:1", 5, Event::None))
        .expect("ok");
    assert_eq!(s.incomplete, 2, "moved, not duplicated");
    assert_eq!(pid_of(&store, "127.3.0.2").as_deref(), Some("mem-a"));
    // The sweep moves the peer that did not re-announce.
    let r = store.sweep(&env.snap);
    assert_eq!(r.peers_moved, 0, "127.1.0.2 stays in mem-a");
    assert_eq!(store.scrape(&InfoHash([1; 20])).incomplete, 2);
}

#[test]
fn ipv4_peer_record_is_eight_bytes() {
    assert_eq!(std::mem::size_of::<Peer4>(), 8);
    assert_eq!(std::mem::size_of::<Peer6>(), 20);
}
