//! The ALTO server against RFC 7285: every endpoint, media type, error code and schema.

mod common;

use common::*;
use p4p_itracker::alto::media;
use serde_json::{json, Value};

const NUM: &str = r#"{"cost-mode": "numerical", "cost-metric": "routingcost"}"#;

#[test]
fn every_get_resource_has_its_media_type_and_validates_against_the_schemas() {
    let t = start("abilene.toml", |_| {});
    let schemas = Schemas::load();
    for path in ["/", "/directory"] {
        let r = get(&format!("{}{path}", t.base), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, media::DIRECTORY);
        let ird = r.json();
        schemas.check("InfoResourceDirectory", &ird);
        assert_eq!(
            ird["meta"]["default-alto-network-map"],
            "default-network-map"
        );
        assert!(ird["meta"]["cost-types"]["num-routingcost"].is_object());
    }
    let nm = get(&format!("{}/networkmap", t.base), &[]);
    assert_eq!(nm.content_type, media::NETWORK_MAP);
    let nmj = nm.json();
    schemas.check("InfoResourceNetworkMap", &nmj);
    let vtag = nmj["meta"]["vtag"]["tag"]
        .as_str()
        .expect("vtag")
        .to_string();
    assert_eq!(nm.etag.as_deref(), Some(format!("\"{vtag}\"").as_str()));
    assert_eq!(
        nmj["network-map"]["newy-us-abilene"]["ipv4"],
        json!(["128.36.0.0/16", "210.150.0.0/23"])
    );
    assert_eq!(nmj["network-map"]["default"]["ipv6"], json!(["::/0"]));
    for (path, mode) in [("numerical", "numerical"), ("ordinal", "ordinal")] {
        let r = get(&format!("{}/costmap/routingcost/{path}", t.base), &[]);
        assert_eq!(r.content_type, media::COST_MAP);
        let cm = r.json();
        schemas.check("InfoResourceCostMap", &cm);
        assert_eq!(cm["meta"]["cost-type"]["cost-mode"], mode);
        assert_eq!(cm["meta"]["dependent-vtags"][0]["tag"], vtag.as_str());
        assert_eq!(
            cm["meta"]["dependent-vtags"][0]["resource-id"],
            "default-network-map"
        );
    }
    let cm = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]).json();
    assert_eq!(cm["cost-map"]["newy-us-abilene"]["peering-to-geant"], 29);
    assert_eq!(cm["cost-map"]["newy-us-abilene"]["wash-us-abilene"], 0);
    let ord = get(&format!("{}/costmap/routingcost/ordinal", t.base), &[]).json();
    assert_eq!(
        ord["cost-map"]["newy-us-abilene"]["wash-us-abilene"], 1,
        "cheapest ranks 1"
    );
    let pm = get(&format!("{}/propmap/pid", t.base), &[]);
    assert_eq!(pm.content_type, media::PROPMAP);
    let pmj = pm.json();
    assert_eq!(
        pmj["property-map"]["default-network-map.pid:newy-us-abilene"]["priv:p4p-internal"],
        "true"
    );
    assert_eq!(
        pmj["property-map"]["default-network-map.pid:provider"]["priv:p4p-internal"],
        "false"
    );
    assert_eq!(get(&format!("{}/health", t.base), &[]).status, 200);
    let metrics = get(&format!("{}/metrics", t.base), &[]);
    assert!(
        metrics.body.contains("p4p_itracker_http_requests_total"),
        "{}",
        metrics.body
    );
}

#[test]
fn every_post_service_answers_with_its_media_type_and_valid_messages() {
    let t = start("abilene.toml", |_| {});
    let schemas = Schemas::load();
    let req = json!({"pids": ["newy-us-abilene", "no-such-pid"], "address-types": ["ipv4"]});
    schemas.check("ReqFilteredNetworkMap", &req);
    let r = post(
        &format!("{}/networkmap/filtered", t.base),
        media::NETWORK_MAP_FILTER,
        &req.to_string(),
        &[],
    );
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, media::NETWORK_MAP)
    );
    let nm = r.json();
    schemas.check("InfoResourceNetworkMap", &nm);
    assert_eq!(nm["network-map"].as_object().map(|m| m.len()), Some(1));

    let req: Value = serde_json::from_str(&format!(
        r#"{{"cost-type": {NUM}, "constraints": ["le 10"], "pids": {{"srcs": ["newy-us-abilene"], "dsts": []}}}}"#
    ))
    .expect("json");
    schemas.check("ReqFilteredCostMap", &req);
    let r = post(
        &format!("{}/costmap/filtered", t.base),
        media::COST_MAP_FILTER,
        &req.to_string(),
        &[],
    );
    assert_eq!((r.status, r.content_type.as_str()), (200, media::COST_MAP));
    let cm = r.json();
    schemas.check("InfoResourceCostMap", &cm);
    let row = cm["cost-map"]["newy-us-abilene"].as_object().expect("row");
    assert!(row.values().all(|v| v.as_f64().is_some_and(|c| c <= 10.0)));
    assert_eq!(row.get("chic-us-abilene"), Some(&json!(9)));
    assert!(!row.contains_key("kans-us-abilene"), "14 > 10");

    let req = json!({"properties": ["default-network-map.pid", "priv:p4p-internal"],
                     "endpoints": ["ipv4:128.36.5.5", "ipv4:10.2.0.1", "ipv6:2001:db8::1"]});
    schemas.check("ReqEndpointProp", &req);
    let r = post(
        &format!("{}/endpointprop/lookup", t.base),
        media::ENDPOINT_PROP_PARAMS,
        &req.to_string(),
        &[],
    );
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, media::ENDPOINT_PROP)
    );
    let ep = r.json();
    schemas.check("InfoResourceEndpointProperties", &ep);
    assert_eq!(
        ep["endpoint-properties"]["ipv4:128.36.5.5"]["default-network-map.pid"],
        "newy-us-abilene"
    );
    assert_eq!(
        ep["endpoint-properties"]["ipv4:10.2.0.1"]["default-network-map.pid"],
        "peering-to-geant"
    );
    assert_eq!(
        ep["endpoint-properties"]["ipv4:10.2.0.1"]["priv:p4p-internal"],
        "false"
    );
    assert_eq!(
        ep["endpoint-properties"]["ipv6:2001:db8::1"]["default-network-map.pid"],
        "default"
    );

    let req: Value = serde_json::from_str(&format!(
        r#"{{"cost-type": {NUM}, "endpoints": {{"srcs": ["ipv4:128.36.1.1"], "dsts": ["ipv4:141.161.1.1", "ipv4:10.2.3.4", "ipv4:155.97.0.1"]}}}}"#
    ))
    .expect("json");
    schemas.check("ReqEndpointCostMap", &req);
    let r = post(
        &format!("{}/endpointcost/lookup", t.base),
        media::ENDPOINT_COST_PARAMS,
        &req.to_string(),
        &[],
    );
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, media::ENDPOINT_COST)
    );
    let ec = r.json();
    schemas.check("InfoResourceEndpointCostMap", &ec);
    let row = &ec["endpoint-cost-map"]["ipv4:128.36.1.1"];
    assert_eq!(
        (
            row["ipv4:141.161.1.1"].clone(),
            row["ipv4:10.2.3.4"].clone(),
            row["ipv4:155.97.0.1"].clone()
        ),
        (json!(0), json!(29), json!(19))
    );
}

fn error_of(r: &Reply) -> Value {
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.content_type, media::ERROR);
    r.json()["meta"].clone()
}

#[test]
fn every_error_code_comes_with_its_field_value_and_status() {
    let t = start("loopback.toml", |_| {});
    let url = format!("{}/costmap/filtered", t.base);
    let send = |body: &str| post(&url, media::COST_MAP_FILTER, body, &[]);

    let e = error_of(&send("{\"cost-type\": "));
    assert_eq!(e["code"], "E_SYNTAX");

    let e = error_of(&send("{}"));
    assert_eq!(
        (e["code"].clone(), e["field"].clone()),
        (json!("E_MISSING_FIELD"), json!("cost-type"))
    );

    let e = error_of(&send(
        r#"{"cost-type": {"cost-mode": 1, "cost-metric": "routingcost"}}"#,
    ));
    assert_eq!(e["code"], "E_INVALID_FIELD_TYPE");
    assert_eq!(e["field"], "cost-type/cost-mode");
    assert_eq!(e["value"], "1");

    let e = error_of(&send(
        r#"{"cost-type": {"cost-mode": "numerical", "cost-metric": "hopcount"}}"#,
    ));
    assert_eq!(e["code"], "E_INVALID_FIELD_VALUE");
    assert_eq!(
        (e["field"].clone(), e["value"].clone()),
        (json!("cost-type/cost-metric"), json!("hopcount"))
    );

    let e = error_of(&send(&format!(
        r#"{{"cost-type": {NUM}, "constraints": ["about 3"]}}"#
    )));
    assert_eq!(
        (e["code"].clone(), e["field"].clone(), e["value"].clone()),
        (
            json!("E_INVALID_FIELD_VALUE"),
            json!("constraints"),
            json!("about 3")
        )
    );

    let props = format!("{}/endpointprop/lookup", t.base);
    let e = error_of(&post(
        &props,
        media::ENDPOINT_PROP_PARAMS,
        r#"{"properties": ["geo"], "endpoints": []}"#,
        &[],
    ));
    assert_eq!(
        (e["code"].clone(), e["value"].clone()),
        (json!("E_INVALID_FIELD_VALUE"), json!("geo"))
    );
    let e = error_of(&post(
        &props,
        media::ENDPOINT_PROP_PARAMS,
        r#"{"properties": [], "endpoints": ["ipv4:300.1.1.1"]}"#,
        &[],
    ));
    assert_eq!(
        (e["field"].clone(), e["value"].clone()),
        (json!("endpoints"), json!("ipv4:300.1.1.1"))
    );

    let nm = format!("{}/networkmap/filtered", t.base);
    let e = error_of(&post(
        &nm,
        media::NETWORK_MAP_FILTER,
        r#"{"pids": [], "address-types": ["ipx"]}"#,
        &[],
    ));
    assert_eq!(e["field"], "address-types");

    // Unknown fields are ignored (RFC 7285 section 8.3.7).
    let ok = post(
        &nm,
        media::NETWORK_MAP_FILTER,
        r#"{"pids": ["a1"], "future-extension": {"x": 1}}"#,
        &[],
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn wrong_media_types_are_refused_with_415_and_406() {
    let t = start("loopback.toml", |_| {});
    for (path, right) in [
        ("/networkmap/filtered", media::NETWORK_MAP_FILTER),
        ("/costmap/filtered", media::COST_MAP_FILTER),
        ("/endpointprop/lookup", media::ENDPOINT_PROP_PARAMS),
        ("/endpointcost/lookup", media::ENDPOINT_COST_PARAMS),
    ] {
        let r = post(&format!("{}{path}", t.base), "application/json", "{}", &[]);
        assert_eq!(r.status, 415, "{path} with application/json");
        assert_ne!(right, "application/json");
    }
    let r = get(
        &format!("{}/networkmap", t.base),
        &[("Accept", media::COST_MAP)],
    );
    assert_eq!(r.status, 406);
    let r = get(
        &format!("{}/networkmap", t.base),
        &[(
            "Accept",
            "application/alto-networkmap+json, application/alto-error+json",
        )],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn unchanged_maps_answer_304_and_a_link_load_changes_only_the_cost_map_etag() {
    let t = start("loopback.toml", |_| {});
    let nm_url = format!("{}/networkmap", t.base);
    let cm_url = format!("{}/costmap/routingcost/numerical", t.base);
    let nm = get(&nm_url, &[]);
    let cm = get(&cm_url, &[]);
    let (nm_tag, cm_tag) = (
        nm.etag.clone().expect("etag"),
        cm.etag.clone().expect("etag"),
    );
    assert_eq!(get(&nm_url, &[("If-None-Match", &nm_tag)]).status, 304);
    assert_eq!(get(&cm_url, &[("If-None-Match", &cm_tag)]).status, 304);
    assert_eq!(
        get(
            &format!("{}/directory", t.base),
            &[("If-None-Match", "\"stale\"")]
        )
        .status,
        200
    );

    let body = r#"{"links": [{"from": "a1", "to": "a2", "utilisation": 0.99}]}"#;
    let r = post(
        &format!("{}/admin/link-load", t.base),
        "application/json",
        body,
        &[("Authorization", &bearer())],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        get(&nm_url, &[("If-None-Match", &nm_tag)]).status,
        304,
        "network map unchanged"
    );
    let cm2 = get(&cm_url, &[("If-None-Match", &cm_tag)]);
    assert_eq!(cm2.status, 200, "cost map changed");
    assert_ne!(cm2.etag, Some(cm_tag));
    // a1 -> a2 has no static cost: its price rose from the default 2 (utilisation 0.99 is
    // above the 0.8 target); a2 -> a1 was not measured.
    let costs = cm2.json();
    assert!(
        costs["cost-map"]["a1"]["a2"]
            .as_f64()
            .is_some_and(|c| c > 2.0),
        "{costs}"
    );
    assert_eq!(costs["cost-map"]["a2"]["a1"], 2);
}

fn typed_v4(n: u32) -> Vec<String> {
    (0..n)
        .map(|i| format!("\"ipv4:{}\"", std::net::Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

/// Issue 16 item 1: one unauthenticated request must not cost unbounded memory. Pairs beyond
/// `max_endpoint_pairs` (and endpoints beyond `max_endpoints`) are refused with
/// E_INVALID_FIELD_VALUE on `endpoints`; at the limit, the full answer comes back.
#[test]
fn endpoint_requests_beyond_the_configured_limits_are_refused() {
    let t = start("loopback.toml", |c| {
        c.max_endpoint_pairs = 100;
        c.max_endpoints = 5;
    });
    let url = format!("{}/endpointcost/lookup", t.base);
    let body = |srcs: u32, dsts: u32| {
        format!(
            r#"{{"cost-type": {NUM}, "endpoints": {{"srcs": [{}], "dsts": [{}]}}}}"#,
            typed_v4(srcs).join(","),
            typed_v4(dsts).join(",")
        )
    };
    let e = error_of(&post(&url, media::ENDPOINT_COST_PARAMS, &body(11, 10), &[]));
    assert_eq!(e["code"], "E_INVALID_FIELD_VALUE");
    assert_eq!(e["field"], "endpoints");
    assert!(
        e["value"].as_str().expect("value").contains("110 pairs"),
        "{e}"
    );
    // No sources: the client's own address, one source.
    let e = error_of(&post(&url, media::ENDPOINT_COST_PARAMS, &body(0, 101), &[]));
    assert_eq!(e["code"], "E_INVALID_FIELD_VALUE");
    let r = post(&url, media::ENDPOINT_COST_PARAMS, &body(10, 10), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let map = r.json()["endpoint-cost-map"].clone();
    assert_eq!(map.as_object().expect("map").len(), 10);
    assert_eq!(map["ipv4:10.0.0.9"].as_object().expect("row").len(), 10);

    let props = format!("{}/endpointprop/lookup", t.base);
    let body = |n: u32| {
        format!(
            r#"{{"properties": ["default-network-map.pid"], "endpoints": [{}]}}"#,
            typed_v4(n).join(",")
        )
    };
    let e = error_of(&post(&props, media::ENDPOINT_PROP_PARAMS, &body(6), &[]));
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("E_INVALID_FIELD_VALUE"), Some("endpoints"))
    );
    let r = post(&props, media::ENDPOINT_PROP_PARAMS, &body(5), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Issue 16 item 8: a filtered cost map filters while iterating; a 1 x 1 filter must not pay
/// for the full n x n table (it did: 0.19 s at 1,200 PIDs). Measured as a ratio to the full
/// filter on the same server, so machine speed cancels out.
#[test]
fn a_small_cost_map_filter_does_not_pay_for_the_full_table() {
    let n = 700;
    let mut text = String::from("isp = \"big\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[pid]]\nname = \"x{i}\"\nkind = \"external\"\nprefixes = [\"{}/32\"]\n",
            std::net::Ipv4Addr::from(0x0a00_0000 + i)
        ));
    }
    let dir = scratch("big");
    let topology = dir.join("big.toml");
    std::fs::write(&topology, text).expect("write");
    let t = start("loopback.toml", |c| c.topology = Some(topology));
    let url = format!("{}/costmap/filtered", t.base);
    let timed = |body: &str| {
        let started = std::time::Instant::now();
        let r = post(&url, media::COST_MAP_FILTER, body, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        (started.elapsed(), r.json())
    };
    let (full, all) = timed(&format!(r#"{{"cost-type": {NUM}}}"#));
    assert_eq!(
        all["cost-map"]["x1"].as_object().expect("row").len(),
        n as usize + 1
    );
    let small = (0..3)
        .map(|_| {
            let (d, one) = timed(&format!(
                r#"{{"cost-type": {NUM}, "pids": {{"srcs": ["x1"], "dsts": ["x2", "nope"]}}}}"#
            ));
            assert_eq!(one["cost-map"], json!({"x1": {"x2": 65}}));
            d
        })
        .min()
        .expect("three runs");
    assert!(
        small * 20 < full,
        "1x1 filter took {small:?}, the full {n}x{n} one {full:?}"
    );
}

/// Issue 17: full maps are served from pre-rendered bytes, gzip-compressed for clients that
/// accept it (`Vary: Accept-Encoding`), with the same ETag and 304 either way; clients that do
/// not ask for gzip (or refuse it with `q=0`) get the plain body.
#[test]
fn full_maps_are_gzipped_for_clients_that_accept_it_with_the_same_etag() {
    use std::io::Read;
    let mut text = String::from("isp = \"gz\"\n");
    // 100 PIDs of three prefixes: every full map is past the 4 KiB below which gzip is skipped.
    for i in 0..100u32 {
        let net = |k: u32| std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8) + (k << 6));
        text.push_str(&format!(
            "[[pid]]\nname = \"gz{i}\"\nkind = \"internal\"\n\
             prefixes = [\"{}/26\", \"{}/26\", \"{}/26\"]\n",
            net(0),
            net(1),
            net(2)
        ));
    }
    let dir = scratch("gzip");
    let topology = dir.join("gz.toml");
    std::fs::write(&topology, text).expect("write");
    let t = start("loopback.toml", |c| c.topology = Some(topology));
    for path in [
        "/costmap/routingcost/numerical",
        "/costmap/routingcost/ordinal",
        "/networkmap",
    ] {
        let url = format!("{}{path}", t.base);
        let plain = get(&url, &[]);
        assert_eq!(plain.status, 200);
        let fetch = |encoding: &str, etag: Option<&str>| {
            let mut req = agent().get(&url).header("Accept-Encoding", encoding);
            if let Some(tag) = etag {
                req = req.header("If-None-Match", tag);
            }
            let mut res = req.call().expect("GET");
            let header = |n: &str| {
                res.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let (status, coding, vary, etag) = (
                res.status().as_u16(),
                header("content-encoding"),
                header("vary"),
                header("etag"),
            );
            let body = res.body_mut().read_to_vec().expect("body");
            (status, coding, vary, etag, body)
        };
        let (status, coding, vary, etag, body) = fetch("br;q=1.0, gzip;q=0.5", None);
        assert_eq!((status, coding.as_deref()), (200, Some("gzip")), "{path}");
        assert_eq!(vary.as_deref(), Some("Accept-Encoding"));
        assert_eq!(etag, plain.etag, "{path}: one ETag for both encodings");
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut unzipped)
            .expect("valid gzip");
        assert_eq!(unzipped, plain.body, "{path}");
        assert!(body.len() * 3 < plain.body.len(), "{path}: compressed");
        let (status, coding, ..) = fetch("gzip;q=0, identity", None);
        assert_eq!((status, coding), (200, None), "{path}: gzip refused");
        let tag = plain.etag.clone().expect("etag");
        let (status, ..) = fetch("gzip", Some(&tag));
        assert_eq!(status, 304, "{path}");
    }
}
