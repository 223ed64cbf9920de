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

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::types::{normalize_addr, Event, InfoHash, PeerId, SwarmStats};

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
// Requests
// ---------------------------------------------------------------------------------------------

/// A parsed request. Borrows the packet only for a scrape's info hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Connect(ConnectRequest),
    Announce(AnnounceRequest),
    Scrape(ScrapeRequest<'a>),
}

impl Request<'_> {
    /// The transaction id every answer must echo.
    pub fn transaction_id(&self) -> TransactionId {
        match self {
            Self::Connect(r) => r.transaction_id,
            Self::Announce(r) => r.transaction_id,
            Self::Scrape(r) => r.transaction_id,
        }
    }

    /// The connection id to validate; `None` for a connect request, which has none yet.
    pub fn connection_id(&self) -> Option<ConnectionId> {
        match self {
            Self::Connect(_) => None,
            Self::Announce(r) => Some(r.connection_id),
            Self::Scrape(r) => Some(r.connection_id),
        }
    }

    /// Appends the wire form to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        match self {
            Self::Connect(r) => r.write(buf),
            Self::Announce(r) => r.write(buf),
            Self::Scrape(r) => r.write(buf),
        }
    }
}

/// Connect (action 0): asks for a connection id.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    pub transaction_id: TransactionId,
}

impl ConnectRequest {
    /// Appends the wire form to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        put_u64(buf, PROTOCOL_ID);
        put_u32(buf, ACTION_CONNECT);
        put_u32(buf, self.transaction_id.0);
    }
}

/// Announce (action 1), the fixed 98 bytes.
///
/// BEP 41 options after byte 98 are checked and ignored: EndOfOptions (0) ends the list, NOP (1)
/// is skipped, URLData (2) is a length byte and that many bytes (the announce URL's path and
/// query, which this tracker does not use). Every other option type is, like URLData, a length
/// byte and data, and is skipped the same way so that a newer client still gets an answer. A
/// length or data running past the packet is an error.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub connection_id: ConnectionId,
    pub transaction_id: TransactionId,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub downloaded: u64,
    /// Bytes left; a client's `-1` ("unknown") reads as `u64::MAX`, a leecher.
    pub left: u64,
    pub uploaded: u64,
    pub event: Event,
    /// The IPv4 address the client claims, 0 for "use the source address". Untrusted: the
    /// server ignores it unless configured otherwise.
    pub ip: u32,
    /// Lets a tracker match a client's IPv4 and IPv6 announces.
    pub key: u32,
    /// Peers wanted; any negative value means "tracker default" (see [`Self::peers_wanted`]).
    pub numwant: i32,
    /// The client's listening (TCP) port.
    pub port: u16,
}

impl AnnounceRequest {
    /// `numwant` as a count, or `None` when the client leaves it to the tracker (negative).
    pub fn peers_wanted(&self) -> Option<u32> {
        u32::try_from(self.numwant).ok()
    }

    /// The claimed `ip`, or `None` when the client sent 0.
    pub fn claimed_ip(&self) -> Option<Ipv4Addr> {
        (self.ip != 0).then(|| Ipv4Addr::from(self.ip))
    }

    /// Appends the wire form (98 bytes, no BEP 41 options) to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.connection_id.0);
        put_u32(buf, ACTION_ANNOUNCE);
        put_u32(buf, self.transaction_id.0);
        buf.extend_from_slice(&self.info_hash.0);
        buf.extend_from_slice(&self.peer_id.0);
        put_u64(buf, self.downloaded);
        put_u64(buf, self.left);
        put_u64(buf, self.uploaded);
        put_u32(buf, event_to_wire(self.event));
        put_u32(buf, self.ip);
        put_u32(buf, self.key);
        buf.extend_from_slice(&self.numwant.to_be_bytes());
        buf.extend_from_slice(&self.port.to_be_bytes());
    }
}

/// Scrape (action 2): 1 to [`MAX_SCRAPE_TORRENTS`] info hashes once parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeRequest<'a> {
    pub connection_id: ConnectionId,
    pub transaction_id: TransactionId,
    pub info_hashes: InfoHashes<'a>,
}

impl ScrapeRequest<'_> {
    /// Appends the wire form to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.connection_id.0);
        put_u32(buf, ACTION_SCRAPE);
        put_u32(buf, self.transaction_id.0);
        for hash in self.info_hashes.iter() {
            buf.extend_from_slice(&hash.0);
        }
    }
}

/// A scrape's info hashes without copying them: a view of the packet once parsed, or a slice of
/// [`InfoHash`] when a client builds a request.
#[derive(Copy, Clone)]
pub struct InfoHashes<'a>(HashesRepr<'a>);

#[derive(Copy, Clone)]
enum HashesRepr<'a> {
    /// Packet bytes, a whole number of 20-byte hashes.
    Wire(&'a [u8]),
    Typed(&'a [InfoHash]),
}

impl<'a> InfoHashes<'a> {
    /// Wraps hashes a client wants to scrape. Not bounded here, so tests can build oversized
    /// requests; [`parse_request`] refuses more than [`MAX_SCRAPE_TORRENTS`].
    pub fn from_slice(hashes: &'a [InfoHash]) -> Self {
        Self(HashesRepr::Typed(hashes))
    }

    /// How many hashes.
    pub fn len(&self) -> usize {
        match self.0 {
            HashesRepr::Wire(bytes) => bytes.len() / INFO_HASH_LEN,
            HashesRepr::Typed(hashes) => hashes.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th hash, in request order (the answer must keep that order).
    pub fn get(&self, i: usize) -> Option<InfoHash> {
        match self.0 {
            HashesRepr::Wire(bytes) => {
                let start = i.checked_mul(INFO_HASH_LEN)?;
                let chunk = bytes.get(start..start.checked_add(INFO_HASH_LEN)?)?;
                <[u8; INFO_HASH_LEN]>::try_from(chunk).ok().map(InfoHash)
            }
            HashesRepr::Typed(hashes) => hashes.get(i).copied(),
        }
    }

    /// The hashes in request order.
    pub fn iter(&self) -> impl Iterator<Item = InfoHash> + 'a {
        let this = *self;
        (0..self.len()).filter_map(move |i| this.get(i))
    }
}

impl PartialEq for InfoHashes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for InfoHashes<'_> {}

impl fmt::Debug for InfoHashes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Why a request could not be parsed, and whether it can be answered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestParseError {
    /// The transaction id was read: answer with an error (see [`Self::error_response`]).
    #[error("{err}")]
    Sendable {
        /// Bytes 0..8 as sent; for a connect request, whatever stood in place of the protocol id.
        connection_id: ConnectionId,
        transaction_id: TransactionId,
        err: &'static str,
    },
    /// Too short to carry a transaction id: drop silently.
    #[error("packet too short to answer")]
    Unsendable,
}

impl RequestParseError {
    /// The error answer to send, if the packet can be answered at all.
    pub fn error_response(&self) -> Option<ErrorResponse<'static>> {
        match *self {
            Self::Sendable {
                transaction_id,
                err,
                ..
            } => Some(ErrorResponse {
                transaction_id,
                message: err,
            }),
            Self::Unsendable => None,
        }
    }
}

/// The 16 bytes every request starts with.
#[derive(Copy, Clone)]
struct Header {
    connection_id: ConnectionId,
    action: u32,
    transaction_id: TransactionId,
}

impl Header {
    fn error(self, err: &'static str) -> RequestParseError {
        RequestParseError::Sendable {
            connection_id: self.connection_id,
            transaction_id: self.transaction_id,
            err,
        }
    }
}

/// Parses one request datagram. Never panics and never allocates.
pub fn parse_request(bytes: &[u8]) -> Result<Request<'_>, RequestParseError> {
    let mut reader = Reader(bytes);
    let header = read_header(&mut reader).ok_or(RequestParseError::Unsendable)?;
    match header.action {
        ACTION_CONNECT => parse_connect(header),
        ACTION_ANNOUNCE => parse_announce(header, reader).map(Request::Announce),
        ACTION_SCRAPE => parse_scrape(header, reader.rest()).map(Request::Scrape),
        _ => Err(header.error("unknown action")),
    }
}

fn read_header(reader: &mut Reader<'_>) -> Option<Header> {
    Some(Header {
        connection_id: ConnectionId(reader.u64()?),
        action: reader.u32()?,
        transaction_id: TransactionId(reader.u32()?),
    })
}

fn parse_connect(header: Header) -> Result<Request<'static>, RequestParseError> {
    if header.connection_id.0 != PROTOCOL_ID {
        return Err(header.error("bad protocol id"));
    }
    Ok(Request::Connect(ConnectRequest {
        transaction_id: header.transaction_id,
    }))
}

fn parse_announce(
    header: Header,
    mut body: Reader<'_>,
) -> Result<AnnounceRequest, RequestParseError> {
    let (mut announce, event) =
        read_announce_fields(header, &mut body).ok_or(header.error("announce too short"))?;
    announce.event = event_from_wire(event).ok_or(header.error("bad event"))?;
    check_options(body.rest()).map_err(|err| header.error(err))?;
    Ok(announce)
}

/// Reads the fixed fields after the header; the raw event is returned apart, to be checked.
fn read_announce_fields(header: Header, body: &mut Reader<'_>) -> Option<(AnnounceRequest, u32)> {
    let info_hash = InfoHash(body.array()?);
    let peer_id = PeerId(body.array()?);
    let (downloaded, left, uploaded) = (body.u64()?, body.u64()?, body.u64()?);
    let event = body.u32()?;
    let (ip, key, numwant, port) = (body.u32()?, body.u32()?, body.i32()?, body.u16()?);
    let announce = AnnounceRequest {
        connection_id: header.connection_id,
        transaction_id: header.transaction_id,
        info_hash,
        peer_id,
        downloaded,
        left,
        uploaded,
        event: Event::None,
        ip,
        key,
        numwant,
        port,
    };
    Some((announce, event))
}

/// Walks the BEP 41 option list after a fixed announce; nothing in it is used, but a list that
/// runs past the packet is reported rather than guessed at.
fn check_options(mut options: &[u8]) -> Result<(), &'static str> {
    while let Some((&kind, rest)) = options.split_first() {
        options = match kind {
            OPTION_END => return Ok(()),
            OPTION_NOP => rest,
            // URLData and any newer option: a length byte, then that many bytes.
            _ => skip_option_data(rest)?,
        };
    }
    Ok(())
}

fn skip_option_data(bytes: &[u8]) -> Result<&[u8], &'static str> {
    let (&len, data) = bytes.split_first().ok_or("BEP 41 option without length")?;
    data.get(usize::from(len)..)
        .ok_or("BEP 41 option data truncated")
}

fn parse_scrape(header: Header, hashes: &[u8]) -> Result<ScrapeRequest<'_>, RequestParseError> {
    if hashes.is_empty() {
        return Err(header.error("scrape without info hash"));
    }
    if hashes.len() % INFO_HASH_LEN != 0 {
        return Err(header.error("scrape with partial info hash"));
    }
    if hashes.len() / INFO_HASH_LEN > MAX_SCRAPE_TORRENTS {
        return Err(header.error("scrape of over 74 info hashes"));
    }
    Ok(ScrapeRequest {
        connection_id: header.connection_id,
        transaction_id: header.transaction_id,
        info_hashes: InfoHashes(HashesRepr::Wire(hashes)),
    })
}

fn event_from_wire(value: u32) -> Option<Event> {
    match value {
        0 => Some(Event::None),
        1 => Some(Event::Completed),
        2 => Some(Event::Started),
        3 => Some(Event::Stopped),
        _ => None,
    }
}

fn event_to_wire(event: Event) -> u32 {
    match event {
        Event::None => 0,
        Event::Completed => 1,
        Event::Started => 2,
        Event::Stopped => 3,
    }
}

// ---------------------------------------------------------------------------------------------
// Responses: encoding
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
// Responses: parsing (client side: integration tests, load generator)
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
mod tests {
    use super::*;
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

    fn sendable(err: &'static str) -> RequestParseError {
        RequestParseError::Sendable {
            connection_id: CONN,
            transaction_id: TX,
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
        assert_eq!(parse_request(&buf), Err(sendable("unknown action")));
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
                Err(sendable("announce too short"))
            );
        }
    }

    #[test]
    fn announce_with_bad_event_is_answered_with_an_error() {
        let mut bytes = announce_bytes_with_options(&[]);
        bytes[80..84].copy_from_slice(&4u32.to_be_bytes());
        assert_eq!(parse_request(&bytes), Err(sendable("bad event")));
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
            assert_eq!(parse_request(&bytes), Err(sendable(err)), "{options:?}");
        }
    }

    #[test]
    fn scrape_without_info_hash_is_refused() {
        assert_eq!(
            parse_request(&scrape_bytes(0)),
            Err(sendable("scrape without info hash"))
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
            Err(sendable("scrape of over 74 info hashes"))
        );
    }

    #[test]
    fn scrape_with_partial_info_hash_is_refused() {
        let mut bytes = scrape_bytes(2);
        bytes.pop();
        assert_eq!(
            parse_request(&bytes),
            Err(sendable("scrape with partial info hash"))
        );
    }

    #[test]
    fn parse_error_knows_its_error_answer() {
        assert_eq!(RequestParseError::Unsendable.error_response(), None);
        assert_eq!(
            sendable("bad event").error_response(),
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
        let rest = (any::<u32>(), any::<u32>(), any::<i32>(), any::<u16>());
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
}
