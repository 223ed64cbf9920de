//! Several tracker nodes at memory speed: each answers from its own memory store, and the
//! nodes share what they learn through Redis (see `tracker/docs/cluster.md`).
//!
//! - [`replica`]: the replicated store. The announce path records a delta in a per-thread
//!   buffer ([`outbox`]); a background publisher sends the buffered deltas as one batch
//!   ([`delta`]) to the cluster's Redis stream every `batch_interval_ms`, and a reader applies
//!   the other nodes' batches to the memory store. Nothing on the announce path talks to Redis.
//! - [`keys`]: one connection-id secret per cluster and epoch, kept in Redis, so a UDP connect
//!   answered by one node is valid on every node.
//!
//! Keys, all under one hash tag (so a Redis Cluster keeps them on one node):
//! `p4p:{<name>}:deltas` (the stream) and `p4p:{<name>}:cid:<epoch>` (connection-id secrets).

pub mod delta;
pub mod keys;
pub mod outbox;
pub mod replica;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use replica::ReplicatedStore;

use ::redis::RedisResult;

use crate::clock::Clock;
use crate::config::{ConfigError, StoreConfig};
use crate::server::udp::Issuers;
use crate::service::Tracker;
use crate::swarm::redis::{open_backend, Backend, Conn};

/// How long connecting to Redis, or one command, may take before the task retries.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// `[cluster]`: joining several nodes (see the module docs). Without `url`, nothing changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis URL the nodes share (`redis://host:port/`, or a Redis Cluster's seed nodes as
    /// `redis+cluster://h1:p1,h2:p2/`). Unset: a standalone node.
    pub url: Option<String>,
    /// Scopes every key of the cluster, so several clusters can share one Redis.
    pub name: String,
    /// Most milliseconds between two published batches (and two reads of the others').
    pub batch_interval_ms: u64,
    /// Seconds one connection-id secret is used; a multiple of the 120 s id window.
    pub key_rotation_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            url: None,
            name: "p4p".to_string(),
            batch_interval_ms: 100,
            key_rotation_secs: 3600,
        }
    }
}

impl ClusterConfig {
    /// Checks the section. With the memory store a cluster replicates it; with the Redis
    /// store (which shares swarms already, synchronously) it shares connection-id secrets only.
    pub fn validate(&self, _store: &StoreConfig) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        let Some(url) = &self.url else {
            return Ok(());
        };
        if !crate::config::STORE_SCHEMES
            .iter()
            .any(|p| url.starts_with(p))
        {
            return invalid(
                "cluster.url",
                format!(
                    "{url:?} is not a Redis URL ({})",
                    crate::config::STORE_SCHEMES.join(", ")
                ),
            );
        }
        if self.name.is_empty() || self.name.contains(['{', '}']) {
            return invalid("cluster.name", "must be non-empty, without braces".into());
        }
        if !(1..=1000).contains(&self.batch_interval_ms) {
            return invalid(
                "cluster.batch_interval_ms",
                "must be within 1..=1000".into(),
            );
        }
        let window = crate::protocol::connection_id::WINDOW_SECS;
        if self.key_rotation_secs < 2 * window || self.key_rotation_secs % window != 0 {
            return invalid(
                "cluster.key_rotation_secs",
                format!("must be a multiple of {window} s, at least {}", 2 * window),
            );
        }
        Ok(())
    }

    /// Key `suffix` of this cluster.
    pub fn key(&self, suffix: &str) -> String {
        format!("p4p:{{{}}}:{suffix}", self.name)
    }
}

/// Seconds to add to `clock` to get Unix time (the nodes' shared time base).
pub fn unix_offset(clock: &Clock) -> u64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    unix.saturating_sub(clock.now())
}

/// Opens a connection to the cluster's Redis or Redis Cluster (bounded by [`REDIS_TIMEOUT`]).
pub(crate) async fn connect(backend: &Backend) -> RedisResult<Conn> {
    let job = async {
        match backend {
            Backend::Single(client) => {
                let config = ::redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT)
                    .set_number_of_retries(0);
                ::redis::aio::ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Conn::Single)
            }
            Backend::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    };
    tokio::time::timeout(REDIS_TIMEOUT, job)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// Runs `cmd` on `conn`, bounded by [`REDIS_TIMEOUT`] (a frozen Redis never stalls a task).
pub(crate) async fn query<T: ::redis::FromRedisValue>(
    conn: &mut Conn,
    cmd: &::redis::Cmd,
) -> RedisResult<T> {
    tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async(conn))
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

fn timed_out() -> ::redis::RedisError {
    ::redis::RedisError::from((::redis::ErrorKind::IoError, "timed out"))
}

/// What [`start`] started.
pub struct Started {
    /// The connection-id issuer the UDP workers use.
    pub issuers: Issuers,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts the cluster's tasks for `tracker` when `[cluster]` names a Redis: the key ring (its
/// first round is awaited, so UDP starts with the cluster's secret when Redis answers) and, on
/// a replicated store, the publisher and the reader. Standalone: a random secret, no task.
pub async fn start(
    tracker: &Arc<Tracker>,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Started> {
    let config = &tracker.config.cluster;
    let Some(url) = &config.url else {
        let issuer = crate::protocol::connection_id::ConnectionIdIssuer::try_random()
            .map_err(std::io::Error::other)?;
        return Ok(Started {
            issuers: Arc::new(arc_swap::ArcSwap::from_pointee(issuer)),
            tasks: Vec::new(),
        });
    };
    let client = open_backend(url).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("cluster.url: {e}"),
        )
    })?;
    let mut ring = keys::KeyRing::new(client.clone(), config, tracker.clock.clone());
    ring.refresh().await;
    let issuers = ring.issuers();
    let mut tasks = vec![tokio::spawn(ring.run(shutdown.clone()))];
    if let crate::swarm::Store::Replicated(_) = tracker.store() {
        tasks.push(tokio::spawn(replica::publish(
            tracker.clone(),
            client.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(replica::follow(
            tracker.clone(),
            client,
            shutdown.clone(),
        )));
    }
    Ok(Started { issuers, tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<(), ConfigError>) -> &'static str {
        match r {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_cluster_section_is_checked_and_scopes_its_keys() {
        let store = StoreConfig::default();
        let mut c = ClusterConfig::default();
        c.validate(&store)
            .expect("without a URL there is nothing to check");
        c.url = Some("http://127.0.0.1:6379/".into());
        assert_eq!(field(c.validate(&store)), "cluster.url");
        c.url = Some("redis://127.0.0.1:6379/".into());
        c.validate(&store).expect("a Redis URL");
        c.key_rotation_secs = 100;
        assert_eq!(field(c.validate(&store)), "cluster.key_rotation_secs");
        c.key_rotation_secs = 240;
        c.batch_interval_ms = 0;
        assert_eq!(field(c.validate(&store)), "cluster.batch_interval_ms");
        c.batch_interval_ms = 100;
        c.name = "a}b".into();
        assert_eq!(field(c.validate(&store)), "cluster.name");
        assert_eq!(ClusterConfig::default().key("deltas"), "p4p:{p4p}:deltas");
    }
}
