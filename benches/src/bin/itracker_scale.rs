//! The iTracker at ISP scale (issue 17, item 2): starts the real `p4p-itracker` binary on
//! loopback with a synthetic ISP (`p4p_benches::synthetic_isp`, generated into a temporary
//! directory) and measures what an operator and its trackers do to it.
//!
//! Reported (median of `--rounds` where repeated):
//! - generation of the topology file;
//! - start-up: process start to `/health` answering (read, parse, validate, p-distances, every
//!   rendered message);
//! - `GET` of the full network and numerical cost maps: time to the first response byte (the
//!   server's work, not the transfer) and to the last, identity and gzip; `If-None-Match` (304);
//! - `POST /costmap/filtered` 1 x 1 (numerical and ordinal) and 10 x 10;
//! - `POST /endpointcost/lookup` 1 x 1 and 1,000 x 1,000 (to the last byte);
//! - `POST /admin/link-load` (one link, and 100 links): recompute and swap, to the answer;
//! - `PUT /admin/topology` with the same file (validate, recompute, rewrite, swap);
//! - the server's resident memory (VmRSS) after start and at the end, and its peak (VmHWM);
//!   and the peak during each step (`[peak N MB]`: VmHWM reset through `/proc/<pid>/clear_refs`
//!   before the step, read after it), to see which step sets the overall peak.
//!
//! `cargo build --release -p p4p-itracker -p p4p-benches` then
//! `target/release/itracker_scale --pids 2000 --prefixes 250000` (`--itracker PATH` to measure
//! another build of the server, e.g. an older commit's).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use p4p_benches::synthetic_isp::{generate, IspSize, SyntheticIsp};

/// Measure the real p4p-itracker binary on a synthetic ISP.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    isp: IspSize,
    /// The server binary (default: `p4p-itracker` next to this program).
    #[arg(long)]
    itracker: Option<PathBuf>,
    /// Repetitions of each read request.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Give up on any one step after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Label of this run in the report.
    #[arg(long, default_value = "this build")]
    label: String,
}

const TOKEN: &str = "itracker-scale-bench-token";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let binary = p4p_benches::sibling_binary(cli.itracker.as_deref(), "p4p-itracker")?;
    p4p_benches::in_temp_dir("p4p-itracker-scale", |dir| run(&cli, &binary, dir))
}

/// One line of the report.
struct Row(String, String);

fn run(cli: &Cli, binary: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let t = Instant::now();
    let isp = generate(&cli.isp.params())?;
    rows.push(Row(
        "generate".into(),
        format!(
            "{} (PIDs {}, prefixes {} + {}, {} links, {:.1} MB)",
            secs(t.elapsed()),
            isp.pid_names.len(),
            isp.prefixes.0,
            isp.prefixes.1,
            isp.internal_links.len() + isp.egress_links,
            isp.toml.len() as f64 / 1e6
        ),
    ));
    in_process(&isp, &mut rows)?;
    let topo = dir.join("isp.toml");
    std::fs::write(&topo, &isp.toml)?;
    std::fs::write(dir.join("token"), TOKEN)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let timeout = Duration::from_secs(cli.timeout);

    let t = Instant::now();
    let child = Command::new(binary)
        .arg("--bind")
        .arg(addr.to_string())
        .arg("--topology")
        .arg(&topo)
        .arg("--admin-token-file")
        .arg(dir.join("token"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut server = Server { child, addr };
    server.wait_ready(timeout)?;
    rows.push(Row(
        "start-up to /health".into(),
        format!("{} ({} CPU)", secs(t.elapsed()), secs(server.cpu())),
    ));
    rows.push(Row("RSS after start".into(), server.memory()?));
    server.reset_peak();
    measure(cli, &server, &isp, &topo, &mut rows)?;
    rows.push(Row("RSS at the end (peak)".into(), server.memory()?));
    println!(
        "\n### p4p-itracker at {} PIDs ({})\n",
        isp.pid_names.len(),
        cli.label
    );
    println!("| step | result |\n| --- | --- |");
    for Row(step, value) in &rows {
        println!("| {step} | {value} |");
    }
    Ok(())
}

/// The same work in this process, step by step (this build's library, whatever `--itracker`
/// names): where start-up and a link-load spend their time.
fn in_process(isp: &SyntheticIsp, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    use p4p_itracker::model::{p_distances, LinkLoad};
    use p4p_itracker::server::Served;
    use p4p_itracker::Topology;
    let mut step = |name: &str, (t, cpu): (Instant, Duration)| {
        let cpu = cpu_time("self").unwrap_or_default().saturating_sub(cpu);
        rows.push(Row(
            format!("in-process: {name}"),
            format!("{} ({} CPU)", secs(t.elapsed()), secs(cpu)),
        ))
    };
    let now = || (Instant::now(), cpu_time("self").unwrap_or_default());
    let t = now();
    let file: p4p_itracker::model::file::TopologyFile = toml::from_str(&isp.toml)?;
    step("TOML parse (serde)", t);
    let t = now();
    p4p_itracker::model::file::validate(file)?;
    step("validate", t);
    let t = now();
    let topology = Topology::from_toml_str(&isp.toml)?;
    step("Topology::from_toml_str (parse, validate, p-distances)", t);
    let t = now();
    let costs = p_distances(topology.pids(), topology.links(), topology.defaults());
    step("p-distances alone", t);
    drop(costs);
    let t = now();
    let snapshot = topology.try_snapshot_with_asn(None)?;
    step("snapshot", t);
    drop(snapshot);
    let t = now();
    let served = Served::new(topology.clone(), None)?;
    step("Served::new (snapshot, maps rendered)", t);
    let loads: Vec<LinkLoad> = isp.internal_links[..1]
        .iter()
        .map(|(f, t)| LinkLoad {
            link: None,
            from: Some(f.clone()),
            to: Some(t.clone()),
            utilisation: 0.93,
        })
        .collect();
    let t = now();
    let mut next = served.topology.clone();
    next.apply_link_loads(&loads)?;
    step("link-load: clone + prices + p-distances", t);
    let t = now();
    let next = served.with_new_costs(next, None)?;
    step("link-load: Served::with_new_costs", t);
    let t = now();
    let _ = next.cost_num.gzip();
    step("gzip of the numerical cost map", t);
    Ok(())
}

fn measure(
    cli: &Cli,
    server: &Server,
    isp: &SyntheticIsp,
    topo: &Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let a = server.addr;
    let rounds = cli.rounds.max(1);
    for (name, path) in [
        ("GET /networkmap", "/networkmap"),
        ("GET numerical cost map", "/costmap/routingcost/numerical"),
    ] {
        let first = get(a, path, &[])?;
        let etag = first.header("etag").unwrap_or_default();
        let plain = repeat(rounds, || get(a, path, &[]))?;
        let gz = repeat(rounds, || get(a, path, &[("Accept-Encoding", "gzip")]))?;
        let cond = repeat(rounds, || get(a, path, &[("If-None-Match", &etag)]))?;
        rows.push(Row(
            name.into(),
            format!(
                "{} first byte, {} last byte, {:.1} MB",
                ms(plain.ttfb),
                ms(plain.total),
                plain.bytes as f64 / 1e6
            ),
        ));
        server.mark_peak(rows);
        rows.push(Row(
            format!("{name}, gzip accepted"),
            format!(
                "{} first byte, {} last byte, {:.1} MB ({})",
                ms(gz.ttfb),
                ms(gz.total),
                gz.bytes as f64 / 1e6,
                gz.encoding
            ),
        ));
        server.mark_peak(rows);
        rows.push(Row(
            format!("{name}, If-None-Match"),
            format!("{} ({})", ms(cond.total), cond.status),
        ));
        server.mark_peak(rows);
    }
    let names = &isp.pid_names;
    let (src, dst) = (&names[isp.internal - 1], &names[isp.internal / 2]);
    for (label, mode, n) in [
        ("filtered cost map 1 x 1", "numerical", 1),
        ("filtered cost map 1 x 1, ordinal", "ordinal", 1),
        ("filtered cost map 10 x 10", "numerical", 10),
    ] {
        let pick = |from: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("{:?}", names[(from + i * 97) % names.len()]))
                .collect()
        };
        let (srcs, dsts) = if n == 1 {
            (vec![format!("{src:?}")], vec![format!("{dst:?}")])
        } else {
            (pick(3), pick(500))
        };
        let body = format!(
            r#"{{"cost-type":{{"cost-mode":"{mode}","cost-metric":"routingcost"}},"pids":{{"srcs":[{}],"dsts":[{}]}}}}"#,
            srcs.join(","),
            dsts.join(",")
        );
        let r = repeat(rounds, || {
            post(
                a,
                "/costmap/filtered",
                "application/alto-costmapfilter+json",
                body.as_bytes(),
            )
        })?;
        rows.push(Row(
            format!("POST {label}"),
            format!("{} ({}, {} B)", ms(r.total), r.status, r.bytes),
        ));
        server.mark_peak(rows);
    }
    for n in [1usize, 1000] {
        let addrs = |skip: usize| -> String {
            isp.sample_addrs
                .iter()
                .cycle()
                .skip(skip)
                .take(n)
                .enumerate()
                .map(|(i, ip)| format!("\"{}\"", typed(*ip, i)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let body = format!(
            r#"{{"cost-type":{{"cost-mode":"numerical","cost-metric":"routingcost"}},"endpoints":{{"srcs":[{}],"dsts":[{}]}}}}"#,
            addrs(0),
            addrs(7)
        );
        let r = repeat(rounds.min(3), || {
            post(
                a,
                "/endpointcost/lookup",
                "application/alto-endpointcostparams+json",
                body.as_bytes(),
            )
        })?;
        rows.push(Row(
            format!("POST endpoint cost {n} x {n}"),
            format!(
                "{} first byte, {} last byte ({}, {:.1} MB)",
                ms(r.ttfb),
                ms(r.total),
                r.status,
                r.bytes as f64 / 1e6
            ),
        ));
        server.mark_peak(rows);
    }
    for n in [1usize, 100] {
        let loads: Vec<String> = (0..n)
            .map(|i| {
                let (f, t) = &isp.internal_links[(i * 37) % isp.internal_links.len()];
                format!(r#"{{"from":"{f}","to":"{t}","utilisation":0.93}}"#)
            })
            .collect();
        let body = format!(r#"{{"links":[{}]}}"#, loads.join(","));
        let cpu = server.cpu();
        let k = rounds.min(3);
        let r = repeat(k, || admin(a, "POST", "/admin/link-load", body.as_bytes()))?;
        rows.push(Row(
            format!("POST /admin/link-load, {n} link(s)"),
            format!(
                "{} ({}; server CPU {} per update)",
                ms(r.total),
                r.status,
                ms(server.cpu().saturating_sub(cpu) / k as u32)
            ),
        ));
        server.mark_peak(rows);
    }
    let text = std::fs::read(topo)?;
    let cpu = server.cpu();
    let k = rounds.min(2);
    let r = repeat(k, || admin(a, "PUT", "/admin/topology", &text))?;
    rows.push(Row(
        "PUT /admin/topology (same file)".into(),
        format!(
            "{} ({}; server CPU {} per update)",
            ms(r.total),
            r.status,
            ms(server.cpu().saturating_sub(cpu) / k as u32)
        ),
    ));
    server.mark_peak(rows);
    Ok(())
}

/// `ipv4:a.b.c.d`, the address moved by `salt` inside its /24 so that lists hold no duplicate.
fn typed(ip: IpAddr, salt: usize) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let x = u32::from(v4) & !0xff | (1 + (salt % 250) as u32);
            format!("ipv4:{}", std::net::Ipv4Addr::from(x))
        }
        IpAddr::V6(v6) => format!("ipv6:{v6}"),
    }
}

/// The server process we started; killed (by its own pid) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Some(status) = self.child.try_wait()? {
                bail!("p4p-itracker exited before listening: {status}");
            }
            if get(self.addr, "/health", &[]).is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("p4p-itracker not ready after {timeout:?}")
    }

    /// CPU time (user + system) the server process has used so far.
    fn cpu(&self) -> Duration {
        cpu_time(&self.child.id().to_string()).unwrap_or_default()
    }

    /// Resets the process's peak RSS (`VmHWM`) to its current RSS (Linux: `5` into
    /// `clear_refs`), so that the next reading is the peak of what follows.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }

    /// Appends the peak RSS since the last reset to the last row, then resets it.
    fn mark_peak(&self, rows: &mut [Row]) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let hwm = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok());
        if let (Some(kb), Some(Row(_, value))) = (hwm, rows.last_mut()) {
            value.push_str(&format!(" [peak {:.0} MB]", kb / 1024.0));
        }
        self.reset_peak();
    }

    /// `VmRSS` and `VmHWM` of the server process.
    fn memory(&self) -> anyhow::Result<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> String {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or("?".into(), |kb| format!("{:.0} MB", kb / 1024.0))
        };
        Ok(format!("{} (peak {})", field("VmRSS:"), field("VmHWM:")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One response, timed.
#[derive(Clone, Debug, Default)]
struct Response {
    status: u16,
    head: String,
    bytes: usize,
    encoding: String,
    ttfb: Duration,
    total: Duration,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// The request `rounds` times; the answer with the median total time.
fn repeat(
    rounds: usize,
    mut f: impl FnMut() -> anyhow::Result<Response>,
) -> anyhow::Result<Response> {
    let mut all = (0..rounds)
        .map(|_| f())
        .collect::<anyhow::Result<Vec<_>>>()?;
    all.sort_by_key(|r| r.total);
    Ok(all.swap_remove(all.len() / 2))
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
    exchange(addr, "GET", path, headers, &[])
}

fn post(addr: SocketAddr, path: &str, ctype: &str, body: &[u8]) -> anyhow::Result<Response> {
    exchange(addr, "POST", path, &[("Content-Type", ctype)], body)
}

fn admin(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Response> {
    let auth = format!("Bearer {TOKEN}");
    exchange(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`, read to the end).
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(900)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let t = Instant::now();
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut all = Vec::new();
    let mut ttfb = None;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ttfb.get_or_insert_with(|| t.elapsed());
        all.extend_from_slice(&buf[..n]);
    }
    let total = t.elapsed();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header")?;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let mut r = Response {
        status,
        head,
        bytes: all.len() - split - 4,
        ttfb: ttfb.unwrap_or(total),
        total,
        ..Response::default()
    };
    r.encoding = r
        .header("content-encoding")
        .unwrap_or_else(|| "identity".into());
    Ok(r)
}

/// User + system CPU time of process `pid` (`self` for this one) from `/proc/<pid>/stat`, in
/// clock ticks of 10 ms (the kernel's `USER_HZ` on Linux).
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
