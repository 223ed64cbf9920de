//! Per-source quotas: what one host may take of the store, so that no single address (or IPv6
//! /64, which one host gets whole) can fill `max_torrents` or a swarm and lock everyone else out
//! for the peer timeout.
//!
//! - **New torrents per source per minute** ([`SourceBudget`]): checked only when an announce
//!   would add a torrent, so the path every other announce takes does not see it. One host can
//!   then hold at most `new_torrents_per_source x peer_timeout / 60` torrents.
//! - **Peers per source per swarm** (`swarm.max_peers_per_source`): checked by the store when
//!   an announce would add a peer (the memory store counts a source's peers on the lookup it
//!   does anyway; see `memory::family`).
//!
//! A source is an IPv4 address or an IPv6 /64 ([`source_of`]); IPv4-mapped IPv6 addresses
//! count as their IPv4 address.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;

/// The highest `swarm.max_peers_per_source` accepted: the memory store counts a source's peers
/// in a large swarm in 8-bit cells (see `memory::family::HostCounts`).
pub const MAX_PEERS_PER_SOURCE: u32 = 250;

/// Seconds of one budget window.
const WINDOW: u64 = 60;

/// Locks of the budget table: new torrents from different sources rarely wait for each other.
const SHARDS: usize = 64;

/// The source an address counts under: the IPv4 address (as its IPv4-mapped IPv6 form), or
/// the IPv6 /64.
pub fn source_of(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits() & !u128::from(u64::MAX),
    }
}

/// Source -> (window, torrents added in it).
type Table = HashMap<u128, (u64, u32)>;

/// How many new torrents each source added in the current minute. A fixed window: a source may
/// add up to twice its budget across a window boundary, never more. The table holds only
/// sources that added a torrent since the last [`SourceBudget::sweep`], so it is bounded by the
/// torrents added meanwhile (themselves bounded by `max_torrents`).
#[derive(Debug)]
pub struct SourceBudget {
    per_minute: u32,
    shards: Box<[Mutex<Table>]>,
    /// Keyed per process, so no client can aim its sources at one lock.
    hasher: foldhash::quality::RandomState,
}

impl SourceBudget {
    /// A budget of `per_minute` new torrents per source; 0 means no budget.
    pub fn new(per_minute: u32) -> Self {
        let shards = if per_minute == 0 { 0 } else { SHARDS };
        SourceBudget {
            per_minute,
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }

    /// Takes one new torrent from `ip`'s budget at time `now` (seconds); `false` when it is
    /// spent for this minute (nothing is taken then).
    pub fn take(&self, ip: IpAddr, now: u64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let source = source_of(ip);
        let window = now / WINDOW;
        let shard = self.hasher.hash_one(source) as usize % self.shards.len();
        let mut table = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        let used = table.entry(source).or_insert((window, 0));
        if used.0 != window {
            *used = (window, 0);
        }
        if used.1 >= self.per_minute {
            return false;
        }
        used.1 += 1;
        true
    }

    /// Forgets the sources of past windows (the store's sweep calls it).
    pub fn sweep(&self, now: u64) {
        let window = now / WINDOW;
        for shard in self.shards.iter() {
            let mut table = shard.lock().unwrap_or_else(|e| e.into_inner());
            table.retain(|_, used| used.0 == window);
            if table.capacity() > 4 * table.len() + 64 {
                table.shrink_to_fit();
            }
        }
    }

    /// Sources in the table (for tests).
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|t| t.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(source_of(ip("10.0.0.1")), source_of(ip("::ffff:10.0.0.1")));
        assert_ne!(source_of(ip("10.0.0.1")), source_of(ip("10.0.0.2")));
        assert_eq!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:3::1"))
        );
        // Every IPv4 address is its own source, though all mapped ones share one /64.
        assert_ne!(
            source_of(ip("::ffff:10.0.0.1")),
            source_of(ip("::ffff:10.0.0.2"))
        );
    }

    #[test]
    fn a_source_gets_its_budget_per_minute_and_others_are_not_charged() {
        let budget = SourceBudget::new(3);
        let t = 600;
        for _ in 0..3 {
            assert!(budget.take(ip("192.0.2.1"), t));
        }
        assert!(
            !budget.take(ip("192.0.2.1"), t + 59),
            "spent for this minute"
        );
        assert!(
            !budget.take(ip("::ffff:192.0.2.1"), t + 10),
            "the mapped form is the same source"
        );
        assert!(
            budget.take(ip("192.0.2.2"), t),
            "another source is not charged"
        );
        for _ in 0..3 {
            assert!(budget.take(ip("2001:db8::1"), t));
        }
        assert!(
            !budget.take(ip("2001:db8::ffff:2"), t),
            "one budget per IPv6 /64"
        );
        assert!(budget.take(ip("192.0.2.1"), t + 60), "a new minute");
        budget.sweep(t + 60);
        assert_eq!(budget.sources(), 1, "only this minute's sources are kept");
    }

    #[test]
    fn no_budget_takes_no_lock_and_refuses_nothing() {
        let budget = SourceBudget::new(0);
        for _ in 0..10_000 {
            assert!(budget.take(ip("192.0.2.1"), 0));
        }
        assert_eq!(budget.sources(), 0);
    }
}
