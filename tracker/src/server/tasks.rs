//! Background tasks that run beside the front ends until shutdown: the sweeper (expires peers)
//! and the topology refresher.
//!
//! The refresher keeps the snapshot current from one or more iTrackers (ALTO, one per ISP).
//! Every `refresh_interval` seconds each client fetches conditionally (ETags for the network
//! map and the cost map separately, so a cost-only change is seen). Only when some map changed
//! is a new snapshot built (all ISPs' last good maps combined) and swapped in; unchanged rounds
//! just confirm the snapshot's age. A failing iTracker is logged and counted, and its last good
//! map keeps serving. Fetches are blocking (ureq) and run on the blocking pool, never on an
//! announce path.

use std::sync::Arc;
use std::time::Duration;

use p4p_itracker::client::{combine, AltoClient, FetchOutcome, IspMap};
use tokio::sync::watch;

use crate::service::Tracker;

/// Sweeps expired peers every `swarm.sweep_interval` seconds until shutdown.
pub async fn sweeper(tracker: Arc<Tracker>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_secs(u64::from(tracker.config.swarm.sweep_interval));
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let r = tracker.sweep().await;
                tracing::debug!(removed = r.peers_removed, torrents = r.torrents_removed, moved = r.peers_moved, "sweep");
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One iTracker and its last good map.
struct Source {
    client: AltoClient,
    last: Option<IspMap>,
    /// Clock seconds when `last` was last known to be what the iTracker serves (fetched, or
    /// confirmed unchanged). A failed round leaves it alone, so the age keeps growing.
    current_at: u64,
}

/// Refreshes `tracker`'s topology from `urls` until `shutdown` turns true. The first round runs
/// at once.
pub async fn refresh_topology(
    tracker: Arc<Tracker>,
    urls: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = Duration::from_secs(u64::from(tracker.config.topology.refresh_interval.max(1)));
    let mut sources: Vec<Source> = urls
        .into_iter()
        .map(|url| Source {
            client: AltoClient::new(url),
            last: None,
            current_at: 0,
        })
        .collect();
    loop {
        let t = tracker.clone();
        sources = match tokio::task::spawn_blocking(move || round(&t, sources)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("topology refresh task failed: {e}");
                return;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One refresh round over every source; swaps in a new snapshot when a map changed.
fn round(tracker: &Tracker, mut sources: Vec<Source>) -> Vec<Source> {
    let mut changed = false;
    for s in &mut sources {
        match s.client.fetch() {
            Ok(FetchOutcome::Unchanged) => s.current_at = tracker.clock.now(),
            Ok(FetchOutcome::Updated(map)) => {
                tracing::info!(
                    url = s.client.ird_url(),
                    isp = %map.isp,
                    vtag = %map.vtag,
                    pids = map.pids.len(),
                    "new map from the iTracker"
                );
                s.last = Some(map);
                s.current_at = tracker.clock.now();
                changed = true;
            }
            Err(e) => {
                tracker.metrics.topology_refresh_failures.inc();
                let kept = if s.last.is_some() {
                    "keeping its last good map"
                } else {
                    "no map from it yet"
                };
                tracing::warn!(url = s.client.ird_url(), error = %e, "iTracker refresh failed; {kept}");
            }
        }
    }
    let maps: Vec<IspMap> = sources.iter().filter_map(|s| s.last.clone()).collect();
    // The snapshot is as old as its stalest part.
    let current_at = sources
        .iter()
        .filter(|s| s.last.is_some())
        .map(|s| s.current_at)
        .min();
    if changed && !maps.is_empty() {
        let snapshot = combine(&maps, tracker.config.topology.interdomain_cost);
        tracing::info!(
            version = snapshot.version(),
            pids = snapshot.len(),
            "topology snapshot swapped in"
        );
        tracker.set_topology(snapshot);
        if let Some(at) = current_at {
            tracker.topology.confirm(at);
        }
    } else if let Some(at) = current_at {
        tracker.topology.confirm(at);
    } else if !tracker.topology.loaded() {
        tracing::warn!("no topology from any iTracker yet: peer selection is random");
    }
    sources
}
