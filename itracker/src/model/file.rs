//! The topology file format (TOML), documented field by field in `topology-data/README.md`.
//!
//! Parsing happens in two steps: serde checks the shape (unknown fields are errors, so typos do
//! not silently fall back to defaults), then [`validate`] checks the meaning and names the PID,
//! prefix, link or field at fault. The result, [`Validated`], is what
//! [`super::Topology::from_toml_str`] completes into a topology.

use std::collections::{HashMap, HashSet};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::cost::usable_cost;
use super::error::TopologyError;
use super::names::validate_pid_name;
use super::parts::{CostDefaults, Link, LinkEnd, Pid, PidKind};
use super::pricing::PricingConfig;

/// A topology file as written by an operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    /// The ISP's name (RFC 7285 name rules).
    pub isp: String,
    /// Default costs and interdomain policy.
    #[serde(default)]
    pub defaults: CostDefaults,
    /// Dynamic link pricing.
    #[serde(default)]
    pub pricing: PricingConfig,
    /// PIDs, internal and external.
    #[serde(default, rename = "pid")]
    pub pids: Vec<PidEntry>,
    /// Directed links.
    #[serde(default, rename = "link", skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkEntry>,
}

/// One `[[pid]]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PidEntry {
    /// PID name.
    pub name: String,
    /// `internal` or `external`.
    pub kind: PidKind,
    /// IPv4 and IPv6 prefixes, e.g. `"192.0.2.0/24"`, `"2001:db8::/32"`.
    #[serde(default)]
    pub prefixes: Vec<String>,
}

/// One `[[link]]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkEntry {
    /// Optional unique name (default `<from>-><to>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// PID the link leaves (must be internal).
    pub from: String,
    /// PID the link enters (internal: an intradomain link; external: an egress link).
    pub to: String,
    /// Capacity (> 0).
    pub capacity: f64,
    /// IGP routing weight (> 0), required on intradomain links, absent on egress links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Static cost (p-distance, >= 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Measured utilisation (traffic / capacity, >= 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilisation: Option<f64>,
}

/// A topology file whose every field has been checked: the parts of a topology, before the map
/// is completed with a default PID.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The ISP's name.
    pub isp: String,
    /// PIDs in file order.
    pub pids: Vec<Pid>,
    /// Links in file order, their PIDs as indices into `pids`.
    pub links: Vec<Link>,
    /// Default costs.
    pub defaults: CostDefaults,
    /// Pricing parameters.
    pub pricing: PricingConfig,
}

/// Parses and validates a topology file's text.
pub fn parse(text: &str) -> Result<Validated, TopologyError> {
    let file: TopologyFile = toml::from_str(text).map_err(TopologyError::Syntax)?;
    validate(file)
}

/// Validates a deserialized topology file.
pub fn validate(file: TopologyFile) -> Result<Validated, TopologyError> {
    validate_pid_name(&file.isp).map_err(|reason| TopologyError::BadIspName {
        name: file.isp.clone(),
        reason,
    })?;
    validate_defaults(&file.defaults)?;
    validate_pricing(&file.pricing)?;
    let pids = validate_pids(&file.pids)?;
    let links = validate_links(&file.links, &pids, &file.defaults, &file.pricing)?;
    Ok(Validated {
        isp: file.isp,
        pids,
        links,
        defaults: file.defaults,
        pricing: file.pricing,
    })
}

/// What a cost in a file must be: what a snapshot can store as `f32`.
const COST_RANGE: &str = "must be a finite number >= 0 and at most 3.4e38";

fn validate_defaults(d: &CostDefaults) -> Result<(), TopologyError> {
    for (field, value) in [
        ("defaults.intra_pid", d.intra_pid),
        ("defaults.inter_pid", d.inter_pid),
        ("defaults.interdomain", d.interdomain),
        ("defaults.link", d.link),
        ("defaults.same_asn", d.same_asn),
    ] {
        if !usable_cost(value) {
            return Err(TopologyError::BadSetting {
                field,
                value,
                reason: COST_RANGE,
            });
        }
    }
    Ok(())
}

fn validate_pricing(p: &PricingConfig) -> Result<(), TopologyError> {
    let bad = |field, value, reason| {
        Err(TopologyError::BadSetting {
            field,
            value,
            reason,
        })
    };
    if !(p.mlu_target > 0.0 && p.mlu_target <= 1.0) {
        return bad("pricing.mlu_target", p.mlu_target, "must be in (0, 1]");
    }
    if !(p.step.is_finite() && p.step >= 0.0) {
        return bad("pricing.step", p.step, "must be a finite number >= 0");
    }
    if !(usable_cost(p.max_price) && p.max_price > 0.0) {
        return bad(
            "pricing.max_price",
            p.max_price,
            "must be a finite number > 0 and at most 3.4e38",
        );
    }
    Ok(())
}

fn validate_pids(entries: &[PidEntry]) -> Result<Vec<Pid>, TopologyError> {
    let mut pids: Vec<Pid> = Vec::with_capacity(entries.len());
    // Hash sets, not scans of what came before: an ISP has thousands of PIDs and hundreds of
    // thousands of prefixes.
    let mut names: HashSet<&str> = HashSet::with_capacity(entries.len());
    let mut owner: HashMap<IpNetwork, usize> = HashMap::new();
    for entry in entries {
        validate_pid_name(&entry.name).map_err(|reason| TopologyError::BadPidName {
            name: entry.name.clone(),
            reason,
        })?;
        if !names.insert(&entry.name) {
            return Err(TopologyError::DuplicatePid(entry.name.clone()));
        }
        let mut prefixes = Vec::with_capacity(entry.prefixes.len());
        for text in &entry.prefixes {
            let prefix = parse_prefix(&entry.name, text)?;
            if let Some(&first) = owner.get(&prefix) {
                let first: &str = pids.get(first).map_or(&entry.name, |p| &p.name);
                return Err(TopologyError::DuplicatePrefix {
                    prefix,
                    first: first.to_string(),
                    second: entry.name.clone(),
                });
            }
            owner.insert(prefix, pids.len());
            prefixes.push(prefix);
        }
        pids.push(Pid {
            name: entry.name.clone(),
            kind: entry.kind,
            prefixes,
        });
    }
    Ok(pids)
}

/// Parses `a.b.c.d/len` or `x::/len`, refusing host bits (a typo more often than intent).
fn parse_prefix(pid: &str, text: &str) -> Result<IpNetwork, TopologyError> {
    let bad = |reason: String| TopologyError::BadPrefix {
        pid: pid.to_string(),
        prefix: text.to_string(),
        reason,
    };
    if !text.contains('/') {
        return Err(bad(
            "has no /length (write a.b.c.d/32 for one address)".into()
        ));
    }
    let net: IpNetwork = text
        .parse()
        .map_err(|e| bad(format!("does not parse: {e}")))?;
    if net.ip() != net.network() {
        return Err(bad(format!(
            "has host bits set (did you mean {}/{}?)",
            net.network(),
            net.prefix()
        )));
    }
    Ok(crate::snapshot::normalise_prefix(net))
}

fn validate_links(
    entries: &[LinkEntry],
    pids: &[Pid],
    defaults: &CostDefaults,
    pricing: &PricingConfig,
) -> Result<Vec<Link>, TopologyError> {
    let index: HashMap<&str, usize> = pids
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut links: Vec<Link> = Vec::with_capacity(entries.len());
    let mut names: HashSet<String> = HashSet::with_capacity(entries.len());
    let mut ends: HashSet<(usize, usize)> = HashSet::with_capacity(entries.len());
    for entry in entries {
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| format!("{}->{}", entry.from, entry.to));
        let link = validate_link(entry, name, pids, &index, defaults, pricing)?;
        if names.contains(&link.name) || !ends.insert((link.from, link.to)) {
            return Err(TopologyError::DuplicateLink(link.name));
        }
        names.insert(link.name.clone());
        links.push(link);
    }
    Ok(links)
}

fn validate_link(
    entry: &LinkEntry,
    name: String,
    pids: &[Pid],
    index: &HashMap<&str, usize>,
    defaults: &CostDefaults,
    pricing: &PricingConfig,
) -> Result<Link, TopologyError> {
    let find = |pid: &str, end| {
        index
            .get(pid)
            .copied()
            .ok_or_else(|| TopologyError::UnknownPid {
                link: name.clone(),
                end,
                pid: pid.to_string(),
            })
    };
    let from = find(&entry.from, LinkEnd::From)?;
    let to = find(&entry.to, LinkEnd::To)?;
    let bad = |field, value: String, reason| TopologyError::BadLinkField {
        link: name.clone(),
        field,
        value,
        reason,
    };
    if from == to {
        return Err(bad(
            "to",
            entry.to.clone(),
            "a link cannot loop back to its own PID",
        ));
    }
    if pids[from].kind == PidKind::External {
        return Err(bad(
            "from",
            entry.from.clone(),
            "links leave internal PIDs (costs from external PIDs are the interdomain default)",
        ));
    }
    let positive = |field, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(bad(field, v.to_string(), "must be a finite number > 0"))
        }
    };
    let non_negative = |field, v: Option<f64>| match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => {
            Err(bad(field, x.to_string(), "must be a finite number >= 0"))
        }
        other => Ok(other),
    };
    let capacity = positive("capacity", entry.capacity)?;
    let egress = pids[to].kind == PidKind::External;
    let weight = match (egress, entry.weight) {
        (true, None) => None,
        (true, Some(w)) => {
            return Err(bad(
                "weight",
                w.to_string(),
                "egress links (to external PIDs) carry no IGP weight",
            ))
        }
        (false, None) => {
            return Err(bad(
                "weight",
                "(missing)".into(),
                "intradomain links need an IGP routing weight",
            ))
        }
        (false, Some(w)) => Some(positive("weight", w)?),
    };
    let static_cost = match entry.cost {
        Some(c) if !usable_cost(c) => return Err(bad("cost", c.to_string(), COST_RANGE)),
        other => other,
    };
    let utilisation = non_negative("utilisation", entry.utilisation)?;
    let start = if egress {
        defaults.interdomain
    } else {
        defaults.link
    };
    let price = utilisation.map(|u| pricing.next_price(start, u));
    Ok(Link {
        name,
        from,
        to,
        capacity,
        weight,
        static_cost,
        utilisation,
        price,
    })
}
