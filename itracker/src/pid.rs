//! Stable PID identifiers.
//!
//! A tracker buckets its peers by PID. Snapshots come and go (every topology change builds a new
//! one), so a bucket must never be keyed by a position in one snapshot's PID list: the same PID
//! name must map to the same id forever, in every snapshot of this process. The interner below
//! only grows; its size is bounded by the number of distinct PID names ever loaded, which the
//! operator controls (topology files, ALTO maps), not the peers.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

/// A PID's stable id inside this process. Equal names give equal ids.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PidId(pub u32);

/// Name of the PID that holds everything no other PID covers (`0.0.0.0/0`, `::/0`) when no
/// topology is loaded at all. Always id 0.
pub const DEFAULT_PID_NAME: &str = "default";

#[derive(Default)]
struct Interner {
    ids: HashMap<Arc<str>, PidId>,
    names: Vec<Arc<str>>,
}

static INTERNER: LazyLock<RwLock<Interner>> = LazyLock::new(|| {
    let mut interner = Interner::default();
    interner.intern(DEFAULT_PID_NAME);
    RwLock::new(interner)
});

impl Interner {
    fn intern(&mut self, name: &str) -> PidId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = PidId(u32::try_from(self.names.len()).expect("fewer than 2^32 PID names"));
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }
}

impl PidId {
    /// The id of the built-in default PID.
    pub const DEFAULT: PidId = PidId(0);

    /// The stable id of `name`, allocating one the first time a name is seen.
    pub fn intern(name: &str) -> PidId {
        if let Some(id) = INTERNER
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ids
            .get(name)
        {
            return *id;
        }
        INTERNER
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .intern(name)
    }

    /// The name this id was interned from.
    pub fn name(self) -> Arc<str> {
        INTERNER.read().unwrap_or_else(|e| e.into_inner()).names[self.0 as usize].clone()
    }
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
    }
}
