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

use super::cost::{CostMatrix, Routing};
use super::error::TopologyError;
use super::file;
use super::parts::{CostDefaults, Link, Pid, PidKind};
use super::pricing::{self, LinkLoad, LinkLoadError, PricingConfig};
use crate::pid::DEFAULT_PID_NAME;
use crate::snapshot::{PidSpec, Snapshot, SnapshotBuilder, SnapshotError};
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
    /// The p-distances of the current links and prices, computed and checked (finite as
    /// `f64` and `f32`) whenever they change: a `Topology` never holds unusable costs.
    costs: Arc<CostMatrix>,
    /// Shortest paths by routing weight: computed once per topology, shared by the versions
    /// that only change prices (a link-load sums costs along them again, without a search).
    routing: Arc<Routing>,
}

impl Topology {
    /// Parses and validates a topology file's text (the format is in `topology-data/README.md`
    /// and [`super::file`]).
    pub fn from_toml_str(text: &str) -> Result<Topology, TopologyError> {
        Self::from_parts(file::parse(text)?, None)
    }

    /// Like [`Topology::from_toml_str`], carrying the dynamic prices of `old` over (see
    /// [`Topology::inherit_prices`]) before the costs are computed and checked, once.
    pub fn from_toml_str_inheriting(text: &str, old: &Topology) -> Result<Topology, TopologyError> {
        Self::from_parts(file::parse(text)?, Some(old))
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

    /// Like [`Topology::from_file`], carrying the dynamic prices of `old` over.
    pub fn from_file_inheriting(
        path: impl AsRef<Path>,
        old: &Topology,
    ) -> Result<Topology, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str_inheriting(&text, old)
    }

    /// Assembles a topology from parts the file parser has validated, completing the map with
    /// a default PID and computing the vtag, prices inherited from `old` if given; then
    /// computes the p-distances and refuses the topology if any is unusable.
    fn from_parts(
        parts: file::Validated,
        old: Option<&Topology>,
    ) -> Result<Topology, TopologyError> {
        let file::Validated {
            isp,
            mut pids,
            mut links,
            defaults,
            pricing,
        } = parts;
        complete_map(&mut pids);
        // A snapshot indexes PIDs with u16 and keeps u16::MAX as "absent".
        if pids.len() >= usize::from(u16::MAX) {
            return Err(TopologyError::TooManyPids(pids.len()));
        }
        if let Some(old) = old {
            pricing::inherit_prices(&pids, &mut links, &old.pids, &old.links);
        }
        let routing = Arc::new(Routing::new(&pids, &links));
        let costs = checked_costs(&routing, &pids, &links, &defaults)?;
        let vtag = network_map_tag(&pids);
        Ok(Topology {
            isp,
            pids,
            links,
            defaults,
            pricing,
            vtag,
            costs: Arc::new(costs),
            routing,
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

    /// The cost of one link (see [`Link::cost`]).
    pub fn link_cost(&self, link: &Link) -> f64 {
        link.cost(&self.defaults)
    }

    /// The P4P p-distances between every pair of PIDs (a copy; see
    /// [`Topology::cost_matrix`]).
    pub fn costs(&self) -> CostMatrix {
        (*self.costs).clone()
    }

    /// The P4P p-distances between every pair of PIDs, computed (all-pairs shortest paths)
    /// and checked when the topology or its prices last changed.
    pub fn cost_matrix(&self) -> &CostMatrix {
        &self.costs
    }

    /// Applies utilisation measurements: every link named gets one price update. All or
    /// nothing: on any error (a measurement, or prices that would make a p-distance
    /// unusable) the topology is unchanged.
    pub fn apply_link_loads(&mut self, loads: &[LinkLoad]) -> Result<(), LinkLoadError> {
        let mut links = self.links.clone();
        pricing::apply_link_loads(&self.pids, &mut links, &self.defaults, &self.pricing, loads)?;
        let costs = checked_costs(&self.routing, &self.pids, &links, &self.defaults)
            .map_err(|e| LinkLoadError::Costs(e.to_string()))?;
        self.links = links;
        self.costs = Arc::new(costs);
        Ok(())
    }

    /// Carries dynamic prices (and last utilisations) over from an older topology, for every
    /// link with the same (from, to) PID names. All or nothing: refused (the topology is
    /// unchanged) when the inherited prices would make a p-distance unusable. A reload does
    /// better with [`Topology::from_file_inheriting`], which computes the costs once.
    pub fn inherit_prices(&mut self, old: &Topology) -> Result<(), TopologyError> {
        let mut links = self.links.clone();
        pricing::inherit_prices(&self.pids, &mut links, &old.pids, &old.links);
        let costs = checked_costs(&self.routing, &self.pids, &links, &self.defaults)?;
        self.links = links;
        self.costs = Arc::new(costs);
        Ok(())
    }

    /// The lookup-ready snapshot of this topology: every PID (internal ones marked), the P4P
    /// costs, and the network map vtag as version.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with_asn(None)
    }

    /// Like [`Topology::snapshot`], with the MaxMind fallback when `asn` is given: addresses
    /// outside the internal PIDs in the same AS cost `defaults.same_asn`, in different ASes
    /// `defaults.interdomain`.
    ///
    /// Cannot fail for a `Topology` (its names, prefixes, PID count and costs are checked when
    /// it is built); [`Topology::try_snapshot_with_asn`] returns the error instead of panicking
    /// should that ever change.
    pub fn snapshot_with_asn(&self, asn: Option<Arc<AsnDb>>) -> Snapshot {
        self.try_snapshot_with_asn(asn)
            .expect("a validated topology always builds a snapshot")
    }

    /// This topology's snapshot made from `previous`, the snapshot of a version with the same
    /// PIDs and prefixes (a price change): its prefix index is reused, only costs change.
    pub fn snapshot_after(&self, previous: &Snapshot) -> Result<Snapshot, SnapshotError> {
        previous.with_costs(self.vtag(), self.costs.to_f32())
    }

    /// Like [`Topology::snapshot_with_asn`], returning what the snapshot builder refused.
    pub fn try_snapshot_with_asn(
        &self,
        asn: Option<Arc<AsnDb>>,
    ) -> Result<Snapshot, SnapshotError> {
        let costs = &self.costs;
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
        b.set_cost_matrix(costs.to_f32());
        if let Some(db) = asn {
            b = b.with_asn(db, d.same_asn, d.interdomain);
        }
        b.build()
    }
}

/// The p-distances of `pids` and `links` (routed by `routing`, computed from the same PIDs
/// and links), refused when one is not finite as `f64` and `f32`.
fn checked_costs(
    routing: &Routing,
    pids: &[Pid],
    links: &[Link],
    defaults: &CostDefaults,
) -> Result<CostMatrix, TopologyError> {
    let costs = routing.costs(pids, links, defaults);
    match costs.first_unusable() {
        None => Ok(costs),
        Some((from, to, value)) => Err(TopologyError::NonFiniteCost {
            from: pids[from].name.clone(),
            to: pids[to].name.clone(),
            value,
        }),
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
