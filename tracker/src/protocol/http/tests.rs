use proptest::prelude::*;
use serde::Deserialize;

use super::*;

fn enc(b: &[u8]) -> String {
    b.iter().map(|x| format!("%{x:02X}")).collect()
}

fn query(extra: &str) -> String {
    format!(
        "info_hash={}&peer_id={}&port=6881&uploaded=1&downloaded=2&left=3{extra}",
        enc(&[0xff; 20]),
        "-qB4650-abcdefghijkl"
    )
}

#[test]
fn a_full_announce_parses_with_raw_binary_hash() {
    let q = parse_announce(query("&event=started&numwant=-1&compact=0&ip=1.2.3.4").as_bytes())
        .expect("valid");
    assert_eq!(q.info_hash, InfoHash([0xff; 20]));
    assert_eq!(&q.peer_id.0, b"-qB4650-abcdefghijkl");
    assert_eq!((q.port, q.uploaded, q.downloaded, q.left), (6881, 1, 2, 3));
    assert_eq!(q.event, Event::Started);
    assert_eq!(q.numwant, Some(-1));
    assert!(!q.compact);
    assert_eq!(q.ip, Some("1.2.3.4".parse().expect("ip")));
}

#[test]
fn bad_requests_get_their_specific_reason() {
    let h = enc(&[1; 20]);
    let cases: &[(&str, &str)] = &[
        (
            "peer_id=-qB4650-abcdefghijkl&port=1&left=0",
            "missing info_hash",
        ),
        (
            &format!(
                "info_hash={}&peer_id=-qB4650-abcdefghijkl&port=1&left=0",
                enc(&[1; 19])
            ),
            "invalid info_hash: must be 20 bytes",
        ),
        (
            &format!(
                "info_hash={}&peer_id=-qB4650-abcdefghijkl&port=1&left=0",
                enc(&[1; 21])
            ),
            "invalid info_hash: must be 20 bytes",
        ),
        (&format!("info_hash={h}&port=1&left=0"), "missing peer_id"),
        (
            &format!("info_hash={h}&peer_id=short&port=1&left=0"),
            "invalid peer_id: must be 20 bytes",
        ),
        (
            &format!("info_hash={h}&peer_id=-qB4650-abcdefghijkl&left=0"),
            "missing port",
        ),
        (
            &format!("info_hash={h}&peer_id=-qB4650-abcdefghijkl&port=70000&left=0"),
            "invalid port",
        ),
        (
            &format!("info_hash={h}&peer_id=-qB4650-abcdefghijkl&port=0&left=0"),
            "invalid port",
        ),
        (
            &format!("info_hash={h}&peer_id=-qB4650-abcdefghijkl&port=1"),
            "missing left",
        ),
        (
            &format!("info_hash={h}&peer_id=-qB4650-abcdefghijkl&port=1&left=x"),
            "invalid left",
        ),
        (
            &format!("info_hash={h}&peer_id=-qB4650-abcdefghijkl&port=1&left=0&uploaded=-1"),
            "invalid uploaded",
        ),
        (
            &format!("info_hash={h}&peer_id=-qB4650-abcdefghijkl&port=1&left=0&numwant=many"),
            "invalid numwant",
        ),
        (
            &format!("info_hash={h}&peer_id=-qB4650-abcdefghijkl&port=1&left=0&event=exploded"),
            "invalid event",
        ),
        (
            &format!("info_hash={h}&info_hash={h}&peer_id=-qB4650-abcdefghijkl&port=1&left=0"),
            "more than one info_hash in an announce",
        ),
    ];
    for (q, reason) in cases {
        assert_eq!(parse_announce(q.as_bytes()), Err(*reason), "query {q}");
    }
}

#[test]
fn scrape_takes_several_hashes_up_to_the_limit() {
    let mut out = Vec::new();
    let q = format!("info_hash={}&info_hash={}", enc(&[1; 20]), enc(&[2; 20]));
    parse_scrape(q.as_bytes(), 74, &mut out).expect("valid");
    assert_eq!(out, vec![InfoHash([1; 20]), InfoHash([2; 20])]);
    assert_eq!(
        parse_scrape(q.as_bytes(), 1, &mut out),
        Err("too many info_hash values in one scrape")
    );
    assert!(parse_scrape(b"", 74, &mut out).is_err());
}

#[derive(Deserialize)]
struct Answer {
    complete: i64,
    incomplete: i64,
    interval: i64,
    #[serde(rename = "min interval")]
    min_interval: i64,
    #[serde(with = "serde_bytes_compat")]
    peers: Vec<u8>,
    #[serde(default, with = "serde_bytes_compat")]
    peers6: Vec<u8>,
}

mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let v = serde_bencode::value::Value::deserialize(d)?;
        match v {
            serde_bencode::value::Value::Bytes(b) => Ok(b),
            _ => Err(serde::de::Error::custom("expected bytes")),
        }
    }
}

#[test]
fn compact_answer_decodes_with_a_real_bencode_parser() {
    let v4 = [
        "10.0.0.1:80".parse().expect("a"),
        "10.0.0.2:81".parse().expect("a"),
    ];
    let v6 = ["[::1]:6881".parse().expect("a")];
    let mut out = Vec::new();
    encode_announce(
        &AnnounceAnswer {
            stats: SwarmStats {
                complete: 2,
                incomplete: 3,
                downloaded: 4,
            },
            interval: 1800,
            min_interval: 900,
            v4: &v4,
            v6: &v6,
            compact: true,
        },
        &mut out,
    );
    let a: Answer = serde_bencode::from_bytes(&out).expect("bencode");
    assert_eq!(
        (a.complete, a.incomplete, a.interval, a.min_interval),
        (2, 3, 1800, 900)
    );
    assert_eq!(decode_compact_v4(&a.peers).expect("v4"), v4.to_vec());
    assert_eq!(decode_compact_v6(&a.peers6).expect("v6"), v6.to_vec());
}

#[test]
fn dictionary_answer_lists_ip_and_port() {
    let v4 = ["10.0.0.1:80".parse().expect("a")];
    let v6 = ["[::1]:6881".parse().expect("a")];
    let mut out = Vec::new();
    encode_announce(
        &AnnounceAnswer {
            stats: SwarmStats::default(),
            interval: 1,
            min_interval: 1,
            v4: &v4,
            v6: &v6,
            compact: false,
        },
        &mut out,
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("5:peersld2:ip8:10.0.0.14:porti80eed2:ip3:::14:porti6881eee"),
        "{text}"
    );
    serde_bencode::from_bytes::<serde_bencode::value::Value>(&out).expect("valid bencode");
}

#[test]
fn scrape_answer_is_valid_bencode_keyed_by_raw_hash() {
    let mut out = Vec::new();
    let s = SwarmStats {
        complete: 1,
        incomplete: 2,
        downloaded: 3,
    };
    encode_scrape(
        &[
            (InfoHash([9; 20]), s),
            (InfoHash([3; 20]), SwarmStats::default()),
        ],
        &mut out,
    );
    let v: serde_bencode::value::Value = serde_bencode::from_bytes(&out).expect("bencode");
    let serde_bencode::value::Value::Dict(top) = v else {
        panic!("dict")
    };
    let serde_bencode::value::Value::Dict(files) = &top[&b"files".to_vec()] else {
        panic!("files")
    };
    assert_eq!(files.len(), 2);
    assert!(files.contains_key(&vec![9u8; 20]));
}

proptest! {
    #[test]
    fn query_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_announce(&bytes);
        let mut out = Vec::new();
        let _ = parse_scrape(&bytes, 74, &mut out);
    }

    #[test]
    fn failure_reason_is_always_valid_bencode(reason in ".{0,200}") {
        let out = crate::protocol::bencode::failure(&reason);
        let v: serde_bencode::value::Value = serde_bencode::from_bytes(&out).expect("bencode");
        prop_assert!(matches!(v, serde_bencode::value::Value::Dict(_)));
    }

    #[test]
    fn compact_peers_round_trip(
        v4 in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..50),
        v6 in proptest::collection::vec((any::<[u8; 16]>(), any::<u16>()), 0..50),
    ) {
        let v4: Vec<SocketAddrV4> = v4.into_iter().map(|(ip, p)| SocketAddrV4::new(ip.into(), p)).collect();
        let v6: Vec<SocketAddrV6> = v6.into_iter().map(|(ip, p)| SocketAddrV6::new(ip.into(), p, 0, 0)).collect();
        let b4: Vec<u8> = v4.iter().flat_map(compact_v4).collect();
        let b6: Vec<u8> = v6.iter().flat_map(compact_v6).collect();
        prop_assert_eq!(decode_compact_v4(&b4).expect("v4"), v4);
        prop_assert_eq!(decode_compact_v6(&b6).expect("v6"), v6);
    }

    #[test]
    fn any_answer_is_valid_bencode(
        n4 in 0usize..20, n6 in 0usize..20, compact: bool, c in any::<u32>(), i in any::<u32>()
    ) {
        let v4: Vec<SocketAddrV4> = (0..n4).map(|k| SocketAddrV4::new([10, 0, 0, k as u8].into(), 1)).collect();
        let v6: Vec<SocketAddrV6> = (0..n6).map(|k| SocketAddrV6::new([k as u16; 8].into(), 2, 0, 0)).collect();
        let mut out = Vec::new();
        let stats = SwarmStats { complete: c, incomplete: i, downloaded: 0 };
        encode_announce(&AnnounceAnswer { stats, interval: 1, min_interval: 1, v4: &v4, v6: &v6, compact }, &mut out);
        prop_assert!(serde_bencode::from_bytes::<serde_bencode::value::Value>(&out).is_ok());
    }
}
