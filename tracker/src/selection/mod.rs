//! Which peers an announce gets back: a pure function of the swarm's buckets, the network
//! snapshot, the requester, numwant and an RNG (so answers are reproducible under a seed).
//!
//! Both policies work bucket by bucket and never scan the swarm: the cost is O(buckets +
//! numwant). Rules shared by both:
//! - the requester never appears in its own answer, no peer appears twice;
//! - a seeder is never handed seeders;
//! - at most `numwant` peers; a swarm smaller than the answer gives everyone.
//!
//! `random` draws uniformly over every eligible peer. `p4p` orders PIDs into three tiers, the
//! requester's own PID, the other PIDs of its ISP (cheapest first, ties shuffled), and everything
//! else (cheapest first), and gives each tier a quota:
//! - remote peers (outside the ISP): a swarm-level share `r`, not a per-answer quota. An answer
//!   of `n` peers carries `floor(n*r)` remote peers plus one more with probability
//!   `frac(n*r)`, so a 4-peer answer usually has none and sometimes one, and the average over
//!   many answers is `r`. `r` is `remote_share`, lowered to `remote_share_floor` (never 0) when
//!   the requester's PID holds at least `seeded_pid_threshold` seeders, and raised to
//!   `1 - same_isp_share` (at least) when the PID has no seeder at all, so that no PID is cut
//!   off from the rest of the swarm.
//! - the rest is local, split between the own PID and the ISP's other PIDs in the ratio
//!   `same_pid_share : same_isp_share - same_pid_share`.
//!
//! When a tier runs short, the following tiers fill the answer, in preference order.
//!
//! Every peer of a group is equally likely to be drawn, but pairs are not: draws are
//! stratified (one per stratum, so neighbours in storage order meet less often than under
//! uniform sampling), and where the store says reading neighbours together pays
//! ([`Buckets::adjacent_reads_pay`], the memory store, whose bucket records lie side by side)
//! a large group is drawn in runs of `RUN` adjacent peers, so neighbours come back together
//! more often. Both are deliberate trades for speed (no collision checks; one cache miss per
//! run instead of one per peer), measured in
//! `runs_of_neighbours_come_only_from_stores_that_ask_for_them`.

use std::net::SocketAddr;

use p4p_itracker::{PidId, Snapshot};
use rand::Rng;

use crate::config::{PolicyKind, SelectionConfig};
use crate::types::Families;

/// A swarm as selection sees it: a list of buckets, each one PID x family x seeder/leecher.
pub trait Buckets {
    /// Number of buckets.
    fn count(&self) -> usize;
    /// The bucket's PID.
    fn pid(&self, bucket: usize) -> PidId;
    /// Whether the bucket holds seeders.
    fn seeders(&self, bucket: usize) -> bool;
    /// Whether the bucket holds IPv6 peers.
    fn v6(&self, bucket: usize) -> bool;
    /// Peers in the bucket.
    fn size(&self, bucket: usize) -> usize;
    /// The peer at a position of the bucket.
    fn peer(&self, bucket: usize, index: usize) -> SocketAddr;
    /// Whether peers at adjacent positions are cheaper to read together than apart (records
    /// side by side in memory): selection then draws them in runs (see `RUN`). A store that
    /// hands out random samples instead (Redis) keeps one stratum per peer, whose picks spread
    /// over buckets as its samples expect.
    fn adjacent_reads_pay(&self) -> bool {
        false
    }
}

/// Who asks.
#[derive(Copy, Clone, Debug)]
pub struct Requester {
    /// Snapshot index of the requester's PID (where costs are looked up).
    pub pid_index: u16,
    /// The bucket id the requester's own peers share: its PID's id, or its AS location when
    /// the snapshot carries an ASN database and the PID is not internal (see
    /// [`crate::topology::location`]).
    pub bucket_id: PidId,
    pub seeder: bool,
    pub families: Families,
    /// Where the requester sits in the buckets (bucket, position), to leave it out.
    pub position: Option<(usize, usize)>,
    /// Most peers wanted.
    pub numwant: usize,
}

/// What an answer was made of, for the locality metrics.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct SelectionStats {
    pub same_pid: u32,
    pub same_isp: u32,
    pub remote: u32,
    /// Sum of the p-distances from the requester to every returned peer.
    pub cost: f64,
    /// Expected sum of p-distances of a uniformly random answer of the same size.
    pub random_cost: f64,
}

/// Reusable working memory, so selection does not allocate per announce.
#[derive(Debug, Default)]
pub struct Scratch {
    groups: Vec<Group>,
    members: Vec<usize>,
    /// (bucket, position) of the peers drawn from one group, before any is read.
    picks: Vec<(usize, usize)>,
}

#[derive(Copy, Clone, Debug)]
struct Group {
    tier: u8,
    cost: f32,
    tiebreak: u32,
    /// Range of `Scratch::members` holding this group's bucket indices.
    start: usize,
    end: usize,
    /// Eligible peers (requester excluded).
    size: usize,
    take: usize,
}

/// A configured policy, ready to select.
#[derive(Clone, Debug)]
pub struct Selector {
    config: SelectionConfig,
}

const TIER_PID: u8 = 0;
const TIER_ISP: u8 = 1;
const TIER_REMOTE: u8 = 2;

impl Selector {
    pub fn new(config: SelectionConfig) -> Self {
        Self { config }
    }

    /// The policy in force.
    pub fn policy(&self) -> PolicyKind {
        self.config.policy
    }

    /// Chooses up to `numwant` peers for `req` and passes each to `out`.
    pub fn select<B: Buckets, R: Rng>(
        &self,
        buckets: &B,
        snap: &Snapshot,
        req: &Requester,
        rng: &mut R,
        scratch: &mut Scratch,
        out: &mut impl FnMut(SocketAddr),
    ) -> SelectionStats {
        let mut stats = SelectionStats::default();
        let numwant = req.numwant;
        if numwant == 0 {
            return stats;
        }
        let total = self.group(buckets, snap, req, rng, scratch);
        let n = numwant.min(total);
        if n == 0 {
            return stats;
        }
        let weighted: f64 = scratch
            .groups
            .iter()
            .map(|g| f64::from(g.cost) * g.size as f64)
            .sum();
        stats.random_cost = weighted / total as f64 * n as f64;
        let count = |b: usize, stats: &mut SelectionStats| {
            let (tier, cost) = classify(snap, req, buckets.pid(b));
            match tier {
                TIER_PID => stats.same_pid += 1,
                TIER_ISP => stats.same_isp += 1,
                _ => stats.remote += 1,
            }
            stats.cost += f64::from(cost);
        };
        match self.config.policy {
            PolicyKind::Random => {
                sample_group(
                    buckets,
                    &scratch.members,
                    &mut scratch.picks,
                    total,
                    n,
                    req.position,
                    rng,
                    &mut |a, b| {
                        count(b, &mut stats);
                        out(a);
                    },
                );
            }
            PolicyKind::P4p => {
                self.quotas(buckets, req, n, rng, &mut scratch.groups);
                for g in scratch.groups.iter().filter(|g| g.take > 0) {
                    let members = &scratch.members[g.start..g.end];
                    sample_group(
                        buckets,
                        members,
                        &mut scratch.picks,
                        g.size,
                        g.take,
                        req.position,
                        rng,
                        &mut |a, b| {
                            count(b, &mut stats);
                            out(a);
                        },
                    );
                }
            }
        }
        stats
    }

    /// The swarm-level share of remote peers (outside the ISP) for a requester whose PID holds
    /// `own_seeders` seeders: `remote_share`, lowered to `remote_share_floor` when the PID is
    /// well seeded, raised to `1 - same_isp_share` (at least) when it has no seeder at all.
    fn remote_share(&self, own_seeders: usize) -> f64 {
        let c = &self.config;
        if own_seeders == 0 {
            c.remote_share.max(1.0 - c.same_isp_share)
        } else if own_seeders >= c.seeded_pid_threshold as usize {
            c.remote_share_floor
        } else {
            c.remote_share
        }
    }

    /// The part of the local (in-ISP) peers that comes from the requester's own PID.
    fn own_pid_fraction(&self) -> f64 {
        let c = &self.config;
        if c.same_isp_share > 0.0 {
            c.same_pid_share / c.same_isp_share
        } else {
            1.0
        }
    }

    /// Most peers an answer of `n` takes from outside the requester's PID while that PID has
    /// enough: the remote share at its largest rounded up, the own-PID part of the rest rounded
    /// down (the bounds of the probabilistic rounding in [`Selector::select`]). A store that
    /// samples buckets (Redis) sizes its samples with it.
    pub fn most_outside_own_pid(&self, n: usize) -> usize {
        if self.config.policy == PolicyKind::Random {
            return n;
        }
        let remote = (n as f64 * self.remote_share(0)).ceil() as usize;
        let own = (n.saturating_sub(remote) as f64 * self.own_pid_fraction()).floor() as usize;
        n.saturating_sub(own)
    }

    /// Gathers eligible buckets into PID groups in preference order; returns eligible peers.
    fn group<B: Buckets, R: Rng>(
        &self,
        buckets: &B,
        snap: &Snapshot,
        req: &Requester,
        rng: &mut R,
        scratch: &mut Scratch,
    ) -> usize {
        scratch.groups.clear();
        scratch.members.clear();
        let eligible = |b: usize| {
            req.families.allows(buckets.v6(b))
                && !(req.seeder && buckets.seeders(b))
                && buckets.size(b) > 0
        };
        // Buckets of one PID are gathered by sorting bucket indices by PID; the list is short.
        let start = scratch.members.len();
        scratch
            .members
            .extend((0..buckets.count()).filter(|&b| eligible(b)));
        scratch.members[start..].sort_unstable_by_key(|&b| buckets.pid(b));
        let mut total = 0;
        let mut i = 0;
        while i < scratch.members.len() {
            let pid = buckets.pid(scratch.members[i]);
            let mut j = i;
            let mut size = 0;
            while j < scratch.members.len() && buckets.pid(scratch.members[j]) == pid {
                let b = scratch.members[j];
                size += buckets.size(b);
                if req.position.is_some_and(|(rb, _)| rb == b) {
                    size -= 1;
                }
                j += 1;
            }
            let (tier, cost) = classify(snap, req, pid);
            scratch.groups.push(Group {
                tier,
                cost,
                tiebreak: rng.random(),
                start: i,
                end: j,
                size,
                take: 0,
            });
            total += size;
            i = j;
        }
        scratch.groups.sort_unstable_by(|a, b| {
            (a.tier.cmp(&b.tier))
                .then(a.cost.total_cmp(&b.cost))
                .then(a.tiebreak.cmp(&b.tiebreak))
        });
        total
    }

    /// Sets `take` on each group: tier quotas first, then shortfalls filled in order.
    fn quotas<B: Buckets, R: Rng>(
        &self,
        buckets: &B,
        req: &Requester,
        n: usize,
        rng: &mut R,
        groups: &mut [Group],
    ) {
        let own_seeders = own_pid_seeders(buckets, req.bucket_id);
        let remote_share = self.remote_share(own_seeders);
        let remote = round_probabilistic(n as f64 * remote_share, rng).min(n);
        let local = n - remote;
        let own = round_probabilistic(local as f64 * self.own_pid_fraction(), rng).min(local);
        let quota = [own, local - own, remote];
        let mut left = quota;
        for g in groups.iter_mut() {
            let q = &mut left[usize::from(g.tier)];
            g.take = (*q).min(g.size);
            *q -= g.take;
        }
        let mut short: usize = left.iter().sum();
        for g in groups.iter_mut() {
            if short == 0 {
                break;
            }
            let extra = (g.size - g.take).min(short);
            g.take += extra;
            short -= extra;
        }
    }
}

/// Tier and cost from the requester of a bucket's PID (or AS location).
fn classify(snap: &Snapshot, req: &Requester, pid: PidId) -> (u8, f32) {
    let from = req.pid_index;
    if pid == req.bucket_id {
        return (TIER_PID, snap.cost(from, from));
    }
    match snap.index_of(pid) {
        // The requester has an AS location; these peers share its PID but not (known) its AS.
        Some(to) if to == from => (TIER_REMOTE, snap.cost(from, to)),
        Some(to) if snap.same_isp(from, to) => (TIER_ISP, snap.cost(from, to)),
        Some(to) => (TIER_REMOTE, snap.cost(from, to)),
        // Another AS location, or a PID resolved under an older map and not re-resolved yet:
        // far away, priced at the PID level (public peers share the requester's PID).
        None => (TIER_REMOTE, snap.cost(from, from)),
    }
}

fn own_pid_seeders<B: Buckets>(buckets: &B, id: PidId) -> usize {
    (0..buckets.count())
        .filter(|&b| buckets.seeders(b) && buckets.pid(b) == id)
        .map(|b| buckets.size(b))
        .sum()
}

/// `floor(x)` plus one with probability `frac(x)`.
fn round_probabilistic<R: Rng>(x: f64, rng: &mut R) -> usize {
    let whole = x.floor();
    let extra = usize::from(rng.random::<f64>() < x - whole);
    whole as usize + extra
}

/// Peers drawn side by side from one random position when a group is large: a bucket's
/// records lie next to each other in memory, so a run of `RUN` peers costs about one cache miss
/// where `RUN` scattered picks cost `RUN` (the largest cost of an announce to a big swarm).
const RUN: usize = 4;

/// Draws `take` distinct peers uniformly from a group of `size` eligible peers spread over
/// `members` buckets, skipping the requester's position. Stratified: the group is cut into equal
/// strata, rotated by a random offset, and one peer (or, in a large group, one run of up to
/// [`RUN`] adjacent peers) is drawn from each, so every peer has the same chance, no two picks
/// collide, and nothing is allocated. All positions are drawn before any peer is read, so the
/// reads (cache misses in a big swarm) overlap instead of waiting for each other.
#[allow(clippy::too_many_arguments)]
fn sample_group<B: Buckets, R: Rng>(
    buckets: &B,
    members: &[usize],
    picks: &mut Vec<(usize, usize)>,
    size: usize,
    take: usize,
    skip: Option<(usize, usize)>,
    rng: &mut R,
    out: &mut impl FnMut(SocketAddr, usize),
) {
    // Rotate the strata by a random offset so the first stratum is not always first: with it,
    // every peer has the same chance however the strata are cut.
    let offset = rng.random_range(0..size);
    let run = if buckets.adjacent_reads_pay() && take >= 2 * RUN && size >= RUN * take.div_ceil(RUN)
    {
        RUN
    } else {
        1
    };
    let strata = take.div_ceil(run);
    picks.clear();
    for s in 0..strata {
        let lo = s * size / strata;
        let hi = (s + 1) * size / strata;
        let len = run.min(take - s * run);
        let start = rng.random_range(lo..=hi - len);
        for k in 0..len {
            // start + k < size and offset < size.
            let mut pick = start + k + offset;
            if pick >= size {
                pick -= size;
            }
            picks.push(locate(buckets, members, pick, skip));
        }
    }
    for &(bucket, index) in picks.iter() {
        out(buckets.peer(bucket, index), bucket);
    }
}

/// The (bucket, position) at eligible position `pick` of a group, positions counted without
/// the skipped position.
fn locate<B: Buckets>(
    buckets: &B,
    members: &[usize],
    mut pick: usize,
    skip: Option<(usize, usize)>,
) -> (usize, usize) {
    for &b in members {
        let mut size = buckets.size(b);
        let skipped = skip.filter(|&(sb, _)| sb == b).map(|(_, pos)| pos);
        if skipped.is_some() {
            size -= 1;
        }
        if pick < size {
            let index = match skipped {
                Some(pos) if pick >= pos => pick + 1,
                _ => pick,
            };
            return (b, index);
        }
        pick -= size;
    }
    unreachable!("pick is below the group's eligible size")
}

#[cfg(test)]
mod tests;
