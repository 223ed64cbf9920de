//! The ALTO client a tracker uses: IRD -> default network map -> routingcost cost map (and the
//! PID property map when offered), checked against each other and turned into a [`Snapshot`].
//!
//! [`AltoClient::fetch`] is blocking (ureq): call it from a background thread or
//! `spawn_blocking`, never on an announce path. It remembers the network map's and cost map's
//! ETags separately and answers [`FetchOutcome::Unchanged`] when the server says 304 to both
//! and the map it last delivered is still what the server serves.
//!
//! What a server can make it do is bounded ([`ClientLimits`]): PIDs per map (checked before
//! the cost map is even requested), bytes per body, redirects, and the origins it talks to
//! (the IRD's own, unless configured otherwise). Content that fails validation is not
//! remembered: every later fetch asks for it again and fails again until it changes, so a
//! caller measuring the age of its map in use (time since the last `Ok`) sees it grow.
//! [`combine`] merges the maps of several ISPs (one iTracker each) into one snapshot.

mod combine;
mod http;
mod map;
mod stream;

use std::collections::HashMap;
use std::time::Duration;

pub use combine::{combine, try_combine};
pub use map::{IspMap, IspPid};
pub use stream::{StreamError, StreamOptions, UpdateStream, DEFAULT_IDLE_TIMEOUT};

use self::http::{read_json, Got};
use self::map::{parse_cost_map, pid_index, ParsedCostMap};
use crate::alto::{cost, media, DirectoryMessage, NetworkMapMessage, PropMapMessage};
#[cfg(doc)]
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
    /// The body is not the expected JSON (or breaks a rule checked while reading it, such as
    /// an unusable cost).
    #[error("GET {url}: invalid response: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// A body is larger than its limit ([`ClientLimits`]).
    #[error("GET {url}: response body over {limit} bytes (the client's limit for it)")]
    TooLarge { url: String, limit: u64 },
    /// A gzip body inflates to more than its limit ([`ClientLimits`]): a gzip bomb, or a map
    /// too large for the limits.
    #[error("GET {url}: gzip response body inflates to over {limit} bytes (the client's limit for it): refused")]
    Inflated { url: String, limit: u64 },
    /// A gzip body that does not inflate.
    #[error("GET {url}: invalid gzip body: {source}")]
    BadGzip {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The body comes in a content coding the client did not ask for (only gzip is asked).
    #[error("GET {url}: unsupported Content-Encoding {encoding:?} (the client accepts gzip)")]
    UnsupportedEncoding { url: String, encoding: String },
    /// The URL serves another media type than the one asked for; for the IRD, the `--alto`
    /// URL is not a directory.
    #[error("{}", wrong_media_type(url, found, expected))]
    WrongMediaType {
        url: String,
        found: String,
        expected: String,
    },
    /// The IRD names a resource outside the allowed origins.
    #[error("the IRD points at {url}, outside {allowed} (allow that origin explicitly to use it)")]
    ForeignOrigin { url: String, allowed: String },
    /// A redirect to another origin was refused.
    #[error("GET {from}: redirect to {to} refused: another origin")]
    Redirect { from: String, to: String },
    /// More redirects than [`ClientLimits::max_redirects`].
    #[error("GET {url}: more than {max} redirects")]
    TooManyRedirects { url: String, max: u32 },
    /// The network map has more PIDs than [`ClientLimits::max_pids`]; refused before its
    /// costs are fetched.
    #[error("network map {url} has {pids} PIDs, more than the client's limit of {max}")]
    TooManyPids {
        url: String,
        pids: usize,
        max: usize,
    },
    /// The network map has no PID, or no prefix in any PID.
    #[error("the network map is empty ({pids} PIDs, no prefix): refused")]
    EmptyNetworkMap { pids: usize },
    /// The IRD offers no network map.
    #[error("the IRD offers no network map")]
    NoNetworkMap,
    /// The IRD offers no routingcost cost map (numerical or ordinal) for the network map.
    #[error("the IRD offers no routingcost cost map (numerical or ordinal) for network map {0}")]
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

fn wrong_media_type(url: &str, found: &str, expected: &str) -> String {
    if expected == media::DIRECTORY {
        format!("{url} serves {found}, not an IRD ({expected}): give the directory URL")
    } else {
        format!("{url} serves {found}, not {expected}")
    }
}

impl ClientError {
    /// Whether the server's content (not the transport) is at fault: the client then forgets
    /// what it cached, so the next fetch asks for everything again and reports it again.
    fn is_content(&self) -> bool {
        match self {
            ClientError::Json { source, .. } => !source.is_io(),
            ClientError::Url { .. }
            | ClientError::Http { .. }
            | ClientError::Status { .. }
            | ClientError::Redirect { .. }
            | ClientError::TooManyRedirects { .. } => false,
            _ => true,
        }
    }
}

/// Bounds on what one server can make the client do. Every body is read through its limit
/// (the transfer stops there; for a gzip body, both its compressed and its inflated bytes)
/// and parsed as a stream; the costs are kept sparse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// PIDs in one network map (default 5,000). A [`Snapshot`] is dense: 6 bytes per PID pair
    /// (an `f32` cost and a `u16` in the by-cost order), so 5,000 PIDs is 150 MB and 10,000
    /// would be 600 MB (twice that while a new one is swapped in). A larger map is refused
    /// before its cost map is requested. The cost map's default byte limit follows it
    /// ([`ClientLimits::cost_map_bytes`]).
    pub max_pids: usize,
    /// Bytes of the IRD (default 1 MiB).
    pub max_ird_bytes: u64,
    /// Bytes of the network map (default 32 MiB: ~1.5 million prefixes).
    pub max_network_map_bytes: u64,
    /// Bytes of the cost map (inflated, when gzipped); `None` (the default) follows
    /// `max_pids`: see [`ClientLimits::cost_map_bytes`].
    pub max_cost_map_bytes: Option<u64>,
    /// Bytes of the PID property map (default 8 MiB).
    pub max_property_map_bytes: u64,
    /// Redirects followed per request (default 5), within the allowed origins only.
    pub max_redirects: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_pids: 5_000,
            max_ird_bytes: 1 << 20,
            max_network_map_bytes: 32 << 20,
            max_cost_map_bytes: None,
            max_property_map_bytes: 8 << 20,
            max_redirects: 5,
        }
    }
}

impl ClientLimits {
    /// JSON bytes allowed per PID pair of a full cost map when its limit follows `max_pids`.
    /// Our iTracker writes 23 per pair at 2,000 PIDs (`"pid1234":12.345678,`); a large ISP's
    /// production map (Benocs, 47 MB for 1.3 M pairs) 36. 48 leaves room for longer names.
    pub const COST_MAP_BYTES_PER_PAIR: u64 = 48;

    /// The cost map's byte limit: `max_cost_map_bytes` when set, else
    /// `48 * max_pids^2` bytes ([`Self::COST_MAP_BYTES_PER_PAIR`]), at least 1 MiB: a full
    /// map of `max_pids` PIDs fits. Default 5,000 PIDs: 1.2 GB, read as a stream (the client
    /// keeps 12 bytes per distinct pair, at most `max_pids^2` pairs); 2,000 PIDs: 192 MB.
    pub fn cost_map_bytes(&self) -> u64 {
        self.max_cost_map_bytes.unwrap_or_else(|| {
            let pids = self.max_pids as u64;
            pids.saturating_mul(pids)
                .saturating_mul(Self::COST_MAP_BYTES_PER_PAIR)
                .max(1 << 20)
        })
    }
}

/// What [`AltoClient::fetch`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum FetchOutcome {
    /// The server still serves the map this client delivered last (304 to both maps), and it
    /// was valid: the caller's map is current. Content that failed validation is never
    /// "unchanged": each fetch returns its error again until it changes.
    Unchanged,
    /// Something changed: the new map.
    Updated(IspMap),
}

struct CachedNetwork {
    url: String,
    etag: Option<String>,
    /// Bumped for every new network map, so a cost map indexed for an older one is refetched.
    generation: u64,
    vtag: String,
    /// The message until a map is built from it (then dropped: the map holds its PIDs).
    raw: Option<NetworkMapMessage>,
    /// The last map built from this network map; a cost-only change reuses its PIDs.
    built: Option<IspMap>,
}

struct CachedCost {
    url: String,
    etag: Option<String>,
    /// The network map generation its costs are indexed for.
    generation: u64,
    parsed: ParsedCostMap,
}

/// Which origins the client may talk to besides the IRD's.
#[derive(Clone, Debug)]
enum Origins {
    /// The IRD's origin and these.
    Listed(Vec<url::Origin>),
    /// Any (the IRD may point anywhere; redirects go anywhere).
    Any,
}

/// A blocking ALTO client for one server (one ISP).
pub struct AltoClient {
    ird_url: String,
    ird_origin: Option<url::Origin>,
    agent: ureq::Agent,
    token: Option<String>,
    limits: ClientLimits,
    /// Whether GETs ask for gzip (`Accept-Encoding`); see [`AltoClient::accept_gzip`].
    gzip: bool,
    origins: Origins,
    network_map: Option<CachedNetwork>,
    cost_map: Option<CachedCost>,
    properties: Option<PropMapMessage>,
    generation: u64,
    /// The caches hold content not delivered yet (a fetch failed after getting it).
    pending: bool,
    delivered: bool,
}

impl std::fmt::Debug for AltoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltoClient")
            .field("ird_url", &self.ird_url)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AltoClient {
    /// A client for the IRD at `ird_url` (e.g. `http://127.0.0.1:7285/directory`), with a 10 s
    /// timeout per request and the default [`ClientLimits`]. HTTPS uses the webpki roots; see
    /// [`AltoClient::with_agent`].
    pub fn new(ird_url: impl Into<String>) -> AltoClient {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Self::with_agent(ird_url, agent)
    }

    /// A client with a custom agent (own TLS roots, proxies, timeouts). Whatever the agent's
    /// configuration, each request is sent with `http_status_as_error(false)` and
    /// `max_redirects(0)`: the client follows redirects itself, within the allowed origins.
    pub fn with_agent(ird_url: impl Into<String>, agent: ureq::Agent) -> AltoClient {
        let ird_url = ird_url.into();
        AltoClient {
            ird_origin: url::Url::parse(&ird_url).ok().map(|u| u.origin()),
            ird_url,
            agent,
            token: None,
            limits: ClientLimits::default(),
            gzip: true,
            origins: Origins::Listed(Vec::new()),
            network_map: None,
            cost_map: None,
            properties: None,
            generation: 0,
            pending: false,
            delivered: false,
        }
    }

    /// Sends `Authorization: Bearer <token>` (for servers with a read token), to the IRD's
    /// origin only.
    pub fn with_token(mut self, token: impl Into<String>) -> AltoClient {
        self.token = Some(token.into());
        self
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: ClientLimits) -> AltoClient {
        self.limits = limits;
        self
    }

    /// Whether to ask for gzip bodies (default yes: a 2,000-PID cost map is 93 MB of JSON,
    /// 23 MB gzipped). `false` asks for `identity`, for a server next door where the
    /// transfer costs less than inflating.
    pub fn accept_gzip(mut self, yes: bool) -> AltoClient {
        self.gzip = yes;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> ClientLimits {
        self.limits
    }

    /// Also allows the origin (scheme, host, port) of `url` for resources named by the IRD and
    /// for redirects. By default only the IRD's own origin is allowed.
    pub fn allow_origin(mut self, url: &str) -> Result<AltoClient, ClientError> {
        let origin = url::Url::parse(url)
            .map_err(|source| ClientError::Url {
                url: url.to_string(),
                source,
            })?
            .origin();
        if let Origins::Listed(list) = &mut self.origins {
            list.push(origin);
        }
        Ok(self)
    }

    /// Allows any origin (the IRD may point the client anywhere and redirects go anywhere;
    /// the token still goes to the IRD's origin only).
    pub fn allow_any_origin(mut self) -> AltoClient {
        self.origins = Origins::Any;
        self
    }

    /// The IRD URL.
    pub fn ird_url(&self) -> &str {
        &self.ird_url
    }

    fn same_origin_as_ird(&self, url: &str) -> bool {
        let origin = url::Url::parse(url).ok().map(|u| u.origin());
        origin.is_some() && origin == self.ird_origin
    }

    fn origin_allowed(&self, url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url) else {
            return false;
        };
        let origin = parsed.origin();
        match &self.origins {
            Origins::Any => true,
            Origins::Listed(list) => {
                origin.is_tuple()
                    && (Some(&origin) == self.ird_origin.as_ref() || list.contains(&origin))
            }
        }
    }

    /// Fetches IRD, network map and cost map (conditionally), and returns the new map or
    /// [`FetchOutcome::Unchanged`]. On an error the caller keeps its last good map; an error
    /// about the content (invalid, too large, empty, too many PIDs) comes back on every fetch
    /// until the content changes.
    pub fn fetch(&mut self) -> Result<FetchOutcome, ClientError> {
        let result = self.fetch_inner();
        if let Err(e) = &result {
            if e.is_content() {
                self.network_map = None;
                self.cost_map = None;
                self.properties = None;
            }
        }
        result
    }

    fn fetch_inner(&mut self) -> Result<FetchOutcome, ClientError> {
        let ird_url = self.ird_url.clone();
        let ird: DirectoryMessage = match self.get(&ird_url, media::DIRECTORY, None)? {
            Got::Fresh(mut res, url) => {
                read_json(&url, &mut res, self.limits.max_ird_bytes, |r| {
                    serde_json::from_reader(r)
                })?
            }
            Got::NotModified => return Err(ClientError::InvalidMap("304 for the IRD".into())),
        };
        let (nm_id, nm_uri) = network_map_entry(&ird)?;
        let cm_uri = cost_map_entry(&ird, &nm_id)?;
        let pm_url = ird
            .resources
            .values()
            .find(|e| e.media_type == media::PROPMAP && e.uses.contains(&nm_id))
            .map(|e| self.resource_url(&e.uri))
            .transpose()?;
        let nm_url = self.resource_url(&nm_uri)?;
        let cm_url = self.resource_url(&cm_uri)?;
        let nm_changed = self.refresh_network_map(&nm_url)?;
        let cm_changed = self.refresh_cost_map(&cm_url)?;
        if !nm_changed && !cm_changed && !self.pending && self.delivered {
            return Ok(FetchOutcome::Unchanged);
        }
        let (Some(nm), Some(cm)) = (&self.network_map, &self.cost_map) else {
            return Err(ClientError::InvalidMap("maps missing after fetch".into()));
        };
        let vtag = nm.vtag.clone();
        let dependent = cm
            .parsed
            .meta
            .dependent_vtags
            .iter()
            .find(|v| v.resource_id == nm_id)
            .map(|v| v.tag.clone())
            .unwrap_or_default();
        if dependent != vtag {
            return Err(ClientError::VtagMismatch {
                network_map: vtag,
                cost_map: dependent,
            });
        }
        let raw = nm.raw.is_some();
        if raw && (nm_changed || self.properties.is_none()) {
            self.properties = match pm_url {
                Some(url) => match self.get(&url, media::PROPMAP, None)? {
                    Got::Fresh(mut res, url) => Some(read_json(
                        &url,
                        &mut res,
                        self.limits.max_property_map_bytes,
                        |r| serde_json::from_reader(r),
                    )?),
                    Got::NotModified => None,
                },
                None => None,
            };
        }
        let (Some(nm), Some(cm)) = (&mut self.network_map, &self.cost_map) else {
            return Err(ClientError::InvalidMap("maps missing after fetch".into()));
        };
        let cost_etag = cm.etag.clone().unwrap_or_default();
        let map = match (&nm.raw, &nm.built) {
            (Some(raw), _) => IspMap::build(
                raw,
                cm.parsed.costs.clone(),
                cost_etag,
                self.properties.as_ref(),
                &host_of(&self.ird_url),
            )?,
            (None, Some(built)) => built.with_costs(cm.parsed.costs.clone(), cost_etag)?,
            (None, None) => return Err(ClientError::InvalidMap("network map missing".into())),
        };
        nm.raw = None;
        nm.built = Some(map.clone());
        self.delivered = true;
        self.pending = false;
        Ok(FetchOutcome::Updated(map))
    }

    /// Resolves a URI from the IRD against the IRD's URL (RFC 3986: absolute, `/path`,
    /// `relative`, `../up` and `?query` forms) and checks that its origin is allowed.
    fn resource_url(&self, uri: &str) -> Result<String, ClientError> {
        let url = resolve(&self.ird_url, uri)?;
        if self.origin_allowed(&url) {
            Ok(url)
        } else {
            Err(ClientError::ForeignOrigin {
                url,
                allowed: self.allowed_origins(),
            })
        }
    }

    fn allowed_origins(&self) -> String {
        let mut all: Vec<String> = self
            .ird_origin
            .iter()
            .map(|o| o.ascii_serialization())
            .collect();
        if let Origins::Listed(list) = &self.origins {
            all.extend(list.iter().map(|o| o.ascii_serialization()));
        }
        all.join(", ")
    }

    /// Conditionally refreshes the network map; `true` when a new one came (checked: not
    /// empty, at most `max_pids` PIDs).
    fn refresh_network_map(&mut self, url: &str) -> Result<bool, ClientError> {
        let etag = self
            .network_map
            .as_ref()
            .filter(|c| c.url == url)
            .and_then(|c| c.etag.clone());
        match self.get(url, media::NETWORK_MAP, etag.as_deref())? {
            Got::NotModified => Ok(false),
            Got::Fresh(mut res, final_url) => {
                let new_etag = http::etag(&res);
                let message: NetworkMapMessage = read_json(
                    &final_url,
                    &mut res,
                    self.limits.max_network_map_bytes,
                    |r| serde_json::from_reader(r),
                )?;
                let pids = message.network_map.len();
                if pids > self.limits.max_pids {
                    return Err(ClientError::TooManyPids {
                        url: final_url,
                        pids,
                        max: self.limits.max_pids,
                    });
                }
                map::check_not_empty(&message)?;
                self.generation += 1;
                self.network_map = Some(CachedNetwork {
                    url: url.to_string(),
                    etag: new_etag,
                    generation: self.generation,
                    vtag: message.meta.vtag.tag.clone(),
                    raw: Some(message),
                    built: None,
                });
                self.pending = true;
                Ok(true)
            }
        }
    }

    /// Conditionally refreshes the cost map (unconditionally when the cached one was indexed
    /// for an older network map); `true` when a new one came.
    fn refresh_cost_map(&mut self, url: &str) -> Result<bool, ClientError> {
        let Some(nm) = &self.network_map else {
            return Err(ClientError::InvalidMap(
                "no network map to index costs".into(),
            ));
        };
        let generation = nm.generation;
        let etag = self
            .cost_map
            .as_ref()
            .filter(|c| c.url == url && c.generation == generation)
            .and_then(|c| c.etag.clone());
        match self.get(url, media::COST_MAP, etag.as_deref())? {
            Got::NotModified => Ok(false),
            Got::Fresh(mut res, final_url) => {
                let new_etag = http::etag(&res);
                let index = match (&nm.raw, &nm.built) {
                    (Some(raw), _) => pid_index(raw.network_map.keys().map(String::as_str)),
                    (None, Some(built)) => pid_index(built.pids.iter().map(|p| p.name.as_str())),
                    (None, None) => HashMap::new(),
                };
                let parsed = read_json(&final_url, &mut res, self.limits.cost_map_bytes(), |r| {
                    parse_cost_map(r, &index)
                })?;
                drop(index);
                self.cost_map = Some(CachedCost {
                    url: url.to_string(),
                    etag: new_etag,
                    generation,
                    parsed,
                });
                self.pending = true;
                Ok(true)
            }
        }
    }
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

/// The routingcost cost map over `network_map`: numerical when the IRD offers one, else
/// ordinal. Selection only uses the order of a row's costs (see the tracker's
/// `selection` module), so an ordinal map steers as well as a numerical one.
fn cost_map_entry(ird: &DirectoryMessage, network_map: &str) -> Result<String, ClientError> {
    let routingcost_in = |mode: &'static str| {
        move |name: &serde_json::Value| {
            name.as_str()
                .and_then(|n| ird.meta.cost_types.get(n))
                .is_some_and(|t| t.cost_metric == cost::ROUTINGCOST && t.cost_mode == mode)
        }
    };
    let maps = || {
        ird.resources
            .values()
            .filter(|e| e.media_type == media::COST_MAP && e.accepts.is_none())
            .filter(|e| e.uses.iter().any(|u| u == network_map))
    };
    let offering = |mode: &'static str| {
        maps().find(|e| {
            e.capabilities
                .as_ref()
                .and_then(|c| c.get("cost-type-names"))
                .and_then(|n| n.as_array())
                .is_some_and(|names| names.iter().any(routingcost_in(mode)))
        })
    };
    offering(cost::NUMERICAL)
        .or_else(|| offering(cost::ORDINAL))
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
