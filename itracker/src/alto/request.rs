//! Request messages (RFC 7285 section 11), parsed field by field so that every error names
//! its field: `E_MISSING_FIELD`, `E_INVALID_FIELD_TYPE` or `E_INVALID_FIELD_VALUE`. Unknown
//! fields are ignored (section 8.3.7).

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::messages::{CostType, ErrorCode, ErrorMeta};

/// What is wrong with a request body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Not JSON (or not a JSON object).
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(String),
    /// A field has the wrong JSON type.
    #[error("field {field} has the wrong type: {value}")]
    Type { field: String, value: String },
    /// A field has an unacceptable value.
    #[error("field {field} has an invalid value: {value}")]
    Value { field: String, value: String },
}

impl FieldError {
    /// The error as RFC 7285 `meta`.
    pub fn to_meta(&self) -> ErrorMeta {
        let (code, field, value) = match self {
            FieldError::Syntax(_) => (ErrorCode::Syntax, None, None),
            FieldError::Missing(f) => (ErrorCode::MissingField, Some(f.clone()), None),
            FieldError::Type { field, value } => (
                ErrorCode::InvalidFieldType,
                Some(field.clone()),
                Some(value.clone()),
            ),
            FieldError::Value { field, value } => (
                ErrorCode::InvalidFieldValue,
                Some(field.clone()),
                Some(value.clone()),
            ),
        };
        ErrorMeta {
            code,
            field,
            value,
            message: Some(self.to_string()),
        }
    }

    /// An `E_INVALID_FIELD_VALUE` error.
    pub fn value(field: &str, value: impl Into<String>) -> FieldError {
        FieldError::Value {
            field: field.to_string(),
            value: value.into(),
        }
    }
}

fn type_error(field: &str, v: &Value) -> FieldError {
    FieldError::Type {
        field: field.to_string(),
        value: v.to_string(),
    }
}

/// Parses a body into a JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, FieldError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| FieldError::Syntax(e.to_string()))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(FieldError::Syntax(format!(
            "expected a JSON object, got {other}"
        ))),
    }
}

fn get<'a>(m: &'a Map<String, Value>, path: &str, name: &str) -> Result<&'a Value, FieldError> {
    m.get(name)
        .ok_or_else(|| FieldError::Missing(join(path, name)))
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

fn as_object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, FieldError> {
    v.as_object().ok_or_else(|| type_error(field, v))
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, FieldError> {
    let arr = v.as_array().ok_or_else(|| type_error(field, v))?;
    arr.iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| type_error(field, x))
        })
        .collect()
}

fn optional_strings(
    m: &Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<Vec<String>, FieldError> {
    match m.get(name) {
        None => Ok(Vec::new()),
        Some(v) => strings(v, &join(path, name)),
    }
}

fn cost_type(m: &Map<String, Value>) -> Result<CostType, FieldError> {
    let ct = as_object(get(m, "", "cost-type")?, "cost-type")?;
    let field = |name: &str| -> Result<String, FieldError> {
        let v = get(ct, "cost-type", name)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| type_error(&join("cost-type", name), v))
    };
    Ok(CostType {
        cost_mode: field("cost-mode")?,
        cost_metric: field("cost-metric")?,
        description: None,
    })
}

/// A cost constraint (section 11.3.2.3): `<op> <value>`, op one of gt, lt, ge, le, eq.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constraint {
    op: Op,
    value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
}

impl Constraint {
    /// Whether a cost satisfies the constraint.
    pub fn accepts(&self, cost: f64) -> bool {
        match self.op {
            Op::Gt => cost > self.value,
            Op::Lt => cost < self.value,
            Op::Ge => cost >= self.value,
            Op::Le => cost <= self.value,
            Op::Eq => cost == self.value,
        }
    }
}

/// Parses the `constraints` strings (an absent field means no constraint).
pub fn parse_constraints(list: &[String]) -> Result<Vec<Constraint>, FieldError> {
    list.iter()
        .map(|text| {
            let bad = || FieldError::value("constraints", text.clone());
            let mut parts = text.split_whitespace();
            let op = match parts.next() {
                Some("gt") => Op::Gt,
                Some("lt") => Op::Lt,
                Some("ge") => Op::Ge,
                Some("le") => Op::Le,
                Some("eq") => Op::Eq,
                _ => return Err(bad()),
            };
            let value: f64 = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            if parts.next().is_some() || !value.is_finite() {
                return Err(bad());
            }
            Ok(Constraint { op, value })
        })
        .collect()
}

/// Parses a typed endpoint address (`ipv4:192.0.2.1`, `ipv6:2001:db8::1`, section 10.4.1).
pub fn parse_typed_address(text: &str, field: &str) -> Result<IpAddr, FieldError> {
    let bad = || FieldError::value(field, text);
    let (kind, addr) = text.split_once(':').ok_or_else(bad)?;
    match kind {
        "ipv4" => addr
            .parse::<std::net::Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| bad()),
        "ipv6" => addr
            .parse::<std::net::Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Filtered network map request (section 11.3.1.3).
#[derive(Clone, Debug, PartialEq)]
pub struct FilteredNetworkMapRequest {
    /// PIDs wanted; empty means all.
    pub pids: Vec<String>,
    /// `ipv4` and/or `ipv6`; absent or empty means both.
    pub address_types: Vec<String>,
}

impl FilteredNetworkMapRequest {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        let m = object(body)?;
        let pids = strings(get(&m, "", "pids")?, "pids")?;
        let address_types = optional_strings(&m, "", "address-types")?;
        if let Some(bad) = address_types.iter().find(|t| *t != "ipv4" && *t != "ipv6") {
            return Err(FieldError::value("address-types", bad.clone()));
        }
        Ok(Self {
            pids,
            address_types,
        })
    }
}

/// Filtered cost map request (section 11.3.2.3).
#[derive(Clone, Debug, PartialEq)]
pub struct FilteredCostMapRequest {
    /// Requested cost type (checked by the server against what it offers).
    pub cost_type: CostType,
    /// Constraints every returned cost satisfies.
    pub constraints: Vec<Constraint>,
    /// Source PIDs; empty means all.
    pub srcs: Vec<String>,
    /// Destination PIDs; empty means all.
    pub dsts: Vec<String>,
}

impl FilteredCostMapRequest {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        let m = object(body)?;
        let cost_type = cost_type(&m)?;
        let constraints = parse_constraints(&optional_strings(&m, "", "constraints")?)?;
        let (srcs, dsts) = match m.get("pids") {
            None => (Vec::new(), Vec::new()),
            Some(v) => {
                let p = as_object(v, "pids")?;
                (
                    optional_strings(p, "pids", "srcs")?,
                    optional_strings(p, "pids", "dsts")?,
                )
            }
        };
        Ok(Self {
            cost_type,
            constraints,
            srcs,
            dsts,
        })
    }
}

/// Endpoint property request (section 11.4.1.3).
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointPropRequest {
    /// Property names.
    pub properties: Vec<String>,
    /// Typed endpoint addresses, as sent, with their parsed address.
    pub endpoints: Vec<(String, IpAddr)>,
}

impl EndpointPropRequest {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        let m = object(body)?;
        let properties = strings(get(&m, "", "properties")?, "properties")?;
        let endpoints = strings(get(&m, "", "endpoints")?, "endpoints")?
            .into_iter()
            .map(|e| parse_typed_address(&e, "endpoints").map(|ip| (e, ip)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            properties,
            endpoints,
        })
    }
}

/// Endpoint cost request (section 11.5.1.3).
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointCostRequest {
    /// Requested cost type.
    pub cost_type: CostType,
    /// Constraints every returned cost satisfies.
    pub constraints: Vec<Constraint>,
    /// Sources; empty means the client's own address (section 11.5.1.3).
    pub srcs: Vec<(String, IpAddr)>,
    /// Destinations.
    pub dsts: Vec<(String, IpAddr)>,
}

impl EndpointCostRequest {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        let m = object(body)?;
        let cost_type = cost_type(&m)?;
        let constraints = parse_constraints(&optional_strings(&m, "", "constraints")?)?;
        let eps = as_object(get(&m, "", "endpoints")?, "endpoints")?;
        let typed = |name: &str, list: Vec<String>| -> Result<Vec<(String, IpAddr)>, FieldError> {
            let field = join("endpoints", name);
            list.into_iter()
                .map(|e| parse_typed_address(&e, &field).map(|ip| (e, ip)))
                .collect()
        };
        let srcs = typed("srcs", optional_strings(eps, "endpoints", "srcs")?)?;
        let dsts = typed(
            "dsts",
            strings(get(eps, "endpoints", "dsts")?, "endpoints/dsts")?,
        )?;
        Ok(Self {
            cost_type,
            constraints,
            srcs,
            dsts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_field() {
        assert!(matches!(
            FilteredNetworkMapRequest::parse(b"{"),
            Err(FieldError::Syntax(_))
        ));
        assert_eq!(
            FilteredNetworkMapRequest::parse(b"{}"),
            Err(FieldError::Missing("pids".into()))
        );
        assert!(matches!(
            FilteredNetworkMapRequest::parse(br#"{"pids": "x"}"#),
            Err(FieldError::Type { field, .. }) if field == "pids"
        ));
        assert_eq!(
            FilteredCostMapRequest::parse(br#"{"cost-type": {"cost-mode": "numerical"}}"#),
            Err(FieldError::Missing("cost-type/cost-metric".into()))
        );
        assert_eq!(
            EndpointPropRequest::parse(br#"{"properties": [], "endpoints": ["ipv4:1.2.3"]}"#),
            Err(FieldError::value("endpoints", "ipv4:1.2.3"))
        );
    }

    #[test]
    fn constraints_parse_and_filter() {
        let c = parse_constraints(&["le 10".into(), "gt 2".into()]).expect("valid");
        assert!(c.iter().all(|c| c.accepts(5.0)));
        assert!(!c.iter().all(|c| c.accepts(11.0)));
        assert!(parse_constraints(&["lte 1".into()]).is_err());
        assert!(parse_constraints(&["le".into()]).is_err());
        assert!(parse_constraints(&["le 1 2".into()]).is_err());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let r = FilteredNetworkMapRequest::parse(br#"{"pids": ["a"], "x-unknown": 1}"#);
        assert_eq!(r.map(|r| r.pids), Ok(vec!["a".to_string()]));
    }
}
