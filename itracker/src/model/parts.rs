//! The parts a topology is made of: PIDs, links and the default costs. Plain data, checked by
//! the topology file parser ([`super::file`]) before a [`super::Topology`] holds them.

use std::fmt;

use ipnetwork::IpNetwork;

/// Whether a PID is one of the ISP's own locations or somewhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PidKind {
    /// A PoP, region or customer aggregate of this ISP.
    Internal,
    /// A peering point, transit provider, another AS, or the rest of the Internet.
    External,
}

/// A named network location (RFC 7285 PID) and the prefixes it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Pid {
    /// RFC 7285 PIDName.
    pub name: String,
    /// Internal or external to the ISP.
    pub kind: PidKind,
    /// IPv4 and IPv6 prefixes, canonical (no host bits), in file order.
    pub prefixes: Vec<IpNetwork>,
}

/// A directed link between two PIDs.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// Unique name (from the file, or `<from>-><to>`), used by link-load measurements.
    pub name: String,
    /// Index of the PID the link leaves.
    pub from: usize,
    /// Index of the PID the link enters.
    pub to: usize,
    /// Capacity, in any unit the operator likes (the same for every link).
    pub capacity: f64,
    /// IGP routing weight; `None` for egress links (to external PIDs).
    pub weight: Option<f64>,
    /// Static cost (p-distance) configured by the operator; wins over everything else.
    pub static_cost: Option<f64>,
    /// Last measured utilisation (traffic / capacity), if any.
    pub utilisation: Option<f64>,
    /// Dynamic price derived from utilisation measurements, if any were made.
    pub price: Option<f64>,
}

impl Link {
    /// Whether this link leaves the ISP (its target is an external PID).
    pub fn is_egress(&self) -> bool {
        self.weight.is_none()
    }

    /// The cost of this link: static if configured, else its dynamic price, else the default
    /// (`defaults.link` inside the ISP, `defaults.interdomain` on an egress link).
    pub fn cost(&self, defaults: &CostDefaults) -> f64 {
        self.static_cost
            .or(self.price)
            .unwrap_or(self.default_cost(defaults))
    }

    /// The cost of this link before any static cost or price: where the first price update
    /// starts.
    pub fn default_cost(&self, defaults: &CostDefaults) -> f64 {
        if self.is_egress() {
            defaults.interdomain
        } else {
            defaults.link
        }
    }
}

/// Default costs and interdomain policy.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostDefaults {
    /// Cost from a PID to itself.
    pub intra_pid: f64,
    /// Cost between two internal PIDs with no path between them.
    pub inter_pid: f64,
    /// Cost from an external PID to anything, and to an external PID no egress link reaches.
    pub interdomain: f64,
    /// Cost of an internal link with neither a static cost nor a dynamic price. (Egress links
    /// without either cost `interdomain`.)
    pub link: f64,
    /// Whether an internal-to-external cost adds the intradomain cost to the egress PID.
    pub interdomain_includes_intradomain: bool,
    /// With an ASN database: cost between two addresses outside the ISP's internal PIDs that
    /// belong to the same AS (different ASes cost `interdomain`).
    pub same_asn: f64,
}

impl Default for CostDefaults {
    fn default() -> Self {
        Self {
            intra_pid: 1.0,
            inter_pid: 10.0,
            interdomain: 65.0,
            link: 1.0,
            interdomain_includes_intradomain: false,
            same_asn: 20.0,
        }
    }
}

/// One end of a link, as the link-load API and errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// The `from` field.
    From,
    /// The `to` field.
    To,
}

impl fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkEnd::From => "from",
            LinkEnd::To => "to",
        })
    }
}
