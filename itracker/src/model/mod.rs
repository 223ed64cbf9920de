//! The ISP's network as the operator describes it: PIDs, links, and the P4P cost rules.
//!
//! A [`Topology`] is always valid: it can only be built through [`Topology::from_toml_str`] or
//! [`Topology::from_file`], which check every field. Costs ([`CostMatrix`]) are derived from it
//! on demand; dynamic link prices ([`pricing`]) are the only state that changes without a new
//! topology.
//!
//! The files depend on each other one way only, top to bottom:
//! - `topology`: the [`Topology`] and its one `impl` block (parse, costs, prices, snapshot);
//! - [`file`]: the topology file format (TOML) and its validation;
//! - `cost`: p-distances over PIDs and links; [`pricing`]: link price updates;
//! - `error`: [`TopologyError`]; `parts`: [`Pid`], [`Link`], [`CostDefaults`];
//!   `names`: RFC 7285 PIDName rules.

mod cost;
mod error;
pub mod file;
mod names;
mod parts;
pub mod pricing;
mod topology;

pub use cost::{p_distances, usable_cost, CostMatrix, Routing};
pub use error::TopologyError;
pub use names::{validate_pid_name, PidNameError};
pub use parts::{CostDefaults, Link, LinkEnd, Pid, PidKind};
pub use pricing::{LinkLoad, PricingConfig};
pub use topology::Topology;
