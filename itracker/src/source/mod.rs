//! Where topologies come from besides topology files (whose format is [`crate::model::file`]):
//! Topology Zoo GraphML maps (`graphml`, feature `graphml`), and the MaxMind ASN database for everything outside
//! the ISP ([`asn`]).

pub mod asn;
#[cfg(feature = "graphml")]
pub mod graphml;
