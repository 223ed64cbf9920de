//! The Redis swarm store against real `redis-server` processes.
//!
//! - Tests on the shared Redis (`P4P_TEST_REDIS_URL`, started by `scripts/test`) each use a key
//!   prefix of their own, so they run in parallel without colliding.
//! - Tests that stop or freeze Redis, and the Redis Cluster test, start their own servers on
//!   free loopback ports.
//! - The HTTP and UDP scenarios of the `tracker` test binary also run on Redis:
//!   `P4P_TEST_STORE=redis cargo test -p p4p-tests --test tracker` (`scripts/test` does).
//!
//! Every test here needs Redis, so each is `#[ignore = "needs ..."]`: a plain `cargo test` reports
//! them as ignored. `scripts/test` runs them (`--include-ignored`); a missing Redis then fails.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p4p_itracker::snapshot::PidSpec;
use p4p_itracker::{Snapshot, SnapshotBuilder};
use p4p_tests::own_redis::OwnRedis;
use p4p_tests::udp::Client;
use p4p_tests::*;
use p4p_tracker::clock::Clock;
use p4p_tracker::config::{Config, PolicyKind};
use p4p_tracker::protocol::http::decode_compact_v4;
use p4p_tracker::server::Running;
use p4p_tracker::service::{Tracker, Workspace};
use p4p_tracker::swarm::Store;
use p4p_tracker::types::Families;
use p4p_tracker::types::{Announce, Event, InfoHash};
use redis::AsyncCommands;

const HASH: [u8; 20] = *b"redis-store-test-001";

/// Starts a tracker (HTTP on loopback) on the Redis at `url` under `prefix`.
async fn node(url: &str, prefix: &str, clock: Clock, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = test_config();
    config.store.url = url.to_string();
    config.store.key_prefix = prefix.to_string();
    tweak(&mut config);
    let tracker = Tracker::from_config(config, clock, Snapshot::single_pid(), true)
        .expect("the Redis store opens");
    p4p_tracker::server::start(Arc::new(tracker))
        .await
        .expect("tracker starts")
}

/// GET an announce path from a source address; the decoded answer.
async fn get(running: &Running, from: &str, path: String) -> Dict {
    let from: IpAddr = from.parse().expect("source address");
    let server = running.http_addrs[0];
    let body = tokio::task::spawn_blocking(move || http_get_from(from, server, &path))
        .await
        .expect("request thread");
    decode_dict(&body)
}

/// Announces `HASH`; panics on a failure reason.
async fn announce(running: &Running, from: &str, port: u16, left: u64, extra: &str) -> Dict {
    let d = get(running, from, announce_path(&HASH, port, left, extra)).await;
    assert_eq!(failure(&d), None, "announce from {from}");
    d
}

fn peers(d: &Dict) -> Vec<SocketAddrV4> {
    let mut v = decode_compact_v4(&bytes(d, "peers")).expect("6-byte entries");
    v.sort();
    v
}

fn v4(list: &[&str]) -> Vec<SocketAddrV4> {
    let mut v: Vec<SocketAddrV4> = list.iter().map(|s| s.parse().expect("addr")).collect();
    v.sort();
    v
}

fn counts(d: &Dict) -> (i64, i64) {
    (int(d, "complete"), int(d, "incomplete"))
}

/// (complete, downloaded, incomplete) of `HASH` in a scrape through `running`.
async fn scrape(running: &Running) -> (i64, i64, i64) {
    let d = get(
        running,
        "127.0.0.1",
        format!("/scrape?info_hash={}", pct(&HASH)),
    )
    .await;
    let Some(serde_bencode::value::Value::Dict(files)) = d.get(&b"files"[..]) else {
        panic!("files dictionary in {d:?}")
    };
    let Some(serde_bencode::value::Value::Dict(e)) = files.get(&HASH.to_vec()) else {
        panic!("an entry for the hash")
    };
    let e: Dict = e.clone().into_iter().collect();
    (
        int(&e, "complete"),
        int(&e, "downloaded"),
        int(&e, "incomplete"),
    )
}

fn hex(h: &[u8; 20]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("a direct connection to the test Redis")
}

#[ignore = "needs a Redis at P4P_TEST_REDIS_URL (scripts/test starts one)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trackers_on_one_redis_share_a_swarm() {
    let url = test_redis_url();
    let prefix = unique_prefix("share");
    let a = node(&url, &prefix, Clock::new(), |_| {}).await;
    let b = node(&url, &prefix, Clock::new(), |_| {}).await;
    announce(&a, "127.0.0.2", 6001, 10, "&event=started").await;
    let d = announce(&b, "127.0.0.3", 6002, 10, "&event=started").await;
    assert_eq!(peers(&d), v4(&["127.0.0.2:6001"]), "B hands out A's peer");
    assert_eq!(counts(&d), (0, 2));
    let d = announce(&a, "127.0.0.4", 6003, 0, "").await;
    assert_eq!(peers(&d), v4(&["127.0.0.2:6001", "127.0.0.3:6002"]));
    announce(&b, "127.0.0.2", 6001, 10, "&event=stopped").await;
    let d = announce(&a, "127.0.0.5", 6004, 10, "").await;
    assert_eq!(peers(&d), v4(&["127.0.0.3:6002", "127.0.0.4:6003"]));
    assert_eq!(scrape(&b).await, (1, 0, 2));
    assert_eq!(scrape(&a).await, (1, 0, 2));
    a.stop().await;
    b.stop().await;
}

#[ignore = "needs a Redis at P4P_TEST_REDIS_URL (scripts/test starts one)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_expire_by_the_time_passed_to_the_script_and_keys_carry_ttls() {
    let url = test_redis_url();
    let prefix = unique_prefix("expiry");
    let clock = Clock::new();
    let a = node(&url, &prefix, clock.clone(), |_| {}).await;
    let b = node(&url, &prefix, clock.clone(), |_| {}).await;
    announce(&a, "127.0.0.2", 6001, 10, "").await;
    clock.advance(3000);
    announce(&b, "127.0.0.3", 6002, 10, "").await;
    clock.advance(1000);
    // 127.0.0.2 expired at 3900 s: counts leave it out before anything trims it.
    assert_eq!(scrape(&a).await, (0, 0, 1));
    let d = announce(&b, "127.0.0.4", 6003, 10, "").await;
    assert_eq!(peers(&d), v4(&["127.0.0.3:6002"]));
    assert_eq!(counts(&d), (0, 2));

    let mut conn = redis_conn(&url).await;
    let base = format!("{prefix}{{{}}}", hex(&HASH));
    let members: Vec<Vec<u8>> = conn
        .zrange(format!("{base}:z:default|4l"), 0, -1)
        .await
        .expect("zrange");
    assert_eq!(members.len(), 2, "the announce trimmed the expired peer");
    for key in [format!("{base}:m"), format!("{base}:z:default|4l")] {
        let ttl: i64 = conn.ttl(&key).await.expect("ttl");
        // peer timeout + one trim interval (sweep_interval, 60 s) + 60 s of slack
        assert!(ttl > 0 && ttl <= 3900 + 60 + 60, "{key} has TTL {ttl}");
    }
    a.stop().await;
    b.stop().await;
}

#[ignore = "needs a Redis at P4P_TEST_REDIS_URL (scripts/test starts one)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_the_store_writes_expires_by_itself() {
    let url = test_redis_url();
    let prefix = unique_prefix("ttl");
    let clock = Clock::new();
    let a = node(&url, &prefix, clock.clone(), |_| {}).await;
    let other = [3u8; 20];
    get(
        &a,
        "127.0.0.9",
        announce_path(&other, 6009, 10, "&event=stopped"),
    )
    .await;
    announce(&a, "127.0.0.2", 6001, 10, "&event=started").await;
    announce(&a, "127.0.0.2", 6001, 0, "&event=completed").await;
    clock.advance(4000);
    announce(&a, "127.0.0.3", 6002, 10, "&event=stopped").await;
    announce(&a, "127.0.0.4", 6003, 10, "").await;
    let mut conn = redis_conn(&url).await;
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.expect("keys");
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = conn.ttl(&key).await.expect("ttl");
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    a.stop().await;
}

#[ignore = "needs a Redis at P4P_TEST_REDIS_URL (scripts/test starts one)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leecher_turning_seeder_moves_sets_and_completes_once() {
    let url = test_redis_url();
    let prefix = unique_prefix("move");
    let a = node(&url, &prefix, Clock::new(), |_| {}).await;
    announce(&a, "127.0.0.2", 6001, 10, "&event=started").await;
    announce(&a, "127.0.0.3", 6002, 10, "").await;
    let d = announce(&a, "127.0.0.2", 6001, 0, "&event=completed").await;
    assert_eq!(counts(&d), (1, 1), "moved, not counted twice");
    assert_eq!(int(&d, "downloaded"), 1);
    announce(&a, "127.0.0.2", 6001, 0, "&event=completed").await;
    assert_eq!(
        scrape(&a).await,
        (1, 1, 1),
        "a seeder completing again is not a download"
    );
    let mut conn = redis_conn(&url).await;
    let base = format!("{prefix}{{{}}}", hex(&HASH));
    let seeders: u64 = conn
        .zcard(format!("{base}:z:default|4s"))
        .await
        .expect("zcard");
    let leechers: u64 = conn
        .zcard(format!("{base}:z:default|4l"))
        .await
        .expect("zcard");
    assert_eq!((seeders, leechers), (1, 1));
    let d = announce(&a, "127.0.0.3", 6002, 10, "").await;
    assert_eq!(peers(&d), v4(&["127.0.0.2:6001"]));
    a.stop().await;
}

#[ignore = "needs a Redis at P4P_TEST_REDIS_URL (scripts/test starts one)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_in_the_set_of_buckets_layout_is_adopted_by_its_next_announce() {
    let url = test_redis_url();
    let prefix = unique_prefix("layout");
    let mut conn = redis_conn(&url).await;
    let base = format!("{prefix}{{{}}}", hex(&HASH));
    // What an earlier version wrote: a set of bucket ids, the sorted sets, a hash without
    // counts. One live leecher (127.0.0.2:6001), one that expired, one seeder.
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let member = |host: u8, port: u16| {
        let mut m = vec![127, 0, 0, host];
        m.extend_from_slice(&port.to_be_bytes());
        m
    };
    let _: () = redis::pipe()
        .sadd(format!("{base}:b"), &["default|4l", "default|4s"])
        .zadd(format!("{base}:z:default|4l"), member(2, 6001), unix + 600)
        .zadd(format!("{base}:z:default|4l"), member(5, 6005), unix - 5)
        .zadd(format!("{base}:z:default|4s"), member(6, 6006), unix + 600)
        .hset(format!("{base}:m"), "d", 3)
        .query_async(&mut conn)
        .await
        .expect("old layout written");

    let a = node(&url, &prefix, Clock::new(), |_| {}).await;
    let d = announce(&a, "127.0.0.3", 6002, 10, "").await;
    assert_eq!(peers(&d), v4(&["127.0.0.2:6001", "127.0.0.6:6006"]));
    assert_eq!(counts(&d), (1, 2), "adopted buckets, expired peer trimmed");
    assert_eq!(int(&d, "downloaded"), 3);
    let set_left: bool = conn.exists(format!("{base}:b")).await.expect("exists");
    assert!(!set_left, "the old set is gone once adopted");
    let counted: Vec<Option<u64>> = conn
        .hget(format!("{base}:m"), &["cdefault|4l", "cdefault|4s", "v"])
        .await
        .expect("hget");
    assert_eq!(counted, vec![Some(2), Some(1), Some(2)]);
    assert_eq!(scrape(&a).await, (1, 3, 2));
    a.stop().await;
}

#[ignore = "needs a Redis at P4P_TEST_REDIS_URL (scripts/test starts one)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_cap_holds_under_concurrent_announces_to_two_nodes() {
    let url = test_redis_url();
    let prefix = unique_prefix("cap");
    let cap = |c: &mut Config| c.swarm.max_peers_per_swarm = 3;
    let a = node(&url, &prefix, Clock::new(), cap).await;
    let b = node(&url, &prefix, Clock::new(), cap).await;
    let servers = [a.http_addrs[0], b.http_addrs[0]];
    let mut jobs = Vec::new();
    for i in 0..10u16 {
        let server = servers[usize::from(i % 2)];
        jobs.push(tokio::task::spawn_blocking(move || {
            let from: IpAddr = format!("127.0.3.{}", i + 1).parse().expect("ip");
            decode_dict(&http_get_from(
                from,
                server,
                &announce_path(&HASH, 7000, 10, ""),
            ))
        }));
    }
    let mut ok = 0;
    for j in jobs {
        match failure(&j.await.expect("request")) {
            None => ok += 1,
            Some(reason) => assert_eq!(reason, "swarm is full"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(scrape(&a).await, (0, 0, 3));
    a.stop().await;
    b.stop().await;
}

/// ISP A: rs-a1 (127.1/16), rs-a2 (127.3/16, cost 2 from a1); ISP B: rs-b1 (127.2/16).
fn three_pids() -> Snapshot {
    let mut b = SnapshotBuilder::new("redis-p4p", 100.0);
    let isp_a = b.add_isp("A");
    let isp_b = b.add_isp("B");
    let mut pid = |name: &str, isp, prefix: &str| {
        b.add_pid(PidSpec {
            name: name.into(),
            isp,
            internal: true,
            prefixes: vec![prefix.parse().expect("prefix")],
        })
    };
    let a1 = pid("rs-a1", isp_a, "127.1.0.0/16");
    let a2 = pid("rs-a2", isp_a, "127.3.0.0/16");
    let b1 = pid("rs-b1", isp_b, "127.2.0.0/16");
    b.set_cost(a1, a2, 2.0);
    b.set_cost(a2, a1, 2.0);
    for p in [a1, a2, b1] {
        b.set_cost(p, p, 0.0);
    }
    b.build().expect("snapshot")
}

/// Announces straight to a tracker (no sockets): the answer's peers.
async fn direct(
    t: &Tracker,
    ws: &mut Workspace,
    peer: &str,
    left: u64,
    numwant: usize,
) -> Vec<SocketAddr> {
    let a = Announce {
        info_hash: InfoHash(HASH),
        peer: peer.parse().expect("peer"),
        event: Event::None,
        left,
        numwant,
    };
    t.announce(&a, Families::Both, ws).await.expect("announce");
    ws.sink.v4.iter().map(|&p| SocketAddr::V4(p)).collect()
}

/// Average share of answers from each PID (by second octet) over `rounds` announces.
async fn shares(t: &Tracker, rounds: usize) -> [f64; 4] {
    let mut ws = Workspace::default();
    let mut by_net = [0usize; 4];
    let mut total = 0;
    for i in 0..rounds {
        let me = format!("127.1.9.{}:7000", i % 200 + 1);
        for p in direct(t, &mut ws, &me, 10, 20).await {
            let IpAddr::V4(ip) = p.ip() else { continue };
            by_net[usize::from(ip.octets()[1]).min(3)] += 1;
            total += 1;
        }
    }
    by_net.map(|n| n as f64 / total.max(1) as f64)
}

#[ignore = "needs a Redis at P4P_TEST_REDIS_URL (scripts/test starts one)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_answers_on_redis_have_the_shares_they_have_on_memory() {
    let url = test_redis_url();
    let mut config = test_config();
    config.selection.policy = PolicyKind::P4p;
    let memory = Tracker::new(config.clone(), Clock::new(), three_pids(), true);
    config.store.url = url;
    config.store.key_prefix = unique_prefix("p4p");
    let redis = Tracker::from_config(config, Clock::new(), three_pids(), true).expect("store");
    for t in [&memory, &redis] {
        let mut ws = Workspace::default();
        for net in 1..=3u8 {
            for host in 1..=40u8 {
                let left = u64::from(host % 4 != 0);
                direct(t, &mut ws, &format!("127.{net}.0.{host}:6881"), left, 0).await;
            }
        }
    }
    let on_memory = shares(&memory, 200).await;
    let on_redis = shares(&redis, 200).await;
    for pid in 1..=3 {
        assert!(
            (on_memory[pid] - on_redis[pid]).abs() < 0.05,
            "PID {pid}: memory {on_memory:?} vs redis {on_redis:?}"
        );
    }
    assert!(on_redis[1] > 0.6, "mostly own-PID peers: {on_redis:?}");
    let Store::Redis(r) = redis.store() else {
        panic!("a Redis store")
    };
    assert_eq!(r.topups(), 0, "the announce's samples sufficed");
}

/// Five PIDs (rs-w1..rs-w5 on 127.21/16..127.25/16) that [`three_pids`] does not know.
fn elsewhere() -> Snapshot {
    let mut b = SnapshotBuilder::new("redis-elsewhere", 100.0);
    let isp = b.add_isp("W");
    for i in 1..=5u8 {
        b.add_pid(PidSpec {
            name: format!("rs-w{i}"),
            isp,
            internal: true,
            prefixes: vec![format!("127.{}.0.0/16", 20 + i).parse().expect("prefix")],
        });
    }
    b.build().expect("snapshot")
}

#[ignore = "needs a Redis at P4P_TEST_REDIS_URL (scripts/test starts one)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_sample_is_topped_up_and_the_answer_stays_full() {
    let url = test_redis_url();
    let mut config = test_config();
    config.store.url = url;
    config.store.key_prefix = unique_prefix("topup");
    // A node with another map fills PIDs the reader does not know: to the reader they are one
    // remote tier of equal cost, sampled by proportional share only, and p4p then takes a whole
    // answer from whichever comes first.
    let writer = Tracker::from_config(config.clone(), Clock::new(), elsewhere(), true).expect("w");
    let reader = Tracker::from_config(config, Clock::new(), three_pids(), true).expect("r");
    let mut ws = Workspace::default();
    for (net, n) in [(21u8, 60u8), (22, 20), (23, 20), (24, 20), (25, 20)] {
        for host in 1..=n {
            direct(&writer, &mut ws, &format!("127.{net}.0.{host}:6881"), 10, 0).await;
        }
    }
    let got = direct(&reader, &mut ws, "127.1.0.1:6881", 10, 50).await;
    assert_eq!(got.len(), 50, "a full answer");
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "no peer twice");
    let Store::Redis(r) = reader.store() else {
        panic!("a Redis store")
    };
    assert_eq!(r.topups(), 1, "one extra round trip filled it");
}

/// Announces over HTTP until one succeeds (at most `tries` times, 100 ms apart); how many
/// attempts failed first.
async fn until_served(running: &Running, from: &str, tries: usize) -> usize {
    for attempt in 0..tries {
        let d = get(running, from, announce_path(&HASH, 6100, 10, "")).await;
        match failure(&d) {
            None => return attempt,
            Some(reason) => assert_eq!(reason, "temporarily unavailable"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not served again after {tries} tries")
}

#[ignore = "needs redis-server installed (scripts/test installs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_temporarily_unavailable_and_the_tracker_comes_back() {
    let mut r = OwnRedis::start("restart", &[]);
    let running = node(&r.url(), "p4p:", Clock::new(), |c| {
        c.store.timeout_ms = 300;
        c.udp.bind = vec!["127.78.1.1:0".parse().expect("addr")];
    })
    .await;
    let udp = running.udp_addrs[0];
    announce(&running, "127.0.0.2", 6001, 10, "").await;
    r.kill();
    let d = get(&running, "127.0.0.3", announce_path(&HASH, 6002, 10, "")).await;
    assert_eq!(failure(&d).as_deref(), Some("temporarily unavailable"));
    let answer = tokio::task::spawn_blocking(move || {
        Client::new("127.0.0.3", udp).announce(HASH, 6002, 10, Event::None)
    })
    .await
    .expect("client");
    assert_eq!(answer, Err("temporarily unavailable".to_string()));
    // The tracker keeps running, and says why it cannot serve.
    let (status, body) = get_status(&running, "/health").await;
    assert_eq!(status, 503);
    assert_eq!(body, b"swarm store: temporarily unavailable\n".to_vec());

    // A fresh server: no data and no scripts loaded (NOSCRIPT is answered by loading them).
    r.restart();
    until_served(&running, "127.0.0.4", 100).await;
    assert_eq!(get_raw(&running, "/health").await, b"ok\n".to_vec());
    let d = announce(&running, "127.0.0.5", 6003, 10, "").await;
    assert_eq!(peers(&d), v4(&["127.0.0.4:6100"]));
    running.stop().await;
}

async fn get_status(running: &Running, path: &'static str) -> (u16, Vec<u8>) {
    let server = running.http_addrs[0];
    tokio::task::spawn_blocking(move || {
        http_get_status("127.0.0.1".parse().expect("ip"), server, path, "")
    })
    .await
    .expect("request thread")
}

async fn get_raw(running: &Running, path: &'static str) -> Vec<u8> {
    let server = running.http_addrs[0];
    tokio::task::spawn_blocking(move || {
        http_get_from("127.0.0.1".parse().expect("ip"), server, path)
    })
    .await
    .expect("request thread")
}

#[ignore = "needs redis-server installed (scripts/test installs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_times_out_and_is_used_again_when_it_answers() {
    let r = OwnRedis::start("freeze", &[]);
    let running = node(&r.url(), "p4p:", Clock::new(), |c| c.store.timeout_ms = 300).await;
    announce(&running, "127.0.0.2", 6001, 10, "").await;
    assert!(r.signal("-STOP"));
    let started = Instant::now();
    let d = get(&running, "127.0.0.3", announce_path(&HASH, 6002, 10, "")).await;
    assert_eq!(failure(&d).as_deref(), Some("temporarily unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );
    assert!(r.signal("-CONT"));
    until_served(&running, "127.0.0.4", 100).await;
    let d = announce(&running, "127.0.0.5", 6003, 10, "").await;
    // The timed-out announce was already on its way: Redis may run it once it wakes. It is then
    // applied whole (the script is atomic), never in part.
    let got = peers(&d);
    let maybe = v4(&["127.0.0.2:6001", "127.0.0.3:6002", "127.0.0.4:6100"]);
    assert!(got.iter().all(|p| maybe.contains(p)), "{got:?}");
    assert!(
        got.contains(&maybe[0]) && got.contains(&maybe[2]),
        "{got:?}"
    );
    running.stop().await;
}

#[ignore = "needs redis-server installed (scripts/test installs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_shares_swarms_across_slots() {
    let (nodes, url) = OwnRedis::start_cluster("cluster");
    let a = node(&url, "p4p:", Clock::new(), |_| {}).await;
    let b = node(&url, "p4p:", Clock::new(), |_| {}).await;
    for i in 0..12u8 {
        let h = [i; 20];
        let first = get(&a, "127.0.0.2", announce_path(&h, 6001, 10, "")).await;
        assert_eq!(failure(&first), None);
        let second = get(&b, "127.0.0.3", announce_path(&h, 6002, 0, "")).await;
        assert_eq!(failure(&second), None, "hash {i}");
        assert_eq!(peers(&second), v4(&["127.0.0.2:6001"]), "hash {i}");
        assert_eq!(counts(&second), (1, 1));
    }
    let mut used = 0;
    for n in &nodes {
        let mut conn = redis_conn(&n.url()).await;
        let keys: u64 = redis::cmd("DBSIZE")
            .query_async(&mut conn)
            .await
            .expect("dbsize");
        used += usize::from(keys > 0);
    }
    assert!(used >= 2, "12 swarms spread over the nodes");
    a.stop().await;
    b.stop().await;
}
