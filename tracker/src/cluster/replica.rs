//! The replicated store: a memory store per node, kept in step through a Redis stream.
//!
//! Announces are answered by the node's [`MemoryStore`] as on a standalone node; each one also
//! leaves a [`Local`] delta in the [`Outbox`] (a push into a per-thread buffer). Two tasks do
//! the rest, off the announce path:
//! - [`publish`] drains the outbox every `batch_interval_ms`, stamps the deltas with their
//!   expiry and PID name, and appends them to the stream `p4p:{<name>}:deltas` as one entry
//!   (`XADD ... MINID ~ <now - peer_timeout>`: entries older than the peer timeout, whose
//!   peers have all expired, are trimmed, so the stream holds at most one timeout of
//!   announces). While Redis is unreachable the batches wait in memory (at most
//!   [`MAX_PENDING_BYTES`], and only as long as their peers live) and are sent, oldest first,
//!   when it answers again.
//! - [`follow`] reads the stream from the start (a restarted node thus rebuilds every live
//!   peer), applies the other nodes' batches and skips its own, then blocks for new entries.
//!   The store reports itself ready (`/health`) once it has applied what the stream held when
//!   it started reading. After an interruption (Redis down, the process paused) it goes on from
//!   the last entry it applied.
//!
//! Applying is idempotent and ordered by expiry (see [`MemoryStore::apply_remote`]), so a batch
//! read twice, or a stale refresh, changes nothing. Every node ends up holding every live peer:
//! scrapes, full scrapes and the metrics totals of any node cover the whole cluster (within the
//! replication delay).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;
use p4p_itracker::{PidId, Snapshot};
use rand::Rng;
use tokio::sync::watch;

use super::delta::{Batch, Local};
use super::outbox::Outbox;
use super::{connect, query, unix_offset};
use crate::selection::SelectionStats;
use crate::service::Tracker;
use crate::swarm::memory::RemotePeer;
use crate::swarm::redis::Backend;
use crate::swarm::{AnnounceContext, MemoryStore, Store, StoreError};
use crate::types::{Announce, SwarmStats};

/// Most deltas in one stream entry (about 270 kB of IPv4 deltas).
const MAX_BATCH: usize = 8192;
/// Most bytes of batches kept while Redis is unreachable; past it the oldest are dropped.
pub const MAX_PENDING_BYTES: usize = 256 << 20;
/// Stream entries read per call.
const READ_COUNT: usize = 8;

/// Replication counters, for the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Deltas this node appended to the stream.
    pub published: AtomicU64,
    /// Other nodes' deltas applied (including those that changed nothing).
    pub applied: AtomicU64,
    /// Deltas never published (Redis unreachable for longer than they mattered, or the
    /// pending bound reached).
    pub dropped: AtomicU64,
    /// Failed Redis calls of the publisher and the reader.
    pub failures: AtomicU64,
    /// Stream entries that did not decode (skipped).
    pub bad_entries: AtomicU64,
}

/// A memory store that shares its announces with the other nodes of a cluster.
#[derive(Debug)]
pub struct ReplicatedStore {
    memory: MemoryStore,
    outbox: Outbox,
    /// This process's id in the stream (random per start, so a restarted node replays what
    /// it published before).
    node: u64,
    ready: AtomicBool,
    pub counters: Counters,
}

impl ReplicatedStore {
    pub fn new(memory: MemoryStore) -> Self {
        Self {
            memory,
            outbox: Outbox::default(),
            node: rand::rng().random(),
            ready: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    /// The node's own store, which answers every read.
    pub fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    /// This node's id in the stream.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Whether the node has applied what the stream held when it started reading.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Answers from the memory store and records the announce for the other nodes.
    pub fn announce<R: Rng>(
        &self,
        a: &Announce,
        ctx: AnnounceContext<'_, R>,
    ) -> Result<(SwarmStats, SelectionStats), StoreError> {
        let answer = self.memory.announce(a, ctx)?;
        self.outbox.push(Local::of(a));
        Ok(answer)
    }

    /// Brings the replication counters into `metrics`.
    pub fn render_counts(&self, metrics: &crate::metrics::Metrics) {
        let c = &self.counters;
        metrics.cluster_counts(
            [
                ("published", c.published.load(Ordering::Relaxed)),
                ("applied", c.applied.load(Ordering::Relaxed)),
                ("dropped", c.dropped.load(Ordering::Relaxed)),
            ],
            self.ready(),
        );
    }

    /// Takes the deltas recorded since the last call.
    pub fn drain(&self, out: &mut Vec<Local>) {
        self.outbox.drain(out);
    }

    /// Applies another node's batch (this node's own are skipped); `unix_now` is this node's
    /// Unix time. Returns how many deltas changed the store.
    pub fn apply(&self, batch: &Batch, snap: &Snapshot, unix_now: u64) -> usize {
        if batch.node == self.node {
            return 0;
        }
        let pids: Vec<PidId> = batch.names.iter().map(|n| PidId::intern(n)).collect();
        let mut changed = 0;
        for d in &batch.deltas {
            let remote = RemotePeer {
                info_hash: d.info_hash,
                peer: d.peer,
                seeder: d.seeder,
                completed: d.completed,
                stopped: d.stopped,
                pid: pids[usize::from(d.name)],
                expires_in: u64::from(d.expires)
                    .saturating_sub(unix_now)
                    .min(u64::from(u32::MAX)) as u32,
            };
            changed += usize::from(self.memory.apply_remote(&remote, snap));
        }
        self.counters
            .applied
            .fetch_add(batch.deltas.len() as u64, Ordering::Relaxed);
        changed
    }
}

/// Builds batches from drained deltas: expiry `unix + timeout`, PID names from `snap`.
pub fn batches(
    node: u64,
    locals: &[Local],
    snap: &Snapshot,
    unix: u64,
    timeout: u32,
) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut batch = Batch::new(node);
    let mut names: HashMap<PidId, String> = HashMap::new();
    let expires = (unix + u64::from(timeout)).min(u64::from(u32::MAX)) as u32;
    for l in locals {
        let pid = crate::topology::location(snap, l.peer.ip()).1;
        let name = names.entry(pid).or_insert_with(|| pid.name().to_string());
        if batch.deltas.len() >= MAX_BATCH || !batch.push(l, expires, name) {
            out.push(std::mem::replace(&mut batch, Batch::new(node)));
            batch.push(l, expires, name);
        }
    }
    if !batch.deltas.is_empty() {
        out.push(batch);
    }
    out
}

/// A batch waiting to be appended.
struct Pending {
    /// Unix second it was made.
    made: u64,
    bytes: Vec<u8>,
    deltas: usize,
}

fn replicated(tracker: &Tracker) -> Option<&ReplicatedStore> {
    match tracker.store() {
        Store::Replicated(r) => Some(r),
        _ => None,
    }
}

/// Publishes this node's deltas every `batch_interval_ms` until shutdown (see the module docs).
pub(crate) async fn publish(
    tracker: Arc<Tracker>,
    client: Backend,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(store) = replicated(&tracker) else {
        return;
    };
    let config = &tracker.config.cluster;
    let key = config.key("deltas");
    let timeout = tracker.config.swarm.peer_timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(config.batch_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = None;
    let mut locals = Vec::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let mut last_error_log = 0u64;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        let unix = tracker.clock.now() + unix_offset(&tracker.clock);
        store.drain(&mut locals);
        if !locals.is_empty() {
            let snap = tracker.topology.load_full();
            for b in batches(store.node, &locals, &snap, unix, timeout) {
                let bytes = b.encode();
                pending_bytes += bytes.len();
                pending.push_back(Pending {
                    made: unix,
                    bytes,
                    deltas: b.deltas.len(),
                });
            }
            locals.clear();
        }
        // Batches whose peers have all expired, or past the memory bound, are dropped.
        while let Some(p) = pending.front() {
            if p.made + u64::from(timeout) > unix && pending_bytes <= MAX_PENDING_BYTES {
                break;
            }
            pending_bytes -= p.bytes.len();
            store
                .counters
                .dropped
                .fetch_add(p.deltas as u64, Ordering::Relaxed);
            pending.pop_front();
        }
        while let Some(p) = pending.front() {
            let c = match &mut conn {
                Some(c) => c,
                None => match connect(&client).await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        failed(store, &mut last_error_log, unix, "publish", &e);
                        break;
                    }
                },
            };
            let min_id = unix.saturating_sub(u64::from(timeout)) * 1000;
            let mut xadd = ::redis::cmd("XADD");
            xadd.arg(&key)
                .arg("MINID")
                .arg("~")
                .arg(min_id)
                .arg("*")
                .arg("n")
                .arg(store.node)
                .arg("d")
                .arg(&p.bytes[..]);
            let added: ::redis::RedisResult<Value> = query(c, &xadd).await;
            match added {
                Ok(_) => {
                    store
                        .counters
                        .published
                        .fetch_add(p.deltas as u64, Ordering::Relaxed);
                    pending_bytes -= p.bytes.len();
                    pending.pop_front();
                }
                Err(e) => {
                    conn = None;
                    failed(store, &mut last_error_log, unix, "publish", &e);
                    break;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Counts a failed Redis call and logs it (at most every 10 s).
fn failed(
    store: &ReplicatedStore,
    last_log: &mut u64,
    unix: u64,
    task: &str,
    e: &::redis::RedisError,
) {
    store.counters.failures.fetch_add(1, Ordering::Relaxed);
    if unix >= *last_log + 10 {
        *last_log = unix;
        tracing::warn!(
            "cluster {task}: Redis: {e}; retrying (this node keeps answering from memory)"
        );
    }
}

/// A stream entry id, `<ms>-<seq>`, as a comparable pair.
fn entry_id(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// One stream entry: its id and its `n` (node) and `d` (batch) fields.
struct Entry {
    id: String,
    data: Option<Vec<u8>>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of an `XRANGE`-shaped reply (`[[id, [field, value, ...]], ...]`).
fn entries(v: &Value, out: &mut Vec<Entry>) {
    let Value::Array(items) = v else { return };
    for item in items {
        let Value::Array(pair) = item else { continue };
        let (Some(id), Some(Value::Array(fields))) = (pair.first().and_then(text), pair.get(1))
        else {
            continue;
        };
        let data = fields.chunks(2).find_map(|kv| match kv {
            [k, Value::BulkString(d)] if text(k).as_deref() == Some("d") => Some(d.clone()),
            _ => None,
        });
        out.push(Entry { id, data });
    }
}

/// The entries of an `XREAD` reply for one stream (RESP2 array or RESP3 map).
fn read_entries(v: &Value, out: &mut Vec<Entry>) {
    match v {
        Value::Array(streams) => {
            for s in streams {
                if let Value::Array(pair) = s {
                    if let Some(e) = pair.get(1) {
                        entries(e, out);
                    }
                }
            }
        }
        Value::Map(streams) => {
            for (_, e) in streams {
                entries(e, out);
            }
        }
        _ => {}
    }
}

/// Reads and applies the other nodes' batches until shutdown (see the module docs).
pub(crate) async fn follow(
    tracker: Arc<Tracker>,
    client: Backend,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(store) = replicated(&tracker) else {
        return;
    };
    let config = &tracker.config.cluster;
    let key = config.key("deltas");
    let interval = Duration::from_millis(config.batch_interval_ms);
    let mut conn = None;
    let mut last = "0-0".to_string();
    // The stream's last entry when this node started reading: ready once applied up to it.
    let mut target: Option<(u64, u64)> = None;
    let mut got = Vec::new();
    let mut last_error_log = 0u64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let unix = tracker.clock.now() + unix_offset(&tracker.clock);
        let c = match &mut conn {
            Some(c) => c,
            None => match connect(&client).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    failed(store, &mut last_error_log, unix, "reader", &e);
                    tokio::select! {
                        _ = tokio::time::sleep(interval.max(Duration::from_millis(200))) => {}
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
            },
        };
        if !store.ready() && target.is_none() {
            let mut xrevrange = ::redis::cmd("XREVRANGE");
            xrevrange.arg(&key).arg("+").arg("-").arg("COUNT").arg(1);
            let tail: ::redis::RedisResult<Value> = query(c, &xrevrange).await;
            match tail {
                Ok(v) => {
                    let mut tail = Vec::new();
                    entries(&v, &mut tail);
                    target = Some(tail.first().and_then(|e| entry_id(&e.id)).unwrap_or((0, 0)));
                }
                Err(e) => {
                    conn = None;
                    failed(store, &mut last_error_log, unix, "reader", &e);
                    continue;
                }
            }
        }
        if let Some(t) = target {
            if entry_id(&last).is_some_and(|l| l >= t) {
                store.ready.store(true, Ordering::Relaxed);
                target = None;
                tracing::info!("cluster: caught up with the stream; ready");
            }
        }
        let mut xread = ::redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(interval.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last);
        let read = query::<Value>(c, &xread);
        let reply = tokio::select! {
            r = read => r,
            _ = shutdown.changed() => return,
        };
        match reply {
            Ok(v) => {
                got.clear();
                read_entries(&v, &mut got);
                let snap = tracker.topology.load_full();
                let unix = tracker.clock.now() + unix_offset(&tracker.clock);
                for e in &got {
                    match e.data.as_deref().map(Batch::decode) {
                        Some(Ok(batch)) => {
                            store.apply(&batch, &snap, unix);
                        }
                        _ => {
                            store.counters.bad_entries.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    last.clone_from(&e.id);
                }
            }
            Err(e) => {
                conn = None;
                failed(store, &mut last_error_log, unix, "reader", &e);
            }
        }
    }
}
