//! What `deploy/` ships, checked with the tools an operator runs it with.
//!
//! - The Grafana dashboard is a loadable JSON model (plain `cargo test`).
//! - `promtool` accepts the alerting rules, their unit tests and the example scrape config.
//! - End to end: a real `p4p-itracker` and `p4p-tracker` (the tracker on the iTracker with
//!   `--alto`) under a short load, scraped every second by a real `prometheus` that loads the
//!   alerting rules; then every dashboard query and every alert expression goes through
//!   Prometheus's HTTP API. A query that is invalid fails the test, and so does a dashboard
//!   query without series. Alert expressions may rightly be empty (nothing is wrong), so for them
//!   every metric name, and every label value they compare with `=` or `!=`, must exist in what
//!   Prometheus scraped (a renamed metric or label value would otherwise silence an alert).
//! - `systemd-analyze verify` accepts the units (with `ExecStart` pointed at the real binaries).
//!
//! The tool tests are `#[ignore = "needs ..."]`: `cargo test` counts them as ignored;
//! `scripts/test` installs the tools (Debian: `prometheus` brings `promtool`, `systemd` brings
//! `systemd-analyze`) and runs them with `--include-ignored`, where a missing tool FAILS them.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use p4p_tests::{announce_path, http_get_status, pct};
use p4p_tracker::types::{Event, InfoHash};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

/// What the Grafana-only placeholders in dashboard queries become: a concrete range for the
/// interval ones (the scrape interval here is 1 s, so 30 s holds many samples).
const GRAFANA_BUILTINS: [(&str, &str); 6] = [
    ("${__rate_interval}", "30s"),
    ("$__rate_interval", "30s"),
    ("${__interval}", "30s"),
    ("$__interval", "30s"),
    ("${__range}", "30s"),
    ("$__range", "30s"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn deploy(path: &str) -> PathBuf {
    root().join("deploy").join(path)
}

/// A tool on PATH; a missing one fails the test and says how to get it.
fn tool(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: this test needs it (Debian package `{package}`; \
                 scripts/test installs it)"
            )
        })
}

fn binary(name: &str, env: &str) -> PathBuf {
    p4p_tests::built_binary(name, env)
}

/// Runs a command to completion within `limit`; returns (success, stdout + stderr).
fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let dir = TempDir::new("cmd");
    let (out, err) = (dir.0.join("stdout"), dir.0.join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default()
        + &std::fs::read_to_string(&err).unwrap_or_default();
    (status.success(), text)
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "p4p-deploy-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop, its output in a log file.
struct Proc {
    name: &'static str,
    child: std::process::Child,
    log: PathBuf,
}

impl Proc {
    fn start(name: &'static str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc { name, child, log }
    }

    /// Fails the test if the process has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("addr").port()
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind port 0");
    s.local_addr().expect("addr").port()
}

/// One HTTP/1.0 exchange (the server closes after the answer: no chunking, no keep-alive).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header end from {addr}: {raw:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Polls `probe` every 100 ms until it gives `Some`, at most `limit`; fails with `what`.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dashboard() -> Value {
    let path = deploy("grafana/p4p-tracker.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is no JSON: {e}", path.display()))
}

/// Every panel, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(inner) = p.get("panels") {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, expr) of every query target.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((title.clone(), t["expr"].as_str().unwrap_or("").to_string()));
        }
    }
    out
}

/// The datasource template variable's name.
fn datasource_variable(dashboard: &Value) -> String {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .and_then(|v| v["name"].as_str())
        .expect("a template variable of type datasource, query prometheus")
        .to_string()
}

/// A dashboard query as Prometheus gets it: Grafana's placeholders replaced, each template
/// variable by its "All" value. A `$` left over is an unknown variable and fails.
fn concrete(dashboard: &Value, expr: &str) -> String {
    let mut subs: Vec<(String, String)> = GRAFANA_BUILTINS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "datasource" {
            continue;
        }
        let name = v["name"].as_str().expect("variable name");
        let all = v["allValue"]
            .as_str()
            .unwrap_or_else(|| panic!("variable {name} has no allValue"));
        subs.push((format!("${{{name}}}"), all.to_string()));
        subs.push((format!("${name}"), all.to_string()));
    }
    subs.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
    let mut q = expr.to_string();
    for (from, to) in &subs {
        q = q.replace(from.as_str(), to);
    }
    assert!(
        !q.contains('$'),
        "unknown variable left in dashboard query {q:?}"
    );
    q
}

/// Metric names in a PromQL expression: identifiers outside quotes that start with `p4p_`, and
/// `up`.
fn metric_names(expr: &str) -> Vec<String> {
    identifiers(expr)
        .into_iter()
        .filter(|w| w.starts_with("p4p_") || w == "up")
        .collect()
}

fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            quote = Some(c);
            word.clear();
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    out
}

/// `label="value"` and `label!="value"` matchers of an expression (regex ones left out).
fn exact_matchers(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(off) = expr[i..].find('"') {
        let open = i + off;
        let close = open
            + 1
            + expr[open + 1..]
                .find('"')
                .unwrap_or_else(|| panic!("unclosed quote in {expr}"));
        // The operator right before the quote: `=` or `!=` (not `=~` / `!~`).
        let mut j = open;
        while j > 0 && b[j - 1] == b' ' {
            j -= 1;
        }
        if j > 0 && b[j - 1] == b'=' {
            let mut k = j - 1;
            if k > 0 && b[k - 1] == b'!' {
                k -= 1;
            }
            while k > 0 && b[k - 1] == b' ' {
                k -= 1;
            }
            let end = k;
            while k > 0 && (b[k - 1].is_ascii_alphanumeric() || b[k - 1] == b'_') {
                k -= 1;
            }
            if k < end {
                out.push((expr[k..end].to_string(), expr[open + 1..close].to_string()));
            }
        }
        i = close + 1;
    }
    out
}

#[test]
fn the_dashboard_is_a_grafana_model_with_a_datasource_variable_and_a_query_in_every_target() {
    let d = dashboard();
    for key in ["title", "uid"] {
        assert!(
            d[key].as_str().is_some_and(|s| !s.is_empty()),
            "dashboard {key} missing"
        );
    }
    assert!(d["schemaVersion"].is_u64(), "schemaVersion missing");
    let ds = format!("${{{}}}", datasource_variable(&d));
    let mut ids = std::collections::HashSet::new();
    let mut queries = 0;
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title}: no id"));
        assert!(ids.insert(id), "panel id {id} ({title}) used twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64(), g["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24)
                && g["y"].is_u64()
                && g["h"].as_u64().is_some_and(|h| h > 0),
            "panel {title}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], ds,
            "panel {title}: datasource is not the {ds} variable"
        );
        let targets = p["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("panel {title} has no query"));
        let mut refs = std::collections::HashSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                !expr.trim().is_empty(),
                "panel {title}: a target without expr"
            );
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "panel {title}: refId used twice"
            );
            if !t["datasource"].is_null() {
                assert_eq!(
                    t["datasource"]["uid"], ds,
                    "panel {title}: target datasource"
                );
            }
            concrete(&d, expr);
            queries += 1;
        }
    }
    assert!(queries >= 20, "only {queries} queries");
    // Query variables draw from a Prometheus label and have an "All" value.
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if v["type"] == "query" {
            assert_eq!(v["datasource"]["uid"], ds, "variable {}", v["name"]);
            assert!(
                v["allValue"].is_string(),
                "variable {}: allValue",
                v["name"]
            );
        }
    }
}

#[test]
fn promql_helpers_find_names_and_exact_matchers() {
    let e = r#"sum by (protocol) (rate(p4p_tracker_announces_total{outcome!="ok", job = "p4p-tracker", route=~"/admin/.*"}[5m])) / up{job="x"}"#;
    assert_eq!(
        metric_names(e),
        ["p4p_tracker_announces_total", "up"].map(String::from)
    );
    assert_eq!(
        exact_matchers(e),
        [("outcome", "ok"), ("job", "p4p-tracker"), ("job", "x")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
#[ignore = "needs promtool (Debian package prometheus; scripts/test installs it)"]
fn promtool_accepts_the_rules_their_unit_tests_and_the_scrape_config() {
    let promtool = tool("promtool", "prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "prometheus.yml"],
    ] {
        let (ok, out) = run_bounded(
            Command::new(&promtool)
                .args(args)
                .current_dir(deploy("prometheus")),
            Duration::from_secs(60),
        );
        assert!(ok, "promtool {} failed:\n{out}", args.join(" "));
    }
}

/// Prometheus's HTTP API.
struct Prom(SocketAddr);

impl Prom {
    fn get(&self, path: &str) -> Result<Value, String> {
        let (status, body) = http(self.0, "GET", path, "", b"")?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, no JSON ({e}): {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!(
                "HTTP {status}: {} {}",
                v["errorType"].as_str().unwrap_or(""),
                v["error"].as_str().unwrap_or(&body)
            ));
        }
        Ok(v["data"].clone())
    }

    /// Instant query; `Ok(series count)` (a scalar counts as one).
    fn query(&self, q: &str) -> Result<usize, String> {
        let data = self.get(&format!(
            "/api/v1/query?query={}",
            utf8_percent_encode(q, NON_ALPHANUMERIC)
        ))?;
        Ok(match data["resultType"].as_str() {
            Some("scalar" | "string") => 1,
            _ => data["result"].as_array().map_or(0, Vec::len),
        })
    }

    fn value(&self, q: &str) -> Option<f64> {
        let data = self
            .get(&format!(
                "/api/v1/query?query={}",
                utf8_percent_encode(q, NON_ALPHANUMERIC)
            ))
            .ok()?;
        data["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    fn label_values(&self, label: &str) -> Vec<String> {
        self.get(&format!("/api/v1/label/{label}/values"))
            .map(|d| {
                d.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

const ADMIN_TOKEN: &str = "deploy-test-admin-token";

/// Announces and scrapes from four PIDs of ISP A's loopback map (a1, a2, transit-b, default),
/// over UDP and HTTP; a few malformed ones too. Returns the announces answered ok.
fn drive_load(http_addr: SocketAddr, udp_addr: SocketAddr) -> u64 {
    let sources = ["127.1.0.", "127.3.0.", "127.2.0.", "127.5.0."];
    let torrents: Vec<[u8; 20]> = (0u8..4).map(|t| [t + 1; 20]).collect();
    let mut ok = 0;
    for round in 0..3u16 {
        for (s, prefix) in sources.iter().enumerate() {
            for peer in 1..=8u16 {
                let ip = format!("{prefix}{peer}");
                let from: IpAddr = ip.parse().expect("ip");
                let info_hash = torrents[usize::from(peer) % torrents.len()];
                let port = 10_000 + (s as u16) * 100 + peer;
                let left = if peer % 3 == 0 { 0 } else { 1000 };
                let event = if round == 0 {
                    Event::Started
                } else {
                    Event::None
                };
                let mut udp = p4p_tests::udp::Client::new(&ip, udp_addr);
                udp.announce(info_hash, port, left, event)
                    .unwrap_or_else(|e| panic!("UDP announce from {ip}: {e}"));
                let path = announce_path(&info_hash, port + 5000, left, "&compact=1");
                let (status, body) = http_get_status(from, http_addr, &path, "");
                assert_eq!(status, 200, "HTTP announce from {ip}: {body:?}");
                ok += 2;
                if peer % 4 == 0 {
                    udp.scrape(&[InfoHash(info_hash)])
                        .unwrap_or_else(|e| panic!("UDP scrape from {ip}: {e}"));
                    let (status, _) = http_get_status(
                        from,
                        http_addr,
                        &format!("/scrape?info_hash={}", pct(&info_hash)),
                        "",
                    );
                    assert_eq!(status, 200, "HTTP scrape from {ip}");
                }
            }
        }
    }
    // Non-ok outcomes: an HTTP announce without info_hash, a UDP datagram that is no request.
    let from: IpAddr = "127.0.0.1".parse().expect("ip");
    let _ = http_get_status(from, http_addr, "/announce?port=1", "");
    let junk = UdpSocket::bind("127.0.0.1:0").expect("bind");
    junk.send_to(b"not a tracker request", udp_addr)
        .expect("send");
    ok
}

#[test]
#[ignore = "needs prometheus (Debian package prometheus; scripts/test installs it) and release p4p-tracker / p4p-itracker builds"]
fn every_dashboard_query_and_alert_expression_works_on_a_real_prometheus() {
    let started = Instant::now();
    let prometheus = tool("prometheus", "prometheus");
    let tracker_bin = binary("p4p-tracker", "P4P_TRACKER_BIN");
    let itracker_bin = binary("p4p-itracker", "P4P_ITRACKER_BIN");
    let dir = TempDir::new("prometheus");
    let tmp = &dir.0;

    // The iTracker, on a writable copy of ISP A's loopback topology (admin updates rewrite it).
    let topology = tmp.join("topology.toml");
    std::fs::copy(root().join("topology-data/loopback.toml"), &topology).expect("topology");
    let token_file = tmp.join("admin.token");
    std::fs::write(&token_file, ADMIN_TOKEN).expect("token");
    let itracker_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let mut itracker = Proc::start(
        "p4p-itracker",
        Command::new(&itracker_bin)
            .arg("--bind")
            .arg(itracker_addr.to_string())
            .arg("--topology")
            .arg(&topology)
            .arg("--admin-token-file")
            .arg(&token_file)
            .env("RUST_LOG", "warn"),
        tmp,
    );
    wait_for(
        "the iTracker answers /health",
        Duration::from_secs(15),
        || {
            itracker.assert_alive();
            http(itracker_addr, "GET", "/health", "", b"")
                .ok()
                .filter(|(s, _)| *s == 200)
        },
    );
    // One applied and one rejected update, so the update metrics have series from the start.
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    let text = std::fs::read(&topology).expect("topology");
    let (status, body) =
        http(itracker_addr, "PUT", "/admin/topology", &auth, &text).expect("PUT topology");
    assert_eq!(status, 200, "PUT /admin/topology: {body}");
    let (status, _) = http(itracker_addr, "PUT", "/admin/topology", &auth, b"isp = [")
        .expect("PUT a broken topology");
    assert!(status >= 400, "a broken topology was accepted ({status})");

    // The tracker, refreshing from the iTracker every second.
    let http_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let udp_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let mut tracker = Proc::start(
        "p4p-tracker",
        Command::new(&tracker_bin)
            .arg("--http-bind")
            .arg(http_addr.to_string())
            .arg("--udp-bind")
            .arg(udp_addr.to_string())
            .arg("--udp-workers=2")
            .arg("--alto")
            .arg(format!("http://{itracker_addr}/directory"))
            .arg("--refresh-interval=1")
            .env("RUST_LOG", "warn"),
        tmp,
    );
    let localhost: IpAddr = "127.0.0.1".parse().expect("ip");
    wait_for(
        "the tracker serves /metrics with a topology from the iTracker",
        Duration::from_secs(15),
        || {
            tracker.assert_alive();
            TcpStream::connect_timeout(&http_addr, Duration::from_secs(1)).ok()?;
            let (status, body) = http_get_status(localhost, http_addr, "/metrics", "");
            let text = String::from_utf8_lossy(&body).to_string();
            (status == 200 && text.contains("p4p_tracker_topology_missing 0")).then_some(())
        },
    );

    // Prometheus: both targets every second, the alerting rules loaded, storage in the temp dir.
    let rules = deploy("prometheus/alerts.yml");
    let config = tmp.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n\
             \x20 - job_name: p4p-tracker\n    static_configs:\n      - targets: [\"{http_addr}\"]\n\
             \x20 - job_name: p4p-itracker\n    static_configs:\n      - targets: [\"{itracker_addr}\"]\n",
        ),
    )
    .expect("prometheus.yml");
    let prom_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let mut prom_proc = Proc::start(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--log.level=warn"),
        tmp,
    );
    let prom = Prom(prom_addr);
    wait_for(
        "Prometheus scrapes both targets",
        Duration::from_secs(30),
        || {
            prom_proc.assert_alive();
            let targets = prom.get("/api/v1/targets").ok()?;
            let active = targets["activeTargets"].as_array()?;
            (active.len() == 2 && active.iter().all(|t| t["health"] == "up")).then_some(())
        },
    );

    let sent_ok = drive_load(http_addr, udp_addr);
    // The load is in Prometheus once a scrape shows all of it, and a few more scrapes follow so
    // every rate window holds samples from before and after.
    wait_for(
        "Prometheus has scraped the load",
        Duration::from_secs(20),
        || {
            let seen = prom.value("sum(p4p_tracker_announces_total)")?;
            (seen >= sent_ok as f64).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    tracker.assert_alive();
    itracker.assert_alive();

    let names = prom.label_values("__name__");
    let mut failures = Vec::new();

    // Dashboard: every query valid and with series; every query variable with values.
    let d = dashboard();
    let queries = dashboard_queries(&d);
    for (panel, expr) in &queries {
        let q = concrete(&d, expr);
        match prom.query(&q) {
            Ok(0) => failures.push(format!("dashboard panel {panel:?}: no series for {q}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("dashboard panel {panel:?}: {q} is invalid: {e}")),
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let Some(def) = v["query"].as_str().filter(|_| v["type"] == "query") else {
            continue;
        };
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {def}: only label_values(metric, label)"));
        let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
        let q = format!("count by ({}) ({})", label.trim(), metric.trim());
        if !matches!(prom.query(&q), Ok(n) if n > 0) {
            failures.push(format!(
                "dashboard variable {}: {def} has no values",
                v["name"]
            ));
        }
    }

    // Alerts, as Prometheus loaded them from deploy/prometheus/alerts.yml.
    let loaded = prom.get("/api/v1/rules").expect("rules");
    let alerts: Vec<&Value> = loaded["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    let in_file = std::fs::read_to_string(&rules)
        .expect("alerts.yml")
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(
        in_file > 0 && alerts.len() == in_file,
        "Prometheus loaded {} rules, alerts.yml has {in_file}",
        alerts.len()
    );
    for rule in &alerts {
        let name = rule["name"].as_str().unwrap_or("?");
        let expr = rule["query"].as_str().unwrap_or("");
        if let Err(e) = prom.query(expr) {
            failures.push(format!("alert {name}: {expr} is invalid: {e}"));
        }
        if rule["health"] == "err" {
            failures.push(format!(
                "alert {name}: evaluation error {}",
                rule["lastError"]
            ));
        }
        for metric in metric_names(expr) {
            if !names.contains(&metric) {
                failures.push(format!("alert {name}: no metric {metric} was scraped"));
            }
        }
        for (label, value) in exact_matchers(expr) {
            if !prom.label_values(&label).contains(&value) {
                failures.push(format!(
                    "alert {name}: no scraped series has {label}=\"{value}\""
                ));
            }
        }
    }
    // Dashboard queries name metrics that exist too (an empty-by-design query would hide it).
    for (panel, expr) in &queries {
        for metric in metric_names(expr) {
            if !names.contains(&metric) {
                failures.push(format!(
                    "dashboard panel {panel:?}: no metric {metric} was scraped"
                ));
            }
        }
    }
    failures.dedup();
    assert!(
        failures.is_empty(),
        "{} problems ({} dashboard queries, {} alerts):\n{}\nscraped metrics: {names:?}",
        failures.len(),
        queries.len(),
        alerts.len(),
        failures.join("\n")
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "took {elapsed:?}: keep it well under a minute for CI"
    );
}

#[test]
#[ignore = "needs systemd-analyze (Debian package systemd) and p4p-tracker / p4p-itracker builds"]
fn systemd_analyze_verifies_the_units() {
    let analyze = tool("systemd-analyze", "systemd");
    let dir = TempDir::new("systemd");
    let mut units = Vec::new();
    for (unit, bin, env) in [
        ("p4p-tracker.service", "p4p-tracker", "P4P_TRACKER_BIN"),
        ("p4p-itracker.service", "p4p-itracker", "P4P_ITRACKER_BIN"),
    ] {
        let text = std::fs::read_to_string(deploy("systemd").join(unit)).expect("unit");
        let installed = format!("/usr/local/bin/{bin}");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("ExecStart={installed} "))),
            "{unit}: ExecStart is not {installed}"
        );
        // verify checks that the executable exists: point it at the real build.
        let real = binary(bin, env);
        let copy = dir.0.join(unit);
        std::fs::write(&copy, text.replace(&installed, &real.display().to_string()))
            .expect("unit copy");
        // The sandbox settings the units promise.
        for line in [
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "Restart=on-failure",
        ] {
            assert!(text.lines().any(|l| l == line), "{unit}: no `{line}`");
        }
        assert!(
            text.lines().any(|l| l.starts_with("LimitNOFILE=")),
            "{unit}: no LimitNOFILE"
        );
        units.push(copy);
    }
    let (ok, out) = run_bounded(
        Command::new(&analyze).arg("verify").args(&units),
        Duration::from_secs(60),
    );
    // verify exits 0 on unknown keys and some other mistakes, printing a warning: any output
    // about our units fails the test too.
    let ours: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("p4p-tracker") || l.contains("p4p-itracker"))
        .collect();
    assert!(ok && ours.is_empty(), "systemd-analyze verify:\n{out}");
    // And the sandbox scores as systemd rates it (0 = locked down, 10 = exposed).
    let (_, out) = run_bounded(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .args(&units),
        Duration::from_secs(60),
    );
    for unit in ["p4p-tracker.service", "p4p-itracker.service"] {
        let score: f64 = out
            .lines()
            .find_map(|l| {
                let rest = l.split(&format!("exposure level for {unit}: ")).nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no exposure level for {unit} in:\n{out}"));
        assert!(score <= 2.0, "{unit}: exposure {score} > 2.0:\n{out}");
    }
}

/// `systemctl reload` sends SIGHUP (the units' ExecReload): the tracker reloads its topology
/// file and keeps serving; a file that fails to load is refused and the old map stays.
#[test]
#[ignore = "needs a p4p-tracker build (P4P_TRACKER_BIN, set by scripts/test)"]
fn sighup_reloads_the_topology_file_and_the_tracker_keeps_serving() {
    let bin = binary("p4p-tracker", "P4P_TRACKER_BIN");
    let dir = TempDir::new("sighup");
    let topology = dir.0.join("topology.toml");
    std::fs::copy(root().join("topology-data/loopback.toml"), &topology).expect("topology");
    let http_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let mut tracker = Proc::start(
        "p4p-tracker",
        Command::new(&bin)
            .arg("--http-bind")
            .arg(http_addr.to_string())
            .arg("--udp-bind")
            .arg(format!("127.0.0.1:{}", free_udp_port()))
            .arg("--topology")
            .arg(&topology),
        &dir.0,
    );
    let version = |tracker: &mut Proc| -> Option<String> {
        tracker.assert_alive();
        let (status, body) = http(http_addr, "GET", "/topology", "", b"").ok()?;
        let doc: Value = serde_json::from_str(&body).ok()?;
        (status == 200).then(|| doc["version"].as_str().map(str::to_string))?
    };
    let first = wait_for("the tracker answers", Duration::from_secs(20), || {
        version(&mut tracker)
    });
    let hup = |tracker: &Proc| {
        let sent = Command::new("kill")
            .arg("-HUP")
            .arg(tracker.child.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success());
    };
    // A changed file is picked up on SIGHUP.
    let text = std::fs::read_to_string(&topology).expect("read");
    let changed = text.replace("127.1.0.0/16", "127.1.0.0/17");
    assert_ne!(changed, text, "the loopback topology holds 127.1.0.0/16");
    std::fs::write(&topology, changed).expect("write");
    hup(&tracker);
    let second = wait_for(
        "a new version after SIGHUP",
        Duration::from_secs(20),
        || version(&mut tracker).filter(|v| *v != first),
    );
    // A broken file is refused: same version, still serving, the refusal counted.
    std::fs::write(&topology, "this is not a topology").expect("write");
    hup(&tracker);
    wait_for("the refusal is counted", Duration::from_secs(20), || {
        let (_, metrics) = http(http_addr, "GET", "/metrics", "", b"").ok()?;
        metrics
            .contains("p4p_tracker_reloads_total{outcome=\"refused\"} 1")
            .then_some(())
    });
    assert_eq!(version(&mut tracker).as_deref(), Some(second.as_str()));
    tracker.assert_alive();
}
