//! Memory footprint of the swarm store: fills N peers over T torrents (default 1 M over 100 k)
//! and prints resident bytes per peer and per torrent.
//!
//! `cargo run --release -p p4p-benches --bin memory -- [peers] [torrents]`

use p4p_benches::{announce, loopback_snapshot, rss_bytes};
use p4p_tracker::clock::Clock;
use p4p_tracker::config::{SelectionConfig, SwarmConfig};
use p4p_tracker::selection::{Scratch, Selector};
use p4p_tracker::swarm::AnnounceContext;
use p4p_tracker::swarm::{MemoryStore, PeerSink};
use p4p_tracker::types::Families;
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn main() {
    let mut args = std::env::args().skip(1);
    let peers: u32 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let torrents: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let snap = loopback_snapshot();
    let selector = Selector::new(SelectionConfig::default());
    // One address adds many torrents and holds many ports here: no per-source quotas.
    let limits = SwarmConfig {
        new_torrents_per_source: 0,
        max_peers_per_source: 0,
        ..SwarmConfig::default()
    };
    let store = MemoryStore::new(limits, Clock::new());
    let mut rng = SmallRng::seed_from_u64(1);
    let mut scratch = Scratch::default();
    let mut sink = PeerSink::default();
    let before = rss_bytes().unwrap_or(0);
    for i in 0..peers {
        let ctx = AnnounceContext {
            snapshot: &snap,
            selector: &selector,
            families: Families::Both,
            rng: &mut rng,
            scratch: &mut scratch,
            sink: &mut sink,
            access: None,
        };
        store
            .announce(&announce(i % torrents, i / torrents, 0), ctx)
            .expect("announce");
    }
    let after = rss_bytes().unwrap_or(0);
    let totals = store.totals();
    let used = after.saturating_sub(before) as f64;
    println!(
        "peers={} torrents={} rss_delta_bytes={} bytes_per_peer={:.1} bytes_per_torrent={:.1}",
        totals.seeders + totals.leechers,
        totals.torrents,
        used as u64,
        used / f64::from(peers),
        used / f64::from(torrents)
    );
}
