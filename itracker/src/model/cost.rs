//! P4P p-distances between PIDs (the ALTO `routingcost`).
//!
//! The rules follow the P4P reference portal:
//! - intra-PID: `defaults.intra_pid`;
//! - internal to internal: the sum of link costs along the shortest path by IGP routing
//!   weight (directional), or `defaults.inter_pid` when there is no path;
//! - internal to external: the cost of the egress link at that PID if it has one, otherwise
//!   of the egress link at the internal PID nearest to it by routing weight that has one (plus
//!   the intradomain cost to that PID when `interdomain_includes_intradomain`), otherwise
//!   `defaults.interdomain`;
//! - external to anything (itself included: the ISP knows nothing about paths inside other
//!   networks): `defaults.interdomain`.
//!
//! Shortest-path ties are broken by the lower path cost, then by the lower PID index, so the
//! result never depends on hash order.

use super::parts::{CostDefaults, Link, Pid, PidKind};

/// Dense, directional PID x PID costs, indexed like [`super::Topology::pids`].
#[derive(Clone, Debug, PartialEq)]
pub struct CostMatrix {
    n: usize,
    costs: Vec<f64>,
}

/// Computes every PID-to-PID cost of a topology's PIDs and links (what
/// [`super::Topology::costs`] returns): [`Routing::new`], then [`Routing::costs`].
pub fn p_distances(pids: &[Pid], links: &[Link], d: &CostDefaults) -> CostMatrix {
    Routing::new(pids, links).costs(pids, links, d)
}

/// Shortest paths by routing weight from every internal PID: what a price change leaves
/// alone. Dijkstra over adjacency lists, `O(n (n + m) log n)` for `n` PIDs and `m` links
/// (the dense search with a link scan per step it replaces took minutes at 2,000 PIDs).
/// [`Routing::costs`] then sums link costs along these paths in one pass per source, with no
/// heap: a link-load recomputes costs without searching again.
///
/// Kept compact, as every topology version holds one (and an update holds two): per source
/// the visiting order (`u16` PID indices), one bit per intradomain link saying whether it
/// lies on a shortest path from that source, and the routing distances to the few PIDs that
/// egress links leave from (what the interdomain rule compares). At 2,000 PIDs that is about
/// 10 MB where the full distance matrix with `u32` orders took 48 MB. Valid for the links it
/// was made from: their prices may change, never their weights or ends.
#[derive(Debug)]
pub struct Routing {
    n: usize,
    /// `order[s * n ..][.. reached[s]]`: the PIDs `s` reaches, nearest first (`s` first).
    order: Vec<u16>,
    reached: Vec<u32>,
    /// Bit `k` of source `s`'s `words` words: the `k`-th intradomain link (in link order)
    /// is on a shortest path from `s` (it ends nearer than it starts by exactly its weight).
    on_path: Vec<u64>,
    words: usize,
    /// PIDs that egress links leave from, ascending.
    origins: Vec<usize>,
    /// `origin_dist[s * origins.len() + i]`: routing distance from `s` to `origins[i]`.
    origin_dist: Vec<f64>,
}

/// One thread's share of [`Routing::new`]: the rows of sources `lo..hi`.
struct RoutingRows {
    order: Vec<u16>,
    reached: Vec<u32>,
    on_path: Vec<u64>,
    origin_dist: Vec<f64>,
}

impl Routing {
    /// Shortest routing distances from every internal PID over the intradomain links.
    ///
    /// # Panics
    /// With more than 65,536 PIDs (indices are kept as `u16`; a [`super::Topology`] refuses
    /// such maps before routing them).
    pub fn new(pids: &[Pid], links: &[Link]) -> Routing {
        let n = pids.len();
        assert!(n <= 1 << 16, "Routing: {n} PIDs, at most 65,536");
        let mut out: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
        let mut weighted: Vec<(usize, usize, f64)> = Vec::new();
        for link in links {
            if let Some(w) = link.weight {
                out[link.from].push((link.to, w));
                weighted.push((link.from, link.to, w));
            }
        }
        let mut origins: Vec<usize> = links
            .iter()
            .filter(|l| l.weight.is_none())
            .map(|l| l.from)
            .collect();
        origins.sort_unstable();
        origins.dedup();
        let words = weighted.len().div_ceil(64);
        // Sources are independent: split them over the cores (each thread owns whole rows).
        let threads = std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .min(n / 256 + 1);
        let rows = n.div_ceil(threads).max(1);
        let parts: Vec<RoutingRows> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .step_by(rows)
                .map(|lo| {
                    let hi = (lo + rows).min(n);
                    let (out, weighted, origins) = (&out, &weighted, &origins);
                    scope.spawn(move || route_rows(pids, out, weighted, origins, words, lo..hi))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut r = Routing {
            n,
            order: Vec::with_capacity(n * n),
            reached: Vec::with_capacity(n),
            on_path: Vec::with_capacity(n * words),
            words,
            origin_dist: Vec::with_capacity(n * origins.len()),
            origins,
        };
        for part in parts {
            r.order.extend_from_slice(&part.order);
            r.reached.extend_from_slice(&part.reached);
            r.on_path.extend_from_slice(&part.on_path);
            r.origin_dist.extend_from_slice(&part.origin_dist);
        }
        r
    }

    /// The P4P costs over these paths with the links' current costs (see the module docs):
    /// among the shortest paths to a PID, the cheapest; computed in order of distance, each
    /// PID from its neighbours one step nearer, exactly as the search would have summed them.
    pub fn costs(&self, pids: &[Pid], links: &[Link], d: &CostDefaults) -> CostMatrix {
        let n = self.n;
        // Inbound intradomain links: (from, bit index, cost).
        let mut inbound: Vec<Vec<(usize, usize, f64)>> = vec![Vec::new(); n];
        let mut egress: Vec<Vec<&Link>> = vec![Vec::new(); n];
        let mut k = 0;
        for link in links {
            match link.weight {
                Some(_) => {
                    inbound[link.to].push((link.from, k, link.cost(d)));
                    k += 1;
                }
                None => egress[link.to].push(link),
            }
        }
        let mut costs = vec![d.interdomain; n * n];
        let mut cost = vec![f64::INFINITY; n];
        let mut reached = vec![false; n];
        // Routing distances to the egress origins only: all `interdomain_cost` looks at.
        let mut dist = vec![f64::INFINITY; n];
        let k_origins = self.origins.len();
        for s in 0..n {
            if pids[s].kind == PidKind::External {
                costs[s * n + s] = d.interdomain;
                continue;
            }
            let order = &self.order[s * n..s * n + self.reached[s] as usize];
            let bits = &self.on_path[s * self.words..(s + 1) * self.words];
            let on_path = |k: usize| bits[k / 64] & (1 << (k % 64)) != 0;
            for (i, &o) in self.origins.iter().enumerate() {
                dist[o] = self.origin_dist[s * k_origins + i];
            }
            cost.fill(f64::INFINITY);
            reached.fill(false);
            cost[s] = 0.0;
            reached[s] = true;
            for &v in order.iter().skip(1) {
                let v = usize::from(v);
                reached[v] = true;
                cost[v] = inbound[v]
                    .iter()
                    .filter(|&&(_, k, _)| on_path(k))
                    .map(|&(u, _, c)| cost[u] + c)
                    .fold(f64::INFINITY, f64::min);
            }
            let row = &mut costs[s * n..(s + 1) * n];
            for (t, slot) in row.iter_mut().enumerate() {
                *slot = match pids[t].kind {
                    _ if s == t => d.intra_pid,
                    PidKind::Internal if reached[t] => cost[t],
                    PidKind::Internal => d.inter_pid,
                    PidKind::External => interdomain_cost(d, &egress[t], &dist, &cost, s),
                };
            }
        }
        CostMatrix { n, costs }
    }
}

/// [`Routing::new`] for the sources `range`: a search from each internal one, kept compact.
fn route_rows(
    pids: &[Pid],
    out: &[Vec<(usize, f64)>],
    weighted: &[(usize, usize, f64)],
    origins: &[usize],
    words: usize,
    range: std::ops::Range<usize>,
) -> RoutingRows {
    let n = pids.len();
    let rows = range.len();
    let mut part = RoutingRows {
        order: vec![0; rows * n],
        reached: vec![0; rows],
        on_path: vec![0; rows * words],
        origin_dist: vec![f64::INFINITY; rows * origins.len()],
    };
    let mut heap = std::collections::BinaryHeap::new();
    let mut dist = vec![f64::INFINITY; n];
    for (k, s) in range.enumerate() {
        if pids[s].kind == PidKind::External {
            continue;
        }
        let order = &mut part.order[k * n..(k + 1) * n];
        let reached = search(out, s, &mut dist, order, &mut heap);
        part.reached[k] = reached;
        let bits = &mut part.on_path[k * words..(k + 1) * words];
        for (i, &(u, v, w)) in weighted.iter().enumerate() {
            if dist[u] < dist[v] && dist[u] + w == dist[v] {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        let row = &mut part.origin_dist[k * origins.len()..(k + 1) * origins.len()];
        for (slot, &o) in row.iter_mut().zip(origins) {
            *slot = dist[o];
        }
        for &v in &order[..reached as usize] {
            dist[usize::from(v)] = f64::INFINITY;
        }
    }
    part
}

impl CostMatrix {
    /// Number of PIDs.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no PIDs (never, for a topology).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The cost from PID index `from` to PID index `to`.
    pub fn get(&self, from: usize, to: usize) -> f64 {
        self.costs[from * self.n + to]
    }

    /// Every cost as `f32`, row-major (what a snapshot stores).
    pub fn to_f32(&self) -> Vec<f32> {
        self.costs.iter().map(|&c| c as f32).collect()
    }

    /// One source's costs to every PID.
    pub fn row(&self, from: usize) -> &[f64] {
        &self.costs[from * self.n..(from + 1) * self.n]
    }

    /// The first cost (row-major) that is not a finite number as `f64` or, once narrowed, as
    /// the `f32` a snapshot stores: `(from, to, value)`. `None` when every cost is usable.
    pub fn first_unusable(&self) -> Option<(usize, usize, f64)> {
        self.costs
            .iter()
            .position(|&c| !usable_cost(c))
            .map(|i| (i / self.n.max(1), i % self.n.max(1), self.costs[i]))
    }
}

/// Whether a cost can be published and stored: finite, non-negative, and finite once narrowed
/// to `f32` (1e39 is a finite `f64` but an infinite `f32`).
pub fn usable_cost(c: f64) -> bool {
    c.is_finite() && c >= 0.0 && (c as f32).is_finite()
}

/// Dijkstra from `s` over `out` (intradomain links by the PID they leave): fills `dist` and
/// the visiting order, returns how many PIDs were reached.
fn search(
    out: &[Vec<(usize, f64)>],
    s: usize,
    dist: &mut [f64],
    order: &mut [u16],
    heap: &mut std::collections::BinaryHeap<Tentative>,
) -> u32 {
    let mut reached = 0;
    dist[s] = 0.0;
    heap.push(Tentative { dist: 0.0, pid: s });
    while let Some(Tentative { dist: d, pid: u }) = heap.pop() {
        // A stale entry: `u` was reached more cheaply since (entries are pushed only on a
        // strict improvement, so the final one is popped once).
        if d > dist[u] {
            continue;
        }
        // `u` < 65,536 (checked in `Routing::new`).
        order[reached] = u as u16;
        reached += 1;
        for &(v, w) in &out[u] {
            let nd = d + w;
            if nd < dist[v] {
                dist[v] = nd;
                heap.push(Tentative { dist: nd, pid: v });
            }
        }
    }
    reached as u32
}

/// A heap entry: a tentative distance to a PID, smallest first.
#[derive(Clone, Copy, PartialEq)]
struct Tentative {
    dist: f64,
    pid: usize,
}

impl Eq for Tentative {}

impl Ord for Tentative {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the nearest first; ties by the lower
    /// PID index.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .dist
            .total_cmp(&self.dist)
            .then(other.pid.cmp(&self.pid))
    }
}

impl PartialOrd for Tentative {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The cost from internal PID `source` to an external PID reached by the egress links
/// `egress`: the egress link at the nearest internal PID that has one (ties: the cheaper
/// link, then the lower PID index).
fn interdomain_cost(
    d: &CostDefaults,
    egress: &[&Link],
    dist: &[f64],
    cost: &[f64],
    source: usize,
) -> f64 {
    let chosen = egress
        .iter()
        .filter(|l| dist[l.from].is_finite())
        .min_by(|a, b| {
            dist[a.from]
                .total_cmp(&dist[b.from])
                .then(a.cost(d).total_cmp(&b.cost(d)))
                .then(a.from.cmp(&b.from))
        });
    match chosen {
        None => d.interdomain,
        Some(link) if d.interdomain_includes_intradomain && link.from != source => {
            cost[link.from] + link.cost(d)
        }
        Some(link) => link.cost(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search this module used before [`Routing`]: dense Dijkstra on (distance, cost)
    /// pairs, `O(n^2)` per source. The reference the fast path must agree with exactly.
    fn reference(pids: &[Pid], links: &[Link], d: &CostDefaults) -> CostMatrix {
        let n = pids.len();
        let mut costs = vec![d.interdomain; n * n];
        for s in (0..n).filter(|&s| pids[s].kind == PidKind::Internal) {
            let (mut dist, mut cost) = (vec![f64::INFINITY; n], vec![f64::INFINITY; n]);
            let mut done = vec![false; n];
            dist[s] = 0.0;
            cost[s] = 0.0;
            while let Some(u) =
                (0..n)
                    .filter(|&i| !done[i] && dist[i].is_finite())
                    .min_by(|&a, &b| {
                        dist[a]
                            .total_cmp(&dist[b])
                            .then(cost[a].total_cmp(&cost[b]))
                    })
            {
                done[u] = true;
                for l in links.iter().filter(|l| l.from == u) {
                    let Some(w) = l.weight else { continue };
                    let (nd, nc) = (dist[u] + w, cost[u] + l.cost(d));
                    let v = l.to;
                    if !done[v] && (nd < dist[v] || (nd == dist[v] && nc < cost[v])) {
                        dist[v] = nd;
                        cost[v] = nc;
                    }
                }
            }
            let egress: Vec<Vec<&Link>> = (0..n)
                .map(|t| {
                    links
                        .iter()
                        .filter(|l| l.to == t && l.is_egress())
                        .collect()
                })
                .collect();
            for t in 0..n {
                costs[s * n + t] = match pids[t].kind {
                    _ if s == t => d.intra_pid,
                    PidKind::Internal if dist[t].is_finite() => cost[t],
                    PidKind::Internal => d.inter_pid,
                    PidKind::External => interdomain_cost(d, &egress[t], &dist, &cost, s),
                };
            }
        }
        CostMatrix { n, costs }
    }

    fn pid(i: usize, kind: PidKind) -> Pid {
        Pid {
            name: format!("p{i}"),
            kind,
            prefixes: Vec::new(),
        }
    }

    /// Random graphs with equal-weight paths of different costs (weights from a tiny set),
    /// fractional prices, unreachable PIDs and egress links: the same costs, bit for bit.
    #[test]
    fn routing_then_costs_equals_the_dense_search() {
        let mut x: u64 = 17;
        let mut next = move |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        for round in 0..40 {
            let n = 3 + next(25) as usize;
            let pids: Vec<Pid> = (0..n)
                .map(|i| {
                    let kind = if next(5) == 0 {
                        PidKind::External
                    } else {
                        PidKind::Internal
                    };
                    pid(i, kind)
                })
                .collect();
            let mut links = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..n * 3 {
                let (from, to) = (next(n as u64) as usize, next(n as u64) as usize);
                if from == to || pids[from].kind == PidKind::External || !seen.insert((from, to)) {
                    continue;
                }
                let egress = pids[to].kind == PidKind::External;
                links.push(Link {
                    name: format!("{from}->{to}"),
                    from,
                    to,
                    capacity: 1.0,
                    weight: (!egress).then(|| [1.0, 2.0, 3.0][next(3) as usize]),
                    static_cost: (next(3) == 0).then(|| next(20) as f64),
                    utilisation: None,
                    price: (next(2) == 0).then(|| next(100_000) as f64 / 1e4),
                });
            }
            let d = CostDefaults {
                interdomain_includes_intradomain: round % 2 == 0,
                ..CostDefaults::default()
            };
            let fast = p_distances(&pids, &links, &d);
            let slow = reference(&pids, &links, &d);
            assert_eq!(fast, slow, "round {round}: {n} PIDs, {} links", links.len());
        }
    }
}
