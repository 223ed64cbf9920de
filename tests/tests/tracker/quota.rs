//! Per-source quotas over real sockets: one source cannot fill a swarm through many ports, nor
//! the store with new torrents; refusals are a failure reason (HTTP) or an error action (UDP),
//! and counted in `/metrics`.

use std::net::{IpAddr, SocketAddr};

use p4p_itracker::Snapshot;
use p4p_tests::udp::Client;
use p4p_tests::*;
use p4p_tracker::types::Event;

const HASH: [u8; 20] = *b"quota-integration-01";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("client thread")
}

/// An HTTP announce from `from` for peer port `port`: its failure reason (`None`: answered).
async fn http_announce(
    server: SocketAddr,
    from: &str,
    hash: [u8; 20],
    port: u16,
) -> Option<String> {
    let from: IpAddr = from.parse().expect("ip");
    let body =
        blocking(move || http_get_from(from, server, &announce_path(&hash, port, 10, ""))).await;
    failure(&decode_dict(&body))
}

fn quota_line<'a>(metrics: &'a str, quota: &str) -> Option<&'a str> {
    let label = format!("p4p_tracker_quota_refusals_total{{quota=\"{quota}\"}}");
    metrics.lines().find(|l| l.starts_with(&label))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_fill_a_swarm_through_many_ports() {
    let mut config = test_config();
    config.swarm.max_peers_per_source = 4;
    config.udp.bind = vec!["127.77.9.1:0".parse().expect("addr")];
    let running = start_tracker(config, Snapshot::single_pid()).await;
    let (http, udp) = (running.http_addrs[0], running.udp_addrs[0]);
    for port in 7001..=7004 {
        assert_eq!(http_announce(http, "127.0.0.2", HASH, port).await, None);
    }
    assert_eq!(
        http_announce(http, "127.0.0.2", HASH, 7005)
            .await
            .as_deref(),
        Some("too many peers from your address in this swarm")
    );
    // A known peer of the source still announces, another address still joins.
    assert_eq!(http_announce(http, "127.0.0.2", HASH, 7002).await, None);
    assert_eq!(http_announce(http, "127.0.0.3", HASH, 7005).await, None);
    // UDP: the same cap, as an error action.
    let refused = blocking(move || {
        for port in 8001..=8004 {
            Client::new("127.0.0.4", udp)
                .announce(HASH, port, 0, Event::Started)
                .expect("within the cap");
        }
        Client::new("127.0.0.4", udp).announce(HASH, 8005, 0, Event::Started)
    })
    .await;
    assert_eq!(
        refused.err().as_deref(),
        Some("too many peers from your address in this swarm")
    );
    let metrics = running.tracker.render_metrics();
    assert_eq!(
        quota_line(&metrics, "peers_per_source"),
        Some("p4p_tracker_quota_refusals_total{quota=\"peers_per_source\"} 2"),
        "{metrics}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_a_budget_of_new_torrents() {
    let mut config = test_config();
    config.swarm.new_torrents_per_source = 3;
    let running = start_tracker(config, Snapshot::single_pid()).await;
    let http = running.http_addrs[0];
    let hash = |t: u8| {
        let mut h = HASH;
        h[19] = t;
        h
    };
    for t in 1..=3 {
        assert_eq!(http_announce(http, "127.0.0.2", hash(t), 6881).await, None);
    }
    assert_eq!(
        http_announce(http, "127.0.0.2", hash(4), 6881)
            .await
            .as_deref(),
        Some("too many new torrents from your address; try again in a minute")
    );
    assert_eq!(
        http_announce(http, "127.0.0.5", hash(4), 6881).await,
        None,
        "another address has a budget of its own"
    );
    assert_eq!(
        http_announce(http, "127.0.0.2", hash(4), 6881).await,
        None,
        "joining a torrent that exists costs nothing"
    );
    let metrics = running.tracker.render_metrics();
    assert!(
        metrics.contains("p4p_tracker_quota_refusals_total{quota=\"new_torrents_per_source\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("p4p_tracker_announces_total{protocol=\"http\",outcome=\"refused\"} 1"),
        "{metrics}"
    );
    running.stop().await;
}
