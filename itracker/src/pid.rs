//! Stable PID identifiers.
//!
//! A tracker buckets its peers by PID. Snapshots come and go (every topology change builds a new
//! one), so a bucket must never be keyed by a position in one snapshot's PID list: the same PID
//! name maps to the same id in every snapshot of this process for as long as the name is in use.
//!
//! Ids stay small, whatever the number of distinct names over the process life (a tracker keeps
//! them in 15-bit bucket keys):
//! - **PID names** are interned, and a name that has been neither in the snapshot in use nor
//!   interned for [`RECLAIM_AGE`] gives its id back ([`reclaim`], run by the tracker's sweep);
//!   ids are reused smallest first. A peer resolved under an older snapshot is re-resolved by
//!   the next sweep, long before its PID's id can be reused. Ids past [`PID_CODES`] (more names
//!   in use at once than a tracker can bucket apart) are counted ([`stats`]) and logged once.
//! - **AS locations** (public peers bucketed by origin AS, with an ASN database) are not
//!   interned: [`PidId::of_asn`] folds the AS number into one of [`AS_CODES`] ids of their own,
//!   so the ~80,000 ASes of the Internet never use up the PID ids. Two ASes that fold together
//!   are one location for selection (for a requester, one AS in 16,383 shares its tier).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Instant;

/// A PID's stable id inside this process. Equal names give equal ids.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PidId(pub u32);

/// Name of the PID that holds everything no other PID covers (`0.0.0.0/0`, `::/0`) when no
/// topology is loaded at all. Always id 0.
pub const DEFAULT_PID_NAME: &str = "default";

/// PID ids below this fit a tracker's bucket key; ids from here up (more PID names in use at
/// once) share an overflow bucket, and are counted in [`PidStats::overflowed`].
pub const PID_CODES: u32 = 1 << 14;

/// AS locations: ids `AS_TAG | 0..AS_CODES`.
pub const AS_CODES: u32 = (1 << 14) - 1;

/// The bit that marks an AS location's id (no interned id gets near it).
pub const AS_TAG: u32 = 1 << 31;

/// Seconds a PID name must have been out of use (in no snapshot in use, not interned) before
/// its id is reused: far longer than a sweep interval, so every peer filed under it has been
/// re-resolved by then.
pub const RECLAIM_AGE: u64 = 600;

/// Names and their ids, with free ids to reuse. Times are seconds of [`Interner::clock`]'s
/// time base (the global interner: since the process started).
#[derive(Default)]
struct Interner {
    ids: HashMap<Arc<str>, PidId>,
    /// `None`: a free id.
    names: Vec<Option<Arc<str>>>,
    /// When each id was last interned or kept by [`Interner::reclaim`] (atomics, so the read
    /// path can stamp them under the read lock).
    touched: Vec<AtomicU64>,
    /// Free ids, largest first (popped smallest first).
    free: Vec<u32>,
    /// Ids handed out at or past [`PID_CODES`].
    overflowed: u64,
}

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now() -> u64 {
    START.elapsed().as_secs()
}

static INTERNER: LazyLock<RwLock<Interner>> = LazyLock::new(|| {
    let mut interner = Interner::default();
    interner.intern(DEFAULT_PID_NAME, now());
    RwLock::new(interner)
});

/// Logged once per process: more PID names in use at once than bucket keys hold.
static OVERFLOW_LOGGED: AtomicBool = AtomicBool::new(false);

impl Interner {
    /// The id of `name` if interned (stamping it as used at `now`).
    fn get(&self, name: &str, now: u64) -> Option<PidId> {
        let id = *self.ids.get(name)?;
        let touched = &self.touched[id.0 as usize];
        // Written once a second at most: every worker reads this line.
        if touched.load(Ordering::Relaxed) != now {
            touched.store(now, Ordering::Relaxed);
        }
        Some(id)
    }

    fn intern(&mut self, name: &str, now: u64) -> PidId {
        if let Some(id) = self.get(name, now) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = Some(name.clone());
                self.touched[id as usize].store(now, Ordering::Relaxed);
                PidId(id)
            }
            None => {
                let id = u32::try_from(self.names.len()).expect("fewer than 2^31 PID names in use");
                self.names.push(Some(name.clone()));
                self.touched.push(AtomicU64::new(now));
                PidId(id)
            }
        };
        if id.0 >= PID_CODES {
            self.overflowed += 1;
            if !OVERFLOW_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "more than {PID_CODES} PID names in use at once: PIDs past it share one \
                     bucket and lose their locality (see pid_ids_overflowed_total)"
                );
            }
        }
        self.ids.insert(name, id);
        id
    }

    /// Frees the ids of names out of use for [`RECLAIM_AGE`] at `now`; `keep` (the snapshot in
    /// use) counts as in use. Returns how many ids were freed.
    fn reclaim(&mut self, keep: impl IntoIterator<Item = PidId>, now: u64) -> usize {
        for id in keep {
            if let Some(t) = self.touched.get(id.0 as usize) {
                t.store(now, Ordering::Relaxed);
            }
        }
        let mut freed = 0;
        for id in 1..self.names.len() {
            let idle = now.saturating_sub(self.touched[id].load(Ordering::Relaxed));
            if idle < RECLAIM_AGE {
                continue;
            }
            if let Some(name) = self.names[id].take() {
                self.ids.remove(&name);
                self.free.push(id as u32);
                freed += 1;
            }
        }
        // Trailing free ids are dropped, the rest reused smallest first.
        while self.names.len() > 1 && self.names.last().is_some_and(Option::is_none) {
            self.names.pop();
            self.touched.pop();
        }
        let len = self.names.len() as u32;
        self.free.retain(|&id| id < len);
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        freed
    }

    fn stats(&self) -> PidStats {
        PidStats {
            in_use: self.ids.len() as u64,
            highest: self.names.len().saturating_sub(1) as u64,
            overflowed: self.overflowed,
        }
    }
}

/// The interner's figures, for metrics.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PidStats {
    /// PID names interned now.
    pub in_use: u64,
    /// The highest id in use (ids stay below [`PID_CODES`] while all is well).
    pub highest: u64,
    /// Ids handed out at or past [`PID_CODES`] since the process started.
    pub overflowed: u64,
}

impl PidId {
    /// The id of the built-in default PID.
    pub const DEFAULT: PidId = PidId(0);

    /// The stable id of `name`, allocating one the first time a name is seen (or the first
    /// time since its id was reclaimed).
    pub fn intern(name: &str) -> PidId {
        let now = now();
        if let Some(id) = INTERNER
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name, now)
        {
            return id;
        }
        INTERNER
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .intern(name, now)
    }

    /// The id of the location of AS `asn` (see the module docs): one of [`AS_CODES`] ids,
    /// never a PID's. Consecutive AS numbers get different ids.
    pub fn of_asn(asn: u32) -> PidId {
        // Fibonacci hashing: spreads any run of numbers over the range.
        let h = (u64::from(asn).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
        PidId(AS_TAG | (h % AS_CODES))
    }

    /// Whether this is an AS location's id.
    pub fn is_as_location(self) -> bool {
        self.0 & AS_TAG != 0
    }

    /// The name this id was interned from (`#AS~<n>` for an AS location's, `#free` for an id
    /// no name holds now).
    pub fn name(self) -> Arc<str> {
        if self.is_as_location() {
            return Arc::from(format!("#AS~{}", self.0 & !AS_TAG));
        }
        let interner = INTERNER.read().unwrap_or_else(|e| e.into_inner());
        match interner.names.get(self.0 as usize) {
            Some(Some(name)) => name.clone(),
            _ => Arc::from("#free"),
        }
    }
}

/// Gives back the ids of PID names out of use for [`RECLAIM_AGE`] (`keep`: the ids of the
/// snapshot in use). The tracker's sweep calls it; returns how many ids were freed.
pub fn reclaim(keep: impl IntoIterator<Item = PidId>) -> usize {
    INTERNER
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .reclaim(keep, now())
}

/// The interner's figures now.
pub fn stats() -> PidStats {
    INTERNER.read().unwrap_or_else(|e| e.into_inner()).stats()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_id_and_default_is_zero() {
        assert_eq!(PidId::intern(DEFAULT_PID_NAME), PidId::DEFAULT);
        let a = PidId::intern("pid-a-test");
        let b = PidId::intern("pid-b-test");
        assert_ne!(a, b);
        assert_eq!(PidId::intern("pid-a-test"), a);
        assert_eq!(&*a.name(), "pid-a-test");
        assert!(stats().in_use >= 3);
    }

    #[test]
    fn any_number_of_names_over_the_process_life_keeps_ids_small() {
        // 200 maps of 1,000 fresh PID names each, one every 5 minutes, the sweep reclaiming
        // every minute: 200,000 distinct names, six times what 15-bit ids held.
        let mut interner = Interner::default();
        let mut t = 0;
        interner.intern(DEFAULT_PID_NAME, t);
        let mut highest = 0;
        let mut current: Vec<PidId> = Vec::new();
        for map in 0..200u32 {
            current = (0..1000u32)
                .map(|i| interner.intern(&format!("map{map}-pid{i}"), t))
                .collect();
            for _ in 0..5 {
                t += 60;
                interner.reclaim(current.iter().copied(), t);
            }
            highest = highest.max(current.iter().map(|id| id.0).max().unwrap_or(0));
            // The map in use keeps its ids, whatever was reclaimed meanwhile.
            for (i, id) in current.iter().enumerate() {
                assert_eq!(interner.get(&format!("map{map}-pid{i}"), t), Some(*id));
            }
        }
        assert_eq!(interner.overflowed, 0);
        // Two maps in use within RECLAIM_AGE plus the default, at most.
        assert!(highest < 3 * 1000 + 1, "highest id {highest}");
        let stats = interner.stats();
        assert!(stats.in_use <= 3001, "{stats:?}");
        // A name out of use comes back under a (possibly) new id, and is the same name again.
        let old = interner.intern("map0-pid0", t);
        assert_eq!(interner.names[old.0 as usize].as_deref(), Some("map0-pid0"));
        assert!(current.iter().all(|&id| id != old));
    }

    #[test]
    fn a_name_in_use_is_never_reclaimed() {
        let mut interner = Interner::default();
        interner.intern(DEFAULT_PID_NAME, 0);
        let kept = interner.intern("kept", 0);
        let used = interner.intern("used", 0);
        let idle = interner.intern("idle", 0);
        for t in (60..=RECLAIM_AGE * 3).step_by(60) {
            assert_eq!(interner.get("used", t), Some(used));
            interner.reclaim([kept], t);
        }
        assert_eq!(interner.get("kept", 1), Some(kept));
        assert_eq!(interner.get("used", 1), Some(used));
        assert_eq!(interner.get("idle", 1), None, "reclaimed");
        assert_eq!(interner.intern("new", 2), idle, "the freed id is reused");
        assert_eq!(interner.get(DEFAULT_PID_NAME, 3), Some(PidId::DEFAULT));
    }

    #[test]
    fn more_names_in_use_than_bucket_keys_hold_are_counted() {
        let mut interner = Interner::default();
        for i in 0..PID_CODES + 10 {
            interner.intern(&format!("n{i}"), 0);
        }
        assert_eq!(interner.overflowed, 10);
        assert_eq!(interner.stats().highest, u64::from(PID_CODES + 9));
    }

    #[test]
    fn as_locations_have_ids_of_their_own() {
        let mut seen = std::collections::HashSet::new();
        for asn in 0..100_000u32 {
            let id = PidId::of_asn(asn);
            assert!(id.is_as_location());
            assert!(id.0 & !AS_TAG < AS_CODES);
            seen.insert(id);
        }
        assert_eq!(seen.len(), AS_CODES as usize, "every AS id is used");
        for asn in 64_000..64_600u32 {
            assert_ne!(PidId::of_asn(asn), PidId::of_asn(asn + 1));
        }
        assert!(!PidId::intern("AS64500").is_as_location());
        assert!(PidId::of_asn(64500).name().starts_with('#'));
    }
}
