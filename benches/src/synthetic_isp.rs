//! A synthetic ISP at real scale (issue 17, item 1): thousands of PIDs, hundreds of thousands
//! of prefixes, written in the iTracker's topology file format (`topology-data/README.md`).
//!
//! The backbone is the Topology Zoo Abilene graph (11 PoPs, 14 edges, great-circle routing
//! weights, through the iTracker's own GraphML importer); the generator grows it the way ISPs
//! are built:
//! - **core**: the Abilene PoPs and links (capacity x10: 100 Gbit/s class);
//! - **metro**: aggregation PIDs per PoP, each dual-homed to its PoP and to the PoP's nearest
//!   backbone neighbour (40 Gbit/s);
//! - **access**: the customer PIDs that hold almost all prefixes, each homed to a metro PID, a
//!   quarter of them dual-homed to a second metro of the same PoP (10 Gbit/s);
//! - **external**: two transit providers (the first holds `0.0.0.0/0` and `::/0`, so no
//!   `default` PID is added) and peers, reached by egress links from a few PoPs, holding the
//!   routes learnt from them (15 % of the IPv4 prefixes).
//!
//! Every internal link carries a measured utilisation (two decimals, most links lightly loaded,
//! one in ten near or above the MLU target), so the p-distances come from dynamic prices;
//! egress links carry static costs. IPv4 prefixes are /16 to /24 with the global table's bias to
//! /24, allocated without overlap from unicast space (private, loopback, CGNAT, link-local,
//! documentation and multicast ranges skipped); IPv6 prefixes /32 to /48 from 2a00::/12.
//!
//! Deterministic: the same parameters and seed give the same bytes on every machine (a
//! SplitMix64 stream, whose output is fixed by its definition, unlike `rand`'s `SmallRng`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use p4p_itracker::model::file::TopologyFile;

/// The Abilene graph the backbone grows from (Topology Zoo, in the iTracker's test data).
const ABILENE: &str = include_str!("../../itracker/testdata/topology-zoo/Abilene.graphml");

/// What to generate.
#[derive(Clone, Debug)]
pub struct Params {
    /// PIDs in all (internal and external); at least 40.
    pub pids: usize,
    /// IPv4 prefixes.
    pub prefixes_v4: usize,
    /// IPv6 prefixes.
    pub prefixes_v6: usize,
    /// Seed of the random stream.
    pub seed: u64,
    /// Loopback /24s (first three octets, `[127, x, y]`) to add, one to each of as many
    /// access PIDs spread over the list: a load generator on one machine sends from 127/8,
    /// which the unicast allocation never uses, and must land in internal PIDs for the
    /// tracker's IP -> PID lookup to walk the big map (default none).
    pub loopback_nets: Vec<[u8; 3]>,
}

/// The size of a synthetic ISP as the bench tools take it on their command line
/// (`--pids`, `--prefixes`), flattened into each tool's arguments.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct IspSize {
    /// PIDs in all, internal and external (at least 40).
    #[arg(long, default_value_t = 2000)]
    pub pids: usize,
    /// IPv4 prefixes (and a tenth as many IPv6 ones unless a tool says otherwise).
    #[arg(long, default_value_t = 250_000)]
    pub prefixes: usize,
}

impl IspSize {
    /// Generator parameters of that size (the other parameters at their defaults).
    pub fn params(&self) -> Params {
        Params::new(self.pids, self.prefixes)
    }
}

impl Params {
    /// `pids` PIDs and `prefixes` IPv4 prefixes, plus one IPv6 prefix per ten IPv4 ones.
    pub fn new(pids: usize, prefixes: usize) -> Params {
        Params {
            pids,
            prefixes_v4: prefixes,
            prefixes_v6: prefixes / 10,
            seed: 17,
            loopback_nets: Vec::new(),
        }
    }
}

/// A generated topology file and what a benchmark needs to drive it.
#[derive(Clone, Debug)]
pub struct SyntheticIsp {
    /// The topology file (TOML).
    pub toml: String,
    /// PID names, internal first (core, metro, access), then external.
    pub pid_names: Vec<String>,
    /// How many of `pid_names` are internal.
    pub internal: usize,
    /// Internal links as `(from, to)` PID names (what `POST /admin/link-load` can name).
    pub internal_links: Vec<(String, String)>,
    /// Egress links.
    pub egress_links: usize,
    /// One address inside each of the first prefixes of every access PID (for endpoint costs).
    pub sample_addrs: Vec<std::net::IpAddr>,
    /// IPv4 and IPv6 prefixes written.
    pub prefixes: (usize, usize),
}

/// Why nothing was generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Fewer PIDs than the tiers need.
    #[error("at least 40 PIDs are needed (11 core PoPs, their metros, access and external PIDs)")]
    TooFewPids,
    /// The unicast address space ran out before every prefix was placed.
    #[error("the {0} address space ran out: ask for fewer prefixes")]
    SpaceExhausted(&'static str),
    /// A loopback net outside 127/8 (it could overlap the unicast prefixes).
    #[error("{0}: loopback nets must be in 127.0.0.0/8")]
    NotLoopback(String),
    /// The embedded Abilene graph did not import (a bug).
    #[error("the Abilene backbone does not import: {0}")]
    Backbone(String),
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and fully specified.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }
}

/// One PID being built.
struct PidOut {
    name: String,
    internal: bool,
    v4: Vec<(u32, u8)>,
    v6: Vec<(u128, u8)>,
}

/// One directed link being built.
struct LinkOut {
    from: usize,
    to: usize,
    capacity: f64,
    weight: Option<u64>,
    cost: Option<u64>,
    utilisation: Option<u64>,
}

/// Generates a synthetic ISP (see the module docs).
pub fn generate(p: &Params) -> Result<SyntheticIsp, GenerateError> {
    if p.pids < 40 {
        return Err(GenerateError::TooFewPids);
    }
    if let Some([a, b, c]) = p.loopback_nets.iter().find(|n| n[0] != 127) {
        return Err(GenerateError::NotLoopback(format!("{a}.{b}.{c}.0/24")));
    }
    let mut rng = Rng(p.seed);
    let backbone = p4p_itracker::source::graphml::import(ABILENE, Some("abilene-synthetic"))
        .map_err(|e| GenerateError::Backbone(e.to_string()))?;
    let backbone: TopologyFile =
        toml::from_str(&backbone).map_err(|e| GenerateError::Backbone(e.to_string()))?;

    let mut pids: Vec<PidOut> = Vec::with_capacity(p.pids);
    let mut links: Vec<LinkOut> = Vec::new();
    let core = backbone.pids.len();
    for entry in &backbone.pids {
        pids.push(PidOut {
            name: entry.name.clone(),
            internal: true,
            v4: Vec::new(),
            v6: Vec::new(),
        });
    }
    let index = |name: &str, pids: &[PidOut]| pids.iter().position(|x| x.name == name);
    for l in &backbone.links {
        let (Some(from), Some(to)) = (index(&l.from, &pids), index(&l.to, &pids)) else {
            return Err(GenerateError::Backbone(format!(
                "link {} -> {}",
                l.from, l.to
            )));
        };
        links.push(LinkOut {
            from,
            to,
            capacity: (l.capacity * 10.0).round(),
            weight: Some(l.weight.unwrap_or(1.0).max(1.0) as u64),
            cost: None,
            utilisation: None,
        });
    }
    // Each PoP's nearest backbone neighbour: a metro's second uplink.
    let nearest: Vec<usize> = (0..core)
        .map(|c| {
            links
                .iter()
                .filter(|l| l.from == c)
                .min_by_key(|l| (l.weight, l.to))
                .map_or(c, |l| l.to)
        })
        .collect();

    let external = (p.pids / 50).max(4);
    let internal = p.pids - external;
    let metros = ((internal - core) / 21).max(core);
    let access = internal - core - metros;
    let short = |i: usize| pids_short(&backbone.pids[i].name);
    let mut metro_of_pop: Vec<Vec<usize>> = vec![Vec::new(); core];
    for m in 0..metros {
        let pop = m % core;
        let id = pids.len();
        pids.push(PidOut {
            name: format!("{}-m{}", short(pop), m / core),
            internal: true,
            v4: Vec::new(),
            v6: Vec::new(),
        });
        metro_of_pop[pop].push(id);
        let w = rng.range(5, 40);
        duplex(&mut links, id, pop, 40.0, w);
        if nearest[pop] != pop {
            duplex(&mut links, id, nearest[pop], 40.0, w + rng.range(200, 600));
        }
    }
    let mut access_ids = Vec::with_capacity(access);
    for a in 0..access {
        let metro = core + a % metros;
        let pop = (metro - core) % core;
        let id = pids.len();
        pids.push(PidOut {
            name: format!("{}-a{}", pids[metro].name, a / metros),
            internal: true,
            v4: Vec::new(),
            v6: Vec::new(),
        });
        access_ids.push(id);
        let w = rng.range(1, 10);
        duplex(&mut links, id, metro, 10.0, w);
        let siblings = &metro_of_pop[pop];
        if siblings.len() > 1 && rng.below(4) == 0 {
            let other = siblings
                [(siblings.iter().position(|&s| s == metro).unwrap_or(0) + 1) % siblings.len()];
            duplex(&mut links, id, other, 10.0, w + rng.range(10, 30));
        }
    }
    for l in links.iter_mut() {
        // Most links lightly loaded, one in ten near or above the MLU target (0.8).
        let u = if rng.below(10) == 0 {
            rng.range(70, 99)
        } else {
            rng.range(5, 60)
        };
        l.utilisation = Some(u);
    }
    let first_external = pids.len();
    for e in 0..external {
        let transit = e < 2;
        pids.push(PidOut {
            name: if transit {
                format!("transit-{}", e + 1)
            } else {
                format!("peer-as{}", 64_512 + e)
            },
            internal: false,
            v4: Vec::new(),
            v6: Vec::new(),
        });
        let id = pids.len() - 1;
        let exits = if transit { 3 } else { 1 + rng.below(2) };
        let mut used = Vec::new();
        for _ in 0..exits {
            let pop = rng.below(core as u64) as usize;
            if used.contains(&pop) {
                continue;
            }
            used.push(pop);
            links.push(LinkOut {
                from: pop,
                to: id,
                capacity: if transit { 100.0 } else { 10.0 },
                weight: None,
                cost: Some(if transit { 150 } else { rng.range(40, 100) }),
                utilisation: None,
            });
        }
    }
    pids[first_external].v4.push((0, 0));
    pids[first_external].v6.push((0, 0));

    // Infrastructure /24 (v4) and /56 (v6) per core and metro PID; the rest over access
    // PIDs (85 %) and external peers (15 %).
    let mut v4 = V4Space::new();
    let mut v6 = V6Space::new();
    for pid in pids.iter_mut().take(core + metros) {
        pid.v4
            .push(v4.take(24).ok_or(GenerateError::SpaceExhausted("IPv4"))?);
        pid.v6
            .push(v6.take(56).ok_or(GenerateError::SpaceExhausted("IPv6"))?);
    }
    let peers: Vec<usize> = (first_external + 2..pids.len()).collect();
    let placed4 = pids.iter().map(|x| x.v4.len()).sum::<usize>();
    for _ in placed4..p.prefixes_v4 {
        let len = v4_length(&mut rng);
        let net = v4.take(len).ok_or(GenerateError::SpaceExhausted("IPv4"))?;
        v4.skip_sometimes(&mut rng, len);
        let owner = if !peers.is_empty() && rng.below(100) < 15 {
            peers[rng.below(peers.len() as u64) as usize]
        } else {
            access_ids[rng.below(access_ids.len() as u64) as usize]
        };
        pids[owner].v4.push(net);
    }
    let placed6 = pids.iter().map(|x| x.v6.len()).sum::<usize>();
    for i in placed6..p.prefixes_v6 {
        let len = [32, 36, 40, 44, 44, 48, 48, 48, 48, 48][rng.below(10) as usize];
        let net = v6.take(len).ok_or(GenerateError::SpaceExhausted("IPv6"))?;
        let owner = if !peers.is_empty() && i % 7 == 0 {
            peers[rng.below(peers.len() as u64) as usize]
        } else {
            access_ids[rng.below(access_ids.len() as u64) as usize]
        };
        pids[owner].v6.push(net);
    }
    let n = p.loopback_nets.len();
    for (k, &[a, b, c]) in p.loopback_nets.iter().enumerate() {
        let owner = access_ids[k * access_ids.len() / n];
        pids[owner]
            .v4
            .push((u32::from(Ipv4Addr::new(a, b, c, 0)), 24));
    }
    Ok(render(pids, links, internal, access_ids))
}

/// The first four characters of a PoP name (`new-york` -> `newy`): short PID names keep the
/// n x n cost map small, as real deployments do.
fn pids_short(name: &str) -> String {
    let s: String = name.chars().filter(|c| *c != '-').take(4).collect();
    s
}

fn duplex(links: &mut Vec<LinkOut>, a: usize, b: usize, capacity: f64, weight: u64) {
    for (from, to) in [(a, b), (b, a)] {
        links.push(LinkOut {
            from,
            to,
            capacity,
            weight: Some(weight),
            cost: None,
            utilisation: None,
        });
    }
}

/// Prefix lengths with the global IPv4 table's bias: about 60 % /24.
fn v4_length(rng: &mut Rng) -> u8 {
    match rng.below(1000) {
        0..600 => 24,
        600..700 => 23,
        700..820 => 22,
        820..880 => 21,
        880..940 => 20,
        940..970 => 19,
        970..985 => 18,
        985..993 => 17,
        _ => 16,
    }
}

/// Ranges never routed on the Internet (RFC 6890 and friends), as `(first, last)`.
const V4_RESERVED: [(u32, u32); 11] = [
    (0x0000_0000, 0x00ff_ffff), // 0/8
    (0x0a00_0000, 0x0aff_ffff), // 10/8
    (0x6440_0000, 0x647f_ffff), // 100.64/10
    (0x7f00_0000, 0x7fff_ffff), // 127/8
    (0xa9fe_0000, 0xa9fe_ffff), // 169.254/16
    (0xac10_0000, 0xac1f_ffff), // 172.16/12
    (0xc000_0000, 0xc000_02ff), // 192.0.0/24, 192.0.2/24
    (0xc0a8_0000, 0xc0a8_ffff), // 192.168/16
    (0xc612_0000, 0xc613_ffff), // 198.18/15
    (0xc633_6400, 0xc633_64ff), // 198.51.100/24
    (0xcb00_7100, 0xcb00_71ff), // 203.0.113/24
];

/// Hands out non-overlapping IPv4 prefixes upwards from 1.0.0.0, below 224.0.0.0.
struct V4Space {
    next: u64,
}

impl V4Space {
    fn new() -> Self {
        V4Space { next: 0x0100_0000 }
    }

    fn take(&mut self, len: u8) -> Option<(u32, u8)> {
        let size = 1u64 << (32 - len);
        loop {
            let start = self.next.div_ceil(size) * size;
            let end = start + size - 1;
            if end >= 0xe000_0000 {
                return None;
            }
            match V4_RESERVED
                .iter()
                .find(|(a, b)| start <= u64::from(*b) && end >= u64::from(*a))
            {
                Some((_, b)) => self.next = u64::from(*b) + 1,
                None => {
                    self.next = end + 1;
                    return Some((start as u32, len));
                }
            }
        }
    }

    /// Leaves a hole now and then, so that neighbouring prefixes do not all aggregate.
    fn skip_sometimes(&mut self, rng: &mut Rng, len: u8) {
        if rng.below(4) == 0 {
            self.next += 1u64 << (32 - len);
        }
    }
}

/// Hands out non-overlapping IPv6 prefixes upwards from 2a00::/12.
struct V6Space {
    next: u128,
}

impl V6Space {
    fn new() -> Self {
        V6Space {
            next: 0x2a00_u128 << 112,
        }
    }

    fn take(&mut self, len: u8) -> Option<(u128, u8)> {
        let size = 1u128 << (128 - len);
        let start = self.next.div_ceil(size) * size;
        if start >= 0x2a10_u128 << 112 {
            return None;
        }
        self.next = start + size;
        Some((start, len))
    }
}

fn render(
    pids: Vec<PidOut>,
    links: Vec<LinkOut>,
    internal: usize,
    access_ids: Vec<usize>,
) -> SyntheticIsp {
    let mut out = String::with_capacity(32 * 1024 * 1024);
    let (n4, n6) = pids
        .iter()
        .fold((0, 0), |(a, b), x| (a + x.v4.len(), b + x.v6.len()));
    let _ = write!(
        out,
        "# Synthetic ISP grown from the Topology Zoo Abilene backbone by\n\
         # benches/src/synthetic_isp.rs: {} PIDs ({internal} internal), {n4} IPv4 and {n6} IPv6\n\
         # prefixes, {} links. Generated, do not edit.\n\n\
         isp = \"abilene-synthetic\"\n\n\
         [defaults]\nintra_pid = 0\ninter_pid = 10000\ninterdomain = 200\nlink = 10\n\n\
         [pricing]\nmlu_target = 0.8\nstep = 10.0\nmax_price = 1000.0\n\n",
        pids.len(),
        links.len()
    );
    for pid in &pids {
        let kind = if pid.internal { "internal" } else { "external" };
        let _ = write!(
            out,
            "[[pid]]\nname = \"{}\"\nkind = \"{kind}\"\nprefixes = [",
            pid.name
        );
        let mut first = true;
        for &(a, len) in &pid.v4 {
            let sep = if first { "" } else { ", " };
            first = false;
            let _ = write!(out, "{sep}\"{}/{len}\"", Ipv4Addr::from(a));
        }
        for &(a, len) in &pid.v6 {
            let sep = if first { "" } else { ", " };
            first = false;
            let _ = write!(out, "{sep}\"{}/{len}\"", Ipv6Addr::from(a));
        }
        out.push_str("]\n\n");
    }
    let mut internal_links = Vec::new();
    let mut egress_links = 0;
    for l in &links {
        let (from, to) = (&pids[l.from].name, &pids[l.to].name);
        let _ = write!(
            out,
            "[[link]]\nfrom = \"{from}\"\nto = \"{to}\"\ncapacity = {:.1}\n",
            l.capacity
        );
        if let Some(w) = l.weight {
            let _ = writeln!(out, "weight = {w}");
            internal_links.push((from.clone(), to.clone()));
        } else {
            egress_links += 1;
        }
        if let Some(c) = l.cost {
            let _ = writeln!(out, "cost = {c}");
        }
        if let Some(u) = l.utilisation {
            let _ = writeln!(out, "utilisation = {}.{:02}", u / 100, u % 100);
        }
        out.push('\n');
    }
    let sample_addrs = access_ids
        .iter()
        .filter_map(|&i| pids[i].v4.first())
        .map(|&(a, _)| std::net::IpAddr::V4(Ipv4Addr::from(a + 1)))
        .collect();
    SyntheticIsp {
        toml: out,
        pid_names: pids.iter().map(|x| x.name.clone()).collect(),
        internal,
        internal_links,
        egress_links,
        sample_addrs,
        prefixes: (n4, n6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_isp_is_a_valid_topology_with_what_was_asked() {
        let isp = generate(&Params::new(120, 3_000)).expect("generates");
        let topo = p4p_itracker::Topology::from_toml_str(&isp.toml).expect("valid topology");
        assert_eq!(
            topo.pids().len(),
            120,
            "no default PID added: transit-1 holds /0"
        );
        assert_eq!(isp.prefixes, (3_000, 300));
        let prefixes: usize = topo.pids().iter().map(|x| x.prefixes.len()).sum();
        assert_eq!(prefixes, 3_300);
        assert_eq!(
            topo.links().len(),
            isp.internal_links.len() + isp.egress_links
        );
        // Every internal PID reaches every other one (no `inter_pid` fallback cost).
        let costs = topo.cost_matrix();
        for s in 0..isp.internal {
            for t in 0..isp.internal {
                assert!(
                    costs.get(s, t) < 10_000.0,
                    "{s} -> {t}: {}",
                    costs.get(s, t)
                );
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
        let p = Params::new(60, 1_000);
        let a = generate(&p).expect("a").toml;
        assert_eq!(a, generate(&p).expect("b").toml);
        let other = Params { seed: 18, ..p };
        assert_ne!(a, generate(&other).expect("c").toml);
    }

    #[test]
    fn loopback_nets_land_in_distinct_internal_pids() {
        let mut p = Params::new(120, 3_000);
        p.loopback_nets = vec![[127, 1, 0], [127, 3, 0], [127, 2, 0]];
        let isp = generate(&p).expect("generates");
        let snap = p4p_itracker::Topology::from_toml_str(&isp.toml)
            .expect("valid topology")
            .snapshot();
        let at = |ip: &str| snap.locate(ip.parse().expect("ip"));
        let pids = [at("127.1.0.5"), at("127.3.0.5"), at("127.2.0.200")];
        for &pid in &pids {
            assert!(snap.pid(pid).internal, "{}", snap.pid(pid).name);
        }
        assert!(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2]);
        assert!(
            !snap.pid(at("127.4.0.1")).internal,
            "only the nets asked for"
        );
        p.loopback_nets = vec![[10, 0, 0]];
        assert!(matches!(generate(&p), Err(GenerateError::NotLoopback(_))));
    }

    #[test]
    fn too_few_pids_are_refused() {
        assert!(matches!(
            generate(&Params::new(10, 100)),
            Err(GenerateError::TooFewPids)
        ));
    }
}
