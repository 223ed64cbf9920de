//! Stateless BEP 15 connection ids: a keyed hash of the source address and a time window.
//!
//! BEP 15 wants an id the client cannot guess, usable "until one minute after it has received
//! it" and accepted by the tracker "until two minutes after it has been sent". Keeping issued
//! ids in a table would let a spoofing attacker fill it, so nothing is stored: the id is
//! SipHash-2-4, keyed by a per-process 128-bit secret, of (time window, source IP). Only a host
//! that receives packets at that IP learns it. The port is left out on purpose: clients behind
//! NATs that rebind ports, and clients that announce from several sockets, would otherwise be
//! refused, and leaving it out gives a spoofer nothing (the answer still goes to the IP).
//!
//! Timing: windows are [`WINDOW_SECS`] (120 s) long and an id is accepted in the window it was
//! issued in and the next one. So an id stays valid for at least 120 s (BEP 15's two minutes)
//! and at most 240 s. The lowest bit of the id carries the parity of its window, so validation
//! computes one hash, not two; the other 63 bits are the MAC, leaving a forger a 2^-63 chance
//! per try.
//!
//! Time is passed in as whole seconds (any monotonic or Unix clock; the server should read one
//! coarse clock for all its workers so that they agree on the window). Source addresses are
//! normalised first (`::ffff:a.b.c.d` is `a.b.c.d`), so a dual-stack socket does not change a
//! client's id. The hash input is encoded explicitly (little-endian), so tracker instances
//! sharing one secret (behind one anycast address, say) accept each other's ids.

use std::fmt;
use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use rand::TryRngCore;
use siphasher::sip::SipHasher24;

use super::udp::ConnectionId;
use crate::types::normalize_addr;

/// Length of one time window; an id is accepted in its window and the next.
pub const WINDOW_SECS: u64 = 120;

/// Key slots a rotating issuer holds: the previous epoch's, the current one's and the next
/// one's (fetched ahead, so nodes whose clocks differ by a little agree at the boundary).
const SLOTS: usize = 3;

/// Issues and checks connection ids. Cheap to share (`&self` everywhere, no interior state).
///
/// One issuer has one secret ([`ConnectionIdIssuer::new`]) or, in a cluster, one secret per
/// *epoch* of `rotation` windows ([`ConnectionIdIssuer::rotating`]): an id is then keyed by the
/// secret of its window's epoch, so a rotation never refuses an id issued just before it (the
/// previous epoch's secret is still held), and validation still computes one hash.
#[derive(Clone)]
pub struct ConnectionIdIssuer {
    /// Keyed once; copied per id, a few words, instead of re-deriving the keys. Slot
    /// `epoch % SLOTS` holds that epoch's key, tagged with its epoch.
    keyed: [(u64, SipHasher24); SLOTS],
    /// Windows per epoch; `u64::MAX`: one epoch forever (one secret).
    rotation: u64,
    /// Seconds added to the `now` callers pass, so that nodes with their own clocks (each
    /// counting from its own start) agree on the window: Unix time minus clock time.
    offset: u64,
}

impl fmt::Debug for ConnectionIdIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret: it would let anyone forge ids.
        f.write_str("ConnectionIdIssuer { .. }")
    }
}

impl ConnectionIdIssuer {
    /// An issuer with a given 128-bit secret (tests, or instances that must agree).
    pub fn new(secret: [u8; 16]) -> Self {
        let keyed = SipHasher24::new_with_key(&secret);
        Self {
            keyed: [(0, keyed); SLOTS],
            rotation: u64::MAX,
            offset: 0,
        }
    }

    /// An issuer whose secret changes every `rotation` windows: `keys` are (epoch, secret)
    /// pairs (at most [`SLOTS`] consecutive epochs are kept; missing ones refuse their ids), and
    /// `offset` is added to every `now` (see the field). Nodes built with the same keys,
    /// rotation and time base accept each other's ids.
    pub fn rotating(rotation: u64, offset: u64, keys: &[(u64, [u8; 16])]) -> Self {
        // An epoch no key is given for keeps a tag that never matches (u64::MAX is no epoch a
        // window reaches while `rotation` > 1), so its ids are refused.
        let mut keyed = [(u64::MAX, SipHasher24::new_with_key(&[0; 16])); SLOTS];
        for &(epoch, secret) in keys {
            keyed[(epoch % SLOTS as u64) as usize] = (epoch, SipHasher24::new_with_key(&secret));
        }
        Self {
            keyed,
            rotation: rotation.max(2),
            offset,
        }
    }

    /// The epoch of Unix second `unix_secs` for a rotation of `rotation` windows.
    pub fn epoch_of(unix_secs: u64, rotation: u64) -> u64 {
        unix_secs / WINDOW_SECS / rotation.max(2)
    }

    /// An issuer with a fresh secret from the operating system's RNG.
    pub fn try_random() -> Result<Self, rand::rand_core::OsError> {
        let mut secret = [0u8; 16];
        rand::rngs::OsRng.try_fill_bytes(&mut secret)?;
        Ok(Self::new(secret))
    }

    /// An issuer with a fresh secret from the operating system's RNG.
    ///
    /// # Panics
    /// If the OS has no randomness to give, which leaves no safe way to run a UDP tracker.
    pub fn random() -> Self {
        Self::try_random().expect("the OS random number generator failed")
    }

    /// The id for a client at `src` at time `now_secs`.
    pub fn issue(&self, src: SocketAddr, now_secs: u64) -> ConnectionId {
        let window = now_secs.wrapping_add(self.offset) / WINDOW_SECS;
        self.id_for_window(window, src).unwrap_or(ConnectionId(0))
    }

    /// Whether `id` was issued to `src` in the current window or the one before.
    pub fn validate(&self, id: ConnectionId, src: SocketAddr, now_secs: u64) -> bool {
        let now = now_secs.wrapping_add(self.offset) / WINDOW_SECS;
        let window = if now & 1 == id.0 & 1 {
            now
        } else {
            match now.checked_sub(1) {
                Some(previous) => previous,
                None => return false,
            }
        };
        // A plain `==` on one u64 leaks no timing an attacker can measure over the network.
        self.id_for_window(window, src) == Some(id)
    }

    /// The id of `src` in `window`, or `None` when the issuer holds no key for its epoch.
    fn id_for_window(&self, window: u64, src: SocketAddr) -> Option<ConnectionId> {
        let epoch = if self.rotation == u64::MAX {
            0
        } else {
            window / self.rotation
        };
        let (tag, keyed) = &self.keyed[(epoch % SLOTS as u64) as usize];
        if *tag != epoch {
            return None;
        }
        let mac = Self::mac(keyed, window, src);
        Some(ConnectionId((mac & !1) | (window & 1)))
    }

    fn mac(keyed: &SipHasher24, window: u64, src: SocketAddr) -> u64 {
        // window (8) + family tag (1) + IPv6 address (16)
        let mut input = [0u8; 25];
        input[..8].copy_from_slice(&window.to_le_bytes());
        let src = normalize_addr(src);
        let end = match src.ip() {
            IpAddr::V4(ip) => {
                input[8] = 4;
                input[9..13].copy_from_slice(&ip.octets());
                13
            }
            IpAddr::V6(ip) => {
                input[8] = 6;
                input[9..25].copy_from_slice(&ip.octets());
                25
            }
        };
        let mut hasher = *keyed;
        hasher.write(&input[..end]);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: [u8; 16] = *b"0123456789abcdef";
    const ISSUED_AT: u64 = 1_700_000_000;

    fn src() -> SocketAddr {
        "192.0.2.7:6881".parse().expect("addr")
    }

    #[test]
    fn id_is_valid_when_issued() {
        let issuer = ConnectionIdIssuer::new(SECRET);
        let id = issuer.issue(src(), ISSUED_AT);
        assert!(issuer.validate(id, src(), ISSUED_AT));
    }

    #[test]
    fn id_is_still_valid_two_minutes_later() {
        let issuer = ConnectionIdIssuer::new(SECRET);
        // Worst case: issued on the last second of a window.
        let issued_at = (ISSUED_AT / WINDOW_SECS + 1) * WINDOW_SECS - 1;
        let id = issuer.issue(src(), issued_at);
        assert!(issuer.validate(id, src(), issued_at + 120));
    }

    #[test]
    fn id_expires_within_four_minutes() {
        let issuer = ConnectionIdIssuer::new(SECRET);
        // Best case: issued on the first second of a window.
        let issued_at = ISSUED_AT / WINDOW_SECS * WINDOW_SECS;
        let id = issuer.issue(src(), issued_at);
        assert!(issuer.validate(id, src(), issued_at + 2 * WINDOW_SECS - 1));
        assert!(!issuer.validate(id, src(), issued_at + 2 * WINDOW_SECS));
        assert!(!issuer.validate(id, src(), issued_at + 3 * WINDOW_SECS));
    }

    #[test]
    fn id_from_the_future_is_refused() {
        let issuer = ConnectionIdIssuer::new(SECRET);
        let id = issuer.issue(src(), ISSUED_AT + 2 * WINDOW_SECS);
        assert!(!issuer.validate(id, src(), ISSUED_AT));
    }

    #[test]
    fn forged_ids_are_refused() {
        let issuer = ConnectionIdIssuer::new(SECRET);
        let id = issuer.issue(src(), ISSUED_AT);
        for bit in 0..64 {
            let forged = ConnectionId(id.0 ^ (1 << bit));
            assert!(!issuer.validate(forged, src(), ISSUED_AT), "bit {bit}");
        }
        let other_secret = ConnectionIdIssuer::new(*b"fedcba9876543210");
        assert!(!issuer.validate(other_secret.issue(src(), ISSUED_AT), src(), ISSUED_AT));
    }

    #[test]
    fn id_from_another_address_is_refused() {
        let issuer = ConnectionIdIssuer::new(SECRET);
        let id = issuer.issue(src(), ISSUED_AT);
        for other in ["192.0.2.8:6881", "[2001:db8::7]:6881"] {
            let other: SocketAddr = other.parse().expect("addr");
            assert!(!issuer.validate(id, other, ISSUED_AT), "{other}");
        }
    }

    #[test]
    fn id_holds_for_another_port_of_the_same_ip() {
        let issuer = ConnectionIdIssuer::new(SECRET);
        let id = issuer.issue(src(), ISSUED_AT);
        let rebound: SocketAddr = "192.0.2.7:50000".parse().expect("addr");
        assert!(issuer.validate(id, rebound, ISSUED_AT));
    }

    #[test]
    fn ipv4_mapped_source_gets_the_ipv4_id() {
        let issuer = ConnectionIdIssuer::new(SECRET);
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:6881".parse().expect("addr");
        assert_eq!(
            issuer.issue(mapped, ISSUED_AT),
            issuer.issue(src(), ISSUED_AT)
        );
    }

    #[test]
    fn id_is_refused_at_time_zero_for_the_odd_window() {
        let issuer = ConnectionIdIssuer::new(SECRET);
        let odd = ConnectionId(issuer.issue(src(), 0).0 | 1);
        assert!(!issuer.validate(odd, src(), 0));
    }

    #[test]
    fn random_issuers_differ() {
        let (a, b) = (ConnectionIdIssuer::random(), ConnectionIdIssuer::random());
        assert_ne!(a.issue(src(), ISSUED_AT), b.issue(src(), ISSUED_AT));
        assert_eq!(format!("{a:?}"), "ConnectionIdIssuer { .. }");
    }

    #[test]
    fn a_rotation_keeps_accepting_ids_of_the_previous_epoch() {
        let rotation = 3;
        let epoch_secs = rotation * WINDOW_SECS;
        // Issued on the last second of epoch 10, checked just after the rotation to epoch 11.
        let issued_at = 11 * epoch_secs - 1;
        let keys = [(9, [9u8; 16]), (10, [10u8; 16]), (11, [11u8; 16])];
        let issuer = ConnectionIdIssuer::rotating(rotation, 0, &keys);
        let id = issuer.issue(src(), issued_at);
        assert!(issuer.validate(id, src(), issued_at + 1));
        assert!(issuer.validate(id, src(), issued_at + WINDOW_SECS));
        // Another node that already rotated (it holds 10, 11, 12) accepts it too.
        let rotated = [(10, [10u8; 16]), (11, [11u8; 16]), (12, [12u8; 16])];
        let other = ConnectionIdIssuer::rotating(rotation, 0, &rotated);
        assert!(other.validate(id, src(), issued_at + 1));
        // Ids of an epoch's key are not ids of the next epoch's key.
        let id11 = issuer.issue(src(), issued_at + 1);
        assert_ne!(id.0 >> 1, id11.0 >> 1);
        // A node without epoch 10's key refuses ids keyed by it.
        let late = ConnectionIdIssuer::rotating(rotation, 0, &[(11, [11u8; 16])]);
        assert!(!late.validate(id, src(), issued_at + 1));
        assert!(late.validate(id11, src(), issued_at + 2));
    }

    #[test]
    fn the_offset_puts_two_clocks_on_one_time_base() {
        let keys = [(0, SECRET)];
        // Node A started 1000 s before node B: A's clock reads 1000 more at the same instant.
        let a = ConnectionIdIssuer::rotating(u64::MAX / WINDOW_SECS, ISSUED_AT, &keys);
        let b = ConnectionIdIssuer::rotating(u64::MAX / WINDOW_SECS, ISSUED_AT + 1000, &keys);
        let id = a.issue(src(), 1000);
        assert!(b.validate(id, src(), 0));
    }

    proptest! {
        #[test]
        fn valid_for_two_minutes_then_expired(
            secret in any::<[u8; 16]>(),
            ip in any::<[u8; 16]>(),
            port in any::<u16>(),
            now in 0u64..u64::MAX / 2,
            elapsed in 0u64..=120,
        ) {
            let issuer = ConnectionIdIssuer::new(secret);
            let src = SocketAddr::new(std::net::Ipv6Addr::from(ip).into(), port);
            let id = issuer.issue(src, now);
            prop_assert!(issuer.validate(id, src, now + elapsed));
            prop_assert!(!issuer.validate(id, src, now + 2 * WINDOW_SECS + elapsed));
        }
    }
}
