//! `p4p-itracker`: wires configuration (file, environment, flags) to the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use p4p_itracker::config::{Config, DEFAULT_CONFIG_TOML};
use p4p_itracker::Topology;

/// P4P iTracker: an ISP's topology served as ALTO (RFC 7285).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML; see --print-config).
    #[arg(long, env = "P4P_ITRACKER_CONFIG")]
    config: Option<PathBuf>,
    /// Print the commented default configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// Listen address and port.
    #[arg(long, env = "P4P_ITRACKER_BIND")]
    bind: Option<SocketAddr>,
    /// Topology file (source of truth; rewritten by PUT /admin/topology).
    #[arg(long, env = "P4P_ITRACKER_TOPOLOGY")]
    topology: Option<PathBuf>,
    /// GeoLite2-ASN database for addresses outside the ISP.
    #[arg(long, env = "P4P_ITRACKER_ASN_DB")]
    asn_db: Option<PathBuf>,
    /// File holding the admin bearer token.
    #[arg(long, env = "P4P_ITRACKER_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Admin bearer token itself (prefer the file: environments leak).
    #[arg(
        long = "admin-token",
        env = "P4P_ITRACKER_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// File holding the read-API bearer token (unset: read API open).
    #[arg(long, env = "P4P_ITRACKER_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
    /// PEM certificate chain (HTTPS with --tls-key).
    #[arg(long, env = "P4P_ITRACKER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, env = "P4P_ITRACKER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Makes glibc return large freed blocks to the system at once. Each topology update builds
/// the next version (cost matrices of tens of MB, the rendered maps) beside the one serving;
/// by default glibc raises its mmap threshold to the size of the largest block freed (up to
/// 32 MiB), after which such blocks come from the heap, stay resident once freed, and the
/// next update stacks on them: measured at 2,000 PIDs, the peak RSS of a `PUT
/// /admin/topology` falls from 506 to 394 MB with a fixed 1 MiB threshold, at no measurable
/// CPU cost (`results/itracker-scale/README.md`). An operator's `MALLOC_MMAP_THRESHOLD_`
/// wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_large_blocks() {
    /// Blocks of this size or more are mapped on their own and unmapped when freed.
    const MMAP_THRESHOLD: i32 = 1 << 20;
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter; called first thing in main, before
    // any other thread exists.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_large_blocks() {}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a topology file and print its PIDs and costs.
    Check {
        /// Topology file.
        file: PathBuf,
    },
    /// Turn a Topology Zoo GraphML file into a topology file skeleton (printed).
    ImportGraphml {
        /// GraphML file.
        file: PathBuf,
        /// ISP name for the skeleton (default: the graph's Network label).
        #[arg(long)]
        isp: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    release_large_blocks();
    let cli = Cli::parse();
    if cli.print_config {
        print!("{DEFAULT_CONFIG_TOML}");
        return Ok(());
    }
    match &cli.command {
        Some(Command::Check { file }) => return check(file),
        Some(Command::ImportGraphml { file, isp }) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let skeleton = p4p_itracker::source::graphml::import(&text, isp.as_deref())
                .with_context(|| format!("importing {}", file.display()))?;
            print!("{skeleton}");
            return Ok(());
        }
        None => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = merge(&cli)?;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(p4p_itracker::server::run(config))
        .context("running the server")
}

fn merge(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(b) = cli.bind {
        config.bind = b;
    }
    let set = |slot: &mut Option<PathBuf>, v: &Option<PathBuf>| {
        if v.is_some() {
            slot.clone_from(v);
        }
    };
    set(&mut config.topology, &cli.topology);
    set(&mut config.asn_db, &cli.asn_db);
    set(&mut config.admin_token_file, &cli.admin_token_file);
    set(&mut config.read_token_file, &cli.read_token_file);
    set(&mut config.tls_cert, &cli.tls_cert);
    set(&mut config.tls_key, &cli.tls_key);
    config.admin_token.clone_from(&cli.admin_token);
    Ok(config)
}

fn check(file: &PathBuf) -> anyhow::Result<()> {
    let topo = Topology::from_file(file)?;
    topo.try_snapshot_with_asn(None)
        .with_context(|| format!("{} does not build a lookup snapshot", file.display()))?;
    print!("{}", check_report(&topo));
    Ok(())
}

/// What `check` prints: the ISP and version, warnings (PIDs that hold no prefix, so no address
/// can ever be in them), and the p-distance matrix with PID names as row and column headers.
fn check_report(topo: &Topology) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "isp {}  vtag {}", topo.isp(), topo.vtag());
    for pid in topo.pids().iter().filter(|p| p.prefixes.is_empty()) {
        let _ = writeln!(
            out,
            "warning: PID {} holds no prefix: no address maps to it",
            pid.name
        );
    }
    let costs = topo.cost_matrix();
    let width = topo
        .pids()
        .iter()
        .map(|p| p.name.len())
        .chain([8])
        .max()
        .unwrap_or(8);
    let _ = write!(out, "{:<width$} {:<8}", "from \\ to", "kind");
    for pid in topo.pids() {
        let _ = write!(out, " {:>width$}", pid.name);
    }
    out.push('\n');
    for (i, pid) in topo.pids().iter().enumerate() {
        let _ = write!(out, "{:<width$} {:<8}", pid.name, format!("{:?}", pid.kind));
        for j in 0..costs.len() {
            let _ = write!(out, " {:>width$}", costs.get(i, j));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_prints_pid_headers_and_warns_about_pids_without_prefixes() {
        let topo = Topology::from_toml_str(
            r#"
isp = "check-test"
[[pid]]
name = "a"
kind = "internal"
prefixes = ["10.0.0.0/8"]
[[pid]]
name = "empty"
kind = "internal"
prefixes = []
[[pid]]
name = "rest"
kind = "external"
prefixes = ["0.0.0.0/0", "::/0"]
"#,
        )
        .expect("valid topology");
        let report = check_report(&topo);
        assert!(
            report.contains("warning: PID empty holds no prefix"),
            "{report}"
        );
        assert!(!report.contains("warning: PID a "), "{report}");
        let header = report
            .lines()
            .find(|l| l.starts_with("from"))
            .expect("header row");
        let names: Vec<&str> = header.split_whitespace().skip(4).collect();
        assert_eq!(names, ["a", "empty", "rest"], "{report}");
    }
}
