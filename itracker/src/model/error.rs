//! Why a topology was rejected.

use std::path::PathBuf;

use ipnetwork::IpNetwork;

use super::names::PidNameError;
use super::parts::LinkEnd;

/// Why a topology was rejected. Every variant names what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML or does not have the expected shape.
    #[error("invalid topology file: {0}")]
    Syntax(#[source] toml::de::Error),
    /// The ISP name is not a valid RFC 7285 name.
    #[error("isp name {name:?} {reason}")]
    BadIspName { name: String, reason: PidNameError },
    /// A PID name breaks RFC 7285's PIDName rules.
    #[error("PID name {name:?} {reason}")]
    BadPidName { name: String, reason: PidNameError },
    /// Two PIDs have the same name.
    #[error("PID {0} is defined twice")]
    DuplicatePid(String),
    /// A prefix does not parse or has host bits set.
    #[error("PID {pid}: prefix {prefix:?} {reason}")]
    BadPrefix {
        pid: String,
        prefix: String,
        reason: String,
    },
    /// A prefix is listed in two PIDs (or twice in one).
    #[error("prefix {prefix} is in PID {first} and in PID {second}")]
    DuplicatePrefix {
        prefix: IpNetwork,
        first: String,
        second: String,
    },
    /// A link names a PID that does not exist.
    #[error("link {link}: field {end} names unknown PID {pid:?}")]
    UnknownPid {
        link: String,
        end: LinkEnd,
        pid: String,
    },
    /// A link field has a value the rules forbid.
    #[error("link {link}: field {field} = {value}: {reason}")]
    BadLinkField {
        link: String,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Two links have the same name, or the same (from, to) pair.
    #[error("link {0} is defined twice (by name or by its from/to pair)")]
    DuplicateLink(String),
    /// A computed p-distance is not a finite number, as `f64` or as the `f32` a snapshot
    /// stores (e.g. two link costs of 1e308 summed along a path, or a cost of 1e39).
    #[error(
        "the p-distance from PID {from} to PID {to} is {value}: costs must stay finite and at \
         most 3.4e38 (lower the link costs, defaults or pricing.max_price)"
    )]
    NonFiniteCost {
        from: String,
        to: String,
        value: f64,
    },
    /// More PIDs than a snapshot can index.
    #[error("{0} PIDs (the default one included): at most 65534 are supported")]
    TooManyPids(usize),
    /// A default cost or pricing parameter is out of range.
    #[error("field {field} = {value}: {reason}")]
    BadSetting {
        field: &'static str,
        value: f64,
        reason: &'static str,
    },
}
