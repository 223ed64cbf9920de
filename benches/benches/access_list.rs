//! Access lists: loading a 1 M-entry file (parse + build the set), the check itself (one hash
//! lookup) for a listed and an unlisted hash, and announces to 1 M existing torrents through
//! the tracker with a 1 M-entry deny list against none: the memory store skips the lookup for a
//! swarm admitted under the list in use (`access_list_announce/deny_1m_cached`), and
//! `deny_1m_looked_up` adds the lookup every announce paid before, for the ratio.

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

/// Torrents (one peer each) the announce group spreads its announces over: with the store and
/// the list both far larger than the caches, every announce misses, as in the race.
const TORRENTS: usize = 1_000_000;

fn announce_path(c: &mut Criterion) {
    use p4p_tracker::service::{Tracker, Workspace};
    use p4p_tracker::types::{Announce, Event, Families};

    let (text, _) = list_text(ENTRIES);
    let path = std::env::temp_dir().join(format!("p4p-bench-access-ann-{}", std::process::id()));
    std::fs::write(&path, &text).expect("write");
    let tracker = |list: bool| {
        let mut c = p4p_tracker::config::Config::default();
        c.swarm.max_torrents = 2 * TORRENTS;
        c.swarm.new_torrents_per_source = 0;
        if list {
            c.access_list.file = Some(path.clone());
            c.access_list.mode = p4p_tracker::config::AccessMode::Deny;
        }
        let t = Tracker::new(
            c,
            p4p_tracker::clock::Clock::new(),
            p4p_itracker::Snapshot::single_pid(),
            true,
        );
        t.load_access_list().expect("loads");
        t
    };
    let (plain, listed) = (tracker(false), tracker(true));
    let _ = std::fs::remove_file(&path);
    // Other hashes than the list's (another seed): every announce is allowed.
    let mut rng = SmallRng::seed_from_u64(11);
    let torrents: Vec<Announce> = (0..TORRENTS)
        .map(|i| Announce {
            info_hash: InfoHash(rng.random()),
            peer: p4p_benches::peer_addr(i as u32),
            event: Event::None,
            left: 1,
            numwant: 30,
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut ws = Box::<Workspace>::default();
    for t in [&plain, &listed] {
        for a in &torrents {
            rt.block_on(t.announce(a, Families::Both, &mut ws))
                .expect("fill");
        }
    }
    let mut g = c.benchmark_group("access_list_announce");
    g.throughput(Throughput::Elements(1));
    // Twice each, alternating, so a drift of the machine shows as a difference between the
    // two runs of one variant.
    let variants: [(&str, &Tracker, bool); 6] = [
        ("deny_1m_cached", &listed, false),
        ("no_list", &plain, false),
        ("deny_1m_looked_up", &listed, true),
        ("deny_1m_cached_again", &listed, false),
        ("no_list_again", &plain, false),
        ("deny_1m_looked_up_again", &listed, true),
    ];
    for (name, t, look_up) in variants {
        g.bench_function(name, |b| {
            b.iter(|| {
                let a = &torrents[rng.random_range(0..TORRENTS)];
                if look_up {
                    assert!(t.allows(&a.info_hash));
                }
                let stats = rt.block_on(t.announce(a, Families::Both, &mut ws));
                black_box(stats.expect("announce"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, load, check, announce_path);
criterion_main!(benches);
