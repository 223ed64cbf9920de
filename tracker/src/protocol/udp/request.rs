//! Requests: connect, announce, scrape; parsed from a datagram, or written by a client.

use std::fmt;
use std::net::Ipv4Addr;

use super::*;
use crate::types::{Event, InfoHash, PeerId};

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
        /// What the datagram said it was (its action), for counting.
        kind: RequestKind,
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

/// What a request datagram says it is (its action field).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Connect,
    Announce,
    Scrape,
    /// An action BEP 15 does not define for requests.
    Unknown,
}

impl Header {
    fn error(self, err: &'static str) -> RequestParseError {
        let kind = match self.action {
            ACTION_CONNECT => RequestKind::Connect,
            ACTION_ANNOUNCE => RequestKind::Announce,
            ACTION_SCRAPE => RequestKind::Scrape,
            _ => RequestKind::Unknown,
        };
        RequestParseError::Sendable {
            connection_id: self.connection_id,
            transaction_id: self.transaction_id,
            kind,
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
    if announce.port == 0 {
        // Nobody can connect to port 0: handing out `ip:0` would waste every peer's slot.
        return Err(header.error("invalid port"));
    }
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
    // Counted before the partial-hash check: a datagram cut short by the server's read
    // buffer is over the limit, and that is what its sender must learn.
    if hashes.len() > MAX_SCRAPE_TORRENTS * INFO_HASH_LEN {
        return Err(header.error("scrape of over 74 info hashes"));
    }
    if hashes.len() % INFO_HASH_LEN != 0 {
        return Err(header.error("scrape with partial info hash"));
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
