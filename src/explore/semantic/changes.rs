//! [`ChangeQueue`]: the item changes the semantic indexer has yet to apply, one
//! entry per item (a later change of an item replaces the earlier one), bounded.
//!
//! Writers only push (a lock and a map insert), so an Explore write never waits
//! for the indexer. When the queue is full, further changes are dropped and the
//! queue remembers it: the indexer then reloads its whole index from the
//! database, which holds every vector that was stored (items changed meanwhile get
//! their embedding from the next `embed_items` job, or when they are next asked
//! for as related items).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::explore::ItemChange;

/// What to do for an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// It was created or changed: embed it again if its text changed, and index it.
    Refresh,
    /// It was deleted: drop it from the index.
    Remove,
}

/// Changes taken from the queue to apply together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub refresh: Vec<String>,
    pub remove: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.refresh.is_empty() && self.remove.is_empty()
    }

    pub fn len(&self) -> usize {
        self.refresh.len() + self.remove.len()
    }
}

#[derive(Debug, Default)]
struct Pending {
    ops: BTreeMap<String, Op>,
    overflowed: bool,
}

/// The bounded queue of item changes.
#[derive(Debug)]
pub struct ChangeQueue {
    pending: Mutex<Pending>,
    capacity: usize,
}

impl ChangeQueue {
    /// A queue of at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { pending: Mutex::default(), capacity: capacity.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `changes`; answers how many were dropped because the queue was full.
    pub fn push(&self, changes: &[ItemChange]) -> usize {
        let mut pending = self.lock();
        let mut dropped = 0;
        for change in changes {
            let op = if change.after.is_some() { Op::Refresh } else { Op::Remove };
            if pending.ops.len() >= self.capacity && !pending.ops.contains_key(&change.id) {
                dropped += 1;
                continue;
            }
            pending.ops.insert(change.id.clone(), op);
        }
        if dropped > 0 {
            pending.overflowed = true;
        }
        dropped
    }

    /// Takes at most `max` items' changes (in id order).
    pub fn take(&self, max: usize) -> Batch {
        let mut pending = self.lock();
        let mut batch = Batch::default();
        while batch.len() < max {
            let Some((id, op)) = pending.ops.pop_first() else {
                break;
            };
            match op {
                Op::Refresh => batch.refresh.push(id),
                Op::Remove => batch.remove.push(id),
            }
        }
        batch
    }

    /// Puts a batch that could not be applied back, unless a newer change of an
    /// item came meanwhile (that one wins). Past capacity it is dropped as
    /// [`Self::push`] drops.
    pub fn put_back(&self, batch: Batch) {
        let mut pending = self.lock();
        let ops = batch.refresh.into_iter().map(|id| (id, Op::Refresh));
        for (id, op) in ops.chain(batch.remove.into_iter().map(|id| (id, Op::Remove))) {
            if pending.ops.contains_key(&id) {
                continue;
            }
            if pending.ops.len() >= self.capacity {
                pending.overflowed = true;
                continue;
            }
            pending.ops.insert(id, op);
        }
    }

    /// Whether changes were dropped since the last call (and clears it).
    pub fn take_overflow(&self) -> bool {
        std::mem::take(&mut self.lock().overflowed)
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::Families;

    fn changed(id: &str) -> ItemChange {
        let families =
            Families { group: "Computer Science".into(), category_code: "cs.LG".into(), tags: vec![] };
        ItemChange { id: id.into(), version: 1, before: None, after: Some(families) }
    }

    fn deleted(id: &str) -> ItemChange {
        ItemChange { after: None, ..changed(id) }
    }

    #[test]
    fn the_last_change_of_an_item_wins_and_batches_are_bounded() {
        let queue = ChangeQueue::new(10);
        assert_eq!(queue.push(&[changed("b"), changed("a"), deleted("c"), changed("c"), deleted("b")]), 0);
        assert_eq!(queue.len(), 3);
        let first = queue.take(2);
        assert_eq!(first, Batch { refresh: vec!["a".into()], remove: vec!["b".into()] });
        assert_eq!(queue.take(10), Batch { refresh: vec!["c".into()], remove: vec![] });
        assert!(queue.take(10).is_empty());
        // a failed batch goes back, but not over a newer change
        queue.push(&[deleted("a")]);
        queue.put_back(first);
        assert_eq!(queue.take(10), Batch { refresh: vec![], remove: vec!["a".into(), "b".into()] });
    }

    #[test]
    fn a_full_queue_drops_new_items_and_says_so_once() {
        let queue = ChangeQueue::new(2);
        assert_eq!(queue.push(&[changed("a"), changed("b"), changed("c")]), 1);
        assert_eq!(queue.push(&[deleted("a")]), 0, "an item already queued is updated in place");
        assert_eq!(queue.len(), 2);
        assert!(queue.take_overflow());
        assert!(!queue.take_overflow(), "cleared");
        queue.put_back(Batch { refresh: vec!["d".into()], remove: vec![] });
        assert!(queue.take_overflow(), "a batch put back past capacity is dropped too");
        assert_eq!(queue.take(5), Batch { refresh: vec!["b".into()], remove: vec!["a".into()] });
    }
}
