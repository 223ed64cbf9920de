//! Access lists, the ops listener with its admin API, and full scrape, over real sockets.
//! Each UDP server gets a loopback address of its own (see `udp.rs`).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p4p_itracker::Snapshot;
use p4p_tests::udp::Client;
use p4p_tests::*;
use p4p_tracker::clock::Clock;
use p4p_tracker::config::{AccessMode, Config};
use p4p_tracker::server::Running;
use p4p_tracker::service::Tracker;
use p4p_tracker::types::{Event, InfoHash};

const A: [u8; 20] = [0xaa; 20];
const B: [u8; 20] = [0xbb; 20];
const C: [u8; 20] = [0xcc; 20];
const TOKEN: &str = "s3cret-admin-token";

fn hex(h: &[u8; 20]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file of its own in the temp directory (removed by the test's end when it can be).
fn temp_file(tag: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p4p-access-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("list.txt");
    std::fs::write(&path, text).expect("write the list");
    path
}

fn config(list: &Path, mode: AccessMode, udp_ip: &str) -> Config {
    let mut c = test_config();
    c.access_list.file = Some(list.to_path_buf());
    c.access_list.mode = mode;
    c.udp.bind = vec![SocketAddr::new(udp_ip.parse().expect("ip"), 0)];
    c
}

async fn start(config: Config) -> Running {
    start_tracker(config, Snapshot::single_pid()).await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("client thread")
}

/// An HTTP announce's failure reason (`None`: answered).
async fn http_announce(server: SocketAddr, hash: [u8; 20], port: u16) -> Option<String> {
    let from: IpAddr = "127.0.0.2".parse().expect("ip");
    let body =
        blocking(move || http_get_from(from, server, &announce_path(&hash, port, 10, ""))).await;
    failure(&decode_dict(&body))
}

async fn udp_announce(server: SocketAddr, hash: [u8; 20], port: u16) -> Result<(), String> {
    blocking(move || {
        Client::new("127.0.0.3", server)
            .announce(hash, port, 0, Event::Started)
            .map(|_| ())
    })
    .await
}

/// (complete, incomplete) per hash from an HTTP scrape.
async fn http_scrape(server: SocketAddr, hashes: &[[u8; 20]]) -> Vec<(i64, i64)> {
    let query: Vec<String> = hashes
        .iter()
        .map(|h| format!("info_hash={}", pct(h)))
        .collect();
    let path = format!("/scrape?{}", query.join("&"));
    let from: IpAddr = "127.0.0.2".parse().expect("ip");
    let body = blocking(move || http_get_from(from, server, &path)).await;
    let d = decode_dict(&body);
    assert_eq!(failure(&d), None, "a scrape is never refused as a whole");
    let files = match d.get(&b"files"[..]) {
        Some(serde_bencode::value::Value::Dict(f)) => f.clone(),
        other => panic!("no files: {other:?}"),
    };
    hashes
        .iter()
        .map(|h| match files.get(&h[..]) {
            Some(serde_bencode::value::Value::Dict(s)) => {
                let s: Dict = s.clone().into_iter().collect();
                (int(&s, "complete"), int(&s, "incomplete"))
            }
            other => panic!("no entry for {h:?}: {other:?}"),
        })
        .collect()
}

async fn udp_scrape(server: SocketAddr, hashes: &[[u8; 20]]) -> Vec<(u32, u32)> {
    let hashes: Vec<InfoHash> = hashes.iter().map(|h| InfoHash(*h)).collect();
    blocking(move || {
        Client::new("127.0.0.3", server)
            .scrape(&hashes)
            .expect("a scrape answer")
            .iter()
            .map(|s| (s.seeders, s.leechers))
            .collect()
    })
    .await
}

/// A raw HTTP/1.1 request: (status, header block, body).
fn request(
    server: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send");
    s.write_all(body).expect("send body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, raw[split + 4..].to_vec())
}

async fn send(
    server: SocketAddr,
    method: &'static str,
    path: &'static str,
    headers: String,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    blocking(move || request(server, method, path, &headers, &body)).await
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// The value of a metric line in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_at(server: SocketAddr) -> String {
    let (status, _, body) = send(server, "GET", "/metrics", String::new(), Vec::new()).await;
    assert_eq!(status, 200);
    String::from_utf8(body).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_mode_serves_the_listed_torrents_only_over_http_and_udp() {
    let list = temp_file("allow", &format!("# allowed\n{}\n\n", hex(&A)));
    let running = start(config(&list, AccessMode::Allow, "127.78.1.1")).await;
    let (http, udp) = (running.http_addrs[0], running.udp_addrs[0]);

    assert_eq!(http_announce(http, A, 7001).await, None);
    assert_eq!(
        http_announce(http, B, 7001).await.as_deref(),
        Some("torrent not allowed")
    );
    assert_eq!(udp_announce(udp, A, 7002).await, Ok(()));
    assert_eq!(
        udp_announce(udp, B, 7002).await,
        Err("torrent not allowed".to_string())
    );
    // The listed torrent has its two peers; the other one is answered with zeros.
    assert_eq!(http_scrape(http, &[A, B]).await, vec![(1, 1), (0, 0)]);
    assert_eq!(udp_scrape(udp, &[A, B]).await, vec![(1, 1), (0, 0)]);

    let text = running.tracker.render_metrics();
    for protocol in ["http", "udp"] {
        let name = format!(
            "p4p_tracker_announces_total{{protocol=\"{protocol}\",outcome=\"not_allowed\"}}"
        );
        assert_eq!(metric(&text, &name), Some(1.0), "{name} in {text}");
    }
    assert_eq!(metric(&text, "p4p_tracker_access_list_entries"), Some(1.0));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_refuses_the_listed_torrents_and_a_reload_applies_at_once() {
    let list = temp_file("deny", &format!("{}\n", hex(&B)));
    let running = start(config(&list, AccessMode::Deny, "127.78.1.2")).await;
    let (http, udp) = (running.http_addrs[0], running.udp_addrs[0]);

    assert_eq!(http_announce(http, A, 7001).await, None);
    assert_eq!(udp_announce(udp, A, 7002).await, Ok(()));
    assert_eq!(
        http_announce(http, B, 7001).await.as_deref(),
        Some("torrent not allowed")
    );
    assert_eq!(
        udp_announce(udp, B, 7002).await,
        Err("torrent not allowed".to_string())
    );
    assert_eq!(http_scrape(http, &[A]).await, vec![(1, 1)]);

    // Deny A too, and reload as SIGHUP does: A is refused at once, and its swarm (whose peers
    // have not expired yet) is hidden from scrapes.
    std::fs::write(&list, format!("{}\n{}\n", hex(&B), hex(&A))).expect("write");
    assert!(running.tracker.reload(), "the reload applies");
    assert_eq!(
        http_announce(http, A, 7003).await.as_deref(),
        Some("torrent not allowed")
    );
    assert_eq!(
        udp_announce(udp, A, 7004).await,
        Err("torrent not allowed".to_string())
    );
    assert_eq!(http_scrape(http, &[A, C]).await, vec![(0, 0), (0, 0)]);
    assert_eq!(udp_scrape(udp, &[A, C]).await, vec![(0, 0), (0, 0)]);
    let text = running.tracker.render_metrics();
    assert_eq!(
        metric(
            &text,
            "p4p_tracker_access_list_reloads_total{outcome=\"applied\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "p4p_tracker_access_list_entries"), Some(2.0));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_without_a_signal() {
    let list = temp_file("watch", &format!("{}\n", hex(&A)));
    let running = start(config(&list, AccessMode::Allow, "127.78.1.3")).await;
    let http = running.http_addrs[0];
    assert!(http_announce(http, B, 7001).await.is_some());
    // Written in place, as an editor might: the watcher waits for it to settle.
    std::fs::write(&list, format!("{}\n{}\n", hex(&A), hex(&B))).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_announce(http, B, 7001).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the changed file was not picked up within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A bad edit keeps the list in use, and is counted.
    std::fs::write(&list, format!("{}\nnot a hash\n", hex(&A))).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = running.tracker.render_metrics();
        if metric(
            &text,
            "p4p_tracker_access_list_reloads_total{outcome=\"refused\"}",
        ) == Some(1.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bad file was not seen: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(http_announce(http, B, 7001).await, None, "old list kept");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_access_list_or_token_file_refuses_the_start() {
    let list = temp_file("bad-start", &format!("{}\n{}\n", hex(&A), &hex(&B)[..30]));
    let c = config(&list, AccessMode::Allow, "127.78.1.4");
    let tracker = Arc::new(Tracker::new(c, Clock::new(), Snapshot::single_pid(), true));
    let err = p4p_tracker::server::start(tracker)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("line 2"), "{err}");

    let token = temp_file("empty-token", "  \n");
    let mut c = test_config();
    c.ops.bind = Some("127.0.0.1:0".parse().expect("addr"));
    c.ops.admin_token_file = Some(token);
    let tracker = Arc::new(Tracker::new(c, Clock::new(), Snapshot::single_pid(), true));
    let err = p4p_tracker::server::start(tracker)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("empty"), "{err}");
}

fn ops_config(list: &Path, token: Option<&str>) -> Config {
    let mut c = config(list, AccessMode::Allow, "127.78.1.5");
    c.udp.bind.clear();
    c.ops.bind = Some("127.0.0.1:0".parse().expect("addr"));
    c.ops.admin_token_file = token.map(|t| temp_file("token", &format!("{t}\n")));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_token_and_a_bad_list_keeps_the_old_one() {
    let list = temp_file("admin", &format!("{}\n", hex(&A)));
    let running = start(ops_config(&list, Some(TOKEN))).await;
    let (http, ops) = (
        running.http_addrs[0],
        running.ops_addr.expect("ops listener"),
    );
    let new_list = format!("{}\n{}\n", hex(&A), hex(&B)).into_bytes();

    let put =
        |headers: String, body: Vec<u8>| send(ops, "PUT", "/admin/access-list", headers, body);
    assert_eq!(put(String::new(), new_list.clone()).await.0, 401);
    assert_eq!(put(bearer("wrong"), new_list.clone()).await.0, 401);
    assert!(http_announce(http, B, 7001).await.is_some(), "unchanged");

    let (status, _, body) = put(
        format!("authorization: bearer {TOKEN}\r\n"),
        new_list.clone(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(http_announce(http, B, 7001).await, None, "B allowed now");
    assert_eq!(
        std::fs::read(&list).expect("read"),
        new_list,
        "file rewritten"
    );

    // A bad list is refused with its line, and the list in use keeps serving.
    let (status, _, body) = put(bearer(TOKEN), format!("{}\nzz\n", hex(&C)).into_bytes()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("line 2"));
    assert_eq!(http_announce(http, B, 7001).await, None);
    assert!(http_announce(http, C, 7001).await.is_some());
    assert_eq!(std::fs::read(&list).expect("read"), new_list, "file kept");

    // Reload from the file: a bad file on disk is refused too; a good one applies.
    std::fs::write(&list, "nonsense\n").expect("write");
    let reload = |headers: String| {
        send(
            ops,
            "POST",
            "/admin/access-list/reload",
            headers,
            Vec::new(),
        )
    };
    assert_eq!(reload(String::new()).await.0, 401);
    assert_eq!(reload(bearer(TOKEN)).await.0, 500);
    assert_eq!(http_announce(http, B, 7001).await, None, "old list kept");
    std::fs::write(&list, format!("{}\n", hex(&C))).expect("write");
    assert_eq!(reload(bearer(TOKEN)).await.0, 200);
    assert_eq!(http_announce(http, C, 7001).await, None);
    assert!(http_announce(http, B, 7001).await.is_some());
    let (status, _, _) = send(ops, "POST", "/admin/reload", bearer(TOKEN), Vec::new()).await;
    assert_eq!(status, 200);

    let text = metrics_at(ops).await;
    assert_eq!(
        metric(
            &text,
            "p4p_tracker_access_list_reloads_total{outcome=\"refused\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "p4p_tracker_access_list_reloads_total{outcome=\"applied\"}"
        ),
        Some(3.0),
        "{text}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_listener_takes_metrics_health_and_topology_off_the_announce_port() {
    let list = temp_file("ops", &format!("{}\n", hex(&A)));
    let running = start(ops_config(&list, None)).await;
    let (http, ops) = (
        running.http_addrs[0],
        running.ops_addr.expect("ops listener"),
    );
    for path in ["/metrics", "/health", "/topology"] {
        let (on_ops, _, _) = send(ops, "GET", path, String::new(), Vec::new()).await;
        assert_eq!(on_ops, 200, "{path} on the ops listener");
        let (on_http, _, _) = send(http, "GET", path, String::new(), Vec::new()).await;
        assert_eq!(on_http, 404, "{path} on the announce port");
    }
    assert!(metrics_at(ops)
        .await
        .contains("p4p_tracker_announces_total"));
    // Without a token the admin API is off.
    let (status, _, body) =
        send(ops, "POST", "/admin/reload", bearer("anything"), Vec::new()).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    // The announce port still announces.
    assert_eq!(http_announce(http, A, 7001).await, None);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_ops_listener_metrics_stay_on_the_announce_port() {
    let running = start(test_config()).await;
    let (status, _, _) = send(
        running.http_addrs[0],
        "GET",
        "/metrics",
        String::new(),
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(running.ops_addr, None);
    running.stop().await;
}

/// Decodes a full-scrape body into (hash, complete, incomplete, downloaded), sorted.
fn full_scrape_entries(body: &[u8]) -> Vec<([u8; 20], i64, i64, i64)> {
    let d = decode_dict(body);
    let files = match d.get(&b"files"[..]) {
        Some(serde_bencode::value::Value::Dict(f)) => f.clone(),
        other => panic!("no files: {other:?} in {}", String::from_utf8_lossy(body)),
    };
    let mut out: Vec<_> = files
        .into_iter()
        .map(|(h, v)| {
            let s: Dict = match v {
                serde_bencode::value::Value::Dict(s) => s.into_iter().collect(),
                other => panic!("not a dict: {other:?}"),
            };
            let hash: [u8; 20] = h.as_slice().try_into().expect("20 bytes");
            (
                hash,
                int(&s, "complete"),
                int(&s, "incomplete"),
                int(&s, "downloaded"),
            )
        })
        .collect();
    out.sort();
    out
}

async fn start_memory(config: Config) -> Running {
    let tracker = Arc::new(Tracker::new(
        config,
        Clock::new(),
        Snapshot::single_pid(),
        true,
    ));
    p4p_tracker::server::start(tracker).await.expect("starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scrape_lists_every_allowed_torrent_gzip_when_asked_and_cached() {
    use std::io::Read as _;
    let list = temp_file("full", &format!("{}\n{}\n", hex(&A), hex(&B)));
    let mut c = config(&list, AccessMode::Allow, "127.78.1.6");
    c.udp.bind.clear();
    c.http.full_scrape = true;
    let running = start_memory(c).await;
    let http = running.http_addrs[0];
    assert_eq!(http_announce(http, A, 7001).await, None);
    assert_eq!(http_announce(http, A, 7002).await, None);
    let from: IpAddr = "127.0.0.5".parse().expect("ip");
    let seed = announce_path(&B, 7003, 0, "&event=completed");
    let body = blocking(move || http_get_from(from, http, &seed)).await;
    assert_eq!(failure(&decode_dict(&body)), None);
    assert!(
        http_announce(http, C, 7004).await.is_some(),
        "C not allowed"
    );

    let (status, head, gz) = send(
        http,
        "GET",
        "/scrape",
        "Accept-Encoding: gzip\r\n".into(),
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let mut plain_from_gz = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut plain_from_gz)
        .expect("a gzip body");
    let want = vec![(A, 0, 2, 0), (B, 1, 0, 1)];
    assert_eq!(full_scrape_entries(&plain_from_gz), want);

    let (status, head, plain) = send(http, "GET", "/scrape", String::new(), Vec::new()).await;
    assert_eq!(status, 200);
    assert!(
        !head.to_ascii_lowercase().contains("content-encoding"),
        "{head}"
    );
    assert_eq!(plain, plain_from_gz, "the same rendering, plain");

    // Within the interval everyone gets the cached rendering: a new torrent does not show.
    list_and_announce_more(&running, &list, http).await;
    let (_, _, again) = send(http, "GET", "/scrape?", String::new(), Vec::new()).await;
    assert_eq!(again, plain);
    let text = running.tracker.render_metrics();
    assert_eq!(
        metric(&text, "p4p_tracker_full_scrape_renders_total"),
        Some(1.0)
    );
    // A scrape naming hashes is still a normal scrape.
    assert_eq!(http_scrape(http, &[C]).await, vec![(0, 1)]);
    running.stop().await;
}

async fn list_and_announce_more(running: &Running, list: &Path, http: SocketAddr) {
    std::fs::write(list, format!("{}\n{}\n{}\n", hex(&A), hex(&B), hex(&C))).expect("write");
    assert!(running.tracker.reload());
    assert_eq!(http_announce(http, C, 7005).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_scrape_is_off_by_default_and_not_offered_on_redis() {
    let running = start_memory(test_config()).await;
    let from: IpAddr = "127.0.0.2".parse().expect("ip");
    let http = running.http_addrs[0];
    let body = blocking(move || http_get_from(from, http, "/scrape")).await;
    assert_eq!(
        failure(&decode_dict(&body)).as_deref(),
        Some("missing info_hash (full scrapes are not served)")
    );
    running.stop().await;

    // The Redis store connects on first use; a full scrape never uses it.
    let mut c = test_config();
    c.http.full_scrape = true;
    c.store.url = "redis://127.0.0.1:1/".into();
    let tracker = Arc::new(
        Tracker::from_config(c, Clock::new(), Snapshot::single_pid(), true).expect("opens"),
    );
    let running = p4p_tracker::server::start(tracker).await.expect("starts");
    let http = running.http_addrs[0];
    let body = blocking(move || http_get_from(from, http, "/scrape")).await;
    assert_eq!(
        failure(&decode_dict(&body)).as_deref(),
        Some("full scrape is not offered on the Redis store")
    );
    running.stop().await;
}
