//! What the server serves: every message of one topology version, rendered once.
//!
//! A topology change (admin PUT, link-load, SIGHUP) builds a complete new [`Served`] off to the
//! side and swaps it in with one atomic pointer store; requests in flight keep the version they
//! started with. Rendering once per change keeps GETs to a pointer load and a byte copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use actix_web::web::Bytes;
use sha2::{Digest, Sha256};

use crate::alto::{
    cost, property, resource, AddrGroup, Cost, CostMapMeta, CostType, DependentMeta,
    NetworkMapMessage, NetworkMapMeta, PropMapMessage, VersionTag,
};
use crate::model::{CostMatrix, Pid, PidKind, Topology};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::source::asn::AsnDb;

/// A rendered response body, its strong ETag (quoted), and its gzip encoding once asked for.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// JSON body (cheap to clone).
    pub body: Bytes,
    /// `"<hash>"`.
    pub etag: String,
    /// The body gzip-compressed, made on the first request that accepts it (see
    /// [`Rendered::gzip`]).
    gzip: OnceLock<Option<Bytes>>,
}

/// Bodies shorter than this are sent as they are: gzip would save less than it costs.
pub const GZIP_MIN_BYTES: usize = 4096;

impl Rendered {
    /// Serializes a message; the ETag is `tag` if given, else the SHA-256 of the body.
    pub fn new<T: serde::Serialize>(msg: &T, tag: Option<&str>) -> Rendered {
        let body = serde_json::to_vec(msg).expect("ALTO messages always serialize");
        Rendered::from_json(body, tag)
    }

    /// A body already written as JSON; the ETag as for [`Rendered::new`].
    pub fn from_json(body: Vec<u8>, tag: Option<&str>) -> Rendered {
        let etag = match tag {
            Some(t) => format!("\"{t}\""),
            None => format!("\"{}\"", hex::encode(Sha256::digest(&body))),
        };
        Rendered {
            body: body.into(),
            etag,
            gzip: OnceLock::new(),
        }
    }

    /// The body gzip-compressed (`None` for bodies under [`GZIP_MIN_BYTES`]). Compressed once,
    /// by the first caller, who may wait tens of milliseconds per megabyte (callers on an
    /// async worker use a blocking section); later callers get the same bytes.
    pub fn gzip(&self) -> Option<&Bytes> {
        self.gzip
            .get_or_init(|| (self.body.len() >= GZIP_MIN_BYTES).then(|| gzip(&self.body)))
            .as_ref()
    }

    /// Whether [`Rendered::gzip`] answers without compressing.
    pub fn gzip_ready(&self) -> bool {
        self.body.len() < GZIP_MIN_BYTES || self.gzip.get().is_some()
    }
}

/// Gzip at level 1: a cost map is so repetitive that level 6 saves only a few percent more, at
/// several times the time.
fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default().into()
}

/// What every version of one network map shares: a link-load changes costs, never these.
#[derive(Debug)]
pub struct NetworkPart {
    /// PID name -> index in `topology.pids()` (filters look names up without a scan).
    pub pid_index: HashMap<String, usize>,
    /// The network map's version tag.
    pub vtag: VersionTag,
    /// Rendered full network map; its ETag is the vtag. (Filtered maps are made from the
    /// topology's PIDs: a message kept beside it would hold every prefix again as a string.)
    pub network_map_body: Rendered,
    /// Rendered PID property map (internal/external marking).
    pub propmap: Rendered,
}

impl NetworkPart {
    fn new(topology: &Topology) -> NetworkPart {
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
        let network_map_body =
            Rendered::new(&network_map_message(topology, &vtag), Some(&vtag.tag));
        let propmap = Rendered::new(&pid_properties(topology, &vtag), None);
        NetworkPart {
            pid_index,
            vtag,
            network_map_body,
            propmap,
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
    /// The network map and what derives from it alone (shared across link-load versions).
    pub network: Arc<NetworkPart>,
    /// Rendered numerical routingcost map; ETag = hash of its content.
    pub cost_num: Rendered,
    /// Rendered ordinal routingcost map, made on first request (see [`Served::cost_ord`]).
    cost_ord: OnceLock<Rendered>,
}

impl Served {
    /// Renders every message of a topology. Computes its costs once, for the snapshot and the
    /// cost maps alike.
    pub fn new(topology: Topology, asn: Option<Arc<AsnDb>>) -> Result<Served, SnapshotError> {
        let network = Arc::new(NetworkPart::new(&topology));
        let snapshot = topology.try_snapshot_with_asn(asn)?;
        Ok(Self::with_network(topology, snapshot, network))
    }

    /// The next version after a change of link prices only (`topology` has this version's
    /// PIDs and prefixes): the network map and PID properties are shared, only costs are
    /// rendered again.
    pub fn with_new_costs(
        &self,
        topology: Topology,
        asn: Option<Arc<AsnDb>>,
    ) -> Result<Served, SnapshotError> {
        if topology.vtag() != self.network.vtag.tag || topology.pids() != self.topology.pids() {
            return Self::new(topology, asn);
        }
        let snapshot = topology.snapshot_after(&self.snapshot)?;
        Ok(Self::with_network(topology, snapshot, self.network.clone()))
    }

    fn with_network(topology: Topology, snapshot: Snapshot, network: Arc<NetworkPart>) -> Served {
        let body = render_cost_map(&topology, &network.vtag, false);
        Served {
            cost_num: Rendered::from_json(body, None),
            cost_ord: OnceLock::new(),
            topology,
            snapshot,
            network,
        }
    }

    /// PID x PID costs, indexed like `topology.pids()`.
    pub fn costs(&self) -> &CostMatrix {
        self.topology.cost_matrix()
    }

    /// The rendered ordinal routingcost map. Rendered on the first call (about as long as the
    /// numerical one; callers on an async worker check [`Served::cost_ord_ready`] and use a
    /// blocking section): most clients never ask for it, and it would double the memory.
    pub fn cost_ord(&self) -> &Rendered {
        self.cost_ord.get_or_init(|| {
            Rendered::from_json(
                render_cost_map(&self.topology, &self.network.vtag, true),
                None,
            )
        })
    }

    /// Whether [`Served::cost_ord`] answers without rendering.
    pub fn cost_ord_ready(&self) -> bool {
        self.cost_ord.get().is_some()
    }
}

/// A full cost map's JSON, written straight from the cost matrix: byte for byte what
/// `serde_json` writes for the same [`CostMapMessage`] (PIDs in name order, costs as
/// [`Cost`] writes them), without the n x n map of strings that message would hold (2,000
/// PIDs: 4 million entries, several hundred megabytes). Ordinal mode ranks each source's
/// destinations (1 = cheapest, equal costs share a rank).
fn render_cost_map(topo: &Topology, vtag: &VersionTag, ordinal: bool) -> Vec<u8> {
    let pids = topo.pids();
    let costs = topo.cost_matrix();
    let mut order: Vec<usize> = (0..pids.len()).collect();
    order.sort_by(|&a, &b| pids[a].name.cmp(&pids[b].name));
    // Each PID's JSON key, quoted and escaped, with its colon.
    let keys: Vec<Vec<u8>> = order
        .iter()
        .map(|&i| {
            let mut k = serde_json::to_vec(&pids[i].name).unwrap_or_default();
            k.push(b':');
            k
        })
        .collect();
    let key_bytes: usize = keys.iter().map(Vec::len).sum();
    let mode = if ordinal {
        cost::ORDINAL
    } else {
        cost::NUMERICAL
    };
    let meta = CostMapMeta {
        dependent_vtags: vec![vtag.clone()],
        cost_type: CostType::routingcost(mode),
    };
    // Per row: every key and a cost of about 8 characters with its comma per destination.
    let mut out = Vec::with_capacity(pids.len() * (key_bytes + pids.len() * 9) + key_bytes + 256);
    out.extend_from_slice(b"{\"meta\":");
    serde_json::to_writer(&mut out, &meta).expect("the meta always serializes");
    out.extend_from_slice(b",\"cost-map\":{");
    for (i, &s) in order.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&keys[i]);
        out.push(b'{');
        let row = costs.row(s);
        let ranked = ordinal.then(|| ranks(row));
        let row = ranked.as_deref().unwrap_or(row);
        for (j, &t) in order.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&keys[j]);
            Cost(row[t]).write_json(&mut out);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    // The body is kept for the version's life: no unused capacity with it.
    out.shrink_to_fit();
    out
}

fn network_map_message(topo: &Topology, vtag: &VersionTag) -> NetworkMapMessage {
    let map = topo
        .pids()
        .iter()
        .map(|pid| (pid.name.clone(), addr_group(pid, true, true)))
        .collect();
    NetworkMapMessage {
        meta: NetworkMapMeta { vtag: vtag.clone() },
        network_map: map,
    }
}

/// A PID's prefixes as published, IPv4 and IPv6 as asked.
pub(crate) fn addr_group(pid: &Pid, v4: bool, v6: bool) -> AddrGroup {
    let mut group = AddrGroup::default();
    for p in &pid.prefixes {
        match p {
            ipnetwork::IpNetwork::V4(_) if v4 => group.ipv4.push(p.to_string()),
            ipnetwork::IpNetwork::V6(_) if v6 => group.ipv6.push(p.to_string()),
            _ => {}
        }
    }
    group
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
    use super::*;
    use crate::alto::{CostMapMessage, CostTable};

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

    fn cost_map(vtag: &VersionTag, mode: &str, table: CostTable) -> CostMapMessage {
        CostMapMessage {
            meta: CostMapMeta {
                dependent_vtags: vec![vtag.clone()],
                cost_type: CostType::routingcost(mode),
            },
            cost_map: table,
        }
    }

    /// The direct writer gives exactly what serializing the message gives, both modes, with
    /// fractional costs (dynamic prices) and names that sort differently from file order.
    #[test]
    fn the_cost_map_writer_matches_serde_byte_for_byte() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../topology-data/abilene.toml"
        ))
        .expect("abilene.toml");
        let mut topo = Topology::from_toml_str(&text).expect("valid");
        let loads = [crate::model::LinkLoad {
            link: Some("link-newy-chic".into()),
            from: None,
            to: None,
            utilisation: 0.97,
        }];
        topo.apply_link_loads(&loads).expect("applies");
        let served = Served::new(topo, None).expect("serves");
        for ordinal in [false, true] {
            let mode = if ordinal {
                cost::ORDINAL
            } else {
                cost::NUMERICAL
            };
            let table = cost_table(&served.topology, served.costs(), ordinal);
            let expected = serde_json::to_vec(&cost_map(&served.network.vtag, mode, table))
                .expect("serializes");
            let written = render_cost_map(&served.topology, &served.network.vtag, ordinal);
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&expected)
            );
        }
        assert_eq!(served.cost_ord().body, served.cost_ord().body);
    }

    #[test]
    fn gzip_round_trips_and_small_bodies_stay_plain() {
        use std::io::Read;
        let big = Rendered::from_json(vec![b'7'; GZIP_MIN_BYTES * 4], None);
        assert!(!big.gzip_ready());
        let gz = big.gzip().expect("compressed").clone();
        assert!(big.gzip_ready() && gz.len() < big.body.len() / 10);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .expect("valid gzip");
        assert_eq!(plain, big.body);
        let small = Rendered::from_json(b"{}".to_vec(), None);
        assert!(small.gzip_ready() && small.gzip().is_none());
    }

    #[test]
    fn ranks_are_dense_and_start_at_one() {
        assert_eq!(ranks(&[5.0, 1.0, 5.0, 3.0]), vec![3.0, 1.0, 3.0, 2.0]);
    }
}
