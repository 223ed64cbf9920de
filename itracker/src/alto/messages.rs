//! Response messages (RFC 7285 sections 9 and 11), serializable and deserializable.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A resource's version tag (section 10.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionTag {
    /// The resource the tag belongs to.
    #[serde(rename = "resource-id")]
    pub resource_id: String,
    /// Opaque tag: here the SHA-256 of the network map's content, hex encoded.
    pub tag: String,
}

/// A cost type (section 10.7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostType {
    /// `numerical` or `ordinal`.
    #[serde(rename = "cost-mode")]
    pub cost_mode: String,
    /// Here always `routingcost`.
    #[serde(rename = "cost-metric")]
    pub cost_metric: String,
    /// Optional human-readable text (IRD only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl CostType {
    /// `routingcost` in the given mode.
    pub fn routingcost(mode: &str) -> CostType {
        CostType {
            cost_mode: mode.to_string(),
            cost_metric: super::cost::ROUTINGCOST.to_string(),
            description: None,
        }
    }
}

/// A cost value. Serialized as an integer when it is one (`9`, not `9.0`), else as a number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost(pub f64);

impl Cost {
    /// The value as an integer, when it is one that JSON writes exactly.
    fn integer(self) -> Option<i64> {
        (self.0.fract() == 0.0 && self.0.abs() < 9.0e15).then_some(self.0 as i64)
    }

    /// Appends the value as JSON, byte for byte what its `Serialize` gives through
    /// `serde_json` (`itoa` for integers, `ryu` for the rest; `null` if not finite), without a
    /// serializer per value: a full cost map writes millions of them.
    pub fn write_json(self, out: &mut Vec<u8>) {
        match self.integer() {
            Some(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
            None if self.0.is_finite() => {
                out.extend_from_slice(ryu::Buffer::new().format_finite(self.0).as_bytes())
            }
            None => out.extend_from_slice(b"null"),
        }
    }
}

impl Serialize for Cost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.integer() {
            Some(i) => s.serialize_i64(i),
            None => s.serialize_f64(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Cost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        f64::deserialize(d).map(Cost)
    }
}

/// The prefixes of one PID (EndpointAddrGroup, section 10.4.5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrGroup {
    /// IPv4 prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv4: Vec<String>,
    /// IPv6 prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<String>,
}

/// `meta` of a network map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMapMeta {
    /// The map's version.
    pub vtag: VersionTag,
}

/// A network map (section 11.2.1), full or filtered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkMapMessage {
    /// Version.
    pub meta: NetworkMapMeta,
    /// PID name -> prefixes.
    #[serde(rename = "network-map")]
    pub network_map: BTreeMap<String, AddrGroup>,
}

/// `meta` of a cost map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostMapMeta {
    /// The network map version the costs refer to (exactly one).
    #[serde(rename = "dependent-vtags")]
    pub dependent_vtags: Vec<VersionTag>,
    /// Metric and mode.
    #[serde(rename = "cost-type")]
    pub cost_type: CostType,
}

/// Source PID -> destination PID -> cost.
pub type CostTable = BTreeMap<String, BTreeMap<String, Cost>>;

/// A cost map (section 11.2.3), full or filtered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostMapMessage {
    /// Dependent vtag and cost type.
    pub meta: CostMapMeta,
    /// Costs.
    #[serde(rename = "cost-map")]
    pub cost_map: CostTable,
}

/// One IRD entry (section 9.2.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceEntry {
    /// Where the resource lives (absolute or relative to the IRD's URI).
    pub uri: String,
    /// Response media type.
    #[serde(rename = "media-type")]
    pub media_type: String,
    /// Request media type of POST resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepts: Option<String>,
    /// Resource capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<serde_json::Value>,
    /// Resources this one depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uses: Vec<String>,
}

/// `meta` of an IRD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectoryMeta {
    /// Named cost types referred to by capabilities.
    #[serde(rename = "cost-types", default)]
    pub cost_types: BTreeMap<String, CostType>,
    /// The default network map's resource id.
    #[serde(
        rename = "default-alto-network-map",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_network_map: Option<String>,
}

/// An Information Resource Directory (section 9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectoryMessage {
    /// Cost types and the default network map.
    pub meta: DirectoryMeta,
    /// Resource id -> entry.
    pub resources: BTreeMap<String, ResourceEntry>,
}

/// `meta` with only dependent vtags (endpoint properties, property maps).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DependentMeta {
    /// The network map version the answer refers to.
    #[serde(
        rename = "dependent-vtags",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dependent_vtags: Vec<VersionTag>,
}

/// Name -> property -> value.
pub type PropertyTable = BTreeMap<String, BTreeMap<String, String>>;

/// Endpoint properties (section 11.4.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointPropMessage {
    /// Dependent vtags.
    pub meta: DependentMeta,
    /// Typed endpoint address -> property -> value.
    #[serde(rename = "endpoint-properties")]
    pub endpoint_properties: PropertyTable,
}

/// `meta` of an endpoint cost map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointCostMeta {
    /// Metric and mode.
    #[serde(rename = "cost-type")]
    pub cost_type: CostType,
}

/// Endpoint costs (section 11.5.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointCostMessage {
    /// Cost type.
    pub meta: EndpointCostMeta,
    /// Source address -> destination address -> cost.
    #[serde(rename = "endpoint-cost-map")]
    pub endpoint_cost_map: CostTable,
}

/// PID properties, in the shape of an RFC 9240 property map: entity ids are
/// `default-network-map.pid:<name>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropMapMessage {
    /// Dependent vtags (the network map).
    pub meta: DependentMeta,
    /// Entity id -> property -> value.
    #[serde(rename = "property-map", deserialize_with = "scalar_properties")]
    pub property_map: PropertyTable,
}

/// Reads a property map whose values may be any JSON value: RFC 9240 leaves a property's
/// value type to the property's definition, so a server may publish an AS number as `64500`
/// as well as `"64500"`. Numbers and booleans are kept as their JSON text; values that are not
/// scalars (objects, arrays, null) are left out, so that one property we do not understand
/// never costs the whole map.
fn scalar_properties<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PropertyTable, D::Error> {
    let raw: BTreeMap<String, BTreeMap<String, serde_json::Value>> =
        serde::Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(entity, props)| {
            let props = props
                .into_iter()
                .filter_map(|(name, value)| {
                    let text = match value {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((name, text))
                })
                .collect();
            (entity, props)
        })
        .collect())
}

/// RFC 7285 error codes (section 8.5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is not valid JSON.
    #[serde(rename = "E_SYNTAX")]
    Syntax,
    /// A required field is missing.
    #[serde(rename = "E_MISSING_FIELD")]
    MissingField,
    /// A field has the wrong JSON type.
    #[serde(rename = "E_INVALID_FIELD_TYPE")]
    InvalidFieldType,
    /// A field has a value the server does not accept.
    #[serde(rename = "E_INVALID_FIELD_VALUE")]
    InvalidFieldValue,
    /// Not one of RFC 7285's field errors: this server's errors that HTTP status codes
    /// describe (401, 405, 406, 413, 415, 422, 500), with the reason in `message`. Reading,
    /// any code this crate does not know (another server's extension) is this one.
    #[serde(rename = "E_OTHER", other)]
    Other,
}

/// `meta` of an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorMeta {
    /// Error code.
    pub code: ErrorCode,
    /// The field at fault (a `/`-separated path, e.g. `cost-type/cost-mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The value at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An error response (`application/alto-error+json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// The error.
    pub meta: ErrorMeta,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_values_may_be_numbers_or_booleans_and_non_scalars_are_left_out() {
        let msg: PropMapMessage = serde_json::from_str(
            r#"{"meta": {}, "property-map": {
                "net.pid:a": {"asn": 64500, "internal": true, "name": "a",
                              "geo": {"lat": 1}, "tags": [1], "none": null},
                "net.pid:b": {"asn": "64501"}}}"#,
        )
        .expect("a property map with values of any JSON type parses");
        let a = &msg.property_map["net.pid:a"];
        assert_eq!(a["asn"], "64500");
        assert_eq!(a["internal"], "true");
        assert_eq!(a["name"], "a");
        assert_eq!(a.len(), 3, "objects, arrays and null are left out: {a:?}");
        assert_eq!(msg.property_map["net.pid:b"]["asn"], "64501");
    }
}
