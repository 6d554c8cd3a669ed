//! Which item views count: one per (user, item) per window, so that trending ranks
//! what people read rather than how often one client asks.
//!
//! The ViewCounter holds one [`ViewDedup`]. It remembers the pairs it counted in
//! two generations of at most `max_entries / 2` hashed pairs each: a generation
//! becomes the previous one when it is a window old (or full), and the previous one
//! is then forgotten. A pair counted less than a window ago is therefore always in
//! one of the two, unless the table filled up and its generation was forgotten
//! early; such a pair (counted as an eviction) may count a second time within its
//! window. Nothing is shared between nodes or kept across a restart of the actor.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics;

/// What became of one view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewOutcome {
    /// The first view of the item by this user within the window: it counts.
    Counted,
    /// The user viewed the item less than a window ago: it does not count.
    Duplicate,
}

/// The (user, item) pairs counted within the last window, bounded in memory.
#[derive(Debug)]
pub struct ViewDedup {
    window: Duration,
    max_generation: usize,
    /// Keyed per process, so that which pairs collide cannot be chosen from outside.
    hasher: RandomState,
    /// Times are kept as milliseconds since this instant (8 bytes instead of 16).
    origin: Instant,
    rotated_at: Instant,
    /// Pairs first counted since `rotated_at`, with when.
    current: HashMap<u64, u64>,
    /// Pairs counted in the generation before.
    previous: HashMap<u64, u64>,
}

impl ViewDedup {
    /// Remembers pairs for `window` (zero: every view counts, nothing is remembered),
    /// holding at most `max_entries` of them (at least 2).
    pub fn new(window: Duration, max_entries: usize) -> Self {
        let now = Instant::now();
        Self {
            window,
            max_generation: (max_entries / 2).max(1),
            hasher: RandomState::new(),
            origin: now,
            rotated_at: now,
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    /// Decides whether `user`'s view of `item` counts, and remembers it if it does.
    pub fn check(&mut self, user: &str, item: &str) -> ViewOutcome {
        if self.window.is_zero() {
            return ViewOutcome::Counted;
        }
        let now = Instant::now();
        self.rotate_if_old(now);
        let key = self.hasher.hash_one((user, item));
        let at = millis(now.duration_since(self.origin));
        let window = millis(self.window);
        let recent = |generation: &HashMap<u64, u64>| {
            generation.get(&key).is_some_and(|&counted| at.saturating_sub(counted) < window)
        };
        if recent(&self.current) || recent(&self.previous) {
            return ViewOutcome::Duplicate;
        }
        if self.current.len() >= self.max_generation {
            // full: forget the older generation now rather than grow (once per
            // `max_entries / 2` counted views, so the count below is amortised)
            let unexpired = self.previous.values().filter(|&&counted| at.saturating_sub(counted) < window);
            metrics::explore_view_dedup_evictions(unexpired.count());
            self.rotate(now);
        }
        self.current.insert(key, at);
        ViewOutcome::Counted
    }

    /// How many pairs are remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether no pair is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn rotate_if_old(&mut self, now: Instant) {
        let age = now.duration_since(self.rotated_at);
        if age < self.window {
            return;
        }
        if age >= self.window.saturating_mul(2) {
            // both generations are older than a window: nothing in them matters
            self.current = HashMap::new();
        }
        self.rotate(now);
    }

    fn rotate(&mut self, now: Instant) {
        self.previous = std::mem::take(&mut self.current);
        self.rotated_at = now;
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const WINDOW: Duration = Duration::from_secs(1800);

    #[tokio::test(start_paused = true)]
    async fn one_view_per_user_and_item_per_window() {
        let mut dedup = ViewDedup::new(WINDOW, 1000);
        assert_eq!(dedup.check("u1", "a"), ViewOutcome::Counted);
        for _ in 0..100 {
            assert_eq!(dedup.check("u1", "a"), ViewOutcome::Duplicate);
        }
        assert_eq!(dedup.check("u2", "a"), ViewOutcome::Counted, "another user");
        assert_eq!(dedup.check("u1", "b"), ViewOutcome::Counted, "another item");
        // the pair is hashed as a pair: moving characters between the parts makes another one
        assert_eq!(dedup.check("u1a", ""), ViewOutcome::Counted);
        advance(WINDOW - Duration::from_millis(1)).await;
        assert_eq!(dedup.check("u1", "a"), ViewOutcome::Duplicate, "still within the window");
        advance(Duration::from_millis(1)).await;
        assert_eq!(dedup.check("u1", "a"), ViewOutcome::Counted, "the window has passed");
        assert_eq!(dedup.check("u1", "a"), ViewOutcome::Duplicate);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_counted_late_in_a_generation_survives_its_rotation() {
        let mut dedup = ViewDedup::new(WINDOW, 1000);
        dedup.check("early", "x");
        advance(WINDOW * 9 / 10).await;
        assert_eq!(dedup.check("late", "x"), ViewOutcome::Counted);
        advance(WINDOW / 10).await;
        // this check rotates: `late` moves to the previous generation, `early` with it
        assert_eq!(dedup.check("early", "x"), ViewOutcome::Counted, "a window after it was counted");
        advance(WINDOW * 8 / 10).await;
        assert_eq!(dedup.check("late", "x"), ViewOutcome::Duplicate, "0.9 of a window after");
        advance(WINDOW / 10).await;
        assert_eq!(dedup.check("late", "x"), ViewOutcome::Counted, "a window after");
        advance(WINDOW * 3).await;
        dedup.check("someone", "y");
        assert_eq!(dedup.len(), 1, "generations older than two windows are dropped whole");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_the_oldest_are_forgotten_first() {
        let mut dedup = ViewDedup::new(WINDOW, 10);
        for i in 0..1000 {
            assert_eq!(dedup.check(&format!("u{i}"), "a"), ViewOutcome::Counted);
            assert!(dedup.len() <= 10, "{} pairs held", dedup.len());
        }
        assert_eq!(dedup.check("u999", "a"), ViewOutcome::Duplicate, "the newest are remembered");
        assert_eq!(dedup.check("u0", "a"), ViewOutcome::Counted, "the oldest were forgotten early");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_counts_every_view() {
        let mut dedup = ViewDedup::new(Duration::ZERO, 10);
        for _ in 0..5 {
            assert_eq!(dedup.check("u1", "a"), ViewOutcome::Counted);
        }
        assert!(dedup.is_empty());
    }
}
