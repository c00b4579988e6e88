//! Counted slots: at most N holders per key at once, freed when the holder is dropped. Used for
//! connections (in all and per client address) and for event streams per login.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

/// How many slots of each key are taken. Keys with none are removed, so the map holds only
/// what is open.
pub struct Slots<K: Hash + Eq + Clone> {
    taken: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Clone> Default for Slots<K> {
    fn default() -> Self {
        Slots {
            taken: Default::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// Takes a slot of `key` unless `max` are taken already (`max` 0 = no limit).
    pub fn take(&self, key: &K, max: usize) -> Option<Slot<K>> {
        let mut taken = self.taken.lock();
        let count = taken.entry(key.clone()).or_insert(0);
        if max != 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            taken: self.taken.clone(),
            key: key.clone(),
        })
    }

    /// How many slots of `key` are taken.
    pub fn count(&self, key: &K) -> usize {
        self.taken.lock().get(key).copied().unwrap_or(0)
    }
}

/// One taken slot; dropping it frees the slot.
pub struct Slot<K: Hash + Eq + Clone> {
    taken: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut taken = self.taken.lock();
        if let Some(count) = taken.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                taken.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_at_most_max_slots_and_a_dropped_slot_is_free_again() {
        let slots: Slots<&str> = Slots::default();
        let a1 = slots.take(&"a", 2).expect("first");
        let _a2 = slots.take(&"a", 2).expect("second");
        assert!(slots.take(&"a", 2).is_none());
        assert!(
            slots.take(&"b", 2).is_some(),
            "another key has its own slots"
        );
        drop(a1);
        assert_eq!(slots.count(&"a"), 1);
        assert!(slots.take(&"a", 2).is_some());
    }

    #[test]
    fn max_zero_is_no_limit_and_empty_keys_are_forgotten() {
        let slots: Slots<u8> = Slots::default();
        let held: Vec<_> = (0..100).filter_map(|_| slots.take(&1, 0)).collect();
        assert_eq!(held.len(), 100);
        drop(held);
        assert!(slots.taken.lock().is_empty());
    }
}
