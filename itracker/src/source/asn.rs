//! The MaxMind ASN fallback: the origin AS of addresses outside the ISP's own PIDs.
//!
//! A real GeoLite2-ASN database knows about 75 000 ASes. They are never expanded into PIDs or
//! a matrix: an address's AS is looked up on demand (the database is a compact search tree),
//! "same AS" is one cost class and "different AS" another. ALTO publishes the AS as the
//! endpoint property `priv:asn`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use std::panic::{catch_unwind, AssertUnwindSafe};

use maxminddb::{geoip2, MaxMindDbError, Reader};

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
    /// Opens a database file (read into memory once) and verifies it in full (see
    /// [`AsnDb::from_bytes`]).
    pub fn open(path: impl AsRef<Path>) -> Result<AsnDb, AsnError> {
        let path = path.as_ref();
        let err = |source| AsnError {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::read(path).map_err(|e| err(MaxMindDbError::Io(e)))?;
        Self::verified(bytes).map_err(err)
    }

    /// A database from its bytes, verified in full before it is accepted: the metadata, that
    /// the search tree and data section fit in the file, every search tree record (in bounds,
    /// no cycle, no path longer than the address bits), and every reachable data record
    /// decoded once. A lookup in a verified database never reads out of bounds (the maxminddb
    /// reader panics on such files, e.g. one holding only a valid metadata section).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<AsnDb, AsnError> {
        Self::verified(bytes).map_err(|source| AsnError {
            path: PathBuf::from("(in memory)"),
            source,
        })
    }

    fn verified(bytes: Vec<u8>) -> Result<AsnDb, MaxMindDbError> {
        // The maxminddb reader can panic on malformed bytes while opening (found by fuzzing:
        // metadata and search tree reads out of bounds), not only on lookups: the whole check
        // runs guarded, and a panic is a refused database.
        catch_unwind(AssertUnwindSafe(|| Self::verify(bytes))).unwrap_or_else(|_| {
            Err(MaxMindDbError::InvalidDatabase(
                "malformed database (the reader failed on it)".into(),
            ))
        })
    }

    fn verify(bytes: Vec<u8>) -> Result<AsnDb, MaxMindDbError> {
        let invalid = |m: String| MaxMindDbError::InvalidDatabase(m);
        let tree = tree_layout(&bytes)?;
        let records = walk_tree(&tree, &bytes)?;
        // Every data record is checked by a bounded walk before the reader's recursive decoder
        // sees it (a pointer cycle would recurse until the stack overflows: found by fuzzing).
        let data = &bytes[tree.data_start..tree.data_start + tree.data_len];
        for &(ip, offset) in &records {
            check_value(data, offset, 0, &mut VALUES_PER_RECORD.clone())
                .map_err(|e| invalid(format!("data record of {ip}: {e}")))?;
        }
        // In bounds now: the reader's own reads of the tree at open cannot fail.
        let reader = Reader::from_source(bytes)?;
        let db = AsnDb { reader };
        for (ip, _) in records {
            let decoded = catch_unwind(AssertUnwindSafe(|| db.reader.lookup::<geoip2::Asn>(ip)));
            match decoded {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(invalid(format!("data record of {ip}: {e}"))),
                Err(_) => return Err(invalid(format!("data record of {ip} cannot be decoded"))),
            }
        }
        Ok(db)
    }
}

/// Checks every search tree record and returns one address per distinct data record, with the
/// record's offset in the data section.
fn walk_tree(tree: &TreeLayout, buf: &[u8]) -> Result<Vec<(IpAddr, usize)>, MaxMindDbError> {
    const UNSEEN: u8 = u8::MAX;
    const ACTIVE: u8 = u8::MAX - 1;
    let invalid = |m: String| MaxMindDbError::InvalidDatabase(m);
    let n = tree.node_count;
    let bits = tree.bit_count;
    let mut height = vec![UNSEEN; n];
    let mut data: std::collections::HashMap<usize, u128> = std::collections::HashMap::new();
    // (node, next side, address bits so far, depth, height of the subtree so far)
    let mut stack: Vec<(usize, u8, u128, u32, u8)> = vec![(0, 0, 0, 0, 0)];
    height[0] = ACTIVE;
    while let Some(top) = stack.last_mut() {
        let (node, side, path, depth, h) = *top;
        if side == 2 {
            height[node] = h;
            stack.pop();
            if let Some(parent) = stack.last_mut() {
                parent.4 = parent.4.max(h + 1);
            }
            continue;
        }
        top.1 += 1;
        let record = tree.record(buf, node, usize::from(side));
        let child_path = path | (u128::from(side) << (bits - 1 - depth));
        let child_depth = depth + 1;
        if record < n {
            match height[record] {
                ACTIVE => return Err(invalid(format!("search tree cycle at node {record}"))),
                UNSEEN if child_depth < bits => {
                    height[record] = ACTIVE;
                    stack.push((record, 0, child_path, child_depth, 0));
                }
                sub if sub != UNSEEN && child_depth + u32::from(sub) < bits => {
                    top.4 = top.4.max(sub + 1);
                }
                _ => {
                    return Err(invalid(format!(
                        "search tree deeper than {bits} bits at node {record}"
                    )))
                }
            }
        } else if record > n {
            let offset = record - n;
            if offset < 16 || offset - 16 >= tree.data_len {
                return Err(invalid(format!(
                    "node {node} points outside the data section ({record})"
                )));
            }
            data.entry(record).or_insert(child_path);
        }
    }
    Ok(data
        .into_iter()
        .map(|(record, path)| {
            let ip = if bits == 32 {
                IpAddr::from(std::net::Ipv4Addr::from(path as u32))
            } else {
                IpAddr::from(std::net::Ipv6Addr::from(path))
            };
            (ip, record - n - 16)
        })
        .collect())
}

impl AsnDb {
    /// The origin AS of an address, if the database knows it. IPv4-mapped IPv6 addresses are
    /// looked up as IPv4. A failing lookup (which a verified database does not have) is
    /// `None`, never a panic.
    pub fn lookup(&self, ip: IpAddr) -> Option<u32> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match catch_unwind(AssertUnwindSafe(|| self.reader.lookup::<geoip2::Asn>(ip))) {
            Ok(Ok(found)) => found.and_then(|asn| asn.autonomous_system_number),
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::error!(%ip, "ASN database lookup panicked; answering unknown AS");
                None
            }
        }
    }
}

/// Where the search tree and data section lie, checked against the file's size.
struct TreeLayout {
    node_count: usize,
    record_size: usize,
    bit_count: u32,
    /// Where the data section starts (after the search tree and the 16-byte separator).
    data_start: usize,
    /// Bytes of the data section (between the 16-byte separator and the metadata marker).
    data_len: usize,
}

impl TreeLayout {
    /// Record `side` (0 or 1) of `node` (in bounds: checked by [`tree_layout`]).
    fn record(&self, buf: &[u8], node: usize, side: usize) -> usize {
        let base = node * self.record_size / 4;
        let be = |b: &[u8]| b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        match self.record_size {
            24 => be(&buf[base + side * 3..base + side * 3 + 3]),
            28 => {
                let middle = if side == 0 {
                    usize::from(buf[base + 3] >> 4)
                } else {
                    usize::from(buf[base + 3] & 0x0f)
                };
                (middle << 24) | be(&buf[base + side * 4..base + side * 4 + 3])
            }
            _ => be(&buf[base + side * 4..base + side * 4 + 4]),
        }
    }
}

const METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

/// Reads the metadata's tree parameters and checks that the tree, the separator and the data
/// section fit before the metadata.
fn tree_layout(buf: &[u8]) -> Result<TreeLayout, MaxMindDbError> {
    let invalid = |m: String| MaxMindDbError::InvalidDatabase(m);
    let marker = buf
        .windows(METADATA_MARKER.len())
        .rposition(|w| w == METADATA_MARKER)
        .ok_or_else(|| invalid("no MaxMind DB metadata in the file".into()))?;
    check_value(
        &buf[marker + METADATA_MARKER.len()..],
        0,
        0,
        &mut VALUES_PER_RECORD.clone(),
    )
    .map_err(|e| invalid(format!("metadata: {e}")))?;
    // The reader reads the first tree nodes at open: on a truncated file it can panic.
    let meta = catch_unwind(AssertUnwindSafe(|| Reader::from_source(buf)))
        .map_err(|_| {
            invalid(format!(
                "the search tree is not where the metadata says (truncated or not a database; \
                 metadata at byte {marker})"
            ))
        })??
        .metadata;
    let record_size = meta.record_size as usize;
    if ![24, 28, 32].contains(&record_size) {
        return Err(invalid(format!("record size {record_size} (24, 28 or 32)")));
    }
    let bit_count = match meta.ip_version {
        4 => 32,
        6 => 128,
        v => return Err(invalid(format!("ip_version {v} (4 or 6)"))),
    };
    let node_count = meta.node_count as usize;
    if node_count == 0 {
        return Err(invalid("empty search tree (node_count 0)".into()));
    }
    let tree_bytes = node_count
        .checked_mul(record_size)
        .map(|b| b / 4)
        .filter(|b| b.saturating_add(16) <= marker)
        .ok_or_else(|| {
            invalid(format!(
                "the search tree ({node_count} nodes of {record_size} bits) and the data \
                 section do not fit before the metadata at byte {marker}: truncated or not a \
                 database"
            ))
        })?;
    if buf[tree_bytes..tree_bytes + 16].iter().any(|&b| b != 0) {
        return Err(invalid(
            "no 16-byte zero separator after the search tree".into(),
        ));
    }
    Ok(TreeLayout {
        node_count,
        record_size,
        bit_count,
        data_start: tree_bytes + 16,
        data_len: marker - tree_bytes - 16,
    })
}

/// Deepest nesting (maps, arrays, pointers) a value may have: real ASN records nest 2-3 deep.
const MAX_DEPTH: u32 = 32;
/// Most values one record (or the metadata) may hold, pointers followed.
const VALUES_PER_RECORD: u32 = 100_000;

/// Walks one value of the MaxMind DB data format (section = the data section, or the metadata
/// section, which pointers are relative to) without recursing past [`MAX_DEPTH`] or decoding
/// more than `budget` values, and checks every length, pointer and type against the spec.
/// Returns where the value ends (for a pointer: after the pointer itself).
fn check_value(section: &[u8], at: usize, depth: u32, budget: &mut u32) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "values nested deeper than {MAX_DEPTH} (a pointer cycle?)"
        ));
    }
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| format!("more than {VALUES_PER_RECORD} values in one record"))?;
    let byte = |i: usize| {
        section
            .get(i)
            .copied()
            .ok_or_else(|| format!("value at byte {at} runs past its section"))
    };
    let be = |from: usize, n: usize| -> Result<usize, String> {
        (from..from + n).try_fold(0usize, |acc, i| Ok((acc << 8) | usize::from(byte(i)?)))
    };
    let ctrl = byte(at)?;
    let mut pos = at + 1;
    let mut kind = ctrl >> 5;
    if kind == 1 {
        let extra = usize::from((ctrl >> 3) & 3);
        let low = usize::from(ctrl & 7);
        let raw = be(pos, extra + 1)?;
        let target = match extra {
            0 => (low << 8) | raw,
            1 => ((low << 16) | raw) + 2048,
            2 => ((low << 24) | raw) + 526_336,
            _ => raw,
        };
        if byte(target)? >> 5 == 1 {
            return Err(format!("pointer at byte {at} points at another pointer"));
        }
        check_value(section, target, depth + 1, budget)?;
        return Ok(pos + extra + 1);
    }
    if kind == 0 {
        kind = 7u8.saturating_add(byte(pos)?);
        pos += 1;
        if kind < 8 {
            return Err(format!("extended type {kind} at byte {at}"));
        }
    }
    let size = match ctrl & 0x1f {
        29 => 29 + be(pos, 1)?,
        30 => 285 + be(pos, 2)?,
        31 => 65_821 + be(pos, 3)?,
        s => usize::from(s),
    };
    pos += match ctrl & 0x1f {
        29 => 1,
        30 => 2,
        31 => 3,
        _ => 0,
    };
    let payload = |max: Option<usize>| -> Result<usize, String> {
        if max.is_some_and(|m| size > m) {
            return Err(format!("type {kind} of {size} bytes at byte {at}"));
        }
        if pos + size > section.len() {
            return Err(format!("value at byte {at} runs past its section"));
        }
        Ok(pos + size)
    };
    match kind {
        2 | 4 => payload(None),
        3 if size == 8 => payload(None),
        15 if size == 4 => payload(None),
        5 => payload(Some(2)),
        6 | 8 => payload(Some(4)),
        9 => payload(Some(8)),
        10 => payload(Some(16)),
        14 if size <= 1 => Ok(pos),
        7 => {
            for _ in 0..size {
                pos = check_value(section, pos, depth + 1, budget)?;
                pos = check_value(section, pos, depth + 1, budget)?;
            }
            Ok(pos)
        }
        11 => {
            for _ in 0..size {
                pos = check_value(section, pos, depth + 1, budget)?;
            }
            Ok(pos)
        }
        _ => Err(format!("type {kind} (size {size}) at byte {at}")),
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

    fn test_bytes() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/maxmind/GeoLite2-ASN-Test.mmdb"
        ))
        .expect("test database")
    }

    /// Issue 16 item 3: a file holding only a valid metadata section passed the open check,
    /// then panicked on the first lookup. It is refused at open, with the reason.
    #[test]
    fn a_database_with_only_its_metadata_is_refused_at_open() {
        let bytes = test_bytes();
        let marker = bytes
            .windows(METADATA_MARKER.len())
            .rposition(|w| w == METADATA_MARKER)
            .expect("marker");
        let err = AsnDb::from_bytes(bytes[marker..].to_vec()).expect_err("refused");
        let text = format!("{err}: {}", err.source);
        assert!(
            text.contains("truncated") || text.contains("not where"),
            "{text}"
        );
        let dir = std::env::temp_dir().join(format!("p4p-asn-meta-{}", std::process::id()));
        std::fs::write(&dir, &bytes[marker..]).expect("write");
        assert!(AsnDb::open(&dir).is_err());
        let _ = std::fs::remove_file(&dir);
        // Truncating the data section is refused too.
        let mut cut = bytes[..marker / 2].to_vec();
        cut.extend_from_slice(&bytes[marker..]);
        assert!(AsnDb::from_bytes(cut).is_err());
    }

    /// Any single corrupted byte: refused at open, or every lookup answers without panicking.
    #[test]
    fn corrupted_databases_never_panic() {
        let bytes = test_bytes();
        let probes: Vec<IpAddr> = ["1.0.0.1", "12.81.92.7", "::1", "2001:db8::1", "8.8.8.8"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        for i in (0..bytes.len()).step_by(7) {
            for v in [0x00, 0xff, bytes[i] ^ 0x10] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(db) = AsnDb::from_bytes(b) {
                    for ip in &probes {
                        let _ = db.lookup(*ip);
                    }
                }
            }
        }
        assert!(AsnDb::from_bytes(test_bytes()).is_ok());
    }

    /// MaxMind DB data-format encoding, enough for hand-made databases.
    fn ctrl(kind: u8, size: usize) -> Vec<u8> {
        assert!(size < 29);
        if kind <= 7 {
            vec![(kind << 5) | size as u8]
        } else {
            vec![size as u8, kind - 7]
        }
    }
    fn string(s: &str) -> Vec<u8> {
        [ctrl(2, s.len()), s.as_bytes().to_vec()].concat()
    }
    fn uint16(v: u16) -> Vec<u8> {
        [ctrl(5, 2), v.to_be_bytes().to_vec()].concat()
    }
    fn map(pairs: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = ctrl(7, pairs.len());
        for (k, v) in pairs {
            out.extend(string(k));
            out.extend(v);
        }
        out
    }

    /// An IPv4 database of one tree node whose two records point at the data section's first
    /// value, `data`.
    fn one_node_db(data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 17, 0, 0, 17]; // 24-bit records: node_count 1 + 16 + offset 0
        b.extend([0u8; 16]);
        b.extend(data);
        b.extend(METADATA_MARKER);
        b.extend(map(&[
            ("node_count", [ctrl(6, 1), vec![1]].concat()),
            ("record_size", uint16(24)),
            ("ip_version", uint16(4)),
            ("database_type", string("GeoLite2-ASN")),
            ("languages", ctrl(11, 0)),
            ("binary_format_major_version", uint16(2)),
            ("binary_format_minor_version", uint16(0)),
            ("build_epoch", [ctrl(9, 1), vec![1]].concat()),
            ("description", map(&[])),
        ]));
        b
    }

    /// Found by fuzzing (once caught panics no longer ended the run): a data record holding a
    /// pointer back to itself made the reader's decoder recurse until the stack overflowed,
    /// killing the process at open. The bounded walk refuses it first.
    #[test]
    fn a_data_record_that_points_at_itself_is_refused_not_a_stack_overflow() {
        // {"a": <pointer to offset 0>}: the map contains itself.
        let mut cyclic_map = ctrl(7, 1);
        cyclic_map.extend(string("a"));
        cyclic_map.extend([0x20, 0x00]);
        let err = AsnDb::from_bytes(one_node_db(&cyclic_map)).expect_err("refused");
        assert!(
            err.source.to_string().contains("deeper than"),
            "{}",
            err.source
        );
        // The same database with a plain record opens and answers.
        let good = map(&[(
            "autonomous_system_number",
            [ctrl(6, 2), vec![0xfb, 0xf4]].concat(),
        )]);
        let db = AsnDb::from_bytes(one_node_db(&good)).expect("a well-formed database opens");
        assert_eq!(db.lookup("10.0.0.1".parse().expect("ip")), Some(64500));
        // A cycle in the metadata is refused the same way, before the reader parses it.
        let mut meta_cycle = vec![0, 0, 17, 0, 0, 17];
        meta_cycle.extend([0u8; 16]);
        meta_cycle.extend(&good);
        meta_cycle.extend(METADATA_MARKER);
        meta_cycle.extend(&cyclic_map);
        let err = AsnDb::from_bytes(meta_cycle).expect_err("refused");
        assert!(
            err.source.to_string().contains("metadata"),
            "{}",
            err.source
        );
    }

    /// The bounded walk accepts what MaxMind's writers produce, not only the ASN layout: the
    /// GeoIP2 ISP test database (richer records, shared strings behind pointers) opens too.
    #[test]
    fn maxminds_isp_database_passes_the_full_check() {
        let db = AsnDb::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/maxmind/GeoIP2-ISP-Test.mmdb"
        ))
        .expect("MaxMind's ISP test database opens");
        assert!(db.reader.metadata.node_count > 0);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = AsnDb::open("/nonexistent/asn.mmdb").expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/asn.mmdb"));
    }
}
