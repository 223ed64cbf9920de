//! BEP 15 UDP tracker codec (pure): bytes in, typed request out; typed response in, bytes out.
//!
//! No sockets, no clocks, no heap allocation on the server's path:
//! - [`parse_request`] reads a datagram into stack types ([`Request`] borrows the packet for the
//!   info hashes of a scrape); [`Request::write`] encodes one for tests and load generators.
//! - Responses are appended to a caller-owned `Vec<u8>` that a worker clears and reuses for every
//!   packet. Announce and scrape bodies can be streamed ([`write_announce_header`] then
//!   [`push_peer_v4`] / [`push_peer_v6`]; [`write_scrape_header`] then [`push_scrape_stats`]), so
//!   the server never collects peers into a list of its own first.
//! - [`parse_response`] reads answers back (integration tests, load generator).
//!
//! Decisions, where BEP 15 leaves room:
//! - A datagram shorter than 16 bytes has no transaction id to answer with: it is
//!   [`RequestParseError::Unsendable`] and is dropped silently. Every other defect is
//!   [`RequestParseError::Sendable`] with a short `&'static str`, so garbage costs no allocation.
//! - Bytes after the 16-byte connect request are ignored: BEP 15 says packets may grow.
//! - Bytes after the 98-byte announce are BEP 41 options (see [`AnnounceRequest`]).
//! - Scrape takes 1 to [`MAX_SCRAPE_TORRENTS`] info hashes. More is refused with an error rather
//!   than answering the first 74: the answer stays bounded and the client learns its request was
//!   too big instead of silently missing stats. Zero hashes (a full scrape) is refused too.
//! - Amplification: an error answer to a packet whose connection id is not valid must not be
//!   larger than that packet, or a spoofed source turns the tracker into an amplifier. The server
//!   enforces it with [`ErrorResponse::write_truncated`].
//! - The answer format follows the family of the request's source address, an IPv4-mapped IPv6
//!   source (dual-stack socket) counting as IPv4: see [`AddressFamily::of`].

//!
//! Layout: [`request`] (parsing and writing requests), [`response`] (writing and reading
//! answers); the wire constants, ids and byte helpers they share are here.

use std::net::SocketAddr;

use crate::types::normalize_addr;

mod request;
mod response;

pub use request::*;
pub use response::*;

/// The magic `connection_id` of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Most info hashes one scrape may carry (BEP 15: "up to about 74", which keeps a request
/// within a 1500-byte MTU).
pub const MAX_SCRAPE_TORRENTS: usize = 74;
/// Bytes before the transaction id is known: shorter packets cannot be answered.
pub const MIN_REQUEST_LEN: usize = 16;
/// Length of the fixed part of an announce request; BEP 41 options may follow.
pub const ANNOUNCE_REQUEST_LEN: usize = 98;
/// Length of an error answer without its message.
pub const ERROR_HEADER_LEN: usize = 8;

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;

const INFO_HASH_LEN: usize = 20;
const SCRAPE_STATS_LEN: usize = 12;

/// The tracker-issued id that proves a client receives packets at its source address.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// The client-chosen id that pairs an answer with its request.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransactionId(pub u32);

/// Which peer format an announce answer uses: 6 bytes per peer for IPv4, 18 for IPv6.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AddressFamily {
    V4,
    V6,
}

impl AddressFamily {
    /// The answer format for a request from `src`. An IPv4-mapped IPv6 source is an IPv4 client
    /// seen through a dual-stack socket: it expects 6-byte peers.
    pub fn of(src: SocketAddr) -> Self {
        match normalize_addr(src) {
            SocketAddr::V4(_) => Self::V4,
            SocketAddr::V6(_) => Self::V6,
        }
    }

    /// Bytes per peer in an announce answer.
    pub fn peer_len(self) -> usize {
        match self {
            Self::V4 => 6,
            Self::V6 => 18,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------------------------

/// Big-endian reads that return `None` at the end of the packet instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

fn put_u32(buf: &mut Vec<u8>, value: u32) {
    buf.extend_from_slice(&value.to_be_bytes());
}

fn put_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests;
