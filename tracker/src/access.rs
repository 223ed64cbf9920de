//! Access lists: which torrents the tracker serves.
//!
//! `access_list.file` names a file of info hashes, one per line: 40 hex digits (a BitTorrent v2
//! hash, 64 hex digits, is accepted and cut to its first 20 bytes, which is what v2 clients
//! announce), `#` starts a comment (a whole line or the rest of one), blank lines are skipped.
//! A line that is none of these makes the whole file invalid, and the error names the line.
//!
//! In `allow` mode only the listed torrents are served; in `deny` mode every torrent but the
//! listed ones. A refused announce gets "torrent not allowed" (HTTP failure reason, UDP error)
//! and is counted under `outcome="not_allowed"`. A scrape is never refused as a whole: a hash
//! that is not allowed is answered with zeros, as for a torrent the tracker does not know, the
//! way aquatic and opentracker answer it (neither checks scrapes; an unlisted torrent simply
//! has no swarm there). The zeros also hide a swarm that a `deny` entry added since cut off:
//! its peers expire after `swarm.peer_timeout`.
//!
//! The list in use sits behind an [`ArcSwap`], read through each worker's cache. On the memory
//! store (alone or in a cluster) each swarm remembers the generation of the list that last
//! admitted it, and the list is read only for a torrent without a swarm or on the first
//! announce to a swarm after a reload (see [`Admission`]): a million-hash list costs one more
//! cache miss per lookup, not per announce. When a reload drops a torrent, the next announce to
//! its swarm is refused and the swarm is left to expire, as said for scrapes above; a swarm
//! another cluster node created is looked up at its first local announce. The Redis store, a
//! network round trip per announce anyway, gets every announce looked up before it. Nothing
//! is read when no list is configured. A reload builds the whole new set first and swaps it in
//! at once; a file that fails to load leaves the list in use serving, is
//! logged and counted (`access_list_reloads_total{outcome="refused"}`). Reloads come from
//! SIGHUP (with [`Tracker::reload`]), from the file changing (polled every second, see
//! [`watch`]) and from the ops listener's admin API.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch as signal;

use crate::service::Tracker;
use crate::swap::SwapCache;
use crate::types::InfoHash;

/// The client-facing text for a torrent the access list refuses.
pub const NOT_ALLOWED: &str = "torrent not allowed";

/// What the listed hashes mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// Serve only the listed torrents.
    #[default]
    Allow,
    /// Serve every torrent but the listed ones.
    Deny,
}

/// A set of info hashes, parsed from an access-list file: an open-addressing table (at most
/// half full) whose first slot for a hash follows from a seeded hash of it, so a lookup reads one
/// 20-byte slot in the usual case. A list of a million hashes is far larger than the caches, so
/// that read is a cache miss: the memory store avoids it for swarms already admitted under the
/// list in use (see [`Admission`]).
#[derive(Debug, Default)]
pub struct AccessList {
    /// Which swap of its [`AccessControl`] brought this list in (see [`Admission`]); never
    /// [`UNCHECKED`] once swapped in.
    generation: u16,
    /// Power-of-two length (or empty); the all-zero hash marks an empty slot.
    slots: Vec<InfoHash>,
    /// Whether the all-zero hash itself is listed (it cannot sit in a slot).
    zero: bool,
    len: usize,
    state: foldhash::fast::RandomState,
}

const EMPTY: InfoHash = InfoHash([0; 20]);

/// The admission generation of a swarm no list admitted (see [`Admission`]); no list has it.
pub const UNCHECKED: u16 = 0;

/// One announce's view of the access list, for a store that remembers in each swarm the
/// generation of the list that last admitted it (the memory store, see
/// [`crate::swarm::AnnounceContext::access`]).
///
/// Why: a list of a million hashes is a 42 MB table, and a lookup in it is one more cache miss
/// per announce (10 % of the UDP announce's CPU in the race). The verdict for a torrent can only
/// change when the list does, so an announce to a swarm admitted under the list in use skips the
/// lookup, and the table is read only for a new torrent, or for the first announce to a swarm
/// after a reload. Every swap gives the new list the next generation (16 bits, skipping
/// [`UNCHECKED`]); before the counter wraps, every swarm's generation is reset (see
/// [`Tracker::swap_access_list`]), so a generation never names two lists a swarm may have seen.
#[derive(Clone, Copy, Debug)]
pub struct Admission<'a> {
    control: &'a AccessControl,
    list: &'a AccessList,
}

impl Admission<'_> {
    /// The generation of the list this announce sees.
    #[inline]
    pub fn generation(&self) -> u16 {
        self.list.generation
    }

    /// Whether the list allows `hash` (the lookup the generation lets a store skip).
    #[inline]
    pub fn allows(&self, hash: &InfoHash) -> bool {
        self.control.decide(self.list.contains(hash))
    }
}

/// Why an access-list text was refused: the first bad line (1-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
}

impl AccessList {
    /// Parses an access-list text (see the module docs for the format).
    pub fn parse(text: &[u8]) -> Result<AccessList, ParseError> {
        // About 41 bytes a line.
        let mut hashes = Vec::with_capacity(text.len() / 41 + 1);
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line = match raw.iter().position(|&b| b == b'#') {
                Some(at) => &raw[..at],
                None => raw,
            }
            .trim_ascii();
            if line.is_empty() {
                continue;
            }
            let bad = |reason| ParseError {
                line: i + 1,
                reason,
            };
            if line.len() != 40 && line.len() != 64 {
                return Err(bad(
                    "not an info hash: 40 hex digits (or 64 for a v2 hash) expected",
                ));
            }
            let hash = decode_hash(line)
                .ok_or_else(|| bad("not an info hash: only hex digits 0-9, a-f expected"))?;
            hashes.push(hash);
        }
        Ok(AccessList::from_hashes(&hashes))
    }

    /// The set of `hashes` (duplicates count once).
    pub fn from_hashes(hashes: &[InfoHash]) -> AccessList {
        let mut list = AccessList::default();
        if hashes.is_empty() {
            return list;
        }
        list.slots = vec![EMPTY; (hashes.len() * 2).next_power_of_two().max(16)];
        for h in hashes {
            list.insert(*h);
        }
        list
    }

    fn insert(&mut self, hash: InfoHash) {
        if hash == EMPTY {
            self.len += usize::from(!self.zero);
            self.zero = true;
            return;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot_of(&hash);
        loop {
            match self.slots[i] {
                EMPTY => {
                    self.slots[i] = hash;
                    self.len += 1;
                    return;
                }
                h if h == hash => return,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The first slot `hash` may sit in (the table is not empty).
    #[inline]
    fn slot_of(&self, hash: &InfoHash) -> usize {
        use std::hash::BuildHasher;
        (self.state.hash_one(hash) as usize) & (self.slots.len() - 1)
    }

    /// Hashes listed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `hash` is listed.
    #[inline]
    pub fn contains(&self, hash: &InfoHash) -> bool {
        if *hash == EMPTY {
            return self.zero;
        }
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot_of(hash);
        loop {
            match &self.slots[i] {
                h if *h == EMPTY => return false,
                h if h == hash => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }
}

/// Hex digit values; 0xff for a byte that is not one.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// The first 20 bytes a hex line (40 or 64 digits, all checked) encodes.
fn decode_hash(line: &[u8]) -> Option<InfoHash> {
    let mut bad = 0u8;
    for &c in &line[40..] {
        bad |= HEX[usize::from(c)];
    }
    let mut hash = [0u8; 20];
    for (out, pair) in hash.iter_mut().zip(line.chunks_exact(2)) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *out = hi << 4 | lo;
    }
    // Every valid digit is below 16: any invalid one sets the top bits.
    (bad & 0xf0 == 0).then_some(InfoHash(hash))
}

/// What the file looked like when last seen: modification time, length (and inode on Unix,
/// which changes when an editor or the admin API replaces the file by renaming).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

/// The access list a tracker applies: its mode, its file and the list in use.
#[derive(Debug)]
pub struct AccessControl {
    mode: AccessMode,
    file: PathBuf,
    list: Arc<ArcSwap<AccessList>>,
    /// The generation of the last list swapped in; the lock also keeps swaps one at a time.
    generation: Mutex<u16>,
    /// The file as last loaded (or seen failing), for the watcher.
    seen: Mutex<Option<Stamp>>,
}

impl AccessControl {
    /// An access control over `file` with an empty list (see [`Tracker::load_access_list`]).
    pub fn new(mode: AccessMode, file: PathBuf) -> Self {
        Self {
            mode,
            file,
            list: Arc::new(ArcSwap::from_pointee(AccessList {
                generation: 1,
                ..AccessList::default()
            })),
            generation: Mutex::new(1),
            seen: Mutex::new(None),
        }
    }

    /// The list in use through a worker's cache, for a store that caches verdicts per swarm
    /// (see [`Admission`]).
    #[inline]
    pub fn admission<'a>(&'a self, cache: &'a mut SwapCache<AccessList>) -> Admission<'a> {
        Admission {
            control: self,
            list: cache.load(&self.list),
        }
    }

    /// Whether the tracker serves `hash`.
    #[inline]
    pub fn allows(&self, hash: &InfoHash) -> bool {
        self.decide(self.list.load().contains(hash))
    }

    /// [`AccessControl::allows`] through a worker's cache of the list (no guard per announce).
    #[inline]
    pub fn allows_cached(&self, hash: &InfoHash, cache: &mut SwapCache<AccessList>) -> bool {
        self.decide(cache.load(&self.list).contains(hash))
    }

    #[inline]
    fn decide(&self, listed: bool) -> bool {
        match self.mode {
            AccessMode::Allow => listed,
            AccessMode::Deny => !listed,
        }
    }

    /// The mode.
    pub fn mode(&self) -> AccessMode {
        self.mode
    }

    /// The file the list is read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Entries in the list in use.
    pub fn len(&self) -> usize {
        self.list.load().len()
    }

    /// Whether the list in use is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> Result<AccessList, String> {
        let text = std::fs::read(&self.file)
            .map_err(|e| format!("cannot read {}: {e}", self.file.display()))?;
        AccessList::parse(&text).map_err(|e| format!("{}: {e}", self.file.display()))
    }

    fn set_seen(&self, s: Option<Stamp>) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    fn seen(&self) -> Option<Stamp> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes `text` to `path` atomically: a temporary file beside it, synced, then renamed over it.
fn write_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(
        || "access-list".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Why the admin API could not replace the list.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error("no access list is configured (access_list.file / --access-list)")]
    NotConfigured,
    #[error("access list refused, the list in use keeps serving: {0}")]
    Invalid(ParseError),
    #[error("cannot write {path}: {source}; the list in use keeps serving")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Tracker {
    /// Loads the access list at start; an error (the file's path and the bad line) refuses
    /// the start. Nothing to do without an access list.
    pub fn load_access_list(&self) -> Result<(), String> {
        let Some(access) = &self.access else {
            return Ok(());
        };
        let seen = stamp(access.file());
        let list = access.read()?;
        tracing::info!(
            "access list: {} ({:?} mode, {} entries)",
            access.file().display(),
            access.mode(),
            list.len()
        );
        self.swap_access_list(access, list, seen);
        Ok(())
    }

    /// Puts `list` in use under the next generation (see [`Admission`]). When the 16-bit
    /// counter wraps, every swarm of the memory store first forgets its generation, so none
    /// still holds the one the new list takes (a walk over the store, once per 65,535 swaps).
    fn swap_access_list(&self, access: &AccessControl, mut list: AccessList, seen: Option<Stamp>) {
        self.metrics.access_list_entries.set(list.len() as i64);
        let mut generation = access.generation.lock().unwrap_or_else(|e| e.into_inner());
        *generation = match generation.checked_add(1) {
            Some(next) => next,
            None => {
                if let Some(m) = self.store().memory() {
                    m.forget_admissions();
                }
                UNCHECKED + 1
            }
        };
        list.generation = *generation;
        access.list.store(Arc::new(list));
        drop(generation);
        access.set_seen(seen);
    }

    /// Re-reads the access-list file. `Ok(None)` without an access list; `Ok(Some(entries))`
    /// once swapped in; on error the list in use keeps serving, and the refusal is logged and
    /// counted.
    pub fn reload_access_list(&self) -> Result<Option<usize>, String> {
        let Some(access) = &self.access else {
            return Ok(None);
        };
        let seen = stamp(access.file());
        match access.read() {
            Ok(list) => {
                let n = list.len();
                self.swap_access_list(access, list, seen);
                self.metrics.access_list_reloads(true);
                tracing::info!(
                    "access list reloaded from {} ({n} entries)",
                    access.file().display()
                );
                Ok(Some(n))
            }
            Err(e) => {
                access.set_seen(seen);
                self.metrics.access_list_reloads(false);
                tracing::warn!("access list reload refused, the list in use keeps serving: {e}");
                Err(e)
            }
        }
    }

    /// Replaces the access list with `text` (the admin API's `PUT`): parsed first, then written
    /// to the file (atomically), then swapped in. A bad text or a failed write changes nothing
    /// and is counted as a refused reload.
    pub fn replace_access_list(&self, text: &[u8]) -> Result<usize, ReplaceError> {
        let Some(access) = &self.access else {
            return Err(ReplaceError::NotConfigured);
        };
        let refused = |e: ReplaceError| {
            self.metrics.access_list_reloads(false);
            tracing::warn!("{e}");
            e
        };
        let list = AccessList::parse(text).map_err(|e| refused(ReplaceError::Invalid(e)))?;
        write_atomically(access.file(), text).map_err(|source| {
            refused(ReplaceError::Write {
                path: access.file().to_path_buf(),
                source,
            })
        })?;
        let n = list.len();
        self.swap_access_list(access, list, stamp(access.file()));
        self.metrics.access_list_reloads(true);
        tracing::info!(
            "access list replaced through the admin API ({n} entries, written to {})",
            access.file().display()
        );
        Ok(n)
    }

    /// Whether the tracker serves `hash` (always, without an access list).
    #[inline]
    pub fn allows(&self, hash: &InfoHash) -> bool {
        self.access.as_ref().is_none_or(|a| a.allows(hash))
    }
}

/// How often [`watch`] looks at the file.
pub const POLL: Duration = Duration::from_secs(1);

/// Reloads the access list whenever its file changes (modification time, length or inode),
/// until shutdown. A change is acted on once the file has stayed the same for one poll, so a
/// file being written in place is not read half-written. Does nothing without an access list.
pub async fn watch(tracker: Arc<Tracker>, mut shutdown: signal::Receiver<bool>) {
    let Some(access) = &tracker.access else {
        return;
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<Option<Stamp>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = stamp(access.file());
        if now == access.seen() {
            pending = None;
            continue;
        }
        if pending != Some(now) {
            // Changed since the last look: wait one more poll for it to settle.
            pending = Some(now);
            continue;
        }
        pending = None;
        let t = tracker.clone();
        let _ = tokio::task::spawn_blocking(move || t.reload_access_list()).await;
    }
}

#[cfg(test)]
impl AccessControl {
    /// Puts `hashes` in use under `generation` as is (the tracker swaps through
    /// [`Tracker::swap_access_list`], which numbers the lists): the store's tests use it to hand
    /// an announce a list that disagrees with the generation a swarm holds.
    pub(crate) fn put_for_test(&self, hashes: &[InfoHash], generation: u16) {
        let mut list = AccessList::from_hashes(hashes);
        list.generation = generation;
        self.list.store(Arc::new(list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn the_table_finds_every_listed_hash_and_nothing_else() {
        let hash = |i: u32| {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&i.to_be_bytes());
            h[19] = 1;
            InfoHash(h)
        };
        let mut listed: Vec<InfoHash> = (0..5_000).map(|i| hash(i * 2)).collect();
        listed.push(EMPTY);
        listed.push(hash(0)); // a duplicate counts once
        let list = AccessList::from_hashes(&listed);
        assert_eq!(list.len(), 5_001);
        assert!(list.slots.len() >= 2 * 5_000, "at most half full");
        for i in 0..10_000 {
            assert_eq!(list.contains(&hash(i)), i % 2 == 0, "hash {i}");
        }
        assert!(list.contains(&EMPTY), "the all-zero hash can be listed");
        assert!(!AccessList::from_hashes(&[hash(1)]).contains(&EMPTY));
        let empty = AccessList::default();
        assert!(!empty.contains(&hash(2)) && !empty.contains(&EMPTY));
    }

    #[test]
    fn the_format_takes_hashes_comments_blank_lines_and_v2_hashes() {
        let v2 = format!("{A}{}", "f".repeat(24));
        let text = format!(
            "# torrents we serve\n\n  {}  \r\n{v2} # a v2 torrent\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
            "b".repeat(40)
        );
        let list = AccessList::parse(text.as_bytes()).expect("valid");
        assert_eq!(list.len(), 3);
        let mut a = [0u8; 20];
        hex::decode_to_slice(A, &mut a).expect("hex");
        assert!(list.contains(&InfoHash(a)), "the v2 hash cut to 20 bytes");
        assert!(list.contains(&InfoHash([0xbb; 20])));
        assert!(list.contains(&InfoHash([0xaa; 20])), "upper case hex");
        assert!(AccessList::parse(b"").expect("empty").is_empty());
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let text = format!("{A}\n# fine\n{}\n", &A[..39]);
        assert_eq!(AccessList::parse(text.as_bytes()).unwrap_err().line, 3);
        let text = format!("{A}\n{}g\n", &A[..39]);
        assert_eq!(AccessList::parse(text.as_bytes()).unwrap_err().line, 2);
        let text = format!("{A} {A}\n");
        assert_eq!(AccessList::parse(text.as_bytes()).unwrap_err().line, 1);
    }

    #[test]
    fn modes_decide_what_a_listed_hash_means() {
        let dir = std::env::temp_dir().join(format!("p4p-access-unit-{}", std::process::id()));
        let allow = AccessControl::new(AccessMode::Allow, dir.clone());
        let deny = AccessControl::new(AccessMode::Deny, dir);
        let listed = InfoHash([0xbb; 20]);
        let other = InfoHash([0xcc; 20]);
        for c in [&allow, &deny] {
            c.list.store(Arc::new(
                AccessList::parse("b".repeat(40).as_bytes()).expect("valid"),
            ));
        }
        assert!(allow.allows(&listed) && !allow.allows(&other));
        assert!(!deny.allows(&listed) && deny.allows(&other));
    }

    #[test]
    fn an_atomic_write_replaces_the_file() {
        let path = std::env::temp_dir().join(format!("p4p-access-write-{}", std::process::id()));
        std::fs::write(&path, "old").expect("write");
        write_atomically(&path, b"new").expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let _ = std::fs::remove_file(&path);
    }

    /// A tracker over the memory store with an access list in `mode` read from a file of its
    /// own listing `listed`.
    fn tracker_with(tag: &str, mode: AccessMode, listed: &[&str]) -> (Tracker, PathBuf) {
        let path = std::env::temp_dir().join(format!("p4p-access-{tag}-{}", std::process::id()));
        std::fs::write(&path, listed.join("\n")).expect("write the list");
        let mut config = crate::config::Config::default();
        config.access_list.file = Some(path.clone());
        config.access_list.mode = mode;
        let tracker = Tracker::new(
            config,
            crate::clock::Clock::new(),
            p4p_itracker::Snapshot::single_pid(),
            true,
        );
        tracker.load_access_list().expect("the list loads");
        (tracker, path)
    }

    async fn announce(
        tracker: &Tracker,
        ws: &mut crate::service::Workspace,
        hash: InfoHash,
        peer: &str,
    ) -> Result<crate::types::SwarmStats, crate::swarm::StoreError> {
        let a = crate::types::Announce {
            info_hash: hash,
            peer: peer.parse().expect("socket address"),
            event: crate::types::Event::Started,
            left: 5,
            numwant: 10,
        };
        tracker.announce(&a, crate::types::Families::Both, ws).await
    }

    #[tokio::test]
    async fn reloads_decide_the_next_announce_to_an_existing_swarm() {
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        let (listed, other) = (InfoHash([0xbb; 20]), InfoHash([0xcc; 20]));
        let (tracker, path) = tracker_with("reload-allow", AccessMode::Allow, &[&b]);
        let mut ws = crate::service::Workspace::default();
        assert!(announce(&tracker, &mut ws, listed, "10.0.0.1:1")
            .await
            .is_ok());
        let refused = announce(&tracker, &mut ws, other, "10.0.0.1:1").await;
        assert_eq!(refused, Err(crate::swarm::StoreError::NotAllowed));
        // A reload that drops the torrent refuses the next announce to its swarm; the swarm
        // keeps its peers until they expire, and a scrape shows zeros for it.
        std::fs::write(&path, &c).expect("rewrite the list");
        assert_eq!(tracker.reload_access_list(), Ok(Some(1)));
        let refused = announce(&tracker, &mut ws, listed, "10.0.0.1:1").await;
        assert_eq!(refused, Err(crate::swarm::StoreError::NotAllowed));
        let memory = tracker.store().memory().expect("memory store");
        assert_eq!(memory.scrape(&listed).incomplete, 1);
        let mut out = Vec::new();
        tracker.scrape(&[listed], &mut out).await.expect("scrape");
        assert_eq!(out[0].1.incomplete, 0);
        // A reload that adds one admits it.
        assert!(announce(&tracker, &mut ws, other, "10.0.0.1:1")
            .await
            .is_ok());
        std::fs::write(&path, format!("{b}\n{c}")).expect("rewrite the list");
        assert_eq!(tracker.reload_access_list(), Ok(Some(2)));
        let back = announce(&tracker, &mut ws, listed, "10.0.0.2:1").await;
        assert_eq!(back.map(|s| s.incomplete), Ok(2));
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_wrapping_generation_makes_every_swarm_look_its_torrent_up_again() {
        let b = "b".repeat(40);
        let listed = InfoHash([0xbb; 20]);
        // Deny mode with nothing denied: the torrent is admitted under the list's generation.
        let (tracker, path) = tracker_with("wrap", AccessMode::Deny, &[]);
        let access = tracker.access.as_ref().expect("configured");
        let mut ws = crate::service::Workspace::default();
        assert!(announce(&tracker, &mut ws, listed, "10.0.0.1:1")
            .await
            .is_ok());
        let first = access.list.load().generation;
        assert_eq!(first, 2, "the list at start, then the loaded one");
        // As many swaps later as the counter holds (65,535), the list that denies it takes the
        // same generation again: the swarm must not count as admitted under it.
        *access.generation.lock().expect("lock") = u16::MAX - 1;
        std::fs::write(&path, &b).expect("rewrite the list");
        for _ in 0..3 {
            assert_eq!(tracker.reload_access_list(), Ok(Some(1)));
        }
        assert_eq!(access.list.load().generation, first);
        let refused = announce(&tracker, &mut ws, listed, "10.0.0.1:1").await;
        assert_eq!(refused, Err(crate::swarm::StoreError::NotAllowed));
        let _ = std::fs::remove_file(&path);
    }
}
