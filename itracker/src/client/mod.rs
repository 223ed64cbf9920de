//! The ALTO client a tracker uses: IRD -> default network map -> routingcost cost map (and the
//! PID property map when offered), checked against each other and turned into a [`Snapshot`].
//!
//! [`AltoClient::fetch`] is blocking (ureq): call it from a background thread or
//! `spawn_blocking`, never on an announce path. It remembers the network map's and cost map's
//! ETags separately and answers [`FetchOutcome::Unchanged`] when the server says 304 to both.
//! [`combine`] merges the maps of several ISPs (one iTracker each) into one snapshot.

mod combine;

use std::collections::HashMap;
use std::time::Duration;

use ipnetwork::IpNetwork;

pub use combine::{combine, try_combine};

use crate::alto::{
    cost, media, property, CostMapMessage, DirectoryMessage, NetworkMapMessage, PropMapMessage,
};
use crate::model::validate_pid_name;
use crate::snapshot::Snapshot;

/// Why a fetch failed. The caller keeps its last good snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A URL in the IRD (or the IRD URL itself) is not a valid URL.
    #[error("invalid URL {url:?}: {source}")]
    Url {
        url: String,
        #[source]
        source: url::ParseError,
    },
    /// Transport failure (connection, TLS, timeout, reading the body).
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: ureq::Error,
    },
    /// The server answered with an unexpected status.
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    /// The body is not the expected JSON.
    #[error("GET {url}: invalid response: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// The IRD offers no network map.
    #[error("the IRD offers no network map")]
    NoNetworkMap,
    /// The IRD offers no numerical routingcost cost map for the network map.
    #[error("the IRD offers no numerical routingcost cost map for network map {0}")]
    NoCostMap(String),
    /// The cost map was computed for another version of the network map (a race with an
    /// update): try again shortly.
    #[error(
        "cost map depends on network map version {cost_map}, but the network map is {network_map}"
    )]
    VtagMismatch {
        network_map: String,
        cost_map: String,
    },
    /// The maps are inconsistent or break RFC 7285's rules.
    #[error("invalid map: {0}")]
    InvalidMap(String),
}

/// One PID of an ISP's map.
#[derive(Clone, Debug, PartialEq)]
pub struct IspPid {
    /// PID name as published.
    pub name: String,
    /// Whether the ISP marks it as its own (see [`IspMap::from_messages`]).
    pub internal: bool,
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
    /// PIDs.
    pub pids: Vec<IspPid>,
    /// Row-major `n * n` costs; `NaN` where the cost map gives none.
    pub costs: Vec<f64>,
}

/// What [`AltoClient::fetch`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum FetchOutcome {
    /// Neither the network map nor the cost map changed since the last successful fetch.
    Unchanged,
    /// Something changed: the new map.
    Updated(IspMap),
}

struct Cached<T> {
    url: String,
    etag: Option<String>,
    message: T,
}

/// A blocking ALTO client for one server (one ISP).
pub struct AltoClient {
    ird_url: String,
    agent: ureq::Agent,
    token: Option<String>,
    network_map: Option<Cached<NetworkMapMessage>>,
    cost_map: Option<Cached<CostMapMessage>>,
    properties: Option<PropMapMessage>,
    delivered: bool,
}

impl std::fmt::Debug for AltoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltoClient")
            .field("ird_url", &self.ird_url)
            .finish_non_exhaustive()
    }
}

impl AltoClient {
    /// A client for the IRD at `ird_url` (e.g. `http://127.0.0.1:7285/directory`), with a 10 s
    /// timeout per request. HTTPS uses the webpki roots; see [`AltoClient::with_agent`].
    pub fn new(ird_url: impl Into<String>) -> AltoClient {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        Self::with_agent(ird_url, agent)
    }

    /// A client with a custom agent (own TLS roots, proxies, timeouts). The agent must not
    /// treat HTTP statuses as errors (`http_status_as_error(false)`).
    pub fn with_agent(ird_url: impl Into<String>, agent: ureq::Agent) -> AltoClient {
        AltoClient {
            ird_url: ird_url.into(),
            agent,
            token: None,
            network_map: None,
            cost_map: None,
            properties: None,
            delivered: false,
        }
    }

    /// Sends `Authorization: Bearer <token>` (for servers with a read token).
    pub fn with_token(mut self, token: impl Into<String>) -> AltoClient {
        self.token = Some(token.into());
        self
    }

    /// The IRD URL.
    pub fn ird_url(&self) -> &str {
        &self.ird_url
    }

    /// Fetches IRD, network map and cost map (conditionally), and returns the new map or
    /// [`FetchOutcome::Unchanged`].
    pub fn fetch(&mut self) -> Result<FetchOutcome, ClientError> {
        let ird: DirectoryMessage = match self.get(&self.ird_url.clone(), media::DIRECTORY, None)? {
            Got::Fresh(body, _) => parse(&self.ird_url, &body)?,
            Got::NotModified => return Err(ClientError::InvalidMap("304 for the IRD".into())),
        };
        let (nm_id, nm_uri) = network_map_entry(&ird)?;
        let cm_uri = cost_map_entry(&ird, &nm_id)?;
        let pm_uri = ird
            .resources
            .values()
            .find(|e| e.media_type == media::PROPMAP && e.uses.contains(&nm_id))
            .map(|e| self.resolve(&e.uri))
            .transpose()?;
        let nm_url = self.resolve(&nm_uri)?;
        let cm_url = self.resolve(&cm_uri)?;
        let nm_changed = refresh(self, &nm_url, media::NETWORK_MAP, Slot::Network)?;
        let cm_changed = refresh(self, &cm_url, media::COST_MAP, Slot::Cost)?;
        if !nm_changed && !cm_changed && self.delivered {
            return Ok(FetchOutcome::Unchanged);
        }
        let (Some(nm), Some(cm)) = (&self.network_map, &self.cost_map) else {
            return Err(ClientError::InvalidMap("maps missing after fetch".into()));
        };
        let vtag = nm.message.meta.vtag.tag.clone();
        let dependent = cm
            .message
            .meta
            .dependent_vtags
            .iter()
            .find(|v| v.resource_id == nm_id)
            .map(|v| v.tag.clone())
            .unwrap_or_default();
        if dependent != vtag {
            // Forget the cost map so the next fetch gets it again, whatever its ETag.
            self.cost_map = None;
            return Err(ClientError::VtagMismatch {
                network_map: vtag,
                cost_map: dependent,
            });
        }
        if nm_changed || self.properties.is_none() {
            self.properties = match pm_uri {
                Some(url) => match self.get(&url, media::PROPMAP, None)? {
                    Got::Fresh(body, _) => Some(parse(&url, &body)?),
                    Got::NotModified => None,
                },
                None => None,
            };
        }
        let (Some(nm), Some(cm)) = (&self.network_map, &self.cost_map) else {
            return Err(ClientError::InvalidMap("maps missing after fetch".into()));
        };
        let fallback = host_of(&self.ird_url);
        let map = IspMap::from_messages(
            &nm.message,
            &cm.message,
            cm.etag.clone().unwrap_or_default(),
            self.properties.as_ref(),
            &fallback,
        )?;
        self.delivered = true;
        Ok(FetchOutcome::Updated(map))
    }

    /// Resolves a URI from the IRD against the IRD's URL (RFC 3986: absolute, `/path`,
    /// `relative`, `../up` and `?query` forms).
    fn resolve(&self, uri: &str) -> Result<String, ClientError> {
        resolve(&self.ird_url, uri)
    }

    fn get(&self, url: &str, accept: &str, etag: Option<&str>) -> Result<Got, ClientError> {
        let mut req = self
            .agent
            .get(url)
            .header("Accept", &format!("{accept},{}", media::ERROR));
        if let Some(tag) = etag {
            req = req.header("If-None-Match", tag);
        }
        if let Some(token) = &self.token {
            req = req.header("Authorization", &format!("Bearer {token}"));
        }
        let mut res = req.call().map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })?;
        match res.status().as_u16() {
            304 => Ok(Got::NotModified),
            200 => {
                let etag = res
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = res
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024 * 1024)
                    .read_to_vec()
                    .map_err(|source| ClientError::Http {
                        url: url.to_string(),
                        source,
                    })?;
                Ok(Got::Fresh(body, etag))
            }
            status => Err(ClientError::Status {
                url: url.to_string(),
                status,
            }),
        }
    }
}

enum Got {
    Fresh(Vec<u8>, Option<String>),
    NotModified,
}

#[derive(Clone, Copy)]
enum Slot {
    Network,
    Cost,
}

/// Conditionally refreshes one cached map; `true` when it changed.
fn refresh(
    client: &mut AltoClient,
    url: &str,
    accept: &str,
    slot: Slot,
) -> Result<bool, ClientError> {
    let etag = match slot {
        Slot::Network => client
            .network_map
            .as_ref()
            .filter(|c| c.url == url)
            .and_then(|c| c.etag.clone()),
        Slot::Cost => client
            .cost_map
            .as_ref()
            .filter(|c| c.url == url)
            .and_then(|c| c.etag.clone()),
    };
    match client.get(url, accept, etag.as_deref())? {
        Got::NotModified if etag.is_some() => Ok(false),
        Got::NotModified => Err(ClientError::Status {
            url: url.to_string(),
            status: 304,
        }),
        Got::Fresh(body, etag) => {
            match slot {
                Slot::Network => {
                    client.network_map = Some(Cached {
                        url: url.to_string(),
                        etag,
                        message: parse(url, &body)?,
                    })
                }
                Slot::Cost => {
                    client.cost_map = Some(Cached {
                        url: url.to_string(),
                        etag,
                        message: parse(url, &body)?,
                    })
                }
            }
            Ok(true)
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Json {
        url: url.to_string(),
        source,
    })
}

fn network_map_entry(ird: &DirectoryMessage) -> Result<(String, String), ClientError> {
    let by_default = ird
        .meta
        .default_network_map
        .as_ref()
        .and_then(|id| ird.resources.get(id).map(|e| (id.clone(), e)));
    let any = || {
        ird.resources
            .iter()
            .find(|(_, e)| e.media_type == media::NETWORK_MAP && e.accepts.is_none())
            .map(|(id, e)| (id.clone(), e))
    };
    by_default
        .or_else(any)
        .map(|(id, e)| (id, e.uri.clone()))
        .ok_or(ClientError::NoNetworkMap)
}

fn cost_map_entry(ird: &DirectoryMessage, network_map: &str) -> Result<String, ClientError> {
    let numerical_routingcost = |name: &serde_json::Value| {
        name.as_str()
            .and_then(|n| ird.meta.cost_types.get(n))
            .is_some_and(|t| t.cost_metric == cost::ROUTINGCOST && t.cost_mode == cost::NUMERICAL)
    };
    ird.resources
        .values()
        .filter(|e| e.media_type == media::COST_MAP && e.accepts.is_none())
        .filter(|e| e.uses.iter().any(|u| u == network_map))
        .find(|e| {
            e.capabilities
                .as_ref()
                .and_then(|c| c.get("cost-type-names"))
                .and_then(|n| n.as_array())
                .is_some_and(|names| names.iter().any(numerical_routingcost))
        })
        .map(|e| e.uri.clone())
        .ok_or_else(|| ClientError::NoCostMap(network_map.to_string()))
}

fn resolve(base: &str, uri: &str) -> Result<String, ClientError> {
    let bad = |url: &str| {
        let url = url.to_string();
        move |source| ClientError::Url { url, source }
    };
    let base = url::Url::parse(base).map_err(bad(base))?;
    Ok(base.join(uri).map_err(bad(uri))?.into())
}

/// The host (and port, if the URL names one) of a URL, as a name: characters other than
/// letters, digits and `.` become `-` (`127.0.0.1:7285` -> `127.0.0.1-7285`).
fn host_of(url: &str) -> String {
    let host = match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => url.to_string(),
        },
        Err(_) => url.to_string(),
    };
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl IspMap {
    /// Builds and validates a map from ALTO messages. Internal marking comes from the PID
    /// property map (`priv:p4p-internal`); a map without any marking counts every PID but the
    /// one holding `0.0.0.0/0` or `::/0` as internal.
    pub fn from_messages(
        network_map: &NetworkMapMessage,
        cost_map: &CostMapMessage,
        cost_etag: String,
        properties: Option<&PropMapMessage>,
        fallback_isp: &str,
    ) -> Result<IspMap, ClientError> {
        let invalid = |m: String| ClientError::InvalidMap(m);
        let marks: HashMap<&str, bool> = properties
            .map(|p| {
                p.property_map
                    .iter()
                    .filter_map(|(entity, props)| {
                        let name = entity.split_once(".pid:").map(|(_, n)| n)?;
                        Some((name, props.get(property::INTERNAL)? == "true"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let isp = properties
            .and_then(|p| {
                p.property_map
                    .values()
                    .find_map(|props| props.get(property::ISP))
            })
            .cloned()
            .unwrap_or_else(|| fallback_isp.to_string());
        let mut pids = Vec::with_capacity(network_map.network_map.len());
        let mut seen: HashMap<IpNetwork, String> = HashMap::new();
        for (name, group) in &network_map.network_map {
            validate_pid_name(name).map_err(|e| invalid(format!("PID name {name:?} {e}")))?;
            let mut prefixes = Vec::new();
            for text in group.ipv4.iter().chain(&group.ipv6) {
                let p: IpNetwork = text
                    .parse()
                    .map_err(|e| invalid(format!("PID {name}: prefix {text:?}: {e}")))?;
                let p =
                    IpNetwork::new(p.network(), p.prefix()).map_err(|e| invalid(e.to_string()))?;
                if let Some(first) = seen.insert(p, name.clone()) {
                    return Err(invalid(format!(
                        "prefix {p} is in PID {first} and in PID {name}"
                    )));
                }
                prefixes.push(p);
            }
            let holds_default = prefixes.iter().any(|p| p.prefix() == 0);
            let internal = if marks.is_empty() {
                !holds_default
            } else {
                marks.get(name.as_str()).copied().unwrap_or(false)
            };
            pids.push(IspPid {
                name: name.clone(),
                internal,
                prefixes,
            });
        }
        if pids.len() >= usize::from(u16::MAX) {
            return Err(invalid(format!(
                "{} PIDs: at most 65534 are supported",
                pids.len()
            )));
        }
        let index: HashMap<&str, usize> = pids
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let n = pids.len();
        let mut costs = vec![f64::NAN; n * n];
        for (src, row) in &cost_map.cost_map {
            let Some(&s) = index.get(src.as_str()) else {
                continue;
            };
            for (dst, c) in row {
                let Some(&d) = index.get(dst.as_str()) else {
                    continue;
                };
                if !(c.0.is_finite() && c.0 >= 0.0) {
                    return Err(invalid(format!("cost {src} -> {dst} is {}", c.0)));
                }
                costs[s * n + d] = c.0;
            }
        }
        Ok(IspMap {
            isp,
            vtag: network_map.meta.vtag.tag.clone(),
            cost_etag,
            pids,
            costs,
        })
    }

    /// This map alone as a snapshot (unknown costs = `interdomain_cost`).
    pub fn snapshot(&self, interdomain_cost: f64) -> Snapshot {
        combine(std::slice::from_ref(self), interdomain_cost)
    }
}

#[cfg(test)]
mod tests {
    use super::{host_of, resolve};

    const IRD: &str = "http://127.0.0.1:7285/alto/directory";

    fn resolved(uri: &str) -> String {
        resolve(IRD, uri).expect("resolves")
    }

    #[test]
    fn absolute_and_rooted_uris_resolve_as_before() {
        assert_eq!(resolved("https://other:1/nm"), "https://other:1/nm");
        assert_eq!(resolved("/networkmap"), "http://127.0.0.1:7285/networkmap");
        assert_eq!(
            resolved("networkmap"),
            "http://127.0.0.1:7285/alto/networkmap"
        );
        assert_eq!(
            resolve("http://127.0.0.1:7285", "networkmap").expect("resolves"),
            "http://127.0.0.1:7285/networkmap"
        );
    }

    #[test]
    fn relative_uris_climb_with_dot_dot() {
        assert_eq!(resolved("../maps/nm"), "http://127.0.0.1:7285/maps/nm");
        assert_eq!(resolved("./costmap"), "http://127.0.0.1:7285/alto/costmap");
    }

    #[test]
    fn query_strings_are_kept() {
        assert_eq!(
            resolved("costmap?mode=numerical"),
            "http://127.0.0.1:7285/alto/costmap?mode=numerical"
        );
        assert_eq!(resolved("?v=2"), "http://127.0.0.1:7285/alto/directory?v=2");
    }

    #[test]
    fn a_bad_base_is_an_error_naming_it() {
        let e = resolve("not a url", "nm").expect_err("no base");
        assert!(e.to_string().contains("not a url"), "{e}");
    }

    #[test]
    fn host_names_keep_the_port_and_only_safe_characters() {
        assert_eq!(host_of(IRD), "127.0.0.1-7285");
        assert_eq!(
            host_of("https://alto.example.net/directory"),
            "alto.example.net"
        );
        assert_eq!(host_of("http://[::1]:7285/d"), "---1--7285");
    }
}
