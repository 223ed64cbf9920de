//! The ISP's network as the operator describes it: PIDs, links, and the P4P cost rules.
//!
//! A [`Topology`] is always valid: it can only be built through [`Topology::from_toml_str`] (or
//! the importers in [`crate::source`]), which check every field. Costs ([`CostMatrix`]) are
//! derived from it on demand; dynamic link prices ([`pricing`]) are the only state that changes
//! without a new topology.

mod cost;
mod names;
pub mod pricing;
mod snapshot;
mod topology;

pub use cost::CostMatrix;
pub use names::{validate_pid_name, PidNameError};
pub use pricing::{LinkLoad, PricingConfig};
pub use topology::{CostDefaults, Link, LinkEnd, Pid, PidKind, Topology, TopologyError};
