//! The tracker's topology refresh at ISP scale (issue 17, item 3): starts the real
//! `p4p-itracker` binary on loopback with the synthetic ISP (`p4p_benches::synthetic_isp`,
//! 2,000 PIDs / 250,000 IPv4 prefixes by default) and runs, in this process, what the tracker's
//! refresher does (`tracker/src/server/tasks.rs`): [`AltoClient::fetch`], [`combine`] into a
//! snapshot, and the swap into a [`TopologyHandle`] announces read.
//!
//! Each refresh is measured for wall time, CPU time of this process (the client is one thread:
//! CPU on one core) and peak extra memory: `VmHWM` (reset through `/proc/self/clear_refs`
//! before the step) minus `VmRSS` at its start, i.e. what the refresh adds on top of what the
//! tracker already holds. Each refresh runs with the previous map and snapshot still held (as
//! the refresher holds its last map and announces hold the snapshot in use), so the peak
//! includes both generations, as in production. Rounds, with gzip asked for and without:
//! - **full**: a new client (every map fetched and parsed: a tracker's first round, or a
//!   network map change);
//! - **costs only**: after a `POST /admin/link-load` on the iTracker (new cost map, the
//!   network map answers 304 and its PIDs are reused).
//!
//! `cargo build --release -p p4p-itracker -p p4p-benches` then
//! `target/release/tracker_refresh_scale --pids 2000 --prefixes 250000`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use p4p_benches::synthetic_isp::{generate, IspSize, SyntheticIsp};
use p4p_itracker::client::{combine, AltoClient, ClientLimits, FetchOutcome, IspMap};
use p4p_tracker::topology::TopologyHandle;

/// Measure the tracker's refresh against the real p4p-itracker on a synthetic ISP.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    isp: IspSize,
    /// The server binary (default: `p4p-itracker` next to this program).
    #[arg(long)]
    itracker: Option<PathBuf>,
    /// Rounds of each kind (the median is reported, and the largest peak).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Give up waiting for the server after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

const TOKEN: &str = "tracker-refresh-bench-token";
/// The tracker's default `topology.interdomain_cost`.
const INTERDOMAIN: f64 = 100.0;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let binary = p4p_benches::sibling_binary(cli.itracker.as_deref(), "p4p-itracker")?;
    p4p_benches::in_temp_dir("p4p-refresh-scale", |dir| run(&cli, &binary, dir))
}

/// The server process we started; killed (by its own pid) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One measured refresh.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    fetch: Duration,
    build: Duration,
    wall: Duration,
    cpu: Duration,
    peak_extra_kib: u64,
}

fn run(cli: &Cli, binary: &Path, dir: &Path) -> anyhow::Result<()> {
    let isp = generate(&cli.isp.params())?;
    let topo = dir.join("isp.toml");
    std::fs::write(&topo, &isp.toml)?;
    std::fs::write(dir.join("token"), TOKEN)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let _server = Server(
        Command::new(binary)
            .arg("--bind")
            .arg(addr.to_string())
            .arg("--topology")
            .arg(&topo)
            .arg("--admin-token-file")
            .arg(dir.join("token"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?,
    );
    let base = format!("http://{addr}");
    let limits = ClientLimits {
        max_pids: ClientLimits::default().max_pids.max(cli.isp.pids),
        ..ClientLimits::default()
    };
    let new_client = |gzip: bool| {
        AltoClient::new(format!("{base}/directory"))
            .with_limits(limits)
            .accept_gzip(gzip)
    };
    // The first fetch waits for the server (it binds once its maps are rendered) and warms
    // its gzip cache, which is built on the first request that asks for it.
    let deadline = Instant::now() + Duration::from_secs(cli.timeout);
    let (mut last, sizes) = loop {
        match new_client(true).fetch() {
            Ok(FetchOutcome::Updated(map)) => break (map, body_sizes(&base)?),
            Ok(FetchOutcome::Unchanged) => bail!("a new client got Unchanged"),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => bail!("the iTracker did not serve its map: {e}"),
        }
    };
    let handle = TopologyHandle::new(combine(std::slice::from_ref(&last), INTERDOMAIN), true);
    println!(
        "map: {} PIDs, {} known costs; bodies: network map {:.1} MB ({:.1} MB gzip), cost map {:.1} MB ({:.1} MB gzip); cost map limit {:.0} MB",
        last.pids.len(),
        last.known_costs(),
        sizes[0] as f64 / 1e6,
        sizes[1] as f64 / 1e6,
        sizes[2] as f64 / 1e6,
        sizes[3] as f64 / 1e6,
        limits.cost_map_bytes() as f64 / 1e6
    );
    println!(
        "baseline RSS with one map and its snapshot held: {:.0} MiB",
        mib(p4p_benches::status_kib("VmRSS:").unwrap_or(0))
    );
    println!(
        "\n| refresh | encoding | fetch | snapshot build + swap | wall | CPU | peak extra memory |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let rounds = cli.rounds.max(1);
    let mut load = 0usize;
    for gzip in [false, true] {
        let encoding = if gzip { "gzip" } else { "identity" };
        let mut full = Vec::new();
        for _ in 0..rounds {
            let mut client = new_client(gzip);
            full.push(refresh(&mut client, &mut last, &handle)?);
        }
        report("full", encoding, &full);
        let mut client = new_client(gzip);
        refresh(&mut client, &mut last, &handle)?;
        let mut costs = Vec::new();
        for _ in 0..rounds {
            // A link off every shortest path changes no cost (and no ETag): try the next one.
            let old = last.cost_etag.trim_matches('"').to_string();
            let mut tries = 0;
            while link_load(addr, &isp, load)?.contains(&old) {
                load += 1;
                tries += 1;
                if tries == 20 {
                    bail!("20 link-loads changed no cost");
                }
            }
            load += 1;
            costs.push(refresh(&mut client, &mut last, &handle)?);
        }
        report("costs only", encoding, &costs);
    }
    println!(
        "\nRSS at the end: {:.0} MiB (peak of the process {:.0} MiB)",
        mib(p4p_benches::status_kib("VmRSS:").unwrap_or(0)),
        mib(p4p_benches::status_kib("VmHWM:").unwrap_or(0))
    );
    Ok(())
}

/// One refresh as the tracker's refresher runs it: fetch, combine, swap. `last` (the map the
/// refresher holds) and the snapshot in `handle` stay alive until the new ones replace them.
fn refresh(
    client: &mut AltoClient,
    last: &mut IspMap,
    handle: &TopologyHandle,
) -> anyhow::Result<Sample> {
    let start_rss = p4p_benches::reset_peak_kib();
    let (t, cpu) = (Instant::now(), cpu_time().unwrap_or_default());
    let map = match client.fetch()? {
        FetchOutcome::Updated(map) => map,
        FetchOutcome::Unchanged => bail!("expected a new map, the iTracker says unchanged"),
    };
    let fetch = t.elapsed();
    let t2 = Instant::now();
    let snapshot = combine(std::slice::from_ref(&map), INTERDOMAIN);
    handle.store(snapshot, 0);
    *last = map;
    let build = t2.elapsed();
    let wall = t.elapsed();
    let cpu = cpu_time().unwrap_or_default().saturating_sub(cpu);
    Ok(Sample {
        fetch,
        build,
        wall,
        cpu,
        peak_extra_kib: p4p_benches::status_kib("VmHWM:")
            .unwrap_or(0)
            .saturating_sub(start_rss),
    })
}

fn report(kind: &str, encoding: &str, samples: &[Sample]) {
    let median = |f: fn(&Sample) -> Duration| {
        let mut v: Vec<Duration> = samples.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    let peak = samples.iter().map(|s| s.peak_extra_kib).max().unwrap_or(0);
    println!(
        "| {kind} | {encoding} | {} | {} | {} | {} | {:.0} MiB |",
        secs(median(|s| s.fetch)),
        secs(median(|s| s.build)),
        secs(median(|s| s.wall)),
        secs(median(|s| s.cpu)),
        mib(peak)
    );
}

/// A new utilisation on one internal link (a different one each call), above the MLU target so
/// that its price rises: the iTracker recomputes its costs, the network map stays. Returns the
/// answer (it names the new cost map ETag).
fn link_load(addr: SocketAddr, isp: &SyntheticIsp, n: usize) -> anyhow::Result<String> {
    let (from, to) = &isp.internal_links[(n * 37) % isp.internal_links.len()];
    let body = format!(
        r#"{{"links":[{{"from":"{from}","to":"{to}","utilisation":{}}}]}}"#,
        1.2 + (n % 7) as f64 / 10.0
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let res = agent
        .post(&format!("http://{addr}/admin/link-load"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(body.as_bytes())?;
    if res.status() != 200 {
        bail!("link-load: HTTP {}", res.status());
    }
    let mut res = res;
    Ok(res.body_mut().read_to_string()?)
}

/// Body sizes of the network map and the numerical cost map, identity and gzip.
fn body_sizes(base: &str) -> anyhow::Result<[u64; 4]> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut out = [0u64; 4];
    for (i, path) in ["/networkmap", "/costmap/routingcost/numerical"]
        .iter()
        .enumerate()
    {
        for (j, enc) in ["identity", "gzip"].iter().enumerate() {
            let mut res = agent
                .get(&format!("{base}{path}"))
                .header("Accept-Encoding", *enc)
                .call()?;
            let mut reader = res.body_mut().with_config().limit(u64::MAX).reader();
            out[i * 2 + j] = std::io::copy(&mut reader, &mut std::io::sink())?;
        }
    }
    Ok(out)
}

/// User + system CPU time of this process (`/proc/self/stat`, 10 ms ticks).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
