//! Bounded, insertion-ordered memory of recent things: request ids, final statuses, nonces.
//!
//! Each map holds at most `capacity` entries and forgets entries older than
//! `max_age_ms`; the oldest go first. Eviction is amortised into inserts, so
//! no background task is needed.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use sms_core::events::Millis;

/// A map that keeps only its most recent entries.
#[derive(Debug)]
pub struct RecentMap<K, V> {
    entries: HashMap<K, (V, Millis, u64)>,
    /// Keys in insertion order, with the generation they were inserted at, so
    /// a key re-inserted later is not evicted by its stale position.
    order: VecDeque<(K, u64)>,
    capacity: usize,
    max_age_ms: i64,
    generation: u64,
}

impl<K: Eq + Hash + Clone, V> RecentMap<K, V> {
    /// A map of at most `capacity` entries, none older than `max_age_ms`.
    pub fn new(capacity: usize, max_age_ms: u64) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            max_age_ms: i64::try_from(max_age_ms).unwrap_or(i64::MAX),
            generation: 0,
        }
    }

    /// Inserts or replaces `key`, recorded at `now`.
    pub fn insert(&mut self, key: K, value: V, now: Millis) {
        self.generation += 1;
        self.order.push_back((key.clone(), self.generation));
        self.entries.insert(key, (value, now, self.generation));
        self.evict(now);
    }

    /// The value of `key` when present and not too old.
    pub fn get(&self, key: &K, now: Millis) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|(_, at, _)| now.saturating_sub(*at) <= self.max_age_ms)
            .map(|(v, _, _)| v)
    }

    /// The value of `key` for changing in place.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(v, _, _)| v)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|(v, _, _)| v)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn evict(&mut self, now: Millis) {
        while let Some((key, generation)) = self.order.front() {
            let current = self.entries.get(key).map(|(_, at, g)| (*at, *g));
            let evict = match current {
                // Stale position of a key re-inserted (or removed) since.
                None => true,
                Some((_, g)) if g != *generation => true,
                Some((at, _)) => {
                    self.entries.len() > self.capacity || now.saturating_sub(at) > self.max_age_ms
                }
            };
            if !evict {
                break;
            }
            if let Some((key, generation)) = self.order.pop_front() {
                if self
                    .entries
                    .get(&key)
                    .is_some_and(|(_, _, g)| *g == generation)
                {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RecentMap;

    #[test]
    fn keeps_at_most_capacity_newest_first() {
        let mut map = RecentMap::new(3, 1_000_000);
        for n in 0..10 {
            map.insert(n, n * 10, 0);
        }
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&9, 0), Some(&90));
        assert_eq!(map.get(&6, 0), None);
    }

    #[test]
    fn forgets_old_entries() {
        let mut map = RecentMap::new(100, 1_000);
        map.insert("a", 1, 0);
        assert_eq!(map.get(&"a", 1_000), Some(&1));
        assert_eq!(map.get(&"a", 1_001), None);
        map.insert("b", 2, 5_000);
        assert_eq!(map.len(), 1, "inserting evicts the expired entry");
    }

    #[test]
    fn a_reinserted_key_survives_its_old_position() {
        let mut map = RecentMap::new(2, 1_000_000);
        map.insert("a", 1, 0);
        map.insert("b", 2, 0);
        map.insert("a", 3, 0);
        map.insert("c", 4, 0);
        assert_eq!(map.get(&"a", 0), Some(&3));
        assert_eq!(map.get(&"b", 0), None);
        assert_eq!(map.len(), 2);
    }
}
