//! A time-bucketed queue: items due at the same instant share one bucket.
//!
//! Flow-level runs are dominated by batches: a homogeneous all-to-all starts and finishes
//! thousands of flows at one instant. A binary heap pays O(log n) with cache misses per item; here
//! an item costs one B-tree lookup for its instant and a `Vec::push`, and a whole instant is
//! drained at once. Items of one instant come out in insertion order, which is deterministic.

use crate::time::SimTime;
use std::collections::BTreeMap;

/// Largest bucket buffer kept for reuse, in items.
const SPARE_CAPACITY_MAX: usize = 4096;

/// Items keyed by due time, FIFO within a time.
#[derive(Debug)]
pub(crate) struct TimeBuckets<T> {
    buckets: BTreeMap<SimTime, Vec<T>>,
    len: usize,
    /// Emptied vectors kept for reuse, so steady state does not allocate.
    spare: Vec<Vec<T>>,
}

impl<T> Default for TimeBuckets<T> {
    fn default() -> Self {
        Self {
            buckets: BTreeMap::new(),
            len: 0,
            spare: Vec::new(),
        }
    }
}

impl<T> TimeBuckets<T> {
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, at: SimTime, item: T) {
        let spare = &mut self.spare;
        self.buckets
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(item);
        self.len += 1;
    }

    /// The earliest due time.
    pub(crate) fn first_time(&self) -> Option<SimTime> {
        self.buckets.first_key_value().map(|(&t, _)| t)
    }

    /// The earliest bucket, if due at or before `now`, removed; give it back with `recycle`.
    pub(crate) fn pop_due(&mut self, now: SimTime) -> Option<(SimTime, Vec<T>)> {
        let entry = self.buckets.first_entry().filter(|e| *e.key() <= now)?;
        let (at, items) = entry.remove_entry();
        self.len -= items.len();
        Some((at, items))
    }

    /// Returns a drained bucket's storage for reuse.
    pub(crate) fn recycle(&mut self, mut items: Vec<T>) {
        items.clear();
        // Huge batches are rare; keeping their buffers would pin their peak memory forever.
        if self.spare.len() < 64 && items.capacity() <= SPARE_CAPACITY_MAX {
            self.spare.push(items);
        }
    }

    /// Drops items failing `keep` from the front buckets until the earliest item is kept, so
    /// [`Self::first_time`] is the time of a kept item. O(1) when the first item is kept.
    pub(crate) fn prune_front(&mut self, keep: impl Fn(&T) -> bool) {
        while let Some(mut entry) = self.buckets.first_entry() {
            if entry.get().first().is_some_and(&keep) {
                return;
            }
            let before = entry.get().len();
            entry.get_mut().retain(&keep);
            self.len -= before - entry.get().len();
            if !entry.get().is_empty() {
                return;
            }
            let items = entry.remove();
            self.recycle(items);
        }
    }

    /// Keeps only items satisfying `keep`, dropping emptied buckets.
    pub(crate) fn retain(&mut self, keep: impl Fn(&T) -> bool) {
        let mut len = 0;
        self.buckets.retain(|_, items| {
            items.retain(&keep);
            len += items.len();
            !items.is_empty()
        });
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_by_time_then_insertion_order() {
        let mut q = TimeBuckets::default();
        q.push(SimTime::from_micros(5), 'b');
        q.push(SimTime::from_micros(1), 'a');
        q.push(SimTime::from_micros(5), 'c');
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop_due(SimTime::ZERO), None);
        assert_eq!(
            q.pop_due(SimTime::from_micros(9)),
            Some((SimTime::from_micros(1), vec!['a']))
        );
        q.push(SimTime::from_micros(7), 'x');
        q.push(SimTime::from_micros(7), 'y');
        q.prune_front(|&c| c == 'y');
        assert_eq!(q.len(), 1);
        assert_eq!(q.first_time(), Some(SimTime::from_micros(7)));
        q.prune_front(|&c| c == 'z');
        assert_eq!(q.len(), 0);
        assert_eq!(q.first_time(), None);
    }
}
