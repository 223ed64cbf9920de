//! The immutable, lookup-ready view of one or more ISPs' networks.
//!
//! A tracker reads a [`Snapshot`] on every announce: which PID holds an address (longest-prefix
//! match, IPv4 and IPv6), what it costs to move bytes between two PIDs (a dense matrix: PIDs
//! number in the tens to low thousands, so `n * n` `f32`s is small and a lookup is one load),
//! and the other PIDs ordered by cost. A snapshot is built once (from a topology file in-process,
//! or from ALTO maps by the client) and never changes; a new topology means a new snapshot,
//! swapped in atomically by its reader.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use prefix_trie::PrefixMap;

mod preference;

pub use self::preference::Preference;
use crate::pid::{PidId, DEFAULT_PID_NAME};
use crate::source::asn::AsnDb;

/// Why a snapshot could not be built. Each variant names the PID and prefix at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    /// Two PIDs claim the same prefix; the map would be ambiguous.
    #[error("prefix {prefix} is in PID {first} and in PID {second}")]
    DuplicatePrefix {
        prefix: IpNetwork,
        first: String,
        second: String,
    },
    /// The same PID name was added twice.
    #[error("PID {0} is defined twice")]
    DuplicatePid(String),
    /// A cost was negative, not a number, or too large to store as `f32` (above 3.4e38).
    #[error(
        "cost from {from} to {to} is {cost}, not a finite non-negative number (at most 3.4e38)"
    )]
    BadCost { from: String, to: String, cost: f64 },
    /// A cost class given to the builder (the default, i.e. interdomain, cost, or an AS cost
    /// class) is negative, not a number, or too large to store as `f32`.
    #[error("{what} is {cost}, not a finite non-negative number (at most 3.4e38)")]
    BadDefaultCost { what: &'static str, cost: f64 },
    /// A cost matrix given to [`SnapshotBuilder::set_cost_matrix`] is not `k * k` values for
    /// `k` PIDs added (a bug in the caller).
    #[error("a cost matrix of {values} values does not fit the {pids} PIDs of the map")]
    MatrixShape { values: usize, pids: usize },
    /// More PIDs than a snapshot indexes (u16 range).
    #[error("{0} PIDs: at most 65535 are supported")]
    TooManyPids(usize),
}

/// An address as [`Snapshot::cost_between`] sees it: its PID and, outside the internal PIDs
/// of a snapshot with an ASN database, its origin AS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Index of the PID holding the address.
    pub pid: u16,
    /// Origin AS, only for an address outside every internal PID and known to the database.
    pub asn: Option<u32>,
}

/// What a snapshot knows about one PID.
#[derive(Clone, Debug)]
pub struct PidInfo {
    /// Stable id (same name, same id, in every snapshot of this process).
    pub id: PidId,
    /// The PID name as published (RFC 7285 PIDName).
    pub name: Arc<str>,
    /// Index of the ISP (network map) this PID came from.
    pub isp: u16,
    /// Whether the PID is one of its ISP's own locations (not peering, transit or "the rest").
    pub internal: bool,
    /// The network boundary the PID lies in, when the map says so (see [`Boundary`]).
    pub boundary: Option<Boundary>,
}

/// A network boundary a PID lies in: two PIDs in the same boundary are *near* each other
/// ([`Snapshot::near`]). Only what a map states explicitly makes a boundary: our iTracker's
/// internal marking (a topology file's PID kinds, `priv:p4p-internal`) or an AS number
/// published for the PID (RFC 9240 property map on the `pid` domain). A PID of a plain
/// RFC 7285 map has none: it is not near anything just because it is not the default PID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Boundary {
    /// The internal PIDs of one ISP (index in [`Snapshot::isps`]).
    Isp(u16),
    /// The PIDs published as belonging to one AS.
    As(u32),
}

/// A PID to add to a [`SnapshotBuilder`].
#[derive(Clone, Debug)]
pub struct PidSpec {
    pub name: String,
    pub isp: u16,
    pub internal: bool,
    pub prefixes: Vec<IpNetwork>,
}

/// Collects PIDs and costs, then validates and indexes them into a [`Snapshot`].
#[derive(Debug)]
pub struct SnapshotBuilder {
    version: String,
    isps: Vec<String>,
    pids: Vec<PidSpec>,
    costs: Vec<(usize, usize, f64)>,
    /// Row-major costs between the first `k` PIDs (`k * k` values), from
    /// [`SnapshotBuilder::set_cost_matrix`].
    matrix: Option<(usize, Vec<f32>)>,
    default_cost: f64,
    asn: Option<AsnClasses>,
    /// `(same_as, other_as)` as given to [`SnapshotBuilder::with_asn`], checked at build.
    asn_costs: (f64, f64),
    /// Boundaries set with [`SnapshotBuilder::set_boundary`], by PID position.
    boundaries: Vec<(usize, Option<Boundary>)>,
}

/// The MaxMind fallback of a snapshot: origin AS lookups and the two AS cost classes.
#[derive(Clone, Debug)]
struct AsnClasses {
    db: Arc<AsnDb>,
    same_as: f32,
    other_as: f32,
}

/// Whether a cost can be stored: finite, non-negative, and finite as `f32`.
fn usable(c: f64) -> bool {
    c.is_finite() && c >= 0.0 && (c as f32).is_finite()
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// An immutable network view. Cheap to share behind an `Arc`; see the module docs.
#[derive(Debug)]
pub struct Snapshot {
    version: String,
    generation: u64,
    isps: Vec<String>,
    pids: Vec<PidInfo>,
    /// `ids[i]` = `pids[i].id`, packed: a walk over PIDs reads them from a few cache lines.
    ids: Box<[PidId]>,
    /// `index_by_id[PidId.0]` = index in `pids`, or `u16::MAX` when this snapshot lacks it.
    index_by_id: Vec<u16>,
    v4: PrefixMap<Ipv4Network, u16>,
    v6: PrefixMap<Ipv6Network, u16>,
    /// Row-major `n * n` costs, `costs[from * n + to]`; a cost the map did not give is stored
    /// as the default cost with the sign bit set ([`unknown`]; costs are never negative), so
    /// that one load tells a cost and whether it is known ([`Snapshot::known_cost`]).
    costs: Vec<f32>,
    /// For each PID, every other PID in ascending cost order (ties keep insertion order).
    by_cost: Vec<Vec<u16>>,
    /// For each PID, its [`Preference`], built on first use: a tracker asks for the PIDs its
    /// announcers sit in, and `n * n` entries built up front would cost every refresh.
    preferences: Box<[OnceLock<Preference>]>,
    /// For each PID, the price of an unknown destination: the largest of its known costs and
    /// the default cost, so that an unknown PID never looks cheaper than a known one.
    far: Vec<f32>,
    asn: Option<AsnClasses>,
}

impl SnapshotBuilder {
    /// Starts a snapshot whose version string is `version` (a vtag or a combination of vtags);
    /// costs not set explicitly are `default_cost`.
    pub fn new(version: impl Into<String>, default_cost: f64) -> Self {
        Self {
            version: version.into(),
            isps: Vec::new(),
            pids: Vec::new(),
            costs: Vec::new(),
            matrix: None,
            default_cost,
            asn: None,
            asn_costs: (0.0, 0.0),
            boundaries: Vec::new(),
        }
    }

    /// Adds the MaxMind ASN fallback: between two addresses outside every internal PID,
    /// [`Snapshot::endpoint_cost`] is `same_as` when their origin ASes match and `other_as`
    /// when they differ (see [`crate::source::asn`]).
    /// Both costs are checked by [`SnapshotBuilder::build`] (kept as given until then).
    pub fn with_asn(mut self, db: Arc<AsnDb>, same_as: f64, other_as: f64) -> Self {
        self.asn_costs = (same_as, other_as);
        self.asn = Some(AsnClasses {
            db,
            same_as: same_as as f32,
            other_as: other_as as f32,
        });
        self
    }

    /// Registers an ISP (one network map) and returns its index for [`PidSpec::isp`].
    pub fn add_isp(&mut self, name: impl Into<String>) -> u16 {
        self.isps.push(name.into());
        u16::try_from(self.isps.len() - 1).unwrap_or(u16::MAX)
    }

    /// Adds a PID and returns its position, to be used with [`SnapshotBuilder::set_cost`].
    pub fn add_pid(&mut self, spec: PidSpec) -> usize {
        self.pids.push(spec);
        self.pids.len() - 1
    }

    /// Sets the network boundary of a PID added earlier (by default: `Isp(its isp)` when it
    /// is internal, none otherwise). A client that cannot tell internal PIDs from others (a
    /// map without marking) sets `None`.
    pub fn set_boundary(&mut self, pid: usize, boundary: Option<Boundary>) {
        self.boundaries.push((pid, boundary));
    }

    /// Sets the directional cost between two PIDs added earlier.
    pub fn set_cost(&mut self, from: usize, to: usize, cost: f64) {
        self.costs.push((from, to, cost));
    }

    /// Sets the costs between the first `k` PIDs added at once, row-major
    /// (`costs[from * k + to]`, `k * k` values; a length that is not a square sets nothing and
    /// fails the build). A full cost map's 4 million pairs (2,000 PIDs) as one `f32` matrix
    /// instead of 4 million [`SnapshotBuilder::set_cost`] triples; explicit `set_cost` calls
    /// still win. Checked like every cost by [`SnapshotBuilder::build`].
    pub fn set_cost_matrix(&mut self, costs: Vec<f32>) {
        let k = (costs.len() as f64).sqrt() as usize;
        self.matrix = Some((k, costs));
    }

    /// Validates and indexes everything. Adds a `default` PID holding `0.0.0.0/0` and `::/0`
    /// (external, costing the default cost) when no PID covers them, so the map is complete.
    pub fn build(mut self) -> Result<Snapshot, SnapshotError> {
        let classes = [
            ("the default (interdomain) cost", self.default_cost),
            ("the same-AS cost", self.asn_costs.0),
            ("the other-AS cost", self.asn_costs.1),
        ];
        if let Some(&(what, cost)) = classes.iter().find(|(_, c)| !usable(*c)) {
            return Err(SnapshotError::BadDefaultCost { what, cost });
        }
        if self.isps.is_empty() {
            self.add_isp("default");
        }
        self.complete_map();
        let n = self.pids.len();
        if n >= usize::from(u16::MAX) {
            return Err(SnapshotError::TooManyPids(n));
        }
        let mut boundaries: Vec<Option<Boundary>> = self
            .pids
            .iter()
            .map(|p| p.internal.then_some(Boundary::Isp(p.isp)))
            .collect();
        for &(pid, boundary) in &self.boundaries {
            if let Some(slot) = boundaries.get_mut(pid) {
                *slot = boundary;
            }
        }
        let mut pids = Vec::with_capacity(n);
        let mut index_by_id: Vec<u16> = Vec::new();
        let mut v4 = PrefixMap::new();
        let mut v6 = PrefixMap::new();
        for (i, spec) in self.pids.iter().enumerate() {
            let id = PidId::intern(&spec.name);
            let slot = id.0 as usize;
            if index_by_id.len() <= slot {
                index_by_id.resize(slot + 1, u16::MAX);
            }
            if index_by_id[slot] != u16::MAX {
                return Err(SnapshotError::DuplicatePid(spec.name.clone()));
            }
            let idx = i as u16;
            index_by_id[slot] = idx;
            for prefix in &spec.prefixes {
                let previous = match normalise_prefix(*prefix) {
                    IpNetwork::V4(p) => v4.insert(canonical_v4(p), idx),
                    IpNetwork::V6(p) => v6.insert(canonical_v6(p), idx),
                };
                if let Some(prev) = previous {
                    return Err(SnapshotError::DuplicatePrefix {
                        prefix: *prefix,
                        first: self.pids[usize::from(prev)].name.clone(),
                        second: spec.name.clone(),
                    });
                }
            }
            pids.push(PidInfo {
                id,
                name: Arc::from(spec.name.as_str()),
                isp: spec.isp,
                internal: spec.internal,
                boundary: boundaries[i],
            });
        }
        let mut costs = vec![unknown(self.default_cost as f32); n * n];
        if let Some((k, matrix)) = self.matrix.take() {
            self.copy_matrix(k, &matrix, &mut costs)?;
        }
        for &(from, to, cost) in &self.costs {
            if !usable(cost) {
                return Err(SnapshotError::BadCost {
                    from: self.pids[from].name.clone(),
                    to: self.pids[to].name.clone(),
                    cost,
                });
            }
            costs[from * n + to] = known(cost as f32);
        }
        let far = far_costs(&costs, n, self.default_cost as f32);
        let by_cost = sorted_by_cost(&costs, n);
        Ok(Snapshot {
            version: self.version,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            isps: self.isps,
            ids: pids.iter().map(|p| p.id).collect(),
            pids,
            index_by_id,
            v4,
            v6,
            costs,
            by_cost,
            preferences: (0..n).map(|_| OnceLock::new()).collect(),
            far,
            asn: self.asn,
        })
    }

    /// Copies a [`SnapshotBuilder::set_cost_matrix`] matrix into the `n * n` costs, checked.
    fn copy_matrix(
        &self,
        k: usize,
        matrix: &[f32],
        costs: &mut [f32],
    ) -> Result<(), SnapshotError> {
        let n = self.pids.len();
        if k * k != matrix.len() || k > n {
            return Err(SnapshotError::MatrixShape {
                values: matrix.len(),
                pids: n,
            });
        }
        for (from, row) in matrix.chunks_exact(k.max(1)).enumerate() {
            if let Some(to) = row.iter().position(|&c| !usable(f64::from(c))) {
                return Err(SnapshotError::BadCost {
                    from: self.pids[from].name.clone(),
                    to: self.pids[to].name.clone(),
                    cost: f64::from(row[to]),
                });
            }
            for (to, &c) in row.iter().enumerate() {
                costs[from * n + to] = known(c);
            }
        }
        Ok(())
    }

    fn complete_map(&mut self) {
        let any4: IpNetwork = Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0)
            .expect("valid")
            .into();
        let any6: IpNetwork = Ipv6Network::new(Ipv6Addr::UNSPECIFIED, 0)
            .expect("valid")
            .into();
        let has = |p: &IpNetwork| self.pids.iter().any(|s| s.prefixes.contains(p));
        let missing: Vec<IpNetwork> = [any4, any6].into_iter().filter(|p| !has(p)).collect();
        if missing.is_empty() {
            return;
        }
        if let Some(existing) = self.pids.iter_mut().find(|s| s.name == DEFAULT_PID_NAME) {
            existing.prefixes.extend(missing);
        } else {
            self.pids.push(PidSpec {
                name: DEFAULT_PID_NAME.to_string(),
                isp: 0,
                internal: false,
                prefixes: missing,
            });
        }
    }
}

/// For each PID, every other PID in ascending cost order (ties keep index order).
/// For each PID, the price of an unknown destination: the largest known cost of its row, at
/// least `default`.
fn far_costs(costs: &[f32], n: usize, default: f32) -> Vec<f32> {
    costs
        .chunks_exact(n.max(1))
        .map(|row| {
            row.iter()
                .filter(|c| c.is_sign_positive())
                .fold(default, |m, &c| m.max(c))
        })
        .collect()
}

/// How `costs` holds a cost the map gave: as itself (a `-0.0` given becomes `0.0`).
fn known(cost: f32) -> f32 {
    cost.abs()
}

/// How `costs` holds a cost the map did not give, `default`: with the sign bit set.
fn unknown(default: f32) -> f32 {
    -default.abs()
}

fn sorted_by_cost(costs: &[f32], n: usize) -> Vec<Vec<u16>> {
    (0..n)
        .map(|from| {
            let row = &costs[from * n..(from + 1) * n];
            let cost = |to: u16| row[usize::from(to)].abs();
            let mut others: Vec<u16> = (0..n as u16)
                .filter(|&to| usize::from(to) != from)
                .collect();
            others.sort_by(|&a, &b| cost(a).total_cmp(&cost(b)));
            others
        })
        .collect()
}

/// An IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d/n`, `n >= 96`) as the IPv4 prefix it denotes
/// (`a.b.c.d/(n - 96)`); any other prefix unchanged. Lookups of IPv4-mapped addresses go to the
/// IPv4 table ([`Snapshot::locate`]), so a map must publish and index such prefixes as IPv4 for
/// publication and lookup to agree.
pub fn normalise_prefix(net: IpNetwork) -> IpNetwork {
    if let IpNetwork::V6(p) = net {
        if p.prefix() >= 96 {
            if let Some(v4) = p.network().to_ipv4_mapped() {
                if let Ok(n) = Ipv4Network::new(v4, p.prefix() - 96) {
                    return IpNetwork::V4(canonical_v4(n));
                }
            }
        }
    }
    net
}

fn canonical_v4(p: Ipv4Network) -> Ipv4Network {
    Ipv4Network::new(p.network(), p.prefix()).expect("prefix length already valid")
}

fn canonical_v6(p: Ipv6Network) -> Ipv6Network {
    Ipv6Network::new(p.network(), p.prefix()).expect("prefix length already valid")
}

impl Snapshot {
    /// A snapshot with one `default` PID holding every address: what a tracker uses before any
    /// topology is known (selection is then plain random).
    pub fn single_pid() -> Snapshot {
        SnapshotBuilder::new("none", 0.0)
            .build()
            .expect("the one-PID map is valid")
    }

    /// The same map (PIDs, prefixes, ASN classes) with other costs, `costs[from * n + to]` over
    /// this snapshot's `n` PIDs: what a change of link prices needs, without indexing hundreds
    /// of thousands of prefixes again. A new generation, named `version`. Costs are checked as
    /// [`SnapshotBuilder::build`] checks them.
    pub fn with_costs(
        &self,
        version: impl Into<String>,
        costs: Vec<f32>,
    ) -> Result<Snapshot, SnapshotError> {
        let n = self.pids.len();
        if costs.len() != n * n {
            return Err(SnapshotError::MatrixShape {
                values: costs.len(),
                pids: n,
            });
        }
        if let Some(i) = costs.iter().position(|&c| !usable(f64::from(c))) {
            return Err(SnapshotError::BadCost {
                from: self.pids[i / n].name.to_string(),
                to: self.pids[i % n].name.to_string(),
                cost: f64::from(costs[i]),
            });
        }
        // Every cost given.
        let costs: Vec<f32> = costs.into_iter().map(known).collect();
        Ok(Snapshot {
            version: version.into(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            isps: self.isps.clone(),
            pids: self.pids.clone(),
            ids: self.ids.clone(),
            index_by_id: self.index_by_id.clone(),
            v4: self.v4.clone(),
            v6: self.v6.clone(),
            by_cost: sorted_by_cost(&costs, n),
            preferences: (0..n).map(|_| OnceLock::new()).collect(),
            far: costs
                .chunks_exact(n.max(1))
                .map(|row| row.iter().copied().fold(0.0, f32::max))
                .collect(),
            costs,
            asn: self.asn.clone(),
        })
    }

    /// The version this snapshot was built from (network map vtag, or several joined).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Process-unique build number: peers resolved under another generation need re-resolving.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of PIDs.
    pub fn len(&self) -> usize {
        self.pids.len()
    }

    /// Never true: every map holds at least its default PID.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// All PIDs, by index.
    pub fn pids(&self) -> &[PidInfo] {
        &self.pids
    }

    /// The PID at an index.
    pub fn pid(&self, index: u16) -> &PidInfo {
        &self.pids[usize::from(index)]
    }

    /// ISP names, by [`PidInfo::isp`].
    pub fn isps(&self) -> &[String] {
        &self.isps
    }

    /// Index of the PID holding `ip` (longest-prefix match; the map is complete).
    pub fn locate(&self, ip: IpAddr) -> u16 {
        let found = match ip {
            IpAddr::V4(a) => self
                .v4
                .get_lpm(&Ipv4Network::new(a, 32).expect("/32 is valid"))
                .map(|(_, i)| *i),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => return self.locate(IpAddr::V4(v4)),
                None => self
                    .v6
                    .get_lpm(&Ipv6Network::new(a, 128).expect("/128 is valid"))
                    .map(|(_, i)| *i),
            },
        };
        found.unwrap_or(0)
    }

    /// The stable id of the PID at an index (what `pid(index).id` gives, from a packed table).
    pub fn id(&self, index: u16) -> PidId {
        self.ids[usize::from(index)]
    }

    /// Index of a PID by its stable id, if this snapshot has it.
    pub fn index_of(&self, id: PidId) -> Option<u16> {
        match self.index_by_id.get(id.0 as usize) {
            Some(&i) if i != u16::MAX => Some(i),
            _ => None,
        }
    }

    /// Directional cost (p-distance) from one PID to another.
    pub fn cost(&self, from: u16, to: u16) -> f32 {
        self.stored(from, to).abs()
    }

    /// Whether the map gave the cost from one PID to another (else it is the default cost).
    pub fn cost_known(&self, from: u16, to: u16) -> bool {
        self.stored(from, to).is_sign_positive()
    }

    /// The cost from one PID to another if the map gave it (one load: what selection asks).
    pub fn known_cost(&self, from: u16, to: u16) -> Option<f32> {
        let c = self.stored(from, to);
        c.is_sign_positive().then_some(c)
    }

    fn stored(&self, from: u16, to: u16) -> f32 {
        self.costs[usize::from(from) * self.pids.len() + usize::from(to)]
    }

    /// What a destination the map gives no cost for is worth from `from`: the largest known
    /// cost of its row, at least the default cost (unknown is far, never cheap).
    pub fn far_cost(&self, from: u16) -> f32 {
        self.far[usize::from(from)]
    }

    /// Every other PID, cheapest first.
    pub fn by_cost(&self, from: u16) -> &[u16] {
        &self.by_cost[usize::from(from)]
    }

    /// The origin AS of an address, when the snapshot has an ASN database.
    pub fn asn(&self, ip: IpAddr) -> Option<u32> {
        self.asn.as_ref().and_then(|a| a.db.lookup(ip))
    }

    /// Whether the snapshot has an ASN database.
    pub fn has_asn(&self) -> bool {
        self.asn.is_some()
    }

    /// Cost between two addresses: the PID cost, except that two addresses outside every
    /// internal PID whose origin ASes are both known cost the same-AS or the other-AS class.
    pub fn endpoint_cost(&self, a: IpAddr, b: IpAddr) -> f32 {
        let (pa, pb) = (self.locate(a), self.locate(b));
        if let Some(classes) = &self.asn {
            if !self.pid(pa).internal && !self.pid(pb).internal {
                if let (Some(x), Some(y)) = (classes.db.lookup(a), classes.db.lookup(b)) {
                    return if x == y {
                        classes.same_as
                    } else {
                        classes.other_as
                    };
                }
            }
        }
        self.cost(pa, pb)
    }

    /// What [`Snapshot::endpoint_cost`] needs to know about one address, looked up once: an
    /// endpoint cost request pairs every source with every destination.
    pub fn endpoint(&self, ip: IpAddr) -> Endpoint {
        let pid = self.locate(ip);
        let asn = match &self.asn {
            Some(classes) if !self.pid(pid).internal => classes.db.lookup(ip),
            _ => None,
        };
        Endpoint { pid, asn }
    }

    /// [`Snapshot::endpoint_cost`] between two endpoints looked up with
    /// [`Snapshot::endpoint`].
    pub fn cost_between(&self, a: Endpoint, b: Endpoint) -> f32 {
        if let (Some(classes), Some(x), Some(y)) = (&self.asn, a.asn, b.asn) {
            return if x == y {
                classes.same_as
            } else {
                classes.other_as
            };
        }
        self.cost(a.pid, b.pid)
    }

    /// Whether two PIDs belong to the same ISP and both are internal to it.
    pub fn same_isp(&self, a: u16, b: u16) -> bool {
        let (a, b) = (self.pid(a), self.pid(b));
        a.internal && b.internal && a.isp == b.isp
    }

    /// Whether two PIDs lie in the same stated network boundary ([`Boundary`]); never for a
    /// PID without one.
    pub fn near(&self, a: u16, b: u16) -> bool {
        match (self.pid(a).boundary, self.pid(b).boundary) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().expect("test prefix")
    }

    fn two_pids() -> Snapshot {
        let mut b = SnapshotBuilder::new("v1", 50.0);
        let isp = b.add_isp("isp");
        let a = b.add_pid(PidSpec {
            name: "snap-a".into(),
            isp,
            internal: true,
            prefixes: vec![net("127.1.0.0/16"), net("fd00:1::/32")],
        });
        let c = b.add_pid(PidSpec {
            name: "snap-b".into(),
            isp,
            internal: true,
            prefixes: vec![net("127.2.0.0/16"), net("127.2.3.0/24")],
        });
        b.set_cost(a, c, 5.0);
        b.set_cost(a, a, 0.0);
        b.build().expect("valid map")
    }

    #[test]
    fn longest_prefix_wins_and_the_rest_goes_to_default() {
        let s = two_pids();
        let name = |ip: &str| s.pid(s.locate(ip.parse().expect("ip"))).name.to_string();
        assert_eq!(name("127.1.2.3"), "snap-a");
        assert_eq!(name("127.2.3.4"), "snap-b");
        assert_eq!(name("::ffff:127.1.0.9"), "snap-a");
        assert_eq!(name("fd00:1::5"), "snap-a");
        assert_eq!(name("8.8.8.8"), DEFAULT_PID_NAME);
        assert_eq!(name("2001:db8::1"), DEFAULT_PID_NAME);
    }

    #[test]
    fn costs_are_directional_and_neighbours_sorted() {
        let s = two_pids();
        let a = s.index_of(PidId::intern("snap-a")).expect("a");
        let b = s.index_of(PidId::intern("snap-b")).expect("b");
        assert_eq!(s.cost(a, b), 5.0);
        assert_eq!(s.cost(b, a), 50.0);
        assert_eq!(s.by_cost(a)[0], b);
        assert!(s.same_isp(a, b));
        assert!(!s.same_isp(a, s.locate("9.9.9.9".parse().expect("ip"))));
    }

    #[test]
    fn duplicate_prefix_is_rejected_with_both_pids_named() {
        let mut b = SnapshotBuilder::new("v", 1.0);
        for name in ["dup-x", "dup-y"] {
            b.add_pid(PidSpec {
                name: name.into(),
                isp: 0,
                internal: true,
                prefixes: vec![net("10.0.0.0/8")],
            });
        }
        let err = b.build().expect_err("duplicate prefix");
        assert!(
            matches!(err, SnapshotError::DuplicatePrefix { ref first, ref second, .. }
            if first == "dup-x" && second == "dup-y")
        );
    }

    /// Issue 16 items 5 and 8: the default (interdomain) cost and explicit costs must be
    /// finite, non-negative and finite as f32 (1e39 would be inf in the matrix).
    #[test]
    fn unusable_default_and_explicit_costs_are_refused() {
        for bad in [f64::NAN, -1.0, f64::INFINITY, 1e39] {
            let err = SnapshotBuilder::new("v", bad).build().expect_err("refused");
            assert!(
                matches!(err, SnapshotError::BadDefaultCost { .. }),
                "{bad}: {err}"
            );
            let mut b = SnapshotBuilder::new("v", 1.0);
            let a = b.add_pid(PidSpec {
                name: "bad-cost-a".into(),
                isp: 0,
                internal: true,
                prefixes: vec![net("10.0.0.0/8")],
            });
            b.set_cost(a, a, bad);
            assert!(
                matches!(b.build(), Err(SnapshotError::BadCost { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_prefixes_are_indexed_as_ipv4() {
        let mut b = SnapshotBuilder::new("v", 1.0);
        b.add_pid(PidSpec {
            name: "mapped-a".into(),
            isp: 0,
            internal: true,
            prefixes: vec![net("::ffff:10.0.0.0/104")],
        });
        let s = b.build().expect("valid");
        for ip in ["10.1.2.3", "::ffff:10.1.2.3"] {
            let idx = s.locate(ip.parse().expect("ip"));
            assert_eq!(&*s.pid(idx).name, "mapped-a", "{ip}");
        }
    }

    /// A builder with one ISP and three internal PIDs, `{tag}-x`, `-y`, `-z`
    /// (10.1-3.0.0/16), costs not set being `default`.
    fn three_internal_pids(default: f64, tag: &str) -> (SnapshotBuilder, [usize; 3]) {
        let mut b = SnapshotBuilder::new("v", default);
        let isp = b.add_isp("isp");
        let pids = std::array::from_fn(|i| {
            b.add_pid(PidSpec {
                name: format!("{tag}-{}", ["x", "y", "z"][i]),
                isp,
                internal: true,
                prefixes: vec![net(&format!("10.{}.0.0/16", i + 1))],
            })
        });
        (b, pids)
    }

    /// Issue 15: nearness needs a stated boundary; a cost the map leaves out is known to be
    /// unknown and priced at the row's dearest known cost.
    #[test]
    fn boundaries_are_stated_and_unknown_costs_are_far() {
        let (mut b, [x, y, z]) = three_internal_pids(10.0, "bnd");
        b.set_cost(x, y, 40.0);
        b.set_boundary(z, None);
        let s = b.build().expect("valid");
        let (x, y, z) = (x as u16, y as u16, z as u16);
        assert!(s.near(x, y), "internal PIDs of one ISP: near by default");
        assert!(!s.near(x, z), "a PID without boundary is near nothing");
        assert!(!s.near(z, z));
        assert!(s.cost_known(x, y) && !s.cost_known(x, z));
        assert_eq!(s.cost(x, z), 10.0);
        assert_eq!(s.far_cost(x), 40.0, "the dearest known cost of the row");
        assert_eq!(s.far_cost(y), 10.0, "at least the default cost");
    }

    /// One load tells a cost and whether the map gave it, on and off the diagonal, for a zero
    /// default cost and a zero cost given (even as `-0.0`), from a matrix or pair by pair.
    #[test]
    fn known_costs_are_told_apart_from_the_default_in_one_load() {
        let (mut b, [x, y, z]) = three_internal_pids(0.0, "one-load");
        b.set_cost_matrix(vec![-0.0, 3.0, 7.0, 0.0]);
        b.set_cost(z, z, 2.5);
        b.set_cost(z, x, -0.0);
        let s = b.build().expect("valid");
        let (x, y, z) = (x as u16, y as u16, z as u16);
        let given = [((x, x), 0.0), ((x, y), 3.0), ((y, x), 7.0), ((y, y), 0.0)];
        let given = given.into_iter().chain([((z, z), 2.5), ((z, x), 0.0)]);
        let given: std::collections::HashMap<(u16, u16), f32> = given.collect();
        for from in [x, y, z] {
            for to in [x, y, z] {
                let want = given.get(&(from, to)).copied();
                assert_eq!(s.known_cost(from, to), want, "{from} -> {to}");
                assert_eq!(s.cost_known(from, to), want.is_some(), "{from} -> {to}");
                let cost = s.cost(from, to);
                assert_eq!(cost, want.unwrap_or(0.0), "{from} -> {to}");
                assert!(cost.is_sign_positive(), "{from} -> {to}: {cost}");
            }
        }
        // A new cost matrix gives every cost.
        let all = s
            .with_costs("v2", vec![-0.0; s.len() * s.len()])
            .expect("valid costs");
        assert_eq!(all.known_cost(z, y), Some(0.0));
        assert!(all.known_cost(y, y).is_some_and(|c| c.is_sign_positive()));
    }

    #[test]
    fn with_costs_keeps_the_map_and_checks_the_costs() {
        let s = two_pids();
        let n = s.len();
        let t = s.with_costs("v2", vec![3.0; n * n]).expect("valid costs");
        assert_eq!(t.version(), "v2");
        assert_ne!(t.generation(), s.generation());
        let ip = "127.2.3.4".parse().expect("ip");
        assert_eq!(t.locate(ip), s.locate(ip));
        assert_eq!(t.cost(0, 1), 3.0);
        assert!(matches!(
            s.with_costs("v3", vec![1.0; 3]),
            Err(SnapshotError::MatrixShape { .. })
        ));
        assert!(matches!(
            s.with_costs("v4", vec![f32::NAN; n * n]),
            Err(SnapshotError::BadCost { .. })
        ));
    }

    #[test]
    fn generations_differ() {
        assert_ne!(
            Snapshot::single_pid().generation(),
            Snapshot::single_pid().generation()
        );
    }
}
