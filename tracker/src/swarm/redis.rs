//! The Redis swarm store: several tracker instances share their swarms through one Redis (or a
//! Redis Cluster). A peer that announced to node A is handed out by node B at once.
//!
//! Data model (see `tracker/docs/redis.md` for the whole story), per swarm, all keys carrying the
//! swarm's info hash in hex as their cluster hash tag (`{...}`: raw bytes could contain braces):
//! - `<prefix>{<hex>}:b`, a set of bucket ids `<pid name>|<4|6><s|l>`;
//! - `<prefix>{<hex>}:z:<bucket id>`, one sorted set per PID x family x seeder/leecher: member
//!   = the peer's address bytes and port, score = when it expires. A leecher turning seeder (or
//!   a peer changing PID) moves between sets; counts are `ZCARD`/`ZCOUNT` over live scores, so
//!   nothing drifts;
//! - `<prefix>{<hex>}:m`, a hash: `d` the completed-downloads counter, `t` when the swarm's
//!   expired peers are next trimmed (at most every `sweep_interval`, like the memory store's
//!   sweep; counts are exact meanwhile, being `ZCOUNT` over live scores).
//!
//! One announce is one `EVALSHA` of `redis/announce.lua` (atomic: no partial peer record), which
//! expires, updates, counts and returns each bucket's live count with a bounded random sample.
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

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::ConnectionManager;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{FromRedisValue, RedisError, RedisResult, Script, ScriptInvocation, Value};
use dashmap::DashMap;
use p4p_itracker::{PidId, Snapshot};
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::OnceCell;

use super::{AnnounceContext, PeerSink, StoreError, StoreTotals, SweepReport};
use crate::clock::Clock;
use crate::config::{PolicyKind, StoreConfig, SwarmConfig};
use crate::selection::{Buckets, Requester, Scratch, SelectionStats, Selector};
use crate::types::{Announce, Event, Families, InfoHash, SwarmStats};

/// The URL scheme that names a Redis Cluster by its seed nodes:
/// `redis+cluster://host1:port1,host2:port2/`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// PIDs of the requester's ISP (cheapest first) whose buckets the announce samples in full.
const PREFERRED_ISP_PIDS: usize = 8;
/// Cheapest PIDs outside the ISP sampled in full (the remote tier's first picks).
const PREFERRED_REMOTE_PIDS: usize = 4;
/// Entries of the cost order looked at to find them.
const PREFERRED_SCAN: usize = 64;
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

/// Where the store connects.
enum Backend {
    Single(::redis::Client),
    Cluster(::redis::cluster::ClusterClient),
}

/// A live connection; both kinds are cheap handles to one multiplexed connection.
#[derive(Clone)]
enum Conn {
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
            announce: Script::new(include_str!("redis/announce.lua")),
            sample: Script::new(include_str!("redis/sample.lua")),
            scrape: Script::new(include_str!("redis/scrape.lua")),
            sweep: Script::new(include_str!("redis/sweep.lua")),
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
                        .set_number_of_retries(2)
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
            .arg(self.limits.peer_timeout + KEY_TTL_SLACK)
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
            pid: pid_index,
            // Redis buckets by PID name only: AS locations are a memory-store feature so far.
            location: snap.pid(pid_index).id,
            seeder,
            families: ctx.families,
            slot: cands.requester.map(|b| (b, 0)),
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
            inv.key(&keys.buckets).arg(self.now()).arg(&keys.zprefix);
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

/// The URL with any user and password replaced by `***`. Only the authority (between `://`
/// and the next `/`) can hold credentials: an `@` in the path or query is left alone.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_string(),
    }
}

fn open_backend(url: &str) -> RedisResult<Backend> {
    match url.strip_prefix(CLUSTER_SCHEME) {
        Some(rest) => {
            let nodes: Vec<String> = rest
                .trim_end_matches('/')
                .split(',')
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}/"))
                .collect();
            ::redis::cluster::ClusterClient::builder(nodes)
                .retries(2)
                .build()
                .map(Backend::Cluster)
        }
        None => ::redis::Client::open(url).map(Backend::Single),
    }
}

/// A bucket id: `<pid name>|<4|6><s|l>` (PID names never contain `|`).
fn bucket_id(pid: &str, v6: bool, seeders: bool) -> String {
    let mut id = String::with_capacity(pid.len() + 3);
    id.push_str(pid);
    id.push('|');
    id.push(if v6 { '6' } else { '4' });
    id.push(if seeders { 's' } else { 'l' });
    id
}

/// (PID name, v6, seeders) of a bucket id.
fn parse_bucket_id(id: &[u8]) -> Option<(&str, bool, bool)> {
    let [head @ .., b'|', fam, kind] = id else {
        return None;
    };
    let v6 = match fam {
        b'4' => false,
        b'6' => true,
        _ => return None,
    };
    let seeders = match kind {
        b's' => true,
        b'l' => false,
        _ => return None,
    };
    Some((std::str::from_utf8(head).ok()?, v6, seeders))
}

/// A peer as a set member: address bytes then port, big-endian (the compact form).
fn member(addr: SocketAddr) -> Vec<u8> {
    let mut m = Vec::with_capacity(18);
    match addr.ip() {
        IpAddr::V4(ip) => m.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => m.extend_from_slice(&ip.octets()),
    }
    m.extend_from_slice(&addr.port().to_be_bytes());
    m
}

fn parse_member(m: &[u8]) -> Option<SocketAddr> {
    match m.len() {
        6 => {
            let ip: [u8; 4] = m[..4].try_into().ok()?;
            let port = u16::from_be_bytes([m[4], m[5]]);
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        18 => {
            let ip: [u8; 16] = m[..16].try_into().ok()?;
            let port = u16::from_be_bytes([m[16], m[17]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

fn event_code(e: Event) -> &'static str {
    match e {
        Event::None => "n",
        Event::Started => "s",
        Event::Completed => "c",
        Event::Stopped => "x",
    }
}

fn families_code(f: Families) -> &'static str {
    match f {
        Families::Both => "b",
        Families::V4 => "4",
        Families::V6 => "6",
    }
}

/// The PIDs whose buckets are sampled in full besides the requester's own: the cheapest of its
/// ISP, then the cheapest outside it (where p4p's tiers take their first peers).
fn preferred_pids(snap: &Snapshot, from: u16) -> impl Iterator<Item = u16> + '_ {
    let (mut isp, mut remote) = (0, 0);
    snap.by_cost(from)
        .iter()
        .take(PREFERRED_SCAN)
        .copied()
        .filter(move |&to| {
            let (n, cap) = if snap.same_isp(from, to) {
                (&mut isp, PREFERRED_ISP_PIDS)
            } else {
                (&mut remote, PREFERRED_REMOTE_PIDS)
            };
            *n += 1;
            *n <= cap
        })
}

/// One bucket as the announce script returned it.
#[derive(Debug)]
struct Candidate {
    id: Vec<u8>,
    pid: PidId,
    seeders: bool,
    v6: bool,
    /// Live peers in the bucket, the requester included.
    count: usize,
    /// A uniform random subset, in random order, the requester excluded.
    sample: Vec<SocketAddr>,
    /// Next sample entry selection takes.
    next: Cell<usize>,
}

/// The swarm as one announce sees it.
#[derive(Debug, Default)]
struct Candidates {
    downloaded: u32,
    buckets: Vec<Candidate>,
    /// The requester's bucket.
    requester: Option<usize>,
    /// Set when a bucket's sample ran out during selection.
    short: Cell<bool>,
}

impl Candidates {
    /// Parses the announce script's reply (see `redis/announce.lua`).
    fn parse(reply: Value, target: &str) -> Result<Self, StoreError> {
        let Value::Array(items) = reply else {
            return Err(malformed());
        };
        let mut items = items.into_iter();
        let downloaded = match items.next() {
            Some(Value::Int(-1)) => return Err(StoreError::SwarmFull),
            Some(Value::Int(d)) => u32::try_from(d).unwrap_or(u32::MAX),
            _ => return Err(malformed()),
        };
        let Some(Value::Int(n)) = items.next() else {
            return Err(malformed());
        };
        let mut c = Candidates {
            downloaded,
            buckets: Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(4096)),
            ..Candidates::default()
        };
        while let (Some(Value::BulkString(id)), Some(Value::Int(count)), Some(Value::Array(s))) =
            (items.next(), items.next(), items.next())
        {
            let (pid, v6, seeders) = parse_bucket_id(&id).ok_or_else(malformed)?;
            if id == target.as_bytes() {
                c.requester = Some(c.buckets.len());
            }
            let sample = s
                .iter()
                .filter_map(|m| match m {
                    Value::BulkString(b) => parse_member(b),
                    _ => None,
                })
                .collect();
            c.buckets.push(Candidate {
                pid: PidId::intern(pid),
                id,
                seeders,
                v6,
                count: usize::try_from(count).unwrap_or(0),
                sample,
                next: Cell::new(0),
            });
        }
        Ok(c)
    }

    fn stats(&self) -> SwarmStats {
        let (mut complete, mut incomplete) = (0u32, 0u32);
        for b in &self.buckets {
            let n = u32::try_from(b.count).unwrap_or(u32::MAX);
            if b.seeders {
                complete = complete.saturating_add(n);
            } else {
                incomplete = incomplete.saturating_add(n);
            }
        }
        SwarmStats {
            complete,
            incomplete,
            downloaded: self.downloaded,
        }
    }
}

fn malformed() -> StoreError {
    tracing::error!("unexpected reply from the Redis announce script");
    StoreError::Unavailable
}

/// Never a real peer (port 0 on the unspecified address): stands for "sample ran out".
const MISSING: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

impl Buckets for Candidates {
    fn count(&self) -> usize {
        self.buckets.len()
    }
    fn pid(&self, bucket: usize) -> PidId {
        self.buckets[bucket].pid
    }
    fn seeders(&self, bucket: usize) -> bool {
        self.buckets[bucket].seeders
    }
    fn v6(&self, bucket: usize) -> bool {
        self.buckets[bucket].v6
    }
    fn size(&self, bucket: usize) -> usize {
        self.buckets[bucket].count
    }
    /// Selection never asks for one position twice, and the positions it asks for are
    /// uniform over the bucket; the sample is a uniform random subset in random order, so
    /// handing out its entries in turn gives every peer the same chance the memory store does.
    fn peer(&self, bucket: usize, _index: usize) -> SocketAddr {
        let b = &self.buckets[bucket];
        let i = b.next.get();
        b.next.set(i + 1);
        b.sample.get(i).copied().unwrap_or_else(|| {
            self.short.set(true);
            MISSING
        })
    }
}

/// Runs the selector over the candidates; returns its stats and, for each bucket whose sample
/// ran short, (bucket, peers it needed).
fn select<R: Rng>(
    cands: &Candidates,
    snap: &Snapshot,
    selector: &Selector,
    req: &Requester,
    rng: &mut R,
    scratch: &mut Scratch,
    sink: &mut PeerSink,
) -> (SelectionStats, Vec<(usize, usize)>) {
    cands.short.set(false);
    let stats = selector.select(cands, snap, req, rng, scratch, &mut |p| {
        if p != MISSING {
            sink.push(p);
        }
    });
    if !cands.short.get() {
        return (stats, Vec::new());
    }
    let short = cands
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| b.next.get() > b.sample.len())
        .map(|(i, b)| (i, b.next.get()))
        .collect();
    (stats, short)
}

#[cfg(test)]
mod tests;
