//! The protocol-independent tracker: store + topology + selection + metrics. The HTTP and UDP
//! front ends parse requests, call [`Tracker::announce`] / [`Tracker::scrape`] and encode.

use std::cell::Cell;
use std::net::SocketAddr;

use p4p_itracker::Snapshot;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::{Metrics, Tally};
use crate::selection::{Scratch, Selector};
use crate::swarm::redis::OpenError;
use crate::swarm::{AnnounceContext, PeerSink, Store, StoreError, StoreTotals, SweepReport};
use crate::topology::{SnapshotCache, TopologyHandle};
use crate::types::{Announce, Families, InfoHash, SwarmStats};

/// Per-thread working memory for announces: RNG, selection scratch, peer lists, the cached
/// snapshot and the counts not yet added to the metrics. Reused so the hot path does not
/// allocate.
#[derive(Debug)]
pub struct Workspace {
    pub rng: SmallRng,
    pub scratch: Scratch,
    pub sink: PeerSink,
    /// Scrape results, reused between scrapes.
    pub scrape: Vec<(InfoHash, SwarmStats)>,
    /// Counts the owner adds to [`Tracker::metrics`] with [`Metrics::add`] (the UDP worker once
    /// per batch, HTTP per request).
    pub tally: Tally,
    snapshot: SnapshotCache,
    /// The access list in use, cached like the snapshot.
    access: crate::swap::SwapCache<crate::access::AccessList>,
}

impl Default for Workspace {
    fn default() -> Self {
        Self {
            rng: SmallRng::from_os_rng(),
            scratch: Scratch::default(),
            sink: PeerSink::default(),
            scrape: Vec::new(),
            tally: Tally::default(),
            snapshot: SnapshotCache::default(),
            access: Default::default(),
        }
    }
}

thread_local! {
    static WORKSPACE: Cell<Option<Box<Workspace>>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's workspace. The workspace is taken out of the thread-local for the
/// duration (not borrowed), so an async caller may hold it across `.await`; a concurrent user
/// on the same thread simply gets a fresh one.
pub async fn with_workspace<T, F>(f: impl FnOnce(Box<Workspace>) -> F) -> T
where
    F: std::future::Future<Output = (Box<Workspace>, T)>,
{
    let ws = WORKSPACE.with(|c| c.take()).unwrap_or_default();
    let (ws, out) = f(ws).await;
    WORKSPACE.with(|c| c.set(Some(ws)));
    out
}

/// The tracker shared by every front end and worker.
#[derive(Debug)]
pub struct Tracker {
    pub config: Config,
    pub clock: Clock,
    pub metrics: Metrics,
    pub topology: TopologyHandle,
    /// The access list, when one is configured (see [`crate::access`]).
    pub access: Option<crate::access::AccessControl>,
    store: Store,
    selector: Selector,
}

impl Tracker {
    /// A tracker with the memory store, serving `snapshot` (`loaded`: whether it is a real map).
    pub fn new(config: Config, clock: Clock, snapshot: Snapshot, loaded: bool) -> Self {
        let store = Store::in_memory(config.swarm.clone(), clock.clone());
        Self::with_store(config, clock, snapshot, loaded, store)
    }

    /// A tracker with the store `config.store.url` names (see [`Store::from_config`]).
    pub fn from_config(
        config: Config,
        clock: Clock,
        snapshot: Snapshot,
        loaded: bool,
    ) -> Result<Self, OpenError> {
        let store = Store::from_config(&config, &clock)?;
        Ok(Self::with_store(config, clock, snapshot, loaded, store))
    }

    /// A tracker over a given store (built with the same `clock`).
    pub fn with_store(
        config: Config,
        clock: Clock,
        snapshot: Snapshot,
        loaded: bool,
        store: Store,
    ) -> Self {
        let metrics = Metrics::new();
        metrics
            .topology_generation
            .set(snapshot.generation() as i64);
        metrics.topology_missing.set(i64::from(!loaded));
        if !config.topology.alto.is_empty() {
            metrics
                .topology_refresh_interval
                .set(i64::from(config.topology.refresh_interval));
        }
        let topology = TopologyHandle::new(snapshot, loaded);
        topology.confirm(clock.now());
        let access = config
            .access_list
            .file
            .clone()
            .map(|file| crate::access::AccessControl::new(config.access_list.mode, file));
        Self {
            access,
            selector: Selector::new(config.selection.clone()),
            config,
            clock,
            metrics,
            topology,
            store,
        }
    }

    /// Records an announce and writes the chosen peers into `ws.sink` (cleared first).
    pub async fn announce(
        &self,
        a: &Announce,
        families: Families,
        ws: &mut Workspace,
    ) -> Result<SwarmStats, StoreError> {
        ws.sink.clear();
        // The memory store (alone or in a cluster) applies the list itself and looks a torrent
        // up only when its swarm was not admitted under the list in use (see
        // `access::Admission`); before any other store, every announce is looked up here.
        let access = match &self.access {
            Some(access) if self.store.memory().is_some() => Some(access.admission(&mut ws.access)),
            Some(access) => {
                if !access.allows_cached(&a.info_hash, &mut ws.access) {
                    return Err(StoreError::NotAllowed);
                }
                None
            }
            None => None,
        };
        let ctx = AnnounceContext {
            // A cached `Arc`, not a guard: it may be held across a Redis round trip.
            snapshot: self.topology.cached(&mut ws.snapshot),
            selector: &self.selector,
            families,
            rng: &mut ws.rng,
            scratch: &mut ws.scratch,
            sink: &mut ws.sink,
            access,
        };
        let (stats, selection) = self.store.announce(a, ctx).await.inspect_err(|e| {
            self.metrics.quota_refusal(e);
        })?;
        ws.tally.selection(&selection);
        Ok(stats)
    }

    /// Starts loading what announces of `reqs` (info hash, announcing peer) will read. Not the
    /// access list: the memory store reads it only for a torrent not admitted under the list in
    /// use (see `access::Admission`), and prefetching a slot for every announce cost more
    /// memory traffic than those few lookups save.
    pub fn prefetch(&self, reqs: &[(InfoHash, SocketAddr)]) {
        self.store.prefetch(reqs);
    }

    /// Counts for each hash, in order (unknown hashes, and hashes the access list does not
    /// allow, are zeros).
    pub async fn scrape(
        &self,
        hashes: &[InfoHash],
        out: &mut Vec<(InfoHash, SwarmStats)>,
    ) -> Result<(), StoreError> {
        self.store.scrape(hashes, out).await?;
        if let Some(access) = &self.access {
            for (hash, stats) in out.iter_mut() {
                if !access.allows(hash) {
                    *stats = SwarmStats::default();
                }
            }
        }
        Ok(())
    }

    /// Store-wide totals.
    pub fn totals(&self) -> StoreTotals {
        self.store.totals()
    }

    /// Expires peers, drops empty swarms, re-resolves PIDs after a topology change.
    pub async fn sweep(&self) -> SweepReport {
        let snapshot = self.topology.load_full();
        let report = self.store.sweep(&snapshot).await;
        self.metrics.sweep(report.peers_removed);
        // After the store re-resolved its peers under `snapshot`: ids of PID names out of use
        // since long before are given back (see `p4p_itracker::pid`).
        p4p_itracker::pid::reclaim(snapshot.pids().iter().map(|p| p.id));
        report
    }

    /// Swaps in a new topology snapshot (peers are re-resolved lazily).
    pub fn set_topology(&self, snapshot: Snapshot) {
        self.metrics
            .topology_generation
            .set(snapshot.generation() as i64);
        self.metrics.topology_missing.set(0);
        self.topology.store(snapshot, self.clock.now());
    }

    /// Reloads what the configuration names (on SIGHUP or the admin API): the access list
    /// (see [`Tracker::reload_access_list`]) and the topology file, when one is configured, with
    /// the ASN database. A file that fails to load is logged and counted, and what is in use
    /// keeps serving. Topology from iTrackers is not reloaded here: the refresher fetches it
    /// every `refresh_interval`.
    pub fn reload(&self) -> bool {
        let access = self.reload_access_list().is_ok();
        self.reload_topology() && access
    }

    fn reload_topology(&self) -> bool {
        let t = &self.config.topology;
        if t.file.is_none() {
            tracing::info!("reload: no topology file configured; nothing to reload");
            return true;
        }
        match crate::topology::initial_snapshot(t) {
            Ok((snapshot, source)) => {
                tracing::info!(
                    "reload: topology from {source} ({} PIDs, version {})",
                    snapshot.len(),
                    snapshot.version()
                );
                self.metrics.reloads(true);
                self.set_topology(snapshot);
                true
            }
            Err(e) => {
                self.metrics.reloads(false);
                tracing::warn!(
                    "reload refused, the topology in use keeps serving: {:#}",
                    anyhow::Error::new(e)
                );
                false
            }
        }
    }

    /// Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        let age = self
            .clock
            .now()
            .saturating_sub(self.topology.confirmed_at());
        self.metrics.topology_age_seconds.set(age as i64);
        let (failures, topups) = self.store.backend_counts();
        self.metrics.backend_counts(failures, topups);
        if let crate::swarm::Store::Replicated(r) = &self.store {
            r.render_counts(&self.metrics);
        }
        self.metrics.render(self.totals())
    }

    /// The swarm store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the store answers (connects to Redis if not yet; the memory store always does).
    pub async fn check_store(&self) -> Result<(), StoreError> {
        self.store.check().await
    }
}

impl Tracker {
    /// A JSON description of the topology in use and how many peers sit in each PID (no peer
    /// addresses), for `GET /topology`.
    pub fn describe_topology(&self) -> String {
        let snap = self.topology.load();
        // Counting a PID across every swarm in Redis would be a scan: the Redis store offers
        // no counts, and the document says so instead of showing zeros.
        let counts = self.store.pid_counts();
        let pids: Vec<serde_json::Value> = snap
            .pids()
            .iter()
            .map(|p| {
                let mut pid = serde_json::json!({
                    "pid": &*p.name,
                    "isp": snap.isps().get(usize::from(p.isp)),
                    "internal": p.internal,
                });
                if let Some(counts) = &counts {
                    let (seeders, leechers) = counts.get(&p.id).copied().unwrap_or_default();
                    pid["seeders"] = seeders.into();
                    pid["leechers"] = leechers.into();
                }
                pid
            })
            .collect();
        let doc = serde_json::json!({
            "version": snap.version(),
            "generation": snap.generation(),
            "loaded": self.topology.loaded(),
            "policy": self.selector.policy(),
            "peer_counts": if counts.is_some() { "per PID" } else { "not offered by the Redis store" },
            "pids": pids,
        });
        format!("{doc:#}\n")
    }
}
