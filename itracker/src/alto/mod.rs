//! RFC 7285 messages, media types and error codes: typed JSON in and out, no I/O.
//!
//! Response types serialize to exactly what the RFC's normative text asks for (validated
//! against the RFC 7285 JSON Schemas in the tests); they also deserialize, ignoring unknown
//! fields as section 8.3.7 requires, so the client reads what the server writes.

mod messages;
mod request;
pub mod sse;

pub use messages::*;
pub use request::{
    parse_constraints, Constraint, EndpointCostRequest, EndpointPropRequest, FieldError,
    FilteredCostMapRequest, FilteredNetworkMapRequest,
};

/// Media types of RFC 7285 section 10 (plus the RFC 9240 property map used for PID marking).
pub mod media {
    /// Information Resource Directory.
    pub const DIRECTORY: &str = "application/alto-directory+json";
    /// Network map (full or filtered).
    pub const NETWORK_MAP: &str = "application/alto-networkmap+json";
    /// Filtered network map request.
    pub const NETWORK_MAP_FILTER: &str = "application/alto-networkmapfilter+json";
    /// Cost map (full or filtered).
    pub const COST_MAP: &str = "application/alto-costmap+json";
    /// Filtered cost map request.
    pub const COST_MAP_FILTER: &str = "application/alto-costmapfilter+json";
    /// Endpoint property response.
    pub const ENDPOINT_PROP: &str = "application/alto-endpointprop+json";
    /// Endpoint property request.
    pub const ENDPOINT_PROP_PARAMS: &str = "application/alto-endpointpropparams+json";
    /// Endpoint cost response.
    pub const ENDPOINT_COST: &str = "application/alto-endpointcost+json";
    /// Endpoint cost request.
    pub const ENDPOINT_COST_PARAMS: &str = "application/alto-endpointcostparams+json";
    /// Error response.
    pub const ERROR: &str = "application/alto-error+json";
    /// RFC 9240 property map (PID properties: internal or external).
    pub const PROPMAP: &str = "application/alto-propmap+json";
    /// Update stream request (RFC 8895 section 6.5).
    pub const UPDATE_STREAM_PARAMS: &str = "application/alto-updatestreamparams+json";
    /// Update stream control event (RFC 8895 section 5.3).
    pub const UPDATE_STREAM_CONTROL: &str = "application/alto-updatestreamcontrol+json";
    /// The update stream's response (server-sent events).
    pub const EVENT_STREAM: &str = "text/event-stream";
    /// An RFC 7396 merge patch (an incremental update event).
    pub const MERGE_PATCH: &str = "application/merge-patch+json";
}

/// Resource ids this server publishes in its IRD.
pub mod resource {
    /// The (default) network map.
    pub const NETWORK_MAP: &str = "default-network-map";
    /// Numerical routingcost cost map.
    pub const COST_MAP_NUM: &str = "routingcost-num";
    /// Ordinal routingcost cost map.
    pub const COST_MAP_ORD: &str = "routingcost-ord";
    /// Filtered network map service.
    pub const FILTERED_NETWORK_MAP: &str = "filtered-network-map";
    /// Filtered cost map service.
    pub const FILTERED_COST_MAP: &str = "filtered-cost-map";
    /// Endpoint property service.
    pub const ENDPOINT_PROP: &str = "endpoint-property";
    /// Endpoint cost service.
    pub const ENDPOINT_COST: &str = "endpoint-cost";
    /// PID property map (internal/external marking).
    pub const PID_PROPERTIES: &str = "pid-properties";
    /// The update stream service (RFC 8895).
    pub const UPDATE_STREAM: &str = "update-stream";
}

/// Property names this server publishes.
pub mod property {
    /// RFC 7285 resource-specific endpoint property: the PID of an address.
    pub const PID: &str = "default-network-map.pid";
    /// The origin AS of an address outside the ISP (MaxMind fallback), as a decimal string.
    pub const ASN: &str = "priv:asn";
    /// Whether a PID is internal to this ISP: `"true"` or `"false"`.
    pub const INTERNAL: &str = "priv:p4p-internal";
    /// The ISP that publishes the map.
    pub const ISP: &str = "priv:p4p-isp";
}

/// Cost metric and modes.
pub mod cost {
    /// The only metric RFC 7285 requires, and the P4P p-distance.
    pub const ROUTINGCOST: &str = "routingcost";
    /// Costs as numbers.
    pub const NUMERICAL: &str = "numerical";
    /// Costs as ranks (1 = cheapest) per source.
    pub const ORDINAL: &str = "ordinal";
    /// IRD `meta.cost-types` name of numerical routingcost.
    pub const NUM_ROUTINGCOST: &str = "num-routingcost";
    /// IRD `meta.cost-types` name of ordinal routingcost.
    pub const ORD_ROUTINGCOST: &str = "ord-routingcost";
}
