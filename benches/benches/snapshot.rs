//! Snapshot lookups with 100 k prefixes: IP -> PID (longest-prefix match) and PID x PID ->
//! cost. Figures are in itracker/README.md.
//!
//! `snapshot_map_scale` (issue 17, item 3): the lookups an announce makes, on the synthetic
//! 2,000-PID / 250,000-prefix ISP against a 2-PID map, for the same addresses (each inside one
//! of the big map's internal prefixes, spread over all of them).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipnetwork::IpNetwork;
use p4p_benches::synthetic_isp::{generate, Params};
use p4p_benches::{addresses_in, two_pid_snapshot};
use p4p_itracker::model::Topology;
use p4p_itracker::snapshot::{PidSpec, Snapshot, SnapshotBuilder};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const PREFIXES: usize = 100_000;
const PIDS: usize = 1_000;

/// 100 k distinct prefixes (90 % IPv4 /16../24, 10 % IPv6 /32../48) spread over 1 000 PIDs,
/// with a full cost matrix.
fn snapshot(rng: &mut SmallRng) -> Snapshot {
    let mut b = SnapshotBuilder::new("bench", 100.0);
    let isp = b.add_isp("bench");
    let mut per_pid: Vec<Vec<IpNetwork>> = vec![Vec::new(); PIDS];
    let mut seen = std::collections::HashSet::new();
    while seen.len() < PREFIXES {
        let net = if seen.len() % 10 == 9 {
            let len = rng.random_range(32..=48u8);
            let addr = Ipv6Addr::from(rng.random::<u128>() & (u128::MAX << (128 - u32::from(len))));
            IpNetwork::new(IpAddr::V6(addr), len).expect("prefix")
        } else {
            let len = rng.random_range(16..=24u8);
            let addr = Ipv4Addr::from(rng.random::<u32>() & (u32::MAX << (32 - u32::from(len))));
            IpNetwork::new(IpAddr::V4(addr), len).expect("prefix")
        };
        if seen.insert(net) {
            per_pid[seen.len() % PIDS].push(net);
        }
    }
    let idx: Vec<usize> = per_pid
        .into_iter()
        .enumerate()
        .map(|(i, prefixes)| {
            b.add_pid(PidSpec {
                name: format!("bench-pid-{i}"),
                isp,
                internal: true,
                prefixes,
            })
        })
        .collect();
    for &f in &idx {
        for &t in &idx {
            b.set_cost(f, t, f64::from(rng.random_range(0..1000u32)));
        }
    }
    b.build().expect("bench snapshot")
}

fn lookups(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(7);
    let snap = snapshot(&mut rng);
    let v4: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V4(Ipv4Addr::from(rng.random::<u32>())))
        .collect();
    let v6: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V6(Ipv6Addr::from(rng.random::<u128>())))
        .collect();
    let n = snap.len() as u16;
    let pairs: Vec<(u16, u16)> = (0..4096)
        .map(|_| (rng.random_range(0..n), rng.random_range(0..n)))
        .collect();

    let mut g = c.benchmark_group("snapshot_100k_prefixes");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("locate_ipv4", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(snap.locate(black_box(v4[i])))
        })
    });
    g.bench_function("locate_ipv6", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(snap.locate(black_box(v6[i])))
        })
    });
    g.bench_function("cost_pid_x_pid", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let (f, t) = pairs[i];
            black_box(snap.cost(black_box(f), black_box(t)))
        })
    });
    g.bench_function("locate_both_then_cost", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let (x, y) = (snap.locate(v4[i]), snap.locate(v4[(i + 1) & 4095]));
            black_box(snap.cost(x, y))
        })
    });
    g.finish();
}

fn map_scale(c: &mut Criterion) {
    let isp = generate(&Params::new(2_000, 250_000)).expect("synthetic ISP");
    let topology = Topology::from_toml_str(&isp.toml).expect("synthetic topology");
    // 64 k addresses: more than the caches hold of the big map's trie, as announces from
    // many peers are.
    let mut addrs: Vec<IpAddr> = addresses_in(&topology, 1 << 16)
        .into_iter()
        .map(|a| a.ip())
        .collect();
    // Sorted by `addresses_in`; shuffle so that neighbours are not looked up in turn.
    let mut rng = SmallRng::seed_from_u64(11);
    for i in (1..addrs.len()).rev() {
        addrs.swap(i, rng.random_range(0..=i));
    }
    let maps = [
        ("2_pids", two_pid_snapshot()),
        ("2000_pids_250k_prefixes", topology.snapshot()),
    ];
    let mask = addrs.len() - 1;
    let mut g = c.benchmark_group("snapshot_map_scale");
    g.throughput(Throughput::Elements(1));
    for (name, snap) in &maps {
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("locate_ipv4", name), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(snap.locate(black_box(addrs[i])))
            })
        });
        let pids: Vec<u16> = addrs.iter().map(|&a| snap.locate(a)).collect();
        g.bench_function(BenchmarkId::new("cost_and_by_cost", name), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                let (f, t) = (pids[i], pids[(i + 1) & mask]);
                black_box(snap.cost(black_box(f), black_box(t)));
                black_box(snap.by_cost(black_box(f)).first().copied())
            })
        });
        g.bench_function(BenchmarkId::new("locate_both_then_cost", name), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                let (x, y) = (snap.locate(addrs[i]), snap.locate(addrs[(i + 1) & mask]));
                black_box(snap.cost(x, y))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups, map_scale);
criterion_main!(benches);
