//! Where announce paths leave their deltas until the publisher takes them.
//!
//! Each thread that announces (a UDP worker, an HTTP worker) gets a buffer of its own the first
//! time it records one, so the announce path locks a mutex nobody else wants except the
//! publisher, once per batch interval, to empty it: no contention, no allocation once the buffer
//! has grown. [`Outbox::drain`] moves every buffer's contents out and leaves the buffers their
//! capacity.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::delta::Local;

type Buffer = Arc<Mutex<Vec<Local>>>;

/// Distinguishes outboxes in the per-thread table (several trackers may run in one process).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's buffer in each outbox it has recorded into.
    static MINE: RefCell<Vec<(u64, Buffer)>> = const { RefCell::new(Vec::new()) };
}

/// Locks a buffer; a panic elsewhere while it was held leaves plain data, still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The per-thread buffers of one replicated store.
#[derive(Debug)]
pub struct Outbox {
    id: u64,
    buffers: Mutex<Vec<Buffer>>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            buffers: Mutex::new(Vec::new()),
        }
    }
}

impl Outbox {
    /// Records one delta in this thread's buffer.
    pub fn push(&self, l: Local) {
        MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            if let Some((_, buffer)) = mine.iter().find(|(id, _)| *id == self.id) {
                lock(buffer).push(l);
                return;
            }
            // First record of this thread here: forget buffers of outboxes since dropped.
            mine.retain(|(_, b)| Arc::strong_count(b) > 1);
            let buffer: Buffer = Arc::new(Mutex::new(vec![l]));
            lock(&self.buffers).push(buffer.clone());
            mine.push((self.id, buffer));
        });
    }

    /// Moves every recorded delta into `out` (appended, oldest of each thread first).
    pub fn drain(&self, out: &mut Vec<Local>) {
        for buffer in lock(&self.buffers).iter() {
            out.append(&mut lock(buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Announce, Event, InfoHash};

    fn local(port: u16) -> Local {
        Local::of(&Announce {
            info_hash: InfoHash([1; 20]),
            peer: std::net::SocketAddr::from(([10, 0, 0, 1], port)),
            event: Event::None,
            left: 1,
            numwant: 0,
        })
    }

    #[test]
    fn every_threads_deltas_are_drained_once() {
        let outbox = Arc::new(Outbox::default());
        let other = Outbox::default();
        let threads: Vec<_> = (0..4u16)
            .map(|t| {
                let outbox = outbox.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        outbox.push(local(t * 1000 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        other.push(local(1));
        let mut out = Vec::new();
        outbox.drain(&mut out);
        assert_eq!(out.len(), 400);
        let mut ports: Vec<u16> = out.iter().map(|l| l.peer.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 400, "nothing lost or doubled");
        out.clear();
        outbox.drain(&mut out);
        assert!(out.is_empty(), "a drained outbox is empty");
        other.drain(&mut out);
        assert_eq!(out, [local(1)], "outboxes keep their own deltas");
    }
}
