//! Admin API (auth, atomic updates, persistence) and the client round trip on port 0.

mod common;

use common::*;
use p4p_itracker::client::{combine, AltoClient, FetchOutcome, IspMap};
use p4p_itracker::PidId;

fn updated(outcome: FetchOutcome) -> IspMap {
    match outcome {
        FetchOutcome::Updated(map) => map,
        FetchOutcome::Unchanged => panic!("expected a new map"),
    }
}

#[test]
fn admin_calls_without_the_right_token_are_rejected() {
    let t = start("loopback.toml", |_| {});
    let topo = std::fs::read_to_string(&t.topology).expect("topology");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic czNjcmV0"),
        Some("Bearer "),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let r = put(&format!("{}/admin/topology", t.base), &topo, &headers);
        assert_eq!(r.status, 401, "{auth:?}");
        let r = post(
            &format!("{}/admin/link-load", t.base),
            "application/json",
            r#"{"links": []}"#,
            &headers,
        );
        assert_eq!(r.status, 401, "{auth:?}");
    }
    // No token configured at all: the admin API is closed.
    let closed = start("loopback.toml", |c| c.admin_token = None);
    let r = put(
        &format!("{}/admin/topology", closed.base),
        &topo,
        &[("Authorization", &bearer())],
    );
    assert_eq!(r.status, 401);
}

#[test]
fn a_bad_topology_is_rejected_with_the_reason_and_the_old_map_keeps_serving() {
    let t = start("loopback.toml", |_| {});
    let before = get(&format!("{}/networkmap", t.base), &[]);
    let file_before = std::fs::read_to_string(&t.topology).expect("file");
    let bad = file_before.replace("127.3.0.0/16", "127.1.0.0/16");
    let r = put(
        &format!("{}/admin/topology", t.base),
        &bad,
        &[("Authorization", &bearer())],
    );
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("127.1.0.0/16") && r.body.contains("a1") && r.body.contains("a2"),
        "{}",
        r.body
    );
    for broken in [
        "isp = ",
        "isp = \"x\"\n[[pid]]\nname = \"bad name\"\nkind = \"internal\"\n",
    ] {
        let r = put(
            &format!("{}/admin/topology", t.base),
            broken,
            &[("Authorization", &bearer())],
        );
        assert_eq!(r.status, 422, "{}", r.body);
    }
    let after = get(&format!("{}/networkmap", t.base), &[]);
    assert_eq!(after.body, before.body);
    assert_eq!(after.etag, before.etag);
    assert_eq!(
        std::fs::read_to_string(&t.topology).expect("file"),
        file_before
    );
}

#[test]
fn a_good_topology_is_served_written_to_the_file_and_prices_survive_a_reload() {
    let t = start("loopback.toml", |_| {});
    let auth = [("Authorization", bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = post(
        &format!("{}/admin/link-load", t.base),
        "application/json",
        r#"{"links": [{"link": "a1->a2", "utilisation": 1.0}]}"#,
        &auth,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let priced = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]).json()["cost-map"]
        ["a1"]["a2"]
        .clone();
    assert_eq!(priced, serde_json::json!(4), "2 + 10 * (1.0 - 0.8)");

    let new = std::fs::read_to_string(&t.topology)
        .expect("file")
        .replace("127.3.0.0/16", "127.5.0.0/16");
    let r = put(&format!("{}/admin/topology", t.base), &new, &auth);
    assert_eq!(r.status, 200, "{}", r.body);
    let nm = get(&format!("{}/networkmap", t.base), &[]).json();
    assert_eq!(
        nm["network-map"]["a2"]["ipv4"],
        serde_json::json!(["127.5.0.0/16"])
    );
    assert_eq!(
        std::fs::read_to_string(&t.topology).expect("file"),
        new,
        "file rewritten"
    );
    let cm = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]).json();
    assert_eq!(
        cm["cost-map"]["a1"]["a2"], priced,
        "dynamic price survived the update"
    );

    // SIGHUP's path: reload from the file.
    let outcome = t.server.state().reload().expect("reload");
    assert_eq!(
        outcome.vtag,
        nm["meta"]["vtag"]["tag"].as_str().expect("tag")
    );
    let cm = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]).json();
    assert_eq!(
        cm["cost-map"]["a1"]["a2"], priced,
        "dynamic price survived the reload"
    );

    let r = post(
        &format!("{}/admin/link-load", t.base),
        "application/json",
        r#"{"links": [{"link": "no-such-link", "utilisation": 0.5}]}"#,
        &auth,
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("no-such-link"));
}

#[test]
fn the_client_round_trips_against_the_real_server() {
    let t = start("loopback.toml", |_| {});
    let mut client = AltoClient::new(format!("{}/directory", t.base));
    let map = updated(client.fetch().expect("first fetch"));
    assert_eq!(map.isp, "isp-a");
    assert_eq!(
        client.fetch().expect("second fetch"),
        FetchOutcome::Unchanged
    );

    let snap = map.snapshot(100.0);
    let at = |ip: &str| snap.locate(ip.parse().expect("ip"));
    let (a1, a2, tb, def) = (
        at("127.1.0.9"),
        at("127.3.2.1"),
        at("127.2.0.1"),
        at("8.8.8.8"),
    );
    assert_eq!(&*snap.pid(a1).name, "a1");
    assert_eq!(&*snap.pid(a2).name, "a2");
    assert_eq!(&*snap.pid(tb).name, "transit-b");
    assert_eq!(&*snap.pid(def).name, "default");
    assert_eq!(snap.cost(a1, a2), 2.0);
    assert_eq!(snap.cost(a1, tb), 50.0);
    assert!(snap.same_isp(a1, a2));
    assert!(!snap.same_isp(a1, tb), "transit-b is marked external");
    assert_eq!(snap.by_cost(a1)[0], a2);
    assert_eq!(snap.version(), map.vtag);
    assert_eq!(snap.index_of(PidId::intern("a1")), Some(a1));

    // A link-load changes costs only: the client sees it through the cost map's ETag.
    let r = post(
        &format!("{}/admin/link-load", t.base),
        "application/json",
        r#"{"links": [{"from": "a1", "to": "a2", "utilisation": 0.3}]}"#,
        &[("Authorization", &bearer())],
    );
    assert_eq!(r.status, 200);
    let map2 = updated(client.fetch().expect("third fetch"));
    assert_eq!(map2.vtag, map.vtag);
    assert_ne!(map2.cost_etag, map.cost_etag);
    let snap2 = map2.snapshot(100.0);
    assert_eq!(
        snap2.cost(a1, a2),
        0.0,
        "price fell: 2 + 10 * (0.3 - 0.8) < 0"
    );
}

#[test]
fn the_client_reads_the_real_servers_gzip_maps_like_its_identity_ones() {
    // 60 PIDs of 4 prefixes: both maps are over the server's gzip threshold (4 KiB), so it
    // compresses them.
    let dir = scratch("gzip-maps");
    let file = dir.join("sixty.toml");
    let mut toml = String::from("isp = \"isp-g\"\n");
    for i in 0..60 {
        let prefixes: Vec<String> = (0..4)
            .map(|k| format!("\"127.{}.{k}.0/24\"", 10 + i))
            .collect();
        toml.push_str(&format!(
            "[[pid]]\nname = \"p{i}\"\nkind = \"internal\"\nprefixes = [{}]\n",
            prefixes.join(", ")
        ));
    }
    for i in 0..60 {
        toml.push_str(&format!(
            "[[link]]\nfrom = \"p{i}\"\nto = \"p{}\"\ncapacity = 10\nweight = 1\n",
            (i + 1) % 60
        ));
    }
    std::fs::write(&file, toml).expect("topology");
    let t = start("loopback.toml", |c| c.topology = Some(file));
    for path in ["/networkmap", "/costmap/routingcost/numerical"] {
        let res = agent()
            .get(&format!("{}{path}", t.base))
            .header("Accept-Encoding", "gzip")
            .call()
            .expect("GET");
        let coding = res.headers().get("content-encoding");
        assert_eq!(coding.and_then(|v| v.to_str().ok()), Some("gzip"), "{path}");
    }
    let url = format!("{}/directory", t.base);
    let gzipped = updated(AltoClient::new(&url).fetch().expect("gzip fetch"));
    let identity = updated(
        AltoClient::new(&url)
            .accept_gzip(false)
            .fetch()
            .expect("identity fetch"),
    );
    assert_eq!(gzipped.pids.len(), 61, "60 and the default PID");
    assert_eq!(gzipped.pids, identity.pids);
    assert!(gzipped.costs().eq(identity.costs()));
    assert!(gzipped.known_costs() >= 60 * 60);
}

#[test]
fn two_isps_combine_into_one_snapshot_each_authoritative_for_its_own_prefixes() {
    let a = start("loopback.toml", |_| {});
    let b = start("loopback-isp-b.toml", |_| {});
    let fetch = |base: &str| {
        updated(
            AltoClient::new(format!("{base}/directory"))
                .fetch()
                .expect("fetch"),
        )
    };
    let (ma, mb) = (fetch(&a.base), fetch(&b.base));
    let snap = combine(&[ma, mb], 500.0);
    let at = |ip: &str| {
        snap.pid(snap.locate(ip.parse().expect("ip")))
            .name
            .to_string()
    };
    assert_eq!(at("127.1.0.1"), "isp-a:a1");
    assert_eq!(at("127.3.0.1"), "isp-a:a2");
    assert_eq!(
        at("127.2.0.1"),
        "isp-b:b1",
        "B's internal prefix beats A's transit-b PID"
    );
    assert_eq!(at("127.4.0.1"), "isp-b:b2");
    assert_eq!(at("8.8.8.8"), "isp-a:default");
    let idx = |n: &str| snap.index_of(PidId::intern(n)).expect(n);
    assert_eq!(snap.cost(idx("isp-a:a1"), idx("isp-a:a2")), 2.0);
    assert_eq!(snap.cost(idx("isp-b:b1"), idx("isp-b:b2")), 2.0);
    assert_eq!(snap.cost(idx("isp-a:a1"), idx("isp-b:b1")), 500.0);
    assert!(snap.same_isp(idx("isp-b:b1"), idx("isp-b:b2")));
    assert!(!snap.same_isp(idx("isp-a:a1"), idx("isp-b:b1")));
    assert_eq!(snap.isps().len(), 2);
}

#[test]
fn a_read_token_closes_the_alto_api_to_strangers() {
    let t = start("loopback.toml", |c| c.read_token = Some("reader".into()));
    assert_eq!(get(&format!("{}/networkmap", t.base), &[]).status, 401);
    assert_eq!(
        get(
            &format!("{}/networkmap", t.base),
            &[("Authorization", "Bearer reader")]
        )
        .status,
        200
    );
    let mut client = AltoClient::new(format!("{}/directory", t.base)).with_token("reader");
    assert!(matches!(client.fetch(), Ok(FetchOutcome::Updated(_))));
    assert_eq!(
        get(&format!("{}/health", t.base), &[]).status,
        200,
        "health stays open"
    );
}

#[test]
fn with_an_asn_database_outside_addresses_carry_their_as() {
    let db = format!("{SHARED}/maxmind/GeoLite2-ASN-Test.mmdb");
    let t = start("loopback.toml", |c| c.asn_db = Some(db.into()));
    let ird = get(&format!("{}/directory", t.base), &[]).json();
    let types = ird["resources"]["endpoint-property"]["capabilities"]["prop-types"].to_string();
    assert!(types.contains("priv:asn"), "{types}");
    let body = r#"{"properties": ["priv:asn", "default-network-map.pid"], "endpoints": ["ipv4:1.0.0.1", "ipv4:12.81.92.1", "ipv4:127.1.0.1"]}"#;
    let r = post(
        &format!("{}/endpointprop/lookup", t.base),
        p4p_itracker::alto::media::ENDPOINT_PROP_PARAMS,
        body,
        &[],
    );
    let ep = r.json();
    Schemas::load().check("InfoResourceEndpointProperties", &ep);
    assert_eq!(
        ep["endpoint-properties"]["ipv4:1.0.0.1"]["priv:asn"],
        "15169"
    );
    assert_eq!(
        ep["endpoint-properties"]["ipv4:12.81.92.1"]["priv:asn"],
        "7018"
    );
    assert!(
        ep["endpoint-properties"]["ipv4:127.1.0.1"]
            .get("priv:asn")
            .is_none(),
        "internal PIDs carry no AS"
    );

    let body = r#"{"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"},
        "endpoints": {"srcs": ["ipv4:12.81.92.1"], "dsts": ["ipv4:12.81.96.1", "ipv4:1.0.0.1"]}}"#;
    let r = post(
        &format!("{}/endpointcost/lookup", t.base),
        p4p_itracker::alto::media::ENDPOINT_COST_PARAMS,
        body,
        &[],
    );
    let ec = r.json();
    let row = &ec["endpoint-cost-map"]["ipv4:12.81.92.1"];
    assert_eq!(
        row["ipv4:12.81.96.1"], 20,
        "same AS 7018: defaults.same_asn"
    );
    assert_eq!(row["ipv4:1.0.0.1"], 100, "different AS: interdomain");
}

/// A topology whose path costs overflow f32 (two links of 2e38: each fits, the sum does not).
fn overflowing_topology() -> String {
    "isp = \"t\"\n\
     [[pid]]\nname = \"a\"\nkind = \"internal\"\nprefixes = [\"10.1.0.0/16\"]\n\
     [[pid]]\nname = \"b\"\nkind = \"internal\"\nprefixes = [\"10.2.0.0/16\"]\n\
     [[pid]]\nname = \"c\"\nkind = \"internal\"\nprefixes = [\"10.3.0.0/16\"]\n\
     [[link]]\nfrom = \"a\"\nto = \"b\"\ncapacity = 1\nweight = 1\ncost = 2e38\n\
     [[link]]\nfrom = \"b\"\nto = \"c\"\ncapacity = 1\nweight = 1\ncost = 2e38\n"
        .to_string()
}

/// Issue 16 item 5: refused everywhere with the reason, never a panic: at start, by PUT (422),
/// by a reload (the old map keeps serving) and by `p4p-itracker check` (non-zero exit).
#[test]
fn a_topology_with_unusable_costs_is_refused_at_start_put_reload_and_check() {
    let dir = scratch("overflow");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, overflowing_topology()).expect("write");
    let err = p4p_itracker::server::spawn(p4p_itracker::config::Config {
        bind: "127.0.0.1:0".parse().expect("addr"),
        topology: Some(bad.clone()),
        ..Default::default()
    })
    .expect_err("refused at start");
    assert!(
        err.to_string().contains("p-distance from PID a to PID c"),
        "{err}"
    );

    let t = start("loopback.toml", |_| {});
    let before = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]);
    let r = put(
        &format!("{}/admin/topology", t.base),
        &overflowing_topology(),
        &[("Authorization", &bearer())],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("p-distance from PID a to PID c"),
        "{}",
        r.body
    );

    std::fs::write(&t.topology, overflowing_topology()).expect("write");
    let e = t.server.state().reload().expect_err("reload refused");
    assert!(e.to_string().contains("p-distance"), "{e}");
    let after = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]);
    assert_eq!(after.body, before.body, "the old map keeps serving");
    let metrics = get(&format!("{}/metrics", t.base), &[]).body;
    assert!(
        metrics.contains(
            "p4p_itracker_topology_updates_total{kind=\"reload\",outcome=\"rejected\"} 1"
        ),
        "a refused reload is counted:\n{metrics}"
    );

    if let Some(exe) = option_env!("CARGO_BIN_EXE_p4p-itracker") {
        let out = std::process::Command::new(exe)
            .arg("check")
            .arg(&bad)
            .output()
            .expect("run check");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("p-distance"), "{stderr}");
    }
}

/// Issue 16 item 5: link loads whose prices would make a p-distance overflow f32 are refused
/// (422), the old prices keep serving.
#[test]
fn link_loads_that_would_overflow_the_costs_are_refused() {
    let t = start("loopback.toml", |_| {});
    // Each price stays below f32::MAX (max_price 3e38), a two-link path would not.
    let chain = overflowing_topology().replace("cost = 2e38\n", "").replace(
        "isp = \"t\"\n",
        "isp = \"t\"\n[pricing]\nmax_price = 3e38\nstep = 1e38\n",
    );
    let r = put(
        &format!("{}/admin/topology", t.base),
        &chain,
        &[("Authorization", &bearer())],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]).body;
    let r = post(
        &format!("{}/admin/link-load", t.base),
        "application/json",
        r#"{"links": [{"link": "a->b", "utilisation": 100}, {"link": "b->c", "utilisation": 100}]}"#,
        &[("Authorization", &bearer())],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("p-distance"), "{}", r.body);
    let after = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]).body;
    assert_eq!(after, body);
}

/// Issue 16 item 4: an admin call is authorised from its headers before its body is read. A
/// connection announcing 15 MiB without a token gets 401 before sending a byte of the body.
#[test]
fn an_unauthorised_admin_body_is_never_read() {
    use std::io::{Read, Write};
    let t = start("loopback.toml", |_| {});
    for (method, path) in [("PUT", "/admin/topology"), ("POST", "/admin/link-load")] {
        let mut s = std::net::TcpStream::connect(t.server.addr()).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/toml\r\n\
             Content-Length: 15728640\r\n\r\n"
        )
        .expect("headers");
        s.write_all(&[b'#'; 1024]).expect("a little body");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).expect("an answer before the body is sent");
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 401"), "{method} {path}: {head}");
    }
}

/// Issue 16 item 8: the bearer scheme is case-insensitive; POST-only and PUT-only resources
/// answer other methods 405 with Allow; a too-large body is 413; every error is
/// application/alto-error+json.
#[test]
fn bearer_is_case_insensitive_and_errors_are_alto_errors() {
    let t = start("loopback.toml", |_| {});
    let topo = std::fs::read_to_string(&t.topology).expect("topology");
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {ADMIN_TOKEN}");
        let r = put(
            &format!("{}/admin/topology", t.base),
            &topo,
            &[("Authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    let r = put(&format!("{}/admin/topology", t.base), &topo, &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.content_type, "application/alto-error+json");
    for (path, allow) in [
        ("/costmap/filtered", "POST"),
        ("/endpointcost/lookup", "POST"),
        ("/admin/topology", "PUT"),
    ] {
        let res = agent()
            .get(&format!("{}{path}", t.base))
            .call()
            .expect("GET");
        assert_eq!(res.status().as_u16(), 405, "{path}");
        assert_eq!(
            res.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow)
        );
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/alto-error+json")
        );
    }
    let big = format!("{{\"pids\": [\"{}\"]}}", "a".repeat(300 * 1024));
    let r = post(
        &format!("{}/networkmap/filtered", t.base),
        "application/alto-networkmapfilter+json",
        &big,
        &[],
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.content_type, "application/alto-error+json");
    assert!(r.json()["meta"]["message"].as_str().is_some(), "{}", r.body);
}

/// Issue 16 item 8: a whitespace-only admin token file refuses to start (it silently turned
/// the admin API off).
#[test]
fn a_whitespace_only_token_file_refuses_to_start() {
    let dir = scratch("token");
    let file = dir.join("admin.token");
    std::fs::write(&file, " \n\t\n").expect("write");
    let err = p4p_itracker::server::spawn(p4p_itracker::config::Config {
        bind: "127.0.0.1:0".parse().expect("addr"),
        admin_token_file: Some(file.clone()),
        ..Default::default()
    })
    .expect_err("refused");
    assert!(
        err.to_string().contains("admin token file") && err.to_string().contains("empty"),
        "{err}"
    );
}
