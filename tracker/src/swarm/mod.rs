//! The swarm store: who is in which torrent, in which PID, seeding or leeching.
//!
//! Peers are bucketed by PID x address family x seeder/leecher, so selection takes peers from
//! the buckets it wants without scanning the swarm. A bucket's PID is the stable
//! [`p4p_itracker::PidId`] (never a position in one snapshot), so peers resolved under an older
//! snapshot and peers on other tracker nodes agree.

pub mod memory;
pub mod redis;

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

pub use memory::MemoryStore;

/// Why an announce was refused. The message is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The torrent cap is reached and this announce would add a torrent.
    #[error("tracker is tracking too many torrents")]
    TooManyTorrents,
    /// The swarm's peer cap is reached and this announce would add a peer.
    #[error("swarm is full")]
    SwarmFull,
    /// The backend (Redis) could not be reached in time.
    #[error("temporarily unavailable")]
    Unavailable,
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

/// Which address families an answer may carry. HTTP answers carry both (BEP 7); a UDP answer
/// carries the family of the socket it came in on (BEP 15).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Families {
    Both,
    V4,
    V6,
}

impl Families {
    /// Whether peers of this family may be returned.
    pub fn allows(self, v6: bool) -> bool {
        match self {
            Families::Both => true,
            Families::V4 => !v6,
            Families::V6 => v6,
        }
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
