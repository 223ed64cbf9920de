//! The p4p rule (issue 15, "costs decide"): tiers from stated boundaries only, ranks from the
//! order of costs only, shares kept per swarm.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

use p4p_itracker::alto::{CostMapMessage, NetworkMapMessage, PropMapMessage};
use p4p_itracker::client::IspMap;
use p4p_itracker::snapshot::PidSpec;
use p4p_itracker::SnapshotBuilder;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::tests::{addr, p4p, requester, run, snapshot, swarm, VecBuckets};
use super::*;

/// A map as a plain RFC 7285 server publishes it, read by our ALTO client: PIDs `pids` (name,
/// second octet of its 127.x/16), a `rest` PID holding `0.0.0.0/0`, costs `cost(from, to)`
/// (by position, `rest` last; `None` leaves the pair out), and optionally a PID property map.
fn alto_snapshot(
    pids: &[(&str, u8)],
    cost: impl Fn(usize, usize) -> Option<f64>,
    properties: Option<serde_json::Value>,
) -> Snapshot {
    let mut names: Vec<&str> = pids.iter().map(|p| p.0).collect();
    names.push("rest");
    let mut map = serde_json::Map::new();
    for &(name, net) in pids {
        map.insert(
            name.into(),
            serde_json::json!({ "ipv4": [format!("127.{net}.0.0/16")] }),
        );
    }
    map.insert(
        "rest".into(),
        serde_json::json!({ "ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"] }),
    );
    let vtag = serde_json::json!({ "resource-id": "nm", "tag": "t1" });
    let nm: NetworkMapMessage =
        serde_json::from_value(serde_json::json!({ "meta": { "vtag": vtag }, "network-map": map }))
            .expect("network map");
    let mut rows = serde_json::Map::new();
    for (f, from) in names.iter().enumerate() {
        let mut row = serde_json::Map::new();
        for (t, to) in names.iter().enumerate() {
            if let Some(c) = cost(f, t) {
                row.insert((*to).into(), c.into());
            }
        }
        rows.insert((*from).into(), row.into());
    }
    let cm: CostMapMessage = serde_json::from_value(serde_json::json!({
        "meta": {
            "dependent-vtags": [vtag],
            "cost-type": { "cost-mode": "numerical", "cost-metric": "routingcost" }
        },
        "cost-map": rows,
    }))
    .expect("cost map");
    let pm: Option<PropMapMessage> = properties.map(|p| {
        serde_json::from_value(serde_json::json!({
            "meta": { "dependent-vtags": [vtag] },
            "property-map": p,
        }))
        .expect("property map")
    });
    IspMap::from_messages(&nm, &cm, "e1".into(), pm.as_ref(), "alto-test")
        .expect("valid map")
        .snapshot(100.0)
}

fn second_octet(p: &SocketAddr) -> u8 {
    match p.ip() {
        IpAddr::V4(v) => v.octets()[1],
        IpAddr::V6(_) => 0,
    }
}

/// Mean share of peers from PID 127.`net`/16 over `answers` answers of `numwant`.
fn share_from(
    snap: &Snapshot,
    b: &VecBuckets,
    req: &Requester,
    numwant: usize,
    answers: u32,
    net: u8,
) -> (f64, SelectionStats) {
    let mut rng = SmallRng::seed_from_u64(15);
    let (mut from_net, mut total) = (0usize, 0usize);
    let mut sum = SelectionStats::default();
    for _ in 0..answers {
        let (peers, s) = run(&p4p(), snap, b, req, numwant, &mut rng);
        assert_eq!(peers.len(), numwant);
        total += peers.len();
        from_net += peers.iter().filter(|p| second_octet(p) == net).count();
        sum.same_pid += s.same_pid;
        sum.same_isp += s.same_isp;
        sum.remote += s.remote;
    }
    (from_net as f64 / total as f64, sum)
}

/// The experiment: two ISPs as PIDs of one plain map plus a default PID, no marking.
/// The other ISP gets the far share kept over the swarm (10 % here), not a fifth of every
/// 4-peer answer as when every non-default PID counted as "same ISP".
#[test]
fn a_plain_alto_map_gives_the_other_isp_only_the_far_share() {
    let cost = |f: usize, t: usize| {
        Some(match (f, t) {
            (x, y) if x == y => 0.0,
            (2, _) | (_, 2) => 100.0,
            _ => 20.0,
        })
    };
    let snap = alto_snapshot(&[("isp-a", 1), ("isp-b", 2)], cost, None);
    let (a, b) = (snap.locate(addr(1, 1).ip()), snap.locate(addr(2, 1).ip()));
    assert!(
        snap.pid(a).internal && snap.pid(b).internal,
        "covered by the map"
    );
    assert!(!snap.near(a, b), "but not near: the map states no boundary");
    // One seeder in the requester's PID: below the threshold, so the far share is 10 %.
    let peers = swarm(&[("isp-a", 1, 1, 60), ("isp-b", 2, 1, 60)]);
    let req = requester(&snap, &peers, 1, false);
    let (other_isp, stats) = share_from(&snap, &peers, &req, 4, 20_000, 2);
    assert!(
        (other_isp - 0.10).abs() < 0.01,
        "share from the other ISP {other_isp}"
    );
    assert_eq!(stats.same_isp, 0, "no near tier without a boundary");
    assert_eq!(
        f64::from(stats.remote) / 80_000.0,
        other_isp,
        "far = other ISP"
    );
}

/// A boundary published as an RFC 9240 PID property (`asn`) makes the PIDs of one AS near:
/// they get the near share, the other AS the far share.
#[test]
fn an_asn_pid_property_makes_the_pids_of_one_as_near() {
    let cost = |f: usize, t: usize| Some(if f == t { 0.0 } else { 10.0 * (f + t) as f64 });
    let props = serde_json::json!({
        "nm.pid:as-a1": { "asn": "AS64500" },
        "nm.pid:as-a2": { "ASN": "64500" },
        "nm.pid:as-b1": { "asn": "AS64501" },
    });
    let pids = [("as-a1", 1), ("as-a2", 3), ("as-b1", 2)];
    let snap = alto_snapshot(&pids, cost, Some(props));
    let at = |net| snap.locate(addr(net, 1).ip());
    assert!(snap.near(at(1), at(3)));
    assert!(!snap.near(at(1), at(2)));
    let peers = swarm(&[
        ("as-a1", 1, 1, 100),
        ("as-a2", 3, 0, 100),
        ("as-b1", 2, 1, 100),
    ]);
    let req = requester(&snap, &peers, 1, false);
    let (near, _) = share_from(&snap, &peers, &req, 20, 4_000, 3);
    let (far, stats) = share_from(&snap, &peers, &req, 20, 4_000, 2);
    assert!((near - 0.15).abs() < 0.01, "near share {near}");
    assert!((far - 0.10).abs() < 0.01, "far share {far}");
    assert_eq!(f64::from(stats.same_isp) / 80_000.0, near);
}

/// Mean far peers per answer of `numwant` to `req` (default rule), and the most in one answer.
fn far_per_answer(
    snap: &Snapshot,
    b: &VecBuckets,
    req: &Requester,
    numwant: usize,
    answers: u32,
) -> (f64, u32) {
    far_per_answer_with(&p4p(), snap, b, req, numwant, answers)
}

/// The seeded threshold counts the seeders of the near PIDs too: a PID holding one seeder next
/// to a near PID holding two is well seeded (far share at the floor, 0.02), as the same PID
/// next to an unseeded one is not (0.10). Measured with real clients: PID a2 of the experiment
/// (1 seed beside a1's 2) got the 0.10 share and took 37 % of what still crossed.
#[test]
fn near_seeders_count_toward_the_seeded_threshold() {
    let snap = snapshot();
    let share = |a1_seeds| {
        let b = swarm(&[
            ("sel-a1", 1, a1_seeds, 40),
            ("sel-a2", 3, 1, 40),
            ("sel-b1", 2, 3, 40),
        ]);
        let req = requester(&snap, &b, 3, false);
        far_per_answer(&snap, &b, &req, 20, 4_000).0 / 20.0
    };
    let beside_seeded = share(2);
    let beside_unseeded = share(0);
    assert!(
        (beside_seeded - 0.02).abs() < 0.005,
        "a2 beside a seeded a1: far share {beside_seeded}"
    );
    assert!(
        (beside_unseeded - 0.10).abs() < 0.01,
        "a2 beside an unseeded a1: far share {beside_unseeded}"
    );
    // Without a stated boundary the neighbour is far, and its seeders do not count.
    let cost = |f: usize, t: usize| Some(if f == t { 0.0 } else { 10.0 });
    let plain = alto_snapshot(&[("p-a1", 1), ("p-a2", 3), ("p-b1", 2)], cost, None);
    let b = swarm(&[("p-a1", 1, 2, 40), ("p-a2", 3, 1, 40), ("p-b1", 2, 3, 40)]);
    let req = requester(&plain, &b, 3, false);
    let far = far_per_answer(&plain, &b, &req, 20, 4_000).0 / 20.0;
    assert!((far - 0.10).abs() < 0.01, "plain map: far share {far}");
}

/// A seeder's shortfall is filled from its own and near PIDs only: the far PIDs' leechers reach
/// it through their own answers. Its far share stays, raised when its own and near PIDs hold no
/// leecher at all, so a PID of seeders only is never cut off.
#[test]
fn seeders_take_far_peers_only_as_their_share() {
    let snap = snapshot();
    // One leecher in the seeder's PID, one in the near PID, plenty far.
    let b = swarm(&[
        ("sel-a1", 1, 3, 1),
        ("sel-a2", 3, 0, 1),
        ("sel-b1", 2, 0, 60),
    ]);
    let req = requester(&snap, &b, 1, true);
    let mut rng = SmallRng::seed_from_u64(17);
    for _ in 0..200 {
        let (p, s) = run(&p4p(), &snap, &b, &req, 4, &mut rng);
        assert_eq!(s.same_pid + s.same_isp, 2, "own and near leechers: {p:?}");
        assert!(s.remote <= 1, "no far fill: {p:?}");
        assert_eq!(p.len(), 2 + s.remote as usize);
    }
    // Two leechers on its side: the floor (0.02 x 4 = 0.08 far peers per answer).
    let (far, most) = far_per_answer(&snap, &b, &req, 4, 20_000);
    assert!((far - 0.08).abs() < 0.015, "far per answer {far}");
    assert_eq!(most, 1);
    // Seeders only in ISP A: the far share is raised to 0.10 (0.4 per 4-peer answer).
    let seeds_only = swarm(&[("sel-a1", 1, 3, 0), ("sel-b1", 2, 0, 60)]);
    let req = requester(&snap, &seeds_only, 1, true);
    let (far, most) = far_per_answer(&snap, &seeds_only, &req, 4, 20_000);
    assert!(
        (far - 0.4).abs() < 0.03,
        "seeds-only PID: far per answer {far}"
    );
    assert_eq!(most, 1);
    // A leecher's shortfall is still filled from far PIDs: up to half its numwant, its side
    // being seeded (`a_seeded_leechers_far_fill_stops_at_half_the_answer`), and a full answer
    // without `seeded_fill_cap`.
    let req = Requester {
        seeder: false,
        position: None,
        ..req
    };
    let (p, s) = run(&p4p(), &snap, &seeds_only, &req, 8, &mut rng);
    assert_eq!((p.len(), s.same_pid, s.remote), (4, 3, 1));
    let uncapped = Selector::new(SelectionConfig {
        seeded_fill_cap: false,
        ..SelectionConfig::default()
    });
    let (p, s) = run(&uncapped, &snap, &seeds_only, &req, 8, &mut rng);
    assert_eq!((p.len(), s.same_pid, s.remote), (8, 3, 5));
    // `seeder_far_fill` restores the fill for seeders: full answers.
    let fill = Selector::new(SelectionConfig {
        seeder_far_fill: true,
        ..SelectionConfig::default()
    });
    let req = requester(&snap, &b, 1, true);
    let (p, s) = run(&fill, &snap, &b, &req, 4, &mut rng);
    assert_eq!((p.len(), s.same_pid + s.same_isp), (4, 2));
}

fn with(config: SelectionConfig) -> Selector {
    Selector::new(config)
}

/// `seeded_fill_cap` (the default): an ISP's first leecher, whose PID holds only its 3 seeds
/// (fewer than the 4 it asks for), gets those seeds and no remote peer beyond its far share; a
/// bigger answer is filled from far PIDs up to half its numwant. Without the cap (the rule
/// before) the fourth peer comes from the other ISP. A leecher whose side holds fewer than `seeded_pid_threshold` seeders, or
/// none, is filled in full either way (nobody is cut off).
#[test]
fn a_seeded_leechers_far_fill_stops_at_half_the_answer() {
    let snap = snapshot();
    let cap = p4p();
    let old = with(SelectionConfig {
        seeded_fill_cap: false,
        ..SelectionConfig::default()
    });
    // The first leecher of a1 (not yet in the swarm); b1 has seeds and leechers.
    let first = swarm(&[("sel-a1", 1, 3, 0), ("sel-b1", 2, 3, 5)]);
    let req = requester(&snap, &first, 1, false);
    let mut rng = SmallRng::seed_from_u64(18);
    let (mut far_capped, mut far_old) = (0u32, 0u32);
    for _ in 0..4_000 {
        let (p, s) = run(&cap, &snap, &first, &req, 4, &mut rng);
        assert_eq!(s.same_pid, 3, "all own seeds: {p:?}");
        assert!(s.remote <= 1, "only the far share: {p:?}");
        assert_eq!(p.len(), 3 + s.remote as usize);
        far_capped += s.remote;
        let (p, s) = run(&old, &snap, &first, &req, 4, &mut rng);
        assert_eq!(
            (p.len(), s.same_pid, s.remote),
            (4, 3, 1),
            "old rule fills: {p:?}"
        );
        far_old += s.remote;
    }
    // The far share at the floor: 0.02 x 4 = 0.08 far peers per answer, against 1.
    let mean = f64::from(far_capped) / 4_000.0;
    assert!((mean - 0.08).abs() < 0.02, "far per capped answer {mean}");
    assert_eq!(far_old, 4_000);
    // numwant 10: filled from far up to 5 (3 own + 2 far), whatever the far share drew.
    for _ in 0..200 {
        let (p, s) = run(&cap, &snap, &first, &req, 10, &mut rng);
        assert_eq!((p.len(), s.same_pid, s.remote), (5, 3, 2), "{p:?}");
    }
    // One seeder on the side (below the threshold): filled in full.
    let thin = swarm(&[("sel-a1", 1, 1, 0), ("sel-b1", 2, 3, 5)]);
    let req = requester(&snap, &thin, 1, false);
    let (p, s) = run(&cap, &snap, &thin, &req, 4, &mut rng);
    assert_eq!((p.len(), s.same_pid, s.remote), (4, 1, 3), "{p:?}");
    // Seeders of a near PID count toward "seeded" (a2's 2 beside a1's 1): capped.
    let near = swarm(&[
        ("sel-a1", 1, 1, 0),
        ("sel-a2", 3, 2, 0),
        ("sel-b1", 2, 3, 5),
    ]);
    let req = requester(&snap, &near, 1, false);
    for _ in 0..200 {
        let (p, s) = run(&cap, &snap, &near, &req, 4, &mut rng);
        assert_eq!((s.same_pid, s.same_isp), (1, 2), "{p:?}");
        assert_eq!(p.len(), 3 + s.remote as usize);
    }
    // A PID of leechers only, no seeder on its side (every seed in ISP B): full answers.
    let unseeded = swarm(&[("sel-a1", 1, 0, 2), ("sel-b1", 2, 3, 5)]);
    let req = requester(&snap, &unseeded, 1, false);
    for _ in 0..200 {
        let (p, s) = run(&cap, &snap, &unseeded, &req, 4, &mut rng);
        assert_eq!((p.len(), s.same_pid, s.remote), (4, 1, 3), "{p:?}");
    }
}

/// `leechers_are_counterparts`: a leecher whose side holds leechers but no seeder (all seeds
/// in the other ISP) gets the far share of a seeded side (the floor, 0.02) once it has
/// `seeded_pid_threshold` of them, instead of the raised share (0.10); alone, it keeps the
/// raised share and a full answer from far PIDs.
#[test]
fn leechers_count_as_a_leechers_counterparts_when_asked() {
    let snap = snapshot();
    let lc = with(SelectionConfig {
        leechers_are_counterparts: true,
        ..SelectionConfig::default()
    });
    // ISP A: leechers only; ISP B: the seeds and more leechers.
    let b = swarm(&[("sel-a1", 1, 0, 60), ("sel-b1", 2, 3, 60)]);
    let req = requester(&snap, &b, 1, false);
    let share = |sel: &Selector| {
        let mut rng = SmallRng::seed_from_u64(19);
        let far: u32 = (0..4_000)
            .map(|_| run(sel, &snap, &b, &req, 20, &mut rng).1.remote)
            .sum();
        f64::from(far) / 80_000.0
    };
    let (old, counted) = (share(&p4p()), share(&lc));
    assert!((old - 0.10).abs() < 0.01, "seeders only: far share {old}");
    assert!(
        (counted - 0.02).abs() < 0.005,
        "leechers counted: far share {counted}"
    );
    // One other leecher on the side: below the threshold, the remote share.
    let two = swarm(&[("sel-a1", 1, 0, 2), ("sel-b1", 2, 3, 60)]);
    let req = requester(&snap, &two, 1, false);
    let mut rng = SmallRng::seed_from_u64(20);
    let far: u32 = (0..4_000)
        .map(|_| {
            let (p, s) = run(&lc, &snap, &two, &req, 4, &mut rng);
            assert_eq!((p.len(), s.same_pid), (4, 1), "full answer: {p:?}");
            s.remote
        })
        .sum();
    assert_eq!(far, 3 * 4_000, "the shortfall is filled from far PIDs");
    // A seeder's counterparts are leechers whatever the option.
    let seeds = swarm(&[("sel-a1", 1, 3, 0), ("sel-b1", 2, 0, 60)]);
    let req = requester(&snap, &seeds, 1, true);
    let (far, _) = far_per_answer_with(&lc, &snap, &seeds, &req, 4, 20_000);
    assert!(
        (far - 0.4).abs() < 0.03,
        "seeds-only PID: far per answer {far}"
    );
}

/// Mean far peers per answer of `numwant` to `req` under `sel`, and the most in one answer.
fn far_per_answer_with(
    sel: &Selector,
    snap: &Snapshot,
    b: &VecBuckets,
    req: &Requester,
    numwant: usize,
    answers: u32,
) -> (f64, u32) {
    let mut rng = SmallRng::seed_from_u64(16);
    let (mut far, mut most) = (0u32, 0u32);
    for _ in 0..answers {
        let s = run(sel, snap, b, req, numwant, &mut rng).1;
        far += s.remote;
        most = most.max(s.remote);
    }
    (f64::from(far) / f64::from(answers), most)
}

/// Builder snapshot of PIDs `r0..r4` (127.1..5/16) with no boundary, costs from `cost`.
fn ranked(cost: impl Fn(usize, usize) -> Option<f64>, default_cost: f64) -> Snapshot {
    let mut b = SnapshotBuilder::new("ranked", default_cost);
    let ids: Vec<usize> = (0..5)
        .map(|i| {
            b.add_pid(PidSpec {
                name: format!("r{i}"),
                isp: 0,
                internal: false,
                prefixes: vec![format!("127.{}.0.0/16", i + 1).parse().expect("prefix")],
            })
        })
        .collect();
    for &f in &ids {
        for &t in &ids {
            if let Some(c) = cost(f, t) {
                b.set_cost(f, t, c);
            }
        }
    }
    b.build().expect("snapshot")
}

type CostFn = dyn Fn(usize, usize) -> Option<f64>;

/// The same answers (same seed) whatever the costs' mode, scale or intra-PID value, as long as
/// their order is the same: numerical, ordinal ranks, scaled by 10^6, intra-PID 0 or not.
#[test]
fn only_the_order_of_costs_matters() {
    let numerical: [f64; 5] = [0.0, 3.0, 7.0, 7.5, 40.0];
    let variants: [Box<CostFn>; 4] = [
        Box::new(move |f, t| Some((numerical[t] - numerical[f]).abs())),
        Box::new(move |f, t| Some(1.0 + (t as f64 - f as f64).abs())),
        Box::new(move |f, t| Some(1e6 * (numerical[t] - numerical[f]).abs())),
        Box::new(move |f, t| Some(5.0 + (numerical[t] - numerical[f]).abs())),
    ];
    let peers = swarm(&[
        ("r0", 1, 0, 3),
        ("r1", 2, 1, 3),
        ("r2", 3, 0, 3),
        ("r3", 4, 2, 3),
        ("r4", 5, 0, 20),
    ]);
    let mut answers = Vec::new();
    for cost in &variants {
        let snap = ranked(cost, 1.0);
        let req = requester(&snap, &peers, 1, false);
        let mut rng = SmallRng::seed_from_u64(3);
        let all: Vec<Vec<SocketAddr>> = [1, 4, 9, 15, 40]
            .iter()
            .flat_map(|&n| (0..50).map(move |_| n))
            .map(|n| run(&p4p(), &snap, &peers, &req, n, &mut rng).0)
            .collect();
        answers.push(all);
    }
    for (i, a) in answers.iter().enumerate().skip(1) {
        assert_eq!(a, &answers[0], "variant {i} answers differently");
    }
    // And the order is cost order: a 9-peer answer to r0 (2 other peers there) takes its 7
    // others from r1 (4) and r2 (3), never from r3 or r4.
    let snap = ranked(&variants[0], 1.0);
    let req = requester(&snap, &peers, 1, false);
    let mut rng = SmallRng::seed_from_u64(4);
    for _ in 0..100 {
        let (p, _) = run(&p4p(), &snap, &peers, &req, 9, &mut rng);
        assert!(p.iter().all(|p| second_octet(p) <= 3), "{p:?}");
    }
}

/// PIDs at equal cost share what their rank gets, in random order.
#[test]
fn equal_costs_share_their_rank() {
    let snap = ranked(|f, t| Some(if f == t { 0.0 } else { 10.0 }), 100.0);
    let peers = swarm(&[("r0", 1, 0, 50), ("r1", 2, 0, 50), ("r2", 3, 0, 50)]);
    let req = requester(&snap, &peers, 1, false);
    let (r1, _) = share_from(&snap, &peers, &req, 10, 5_000, 2);
    let (r2, _) = share_from(&snap, &peers, &req, 10, 5_000, 3);
    // Far share 10 % (no seeder anywhere), split evenly.
    assert!((r1 + r2 - 0.10).abs() < 0.01, "{r1} + {r2}");
    assert!((r1 - r2).abs() < 0.015, "{r1} vs {r2}");
}

/// A cost the map leaves out is far, never cheap: it ranks after every known cost even when
/// the default cost is lower, and is priced at the row's dearest known cost.
#[test]
fn missing_costs_rank_last_and_are_priced_far() {
    // r0 -> r1 known (50), r0 -> r2 missing; the default cost (1) is cheaper than 50.
    let snap = ranked(
        |f, t| match (f, t) {
            (0, 1) => Some(50.0),
            (0, 2) => None,
            (x, y) if x == y => Some(0.0),
            _ => Some(30.0),
        },
        1.0,
    );
    let (r0, r1, r2) = (0u16, 1u16, 2u16);
    assert!(snap.cost_known(r0, r1) && !snap.cost_known(r0, r2));
    assert_eq!(snap.cost(r0, r2), 1.0, "the matrix keeps the default");
    assert_eq!(snap.far_cost(r0), 50.0);
    let peers = swarm(&[("r1", 2, 0, 5), ("r2", 3, 0, 5)]);
    let req = Requester {
        pid_index: r0,
        bucket_id: snap.pid(r0).id,
        seeder: false,
        families: Families::Both,
        position: None,
        numwant: 0,
    };
    let mut rng = SmallRng::seed_from_u64(8);
    for _ in 0..50 {
        let (p, s) = run(&p4p(), &snap, &peers, &req, 5, &mut rng);
        assert!(p.iter().all(|p| second_octet(p) == 2), "known first: {p:?}");
        assert_eq!(s.cost, 250.0);
        let (p, s) = run(&p4p(), &snap, &peers, &req, 8, &mut rng);
        assert_eq!(p.len(), 8);
        assert_eq!(
            s.cost, 400.0,
            "unknown priced at the row's dearest known cost"
        );
    }
}

/// A map of one PID (or none loaded): everything is the own PID, answers are full.
#[test]
fn a_map_with_one_pid_answers_from_it() {
    let snap = Snapshot::single_pid();
    let peers = swarm(&[("default", 1, 3, 30)]);
    let req = requester(&snap, &peers, 1, false);
    let mut rng = SmallRng::seed_from_u64(9);
    for n in [1, 4, 32, 50] {
        let (p, s) = run(&p4p(), &snap, &peers, &req, n, &mut rng);
        assert_eq!(p.len(), n.min(32));
        assert_eq!(s.same_pid as usize, p.len());
    }
}

/// 1,000 PIDs, no boundary, costs 0..20 (ties) with every 7th left out, seen from PID 0.
fn thousand() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let mut b = SnapshotBuilder::new("thousand", 100.0);
        for i in 0..1000u32 {
            b.add_pid(PidSpec {
                name: format!("k-{i}"),
                isp: 0,
                internal: true,
                prefixes: vec![format!("10.{}.{}.0/24", i / 256, i % 256)
                    .parse()
                    .expect("prefix")],
            });
            b.set_boundary(i as usize, None);
        }
        let mut rng = SmallRng::seed_from_u64(1000);
        for t in 0..1000usize {
            if t % 7 != 3 {
                b.set_cost(0, t, f64::from(rng.random_range(0u32..20)));
            }
        }
        b.build().expect("1,000 PIDs")
    })
}

fn key(snap: &Snapshot, to: u16) -> f32 {
    if snap.cost_known(0, to) {
        snap.cost(0, to)
    } else {
        f32::INFINITY
    }
}

proptest! {
    /// Over 1,000 PIDs: full valid answers, no near tier, and cost order: a PID gives peers
    /// only when every strictly cheaper PID gave all it had.
    #[test]
    fn a_thousand_pids_fill_in_cost_order(
        own in 0usize..10,
        others in proptest::collection::vec((1u16..1000, 1usize..8), 1..30),
        numwant in 1usize..60,
        seed: u64,
    ) {
        let snap = thousand();
        let mut v = VecBuckets::default();
        let mut pid_of: HashMap<SocketAddr, u16> = HashMap::new();
        let mut sizes: HashMap<u16, usize> = HashMap::new();
        let groups = std::iter::once((0u16, own)).chain(others.iter().copied());
        for (pid, n) in groups {
            if n == 0 || sizes.contains_key(&pid) {
                continue;
            }
            let list: Vec<SocketAddr> = (0..n)
                .map(|h| SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(10, (pid / 256) as u8, (pid % 256) as u8, h as u8 + 1), 6881)))
                .collect();
            for a in &list {
                pid_of.insert(*a, pid);
            }
            sizes.insert(pid, n);
            v.0.push((snap.pid(pid).id, false, list));
        }
        let req = Requester {
            pid_index: 0,
            bucket_id: snap.pid(0).id,
            seeder: false,
            families: Families::Both,
            position: None,
            numwant,
        };
        let mut out = Vec::new();
        let s = p4p().select(&v, snap, &req, &mut SmallRng::seed_from_u64(seed),
            &mut Scratch::default(), &mut |a| out.push(a));
        let total: usize = sizes.values().sum();
        prop_assert_eq!(out.len(), numwant.min(total));
        prop_assert_eq!(s.same_isp, 0);
        let mut taken: HashMap<u16, usize> = HashMap::new();
        for a in &out {
            *taken.entry(pid_of[a]).or_default() += 1;
        }
        prop_assert_eq!(s.same_pid as usize, taken.get(&0).copied().unwrap_or(0));
        for (&x, &nx) in &sizes {
            for &y in sizes.keys() {
                if x == 0 || y == 0 || key(snap, x) >= key(snap, y) {
                    continue;
                }
                if taken.get(&y).copied().unwrap_or(0) > 0 {
                    prop_assert_eq!(taken.get(&x).copied().unwrap_or(0), nx,
                        "PID {} (key {}) gave peers while cheaper {} (key {}) had more",
                        y, key(snap, y), x, key(snap, x));
                }
            }
        }
    }
}

/// Groups of random tiers, keys (with ties), sizes and tie-breaks; as in a swarm, one group at
/// most is empty (the requester's, when it is alone in it).
fn random_groups(rng: &mut SmallRng, count: usize) -> Vec<Group> {
    let empty = rng.random_range(0..count * 2);
    (0..count)
        .map(|i| Group {
            tier: rng.random_range(0..3u8),
            key: f32::from(rng.random_range(0..20u8)),
            price: 1.0,
            tiebreak: rng.random(),
            start: i,
            end: i + 1,
            size: if i == empty {
                0
            } else {
                rng.random_range(1..4usize)
            },
            take: 0,
        })
        .collect()
}

pub(super) fn fully_sorted(groups: &[Group]) -> Vec<Group> {
    let mut all = groups.to_vec();
    all.sort_unstable_by(|a, b| {
        (a.tier.cmp(&b.tier))
            .then(a.key.total_cmp(&b.key))
            .then(a.tiebreak.cmp(&b.tiebreak))
    });
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Ordering only the groups an answer can use (the first `n + 1` of each tier) hands out
    /// exactly what ordering all of them does: the same groups, the same numbers of peers.
    #[test]
    fn answers_use_only_the_first_groups_of_each_tier(
        seed in any::<u64>(),
        count in 1usize..400,
        n in 1usize..60,
        seeder in any::<bool>(),
        seeders in 0usize..4,
        leechers in 0usize..4,
        cap in any::<bool>(),
    ) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let groups = random_groups(&mut rng, count);
        let total: usize = groups.iter().map(|g| g.size).sum();
        let n = n.min(total);
        prop_assume!(n > 0);
        let selector = Selector::new(SelectionConfig {
            seeded_fill_cap: cap,
            leechers_are_counterparts: cap,
            ..SelectionConfig::default()
        });
        let side = Side { seeders, leechers };
        let req = Requester {
            pid_index: 0,
            bucket_id: PidId(0),
            seeder,
            families: Families::Both,
            position: None,
            numwant: n,
        };
        let mut all = fully_sorted(&groups);
        let mut kept = groups.clone();
        order_groups(&mut kept, n + 1);
        let quota_seed = rng.random();
        selector.quotas(&req, n, side, &mut SmallRng::seed_from_u64(quota_seed), &mut all);
        selector.quotas(&req, n, side, &mut SmallRng::seed_from_u64(quota_seed), &mut kept);
        let taken = |gs: &[Group]| -> Vec<(usize, usize)> {
            gs.iter().filter(|g| g.take > 0).map(|g| (g.start, g.take)).collect()
        };
        prop_assert_eq!(taken(&all), taken(&kept));
        // And what is kept starts with each tier's head, in order (all of it when few).
        for tier in 0..3u8 {
            let head: Vec<usize> = all.iter().filter(|g| g.tier == tier).take(n + 1).map(|g| g.start).collect();
            let got: Vec<usize> = kept.iter().filter(|g| g.tier == tier).map(|g| g.start).collect();
            prop_assert_eq!(&head[..], &got[..head.len().min(got.len())]);
            prop_assert!(got.len() >= head.len());
        }
    }
}

/// A leecher whose own record still sits in a seeders bucket (announced `left > 0` after it
/// was stored as a seeder) is not counted among its side's seeders, and counting its side
/// does not underflow when its PID holds no leecher.
#[test]
fn a_requester_is_never_its_own_counterpart() {
    let snap = snapshot();
    let b = swarm(&[("sel-a1", 1, 2, 0), ("sel-b1", 2, 3, 5)]);
    // Leecher at the first seeder's position: one other seeder on its side (below the
    // threshold of 2), so no cap and a full answer: 1 own + 3 far.
    let req = Requester {
        seeder: false,
        ..requester(&snap, &b, 1, true)
    };
    assert_eq!(req.position, Some((0, 0)));
    let mut rng = SmallRng::seed_from_u64(21);
    for _ in 0..100 {
        let (p, s) = run(&p4p(), &snap, &b, &req, 4, &mut rng);
        assert_eq!((p.len(), s.same_pid, s.remote), (4, 1, 3), "{p:?}");
    }
}
