//! Deltas: what one node tells the others about its announces, and their wire form.
//!
//! The announce path records a [`Local`]: the torrent, the peer and what happened (added or
//! refreshed as seeder or leecher, completed, stopped), and nothing else, so recording costs a
//! push. The publisher turns a drained set of them into one [`Batch`]: each delta then carries
//! its expiry in Unix seconds (the drain time plus the peer timeout; for a stop, the time the
//! stop happened plus the timeout, which orders it against refreshes) and the peer's PID by
//! *name* (PID ids and snapshot indexes are local to one process; names are what every node's
//! topology shares).
//!
//! Wire form of a batch (little-endian unless said otherwise), bounded and checked on decode:
//! `version u8 = 1`, `node u64`, `names u16`, then each name as `len u8` + UTF-8 bytes, then
//! `count u32` and `count` deltas of `info hash [20]`, `flags u8` (bit 0 seeder, 1 completed,
//! 2 stopped, 3 IPv6), address (4 or 16 bytes), port (u16 big-endian), `expires u32`,
//! `name index u16`. An IPv4 delta is 33 bytes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::types::{Announce, Event, InfoHash};

const VERSION: u8 = 1;
const SEEDER: u8 = 1;
const COMPLETED: u8 = 2;
const STOPPED: u8 = 4;
const V6: u8 = 8;
/// Most distinct PID names one batch carries; past it a batch is cut (see [`Batch::push`]).
pub const MAX_NAMES: usize = u16::MAX as usize;

/// One announce as the announce path records it (the time comes with the batch).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Local {
    pub info_hash: InfoHash,
    pub peer: SocketAddr,
    flags: u8,
}

impl Local {
    /// What `a`, answered by this node, tells the others.
    pub fn of(a: &Announce) -> Self {
        let mut flags = 0;
        if a.is_seeder() {
            flags |= SEEDER;
        }
        match a.event {
            Event::Completed => flags |= COMPLETED,
            Event::Stopped => flags |= STOPPED,
            Event::None | Event::Started => {}
        }
        Self {
            info_hash: a.info_hash,
            peer: a.peer,
            flags,
        }
    }
}

/// One peer's change as it travels between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    pub info_hash: InfoHash,
    pub peer: SocketAddr,
    pub seeder: bool,
    /// The announce said `completed` (counts a download once, when a leecher turns seeder).
    pub completed: bool,
    /// The peer left (`stopped`): remove it unless the node knows a newer refresh.
    pub stopped: bool,
    /// Unix second the peer expires at (for a stop: when it would have, had it refreshed then).
    pub expires: u32,
    /// Index of its PID name in the batch's names.
    pub name: u16,
}

/// A batch of deltas from one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The publishing node's id (random per process start), so a node skips its own batches.
    pub node: u64,
    pub names: Vec<String>,
    pub deltas: Vec<Delta>,
}

/// Why bytes from the stream are not a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("batch cut short")]
    Short,
    #[error("unknown batch version {0}")]
    Version(u8),
    #[error("PID name is not UTF-8")]
    Name,
    #[error("delta names PID {0}, beyond the batch's names")]
    NameIndex(u16),
    #[error("{0} bytes after the last delta")]
    Trailing(usize),
}

impl Batch {
    /// An empty batch of `node`'s.
    pub fn new(node: u64) -> Self {
        Self {
            node,
            ..Self::default()
        }
    }

    /// Adds `l` expiring at `expires` in PID `pid_name`. Returns false (and adds nothing) when
    /// the batch already holds [`MAX_NAMES`] names and this one is new.
    pub fn push(&mut self, l: &Local, expires: u32, pid_name: &str) -> bool {
        let name = match self.names.iter().rposition(|n| n == pid_name) {
            Some(i) => i,
            None if self.names.len() < MAX_NAMES => {
                // Names longer than a byte can count are cut at a character boundary.
                let mut end = pid_name.len().min(255);
                while !pid_name.is_char_boundary(end) {
                    end -= 1;
                }
                self.names.push(pid_name[..end].to_string());
                self.names.len() - 1
            }
            None => return false,
        };
        self.deltas.push(Delta {
            info_hash: l.info_hash,
            peer: l.peer,
            seeder: l.flags & SEEDER != 0,
            completed: l.flags & COMPLETED != 0,
            stopped: l.flags & STOPPED != 0,
            expires,
            name: name as u16,
        });
        true
    }

    /// The wire form (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.names.len() * 8 + self.deltas.len() * 33);
        out.push(VERSION);
        out.extend_from_slice(&self.node.to_le_bytes());
        out.extend_from_slice(&(self.names.len() as u16).to_le_bytes());
        for n in &self.names {
            out.push(n.len() as u8);
            out.extend_from_slice(n.as_bytes());
        }
        out.extend_from_slice(&(self.deltas.len() as u32).to_le_bytes());
        for d in &self.deltas {
            out.extend_from_slice(&d.info_hash.0);
            let mut flags = (u8::from(d.seeder) * SEEDER)
                | (u8::from(d.completed) * COMPLETED)
                | (u8::from(d.stopped) * STOPPED);
            match d.peer {
                SocketAddr::V4(a) => {
                    out.push(flags);
                    out.extend_from_slice(&a.ip().octets());
                }
                SocketAddr::V6(a) => {
                    flags |= V6;
                    out.push(flags);
                    out.extend_from_slice(&a.ip().octets());
                }
            }
            out.extend_from_slice(&d.peer.port().to_be_bytes());
            out.extend_from_slice(&d.expires.to_le_bytes());
            out.extend_from_slice(&d.name.to_le_bytes());
        }
        out
    }

    /// Reads a batch; every length is checked against the bytes there are.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let node = u64::from_le_bytes(r.array()?);
        let names = u16::from_le_bytes(r.array()?);
        let mut batch = Batch::new(node);
        for _ in 0..names {
            let len = r.u8()?;
            let name =
                std::str::from_utf8(r.take(usize::from(len))?).map_err(|_| DecodeError::Name)?;
            batch.names.push(name.to_string());
        }
        let count = u32::from_le_bytes(r.array()?) as usize;
        // At least 33 bytes each: a count the bytes cannot hold allocates nothing.
        batch.deltas.reserve(count.min(r.0.len() / 33));
        for _ in 0..count {
            let info_hash = InfoHash(r.array()?);
            let flags = r.u8()?;
            let ip: std::net::IpAddr = if flags & V6 != 0 {
                Ipv6Addr::from(r.array::<16>()?).into()
            } else {
                Ipv4Addr::from(r.array::<4>()?).into()
            };
            let port = u16::from_be_bytes(r.array()?);
            let peer = match ip {
                std::net::IpAddr::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, port)),
                std::net::IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
            };
            let expires = u32::from_le_bytes(r.array()?);
            let name = u16::from_le_bytes(r.array()?);
            if usize::from(name) >= batch.names.len() {
                return Err(DecodeError::NameIndex(name));
            }
            batch.deltas.push(Delta {
                info_hash,
                peer,
                seeder: flags & SEEDER != 0,
                completed: flags & COMPLETED != 0,
                stopped: flags & STOPPED != 0,
                expires,
                name,
            });
        }
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing(r.0.len()));
        }
        Ok(batch)
    }
}

/// A cursor over bytes that fails instead of reading past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Short);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn announce(peer: &str, left: u64, event: Event) -> Announce {
        Announce {
            info_hash: InfoHash([7; 20]),
            peer: peer.parse().expect("addr"),
            event,
            left,
            numwant: 50,
        }
    }

    #[test]
    fn a_batch_round_trips_both_families_and_every_flag() {
        let mut b = Batch::new(42);
        assert!(b.push(
            &Local::of(&announce("10.0.0.1:6881", 0, Event::Completed)),
            1000,
            "pid-a"
        ));
        assert!(b.push(
            &Local::of(&announce("[2001:db8::1]:51413", 5, Event::Stopped)),
            1001,
            "pid-b"
        ));
        assert!(b.push(
            &Local::of(&announce("10.0.0.2:1", 5, Event::None)),
            1002,
            "pid-a"
        ));
        assert_eq!(b.names, ["pid-a", "pid-b"]);
        let bytes = b.encode();
        assert_eq!(bytes.len(), 1 + 8 + 2 + 6 + 6 + 4 + 33 * 2 + 45);
        let back = Batch::decode(&bytes).expect("decodes");
        assert_eq!(back, b);
        assert!(back.deltas[0].seeder && back.deltas[0].completed && !back.deltas[0].stopped);
        assert!(!back.deltas[1].seeder && back.deltas[1].stopped);
        assert_eq!(back.deltas[2].name, 0);
    }

    #[test]
    fn bad_bytes_are_refused_not_misread() {
        let mut b = Batch::new(1);
        b.push(
            &Local::of(&announce("10.0.0.1:6881", 0, Event::None)),
            9,
            "p",
        );
        let bytes = b.encode();
        for cut in 0..bytes.len() {
            assert!(Batch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Batch::decode(&long), Err(DecodeError::Trailing(1)));
        let mut version = bytes.clone();
        version[0] = 9;
        assert_eq!(Batch::decode(&version), Err(DecodeError::Version(9)));
        let mut index = bytes;
        let at = index.len() - 2;
        index[at] = 5;
        assert_eq!(Batch::decode(&index), Err(DecodeError::NameIndex(5)));
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Batch::decode(&bytes);
        }
    }
}
