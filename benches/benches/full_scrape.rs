//! Full scrape: rendering every torrent's counts (plain bencode and gzip) from a memory store
//! of 1 M torrents, one peer each. Prints the sizes once.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use p4p_tracker::clock::Clock;
use p4p_tracker::config::Config;
use p4p_tracker::server::scrape_all::render;
use p4p_tracker::service::{Tracker, Workspace};
use p4p_tracker::types::{Announce, Event, Families, InfoHash};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const TORRENTS: usize = 1_000_000;

fn filled() -> Tracker {
    let mut config = Config::default();
    config.swarm.max_torrents = 2 * TORRENTS;
    let tracker = Tracker::new(
        config,
        Clock::new(),
        p4p_itracker::Snapshot::single_pid(),
        true,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut rng = SmallRng::seed_from_u64(3);
    let mut ws = Workspace::default();
    runtime.block_on(async {
        for i in 0..TORRENTS {
            let a = Announce {
                info_hash: InfoHash(rng.random()),
                peer: std::net::SocketAddr::from((
                    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    6881,
                )),
                event: Event::Started,
                left: (i % 3) as u64,
                numwant: 0,
            };
            tracker
                .announce(&a, Families::Both, &mut ws)
                .await
                .expect("announce");
        }
    });
    tracker
}

fn full_scrape(c: &mut Criterion) {
    let tracker = filled();
    let r = render(&tracker).expect("memory store");
    let started = std::time::Instant::now();
    let _ = render(&tracker);
    eprintln!(
        "full scrape of {} torrents: {} bytes plain, {} bytes gzip, one render {:?}",
        r.torrents,
        r.plain.len(),
        r.gzip.len(),
        started.elapsed()
    );
    let mut g = c.benchmark_group("full_scrape");
    g.sample_size(10);
    g.bench_function("render_1m_torrents", |b| {
        b.iter(|| black_box(render(&tracker).expect("memory store")))
    });
    g.finish();
}

criterion_group!(benches, full_scrape);
criterion_main!(benches);
