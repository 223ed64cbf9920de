//! The UDP tracker (BEP 15) over real sockets. Each test server gets its own loopback address:
//! two servers binding port 0 with SO_REUSEPORT on one address could be handed the same port.

use std::net::SocketAddr;

use p4p_itracker::Snapshot;
use p4p_tests::udp::Client;
use p4p_tests::*;
use p4p_tracker::config::Config;
use p4p_tracker::protocol::udp::{
    parse_response, AddressFamily, ConnectionId, ResponseView, ScrapeStats,
};
use p4p_tracker::server::Running;
use p4p_tracker::types::{Event, InfoHash};

const HASH: [u8; 20] = *b"udp-integration-0001";

fn udp_config(server_ip: &str) -> Config {
    let mut c = test_config();
    c.udp.bind = vec![SocketAddr::new(server_ip.parse().expect("ip"), 0)];
    c.udp.workers = 1;
    c
}

async fn start(config: Config) -> (Running, SocketAddr) {
    let running = start_tracker(config, Snapshot::single_pid()).await;
    let addr = running.udp_addrs[0];
    (running, addr)
}

/// Runs blocking client code off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("client thread")
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = list.iter().map(|s| s.parse().expect("addr")).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_then_announce_from_several_addresses() {
    let (running, server) = start(udp_config("127.77.1.1")).await;
    let answer = blocking(move || {
        Client::new("127.0.0.2", server)
            .announce(HASH, 6001, 10, Event::Started)
            .expect("a");
        Client::new("127.0.0.3", server)
            .announce(HASH, 6002, 0, Event::Started)
            .expect("b");
        Client::new("127.0.0.4", server)
            .announce(HASH, 6003, 10, Event::None)
            .expect("c")
    })
    .await;
    assert_eq!(answer.peers, addrs(&["127.0.0.2:6001", "127.0.0.3:6002"]));
    assert_eq!((answer.seeders, answer.leechers), (1, 2));
    assert_eq!(answer.interval, 1800);
    // The worker adds its counts to the metrics before it sends a batch's answers.
    let metrics = running.tracker.render_metrics();
    for line in [
        "p4p_tracker_announces_total{protocol=\"udp\",outcome=\"ok\"} 3",
        "p4p_tracker_udp_connects_total 3",
        "p4p_tracker_returned_peers_total{locality=\"same_pid\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_http_share_the_swarm() {
    let (running, server) = start(udp_config("127.77.2.1")).await;
    let http = running.http_addrs[0];
    blocking(move || {
        Client::new("127.0.0.2", server)
            .announce(HASH, 6001, 10, Event::Started)
            .expect("udp");
    })
    .await;
    let body = blocking(move || {
        http_get_from(
            "127.0.0.3".parse().expect("ip"),
            http,
            &announce_path(&HASH, 6002, 10, ""),
        )
    })
    .await;
    let d = decode_dict(&body);
    let peers = p4p_tracker::protocol::http::decode_compact_v4(&bytes(&d, "peers")).expect("peers");
    assert_eq!(
        peers,
        vec!["127.0.0.2:6001".parse().expect("addr")],
        "UDP peer over HTTP"
    );
    let answer = blocking(move || {
        Client::new("127.0.0.4", server)
            .announce(HASH, 6003, 10, Event::None)
            .expect("udp")
    })
    .await;
    assert_eq!(
        answer.peers,
        addrs(&["127.0.0.2:6001", "127.0.0.3:6002"]),
        "HTTP peer over UDP"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_reports_each_hash_in_order() {
    let (running, server) = start(udp_config("127.77.3.1")).await;
    let stats = blocking(move || {
        Client::new("127.0.0.2", server)
            .announce(HASH, 6001, 0, Event::Started)
            .expect("a");
        let mut c = Client::new("127.0.0.3", server);
        c.announce(HASH, 6002, 10, Event::Started).expect("b");
        c.announce(HASH, 6002, 0, Event::Completed)
            .expect("b completes");
        Client::new("127.0.0.4", server)
            .announce(HASH, 6003, 10, Event::None)
            .expect("c");
        c.scrape(&[InfoHash([5; 20]), InfoHash(HASH)])
            .expect("scrape")
    })
    .await;
    let zero = ScrapeStats::default();
    let known = ScrapeStats {
        seeders: 2,
        completed: 1,
        leechers: 1,
    };
    assert_eq!(stats, vec![zero, known]);
    let refused = blocking(move || {
        let many: Vec<InfoHash> = (0..75u8).map(|i| InfoHash([i; 20])).collect();
        Client::new("127.0.0.2", server).scrape(&many)
    })
    .await;
    assert!(refused.is_err(), "75 hashes are refused: {refused:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_removes_and_seeders_get_no_seeders() {
    let (running, server) = start(udp_config("127.77.4.1")).await;
    let (seeder_view, after_stop) = blocking(move || {
        Client::new("127.0.0.2", server)
            .announce(HASH, 6001, 0, Event::Started)
            .expect("s1");
        Client::new("127.0.0.3", server)
            .announce(HASH, 6002, 10, Event::Started)
            .expect("l1");
        let seeder_view = Client::new("127.0.0.4", server)
            .announce(HASH, 6003, 0, Event::None)
            .expect("s2");
        Client::new("127.0.0.3", server)
            .announce(HASH, 6002, 10, Event::Stopped)
            .expect("stop");
        let after = Client::new("127.0.0.5", server)
            .announce(HASH, 6004, 10, Event::None)
            .expect("l2");
        (seeder_view, after)
    })
    .await;
    assert_eq!(seeder_view.peers, addrs(&["127.0.0.3:6002"]));
    assert_eq!(
        after_stop.peers,
        addrs(&["127.0.0.2:6001", "127.0.0.4:6003"])
    );
    assert_eq!((after_stop.seeders, after_stop.leechers), (2, 1));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_expired_connection_ids_get_a_small_error_never_peers() {
    let (running, server) = start(udp_config("127.77.5.1")).await;
    let tracker = running.tracker.clone();
    blocking(move || {
        Client::new("127.0.0.2", server)
            .announce(HASH, 6001, 10, Event::Started)
            .expect("seed the swarm");
        let mut c = Client::new("127.0.0.3", server);
        // Forged.
        let r = c.announce_request(ConnectionId(0xdead_beef), HASH, 6002, 10, Event::None, 50);
        let err = c.send_announce(&r).expect_err("forged id");
        assert!(
            "unknown or expired connection id".starts_with(&err),
            "{err}"
        );
        // An id issued to another address.
        let other = Client::new("127.0.0.4", server).connect();
        let r = c.announce_request(other, HASH, 6002, 10, Event::None, 50);
        assert!(c.send_announce(&r).is_err(), "another address's id");
        // Valid now, still valid two minutes later, expired after four.
        let id = c.connect();
        let r = c.announce_request(id, HASH, 6002, 10, Event::None, 50);
        assert!(c.send_announce(&r).is_ok());
        tracker.clock.advance(125);
        let r = c.announce_request(id, HASH, 6002, 10, Event::None, 50);
        assert!(
            c.send_announce(&r).is_ok(),
            "accepted for about two minutes"
        );
        tracker.clock.advance(120);
        let r = c.announce_request(id, HASH, 6002, 10, Event::None, 50);
        assert!(c.send_announce(&r).is_err(), "expired");
        // No amplification: the error is never larger than the request.
        let mut req = Vec::new();
        p4p_tracker::protocol::udp::Request::Announce(r).write(&mut req);
        c.send(&req);
        assert!(c.recv().len() <= req.len());
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connection_ids_can_be_dropped_by_configuration() {
    let mut config = udp_config("127.77.6.1");
    config.udp.error_on_bad_connection_id = false;
    let (running, server) = start(config).await;
    blocking(move || {
        let mut c = Client::new("127.0.0.3", server);
        let r = c.announce_request(ConnectionId(1), HASH, 6002, 10, Event::None, 50);
        let mut req = Vec::new();
        p4p_tracker::protocol::udp::Request::Announce(r).write(&mut req);
        c.send(&req);
        // One worker answers in order: if the first answer is the connect's, the announce got none.
        let id = c.connect();
        assert_ne!(id, ConnectionId(1));
    })
    .await;
    running.stop().await;
}

/// Builds a valid 98-byte announce header with connection id `id`.
fn raw_announce(id: ConnectionId) -> Vec<u8> {
    let mut c = Client::new("127.0.0.9", "127.0.0.1:9".parse().expect("addr"));
    let r = c.announce_request(id, HASH, 7000, 10, Event::None, 10);
    let mut buf = Vec::new();
    p4p_tracker::protocol::udp::Request::Announce(r).write(&mut buf);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_packet_class_gets_its_answer() {
    let (running, server) = start(udp_config("127.77.7.1")).await;
    let tracker = running.tracker.clone();
    blocking(move || {
        let mut c = Client::new("127.0.0.2", server);
        // Too short for a transaction id: dropped silently (the next answer is the connect's).
        c.send(&[0u8; 15]);
        c.connect();
        let id = c.connect();
        let error_of = |c: &Client, packet: &[u8]| -> String {
            c.send(packet);
            let answer = c.recv();
            match parse_response(&answer, AddressFamily::V4) {
                Ok(ResponseView::Error(e)) => String::from_utf8_lossy(e.message).to_string(),
                other => panic!("expected an error answer, got {other:?}"),
            }
        };
        // Connect with a wrong protocol id (unauthenticated: answer cut to the request size).
        let mut bad_connect = vec![0u8; 16];
        bad_connect[11] = 0; // action 0
        let msg = error_of(&c, &bad_connect);
        assert!(!msg.is_empty() && 8 + msg.len() <= 16, "{msg}");
        // Unknown action, with a valid connection id: the full message.
        let mut unknown = raw_announce(id)[..16].to_vec();
        unknown[8..12].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(error_of(&c, &unknown), "unknown action");
        // Truncated announce.
        assert_eq!(error_of(&c, &raw_announce(id)[..60]), "announce too short");
        // Bad event.
        let mut bad_event = raw_announce(id);
        bad_event[80..84].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(error_of(&c, &bad_event), "bad event");
        // BEP 41: a URLData option whose length runs past the packet.
        let mut bad_option = raw_announce(id);
        bad_option.extend_from_slice(&[2, 40, b'/', b'a']);
        let msg = error_of(&c, &bad_option);
        assert!(!msg.is_empty(), "malformed option list is an error");
        // BEP 41: well-formed options are accepted (NOP, URLData, end of options, trailing junk).
        let mut good_option = raw_announce(id);
        good_option.extend_from_slice(&[1, 2, 5, b'/', b'a', b'n', b'n', b'?', 0, 0xff, 0xff]);
        c.send(&good_option);
        let answer = c.recv();
        assert!(matches!(
            parse_response(&answer, AddressFamily::V4),
            Ok(ResponseView::Announce(_))
        ));
    })
    .await;
    assert_eq!(
        tracker.totals().leechers,
        1,
        "only the well-formed announce touched the swarm"
    );
    // Counted by kind: the bad announces as announces, the rest as malformed datagrams.
    let metrics = tracker.render_metrics();
    for line in [
        "p4p_tracker_announces_total{protocol=\"udp\",outcome=\"bad_request\"} 3",
        "p4p_tracker_scrapes_total{protocol=\"udp\",outcome=\"bad_request\"} 0",
        "p4p_tracker_udp_malformed_requests_total 3",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numwant_defaults_and_is_capped() {
    let mut config = udp_config("127.77.8.1");
    config.announce.default_numwant = 3;
    config.announce.max_numwant = 5;
    let (running, server) = start(config).await;
    blocking(move || {
        for i in 2..12u8 {
            Client::new(&format!("127.0.1.{i}"), server)
                .announce(HASH, 7000, 10, Event::None)
                .expect("fill");
        }
        let mut c = Client::new("127.0.2.1", server);
        let id = c.connect();
        for (asked, got) in [(-1, 3), (2, 2), (1000, 5), (0, 0)] {
            let r = c.announce_request(id, HASH, 7000, 10, Event::None, asked);
            assert_eq!(
                c.send_announce(&r).expect("answer").peers.len(),
                got,
                "numwant {asked}"
            );
        }
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_field_is_ignored_unless_trusted() {
    for trusted in [false, true] {
        let mut config = udp_config(if trusted { "127.77.9.2" } else { "127.77.9.1" });
        config.udp.trust_ip_field = trusted;
        let (running, server) = start(config).await;
        let peers = blocking(move || {
            let mut c = Client::new("127.0.0.2", server);
            let id = c.connect();
            let mut r = c.announce_request(id, HASH, 6001, 10, Event::None, 10);
            r.ip = u32::from(std::net::Ipv4Addr::new(10, 1, 2, 3));
            c.send_announce(&r).expect("announce");
            Client::new("127.0.0.3", server)
                .announce(HASH, 6002, 10, Event::None)
                .expect("b")
                .peers
        })
        .await;
        let expected = if trusted {
            "10.1.2.3:6001"
        } else {
            "127.0.0.2:6001"
        };
        assert_eq!(peers, addrs(&[expected]), "trusted: {trusted}");
        running.stop().await;
    }
}

#[ignore = "needs ::1 (IPv6 loopback); scripts/test runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_announces_get_18_byte_peers() {
    assert!(
        std::net::UdpSocket::bind("[::1]:0").is_ok(),
        "::1 cannot be bound on this machine: this test needs IPv6 on loopback"
    );
    let mut config = udp_config("127.77.10.1");
    config.udp.bind.push("[::1]:0".parse().expect("addr"));
    let (running, v4_server) = start(config).await;
    let v6_server = running.udp_addrs[1];
    let (v6_view, v4_view) = blocking(move || {
        Client::new("::1", v6_server)
            .announce(HASH, 6001, 10, Event::Started)
            .expect("first v6");
        Client::new("127.0.0.2", v4_server)
            .announce(HASH, 6002, 10, Event::Started)
            .expect("v4");
        let v6 = Client::new("::1", v6_server)
            .announce(HASH, 6003, 10, Event::None)
            .expect("second v6");
        let v4 = Client::new("127.0.0.3", v4_server)
            .announce(HASH, 6004, 10, Event::None)
            .expect("v4 b");
        (v6, v4)
    })
    .await;
    assert_eq!(
        v6_view.peers,
        addrs(&["[::1]:6001"]),
        "IPv6 answers carry IPv6 peers only"
    );
    assert_eq!(v6_view.leechers, 3);
    assert_eq!(v4_view.peers, addrs(&["127.0.0.2:6002"]));
    running.stop().await;
}

/// The worker reads and answers datagrams in batches (`recvmmsg`/`sendmmsg`): bursts longer than
/// a batch, with no answer read until the whole burst is sent, must still get exactly one
/// answer per request, each with its own transaction id, and every announce must be recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_datagrams_get_one_answer_each() {
    let mut config = udp_config("127.77.11.1");
    // One client, 301 ports in one swarm: past the default per-source cap.
    config.swarm.max_peers_per_source = 0;
    let (running, server) = start(config).await;
    let (answered, last) = blocking(move || {
        let mut client = Client::new("127.0.0.30", server);
        let id = client.connect();
        let mut answered = std::collections::HashMap::new();
        for burst in 0..3u16 {
            let mut sent = Vec::new();
            for i in 0..100u16 {
                let port = 10_000 + burst * 100 + i;
                let r =
                    client.announce_request(id, HASH, port, u64::from(i % 2), Event::Started, 0);
                let mut buf = Vec::new();
                p4p_tracker::protocol::udp::Request::Announce(r).write(&mut buf);
                client.send(&buf);
                sent.push(r.transaction_id);
            }
            for _ in 0..sent.len() {
                let answer = client.recv();
                match parse_response(&answer, AddressFamily::V4) {
                    Ok(ResponseView::Announce(a)) => {
                        *answered.entry(a.transaction_id).or_insert(0u32) += 1;
                    }
                    other => panic!("expected an announce answer, got {other:?}"),
                }
            }
            for tid in sent {
                assert_eq!(answered.get(&tid), Some(&1), "answers to {tid:?}");
            }
        }
        let last = client
            .announce(HASH, 9_999, 1, Event::None)
            .expect("announce after the bursts");
        (answered.len(), last)
    })
    .await;
    assert_eq!(answered, 300);
    // Half the burst announced `left = 0`; the last announce is one more leecher.
    assert_eq!((last.seeders, last.leechers), (150, 151));
    running.stop().await;
}
