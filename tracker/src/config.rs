//! Configuration: one TOML tree, every field documented, defaults that need no file at all.
//!
//! Precedence: built-in defaults < `--config FILE` < environment variables < command-line flags
//! (the last two through clap, see `main.rs`). `--print-config` prints [`DEFAULT_CONFIG`], the
//! commented default; a unit test keeps it equal to [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

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
}

/// HTTP tracker (BEP 3, 23, 7, 48).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Addresses to listen on. Empty disables HTTP.
    pub bind: Vec<SocketAddr>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Longest accepted query string in bytes; longer requests get a failure reason.
    pub max_query_len: usize,
    /// Honour the client-supplied `ip` parameter (a spoofing vector: off unless every client is
    /// trusted).
    pub trust_ip_param: bool,
    /// Behind a reverse proxy: take the client address from `X-Forwarded-For` (last entry) or
    /// `X-Real-IP`. Off by default, since any client can send those headers.
    pub reverse_proxy: bool,
}

/// UDP tracker (BEP 15).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UdpConfig {
    /// Addresses to listen on. Empty disables UDP.
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
    /// Prefer the requester's PID, then cheap PIDs of its ISP, keep a small remote share.
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
    /// Target cumulative share from the requester's ISP (own PID included).
    pub same_isp_share: f64,
    /// Remote share (peers outside the ISP) when the requester's PID has no local seeder.
    pub remote_share: f64,
    /// Remote share once the requester's PID holds at least `seeded_pid_threshold` seeders.
    pub remote_share_floor: f64,
    /// Seeders in the requester's PID from which the remote share drops to its floor.
    pub seeded_pid_threshold: u32,
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

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: vec![SocketAddr::from(([0, 0, 0, 0], 6969))],
            workers: 0,
            max_query_len: 4096,
            trust_ip_param: false,
            reverse_proxy: false,
        }
    }
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            bind: vec![SocketAddr::from(([0, 0, 0, 0], 6969))],
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

    /// Checks relations between fields that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.selection;
        let shares = [
            s.same_pid_share,
            s.same_isp_share,
            s.remote_share,
            s.remote_share_floor,
        ];
        if shares.iter().any(|x| !(0.0..=1.0).contains(x)) {
            return Err(ConfigError::Invalid(
                "selection shares must be within 0..=1".into(),
            ));
        }
        if s.same_pid_share > s.same_isp_share {
            return Err(ConfigError::Invalid(
                "selection.same_pid_share must not exceed selection.same_isp_share".into(),
            ));
        }
        if s.remote_share_floor <= 0.0 || s.remote_share_floor > s.remote_share {
            return Err(ConfigError::Invalid(
                "selection.remote_share_floor must be above 0 and at most remote_share".into(),
            ));
        }
        if self.announce.max_numwant == 0 || self.announce.default_numwant == 0 {
            return Err(ConfigError::Invalid(
                "announce numwant limits must be positive".into(),
            ));
        }
        if self.swarm.peer_timeout == 0 || self.swarm.sweep_interval == 0 {
            return Err(ConfigError::Invalid(
                "swarm timeouts must be positive".into(),
            ));
        }
        if self.store.timeout_ms == 0 || self.store.max_buckets_per_swarm == 0 {
            return Err(ConfigError::Invalid(
                "store.timeout_ms and store.max_buckets_per_swarm must be positive".into(),
            ));
        }
        if self.swarm.peer_timeout >= 30_000 {
            // Peers store their expiry as 16-bit wrapping seconds (see swarm::memory).
            return Err(ConfigError::Invalid(
                "swarm.peer_timeout must be below 30000 s".into(),
            ));
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
