//! One connection-id secret per cluster and epoch, kept in Redis.
//!
//! BEP 15 connection ids are a keyed hash of (time window, source IP) (see
//! [`crate::protocol::connection_id`]); nodes accept each other's ids when they hash with the
//! same secret over the same windows. So the secret of epoch `e` (an epoch is
//! `key_rotation_secs`, a whole number of windows, of Unix time) is the value of
//! `p4p:{<name>}:cid:<e>`: the first node to need it sets it (`SET NX`, a fresh random value,
//! with a TTL of a few epochs) and every node reads it back, so all agree without coordinating.
//! Each node holds the previous, the current and the next epoch's secret, refreshed every
//! [`REFRESH`]: an id issued just before a rotation is checked with its own epoch's secret, and
//! the next secret is known an epoch ahead, so nodes whose clocks differ a little agree at the
//! boundary.
//!
//! Redis unreachable: the node keeps the secrets it has, which last until the end of the next
//! epoch. Only a node that never reached Redis for an epoch (started while it was down, or cut
//! off for a whole epoch) makes a secret of its own: it keeps answering, its ids are then valid
//! on itself only, and when Redis answers again it offers that secret (`SET NX`) and adopts
//! whichever the cluster holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rand::TryRngCore;
use tokio::sync::watch;

use super::{connect, query, unix_offset, ClusterConfig};
use crate::clock::Clock;
use crate::protocol::connection_id::{ConnectionIdIssuer, WINDOW_SECS};
use crate::server::udp::Issuers;
use crate::swarm::redis::{Backend, Conn};

/// How often the ring re-reads its secrets and the time base.
const REFRESH: Duration = Duration::from_secs(10);

/// A secret and whether it is the cluster's (read from Redis) or this node's stopgap.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Secret {
    bytes: [u8; 16],
    shared: bool,
}

/// The secrets this node holds and the issuer built from them.
pub struct KeyRing {
    client: Backend,
    conn: Option<Conn>,
    /// Key prefix: `p4p:{<name>}:cid:`.
    prefix: String,
    /// Windows per epoch.
    rotation: u64,
    clock: Clock,
    secrets: BTreeMap<u64, Secret>,
    offset: u64,
    issuers: Issuers,
}

impl KeyRing {
    /// A ring for `config`'s cluster; it holds a throwaway secret until [`KeyRing::refresh`].
    pub(crate) fn new(client: Backend, config: &ClusterConfig, clock: Clock) -> Self {
        let rotation = (config.key_rotation_secs / WINDOW_SECS).max(2);
        let issuer = ConnectionIdIssuer::rotating(rotation, 0, &[]);
        Self {
            client,
            conn: None,
            prefix: config.key("cid:"),
            rotation,
            clock,
            secrets: BTreeMap::new(),
            offset: 0,
            issuers: Arc::new(ArcSwap::from_pointee(issuer)),
        }
    }

    /// The issuer the UDP workers use (swapped at every change).
    pub fn issuers(&self) -> Issuers {
        self.issuers.clone()
    }

    /// Refreshes every [`REFRESH`] until shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.refresh().await,
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Reads (or sets) the previous, current and next epoch's secrets and swaps in their
    /// issuer when anything changed.
    pub async fn refresh(&mut self) {
        let offset = unix_offset(&self.clock);
        let unix = self.clock.now() + offset;
        let current = ConnectionIdIssuer::epoch_of(unix, self.rotation);
        let mut changed = offset != self.offset;
        for epoch in current.saturating_sub(1)..=current + 1 {
            // A secret already held is offered again: a Redis that lost its keys (restarted
            // without persistence) gets it back instead of a new one some other node draws.
            let held = self.secrets.get(&epoch).copied();
            let offer = match held {
                Some(s) => s.bytes,
                None => match random_secret() {
                    Some(b) => b,
                    None => continue,
                },
            };
            let secret = match self.fetch(epoch, offer).await {
                Ok(bytes) => Secret {
                    bytes,
                    shared: true,
                },
                Err(e) => {
                    if held.is_none() {
                        tracing::warn!(
                            epoch,
                            "cluster: cannot read the connection-id secret from Redis ({e}); using one of this node's own until it answers (its ids are valid on this node only)"
                        );
                    }
                    Secret {
                        bytes: offer,
                        shared: false,
                    }
                }
            };
            changed |= held != Some(secret);
            self.secrets.insert(epoch, secret);
        }
        self.secrets.retain(|&e, _| e + 1 >= current);
        if changed {
            self.offset = offset;
            let keys: Vec<(u64, [u8; 16])> =
                self.secrets.iter().map(|(&e, s)| (e, s.bytes)).collect();
            self.issuers.store(Arc::new(ConnectionIdIssuer::rotating(
                self.rotation,
                offset,
                &keys,
            )));
        }
    }

    /// The cluster's secret of `epoch`, set to `offer` if it has none yet.
    async fn fetch(&mut self, epoch: u64, offer: [u8; 16]) -> Result<[u8; 16], String> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = connect(&self.client).await.map_err(|e| e.to_string())?;
                self.conn.insert(c)
            }
        };
        let key = format!("{}{epoch}", self.prefix);
        let ttl = self.rotation * WINDOW_SECS * 4;
        let got: ::redis::RedisResult<Vec<u8>> = async {
            let mut set = ::redis::cmd("SET");
            set.arg(&key).arg(&offer[..]).arg("NX").arg("EX").arg(ttl);
            query::<::redis::Value>(conn, &set).await?;
            query(conn, ::redis::cmd("GET").arg(&key)).await
        }
        .await;
        match got {
            Ok(bytes) => bytes
                .try_into()
                .map_err(|b: Vec<u8>| format!("{key} holds {} bytes, not 16", b.len())),
            Err(e) => {
                self.conn = None;
                Err(e.to_string())
            }
        }
    }
}

fn random_secret() -> Option<[u8; 16]> {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.try_fill_bytes(&mut b).ok()?;
    Some(b)
}
