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

pub mod own_redis;

/// A built binary: `$env`, else next to this test's own build (target/{release,debug}), else
/// `target/release` under the workspace. A missing one fails the test.
pub fn built_binary(name: &str, env: &str) -> std::path::PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = std::path::PathBuf::from(p);
        assert!(p.is_file(), "{env}={} is not a file", p.display());
        return p;
    }
    let mut candidates = Vec::new();
    // target/<profile>/deps/<test>-<hash>
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
    {
        candidates.push(target.join("release").join(name));
        candidates.push(target.join("debug").join(name));
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    candidates.push(root.join("target/release").join(name));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no {name} binary (looked at ${env}, then {candidates:?}): run \
                 `cargo build --release -p {name}` or set {env} (scripts/test does)"
            )
        })
}

/// A config for tests: HTTP on 127.0.0.1:0, UDP off, quick intervals.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.http.bind = vec!["127.0.0.1:0".parse().expect("addr")];
    c.http.workers = 1;
    c.udp.bind = vec![];
    c.udp.workers = 1;
    c
}

/// Starts a tracker with `config` and `snapshot`; returns it running. With
/// `P4P_TEST_STORE=redis` it runs on the Redis store (see [`with_test_store`]), so the same
/// scenarios cover both stores.
pub async fn start_tracker(config: Config, snapshot: Snapshot) -> Running {
    let config = with_test_store(config);
    let tracker = Arc::new(
        Tracker::from_config(config, Clock::new(), snapshot, true).expect("the store opens"),
    );
    p4p_tracker::server::start(tracker)
        .await
        .expect("tracker starts")
}

/// `config` on the store the environment asks for: unchanged, or with `P4P_TEST_STORE=redis`
/// the Redis at `P4P_TEST_REDIS_URL` under a key prefix of its own.
pub fn with_test_store(mut config: Config) -> Config {
    if std::env::var("P4P_TEST_STORE").as_deref() == Ok("redis") {
        config.store.url = test_redis_url();
        config.store.key_prefix = unique_prefix("scenario");
    }
    config
}

/// The Redis that `scripts/test` started (`P4P_TEST_REDIS_URL`). Tests that call this are
/// `#[ignore = "needs Redis ..."]`, so a plain `cargo test` reports them as ignored; when one runs
/// anyway (`scripts/test` passes `--include-ignored`), a missing Redis fails it.
pub fn test_redis_url() -> String {
    match std::env::var("P4P_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "P4P_TEST_REDIS_URL is not set: this test needs a Redis (scripts/test starts a \
             redis-server and sets it)"
        ),
    }
}

/// A Redis key prefix no other test (or test run) uses.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("t:{tag}:{}:{n}:{nanos}:", std::process::id())
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
    let (status, body) = http_get_status(from, server, path, headers);
    assert_eq!(status, 200, "unexpected status for {path}");
    body
}

/// Sends `GET path` (with extra header lines) and returns the status code and the body,
/// whatever the status.
pub fn http_get_status(
    from: IpAddr,
    server: SocketAddr,
    path: &str,
    headers: &str,
) -> (u16, Vec<u8>) {
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
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line in {head}"));
    let body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, dechunk(&body));
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).expect("hex").trim(), 16)
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
        other => panic!(
            "not a bencoded dictionary: {other:?} from {:?}",
            String::from_utf8_lossy(body)
        ),
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

/// A BEP 15 client on its own socket bound to a chosen loopback source address.
pub mod udp {
    use std::net::{IpAddr, SocketAddr, UdpSocket};
    use std::time::Duration;

    use p4p_tracker::protocol::udp::{
        parse_response, AddressFamily, AnnounceRequest, ConnectRequest, ConnectionId, InfoHashes,
        Request, ResponseView, ScrapeRequest, ScrapeStats, TransactionId,
    };
    use p4p_tracker::types::{Event, InfoHash, PeerId};

    /// An announce answer, decoded.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Announced {
        pub interval: u32,
        pub leechers: u32,
        pub seeders: u32,
        pub peers: Vec<SocketAddr>,
    }

    pub struct Client {
        socket: UdpSocket,
        server: SocketAddr,
        next_tid: u32,
    }

    impl Client {
        pub fn new(from: &str, server: SocketAddr) -> Client {
            let from: IpAddr = from.parse().expect("source address");
            let socket = UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind client");
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            Client {
                socket,
                server,
                next_tid: 1,
            }
        }

        fn family(&self) -> AddressFamily {
            AddressFamily::of(self.server)
        }

        fn tid(&mut self) -> TransactionId {
            self.next_tid += 1;
            TransactionId(self.next_tid)
        }

        /// Sends raw bytes.
        pub fn send(&self, bytes: &[u8]) {
            self.socket.send_to(bytes, self.server).expect("send");
        }

        /// Receives one datagram (panics after 5 s of silence).
        pub fn recv(&self) -> Vec<u8> {
            let mut buf = vec![0u8; 65536];
            let (n, _) = self
                .socket
                .recv_from(&mut buf)
                .expect("an answer within 5 s");
            buf.truncate(n);
            buf
        }

        /// Sends a request and returns the raw answer.
        pub fn exchange(&self, request: &Request<'_>) -> Vec<u8> {
            let mut buf = Vec::new();
            request.write(&mut buf);
            self.send(&buf);
            self.recv()
        }

        pub fn connect(&mut self) -> ConnectionId {
            let tid = self.tid();
            let answer = self.exchange(&Request::Connect(ConnectRequest {
                transaction_id: tid,
            }));
            match parse_response(&answer, self.family()) {
                Ok(ResponseView::Connect(c)) if c.transaction_id == tid => c.connection_id,
                other => panic!("expected a connect answer, got {other:?}"),
            }
        }

        pub fn announce_request(
            &mut self,
            connection_id: ConnectionId,
            info_hash: [u8; 20],
            port: u16,
            left: u64,
            event: Event,
            numwant: i32,
        ) -> AnnounceRequest {
            AnnounceRequest {
                connection_id,
                transaction_id: self.tid(),
                info_hash: InfoHash(info_hash),
                peer_id: PeerId(*b"-XX0001-000000000000"),
                downloaded: 0,
                left,
                uploaded: 0,
                event,
                ip: 0,
                key: 0,
                numwant,
                port,
            }
        }

        /// Sends an announce; `Err(message)` for an error answer.
        pub fn send_announce(&mut self, r: &AnnounceRequest) -> Result<Announced, String> {
            let answer = self.exchange(&Request::Announce(*r));
            match parse_response(&answer, self.family()) {
                Ok(ResponseView::Announce(a)) if a.transaction_id == r.transaction_id => {
                    let mut peers: Vec<SocketAddr> = a.peers.iter().collect();
                    peers.sort();
                    Ok(Announced {
                        interval: a.interval,
                        leechers: a.leechers,
                        seeders: a.seeders,
                        peers,
                    })
                }
                Ok(ResponseView::Error(e)) => Err(String::from_utf8_lossy(e.message).to_string()),
                other => panic!("expected an announce answer, got {other:?}"),
            }
        }

        /// Connects (if needed) and announces.
        pub fn announce(
            &mut self,
            info_hash: [u8; 20],
            port: u16,
            left: u64,
            event: Event,
        ) -> Result<Announced, String> {
            let c = self.connect();
            let r = self.announce_request(c, info_hash, port, left, event, -1);
            self.send_announce(&r)
        }

        pub fn scrape(&mut self, hashes: &[InfoHash]) -> Result<Vec<ScrapeStats>, String> {
            let connection_id = self.connect();
            let tid = self.tid();
            let answer = self.exchange(&Request::Scrape(ScrapeRequest {
                connection_id,
                transaction_id: tid,
                info_hashes: InfoHashes::from_slice(hashes),
            }));
            match parse_response(&answer, self.family()) {
                Ok(ResponseView::Scrape(s)) if s.transaction_id == tid => Ok(s.iter().collect()),
                Ok(ResponseView::Error(e)) => Err(String::from_utf8_lossy(e.message).to_string()),
                other => panic!("expected a scrape answer, got {other:?}"),
            }
        }
    }
}

/// A stand-in ALTO server on 127.0.0.1 port 0 that serves whatever bodies a test sets, per
/// path, with ETags and `304 Not Modified` (for faults a real iTracker would never produce).
pub mod alto_fake {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// Path -> (media type, ETag, body).
    type Routes = Arc<Mutex<HashMap<String, (String, String, Vec<u8>)>>>;

    pub struct AltoFake {
        pub base: String,
        routes: Routes,
    }

    impl AltoFake {
        pub fn start() -> AltoFake {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            let routes: Routes = Arc::default();
            let r = routes.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let r = r.clone();
                    std::thread::spawn(move || serve(stream, &r));
                }
            });
            AltoFake { base, routes }
        }

        /// Serves `body` at `path` as `media_type`; its ETag is a hash of the body.
        pub fn set(&self, path: &str, media_type: &str, body: impl Into<Vec<u8>>) {
            let body = body.into();
            let etag = format!("\"{:x}\"", seahash(&body));
            self.routes
                .lock()
                .expect("routes")
                .insert(path.to_string(), (media_type.to_string(), etag, body));
        }

        /// The URL of `path` on this server.
        pub fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }
    }

    fn seahash(b: &[u8]) -> u64 {
        b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
            (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
        })
    }

    fn serve(stream: TcpStream, routes: &Routes) {
        let Ok(read) = stream.try_clone() else { return };
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut if_none_match = None;
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => return,
                Ok(_) if h == "\r\n" => break,
                Ok(_) => {
                    if let Some((k, v)) = h.split_once(':') {
                        if k.trim().eq_ignore_ascii_case("if-none-match") {
                            if_none_match = Some(v.trim().to_string());
                        }
                    }
                }
            }
        }
        let found = routes.lock().expect("routes").get(&path).cloned();
        let head = match &found {
            None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n".to_string(),
            Some((_, etag, _)) if if_none_match.as_ref() == Some(etag) => {
                format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n")
            }
            Some((media, etag, body)) => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {media}\r\nETag: {etag}\r\nContent-Length: {}\r\n",
                body.len()
            ),
        };
        let mut stream = stream;
        let _ = stream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
        if let Some((_, etag, body)) = found {
            if if_none_match.as_ref() != Some(&etag) {
                let _ = stream.write_all(&body);
            }
        }
    }
}
