//! Building the tracker's [`Snapshot`] straight from a topology, in-process.

use std::sync::Arc;

use super::topology::{PidKind, Topology};
use crate::snapshot::{PidSpec, Snapshot, SnapshotBuilder};
use crate::source::asn::AsnDb;

impl Topology {
    /// The lookup-ready snapshot of this topology: every PID (internal ones marked), the P4P
    /// costs, and the network map vtag as version.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with_asn(None)
    }

    /// Like [`Topology::snapshot`], with the MaxMind fallback when `asn` is given: addresses
    /// outside the internal PIDs in the same AS cost `defaults.same_asn`, in different ASes
    /// `defaults.interdomain`.
    pub fn snapshot_with_asn(&self, asn: Option<Arc<AsnDb>>) -> Snapshot {
        let d = self.defaults();
        let mut b = SnapshotBuilder::new(self.vtag(), d.interdomain);
        let isp = b.add_isp(self.isp());
        for pid in self.pids() {
            b.add_pid(PidSpec {
                name: pid.name.clone(),
                isp,
                internal: pid.kind == PidKind::Internal,
                prefixes: pid.prefixes.clone(),
            });
        }
        let costs = self.costs();
        for from in 0..costs.len() {
            for to in 0..costs.len() {
                b.set_cost(from, to, costs.get(from, to));
            }
        }
        if let Some(db) = asn {
            b = b.with_asn(db, d.same_asn, d.interdomain);
        }
        // A validated topology has unique names and prefixes, non-negative costs, and far
        // fewer than 65535 PIDs (the file format would be unusable long before that).
        b.build()
            .expect("a validated topology always builds a snapshot")
    }
}
