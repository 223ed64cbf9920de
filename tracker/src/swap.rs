//! A worker's cached view of a value that is swapped in as a whole (`arc-swap`): the topology
//! snapshot, the access list. Loading through the cache is a plain load and a pointer compare;
//! `ArcSwap::load` takes a guard, two locked instructions per announce.

use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

/// One worker's cache of one swapped value (see [`SwapCache::load`]).
pub struct SwapCache<T>(Option<Cache<Arc<ArcSwap<T>>, Arc<T>>>);

impl<T> Default for SwapCache<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> std::fmt::Debug for SwapCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwapCache")
    }
}

impl<T> SwapCache<T> {
    /// The current value of `current`, through this cache, which is (re)filled when it is empty
    /// or belongs to another `ArcSwap`. Sees a swapped-in value on the next call.
    pub fn load<'c>(&'c mut self, current: &Arc<ArcSwap<T>>) -> &'c Arc<T> {
        let ours = |c: &Cache<_, _>| std::ptr::eq(c.arc_swap(), &**current);
        if !self.0.as_ref().is_some_and(ours) {
            self.0 = None;
        }
        self.0
            .get_or_insert_with(|| Cache::new(Arc::clone(current)))
            .load()
    }
}
