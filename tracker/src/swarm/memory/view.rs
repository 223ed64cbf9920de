//! What selection sees of a swarm: its bucket runs, listed once per announce.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::Range;

use p4p_itracker::PidId;
use rand::{Rng, RngCore};

use super::entry::{Entry, Large, PeerPos, Peers};
use super::family::Family;
use super::prefetch::prefetch_record;
use super::record::{BucketKey, Peer4, Peer6, Record};
use crate::selection::{Buckets, Draw};
use crate::types::Families;

/// One bucket run: what selection sees as a bucket. In a sorted family or a small swarm it is a
/// range of segment 0; in a hashed family, a whole bucket (segment = bucket number).
#[derive(Copy, Clone, Debug)]
pub(super) struct Run {
    /// Decoded once here: selection asks for it many times.
    pub(super) pid: PidId,
    pub(super) seeders: bool,
    v6: bool,
    seg: u32,
    pub(super) start: u32,
    pub(super) end: u32,
}

impl Run {
    pub(super) fn new(bucket: BucketKey, v6: bool, seg: usize, start: usize, end: usize) -> Self {
        Run {
            pid: bucket.pid(),
            seeders: bucket.seeders(),
            v6,
            seg: seg as u32,
            start: start as u32,
            end: end as u32,
        }
    }
}

/// Where a swarm's records are, for reading a run's peers.
#[derive(Copy, Clone)]
struct Records<'a> {
    /// A small swarm's peers (empty for a large swarm).
    small: &'a [Peer4],
    v4: Option<&'a Family<Peer4>>,
    v6: Option<&'a Family<Peer6>>,
}

impl<'a> Records<'a> {
    fn new(entry: &'a Entry) -> Self {
        match &entry.peers {
            Peers::Small(s) => Records {
                small: s.slice(),
                v4: None,
                v6: None,
            },
            Peers::Large(l) => Records {
                small: &[],
                v4: Some(&l.v4),
                v6: l.v6.as_deref(),
            },
        }
    }

    fn peer(&self, r: &Run, index: usize) -> SocketAddr {
        let at = r.start as usize + index;
        match (r.v6, self.v4, self.v6) {
            (true, _, Some(f)) => f.seg(r.seg as usize)[at].socket(),
            (false, Some(f), _) => f.seg(r.seg as usize)[at].socket(),
            _ => self.small[at].socket(),
        }
    }

    fn will_read(&self, r: &Run, index: usize) {
        let at = r.start as usize + index;
        match (r.v6, self.v4, self.v6) {
            (true, _, Some(f)) => prefetch_record(&f.seg(r.seg as usize)[at]),
            (false, Some(f), _) => prefetch_record(&f.seg(r.seg as usize)[at]),
            _ => {}
        }
    }
}

/// Where selection sees the peer at `pos` among `runs`: (run, position in the run).
fn run_pos(runs: &[Run], pos: PeerPos) -> Option<(usize, usize)> {
    runs.iter().enumerate().find_map(|(b, r)| {
        let inside = r.v6 == pos.v6
            && r.seg as usize == pos.seg
            && (r.start as usize..r.end as usize).contains(&pos.idx);
        inside.then(|| (b, pos.idx - r.start as usize))
    })
}

/// A swarm as selection reads it: the entry plus its runs, listed once per announce.
pub(super) struct View<'a> {
    records: Records<'a>,
    runs: &'a [Run],
}

impl<'a> View<'a> {
    pub(super) fn new(entry: &'a Entry, runs: &'a [Run]) -> Self {
        View {
            records: Records::new(entry),
            runs,
        }
    }

    /// Where selection sees the peer at `pos`: (run, position in the run).
    pub(super) fn run_pos(&self, pos: PeerPos) -> Option<(usize, usize)> {
        run_pos(self.runs, pos)
    }
}

impl Buckets for View<'_> {
    fn count(&self) -> usize {
        self.runs.len()
    }
    fn pid(&self, bucket: usize) -> PidId {
        self.runs[bucket].pid
    }
    fn seeders(&self, bucket: usize) -> bool {
        self.runs[bucket].seeders
    }
    fn v6(&self, bucket: usize) -> bool {
        self.runs[bucket].v6
    }
    fn size(&self, bucket: usize) -> usize {
        let r = &self.runs[bucket];
        (r.end - r.start) as usize
    }
    fn peer(&self, bucket: usize, index: usize) -> SocketAddr {
        self.records.peer(&self.runs[bucket], index)
    }
    fn will_read(&self, bucket: usize, index: usize) {
        self.records.will_read(&self.runs[bucket], index)
    }
    fn adjacent_reads_pay(&self) -> bool {
        true
    }
}

/// Hashed buckets from which a large swarm is read as an [`IndexedView`] (by `p4p`): below,
/// listing every run costs less than finding PIDs one by one.
pub(super) const INDEXED_MIN: usize = 128;

/// A large swarm spread over many PIDs as selection reads it: no run is listed until
/// selection finds its PID ([`Buckets::find`], the family's directory), so an announce costs
/// what its answer needs, not what the swarm holds.
pub(super) struct IndexedView<'a> {
    records: Records<'a>,
    large: &'a Large,
    /// Runs found so far; selection's bucket numbers index them.
    runs: RefCell<Vec<Run>>,
    /// The requester's PID and its runs, found first ([`IndexedView::own`]).
    own: Option<(PidId, Range<usize>)>,
}

impl<'a> IndexedView<'a> {
    /// A view of `entry` when it is a large swarm with at least [`INDEXED_MIN`] hashed buckets;
    /// `runs` is working memory (handed back by [`IndexedView::into_runs`]).
    pub(super) fn of(entry: &'a Entry, mut runs: Vec<Run>) -> Result<Self, Vec<Run>> {
        let Peers::Large(large) = &entry.peers else {
            return Err(runs);
        };
        let buckets =
            large.v4.hashed_buckets() + large.v6.as_ref().map_or(0, |f| f.hashed_buckets());
        if buckets < INDEXED_MIN {
            return Err(runs);
        }
        runs.clear();
        Ok(IndexedView {
            records: Records::new(entry),
            large,
            runs: RefCell::new(runs),
            own: None,
        })
    }

    /// Finds the requester's PID first and returns where selection sees the requester at
    /// `pos` (its record is in one of that PID's runs).
    pub(super) fn own(&mut self, pid: PidId, pos: PeerPos) -> Option<(usize, usize)> {
        let found = self.find(pid);
        self.own = Some((pid, found.clone()));
        let runs = self.runs.borrow();
        let (b, i) = run_pos(&runs[found.clone()], pos)?;
        Some((found.start + b, i))
    }

    /// Where a record drawn uniformly from the swarm's peers in `families` is, as a run of
    /// that one record (its bucket, family and segment); the family is chosen by its size.
    /// The record itself is not read.
    fn any_record(&self, families: Families, rng: &mut dyn RngCore) -> Option<Run> {
        let v4 = if families.allows(false) {
            self.large.v4.len()
        } else {
            0
        };
        let v6 = match &self.large.v6 {
            Some(f) if families.allows(true) => f.len(),
            _ => 0,
        };
        if v4 + v6 == 0 {
            return None;
        }
        let in_v6 = rng.random_range(0..v4 + v6) >= v4;
        let (key, seg, index) = match &self.large.v6 {
            Some(f) if in_v6 => f.any_record(rng)?,
            _ => self.large.v4.any_record(rng)?,
        };
        Some(Run::new(key, in_v6, seg, index, index + 1))
    }

    pub(super) fn into_runs(self) -> Vec<Run> {
        self.runs.into_inner()
    }

    fn run(&self, bucket: usize) -> Run {
        self.runs.borrow()[bucket]
    }
}

impl Buckets for IndexedView<'_> {
    fn count(&self) -> usize {
        self.runs.borrow().len()
    }
    fn pid(&self, bucket: usize) -> PidId {
        self.run(bucket).pid
    }
    fn seeders(&self, bucket: usize) -> bool {
        self.run(bucket).seeders
    }
    fn v6(&self, bucket: usize) -> bool {
        self.run(bucket).v6
    }
    fn size(&self, bucket: usize) -> usize {
        let r = self.run(bucket);
        (r.end - r.start) as usize
    }
    fn peer(&self, bucket: usize, index: usize) -> SocketAddr {
        self.records.peer(&self.run(bucket), index)
    }
    fn will_read(&self, bucket: usize, index: usize) {
        self.records.will_read(&self.run(bucket), index)
    }
    fn adjacent_reads_pay(&self) -> bool {
        true
    }
    fn indexed(&self) -> bool {
        true
    }
    fn totals(&self, families: Families) -> (usize, usize) {
        let (seeders, leechers) = (self.large.seeders as usize, self.large.leechers as usize);
        let v6 = self.large.v6.as_ref().map_or((0, 0), |f| {
            let s = self.large.v6_seeders as usize;
            (s, f.len().saturating_sub(s))
        });
        match families {
            Families::Both => (seeders, leechers),
            Families::V4 => (seeders.saturating_sub(v6.0), leechers.saturating_sub(v6.1)),
            Families::V6 => v6,
        }
    }
    fn find(&self, pid: PidId) -> Range<usize> {
        if let Some((own, found)) = &self.own {
            if *own == pid {
                return found.clone();
            }
        }
        let mut runs = self.runs.borrow_mut();
        let start = runs.len();
        self.large.v4.pid_runs(pid, false, &mut runs);
        if let Some(f) = &self.large.v6 {
            f.pid_runs(pid, true, &mut runs);
        }
        start..runs.len()
    }
    fn find_unlisted(&self) -> Range<usize> {
        let mut runs = self.runs.borrow_mut();
        let start = runs.len();
        self.large.v4.unlisted_runs(false, &mut runs);
        if let Some(f) = &self.large.v6 {
            f.unlisted_runs(true, &mut runs);
        }
        // Side by side by id (each family's come sorted by code, so by id).
        runs[start..].sort_by_key(|r| r.pid);
        start..runs.len()
    }
    fn draw(&self, families: Families, rng: &mut dyn RngCore) -> Option<Draw> {
        let run = self.any_record(families, rng)?;
        Some(Draw {
            id: record_id(run.v6, run.seg as usize, run.start as usize),
            pid: run.pid,
            seeder: run.seeders,
            addr: self.records.peer(&run, 0),
        })
    }
    fn record_id(&self, bucket: usize, index: usize) -> usize {
        let r = self.run(bucket);
        record_id(r.v6, r.seg as usize, r.start as usize + index)
    }
    fn list_rest(&self) {
        let mut runs = self.runs.borrow_mut();
        let found = runs.len();
        self.large.v4.runs(false, &mut runs);
        if let Some(f) = &self.large.v6 {
            f.runs(true, &mut runs);
        }
        // Keep the new runs of PIDs not found before (few: the requester's, by `random`).
        let mut kept = found;
        for i in found..runs.len() {
            let r = runs[i];
            if !runs[..found].iter().any(|f| f.pid == r.pid) {
                runs[kept] = r;
                kept += 1;
            }
        }
        runs.truncate(kept);
    }
    fn any_peer(&self, rng: &mut dyn RngCore) -> Option<(PidId, bool, bool)> {
        let run = self.any_record(Families::Both, rng)?;
        Some((run.pid, run.seeders, run.v6))
    }
}

/// A record's [`Draw::id`]: its family, segment (a hashed family's bucket) and position.
fn record_id(v6: bool, seg: usize, index: usize) -> usize {
    (usize::from(v6) << 63) | (seg << 32) | index
}

thread_local! {
    /// Run lists reused between announces, so the hot path does not allocate.
    pub(super) static RUNS: RefCell<Vec<Run>> = const { RefCell::new(Vec::new()) };
}
