//! The HTTP announce path end to end, minus sockets: parse the query, update the store, select,
//! encode. Swarms of 10 to 1 M peers, `random` versus `p4p` on the same swarm.
//!
//! `announce_map_scale` (issue 17, item 3): the same path, `p4p` then `random`, on an ISP-scale
//! map (the synthetic 2,000-PID / 250,000-prefix ISP of `p4p_benches::synthetic_isp`) against a
//! 2-PID map whose line runs through the middle of its internal prefixes
//! (`two_pid_snapshot_of`), on the same swarm, every address inside one of the big map's
//! internal prefixes (so each announce's IP -> PID lookup walks the 250 k-prefix trie), in two
//! layouts:
//! - `in_2_pids`: the peers in two of the big map's PIDs, one on each side of that line, so
//!   that the swarm has the same shape under both maps (what the big map's lookups cost, the
//!   answers being alike);
//! - `spread`: the peers dealt over all the big map's PIDs (under the big map an answer then
//!   comes from tens of PIDs, under the 2-PID map from two, each holding about half).
//!
//! `cargo bench -p p4p-benches --bench announce -- announce_map_scale`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::net::SocketAddr;

use p4p_benches::synthetic_isp::{generate, Params};
use p4p_benches::{
    addresses_in, addresses_in_two_pids, announce, fill_order, loopback_snapshot, peer_addr,
    two_pid_snapshot_of,
};
use p4p_itracker::model::Topology;
use p4p_itracker::snapshot::Snapshot;
use p4p_tracker::clock::Clock;
use p4p_tracker::config::{PolicyKind, SelectionConfig, SwarmConfig};
use p4p_tracker::protocol::http::{encode_announce, parse_announce, AnnounceAnswer};
use p4p_tracker::selection::{Scratch, Selector};
use p4p_tracker::swarm::AnnounceContext;
use p4p_tracker::swarm::{MemoryStore, PeerSink};
use p4p_tracker::types::{Announce, Families};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn filled_store(peers: u32, selector: &Selector, snap: &Snapshot) -> MemoryStore {
    filled_store_at(fill_order(peers), selector, snap, peer_addr)
}

/// A swarm of the peers in `order`, peer `i` announcing from `at(i)`.
fn filled_store_at(
    order: Vec<u32>,
    selector: &Selector,
    snap: &Snapshot,
    at: impl Fn(u32) -> SocketAddr,
) -> MemoryStore {
    let store = MemoryStore::new(
        SwarmConfig {
            max_peers_per_swarm: 2_000_000,
            // `peer_addr` puts 256 ports on one address.
            max_peers_per_source: 0,
            ..SwarmConfig::default()
        },
        Clock::new(),
    );
    let mut rng = SmallRng::seed_from_u64(1);
    let mut scratch = Scratch::default();
    let mut sink = PeerSink::default();
    for i in order {
        let ctx = AnnounceContext {
            snapshot: snap,
            selector,
            families: Families::Both,
            rng: &mut rng,
            scratch: &mut scratch,
            sink: &mut sink,
            access: None,
        };
        let a = Announce {
            peer: at(i),
            ..announce(0, i, 0)
        };
        store.announce(&a, ctx).expect("fill");
    }
    store
}

fn query_for(i: u32) -> String {
    let addr = peer_addr(i);
    let hash: String = [0u8; 20].iter().map(|b| format!("%{b:02X}")).collect();
    format!(
        "info_hash={hash}&peer_id=-XX0001-000000000000&port={}&uploaded=0&downloaded=0&left=1&numwant=50&compact=1",
        addr.port()
    )
}

fn bench_announce(c: &mut Criterion) {
    let snap = loopback_snapshot();
    let mut group = c.benchmark_group("http_announce_path");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.measurement_time(std::time::Duration::from_secs(2));
    group.warm_up_time(std::time::Duration::from_secs(1));
    for &peers in &[10u32, 100, 1_000, 10_000, 100_000, 1_000_000] {
        for policy in [PolicyKind::Random, PolicyKind::P4p] {
            let selector = Selector::new(SelectionConfig {
                policy,
                ..SelectionConfig::default()
            });
            let store = filled_store(peers, &selector, &snap);
            let id = BenchmarkId::new(format!("{policy:?}").to_lowercase(), peers);
            announce_loop(&mut group, id, &snap, &selector, &store, peers, peer_addr);
        }
    }
    group.finish();
}

/// Measures one announce (parse, store, select, encode) by a random peer of the `peers` in
/// `store`, peer `i` announcing from `at(i)`.
fn announce_loop(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    snap: &Snapshot,
    selector: &Selector,
    store: &MemoryStore,
    peers: u32,
    at: impl Fn(u32) -> SocketAddr,
) {
    let queries: Vec<String> = (0..256).map(|i| query_for(i % peers)).collect();
    let mut rng = SmallRng::seed_from_u64(2);
    let mut scratch = Scratch::default();
    let mut sink = PeerSink::default();
    let mut body = Vec::with_capacity(4096);
    group.bench_function(id, |b| {
        b.iter(|| {
            let i = rng.random_range(0..peers);
            let q = parse_announce(queries[(i % 256) as usize].as_bytes()).expect("query");
            // The peer keeps its role (`announce`: a seeder when `i % 5 == 0`): taking `left`
            // from the query (`left=1` in all of them) turned every seeder into a leecher as
            // the bench ran, so the swarm drifted while it was measured.
            let mut a = announce(0, i, 50);
            a.peer = at(i);
            black_box(q.left);
            sink.clear();
            let ctx = AnnounceContext {
                snapshot: snap,
                selector,
                families: Families::Both,
                rng: &mut rng,
                scratch: &mut scratch,
                sink: &mut sink,
                access: None,
            };
            let (stats, _) = store.announce(&a, ctx).expect("announce");
            body.clear();
            encode_announce(
                &AnnounceAnswer {
                    stats,
                    interval: 1800,
                    min_interval: 900,
                    v4: &sink.v4,
                    v6: &sink.v6,
                    compact: q.compact,
                },
                &mut body,
            );
            black_box(&body);
        })
    });
}

fn bench_map_scale(c: &mut Criterion) {
    let isp = generate(&Params::new(2_000, 250_000)).expect("synthetic ISP");
    let topology = Topology::from_toml_str(&isp.toml).expect("synthetic topology");
    let maps = [
        ("2_pids", two_pid_snapshot_of(&topology)),
        ("2000_pids_250k_prefixes", topology.snapshot()),
    ];
    let mut group = c.benchmark_group("announce_map_scale");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.measurement_time(std::time::Duration::from_secs(3));
    group.warm_up_time(std::time::Duration::from_secs(1));
    for policy in [PolicyKind::P4p, PolicyKind::Random] {
        let selector = Selector::new(SelectionConfig {
            policy,
            ..SelectionConfig::default()
        });
        let policy = format!("{policy:?}").to_lowercase();
        for &peers in &[1_000u32, 100_000] {
            let layouts = [
                ("spread", addresses_in(&topology, peers)),
                ("in_2_pids", addresses_in_two_pids(&topology, peers)),
            ];
            for (layout, addrs) in &layouts {
                assert_eq!(addrs.len(), peers as usize, "{layout}: addresses");
                let at = |i: u32| addrs[i as usize];
                for (name, snap) in &maps {
                    if *layout == "in_2_pids" {
                        // The same shape under both maps: two PIDs, half the swarm each.
                        let pids: std::collections::BTreeSet<u16> =
                            addrs.iter().map(|a| snap.locate(a.ip())).collect();
                        assert_eq!(pids.len(), 2, "{name}: PIDs of the {layout} swarm");
                    }
                    let store = filled_store_at((0..peers).collect(), &selector, snap, at);
                    let id = BenchmarkId::new(format!("{policy}/{name}/{layout}"), peers);
                    announce_loop(&mut group, id, snap, &selector, &store, peers, at);
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_announce, bench_map_scale);
criterion_main!(benches);
