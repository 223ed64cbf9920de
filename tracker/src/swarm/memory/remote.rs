//! Changes made on other tracker nodes, applied to this store (see [`crate::cluster`]).
//!
//! A change is applied only when it is newer than what the store knows of that peer, newer
//! meaning a later expiry: a refresh at time t sets expiry t + timeout, so later announces
//! expire later, and a stop carries the expiry a refresh at the stop's time would have had.
//! Applying a change twice, or an old change after a newer one, therefore changes nothing.
//! What is not kept is the memory of a removal (no tombstones): a refresh older than a stop
//! that arrives after it brings the peer back until that refresh expires. Batches are read in
//! stream order, so this takes a refresh and a stop of one peer made on two nodes within one
//! batch interval of each other.

use std::net::SocketAddr;

use p4p_itracker::{PidId, Snapshot};

use super::record::BucketKey;
use super::shard::{search, write};
use super::MemoryStore;
use crate::access::UNCHECKED;
use crate::types::InfoHash;

/// One peer's change made by another node.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RemotePeer {
    pub info_hash: InfoHash,
    pub peer: SocketAddr,
    pub seeder: bool,
    /// Its announce said `completed`: a download is counted when it turns a known leecher, or
    /// a peer not known yet, into a seeder.
    pub completed: bool,
    /// The peer left.
    pub stopped: bool,
    /// Its bucket id, from the PID name the change carried.
    pub pid: PidId,
    /// Seconds from now until it expires (for a stop: until a refresh made at the stop's time
    /// would have expired); capped at the peer timeout. 0: already expired.
    pub expires_in: u32,
}

/// Whether 16-bit wrapping time `a` is later than `b`.
fn later(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

impl MemoryStore {
    /// Applies another node's change; returns whether the store changed. Caps apply as for
    /// local announces (a change that would pass them is dropped).
    pub fn apply_remote(&self, r: &RemotePeer, snap: &Snapshot) -> bool {
        let expires_in = r.expires_in.min(self.limits.peer_timeout);
        let expires = self.now16().wrapping_add(expires_in as u16);
        let here = self.shard(&r.info_hash);
        let mut shard = write(here);
        if r.stopped {
            let Ok(at) = search(&shard, &r.info_hash) else {
                return false;
            };
            let swarm = &mut shard[at];
            let Some(pos) = swarm.find(r.peer) else {
                return false;
            };
            if later(swarm.expires(pos), expires) {
                // Refreshed after it stopped.
                return false;
            }
            let bucket = swarm.remove(pos);
            self.gauge(bucket.seeders(), -1);
            return true;
        }
        if expires_in == 0 {
            return false;
        }
        // Admitted on the node that published it: the local access list is looked up at this
        // swarm's first local announce.
        let found = search(&shard, &r.info_hash);
        let Ok(at) = self.swarm_at(
            here,
            &mut shard,
            found,
            &r.info_hash,
            None,
            (snap.generation() as u32, UNCHECKED),
        ) else {
            return false;
        };
        let swarm = &mut shard[at];
        let bucket = BucketKey::new(r.pid, r.seeder);
        match swarm.find(r.peer) {
            Some(pos) => {
                if !later(expires, swarm.expires(pos)) {
                    return false;
                }
                let old = swarm.bucket(pos);
                if old == bucket {
                    swarm.touch(pos, expires);
                } else {
                    self.gauge(old.seeders(), -1);
                    self.gauge(r.seeder, 1);
                    if r.completed && r.seeder && !old.seeders() {
                        swarm.downloaded = swarm.downloaded.saturating_add(1);
                    }
                    swarm.rekey(pos, bucket, expires);
                }
                true
            }
            None => {
                if swarm.len() >= self.limits.max_peers_per_swarm {
                    return false;
                }
                if r.completed && r.seeder {
                    swarm.downloaded = swarm.downloaded.saturating_add(1);
                }
                self.gauge(r.seeder, 1);
                swarm.insert(r.peer, bucket, expires, snap, self.sorted_max);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::SwarmConfig;
    use crate::types::SwarmStats;

    fn change(port: u16, seeder: bool, expires_in: u32) -> RemotePeer {
        RemotePeer {
            info_hash: InfoHash([3; 20]),
            peer: SocketAddr::from(([10, 1, 0, 1], port)),
            seeder,
            completed: false,
            stopped: false,
            pid: PidId::DEFAULT,
            expires_in,
        }
    }

    fn store() -> MemoryStore {
        // A small sorted maximum, so that a few peers reach the hashed form too.
        MemoryStore::with_sorted_max(SwarmConfig::default(), Clock::new(), 4)
    }

    fn stats(s: &MemoryStore) -> SwarmStats {
        s.scrape(&InfoHash([3; 20]))
    }

    #[test]
    fn applying_a_change_twice_changes_nothing() {
        let s = store();
        let snap = Snapshot::single_pid();
        for port in 1..=10 {
            assert!(s.apply_remote(&change(port, port % 2 == 0, 1000), &snap));
        }
        let once = (stats(&s), s.totals());
        for port in 1..=10 {
            assert!(!s.apply_remote(&change(port, port % 2 == 0, 1000), &snap));
        }
        assert_eq!((stats(&s), s.totals()), once);
        assert_eq!(once.0.complete, 5);
        assert_eq!(once.0.incomplete, 5);
    }

    #[test]
    fn an_older_change_never_overrides_a_newer_one() {
        let s = store();
        let snap = Snapshot::single_pid();
        // The peer turned seeder (newer), then its older leecher refresh arrives.
        assert!(s.apply_remote(&change(1, true, 1000), &snap));
        assert!(!s.apply_remote(&change(1, false, 900), &snap));
        assert_eq!(stats(&s).complete, 1);
        // An old stop does not remove a peer refreshed since.
        let mut stop = change(1, true, 800);
        stop.stopped = true;
        assert!(!s.apply_remote(&stop, &snap));
        assert_eq!(stats(&s).complete, 1);
        // A newer stop does, once.
        stop.expires_in = 1100;
        assert!(s.apply_remote(&stop, &snap));
        assert!(!s.apply_remote(&stop, &snap));
        assert_eq!(stats(&s), SwarmStats::default());
        assert_eq!(s.totals().seeders, 0);
    }

    #[test]
    fn a_completion_counts_once_and_expired_changes_are_dropped() {
        let s = store();
        let snap = Snapshot::single_pid();
        assert!(s.apply_remote(&change(1, false, 100), &snap));
        let mut done = change(1, true, 200);
        done.completed = true;
        assert!(s.apply_remote(&done, &snap));
        assert!(!s.apply_remote(&done, &snap));
        assert_eq!(stats(&s).downloaded, 1);
        assert!(!s.apply_remote(&change(2, false, 0), &snap));
        assert_eq!(stats(&s).incomplete, 0);
        // Remote peers expire like local ones.
        s.clock()
            .advance(u64::from(SwarmConfig::default().peer_timeout) + 1);
        s.sweep(&snap);
        assert_eq!(stats(&s).complete, 0);
    }
}
