//! Announce throughput through the Redis store against the memory store: one tracker on
//! memory, one tracker on Redis, two trackers sharing one Redis. In-process (no sockets), so
//! the figures are the stores' and the selection's, not the front ends'.
//!
//! `cargo run --release -p p4p-benches --bin redis_race -- --redis redis://127.0.0.1:6379/`
//!
//! Each phase fills `--torrents` swarms of `--peers` peers, then runs `--concurrency` tasks
//! that re-announce random peers (numwant `--numwant`, p4p selection on a four-PID map) for
//! `--seconds`. Keys go under a fresh prefix and vanish with their TTL (about an hour): point it
//! at a scratch Redis.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use p4p_benches::{announce, loopback_snapshot};
use p4p_tracker::clock::Clock;
use p4p_tracker::config::Config;
use p4p_tracker::service::{Tracker, Workspace};
use p4p_tracker::swarm::Store;
use p4p_tracker::types::Families;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Parser)]
#[command(about = "Announce throughput: Redis store vs memory store")]
struct Args {
    /// Redis to measure (a scratch instance: the bench writes under its own prefix).
    #[arg(long, env = "P4P_BENCH_REDIS_URL")]
    redis: String,
    /// Swarms.
    #[arg(long, default_value_t = 1000)]
    torrents: u32,
    /// Peers per swarm.
    #[arg(long, default_value_t = 100)]
    peers: u32,
    /// Peers asked for in each measured announce.
    #[arg(long, default_value_t = 50)]
    numwant: usize,
    /// Concurrent announcing tasks.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds each phase measures.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Worker threads of the runtime (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// What one phase measured.
#[derive(Debug)]
struct Figures {
    announces: u64,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.announces as f64 / self.seconds
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    let rt = rt.enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<(), String> {
    let prefix = format!("bench:{}:", std::process::id());
    let memory = vec![tracker(&args, "memory", &prefix)?];
    let one = vec![tracker(&args, &args.redis, &prefix)?];
    for t in &one {
        t.check_store()
            .await
            .map_err(|e| format!("Redis at {}: {e}", args.redis))?;
    }
    let two_prefix = format!("{prefix}two:");
    let two = vec![
        tracker(&args, &args.redis, &two_prefix)?,
        tracker(&args, &args.redis, &two_prefix)?,
    ];
    let mut results = Vec::new();
    for (name, trackers) in [
        ("memory, 1 tracker", &memory),
        ("redis, 1 tracker", &one),
        ("redis, 2 trackers", &two),
    ] {
        fill(&args, trackers).await?;
        let redis_before = match name.starts_with("redis") {
            true => script_stats(&args.redis).ok(),
            false => None,
        };
        let f = measure(&args, trackers).await;
        let redis_cost = match redis_before {
            Some(before) => match script_stats(&args.redis) {
                Ok(after) => format!(
                    " redis_us_per_announce={:.1}",
                    (after.usec - before.usec) as f64 / f.announces.max(1) as f64
                ),
                Err(e) => format!(" redis_us_per_announce=? ({e})"),
            },
            None => String::new(),
        };
        let topups: u64 = trackers
            .iter()
            .map(|t| match t.store() {
                Store::Redis(r) => r.topups(),
                Store::Memory(_) | Store::Replicated(_) => 0,
            })
            .sum();
        println!(
            "{name:<18} announces={} seconds={:.1} per_second={:.0} p50_us={} p99_us={} topups={topups}{redis_cost}",
            f.announces,
            f.seconds,
            f.per_second(),
            f.p50_us,
            f.p99_us
        );
        results.push(f);
    }
    let base = results[0].per_second();
    println!(
        "ratio redis/memory: 1 tracker {:.3}, 2 trackers {:.3}",
        results[1].per_second() / base,
        results[2].per_second() / base
    );
    Ok(())
}

fn tracker(args: &Args, url: &str, prefix: &str) -> Result<Arc<Tracker>, String> {
    let mut config = Config::default();
    config.store.url = url.to_string();
    config.store.key_prefix = prefix.to_string();
    config.store.timeout_ms = 5000;
    config.announce.max_numwant = args.numwant.max(1);
    Tracker::from_config(config, Clock::new(), loopback_snapshot(), true)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Announces every peer once (numwant 0), spread over the trackers and `concurrency` tasks.
async fn fill(args: &Args, trackers: &[Arc<Tracker>]) -> Result<(), String> {
    let tasks = args.concurrency.max(1) as u32;
    let total = args.torrents * args.peers;
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let t = trackers[task as usize % trackers.len()].clone();
        let torrents = args.torrents;
        set.spawn(async move {
            let mut ws = Workspace::default();
            let mut i = task;
            while i < total {
                let a = announce(i % torrents, i / torrents, 0);
                t.announce(&a, Families::Both, &mut ws)
                    .await
                    .map_err(|e| format!("fill: {e}"))?;
                i += tasks;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Re-announces random peers for `seconds` from `concurrency` tasks; counts and latencies.
async fn measure(args: &Args, trackers: &[Arc<Tracker>]) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for task in 0..args.concurrency.max(1) {
        let t = trackers[task % trackers.len()].clone();
        let (stop, done) = (stop.clone(), done.clone());
        let (torrents, peers, numwant) = (args.torrents, args.peers, args.numwant);
        set.spawn(async move {
            let mut ws = Workspace::default();
            let mut rng = SmallRng::seed_from_u64(task as u64);
            let mut latencies = Vec::with_capacity(1 << 16);
            // Bounded in count as well as in time.
            for _ in 0..10_000_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // The memory store never awaits: yield so the clock task can stop the phase.
                tokio::task::yield_now().await;
                let a = announce(
                    rng.random_range(0..torrents),
                    rng.random_range(0..peers),
                    numwant,
                );
                let started = Instant::now();
                if t.announce(&a, Families::Both, &mut ws).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                    if latencies.len() < 1 << 16 {
                        latencies.push(started.elapsed().as_micros() as u64);
                    }
                }
            }
            latencies
        });
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let announces = done.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut all = Vec::new();
    while let Some(Ok(l)) = set.join_next().await {
        all.extend(l);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get((all.len() as f64 * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    Figures {
        announces,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// Script calls and the microseconds Redis spent in them so far (`INFO commandstats`, the
/// `evalsha` line): what one announce costs Redis, free of the client's share of the machine.
#[derive(Debug, Clone, Copy)]
struct ScriptStats {
    usec: u64,
}

/// Reads [`ScriptStats`] over a plain RESP exchange (one command, one bulk reply).
fn script_stats(url: &str) -> Result<ScriptStats, String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let authority = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(authority).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).map_err(|e| e.to_string())?;
    let len: usize = header
        .trim()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .filter(|&n| n < 1 << 20)
        .ok_or_else(|| format!("unexpected INFO reply {header:?}"))?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(&body);
    let usec = body
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("usec=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(ScriptStats { usec })
}
