use std::collections::HashMap;

use p4p_itracker::snapshot::PidSpec;
use p4p_itracker::SnapshotBuilder;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use p4p_itracker::{PidId, Snapshot};

use super::candidates::*;
use super::wire::*;
use super::*;
use crate::config::SelectionConfig;
use crate::selection::{Buckets, Scratch, Selector};
use crate::types::Families;

#[test]
fn bucket_ids_round_trip_and_garbage_is_refused() {
    for (v6, seeders) in [(false, false), (false, true), (true, false), (true, true)] {
        let id = bucket_id("isp-a:pop_1@x.y", v6, seeders);
        assert_eq!(
            parse_bucket_id(id.as_bytes()),
            Some(("isp-a:pop_1@x.y", v6, seeders))
        );
    }
    for bad in [&b""[..], b"|4", b"pid|5s", b"pid|4x", b"pid4s", b"\xff|4s"] {
        assert_eq!(parse_bucket_id(bad), None, "{bad:?}");
    }
}

#[test]
fn members_are_the_compact_form_and_round_trip() {
    let v4: SocketAddr = "10.1.2.3:6881".parse().expect("addr");
    let v6: SocketAddr = "[2001:db8::1]:51413".parse().expect("addr");
    assert_eq!(member(v4), vec![10, 1, 2, 3, 0x1a, 0xe1]);
    assert_eq!(member(v6).len(), 18);
    assert_eq!(parse_member(&member(v4)), Some(v4));
    assert_eq!(parse_member(&member(v6)), Some(v6));
    assert_eq!(parse_member(b"short"), None);
}

fn store(prefix: &str) -> RedisStore {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let config = StoreConfig {
        url: "redis://127.0.0.1:1/".into(),
        key_prefix: prefix.into(),
        ..StoreConfig::default()
    };
    RedisStore::new(&config, SwarmConfig::default(), Clock::new()).expect("store")
}

#[test]
fn credentials_never_reach_the_logs() {
    assert_eq!(
        redact("redis://:secret@10.0.0.1:6379/"),
        "redis://***@10.0.0.1:6379/"
    );
    assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    assert_eq!(
        redact("redis+cluster://u:p@10.0.0.1:1,10.0.0.2:2/"),
        "redis+cluster://***@10.0.0.1:1,10.0.0.2:2/"
    );
    // An @ after the authority is not a credential separator.
    assert_eq!(
        redact("redis://10.0.0.1:6379/0?client=a@b"),
        "redis://10.0.0.1:6379/0?client=a@b"
    );
}

#[test]
fn every_key_of_a_swarm_shares_one_hex_hash_tag() {
    // Raw info hash bytes may hold '{' and '}': the tag must be hex.
    let mut h = [0u8; 20];
    h[0] = b'{';
    h[1] = b'}';
    h[19] = 0xff;
    let k = store("t:").keys(&InfoHash(h));
    let tag = format!("{{7b7d{}ff}}", "0".repeat(34));
    assert_eq!(k.buckets, format!("t:{tag}:b"));
    assert_eq!(k.meta, format!("t:{tag}:m"));
    assert_eq!(k.zprefix, format!("t:{tag}:z:"));
}

#[test]
fn building_a_store_needs_a_runtime_and_a_valid_url() {
    let config = StoreConfig {
        url: "redis://127.0.0.1:1/".into(),
        ..StoreConfig::default()
    };
    assert!(matches!(
        RedisStore::new(&config, SwarmConfig::default(), Clock::new()),
        Err(OpenError::NoRuntime)
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let bad = StoreConfig {
        url: "http://nope/".into(),
        ..StoreConfig::default()
    };
    assert!(matches!(
        RedisStore::new(&bad, SwarmConfig::default(), Clock::new()),
        Err(OpenError::Url { .. })
    ));
    let cluster = StoreConfig {
        url: "redis+cluster://127.0.0.1:1,127.0.0.1:2/".into(),
        ..StoreConfig::default()
    };
    RedisStore::new(&cluster, SwarmConfig::default(), Clock::new()).expect("cluster URL");
}

#[test]
fn an_unreachable_redis_is_unavailable_within_the_timeout() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Port 1 on loopback: connection refused at once.
        let config = StoreConfig {
            url: "redis://127.0.0.1:1/".into(),
            timeout_ms: 300,
            ..StoreConfig::default()
        };
        let s = RedisStore::new(&config, SwarmConfig::default(), Clock::new()).expect("store");
        let started = std::time::Instant::now();
        assert_eq!(s.check().await, Err(StoreError::Unavailable));
        assert_eq!(
            s.scrape(&InfoHash([1; 20])).await,
            Err(StoreError::Unavailable)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(s.failures() >= 2);
    });
}

fn bulk(b: &[u8]) -> Value {
    Value::BulkString(b.to_vec())
}

#[test]
fn announce_replies_parse_into_candidates() {
    let a: SocketAddr = "10.0.0.1:1".parse().expect("addr");
    let reply = Value::Array(vec![
        Value::Int(3),
        Value::Int(2),
        bulk(b"pop-a|4l"),
        Value::Int(2),
        Value::Array(vec![bulk(&member(a))]),
        bulk(b"pop-b|4s"),
        Value::Int(5),
        Value::Array(vec![]),
    ]);
    let c = Candidates::parse(reply, "pop-a|4l").expect("parses");
    assert_eq!(c.requester, Some(0));
    assert_eq!(c.buckets.len(), 2);
    assert_eq!(c.buckets[0].sample, vec![a]);
    assert_eq!(c.buckets[1].pid, PidId::intern("pop-b"));
    assert!(c.buckets[1].seeders);
    assert_eq!(
        c.stats(),
        SwarmStats {
            complete: 5,
            incomplete: 2,
            downloaded: 3
        }
    );
    assert_eq!(
        Candidates::parse(Value::Array(vec![Value::Int(-1)]), "x|4l").err(),
        Some(StoreError::SwarmFull)
    );
    assert_eq!(
        Candidates::parse(Value::Nil, "x|4l").err(),
        Some(StoreError::Unavailable)
    );
}

/// ISP A: rs-a1 (127.1/16), rs-a2 (127.3/16, cost 2), rs-a3 (127.5/16, cost 5); ISP B: rs-b1
/// (127.2/16).
fn snapshot() -> Snapshot {
    let mut b = SnapshotBuilder::new("redis-sel", 100.0);
    let a = b.add_isp("A");
    let isp_b = b.add_isp("B");
    let mut pid = |name: &str, isp, prefix: &str| {
        b.add_pid(PidSpec {
            name: name.into(),
            isp,
            internal: true,
            prefixes: vec![prefix.parse().expect("prefix")],
        })
    };
    let a1 = pid("rs-a1", a, "127.1.0.0/16");
    let a2 = pid("rs-a2", a, "127.3.0.0/16");
    let a3 = pid("rs-a3", a, "127.5.0.0/16");
    let b1 = pid("rs-b1", isp_b, "127.2.0.0/16");
    for (x, y, c) in [(a1, a2, 2.0), (a2, a1, 2.0), (a1, a3, 5.0), (a3, a1, 5.0)] {
        b.set_cost(x, y, c);
    }
    for p in [a1, a2, a3, b1] {
        b.set_cost(p, p, 0.0);
    }
    b.build().expect("snapshot")
}

fn peer(net: u8, host: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(127, net, (host >> 8) as u8, host as u8),
        6881,
    ))
}

/// The same swarm twice: fully materialised (what the memory store offers selection) and as
/// the announce script returns it (true counts, samples that leave the requester out).
struct Both {
    full: Vec<(PidId, bool, Vec<SocketAddr>)>,
    cands: Candidates,
    slot: (usize, usize),
}

impl Buckets for Vec<(PidId, bool, Vec<SocketAddr>)> {
    fn count(&self) -> usize {
        self.len()
    }
    fn pid(&self, b: usize) -> PidId {
        self[b].0
    }
    fn seeders(&self, b: usize) -> bool {
        self[b].1
    }
    fn v6(&self, _b: usize) -> bool {
        false
    }
    fn size(&self, b: usize) -> usize {
        self[b].2.len()
    }
    fn peer(&self, b: usize, i: usize) -> SocketAddr {
        self[b].2[i]
    }
}

/// (pid name, net, seeders, leechers) per PID; the requester is leecher 0 of the first PID.
fn both(layout: &[(&str, u8, u16, u16)], sample_cap: usize) -> Both {
    let mut full = Vec::new();
    let mut cands = Candidates::default();
    for &(name, net, seeds, leechers) in layout {
        for (seeders, n, base) in [(true, seeds, 1000), (false, leechers, 0)] {
            if n == 0 {
                continue;
            }
            let peers: Vec<SocketAddr> = (0..n).map(|i| peer(net, base + i)).collect();
            let requester = !seeders && net == layout[0].1;
            let sample: Vec<SocketAddr> = peers
                .iter()
                .copied()
                .skip(usize::from(requester))
                .take(sample_cap)
                .collect();
            cands.buckets.push(Candidate {
                id: bucket_id(name, false, seeders).into_bytes(),
                pid: PidId::intern(name),
                seeders,
                v6: false,
                count: peers.len(),
                sample,
                next: Cell::new(0),
            });
            full.push((PidId::intern(name), seeders, peers));
        }
    }
    let slot = (full.iter().position(|b| !b.1).expect("a leecher bucket"), 0);
    cands.requester = Some(slot.0);
    Both { full, cands, slot }
}

fn answer(sink: &PeerSink) -> Vec<SocketAddr> {
    sink.v4.iter().map(|&a| SocketAddr::V4(a)).collect()
}

/// Per bucket, how many peers an answer took.
fn takes(peers: &[SocketAddr], layout: &Both) -> HashMap<usize, usize> {
    let mut t = HashMap::new();
    for p in peers {
        let b = layout
            .full
            .iter()
            .position(|b| b.2.contains(p))
            .expect("a swarm peer");
        *t.entry(b).or_default() += 1;
    }
    t
}

#[test]
fn selection_over_candidates_takes_what_it_takes_over_the_full_swarm() {
    let snap = snapshot();
    let layout = [
        ("rs-a1", 1, 3, 40),
        ("rs-a2", 3, 2, 30),
        ("rs-a3", 5, 0, 25),
        ("rs-b1", 2, 5, 60),
    ];
    for policy in [PolicyKind::P4p, PolicyKind::Random] {
        let selector = Selector::new(SelectionConfig {
            policy,
            ..SelectionConfig::default()
        });
        for seed in 0..50u64 {
            let b = both(&layout, usize::MAX);
            let req = |slot| Requester {
                pid_index: snap.locate(peer(1, 0).ip()),
                bucket_id: snap.pid(snap.locate(peer(1, 0).ip())).id,
                seeder: false,
                families: Families::Both,
                position: Some(slot),
                numwant: 30,
            };
            let mut scratch = Scratch::default();
            let mut reference = Vec::new();
            let want = selector.select(
                &b.full,
                &snap,
                &req(b.slot),
                &mut SmallRng::seed_from_u64(seed),
                &mut scratch,
                &mut |p| reference.push(p),
            );
            let mut sink = PeerSink::default();
            let (got, short) = select(
                &b.cands,
                &snap,
                &selector,
                &req((b.slot.0, 0)),
                &mut SmallRng::seed_from_u64(seed),
                &mut scratch,
                &mut sink,
            );
            assert!(short.is_empty());
            assert_eq!(got, want, "{policy:?} seed {seed}");
            let answer = answer(&sink);
            assert_eq!(takes(&answer, &b), takes(&reference, &b));
            assert!(!answer.contains(&peer(1, 0)), "never the requester");
            let mut unique = answer.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), answer.len(), "no peer twice");
        }
    }
}

#[test]
fn a_short_sample_is_reported_with_what_each_bucket_needed() {
    let snap = snapshot();
    let selector = Selector::new(SelectionConfig::default());
    // The requester's PID has 40 peers but the sample carries 3: p4p wants about 22 of them.
    let b = both(&[("rs-a1", 1, 0, 40), ("rs-b1", 2, 0, 40)], 3);
    let req = Requester {
        pid_index: snap.locate(peer(1, 0).ip()),
        bucket_id: snap.pid(snap.locate(peer(1, 0).ip())).id,
        seeder: false,
        families: Families::Both,
        position: Some((0, 0)),
        numwant: 30,
    };
    let mut sink = PeerSink::default();
    let (_, short) = select(
        &b.cands,
        &snap,
        &selector,
        &req,
        &mut SmallRng::seed_from_u64(7),
        &mut Scratch::default(),
        &mut sink,
    );
    assert!(short.iter().any(|&(bucket, need)| bucket == 0 && need > 3));
    assert!(
        !answer(&sink).contains(&MISSING),
        "placeholders never reach the answer"
    );
    assert!(sink.v4.len() < 30);
}

#[test]
fn preferred_pids_are_the_cheapest_of_the_isp_then_outside() {
    let snap = snapshot();
    let from = snap.locate(peer(1, 0).ip());
    let names: Vec<&str> = preferred_pids(&snap, from)
        .map(|p| &*snap.pid(p).name)
        .collect();
    assert_eq!(&names[..2], &["rs-a2", "rs-a3"]);
    assert!(names.contains(&"rs-b1"));
    assert!(!names.contains(&"rs-a1"), "the own PID is implied");
}
