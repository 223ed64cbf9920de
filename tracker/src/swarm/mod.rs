//! The swarm store: who is in which torrent, in which PID, seeding or leeching.
//!
//! Peers are bucketed by PID x address family x seeder/leecher, so selection takes peers from
//! the buckets it wants without scanning the swarm. A bucket's PID is the stable
//! [`p4p_itracker::PidId`] (never a position in one snapshot), so peers resolved under an older
//! snapshot and peers on other tracker nodes agree.
//!
//! [`Store`] is the one boundary the rest of the tracker sees: it dispatches to the
//! [`memory`] store (one process, sharded in memory) or the [`redis`] store (several tracker
//! instances sharing swarms). Both take the same [`AnnounceContext`] and hand their buckets to
//! the same [`Selector`](crate::selection::Selector).

pub mod memory;
pub mod quota;
pub mod redis;

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use p4p_itracker::{PidId, Snapshot};
use rand::Rng;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::clock::Clock;
use crate::config::{Config, SwarmConfig};
use crate::selection::{Scratch, SelectionStats, Selector};
use crate::types::{Announce, Families, InfoHash, SwarmStats};

/// The swarm store backend, chosen by `store.url`.
#[derive(Debug)]
pub enum Store {
    Memory(MemoryStore),
    /// Shared by every tracker instance on the same Redis (see [`redis`]).
    Redis(Box<RedisStore>),
    /// A memory store kept in step with the other nodes of a cluster (see [`crate::cluster`]).
    Replicated(Box<crate::cluster::ReplicatedStore>),
}

impl Store {
    /// The store `config.store.url` names: `memory`, or Redis. A Redis store must be built
    /// inside the tokio runtime it will run on; it connects on first use.
    pub fn from_config(config: &Config, clock: &Clock) -> Result<Store, redis::OpenError> {
        if config.store.url == "memory" {
            if config.cluster.url.is_some() {
                let memory = MemoryStore::new(config.swarm.clone(), clock.clone());
                let replicated = crate::cluster::ReplicatedStore::new(memory);
                return Ok(Store::Replicated(Box::new(replicated)));
            }
            return Ok(Store::in_memory(config.swarm.clone(), clock.clone()));
        }
        RedisStore::new(&config.store, config.swarm.clone(), clock.clone())
            .map(|r| Store::Redis(Box::new(r)))
    }

    /// A memory store with these limits.
    pub fn in_memory(limits: SwarmConfig, clock: Clock) -> Store {
        Store::Memory(MemoryStore::new(limits, clock))
    }

    /// Records an announce and writes the chosen peers into `ctx.sink`.
    pub async fn announce<R: Rng + Clone>(
        &self,
        a: &Announce,
        ctx: AnnounceContext<'_, R>,
    ) -> Result<(SwarmStats, SelectionStats), StoreError> {
        match self {
            Store::Memory(m) => m.announce(a, ctx),
            Store::Redis(r) => r.announce(a, ctx).await,
            Store::Replicated(r) => r.announce(a, ctx),
        }
    }

    /// Starts loading what announces of `reqs` (info hash, announcing peer) will read (memory
    /// store only; see [`MemoryStore::prefetch`]).
    pub fn prefetch(&self, reqs: &[(InfoHash, SocketAddr)]) {
        if let Some(m) = self.memory() {
            m.prefetch(reqs);
        }
    }

    /// Counts for each hash, in order, into `out` (cleared first). Unknown hashes are zeros.
    pub async fn scrape(
        &self,
        hashes: &[InfoHash],
        out: &mut Vec<(InfoHash, SwarmStats)>,
    ) -> Result<(), StoreError> {
        out.clear();
        match self {
            Store::Memory(m) => out.extend(hashes.iter().map(|h| (*h, m.scrape(h)))),
            Store::Replicated(r) => out.extend(hashes.iter().map(|h| (*h, r.memory().scrape(h)))),
            Store::Redis(r) => {
                for h in hashes {
                    out.push((*h, r.scrape(h).await?));
                }
            }
        }
        Ok(())
    }

    /// Every torrent's counts, for a full scrape (`keep` filters by info hash). The memory
    /// store walks its shards one read lock at a time; `None` on Redis, which does not offer
    /// it (it would be a scan of every key).
    pub fn all_stats(
        &self,
        keep: impl Fn(&InfoHash) -> bool,
    ) -> Option<Vec<(InfoHash, SwarmStats)>> {
        let m = self.memory()?;
        let mut out = Vec::with_capacity(m.totals().torrents as usize);
        m.for_each_swarm(|hash, stats| {
            if keep(&hash) {
                out.push((hash, stats));
            }
        });
        Some(out)
    }

    /// Store-wide totals (on Redis: the swarms this node served within the peer timeout).
    pub fn totals(&self) -> StoreTotals {
        match self {
            Store::Memory(m) => m.totals(),
            Store::Redis(r) => r.totals(),
            Store::Replicated(r) => r.memory().totals(),
        }
    }

    /// Expires peers, drops empty swarms, re-resolves PIDs after a topology change.
    pub async fn sweep(&self, snapshot: &Snapshot) -> SweepReport {
        match self {
            Store::Memory(m) => m.sweep(snapshot),
            Store::Redis(r) => r.sweep().await,
            Store::Replicated(r) => r.memory().sweep(snapshot),
        }
    }

    /// Seeders and leechers per bucket id over every swarm, or `None` where the store does
    /// not offer it (Redis: counting a PID across every swarm would be a scan).
    pub fn pid_counts(&self) -> Option<HashMap<PidId, (u64, u64)>> {
        self.memory().map(MemoryStore::pid_counts)
    }

    /// Whether the store answers (connects to Redis if not yet; the memory store always does).
    pub async fn check(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => r.check().await,
            Store::Replicated(r) if r.ready() => Ok(()),
            Store::Replicated(_) => Err(StoreError::CatchingUp),
        }
    }

    /// Backend health counters for the metrics: (failed calls, sample top-ups). Zeros for the
    /// memory store, which has neither.
    pub fn backend_counts(&self) -> (u64, u64) {
        match self {
            Store::Memory(_) => (0, 0),
            Store::Redis(r) => (r.failures(), r.topups()),
            Store::Replicated(r) => (
                r.counters
                    .failures
                    .load(std::sync::atomic::Ordering::Relaxed),
                0,
            ),
        }
    }

    /// The memory store that answers reads: the store itself, or a replicated store's own.
    pub fn memory(&self) -> Option<&MemoryStore> {
        match self {
            Store::Memory(m) => Some(m),
            Store::Replicated(r) => Some(r.memory()),
            Store::Redis(_) => None,
        }
    }
}

/// Everything an announce needs besides the announce itself: the network snapshot, the
/// policy, which families the answer may carry, and the caller's reusable working memory.
pub struct AnnounceContext<'a, R> {
    pub snapshot: &'a Snapshot,
    pub selector: &'a Selector,
    pub families: Families,
    pub rng: &'a mut R,
    pub scratch: &'a mut Scratch,
    pub sink: &'a mut PeerSink,
    /// The access list, for the memory store to apply with its per-swarm cache of verdicts (see
    /// [`crate::access::Admission`]); `None` admits every torrent. The Redis store ignores it:
    /// the tracker looks the torrent up before calling that store.
    pub access: Option<crate::access::Admission<'a>>,
}

/// Why an announce was refused. [`StoreError::message`] is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum StoreError {
    /// The torrent cap is reached and this announce would add a torrent.
    TooManyTorrents,
    /// The swarm's peer cap is reached and this announce would add a peer.
    SwarmFull,
    /// The backend (Redis) could not be reached in time.
    Unavailable,
    /// The access list does not allow the torrent (see [`crate::access`]).
    NotAllowed,
    /// A cluster node has not yet applied what the other nodes published (`/health` only).
    CatchingUp,
    /// The announcing source spent its budget of new torrents for this minute (see
    /// [`quota`]).
    SourceBudgetSpent,
    /// The swarm holds `max_peers_per_source` peers of the announcing source already.
    SourceFull,
}

impl StoreError {
    /// The client-facing text (a static string: refusing allocates nothing).
    pub fn message(&self) -> &'static str {
        match self {
            StoreError::TooManyTorrents => "tracker is tracking too many torrents",
            StoreError::SwarmFull => "swarm is full",
            StoreError::Unavailable => "temporarily unavailable",
            StoreError::NotAllowed => crate::access::NOT_ALLOWED,
            StoreError::CatchingUp => "catching up with the cluster",
            StoreError::SourceBudgetSpent => {
                "too many new torrents from your address; try again in a minute"
            }
            StoreError::SourceFull => "too many peers from your address in this swarm",
        }
    }
}

/// Where an announce's chosen peers go: one list per family, reused between announces so the
/// hot path does not allocate.
#[derive(Debug, Default)]
pub struct PeerSink {
    pub v4: Vec<SocketAddrV4>,
    pub v6: Vec<SocketAddrV6>,
}

impl PeerSink {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }

    /// Appends one peer to its family's list.
    pub fn push(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(a) => self.v4.push(a),
            SocketAddr::V6(a) => self.v6.push(a),
        }
    }

    /// Peers in both lists.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether both lists are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Totals over the whole store, for metrics.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreTotals {
    pub torrents: u64,
    pub seeders: u64,
    pub leechers: u64,
}

/// What one sweep removed.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub peers_removed: u64,
    pub torrents_removed: u64,
    pub peers_moved: u64,
}
