//! Per-user token budgets: tokens (prompt and completion) a user may spend per
//! minute, by role (`[inference.budget]`). A fixed one-minute window per user on
//! this node, kept for at most [`MAX_USERS`] users (the least recently seen are
//! forgotten first, which can only be generous).
//!
//! A request is admitted while its user's window has room for its estimate (the
//! prompt's characters / 4 plus `max_tokens`); when it ends, what it really used
//! replaces the estimate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quick_cache::sync::Cache;
use tokio::time::Instant;

/// Users whose windows are remembered at once.
pub const MAX_USERS: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Window {
    /// Index of the current window since the budgets' epoch.
    index: u64,
    used: u64,
}

/// This node's token budgets.
pub struct TokenBudgets {
    windows: Cache<String, Arc<Mutex<Window>>>,
    epoch: Instant,
}

/// Tokens reserved for one request; [`Reservation::settle`] replaces the estimate
/// by the real count. Dropped unsettled, the estimate stays charged.
#[must_use = "settle it with the tokens used"]
pub struct Reservation {
    window: Option<(Arc<Mutex<Window>>, u64)>,
    estimate: u64,
}

/// Over budget: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub retry_after: Duration,
}

impl Default for TokenBudgets {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenBudgets {
    pub fn new() -> Self {
        Self { windows: Cache::new(MAX_USERS), epoch: Instant::now() }
    }

    /// Admits a request of `user` estimated at `estimate` tokens under `limit`
    /// tokens per minute (0: no limit).
    pub fn reserve(&self, user: &str, limit: u64, estimate: u64) -> Result<Reservation, OverBudget> {
        if limit == 0 {
            return Ok(Reservation { window: None, estimate });
        }
        let elapsed = self.epoch.elapsed();
        let index = elapsed.as_secs() / WINDOW.as_secs();
        let window =
            self.windows.get_or_insert_with(user, || Ok::<_, ()>(Arc::default())).unwrap_or_default();
        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
        if w.index != index {
            *w = Window { index, used: 0 };
        }
        // a request larger than the whole budget is admitted into an empty window
        if w.used > 0 && w.used.saturating_add(estimate) > limit {
            let next = Duration::from_secs((index + 1) * WINDOW.as_secs());
            let retry_after = next.saturating_sub(elapsed).max(Duration::from_secs(1));
            return Err(OverBudget { retry_after });
        }
        w.used = w.used.saturating_add(estimate);
        drop(w);
        Ok(Reservation { window: Some((window, index)), estimate })
    }

    /// Users remembered now.
    pub fn users(&self) -> usize {
        self.windows.len()
    }
}

impl Reservation {
    /// Replaces the estimate by `used` tokens.
    pub fn settle(self, used: u64) {
        let Some((window, index)) = self.window else { return };
        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
        if w.index == index {
            w.used = w.used.saturating_sub(self.estimate).saturating_add(used);
        }
    }
}

/// The estimate of a chat request: prompt characters / 4, plus `max_tokens`.
pub fn estimate(prompt_chars: usize, max_tokens: u32) -> u64 {
    (prompt_chars as u64).div_ceil(4).saturating_add(u64::from(max_tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_user_past_the_budget_waits_for_the_next_minute_and_others_do_not() {
        let budgets = TokenBudgets::new();
        budgets.reserve("ann", 1000, 600).expect("first").settle(600);
        let refused = budgets.reserve("ann", 1000, 600).err().expect("over budget");
        assert!(refused.retry_after <= WINDOW && refused.retry_after >= Duration::from_secs(1));
        budgets.reserve("bob", 1000, 600).expect("another user").settle(10);
        // settling below the estimate gives the difference back
        budgets.reserve("cy", 1000, 900).expect("cy").settle(100);
        budgets.reserve("cy", 1000, 800).expect("room after settling").settle(800);
        tokio::time::advance(WINDOW).await;
        budgets.reserve("ann", 1000, 600).expect("next window").settle(1);
        // no limit
        budgets.reserve("dee", 0, u64::MAX).expect("unlimited").settle(u64::MAX);
    }

    #[test]
    fn the_users_remembered_are_bounded() {
        let budgets = TokenBudgets::new();
        for i in 0..(MAX_USERS + 5_000) {
            budgets.reserve(&format!("u{i}"), 10, 1).expect("fresh user").settle(1);
        }
        assert!(budgets.users() <= MAX_USERS, "{} users remembered", budgets.users());
    }
}
