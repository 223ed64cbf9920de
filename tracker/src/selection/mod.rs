//! Which peers an announce gets back: a pure function of the swarm's buckets, the network
//! snapshot, the requester, numwant and an RNG (so answers are reproducible under a seed).
//!
//! Both policies work bucket by bucket and never scan the swarm: the cost is O(buckets +
//! numwant). A swarm spread over thousands of PIDs (an ISP-scale map) has thousands of
//! buckets, so a store that can find one PID's buckets on demand ([`Buckets::indexed`], the
//! memory store's large swarms) lets `p4p` walk the snapshot's [`Snapshot::preference`] order
//! from the requester's PID instead and stop once the answer is decided: the cost is then that
//! of the PIDs the answer comes from, with the same answers (see [`Selector::group_indexed`]).
//! Rules shared by both:
//! - the requester never appears in its own answer, no peer appears twice;
//! - a seeder is never handed seeders;
//! - at most `numwant` peers; a swarm smaller than the answer gives everyone.
//!
//! `random` draws uniformly over every eligible peer.
//!
//! # The `p4p` rule: costs decide
//!
//! Every PID holding eligible peers falls in one of three tiers, seen from the requester:
//! - **own**: the requester's own PID (or its AS location, see [`crate::topology::location`]);
//! - **near**: a PID in the same *stated network boundary* as the requester's
//!   ([`Snapshot::near`]): the internal PIDs of its ISP when the map marks them (our iTracker's
//!   topology files and `priv:p4p-internal`), or the PIDs published with the same AS number
//!   (an RFC 9240 property map on the `pid` domain). A map that states no boundary, as a plain
//!   RFC 7285 server's does, has no near PID: being "not the default PID" says nothing about
//!   who operates a PID, and the other ISP's customers are such a PID.
//! - **far**: every other PID.
//!
//! Inside the near and far tiers PIDs are ranked by the cost map alone: cheapest first, ties in
//! random order, and a cost the map does not give (or a location no PID of the map holds) after
//! every known one. Only the order of costs is used, never their scale, so numerical and
//! ordinal maps, an intra-PID cost of 0 or not, and any unit rank alike.
//!
//! Shares: an answer of `n` peers takes `far = round(n * f)` far peers and
//! `near = round(n * (same_isp_share - same_pid_share))` near peers (at most `n - far`), the rest
//! from the own PID, where `round(x)` is `floor(x)` plus one with probability `frac(x)`. Each
//! share is therefore kept over the swarm, not in every answer: a 4-peer answer with `f = 0.1`
//! usually has no far peer and sometimes one, and the far peers make up 10 % of all answers.
//! `f` depends on the requester's *counterparts* on its side of the boundary: the eligible
//! seeders (for a leecher) or leechers (for a seeder) in its own and near PIDs. It is
//! `remote_share`, lowered to `remote_share_floor` (never 0) from `seeded_pid_threshold`
//! counterparts on, and raised to `1 - same_isp_share` (at least) when there is none, so no
//! PID is ever cut off from the rest of the swarm. A tier that runs short passes its shortfall
//! on in preference order: own PID, near PIDs, far PIDs, each cheapest first. Without a near
//! PID the near share thus goes back to the own PID. A seeder's shortfall stops at its near
//! PIDs: it takes far peers only as its far share (unless `seeder_far_fill`). A leecher whose
//! own and near PIDs hold `seeded_pid_threshold` seeders or more is filled from far PIDs only
//! up to half its numwant (`seeded_fill_cap`, on by default; [`Selector::far_fill_upto`]);
//! any other leecher, up to the whole answer. With `leechers_are_counterparts` (off by
//! default), a leecher's counterparts include the leechers on its side
//! ([`Selector::counterparts`]).
//!
//! Why: a share applied to every answer puts a distant peer in most small answers (measured
//! with real clients: about 2x fewer inter-ISP bytes than `random` when each 4-peer answer
//! carried a remote peer, 7.2x once the remote share was kept per swarm, and 2.4x again when a
//! plain ALTO map put the other ISP in a per-answer same-ISP tier); and a cost threshold ("near when cheaper than x% of the row's dearest") cannot
//! tell an ISP's second PoP from the neighbouring ISP when a default PID is far dearer than
//! both, so nothing is called near without a stated boundary.
//!
//! Why the seeded fill cap: an ISP's first leechers, whose PID held only its 2-3 seeds (fewer
//! than numwant 4), got a far peer to fill the answer, usually a remote original seed with
//! nobody else to serve yet, which then sent them data at its full rate: 46-59 % of what still
//! crossed. With the cap they get their seeds (and the far share): measured with real clients
//! on a standard ALTO map, 15 runs a side, p4p's inter-ISP bytes fell from 15.7 to 10.1 MiB
//! (median; random/p4p 14.2x -> 20.7x) at the same download time (p4p/random 1.011 -> 0.987).
//! Why only where the side is seeded: a PID without a seeder near it (every seed in the other
//! ISP, a lone leecher) must reach the rest of the swarm whatever it costs.
//!
//! Why counterparts over own *and near* PIDs: a PID with one seeder beside a near PID with two
//! is as well served as one with three (measured: such a PID's leechers, on the 0.10 share,
//! took 37 % of the inter-ISP bytes left). Why a seeder gets no far fill: a seeder whose side
//! has no leecher left (the end of a download, one ISP done before the other) was handed far
//! leechers only, and served them over connections it opened (6-19 % of what still crossed);
//! the far PIDs' leechers still reach it through their own answers (their far share, their
//! shortfall), and its own far share, raised while its side has no leecher, keeps a PID of
//! seeders only (or a seeder that cannot accept connections) in touch with the swarm.
//!
//! # Sampling inside a PID
//!
//! A PID's peers are drawn as a uniform random subset (Robert Floyd's algorithm: one random
//! number per peer, a collision check in a small table), so every pair of peers comes back
//! together as often as under uniform sampling (tested with a chi-square over pair counts).
//! Two deliberate exceptions, both for speed:
//! - where reading neighbours together pays ([`Buckets::adjacent_reads_pay`], the memory store,
//!   whose bucket records lie side by side) and the group holds at least [`RUN_MIN_GROUP`]
//!   peers, picks come in runs of [`RUN`] adjacent peers (one cache miss per run instead of one
//!   per peer): each peer keeps its uniform chance, but storage neighbours come together more
//!   often (bounded in `large_groups_bound_how_often_neighbours_come_together`);
//! - a store that samples each bucket itself (Redis, whose candidates are a uniform random
//!   subset in random order) gets one pick per stratum of the group, so that a bucket gives
//!   close to its proportional part and its sample suffices; within a bucket its answer is
//!   uniform because its sample is.

use std::net::SocketAddr;
use std::ops::Range;

use p4p_itracker::{PidId, Snapshot};
use rand::{Rng, RngCore};

use self::indexed::{order_ties, random_price, sample_indexed};
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
    /// A hint that [`Buckets::peer`] will soon be asked for this position: a store whose
    /// records lie in memory starts loading them, so that an answer's reads overlap.
    fn will_read(&self, _bucket: usize, _index: usize) {}
    /// Whether peers at adjacent positions are cheaper to read together than apart (records
    /// side by side in memory): selection then draws a uniform random subset of a group, or
    /// runs of adjacent peers in a group of [`RUN_MIN_GROUP`] or more. A store that hands out
    /// random samples instead (Redis) gets one pick per stratum, whose picks spread over
    /// buckets as its samples expect.
    fn adjacent_reads_pay(&self) -> bool {
        false
    }
    /// Whether the store finds one PID's buckets on demand ([`Buckets::find`]) and counts the
    /// swarm's peers ([`Buckets::totals`]). The `p4p` policy then walks the snapshot's
    /// [`Snapshot::preference`] order from the requester's PID and stops once the answer is
    /// decided, instead of listing and ranking every bucket: what a swarm spread over
    /// thousands of PIDs needs. Such a store has no bucket until one is found.
    fn indexed(&self) -> bool {
        false
    }
    /// The swarm's peers in the allowed families: (seeders, leechers), the requester included.
    /// Indexed stores only.
    fn totals(&self, _families: Families) -> (usize, usize) {
        (0, 0)
    }
    /// Makes the buckets of `pid` available and returns their numbers (empty when the swarm
    /// has none). Indexed stores only; selection asks once per PID and announce.
    fn find(&self, _pid: PidId) -> Range<usize> {
        0..0
    }
    /// Makes available every bucket whose id no snapshot's preference order lists (AS
    /// locations, the overflow id), side by side by id, and returns their numbers. Indexed
    /// stores only; asked at most once per announce.
    fn find_unlisted(&self) -> Range<usize> {
        0..0
    }
    /// The bucket (PID, seeders, IPv6) of a peer drawn uniformly from the whole swarm, `None`
    /// when the draw failed. Indexed stores only: it prices a random answer without listing
    /// the swarm.
    fn any_peer(&self, _rng: &mut dyn RngCore) -> Option<(PidId, bool, bool)> {
        None
    }
    /// A peer drawn uniformly from the swarm's peers in `families`, `None` when the draw
    /// failed. Indexed stores only: `random` samples a large swarm without listing it.
    fn draw(&self, _families: Families, _rng: &mut dyn RngCore) -> Option<Draw> {
        None
    }
    /// The [`Draw::id`] of the peer at a position of a bucket. Indexed stores only.
    fn record_id(&self, _bucket: usize, _index: usize) -> usize {
        0
    }
    /// Makes every bucket available, after those found so far, except those of the PIDs
    /// found so far (so each bucket is listed once): selection can then read the swarm as a
    /// listing. Indexed stores only.
    fn list_rest(&self) {}
}

/// A peer drawn by [`Buckets::draw`].
#[derive(Copy, Clone, Debug)]
pub struct Draw {
    /// Distinct for distinct peers of the swarm during one announce.
    pub id: usize,
    /// Its bucket's PID.
    pub pid: PidId,
    /// Whether it is a seeder.
    pub seeder: bool,
    pub addr: SocketAddr,
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

/// What an answer was made of, for the locality metrics (labels `same_pid`, `same_isp`,
/// `remote`, kept from the first rule's tier names).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct SelectionStats {
    /// Peers of the own tier (the requester's PID or AS location).
    pub same_pid: u32,
    /// Peers of the near tier (same stated boundary: with our iTracker, the same ISP).
    pub same_isp: u32,
    /// Peers of the far tier (everything else).
    pub remote: u32,
    /// Sum of the p-distances from the requester to every returned peer (an unknown cost is
    /// priced at [`Snapshot::far_cost`]).
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
    /// The peers drawn from an indexed store by `random` ([`indexed::sample_indexed`]).
    draws: Vec<Draw>,
    /// Positions already drawn from a group (see [`Drawn`]).
    drawn: Drawn,
    /// Tier and price of each eligible bucket (its group's), by bucket index: the random
    /// policy counts each returned peer without classifying it again.
    class: Vec<(u8, f32)>,
}

#[derive(Copy, Clone, Debug)]
struct Group {
    tier: u8,
    /// Rank key inside the tier: the cost when the map gives it, else infinity.
    key: f32,
    /// What one of its peers costs, for the stats.
    price: f32,
    tiebreak: u32,
    /// Range of `Scratch::members` holding this group's bucket indices.
    start: usize,
    end: usize,
    /// Eligible peers (requester excluded).
    size: usize,
    take: usize,
}

impl Group {
    fn new<R: Rng>(c: &Class, members: Range<usize>, size: usize, rng: &mut R) -> Self {
        Group {
            tier: c.tier,
            key: c.key,
            price: c.price,
            tiebreak: rng.random(),
            start: members.start,
            end: members.end,
            size,
            take: 0,
        }
    }
}

/// Whether the requester may be given the peers of bucket `b`: an allowed family, not
/// seeders to a seeder, not empty.
fn eligible<B: Buckets>(buckets: &B, req: &Requester, b: usize) -> bool {
    req.families.allows(buckets.v6(b)) && !(req.seeder && buckets.seeders(b)) && buckets.size(b) > 0
}

/// Eligible peers in `members` and, of them, the seeders; the requester left out of both (a
/// leecher may still be stored among seeders).
fn tally<B: Buckets>(buckets: &B, req: &Requester, members: &[usize]) -> (usize, usize) {
    let (mut size, mut seeders) = (0, 0);
    for &b in members {
        let mut in_bucket = buckets.size(b);
        if req.position.is_some_and(|(rb, _)| rb == b) {
            in_bucket -= 1;
        }
        size += in_bucket;
        if buckets.seeders(b) {
            seeders += in_bucket;
        }
    }
    (size, seeders)
}

/// A configured policy, ready to select.
#[derive(Clone, Debug)]
pub struct Selector {
    config: SelectionConfig,
}

const TIER_OWN: u8 = 0;
const TIER_NEAR: u8 = 1;
const TIER_FAR: u8 = 2;

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
        if self.config.policy == PolicyKind::Random && buckets.indexed() {
            if let Some(stats) = sample_indexed(buckets, snap, req, rng, scratch, out) {
                return stats;
            }
            // Too few eligible peers to draw them: read the swarm as a listing.
            buckets.list_rest();
        }
        let indexed = self.config.policy == PolicyKind::P4p && buckets.indexed();
        let (total, side) = if indexed {
            self.group_indexed(buckets, snap, req, rng, scratch)
        } else {
            self.group(buckets, snap, req, rng, scratch)
        };
        let n = numwant.min(total);
        if n == 0 {
            return stats;
        }
        let price = match indexed.then(|| random_price(buckets, snap, req, rng)) {
            Some(Some(price)) => f64::from(price),
            // Every group listed (or no draw was eligible): the mean over the groups at hand.
            _ => {
                let (weighted, size) = scratch.groups.iter().fold((0.0, 0), |(w, s), g| {
                    (w + f64::from(g.price) * g.size as f64, s + g.size)
                });
                weighted / size.max(1) as f64
            }
        };
        stats.random_cost = price * n as f64;
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
                    &mut scratch.drawn,
                    &mut |a, b| {
                        let (tier, price) = scratch.class[b];
                        stats.count(tier, price);
                        out(a);
                    },
                );
            }
            PolicyKind::P4p => {
                if indexed {
                    order_ties(&mut scratch.groups);
                } else {
                    order_groups(&mut scratch.groups, n + 1);
                }
                self.quotas(req, n, side, rng, &mut scratch.groups);
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
                        &mut scratch.drawn,
                        &mut |a, _| {
                            stats.count(g.tier, g.price);
                            out(a);
                        },
                    );
                }
            }
        }
        stats
    }

    /// The swarm-level share of far peers for a requester whose own and near PIDs hold
    /// `counterparts` peers it can trade with (seeders for a leecher, leechers for a seeder):
    /// `remote_share`, lowered to `remote_share_floor` from `seeded_pid_threshold` of them,
    /// raised to `1 - same_isp_share` (at least) when there is none.
    fn far_share(&self, counterparts: usize) -> f64 {
        let c = &self.config;
        if counterparts == 0 {
            c.remote_share.max(1.0 - c.same_isp_share)
        } else if counterparts >= c.seeded_pid_threshold as usize {
            c.remote_share_floor
        } else {
            c.remote_share
        }
    }

    /// The requester's counterparts on its side of the boundary, which set its far share: the
    /// leechers there for a seeder; the seeders for a leecher, and the leechers too with
    /// `leechers_are_counterparts`.
    ///
    /// Why the option: a leecher whose ISP holds no seeder (all seeds elsewhere, or nobody
    /// finished yet) keeps the raised far share however many leechers it has to trade with
    /// next to it; with every seed in one ISP, B's leechers trading with A's leechers were 46 %
    /// of what crossed, 3-4x the one copy that has to cross. Why off: measured there (3 runs a
    /// side), it cut what crossed by about 30 % but B's downloads took longer (p4p/random time
    /// 1.087 against 1.025), the data entering B through fewer connections.
    fn counterparts(&self, req: &Requester, side: Side) -> usize {
        if req.seeder {
            side.leechers
        } else if self.config.leechers_are_counterparts {
            side.seeders + side.leechers
        } else {
            side.seeders
        }
    }

    /// The swarm-level share of near peers: `same_isp_share - same_pid_share`.
    fn near_share(&self) -> f64 {
        let c = &self.config;
        (c.same_isp_share - c.same_pid_share).max(0.0)
    }

    /// Most peers an answer of `n` takes from outside the requester's PID while that PID has
    /// enough: the far share at its largest and the near share, each rounded up (the bounds of
    /// the probabilistic rounding in [`Selector::select`]). A store that samples buckets
    /// (Redis) sizes its samples with it.
    pub fn most_outside_own_pid(&self, n: usize) -> usize {
        if self.config.policy == PolicyKind::Random {
            return n;
        }
        let far = (n as f64 * self.far_share(0)).ceil() as usize;
        let near = (n as f64 * self.near_share()).ceil() as usize;
        n.min(far + near)
    }

    /// Gathers eligible buckets into PID groups in preference order; returns the eligible
    /// peers and, of them, the seeders and leechers in the requester's own and near PIDs,
    /// which set its far share and far fill ([`Selector::counterparts`]).
    fn group<B: Buckets, R: Rng>(
        &self,
        buckets: &B,
        snap: &Snapshot,
        req: &Requester,
        rng: &mut R,
        scratch: &mut Scratch,
    ) -> (usize, Side) {
        scratch.groups.clear();
        scratch.members.clear();
        scratch.class.clear();
        scratch.class.resize(buckets.count(), (TIER_FAR, 0.0));
        // Buckets of one PID are gathered by sorting bucket indices by PID; the list is short.
        scratch
            .members
            .extend((0..buckets.count()).filter(|&b| eligible(buckets, req, b)));
        // A store whose buckets already come ordered by PID (the memory store's, within a
        // family) is not sorted again: with thousands of PIDs the sort was most of an announce.
        if !scratch.members.is_sorted_by_key(|&b| buckets.pid(b)) {
            scratch.members.sort_unstable_by_key(|&b| buckets.pid(b));
        }
        let (mut total, mut side) = (0, Side::default());
        let mut i = 0;
        while i < scratch.members.len() {
            let pid = buckets.pid(scratch.members[i]);
            let j = i + scratch.members[i..]
                .iter()
                .take_while(|&&b| buckets.pid(b) == pid)
                .count();
            let c = classify(snap, req, pid);
            let (size, seeders) = tally(buckets, req, &scratch.members[i..j]);
            if c.tier != TIER_FAR {
                side.seeders += seeders;
                side.leechers += size - seeders;
            }
            for &b in &scratch.members[i..j] {
                scratch.class[b] = (c.tier, c.price);
            }
            scratch.groups.push(Group::new(&c, i..j, size, rng));
            total += size;
            i = j;
        }
        (total, side)
    }

    /// Sets `take` on each group: tier shares first (each rounded probabilistically, so kept
    /// over the swarm), then shortfalls filled in preference order; a seeder's only from its
    /// own and near PIDs.
    fn quotas<R: Rng>(
        &self,
        req: &Requester,
        n: usize,
        side: Side,
        rng: &mut R,
        groups: &mut [Group],
    ) {
        let counterparts = self.counterparts(req, side);
        let far = round_probabilistic(n as f64 * self.far_share(counterparts), rng).min(n);
        let near = round_probabilistic(n as f64 * self.near_share(), rng).min(n - far);
        let quota = [n - far - near, near, far];
        let mut left = quota;
        for g in groups.iter_mut() {
            let q = &mut left[usize::from(g.tier)];
            g.take = (*q).min(g.size);
            *q -= g.take;
        }
        let mut short: usize = left.iter().sum();
        let mut answer = n - short;
        let far_fill_upto = self.far_fill_upto(req, n, side);
        for g in groups.iter_mut() {
            if short == 0 {
                break;
            }
            let mut extra = (g.size - g.take).min(short);
            if g.tier == TIER_FAR {
                extra = extra.min(far_fill_upto.saturating_sub(answer));
            }
            g.take += extra;
            short -= extra;
            answer += extra;
        }
    }

    /// Up to how many peers an answer of `n` is filled from far PIDs when its own and near
    /// PIDs run short (the far share is taken before, whatever this says):
    /// - a seeder: not at all (unless `seeder_far_fill`);
    /// - a leecher whose own and near PIDs hold `seeded_pid_threshold` seeders or more, with
    ///   `seeded_fill_cap`: up to half of what it asked for (numwant), rounded up;
    /// - any other leecher: the whole answer.
    ///
    /// Why the cap: the first leechers of an ISP, whose PID held only its 2-3 seeds (fewer
    /// than numwant), had the answer filled up with a far peer, usually a remote original seed
    /// with nobody else to serve yet, which then sent them data at its full rate: about half of
    /// what still crossed (results/locality/next-2x.md; the cap halved it on a standard map at
    /// the same median download time). Capped only where the requester's side is seeded, so a
    /// PID without a seeder near it (all seeds in the other ISP, a lone leecher) still gets a
    /// full answer from wherever the peers are; half an answer, not none, so that a big answer
    /// is not cut to a few seeders. The cost: an ISP's very first leechers start with fewer
    /// peers (at 2 seeds per ISP, measured 1.32x random's time for them against 1.02x).
    fn far_fill_upto(&self, req: &Requester, n: usize, side: Side) -> usize {
        let c = &self.config;
        if req.seeder {
            if c.seeder_far_fill {
                n
            } else {
                0
            }
        } else if c.seeded_fill_cap && side.seeders >= c.seeded_pid_threshold as usize {
            req.numwant.div_ceil(2).min(n)
        } else {
            n
        }
    }
}

/// Puts `groups` in preference order (tier, then cost, then a random tie-break) and keeps
/// only the `keep` first of each tier. An answer of `n` peers takes at most `n` of a tier's
/// non-empty groups (its quota and any shortfall it fills are each at most `n`), and at most
/// one group is empty (the requester's own, when it is alone there), so `keep = n + 1` changes
/// no answer: it spares a swarm spread over thousands of PIDs a sort of all of them per
/// announce (a partition by tier, then one selection per tier, both linear).
fn order_groups(groups: &mut Vec<Group>, keep: usize) {
    let cmp = |a: &Group, b: &Group| {
        (a.tier.cmp(&b.tier))
            .then(a.key.total_cmp(&b.key))
            .then(a.tiebreak.cmp(&b.tiebreak))
    };
    if groups.len() <= 3 * keep {
        groups.sort_unstable_by(cmp);
        return;
    }
    // Own | near | far, in one pass (three-way partition).
    let (mut lo, mut mid, mut hi) = (0, 0, groups.len());
    while mid < hi {
        match groups[mid].tier {
            TIER_OWN => {
                groups.swap(lo, mid);
                lo += 1;
                mid += 1;
            }
            TIER_NEAR => mid += 1,
            _ => {
                hi -= 1;
                groups.swap(mid, hi);
            }
        }
    }
    let mut kept = 0;
    for (start, end) in [(0, lo), (lo, hi), (hi, groups.len())] {
        let tier = &mut groups[start..end];
        let k = keep.min(tier.len());
        if k == 0 {
            continue;
        }
        if k < tier.len() {
            tier.select_nth_unstable_by(k - 1, cmp);
        }
        tier[..k].sort_unstable_by(cmp);
        // `kept <= start`: earlier tiers kept no more than they held.
        groups.copy_within(start..start + k, kept);
        kept += k;
    }
    groups.truncate(kept);
}

/// Eligible peers in the requester's own and near PIDs (the requester excluded).
#[derive(Copy, Clone, Debug, Default)]
struct Side {
    seeders: usize,
    leechers: usize,
}

/// Where a PID (or AS location) stands from the requester.
#[derive(Copy, Clone)]
struct Class {
    pid: PidId,
    tier: u8,
    /// Rank inside the tier: the known cost, else infinity (unknown is far, never cheap).
    key: f32,
    /// Cost of one of its peers, for the stats.
    price: f32,
}

/// Tier, rank key and price of a bucket's PID (or AS location), from the requester.
fn classify(snap: &Snapshot, req: &Requester, pid: PidId) -> Class {
    let from = req.pid_index;
    let known = |to: u16| snap.known_cost(from, to);
    if pid == req.bucket_id {
        // An intra-PID cost the map does not give: the cheapest there is.
        let price = known(from).unwrap_or(0.0);
        return Class {
            pid,
            tier: TIER_OWN,
            key: price,
            price,
        };
    }
    let (tier, cost) = match snap.index_of(pid) {
        // The requester has an AS location; these peers share its PID but not (known) its AS.
        Some(to) if to == from => (TIER_FAR, known(to)),
        Some(to) if snap.near(from, to) => (TIER_NEAR, known(to)),
        Some(to) => (TIER_FAR, known(to)),
        // Another AS location of the requester's own (catch-all) PID: priced at the PID level.
        None if req.bucket_id != snap.pid(from).id => (TIER_FAR, known(from)),
        // An AS location seen from an internal PID, or a PID resolved under an older map and
        // not re-resolved yet: unknown.
        None => (TIER_FAR, None),
    };
    match cost {
        Some(c) => Class {
            pid,
            tier,
            key: c,
            price: c,
        },
        None => Class {
            pid,
            tier,
            key: f32::INFINITY,
            price: snap.far_cost(from),
        },
    }
}

impl SelectionStats {
    fn count(&mut self, tier: u8, price: f32) {
        match tier {
            TIER_OWN => self.same_pid += 1,
            TIER_NEAR => self.same_isp += 1,
            _ => self.remote += 1,
        }
        self.cost += f64::from(price);
    }
}

/// `floor(x)` plus one with probability `frac(x)`.
fn round_probabilistic<R: Rng>(x: f64, rng: &mut R) -> usize {
    let whole = x.floor();
    let extra = usize::from(rng.random::<f64>() < x - whole);
    whole as usize + extra
}

/// Positions already drawn from one group: a small open-addressing set (at most half full,
/// cleared per group), so that a collision check costs one or two probes of memory that is
/// already in cache, whatever the group's size.
#[derive(Debug, Default)]
struct Drawn {
    slots: Vec<usize>,
    /// `64 - log2(slots.len())`: the hash keeps the top bits.
    shift: u32,
}

impl Drawn {
    const EMPTY: usize = usize::MAX;

    /// Empties the set, sized for `take` positions.
    fn reset(&mut self, take: usize) {
        let len = (2 * take).next_power_of_two().max(8);
        self.slots.clear();
        self.slots.resize(len, Self::EMPTY);
        self.shift = 64 - len.trailing_zeros();
    }

    /// Adds `x`; false when it was there already.
    fn insert(&mut self, x: usize) -> bool {
        let mask = self.slots.len() - 1;
        // Fibonacci hashing: positions drawn from one range spread over the table.
        let mut i = ((x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
        loop {
            match self.slots[i] {
                Self::EMPTY => {
                    self.slots[i] = x;
                    return true;
                }
                y if y == x => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }
}

/// Peers drawn side by side from one random position when a group is large and the store's
/// adjacent reads pay: a bucket's records lie next to each other in memory, so a run of `RUN`
/// peers costs about one cache miss where `RUN` scattered picks cost `RUN` (the largest cost of
/// an announce to a big swarm).
const RUN: usize = 4;

/// Fewest peers of a group drawn in runs (see [`RUN`]). Below it a bucket's records stay in
/// the CPU's caches, scattered picks cost little more than runs, and uniform pairs are worth
/// it; above it a given pair of neighbours is rare in any answer anyway.
pub const RUN_MIN_GROUP: usize = 4096;

/// Draws `take` distinct peers from a group of `size` eligible peers spread over `members`
/// buckets, skipping the requester's position, and passes each to `out`. Every peer has the
/// same chance; how pairs come together depends on the store (see the module docs):
/// - the whole group, from a random starting point, when `take` covers it;
/// - a uniform random subset (Floyd's algorithm: `take` random numbers, no retries);
/// - in a large group of a store whose adjacent reads pay, one run of [`RUN`] adjacent peers
///   per stratum of the group;
/// - for a store that samples buckets itself, one peer per stratum (each bucket then gives
///   its proportional part, within one, which the store's sample is sized for).
///
/// All positions are drawn before any peer is read, so the reads (cache misses in a big swarm)
/// overlap instead of waiting for each other. Nothing is allocated once `scratch` has grown.
#[allow(clippy::too_many_arguments)]
fn sample_group<B: Buckets, R: Rng>(
    buckets: &B,
    members: &[usize],
    picks: &mut Vec<(usize, usize)>,
    size: usize,
    take: usize,
    skip: Option<(usize, usize)>,
    rng: &mut R,
    drawn: &mut Drawn,
    out: &mut impl FnMut(SocketAddr, usize),
) {
    picks.clear();
    let mut push = |pick: usize| picks.push(locate(buckets, members, pick, skip));
    if take >= size {
        // The whole group (the usual case in small swarms): nothing to draw but where the
        // answer starts, so that the first peers of a group are not always the same.
        let offset = rng.random_range(0..size);
        (offset..size).chain(0..offset).for_each(push);
    } else if !buckets.adjacent_reads_pay() {
        stratified(size, take, 1, rng, &mut push);
    } else if size >= RUN_MIN_GROUP && take >= 2 * RUN && size >= RUN * take.div_ceil(RUN) {
        stratified(size, take, RUN, rng, &mut push);
    } else {
        drawn.reset(take);
        for j in size - take..size {
            let t = rng.random_range(0..=j);
            let pick = if drawn.insert(t) {
                t
            } else {
                drawn.insert(j);
                j
            };
            push(pick);
        }
    }
    for &(bucket, index) in picks.iter() {
        buckets.will_read(bucket, index);
    }
    for &(bucket, index) in picks.iter() {
        out(buckets.peer(bucket, index), bucket);
    }
}

/// `take` distinct positions below `size`, each equally likely: the positions are cut into
/// `take / run` equal strata, rotated by a random offset, and one run of up to `run` adjacent
/// positions is drawn from each.
fn stratified<R: Rng>(
    size: usize,
    take: usize,
    run: usize,
    rng: &mut R,
    push: &mut impl FnMut(usize),
) {
    // Rotate the strata by a random offset so the first stratum is not always first: with it,
    // every position has the same chance however the strata are cut.
    let offset = rng.random_range(0..size);
    let strata = take.div_ceil(run);
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
            push(pick);
        }
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

mod indexed;
#[cfg(test)]
mod indexed_tests;
#[cfg(test)]
mod rule_tests;
#[cfg(test)]
mod tests;
