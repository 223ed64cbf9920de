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
//!
//! When an iTracker's IRD offers an update stream (RFC 8895), a thread per iTracker follows it
//! ([`follow_stream`]) and hands each new map to the same combine-and-swap step a polling round
//! ends with, so a re-priced link reaches the answers within a round trip. Polling keeps
//! running as the fallback; a failed stream is retried with backoff (1 s doubling to 60 s),
//! logged at most once per backoff step, and counted (`topology_stream_*` in /metrics). A
//! stream silent for 45 s (three of the iTracker's keep-alive intervals) counts as failed; a
//! stream that only broke is resumed with the tags of the maps held, so an iTracker that did
//! not change sends no full map again.

use std::sync::Arc;
use std::time::Duration;

use p4p_itracker::client::{combine, AltoClient, FetchOutcome, IspMap, StreamError, UpdateStream};
use tokio::sync::{mpsc, watch};

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
    let (pushed_tx, mut pushed) = mpsc::channel::<(usize, IspMap)>(16);
    for (i, url) in urls.iter().enumerate() {
        let (t, tx, url) = (tracker.clone(), pushed_tx.clone(), url.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("alto-stream-{i}"))
            .spawn(move || follow_stream(&t, AltoClient::new(url), i, &tx));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the update stream thread: {e}; polling only");
        }
    }
    drop(pushed_tx);
    let mut sources: Vec<Source> = urls
        .into_iter()
        .map(|url| Source {
            client: AltoClient::new(url),
            last: None,
            current_at: 0,
        })
        .collect();
    let mut next_poll = tokio::time::Instant::now();
    loop {
        let t = tracker.clone();
        let job = tokio::select! {
            _ = tokio::time::sleep_until(next_poll) => {
                next_poll += period;
                Job::Poll
            }
            Some(first) = pushed.recv() => {
                // Take every map already waiting: one swap for a burst of changes.
                let mut maps = vec![first];
                while let Ok(more) = pushed.try_recv() {
                    maps.push(more);
                }
                Job::Pushed(maps)
            }
            _ = shutdown.changed() => return,
        };
        sources = match tokio::task::spawn_blocking(move || {
            match job {
                Job::Poll => round(&t, &mut sources),
                Job::Pushed(maps) => pushed_maps(&t, &mut sources, maps),
            }
            sources
        })
        .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("topology refresh task failed: {e}");
                return;
            }
        };
    }
}

/// What the refresher does next, on the blocking pool.
enum Job {
    /// A polling round over every source.
    Poll,
    /// Maps pushed by update streams (source index, map).
    Pushed(Vec<(usize, IspMap)>),
}

/// Maps pushed by update streams: each replaces its source's last map, then one swap.
fn pushed_maps(tracker: &Tracker, sources: &mut [Source], maps: Vec<(usize, IspMap)>) {
    let mut changed = false;
    for (i, map) in maps {
        let Some(s) = sources.get_mut(i) else {
            continue;
        };
        tracing::debug!(url = s.client.ird_url(), vtag = %map.vtag, "map pushed by the iTracker");
        tracker.metrics.topology_stream_updates.inc();
        s.last = Some(map);
        s.current_at = tracker.clock.now();
        changed = true;
    }
    swap_in(tracker, sources, changed);
}

/// Follows source `index`'s update stream (when its IRD offers one) until the refresher is
/// gone, sending every new map to it. Reconnects after any failure, with backoff; a stream
/// that delivered a map resets the backoff.
fn follow_stream(
    tracker: &Tracker,
    client: AltoClient,
    index: usize,
    out: &mpsc::Sender<(usize, IspMap)>,
) {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);
    let mut backoff = FIRST;
    // The last stream, to resume from (its maps and their tags).
    let mut previous: Option<UpdateStream> = None;
    loop {
        if out.is_closed() {
            return;
        }
        let mut delivered = false;
        // Resumes the last stream (kept through failed attempts) or opens a new one.
        let opened = client.reopen_stream(&mut previous);
        let result: Result<(), StreamError> = match opened {
            Ok(None) => {
                tracing::debug!(
                    url = client.ird_url(),
                    "no update stream offered; polling only"
                );
                std::thread::sleep(MAX);
                continue;
            }
            Ok(Some(mut stream)) => {
                tracker.metrics.topology_stream_connected.inc();
                tracing::info!(url = stream.url(), "following the iTracker's update stream");
                let ended = loop {
                    match stream.next_map() {
                        Ok(map) => {
                            if out.blocking_send((index, map)).is_err() {
                                tracker.metrics.topology_stream_connected.dec();
                                return;
                            }
                            delivered = true;
                        }
                        Err(e) => break e,
                    }
                };
                tracker.metrics.topology_stream_connected.dec();
                previous = Some(stream);
                Err(ended)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracker.metrics.topology_stream_failures.inc();
            if delivered {
                backoff = FIRST;
            }
            // One line per backoff step: a server down for long logs once a minute.
            let level_warn = !matches!(e, StreamError::Ended) || !delivered;
            if level_warn {
                tracing::warn!(url = client.ird_url(), error = %e, retry_in = ?backoff, "update stream failed; polling goes on");
            } else {
                tracing::info!(url = client.ird_url(), retry_in = ?backoff, "update stream ended; reconnecting");
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX);
        }
    }
}

/// One refresh round over every source; swaps in a new snapshot when a map changed.
fn round(tracker: &Tracker, sources: &mut [Source]) {
    let mut changed = false;
    for s in sources.iter_mut() {
        match s.client.fetch() {
            Ok(FetchOutcome::Unchanged) => s.current_at = tracker.clock.now(),
            Ok(FetchOutcome::Updated(map)) => {
                // After a push, the next poll fetches the same content again (its ETags are
                // older): confirm it instead of building the same snapshot twice.
                let known = s.last.as_ref().is_some_and(|last| same_content(last, &map));
                if !known {
                    tracing::info!(
                        url = s.client.ird_url(),
                        isp = %map.isp,
                        vtag = %map.vtag,
                        pids = map.pids.len(),
                        "new map from the iTracker"
                    );
                    changed = true;
                }
                s.last = Some(map);
                s.current_at = tracker.clock.now();
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
    swap_in(tracker, sources, changed);
}

/// Whether two maps hold the same PIDs and costs (their ETags may differ: one was pushed,
/// one polled).
fn same_content(a: &IspMap, b: &IspMap) -> bool {
    a.isp == b.isp && a.vtag == b.vtag && a.pids == b.pids && a.costs().eq(b.costs())
}

/// Combines every source's last map and swaps the snapshot in when one changed; otherwise
/// confirms the snapshot's age. The end of a polling round and of a pushed update alike.
fn swap_in(tracker: &Tracker, sources: &[Source], changed: bool) {
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
}
