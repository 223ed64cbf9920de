//! The Redis swarm store: several tracker instances share their swarms through one Redis (or a
//! Redis Cluster). A peer that announced to node A is handed out by node B at once.
//!
//! Data model (see `tracker/docs/redis.md` for the whole story), per swarm, all keys carrying the
//! swarm's info hash in hex as their cluster hash tag (`{...}`: raw bytes could contain braces):
//! - `<prefix>{<hex>}:z:<bucket id>`, one sorted set per PID x family x seeder/leecher (bucket
//!   id `<pid name>|<4|6><s|l>`): member = the peer's address bytes and port, score = when it
//!   expires. A leecher turning seeder (or a peer changing PID) moves between sets;
//! - `<prefix>{<hex>}:m`, a hash: `d` the completed-downloads counter, `t` when the swarm's
//!   expired peers are next trimmed (at most every `sweep_interval`, like the memory store's
//!   sweep), `v` the layout version, and `c<bucket id>` each bucket's member count. Counts are
//!   kept by the script calls that add and remove members and set to each set's size again by
//!   every trim, so between trims they include peers that expired since (as the memory store's
//!   do until its sweep); scrapes count live scores exactly;
//! - `<prefix>{<hex>}:b`, the set of bucket ids of the earlier layout: an announce adopts its
//!   buckets into the hash once and deletes it. It still names the swarm's slot for the
//!   scripts that take no other key.
//!
//! One announce is one `EVALSHA` of `redis/announce.lua` (atomic: no partial peer record), which
//! updates the peer and returns each bucket's count with a bounded random sample; a
//! re-announce reads one hash and touches one sorted set before sampling (what each step
//! costs Redis: `benches/src/bin/redis_race.rs` reads `INFO commandstats`).
//! [`Selector::select`] then runs unchanged over those candidates: it sees the true bucket sizes
//! and takes peers from a bucket's sample in order, so its choices are the ones it would make on
//! the memory store. When a bucket's sample runs short (rare: samples cover the requester's PID
//! and the cheapest PIDs of its ISP in full), a second, read-only call fetches more and the
//! selection is replayed with the same random state.
//!
//! Time is the tracker's [`Clock`] mapped to Unix seconds and passed to every script, so tests
//! expire peers by advancing the clock. Keys also get a TTL, so swarms nobody announces to any
//! more vanish without a scan.
//!
//! Faults: every call is bounded by `store.timeout_ms`; an error or a timeout is
//! [`StoreError::Unavailable`] ("temporarily unavailable"). The connection is made lazily on the
//! runtime the store was built on, and the redis crate's connection manager (or cluster
//! connection) reconnects by itself; scripts are reloaded on `NOSCRIPT`.
//!
//! Per-node view: `max_torrents`, the metrics totals and the sweep cover the swarms this node has
//! served within `peer_timeout` (counting swarms across Redis would need a scan or a cross-slot
//! counter). Redis `maxmemory` and the key TTLs bound Redis itself.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::ConnectionManager;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{FromRedisValue, RedisError, RedisResult, Script, ScriptInvocation, Value};
use dashmap::DashMap;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::OnceCell;

use super::{AnnounceContext, PeerSink, StoreError, StoreTotals, SweepReport};
use crate::clock::Clock;
use crate::config::{PolicyKind, StoreConfig, SwarmConfig};
use crate::selection::{Requester, SelectionStats};
use crate::types::{Announce, Event, InfoHash, SwarmStats};
use candidates::{preferred_pids, select, Candidates};
pub(crate) use wire::open_backend;
use wire::{bucket_id, event_code, families_code, member, parse_member, redact};

/// The URL scheme that names a Redis Cluster by its seed nodes:
/// `redis+cluster://host1:port1,host2:port2/`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Sample entries a bucket gets beyond its proportional share of what selection may take from
/// its PID group. Selection cuts a group of `g` peers into `t` equal strata and draws one peer
/// from each: a bucket of `s` peers overlaps at most `floor(t * s / g)` whole strata plus a
/// partial one at each end, and the requester's skipped position can shift a cut by one. A
/// sample that still runs short costs a second round trip (a top-up), never a wrong answer.
const SAMPLE_SLACK: usize = 3;
/// Most swarms one sweep visits (each is one script call).
const SWEEP_BATCH: usize = 10_000;
/// Seconds between two logged Redis errors (the rest are counted, not logged).
const ERROR_LOG_INTERVAL: u64 = 10;
/// Extra seconds a key lives past its newest peer's expiry.
const KEY_TTL_SLACK: u32 = 60;

/// Why a Redis store could not be set up (the URL is wrong, or no runtime to run on).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL does not parse.
    #[error("invalid Redis URL {url:?}: {source}")]
    Url { url: String, source: RedisError },
    /// The store was built outside a tokio runtime.
    #[error("the Redis store must be created inside a tokio runtime")]
    NoRuntime,
}

/// Where the store connects (also where a cluster's stream lives, see [`crate::cluster`]).
#[derive(Clone)]
pub(crate) enum Backend {
    Single(::redis::Client),
    Cluster(::redis::cluster::ClusterClient),
}

/// A live connection; both kinds are cheap handles to one multiplexed connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The four scripts, hashed once.
struct Scripts {
    announce: Script,
    sample: Script,
    scrape: Script,
    sweep: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            announce: Script::new(include_str!("announce.lua")),
            sample: Script::new(include_str!("sample.lua")),
            scrape: Script::new(include_str!("scrape.lua")),
            sweep: Script::new(include_str!("sweep.lua")),
        }
    }
}

/// What this node last saw of a swarm it served.
#[derive(Copy, Clone, Debug)]
struct Seen {
    seeders: u32,
    leechers: u32,
    /// Clock second of this node's last announce to it.
    touched: u64,
}

/// Key names of one swarm.
struct SwarmKeys {
    buckets: String,
    meta: String,
    zprefix: String,
}

/// The Redis store. See the module docs.
pub struct RedisStore {
    backend: Backend,
    /// The URL without credentials, for logs.
    url: String,
    conn: OnceCell<Conn>,
    runtime: tokio::runtime::Handle,
    prefix: String,
    timeout: Duration,
    max_buckets: usize,
    limits: SwarmConfig,
    clock: Clock,
    /// Unix second at which `clock` read zero.
    epoch: u64,
    scripts: Scripts,
    seen: DashMap<InfoHash, Seen>,
    seeders: AtomicI64,
    leechers: AtomicI64,
    sweep_cursor: AtomicU64,
    /// Announces that needed a second call to fill their answer.
    topups: AtomicU64,
    /// Calls that failed or timed out.
    failures: AtomicU64,
    last_error_log: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("connected", &self.conn.initialized())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `config.url` (`redis://...` or [`CLUSTER_SCHEME`]). Does not connect: the
    /// first call does, on the current tokio runtime, so the tracker starts (and answers
    /// "temporarily unavailable") while Redis is still down.
    pub fn new(config: &StoreConfig, limits: SwarmConfig, clock: Clock) -> Result<Self, OpenError> {
        let url = redact(&config.url);
        let backend = open_backend(&config.url).map_err(|source| OpenError::Url {
            url: url.clone(),
            source,
        })?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OpenError::NoRuntime)?;
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self {
            backend,
            url,
            conn: OnceCell::new(),
            runtime,
            prefix: config.key_prefix.clone(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            max_buckets: config.max_buckets_per_swarm.max(1),
            epoch: unix.saturating_sub(clock.now()),
            limits,
            clock,
            scripts: Scripts::new(),
            seen: DashMap::new(),
            seeders: AtomicI64::new(0),
            leechers: AtomicI64::new(0),
            sweep_cursor: AtomicU64::new(0),
            topups: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error_log: AtomicU64::new(0),
        })
    }

    /// The store's clock (tests advance it).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Connects (if not yet) and pings, within the timeout.
    pub async fn check(&self) -> Result<(), StoreError> {
        let pong: String = self
            .call(|mut conn| async move {
                let cmd = ::redis::cmd("PING");
                match &mut conn {
                    Conn::Single(c) => cmd.query_async(c).await,
                    Conn::Cluster(c) => cmd.query_async(c).await,
                }
            })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable)
        }
    }

    /// Announces that needed a second round trip to fill their answer.
    pub fn topups(&self) -> u64 {
        self.topups.load(Ordering::Relaxed)
    }

    /// Redis calls that failed or timed out.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Seconds on the shared time line (Unix time, moved by [`Clock::advance`]).
    fn now(&self) -> u64 {
        self.epoch + self.clock.now()
    }

    /// Seconds a key lives after its TTL is refreshed: announces refresh TTLs when they add a
    /// member and at each trim (at most every `sweep_interval`), so a key must outlive its
    /// newest peer's expiry by a trim interval.
    fn key_ttl(&self) -> u32 {
        self.limits
            .peer_timeout
            .saturating_add(self.limits.sweep_interval)
            .saturating_add(KEY_TTL_SLACK)
    }

    fn keys(&self, h: &InfoHash) -> SwarmKeys {
        let base = format!("{}{{{}}}", self.prefix, hex::encode(h.0));
        SwarmKeys {
            buckets: format!("{base}:b"),
            meta: format!("{base}:m"),
            zprefix: format!("{base}:z:"),
        }
    }

    async fn connect(&self) -> RedisResult<Conn> {
        let timeout = self.timeout;
        let job = match &self.backend {
            Backend::Single(client) => {
                let client = client.clone();
                self.runtime.spawn(async move {
                    let config = ::redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(timeout)
                        .set_response_timeout(timeout)
                        // No retry inside one call: a refused connection is reported as refused at
                        // once (the next call connects again), not as a timeout.
                        .set_number_of_retries(0)
                        .set_factor(50)
                        .set_max_delay(1000);
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map(Conn::Single)
                })
            }
            Backend::Cluster(client) => {
                let client = client.clone();
                self.runtime
                    .spawn(async move { client.get_async_connection().await.map(Conn::Cluster) })
            }
        };
        job.await.map_err(|e| {
            RedisError::from((
                ::redis::ErrorKind::IoError,
                "connection task failed",
                e.to_string(),
            ))
        })?
    }

    /// Runs `f` on the connection within the timeout; any failure is `Unavailable`.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let work = async {
            let conn = self.conn.get_or_try_init(|| self.connect()).await?.clone();
            f(conn).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(&e.to_string())),
            Err(_) => Err(self.failed("timed out")),
        }
    }

    /// Invokes a script within the timeout.
    async fn invoke<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, StoreError> {
        self.call(|mut conn| async move {
            match &mut conn {
                Conn::Single(c) => inv.invoke_async(c).await,
                Conn::Cluster(c) => inv.invoke_async(c).await,
            }
        })
        .await
    }

    fn failed(&self, what: &str) -> StoreError {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now() + 1;
        let last = self.last_error_log.load(Ordering::Relaxed);
        if (last == 0 || now >= last + ERROR_LOG_INTERVAL)
            && self
                .last_error_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(url = %self.url, "Redis store unavailable: {what}");
        }
        StoreError::Unavailable
    }

    /// Records an announce and writes the chosen peers into `ctx.sink`.
    pub async fn announce<R: Rng + Clone>(
        &self,
        a: &Announce,
        ctx: AnnounceContext<'_, R>,
    ) -> Result<(SwarmStats, SelectionStats), StoreError> {
        let stopped = a.event == Event::Stopped;
        if !stopped
            && self.seen.len() >= self.limits.max_torrents
            && !self.seen.contains_key(&a.info_hash)
        {
            return Err(StoreError::TooManyTorrents);
        }
        let snap = ctx.snapshot;
        let pid_index = snap.locate(a.peer.ip());
        let seeder = a.is_seeder();
        let keys = self.keys(&a.info_hash);
        let member = member(a.peer);
        let target = bucket_id(&snap.pid(pid_index).name, a.peer.is_ipv6(), seeder);
        let now = self.now();
        let mut inv = self.scripts.announce.prepare_invoke();
        inv.key(&keys.buckets)
            .key(&keys.meta)
            .arg(now)
            .arg(now + u64::from(self.limits.peer_timeout))
            .arg(&member[..])
            .arg(&target)
            .arg(event_code(a.event))
            .arg(a.numwant.min(MAX_NUMWANT))
            .arg(families_code(ctx.families))
            .arg(u8::from(seeder))
            .arg(self.limits.max_peers_per_swarm)
            .arg(self.max_buckets)
            .arg(self.key_ttl())
            .arg(&keys.zprefix)
            .arg(self.limits.sweep_interval)
            .arg(
                ctx.selector
                    .most_outside_own_pid(a.numwant.min(MAX_NUMWANT)),
            )
            .arg(SAMPLE_SLACK);
        if ctx.selector.policy() == PolicyKind::P4p {
            for p in preferred_pids(snap, pid_index) {
                inv.arg(&*snap.pid(p).name);
            }
        }
        let reply: Value = self.invoke(&inv).await?;
        let mut cands = Candidates::parse(reply, &target)?;
        let stats = cands.stats();
        self.saw(a.info_hash, stats, stopped);
        if stopped {
            return Ok((stats, SelectionStats::default()));
        }
        let req = Requester {
            pid_index,
            // Redis buckets by PID name only: AS locations are a memory-store feature so far.
            bucket_id: snap.pid(pid_index).id,
            seeder,
            families: ctx.families,
            position: cands.requester.map(|b| (b, 0)),
            numwant: a.numwant,
        };
        for b in &mut cands.buckets {
            b.sample.shuffle(ctx.rng);
        }
        let saved = ctx.rng.clone();
        let sink = ctx.sink;
        let (selection, short) =
            select(&cands, snap, ctx.selector, &req, ctx.rng, ctx.scratch, sink);
        if short.is_empty() {
            return Ok((stats, selection));
        }
        self.topups.fetch_add(1, Ordering::Relaxed);
        self.top_up(&keys, &member, &mut cands, &short).await?;
        for b in &mut cands.buckets {
            b.next.set(0);
            b.sample.shuffle(&mut saved.clone());
        }
        *ctx.rng = saved;
        sink.clear();
        let (selection, _) = select(&cands, snap, ctx.selector, &req, ctx.rng, ctx.scratch, sink);
        Ok((stats, selection))
    }

    /// Fetches `short` = (bucket, peers needed) into the candidates' samples.
    async fn top_up(
        &self,
        keys: &SwarmKeys,
        member: &[u8],
        cands: &mut Candidates,
        short: &[(usize, usize)],
    ) -> Result<(), StoreError> {
        let mut inv = self.scripts.sample.prepare_invoke();
        inv.key(&keys.buckets)
            .arg(self.now())
            .arg(member)
            .arg(&keys.zprefix);
        for &(b, need) in short {
            inv.arg(&cands.buckets[b].id).arg(need);
        }
        let reply: Vec<Vec<Vec<u8>>> = self.invoke(&inv).await?;
        for (&(b, _), sample) in short.iter().zip(reply) {
            cands.buckets[b].sample = sample.iter().filter_map(|m| parse_member(m)).collect();
        }
        Ok(())
    }

    /// Remembers what this node saw of a swarm (metrics totals, the per-node torrent cap).
    fn saw(&self, h: InfoHash, stats: SwarmStats, stopped: bool) {
        let touched = self.clock.now();
        let new = Seen {
            seeders: stats.complete,
            leechers: stats.incomplete,
            touched,
        };
        let old = if stopped {
            match self.seen.get_mut(&h) {
                Some(mut e) => {
                    let kept = Seen {
                        touched: e.touched,
                        ..new
                    };
                    Some(std::mem::replace(&mut *e, kept))
                }
                None => return,
            }
        } else {
            self.seen.insert(h, new)
        };
        let (s, l) = old.map_or((0, 0), |o| (o.seeders, o.leechers));
        self.seeders
            .fetch_add(i64::from(new.seeders) - i64::from(s), Ordering::Relaxed);
        self.leechers
            .fetch_add(i64::from(new.leechers) - i64::from(l), Ordering::Relaxed);
    }

    fn forget(&self, h: &InfoHash) -> bool {
        match self.seen.remove(h) {
            Some((_, o)) => {
                self.seeders
                    .fetch_sub(i64::from(o.seeders), Ordering::Relaxed);
                self.leechers
                    .fetch_sub(i64::from(o.leechers), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Counts for one torrent from Redis; unknown torrents are zeros.
    pub async fn scrape(&self, h: &InfoHash) -> Result<SwarmStats, StoreError> {
        let keys = self.keys(h);
        let mut inv = self.scripts.scrape.prepare_invoke();
        inv.key(&keys.buckets)
            .key(&keys.meta)
            .arg(self.now())
            .arg(&keys.zprefix);
        let (complete, incomplete, downloaded): (u32, u32, u32) = self.invoke(&inv).await?;
        Ok(SwarmStats {
            complete,
            incomplete,
            downloaded,
        })
    }

    /// Totals over the swarms this node served within `peer_timeout`, as last seen.
    pub fn totals(&self) -> StoreTotals {
        StoreTotals {
            torrents: self.seen.len() as u64,
            seeders: self.seeders.load(Ordering::Relaxed).max(0) as u64,
            leechers: self.leechers.load(Ordering::Relaxed).max(0) as u64,
        }
    }

    /// Trims expired peers of the swarms this node served (at most [`SWEEP_BATCH`] per sweep,
    /// in turn), refreshes their counts and forgets swarms that are empty or that this node
    /// has not served within `peer_timeout`. Stops at the first Redis failure.
    pub async fn sweep(&self) -> SweepReport {
        let mut report = SweepReport::default();
        let now = self.clock.now();
        let timeout = u64::from(self.limits.peer_timeout);
        let mut idle = Vec::new();
        let mut visit = Vec::new();
        let start = self.sweep_cursor.load(Ordering::Relaxed) as usize;
        let len = self.seen.len().max(1);
        for (i, e) in self.seen.iter().enumerate() {
            if now.saturating_sub(e.touched) > timeout {
                idle.push(*e.key());
            } else if (i + len - start % len) % len < SWEEP_BATCH {
                visit.push(*e.key());
            }
        }
        self.sweep_cursor
            .store(((start + visit.len()) % len) as u64, Ordering::Relaxed);
        for h in idle {
            report.torrents_removed += u64::from(self.forget(&h));
        }
        for h in visit {
            let keys = self.keys(&h);
            let mut inv = self.scripts.sweep.prepare_invoke();
            inv.key(&keys.meta).arg(self.now()).arg(&keys.zprefix);
            let Ok((removed, seeders, leechers)) = self.invoke::<(u64, u32, u32)>(&inv).await
            else {
                break;
            };
            report.peers_removed += removed;
            if seeders + leechers == 0 {
                report.torrents_removed += u64::from(self.forget(&h));
            } else {
                let stats = SwarmStats {
                    complete: seeders,
                    incomplete: leechers,
                    downloaded: 0,
                };
                self.saw(h, stats, true);
            }
        }
        report
    }
}

/// numwant is bounded by configuration already; this bounds the script's work regardless.
const MAX_NUMWANT: usize = 200;

mod candidates;
mod wire;

/// Either connection runs any command (the cluster connection routes it by its key).
impl ::redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a ::redis::Cmd,
    ) -> ::redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> ::redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests;
