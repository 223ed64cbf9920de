//! What the server serves: every message of one topology version, rendered once.
//!
//! A topology change (admin PUT, link-load, SIGHUP) builds a complete new [`Served`] off to the
//! side and swaps it in with one atomic pointer store; requests in flight keep the version they
//! started with. Rendering once per change keeps GETs to a pointer load and a byte copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::alto::{
    cost, property, resource, AddrGroup, Cost, CostMapMessage, CostMapMeta, CostTable, CostType,
    DependentMeta, NetworkMapMessage, NetworkMapMeta, PropMapMessage, VersionTag,
};
use crate::model::{CostMatrix, PidKind, Topology};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::source::asn::AsnDb;

/// A rendered response body and its strong ETag (quoted).
#[derive(Clone, Debug)]
pub struct Rendered {
    /// JSON body (cheap to clone).
    pub body: actix_web::web::Bytes,
    /// `"<hash>"`.
    pub etag: String,
}

impl Rendered {
    /// Serializes a message; the ETag is `tag` if given, else the SHA-256 of the body.
    pub fn new<T: serde::Serialize>(msg: &T, tag: Option<&str>) -> Rendered {
        let body = serde_json::to_vec(msg).expect("ALTO messages always serialize");
        let etag = match tag {
            Some(t) => format!("\"{t}\""),
            None => format!("\"{}\"", hex::encode(Sha256::digest(&body))),
        };
        Rendered {
            body: body.into(),
            etag,
        }
    }
}

/// One topology version, ready to serve.
#[derive(Debug)]
pub struct Served {
    /// The topology (with its dynamic prices).
    pub topology: Topology,
    /// Lookup structures (longest-prefix match, costs, ASN classes).
    pub snapshot: Snapshot,
    /// PID name -> index in `topology.pids()` (filters look names up without a scan).
    pub pid_index: HashMap<String, usize>,
    /// The network map's version tag.
    pub vtag: VersionTag,
    /// The full network map, as a message (for filtering) and rendered.
    pub network_map: NetworkMapMessage,
    /// Rendered full network map; its ETag is the vtag.
    pub network_map_body: Rendered,
    /// Rendered numerical routingcost map; ETag = hash of its content.
    pub cost_num: Rendered,
    /// Rendered ordinal routingcost map.
    pub cost_ord: Rendered,
    /// Rendered PID property map (internal/external marking).
    pub propmap: Rendered,
}

impl Served {
    /// Renders every message of a topology. Computes its costs once, for the snapshot and the
    /// cost maps alike.
    pub fn new(topology: Topology, asn: Option<Arc<AsnDb>>) -> Result<Served, SnapshotError> {
        let costs = topology.cost_matrix();
        let snapshot = topology.try_snapshot_with_asn(asn)?;
        let pid_index = topology
            .pids()
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let vtag = VersionTag {
            resource_id: resource::NETWORK_MAP.to_string(),
            tag: topology.vtag().to_string(),
        };
        let network_map = network_map_message(&topology, &vtag);
        let network_map_body = Rendered::new(&network_map, Some(&vtag.tag));
        let table_num = cost_table(&topology, costs, false);
        let table_ord = cost_table(&topology, costs, true);
        let cost_num = Rendered::new(&cost_map(&vtag, cost::NUMERICAL, table_num), None);
        let cost_ord = Rendered::new(&cost_map(&vtag, cost::ORDINAL, table_ord), None);
        let propmap = Rendered::new(&pid_properties(&topology, &vtag), None);
        Ok(Served {
            topology,
            snapshot,
            pid_index,
            vtag,
            network_map,
            network_map_body,
            cost_num,
            cost_ord,
            propmap,
        })
    }

    /// PID x PID costs, indexed like `topology.pids()`.
    pub fn costs(&self) -> &CostMatrix {
        self.topology.cost_matrix()
    }

    /// The full cost table in one mode.
    pub fn table(&self, ordinal: bool) -> CostTable {
        cost_table(&self.topology, self.costs(), ordinal)
    }
}

fn network_map_message(topo: &Topology, vtag: &VersionTag) -> NetworkMapMessage {
    let mut map = BTreeMap::new();
    for pid in topo.pids() {
        let mut group = AddrGroup::default();
        for p in &pid.prefixes {
            match p {
                ipnetwork::IpNetwork::V4(_) => group.ipv4.push(p.to_string()),
                ipnetwork::IpNetwork::V6(_) => group.ipv6.push(p.to_string()),
            }
        }
        map.insert(pid.name.clone(), group);
    }
    NetworkMapMessage {
        meta: NetworkMapMeta { vtag: vtag.clone() },
        network_map: map,
    }
}

/// Costs by PID name; ordinal mode ranks each source's destinations (1 = cheapest, equal
/// costs share a rank).
fn cost_table(topo: &Topology, costs: &CostMatrix, ordinal: bool) -> CostTable {
    let pids = topo.pids();
    let mut table = BTreeMap::new();
    for (s, src) in pids.iter().enumerate() {
        let row: Vec<f64> = (0..pids.len()).map(|t| costs.get(s, t)).collect();
        let values: Vec<f64> = if ordinal { ranks(&row) } else { row };
        let dsts = pids
            .iter()
            .zip(values)
            .map(|(dst, v)| (dst.name.clone(), Cost(v)))
            .collect();
        table.insert(src.name.clone(), dsts);
    }
    table
}

/// Dense ranks, 1-based.
pub(crate) fn ranks(row: &[f64]) -> Vec<f64> {
    let mut distinct: Vec<f64> = row.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    row.iter()
        .map(|v| (distinct.partition_point(|d| d < v) + 1) as f64)
        .collect()
}

fn cost_map(vtag: &VersionTag, mode: &str, table: CostTable) -> CostMapMessage {
    CostMapMessage {
        meta: CostMapMeta {
            dependent_vtags: vec![vtag.clone()],
            cost_type: CostType::routingcost(mode),
        },
        cost_map: table,
    }
}

fn pid_properties(topo: &Topology, vtag: &VersionTag) -> PropMapMessage {
    let property_map = topo
        .pids()
        .iter()
        .map(|pid| {
            let props = BTreeMap::from([
                (
                    property::INTERNAL.to_string(),
                    (pid.kind == PidKind::Internal).to_string(),
                ),
                (property::ISP.to_string(), topo.isp().to_string()),
            ]);
            (format!("{}.pid:{}", resource::NETWORK_MAP, pid.name), props)
        })
        .collect();
    PropMapMessage {
        meta: DependentMeta {
            dependent_vtags: vec![vtag.clone()],
        },
        property_map,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranks_are_dense_and_start_at_one() {
        assert_eq!(
            super::ranks(&[5.0, 1.0, 5.0, 3.0]),
            vec![3.0, 1.0, 3.0, 2.0]
        );
    }
}
