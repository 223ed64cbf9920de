//! The validated topology of one ISP, and everything derived from it: p-distances
//! ([`super::cost`]), price updates ([`super::pricing`]) and the tracker's [`Snapshot`].
//!
//! This is the one `impl Topology`: the modules below it ([`super::file`], [`super::cost`],
//! [`super::pricing`]) work on its parts and never name it, so the model's imports run one way.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use sha2::{Digest, Sha256};

use super::cost::{p_distances, CostMatrix};
use super::error::TopologyError;
use super::file;
use super::parts::{CostDefaults, Link, Pid, PidKind};
use super::pricing::{self, LinkLoad, LinkLoadError, PricingConfig};
use crate::pid::DEFAULT_PID_NAME;
use crate::snapshot::{PidSpec, Snapshot, SnapshotBuilder};
use crate::source::asn::AsnDb;

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

impl Topology {
    /// Parses and validates a topology file's text (the format is in `topology-data/README.md`
    /// and [`super::file`]).
    pub fn from_toml_str(text: &str) -> Result<Topology, TopologyError> {
        Ok(Self::from_parts(file::parse(text)?))
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

    /// Assembles a topology from parts the file parser has validated, completing the map with
    /// a default PID and computing the vtag.
    fn from_parts(parts: file::Validated) -> Topology {
        let file::Validated {
            isp,
            mut pids,
            links,
            defaults,
            pricing,
        } = parts;
        complete_map(&mut pids);
        let vtag = network_map_tag(&pids);
        Topology {
            isp,
            pids,
            links,
            defaults,
            pricing,
            vtag,
        }
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

    /// The cost of one link (see [`Link::cost`]).
    pub fn link_cost(&self, link: &Link) -> f64 {
        link.cost(&self.defaults)
    }

    /// The P4P p-distances between every pair of PIDs. All-pairs shortest paths: compute them
    /// once per topology version and pass them on ([`Topology::snapshot_with_costs`]).
    pub fn costs(&self) -> CostMatrix {
        p_distances(&self.pids, &self.links, &self.defaults)
    }

    /// Applies utilisation measurements: every link named gets one price update. All or
    /// nothing: on any error the topology is unchanged.
    pub fn apply_link_loads(&mut self, loads: &[LinkLoad]) -> Result<(), LinkLoadError> {
        pricing::apply_link_loads(
            &self.pids,
            &mut self.links,
            &self.defaults,
            &self.pricing,
            loads,
        )
    }

    /// Carries dynamic prices (and last utilisations) over from an older topology, for every
    /// link with the same (from, to) PID names. Called on reload so that prices survive.
    pub fn inherit_prices(&mut self, old: &Topology) {
        pricing::inherit_prices(&self.pids, &mut self.links, &old.pids, &old.links);
    }

    /// The lookup-ready snapshot of this topology: every PID (internal ones marked), the P4P
    /// costs, and the network map vtag as version.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with_asn(None)
    }

    /// Like [`Topology::snapshot`], with the MaxMind fallback when `asn` is given: addresses
    /// outside the internal PIDs in the same AS cost `defaults.same_asn`, in different ASes
    /// `defaults.interdomain`.
    pub fn snapshot_with_asn(&self, asn: Option<Arc<AsnDb>>) -> Snapshot {
        self.snapshot_with_costs(&self.costs(), asn)
    }

    /// Like [`Topology::snapshot_with_asn`], from costs already computed by
    /// [`Topology::costs`] for this topology (the ALTO server needs them for its cost maps as
    /// well, and all-pairs shortest paths are the expensive part).
    pub fn snapshot_with_costs(&self, costs: &CostMatrix, asn: Option<Arc<AsnDb>>) -> Snapshot {
        debug_assert_eq!(costs.len(), self.pids.len(), "costs of another topology");
        let d = &self.defaults;
        let mut b = SnapshotBuilder::new(self.vtag(), d.interdomain);
        let isp = b.add_isp(self.isp());
        for pid in &self.pids {
            b.add_pid(PidSpec {
                name: pid.name.clone(),
                isp,
                internal: pid.kind == PidKind::Internal,
                prefixes: pid.prefixes.clone(),
            });
        }
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

fn any_v4() -> IpNetwork {
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0 is valid"))
}

fn any_v6() -> IpNetwork {
    IpNetwork::V6(Ipv6Network::new(Ipv6Addr::UNSPECIFIED, 0).expect("/0 is valid"))
}

/// Makes the map complete: `0.0.0.0/0` and `::/0` go to the PID that already holds the other
/// one, else to a PID named `default` (created external if absent).
fn complete_map(pids: &mut Vec<Pid>) {
    let holder = |p: &IpNetwork, pids: &[Pid]| pids.iter().position(|x| x.prefixes.contains(p));
    let (h4, h6) = (holder(&any_v4(), pids), holder(&any_v6(), pids));
    let target = match (h4, h6) {
        (Some(_), Some(_)) => return,
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
