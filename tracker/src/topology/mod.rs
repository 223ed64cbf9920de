//! The network snapshot the announce path reads.
//!
//! Readers take the current [`Snapshot`] with one atomic load (`arc-swap`) and never wait on
//! the network; a background refresher (ALTO) or an operator swaps in new snapshots. A worker
//! that announces in a loop keeps a [`SnapshotCache`]: a plain load and a pointer compare per
//! announce instead of the guard's two locked instructions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use p4p_itracker::Snapshot;

/// The current snapshot and where it stands.
#[derive(Debug)]
pub struct TopologyHandle {
    current: Arc<ArcSwap<Snapshot>>,
    /// Whether a real topology (file, embedded default or ALTO) was ever loaded. Without one
    /// every address is in one PID and selection is effectively random.
    loaded: AtomicBool,
    /// Clock seconds when the snapshot was last built or confirmed unchanged.
    confirmed_at: AtomicU64,
}

impl TopologyHandle {
    /// A handle serving `snapshot`; `loaded` says whether it is a real map.
    pub fn new(snapshot: Snapshot, loaded: bool) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            loaded: AtomicBool::new(loaded),
            confirmed_at: AtomicU64::new(0),
        }
    }

    /// The snapshot to use for this announce.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// An owned reference, for work that outlives one announce.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current snapshot through `cache`, which this handle (re)fills when it is empty or
    /// belongs to another handle. Sees a swapped-in snapshot on the next call.
    pub fn cached<'c>(&self, cache: &'c mut SnapshotCache) -> &'c Arc<Snapshot> {
        cache.load(&self.current)
    }

    /// Swaps in a new snapshot.
    pub fn store(&self, snapshot: Snapshot, now: u64) {
        self.current.store(Arc::new(snapshot));
        self.loaded.store(true, Ordering::Relaxed);
        self.confirm(now);
    }

    /// Records that the snapshot in use is still current (a refresh found nothing new).
    pub fn confirm(&self, now: u64) {
        self.confirmed_at.store(now, Ordering::Relaxed);
    }

    /// Whether a real map was ever loaded.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Clock seconds of the last build or confirmation.
    pub fn confirmed_at(&self) -> u64 {
        self.confirmed_at.load(Ordering::Relaxed)
    }
}

/// A worker's cached reference to a [`TopologyHandle`]'s snapshot (see
/// [`TopologyHandle::cached`]).
pub type SnapshotCache = crate::swap::SwapCache<Snapshot>;

/// Where a peer sits, for bucketing: the snapshot index of its PID and the bucket id its peers
/// share. The bucket id is the PID's stable id, except for addresses outside every internal
/// PID when the snapshot carries an ASN database (`--asn-db`): those are bucketed by origin AS
/// (a location named `AS<number>`), so that selection can prefer peers of the requester's own
/// AS (same tier as an own PID) over the rest of the public Internet. The PID index stays the
/// PID's, so PID-level costs still apply.
pub fn location(snap: &Snapshot, ip: std::net::IpAddr) -> (u16, p4p_itracker::PidId) {
    let index = snap.locate(ip);
    let pid = snap.pid(index);
    if pid.internal || !snap.has_asn() {
        return (index, pid.id);
    }
    match snap.asn(ip) {
        Some(asn) => (index, as_location(asn)),
        None => (index, pid.id),
    }
}

/// The bucket id of an AS location: an id of the AS locations' own range
/// ([`p4p_itracker::PidId::of_asn`]), so no PID of any map (a PID may well be named `AS64500`)
/// shares a bucket with the public peers of an AS, and ASes never use up the PID ids.
fn as_location(asn: u32) -> p4p_itracker::PidId {
    p4p_itracker::PidId::of_asn(asn)
}

/// Why the configured topology could not be loaded at start (each source error names its file).
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The topology file could not be read or is not a valid topology.
    #[error("topology file {path}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: p4p_itracker::model::TopologyError,
    },
    /// The MaxMind ASN database could not be opened.
    #[error(transparent)]
    Asn(#[from] p4p_itracker::source::asn::AsnError),
}

/// The snapshot to start with, and a description of where it came from: the topology file if
/// one is configured, else the embedded default (`topology-data/default.toml`). ALTO sources
/// replace it once the refresher has fetched them.
pub fn initial_snapshot(
    config: &crate::config::TopologyConfig,
) -> Result<(Snapshot, String), TopologyError> {
    use p4p_itracker::source::asn::AsnDb;
    let asn = match &config.asn_db {
        Some(path) => Some(Arc::new(AsnDb::open(path)?)),
        None => None,
    };
    let (topology, source) = match &config.file {
        Some(path) => {
            let t =
                p4p_itracker::Topology::from_file(path).map_err(|source| TopologyError::File {
                    path: path.clone(),
                    source,
                })?;
            (t, format!("file {}", path.display()))
        }
        None => (
            p4p_itracker::embedded_default(),
            "embedded default".to_string(),
        ),
    };
    Ok((topology.snapshot_with_asn(asn), source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_as_location_never_shares_a_bucket_with_a_pid_of_the_same_name() {
        let public = as_location(64500);
        assert_eq!(public, as_location(64500));
        assert_ne!(public, p4p_itracker::PidId::intern("AS64500"));
        assert_ne!(public, as_location(64501));
        assert!(
            public.name().starts_with('#'),
            "named outside the PIDName alphabet"
        );
    }

    #[test]
    fn a_cache_follows_its_handle_and_leaves_another_handles() {
        let a = TopologyHandle::new(Snapshot::single_pid(), false);
        let mut cache = SnapshotCache::default();
        let first = Arc::clone(a.cached(&mut cache));
        assert!(Arc::ptr_eq(&first, &a.load_full()));
        // A swapped-in snapshot is seen on the next call.
        a.store(Snapshot::single_pid(), 1);
        let second = Arc::clone(a.cached(&mut cache));
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(&second, &a.load_full()));
        // The same cache handed to another handle serves that handle's snapshot.
        let b = TopologyHandle::new(Snapshot::single_pid(), false);
        assert!(Arc::ptr_eq(b.cached(&mut cache), &b.load_full()));
        assert!(Arc::ptr_eq(a.cached(&mut cache), &second));
    }
}
