//! Configuration: one TOML tree, every field documented, defaults that need no file at all.
//!
//! Precedence: built-in defaults < `--config FILE` < environment variables < command-line flags
//! (the last two through clap, see `main.rs`). `--print-config` prints [`DEFAULT_CONFIG`], the
//! commented default; a unit test keeps it equal to [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::access::AccessMode;

/// The commented default configuration, printed by `--print-config`.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    /// A field (or a pair of fields) holds a value that cannot work.
    #[error("invalid configuration: {field}: {reason}")]
    Invalid {
        /// The field as it is written in the TOML file (`section.name`).
        field: &'static str,
        reason: String,
    },
}

/// Store URL schemes the tracker accepts besides `memory` (see [`StoreConfig::url`]).
pub const STORE_SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "redis+cluster://"];

/// Most UDP workers per address: each is a thread and a socket.
pub const MAX_UDP_WORKERS: usize = 1024;

/// The whole configuration tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub udp: UdpConfig,
    pub announce: AnnounceConfig,
    pub swarm: SwarmConfig,
    pub topology: TopologyConfig,
    pub selection: SelectionConfig,
    pub store: StoreConfig,
    pub access_list: AccessListConfig,
    pub ops: OpsConfig,
    /// Several nodes replicating their swarms (see [`crate::cluster`]).
    pub cluster: crate::cluster::ClusterConfig,
}

/// HTTP tracker (BEP 3, 23, 7, 48).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Addresses to listen on (an IPv6 address serves IPv6 only; list `0.0.0.0:P` and `[::]:P`
    /// for both, as the default does). Empty disables HTTP.
    pub bind: Vec<SocketAddr>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Longest accepted query string in bytes; longer requests get a failure reason. The default
    /// fits a scrape of `announce.max_scrape_hashes` (74) fully percent-encoded info hashes
    /// (71 bytes each with `info_hash=` and `&`).
    pub max_query_len: usize,
    /// Honour the client-supplied `ip` parameter (a spoofing vector: off unless every client is
    /// trusted).
    pub trust_ip_param: bool,
    /// Behind a reverse proxy: take the client address from `X-Forwarded-For` (last entry) or
    /// `X-Real-IP`. Off by default, since any client can send those headers.
    pub reverse_proxy: bool,
    /// Answer `GET /scrape` without `info_hash` with every torrent's counts (a "full scrape";
    /// gzip when the client accepts it). Off: such a scrape gets a failure reason.
    pub full_scrape: bool,
    /// Seconds a rendered full scrape is served before it is rendered again.
    pub full_scrape_interval: u32,
}

/// UDP tracker (BEP 15).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UdpConfig {
    /// Addresses to listen on (an IPv6 address serves IPv6 only; list `0.0.0.0:P` and `[::]:P`
    /// for both, as the default does). Empty disables UDP.
    pub bind: Vec<SocketAddr>,
    /// Socket workers per address, each with its own `SO_REUSEPORT` socket; 0 = one per core.
    pub workers: usize,
    /// Answer an announce or scrape with an unknown or expired connection id with an error
    /// packet (`true`), or drop it silently (`false`).
    pub error_on_bad_connection_id: bool,
    /// Honour the announce's `ip` field (a spoofing vector).
    pub trust_ip_field: bool,
}

/// What announce answers say and hand out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnounceConfig {
    /// Seconds clients should wait between announces (`interval`).
    pub interval: u32,
    /// Seconds clients must wait at least (`min interval`).
    pub min_interval: u32,
    /// Peers handed out when the client does not say (`numwant` absent or negative).
    pub default_numwant: usize,
    /// Most peers handed out in one answer (UDP further caps at 200 IPv4 / 66 IPv6 so that an
    /// answer fits one unfragmented datagram).
    pub max_numwant: usize,
    /// Most info hashes in one scrape (HTTP and UDP); more is refused with an error.
    pub max_scrape_hashes: usize,
}

/// Swarm store limits and expiry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmConfig {
    /// Seconds after its last announce that a peer is dropped.
    pub peer_timeout: u32,
    /// Seconds between sweeps that remove expired peers and empty swarms.
    pub sweep_interval: u32,
    /// Most torrents tracked; announces for new torrents past it are refused.
    pub max_torrents: usize,
    /// Most peers in one swarm; new peers past it are refused.
    pub max_peers_per_swarm: usize,
    /// Most torrents one source (an IPv4 address, an IPv6 /64) may add per minute; announces
    /// that would add more are refused ("too many new torrents from your address"). Bounds
    /// what one host can hold of `max_torrents`: this x `peer_timeout` / 60. 0: no budget.
    pub new_torrents_per_source: u32,
    /// Most peers of one source (an IPv4 address, an IPv6 /64) in one swarm, whatever their
    /// ports; new peers past it are refused ("too many peers from your address in this
    /// swarm"). At most 250; 0: no cap. Memory store only (see `tracker/docs/redis.md`).
    pub max_peers_per_source: u32,
}

/// Where the network map comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopologyConfig {
    /// iTracker IRD URLs (ALTO), one per ISP. Takes precedence over `file`.
    pub alto: Vec<String>,
    /// Topology file (p4p-itracker TOML format), built in-process. Empty: the embedded default.
    pub file: Option<PathBuf>,
    /// MaxMind GeoLite2-ASN database for AS-level nearness outside the ISP maps.
    pub asn_db: Option<PathBuf>,
    /// Seconds between ALTO refreshes.
    pub refresh_interval: u32,
    /// Cost between PIDs of different ISPs.
    pub interdomain_cost: f64,
}

/// Peer selection policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Uniform over the swarm (the classic tracker).
    Random,
    /// Prefer the requester's PID, then PIDs in its stated boundary, then the cheapest others.
    P4p,
}

/// How peers are chosen (see the `selection` module for the rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectionConfig {
    /// `random` or `p4p`.
    pub policy: PolicyKind,
    /// Target share of an answer from the requester's own PID.
    pub same_pid_share: f64,
    /// Target cumulative share of the own and near PIDs (near: the same stated boundary, see
    /// the `selection` module); near PIDs get `same_isp_share - same_pid_share` per swarm.
    pub same_isp_share: f64,
    /// Far share (neither own nor near PIDs), kept per swarm; raised to at least
    /// `1 - same_isp_share` when the requester's own and near PIDs hold no counterpart
    /// (seeder for a leecher, leecher for a seeder).
    pub remote_share: f64,
    /// Remote share once the requester's own and near PIDs hold at least
    /// `seeded_pid_threshold` counterparts.
    pub remote_share_floor: f64,
    /// Counterparts (seeders for a leecher, leechers for a seeder) in the requester's own and
    /// near PIDs from which the remote share drops to its floor.
    pub seeded_pid_threshold: u32,
    /// Whether a seeder's answer is filled up from far PIDs when its own and near PIDs run
    /// short (off: a seeder takes far peers only as its far share; see the `selection` module).
    pub seeder_far_fill: bool,
    /// Whether a leecher whose own and near PIDs hold at least `seeded_pid_threshold` seeders
    /// is filled from far PIDs only up to half its numwant when its own and near PIDs run short
    /// (off: filled up to the whole answer, the rule before; see the `selection` module).
    pub seeded_fill_cap: bool,
    /// Whether a leecher's counterparts (whose number sets its far share) include the
    /// leechers in its own and near PIDs, not only the seeders.
    pub leechers_are_counterparts: bool,
}

/// Swarm store backend (see `tracker/docs/redis.md` for the Redis store).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory`, a Redis URL (`redis://host:port/`), or a Redis Cluster's seed nodes
    /// (`redis+cluster://host1:port1,host2:port2/`).
    pub url: String,
    /// Prefix of every Redis key, so that several deployments (or tests) can share one Redis.
    /// Trackers that share swarms must use the same prefix.
    pub key_prefix: String,
    /// Milliseconds one Redis operation may take, connecting included; past it the announce is
    /// answered "temporarily unavailable".
    pub timeout_ms: u64,
    /// Most PID x family x seeder/leecher buckets in one Redis swarm (bounds the announce
    /// script's work); new peers that would open one more are refused ("swarm is full").
    pub max_buckets_per_swarm: usize,
}

/// Which torrents are served (see the `access` module).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessListConfig {
    /// File of info hashes, one per line (40 hex digits, or 64 for a v2 hash; `#` comments).
    /// Unset: every torrent is served. Reloaded on SIGHUP, when it changes, and through the
    /// admin API.
    pub file: Option<PathBuf>,
    /// `allow`: serve only the listed torrents; `deny`: serve all but the listed ones.
    pub mode: AccessMode,
}

/// The operations listener: metrics, health, topology and the admin API, off the public port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsConfig {
    /// Address for `/metrics`, `/health`, `/topology` and `/admin/*`. When set, those are no
    /// longer served on the HTTP tracker's addresses. Unset: they are served there, and the
    /// admin API is off.
    pub bind: Option<SocketAddr>,
    /// File holding the admin API's bearer token. Unset: the admin API is off.
    pub admin_token_file: Option<PathBuf>,
}

/// IPv4 and IPv6 wildcard addresses on `port`. A host without IPv6 skips the second with a
/// warning at start.
fn dual_stack(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], port)),
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
    ]
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: dual_stack(6969),
            workers: 0,
            max_query_len: 8192,
            trust_ip_param: false,
            reverse_proxy: false,
            full_scrape: false,
            full_scrape_interval: 60,
        }
    }
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            bind: dual_stack(6969),
            workers: 0,
            error_on_bad_connection_id: true,
            trust_ip_field: false,
        }
    }
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            interval: 1800,
            min_interval: 900,
            default_numwant: 50,
            max_numwant: 200,
            max_scrape_hashes: 74,
        }
    }
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            peer_timeout: 2 * 1800 + 300,
            sweep_interval: 60,
            max_torrents: 2_000_000,
            max_peers_per_swarm: 200_000,
            new_torrents_per_source: 1000,
            max_peers_per_source: 32,
        }
    }
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            alto: Vec::new(),
            file: None,
            asn_db: None,
            refresh_interval: 60,
            interdomain_cost: 100.0,
        }
    }
}

impl Default for SelectionConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::P4p,
            same_pid_share: 0.75,
            same_isp_share: 0.90,
            remote_share: 0.10,
            remote_share_floor: 0.02,
            seeded_pid_threshold: 2,
            seeder_far_fill: false,
            seeded_fill_cap: true,
            leechers_are_counterparts: false,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "memory".to_string(),
            key_prefix: "p4p:".to_string(),
            timeout_ms: 500,
            max_buckets_per_swarm: 1024,
        }
    }
}

impl Config {
    /// Reads a TOML file; fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that cannot work, and relations between fields that types cannot express.
    /// The error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        let s = &self.selection;
        for (field, x) in [
            ("selection.same_pid_share", s.same_pid_share),
            ("selection.same_isp_share", s.same_isp_share),
            ("selection.remote_share", s.remote_share),
            ("selection.remote_share_floor", s.remote_share_floor),
        ] {
            if !(0.0..=1.0).contains(&x) {
                return invalid(field, format!("must be within 0..=1 (is {x})"));
            }
        }
        if s.same_pid_share > s.same_isp_share {
            return invalid(
                "selection.same_pid_share",
                "must not exceed selection.same_isp_share".into(),
            );
        }
        if s.remote_share_floor <= 0.0 || s.remote_share_floor > s.remote_share {
            return invalid(
                "selection.remote_share_floor",
                "must be above 0 and at most selection.remote_share".into(),
            );
        }
        let a = &self.announce;
        if a.max_numwant == 0 {
            return invalid("announce.max_numwant", "must be positive".into());
        }
        if a.default_numwant == 0 {
            return invalid("announce.default_numwant", "must be positive".into());
        }
        if a.interval == 0 {
            return invalid("announce.interval", "must be positive".into());
        }
        if a.min_interval > a.interval {
            return invalid(
                "announce.min_interval",
                format!("must not exceed announce.interval ({} s)", a.interval),
            );
        }
        let w = &self.swarm;
        if w.peer_timeout == 0 {
            return invalid("swarm.peer_timeout", "must be positive".into());
        }
        if w.peer_timeout >= 30_000 {
            // Peers store their expiry as 16-bit wrapping seconds (see swarm::memory).
            return invalid("swarm.peer_timeout", "must be below 30000 s".into());
        }
        if a.interval >= w.peer_timeout {
            return invalid(
                "announce.interval",
                format!(
                    "must be below swarm.peer_timeout ({} s): peers would expire before they announce again",
                    w.peer_timeout
                ),
            );
        }
        if w.sweep_interval == 0 || w.sweep_interval >= 30_000 {
            // A sweep must come round before 16-bit expiry times wrap.
            return invalid("swarm.sweep_interval", "must be within 1..30000 s".into());
        }
        if w.max_torrents == 0 {
            return invalid("swarm.max_torrents", "must be positive".into());
        }
        if w.max_peers_per_swarm == 0 {
            return invalid("swarm.max_peers_per_swarm", "must be positive".into());
        }
        if w.max_peers_per_source > crate::swarm::quota::MAX_PEERS_PER_SOURCE {
            return invalid(
                "swarm.max_peers_per_source",
                format!(
                    "must be at most {} (0: no cap)",
                    crate::swarm::quota::MAX_PEERS_PER_SOURCE
                ),
            );
        }
        if self.udp.workers > MAX_UDP_WORKERS {
            return invalid(
                "udp.workers",
                format!("must be at most {MAX_UDP_WORKERS} (one thread and socket each)"),
            );
        }
        self.validate_topology()?;
        self.validate_store()?;
        self.cluster.validate(&self.store)?;
        self.validate_ops()
    }

    fn validate_ops(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.http.full_scrape_interval == 0 {
            return invalid("http.full_scrape_interval", "must be positive".into());
        }
        if self.ops.admin_token_file.is_some() && self.ops.bind.is_none() {
            return invalid(
                "ops.admin_token_file",
                "needs ops.bind: the admin API is served on the ops listener only".into(),
            );
        }
        Ok(())
    }

    fn validate_topology(&self) -> Result<(), ConfigError> {
        let t = &self.topology;
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if !t.alto.is_empty() && t.file.is_some() {
            return invalid(
                "topology.alto",
                "cannot be combined with topology.file (the iTracker's maps would replace the file's): choose one".into(),
            );
        }
        for url in &t.alto {
            let lower = url.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return invalid(
                    "topology.alto",
                    format!("{url:?} is not an http:// or https:// URL of an iTracker's directory (IRD)"),
                );
            }
        }
        if !t.interdomain_cost.is_finite() || t.interdomain_cost < 0.0 {
            return invalid(
                "topology.interdomain_cost",
                format!(
                    "must be a finite cost of 0 or more (is {})",
                    t.interdomain_cost
                ),
            );
        }
        if t.refresh_interval == 0 {
            return invalid("topology.refresh_interval", "must be positive".into());
        }
        Ok(())
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        let st = &self.store;
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if st.url != "memory" && !STORE_SCHEMES.iter().any(|p| st.url.starts_with(p)) {
            return invalid(
                "store.url",
                format!(
                    "{:?} is neither \"memory\" nor a Redis URL ({})",
                    st.url,
                    STORE_SCHEMES.join(", ")
                ),
            );
        }
        if st.timeout_ms == 0 {
            return invalid("store.timeout_ms", "must be positive".into());
        }
        if st.max_buckets_per_swarm == 0 {
            return invalid("store.max_buckets_per_swarm", "must be positive".into());
        }
        Ok(())
    }

    /// Effective maximum numwant for an answer.
    pub fn numwant(&self, asked: Option<i64>) -> usize {
        match asked {
            Some(n) if n >= 0 => (n as usize).min(self.announce.max_numwant),
            _ => self.announce.default_numwant.min(self.announce.max_numwant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_default_is_the_default_and_names_every_field() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG).expect("default config parses");
        assert_eq!(parsed, Config::default());
        let printed: toml::Value = toml::from_str(DEFAULT_CONFIG).expect("toml");
        let actual = toml::Value::try_from(Config::default()).expect("serialize");
        assert_eq!(printed, actual, "default-config.toml must list every field");
        Config::default().validate().expect("defaults are valid");
    }

    /// The field an invalid configuration is refused for.
    fn refused_field(tweak: impl FnOnce(&mut Config)) -> &'static str {
        let mut c = Config::default();
        tweak(&mut c);
        match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_field_named() {
        assert_eq!(
            refused_field(|c| c.announce.min_interval = c.announce.interval + 1),
            "announce.min_interval"
        );
        assert_eq!(
            refused_field(|c| c.announce.interval = c.swarm.peer_timeout),
            "announce.interval"
        );
        assert_eq!(
            refused_field(|c| c.swarm.sweep_interval = 40_000),
            "swarm.sweep_interval"
        );
        assert_eq!(
            refused_field(|c| c.swarm.max_torrents = 0),
            "swarm.max_torrents"
        );
        assert_eq!(
            refused_field(|c| c.swarm.max_peers_per_source = 251),
            "swarm.max_peers_per_source"
        );
        assert_eq!(
            refused_field(|c| c.selection.remote_share = 1.5),
            "selection.remote_share"
        );
        assert_eq!(
            refused_field(|c| c.topology.alto = vec!["127.0.0.1:7285".into()]),
            "topology.alto"
        );
        assert_eq!(
            refused_field(|c| {
                c.topology.alto = vec!["http://127.0.0.1:7285/".into()];
                c.topology.file = Some("x.toml".into());
            }),
            "topology.alto"
        );
        assert_eq!(
            refused_field(|c| c.topology.interdomain_cost = f64::NAN),
            "topology.interdomain_cost"
        );
        assert_eq!(
            refused_field(|c| c.topology.interdomain_cost = -1.0),
            "topology.interdomain_cost"
        );
        assert_eq!(
            refused_field(|c| c.store.url = "memcached://x".into()),
            "store.url"
        );
        assert_eq!(refused_field(|c| c.udp.workers = 30_000), "udp.workers");
        assert_eq!(
            refused_field(|c| c.ops.admin_token_file = Some("t".into())),
            "ops.admin_token_file"
        );
        assert_eq!(
            refused_field(|c| c.http.full_scrape_interval = 0),
            "http.full_scrape_interval"
        );
        let mut ok = Config::default();
        ok.topology.alto = vec!["HTTPS://alto.example.net/directory".into()];
        ok.store.url = "redis+cluster://10.0.0.1:6379,10.0.0.2:6379/".into();
        ok.validate().expect("valid");
    }

    #[test]
    fn the_default_query_limit_fits_the_largest_scrape() {
        let c = Config::default();
        let one = "info_hash=".len() + 3 * 20 + "&".len();
        assert!(c.http.max_query_len >= c.announce.max_scrape_hashes * one);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<Config>("[http]\nbindd = []\n").is_err());
    }

    #[test]
    fn numwant_is_bounded() {
        let c = Config::default();
        assert_eq!(c.numwant(None), 50);
        assert_eq!(c.numwant(Some(-1)), 50);
        assert_eq!(c.numwant(Some(10)), 10);
        assert_eq!(c.numwant(Some(100_000)), 200);
    }
}
