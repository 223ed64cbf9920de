//! HTTP tracker codec (BEP 3 announce, BEP 23 compact, BEP 7 IPv6, BEP 48 scrape).
//!
//! Query values are percent-encoded raw bytes (an info hash is 20 arbitrary bytes, not UTF-8),
//! so queries are decoded here by hand rather than by a form decoder. Errors are `&'static str`
//! failure reasons: garbage input allocates nothing.

use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};

use percent_encoding::percent_decode;

use super::bencode::Writer;
use crate::types::{Event, InfoHash, PeerId, SwarmStats};

/// A parsed `GET /announce` query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceQuery {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    /// `None` when absent; negative values mean "default" too.
    pub numwant: Option<i64>,
    /// `compact=0` asks for the dictionary peer list.
    pub compact: bool,
    /// The client-supplied `ip` (ignored unless configured to trust it).
    pub ip: Option<IpAddr>,
}

/// Splits a query string into decoded (key, value) pairs.
fn pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        })
}

/// Decodes a percent-encoded value into `out`, refusing more than `N` bytes.
fn decode_exact<const N: usize>(raw: &[u8], what: &'static str) -> Result<[u8; N], &'static str> {
    let mut out = [0u8; N];
    let mut n = 0;
    for b in percent_decode(raw) {
        if n == N {
            return Err(what);
        }
        out[n] = b;
        n += 1;
    }
    if n != N {
        return Err(what);
    }
    Ok(out)
}

/// A short ASCII value (numbers, event names), decoded into a stack buffer.
fn decode_small(raw: &[u8]) -> Option<([u8; 40], usize)> {
    let mut out = [0u8; 40];
    let mut n = 0;
    for b in percent_decode(raw) {
        if n == out.len() {
            return None;
        }
        out[n] = b;
        n += 1;
    }
    Some((out, n))
}

fn number<T: std::str::FromStr>(raw: &[u8], err: &'static str) -> Result<T, &'static str> {
    let (buf, n) = decode_small(raw).ok_or(err)?;
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(err)
}

fn event(raw: &[u8]) -> Result<Event, &'static str> {
    let (buf, n) = decode_small(raw).ok_or("invalid event")?;
    match &buf[..n] {
        b"" | b"empty" | b"paused" => Ok(Event::None),
        b"started" => Ok(Event::Started),
        b"completed" => Ok(Event::Completed),
        b"stopped" => Ok(Event::Stopped),
        _ => Err("invalid event"),
    }
}

/// Parses an announce query string (the part after `?`).
pub fn parse_announce(query: &[u8]) -> Result<AnnounceQuery, &'static str> {
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut left = None;
    let mut q = AnnounceQuery {
        info_hash: InfoHash([0; 20]),
        peer_id: PeerId([0; 20]),
        port: 0,
        uploaded: 0,
        downloaded: 0,
        left: 0,
        event: Event::None,
        numwant: None,
        compact: true,
        ip: None,
    };
    for (key, value) in pairs(query) {
        match key {
            b"info_hash" if info_hash.is_none() => {
                info_hash = Some(decode_exact::<20>(
                    value,
                    "invalid info_hash: must be 20 bytes",
                )?)
            }
            b"info_hash" => return Err("more than one info_hash in an announce"),
            b"peer_id" => {
                peer_id = Some(decode_exact::<20>(
                    value,
                    "invalid peer_id: must be 20 bytes",
                )?)
            }
            b"port" => port = Some(number::<u16>(value, "invalid port")?),
            b"uploaded" => q.uploaded = number(value, "invalid uploaded")?,
            b"downloaded" => q.downloaded = number(value, "invalid downloaded")?,
            b"left" => left = Some(number(value, "invalid left")?),
            b"event" => q.event = event(value)?,
            b"numwant" => q.numwant = Some(number(value, "invalid numwant")?),
            b"compact" => q.compact = value != b"0",
            b"ip" => q.ip = ip(value),
            _ => {}
        }
    }
    q.info_hash = InfoHash(info_hash.ok_or("missing info_hash")?);
    q.peer_id = PeerId(peer_id.ok_or("missing peer_id")?);
    q.port = port.ok_or("missing port")?;
    if q.port == 0 {
        return Err("invalid port");
    }
    q.left = left.ok_or("missing left")?;
    Ok(q)
}

fn ip(raw: &[u8]) -> Option<IpAddr> {
    let (buf, n) = decode_small(raw)?;
    std::str::from_utf8(&buf[..n]).ok()?.parse().ok()
}

/// Parses a scrape query into `out`; more than `max` hashes is an error.
pub fn parse_scrape(query: &[u8], max: usize, out: &mut Vec<InfoHash>) -> Result<(), &'static str> {
    out.clear();
    for (key, value) in pairs(query) {
        if key == b"info_hash" {
            if out.len() == max {
                return Err("too many info_hash values in one scrape");
            }
            out.push(InfoHash(decode_exact::<20>(
                value,
                "invalid info_hash: must be 20 bytes",
            )?));
        }
    }
    if out.is_empty() {
        return Err("missing info_hash (full scrapes are not served)");
    }
    Ok(())
}

/// What an announce answer carries.
#[derive(Debug)]
pub struct AnnounceAnswer<'a> {
    pub stats: SwarmStats,
    pub interval: u32,
    pub min_interval: u32,
    pub v4: &'a [SocketAddrV4],
    pub v6: &'a [SocketAddrV6],
    pub compact: bool,
}

/// Encodes an announce answer (keys in bencode's sorted order).
pub fn encode_announce(a: &AnnounceAnswer<'_>, out: &mut Vec<u8>) {
    let mut w = Writer::new(out);
    w.dict()
        .bytes(b"complete")
        .int(a.stats.complete.into())
        .bytes(b"downloaded")
        .int(a.stats.downloaded.into())
        .bytes(b"incomplete")
        .int(a.stats.incomplete.into())
        .bytes(b"interval")
        .int(a.interval.into())
        .bytes(b"min interval")
        .int(a.min_interval.into());
    if a.compact {
        w.bytes(b"peers").bytes_header(a.v4.len() * 6);
        for p in a.v4 {
            w.raw(&compact_v4(p));
        }
        if !a.v6.is_empty() {
            w.bytes(b"peers6").bytes_header(a.v6.len() * 18);
            for p in a.v6 {
                w.raw(&compact_v6(p));
            }
        }
    } else {
        // The dictionary form (BEP 3). Peer ids are not stored (they would triple the memory
        // per peer and are not identity), so entries carry ip and port only, as BEP 23's
        // `no_peer_id` does; clients accept entries without `peer id`.
        w.bytes(b"peers").list();
        let entries = a.v4.iter().map(|p| (IpAddr::V4(*p.ip()), p.port()));
        let entries = entries.chain(a.v6.iter().map(|p| (IpAddr::V6(*p.ip()), p.port())));
        for (ip, port) in entries {
            w.dict().bytes(b"ip").bytes(ip.to_string().as_bytes());
            w.bytes(b"port").int(port.into()).end();
        }
        w.end();
    }
    w.end();
}

/// Encodes a scrape answer: one entry per requested hash (unknown hashes are all zeros).
pub fn encode_scrape(entries: &[(InfoHash, SwarmStats)], out: &mut Vec<u8>) {
    let mut w = Writer::new(out);
    w.dict().bytes(b"files").dict();
    let mut sorted: Vec<&(InfoHash, SwarmStats)> = entries.iter().collect();
    sorted.sort_by_key(|(h, _)| *h);
    sorted.dedup_by_key(|(h, _)| *h);
    for (hash, s) in sorted {
        w.bytes(&hash.0).dict();
        w.bytes(b"complete").int(s.complete.into());
        w.bytes(b"downloaded").int(s.downloaded.into());
        w.bytes(b"incomplete").int(s.incomplete.into());
        w.end();
    }
    w.end().end();
}

/// BEP 23 compact IPv4 peer: 4 address bytes, 2 port bytes, network order.
pub fn compact_v4(p: &SocketAddrV4) -> [u8; 6] {
    let mut b = [0u8; 6];
    b[..4].copy_from_slice(&p.ip().octets());
    b[4..].copy_from_slice(&p.port().to_be_bytes());
    b
}

/// BEP 7 compact IPv6 peer: 16 address bytes, 2 port bytes, network order.
pub fn compact_v6(p: &SocketAddrV6) -> [u8; 18] {
    let mut b = [0u8; 18];
    b[..16].copy_from_slice(&p.ip().octets());
    b[16..].copy_from_slice(&p.port().to_be_bytes());
    b
}

/// Decodes a compact IPv4 peer list (for clients and tests); `None` if the length is wrong.
pub fn decode_compact_v4(b: &[u8]) -> Option<Vec<SocketAddrV4>> {
    if b.len() % 6 != 0 {
        return None;
    }
    Some(
        b.chunks_exact(6)
            .map(|c| {
                SocketAddrV4::new(
                    [c[0], c[1], c[2], c[3]].into(),
                    u16::from_be_bytes([c[4], c[5]]),
                )
            })
            .collect(),
    )
}

/// Decodes a compact IPv6 peer list; `None` if the length is wrong.
pub fn decode_compact_v6(b: &[u8]) -> Option<Vec<SocketAddrV6>> {
    if b.len() % 18 != 0 {
        return None;
    }
    Some(
        b.chunks_exact(18)
            .map(|c| {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&c[..16]);
                SocketAddrV6::new(ip.into(), u16::from_be_bytes([c[16], c[17]]), 0, 0)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
