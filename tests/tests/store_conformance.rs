//! One conformance suite for every swarm store: the same scenarios, called through the
//! [`Store`] boundary, run against the memory store and against a real Redis (each scenario
//! under a key prefix of its own). A store that passes them behaves the same to every front end.
//!
//! The Redis runs need `P4P_TEST_REDIS_URL` (started by `scripts/test`), so they are
//! `#[ignore]`d under a plain `cargo test` and fail when run without it.

use std::net::SocketAddr;

use p4p_itracker::Snapshot;
use p4p_tests::{test_redis_url, unique_prefix};
use p4p_tracker::clock::Clock;
use p4p_tracker::config::{Config, SwarmConfig};
use p4p_tracker::selection::{Scratch, Selector};
use p4p_tracker::swarm::{AnnounceContext, PeerSink, Store, StoreError};
use p4p_tracker::types::{Announce, Event, Families, InfoHash, SwarmStats};
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Which store a scenario runs on.
#[derive(Copy, Clone, Debug)]
enum Backend {
    Memory,
    Redis,
}

/// A store under test with what announcing to it takes.
struct Subject {
    store: Store,
    clock: Clock,
    snapshot: Snapshot,
    selector: Selector,
    rng: SmallRng,
    scratch: Scratch,
    sink: PeerSink,
}

impl Subject {
    /// A fresh store of `backend` with `limits`.
    fn open(backend: Backend, limits: SwarmConfig) -> Self {
        let mut config = Config {
            swarm: limits,
            ..Config::default()
        };
        if let Backend::Redis = backend {
            config.store.url = test_redis_url();
            config.store.key_prefix = unique_prefix("conformance");
        }
        let clock = Clock::new();
        let store = Store::from_config(&config, &clock).expect("the store opens");
        Self {
            store,
            clock,
            snapshot: Snapshot::single_pid(),
            selector: Selector::new(config.selection.clone()),
            rng: SmallRng::seed_from_u64(1),
            scratch: Scratch::default(),
            sink: PeerSink::default(),
        }
    }

    /// Announces and returns the counts and the peers handed out, sorted.
    async fn announce_as(
        &mut self,
        a: Announce,
        families: Families,
    ) -> Result<(SwarmStats, Vec<SocketAddr>), StoreError> {
        self.sink.clear();
        let ctx = AnnounceContext {
            snapshot: &self.snapshot,
            selector: &self.selector,
            families,
            rng: &mut self.rng,
            scratch: &mut self.scratch,
            sink: &mut self.sink,
            access: None,
        };
        let (stats, _) = self.store.announce(&a, ctx).await?;
        let mut peers: Vec<SocketAddr> = self.sink.v4.iter().map(|&p| p.into()).collect();
        peers.extend(self.sink.v6.iter().map(|&p| SocketAddr::from(p)));
        peers.sort();
        Ok((stats, peers))
    }

    /// Announces `peer` to `hash` with `event` (left 0 = seeder), wanting 50 peers.
    async fn announce(
        &mut self,
        hash: u8,
        peer: &str,
        left: u64,
        event: Event,
    ) -> Result<(SwarmStats, Vec<SocketAddr>), StoreError> {
        let a = announce(hash, peer, left, event);
        let families = if a.peer.is_ipv6() {
            Families::V6
        } else {
            Families::V4
        };
        self.announce_as(a, families).await
    }

    async fn scrape(&self, hash: u8) -> SwarmStats {
        let mut out = Vec::new();
        self.store
            .scrape(&[InfoHash([hash; 20])], &mut out)
            .await
            .expect("scrape");
        assert_eq!(out.len(), 1);
        out[0].1
    }
}

fn announce(hash: u8, peer: &str, left: u64, event: Event) -> Announce {
    Announce {
        info_hash: InfoHash([hash; 20]),
        peer: peer.parse().expect("peer address"),
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

fn stats(complete: u32, incomplete: u32, downloaded: u32) -> SwarmStats {
    SwarmStats {
        complete,
        incomplete,
        downloaded,
    }
}

async fn the_first_peer_gets_nobody_and_is_counted(b: Backend) {
    let mut s = Subject::open(b, SwarmConfig::default());
    let (st, peers) = s
        .announce(1, "127.0.0.2:6001", 10, Event::Started)
        .await
        .expect("announce");
    assert_eq!(st, stats(0, 1, 0));
    assert!(peers.is_empty());
    assert_eq!(s.scrape(1).await, stats(0, 1, 0));
    assert_eq!(
        s.scrape(2).await,
        stats(0, 0, 0),
        "an unknown hash is zeros"
    );
}

async fn a_requester_never_gets_itself_and_a_seeder_never_gets_seeders(b: Backend) {
    let mut s = Subject::open(b, SwarmConfig::default());
    s.announce(1, "127.0.0.2:6001", 0, Event::Started)
        .await
        .expect("seeder");
    s.announce(1, "127.0.0.3:6002", 10, Event::Started)
        .await
        .expect("leecher");
    let (st, peers) = s
        .announce(1, "127.0.0.4:6003", 10, Event::None)
        .await
        .expect("leecher");
    assert_eq!(st, stats(1, 2, 0));
    assert_eq!(peers, addrs(&["127.0.0.2:6001", "127.0.0.3:6002"]));
    let (_, peers) = s
        .announce(1, "127.0.0.5:6004", 0, Event::None)
        .await
        .expect("second seeder");
    assert_eq!(peers, addrs(&["127.0.0.3:6002", "127.0.0.4:6003"]));
    // A re-announce is the same peer, not a second one.
    let (st, peers) = s
        .announce(1, "127.0.0.3:6002", 10, Event::None)
        .await
        .expect("re-announce");
    assert_eq!(st, stats(2, 2, 0));
    assert_eq!(
        peers,
        addrs(&["127.0.0.2:6001", "127.0.0.4:6003", "127.0.0.5:6004"])
    );
}

async fn stopped_peers_leave_and_completion_counts_once(b: Backend) {
    let mut s = Subject::open(b, SwarmConfig::default());
    s.announce(1, "127.0.0.2:6001", 10, Event::Started)
        .await
        .expect("leecher");
    s.announce(1, "127.0.0.3:6002", 10, Event::Started)
        .await
        .expect("leecher");
    let (st, _) = s
        .announce(1, "127.0.0.2:6001", 0, Event::Completed)
        .await
        .expect("completed");
    assert_eq!(
        st,
        stats(1, 1, 1),
        "the leecher turned seeder, counted once"
    );
    let (st, _) = s
        .announce(1, "127.0.0.2:6001", 0, Event::Completed)
        .await
        .expect("completed again");
    assert_eq!(
        st,
        stats(1, 1, 1),
        "a repeated completed does not count twice"
    );
    s.announce(1, "127.0.0.2:6001", 0, Event::Stopped)
        .await
        .expect("stopped");
    let (st, peers) = s
        .announce(1, "127.0.0.4:6003", 10, Event::None)
        .await
        .expect("leecher");
    assert_eq!(st, stats(0, 2, 1));
    assert_eq!(
        peers,
        addrs(&["127.0.0.3:6002"]),
        "the stopped peer is gone"
    );
    assert_eq!(s.scrape(1).await, stats(0, 2, 1));
}

async fn an_answer_carries_the_requested_family_only(b: Backend) {
    let mut s = Subject::open(b, SwarmConfig::default());
    s.announce(1, "127.0.0.2:6001", 10, Event::Started)
        .await
        .expect("v4");
    s.announce(1, "[::1]:6002", 10, Event::Started)
        .await
        .expect("v6");
    let (st, peers) = s
        .announce(1, "127.0.0.3:6003", 10, Event::None)
        .await
        .expect("v4 requester");
    assert_eq!(st, stats(0, 3, 0), "counts cover both families");
    assert_eq!(peers, addrs(&["127.0.0.2:6001"]));
    let both = announce(1, "127.0.0.4:6004", 10, Event::None);
    let (_, peers) = s.announce_as(both, Families::Both).await.expect("both");
    assert_eq!(
        peers,
        addrs(&["127.0.0.2:6001", "127.0.0.3:6003", "[::1]:6002"])
    );
}

async fn caps_refuse_new_peers_and_torrents_but_not_known_ones(b: Backend) {
    let limits = SwarmConfig {
        max_peers_per_swarm: 2,
        max_torrents: 1,
        ..SwarmConfig::default()
    };
    let mut s = Subject::open(b, limits);
    s.announce(1, "127.0.0.2:6001", 10, Event::Started)
        .await
        .expect("first");
    s.announce(1, "127.0.0.3:6002", 10, Event::Started)
        .await
        .expect("second");
    assert_eq!(
        s.announce(1, "127.0.0.4:6003", 10, Event::Started).await,
        Err(StoreError::SwarmFull)
    );
    s.announce(1, "127.0.0.3:6002", 0, Event::Completed)
        .await
        .expect("a known peer still announces");
    assert_eq!(
        s.announce(2, "127.0.0.4:6003", 10, Event::Started).await,
        Err(StoreError::TooManyTorrents)
    );
    assert_eq!(s.scrape(1).await, stats(1, 1, 1));
}

async fn peers_expire_after_the_timeout_and_the_sweep_forgets_them(b: Backend) {
    let limits = SwarmConfig::default();
    let timeout = u64::from(limits.peer_timeout);
    let mut s = Subject::open(b, limits);
    s.announce(1, "127.0.0.2:6001", 10, Event::Started)
        .await
        .expect("old");
    s.clock.advance(timeout / 2);
    s.announce(1, "127.0.0.3:6002", 10, Event::Started)
        .await
        .expect("young");
    s.clock.advance(timeout / 2 + 1);
    // Between expiry and the next sweep a store may still hand out an expired peer (the memory
    // store does, the Redis store does not); after a sweep none does.
    s.store.sweep(&s.snapshot).await;
    let (_, peers) = s
        .announce(1, "127.0.0.4:6003", 10, Event::None)
        .await
        .expect("leecher");
    assert_eq!(peers, addrs(&["127.0.0.3:6002"]), "the old peer expired");
    s.clock.advance(timeout + 1);
    s.store.sweep(&s.snapshot).await;
    assert_eq!(s.scrape(1).await, stats(0, 0, 0), "everyone expired");
}

/// Each scenario once per store: `memory::<name>` and `redis::<name>`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[ignore = "needs a Redis at P4P_TEST_REDIS_URL (scripts/test starts one)"]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Redis).await;
                }
            )*
        }
    };
}

conformance!(
    the_first_peer_gets_nobody_and_is_counted,
    a_requester_never_gets_itself_and_a_seeder_never_gets_seeders,
    stopped_peers_leave_and_completion_counts_once,
    an_answer_carries_the_requested_family_only,
    caps_refuse_new_peers_and_torrents_but_not_known_ones,
    peers_expire_after_the_timeout_and_the_sweep_forgets_them,
);
