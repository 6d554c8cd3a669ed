//! The trending score: views decayed exponentially with a configurable half-life.
//!
//! An item's decayed views at time `t` are `Σ vᵢ · 2^(−(t − tᵢ)/H)` over its view
//! batches (`vᵢ` views counted at `tᵢ`, half-life `H`). Storing that sum would
//! need a rewrite of every row as time passes; instead each row keeps
//! `trend = log₂ Σ vᵢ · 2^((tᵢ − T₀)/H)` for a fixed epoch `T₀`. Ordering rows by
//! `trend` is ordering them by decayed views at any common `t`, because
//! `decayed(t) = 2^(trend − (t − T₀)/H)` is monotonic in `trend`. Adding a batch
//! is a log-sum-exp, so a flush touches only the rows that were viewed, and the
//! logarithm keeps the value small forever.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

/// `trend` of an item that was never viewed.
pub const NEVER_VIEWED: f64 = -1.0e9;

fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(1_735_689_600, 0).single().unwrap_or_default() // 2025-01-01T00:00:00Z
}

fn half_lives_since_epoch(at: DateTime<Utc>, half_life: Duration) -> f64 {
    let seconds = (at - epoch()).num_milliseconds() as f64 / 1000.0;
    seconds / half_life.as_secs_f64().max(1.0)
}

/// The new `trend` after `views` more views at `at`.
pub fn add_views(current: f64, views: u64, at: DateTime<Utc>, half_life: Duration) -> f64 {
    if views == 0 {
        return current;
    }
    let added = (views as f64).log2() + half_lives_since_epoch(at, half_life);
    if current <= NEVER_VIEWED / 2.0 {
        return added;
    }
    let (hi, lo) = if current >= added { (current, added) } else { (added, current) };
    hi + (1.0 + (lo - hi).exp2()).log2()
}

/// The decayed view count a `trend` value stands for at `now`.
pub fn decayed_views(trend: f64, now: DateTime<Utc>, half_life: Duration) -> f64 {
    if trend <= NEVER_VIEWED / 2.0 {
        return 0.0;
    }
    (trend - half_lives_since_epoch(now, half_life)).exp2()
}

/// What re-encoding a score from half-life `from` to half-life `to` adds to it, as
/// of `at`: the score decayed to `at` under `from` is the same number of decayed
/// views as `trend + shift` decayed to `at` under `to` (on the log scale the
/// re-encoding is a shift, the same for every row). Zero when `from == to`: time
/// passing needs no rewrite (see the module docs).
pub fn rescale_shift(at: DateTime<Utc>, from: Duration, to: Duration) -> f64 {
    half_lives_since_epoch(at, to) - half_lives_since_epoch(at, from)
}

/// Whether `trend` is a viewed item's score (not [`NEVER_VIEWED`]).
pub fn is_viewed(trend: f64) -> bool {
    trend > NEVER_VIEWED / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(days: i64) -> DateTime<Utc> {
        epoch() + chrono::Duration::days(300) + chrono::Duration::days(days)
    }

    #[test]
    fn views_decay_by_half_each_half_life() {
        let t = add_views(NEVER_VIEWED, 100, at(0), DAY);
        assert!((decayed_views(t, at(0), DAY) - 100.0).abs() < 1e-6);
        assert!((decayed_views(t, at(1), DAY) - 50.0).abs() < 1e-6);
        assert!((decayed_views(t, at(3), DAY) - 12.5).abs() < 1e-6);
        assert_eq!(decayed_views(NEVER_VIEWED, at(0), DAY), 0.0);
    }

    #[test]
    fn recent_views_outrank_old_ones() {
        let old = add_views(NEVER_VIEWED, 100, at(0), DAY);
        let new = add_views(NEVER_VIEWED, 30, at(2), DAY); // 100 two half-lives ago = 25 now
        assert!(new > old);
        assert!(add_views(NEVER_VIEWED, 1, at(0), DAY) > NEVER_VIEWED);
    }

    #[test]
    fn a_rescaled_score_stands_for_the_same_decayed_views_now() {
        let twelve_hours = DAY / 2;
        let t = add_views(add_views(NEVER_VIEWED, 80, at(0), twelve_hours), 20, at(1), twelve_hours);
        let now = at(2);
        let rescaled = t + rescale_shift(now, twelve_hours, DAY);
        let before = decayed_views(t, now, twelve_hours);
        assert!((decayed_views(rescaled, now, DAY) - before).abs() < 1e-9 * before.max(1.0));
        // from then on it decays by half a day at a time
        let later = decayed_views(rescaled, at(3), DAY);
        assert!((later - before / 2.0).abs() < 1e-9 * before.max(1.0));
        assert_eq!(rescale_shift(now, DAY, DAY), 0.0);
        assert!(is_viewed(t) && !is_viewed(NEVER_VIEWED));
    }

    proptest! {
        #[test]
        fn sum_matches_the_direct_formula(batches in proptest::collection::vec((1u64..10_000, 0i64..60), 1..20)) {
            let mut trend = NEVER_VIEWED;
            let mut direct = 0.0;
            for (views, day) in &batches {
                trend = add_views(trend, *views, at(*day), DAY);
                direct += *views as f64 * 2f64.powf(-(60 - day) as f64);
            }
            let got = decayed_views(trend, at(60), DAY);
            prop_assert!((got - direct).abs() <= direct * 1e-9 + 1e-9, "{got} vs {direct}");
        }

        #[test]
        fn order_of_batches_does_not_matter(a in 1u64..1000, b in 1u64..1000, da in 0i64..30, db in 0i64..30) {
            let x = add_views(add_views(NEVER_VIEWED, a, at(da), DAY), b, at(db), DAY);
            let y = add_views(add_views(NEVER_VIEWED, b, at(db), DAY), a, at(da), DAY);
            prop_assert!((x - y).abs() < 1e-9);
        }
    }
}
