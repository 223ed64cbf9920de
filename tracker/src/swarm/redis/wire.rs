//! How swarms are written in Redis: bucket ids, set members, event and family codes, and the
//! connection URL (parsed, and redacted for logs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use ::redis::RedisResult;

use super::{Backend, CLUSTER_SCHEME};
use crate::types::{Event, Families};

/// The URL with any user and password replaced by `***`. Only the authority (between `://`
/// and the next `/`) can hold credentials: an `@` in the path or query is left alone.
pub(super) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_string(),
    }
}

/// The backend a store (or cluster) URL names: one Redis, or a Redis Cluster's seed nodes.
pub(crate) fn open_backend(url: &str) -> RedisResult<Backend> {
    match url.strip_prefix(CLUSTER_SCHEME) {
        Some(rest) => {
            let nodes: Vec<String> = rest
                .trim_end_matches('/')
                .split(',')
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}/"))
                .collect();
            ::redis::cluster::ClusterClient::builder(nodes)
                .retries(2)
                .build()
                .map(Backend::Cluster)
        }
        None => ::redis::Client::open(url).map(Backend::Single),
    }
}

/// A bucket id: `<pid name>|<4|6><s|l>` (PID names never contain `|`).
pub(super) fn bucket_id(pid: &str, v6: bool, seeders: bool) -> String {
    let mut id = String::with_capacity(pid.len() + 3);
    id.push_str(pid);
    id.push('|');
    id.push(if v6 { '6' } else { '4' });
    id.push(if seeders { 's' } else { 'l' });
    id
}

/// (PID name, v6, seeders) of a bucket id.
pub(super) fn parse_bucket_id(id: &[u8]) -> Option<(&str, bool, bool)> {
    let [head @ .., b'|', fam, kind] = id else {
        return None;
    };
    let v6 = match fam {
        b'4' => false,
        b'6' => true,
        _ => return None,
    };
    let seeders = match kind {
        b's' => true,
        b'l' => false,
        _ => return None,
    };
    Some((std::str::from_utf8(head).ok()?, v6, seeders))
}

/// A peer as a set member: address bytes then port, big-endian (the compact form).
pub(super) fn member(addr: SocketAddr) -> Vec<u8> {
    let mut m = Vec::with_capacity(18);
    match addr.ip() {
        IpAddr::V4(ip) => m.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => m.extend_from_slice(&ip.octets()),
    }
    m.extend_from_slice(&addr.port().to_be_bytes());
    m
}

pub(super) fn parse_member(m: &[u8]) -> Option<SocketAddr> {
    match m.len() {
        6 => {
            let ip: [u8; 4] = m[..4].try_into().ok()?;
            let port = u16::from_be_bytes([m[4], m[5]]);
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        18 => {
            let ip: [u8; 16] = m[..16].try_into().ok()?;
            let port = u16::from_be_bytes([m[16], m[17]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

pub(super) fn event_code(e: Event) -> &'static str {
    match e {
        Event::None => "n",
        Event::Started => "s",
        Event::Completed => "c",
        Event::Stopped => "x",
    }
}

pub(super) fn families_code(f: Families) -> &'static str {
    match f {
        Families::Both => "b",
        Families::V4 => "4",
        Families::V6 => "6",
    }
}
