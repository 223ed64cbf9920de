//! Shared helpers for the integration tests: start real servers on loopback (port 0), talk to
//! them from chosen loopback source addresses, decode their answers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use p4p_itracker::Snapshot;
use p4p_tracker::clock::Clock;
use p4p_tracker::config::Config;
use p4p_tracker::server::Running;
use p4p_tracker::service::Tracker;
use serde_bencode::value::Value;

/// A config for tests: HTTP on 127.0.0.1:0, UDP off, quick intervals.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.http.bind = vec!["127.0.0.1:0".parse().expect("addr")];
    c.http.workers = 1;
    c.udp.bind = vec![];
    c.udp.workers = 1;
    c
}

/// Starts a tracker with `config` and `snapshot`; returns it running.
pub async fn start_tracker(config: Config, snapshot: Snapshot) -> Running {
    let tracker = Arc::new(Tracker::new(config, Clock::new(), snapshot, true));
    p4p_tracker::server::start(tracker).await.expect("tracker starts")
}

/// Percent-encodes every byte (what clients do for binary values).
pub fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Sends `GET path` from source address `from` (any 127.x.y.z) and returns the body. Blocking:
/// call it from `spawn_blocking` in async tests.
pub fn http_get_from(from: IpAddr, server: SocketAddr, path: &str) -> Vec<u8> {
    http_get_with(from, server, path, "")
}

/// [`http_get_from`] with extra request header lines (each ending in `\r\n`).
pub fn http_get_with(from: IpAddr, server: SocketAddr, path: &str, headers: &str) -> Vec<u8> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .expect("bind the source address");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    socket.connect(&server.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    let req = format!("GET {path} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "unexpected status: {head}");
    let body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return dechunk(&body);
    }
    body
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&b[..line_end]).expect("hex").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + size]);
        b = &b[line_end + 2 + size + 2..];
    }
}

/// A decoded bencode dictionary.
pub type Dict = BTreeMap<Vec<u8>, Value>;

/// Decodes a body that must be a bencoded dictionary.
pub fn decode_dict(body: &[u8]) -> Dict {
    match serde_bencode::from_bytes::<Value>(body) {
        Ok(Value::Dict(d)) => d.into_iter().collect(),
        other => panic!("not a bencoded dictionary: {other:?} from {:?}", String::from_utf8_lossy(body)),
    }
}

/// An integer field.
pub fn int(d: &Dict, key: &str) -> i64 {
    match d.get(key.as_bytes()) {
        Some(Value::Int(i)) => *i,
        other => panic!("{key} is not an integer: {other:?}"),
    }
}

/// A byte-string field (empty when absent).
pub fn bytes(d: &Dict, key: &str) -> Vec<u8> {
    match d.get(key.as_bytes()) {
        Some(Value::Bytes(b)) => b.clone(),
        None => Vec::new(),
        other => panic!("{key} is not a byte string: {other:?}"),
    }
}

/// The failure reason, if the answer is one.
pub fn failure(d: &Dict) -> Option<String> {
    match d.get(&b"failure reason"[..]) {
        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).to_string()),
        _ => None,
    }
}

/// Builds an announce path.
pub fn announce_path(info_hash: &[u8; 20], port: u16, left: u64, extra: &str) -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}{extra}",
        pct(info_hash),
        pct(b"-XX0001-000000000000"),
    )
}
