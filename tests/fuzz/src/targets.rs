//! Fuzz target bodies, shared by the libFuzzer binaries (`tests/fuzz/fuzz_targets/*.rs`) and
//! the corpus replay test (`tests/tests/fuzz_corpus.rs`, which includes this file with
//! `#[path]`), so CI runs exactly what the fuzzer ran.
//!
//! Each target takes arbitrary bytes, calls one parser through the crates' public API as the
//! servers and clients do, and panics only when a property breaks: a parser that panics, or a
//! value that parses but does not survive its own encoding. Parsers that only need to hold
//! (no encoder to compare with) are called for their panics alone.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use p4p_itracker::alto::{
    CostMapMessage, DirectoryMessage, EndpointCostRequest, EndpointPropRequest, FieldError,
    FilteredCostMapRequest, FilteredNetworkMapRequest, NetworkMapMessage, PropMapMessage,
};
use p4p_itracker::client::IspMap;
use p4p_itracker::model::TopologyError;
use p4p_itracker::source::asn::AsnDb;
use p4p_itracker::source::graphml;
use p4p_itracker::Topology;
use p4p_tracker::protocol::http::{
    compact_v4, compact_v6, decode_compact_v4, decode_compact_v6, encode_announce, encode_scrape,
    parse_announce, parse_scrape, AnnounceAnswer, AnnounceQuery,
};
use p4p_tracker::protocol::udp::{
    parse_request, parse_response, AddressFamily, AnnounceResponse, ConnectResponse, ErrorResponse,
    Peers, Request, RequestParseError, ResponseView, ScrapeResponse, ScrapeStats, TransactionId,
    ANNOUNCE_REQUEST_LEN, MAX_SCRAPE_TORRENTS, MIN_REQUEST_LEN,
};
use p4p_tracker::types::{Event, InfoHash, SwarmStats};
use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
use serde_bencode::value::Value as Bencode;

/// A fuzz target: arbitrary bytes in, a panic when a property breaks.
pub type Target = fn(&[u8]);

/// Every target by name: the fuzz binaries' names and the corpus directories' names.
pub const TARGETS: &[(&str, Target)] = &[
    ("udp_request", udp_request),
    ("udp_response", udp_response),
    ("http_query", http_query),
    ("bencode_answer", bencode_answer),
    ("alto_client", alto_client),
    ("alto_request", alto_request),
    ("topology_toml", topology_toml),
    ("graphml", graphml_import),
    ("asn_db", asn_db),
];

// ---------------------------------------------------------------------------------------------
// 1. UDP codec (BEP 15)
// ---------------------------------------------------------------------------------------------

/// A datagram as the UDP front end reads it. What parses is written back byte for byte (the
/// fixed part of it); what does not is answered with an error that never outgrows the request.
pub fn udp_request(data: &[u8]) {
    match parse_request(data) {
        Ok(request) => {
            let mut wire = Vec::new();
            request.write(&mut wire);
            let again = parse_request(&wire).expect("a written request parses");
            assert_eq!(again, request, "request round trip");
            let fixed = match request {
                Request::Connect(_) => MIN_REQUEST_LEN,
                Request::Announce(_) => ANNOUNCE_REQUEST_LEN,
                Request::Scrape(ref s) => {
                    assert!((1..=MAX_SCRAPE_TORRENTS).contains(&s.info_hashes.len()));
                    data.len()
                }
            };
            assert_eq!(wire, data[..fixed], "written request is the datagram");
        }
        Err(err) => {
            if data.len() < MIN_REQUEST_LEN {
                assert_eq!(err, RequestParseError::Unsendable);
                return;
            }
            let tid = TransactionId(u32::from_be_bytes(data[12..16].try_into().expect("4")));
            let answer = err.error_response().expect("16 bytes can be answered");
            assert_eq!(answer.transaction_id, tid);
            let mut wire = Vec::new();
            let n = answer.write_truncated(&mut wire, data.len());
            assert_eq!(n, wire.len());
            assert!(n <= data.len(), "an error answer must not amplify");
            match parse_response(&wire, AddressFamily::V4) {
                Ok(ResponseView::Error(e)) => {
                    assert_eq!(e.transaction_id, tid);
                    assert!(answer.message.as_bytes().starts_with(e.message));
                }
                other => panic!("error answer reads back as {other:?}"),
            }
        }
    }
}

/// An answer as a client (the load generator, the tests) reads it; the first byte picks the
/// socket's address family. What parses is written back and must give the same bytes.
pub fn udp_response(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let family = if first & 1 == 0 {
        AddressFamily::V4
    } else {
        AddressFamily::V6
    };
    let Ok(view) = parse_response(bytes, family) else {
        return;
    };
    let mut wire = Vec::new();
    match view {
        ResponseView::Connect(c) => {
            ConnectResponse {
                transaction_id: c.transaction_id,
                connection_id: c.connection_id,
            }
            .write(&mut wire);
            assert_eq!(wire, bytes[..16]);
            return;
        }
        ResponseView::Announce(a) => {
            let peers: Vec<SocketAddr> = a.peers.iter().collect();
            assert_eq!(peers.len(), a.peers.len());
            let v4: Vec<SocketAddrV4> = peers
                .iter()
                .filter_map(|p| match p {
                    SocketAddr::V4(p) => Some(*p),
                    SocketAddr::V6(_) => None,
                })
                .collect();
            let v6: Vec<SocketAddrV6> = peers
                .iter()
                .filter_map(|p| match p {
                    SocketAddr::V6(p) => Some(*p),
                    SocketAddr::V4(_) => None,
                })
                .collect();
            let peers = match family {
                AddressFamily::V4 => {
                    assert!(v6.is_empty());
                    Peers::V4(&v4)
                }
                AddressFamily::V6 => {
                    assert!(v4.is_empty());
                    Peers::V6(&v6)
                }
            };
            AnnounceResponse {
                transaction_id: a.transaction_id,
                interval: a.interval,
                leechers: a.leechers,
                seeders: a.seeders,
                peers,
            }
            .write(&mut wire);
        }
        ResponseView::Scrape(s) => {
            let torrents: Vec<ScrapeStats> = s.iter().collect();
            assert_eq!(torrents.len(), s.len());
            ScrapeResponse {
                transaction_id: s.transaction_id,
                torrents: &torrents,
            }
            .write(&mut wire);
        }
        ResponseView::Error(e) => match std::str::from_utf8(e.message) {
            Ok(message) => ErrorResponse {
                transaction_id: e.transaction_id,
                message,
            }
            .write(&mut wire),
            Err(_) => return,
        },
    }
    assert_eq!(wire, bytes, "answer round trip");
}

// ---------------------------------------------------------------------------------------------
// 2. HTTP query strings
// ---------------------------------------------------------------------------------------------

/// A query string as `GET /announce` and `GET /scrape` read it. What parses is written as a
/// canonical query and must parse to the same value.
pub fn http_query(data: &[u8]) {
    if let Ok(query) = parse_announce(data) {
        assert_ne!(query.port, 0, "port 0 is refused");
        let text = announce_query(&query);
        let again = parse_announce(text.as_bytes())
            .unwrap_or_else(|e| panic!("canonical query {text:?} fails: {e}"));
        assert_eq!(again, query, "announce query round trip");
    }
    let mut hashes = Vec::new();
    if parse_scrape(data, MAX_SCRAPE_TORRENTS, &mut hashes).is_ok() {
        assert!((1..=MAX_SCRAPE_TORRENTS).contains(&hashes.len()));
        let text: Vec<String> = hashes
            .iter()
            .map(|h| format!("info_hash={}", percent_encode(&h.0, NON_ALPHANUMERIC)))
            .collect();
        let mut again = Vec::new();
        parse_scrape(text.join("&").as_bytes(), MAX_SCRAPE_TORRENTS, &mut again)
            .expect("canonical scrape parses");
        assert_eq!(again, hashes, "scrape query round trip");
    }
}

fn announce_query(q: &AnnounceQuery) -> String {
    let enc = |b: &[u8]| percent_encode(b, NON_ALPHANUMERIC).to_string();
    let mut parts = vec![
        format!("info_hash={}", enc(&q.info_hash.0)),
        format!("peer_id={}", enc(&q.peer_id.0)),
        format!("port={}", q.port),
        format!("uploaded={}", q.uploaded),
        format!("downloaded={}", q.downloaded),
        format!("left={}", q.left),
    ];
    match q.event {
        Event::None => {}
        Event::Started => parts.push("event=started".into()),
        Event::Completed => parts.push("event=completed".into()),
        Event::Stopped => parts.push("event=stopped".into()),
    }
    if let Some(n) = q.numwant {
        parts.push(format!("numwant={n}"));
    }
    if !q.compact {
        parts.push("compact=0".into());
    }
    if let Some(ip) = q.ip {
        parts.push(format!("ip={}", enc(ip.to_string().as_bytes())));
    }
    parts.join("&")
}

// ---------------------------------------------------------------------------------------------
// 3. Bencoded answers
// ---------------------------------------------------------------------------------------------

/// Takes fixed-size values from the input, zeros once it runs out.
struct Take<'a>(&'a [u8]);

impl Take<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    fn stats(&mut self) -> SwarmStats {
        SwarmStats {
            complete: self.u32(),
            incomplete: self.u32(),
            downloaded: self.u32(),
        }
    }
}

/// Announce and scrape answers built from the input, encoded, and decoded by an independent
/// bencode implementation (serde_bencode): they must decode, be canonical (sorted keys, so
/// re-encoding gives the same bytes) and carry exactly what was encoded.
pub fn bencode_answer(data: &[u8]) {
    let mut take = Take(data);
    let flags = take.u8();
    let stats = take.stats();
    let (interval, min_interval) = (take.u32(), take.u32());
    let v4: Vec<SocketAddrV4> = (0..take.u8() % 64)
        .map(|_| {
            let b: [u8; 6] = take.array();
            SocketAddrV4::new(
                Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                u16::from_be_bytes([b[4], b[5]]),
            )
        })
        .collect();
    let v6: Vec<SocketAddrV6> = (0..take.u8() % 32)
        .map(|_| {
            let ip: [u8; 16] = take.array();
            let port = u16::from_be_bytes(take.array());
            SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0)
        })
        .collect();
    let compact = flags & 1 == 0;
    let answer = AnnounceAnswer {
        stats,
        interval,
        min_interval,
        v4: &v4,
        v6: &v6,
        compact,
    };
    let mut out = Vec::new();
    encode_announce(&answer, &mut out);
    let dict = decode_canonical(&out);
    let int = |k: &str| match dict.get(k.as_bytes()) {
        Some(Bencode::Int(i)) => *i,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(int("complete"), i64::from(stats.complete));
    assert_eq!(int("incomplete"), i64::from(stats.incomplete));
    assert_eq!(int("downloaded"), i64::from(stats.downloaded));
    assert_eq!(int("interval"), i64::from(interval));
    assert_eq!(int("min interval"), i64::from(min_interval));
    if compact {
        let Some(Bencode::Bytes(peers)) = dict.get(&b"peers"[..]) else {
            panic!("compact peers missing");
        };
        assert_eq!(decode_compact_v4(peers).as_deref(), Some(&v4[..]));
        assert!(v4.iter().flat_map(compact_v4).eq(peers.iter().copied()));
        match dict.get(&b"peers6"[..]) {
            None => assert!(v6.is_empty()),
            Some(Bencode::Bytes(peers6)) => {
                assert_eq!(decode_compact_v6(peers6).as_deref(), Some(&v6[..]));
                assert!(v6.iter().flat_map(compact_v6).eq(peers6.iter().copied()));
            }
            Some(other) => panic!("peers6: {other:?}"),
        }
    } else {
        let Some(Bencode::List(peers)) = dict.get(&b"peers"[..]) else {
            panic!("dictionary peers missing");
        };
        let expected = v4
            .iter()
            .map(|p| SocketAddr::V4(*p))
            .chain(v6.iter().map(|p| SocketAddr::V6(*p)));
        assert_eq!(peers.len(), v4.len() + v6.len());
        for (peer, want) in peers.iter().zip(expected) {
            let Bencode::Dict(peer) = peer else {
                panic!("peer entry {peer:?}");
            };
            let ip = match peer.get(&b"ip"[..]) {
                Some(Bencode::Bytes(ip)) => std::str::from_utf8(ip)
                    .ok()
                    .and_then(|s| s.parse::<IpAddr>().ok()),
                _ => None,
            };
            assert_eq!(ip, Some(want.ip()));
            assert_eq!(
                peer.get(&b"port"[..]),
                Some(&Bencode::Int(want.port().into()))
            );
        }
    }

    // Scrape: entries from the rest of the input (duplicates likely: one byte picks a hash).
    let entries: Vec<(InfoHash, SwarmStats)> = (0..take.u8() % 32)
        .map(|_| {
            let pick = take.u8();
            let mut hash = [pick % 4; 20];
            if pick >= 4 {
                hash = take.array();
            }
            (InfoHash(hash), take.stats())
        })
        .collect();
    let mut out = Vec::new();
    encode_scrape(&entries, &mut out);
    let dict = decode_canonical(&out);
    let Some(Bencode::Dict(files)) = dict.get(&b"files"[..]) else {
        panic!("files missing");
    };
    let mut first: BTreeMap<[u8; 20], SwarmStats> = BTreeMap::new();
    for (hash, stats) in &entries {
        first.entry(hash.0).or_insert(*stats);
    }
    assert_eq!(files.len(), first.len());
    for (hash, stats) in first {
        let Some(Bencode::Dict(entry)) = files.get(&hash[..]) else {
            panic!("hash {hash:?} missing");
        };
        for (key, value) in [
            ("complete", stats.complete),
            ("downloaded", stats.downloaded),
            ("incomplete", stats.incomplete),
        ] {
            assert_eq!(entry.get(key.as_bytes()), Some(&Bencode::Int(value.into())));
        }
    }
}

fn decode_canonical(out: &[u8]) -> HashMap<Vec<u8>, Bencode> {
    let value: Bencode = serde_bencode::from_bytes(out)
        .unwrap_or_else(|e| panic!("{:?} does not decode: {e}", String::from_utf8_lossy(out)));
    let again = serde_bencode::to_bytes(&value).expect("re-encodes");
    assert_eq!(again, out, "not canonical bencode");
    match value {
        Bencode::Dict(d) => d,
        other => panic!("not a dictionary: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 4. ALTO messages as the tracker's client reads them
// ---------------------------------------------------------------------------------------------

/// Bodies as `AltoClient::fetch` reads them (serde_json into the `alto` message types, which is
/// what its private `parse` does), then `IspMap::from_messages` and `combine` as the tracker's
/// refresh task calls them. Input: an IRD body, or (first byte odd) a network map, a cost map and
/// an optional PID property map separated by 0xFF bytes (never in UTF-8 JSON).
pub fn alto_client(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    if first & 1 == 0 {
        if let Ok(ird) = serde_json::from_slice::<DirectoryMessage>(rest) {
            let text = serde_json::to_vec(&ird).expect("serializes");
            let again: DirectoryMessage = serde_json::from_slice(&text).expect("reads back");
            assert_eq!(again, ird, "IRD round trip");
        }
        return;
    }
    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let network = parts
        .next()
        .and_then(|b| serde_json::from_slice::<NetworkMapMessage>(b).ok());
    let cost = parts
        .next()
        .and_then(|b| serde_json::from_slice::<CostMapMessage>(b).ok());
    let props = parts
        .next()
        .and_then(|b| serde_json::from_slice::<PropMapMessage>(b).ok());
    if let Some(network) = &network {
        let text = serde_json::to_vec(network).expect("serializes");
        let again: NetworkMapMessage = serde_json::from_slice(&text).expect("reads back");
        assert_eq!(&again, network, "network map round trip");
    }
    if let Some(cost) = &cost {
        let text = serde_json::to_vec(cost).expect("serializes");
        let again: CostMapMessage = serde_json::from_slice(&text).expect("reads back");
        assert_eq!(again.meta, cost.meta);
        assert!(again.cost_map.keys().eq(cost.cost_map.keys()));
        for (row, again_row) in cost.cost_map.values().zip(again.cost_map.values()) {
            assert!(row.keys().eq(again_row.keys()));
            for (a, b) in row.values().zip(again_row.values()) {
                let close = a.0 == b.0 || (a.0 - b.0).abs() <= 1e-12 * a.0.abs().max(b.0.abs());
                assert!(close, "cost {} reads back as {}", a.0, b.0);
            }
        }
    }
    let (Some(network), Some(cost)) = (network, cost) else {
        return;
    };
    let Ok(map) = IspMap::from_messages(&network, &cost, "etag".into(), props.as_ref(), "fuzz")
    else {
        return;
    };
    let n = map.pids.len();
    assert!(map.known_costs() <= n * n, "at most one cost per pair");
    assert!(map
        .costs()
        .all(|(from, to, c)| from < n && to < n && c.is_finite() && c >= 0.0));
    let snapshot = p4p_itracker::client::combine(std::slice::from_ref(&map), 1.0);
    assert!(!snapshot.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 5. The iTracker's ALTO request bodies
// ---------------------------------------------------------------------------------------------

/// A POST body as each of the iTracker's four POST resources reads it; errors are rendered as
/// the server renders them (RFC 7285 `meta`, JSON).
pub fn alto_request(data: &[u8]) {
    fn error(e: FieldError) {
        let meta = e.to_meta();
        serde_json::to_vec(&meta).expect("error meta serializes");
    }
    if let Err(e) = FilteredNetworkMapRequest::parse(data) {
        error(e);
    }
    match FilteredCostMapRequest::parse(data) {
        Ok(r) => {
            for c in &r.constraints {
                let _ = (c.accepts(0.0), c.accepts(f64::MAX), c.accepts(-1.0));
            }
        }
        Err(e) => error(e),
    }
    if let Err(e) = EndpointPropRequest::parse(data) {
        error(e);
    }
    match EndpointCostRequest::parse(data) {
        Ok(r) => {
            for c in &r.constraints {
                let _ = c.accepts(1.0);
            }
        }
        Err(e) => error(e),
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Topology files: TOML and Topology Zoo GraphML
// ---------------------------------------------------------------------------------------------

/// A topology file as `--topology`, the admin PUT and SIGHUP read it; an accepted topology
/// must build its snapshot (what both binaries do next).
pub fn topology_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topology) = Topology::from_toml_str(text) {
        let snapshot = topology.snapshot();
        assert!(!snapshot.is_empty());
    }
}

/// GraphML as `p4p-itracker import-graphml` reads it. The importer promises TOML that
/// `Topology::from_toml_str` accepts as is: its output must at least parse as TOML and carry
/// valid, distinct names (other validation errors are the operator's to fix).
pub fn graphml_import(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(toml) = graphml::import(text, None) else {
        return;
    };
    match Topology::from_toml_str(&toml) {
        Ok(topology) => {
            topology.snapshot();
        }
        Err(
            e @ (TopologyError::Syntax(_)
            | TopologyError::BadIspName { .. }
            | TopologyError::BadPidName { .. }
            | TopologyError::DuplicatePid(_)),
        ) => panic!("imported TOML is refused: {e}\n{toml}"),
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// 7. The MaxMind ASN database
// ---------------------------------------------------------------------------------------------

/// A database file as `--asn-db` opens it, then lookups as announces and `priv:asn` make them.
pub fn asn_db(data: &[u8]) {
    // The bytes as `--asn-db` would read them from the file (`AsnDb::open` reads the file,
    // then runs the same checks), without a temporary file per input.
    let opened = AsnDb::from_bytes(data.to_vec());
    let Ok(db) = opened else {
        return;
    };
    for ip in [
        "1.0.0.1",
        "12.81.92.7",
        "::ffff:1.0.0.1",
        "2001:db8::1",
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ] {
        let _ = db.lookup(ip.parse().expect("address"));
    }
}
