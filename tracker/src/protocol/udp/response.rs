//! Answers: written by the server into a reused buffer, read back by clients (integration
//! tests, load generator).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::*;
use crate::types::SwarmStats;

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Connect answer: the connection id to use for the next two minutes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    pub transaction_id: TransactionId,
    pub connection_id: ConnectionId,
}

impl ConnectResponse {
    /// Appends the wire form (16 bytes) to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        put_u32(buf, ACTION_CONNECT);
        put_u32(buf, self.transaction_id.0);
        put_u64(buf, self.connection_id.0);
    }
}

/// Announce answer over peers the caller already holds in a slice. To stream peers from
/// elsewhere, use [`write_announce_header`] and [`push_peer_v4`] / [`push_peer_v6`] instead.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AnnounceResponse<'a> {
    pub transaction_id: TransactionId,
    /// Seconds until the client should announce again.
    pub interval: u32,
    pub leechers: u32,
    pub seeders: u32,
    pub peers: Peers<'a>,
}

/// The peers of an announce answer, all of the request's family.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Peers<'a> {
    V4(&'a [SocketAddrV4]),
    V6(&'a [SocketAddrV6]),
}

impl AnnounceResponse<'_> {
    /// Appends the wire form to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        write_announce_header(
            buf,
            self.transaction_id,
            self.interval,
            self.leechers,
            self.seeders,
        );
        match self.peers {
            Peers::V4(peers) => peers.iter().for_each(|&peer| push_peer_v4(buf, peer)),
            Peers::V6(peers) => peers.iter().for_each(|&peer| push_peer_v6(buf, peer)),
        }
    }
}

/// Appends the 20-byte announce answer header; peers follow with [`push_peer_v4`] or
/// [`push_peer_v6`] (one family per answer, see [`AddressFamily::of`]).
pub fn write_announce_header(
    buf: &mut Vec<u8>,
    transaction_id: TransactionId,
    interval: u32,
    leechers: u32,
    seeders: u32,
) {
    put_u32(buf, ACTION_ANNOUNCE);
    put_u32(buf, transaction_id.0);
    put_u32(buf, interval);
    put_u32(buf, leechers);
    put_u32(buf, seeders);
}

/// Appends one 6-byte IPv4 peer.
pub fn push_peer_v4(buf: &mut Vec<u8>, peer: SocketAddrV4) {
    buf.extend_from_slice(&peer.ip().octets());
    buf.extend_from_slice(&peer.port().to_be_bytes());
}

/// Appends one 18-byte IPv6 peer.
pub fn push_peer_v6(buf: &mut Vec<u8>, peer: SocketAddrV6) {
    buf.extend_from_slice(&peer.ip().octets());
    buf.extend_from_slice(&peer.port().to_be_bytes());
}

/// One torrent's line in a scrape answer.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    pub seeders: u32,
    /// Completed downloads.
    pub completed: u32,
    pub leechers: u32,
}

impl From<SwarmStats> for ScrapeStats {
    fn from(stats: SwarmStats) -> Self {
        Self {
            seeders: stats.complete,
            completed: stats.downloaded,
            leechers: stats.incomplete,
        }
    }
}

/// Scrape answer over stats in a slice, in the request's order. To stream them instead, use
/// [`write_scrape_header`] and [`push_scrape_stats`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ScrapeResponse<'a> {
    pub transaction_id: TransactionId,
    pub torrents: &'a [ScrapeStats],
}

impl ScrapeResponse<'_> {
    /// Appends the wire form to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        write_scrape_header(buf, self.transaction_id);
        for &stats in self.torrents {
            push_scrape_stats(buf, stats);
        }
    }
}

/// Appends the 8-byte scrape answer header; one [`push_scrape_stats`] per requested hash follows.
pub fn write_scrape_header(buf: &mut Vec<u8>, transaction_id: TransactionId) {
    put_u32(buf, ACTION_SCRAPE);
    put_u32(buf, transaction_id.0);
}

/// Appends one torrent's 12-byte stats.
pub fn push_scrape_stats(buf: &mut Vec<u8>, stats: ScrapeStats) {
    put_u32(buf, stats.seeders);
    put_u32(buf, stats.completed);
    put_u32(buf, stats.leechers);
}

/// Error answer (action 3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse<'a> {
    pub transaction_id: TransactionId,
    /// Human-readable; keep the meaning in the first words, since it may be cut.
    pub message: &'a str,
}

impl ErrorResponse<'_> {
    /// Appends the whole answer to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        self.write_truncated(buf, usize::MAX);
    }

    /// Appends the answer cut to at most `max_len` bytes (the message is cut on a character
    /// boundary) and returns how many bytes were written. Writes nothing when `max_len` cannot
    /// hold the 8-byte header.
    ///
    /// Use the request's length as `max_len` whenever the request's connection id is not valid:
    /// the source address may be spoofed, and the answer must not amplify.
    pub fn write_truncated(&self, buf: &mut Vec<u8>, max_len: usize) -> usize {
        let Some(room) = max_len.checked_sub(ERROR_HEADER_LEN) else {
            return 0;
        };
        let message = truncate_on_char_boundary(self.message, room);
        put_u32(buf, ACTION_ERROR);
        put_u32(buf, self.transaction_id.0);
        buf.extend_from_slice(message.as_bytes());
        ERROR_HEADER_LEN + message.len()
    }
}

fn truncate_on_char_boundary(text: &str, max_len: usize) -> &str {
    if text.len() <= max_len {
        return text;
    }
    let end = (0..=max_len)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

// ---------------------------------------------------------------------------------------------
// Parsing (client side)
// ---------------------------------------------------------------------------------------------

/// A parsed answer; borrows the packet for peer lists, stats and messages.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ResponseView<'a> {
    Connect(ConnectResponse),
    Announce(AnnounceResponseView<'a>),
    Scrape(ScrapeResponseView<'a>),
    Error(ErrorResponseView<'a>),
}

/// A parsed announce answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AnnounceResponseView<'a> {
    pub transaction_id: TransactionId,
    pub interval: u32,
    pub leechers: u32,
    pub seeders: u32,
    pub peers: CompactPeers<'a>,
}

/// The peer list of an announce answer, read in place.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CompactPeers<'a> {
    family: AddressFamily,
    /// A whole number of peers.
    bytes: &'a [u8],
}

impl<'a> CompactPeers<'a> {
    /// How many peers.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.family.peer_len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The peers in answer order.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        let family = self.family;
        self.bytes
            .chunks_exact(family.peer_len())
            .filter_map(move |chunk| read_peer(family, chunk))
    }
}

fn read_peer(family: AddressFamily, chunk: &[u8]) -> Option<SocketAddr> {
    let mut reader = Reader(chunk);
    Some(match family {
        AddressFamily::V4 => {
            let ip = Ipv4Addr::from(reader.array::<4>()?);
            SocketAddr::V4(SocketAddrV4::new(ip, reader.u16()?))
        }
        AddressFamily::V6 => {
            let ip = Ipv6Addr::from(reader.array::<16>()?);
            SocketAddr::V6(SocketAddrV6::new(ip, reader.u16()?, 0, 0))
        }
    })
}

/// A parsed scrape answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ScrapeResponseView<'a> {
    pub transaction_id: TransactionId,
    /// A whole number of 12-byte entries.
    stats: &'a [u8],
}

impl<'a> ScrapeResponseView<'a> {
    /// How many torrents.
    pub fn len(&self) -> usize {
        self.stats.len() / SCRAPE_STATS_LEN
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// The stats in request order.
    pub fn iter(&self) -> impl Iterator<Item = ScrapeStats> + 'a {
        self.stats
            .chunks_exact(SCRAPE_STATS_LEN)
            .filter_map(|chunk| {
                let mut reader = Reader(chunk);
                Some(ScrapeStats {
                    seeders: reader.u32()?,
                    completed: reader.u32()?,
                    leechers: reader.u32()?,
                })
            })
    }
}

/// A parsed error answer. The message is raw bytes: other trackers do not promise UTF-8.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponseView<'a> {
    pub transaction_id: TransactionId,
    pub message: &'a [u8],
}

/// Why an answer could not be parsed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ResponseParseError(pub &'static str);

/// Parses one answer. `family` is that of the socket the request went out on, which fixes the
/// peer format of an announce answer. Never panics.
pub fn parse_response(
    bytes: &[u8],
    family: AddressFamily,
) -> Result<ResponseView<'_>, ResponseParseError> {
    let mut reader = Reader(bytes);
    let too_short = ResponseParseError("response too short");
    let action = reader.u32().ok_or(too_short)?;
    let transaction_id = TransactionId(reader.u32().ok_or(too_short)?);
    match action {
        ACTION_CONNECT => {
            let connection_id = ConnectionId(reader.u64().ok_or(too_short)?);
            Ok(ResponseView::Connect(ConnectResponse {
                transaction_id,
                connection_id,
            }))
        }
        ACTION_ANNOUNCE => parse_announce_response(transaction_id, reader, family),
        ACTION_SCRAPE => parse_scrape_response(transaction_id, reader.rest()),
        ACTION_ERROR => Ok(ResponseView::Error(ErrorResponseView {
            transaction_id,
            message: reader.rest(),
        })),
        _ => Err(ResponseParseError("unknown action")),
    }
}

fn parse_announce_response(
    transaction_id: TransactionId,
    mut reader: Reader<'_>,
    family: AddressFamily,
) -> Result<ResponseView<'_>, ResponseParseError> {
    let too_short = ResponseParseError("announce response too short");
    let interval = reader.u32().ok_or(too_short)?;
    let leechers = reader.u32().ok_or(too_short)?;
    let seeders = reader.u32().ok_or(too_short)?;
    let bytes = reader.rest();
    if bytes.len() % family.peer_len() != 0 {
        return Err(ResponseParseError("announce response with partial peer"));
    }
    Ok(ResponseView::Announce(AnnounceResponseView {
        transaction_id,
        interval,
        leechers,
        seeders,
        peers: CompactPeers { family, bytes },
    }))
}

fn parse_scrape_response(
    transaction_id: TransactionId,
    stats: &[u8],
) -> Result<ResponseView<'_>, ResponseParseError> {
    if stats.len() % SCRAPE_STATS_LEN != 0 {
        return Err(ResponseParseError("scrape response with partial entry"));
    }
    Ok(ResponseView::Scrape(ScrapeResponseView {
        transaction_id,
        stats,
    }))
}
