//! Peak memory of the tracker's ALTO client fed the largest map it accepts (issue 16, item 2).
//!
//! A loopback fake ALTO server (a std `TcpListener` thread) serves a network map of
//! `max_pids` PIDs filling the network map body limit with prefixes, and a cost map filling
//! the cost map body limit with costs (whole rows, as many as fit). The program then fetches
//! them with [`AltoClient`] and builds the snapshot, and prints for each step the peak RSS
//! growth (VmHWM, reset through `/proc/self/clear_refs` before the step, minus VmRSS at its
//! start) and what stays resident after it. Bodies are built before measuring.
//!
//! `cargo run --release -p p4p-benches --bin alto_client_memory -- [pids] [nm_bytes] [cm_bytes]`
//! (defaults: the client's [`ClientLimits::default`]).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use p4p_itracker::alto::media;
use p4p_itracker::client::{AltoClient, ClientLimits, FetchOutcome};

fn main() {
    let limits = ClientLimits::default();
    let mut args = std::env::args().skip(1);
    let mut arg =
        |default: u64| -> u64 { args.next().and_then(|a| a.parse().ok()).unwrap_or(default) };
    let pids = arg(limits.max_pids as u64) as usize;
    let nm_bytes = arg(limits.max_network_map_bytes) as usize;
    let cm_bytes = arg(limits.cost_map_bytes()) as usize;
    let limits = ClientLimits {
        max_pids: limits.max_pids.max(pids),
        max_network_map_bytes: limits.max_network_map_bytes.max(nm_bytes as u64),
        max_cost_map_bytes: Some(limits.cost_map_bytes().max(cm_bytes as u64)),
        ..limits
    };

    let (nm, prefixes) = network_map(pids, nm_bytes);
    let (cm, costs) = cost_map(pids, cm_bytes);
    let ird = format!(
        r#"{{"meta": {{"cost-types": {{"num": {{"cost-mode": "numerical", "cost-metric": "routingcost"}}}},
            "default-alto-network-map": "nm"}},
          "resources": {{
            "nm": {{"uri": "/networkmap", "media-type": "{}"}},
            "cm": {{"uri": "/costmap", "media-type": "{}", "uses": ["nm"],
                   "capabilities": {{"cost-type-names": ["num"]}}}}}}}}"#,
        media::NETWORK_MAP,
        media::COST_MAP
    )
    .into_bytes();
    println!(
        "map: pids={pids} prefixes={prefixes} costs={costs} network_map_bytes={} cost_map_bytes={}",
        nm.len(),
        cm.len()
    );
    let base = serve(Arc::new(ird), Arc::new(nm), Arc::new(cm));

    let mut client = AltoClient::new(format!("{base}/directory")).with_limits(limits);
    let (start_rss, t) = (p4p_benches::reset_peak_kib(), Instant::now());
    let map = match client.fetch() {
        Ok(FetchOutcome::Updated(map)) => map,
        other => panic!("fetch: {other:?}"),
    };
    let elapsed = t.elapsed();
    let (peak, after) = (
        p4p_benches::status_kib("VmHWM:").unwrap_or(0),
        p4p_benches::status_kib("VmRSS:").unwrap_or(0),
    );
    println!(
        "fetch: {:.2} s, peak_rss_growth_mib={:.1} resident_after_mib={:.1} (map + client cache), known_costs={}",
        elapsed.as_secs_f64(),
        mib(peak.saturating_sub(start_rss)),
        mib(after.saturating_sub(start_rss)),
        map.known_costs()
    );

    let (start_rss, t) = (p4p_benches::reset_peak_kib(), Instant::now());
    let snapshot = map.snapshot(100.0);
    let elapsed = t.elapsed();
    let (peak, after) = (
        p4p_benches::status_kib("VmHWM:").unwrap_or(0),
        p4p_benches::status_kib("VmRSS:").unwrap_or(0),
    );
    println!(
        "snapshot: {:.2} s, peak_rss_growth_mib={:.1} resident_after_mib={:.1}, pids={}",
        elapsed.as_secs_f64(),
        mib(peak.saturating_sub(start_rss)),
        mib(after.saturating_sub(start_rss)),
        snapshot.len()
    );
}

/// A network map of `pids` PIDs whose `/32` prefixes (dealt round-robin) fill about `bytes`.
fn network_map(pids: usize, bytes: usize) -> (Vec<u8>, usize) {
    let per_prefix = "\"10.100.100.100/32\",".len();
    let total = (bytes.saturating_sub(pids * 40 + 200) / per_prefix).max(pids);
    let mut groups: Vec<String> = vec![String::new(); pids];
    for i in 0..total {
        let a = std::net::Ipv4Addr::from(0x0a00_0000_u32 + i as u32);
        let g = &mut groups[i % pids];
        if !g.is_empty() {
            g.push(',');
        }
        g.push_str(&format!("\"{a}/32\""));
    }
    let mut out = String::with_capacity(bytes);
    out.push_str(r#"{"meta": {"vtag": {"resource-id": "nm", "tag": "v1"}}, "network-map": {"#);
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("\"p{i}\":{{\"ipv4\":[{g}]}}"));
    }
    out.push_str("}}");
    (out.into_bytes(), total)
}

/// A cost map over `pids` PIDs holding whole rows (every destination) until about `bytes`.
fn cost_map(pids: usize, bytes: usize) -> (Vec<u8>, usize) {
    let mut out = String::with_capacity(bytes);
    out.push_str(
        r#"{"meta": {"dependent-vtags": [{"resource-id": "nm", "tag": "v1"}],
        "cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}}, "cost-map": {"#,
    );
    let mut costs = 0;
    let mut row = String::new();
    for s in 0..pids {
        row.clear();
        row.push_str(&format!("\"p{s}\":{{"));
        for d in 0..pids {
            if d > 0 {
                row.push(',');
            }
            row.push_str(&format!("\"p{d}\":{}", (s * 7 + d * 13) % 100));
        }
        row.push('}');
        if out.len() + row.len() + 3 > bytes {
            break;
        }
        if s > 0 {
            out.push(',');
        }
        out.push_str(&row);
        costs += pids;
    }
    out.push_str("}}");
    (out.into_bytes(), costs)
}

/// Serves the three bodies on 127.0.0.1 port 0 (one request per connection); returns the base.
fn serve(ird: Arc<Vec<u8>>, nm: Arc<Vec<u8>>, cm: Arc<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (ctype, body) = match path {
                "/directory" => (media::DIRECTORY, &ird),
                "/networkmap" => (media::NETWORK_MAP, &nm),
                _ => (media::COST_MAP, &cm),
            };
            let mut stream = stream;
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nETag: \"{path}\"\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    base
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
