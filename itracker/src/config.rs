//! The server's configuration: one TOML file, overridable by flags and environment variables
//! (see `main.rs`). Every field has a default, so the server starts with no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `p4p-itracker` configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port of the ALTO listener (admin, metrics and health share it). Port 0
    /// picks a free port.
    pub bind: SocketAddr,
    /// Topology file: the source of truth. `PUT /admin/topology` rewrites it atomically and
    /// SIGHUP reloads it. Unset: the embedded default topology, and admin updates live in
    /// memory only.
    pub topology: Option<PathBuf>,
    /// GeoLite2-ASN database: addresses outside the ISP's internal PIDs get their origin AS.
    pub asn_db: Option<PathBuf>,
    /// File holding the admin bearer token (or set `P4P_ITRACKER_ADMIN_TOKEN`). Without a
    /// token the admin API rejects every call.
    pub admin_token_file: Option<PathBuf>,
    /// File holding a bearer token for the read (ALTO) API. Unset: the read API is open.
    pub read_token_file: Option<PathBuf>,
    /// PEM certificate chain: with `tls_key`, the listener speaks HTTPS (RFC 7285 section
    /// 15.3.2 asks for TLS).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// HTTP worker threads.
    pub workers: usize,
    /// Largest endpoint cost request, in source x destination pairs (an empty source list
    /// counts as one source). Larger requests get `E_INVALID_FIELD_VALUE` on `endpoints`.
    pub max_endpoint_pairs: usize,
    /// Most endpoints in one endpoint property request (`E_INVALID_FIELD_VALUE` beyond).
    pub max_endpoints: usize,
    /// Admin token given directly (from the environment); never written out.
    #[serde(skip)]
    pub admin_token: Option<String>,
    /// Read token given directly; never written out.
    #[serde(skip)]
    pub read_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 7285)),
            topology: None,
            asn_db: None,
            admin_token_file: None,
            read_token_file: None,
            tls_cert: None,
            tls_key: None,
            workers: 2,
            max_endpoint_pairs: 1_000_000,
            max_endpoints: 10_000,
            admin_token: None,
            read_token: None,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown fields.
    #[error("invalid configuration {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

/// The commented default configuration, as `--print-config` shows it.
pub const DEFAULT_CONFIG_TOML: &str = r#"# p4p-itracker configuration. Every field is optional; flags and environment variables
# (P4P_ITRACKER_*) override the file.

# Address and port of the ALTO listener; admin, /metrics and /health share it.
bind = "127.0.0.1:7285"

# Topology file, the source of truth (format: topology-data/README.md). PUT /admin/topology
# rewrites it atomically; SIGHUP reloads it. Unset: the embedded default topology.
# topology = "topology-data/loopback.toml"

# GeoLite2-ASN database: addresses outside the ISP's internal PIDs carry their origin AS
# (endpoint property priv:asn; same AS = defaults.same_asn, different AS = interdomain).
# asn_db = "/var/lib/GeoIP/GeoLite2-ASN.mmdb"

# File with the admin bearer token (or env P4P_ITRACKER_ADMIN_TOKEN). No token: admin API off.
# admin_token_file = "/etc/p4p-itracker/admin.token"

# File with a bearer token required by the read (ALTO) API. Unset: the read API is open.
# read_token_file = "/etc/p4p-itracker/read.token"

# HTTPS: PEM certificate chain and private key. Unset: plain HTTP (for local use).
# tls_cert = "/etc/p4p-itracker/cert.pem"
# tls_key = "/etc/p4p-itracker/key.pem"

# HTTP worker threads.
workers = 2

# Largest endpoint cost request, in sources x destinations pairs (an empty source list counts
# as one). Larger requests are refused with E_INVALID_FIELD_VALUE; the answer is streamed, so
# memory stays small, but CPU time grows with the pairs (about 30 bytes of answer per pair).
max_endpoint_pairs = 1000000

# Most endpoints in one endpoint property request (E_INVALID_FIELD_VALUE beyond).
max_endpoints = 10000
"#;

impl Config {
    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_is_the_default() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).expect("valid");
        assert_eq!(parsed, Config::default());
    }
}
