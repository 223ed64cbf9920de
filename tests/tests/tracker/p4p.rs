//! P4P selection end to end: real iTrackers (one per ISP) on port 0 serving the loopback
//! topologies, the tracker pointed at them with `--alto`, announcers on 127.1.0.x (ISP A, PID
//! a1) and 127.2.0.x (ISP B, PID b1) over HTTP and UDP.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p4p_itracker::server::{spawn, Background};
use p4p_itracker::Snapshot;
use p4p_tests::udp::Client;
use p4p_tests::*;
use p4p_tracker::config::{Config, PolicyKind};
use p4p_tracker::protocol::http::decode_compact_v4;
use p4p_tracker::server::Running;
use p4p_tracker::service::Tracker;
use p4p_tracker::types::Event;

const HASH: [u8; 20] = *b"p4p-integration-0001";
const TOKEN: &str = "test-admin-token";

fn topology_file(name: &str, dir: &std::path::Path) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../topology-data")
        .join(name);
    let dst = dir.join(name);
    std::fs::copy(&src, &dst).expect("copy topology");
    dst
}

/// An iTracker on a background thread. Stopping blocks on its runtime, which must not happen
/// on an async test's thread, so it is stopped from a plain thread (also when a test panics).
struct Itracker(Option<Background>);

impl Itracker {
    fn url(&self) -> String {
        self.0.as_ref().expect("running").url().to_string()
    }

    fn addr(&self) -> SocketAddr {
        self.0.as_ref().expect("running").addr()
    }

    fn stop(&mut self) {
        if let Some(b) = self.0.take() {
            let _ = std::thread::spawn(move || b.stop()).join();
        }
    }
}

impl Drop for Itracker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn itracker(topology: PathBuf) -> Itracker {
    Itracker(Some(
        spawn(p4p_itracker::config::Config {
            bind: "127.0.0.1:0".parse().expect("addr"),
            topology: Some(topology),
            admin_token: Some(TOKEN.to_string()),
            workers: 1,
            ..p4p_itracker::config::Config::default()
        })
        .expect("iTracker starts"),
    ))
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p4p-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn start(policy: PolicyKind, udp_ip: &str, alto: Vec<String>) -> Running {
    let mut config: Config = test_config();
    config.selection.policy = policy;
    config.topology.alto = alto;
    config.topology.refresh_interval = 1;
    config.udp.bind = vec![SocketAddr::new(udp_ip.parse().expect("ip"), 0)];
    let tracker = Arc::new(Tracker::new(
        config,
        p4p_tracker::clock::Clock::new(),
        Snapshot::single_pid(),
        false,
    ));
    p4p_tracker::server::start(tracker)
        .await
        .expect("tracker starts")
}

/// Waits (bounded) until the tracker serves a snapshot whose version satisfies `ok`.
async fn wait_for_version(running: &Running, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = running.tracker.topology.load().version().to_string();
        if ok(&v) && running.tracker.topology.loaded() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot matching in 20 s (last {v})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 20 leechers and 2 seeders in each of 127.1.0.x and 127.2.0.x, over HTTP.
async fn fill(running: &Running) {
    let http = running.http_addrs[0];
    tokio::task::spawn_blocking(move || {
        for net in [1u8, 2] {
            for host in 2..24u8 {
                let left = if host < 4 { 0 } else { 10 };
                let from: IpAddr = format!("127.{net}.0.{host}").parse().expect("ip");
                let body = http_get_from(
                    from,
                    http,
                    &announce_path(&HASH, 6000, left, "&event=started"),
                );
                assert_eq!(failure(&decode_dict(&body)), None);
            }
        }
    })
    .await
    .expect("fill");
}

/// Share of peers handed to 127.{net}.0.x announcers that sit in their own 127.{net}/16, over
/// HTTP and over UDP.
async fn own_share(running: &Running, net: u8) -> (f64, f64) {
    let http = running.http_addrs[0];
    let udp = running.udp_addrs[0];
    tokio::task::spawn_blocking(move || {
        let (mut http_own, mut http_all, mut udp_own, mut udp_all) = (0, 0, 0, 0);
        for host in 4..24u8 {
            let from = format!("127.{net}.0.{host}");
            let body = http_get_from(
                from.parse().expect("ip"),
                http,
                &announce_path(&HASH, 6000, 10, "&numwant=8"),
            );
            let peers = decode_compact_v4(&bytes(&decode_dict(&body), "peers")).expect("peers");
            http_all += peers.len();
            http_own += peers.iter().filter(|p| p.ip().octets()[1] == net).count();
            let mut c = Client::new(&from, udp);
            let id = c.connect();
            let r = c.announce_request(id, HASH, 6000, 10, Event::None, 8);
            let peers = c.send_announce(&r).expect("udp announce").peers;
            udp_all += peers.len();
            udp_own += peers
                .iter()
                .filter(|p| matches!(p.ip(), IpAddr::V4(v) if v.octets()[1] == net))
                .count();
        }
        assert_eq!(http_all, 20 * 8);
        assert_eq!(udp_all, 20 * 8);
        (
            http_own as f64 / http_all as f64,
            udp_own as f64 / udp_all as f64,
        )
    })
    .await
    .expect("announcers")
}

fn put_topology(itracker: SocketAddr, body: &str) -> String {
    let mut s = TcpStream::connect(itracker).expect("connect iTracker");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "PUT /admin/topology HTTP/1.1\r\nHost: itracker\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/toml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_answers_are_local_random_ones_are_not_and_the_map_survives_its_itracker() {
    let dir = temp_dir("p4p-e2e");
    let isp_a_file = topology_file("loopback.toml", &dir);
    let mut isp_a = itracker(isp_a_file.clone());
    let mut isp_b = itracker(topology_file("loopback-isp-b.toml", &dir));
    let alto = vec![isp_a.url(), isp_b.url()];

    let p4p = start(PolicyKind::P4p, "127.77.30.1", alto.clone()).await;
    let random = start(PolicyKind::Random, "127.77.30.2", alto).await;
    let version = wait_for_version(&p4p, |v| v.contains('+')).await;
    wait_for_version(&random, |v| v == version).await;
    fill(&p4p).await;
    fill(&random).await;

    for net in [1u8, 2] {
        let (http, udp) = own_share(&p4p, net).await;
        eprintln!("p4p 127.{net}/16 own-PID share: http {http:.2} udp {udp:.2}");
        assert!(
            http >= 0.85 && udp >= 0.85,
            "p4p, 127.{net}/16: own share http {http} udp {udp}"
        );
        let (http, udp) = own_share(&random, net).await;
        eprintln!("random 127.{net}/16 own-PID share: http {http:.2} udp {udp:.2}");
        assert!(
            http <= 0.70 && udp <= 0.70,
            "random, 127.{net}/16: own share http {http} udp {udp}"
        );
    }

    // The operator moves 127.5.0.0/16 into a2 through the admin API: a new vtag reaches us.
    let text = std::fs::read_to_string(&isp_a_file).expect("topology");
    let changed = text.replacen(
        "prefixes = [\"127.3.0.0/16\"]",
        "prefixes = [\"127.3.0.0/16\", \"127.5.0.0/16\"]",
        1,
    );
    assert_ne!(changed, text, "the edit applies");
    let addr = isp_a.addr();
    let reply = tokio::task::spawn_blocking(move || put_topology(addr, &changed))
        .await
        .expect("put");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let new_version = wait_for_version(&p4p, |v| v != version).await;
    let snap = p4p.tracker.topology.load();
    let pid = snap.pid(snap.locate("127.5.0.9".parse().expect("ip")));
    assert!(
        pid.name.ends_with("a2"),
        "127.5/16 is in a2 now ({}), version {new_version}",
        pid.name
    );
    drop(snap);

    // The iTrackers go away: announces keep working on the last good map, failures are counted.
    isp_a.stop();
    isp_b.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    while p4p
        .tracker
        .render_metrics()
        .contains("p4p_tracker_topology_refresh_failures_total 0\n")
    {
        assert!(Instant::now() < deadline, "refresh failures are counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (http, udp) = own_share(&p4p, 1).await;
    assert!(
        http >= 0.85 && udp >= 0.85,
        "still local without the iTracker: {http} {udp}"
    );
    assert_eq!(p4p.tracker.topology.load().version(), new_version);

    let topology = p4p.tracker.describe_topology();
    assert!(topology.contains("\"leechers\": 20"), "{topology}");
    p4p.stop().await;
    random.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A valid two-PID map from a stand-in ALTO server (IRD, network map `tag`, cost map).
fn serve_map(fake: &p4p_tests::alto_fake::AltoFake, network_map: serde_json::Value, tag: &str) {
    use p4p_itracker::alto::media;
    let ird = serde_json::json!({
        "meta": {
            "cost-types": {"num-routing": {"cost-mode": "numerical", "cost-metric": "routingcost"}},
            "default-alto-network-map": "nm"
        },
        "resources": {
            "nm": {"uri": fake.url("/networkmap"), "media-type": media::NETWORK_MAP},
            "cm": {"uri": fake.url("/costmap"), "media-type": media::COST_MAP, "uses": ["nm"],
                   "capabilities": {"cost-type-names": ["num-routing"]}}
        }
    });
    fake.set("/directory", media::DIRECTORY, ird.to_string());
    let nm = serde_json::json!({
        "meta": {"vtag": {"resource-id": "nm", "tag": tag}},
        "network-map": network_map
    });
    fake.set("/networkmap", media::NETWORK_MAP, nm.to_string());
    let cm = serde_json::json!({
        "meta": {
            "dependent-vtags": [{"resource-id": "nm", "tag": tag}],
            "cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}
        },
        "cost-map": {"near": {"near": 0, "far": 10}, "far": {"near": 10, "far": 0}}
    });
    fake.set("/costmap", media::COST_MAP, cm.to_string());
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_that_turns_invalid_is_reported_every_round_and_its_age_keeps_growing() {
    let fake = p4p_tests::alto_fake::AltoFake::start();
    let good = serde_json::json!({
        "near": {"ipv4": ["127.1.0.0/16"]},
        "far": {"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]}
    });
    serve_map(&fake, good, "v1");
    let running = start(PolicyKind::P4p, "127.77.32.1", vec![fake.url("/directory")]).await;
    let version = wait_for_version(&running, |_| true).await;
    // The server keeps serving a map the tracker must refuse: no PID holds a prefix.
    serve_map(
        &fake,
        serde_json::json!({"near": {"ipv4": []}, "far": {"ipv4": []}}),
        "v2",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = running.tracker.render_metrics();
        if metric(&text, "p4p_tracker_topology_refresh_failures_total") >= 3.0 {
            // Every round failed, and the age is that of the map in use, not of the last round.
            let age = metric(&text, "p4p_tracker_topology_age_seconds");
            assert!(age >= 2.0, "age {age} after three failed rounds");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an invalid map must be reported every round:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        running.tracker.topology.load().version(),
        version,
        "the last good map keeps serving"
    );
    running.stop().await;
}
