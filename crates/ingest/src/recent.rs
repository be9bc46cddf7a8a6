//! Bounded, insertion-ordered memory of recent things: request ids, final statuses, nonces.
//!
//! Each map holds at most `capacity` entries and forgets entries older than
//! `max_age_ms`; the oldest go first. Eviction is amortised into inserts, so
//! no background task is needed.
//!
//! Entries live once, in a ring in insertion order; a hash index maps each
//! key to its place in the ring. A key inserted again leaves an empty slot
//! behind, and empty slots count towards the capacity until they reach the
//! front, so the ring never outgrows `capacity` slots. With 16-byte keys an
//! entry costs its slot plus about 40 bytes of index.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use sms_core::events::Millis;

/// A map that keeps only its most recent entries.
#[derive(Debug)]
pub struct RecentMap<K, V> {
    /// Entries oldest first; `None` where an entry was removed or inserted
    /// again later.
    ring: VecDeque<Option<(K, V, Millis)>>,
    /// Where each key's entry is: its position counted from the first entry
    /// ever inserted.
    index: HashMap<K, u64>,
    /// The position of the ring's front.
    first: u64,
    capacity: usize,
    max_age_ms: i64,
}

impl<K: Eq + Hash + Clone, V> RecentMap<K, V> {
    /// A map of at most `capacity` entries, none older than `max_age_ms`.
    pub fn new(capacity: usize, max_age_ms: u64) -> Self {
        Self {
            ring: VecDeque::new(),
            index: HashMap::new(),
            first: 0,
            capacity: capacity.max(1),
            max_age_ms: i64::try_from(max_age_ms).unwrap_or(i64::MAX),
        }
    }

    fn slot(&self, key: &K) -> Option<&(K, V, Millis)> {
        let position = *self.index.get(key)?;
        self.ring
            .get(usize::try_from(position - self.first).ok()?)?
            .as_ref()
    }

    fn slot_mut(&mut self, key: &K) -> Option<&mut Option<(K, V, Millis)>> {
        let position = *self.index.get(key)?;
        self.ring
            .get_mut(usize::try_from(position - self.first).ok()?)
    }

    /// Inserts or replaces `key`, recorded at `now`.
    pub fn insert(&mut self, key: K, value: V, now: Millis) {
        if let Some(earlier) = self.slot_mut(&key) {
            *earlier = None;
        }
        let position = self.first + self.ring.len() as u64;
        self.index.insert(key.clone(), position);
        self.ring.push_back(Some((key, value, now)));
        self.evict(now);
    }

    /// The value of `key` when present and not too old.
    pub fn get(&self, key: &K, now: Millis) -> Option<&V> {
        self.slot(key)
            .filter(|(_, _, at)| now.saturating_sub(*at) <= self.max_age_ms)
            .map(|(_, v, _)| v)
    }

    /// The value of `key` for changing in place.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.slot_mut(key)?.as_mut().map(|(_, v, _)| v)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let taken = self.slot_mut(key)?.take();
        self.index.remove(key);
        taken.map(|(_, v, _)| v)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn evict(&mut self, now: Millis) {
        while let Some(front) = self.ring.front() {
            let evict = match front {
                None => true,
                Some((_, _, at)) => {
                    self.ring.len() > self.capacity || now.saturating_sub(*at) > self.max_age_ms
                }
            };
            if !evict {
                break;
            }
            if let Some(Some((key, _, _))) = self.ring.pop_front() {
                self.index.remove(&key);
            }
            self.first += 1;
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

    #[test]
    fn removed_keys_are_gone_and_their_slots_freed() {
        let mut map = RecentMap::new(3, 1_000_000);
        map.insert("a", 1, 0);
        map.insert("b", 2, 0);
        assert_eq!(map.remove(&"a"), Some(1));
        assert_eq!(map.remove(&"a"), None);
        assert_eq!(map.get(&"a", 0), None);
        *map.get_mut(&"b").unwrap() = 5;
        map.insert("c", 3, 0);
        map.insert("d", 4, 0);
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&"b", 0), Some(&5));
        assert!(map.ring.len() <= 3);
    }

    proptest::proptest! {
        /// Against a plain map of the last `capacity` distinct keys written.
        #[test]
        fn holds_the_latest_value_of_each_recent_key(
            ops in proptest::collection::vec((0u8..12, proptest::bool::ANY), 0..200),
            capacity in 1usize..8,
        ) {
            let mut map = RecentMap::new(capacity, 1_000_000);
            let mut model: Vec<(u8, usize)> = Vec::new();
            let mut newest: Option<(u8, usize)> = None;
            for (n, (key, remove)) in ops.into_iter().enumerate() {
                if remove {
                    let expected = model.iter().position(|(k, _)| *k == key).map(|i| model.remove(i).1);
                    let removed = map.remove(&key);
                    proptest::prop_assert!(removed.is_none() || removed == expected);
                    newest = newest.filter(|(k, _)| *k != key);
                } else {
                    model.retain(|(k, _)| *k != key);
                    model.push((key, n));
                    map.insert(key, n, 0);
                    newest = Some((key, n));
                }
                proptest::prop_assert!(map.ring.len() <= capacity);
                for (key, value) in &model {
                    if let Some(found) = map.get(key, 0) {
                        proptest::prop_assert_eq!(found, value);
                    }
                }
                for key in 0u8..12 {
                    if !model.iter().any(|(k, _)| *k == key) {
                        proptest::prop_assert_eq!(map.get(&key, 0), None);
                    }
                }
                proptest::prop_assert!(map.len() <= model.len());
                // The key inserted last is always held (unless removed since).
                if let Some((key, value)) = newest {
                    proptest::prop_assert_eq!(map.get(&key, 0), Some(&value));
                }
            }
        }
    }
}
