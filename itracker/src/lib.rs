//! The P4P iTracker: an ISP's view of its network, served as ALTO (RFC 7285).
//!
//! Data flows through the modules in this order:
//! - [`pid`]: the process-wide PID name interner (stable ids, never snapshot positions);
//! - [`snapshot`]: the immutable, lookup-ready view a tracker reads on every announce
//!   (longest-prefix match, dense cost matrix, neighbours by cost).

pub mod pid;
pub mod snapshot;

pub use pid::PidId;
pub use snapshot::{PidInfo, Snapshot, SnapshotBuilder, SnapshotError};
