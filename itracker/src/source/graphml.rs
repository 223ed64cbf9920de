//! Topology Zoo GraphML importer: a public map as a topology file skeleton.
//!
//! Each node becomes an internal PID (named from its label, made RFC 7285-safe) with no
//! prefixes yet; each edge becomes two directed links. Capacities come from `LinkSpeedRaw`
//! (bit/s, written in Gbit/s) or an `OC-n` link type, else 1. Routing weights, absent from the
//! Zoo, are the great-circle distance in km between the nodes' coordinates (at least 1), or 1
//! when a node has none: shortest paths then follow geography, as IGP weights usually do.
//! The operator fills in prefixes, external PIDs and egress links.

use std::collections::HashMap;
use std::fmt::Write as _;

/// Why a GraphML file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum GraphmlError {
    /// Not well-formed XML.
    #[error("invalid XML: {0}")]
    Xml(#[from] roxmltree::Error),
    /// No `<graph>` element.
    #[error("no <graph> element")]
    NoGraph,
    /// An edge names a node that does not exist.
    #[error("edge {source_id} -> {target}: unknown node")]
    UnknownNode { source_id: String, target: String },
    /// Two nodes share an id (or both have none), so edges could not tell them apart.
    #[error("node id {0:?} is used twice")]
    DuplicateNode(String),
}

struct Node {
    name: String,
    lat: Option<f64>,
    lon: Option<f64>,
}

/// Converts GraphML text into topology-file TOML (which [`crate::Topology::from_toml_str`]
/// accepts as is).
pub fn import(text: &str, isp: Option<&str>) -> Result<String, GraphmlError> {
    let doc = roxmltree::Document::parse(text)?;
    let keys: HashMap<&str, &str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("key"))
        .filter_map(|n| Some((n.attribute("id")?, n.attribute("attr.name")?)))
        .collect();
    let data = |node: roxmltree::Node, name: &str| -> Option<String> {
        node.children()
            .filter(|c| c.has_tag_name("data"))
            .find(|c| c.attribute("key").and_then(|k| keys.get(k)) == Some(&name))
            .and_then(|c| c.text())
            .map(|t| t.trim().to_string())
    };
    let graph = doc
        .descendants()
        .find(|n| n.has_tag_name("graph"))
        .ok_or(GraphmlError::NoGraph)?;
    let network = isp
        .map(str::to_string)
        .or_else(|| data(graph, "Network"))
        .unwrap_or_else(|| "isp".to_string());
    let mut nodes: HashMap<String, Node> = HashMap::new();
    let mut order = Vec::new();
    let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
    for n in graph.children().filter(|c| c.has_tag_name("node")) {
        let id = n.attribute("id").unwrap_or_default().to_string();
        if nodes.contains_key(&id) {
            return Err(GraphmlError::DuplicateNode(id));
        }
        let label = data(n, "label").unwrap_or_else(|| format!("node-{id}"));
        let name = unique_name(pid_name(&label), &mut used);
        let num = |k| data(n, k).and_then(|v| v.parse::<f64>().ok());
        nodes.insert(
            id.clone(),
            Node {
                name,
                lat: num("Latitude"),
                lon: num("Longitude"),
            },
        );
        order.push(id);
    }
    let mut out = String::new();
    // The network's name goes into a TOML comment, where control characters are not allowed
    // (a DEL in a GraphML attribute made the output unparsable: found by fuzzing).
    let shown: String = network
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let _ = writeln!(
        out,
        "# Skeleton imported from Topology Zoo GraphML ({shown})."
    );
    let _ = writeln!(
        out,
        "# Fill in each PID's prefixes, add external PIDs and egress links."
    );
    let _ = writeln!(
        out,
        "# Weights are great-circle km between PoPs; capacities in Gbit/s.\n"
    );
    let _ = writeln!(out, "isp = {:?}\n", pid_name(&network));
    for id in &order {
        let _ = writeln!(
            out,
            "[[pid]]\nname = {:?}\nkind = \"internal\"\nprefixes = []\n",
            nodes[id].name
        );
    }
    for e in graph.children().filter(|c| c.has_tag_name("edge")) {
        let (s, t) = (
            e.attribute("source").unwrap_or_default(),
            e.attribute("target").unwrap_or_default(),
        );
        let (Some(a), Some(b)) = (nodes.get(s), nodes.get(t)) else {
            return Err(GraphmlError::UnknownNode {
                source_id: s.into(),
                target: t.into(),
            });
        };
        if a.name == b.name {
            continue;
        }
        let capacity = capacity_gbps(data(e, "LinkSpeedRaw"), data(e, "LinkType"));
        let weight = distance_km(a, b).map_or(1.0, |d| d.round().max(1.0));
        for (x, y) in [(a, b), (b, a)] {
            let _ = writeln!(
                out,
                // `{:?}` writes large floats with an exponent (`1e300`), which TOML reads as a
                // float; `{}` writes every digit, an integer TOML cannot hold (found by fuzzing).
                "[[link]]\nfrom = {:?}\nto = {:?}\ncapacity = {capacity:?}\nweight = {weight:?}\n",
                x.name, y.name
            );
        }
    }
    Ok(out)
}

/// Keeps RFC 7285 PIDName characters, lower-cased; spaces and others become `-`.
/// `name`, or `name-2`, `name-3`, ... : the first that no earlier PID took (a label may itself
/// look like a suffixed one, e.g. `a`, `a`, `a-2`).
fn unique_name(name: String, used: &mut std::collections::HashSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 1;
    while !used.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{name}-{n}");
    }
    candidate
}

fn pid_name(label: &str) -> String {
    let mut s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-:@_.".contains(c) {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(60);
    if s.is_empty() {
        s.push_str("pid");
    }
    s
}

/// A link's capacity in Gbit/s: finite and positive (1 when the GraphML says nothing usable).
fn capacity_gbps(raw: Option<String>, link_type: Option<String>) -> f64 {
    let usable = |c: &f64| c.is_finite() && *c > 0.0;
    if let Some(gbps) = raw
        .and_then(|r| r.parse::<f64>().ok())
        .map(|bps| bps / 1e9)
        .filter(usable)
    {
        return gbps;
    }
    // SONET OC-n carries n x 51.84 Mbit/s.
    link_type
        .and_then(|t| {
            t.to_ascii_uppercase()
                .strip_prefix("OC-")
                .and_then(|n| n.parse::<f64>().ok())
        })
        .map(|n| (n * 51.84 / 1000.0 * 1000.0).round() / 1000.0)
        .filter(usable)
        .unwrap_or(1.0)
}

fn distance_km(a: &Node, b: &Node) -> Option<f64> {
    let (lat1, lon1, lat2, lon2) = (a.lat?, a.lon?, b.lat?, b.lon?);
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let (dp, dl) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    Some(2.0 * 6371.0 * h.sqrt().asin())
}

#[cfg(test)]
mod tests {
    /// Found by fuzzing: control characters in the network's name (DEL, newline) went into the
    /// header comment and made the TOML unparsable.
    /// Found by fuzzing: a huge LinkSpeedRaw was written as a 130-digit integer, which TOML
    /// cannot hold; odd speeds (inf, NaN, negative OC-n) fall back to 1 Gbit/s.
    #[test]
    fn huge_or_odd_link_speeds_keep_the_output_valid() {
        for speed in ["9.98784e140", "1e308", "inf", "NaN", "-5"] {
            let graph = format!(
                "<graphml><key id=\"s\" for=\"edge\" attr.name=\"LinkSpeedRaw\"/>\
                 <key id=\"t\" for=\"edge\" attr.name=\"LinkType\"/><graph>\
                 <node id=\"a\"/><node id=\"b\"/>\
                 <edge source=\"a\" target=\"b\"><data key=\"s\">{speed}</data>\
                 <data key=\"t\">OC-{speed}</data></edge></graph></graphml>"
            );
            let toml = super::import(&graph, Some("isp")).expect("imports");
            crate::Topology::from_toml_str(&toml)
                .map(|_| ())
                .or_else(|e| match e {
                    crate::model::TopologyError::Syntax(_) => Err(e),
                    _ => Ok(()),
                })
                .unwrap_or_else(|e| panic!("{speed}: {e}\n{toml}"));
        }
    }

    #[test]
    fn control_characters_in_the_network_name_keep_the_output_valid() {
        let graph = "<graphml><graph><data key=\"d\">x</data>\
            <node id=\"a\"><data key=\"label\">A</data></node>\
            <node id=\"b\"><data key=\"label\">B</data></node>\
            <edge source=\"a\" target=\"b\"/></graph></graphml>";
        for network in ["http://\u{7f}ww.example", "line\nbreak", "tab\there"] {
            let toml = super::import(graph, Some(network)).expect("imports");
            crate::Topology::from_toml_str(&toml)
                .unwrap_or_else(|e| panic!("{network:?}: {e}\n{toml}"));
        }
    }

    use super::*;

    #[test]
    fn abilene_imports_into_a_valid_skeleton() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/topology-zoo/Abilene.graphml"
        ))
        .expect("Abilene.graphml");
        let toml = import(&text, None).expect("imports");
        let topo = crate::Topology::from_toml_str(&toml).expect("skeleton is a valid topology");
        assert_eq!(topo.isp(), "abilene");
        assert_eq!(topo.pids().len(), 11 + 1, "11 PoPs and the default PID");
        assert_eq!(topo.links().len(), 28, "14 edges, both directions");
        let ny = topo.pid_index("new-york").expect("New York");
        let chi = topo.pid_index("chicago").expect("Chicago");
        let link = topo
            .links()
            .iter()
            .find(|l| l.from == ny && l.to == chi)
            .expect("NY-CHI");
        assert!(
            (link.weight.unwrap_or(0.0) - 1145.0).abs() < 10.0,
            "{:?}",
            link.weight
        );
        assert!((link.capacity - 9.953).abs() < 0.01);
    }
}
