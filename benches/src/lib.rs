//! Load generators and helpers shared by the benchmarks.

pub mod synthetic_isp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use ipnetwork::{IpNetwork, Ipv4Network};
use p4p_itracker::model::{Pid, PidKind, Topology};
use p4p_itracker::snapshot::PidSpec;
use p4p_itracker::{Snapshot, SnapshotBuilder};
use p4p_tracker::types::{Announce, Event, InfoHash};

/// A two-ISP loopback snapshot: ISP A = PIDs 127.1/16 and 127.3/16, ISP B = 127.2/16 and
/// 127.4/16 (the shape of `topology-data/loopback*.toml`).
pub fn loopback_snapshot() -> Snapshot {
    let mut b = SnapshotBuilder::new("bench", 100.0);
    let a = b.add_isp("A");
    let isp_b = b.add_isp("B");
    let specs = [
        ("bench-a1", a, "127.1.0.0/16"),
        ("bench-a2", a, "127.3.0.0/16"),
        ("bench-b1", isp_b, "127.2.0.0/16"),
        ("bench-b2", isp_b, "127.4.0.0/16"),
    ];
    let ids: Vec<usize> = specs
        .iter()
        .map(|(name, isp, prefix)| {
            b.add_pid(PidSpec {
                name: (*name).into(),
                isp: *isp,
                internal: true,
                prefixes: vec![prefix.parse().expect("prefix")],
            })
        })
        .collect();
    for &x in &ids {
        for &y in &ids {
            let same_isp = specs[x].1 == specs[y].1;
            let cost = if x == y {
                0.0
            } else if same_isp {
                5.0
            } else {
                100.0
            };
            b.set_cost(x, y, cost);
        }
    }
    b.build().expect("bench snapshot")
}

/// A 2-PID map covering all of IPv4 (one half each, one ISP, costs 0 and 5).
pub fn two_pid_snapshot() -> Snapshot {
    two_pid_snapshot_split(&["0.0.0.0/1", "128.0.0.0/1"])
}

/// A 2-PID map covering all of IPv4 that splits `topology`'s internal IPv4 prefixes in two
/// (see [`middle_block`]): PID `half-0` holds that block, `half-1` the rest (`0.0.0.0/0`);
/// one ISP, costs 0 and 5. The small map to compare a big one with on the same swarm: both
/// its PIDs hold peers, as two of the big map's would.
pub fn two_pid_snapshot_of(topology: &Topology) -> Snapshot {
    two_pid_snapshot_split(&[&middle_block(topology).to_string(), "0.0.0.0/0"])
}

fn two_pid_snapshot_split(prefixes: &[&str; 2]) -> Snapshot {
    let mut b = SnapshotBuilder::new("two-pids", 100.0);
    let isp = b.add_isp("small");
    let ids: Vec<usize> = prefixes
        .iter()
        .enumerate()
        .map(|(i, prefix)| {
            b.add_pid(PidSpec {
                name: format!("half-{i}"),
                isp,
                internal: true,
                prefixes: vec![prefix.parse().expect("prefix")],
            })
        })
        .collect();
    for &x in &ids {
        for &y in &ids {
            b.set_cost(x, y, if x == y { 0.0 } else { 5.0 });
        }
    }
    b.build().expect("two-PID snapshot")
}

/// The IPv4 block (a CIDR prefix) around the median of `topology`'s internal IPv4 prefixes
/// that holds the share of them nearest one half: a line through the middle of its address
/// space.
pub fn middle_block(topology: &Topology) -> Ipv4Network {
    let mut nets: Vec<u32> = internal(topology)
        .flat_map(v4_prefixes)
        .map(|(net, _)| net)
        .collect();
    nets.sort_unstable();
    let Some(&median) = nets.get(nets.len() / 2) else {
        return Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 1).expect("/1");
    };
    let share = |len: u8| {
        let block = Ipv4Network::new(Ipv4Addr::from(median), len).expect("length <= 32");
        let inside = nets.iter().filter(|&&n| block.contains(n.into())).count();
        (inside as f64 / nets.len() as f64 - 0.5).abs()
    };
    let len = (1..=24u8)
        .min_by(|&a, &b| share(a).total_cmp(&share(b)))
        .unwrap_or(1);
    let block = Ipv4Network::new(Ipv4Addr::from(median), len).expect("length <= 32");
    Ipv4Network::new(block.network(), len).expect("length <= 32")
}

/// `n` peer addresses inside the internal IPv4 prefixes of `topology`, dealt over all of them
/// (peer `i` in prefix `i * 7919 mod prefixes`, a stride coprime with nearly any count), a
/// different address each (host, then port), sorted (filling a swarm in address order appends).
pub fn addresses_in(topology: &Topology, n: u32) -> Vec<SocketAddr> {
    let prefixes: Vec<(u32, u32)> = internal(topology).flat_map(v4_prefixes).collect();
    deal(&prefixes, n)
}

/// `n` peer addresses in two internal PIDs of `topology`, half each, the first PID's inside
/// [`middle_block`] and the other's outside it: the swarm of [`addresses_in`] gathered in two
/// PIDs, so that it has the same shape (two PIDs, half the peers each) under the big map and
/// under [`two_pid_snapshot_of`]. Empty when no two such PIDs exist.
pub fn addresses_in_two_pids(topology: &Topology, n: u32) -> Vec<SocketAddr> {
    let block = middle_block(topology);
    let inside = |net: &(u32, u32)| block.contains(net.0.into());
    let internal: Vec<&Pid> = internal(topology).collect();
    let Some(a) = internal
        .iter()
        .position(|p| v4_prefixes(p).iter().any(inside))
    else {
        return Vec::new();
    };
    let Some(b) = internal
        .iter()
        .rposition(|p| v4_prefixes(p).iter().any(|net| !inside(net)))
    else {
        return Vec::new();
    };
    if a == b {
        return Vec::new();
    }
    let first: Vec<(u32, u32)> = v4_prefixes(internal[a])
        .into_iter()
        .filter(inside)
        .collect();
    let second: Vec<(u32, u32)> = v4_prefixes(internal[b])
        .into_iter()
        .filter(|net| !inside(net))
        .collect();
    let mut out = deal(&first, n / 2);
    out.extend(deal(&second, n - n / 2));
    out.sort_unstable();
    out
}

/// The internal PIDs of `topology`.
fn internal(topology: &Topology) -> impl Iterator<Item = &Pid> {
    topology
        .pids()
        .iter()
        .filter(|p| p.kind == PidKind::Internal)
}

/// The (network, size) of each IPv4 prefix of `pid`.
fn v4_prefixes(pid: &Pid) -> Vec<(u32, u32)> {
    pid.prefixes
        .iter()
        .filter_map(|net| match net {
            IpNetwork::V4(v4) => Some((u32::from(v4.network()), v4.size())),
            IpNetwork::V6(_) => None,
        })
        .collect()
}

/// `n` addresses dealt over `prefixes` (see [`addresses_in`]), sorted.
fn deal(prefixes: &[(u32, u32)], n: u32) -> Vec<SocketAddr> {
    if prefixes.is_empty() {
        return Vec::new();
    }
    let len = prefixes.len() as u64;
    let mut out: Vec<SocketAddr> = (0..u64::from(n))
        .map(|i| {
            let (base, size) = prefixes[((i * 7919) % len) as usize];
            let hosts = u64::from(size.saturating_sub(2).max(1));
            let host = 1 + ((i / len) % hosts) as u32;
            let ip = Ipv4Addr::from(base + host);
            // Another port each time the prefix's hosts wrap round: every address distinct.
            SocketAddr::new(IpAddr::V4(ip), 6881 + (i / len / hosts % 1000) as u16)
        })
        .collect();
    out.sort_unstable();
    out
}

/// The `i`-th peer address, spread over the four PIDs of [`loopback_snapshot`] (second octet
/// 1..=4), ascending in `i` within each PID.
pub fn peer_addr(i: u32) -> SocketAddr {
    let pid = (i % 4) as u8 + 1;
    let n = i / 4;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(127, pid, (n >> 16) as u8, (n >> 8) as u8),
        (n & 0xff) as u16 + 1024,
    ))
}

/// Peer indices `0..peers` in the order a bucketed store holds them (PID, then leechers before
/// seeders, then address), so that filling a large swarm appends instead of shifting memory.
pub fn fill_order(peers: u32) -> Vec<u32> {
    let mut order: Vec<u32> = (0..peers).collect();
    order.sort_by_key(|&i| (i % 4, i % 5 == 0, i / 4));
    order
}

/// An announce of peer `i` in torrent `t` (leecher unless `i % 5 == 0`).
pub fn announce(t: u32, i: u32, numwant: usize) -> Announce {
    let mut info_hash = [0u8; 20];
    info_hash[..4].copy_from_slice(&t.to_be_bytes());
    Announce {
        info_hash: InfoHash(info_hash),
        peer: peer_addr(i),
        event: Event::None,
        left: if i % 5 == 0 { 0 } else { 1 },
        numwant,
    }
}

/// Resident set size of this process in bytes (Linux `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// A field of `/proc/self/status` in KiB (`"VmRSS:"`, `"VmHWM:"`); `None` off Linux.
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets this process's peak RSS (VmHWM) to its current RSS (Linux `clear_refs` 5) and
/// returns that RSS in KiB (0 when unknown), so a later VmHWM is the peak of what follows.
pub fn reset_peak_kib() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:").unwrap_or(0)
}

/// `explicit`, or the binary `name` beside the running one (how the bench tools find the
/// release `p4p-itracker` they start).
pub fn sibling_binary(
    explicit: Option<&std::path::Path>,
    name: &str,
) -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", exe.display()))?;
    Ok(dir.join(name))
}

/// Runs `f` with a fresh temporary directory named after `prefix` and this process, removed
/// afterwards whatever `f` returns.
pub fn in_temp_dir<T>(
    prefix: &str,
    f: impl FnOnce(&std::path::Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = f(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
