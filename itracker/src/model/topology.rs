//! The validated topology of one ISP.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use sha2::{Digest, Sha256};

use super::cost::CostMatrix;
use super::pricing::PricingConfig;
use crate::pid::DEFAULT_PID_NAME;

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

/// Why a topology was rejected. Every variant names what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML or does not have the expected shape.
    #[error("invalid topology file: {0}")]
    Syntax(String),
    /// The ISP name is not a valid RFC 7285 name.
    #[error("isp name {name:?} {reason}")]
    BadIspName {
        name: String,
        reason: super::PidNameError,
    },
    /// A PID name breaks RFC 7285's PIDName rules.
    #[error("PID name {name:?} {reason}")]
    BadPidName {
        name: String,
        reason: super::PidNameError,
    },
    /// Two PIDs have the same name.
    #[error("PID {0} is defined twice")]
    DuplicatePid(String),
    /// A prefix does not parse or has host bits set.
    #[error("PID {pid}: prefix {prefix:?} {reason}")]
    BadPrefix {
        pid: String,
        prefix: String,
        reason: String,
    },
    /// A prefix is listed in two PIDs (or twice in one).
    #[error("prefix {prefix} is in PID {first} and in PID {second}")]
    DuplicatePrefix {
        prefix: IpNetwork,
        first: String,
        second: String,
    },
    /// A link names a PID that does not exist.
    #[error("link {link}: field {end} names unknown PID {pid:?}")]
    UnknownPid {
        link: String,
        end: LinkEnd,
        pid: String,
    },
    /// A link field has a value the rules forbid.
    #[error("link {link}: field {field} = {value}: {reason}")]
    BadLinkField {
        link: String,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Two links have the same name, or the same (from, to) pair.
    #[error("link {0} is defined twice (by name or by its from/to pair)")]
    DuplicateLink(String),
    /// A default cost or pricing parameter is out of range.
    #[error("field {field} = {value}: {reason}")]
    BadSetting {
        field: &'static str,
        value: f64,
        reason: &'static str,
    },
}

impl Topology {
    /// Parses and validates a topology file's text (the format is in `topology-data/README.md`).
    pub fn from_toml_str(text: &str) -> Result<Topology, TopologyError> {
        crate::source::file::parse(text)
    }

    /// Reads, parses and validates a topology file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Assembles a topology from parts that [`crate::source`] has already validated, completing
    /// the map with a default PID and computing the vtag.
    pub(crate) fn assemble(
        isp: String,
        mut pids: Vec<Pid>,
        links: Vec<Link>,
        defaults: CostDefaults,
        pricing: PricingConfig,
    ) -> Result<Topology, TopologyError> {
        complete_map(&mut pids)?;
        let vtag = network_map_tag(&pids);
        Ok(Topology {
            isp,
            pids,
            links,
            defaults,
            pricing,
            vtag,
        })
    }

    /// The ISP's name.
    pub fn isp(&self) -> &str {
        &self.isp
    }

    /// Every PID, the default one included.
    pub fn pids(&self) -> &[Pid] {
        &self.pids
    }

    /// Every directed link.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Default costs and interdomain policy.
    pub fn defaults(&self) -> &CostDefaults {
        &self.defaults
    }

    /// Dynamic pricing parameters.
    pub fn pricing(&self) -> &PricingConfig {
        &self.pricing
    }

    /// Index of a PID by name.
    pub fn pid_index(&self, name: &str) -> Option<usize> {
        self.pids.iter().position(|p| p.name == name)
    }

    /// The network map's version tag: a SHA-256 over its PIDs and prefixes (so the same map
    /// always has the same tag, across restarts and servers).
    pub fn vtag(&self) -> &str {
        &self.vtag
    }

    /// The P4P p-distances between every pair of PIDs.
    pub fn costs(&self) -> CostMatrix {
        CostMatrix::compute(self)
    }

    pub(crate) fn links_mut(&mut self) -> &mut [Link] {
        &mut self.links
    }
}

/// A validated ISP topology (see the module docs).
#[derive(Clone, Debug)]
pub struct Topology {
    isp: String,
    pids: Vec<Pid>,
    links: Vec<Link>,
    defaults: CostDefaults,
    pricing: PricingConfig,
    vtag: String,
}

fn any_v4() -> IpNetwork {
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0 is valid"))
}

fn any_v6() -> IpNetwork {
    IpNetwork::V6(Ipv6Network::new(Ipv6Addr::UNSPECIFIED, 0).expect("/0 is valid"))
}

/// Makes the map complete: `0.0.0.0/0` and `::/0` go to the PID that already holds the other
/// one, else to a PID named `default` (created external if absent).
fn complete_map(pids: &mut Vec<Pid>) -> Result<(), TopologyError> {
    let holder = |p: &IpNetwork, pids: &[Pid]| pids.iter().position(|x| x.prefixes.contains(p));
    let (h4, h6) = (holder(&any_v4(), pids), holder(&any_v6(), pids));
    let target = match (h4, h6) {
        (Some(_), Some(_)) => return Ok(()),
        (Some(i), None) | (None, Some(i)) => i,
        (None, None) => match pids.iter().position(|p| p.name == DEFAULT_PID_NAME) {
            Some(i) => i,
            None => {
                pids.push(Pid {
                    name: DEFAULT_PID_NAME.to_string(),
                    kind: PidKind::External,
                    prefixes: Vec::new(),
                });
                pids.len() - 1
            }
        },
    };
    if h4.is_none() {
        pids[target].prefixes.push(any_v4());
    }
    if h6.is_none() {
        pids[target].prefixes.push(any_v6());
    }
    Ok(())
}

/// SHA-256 over the sorted PIDs and their sorted prefixes, hex encoded (64 characters, within
/// RFC 7285's 64-character vtag limit).
pub(crate) fn network_map_tag(pids: &[Pid]) -> String {
    let mut entries: Vec<(&str, Vec<String>)> = pids
        .iter()
        .map(|p| {
            let mut v: Vec<String> = p.prefixes.iter().map(|n| n.to_string()).collect();
            v.sort();
            (p.name.as_str(), v)
        })
        .collect();
    entries.sort();
    let mut h = Sha256::new();
    for (name, prefixes) in entries {
        h.update(name.as_bytes());
        h.update(b"\n");
        for p in prefixes {
            h.update(p.as_bytes());
            h.update(b" ");
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}
