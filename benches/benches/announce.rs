//! The HTTP announce path end to end, minus sockets: parse the query, update the store, select,
//! encode. Swarms of 10 to 1 M peers, `random` versus `p4p` on the same swarm.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use p4p_benches::{announce, fill_order, loopback_snapshot, peer_addr};
use p4p_tracker::clock::Clock;
use p4p_tracker::config::{PolicyKind, SelectionConfig, SwarmConfig};
use p4p_tracker::protocol::http::{encode_announce, parse_announce, AnnounceAnswer};
use p4p_tracker::selection::{Scratch, Selector};
use p4p_tracker::swarm::AnnounceContext;
use p4p_tracker::swarm::{MemoryStore, PeerSink};
use p4p_tracker::types::Families;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn filled_store(peers: u32, selector: &Selector, snap: &p4p_itracker::Snapshot) -> MemoryStore {
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
    for i in fill_order(peers) {
        let ctx = AnnounceContext {
            snapshot: snap,
            selector,
            families: Families::Both,
            rng: &mut rng,
            scratch: &mut scratch,
            sink: &mut sink,
            access: None,
        };
        store.announce(&announce(0, i, 0), ctx).expect("fill");
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
            let queries: Vec<String> = (0..256).map(|i| query_for(i % peers)).collect();
            let mut rng = SmallRng::seed_from_u64(2);
            let mut scratch = Scratch::default();
            let mut sink = PeerSink::default();
            let mut body = Vec::with_capacity(4096);
            let id = BenchmarkId::new(format!("{policy:?}").to_lowercase(), peers);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let i = rng.random_range(0..peers);
                    let q = parse_announce(queries[(i % 256) as usize].as_bytes()).expect("query");
                    let mut a = announce(0, i, 50);
                    a.left = q.left;
                    sink.clear();
                    let ctx = AnnounceContext {
                        snapshot: &snap,
                        selector: &selector,
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
    }
    group.finish();
}

criterion_group!(benches, bench_announce);
criterion_main!(benches);
