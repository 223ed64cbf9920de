//! The ALTO client against a hostile or careless server (issue 16): a hand-rolled HTTP/1.1
//! server on 127.0.0.1 port 0 serves crafted bodies, and the client must bound what it
//! allocates, refuse what cannot be used, keep reporting an invalid map, stay within its
//! origins, name a URL that is not an IRD, and never panic.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use p4p_itracker::alto::media;
use p4p_itracker::client::{AltoClient, ClientError, ClientLimits, FetchOutcome, IspMap};

/// What the fake server answers on one path.
#[derive(Clone)]
enum Resource {
    /// A body with its media type and ETag; answers 406 when Accept excludes the type and 304
    /// when If-None-Match matches the ETag.
    Body {
        media_type: String,
        etag: Option<String>,
        body: Vec<u8>,
    },
    /// A 302 to this location.
    Redirect(String),
    /// A 200 with this media type and `Content-Encoding`, whatever the request accepts.
    Encoded {
        media_type: String,
        encoding: String,
        body: Vec<u8>,
    },
}

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HashMap<String, String>,
}

struct Fake {
    base: String,
    routes: Arc<Mutex<HashMap<String, Resource>>>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Fake {
    fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let routes = Arc::new(Mutex::new(HashMap::new()));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (r, h) = (routes.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, h) = (r.clone(), h.clone());
                std::thread::spawn(move || serve(stream, &r, &h));
            }
        });
        Fake { base, routes, hits }
    }

    fn set(&self, path: &str, media_type: &str, etag: Option<&str>, body: impl Into<Vec<u8>>) {
        self.routes.lock().expect("routes").insert(
            path.to_string(),
            Resource::Body {
                media_type: media_type.to_string(),
                etag: etag.map(str::to_string),
                body: body.into(),
            },
        );
    }

    fn set_encoded(&self, path: &str, media_type: &str, encoding: &str, body: Vec<u8>) {
        self.routes.lock().expect("routes").insert(
            path.to_string(),
            Resource::Encoded {
                media_type: media_type.to_string(),
                encoding: encoding.to_string(),
                body,
            },
        );
    }

    fn redirect(&self, path: &str, location: &str) {
        self.routes
            .lock()
            .expect("routes")
            .insert(path.to_string(), Resource::Redirect(location.to_string()));
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }

    fn paths(&self) -> Vec<String> {
        self.hits().into_iter().map(|h| h.path).collect()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn client(&self) -> AltoClient {
        AltoClient::new(self.url("/directory"))
    }

    /// A complete, valid ALTO service: IRD, network map (given PIDs -> prefixes), cost map.
    fn serve_maps(&self, nm: &str, cm: &str, tag: &str) {
        self.set(
            "/directory",
            media::DIRECTORY,
            None,
            ird("/networkmap", "/costmap"),
        );
        self.set(
            "/networkmap",
            media::NETWORK_MAP,
            Some(&format!("\"nm-{tag}\"")),
            nm,
        );
        self.set(
            "/costmap",
            media::COST_MAP,
            Some(&format!("\"cm-{tag}\"")),
            cm,
        );
    }
}

fn serve(stream: TcpStream, routes: &Mutex<HashMap<String, Resource>>, hits: &Mutex<Vec<Hit>>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => return,
            Ok(_) if h == "\r\n" => break,
            Ok(_) => {
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
        }
    }
    hits.lock().expect("hits").push(Hit {
        path: path.clone(),
        headers: headers.clone(),
    });
    let resource = routes.lock().expect("routes").get(&path).cloned();
    let (status, extra, ctype, body): (u16, Vec<(String, String)>, &str, Vec<u8>) = match resource {
        None => (404, vec![], "application/json", b"{}".to_vec()),
        Some(Resource::Redirect(to)) => (302, vec![("Location".into(), to)], "text/plain", vec![]),
        Some(Resource::Encoded {
            media_type,
            encoding,
            body,
        }) => {
            let ctype: &'static str = Box::leak(media_type.into_boxed_str());
            (
                200,
                vec![("Content-Encoding".into(), encoding)],
                ctype,
                body,
            )
        }
        Some(Resource::Body {
            media_type,
            etag,
            body,
        }) => {
            let accept = headers.get("accept").cloned().unwrap_or_default();
            let acceptable = accept.is_empty()
                || accept.split(',').any(|a| {
                    let a = a.split(';').next().unwrap_or("").trim();
                    a == media_type || a == "*/*"
                });
            let etag_header: Vec<(String, String)> = etag
                .iter()
                .map(|e| ("ETag".to_string(), e.clone()))
                .collect();
            if !acceptable {
                let msg = format!("{{\"error\": \"this resource produces {media_type}\"}}");
                (406, vec![], "application/json", msg.into_bytes())
            } else if etag.is_some() && headers.get("if-none-match") == etag.as_ref() {
                (304, etag_header, "", vec![])
            } else {
                let ctype: &'static str = Box::leak(media_type.into_boxed_str());
                (200, etag_header, ctype, body)
            }
        }
    };
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    if status != 304 {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        if !ctype.is_empty() {
            out.push_str(&format!("Content-Type: {ctype}\r\n"));
        }
    }
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(out.as_bytes());
    if status != 304 {
        let _ = stream.write_all(&body);
    }
    let _ = stream.flush();
}

fn ird(nm_uri: &str, cm_uri: &str) -> String {
    serde_json::json!({
        "meta": {
            "cost-types": {"num-routing": {"cost-mode": "numerical", "cost-metric": "routingcost"}},
            "default-alto-network-map": "nm"
        },
        "resources": {
            "nm": {"uri": nm_uri, "media-type": media::NETWORK_MAP},
            "cm": {"uri": cm_uri, "media-type": media::COST_MAP, "uses": ["nm"],
                   "capabilities": {"cost-type-names": ["num-routing"]}}
        }
    })
    .to_string()
}

/// A network map with PIDs `p0..pN`, PID `i` holding `10.x.y.0/24`.
fn network_map(pids: usize, vtag: &str) -> String {
    let mut map = serde_json::Map::new();
    for i in 0..pids {
        map.insert(
            format!("p{i}"),
            serde_json::json!({"ipv4": [format!("10.{}.{}.0/24", i / 256, i % 256)]}),
        );
    }
    serde_json::json!({"meta": {"vtag": {"resource-id": "nm", "tag": vtag}}, "network-map": map})
        .to_string()
}

/// A cost map for vtag `vtag` with the given raw `cost-map` object text.
fn cost_map(vtag: &str, table: &str) -> String {
    format!(
        r#"{{"meta": {{"dependent-vtags": [{{"resource-id": "nm", "tag": "{vtag}"}}],
        "cost-type": {{"cost-mode": "numerical", "cost-metric": "routingcost"}}}},
        "cost-map": {table}}}"#
    )
}

fn updated(outcome: Result<FetchOutcome, ClientError>) -> IspMap {
    match outcome {
        Ok(FetchOutcome::Updated(map)) => map,
        other => panic!("expected a new map, got {other:?}"),
    }
}

fn pos(map: &IspMap, name: &str) -> usize {
    map.pids
        .iter()
        .position(|p| p.name == name)
        .expect("PID in map")
}

// Item 2: PIDs per map are capped before anything quadratic, memory follows the cost map.

#[test]
fn a_network_map_over_the_pid_cap_is_refused_before_its_costs_are_requested() {
    let fake = Fake::start();
    fake.serve_maps(&network_map(11, "v1"), &cost_map("v1", "{}"), "1");
    let limits = ClientLimits {
        max_pids: 10,
        ..ClientLimits::default()
    };
    let mut client = fake.client().with_limits(limits);
    let err = client.fetch().expect_err("11 PIDs > 10");
    assert!(
        matches!(
            err,
            ClientError::TooManyPids {
                pids: 11,
                max: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("11 PIDs"), "{err}");
    assert!(!fake.paths().contains(&"/costmap".to_string()));
    // Refused every round, not only once.
    assert!(matches!(
        client.fetch(),
        Err(ClientError::TooManyPids { .. })
    ));
}

#[test]
fn thirty_thousand_pids_are_refused_by_default_without_allocating_their_square() {
    // The probe's map: ~1 MB, 30,000 PIDs; the old client allocated 30,000^2 f64s (7.2 GB).
    let fake = Fake::start();
    fake.serve_maps(&network_map(30_000, "v1"), &cost_map("v1", "{}"), "1");
    let err = fake.client().fetch().expect_err("over the default cap");
    assert!(
        matches!(err, ClientError::TooManyPids { pids: 30_000, max, .. } if max == ClientLimits::default().max_pids),
        "{err}"
    );
}

#[test]
fn a_sparse_cost_map_keeps_only_its_costs_and_missing_pairs_stay_unknown() {
    let fake = Fake::start();
    let table =
        r#"{"p0": {"p1": 3, "p2": 7.5, "nowhere": 1}, "p4999": {"p0": 0}, "ghost": {"p0": 1}}"#;
    fake.serve_maps(&network_map(5_000, "v1"), &cost_map("v1", table), "1");
    let map = updated(fake.client().fetch());
    assert_eq!(map.pids.len(), 5_000);
    assert_eq!(map.known_costs(), 3, "only pairs of known PIDs are kept");
    let (p0, p1, p2, last) = (
        pos(&map, "p0"),
        pos(&map, "p1"),
        pos(&map, "p2"),
        pos(&map, "p4999"),
    );
    assert_eq!(map.cost(p0, p1), Some(3.0));
    assert_eq!(map.cost(p0, p2), Some(7.5));
    assert_eq!(map.cost(last, p0), Some(0.0));
    assert_eq!(map.cost(p1, p0), None, "a missing pair stays unknown");
    let snap = map.snapshot(100.0);
    let idx = |n: &str| {
        snap.index_of(p4p_itracker::PidId::intern(n))
            .expect("in snapshot")
    };
    assert_eq!(snap.cost(idx("p0"), idx("p1")), 3.0);
    assert_eq!(
        snap.cost(idx("p1"), idx("p0")),
        100.0,
        "unknown = interdomain"
    );
}

#[test]
fn duplicate_cost_keys_keep_the_last_like_a_json_map() {
    let fake = Fake::start();
    fake.serve_maps(
        &network_map(2, "v1"),
        &cost_map("v1", r#"{"p0": {"p1": 3, "p1": 4}}"#),
        "1",
    );
    let map = updated(fake.client().fetch());
    assert_eq!(map.cost(pos(&map, "p0"), pos(&map, "p1")), Some(4.0));
    assert_eq!(map.known_costs(), 1);
}

// Item 6: a persistently invalid map is reported every round until the content changes.

#[test]
fn an_invalid_map_is_reported_every_round_until_its_content_changes() {
    let fake = Fake::start();
    fake.serve_maps(
        &network_map(3, "v1"),
        &cost_map("v1", r#"{"p0": {"p1": 1}}"#),
        "1",
    );
    let mut client = fake.client();
    updated(client.fetch());
    assert_eq!(client.fetch().expect("same map"), FetchOutcome::Unchanged);

    // The server now serves a map that fails validation (one prefix in two PIDs).
    let bad = network_map(3, "v2").replace("10.0.1.0/24", "10.0.0.0/24");
    fake.serve_maps(&bad, &cost_map("v2", "{}"), "2");
    for round in 0..3 {
        let err = client.fetch().expect_err("still invalid");
        assert!(
            err.to_string().contains("10.0.0.0/24"),
            "round {round}: {err}"
        );
    }
    // It never sent the invalid content's ETag back (so no 304 could hide it).
    let sent: Vec<String> = fake
        .hits()
        .iter()
        .filter_map(|h| h.headers.get("if-none-match").cloned())
        .collect();
    assert!(!sent.iter().any(|t| t.contains("-2")), "{sent:?}");

    // Fixed content: a new map, then unchanged again.
    fake.serve_maps(&network_map(4, "v3"), &cost_map("v3", "{}"), "3");
    assert_eq!(updated(client.fetch()).pids.len(), 4);
    assert_eq!(client.fetch().expect("same map"), FetchOutcome::Unchanged);
}

#[test]
fn a_network_map_fetched_before_a_failure_is_still_delivered() {
    let fake = Fake::start();
    fake.serve_maps(&network_map(2, "v1"), &cost_map("v1", "{}"), "1");
    let mut client = fake.client();
    updated(client.fetch());
    // New network map, but the cost map is down this round.
    fake.set(
        "/networkmap",
        media::NETWORK_MAP,
        Some("\"nm-2\""),
        network_map(3, "v2"),
    );
    fake.routes.lock().expect("routes").remove("/costmap");
    assert!(matches!(
        client.fetch(),
        Err(ClientError::Status { status: 404, .. })
    ));
    fake.set(
        "/costmap",
        media::COST_MAP,
        Some("\"cm-2\""),
        cost_map("v2", "{}"),
    );
    assert_eq!(updated(client.fetch()).pids.len(), 3);
}

// Item 8: empty maps, unusable costs, origins, redirects, body limits.

#[test]
fn an_empty_network_map_is_refused() {
    let fake = Fake::start();
    let empty = r#"{"meta": {"vtag": {"resource-id": "nm", "tag": "v1"}}, "network-map": {}}"#;
    fake.serve_maps(empty, &cost_map("v1", "{}"), "1");
    let err = fake.client().fetch().expect_err("empty");
    assert!(
        matches!(err, ClientError::EmptyNetworkMap { pids: 0 }),
        "{err}"
    );
    let no_prefix = r#"{"meta": {"vtag": {"resource-id": "nm", "tag": "v1"}}, "network-map": {"a": {}, "b": {"ipv4": []}}}"#;
    fake.serve_maps(no_prefix, &cost_map("v1", "{}"), "2");
    let err = fake.client().fetch().expect_err("no prefix");
    assert!(
        matches!(err, ClientError::EmptyNetworkMap { pids: 2 }),
        "{err}"
    );
}

#[test]
fn costs_beyond_f32_negative_or_not_numbers_are_refused() {
    let fake = Fake::start();
    for (cost, shown) in [("1e39", "1e39"), ("-1", "-1.0"), ("3.5e38", "3.5e38")] {
        let table = format!(r#"{{"p0": {{"p1": {cost}}}}}"#);
        fake.serve_maps(&network_map(2, "v1"), &cost_map("v1", &table), cost);
        let err = fake.client().fetch().expect_err(cost);
        assert!(
            err.to_string().contains(shown) && err.to_string().contains("p0 -> p1"),
            "{cost}: {err}"
        );
    }
    // The largest f32 passes.
    let table = r#"{"p0": {"p1": 3.4e38}}"#;
    fake.serve_maps(&network_map(2, "v1"), &cost_map("v1", table), "ok");
    updated(fake.client().fetch());
    // NaN cannot be written in JSON; a message built in code is checked the same way.
    let nm: p4p_itracker::alto::NetworkMapMessage =
        serde_json::from_str(&network_map(2, "v1")).expect("nm");
    let mut cm: p4p_itracker::alto::CostMapMessage =
        serde_json::from_str(&cost_map("v1", r#"{"p0": {"p1": 1}}"#)).expect("cm");
    for bad in [f64::NAN, f64::INFINITY, 1e39, -0.5] {
        cm.cost_map
            .get_mut("p0")
            .expect("row")
            .insert("p1".into(), p4p_itracker::alto::Cost(bad));
        let r = IspMap::from_messages(&nm, &cm, String::new(), None, "isp");
        assert!(r.is_err(), "{bad} accepted");
    }
}

#[test]
fn resources_on_another_origin_are_refused_unless_allowed() {
    let (ird_host, other) = (Fake::start(), Fake::start());
    other.set(
        "/networkmap",
        media::NETWORK_MAP,
        None,
        network_map(2, "v1"),
    );
    other.set("/costmap", media::COST_MAP, None, cost_map("v1", "{}"));
    ird_host.set(
        "/directory",
        media::DIRECTORY,
        None,
        ird(&other.url("/networkmap"), &other.url("/costmap")),
    );
    let err = ird_host
        .client()
        .with_token("secret")
        .fetch()
        .expect_err("foreign");
    assert!(matches!(err, ClientError::ForeignOrigin { .. }), "{err}");
    assert!(err.to_string().contains(&other.base), "{err}");
    assert!(other.hits().is_empty(), "nothing sent to the other origin");

    let mut allowed = ird_host
        .client()
        .with_token("secret")
        .allow_origin(&other.base)
        .expect("origin");
    assert_eq!(updated(allowed.fetch()).pids.len(), 2);
    assert!(
        other
            .hits()
            .iter()
            .all(|h| !h.headers.contains_key("authorization")),
        "the token stays with the IRD's origin"
    );
    assert!(ird_host
        .hits()
        .iter()
        .all(|h| h.headers.get("authorization").map(String::as_str) == Some("Bearer secret")));
    let mut any = ird_host.client().allow_any_origin();
    updated(any.fetch());
}

#[test]
fn redirects_are_followed_within_the_origin_only() {
    let (fake, other) = (Fake::start(), Fake::start());
    fake.serve_maps(&network_map(2, "v1"), &cost_map("v1", "{}"), "1");
    other.set(
        "/networkmap",
        media::NETWORK_MAP,
        None,
        network_map(2, "v1"),
    );
    // Same origin: followed.
    fake.set(
        "/directory",
        media::DIRECTORY,
        None,
        ird("/old-nm", "/costmap"),
    );
    fake.redirect("/old-nm", "/networkmap");
    updated(fake.client().fetch());
    // Another origin: refused, and never contacted.
    fake.redirect("/old-nm", &other.url("/networkmap"));
    let err = fake.client().fetch().expect_err("cross-origin redirect");
    assert!(matches!(err, ClientError::Redirect { .. }), "{err}");
    assert!(other.hits().is_empty());
    // A loop ends.
    fake.redirect("/old-nm", "/old-nm");
    let err = fake.client().fetch().expect_err("loop");
    assert!(
        matches!(err, ClientError::TooManyRedirects { max: 5, .. }),
        "{err}"
    );
}

#[test]
fn bodies_over_their_limits_are_refused() {
    let fake = Fake::start();
    let table = format!(
        "{{\"p0\": {{\"p1\": 1}}, \"pad\": {{{}}}}}",
        (0..200)
            .map(|i| format!("\"x{i}\": 1"))
            .collect::<Vec<_>>()
            .join(",")
    );
    fake.serve_maps(&network_map(2, "v1"), &cost_map("v1", &table), "1");
    let limits = ClientLimits {
        max_cost_map_bytes: Some(1_000),
        ..ClientLimits::default()
    };
    let err = fake.client().with_limits(limits).fetch().expect_err("big");
    assert!(
        matches!(err, ClientError::TooLarge { limit: 1_000, .. }),
        "{err}"
    );
    // The default IRD limit is 1 MiB.
    let huge = format!(
        "{{\"meta\": {{}}, \"resources\": {{}}, \"pad\": \"{}\"}}",
        "x".repeat(2 << 20)
    );
    fake.set("/directory", media::DIRECTORY, None, huge);
    let err = fake.client().fetch().expect_err("huge IRD");
    assert!(
        matches!(err, ClientError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
}

// Issue 17, item 3: gzip asked for and inflated within the limits; the cost map's limit
// follows the PID cap.

fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body).expect("gzip");
    enc.finish().expect("gzip")
}

/// A cost map with one real cost and `pad` bytes of JSON whitespace before its end: valid
/// JSON that only a byte limit can stop.
fn padded_cost_map(vtag: &str, pad: usize) -> Vec<u8> {
    cost_map(
        vtag,
        &format!("{{\"p0\": {{\"p1\": 7}}{}}}", " ".repeat(pad)),
    )
    .into_bytes()
}

#[test]
fn gzip_is_asked_for_and_inflated_and_identity_still_works() {
    let fake = Fake::start();
    let nm = network_map(3, "v1");
    let cm = cost_map("v1", r#"{"p0": {"p1": 1, "p2": 2}, "p1": {"p0": 3}}"#);
    fake.serve_maps(&nm, &cm, "1");
    let identity = updated(fake.client().fetch());
    fake.set_encoded(
        "/networkmap",
        media::NETWORK_MAP,
        "gzip",
        gzip(nm.as_bytes()),
    );
    fake.set_encoded("/costmap", media::COST_MAP, "gzip", gzip(cm.as_bytes()));
    let gzipped = updated(fake.client().fetch());
    assert_eq!(gzipped.pids, identity.pids);
    assert!(gzipped.costs().eq(identity.costs()));
    assert_eq!(gzipped.known_costs(), 3);
    let hits = fake.hits();
    assert!(!hits.is_empty());
    for hit in &hits {
        assert_eq!(
            hit.headers.get("accept-encoding").map(String::as_str),
            Some("gzip"),
            "{hit:?}"
        );
    }
}

#[test]
fn a_gzip_bomb_is_refused_by_its_inflated_size_and_the_last_map_stays_valid() {
    let fake = Fake::start();
    let nm = network_map(2, "v1");
    let good = padded_cost_map("v1", 0);
    fake.serve_maps(&nm, std::str::from_utf8(&good).expect("utf8"), "1");
    let limits = ClientLimits {
        max_cost_map_bytes: Some(1 << 20),
        ..ClientLimits::default()
    };
    let mut client = fake.client().with_limits(limits);
    let first = updated(client.fetch());
    // 64 MiB of JSON whitespace gzips to ~64 KiB: under the limit on the wire, 64 times over
    // it inflated.
    let bomb = gzip(&padded_cost_map("v1", 64 << 20));
    assert!(bomb.len() < 1 << 20, "{} compressed bytes", bomb.len());
    fake.set_encoded("/costmap", media::COST_MAP, "gzip", bomb);
    for _ in 0..2 {
        let err = client.fetch().expect_err("bomb");
        assert!(
            matches!(err, ClientError::Inflated { limit, .. } if limit == 1 << 20),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("gzip response body inflates to over 1048576 bytes"),
            "{err}"
        );
    }
    // The same padding within the limit is read: only the size was at fault.
    fake.set_encoded(
        "/costmap",
        media::COST_MAP,
        "gzip",
        gzip(&padded_cost_map("v1", 1 << 19)),
    );
    let after = updated(client.fetch());
    assert!(after.costs().eq(first.costs()));
}

#[test]
fn gzip_that_never_ends_or_does_not_inflate_is_refused() {
    let fake = Fake::start();
    fake.serve_maps(&network_map(2, "v1"), &cost_map("v1", "{}"), "1");
    let limits = ClientLimits {
        max_cost_map_bytes: Some(1 << 20),
        ..ClientLimits::default()
    };
    // A gzip header, then empty stored deflate blocks (5 bytes each, no output) past the limit:
    // the inflated size never grows, the compressed bytes are bounded.
    let mut endless = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    while endless.len() < 2 << 20 {
        endless.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
    }
    fake.set_encoded("/costmap", media::COST_MAP, "gzip", endless);
    let err = fake
        .client()
        .with_limits(limits)
        .fetch()
        .expect_err("endless");
    assert!(
        matches!(err, ClientError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
    fake.set_encoded(
        "/costmap",
        media::COST_MAP,
        "gzip",
        b"not gzip at all".to_vec(),
    );
    let err = fake.client().fetch().expect_err("corrupt");
    assert!(matches!(err, ClientError::BadGzip { .. }), "{err:?}");
    assert!(err.to_string().contains("invalid gzip body"), "{err}");
    fake.set_encoded(
        "/costmap",
        media::COST_MAP,
        "br",
        cost_map("v1", "{}").into_bytes(),
    );
    let err = fake.client().fetch().expect_err("unasked coding");
    assert!(
        matches!(&err, ClientError::UnsupportedEncoding { encoding, .. } if encoding == "br"),
        "{err:?}"
    );
}

#[test]
fn the_cost_map_limit_follows_the_pid_cap() {
    let at = |max_pids| {
        ClientLimits {
            max_pids,
            ..ClientLimits::default()
        }
        .cost_map_bytes()
    };
    // A full 2,000-PID map from our iTracker is 92.6 MB: it fits the rule (48 bytes a pair).
    assert_eq!(at(2_000), 192_000_000);
    assert!(at(2_000) > 92_600_000);
    assert_eq!(ClientLimits::default().cost_map_bytes(), at(5_000));
    assert_eq!(at(10), 1 << 20, "at least 1 MiB");
    // A set limit wins.
    let set = ClientLimits {
        max_cost_map_bytes: Some(5),
        ..ClientLimits::default()
    };
    assert_eq!(set.cost_map_bytes(), 5);

    // A map over the derived limit is refused with the limit named; the previous map was
    // delivered and nothing of the refused one is remembered.
    let fake = Fake::start();
    let nm = network_map(2, "v1");
    fake.serve_maps(&nm, &cost_map("v1", r#"{"p0": {"p1": 7}}"#), "1");
    let limits = ClientLimits {
        max_pids: 10,
        ..ClientLimits::default()
    };
    let mut client = fake.client().with_limits(limits);
    let first = updated(client.fetch());
    fake.set(
        "/costmap",
        media::COST_MAP,
        Some("\"cm-2\""),
        padded_cost_map("v1", 2 << 20),
    );
    let err = client.fetch().expect_err("too large");
    assert!(
        err.to_string()
            .contains("response body over 1048576 bytes (the client's limit for it)"),
        "{err}"
    );
    assert_eq!(first.known_costs(), 1);
}

// Item 10: a URL that is not an IRD is named for what it serves.

#[test]
fn a_network_map_url_given_as_the_ird_is_named() {
    let fake = Fake::start();
    fake.serve_maps(&network_map(2, "v1"), &cost_map("v1", "{}"), "1");
    let err = AltoClient::new(fake.url("/networkmap"))
        .fetch()
        .expect_err("not an IRD");
    let text = err.to_string();
    assert!(
        text.contains("serves application/alto-networkmap+json, not an IRD (application/alto-directory+json): give the directory URL"),
        "{text}"
    );
    assert!(!text.contains("406"), "{text}");
    // A server that ignores Accept and answers 200 is named the same way.
    fake.set("/lenient", media::COST_MAP, None, cost_map("v1", "{}"));
    fake.routes.lock().expect("routes").insert(
        "/lenient".into(),
        Resource::Body {
            media_type: media::COST_MAP.into(),
            etag: None,
            body: cost_map("v1", "{}").into_bytes(),
        },
    );
    let err = AltoClient::new(fake.url("/lenient"))
        .fetch()
        .expect_err("not an IRD");
    assert!(
        err.to_string()
            .contains("serves application/alto-costmap+json, not an IRD"),
        "{err}"
    );
}

// Item 3: no response body makes the client panic.

#[test]
fn no_response_body_panics_the_client() {
    let fake = Fake::start();
    let nm = network_map(3, "v1");
    let cm = cost_map("v1", r#"{"p0": {"p1": 1, "p2": 2}, "p1": {"p0": 1}}"#);
    let crafted: Vec<String> = vec![
        String::new(),
        "null".into(),
        "[]".into(),
        "{".into(),
        "\u{feff}{}".into(),
        "{\"meta\": 1}".into(),
        "[".repeat(10_000),
        "{\"a\":".repeat(10_000),
        r#"{"meta": {"vtag": {"resource-id": "nm", "tag": "v1"}}, "network-map": {"p0": {"ipv4": ["10.0.0.0/99"]}}}"#.into(),
        r#"{"meta": {"vtag": {"resource-id": "nm", "tag": "v1"}}, "network-map": {"p0": {"ipv4": ["::/0"], "ipv6": ["1.2.3.4/8"]}}}"#.into(),
        r#"{"meta": {"vtag": {"resource-id": "nm", "tag": "v1"}}, "network-map": {"bad name": {"ipv4": ["10.0.0.0/8"]}}}"#.into(),
        cost_map("v1", r#"{"p0": {"p1": 18446744073709551616}}"#),
        cost_map("v1", r#"{"p0": {"p1": 1e400}}"#),
        cost_map("v1", r#"{"p0": {"p1": -0}}"#),
        cost_map("v1", r#"{"p0": {"p1": "1"}}"#),
        cost_map("v1", r#"{"p0": [1, 2]}"#),
        cost_map("v1", r#"{"p0": {"p1": 1}} trailing"#),
        cost_map("v2", "{}"),
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    const ALPHABET: &[u8] = b"{}[]\",:0-e9.\\ ";
    let mutate = |body: &str, r: u64| -> String {
        let mut b = body.as_bytes().to_vec();
        let at = (r as usize) % b.len().max(1);
        match r % 3 {
            0 => b.truncate(at),
            1 => {
                if let Some(x) = b.get_mut(at) {
                    *x = ALPHABET[(r >> 8) as usize % ALPHABET.len()];
                }
            }
            _ => b.insert(at, ALPHABET[(r >> 8) as usize % ALPHABET.len()]),
        }
        String::from_utf8_lossy(&b).into_owned()
    };
    let mut bodies: Vec<(usize, String)> = Vec::new();
    for body in &crafted {
        for slot in 0..3 {
            bodies.push((slot, body.clone()));
        }
    }
    let valid = [ird("/networkmap", "/costmap"), nm.clone(), cm.clone()];
    for _ in 0..150 {
        let r = next();
        let slot = (r % 3) as usize;
        bodies.push((slot, mutate(&valid[slot], r >> 2)));
    }
    let mut client = fake.client();
    for (i, (slot, body)) in bodies.iter().enumerate() {
        let mut parts = valid.clone();
        parts[*slot] = body.clone();
        let tag = i.to_string();
        fake.set("/directory", media::DIRECTORY, None, parts[0].clone());
        fake.set(
            "/networkmap",
            media::NETWORK_MAP,
            Some(&format!("\"nm{tag}\"")),
            parts[1].clone(),
        );
        fake.set(
            "/costmap",
            media::COST_MAP,
            Some(&format!("\"cm{tag}\"")),
            parts[2].clone(),
        );
        // Either outcome is fine; a panic fails the test.
        let _ = client.fetch();
        let _ = AltoClient::new(fake.url("/directory")).fetch();
    }
}
