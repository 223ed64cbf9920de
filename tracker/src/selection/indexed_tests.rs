//! The indexed walk ([`super::Selector::group_indexed`]) against the full listing
//! ([`super::Selector::group`]): the same groups an answer can take, the same totals, the same
//! far share and far fill.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

use p4p_itracker::snapshot::PidSpec;
use p4p_itracker::SnapshotBuilder;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::rule_tests::fully_sorted;
use super::tests::VecBuckets;
use super::*;

/// [`VecBuckets`] read as an indexed store ([`Buckets::indexed`]): a PID's buckets are found on
/// demand (they must lie side by side, as [`swarm`] and the tests here lay them out).
struct Indexed<'a>(&'a VecBuckets);

impl Buckets for Indexed<'_> {
    fn count(&self) -> usize {
        self.0.count()
    }
    fn pid(&self, b: usize) -> PidId {
        self.0.pid(b)
    }
    fn seeders(&self, b: usize) -> bool {
        self.0.seeders(b)
    }
    fn v6(&self, b: usize) -> bool {
        self.0.v6(b)
    }
    fn size(&self, b: usize) -> usize {
        self.0.size(b)
    }
    fn peer(&self, b: usize, i: usize) -> SocketAddr {
        self.0.peer(b, i)
    }
    fn adjacent_reads_pay(&self) -> bool {
        true
    }
    fn indexed(&self) -> bool {
        true
    }
    fn totals(&self, families: Families) -> (usize, usize) {
        let v = &self.0 .0;
        let count = |s: bool| -> usize {
            (0..v.len())
                .filter(|&b| v[b].1 == s && families.allows(self.0.v6(b)))
                .map(|b| v[b].2.len())
                .sum()
        };
        (count(true), count(false))
    }
    fn find(&self, pid: PidId) -> Range<usize> {
        let v = &self.0 .0;
        let start = v.iter().position(|b| b.0 == pid).unwrap_or(v.len());
        let end = start + v[start..].iter().take_while(|b| b.0 == pid).count();
        assert!(
            v[end..].iter().all(|b| b.0 != pid),
            "buckets of a PID side by side"
        );
        start..end
    }
    fn find_unlisted(&self) -> Range<usize> {
        let v = &self.0 .0;
        let start = v
            .iter()
            .position(|b| b.0.is_as_location())
            .unwrap_or(v.len());
        assert!(
            v[start..].iter().all(|b| b.0.is_as_location()),
            "AS locations last"
        );
        assert!(v[start..].is_sorted_by_key(|b| b.0), "by id");
        start..v.len()
    }
    fn any_peer(&self, rng: &mut dyn rand::RngCore) -> Option<(PidId, bool, bool)> {
        let v = &self.0 .0;
        let total: usize = v.iter().map(|b| b.2.len()).sum();
        let mut pick = rng.random_range(0..total.max(1));
        v.iter().enumerate().find_map(|(b, (pid, s, peers))| {
            if pick < peers.len() {
                return Some((*pid, *s, self.0.v6(b)));
            }
            pick -= peers.len();
            None
        })
    }
}

/// 1,000 PIDs of which the first `near` share one ISP's boundary, the others none; costs
/// 0..20 from PID 0 (ties), every 7th left out.
fn boundary_map(near: usize) -> Snapshot {
    let mut b = SnapshotBuilder::new("boundary", 100.0);
    let isp = b.add_isp("own");
    for i in 0..1000usize {
        b.add_pid(PidSpec {
            name: format!("bm-{near}-{i}"),
            isp,
            internal: i < near,
            prefixes: vec![format!("10.{}.{}.0/24", i / 256, i % 256)
                .parse()
                .expect("prefix")],
        });
        if i >= near {
            b.set_boundary(i, None);
        }
    }
    let mut rng = SmallRng::seed_from_u64(near as u64);
    for t in 0..1000usize {
        if t % 7 != 3 {
            b.set_cost(0, t, f64::from(rng.random_range(0u32..20)));
        }
    }
    b.build().expect("1,000 PIDs")
}

fn boundary_maps() -> &'static [Snapshot; 3] {
    static MAPS: OnceLock<[Snapshot; 3]> = OnceLock::new();
    // No boundary (a plain map), most PIDs near (an ISP's map), a few near.
    MAPS.get_or_init(|| [boundary_map(0), boundary_map(950), boundary_map(60)])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// An indexed store's walk ([`Selector::group_indexed`]) finds every group an answer can
    /// take: per tier, all groups up to and including the cost at which the tier holds `n`
    /// peers (ties included) as the full listing ranks them, with the same sizes; the same
    /// eligible total; and the same far share and far fill from what it counted.
    #[test]
    fn the_indexed_walk_finds_every_group_an_answer_can_take(
        map in 0usize..3,
        own in 0usize..6,
        others in proptest::collection::vec(
            (prop_oneof![1u16..1000, 940u16..1000], prop_oneof![Just(0usize), 0usize..4], 0usize..6),
            1..80,
        ),
        numwant in prop_oneof![1usize..8, 8usize..60],
        seeder: bool,
        seed: u64,
        ases in proptest::collection::vec((1u32..40, 0usize..3, 0usize..4), 0..8),
        located: bool,
        leechers_are_counterparts: bool,
        stale_role: bool,
    ) {
        let snap = &boundary_maps()[map];
        let mut v = VecBuckets::default();
        let mut seen = HashSet::new();
        let layout = std::iter::once((0u16, 1usize, own)).chain(others.iter().copied());
        for (pid, seeds, leechers) in layout {
            if !seen.insert(pid) {
                continue;
            }
            let host = |h: usize| SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(10, (pid / 256) as u8, (pid % 256) as u8, h as u8 + 1), 6881));
            for (s, count, base) in [(false, leechers, 0), (true, seeds, 100)] {
                if count > 0 {
                    v.0.push((snap.pid(pid).id, s, (0..count).map(|h| host(base + h)).collect()));
                }
            }
        }
        // AS locations (as with an ASN database), after every PID, by id; with `located` the
        // requester is in PID 0 but has an AS location of its own (AS 0, one peer of each role).
        let mut ases: Vec<(PidId, usize, usize)> = ases.iter()
            .map(|&(asn, s, l)| (PidId::of_asn(asn), s, l))
            .chain(located.then_some((PidId::of_asn(0), 1, 1)))
            .collect();
        ases.sort_by_key(|a| a.0);
        ases.dedup_by_key(|a| a.0);
        for (i, &(id, seeds, leechers)) in ases.iter().enumerate() {
            let host = |h: usize| SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(11, i as u8, (h / 250) as u8, (h % 250) as u8 + 1), 6881));
            for (s, count, base) in [(false, leechers, 0), (true, seeds, 100)] {
                if count > 0 {
                    v.0.push((id, s, (0..count).map(|h| host(base + h)).collect()));
                }
            }
        }
        let bucket_id = if located { PidId::of_asn(0) } else { snap.pid(0).id };
        // The requester: its bucket's first seeder or leecher, when there is one; with
        // `stale_role`, a leecher still stored among its PID's seeders.
        let stored_as_seeder = seeder || stale_role;
        let position = v.0.iter().position(|b| b.0 == bucket_id && b.1 == stored_as_seeder).map(|b| (b, 0));
        let req = Requester {
            pid_index: 0,
            bucket_id,
            seeder,
            families: Families::Both,
            position,
            numwant,
        };
        let sel = Selector::new(SelectionConfig {
            leechers_are_counterparts,
            ..SelectionConfig::default()
        });
        let mut rng = SmallRng::seed_from_u64(seed);
        let (mut listed, mut walked) = (Scratch::default(), Scratch::default());
        let (total, side) = sel.group(&v, snap, &req, &mut rng, &mut listed);
        let (w_total, w_side) = sel.group_indexed(&Indexed(&v), snap, &req, &mut rng, &mut walked);
        prop_assert_eq!(total, w_total);
        let n = numwant.min(total);
        prop_assert_eq!(
            sel.far_share(sel.counterparts(&req, side)),
            sel.far_share(sel.counterparts(&req, w_side)),
            "side {:?} listed, {:?} walked", side, w_side);
        prop_assert_eq!(sel.far_fill_upto(&req, n, side), sel.far_fill_upto(&req, n, w_side),
            "side {:?} listed, {:?} walked", side, w_side);
        let groups = |s: &Scratch| -> HashMap<PidId, (u8, u32, usize)> {
            s.groups.iter().map(|g| {
                (v.pid(s.members[g.start]), (g.tier, g.key.to_bits(), g.size))
            }).collect()
        };
        let (all, found) = (groups(&listed), groups(&walked));
        for (pid, g) in &found {
            prop_assert_eq!(Some(g), all.get(pid), "a walked group is a listed one");
        }
        let ranked = fully_sorted(&listed.groups);
        for tier in [TIER_OWN, TIER_NEAR, TIER_FAR] {
            let mut held = 0;
            let mut cut = None;
            for g in ranked.iter().filter(|g| g.tier == tier && g.size > 0) {
                if cut.is_some_and(|c: f32| c != g.key) {
                    break;
                }
                let pid = v.pid(listed.members[g.start]);
                prop_assert!(found.contains_key(&pid), "tier {} group {:?} (key {}) not walked", tier, pid, g.key);
                held += g.size;
                if cut.is_none() && held >= n {
                    cut = Some(g.key);
                }
            }
        }
        // And whole answers from the walk are valid (their size is the quotas', shared).
        let mut out = Vec::new();
        sel.select(&Indexed(&v), snap, &req, &mut rng, &mut Scratch::default(), &mut |a| out.push(a));
        let unique: HashSet<SocketAddr> = out.iter().copied().collect();
        prop_assert_eq!(unique.len(), out.len());
        let me = position.map(|(b, i)| v.peer(b, i));
        prop_assert!(me.is_none_or(|m| !unique.contains(&m)));
        prop_assert!(out.len() <= n);
    }
}
