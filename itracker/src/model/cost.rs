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

/// Shortest-path result from one source: routing distance and summed link cost per PID.
struct Paths {
    dist: Vec<f64>,
    cost: Vec<f64>,
}

/// Computes every PID-to-PID cost of a topology's PIDs and links (what
/// [`super::Topology::costs`] returns). Runs a shortest-path search from every internal PID.
pub fn p_distances(pids: &[Pid], links: &[Link], d: &CostDefaults) -> CostMatrix {
    let net = Net { links, defaults: d };
    let n = pids.len();
    let mut costs = vec![d.interdomain; n * n];
    for s in 0..n {
        if pids[s].kind == PidKind::External {
            continue;
        }
        let paths = shortest_paths(&net, n, s);
        for t in 0..n {
            costs[s * n + t] = match pids[t].kind {
                _ if s == t => d.intra_pid,
                PidKind::Internal if paths.dist[t].is_finite() => paths.cost[t],
                PidKind::Internal => d.inter_pid,
                PidKind::External => interdomain_cost(&net, &paths, s, t),
            };
        }
    }
    for (s, pid) in pids.iter().enumerate() {
        if pid.kind == PidKind::External {
            costs[s * n + s] = d.interdomain;
        }
    }
    CostMatrix { n, costs }
}

/// The links and defaults the path search reads.
struct Net<'a> {
    links: &'a [Link],
    defaults: &'a CostDefaults,
}

impl Net<'_> {
    fn link_cost(&self, link: &Link) -> f64 {
        link.cost(self.defaults)
    }
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

/// Dijkstra over internal links by routing weight, carrying the link-cost sum of the chosen
/// path. `O(n^2)`: PIDs number in the tens to hundreds and this runs once per topology change.
fn shortest_paths(net: &Net<'_>, n: usize, source: usize) -> Paths {
    let mut dist = vec![f64::INFINITY; n];
    let mut cost = vec![f64::INFINITY; n];
    let mut done = vec![false; n];
    dist[source] = 0.0;
    cost[source] = 0.0;
    loop {
        let next = (0..n)
            .filter(|&i| !done[i] && dist[i].is_finite())
            .min_by(|&a, &b| {
                dist[a]
                    .total_cmp(&dist[b])
                    .then(cost[a].total_cmp(&cost[b]))
            });
        let Some(u) = next else { break };
        done[u] = true;
        for link in net.links.iter().filter(|l| l.from == u) {
            let Some(w) = link.weight else { continue };
            let (nd, nc) = (dist[u] + w, cost[u] + net.link_cost(link));
            let v = link.to;
            if !done[v] && (nd < dist[v] || (nd == dist[v] && nc < cost[v])) {
                dist[v] = nd;
                cost[v] = nc;
            }
        }
    }
    Paths { dist, cost }
}

fn interdomain_cost(net: &Net<'_>, paths: &Paths, source: usize, target: usize) -> f64 {
    let d = net.defaults;
    let egress = net
        .links
        .iter()
        .filter(|l| l.to == target && l.is_egress() && paths.dist[l.from].is_finite())
        .min_by(|a, b| {
            paths.dist[a.from]
                .total_cmp(&paths.dist[b.from])
                .then(net.link_cost(a).total_cmp(&net.link_cost(b)))
                .then(a.from.cmp(&b.from))
        });
    match egress {
        None => d.interdomain,
        Some(link) if d.interdomain_includes_intradomain && link.from != source => {
            paths.cost[link.from] + net.link_cost(link)
        }
        Some(link) => net.link_cost(link),
    }
}
