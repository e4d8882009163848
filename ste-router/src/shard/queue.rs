//! The writes waiting for a shard's next group commit.
//!
//! Writes to one shard queue here while the shard's write turn is taken;
//! whoever takes the turn next sends the queue's head as one Txn (see
//! `store/write.rs`). [`WriteQueue::take_batch`] keeps each key at most
//! once per batch and every key's writes in arrival order.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// What the queue needs to know of a queued write.
pub trait Queued {
    /// The key the write changes.
    fn key(&self) -> &[u8];
    /// About how many bytes the write adds to the shard Txn.
    fn bytes(&self) -> usize;
}

/// A FIFO of writes waiting for a shard's write turn.
pub struct WriteQueue<T> {
    items: Mutex<VecDeque<T>>,
}

impl<T> Default for WriteQueue<T> {
    fn default() -> Self {
        WriteQueue {
            items: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T: Queued> WriteQueue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` behind the writes already waiting.
    pub fn push(&self, item: T) {
        self.lock().push_back(item);
    }

    /// How many writes are waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no write is waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Takes the next batch, in arrival order: at most `max_ops` writes
    /// whose bytes add up to at most `max_bytes` (the first write is
    /// always taken, whatever its size), each key at most once. A write to
    /// a key already in the batch stays queued, and so do the later writes
    /// to that key, so one key's writes are applied in arrival order. The
    /// batch ends at the first write that does not fit.
    pub fn take_batch(&self, max_ops: usize, max_bytes: usize) -> Vec<T> {
        let mut queue = self.lock();
        let mut batch = Vec::new();
        let mut keys: HashSet<Vec<u8>> = HashSet::new();
        let mut bytes = 0usize;
        let mut kept = VecDeque::new();
        while let Some(item) = queue.pop_front() {
            if batch.len() >= max_ops.max(1) {
                queue.push_front(item);
                break;
            }
            if keys.contains(item.key()) {
                kept.push_back(item);
                continue;
            }
            if !batch.is_empty() && bytes + item.bytes() > max_bytes {
                queue.push_front(item);
                break;
            }
            bytes += item.bytes();
            keys.insert(item.key().to_vec());
            batch.push(item);
        }
        // Skipped duplicates go back in front, in their order.
        while let Some(item) = kept.pop_back() {
            queue.push_front(item);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct W(&'static str, usize, u32);

    impl Queued for W {
        fn key(&self) -> &[u8] {
            self.0.as_bytes()
        }
        fn bytes(&self) -> usize {
            self.1
        }
    }

    fn ids(items: &[W]) -> Vec<u32> {
        items.iter().map(|w| w.2).collect()
    }

    #[test]
    fn a_key_appears_once_per_batch_and_keeps_its_order() {
        let q = WriteQueue::default();
        for w in [
            W("a", 1, 1),
            W("b", 1, 2),
            W("a", 1, 3),
            W("c", 1, 4),
            W("a", 1, 5),
        ] {
            q.push(w);
        }
        assert_eq!(ids(&q.take_batch(10, 100)), vec![1, 2, 4]);
        assert_eq!(ids(&q.take_batch(10, 100)), vec![3]);
        assert_eq!(ids(&q.take_batch(10, 100)), vec![5]);
        assert!(q.take_batch(10, 100).is_empty());
    }

    #[test]
    fn batches_stop_at_the_op_and_byte_limits() {
        let q = WriteQueue::default();
        for (i, size) in [(1, 60), (2, 30), (3, 20), (4, 5), (5, 500)] {
            q.push(W(["a", "b", "c", "d", "e"][i as usize - 1], size, i));
        }
        assert_eq!(
            ids(&q.take_batch(10, 100)),
            vec![1, 2],
            "60+30, then 20 does not fit"
        );
        assert_eq!(ids(&q.take_batch(1, 100)), vec![3]);
        assert_eq!(ids(&q.take_batch(10, 100)), vec![4]);
        assert_eq!(
            ids(&q.take_batch(10, 100)),
            vec![5],
            "an oversized write goes alone"
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn skipped_duplicates_stay_ahead_of_the_writes_not_reached() {
        let q = WriteQueue::default();
        for w in [W("a", 1, 1), W("a", 1, 2), W("b", 1, 3), W("c", 1, 4)] {
            q.push(w);
        }
        assert_eq!(ids(&q.take_batch(2, 100)), vec![1, 3]);
        assert_eq!(ids(&q.take_batch(10, 100)), vec![2, 4]);
    }
}
