//! Counted places per key (connections per client address, per user): taken up to a bound,
//! given back when the place is dropped. Keys with no place taken are forgotten.

use std::hash::Hash;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

pub struct Slots<K: Hash + Eq + Clone> {
    table: Arc<DashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Default for Slots<K> {
    fn default() -> Self {
        Self {
            table: Arc::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// A place for `key`, unless it holds `max` already.
    pub fn take(&self, key: &K, max: usize) -> Option<Slot<K>> {
        let mut n = self.table.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.table.clone(),
            key: key.clone(),
        })
    }

    /// Places taken by `key` now.
    pub fn count(&self, key: &K) -> usize {
        self.table.get(key).map_or(0, |n| *n)
    }
}

/// One place, given back on drop.
pub struct Slot<K: Hash + Eq + Clone> {
    table: Arc<DashMap<K, usize>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Entry::Occupied(mut e) = self.table.entry(self.key.clone()) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_key_and_given_back() {
        let slots = Slots::default();
        let a1 = slots.take(&"a", 2).unwrap();
        let _a2 = slots.take(&"a", 2).unwrap();
        assert!(slots.take(&"a", 2).is_none());
        let _b = slots.take(&"b", 2).unwrap();
        drop(a1);
        assert_eq!(slots.count(&"a"), 1);
        assert!(slots.take(&"a", 2).is_some());
        drop(_b);
        assert_eq!(slots.count(&"b"), 0);
        assert!(
            slots.table.get(&"b").is_none(),
            "an unused key is forgotten"
        );
    }
}
