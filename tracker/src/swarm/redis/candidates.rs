//! What one announce script returns, as selection sees it: each bucket's live count and a
//! bounded random sample, behind the [`Buckets`] trait, and the selection run over them.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use ::redis::Value;
use p4p_itracker::{PidId, Snapshot};
use rand::Rng;

use super::wire::{parse_bucket_id, parse_member};
use super::{PeerSink, StoreError};
use crate::selection::{Buckets, Requester, Scratch, SelectionStats, Selector};
use crate::types::SwarmStats;

/// Near PIDs of the requester (same stated boundary, see [`Snapshot::near`]; cheapest first)
/// whose buckets the announce samples in full.
pub(super) const PREFERRED_ISP_PIDS: usize = 8;
/// Cheapest far PIDs sampled in full (the far tier's first picks).
pub(super) const PREFERRED_REMOTE_PIDS: usize = 4;
/// Entries of the cost order looked at to find them.
pub(super) const PREFERRED_SCAN: usize = 64;

/// The PIDs whose buckets are sampled in full besides the requester's own: the cheapest near
/// ones, then the cheapest far ones (where p4p's tiers take their first peers).
pub(super) fn preferred_pids(snap: &Snapshot, from: u16) -> impl Iterator<Item = u16> + '_ {
    let (mut isp, mut remote) = (0, 0);
    snap.by_cost(from)
        .iter()
        .take(PREFERRED_SCAN)
        .copied()
        .filter(move |&to| {
            let (n, cap) = if snap.near(from, to) {
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
pub(super) struct Candidate {
    pub(super) id: Vec<u8>,
    pub(super) pid: PidId,
    pub(super) seeders: bool,
    pub(super) v6: bool,
    /// Live peers in the bucket, the requester included.
    pub(super) count: usize,
    /// A uniform random subset, in random order, the requester excluded.
    pub(super) sample: Vec<SocketAddr>,
    /// Next sample entry selection takes.
    pub(super) next: Cell<usize>,
}

/// The swarm as one announce sees it.
#[derive(Debug, Default)]
pub(super) struct Candidates {
    pub(super) downloaded: u32,
    pub(super) buckets: Vec<Candidate>,
    /// The requester's bucket.
    pub(super) requester: Option<usize>,
    /// Set when a bucket's sample ran out during selection.
    pub(super) short: Cell<bool>,
}

impl Candidates {
    /// Parses the announce script's reply (see `redis/announce.lua`).
    pub(super) fn parse(reply: Value, target: &str) -> Result<Self, StoreError> {
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

    pub(super) fn stats(&self) -> SwarmStats {
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

pub(super) fn malformed() -> StoreError {
    tracing::error!("unexpected reply from the Redis announce script");
    StoreError::Unavailable
}

/// Never a real peer (port 0 on the unspecified address): stands for "sample ran out".
pub(super) const MISSING: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

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
pub(super) fn select<R: Rng>(
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
