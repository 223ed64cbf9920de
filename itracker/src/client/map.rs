//! One ISP's validated map ([`IspMap`]) and the cost map parser behind it.
//!
//! Memory follows what the server sent, never the square of its PID count: costs are kept
//! sparse (`(from, to, cost)` triples, 12 bytes each, sorted), pairs the cost map leaves out
//! stay unknown, and the cost map body is parsed as a stream straight into those triples
//! (nothing else is kept per entry, not even the body). The only dense structure is the
//! [`Snapshot`] a map becomes, bounded by [`super::ClientLimits::max_pids`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer;

use super::{combine, ClientError};
use crate::alto::{property, CostMapMessage, CostMapMeta, NetworkMapMessage, PropMapMessage};
use crate::model::validate_pid_name;
use crate::snapshot::{Boundary, Snapshot};

/// One PID of an ISP's map.
#[derive(Clone, Debug, PartialEq)]
pub struct IspPid {
    /// PID name as published.
    pub name: String,
    /// Whether the ISP marks it as its own, or (a map without marking) it is not the PID
    /// holding `0.0.0.0/0`: covered by the ISP's map (see [`IspMap::from_messages`]).
    pub internal: bool,
    /// The network boundary the map states for it, if any: an AS number published as a PID
    /// property, else `Isp(0)` for a PID marked internal (the ISP's index is set when maps
    /// are combined). A map without either states none, whatever `internal` says.
    pub boundary: Option<Boundary>,
    /// Its prefixes.
    pub prefixes: Vec<IpNetwork>,
}

/// One ISP's network and cost maps, validated and consistent with each other.
#[derive(Clone, Debug, PartialEq)]
pub struct IspMap {
    /// ISP name (`priv:p4p-isp` from the PID properties, else the server's host).
    pub isp: String,
    /// Network map vtag.
    pub vtag: String,
    /// Cost map ETag (changes with costs even when the network map does not).
    pub cost_etag: String,
    /// PIDs (shared: a cost-only update reuses them).
    pub pids: Arc<[IspPid]>,
    /// The costs the cost map gives, by position in `pids`; see [`IspMap::cost`].
    costs: SparseCosts,
}

/// Known costs as `(from, to, cost)`, sorted by `(from, to)`, one per pair. Every cost is
/// finite and non-negative as an `f32` (what a [`Snapshot`] stores).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SparseCosts(Arc<Vec<(u32, u32, f32)>>);

impl SparseCosts {
    /// Sorts and removes duplicate pairs (the last one given wins, as in a JSON object read
    /// into a map).
    fn finish(mut entries: Vec<(u32, u32, f32)>) -> SparseCosts {
        entries.sort_by_key(|&(s, d, _)| (s, d));
        entries.dedup_by(|later, kept| {
            let same = (later.0, later.1) == (kept.0, kept.1);
            if same {
                kept.2 = later.2;
            }
            same
        });
        entries.shrink_to_fit();
        SparseCosts(Arc::new(entries))
    }
}

/// A cost map as the client keeps it: its `meta` and its costs, indexed against the network
/// map it was parsed with.
#[derive(Clone, Debug)]
pub(crate) struct ParsedCostMap {
    pub meta: CostMapMeta,
    pub costs: SparseCosts,
}

/// Whether a cost can be used: finite and non-negative as an `f64` and still finite as the
/// `f32` a snapshot stores (1e39 is a finite `f64` but `inf` as an `f32`).
fn usable_cost(c: f64) -> bool {
    c.is_finite() && c >= 0.0 && (c as f32).is_finite()
}

fn bad_cost(src: &str, dst: &str, c: f64) -> String {
    format!("cost {src} -> {dst} is {c:?}: costs must be finite, non-negative and below 3.4e38")
}

/// Position of each PID of a network map, in the order [`IspMap`] lists them.
pub(crate) fn pid_index<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, u32> {
    names
        .enumerate()
        .map(|(i, name)| (name, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect()
}

/// Parses a cost map body as a stream, keeping only the costs between PIDs of `index`
/// (others are ignored, RFC 7285 section 11.2.3.6) and refusing any unusable cost.
pub(crate) fn parse_cost_map<R: std::io::Read>(
    reader: R,
    index: &HashMap<&str, u32>,
) -> Result<ParsedCostMap, serde_json::Error> {
    let names = names_by_position(index);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let parsed = CostMapSeed {
        index,
        names: &names,
        max_entries: index.len().saturating_mul(index.len()),
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(parsed)
}

fn names_by_position<'a>(index: &HashMap<&'a str, u32>) -> Vec<&'a str> {
    let mut names = vec![""; index.len()];
    for (&name, &i) in index {
        if let Some(slot) = names.get_mut(i as usize) {
            *slot = name;
        }
    }
    names
}

#[derive(Clone, Copy)]
struct CostMapSeed<'a> {
    index: &'a HashMap<&'a str, u32>,
    names: &'a [&'a str],
    /// One cost per PID pair: more can only be repeated keys, refused so that what is kept
    /// while parsing stays within 12 bytes per pair whatever the body's size.
    max_entries: usize,
}

impl<'de> DeserializeSeed<'de> for CostMapSeed<'_> {
    type Value = ParsedCostMap;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CostMapSeed<'_> {
    type Value = ParsedCostMap;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an ALTO cost map object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut meta = None;
        let mut entries = None;
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                TopKey::Meta => meta = Some(map.next_value::<CostMapMeta>()?),
                TopKey::CostMap => entries = Some(map.next_value_seed(TableSeed(self))?),
                TopKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let meta = meta.ok_or_else(|| de::Error::missing_field("meta"))?;
        let entries = entries.ok_or_else(|| de::Error::missing_field("cost-map"))?;
        Ok(ParsedCostMap {
            meta,
            costs: SparseCosts::finish(entries),
        })
    }
}

enum TopKey {
    Meta,
    CostMap,
    Other,
}

impl<'de> de::Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TopKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TopKey, E> {
                Ok(match v {
                    "meta" => TopKey::Meta,
                    "cost-map" => TopKey::CostMap,
                    _ => TopKey::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A PID name as a position in the network map, or `None` when the map lacks it.
struct PidKey<'a>(&'a HashMap<&'a str, u32>);

impl<'de> DeserializeSeed<'de> for PidKey<'_> {
    type Value = Option<u32>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for PidKey<'_> {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PID name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u32>, E> {
        Ok(self.0.get(v).copied())
    }
}

struct TableSeed<'a>(CostMapSeed<'a>);

impl<'de> DeserializeSeed<'de> for TableSeed<'_> {
    type Value = Vec<(u32, u32, f32)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TableSeed<'_> {
    type Value = Vec<(u32, u32, f32)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("source PID -> destination PID -> cost")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(src) = map.next_key_seed(PidKey(self.0.index))? {
            map.next_value_seed(RowSeed {
                outer: self.0,
                src,
                out: &mut out,
            })?;
        }
        Ok(out)
    }
}

struct RowSeed<'a, 'o> {
    outer: CostMapSeed<'a>,
    src: Option<u32>,
    out: &'o mut Vec<(u32, u32, f32)>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("destination PID -> cost")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let name = |i: u32| self.outer.names.get(i as usize).copied().unwrap_or("?");
        while let Some(dst) = map.next_key_seed(PidKey(self.outer.index))? {
            let c: f64 = map.next_value()?;
            let (Some(s), Some(d)) = (self.src, dst) else {
                continue;
            };
            if !usable_cost(c) {
                return Err(de::Error::custom(bad_cost(name(s), name(d), c)));
            }
            if self.out.len() >= self.outer.max_entries {
                return Err(de::Error::custom(format!(
                    "more costs than the {} PID pairs (repeated keys)",
                    self.outer.max_entries
                )));
            }
            self.out.push((s, d, c as f32));
        }
        Ok(())
    }
}

impl IspMap {
    /// Builds and validates a map from ALTO messages. Internal marking comes from the PID
    /// property map (`priv:p4p-internal`); a map without any marking counts every PID but the
    /// one holding `0.0.0.0/0` or `::/0` as internal (covered by the map, which is what the
    /// ASN fallback needs), but states no network boundary ([`IspPid::boundary`]): selection
    /// then ranks the other PIDs by cost alone. An AS number published for a PID (a property
    /// named `asn`, any case, optionally prefixed, such as `priv:asn`; value `AS64500` or
    /// `64500`) makes the AS the boundary. Costs must be finite and non-negative
    /// as `f32`s; pairs the cost map leaves out stay unknown. An empty network map (no PID,
    /// or no prefix in any PID) is refused. The PID cap of a client
    /// ([`super::ClientLimits::max_pids`]) is not applied here; the snapshot's is.
    pub fn from_messages(
        network_map: &NetworkMapMessage,
        cost_map: &CostMapMessage,
        cost_etag: String,
        properties: Option<&PropMapMessage>,
        fallback_isp: &str,
    ) -> Result<IspMap, ClientError> {
        let index = pid_index(network_map.network_map.keys().map(String::as_str));
        let mut entries = Vec::new();
        for (src, row) in &cost_map.cost_map {
            let Some(&s) = index.get(src.as_str()) else {
                continue;
            };
            for (dst, c) in row {
                let Some(&d) = index.get(dst.as_str()) else {
                    continue;
                };
                if !usable_cost(c.0) {
                    return Err(ClientError::InvalidMap(bad_cost(src, dst, c.0)));
                }
                entries.push((s, d, c.0 as f32));
            }
        }
        Self::build(
            network_map,
            SparseCosts::finish(entries),
            cost_etag,
            properties,
            fallback_isp,
        )
    }

    /// Validates the network map and joins it with costs indexed by [`pid_index`].
    pub(crate) fn build(
        network_map: &NetworkMapMessage,
        costs: SparseCosts,
        cost_etag: String,
        properties: Option<&PropMapMessage>,
        fallback_isp: &str,
    ) -> Result<IspMap, ClientError> {
        let invalid = |m: String| ClientError::InvalidMap(m);
        check_not_empty(network_map)?;
        let by_pid: HashMap<&str, &std::collections::BTreeMap<String, String>> = properties
            .map(|p| {
                p.property_map
                    .iter()
                    .filter_map(|(entity, props)| {
                        Some((entity.split_once(".pid:").map(|(_, n)| n)?, props))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let marks: HashMap<&str, bool> = by_pid
            .iter()
            .filter_map(|(&name, props)| Some((name, props.get(property::INTERNAL)? == "true")))
            .collect();
        let asns: HashMap<&str, u32> = by_pid
            .iter()
            .filter_map(|(&name, props)| Some((name, published_asn(props)?)))
            .collect();
        let isp = properties
            .and_then(|p| {
                p.property_map
                    .values()
                    .find_map(|props| props.get(property::ISP))
            })
            .cloned()
            .unwrap_or_else(|| fallback_isp.to_string());
        let n = network_map.network_map.len();
        if n >= usize::from(u16::MAX) {
            return Err(invalid(format!("{n} PIDs: at most 65534 are supported")));
        }
        let mut pids = Vec::with_capacity(n);
        for (name, group) in &network_map.network_map {
            validate_pid_name(name).map_err(|e| invalid(format!("PID name {name:?} {e}")))?;
            let mut prefixes = Vec::with_capacity(group.ipv4.len() + group.ipv6.len());
            for text in group.ipv4.iter().chain(&group.ipv6) {
                let p: IpNetwork = text
                    .parse()
                    .map_err(|e| invalid(format!("PID {name}: prefix {text:?}: {e}")))?;
                let p =
                    IpNetwork::new(p.network(), p.prefix()).map_err(|e| invalid(e.to_string()))?;
                prefixes.push(p);
            }
            let holds_default = prefixes.iter().any(|p| p.prefix() == 0);
            let internal = if marks.is_empty() {
                !holds_default
            } else {
                marks.get(name.as_str()).copied().unwrap_or(false)
            };
            let boundary = if !asns.is_empty() {
                asns.get(name.as_str()).map(|&asn| Boundary::As(asn))
            } else {
                (!marks.is_empty() && internal).then_some(Boundary::Isp(0))
            };
            pids.push(IspPid {
                name: name.clone(),
                internal,
                boundary,
                prefixes,
            });
        }
        check_unique_prefixes(&pids)?;
        if let Some(&(s, d, _)) = costs
            .0
            .iter()
            .find(|&&(s, d, _)| s as usize >= n || d as usize >= n)
        {
            return Err(invalid(format!(
                "cost map indexed for another network map (pair {s} -> {d}, {n} PIDs)"
            )));
        }
        Ok(IspMap {
            isp,
            vtag: network_map.meta.vtag.tag.clone(),
            cost_etag,
            pids: pids.into(),
            costs,
        })
    }

    /// This map with other costs (indexed for the same network map), sharing its PIDs.
    pub(crate) fn with_costs(
        &self,
        costs: SparseCosts,
        cost_etag: String,
    ) -> Result<IspMap, ClientError> {
        let n = self.pids.len();
        if costs
            .0
            .iter()
            .any(|&(s, d, _)| s as usize >= n || d as usize >= n)
        {
            return Err(ClientError::InvalidMap(
                "cost map indexed for another network map".into(),
            ));
        }
        Ok(IspMap {
            cost_etag,
            costs,
            ..self.clone()
        })
    }

    /// The cost from `pids[from]` to `pids[to]`, or `None` when the cost map gives none.
    pub fn cost(&self, from: usize, to: usize) -> Option<f64> {
        let (Ok(f), Ok(t)) = (u32::try_from(from), u32::try_from(to)) else {
            return None;
        };
        self.costs
            .0
            .binary_search_by_key(&(f, t), |&(s, d, _)| (s, d))
            .ok()
            .and_then(|i| self.costs.0.get(i))
            .map(|&(_, _, c)| f64::from(c))
    }

    /// Every known cost as `(from, to, cost)`, by position in `pids`, sorted.
    pub fn costs(&self) -> impl Iterator<Item = (usize, usize, f64)> + '_ {
        self.costs
            .0
            .iter()
            .map(|&(s, d, c)| (s as usize, d as usize, f64::from(c)))
    }

    /// How many pairs have a known cost (the memory the costs take is 12 bytes each).
    pub fn known_costs(&self) -> usize {
        self.costs.0.len()
    }

    /// This map alone as a snapshot (unknown costs = `interdomain_cost`).
    pub fn snapshot(&self, interdomain_cost: f64) -> Snapshot {
        combine(std::slice::from_ref(self), interdomain_cost)
    }
}

/// The AS number a PID's properties publish: a property whose name is `asn` (any case) after
/// an optional `prefix:`, valued `AS64500` or `64500`.
fn published_asn(props: &std::collections::BTreeMap<String, String>) -> Option<u32> {
    props.iter().find_map(|(key, value)| {
        let name = key.rsplit(':').next().unwrap_or(key);
        if !name.eq_ignore_ascii_case("asn") {
            return None;
        }
        let digits = value.trim();
        let digits = match digits.get(..2) {
            Some(p) if p.eq_ignore_ascii_case("as") => &digits[2..],
            _ => digits,
        };
        digits.parse().ok()
    })
}

/// Refuses a prefix in two PIDs (or twice in one), naming both. Sorts `(prefix, PID)` pairs
/// (24 bytes each) rather than hashing them: half the memory of a hash set on a map of a
/// million prefixes.
fn check_unique_prefixes(pids: &[IspPid]) -> Result<(), ClientError> {
    let mut all: Vec<(IpNetwork, u32)> = pids
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            p.prefixes.iter().map(move |&prefix| (prefix, i))
        })
        .collect();
    all.sort_unstable();
    let name = |i: u32| pids.get(i as usize).map_or("?", |p| p.name.as_str());
    match all.windows(2).find(|w| w[0].0 == w[1].0) {
        Some(w) => Err(ClientError::InvalidMap(format!(
            "prefix {} is in PID {} and in PID {}",
            w[0].0,
            name(w[0].1),
            name(w[1].1)
        ))),
        None => Ok(()),
    }
}

/// Refuses a network map with no PID or no prefix at all: it would map every address to
/// nothing and must never replace a good one.
pub(crate) fn check_not_empty(network_map: &NetworkMapMessage) -> Result<(), ClientError> {
    let prefixes = network_map
        .network_map
        .values()
        .any(|g| !g.ipv4.is_empty() || !g.ipv6.is_empty());
    if prefixes {
        Ok(())
    } else {
        Err(ClientError::EmptyNetworkMap {
            pids: network_map.network_map.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::published_asn;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_asn_property_is_read_in_its_usual_spellings() {
        assert_eq!(published_asn(&props(&[("asn", "AS64500")])), Some(64500));
        assert_eq!(published_asn(&props(&[("ASN", "64501")])), Some(64501));
        assert_eq!(published_asn(&props(&[("priv:asn", "as7")])), Some(7));
        assert_eq!(published_asn(&props(&[("priv:p4p-isp", "AS1")])), None);
        assert_eq!(published_asn(&props(&[("asn", "not a number")])), None);
    }
}
