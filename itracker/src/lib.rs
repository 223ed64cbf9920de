//! The P4P iTracker: an ISP's view of its network, served as ALTO (RFC 7285).
//!
//! The modules, each using only those listed before it:
//! - [`pid`]: the process-wide PID name interner (stable ids, never snapshot positions);
//! - [`source`]: the MaxMind ASN database and the Topology Zoo GraphML importer;
//! - [`snapshot`]: the immutable, lookup-ready view a tracker reads on every announce
//!   (longest-prefix match, dense cost matrix, neighbours by cost);
//! - [`model`]: PIDs, links, the topology file format and the P4P cost rules; a [`Topology`] is
//!   always valid and builds its [`Snapshot`];
//! - [`alto`]: RFC 7285 messages and media types;
//! - [`client`]: what a tracker uses to fetch ALTO maps and turn them into a [`Snapshot`];
//! - `config`: the server's configuration file (feature `server`);
//! - `server`: the ALTO and admin HTTP(S) service (feature `server`).
//!
//! Features: `server` (default) builds the ALTO server, its TLS stack and the `p4p-itracker`
//! binary; `graphml` (default) the Topology Zoo importer. A tracker needs neither.

pub mod alto;
pub mod bearer;
pub mod client;
#[cfg(feature = "server")]
pub mod config;
pub mod model;
pub mod pid;
#[cfg(feature = "server")]
pub mod server;
pub mod snapshot;
pub mod source;

pub use model::Topology;
pub use pid::PidId;
pub use snapshot::{PidInfo, Preference, Snapshot, SnapshotBuilder, SnapshotError};

/// The embedded default topology's text (`topology-data/default.toml`).
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../../topology-data/default.toml");

/// The topology a tracker uses when given nothing: what a public tracker with no ISP map
/// should assume (see `topology-data/README.md`): special-purpose ranges (loopback, private,
/// link-local, CGNAT, documentation) apart from the public Internet, which is one external
/// PID. Pair it with an ASN database ([`Topology::snapshot_with_asn`]) for AS-level grouping.
pub fn embedded_default() -> Topology {
    Topology::from_toml_str(EMBEDDED_DEFAULT_TOML)
        .expect("topology-data/default.toml is valid (checked by a unit test)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_default_parses_and_builds() {
        let t = super::embedded_default();
        let s = t.snapshot();
        assert!(s.len() >= 2);
    }
}
