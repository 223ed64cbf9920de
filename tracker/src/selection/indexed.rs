//! The `p4p` policy for an indexed store ([`Buckets::indexed`]): a swarm spread over thousands
//! of PIDs is not listed; selection walks the requester's [`Snapshot::preference`] order and
//! finds each PID's buckets on demand, with the answers of [`Selector::group`].

use std::net::SocketAddr;

use p4p_itracker::{PidId, Snapshot};
use rand::Rng;

use super::{
    classify, eligible, tally, Buckets, Class, Group, Requester, Scratch, SelectionStats, Selector,
    Side, TIER_FAR, TIER_NEAR,
};

impl Selector {
    /// [`Selector::group`] for an indexed store ([`Buckets::indexed`]): the requester's own
    /// PID, then its near PIDs and the far ones, each in [`Snapshot::preference`] order, found
    /// one by one. A tier's walk stops after the first group at which its PIDs hold `n`
    /// eligible peers (no answer takes more from a tier) and the rest of that group's cost
    /// (ties are ordered at random later); so the groups it leaves out are ones
    /// [`super::order_groups`] would drop, and answers are those of [`Selector::group`].
    ///
    /// The counterparts that decide the far share are counted until those found reach the
    /// threshold (or every counterpart of the swarm is found), on the shorter side: over the
    /// near PIDs, or, when the near PIDs outnumber the far ones (an ISP's map: thousands of
    /// its own PIDs, a few outside), as the swarm's counterparts minus those in every far PID
    /// (peers still filed under a PID the snapshot no longer has count as near then, until
    /// the sweep re-files them). The eligible total comes from the store's counts.
    pub(super) fn group_indexed<B: Buckets, R: Rng>(
        &self,
        buckets: &B,
        snap: &Snapshot,
        req: &Requester,
        rng: &mut R,
        scratch: &mut Scratch,
    ) -> (usize, Side) {
        scratch.groups.clear();
        scratch.members.clear();
        // The swarm's eligible peers of each role, the requester left out.
        let (seeders, leechers) = buckets.totals(req.families);
        let mut swarm = Side {
            seeders: if req.seeder { 0 } else { seeders },
            leechers,
        };
        if let Some((b, _)) = req.position.filter(|&(b, _)| eligible(buckets, req, b)) {
            // Where the requester is stored (a leecher may still be stored among seeders).
            let role = if buckets.seeders(b) {
                &mut swarm.seeders
            } else {
                &mut swarm.leechers
            };
            *role = role.saturating_sub(1);
        }
        let total = swarm.seeders + swarm.leechers;
        let n = req.numwant.min(total);
        // Whether what is found on the requester's side (a lower bound) already decides its
        // far share and far fill: each count that matters reached the threshold, or all the
        // swarm holds.
        let enough = self.config.seeded_pid_threshold as usize;
        let reached = |have: usize, all: usize| have >= enough.min(all);
        let decided = |s: &Side| {
            if req.seeder {
                reached(s.leechers, swarm.leechers)
            } else {
                reached(s.seeders, swarm.seeders)
                    && (!self.config.leechers_are_counterparts
                        || reached(s.seeders + s.leechers, total))
            }
        };
        let from = req.pid_index;
        let own = classify(snap, req, req.bucket_id);
        let mut side = self.add_found(buckets, req, &own, rng, scratch);
        let mut found = side.seeders + side.leechers;
        let preference = snap.preference(from);
        let (order, keys, k) = (&preference.order, &preference.keys, preference.near);
        let (near, far) = ((&order[..k], &keys[..k]), (&order[k..], &keys[k..]));
        let count_far = far.0.len() < near.0.len();
        let mut far_side = Side::default();
        let unknown = snap.far_cost(from);
        // The far PIDs the order does not list, one cost class (see `classify`): AS locations
        // (and the requester's own PID when it has an AS location), placed at their cost.
        let unlisted = classify(snap, req, PID_UNLISTED);
        let mut near_entries = near.0.iter().map(Some).zip(near.1);
        let mut far_entries = FarEntries {
            order: far.0,
            keys: far.1,
            next: 0,
            unlisted: Some(&unlisted.key),
        };
        let parts: [(&mut dyn Iterator<Item = Entry>, u8); 2] =
            [(&mut near_entries, TIER_NEAR), (&mut far_entries, TIER_FAR)];
        for (entries, tier) in parts {
            let mut held = 0;
            let mut cut = None;
            for (to, &key) in entries {
                if found >= total {
                    break;
                }
                let counting = !decided(&side) && (tier == TIER_NEAR) != count_far;
                if !counting && cut.is_some_and(|c: f32| c != key) {
                    break;
                }
                let got = match to {
                    Some(&to) => {
                        let c = Class {
                            tier,
                            key,
                            price: if key.is_finite() { key } else { unknown },
                            pid: snap.id(to),
                        };
                        self.add_found(buckets, req, &c, rng, scratch)
                    }
                    None => self.add_unlisted(buckets, snap, req, &unlisted, rng, scratch),
                };
                let size = got.seeders + got.leechers;
                held += size;
                found += size;
                let counts = if tier == TIER_NEAR {
                    &mut side
                } else {
                    &mut far_side
                };
                counts.seeders += got.seeders;
                counts.leechers += got.leechers;
                if cut.is_none() && held >= n {
                    cut = Some(key);
                }
            }
        }
        if count_far && !decided(&side) {
            // The far walk went through every far PID (it was counting).
            side = Side {
                seeders: swarm.seeders.saturating_sub(far_side.seeders),
                leechers: swarm.leechers.saturating_sub(far_side.leechers),
            };
        }
        (total, side)
    }

    /// Finds the buckets of `c`'s PID in an indexed store and adds their eligible ones as a
    /// group; returns its eligible peers by role.
    fn add_found<B: Buckets, R: Rng>(
        &self,
        buckets: &B,
        req: &Requester,
        c: &Class,
        rng: &mut R,
        scratch: &mut Scratch,
    ) -> Side {
        let start = scratch.members.len();
        scratch
            .members
            .extend(buckets.find(c.pid).filter(|&b| eligible(buckets, req, b)));
        let end = scratch.members.len();
        if start == end {
            return Side::default();
        }
        let (size, seeders) = tally(buckets, req, &scratch.members[start..end]);
        scratch.groups.push(Group::new(c, start..end, size, rng));
        Side {
            seeders,
            leechers: size - seeders,
        }
    }

    /// Adds the far groups no preference order lists (one cost class, `c`): every AS location
    /// but the requester's own, one group each, and, for a requester with an AS location, the
    /// peers of its PID outside that AS. Returns their eligible peers by role.
    fn add_unlisted<B: Buckets, R: Rng>(
        &self,
        buckets: &B,
        snap: &Snapshot,
        req: &Requester,
        c: &Class,
        rng: &mut R,
        scratch: &mut Scratch,
    ) -> Side {
        let own_pid = snap.id(req.pid_index);
        let mut side = if req.bucket_id != own_pid {
            self.add_found(buckets, req, &Class { pid: own_pid, ..*c }, rng, scratch)
        } else {
            Side::default()
        };
        let start = scratch.members.len();
        scratch.members.extend(
            buckets
                .find_unlisted()
                .filter(|&b| buckets.pid(b) != req.bucket_id && eligible(buckets, req, b)),
        );
        let mut i = start;
        while i < scratch.members.len() {
            let pid = buckets.pid(scratch.members[i]);
            let j = i + scratch.members[i..]
                .iter()
                .take_while(|&&b| buckets.pid(b) == pid)
                .count();
            let (size, seeders) = tally(buckets, req, &scratch.members[i..j]);
            let group = Class { pid, ..*c };
            scratch.groups.push(Group::new(&group, i..j, size, rng));
            side.seeders += seeders;
            side.leechers += size - seeders;
            i = j;
        }
        side
    }
}

/// Puts groups found in preference order ([`Selector::group_indexed`]: by tier, then cost)
/// in [`order_groups`]' order: each run of equal tier and cost by its random tie-break.
pub(super) fn order_ties(groups: &mut [Group]) {
    debug_assert!(groups.is_sorted_by(|a, b| (a.tier, a.key) <= (b.tier, b.key)));
    for run in groups.chunk_by_mut(|a, b| a.tier == b.tier && a.key == b.key) {
        if run.len() > 1 {
            run.sort_unstable_by_key(|g| g.tiebreak);
        }
    }
}

/// A step of [`Selector::group_indexed`]'s walk: a PID of the preference order (`None`: the
/// far PIDs no order lists) and its rank key.
type Entry<'a> = (Option<&'a u16>, &'a f32);

/// The far part of a preference order with the unlisted PIDs' step (`None`) placed before the
/// first PID that ranks after them, found as the walk goes: the walk reads the keys in order
/// anyway, where a binary search for the place would read a row out of the caches at random.
struct FarEntries<'a> {
    order: &'a [u16],
    keys: &'a [f32],
    next: usize,
    /// The unlisted PIDs' key, until their step is taken.
    unlisted: Option<&'a f32>,
}

impl<'a> Iterator for FarEntries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if let Some(key) = self.unlisted {
            if self.keys.get(self.next).is_none_or(|k| k > key) {
                self.unlisted = None;
                return Some((None, key));
            }
        }
        let step = (Some(self.order.get(self.next)?), self.keys.get(self.next)?);
        self.next += 1;
        Some(step)
    }
}

/// An id in no snapshot (ids are interned from 0 up): what [`classify`] says of it is what
/// it says of every AS location seen from the requester.
const PID_UNLISTED: PidId = PidId(u32::MAX >> 1);

/// What one peer drawn uniformly from the requester's eligible peers costs (the mean cost of
/// a random answer, estimated from one draw: unbiased, and summed over announces by the
/// metrics): up to 8 draws from an indexed store, the first eligible one priced; `None` when
/// none was.
pub(super) fn random_price<B: Buckets, R: Rng>(
    buckets: &B,
    snap: &Snapshot,
    req: &Requester,
    rng: &mut R,
) -> Option<f32> {
    (0..8).find_map(|_| {
        let (pid, seeders, v6) = buckets.any_peer(rng)?;
        let ok = req.families.allows(v6) && !(req.seeder && seeders);
        ok.then(|| classify(snap, req, pid).price)
    })
}

/// The `random` policy for an indexed store ([`Buckets::indexed`]): `numwant` distinct
/// eligible peers, each subset equally likely, drawn one by one from the whole swarm
/// ([`Buckets::draw`]), the requester, repeats and (for a seeder) seeders refused. `None`, with
/// nothing output, when drawing would not pay: the answer wants more than half the eligible
/// peers, they are under a quarter of the swarm's, or the draws ran out (then the swarm is
/// read as a listing). The random answer's cost for the metrics is the answer's own.
pub(super) fn sample_indexed<B: Buckets, R: Rng>(
    buckets: &B,
    snap: &Snapshot,
    req: &Requester,
    rng: &mut R,
    scratch: &mut Scratch,
    out: &mut impl FnMut(SocketAddr),
) -> Option<SelectionStats> {
    let (seeders, leechers) = buckets.totals(req.families);
    let all = seeders + leechers;
    let mut candidates = if req.seeder { leechers } else { all };
    if req.position.is_some_and(|(b, _)| eligible(buckets, req, b)) {
        candidates = candidates.saturating_sub(1);
    }
    let n = req.numwant.min(candidates);
    if n == 0 {
        return Some(SelectionStats::default());
    }
    if 2 * n > candidates || 4 * candidates < all {
        return None;
    }
    // About four times the draws expected (at most 16 n + 64: the candidates are a quarter of
    // the swarm or more, the answer half of them or less).
    let budget = 4 * n * all / candidates + 64;
    scratch.drawn.reset(n + 1);
    if let Some((b, i)) = req.position {
        scratch.drawn.insert(buckets.record_id(b, i));
    }
    scratch.draws.clear();
    for _ in 0..budget {
        if scratch.draws.len() == n {
            break;
        }
        match buckets.draw(req.families, rng) {
            Some(d) if !(req.seeder && d.seeder) && scratch.drawn.insert(d.id) => {
                scratch.draws.push(d)
            }
            _ => {}
        }
    }
    if scratch.draws.len() < n {
        return None;
    }
    let mut stats = SelectionStats::default();
    for d in &scratch.draws {
        let c = classify(snap, req, d.pid);
        stats.count(c.tier, c.price);
        out(d.addr);
    }
    stats.random_cost = stats.cost;
    Some(stats)
}
