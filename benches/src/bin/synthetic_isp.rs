//! Writes a synthetic ISP topology file (issue 17, item 1; see `p4p_benches::synthetic_isp`).
//!
//! `cargo run --release -p p4p-benches --bin synthetic_isp -- --pids 2000 --prefixes 250000 -o isp.toml`

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use p4p_benches::synthetic_isp::{generate, IspSize};

/// Generate a synthetic ISP (Abilene backbone, metro and access tiers, peers and transit).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    isp: IspSize,
    /// IPv6 prefixes (default: one per ten IPv4 prefixes).
    #[arg(long)]
    prefixes6: Option<usize>,
    /// Seed: the same seed and sizes give the same file.
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// Loopback /24s to add to access PIDs, as first three octets (`127.1.0,127.3.0`): where
    /// a load generator on this machine sends from (`udp_load --nets`).
    #[arg(long, value_delimiter = ',')]
    loopback_nets: Vec<String>,
    /// Output file (default: standard output).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut params = cli.isp.params();
    params.seed = cli.seed;
    if let Some(n) = cli.prefixes6 {
        params.prefixes_v6 = n;
    }
    for net in &cli.loopback_nets {
        let octets: Vec<u8> = net
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--loopback-nets {net}: {e}"))?;
        let [a, b, c] = octets[..] else {
            anyhow::bail!("--loopback-nets {net}: want three octets, like 127.1.0");
        };
        params.loopback_nets.push([a, b, c]);
    }
    let t = Instant::now();
    let isp = generate(&params)?;
    match &cli.output {
        Some(path) => std::fs::write(path, &isp.toml)?,
        None => print!("{}", isp.toml),
    }
    eprintln!(
        "{} PIDs ({} internal), {} IPv4 + {} IPv6 prefixes, {} internal + {} egress links, \
         {} bytes, {:.2} s",
        isp.pid_names.len(),
        isp.internal,
        isp.prefixes.0,
        isp.prefixes.1,
        isp.internal_links.len(),
        isp.egress_links,
        isp.toml.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
