//! ALTO routes (RFC 7285 section 11): thin handlers over the current [`Served`] version.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse, Resource, Route};

use super::endpoint_cost::EndpointCostBody;
use super::http::{
    accepts_gzip, authorize, check_accept, check_content_type, json, respond, respond_encoded,
    ApiError,
};
use super::state::{addr_group, ranks, Rendered, Served};
use super::AppState;
use crate::alto::{
    cost, media, property, resource, Constraint, Cost, CostMapMessage, CostMapMeta, CostTable,
    CostType, DependentMeta, EndpointCostRequest, EndpointPropMessage, EndpointPropRequest,
    FieldError, FilteredCostMapRequest, FilteredNetworkMapRequest, NetworkMapMessage,
    NetworkMapMeta,
};

/// Largest ALTO POST body (a request, not an answer).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Registers the ALTO routes. Each path answers its one method; any other gets 405 with an
/// `Allow` header (not 404: the resource exists).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let get = |path: &str, route: Route| only(path, "GET", route);
    let post = |path: &str, route: Route| only(path, "POST", route);
    cfg.service(get("/", web::get().to(directory)))
        .service(get("/directory", web::get().to(directory)))
        .service(get("/networkmap", web::get().to(network_map)))
        .service(get(
            "/costmap/routingcost/numerical",
            web::get().to(cost_map_num),
        ))
        .service(get(
            "/costmap/routingcost/ordinal",
            web::get().to(cost_map_ord),
        ))
        .service(get("/propmap/pid", web::get().to(pid_properties)))
        .service(post(
            "/networkmap/filtered",
            web::post().to(filtered_network_map),
        ))
        .service(post("/costmap/filtered", web::post().to(filtered_cost_map)))
        .service(post(
            "/endpointprop/lookup",
            web::post().to(endpoint_properties),
        ))
        .service(post("/endpointcost/lookup", web::post().to(endpoint_cost)));
}

/// A resource answering one method; others get 405 naming `allow`.
pub fn only(path: &str, allow: &'static str, route: Route) -> Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(move || async move {
            Err::<HttpResponse, ApiError>(ApiError::MethodNotAllowed(allow))
        }))
}

/// Reads a POST body of at most [`MAX_REQUEST_BYTES`] (after the request's headers passed
/// their checks: an unauthorised body is never read).
async fn body(payload: web::Payload) -> Result<web::Bytes, ApiError> {
    match payload.to_bytes_limited(MAX_REQUEST_BYTES).await {
        Ok(body) => body.map_err(|e| ApiError::Payload(e.to_string())),
        Err(_) => Err(ApiError::TooLarge(MAX_REQUEST_BYTES)),
    }
}

/// Authorises a read and checks the Accept header.
fn read(req: &HttpRequest, state: &AppState, produces: &'static str) -> Result<(), ApiError> {
    authorize(req, state.read_token.as_ref(), false)?;
    check_accept(req, produces)
}

async fn directory(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    read(&req, &state, media::DIRECTORY)?;
    Ok(respond(&req, media::DIRECTORY, &state.ird))
}

async fn network_map(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    read(&req, &state, media::NETWORK_MAP)?;
    serve(req, state.current(), Message::NetworkMap).await
}

async fn cost_map_num(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    read(&req, &state, media::COST_MAP)?;
    serve(req, state.current(), Message::NumericalCosts).await
}

async fn cost_map_ord(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    read(&req, &state, media::COST_MAP)?;
    serve(req, state.current(), Message::OrdinalCosts).await
}

async fn pid_properties(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    read(&req, &state, media::PROPMAP)?;
    serve(req, state.current(), Message::PidProperties).await
}

/// The full messages of a version that GETs serve.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Message {
    NetworkMap,
    NumericalCosts,
    OrdinalCosts,
    PidProperties,
}

impl Message {
    fn media_type(self) -> &'static str {
        match self {
            Message::NetworkMap => media::NETWORK_MAP,
            Message::NumericalCosts | Message::OrdinalCosts => media::COST_MAP,
            Message::PidProperties => media::PROPMAP,
        }
    }

    /// The rendered message (the ordinal cost map is rendered on the first call).
    fn of(self, s: &Served) -> &Rendered {
        match self {
            Message::NetworkMap => &s.network.network_map_body,
            Message::NumericalCosts => &s.cost_num,
            Message::OrdinalCosts => s.cost_ord(),
            Message::PidProperties => &s.network.propmap,
        }
    }

    /// Whether [`Message::of`] (and its gzip body, if wanted) answers without work.
    fn ready(self, s: &Served, gzip: bool) -> bool {
        (self != Message::OrdinalCosts || s.cost_ord_ready()) && (!gzip || self.of(s).gzip_ready())
    }
}

/// Answers a GET with one of a version's rendered messages. What is made on first demand (the
/// ordinal cost map, a gzip body) is made in a blocking section, never on the async worker;
/// after that every answer is a pointer load and a reference-counted copy of the bytes.
async fn serve(
    req: HttpRequest,
    served: Arc<Served>,
    which: Message,
) -> Result<HttpResponse, ApiError> {
    let gzip = accepts_gzip(&req);
    let served = if which.ready(&served, gzip) {
        served
    } else {
        web::block(move || {
            let r = which.of(&served);
            if gzip {
                r.gzip();
            }
            served
        })
        .await?
    };
    Ok(respond_encoded(
        &req,
        which.media_type(),
        which.of(&served),
        gzip,
    ))
}

/// Reads and checks a POST: token, Accept, Content-Type.
fn post(
    req: &HttpRequest,
    state: &AppState,
    produces: &'static str,
    accepts: &'static str,
) -> Result<(), ApiError> {
    read(req, state, produces)?;
    check_content_type(req, accepts)
}

async fn filtered_network_map(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    post(&req, &state, media::NETWORK_MAP, media::NETWORK_MAP_FILTER)?;
    let r = FilteredNetworkMapRequest::parse(&body(payload).await?)?;
    let served = state.current();
    let wanted: BTreeSet<&str> = r.pids.iter().map(String::as_str).collect();
    let (v4, v6) = (
        r.address_types.is_empty() || r.address_types.iter().any(|t| t == "ipv4"),
        r.address_types.is_empty() || r.address_types.iter().any(|t| t == "ipv6"),
    );
    // PIDs not in the map are ignored (RFC 7285 section 11.3.1.3), as are PIDs left with no
    // address of the requested types.
    let network_map = served
        .topology
        .pids()
        .iter()
        .filter(|p| wanted.is_empty() || wanted.contains(p.name.as_str()))
        .map(|p| (p.name.clone(), addr_group(p, v4, v6)))
        .filter(|(_, g)| !(g.ipv4.is_empty() && g.ipv6.is_empty()))
        .collect();
    json(
        media::NETWORK_MAP,
        &NetworkMapMessage {
            meta: NetworkMapMeta {
                vtag: served.network.vtag.clone(),
            },
            network_map,
        },
    )
}

/// Whether the cost type is one we serve; `true` for ordinal.
fn ordinal(ct: &CostType) -> Result<bool, FieldError> {
    if ct.cost_metric != cost::ROUTINGCOST {
        return Err(FieldError::value(
            "cost-type/cost-metric",
            ct.cost_metric.clone(),
        ));
    }
    match ct.cost_mode.as_str() {
        cost::NUMERICAL => Ok(false),
        cost::ORDINAL => Ok(true),
        other => Err(FieldError::value("cost-type/cost-mode", other)),
    }
}

async fn filtered_cost_map(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    post(&req, &state, media::COST_MAP, media::COST_MAP_FILTER)?;
    let r = FilteredCostMapRequest::parse(&body(payload).await?)?;
    let is_ordinal = ordinal(&r.cost_type)?;
    let served = state.current();
    let cost_map = filtered_costs(&served, &r.srcs, &r.dsts, is_ordinal, &r.constraints);
    json(
        media::COST_MAP,
        &CostMapMessage {
            meta: CostMapMeta {
                dependent_vtags: vec![served.network.vtag.clone()],
                cost_type: CostType::routingcost(&r.cost_type.cost_mode),
            },
            cost_map,
        },
    )
}

/// The cost table restricted to `srcs` x `dsts` (empty = all; names not in the map are
/// ignored), filtered while iterating: a 1 x 1 filter reads one cost (ordinal mode ranks the
/// source's whole row), never the full n x n table.
fn filtered_costs(
    served: &Served,
    srcs: &[String],
    dsts: &[String],
    ordinal: bool,
    constraints: &[Constraint],
) -> CostTable {
    let pids = served.topology.pids();
    let indices = |names: &[String]| -> Vec<usize> {
        if names.is_empty() {
            return (0..pids.len()).collect();
        }
        let mut v: Vec<usize> = names
            .iter()
            .filter_map(|n| served.network.pid_index.get(n).copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (srcs, dsts) = (indices(srcs), indices(dsts));
    let costs = served.costs();
    srcs.into_iter()
        .map(|s| {
            let ranked = ordinal.then(|| {
                let row: Vec<f64> = (0..pids.len()).map(|t| costs.get(s, t)).collect();
                ranks(&row)
            });
            let row = dsts
                .iter()
                .map(|&t| (t, ranked.as_ref().map_or(costs.get(s, t), |r| r[t])))
                .filter(|&(_, v)| satisfies(constraints, v))
                .map(|(t, v)| (pids[t].name.clone(), Cost(v)))
                .collect();
            (pids[s].name.clone(), row)
        })
        .collect()
}

fn satisfies(constraints: &[Constraint], cost: f64) -> bool {
    constraints.iter().all(|c| c.accepts(cost))
}

async fn endpoint_properties(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    post(
        &req,
        &state,
        media::ENDPOINT_PROP,
        media::ENDPOINT_PROP_PARAMS,
    )?;
    let r = EndpointPropRequest::parse(&body(payload).await?)?;
    if r.endpoints.len() > state.limits.max_endpoints {
        return Err(FieldError::value(
            "endpoints",
            format!(
                "{} endpoints; at most {} per request",
                r.endpoints.len(),
                state.limits.max_endpoints
            ),
        )
        .into());
    }
    let supported = state.prop_types();
    if let Some(bad) = r
        .properties
        .iter()
        .find(|p| !supported.contains(&p.as_str()))
    {
        return Err(FieldError::value("properties", bad.clone()).into());
    }
    let served = state.current();
    let endpoint_properties = r
        .endpoints
        .iter()
        .map(|(text, ip)| (text.clone(), properties_of(&served, *ip, &r.properties)))
        .collect();
    json(
        media::ENDPOINT_PROP,
        &EndpointPropMessage {
            meta: DependentMeta {
                dependent_vtags: vec![served.network.vtag.clone()],
            },
            endpoint_properties,
        },
    )
}

fn properties_of(served: &Served, ip: IpAddr, wanted: &[String]) -> BTreeMap<String, String> {
    let idx = served.snapshot.locate(ip);
    let pid = served.snapshot.pid(idx);
    let mut props = BTreeMap::new();
    for name in wanted {
        let value = match name.as_str() {
            property::PID => Some(pid.name.to_string()),
            property::INTERNAL => Some(pid.internal.to_string()),
            // The AS only says something about addresses outside the ISP's own PIDs.
            property::ASN if !pid.internal => served.snapshot.asn(ip).map(|a| a.to_string()),
            _ => None,
        };
        if let Some(v) = value {
            props.insert(name.clone(), v);
        }
    }
    props
}

async fn endpoint_cost(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    post(
        &req,
        &state,
        media::ENDPOINT_COST,
        media::ENDPOINT_COST_PARAMS,
    )?;
    let r = EndpointCostRequest::parse(&body(payload).await?)?;
    let is_ordinal = ordinal(&r.cost_type)?;
    let pairs = r.srcs.len().max(1).saturating_mul(r.dsts.len());
    if pairs > state.limits.max_endpoint_pairs {
        return Err(FieldError::value(
            "endpoints",
            format!(
                "{} sources x {} destinations = {pairs} pairs; at most {} per request",
                r.srcs.len().max(1),
                r.dsts.len(),
                state.limits.max_endpoint_pairs
            ),
        )
        .into());
    }
    let mut srcs = r.srcs;
    if srcs.is_empty() {
        // An empty source list means the client's own address (RFC 7285 section 11.5.1.3).
        let ip = req
            .peer_addr()
            .map(|a| a.ip())
            .ok_or(ApiError::NoPeerAddress)?;
        srcs.push((typed(ip), ip));
    }
    let answer = EndpointCostBody::new(
        state.current(),
        &r.cost_type.cost_mode,
        is_ordinal,
        r.constraints,
        srcs,
        r.dsts,
    );
    Ok(HttpResponse::Ok()
        .content_type(media::ENDPOINT_COST)
        .body(answer))
}

fn typed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("ipv4:{a}"),
        IpAddr::V6(a) => format!("ipv6:{a}"),
    }
}

/// The IRD this server publishes.
pub fn directory_message(with_asn: bool) -> crate::alto::DirectoryMessage {
    use crate::alto::{DirectoryMessage, DirectoryMeta, ResourceEntry};
    use serde_json::json;
    let uses = vec![resource::NETWORK_MAP.to_string()];
    let entry = |uri: &str,
                 media_type: &str,
                 accepts: Option<&str>,
                 caps: Option<serde_json::Value>,
                 uses: Vec<String>| ResourceEntry {
        uri: uri.to_string(),
        media_type: media_type.to_string(),
        accepts: accepts.map(str::to_string),
        capabilities: caps,
        uses,
    };
    let both = json!([cost::NUM_ROUTINGCOST, cost::ORD_ROUTINGCOST]);
    let filtered_caps = json!({"cost-constraints": true, "cost-type-names": both});
    let mut props = vec![property::PID, property::INTERNAL];
    if with_asn {
        props.push(property::ASN);
    }
    let mut resources = BTreeMap::from([
        (
            resource::NETWORK_MAP.to_string(),
            entry("/networkmap", media::NETWORK_MAP, None, None, vec![]),
        ),
        (
            resource::COST_MAP_NUM.to_string(),
            entry(
                "/costmap/routingcost/numerical",
                media::COST_MAP,
                None,
                Some(json!({"cost-type-names": [cost::NUM_ROUTINGCOST]})),
                uses.clone(),
            ),
        ),
        (
            resource::COST_MAP_ORD.to_string(),
            entry(
                "/costmap/routingcost/ordinal",
                media::COST_MAP,
                None,
                Some(json!({"cost-type-names": [cost::ORD_ROUTINGCOST]})),
                uses.clone(),
            ),
        ),
        (
            resource::FILTERED_NETWORK_MAP.to_string(),
            entry(
                "/networkmap/filtered",
                media::NETWORK_MAP,
                Some(media::NETWORK_MAP_FILTER),
                None,
                uses.clone(),
            ),
        ),
        (
            resource::FILTERED_COST_MAP.to_string(),
            entry(
                "/costmap/filtered",
                media::COST_MAP,
                Some(media::COST_MAP_FILTER),
                Some(filtered_caps.clone()),
                uses.clone(),
            ),
        ),
        (
            resource::ENDPOINT_PROP.to_string(),
            entry(
                "/endpointprop/lookup",
                media::ENDPOINT_PROP,
                Some(media::ENDPOINT_PROP_PARAMS),
                Some(json!({"prop-types": props})),
                uses.clone(),
            ),
        ),
        (
            resource::ENDPOINT_COST.to_string(),
            entry(
                "/endpointcost/lookup",
                media::ENDPOINT_COST,
                Some(media::ENDPOINT_COST_PARAMS),
                Some(filtered_caps),
                vec![],
            ),
        ),
        (
            resource::PID_PROPERTIES.to_string(),
            entry(
                "/propmap/pid",
                media::PROPMAP,
                None,
                Some(
                    json!({"mappings": {format!("{}.pid", resource::NETWORK_MAP): [property::INTERNAL, property::ISP]}}),
                ),
                uses,
            ),
        ),
    ]);
    resources.insert(
        resource::UPDATE_STREAM.to_string(),
        super::stream::ird_entry(),
    );
    let mut numerical = CostType::routingcost(cost::NUMERICAL);
    numerical.description = Some("P4P p-distance (routing cost), numerical".into());
    let mut ordinal = CostType::routingcost(cost::ORDINAL);
    ordinal.description = Some("P4P p-distance (routing cost), ranks per source".into());
    DirectoryMessage {
        meta: DirectoryMeta {
            cost_types: BTreeMap::from([
                (cost::NUM_ROUTINGCOST.to_string(), numerical),
                (cost::ORD_ROUTINGCOST.to_string(), ordinal),
            ]),
            default_network_map: Some(resource::NETWORK_MAP.to_string()),
        },
        resources,
    }
}
