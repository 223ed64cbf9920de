use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::request::*;
use super::response::*;
use super::*;
use crate::types::{Event, InfoHash, PeerId, SwarmStats};
use proptest::prelude::*;

const TX: TransactionId = TransactionId(0xdead_beef);
const CONN: ConnectionId = ConnectionId(0x1122_3344_5566_7788);

fn announce() -> AnnounceRequest {
    AnnounceRequest {
        connection_id: CONN,
        transaction_id: TX,
        info_hash: InfoHash([7; 20]),
        peer_id: PeerId(*b"-XX0001-abcdefghijkl"),
        downloaded: 1,
        left: 2,
        uploaded: 3,
        event: Event::Started,
        ip: 0,
        key: 42,
        numwant: -1,
        port: 6881,
    }
}

fn announce_bytes_with_options(options: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    announce().write(&mut buf);
    buf.extend_from_slice(options);
    buf
}

fn scrape_bytes(count: usize) -> Vec<u8> {
    let hashes: Vec<InfoHash> = (0..count).map(|i| InfoHash([i as u8; 20])).collect();
    let mut buf = Vec::new();
    ScrapeRequest {
        connection_id: CONN,
        transaction_id: TX,
        info_hashes: InfoHashes::from_slice(&hashes),
    }
    .write(&mut buf);
    buf
}

fn sendable(kind: RequestKind, err: &'static str) -> RequestParseError {
    RequestParseError::Sendable {
        connection_id: CONN,
        transaction_id: TX,
        kind,
        err,
    }
}

#[test]
fn packets_shorter_than_a_transaction_id_are_unsendable() {
    let mut full = Vec::new();
    ConnectRequest { transaction_id: TX }.write(&mut full);
    for len in 0..MIN_REQUEST_LEN {
        assert_eq!(
            parse_request(&full[..len]),
            Err(RequestParseError::Unsendable)
        );
    }
    assert!(parse_request(&full).is_ok());
}

#[test]
fn connect_ignores_trailing_bytes() {
    let mut buf = Vec::new();
    ConnectRequest { transaction_id: TX }.write(&mut buf);
    buf.extend_from_slice(b"future extension");
    assert_eq!(
        parse_request(&buf),
        Ok(Request::Connect(ConnectRequest { transaction_id: TX }))
    );
}

#[test]
fn connect_with_wrong_protocol_id_is_answered_with_an_error() {
    let mut buf = Vec::new();
    put_u64(&mut buf, PROTOCOL_ID + 1);
    put_u32(&mut buf, ACTION_CONNECT);
    put_u32(&mut buf, TX.0);
    let err = parse_request(&buf).unwrap_err();
    assert_eq!(
        err,
        RequestParseError::Sendable {
            connection_id: ConnectionId(PROTOCOL_ID + 1),
            transaction_id: TX,
            kind: RequestKind::Connect,
            err: "bad protocol id",
        }
    );
}

#[test]
fn unknown_action_is_answered_with_an_error() {
    let mut buf = Vec::new();
    put_u64(&mut buf, CONN.0);
    put_u32(&mut buf, 7);
    put_u32(&mut buf, TX.0);
    assert_eq!(
        parse_request(&buf),
        Err(sendable(RequestKind::Unknown, "unknown action"))
    );
}

#[test]
fn announce_parses_every_field() {
    let bytes = announce_bytes_with_options(&[]);
    assert_eq!(bytes.len(), ANNOUNCE_REQUEST_LEN);
    assert_eq!(parse_request(&bytes), Ok(Request::Announce(announce())));
}

#[test]
fn truncated_announce_is_answered_with_an_error() {
    let bytes = announce_bytes_with_options(&[]);
    for len in MIN_REQUEST_LEN..ANNOUNCE_REQUEST_LEN {
        assert_eq!(
            parse_request(&bytes[..len]),
            Err(sendable(RequestKind::Announce, "announce too short"))
        );
    }
}

#[test]
fn announce_with_bad_event_is_answered_with_an_error() {
    let mut bytes = announce_bytes_with_options(&[]);
    bytes[80..84].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(
        parse_request(&bytes),
        Err(sendable(RequestKind::Announce, "bad event"))
    );
}

#[test]
fn negative_numwant_means_tracker_default() {
    for numwant in [-1, -2, i32::MIN] {
        let request = AnnounceRequest {
            numwant,
            ..announce()
        };
        assert_eq!(request.peers_wanted(), None);
    }
    let request = AnnounceRequest {
        numwant: 50,
        ..announce()
    };
    assert_eq!(request.peers_wanted(), Some(50));
}

#[test]
fn left_of_minus_one_reads_as_a_leecher() {
    let mut bytes = announce_bytes_with_options(&[]);
    bytes[64..72].copy_from_slice(&(-1i64).to_be_bytes());
    let Ok(Request::Announce(request)) = parse_request(&bytes) else {
        panic!("announce expected");
    };
    assert_eq!(request.left, u64::MAX);
}

#[test]
fn claimed_ip_is_exposed_but_zero_means_none() {
    assert_eq!(announce().claimed_ip(), None);
    let request = AnnounceRequest {
        ip: 0x0a00_0001,
        ..announce()
    };
    assert_eq!(request.claimed_ip(), Some(Ipv4Addr::new(10, 0, 0, 1)));
}

#[test]
fn bep41_url_data_nop_and_end_of_options_are_accepted() {
    let valid: [&[u8]; 5] = [
        &[2, 9, b'/', b'a', b'n', b'n', b'o', b'u', b'n', b'c', b'e'],
        &[1, 1, 2, 0, 0],
        &[2, 3, b'/', b'?', b'k', 2, 2, b'=', b'1'],
        &[0, 0xff, 0xff], // anything after EndOfOptions is not options
        &[0x7f, 2, 0, 0], // a newer option type is skipped by its length
    ];
    for options in valid {
        let bytes = announce_bytes_with_options(options);
        assert_eq!(
            parse_request(&bytes),
            Ok(Request::Announce(announce())),
            "{options:?}"
        );
    }
}

#[test]
fn malformed_bep41_options_are_answered_with_an_error() {
    let cases: [(&[u8], &str); 4] = [
        (&[2], "BEP 41 option without length"),
        (&[1, 2], "BEP 41 option without length"),
        (&[2, 10, b'a', b'b'], "BEP 41 option data truncated"),
        (&[9, 1], "BEP 41 option data truncated"),
    ];
    for (options, err) in cases {
        let bytes = announce_bytes_with_options(options);
        assert_eq!(
            parse_request(&bytes),
            Err(sendable(RequestKind::Announce, err)),
            "{options:?}"
        );
    }
}

#[test]
fn scrape_without_info_hash_is_refused() {
    assert_eq!(
        parse_request(&scrape_bytes(0)),
        Err(sendable(RequestKind::Scrape, "scrape without info hash"))
    );
}

#[test]
fn scrape_of_74_info_hashes_parses_in_order() {
    let bytes = scrape_bytes(74);
    let Ok(Request::Scrape(scrape)) = parse_request(&bytes) else {
        panic!("scrape expected");
    };
    assert_eq!(scrape.info_hashes.len(), 74);
    assert!(scrape
        .info_hashes
        .iter()
        .enumerate()
        .all(|(i, hash)| hash == InfoHash([i as u8; 20])));
    assert_eq!(scrape.info_hashes.get(74), None);
    assert_eq!(scrape.info_hashes.get(usize::MAX), None);
}

#[test]
fn scrape_of_75_info_hashes_is_refused() {
    assert_eq!(
        parse_request(&scrape_bytes(75)),
        Err(sendable(
            RequestKind::Scrape,
            "scrape of over 74 info hashes"
        ))
    );
}

#[test]
fn a_scrape_cut_short_by_the_read_buffer_is_too_many_not_partial() {
    // 120 hashes sent, the server's 2048-byte buffer keeps 2032 bytes of them.
    let bytes = scrape_bytes(120);
    assert_eq!(
        parse_request(&bytes[..2048]),
        Err(sendable(
            RequestKind::Scrape,
            "scrape of over 74 info hashes"
        ))
    );
}

#[test]
fn announce_with_port_0_is_refused() {
    let mut bytes = Vec::new();
    AnnounceRequest {
        port: 0,
        ..announce()
    }
    .write(&mut bytes);
    assert_eq!(
        parse_request(&bytes),
        Err(sendable(RequestKind::Announce, "invalid port"))
    );
}

#[test]
fn scrape_with_partial_info_hash_is_refused() {
    let mut bytes = scrape_bytes(2);
    bytes.pop();
    assert_eq!(
        parse_request(&bytes),
        Err(sendable(
            RequestKind::Scrape,
            "scrape with partial info hash"
        ))
    );
}

#[test]
fn parse_error_knows_its_error_answer() {
    assert_eq!(RequestParseError::Unsendable.error_response(), None);
    assert_eq!(
        sendable(RequestKind::Announce, "bad event").error_response(),
        Some(ErrorResponse {
            transaction_id: TX,
            message: "bad event"
        })
    );
}

#[test]
fn ipv4_answers_carry_6_byte_peers_and_ipv6_answers_18_byte_peers() {
    let v4 = [SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5)];
    let v6 = [SocketAddrV6::new(Ipv6Addr::LOCALHOST, 6, 0, 0)];
    let mut buf = Vec::new();
    let mut response = AnnounceResponse {
        transaction_id: TX,
        interval: 1800,
        leechers: 1,
        seeders: 2,
        peers: Peers::V4(&v4),
    };
    response.write(&mut buf);
    assert_eq!(buf.len(), 20 + 6);
    assert_eq!(&buf[20..], &[1, 2, 3, 4, 0, 5]);
    buf.clear();
    response.peers = Peers::V6(&v6);
    response.write(&mut buf);
    assert_eq!(buf.len(), 20 + 18);
}

#[test]
fn family_follows_the_source_and_mapped_ipv6_counts_as_ipv4() {
    let v4: SocketAddr = "1.2.3.4:5".parse().expect("addr");
    let mapped: SocketAddr = "[::ffff:1.2.3.4]:5".parse().expect("addr");
    let v6: SocketAddr = "[2001:db8::1]:5".parse().expect("addr");
    assert_eq!(AddressFamily::of(v4), AddressFamily::V4);
    assert_eq!(AddressFamily::of(mapped), AddressFamily::V4);
    assert_eq!(AddressFamily::of(v6), AddressFamily::V6);
}

#[test]
fn streamed_answers_equal_slice_answers() {
    let peers = [SocketAddrV4::new(Ipv4Addr::new(9, 8, 7, 6), 5432); 3];
    let (mut whole, mut streamed) = (Vec::new(), Vec::new());
    AnnounceResponse {
        transaction_id: TX,
        interval: 60,
        leechers: 3,
        seeders: 4,
        peers: Peers::V4(&peers),
    }
    .write(&mut whole);
    write_announce_header(&mut streamed, TX, 60, 3, 4);
    peers.iter().for_each(|&p| push_peer_v4(&mut streamed, p));
    assert_eq!(whole, streamed);
}

#[test]
fn scrape_stats_map_from_swarm_stats() {
    let stats = SwarmStats {
        complete: 1,
        incomplete: 2,
        downloaded: 3,
    };
    assert_eq!(
        ScrapeStats::from(stats),
        ScrapeStats {
            seeders: 1,
            completed: 3,
            leechers: 2
        }
    );
}

#[test]
fn error_answer_is_cut_to_the_request_length() {
    let error = ErrorResponse {
        transaction_id: TX,
        message: "connection id expired",
    };
    let mut buf = Vec::new();
    assert_eq!(error.write_truncated(&mut buf, 16), 16);
    assert_eq!(buf.len(), 16);
    assert_eq!(&buf[8..], b"connecti");
    buf.clear();
    assert_eq!(error.write_truncated(&mut buf, ERROR_HEADER_LEN - 1), 0);
    assert!(buf.is_empty());
}

#[test]
fn error_answer_is_cut_on_a_character_boundary() {
    let error = ErrorResponse {
        transaction_id: TX,
        message: "é!",
    };
    let mut buf = Vec::new();
    assert_eq!(
        error.write_truncated(&mut buf, ERROR_HEADER_LEN + 1),
        ERROR_HEADER_LEN
    );
    assert_eq!(buf.len(), ERROR_HEADER_LEN);
}

#[test]
fn responses_with_partial_entries_are_rejected() {
    let mut buf = Vec::new();
    write_announce_header(&mut buf, TX, 1, 2, 3);
    buf.extend_from_slice(&[1, 2, 3, 4, 5]);
    assert!(parse_response(&buf, AddressFamily::V4).is_err());
    buf.clear();
    write_scrape_header(&mut buf, TX);
    buf.push(0);
    assert!(parse_response(&buf, AddressFamily::V4).is_err());
    assert!(parse_response(&[0, 0, 0, 9, 0, 0, 0, 0], AddressFamily::V4).is_err());
}

// -----------------------------------------------------------------------------------------
// Properties
// -----------------------------------------------------------------------------------------

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::None),
        Just(Event::Completed),
        Just(Event::Started),
        Just(Event::Stopped),
    ]
}

fn arb_announce() -> impl Strategy<Value = AnnounceRequest> {
    let ids = (
        any::<u64>(),
        any::<u32>(),
        any::<[u8; 20]>(),
        any::<[u8; 20]>(),
    );
    let counts = (any::<u64>(), any::<u64>(), any::<u64>(), arb_event());
    // Port 0 is refused (see `announce_with_port_0_is_refused`).
    let rest = (any::<u32>(), any::<u32>(), any::<i32>(), 1..=u16::MAX);
    (ids, counts, rest).prop_map(|((conn, tx, hash, peer), (down, left, up, event), rest)| {
        AnnounceRequest {
            connection_id: ConnectionId(conn),
            transaction_id: TransactionId(tx),
            info_hash: InfoHash(hash),
            peer_id: PeerId(peer),
            downloaded: down,
            left,
            uploaded: up,
            event,
            ip: rest.0,
            key: rest.1,
            numwant: rest.2,
            port: rest.3,
        }
    })
}

fn round_trip_request(request: &Request<'_>) {
    let mut buf = Vec::new();
    request.write(&mut buf);
    assert_eq!(parse_request(&buf).as_ref(), Ok(request));
}

fn parse_one_response(bytes: &[u8], family: AddressFamily) -> ResponseView<'_> {
    parse_response(bytes, family).expect("valid response")
}

proptest! {
    #[test]
    fn connect_requests_round_trip(tx in any::<u32>()) {
        round_trip_request(&Request::Connect(ConnectRequest { transaction_id: TransactionId(tx) }));
    }

    #[test]
    fn announce_requests_round_trip(announce in arb_announce()) {
        round_trip_request(&Request::Announce(announce));
    }

    #[test]
    fn scrape_requests_round_trip(
        conn in any::<u64>(),
        tx in any::<u32>(),
        hashes in proptest::collection::vec(any::<[u8; 20]>().prop_map(InfoHash), 1..=MAX_SCRAPE_TORRENTS),
    ) {
        round_trip_request(&Request::Scrape(ScrapeRequest {
            connection_id: ConnectionId(conn),
            transaction_id: TransactionId(tx),
            info_hashes: InfoHashes::from_slice(&hashes),
        }));
    }

    #[test]
    fn parse_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_request(&bytes);
    }

    #[test]
    fn parse_request_never_panics_past_a_valid_header(
        conn in prop_oneof![Just(PROTOCOL_ID), any::<u64>()],
        action in 0u32..5,
        tail in proptest::collection::vec(any::<u8>(), 0..1600),
    ) {
        let mut bytes = Vec::new();
        put_u64(&mut bytes, conn);
        put_u32(&mut bytes, action);
        put_u32(&mut bytes, TX.0);
        bytes.extend_from_slice(&tail);
        let _ = parse_request(&bytes);
    }

    #[test]
    fn announces_with_any_option_bytes_parse_or_fail_cleanly(
        announce in arb_announce(),
        options in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = Vec::new();
        announce.write(&mut bytes);
        bytes.extend_from_slice(&options);
        match parse_request(&bytes) {
            Ok(request) => prop_assert_eq!(request, Request::Announce(announce)),
            Err(err) => prop_assert!(err.error_response().is_some()),
        }
    }

    #[test]
    fn parse_response_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        v6 in any::<bool>(),
    ) {
        let family = if v6 { AddressFamily::V6 } else { AddressFamily::V4 };
        let _ = parse_response(&bytes, family);
    }

    #[test]
    fn connect_responses_round_trip(tx in any::<u32>(), conn in any::<u64>()) {
        let response = ConnectResponse { transaction_id: TransactionId(tx), connection_id: ConnectionId(conn) };
        let mut buf = Vec::new();
        response.write(&mut buf);
        prop_assert_eq!(parse_one_response(&buf, AddressFamily::V4), ResponseView::Connect(response));
    }

    #[test]
    fn ipv4_announce_responses_round_trip(
        header in any::<(u32, u32, u32, u32)>(),
        peers in proptest::collection::vec(any::<([u8; 4], u16)>(), 0..100),
    ) {
        let peers: Vec<SocketAddrV4> =
            peers.into_iter().map(|(ip, port)| SocketAddrV4::new(ip.into(), port)).collect();
        let (tx, interval, leechers, seeders) = header;
        let mut buf = Vec::new();
        AnnounceResponse {
            transaction_id: TransactionId(tx), interval, leechers, seeders, peers: Peers::V4(&peers),
        }.write(&mut buf);
        prop_assert_eq!(buf.len(), 20 + 6 * peers.len());
        let ResponseView::Announce(view) = parse_one_response(&buf, AddressFamily::V4) else {
            panic!("announce expected");
        };
        prop_assert_eq!((view.transaction_id.0, view.interval, view.leechers, view.seeders), header);
        let expected: Vec<SocketAddr> = peers.iter().map(|&p| SocketAddr::V4(p)).collect();
        prop_assert_eq!(view.peers.iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn ipv6_announce_responses_round_trip(
        header in any::<(u32, u32, u32, u32)>(),
        peers in proptest::collection::vec(any::<([u8; 16], u16)>(), 0..100),
    ) {
        let peers: Vec<SocketAddrV6> =
            peers.into_iter().map(|(ip, port)| SocketAddrV6::new(ip.into(), port, 0, 0)).collect();
        let (tx, interval, leechers, seeders) = header;
        let mut buf = Vec::new();
        AnnounceResponse {
            transaction_id: TransactionId(tx), interval, leechers, seeders, peers: Peers::V6(&peers),
        }.write(&mut buf);
        prop_assert_eq!(buf.len(), 20 + 18 * peers.len());
        let ResponseView::Announce(view) = parse_one_response(&buf, AddressFamily::V6) else {
            panic!("announce expected");
        };
        prop_assert_eq!((view.transaction_id.0, view.interval, view.leechers, view.seeders), header);
        let expected: Vec<SocketAddr> = peers.iter().map(|&p| SocketAddr::V6(p)).collect();
        prop_assert_eq!(view.peers.iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn scrape_responses_round_trip(
        tx in any::<u32>(),
        stats in proptest::collection::vec(any::<(u32, u32, u32)>(), 0..=MAX_SCRAPE_TORRENTS),
    ) {
        let stats: Vec<ScrapeStats> = stats
            .into_iter()
            .map(|(seeders, completed, leechers)| ScrapeStats { seeders, completed, leechers })
            .collect();
        let mut buf = Vec::new();
        ScrapeResponse { transaction_id: TransactionId(tx), torrents: &stats }.write(&mut buf);
        let ResponseView::Scrape(view) = parse_one_response(&buf, AddressFamily::V4) else {
            panic!("scrape expected");
        };
        prop_assert_eq!(view.transaction_id, TransactionId(tx));
        prop_assert_eq!(view.iter().collect::<Vec<_>>(), stats);
    }

    #[test]
    fn error_responses_round_trip(tx in any::<u32>(), message in ".{0,100}") {
        let response = ErrorResponse { transaction_id: TransactionId(tx), message: &message };
        let mut buf = Vec::new();
        response.write(&mut buf);
        let ResponseView::Error(view) = parse_one_response(&buf, AddressFamily::V6) else {
            panic!("error expected");
        };
        prop_assert_eq!(view.transaction_id, TransactionId(tx));
        prop_assert_eq!(view.message, message.as_bytes());
    }

    #[test]
    fn truncated_errors_fit_and_stay_utf8(message in ".{0,60}", max_len in 0usize..80) {
        let response = ErrorResponse { transaction_id: TX, message: &message };
        let mut buf = Vec::new();
        let written = response.write_truncated(&mut buf, max_len);
        prop_assert_eq!(written, buf.len());
        prop_assert!(buf.len() <= max_len);
        if let Some(text) = buf.get(ERROR_HEADER_LEN..) {
            let text = std::str::from_utf8(text).expect("utf-8");
            prop_assert!(message.starts_with(text));
        }
    }
}
