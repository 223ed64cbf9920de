//! Access lists: loading a 1 M-entry file (parse + build the set), and the per-announce check
//! (one atomic load and one hash lookup) for a listed and an unlisted hash.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use p4p_tracker::access::AccessList;
use p4p_tracker::types::InfoHash;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const ENTRIES: usize = 1_000_000;

fn list_text(n: usize) -> (Vec<u8>, Vec<InfoHash>) {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut text = Vec::with_capacity(n * 41 + 64);
    text.extend_from_slice(b"# a generated access list\n");
    let mut hashes = Vec::with_capacity(n);
    for _ in 0..n {
        let h: [u8; 20] = rng.random();
        for b in h {
            text.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        text.push(b'\n');
        hashes.push(InfoHash(h));
    }
    (text, hashes)
}

fn load(c: &mut Criterion) {
    let (text, _) = list_text(ENTRIES);
    let mut g = c.benchmark_group("access_list");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ENTRIES as u64));
    g.bench_function("load_1m_lines", |b| {
        b.iter(|| {
            let list = AccessList::parse(black_box(&text)).expect("valid");
            assert_eq!(list.len(), ENTRIES);
            list
        })
    });
    g.finish();
}

fn check(c: &mut Criterion) {
    let (text, hashes) = list_text(ENTRIES);
    let path = std::env::temp_dir().join(format!("p4p-bench-access-{}", std::process::id()));
    std::fs::write(&path, &text).expect("write");
    // Loaded the way a tracker does it (through the file).
    let config = {
        let mut c = p4p_tracker::config::Config::default();
        c.access_list.file = Some(path.clone());
        c
    };
    let tracker = p4p_tracker::service::Tracker::new(
        config,
        p4p_tracker::clock::Clock::new(),
        p4p_itracker::Snapshot::single_pid(),
        true,
    );
    tracker.load_access_list().expect("loads");
    let _ = std::fs::remove_file(&path);
    let mut rng = SmallRng::seed_from_u64(9);
    let mut g = c.benchmark_group("access_list_check");
    g.bench_function("listed", |b| {
        b.iter(|| {
            let h = &hashes[rng.random_range(0..hashes.len())];
            black_box(tracker.allows(black_box(h)))
        })
    });
    g.bench_function("unlisted", |b| {
        b.iter(|| {
            let h = InfoHash(rng.random());
            black_box(tracker.allows(black_box(&h)))
        })
    });
    g.bench_function("no_list_configured", |b| {
        let plain = p4p_tracker::service::Tracker::new(
            p4p_tracker::config::Config::default(),
            p4p_tracker::clock::Clock::new(),
            p4p_itracker::Snapshot::single_pid(),
            true,
        );
        b.iter(|| {
            let h = InfoHash(rng.random());
            black_box(plain.allows(black_box(&h)))
        })
    });
    g.finish();
}

criterion_group!(benches, load, check);
criterion_main!(benches);
