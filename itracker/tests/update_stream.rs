//! RFC 8895 update streams over real sockets: what the server emits (validated against our
//! JSON Schemas), merge patches that turn the last cost map into the new one, stream control,
//! bounds, and a client that resynchronises after garbage or a patch that breaks the map.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{bearer, get, post, start, Schemas};
use p4p_itracker::alto::sse::{read_event, Event};
use p4p_itracker::client::{AltoClient, IspMap, StreamError, UpdateStream};
use serde_json::{json, Value};

const PARAMS: &str = "application/alto-updatestreamparams+json";
const CONTROL: &str = "application/alto-updatestreamcontrol+json";

/// Opens a stream (a 20 s cap on the whole exchange, so a missing event fails the test).
fn open(base: &str, body: &Value) -> Box<dyn BufRead> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let res = agent
        .post(&format!("{base}/updates/stream"))
        .header("Content-Type", PARAMS)
        .send(body.to_string())
        .expect("POST stream");
    assert_eq!(res.status().as_u16(), 200);
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    Box::new(BufReader::new(res.into_body().into_reader()))
}

fn next(r: &mut dyn BufRead) -> (Event, Value) {
    let e = read_event(&mut &mut *r, 1 << 24)
        .expect("event")
        .expect("stream open");
    let v = serde_json::from_str(&e.data).expect("event data is JSON");
    (e, v)
}

#[test]
fn a_link_load_arrives_as_a_merge_patch_that_gives_the_new_cost_map() {
    let t = start("loopback.toml", |_| {});
    let schemas = Schemas::load();
    let ird = get(&format!("{}/directory", t.base), &[]).json();
    schemas.check("InfoResourceDirectory", &ird);
    let entry = &ird["resources"]["update-stream"];
    assert_eq!(entry["media-type"], "text/event-stream");
    assert_eq!(entry["accepts"], PARAMS);
    schemas.check_file(
        "message.UpdateStreamCapabilities.rfc8895.json",
        &entry["capabilities"],
    );

    let request = json!({"add": {
        "nm": {"resource-id": "default-network-map"},
        "cm": {"resource-id": "routingcost-num"},
        "pm": {"resource-id": "pid-properties"},
    }});
    schemas.check_file("message.UpdateStreamParams.rfc8895.json", &request);
    let mut s = open(&t.base, &request);
    let (e, hello) = next(&mut *s);
    assert_eq!(e.name, CONTROL);
    schemas.check_file("message.UpdateStreamControl.rfc8895.json", &hello);
    let control_uri = hello["control-uri"]
        .as_str()
        .expect("control-uri")
        .to_string();

    let mut cost_map = Value::Null;
    for _ in 0..3 {
        let (e, v) = next(&mut *s);
        match e.kind() {
            ("application/alto-networkmap+json", Some("nm")) => {
                schemas.check("InfoResourceNetworkMap", &v)
            }
            ("application/alto-costmap+json", Some("cm")) => {
                schemas.check("InfoResourceCostMap", &v);
                cost_map = v;
            }
            ("application/alto-propmap+json", Some("pm")) => {}
            other => panic!("unexpected first event {other:?}"),
        }
    }
    let full = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]);
    assert_eq!(cost_map, full.json());

    let r = post(
        &format!("{}/admin/link-load", t.base),
        "application/json",
        r#"{"links": [{"from": "a1", "to": "a2", "utilisation": 0.3}]}"#,
        &[("Authorization", &bearer())],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let after = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]);
    assert_ne!(after.json(), cost_map, "the link load changed some cost");
    let (e, patch) = next(&mut *s);
    assert_eq!(e.name, "application/merge-patch+json,cm", "{}", e.data);
    assert!(e.data.len() < after.body.len(), "the patch is smaller");
    json_patch::merge(&mut cost_map, &patch);
    assert_eq!(cost_map, after.json());
    schemas.check("InfoResourceCostMap", &cost_map);

    // Stream control: stop the property map substream; the stream says so.
    let r = post(
        &format!("{}{control_uri}", t.base),
        PARAMS,
        r#"{"remove": ["pm"]}"#,
        &[],
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let (e, stopped) = next(&mut *s);
    assert_eq!(e.name, CONTROL);
    schemas.check_file("message.UpdateStreamControl.rfc8895.json", &stopped);
    assert_eq!(stopped["stopped"], json!(["pm"]));
    // Removing it again is an error; an unknown stream is 404.
    let r = post(
        &format!("{}{control_uri}", t.base),
        PARAMS,
        r#"{"remove": ["pm"]}"#,
        &[],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["meta"]["code"], "E_INVALID_FIELD_VALUE");
    let r = post(
        &format!("{}/updates/control/0123", t.base),
        PARAMS,
        r#"{"remove": ["cm"]}"#,
        &[],
    );
    assert_eq!(r.status, 404);
    assert!(r.content_type.starts_with("application/alto-error+json"));
}

#[test]
fn bad_stream_requests_get_alto_errors() {
    let t = start("loopback.toml", |_| {});
    let url = format!("{}/updates/stream", t.base);
    let code = |body: &str| {
        let r = post(&url, PARAMS, body, &[]);
        assert!(r.content_type.starts_with("application/alto-error+json"));
        (
            r.status,
            r.json()["meta"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(code("{nope"), (400, "E_SYNTAX".into()));
    assert_eq!(
        code(r#"{"add": {"x": {"resource-id": "no-such-map"}}}"#),
        (400, "E_INVALID_FIELD_VALUE".into())
    );
    assert_eq!(code(r#"{"add": {}}"#), (400, "E_MISSING_FIELD".into()));
    let many: serde_json::Map<String, Value> = (0..17)
        .map(|i| (format!("s{i}"), json!({"resource-id": "routingcost-num"})))
        .collect();
    assert_eq!(
        code(&json!({ "add": many }).to_string()),
        (400, "E_INVALID_FIELD_VALUE".into())
    );
    let big = format!(r#"{{"remove": ["{}"]}}"#, "x".repeat(20_000));
    assert_eq!(post(&url, PARAMS, &big, &[]).status, 413);
    assert_eq!(post(&url, "application/json", "{}", &[]).status, 415);
}

/// A fake ALTO server: the real server's IRD, then for each stream connection the scripted
/// events of that connection (and then the connection is closed).
fn fake_server(ird: String, scripts: Vec<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut scripts = scripts.into_iter();
        for conn in listener.incoming().take(32) {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (ct, payload) = if request_line.starts_with("GET /directory") {
                ("application/alto-directory+json", ird.clone().into_bytes())
            } else if request_line.starts_with("POST /updates/stream") {
                match scripts.next() {
                    Some(s) => ("text/event-stream", s),
                    None => return,
                }
            } else {
                ("text/plain", b"no".to_vec())
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&payload);
        }
    });
    format!("http://{addr}/directory")
}

fn event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

#[test]
fn garbage_or_a_breaking_patch_ends_the_stream_and_a_reconnect_resynchronises() {
    let t = start("loopback.toml", |_| {});
    let ird = get(&format!("{}/directory", t.base), &[]).body;
    let nm = get(&format!("{}/networkmap", t.base), &[]).body;
    let cm = get(&format!("{}/costmap/routingcost/numerical", t.base), &[]).body;
    let pm = get(&format!("{}/propmap/pid", t.base), &[]).body;
    let fulls = [
        event(CONTROL, r#"{"control-uri": "/updates/control/x"}"#),
        event("application/alto-networkmap+json,nm", &nm),
        event("application/alto-costmap+json,cm", &cm),
        event("application/alto-propmap+json,pm", &pm),
    ]
    .concat();
    let src = serde_json::from_str::<Value>(&cm).expect("cm")["cost-map"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("a source PID");
    let breaking = event(
        "application/merge-patch+json,cm",
        &json!({"cost-map": {src.clone(): {src: -5}}}).to_string(),
    );
    let scripts = vec![
        format!(
            "{fulls}{}",
            event("application/merge-patch+json,cm", "{not json")
        ),
        format!("{fulls}{breaking}"),
        event("application/merge-patch+json,cm", r#"{"cost-map": {}}"#),
        fulls.clone(),
    ];
    let url = fake_server(ird, scripts.into_iter().map(String::into_bytes).collect());
    let client = AltoClient::new(url);

    // 1: a good map, then garbage.
    let mut s = client.open_stream().expect("open").expect("offered");
    let first = s.next_map().expect("the first map");
    assert_eq!(s.control_uri(), Some("/updates/control/x"));
    assert!(matches!(s.next_map(), Err(StreamError::Garbage { .. })));
    // 2: a patch that leaves an invalid cost: refused, never delivered.
    let mut s = client.open_stream().expect("open").expect("offered");
    assert_eq!(s.next_map().expect("map").pids, first.pids);
    assert!(matches!(s.next_map(), Err(StreamError::Map(_))));
    // 3: a patch before any full message.
    let mut s = client.open_stream().expect("open").expect("offered");
    assert!(matches!(s.next_map(), Err(StreamError::Garbage { .. })));
    // 4: resynchronised from full messages: the same map as the first.
    let mut s = client.open_stream().expect("open").expect("offered");
    let again = s.next_map().expect("resynchronised");
    assert_eq!(again.pids, first.pids);
    assert_eq!(again.snapshot(100.0).len(), first.snapshot(100.0).len());
    assert!(matches!(s.next_map(), Err(StreamError::Ended)));
}

#[test]
fn streams_beyond_the_limit_are_refused_with_an_alto_error() {
    use std::net::TcpStream;
    let t = start("loopback.toml", |_| {});
    let addr = t.server.addr();
    let body = r#"{"add": {"cm": {"resource-id": "routingcost-num"}}}"#;
    let open = || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "POST /updates/stream HTTP/1.1\r\nHost: t\r\nContent-Type: {PARAMS}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).expect("status line");
        (s, String::from_utf8_lossy(&head).to_string())
    };
    let mut held = Vec::new();
    for _ in 0..p4p_itracker::server::MAX_STREAMS {
        let (s, status) = open();
        assert_eq!(status, "HTTP/1.1 200", "within the limit");
        held.push(s);
    }
    let (mut s, status) = open();
    assert_eq!(status, "HTTP/1.1 503");
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.contains("application/alto-error+json"), "{rest}");
    // A stream closed frees its place.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, status) = open();
        if status == "HTTP/1.1 200" {
            held.push(s);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place was never freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn closing_ends_every_stream_and_refuses_new_ones() {
    let t = start("loopback.toml", |_| {});
    let request = json!({"add": {"cm": {"resource-id": "routingcost-num"}}});
    let mut s = open(&t.base, &request);
    let (e, _) = next(&mut *s);
    assert_eq!(e.name, CONTROL);
    let (e, _) = next(&mut *s);
    assert_eq!(e.name, "application/alto-costmap+json,cm");
    t.server.state().close_update_streams();
    assert!(
        read_event(&mut s, 1 << 20).expect("a clean end").is_none(),
        "the stream ends"
    );
    let r = post(
        &format!("{}/updates/stream", t.base),
        PARAMS,
        &request.to_string(),
        &[],
    );
    assert_eq!(r.status, 503);
    assert!(r.content_type.starts_with("application/alto-error+json"));
}

/// Issue 17: a server that accepts the stream, sends its first event, then goes silent
/// without closing (a host gone, a path cut): the client gives it up after its idle timeout
/// instead of waiting forever.
#[test]
fn a_server_that_goes_silent_ends_the_stream_after_the_idle_timeout() {
    let t = start("loopback.toml", |_| {});
    let ird = get(&format!("{}/directory", t.base), &[]).body;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if request_line.starts_with("GET /directory") {
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/alto-directory+json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{ird}",
                    ird.len()
                );
            } else {
                // Headers and one event, then nothing, the connection left open.
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n{}",
                    event(CONTROL, r#"{"control-uri": "/updates/control/x"}"#)
                );
                let _ = conn.flush();
                let _ = held_tx.send(conn);
            }
        }
    });
    let client = AltoClient::new(format!("http://{addr}/directory"));
    let idle = Duration::from_millis(300);
    let options = p4p_itracker::client::StreamOptions { idle_timeout: idle };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut s = client
            .open_stream_with(options, &mut None)
            .expect("open")
            .expect("offered");
        let ended = s.next_map().map(|_| ());
        let _ = done_tx.send((ended, started.elapsed(), s.control_uri().map(String::from)));
    });
    let (ended, took, control) = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the silent stream was never given up");
    assert!(
        matches!(ended, Err(StreamError::Idle(d)) if d == idle),
        "{ended:?}"
    );
    assert!(took >= idle, "gave up after {took:?}, before the timeout");
    assert_eq!(
        control.as_deref(),
        Some("/updates/control/x"),
        "the event before the silence was read"
    );
    // The connection was still open on the server's side all along.
    assert!(held_rx.try_recv().is_ok());
}

/// A loopback TCP proxy in front of a server: forwards every connection, records what the
/// server sent on each, and can cut every connection open at once (a network failure that
/// the server does not see as the client leaving cleanly).
struct Proxy {
    url: String,
    conns: Conns,
}

/// The proxy's connections: the client side, and what the server sent on it.
type Conns = std::sync::Arc<std::sync::Mutex<Vec<(std::net::TcpStream, Log)>>>;
type Log = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

impl Proxy {
    fn new(upstream: std::net::SocketAddr) -> Proxy {
        use std::net::TcpStream;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns: Conns = Arc::default();
        let list = conns.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().take(64) {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let seen = Arc::new(Mutex::new(Vec::new()));
                let pipe = |mut from: TcpStream, mut to: TcpStream, log: Option<Log>| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            // Logged before it is forwarded: what the client read is logged.
                            if let Some(log) = &log {
                                log.lock().expect("log").extend_from_slice(&buf[..n]);
                            }
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    None,
                );
                pipe(
                    server.try_clone().expect("clone"),
                    client.try_clone().expect("clone"),
                    Some(seen.clone()),
                );
                list.lock().expect("list").push((client, seen));
            }
        });
        Proxy {
            url: format!("http://{addr}/directory"),
            conns,
        }
    }

    /// Cuts every connection open now.
    fn cut(&self) {
        for (c, _) in self.conns.lock().expect("list").iter() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// What the server sent on the last connection that answered with an event stream.
    fn last_stream(&self) -> String {
        let conns = self.conns.lock().expect("list");
        conns
            .iter()
            .rev()
            .map(|(_, seen)| String::from_utf8_lossy(&seen.lock().expect("log")).into_owned())
            .find(|s| s.contains("text/event-stream"))
            .unwrap_or_default()
    }
}

/// Issue 17: a stream cut by the network is resumed with the tags of the maps held: the
/// server sends no full map again (the client is current), and the next change arrives as a
/// patch and is delivered.
#[test]
fn a_resumed_stream_names_its_tags_and_gets_no_full_map_again() {
    let t = start("loopback.toml", |_| {});
    let proxy = Proxy::new(t.server.addr());
    let client = AltoClient::new(proxy.url.clone());
    let mut s = client.open_stream().expect("open").expect("offered");
    let first = s.next_map().expect("the first map");
    let full = proxy.last_stream();
    assert!(
        full.contains("event: application/alto-costmap+json,cm\nid: "),
        "{full}"
    );
    assert!(full.contains("event: application/alto-networkmap+json,nm\nid: "));

    proxy.cut();
    let ended = s.next_map();
    assert!(ended.is_err(), "the cut ends the stream");
    assert!(s.resumable());
    let mut held = Some(s);
    // The server unreachable: the attempt fails and what the client holds is kept.
    let gone = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let down = AltoClient::new(format!("http://{gone}/directory"));
    assert!(down.reopen_stream(&mut held).is_err());
    assert!(
        held.is_some(),
        "a failed attempt keeps the stream to resume"
    );
    let mut s = client
        .reopen_stream(&mut held)
        .expect("reopen")
        .expect("offered");
    assert!(held.is_none(), "taken by the new stream");
    load_a_link(&t.base);
    changed_by_patch_only(&mut s, &first, &proxy);
}

/// Raises the load of link a1 -> a2 through the admin API.
fn load_a_link(base: &str) {
    let r = post(
        &format!("{base}/admin/link-load"),
        "application/json",
        r#"{"links": [{"from": "a1", "to": "a2", "utilisation": 0.95}]}"#,
        &[("Authorization", &bearer())],
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The stream delivers a map whose costs differ from `first`'s, and what the proxy saw of the
/// (resumed) stream is a cost-map merge patch and no full message.
fn changed_by_patch_only(s: &mut UpdateStream, first: &IspMap, proxy: &Proxy) {
    let next = s.next_map().expect("the change, delivered");
    assert_eq!(next.pids, first.pids);
    assert!(
        !next.costs().eq(first.costs()),
        "the link load changed a cost"
    );
    let resumed = proxy.last_stream();
    assert!(
        resumed.contains("event: application/merge-patch+json,cm"),
        "{resumed}"
    );
    for full in [
        "alto-networkmap+json,nm",
        "alto-costmap+json,cm",
        "alto-propmap+json,pm",
    ] {
        assert!(!resumed.contains(full), "{full} sent again:\n{resumed}");
    }
}

/// Issue 17: a stream that broke while the version changed resumes one version behind: the
/// server sends the merge patch from the version the client names, not the full cost map,
/// and the client applies it.
#[test]
fn a_stream_resumed_one_version_behind_gets_the_patch() {
    let t = start("loopback.toml", |_| {});
    let proxy = Proxy::new(t.server.addr());
    let client = AltoClient::new(proxy.url.clone());
    let mut s = client.open_stream().expect("open").expect("offered");
    let first = s.next_map().expect("the first map");
    proxy.cut();
    assert!(s.next_map().is_err(), "the cut ends the stream");
    // The version changes while the client has no stream.
    load_a_link(&t.base);
    let mut held = Some(s);
    let mut s = client
        .reopen_stream(&mut held)
        .expect("reopen")
        .expect("offered");
    changed_by_patch_only(&mut s, &first, &proxy);
}

/// Issue 17: `/metrics` counts the update streams open.
#[test]
fn metrics_count_the_open_update_streams() {
    let t = start("loopback.toml", |_| {});
    let gauge = || -> i64 {
        let text = get(&format!("{}/metrics", t.base), &[]).body;
        text.lines()
            .find_map(|l| l.strip_prefix("p4p_itracker_update_streams "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the update_streams gauge")
    };
    assert_eq!(gauge(), 0);
    let addr = t.server.addr();
    let body = r#"{"add": {"cm": {"resource-id": "routingcost-num"}}}"#;
    let open = || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "POST /updates/stream HTTP/1.1\r\nHost: t\r\nContent-Type: {PARAMS}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).expect("status line");
        assert_eq!(&head, b"HTTP/1.1 200");
        s
    };
    let a = open();
    let b = open();
    assert_eq!(gauge(), 2);
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while gauge() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "a closed stream is still counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(b);
}
