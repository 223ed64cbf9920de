//! The HTTP tracker, over real TCP from distinct loopback source addresses.

use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use p4p_itracker::Snapshot;
use p4p_tests::*;
use p4p_tracker::clock::Clock;
use p4p_tracker::protocol::http::{decode_compact_v4, decode_compact_v6};
use p4p_tracker::service::Tracker;

const HASH: [u8; 20] = *b"integration-test-001";

struct Server {
    running: p4p_tracker::server::Running,
    addr: SocketAddr,
}

impl Server {
    async fn start() -> Server {
        Self::with(test_config()).await
    }

    async fn with(config: p4p_tracker::config::Config) -> Server {
        let running = start_tracker(config, Snapshot::single_pid()).await;
        let addr = running.http_addrs[0];
        Server { running, addr }
    }

    /// GET from a source address, decoded.
    async fn get(&self, from: &str, path: String) -> Dict {
        self.get_with(from, path, "").await
    }

    async fn get_with(&self, from: &str, path: String, headers: &'static str) -> Dict {
        let from: IpAddr = from.parse().expect("source address");
        let addr = self.addr;
        let body = tokio::task::spawn_blocking(move || http_get_with(from, addr, &path, headers))
            .await
            .expect("request thread");
        decode_dict(&body)
    }

    async fn announce(&self, from: &str, port: u16, left: u64, extra: &str) -> Dict {
        let d = self
            .get(from, announce_path(&HASH, port, left, extra))
            .await;
        assert_eq!(failure(&d), None, "announce from {from} failed");
        d
    }

    async fn scrape(&self, hashes: &[[u8; 20]]) -> Dict {
        let q: Vec<String> = hashes
            .iter()
            .map(|h| format!("info_hash={}", pct(h)))
            .collect();
        self.get("127.0.0.1", format!("/scrape?{}", q.join("&")))
            .await
    }
}

fn peers_v4(d: &Dict) -> Vec<SocketAddrV4> {
    let mut v = decode_compact_v4(&bytes(d, "peers")).expect("6-byte entries");
    v.sort();
    v
}

fn v4(list: &[&str]) -> Vec<SocketAddrV4> {
    let mut v: Vec<SocketAddrV4> = list.iter().map(|s| s.parse().expect("addr")).collect();
    v.sort();
    v
}

fn counts(d: &Dict) -> (i64, i64) {
    (int(d, "complete"), int(d, "incomplete"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcers_on_distinct_addresses_get_each_other_back() {
    let s = Server::start().await;
    s.announce("127.0.0.2", 6001, 100, "&event=started").await;
    s.announce("127.0.0.3", 6002, 100, "&event=started").await;
    s.announce("127.0.0.4", 6003, 0, "&event=started").await;
    let d = s.announce("127.0.0.5", 6004, 100, "&event=started").await;
    assert_eq!(counts(&d), (1, 3));
    assert_eq!(int(&d, "interval"), 1800);
    assert_eq!(int(&d, "min interval"), 900);
    assert_eq!(
        peers_v4(&d),
        v4(&["127.0.0.2:6001", "127.0.0.3:6002", "127.0.0.4:6003"]),
        "everyone but the requester"
    );
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_removes_the_peer_and_seeders_get_no_seeders() {
    let s = Server::start().await;
    s.announce("127.0.0.2", 6001, 0, "&event=started").await;
    s.announce("127.0.0.3", 6002, 0, "&event=started").await;
    s.announce("127.0.0.4", 6003, 10, "&event=started").await;
    let d = s.announce("127.0.0.5", 6004, 0, "").await;
    assert_eq!(
        peers_v4(&d),
        v4(&["127.0.0.4:6003"]),
        "a seeder gets leechers only"
    );
    let d = s.announce("127.0.0.4", 6003, 10, "&event=stopped").await;
    assert_eq!(counts(&d), (3, 0));
    assert!(peers_v4(&d).is_empty(), "a stopping peer gets no peers");
    let d = s.announce("127.0.0.6", 6005, 10, "").await;
    assert_eq!(
        peers_v4(&d),
        v4(&["127.0.0.2:6001", "127.0.0.3:6002", "127.0.0.5:6004"])
    );
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_remove_another_by_reusing_its_peer_id() {
    let s = Server::start().await;
    s.announce("127.0.0.2", 6001, 10, "").await;
    // Same peer_id, same port, other address: a different peer, and its stop removes only itself.
    let d = s.announce("127.0.0.3", 6001, 10, "&event=stopped").await;
    assert_eq!(counts(&d), (0, 1));
    let d = s.announce("127.0.0.4", 6002, 10, "").await;
    assert_eq!(peers_v4(&d), v4(&["127.0.0.2:6001"]));
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_counts_known_and_unknown_hashes() {
    let s = Server::start().await;
    s.announce("127.0.0.2", 6001, 0, "").await;
    s.announce("127.0.0.3", 6002, 5, "").await;
    s.announce("127.0.0.3", 6002, 0, "&event=completed").await;
    s.announce("127.0.0.4", 6003, 5, "").await;
    let d = s.scrape(&[HASH, [7; 20]]).await;
    let Some(serde_bencode::value::Value::Dict(files)) = d.get(&b"files"[..]) else {
        panic!("files dictionary")
    };
    let entry = |h: &[u8; 20]| match files.get(&h.to_vec()) {
        Some(serde_bencode::value::Value::Dict(e)) => {
            let e: Dict = e.clone().into_iter().collect();
            (
                int(&e, "complete"),
                int(&e, "downloaded"),
                int(&e, "incomplete"),
            )
        }
        other => panic!("scrape entry: {other:?}"),
    };
    assert_eq!(entry(&HASH), (2, 1, 1));
    assert_eq!(
        entry(&[7; 20]),
        (0, 0, 0),
        "unknown hashes are answered with zeros"
    );
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_expire_through_the_injected_clock() {
    let s = Server::start().await;
    s.announce("127.0.0.2", 6001, 10, "").await;
    s.running.tracker.clock.advance(3000);
    s.announce("127.0.0.3", 6002, 10, "").await;
    s.running.tracker.clock.advance(1000);
    let report = s.running.tracker.sweep().await;
    assert_eq!(report.peers_removed, 1);
    let d = s.announce("127.0.0.4", 6003, 10, "").await;
    assert_eq!(peers_v4(&d), v4(&["127.0.0.3:6002"]));
    assert_eq!(counts(&d), (0, 2));
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numwant_is_honoured_and_capped() {
    let mut config = test_config();
    config.announce.max_numwant = 5;
    let s = Server::with(config).await;
    for i in 2..12 {
        s.announce(&format!("127.0.1.{i}"), 7000, 10, "").await;
    }
    let d = s.announce("127.0.2.1", 7000, 10, "&numwant=3").await;
    assert_eq!(peers_v4(&d).len(), 3);
    let d = s.announce("127.0.2.1", 7000, 10, "&numwant=100").await;
    assert_eq!(peers_v4(&d).len(), 5, "capped at max_numwant");
    let d = s.announce("127.0.2.1", 7000, 10, "&numwant=0").await;
    assert!(peers_v4(&d).is_empty());
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionary_form_when_compact_is_zero() {
    let s = Server::start().await;
    s.announce("127.0.0.2", 6001, 10, "").await;
    let d = s.announce("127.0.0.3", 6002, 10, "&compact=0").await;
    let Some(serde_bencode::value::Value::List(list)) = d.get(&b"peers"[..]) else {
        panic!("peers is a list")
    };
    assert_eq!(list.len(), 1);
    let serde_bencode::value::Value::Dict(p) = &list[0] else {
        panic!("peer dict")
    };
    let p: Dict = p.clone().into_iter().collect();
    assert_eq!(bytes(&p, "ip"), b"127.0.0.2".to_vec());
    assert_eq!(int(&p, "port"), 6001);
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_parameter_and_proxy_headers_are_ignored_unless_configured() {
    let s = Server::start().await;
    s.announce("127.0.0.2", 6001, 10, "&ip=10.9.9.9").await;
    let d = s
        .get_with(
            "127.0.0.3",
            announce_path(&HASH, 6002, 10, ""),
            "X-Forwarded-For: 10.8.8.8\r\n",
        )
        .await;
    assert_eq!(
        peers_v4(&d),
        v4(&["127.0.0.2:6001"]),
        "the source address, not ip="
    );
    let d = s.announce("127.0.0.4", 6003, 10, "").await;
    assert_eq!(peers_v4(&d), v4(&["127.0.0.2:6001", "127.0.0.3:6002"]));
    s.running.stop().await;

    let mut config = test_config();
    config.http.trust_ip_param = true;
    let s = Server::with(config).await;
    s.announce("127.0.0.2", 6001, 10, "&ip=10.9.9.9").await;
    let d = s.announce("127.0.0.4", 6003, 10, "").await;
    assert_eq!(peers_v4(&d), v4(&["10.9.9.9:6001"]));
    s.running.stop().await;

    let mut config = test_config();
    config.http.reverse_proxy = true;
    let s = Server::with(config).await;
    s.get_with(
        "127.0.0.3",
        announce_path(&HASH, 6002, 10, ""),
        "X-Forwarded-For: 1.1.1.1, 10.8.8.8\r\n",
    )
    .await;
    s.get_with(
        "127.0.0.3",
        announce_path(&HASH, 6003, 10, ""),
        "X-Real-IP: 10.7.7.7\r\n",
    )
    .await;
    let d = s
        .get_with(
            "127.0.0.5",
            announce_path(&HASH, 6004, 10, ""),
            "X-Real-IP: 10.6.6.6\r\n",
        )
        .await;
    assert_eq!(peers_v4(&d), v4(&["10.8.8.8:6002", "10.7.7.7:6003"]));
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_failure_reason_and_change_nothing() {
    let mut config = test_config();
    config.http.max_query_len = 400;
    let s = Server::with(config).await;
    s.announce("127.0.0.2", 6001, 10, "").await;
    let peer = pct(b"-XX0001-000000000000");
    let h = pct(&HASH);
    let cases: Vec<(String, &str)> = vec![
        (
            format!("/announce?peer_id={peer}&port=1&left=0"),
            "missing info_hash",
        ),
        (
            format!(
                "/announce?info_hash={}&peer_id={peer}&port=1&left=0",
                pct(&HASH[..19])
            ),
            "invalid info_hash: must be 20 bytes",
        ),
        (
            format!("/announce?info_hash={h}%41&peer_id={peer}&port=1&left=0"),
            "invalid info_hash: must be 20 bytes",
        ),
        (
            format!("/announce?info_hash={h}&port=1&left=0"),
            "missing peer_id",
        ),
        (
            format!("/announce?info_hash={h}&peer_id=abc&port=1&left=0"),
            "invalid peer_id: must be 20 bytes",
        ),
        (
            format!("/announce?info_hash={h}&peer_id={peer}&left=0"),
            "missing port",
        ),
        (
            format!("/announce?info_hash={h}&peer_id={peer}&port=99999&left=0"),
            "invalid port",
        ),
        (
            format!("/announce?info_hash={h}&peer_id={peer}&port=abc&left=0"),
            "invalid port",
        ),
        (
            format!("/announce?info_hash={h}&peer_id={peer}&port=1&left=-5"),
            "invalid left",
        ),
        (
            format!("/announce?info_hash={h}&peer_id={peer}&port=1&left=0&downloaded=1e3"),
            "invalid downloaded",
        ),
        (
            format!("/announce?info_hash={h}&peer_id={peer}&port=1&left=0&event=paused2"),
            "invalid event",
        ),
        (
            format!(
                "/announce?info_hash={h}&peer_id={peer}&port=1&left=0&key={}",
                "k".repeat(400)
            ),
            "query string too long",
        ),
        (
            "/scrape".to_string(),
            "missing info_hash (full scrapes are not served)",
        ),
        (
            format!("/scrape?info_hash={}", pct(b"short")),
            "invalid info_hash: must be 20 bytes",
        ),
    ];
    for (path, reason) in cases {
        let d = s.get("127.0.0.9", path.clone()).await;
        assert_eq!(failure(&d).as_deref(), Some(reason), "{path}");
    }
    let d = s.announce("127.0.0.3", 6002, 10, "").await;
    assert_eq!(counts(&d), (0, 2), "no bad request touched the swarm");
    assert_eq!(peers_v4(&d), v4(&["127.0.0.2:6001"]));
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_give_a_failure_reason() {
    let mut config = test_config();
    config.swarm.max_torrents = 1;
    config.swarm.max_peers_per_swarm = 1;
    let s = Server::with(config).await;
    s.announce("127.0.0.2", 6001, 10, "").await;
    let d = s.get("127.0.0.3", announce_path(&HASH, 6001, 10, "")).await;
    assert_eq!(failure(&d).as_deref(), Some("swarm is full"));
    let d = s
        .get("127.0.0.3", announce_path(&[9; 20], 6001, 10, ""))
        .await;
    assert_eq!(
        failure(&d).as_deref(),
        Some("tracker is tracking too many torrents")
    );
    s.running.stop().await;
}

#[ignore = "needs ::1 (IPv6 loopback); scripts/test runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_swarm_holds_both_families_and_answers_carry_both() {
    assert!(
        std::net::UdpSocket::bind("[::1]:0").is_ok(),
        "::1 cannot be bound on this machine: this test needs IPv6 on loopback"
    );
    let mut config = test_config();
    config.http.bind.push("[::1]:0".parse().expect("addr"));
    let s = Server::with(config).await;
    let v6_server = s.running.http_addrs[1];
    let path = announce_path(&HASH, 6001, 10, "");
    let body = tokio::task::spawn_blocking(move || {
        http_get_from("::1".parse().expect("ip"), v6_server, &path)
    })
    .await
    .expect("thread");
    assert_eq!(failure(&decode_dict(&body)), None);
    s.announce("127.0.0.2", 6002, 10, "").await;
    let d = s.announce("127.0.0.3", 6003, 10, "").await;
    assert_eq!(peers_v4(&d), v4(&["127.0.0.2:6002"]));
    let six: Vec<SocketAddrV6> = decode_compact_v6(&bytes(&d, "peers6")).expect("18-byte entries");
    assert_eq!(
        six,
        vec!["[::1]:6001".parse::<SocketAddrV6>().expect("addr")]
    );
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_answer() {
    let s = Server::start().await;
    s.announce("127.0.0.2", 6001, 10, "").await;
    let addr = s.addr;
    let (metrics, health) = tokio::task::spawn_blocking(move || {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        (
            http_get_from(ip, addr, "/metrics"),
            http_get_from(ip, addr, "/health"),
        )
    })
    .await
    .expect("thread");
    let metrics = String::from_utf8(metrics).expect("utf-8");
    assert!(
        metrics.contains("p4p_tracker_announces_total{protocol=\"http\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("p4p_tracker_peers{kind=\"leechers\"} 1"),
        "{metrics}"
    );
    assert_eq!(health, b"ok\n".to_vec());
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_with_the_reason_while_the_redis_store_is_unreachable() {
    let mut config = test_config();
    // Port 1 on loopback: connection refused at once, no Redis needed.
    config.store.url = "redis://127.0.0.1:1/".into();
    config.store.timeout_ms = 300;
    let tracker = Tracker::from_config(config, Clock::new(), Snapshot::single_pid(), true)
        .expect("a Redis store opens lazily");
    let running = p4p_tracker::server::start(Arc::new(tracker))
        .await
        .expect("tracker starts");
    let addr = running.http_addrs[0];
    let (status, body) = tokio::task::spawn_blocking(move || {
        http_get_status("127.0.0.1".parse().expect("ip"), addr, "/health", "")
    })
    .await
    .expect("thread");
    assert_eq!(status, 503);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "swarm store: temporarily unavailable\n"
    );
    running.stop().await;
}

/// Sends `head` on a fresh connection, returns everything the server sent until it closed.
fn raw_exchange(server: SocketAddr, head: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = s.write_all(head);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A 64 KiB query (past what actix itself accepts: it answered an empty 400) and a head of
/// many headers (an empty 431) get a bencoded failure reason, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_request_line_or_head_gets_a_failure_reason() {
    let s = Server::start().await;
    let addr = s.addr;
    let (long_line, long_head, long_header) = tokio::task::spawn_blocking(move || {
        let path = announce_path(&HASH, 6881, 1, &format!("&key={}", "k".repeat(64 * 1024)));
        let line = raw_exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        let mut head = "GET /announce HTTP/1.1\r\nHost: t\r\n".to_string();
        for i in 0..3000 {
            head.push_str(&format!("X-Filler-{i}: {}\r\n", "v".repeat(40)));
        }
        head.push_str("\r\n");
        let head = raw_exchange(addr, head.as_bytes());
        let header = raw_exchange(
            addr,
            format!(
                "GET /announce HTTP/1.1\r\nCookie: {}\r\n\r\n",
                "c".repeat(20_000)
            )
            .as_bytes(),
        );
        (line, head, header)
    })
    .await
    .expect("client thread");
    for (answer, reason) in [
        (&long_line, "request line too long (query string too long)"),
        (&long_head, "request head too long"),
        (&long_header, "request header line too long"),
    ] {
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:.200}");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let d = decode_dict(body.as_bytes());
        assert_eq!(failure(&d).as_deref(), Some(reason), "{answer:.300}");
    }
    // The server is unharmed.
    s.announce("127.0.0.2", 6001, 10, "").await;
    s.running.stop().await;
}
