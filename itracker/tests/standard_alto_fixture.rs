//! The locality experiment's standard ALTO server (`tests/experiment/alto_server.py`, what an
//! ISP's off-the-shelf RFC 7285 server publishes: an IRD, one network map, one routingcost cost
//! map, nothing private) speaks valid RFC 7285: every message it serves validates against the
//! RFC 7285 JSON Schemas, with the right media types, and our ALTO client reads it.
//!
//! Needs `/usr/bin/python3` (standard library only), so it is `#[ignore = "needs ..."]`;
//! `scripts/test` runs it with `--include-ignored`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, Schemas};
use p4p_itracker::client::{AltoClient, FetchOutcome};

const PYTHON: &str = "/usr/bin/python3";
const SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/experiment/alto_server.py"
);

/// The server process, killed (by its own id) when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing (apt-get install python3)"
    );
    let dir = common::scratch("standard-alto");
    let ready = dir.join("port");
    let child = Command::new(PYTHON)
        .arg(SERVER)
        .args(["--bind", "127.0.0.1", "--port", "0", "--ready-file"])
        .arg(&ready)
        .args([
            "--pid",
            "isp-a=127.1.0.0/16,127.3.0.0/16",
            "--pid",
            "isp-b=127.2.0.0/16,127.4.0.0/16,2001:db8::/32",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn alto_server.py");
    let mut server = Server {
        child,
        base: String::new(),
    };
    let started = Instant::now();
    while !ready.exists() {
        if let Some(status) = server.child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(e) = server.child.stderr.take() {
                for line in BufReader::new(e).lines().map_while(Result::ok) {
                    err.push_str(&line);
                    err.push('\n');
                }
            }
            panic!("alto_server.py exited ({status}): {err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "alto_server.py did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let port: u16 = std::fs::read_to_string(&ready)
        .expect("port file")
        .trim()
        .parse()
        .expect("a port number");
    server.base = format!("http://127.0.0.1:{port}");
    server
}

/// GETs the IRD, the network map and the cost map, checks media types and schemas, and returns
/// the three messages.
fn fetch_all(server: &Server, schemas: &Schemas) -> [serde_json::Value; 3] {
    let ird = get(&format!("{}/directory", server.base), &[]);
    assert_eq!(ird.status, 200);
    assert_eq!(ird.content_type, "application/alto-directory+json");
    let ird = ird.json();
    schemas.check("InfoResourceDirectory", &ird);
    let resources = ird["resources"].as_object().expect("resources");
    assert_eq!(resources.len(), 2, "one network map and one cost map only");
    let uri = |media: &str| -> String {
        let e = resources
            .values()
            .find(|e| e["media-type"] == media)
            .unwrap_or_else(|| panic!("no {media} in the IRD"));
        format!("{}{}", server.base, e["uri"].as_str().expect("uri"))
    };
    let nm = get(&uri("application/alto-networkmap+json"), &[]);
    assert_eq!(nm.status, 200);
    assert_eq!(nm.content_type, "application/alto-networkmap+json");
    let etag = nm.etag.clone().expect("the network map has an ETag");
    let nm = nm.json();
    schemas.check("InfoResourceNetworkMap", &nm);
    let again = get(
        &uri("application/alto-networkmap+json"),
        &[("If-None-Match", &etag)],
    );
    assert_eq!(again.status, 304, "a conditional GET with the ETag");
    let cm = get(&uri("application/alto-costmap+json"), &[]);
    assert_eq!(cm.status, 200);
    assert_eq!(cm.content_type, "application/alto-costmap+json");
    let cm = cm.json();
    schemas.check("InfoResourceCostMap", &cm);
    [ird, nm, cm]
}

#[test]
#[ignore = "needs /usr/bin/python3 (scripts/test)"]
fn numerical_map_is_valid_rfc7285_with_nothing_private() {
    let schemas = Schemas::load();
    let server = start(&["--intra-cost", "0", "--inter-cost", "100"]);
    let [ird, nm, cm] = fetch_all(&server, &schemas);
    let text = format!("{ird}{nm}{cm}");
    assert!(!text.contains("priv:"), "no private property: {text}");
    let pids = nm["network-map"].as_object().expect("network-map");
    let names: Vec<&str> = pids.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(nm["network-map"]["default"]["ipv4"][0], "0.0.0.0/0");
    assert_eq!(nm["network-map"]["default"]["ipv6"][0], "::/0");
    assert_eq!(cm["meta"]["cost-type"]["cost-mode"], "numerical");
    assert_eq!(cm["meta"]["cost-type"]["cost-metric"], "routingcost");
    assert_eq!(cm["cost-map"]["isp-a"]["isp-a"], 0);
    assert_eq!(cm["cost-map"]["isp-a"]["isp-b"], 100);
    assert_eq!(
        cm["meta"]["dependent-vtags"][0]["tag"],
        nm["meta"]["vtag"]["tag"]
    );
    // Our client (the tracker's) reads it: three PIDs, no error.
    let mut client = AltoClient::new(format!("{}/directory", server.base));
    match client
        .fetch()
        .expect("the client reads the standard server")
    {
        FetchOutcome::Updated(map) => assert_eq!(map.pids.len(), 3),
        other => panic!("expected a map, got {other:?}"),
    }
}

#[test]
#[ignore = "needs /usr/bin/python3 (scripts/test)"]
fn ordinal_map_is_valid_rfc7285_and_ranks_each_row() {
    let schemas = Schemas::load();
    let server = start(&["--cost-mode", "ordinal", "--intra-cost", "5"]);
    let [ird, _nm, cm] = fetch_all(&server, &schemas);
    let types = ird["meta"]["cost-types"].as_object().expect("cost-types");
    assert!(types.values().all(|t| t["cost-mode"] == "ordinal"));
    assert_eq!(cm["meta"]["cost-type"]["cost-mode"], "ordinal");
    assert_eq!(cm["cost-map"]["isp-a"]["isp-a"], 1);
    assert_eq!(cm["cost-map"]["isp-a"]["isp-b"], 2);
    assert_eq!(cm["cost-map"]["isp-b"]["default"], 2);
    // Our client takes an ordinal map when no numerical one is offered, with the ranks as
    // costs (selection uses only their order).
    let mut client = AltoClient::new(format!("{}/directory", server.base));
    match client
        .fetch()
        .expect("the client reads an ordinal-only server")
    {
        FetchOutcome::Updated(map) => {
            assert_eq!(map.pids.len(), 3);
            let at = |name: &str| {
                map.pids
                    .iter()
                    .position(|p| p.name == name)
                    .expect("PID present")
            };
            let (a, b) = (at("isp-a"), at("isp-b"));
            assert_eq!(map.cost(a, a), Some(1.0));
            assert_eq!(map.cost(a, b), Some(2.0));
        }
        other => panic!("expected a map, got {other:?}"),
    }
}

#[test]
#[ignore = "needs /usr/bin/python3 (scripts/test)"]
fn unknown_resources_and_methods_get_alto_errors() {
    let server = start(&[]);
    let missing = get(&format!("{}/costmap/hopcount", server.base), &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.content_type, "application/alto-error+json");
    assert!(missing.json()["meta"]["code"].is_string());
    let post = common::post(
        &format!("{}/directory", server.base),
        "application/alto-costmapfilter+json",
        "{}",
        &[],
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.content_type, "application/alto-error+json");
}
