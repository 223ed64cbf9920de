//! Several ISPs' maps in one snapshot.
//!
//! Rules:
//! - each ISP is authoritative for its internal PIDs' prefixes: an external PID's prefix equal
//!   to or inside another ISP's internal prefix is dropped (ISP A's "transit to B" PID must not
//!   capture B's customers), and of two identical external prefixes (every map's
//!   `0.0.0.0/0`) the first map's wins;
//! - two ISPs claiming the same internal prefix: the first map wins (logged);
//! - costs inside one ISP come from its cost map; between ISPs, `interdomain_cost` (unknown
//!   to the snapshot: far, never cheap, for selection);
//! - a PID's network boundary ([`crate::snapshot::Boundary`]) is what its map states: an AS,
//!   this ISP for a PID marked internal, or none;
//! - with one map PID names stay as published; with several each becomes `<isp>:<pid>` (ISP
//!   names made unique), so equal names in different ISPs never collide and a PID keeps the
//!   same name, hence the same stable id, as long as the set of ISPs is the same;
//! - the version is the maps' vtags joined with `+`.

use std::collections::{HashMap, HashSet};

use ipnetwork::IpNetwork;

use super::IspMap;
use crate::snapshot::{Boundary, PidSpec, Snapshot, SnapshotBuilder, SnapshotError};

/// Combines maps into one snapshot; on the (theoretical) failure to build, logs it and falls
/// back to the first map alone, then to a one-PID snapshot.
pub fn combine(maps: &[IspMap], interdomain_cost: f64) -> Snapshot {
    match try_combine(maps, interdomain_cost) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot combine ISP maps; using the first one alone");
            maps.first()
                .and_then(|m| try_combine(std::slice::from_ref(m), interdomain_cost).ok())
                .unwrap_or_else(Snapshot::single_pid)
        }
    }
}

/// Combines maps into one snapshot, or says why it cannot (too many PIDs in total).
pub fn try_combine(maps: &[IspMap], interdomain_cost: f64) -> Result<Snapshot, SnapshotError> {
    let version = maps
        .iter()
        .map(|m| m.vtag.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let mut b = SnapshotBuilder::new(version, interdomain_cost);
    let names = isp_names(maps);
    let internal: Vec<Vec<IpNetwork>> = maps
        .iter()
        .map(|m| {
            m.pids
                .iter()
                .filter(|p| p.internal)
                .flat_map(|p| p.prefixes.clone())
                .collect()
        })
        .collect();
    let mut taken: HashSet<IpNetwork> = HashSet::new();
    for (i, map) in maps.iter().enumerate() {
        let isp = b.add_isp(names[i].clone());
        let mut positions = Vec::with_capacity(map.pids.len());
        for pid in map.pids.iter() {
            let prefixes = pid
                .prefixes
                .iter()
                .copied()
                .filter(|p| {
                    let foreign = !pid.internal
                        && internal.iter().enumerate().any(|(j, own)| {
                            j != i && own.iter().any(|o| o.contains(p.network()) && o.prefix() <= p.prefix())
                        });
                    !foreign
                })
                .filter(|p| {
                    let fresh = taken.insert(*p);
                    if !fresh && pid.internal {
                        tracing::warn!(prefix = %p, pid = %pid.name, isp = %names[i], "prefix already claimed by another ISP");
                    }
                    fresh
                })
                .collect();
            let name = if maps.len() == 1 {
                pid.name.clone()
            } else {
                format!("{}:{}", names[i], pid.name)
            };
            let at = b.add_pid(PidSpec {
                name,
                isp,
                internal: pid.internal,
                prefixes,
            });
            b.set_boundary(
                at,
                match pid.boundary {
                    Some(Boundary::Isp(_)) => Some(Boundary::Isp(isp)),
                    other => other,
                },
            );
            positions.push(at);
        }
        for (s, d, c) in map.costs() {
            if let (Some(&from), Some(&to)) = (positions.get(s), positions.get(d)) {
                b.set_cost(from, to, c);
            }
        }
    }
    b.build()
}

fn isp_names(maps: &[IspMap]) -> Vec<String> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    maps.iter()
        .map(|m| {
            let k = count.entry(m.isp.as_str()).or_insert(0);
            *k += 1;
            if *k == 1 {
                m.isp.clone()
            } else {
                format!("{}-{k}", m.isp)
            }
        })
        .collect()
}
