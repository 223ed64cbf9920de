//! Longest-prefix match in a snapshot agrees with a linear scan over every prefix.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use p4p_itracker::snapshot::{PidSpec, SnapshotBuilder};
use proptest::prelude::*;

fn v4_prefix() -> impl Strategy<Value = IpNetwork> {
    // Few distinct high bits so that prefixes nest and overlap often.
    (0u32..16, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
        let addr = (hi << 28) | (lo >> 4);
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        IpNetwork::new(IpAddr::V4(Ipv4Addr::from(addr & mask)), len).expect("prefix")
    })
}

fn v6_prefix() -> impl Strategy<Value = IpNetwork> {
    (0u128..16, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, len)| {
        let addr = (hi << 124) | (lo >> 4);
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        IpNetwork::new(IpAddr::V6(Ipv6Addr::from(addr & mask)), len).expect("prefix")
    })
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u32..16, any::<u32>())
            .prop_map(|(hi, lo)| IpAddr::V4(Ipv4Addr::from((hi << 28) | (lo >> 4)))),
        (0u128..16, any::<u128>())
            .prop_map(|(hi, lo)| IpAddr::V6(Ipv6Addr::from((hi << 124) | (lo >> 4)))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn locate_equals_the_longest_matching_prefix_of_a_linear_scan(
        prefixes in proptest::collection::hash_set(prop_oneof![v4_prefix(), v6_prefix()], 1..60),
        ips in proptest::collection::vec(address(), 1..40),
    ) {
        let prefixes: Vec<IpNetwork> = prefixes.into_iter().collect();
        let mut b = SnapshotBuilder::new("prop", 1.0);
        let isp = b.add_isp("prop");
        // One PID per prefix: the PID name tells which prefix matched.
        for (i, p) in prefixes.iter().enumerate() {
            b.add_pid(PidSpec { name: format!("lpm-{i}"), isp, internal: true, prefixes: vec![*p] });
        }
        let snap = b.build().expect("distinct prefixes build");
        for ip in ips {
            let expected = prefixes
                .iter()
                .enumerate()
                .filter(|(_, p)| p.contains(ip))
                .max_by_key(|(_, p)| p.prefix())
                .map_or_else(|| "default".to_string(), |(i, _)| format!("lpm-{i}"));
            prop_assert_eq!(snap.pid(snap.locate(ip)).name.to_string(), expected, "ip {}", ip);
        }
    }
}
