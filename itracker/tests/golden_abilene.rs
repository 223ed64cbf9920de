//! The P4P reference portal's p-distances for Abilene, reproduced exactly from
//! `topology-data/abilene.toml` (forward from newy and reverse to it).

use std::collections::HashMap;

use p4p_itracker::{PidId, Topology};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/yale-p4p");
const TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../topology-data/abilene.toml");

/// "N.i" / "N.e" PID numbers of abilene.conf -> PID names.
fn pid_numbers() -> HashMap<String, String> {
    let conf = std::fs::read_to_string(format!("{DATA}/abilene.conf")).expect("abilene.conf");
    conf.lines()
        .filter_map(|line| {
            let t: Vec<&str> = line.split_whitespace().collect();
            match t.as_slice() {
                ["pid", kind @ ("internal" | "external"), num, name, ..] => {
                    Some((format!("{num}.{}", &kind[..1]), name.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

fn golden() -> Vec<(String, f64, f64)> {
    let tsv = std::fs::read_to_string(format!("{DATA}/pdistance-from-newy.tsv")).expect("tsv");
    let names = pid_numbers();
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let key = f[0].trim_end_matches(".internet2.edu");
            let name = names
                .get(key)
                .unwrap_or_else(|| panic!("no PID {key}"))
                .clone();
            (
                name,
                f[1].parse().expect("forward"),
                f[2].parse().expect("reverse"),
            )
        })
        .collect()
}

#[test]
fn every_golden_p_distance_is_reproduced_forward_and_reverse() {
    let topo = Topology::from_file(TOPOLOGY).expect("abilene.toml is valid");
    let costs = topo.costs();
    let newy = topo.pid_index("newy-us-abilene").expect("newy");
    let rows = golden();
    assert_eq!(rows.len(), 13);
    for (name, forward, reverse) in rows {
        let dst = topo.pid_index(&name).expect("PID in topology");
        assert_eq!(costs.get(newy, dst), forward, "newy -> {name}");
        assert_eq!(costs.get(dst, newy), reverse, "{name} -> newy");
    }
}

#[test]
fn the_snapshot_carries_the_same_costs_and_marks_internal_pids() {
    let topo = Topology::from_file(TOPOLOGY).expect("abilene.toml is valid");
    let snap = topo.snapshot();
    assert_eq!(snap.version(), topo.vtag());
    let idx = |n: &str| snap.index_of(PidId::intern(n)).expect("pid");
    let newy = idx("newy-us-abilene");
    assert_eq!(snap.cost(newy, idx("peering-to-geant")), 29.0);
    assert_eq!(snap.cost(newy, idx("sttl-us-abilene")), 26.0);
    assert!(snap.same_isp(newy, idx("losa-us-abilene")));
    assert!(!snap.same_isp(newy, idx("provider")));
    assert_eq!(snap.locate("128.36.1.1".parse().expect("ip")), newy);
    assert_eq!(
        snap.locate("10.1.2.3".parse().expect("ip")),
        idx("peering-to-nox")
    );
    assert_eq!(
        snap.locate("10.9.2.3".parse().expect("ip")),
        idx("provider")
    );
    assert_eq!(snap.locate("8.8.8.8".parse().expect("ip")), idx("default"));
}
