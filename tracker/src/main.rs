//! `p4p-tracker`: parses flags, loads configuration and topology, runs until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use p4p_tracker::clock::Clock;
use p4p_tracker::config::{AccessMode, Config, PolicyKind, DEFAULT_CONFIG};
use p4p_tracker::service::Tracker;

/// A BitTorrent tracker (HTTP and UDP) that hands out nearby peers, using the network's map
/// (P4P / ALTO). Runs with no arguments: HTTP and UDP on port 6969, the embedded topology.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); see --print-config.
    #[arg(long, env = "P4P_TRACKER_CONFIG")]
    config: Option<PathBuf>,
    /// Print the commented default configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// HTTP listen address (repeatable; replaces http.bind).
    #[arg(long, env = "P4P_TRACKER_HTTP_BIND", value_delimiter = ',')]
    http_bind: Vec<SocketAddr>,
    /// UDP listen address (repeatable; replaces udp.bind).
    #[arg(long, env = "P4P_TRACKER_UDP_BIND", value_delimiter = ',')]
    udp_bind: Vec<SocketAddr>,
    /// Disable the UDP tracker.
    #[arg(long)]
    no_udp: bool,
    /// Disable the HTTP tracker.
    #[arg(long)]
    no_http: bool,
    /// Topology file (p4p-itracker TOML format) built in-process.
    #[arg(long, env = "P4P_TRACKER_TOPOLOGY")]
    topology: Option<PathBuf>,
    /// iTracker IRD URL (repeatable, one per ISP).
    #[arg(long, env = "P4P_TRACKER_ALTO", value_delimiter = ',')]
    alto: Vec<String>,
    /// Seconds between iTracker refreshes.
    #[arg(long, env = "P4P_TRACKER_REFRESH_INTERVAL")]
    refresh_interval: Option<u32>,
    /// MaxMind GeoLite2-ASN database for AS-level nearness.
    #[arg(long, env = "P4P_TRACKER_ASN_DB")]
    asn_db: Option<PathBuf>,
    /// Peer selection policy.
    #[arg(long, env = "P4P_TRACKER_POLICY")]
    policy: Option<PolicyKind>,
    /// Announce interval in seconds.
    #[arg(long, env = "P4P_TRACKER_ANNOUNCE_INTERVAL")]
    announce_interval: Option<u32>,
    /// Minimum announce interval in seconds.
    #[arg(long, env = "P4P_TRACKER_MIN_ANNOUNCE_INTERVAL")]
    min_announce_interval: Option<u32>,
    /// Most peers per answer.
    #[arg(long, env = "P4P_TRACKER_MAX_NUMWANT")]
    max_numwant: Option<usize>,
    /// UDP socket workers per address (0 = one per core).
    #[arg(long, env = "P4P_TRACKER_UDP_WORKERS")]
    udp_workers: Option<usize>,
    /// Log lines as text (coloured only on a terminal) or as JSON objects, one per line, for
    /// log shippers. Levels and targets: `RUST_LOG` (default `info`).
    #[arg(long, env = "P4P_TRACKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Swarm store: "memory" or a Redis URL.
    #[arg(long, env = "P4P_TRACKER_STORE")]
    store: Option<String>,
    /// Access-list file: one info hash per line (replaces access_list.file).
    #[arg(long, env = "P4P_TRACKER_ACCESS_LIST")]
    access_list: Option<PathBuf>,
    /// What the access list's hashes are: the only torrents served, or torrents refused.
    #[arg(long, env = "P4P_TRACKER_ACCESS_LIST_MODE")]
    access_list_mode: Option<AccessMode>,
    /// Ops listener for /metrics, /health, /topology and /admin/* (off the announce port).
    #[arg(long, env = "P4P_TRACKER_OPS_BIND")]
    ops_bind: Option<SocketAddr>,
    /// File holding the admin API's bearer token (needs --ops-bind).
    #[arg(long, env = "P4P_TRACKER_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Redis URL joining this node to a cluster of trackers (replaces cluster.url): with the
    /// memory store the nodes replicate their swarms; with the Redis store they share the UDP
    /// connection-id secret only.
    #[arg(long, env = "P4P_TRACKER_CLUSTER")]
    cluster: Option<String>,
    /// Cluster name scoping the cluster's Redis keys (replaces cluster.name).
    #[arg(long, env = "P4P_TRACKER_CLUSTER_NAME")]
    cluster_name: Option<String>,
}

impl Cli {
    /// Applies flags (and their environment variables) over the file configuration.
    fn apply(self, mut c: Config) -> Config {
        self.apply_ops(&mut c);
        if !self.http_bind.is_empty() {
            c.http.bind = self.http_bind;
        }
        if !self.udp_bind.is_empty() {
            c.udp.bind = self.udp_bind;
        }
        if self.no_udp {
            c.udp.bind.clear();
        }
        if self.no_http {
            c.http.bind.clear();
        }
        if self.topology.is_some() {
            c.topology.file = self.topology;
        }
        if !self.alto.is_empty() {
            c.topology.alto = self.alto;
        }
        if let Some(i) = self.refresh_interval {
            c.topology.refresh_interval = i;
        }
        if self.asn_db.is_some() {
            c.topology.asn_db = self.asn_db;
        }
        if let Some(p) = self.policy {
            c.selection.policy = p;
        }
        if let Some(i) = self.announce_interval {
            c.announce.interval = i;
            c.announce.min_interval = c.announce.min_interval.min(i);
        }
        if let Some(i) = self.min_announce_interval {
            c.announce.min_interval = i;
        }
        if let Some(n) = self.max_numwant {
            c.announce.max_numwant = n;
        }
        if let Some(n) = self.udp_workers {
            c.udp.workers = n;
        }
        if let Some(s) = self.store {
            c.store.url = s;
        }
        if self.cluster.is_some() {
            c.cluster.url = self.cluster;
        }
        if let Some(n) = self.cluster_name {
            c.cluster.name = n;
        }
        c
    }

    /// The access-list and ops-listener flags.
    fn apply_ops(&self, c: &mut Config) {
        if self.access_list.is_some() {
            c.access_list.file.clone_from(&self.access_list);
        }
        if let Some(m) = self.access_list_mode {
            c.access_list.mode = m;
        }
        if self.ops_bind.is_some() {
            c.ops.bind = self.ops_bind;
        }
        if self.admin_token_file.is_some() {
            c.ops.admin_token_file.clone_from(&self.admin_token_file);
        }
    }
}

/// How log lines are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stdout, filtered by `RUST_LOG` (default `info`); ANSI colours only on a terminal, so
/// files and journald get plain text.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    init_logging(cli.log_format);
    let file_config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let config = cli.apply(file_config);
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let clock = Clock::new();
    let (snapshot, loaded) = if config.topology.alto.is_empty() {
        let (snapshot, source) = p4p_tracker::topology::initial_snapshot(&config.topology)
            .context("loading the topology")?;
        tracing::info!(
            "topology: {source} ({} PIDs, version {}), policy {:?}",
            snapshot.len(),
            snapshot.version(),
            config.selection.policy
        );
        (snapshot, true)
    } else {
        tracing::info!(
            "topology: from {} iTracker(s), refreshed every {} s; random selection until the first map arrives",
            config.topology.alto.len(),
            config.topology.refresh_interval
        );
        (p4p_itracker::Snapshot::single_pid(), false)
    };
    let tracker = Arc::new(
        Tracker::from_config(config, clock, snapshot, loaded).context("opening the swarm store")?,
    );
    if tracker.config.store.url != "memory" {
        match tracker.check_store().await {
            Ok(()) => tracing::info!("swarm store: Redis, reachable"),
            Err(e) => tracing::warn!(
                "swarm store: Redis {e}; announces are refused until it answers (reconnects by itself)"
            ),
        }
    }
    let running = p4p_tracker::server::start(tracker)
        .await
        .context("starting the tracker")?;
    serve_until_shutdown(&running.tracker).await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM; meanwhile every SIGHUP reloads what can be reloaded (see
/// [`Tracker::reload`]) and the tracker keeps serving.
async fn serve_until_shutdown(tracker: &Tracker) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading");
                        tracker.reload();
                    }
                }
            },
            _ => tracing::warn!("cannot listen for SIGTERM/SIGHUP; only Ctrl-C stops the tracker"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
