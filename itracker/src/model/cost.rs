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
/// [`super::Topology::costs`] returns). Runs Dijkstra over adjacency lists from every internal
/// PID: `O(n (n + m) log n)` for `n` PIDs and `m` links, about a third of a second for an ISP
/// of 2,000 PIDs and 5,000 links, where the dense `O(n^2)`-per-source search with a link scan
/// per step took minutes.
pub fn p_distances(pids: &[Pid], links: &[Link], d: &CostDefaults) -> CostMatrix {
    let net = Net::new(pids.len(), links, d);
    let n = pids.len();
    let mut costs = vec![d.interdomain; n * n];
    let mut search = Search::new(n);
    for s in 0..n {
        if pids[s].kind == PidKind::External {
            continue;
        }
        let paths = search.run(&net, s);
        let row = &mut costs[s * n..(s + 1) * n];
        for (t, slot) in row.iter_mut().enumerate() {
            *slot = match pids[t].kind {
                _ if s == t => d.intra_pid,
                PidKind::Internal if paths.dist[t].is_finite() => paths.cost[t],
                PidKind::Internal => d.inter_pid,
                PidKind::External => interdomain_cost(&net, paths, s, t),
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

/// The links the path search reads, as adjacency lists: intradomain links by the PID they
/// leave, egress links by the external PID they enter.
struct Net<'a> {
    links: &'a [Link],
    defaults: &'a CostDefaults,
    /// `out[u]`: `(to, weight, cost)` of every intradomain link leaving `u`.
    out: Vec<Vec<(usize, f64, f64)>>,
    /// `egress[t]`: indices of the egress links entering external PID `t`.
    egress: Vec<Vec<usize>>,
}

impl<'a> Net<'a> {
    fn new(n: usize, links: &'a [Link], defaults: &'a CostDefaults) -> Self {
        let mut out = vec![Vec::new(); n];
        let mut egress = vec![Vec::new(); n];
        for (i, link) in links.iter().enumerate() {
            match link.weight {
                Some(w) => out[link.from].push((link.to, w, link.cost(defaults))),
                None => egress[link.to].push(i),
            }
        }
        Net {
            links,
            defaults,
            out,
            egress,
        }
    }

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

/// A heap entry: a tentative `(distance, cost)` of a PID, smallest first.
#[derive(Clone, Copy, PartialEq)]
struct Tentative {
    dist: f64,
    cost: f64,
    pid: usize,
}

impl Eq for Tentative {}

impl Ord for Tentative {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the shortest first; ties by the
    /// lower cost, then the lower PID index.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .dist
            .total_cmp(&self.dist)
            .then(other.cost.total_cmp(&self.cost))
            .then(other.pid.cmp(&self.pid))
    }
}

impl PartialOrd for Tentative {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Dijkstra's buffers, reused from one source to the next.
struct Search {
    paths: Paths,
    done: Vec<bool>,
    heap: std::collections::BinaryHeap<Tentative>,
}

impl Search {
    fn new(n: usize) -> Self {
        Search {
            paths: Paths {
                dist: vec![f64::INFINITY; n],
                cost: vec![f64::INFINITY; n],
            },
            done: vec![false; n],
            heap: std::collections::BinaryHeap::new(),
        }
    }

    /// Dijkstra over intradomain links by routing weight, carrying the link-cost sum of the
    /// chosen path: among the shortest paths, the cheapest.
    fn run(&mut self, net: &Net<'_>, source: usize) -> &Paths {
        let Paths { dist, cost } = &mut self.paths;
        dist.fill(f64::INFINITY);
        cost.fill(f64::INFINITY);
        self.done.fill(false);
        dist[source] = 0.0;
        cost[source] = 0.0;
        self.heap.push(Tentative {
            dist: 0.0,
            cost: 0.0,
            pid: source,
        });
        while let Some(Tentative { pid: u, .. }) = self.heap.pop() {
            if std::mem::replace(&mut self.done[u], true) {
                continue;
            }
            for &(v, w, c) in &net.out[u] {
                let (nd, nc) = (dist[u] + w, cost[u] + c);
                if !self.done[v] && (nd < dist[v] || (nd == dist[v] && nc < cost[v])) {
                    dist[v] = nd;
                    cost[v] = nc;
                    self.heap.push(Tentative {
                        dist: nd,
                        cost: nc,
                        pid: v,
                    });
                }
            }
        }
        &self.paths
    }
}

fn interdomain_cost(net: &Net<'_>, paths: &Paths, source: usize, target: usize) -> f64 {
    let d = net.defaults;
    let egress = net.egress[target]
        .iter()
        .map(|&i| &net.links[i])
        .filter(|l| paths.dist[l.from].is_finite())
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
