//! Batch prefetching: code that exists for speed only, gathered here so a reader can skip it.
//! Nothing here changes what the store holds or answers; it only asks the CPU to start loading
//! cache lines early (see "Prefetching" in the module docs).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::entry::{Entry, Peers};
use super::family::Family;
use super::index::addr_hash;
use super::record::{Peer4, Peer6, Record};
use super::shard::{guess, hash_head, read, search, Shard};
use super::MemoryStore;
use crate::types::InfoHash;

/// Asks the CPU to start loading the cache line holding `addr` (a hint: nothing is read).
#[allow(unsafe_code)]
#[inline(always)]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults, writes nothing and changes no later load's result,
    // whatever the address (Intel SDM, PREFETCHh); the pointer is never dereferenced. `sse`,
    // which the intrinsic needs, is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Requests the cache line(s) of one record (selection's [`crate::selection::Buckets::will_read`]).
pub(crate) fn prefetch_record<T>(rec: &T) {
    prefetch_span(rec as *const T as usize, std::mem::size_of::<T>());
}

/// Requests every cache line of `s` (at most 16; the rest is left to the hardware prefetcher).
fn prefetch_slice<T>(s: &[T]) {
    prefetch_span(s.as_ptr() as usize, std::mem::size_of_val(s));
}

/// Requests the cache lines of `len` bytes from `addr` (at most 16).
fn prefetch_span(addr: usize, len: usize) {
    for line in (addr & !63..addr.wrapping_add(len)).step_by(64).take(16) {
        prefetch_line(line);
    }
}

/// The rounds of [`MemoryStore::prefetch`] that read the store (under a read lock).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// The swarm's heap block.
    Block,
    /// The family's sorted vector, or its index slot and bucket list.
    Index,
    /// The record the index points at.
    Record,
}

impl MemoryStore {
    /// Starts loading the cache lines announces of `reqs` (info hash, announcing peer) will
    /// miss on, so a batch's misses overlap instead of coming one after another. In rounds, each
    /// over the whole batch, each round requesting the lines the previous one made available:
    /// every shard; each entry, from the hint the shard keeps (no lock); then, under a read lock
    /// (a shared lock's atomics do not wait for prefetches), each swarm's block, its family's
    /// index slot or sorted vector, and the record the index points at. Looks at the first 64.
    pub fn prefetch(&self, reqs: &[(InfoHash, SocketAddr)]) {
        const MAX: usize = 64;
        let reqs = &reqs[..reqs.len().min(MAX)];
        let mut shards = [0usize; MAX];
        for (shard, (hash, _)) in shards.iter_mut().zip(reqs) {
            *shard = self.shard_index(hash);
            prefetch_line(&self.shards[*shard] as *const Shard as usize);
        }
        for (&i, (hash, _)) in shards.iter().zip(reqs) {
            let shard = &self.shards[i];
            let at = shard.hint_at.load(Ordering::Relaxed);
            let n = shard.hint_len.load(Ordering::Relaxed);
            if n > 0 {
                let size = std::mem::size_of::<Entry>();
                prefetch_span(at.wrapping_add(guess(hash_head(&hash.0), n) * size), size);
            }
        }
        for stage in [Stage::Block, Stage::Index, Stage::Record] {
            for (&i, (hash, peer)) in shards.iter().zip(reqs) {
                let entries = read(&self.shards[i]);
                if let Ok(at) = search(&entries, hash) {
                    entries[at].prefetch(*peer, stage);
                }
            }
        }
    }
}

impl Entry {
    /// Requests the lines of a lookup of `peer` that `stage` reaches (see [`Stage`]).
    fn prefetch(&self, peer: SocketAddr, stage: Stage) {
        let Peers::Large(l) = &self.peers else {
            return; // A small swarm's peers are in the entry.
        };
        match (stage, peer) {
            (Stage::Block, _) => prefetch_slice(std::slice::from_ref(&**l)),
            (_, SocketAddr::V4(a)) => l.v4.prefetch(Peer4::addr_of(a), stage),
            (_, SocketAddr::V6(a)) => {
                if let Some(f) = &l.v6 {
                    f.prefetch(Peer6::addr_of(a), stage);
                }
            }
        }
    }
}

impl<P: Record> Family<P> {
    /// Requests the lines of a lookup of `addr` that `stage` reaches: the sorted vector, or the
    /// index slot and the bucket list, then the record the first matching tag points at.
    fn prefetch(&self, addr: P::Addr, stage: Stage) {
        match (self, stage) {
            (Family::Sorted(recs), Stage::Index) => prefetch_slice(recs),
            (Family::Hashed(h), Stage::Index) => {
                if let Some(slot) = h.index.slot_of(addr_hash(&addr)) {
                    prefetch_slice(std::slice::from_ref(slot));
                }
                prefetch_slice(&h.buckets);
            }
            (Family::Hashed(h), Stage::Record) => {
                let loc = h.index.first_match(addr_hash(&addr));
                let rec =
                    loc.and_then(|l| h.buckets.get(l.bucket as usize)?.recs.get(l.idx as usize));
                if let Some(rec) = rec {
                    prefetch_slice(std::slice::from_ref(rec));
                }
            }
            _ => {}
        }
    }
}
