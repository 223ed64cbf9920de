//! What selection sees of a swarm: its bucket runs, listed once per announce.

use std::cell::RefCell;
use std::net::SocketAddr;

use p4p_itracker::PidId;

use super::entry::{Entry, PeerPos, Peers};
use super::family::Family;
use super::prefetch::prefetch_record;
use super::record::{BucketKey, Peer4, Peer6, Record};
use crate::selection::Buckets;

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

/// A swarm as selection reads it: the entry plus its runs, listed once per announce.
pub(super) struct View<'a> {
    /// A small swarm's peers (empty for a large swarm).
    small: &'a [Peer4],
    v4: Option<&'a Family<Peer4>>,
    v6: Option<&'a Family<Peer6>>,
    runs: &'a [Run],
}

impl<'a> View<'a> {
    pub(super) fn new(entry: &'a Entry, runs: &'a [Run]) -> Self {
        match &entry.peers {
            Peers::Small(s) => View {
                small: s.slice(),
                v4: None,
                v6: None,
                runs,
            },
            Peers::Large(l) => View {
                small: &[],
                v4: Some(&l.v4),
                v6: l.v6.as_deref(),
                runs,
            },
        }
    }

    /// Where selection sees the peer at `pos`: (run, position in the run).
    pub(super) fn run_pos(&self, pos: PeerPos) -> Option<(usize, usize)> {
        self.runs.iter().enumerate().find_map(|(b, r)| {
            let inside = r.v6 == pos.v6
                && r.seg as usize == pos.seg
                && (r.start as usize..r.end as usize).contains(&pos.idx);
            inside.then(|| (b, pos.idx - r.start as usize))
        })
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
        let r = &self.runs[bucket];
        let at = r.start as usize + index;
        match (r.v6, self.v4, self.v6) {
            (true, _, Some(f)) => f.seg(r.seg as usize)[at].socket(),
            (false, Some(f), _) => f.seg(r.seg as usize)[at].socket(),
            _ => self.small[at].socket(),
        }
    }
    fn will_read(&self, bucket: usize, index: usize) {
        let r = &self.runs[bucket];
        let at = r.start as usize + index;
        match (r.v6, self.v4, self.v6) {
            (true, _, Some(f)) => prefetch_record(&f.seg(r.seg as usize)[at]),
            (false, Some(f), _) => prefetch_record(&f.seg(r.seg as usize)[at]),
            _ => {}
        }
    }
    fn adjacent_reads_pay(&self) -> bool {
        true
    }
}

thread_local! {
    /// Run lists reused between announces, so the hot path does not allocate.
    pub(super) static RUNS: RefCell<Vec<Run>> = const { RefCell::new(Vec::new()) };
}
