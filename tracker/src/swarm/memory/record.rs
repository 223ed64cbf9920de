//! Peer records and their bucket keys, and the vector helpers every layout shares.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use p4p_itracker::{PidId, Snapshot};

/// The 15-bit code shared by every PID id that does not fit (see [`BucketKey`]).
const PID_OVERFLOW: u16 = 0x7FFF;

/// What [`crate::selection::Buckets::pid`] reports for [`PID_OVERFLOW`]: an id no snapshot
/// holds.
pub(super) const PID_UNKNOWN: PidId = PidId(u32::MAX);

/// First code of the AS locations ([`PidId::of_asn`]); PID ids below it are their own code.
const AS_BASE: u16 = p4p_itracker::pid::PID_CODES as u16;

/// A bucket key: PID x seeder/leecher, packed as `code << 1 | seeder` so records sort by PID
/// first. The 15-bit code is a PID id below [`p4p_itracker::pid::PID_CODES`] (ids stay there:
/// the interner reuses ids of names out of use), or `AS_BASE` plus an AS location's id; any
/// other id (more PID names in use at once than that) shares [`PID_OVERFLOW`], counted in the
/// interner's stats.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct BucketKey(u16);

impl BucketKey {
    pub(super) fn new(pid: PidId, seeder: bool) -> Self {
        let code = if pid.is_as_location() {
            AS_BASE + (pid.0 & !p4p_itracker::pid::AS_TAG) as u16
        } else if pid.0 < u32::from(AS_BASE) {
            pid.0 as u16
        } else {
            PID_OVERFLOW
        };
        BucketKey((code << 1) | u16::from(seeder))
    }

    pub(super) fn pid(self) -> PidId {
        match self.0 >> 1 {
            PID_OVERFLOW => PID_UNKNOWN,
            code if code >= AS_BASE => PidId(p4p_itracker::pid::AS_TAG | u32::from(code - AS_BASE)),
            code => PidId(u32::from(code)),
        }
    }

    pub(super) fn seeders(self) -> bool {
        self.0 & 1 == 1
    }

    /// The PID part of the key: both buckets of one PID share it.
    pub(super) fn code(self) -> u16 {
        self.0 >> 1
    }

    /// Whether the key holds `pid` alone: not for ids past the codes, which share
    /// [`PID_OVERFLOW`].
    pub(super) fn holds_only(self, pid: PidId) -> bool {
        self.pid() == pid
    }
}

/// An IPv4 peer: 10 bytes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Peer4 {
    pub(super) ip: [u8; 4],
    pub(super) port: u16,
    pub(super) expires: u16,
    pub(super) bucket: BucketKey,
}

/// An IPv6 peer: 22 bytes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Peer6 {
    pub(super) ip: [u8; 16],
    pub(super) port: u16,
    pub(super) expires: u16,
    pub(super) bucket: BucketKey,
}

/// What both peer records offer to the generic family code.
pub(super) trait Record: Copy {
    /// Identity inside a swarm: (ip, port), hashed by the address index.
    type Addr: Eq + Copy + Hash;
    /// Sort order of a family: (bucket, ip, port).
    type Order: Ord + Copy;
    /// The source a peer counts under for `max_peers_per_source`: its IPv4 address or its
    /// IPv6 /64 (see [`crate::swarm::quota`]).
    type Host: Eq + Copy + Hash;
    fn host(addr: Self::Addr) -> Self::Host;
    fn new(addr: Self::Addr, expires: u16, bucket: BucketKey) -> Self;
    fn addr(&self) -> Self::Addr;
    fn order_of(bucket: BucketKey, addr: Self::Addr) -> Self::Order;
    fn bucket(&self) -> BucketKey;
    fn set_bucket(&mut self, bucket: BucketKey);
    fn expires(&self) -> u16;
    fn set_expires(&mut self, t: u16);
    fn socket(&self) -> SocketAddr;

    fn order(&self) -> Self::Order {
        Self::order_of(self.bucket(), self.addr())
    }
}

impl Peer4 {
    pub(super) fn addr_of(a: SocketAddrV4) -> u64 {
        (u64::from(a.ip().to_bits()) << 16) | u64::from(a.port())
    }
}

impl Record for Peer4 {
    type Addr = u64;
    type Order = u64;
    type Host = u32;
    fn host(addr: u64) -> u32 {
        (addr >> 16) as u32
    }
    fn new(addr: u64, expires: u16, bucket: BucketKey) -> Self {
        Peer4 {
            ip: ((addr >> 16) as u32).to_be_bytes(),
            port: addr as u16,
            expires,
            bucket,
        }
    }
    fn addr(&self) -> u64 {
        (u64::from(u32::from_be_bytes(self.ip)) << 16) | u64::from(self.port)
    }
    fn order_of(bucket: BucketKey, addr: u64) -> u64 {
        (u64::from(bucket.0) << 48) | addr
    }
    fn bucket(&self) -> BucketKey {
        self.bucket
    }
    fn set_bucket(&mut self, bucket: BucketKey) {
        self.bucket = bucket;
    }
    fn expires(&self) -> u16 {
        self.expires
    }
    fn set_expires(&mut self, t: u16) {
        self.expires = t;
    }
    fn socket(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(self.ip), self.port))
    }
}

impl Peer6 {
    pub(super) fn addr_of(a: SocketAddrV6) -> (u128, u16) {
        (a.ip().to_bits(), a.port())
    }
}

impl Record for Peer6 {
    type Addr = (u128, u16);
    type Order = (BucketKey, u128, u16);
    type Host = u64;
    fn host((ip, _): (u128, u16)) -> u64 {
        (ip >> 64) as u64
    }
    fn new((ip, port): (u128, u16), expires: u16, bucket: BucketKey) -> Self {
        Peer6 {
            ip: ip.to_be_bytes(),
            port,
            expires,
            bucket,
        }
    }
    fn addr(&self) -> (u128, u16) {
        (u128::from_be_bytes(self.ip), self.port)
    }
    fn order_of(bucket: BucketKey, (ip, port): (u128, u16)) -> Self::Order {
        (bucket, ip, port)
    }
    fn bucket(&self) -> BucketKey {
        self.bucket
    }
    fn set_bucket(&mut self, bucket: BucketKey) {
        self.bucket = bucket;
    }
    fn expires(&self) -> u16 {
        self.expires
    }
    fn set_expires(&mut self, t: u16) {
        self.expires = t;
    }
    fn socket(&self) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(self.ip), self.port, 0, 0))
    }
}

/// Whether a 16-bit wrapping expiry time has passed at `now`.
pub(super) fn expired(expires: u16, now: u16) -> bool {
    (now.wrapping_sub(expires) as i16) >= 0
}

/// The bucket id of `ip` in `snap`: its PID's stable id, or its AS location (see
/// [`crate::topology::location`]).
pub(super) fn resolve(snap: &Snapshot, ip: IpAddr) -> PidId {
    crate::topology::location(snap, ip).1
}

/// Makes room for one more element, by at least `min_step` and at most a 32nd at a time. Small
/// steps cost more copying (still less than the insert's own shift) but leave little spare
/// capacity and, while a store fills, fewer freed blocks the allocator cannot reuse.
pub(super) fn reserve_one<T>(v: &mut Vec<T>, min_step: usize) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 32).max(min_step));
    }
}

/// Returns spare capacity once a vector is more than a quarter too big.
pub(super) fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > v.len() + v.len() / 4 + 4 {
        v.shrink_to(v.len() + v.len() / 8);
    }
}

/// Moves the record at `from` to where `rec` sorts, writing `rec` there; returns its index.
/// Shifts only the records in between.
pub(super) fn rekey_in<P: Record>(recs: &mut [P], from: usize, rec: P) -> usize {
    let key = rec.order();
    let to = recs.partition_point(|p| p.order() < key);
    if to > from {
        recs[from..to].rotate_left(1);
        recs[to - 1] = rec;
        to - 1
    } else {
        recs[to..=from].rotate_right(1);
        recs[to] = rec;
        to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rekeying_in_place_shifts_only_the_records_between() {
        let rec = |ip: u32, pid: u32| {
            Peer4::new(u64::from(ip) << 16, 0, BucketKey::new(PidId(pid), false))
        };
        let mut recs = vec![rec(1, 1), rec(2, 1), rec(3, 2), rec(4, 3)];
        assert_eq!(rekey_in(&mut recs, 0, rec(1, 2)), 1);
        assert_eq!(recs, vec![rec(2, 1), rec(1, 2), rec(3, 2), rec(4, 3)]);
        assert_eq!(rekey_in(&mut recs, 3, rec(4, 0)), 0);
        assert_eq!(recs, vec![rec(4, 0), rec(2, 1), rec(1, 2), rec(3, 2)]);
        assert_eq!(rekey_in(&mut recs, 1, rec(2, 3)), 3);
        assert_eq!(recs, vec![rec(4, 0), rec(1, 2), rec(3, 2), rec(2, 3)]);
    }

    #[test]
    fn bucket_keys_hold_pid_ids_and_as_locations_and_share_one_code_beyond() {
        for (id, seeder) in [(0, false), (1, true), (16383, true), (12345, false)] {
            let key = BucketKey::new(PidId(id), seeder);
            assert_eq!((key.pid(), key.seeders()), (PidId(id), seeder));
        }
        for asn in [0, 1, 64500, 4_200_000_000, u32::MAX] {
            let id = PidId::of_asn(asn);
            let key = BucketKey::new(id, true);
            assert_eq!((key.pid(), key.seeders()), (id, true), "AS{asn}");
            assert_ne!(key.pid(), PID_UNKNOWN);
        }
        for id in [16384, 32768, 40000, u32::MAX >> 1] {
            let key = BucketKey::new(PidId(id), true);
            assert_eq!((key.pid(), key.seeders()), (PID_UNKNOWN, true));
        }
        // The ASN mode's locations used to be interned and overflowed first (past 32,767 ASes
        // seen): 80,000 ASes now take no PID id and each keeps a bucket code of its own range.
        let before = p4p_itracker::pid::stats();
        for asn in 0..80_000u32 {
            let id = PidId::of_asn(asn);
            assert_eq!(BucketKey::new(id, false).pid(), id, "AS{asn}");
        }
        assert!(p4p_itracker::pid::stats().highest <= before.highest + 64);
        // The overflow code sorts after every real PID, and no snapshot knows its id.
        assert!(BucketKey::new(PidId(16383), true) < BucketKey::new(PidId(50000), false));
        assert_eq!(Snapshot::single_pid().index_of(PID_UNKNOWN), None);
        assert_eq!(Snapshot::single_pid().index_of(PidId::of_asn(7)), None);
    }
}
