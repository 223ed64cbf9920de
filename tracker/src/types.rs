//! Domain types shared by the codecs, the store and the servers.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A torrent's 20-byte info hash (raw bytes, not hex).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// A client's 20-byte peer id. Never used as identity (see [`Announce::peer`]).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", String::from_utf8_lossy(&self.0))
    }
}

/// The announce `event`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Event {
    /// Regular re-announce (empty or absent `event`).
    #[default]
    None,
    Started,
    Completed,
    Stopped,
}

/// One announce, as the store sees it, whatever protocol carried it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: InfoHash,
    /// The peer's identity in the swarm: (source IP, announced port), IPv4-mapped IPv6 already
    /// normalised to IPv4 (see [`normalize_ip`]). Two clients never share it, so one cannot
    /// overwrite or remove another's entry by reusing its peer_id.
    pub peer: SocketAddr,
    pub event: Event,
    /// Bytes left to download; 0 makes the peer a seeder.
    pub left: u64,
    /// How many peers the client wants (already bounded by the server's maximum).
    pub numwant: usize,
}

impl Announce {
    /// Whether this announce makes the peer a seeder.
    pub fn is_seeder(&self) -> bool {
        self.left == 0
    }
}

/// Swarm counts as scrape and announce answers report them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmStats {
    /// Seeders.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
    /// Completed downloads seen (`event=completed`).
    pub downloaded: u32,
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d`; every other address is returned unchanged. Applied to
/// every source address before anything else sees it, so one host has one identity.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// [`normalize_ip`] for a socket address.
pub fn normalize_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(normalize_ip(addr.ip()), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_becomes_ipv4() {
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().expect("ip");
        assert_eq!(
            normalize_ip(mapped),
            "127.0.0.2".parse::<IpAddr>().expect("ip")
        );
        let v6: IpAddr = "::1".parse().expect("ip");
        assert_eq!(normalize_ip(v6), v6);
    }
}

/// Which address families an answer may carry. HTTP answers carry both (BEP 7); a UDP answer
/// carries the family of the socket it came in on (BEP 15).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Families {
    Both,
    V4,
    V6,
}

impl Families {
    /// Whether peers of this family may be returned.
    pub fn allows(self, v6: bool) -> bool {
        match self {
            Families::Both => true,
            Families::V4 => !v6,
            Families::V6 => v6,
        }
    }
}
