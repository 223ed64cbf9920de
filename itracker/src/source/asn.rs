//! The MaxMind ASN fallback: the origin AS of addresses outside the ISP's own PIDs.
//!
//! A real GeoLite2-ASN database knows about 75 000 ASes. They are never expanded into PIDs or
//! a matrix: an address's AS is looked up on demand (the database is a compact search tree),
//! "same AS" is one cost class and "different AS" another. ALTO publishes the AS as the
//! endpoint property `priv:asn`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{geoip2, Reader};

/// Why an ASN database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open ASN database {path}: {source}")]
pub struct AsnError {
    path: PathBuf,
    #[source]
    source: maxminddb::MaxMindDbError,
}

/// An opened GeoLite2-ASN (or compatible) database.
pub struct AsnDb {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for AsnDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsnDb")
            .field("database_type", &self.reader.metadata.database_type)
            .field("node_count", &self.reader.metadata.node_count)
            .finish()
    }
}

impl AsnDb {
    /// Opens a database file (read into memory once).
    pub fn open(path: impl AsRef<Path>) -> Result<AsnDb, AsnError> {
        let path = path.as_ref();
        let reader = Reader::open_readfile(path).map_err(|source| AsnError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(AsnDb { reader })
    }

    /// The origin AS of an address, if the database knows it. IPv4-mapped IPv6 addresses are
    /// looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Option<u32> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match self.reader.lookup::<geoip2::Asn>(ip) {
            Ok(found) => found.and_then(|asn| asn.autonomous_system_number),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> AsnDb {
        AsnDb::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/maxmind/GeoLite2-ASN-Test.mmdb"
        ))
        .expect("test database")
    }

    #[test]
    fn knows_the_test_database_entries() {
        let db = db();
        assert_eq!(db.lookup("1.0.0.1".parse().expect("ip")), Some(15169));
        assert_eq!(db.lookup("12.81.92.7".parse().expect("ip")), Some(7018));
        assert_eq!(
            db.lookup("::ffff:1.0.0.1".parse().expect("ip")),
            Some(15169)
        );
        assert_eq!(db.lookup("127.0.0.1".parse().expect("ip")), None);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = AsnDb::open("/nonexistent/asn.mmdb").expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/asn.mmdb"));
    }
}
