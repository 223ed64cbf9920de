//! BEP 15 codec and connection-id costs on the UDP hot path: what one worker pays per packet
//! before it touches a swarm.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use criterion::{criterion_group, criterion_main, Criterion};
use p4p_tracker::protocol::connection_id::ConnectionIdIssuer;
use p4p_tracker::protocol::udp::{
    parse_request, AnnounceRequest, AnnounceResponse, ConnectionId, Peers, Request, TransactionId,
};
use p4p_tracker::types::{Event, InfoHash, PeerId};

/// Peers in a typical answer (clients ask for 30 to 50).
const PEERS: u16 = 30;

fn announce_packet() -> Vec<u8> {
    let request = AnnounceRequest {
        connection_id: ConnectionId(0x0123_4567_89ab_cdef),
        transaction_id: TransactionId(7),
        info_hash: InfoHash([0xab; 20]),
        peer_id: PeerId(*b"-LT2000-abcdefghijkl"),
        downloaded: 1 << 20,
        left: 1 << 30,
        uploaded: 1 << 19,
        event: Event::None,
        ip: 0,
        key: 0x1234,
        numwant: -1,
        port: 6881,
    };
    let mut buf = Vec::new();
    Request::Announce(request).write(&mut buf);
    buf
}

fn bench_parse_announce(c: &mut Criterion) {
    let packet = announce_packet();
    c.bench_function("udp/parse_announce", |b| {
        b.iter(|| parse_request(black_box(&packet)).is_ok())
    });
}

fn bench_encode_announce_response(c: &mut Criterion) {
    let v4: Vec<SocketAddrV4> = (0..PEERS)
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8), 6881 + i))
        .collect();
    let v6: Vec<SocketAddrV6> = (0..PEERS)
        .map(|i| SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i), 6881, 0, 0))
        .collect();
    // One buffer reused for every answer, as a server worker does.
    let mut buf = Vec::with_capacity(2048);
    let mut group = c.benchmark_group("udp/encode_announce_response_30_peers");
    for (name, peers) in [("v4", Peers::V4(&v4)), ("v6", Peers::V6(&v6))] {
        let response = AnnounceResponse {
            transaction_id: TransactionId(7),
            interval: 1800,
            leechers: 100,
            seeders: 50,
            peers,
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                black_box(&response).write(&mut buf);
                buf.len()
            })
        });
    }
    group.finish();
}

fn bench_connection_id(c: &mut Criterion) {
    let issuer = ConnectionIdIssuer::new(*b"bench secret 128");
    let v4 = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 6881));
    let v6 = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7), 6881));
    let now = 1_700_000_000;
    let mut group = c.benchmark_group("udp/connection_id_issue_validate");
    for (name, src) in [("v4", v4), ("v6", v6)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let id = issuer.issue(black_box(src), black_box(now));
                issuer.validate(id, black_box(src), black_box(now + 90))
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_parse_announce,
    bench_encode_announce_response,
    bench_connection_id
);
criterion_main!(benches);
