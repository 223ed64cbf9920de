//! Where topologies come from: topology files ([`file`]), Topology Zoo GraphML maps
//! ([`graphml`]), and the MaxMind ASN database for everything outside the ISP ([`asn`]).

pub mod asn;
pub mod file;
pub mod graphml;
