//! Exponential restart backoff with proportional jitter.
//!
//! The delay before restart attempt `n` (counting from 0) is
//! `min(initial * multiplier^n, max)`, then reduced by a random fraction of at
//! most `jitter` so that siblings failing together do not restart in lockstep.

use std::time::Duration;

use rand::Rng;

/// How long to wait before each restart attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first attempt (attempt 0).
    pub initial: Duration,
    /// Upper bound on any delay.
    pub max: Duration,
    /// Growth factor per attempt; at least 1.0.
    pub multiplier: f64,
    /// Fraction in `0.0..=1.0` by which a delay may be randomly shortened.
    pub jitter: f64,
}

/// Why a [`Backoff`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum BackoffError {
    /// `initial` was zero.
    #[error("backoff initial delay must be greater than zero")]
    ZeroInitial,
    /// `max` was below `initial`.
    #[error("backoff max delay must be at least the initial delay")]
    MaxBelowInitial,
    /// `multiplier` was below 1.0 or not finite.
    #[error("backoff multiplier must be finite and at least 1.0, got {0}")]
    InvalidMultiplier(f64),
    /// `jitter` was outside `0.0..=1.0`.
    #[error("backoff jitter must be in 0.0..=1.0, got {0}")]
    InvalidJitter(f64),
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, with up to 50 % jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Builds a validated backoff.
    ///
    /// # Errors
    /// When `initial` is zero, `max < initial`, `multiplier` is not a finite
    /// number of at least 1.0, or `jitter` is outside `0.0..=1.0`.
    pub fn new(initial: Duration, max: Duration, multiplier: f64, jitter: f64) -> Result<Self, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if max < initial {
            return Err(BackoffError::MaxBelowInitial);
        }
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(BackoffError::InvalidMultiplier(multiplier));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(BackoffError::InvalidJitter(jitter));
        }
        Ok(Self { initial, max, multiplier, jitter })
    }

    /// The delay before `attempt` without jitter: `min(initial * multiplier^attempt, max)`.
    ///
    /// Saturates at `max` instead of overflowing, whatever the attempt. A
    /// multiplier below 1.0 (or NaN) in a hand-built value is treated as 1.0.
    #[must_use]
    pub fn base_delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return self.initial.min(self.max);
        }
        let factor = self.multiplier.max(1.0).powf(f64::from(attempt));
        let nanos = nanos_f64(self.initial) * factor;
        if nanos >= nanos_f64(self.max) {
            return self.max;
        }
        // `nanos` is finite, non-negative and below `max`, so the cast is exact enough.
        from_nanos(nanos as u128).min(self.max)
    }

    /// The delay before `attempt`: uniform in `[base * (1 - jitter), base]`.
    #[must_use]
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = if self.jitter.is_nan() { 0.0 } else { self.jitter.clamp(0.0, 1.0) };
        let high = base.as_nanos();
        let low = ((nanos_f64(base) * (1.0 - jitter)).ceil() as u128).min(high);
        from_nanos(rng.random_range(low..=high))
    }
}

fn nanos_f64(duration: Duration) -> f64 {
    duration.as_nanos() as f64
}

/// A duration from a nanosecond count, saturating at `Duration::MAX`.
fn from_nanos(nanos: u128) -> Duration {
    const PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / PER_SEC).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % PER_SEC).unwrap_or(0);
    Duration::new(secs, sub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_doubles_up_to_max() {
        let b = Backoff::default();
        assert_eq!(b.base_delay(0), ms(100));
        assert_eq!(b.base_delay(1), ms(200));
        assert_eq!(b.base_delay(3), ms(800));
        assert_eq!(b.base_delay(9), Duration::from_secs(30));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn zero_jitter_is_deterministic() {
        let b = Backoff::new(ms(10), ms(1000), 3.0, 0.0).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(b.delay(2, &mut rng), ms(90));
    }

    #[test]
    fn new_rejects_bad_values() {
        let ok = |i, m, mul, j| Backoff::new(ms(i), ms(m), mul, j);
        assert_eq!(ok(0, 10, 2.0, 0.5), Err(BackoffError::ZeroInitial));
        assert_eq!(ok(10, 5, 2.0, 0.5), Err(BackoffError::MaxBelowInitial));
        assert!(matches!(ok(1, 5, 0.5, 0.5), Err(BackoffError::InvalidMultiplier(_))));
        assert!(matches!(ok(1, 5, f64::INFINITY, 0.5), Err(BackoffError::InvalidMultiplier(_))));
        assert!(matches!(ok(1, 5, f64::NAN, 0.5), Err(BackoffError::InvalidMultiplier(_))));
        assert!(matches!(ok(1, 5, 2.0, 1.5), Err(BackoffError::InvalidJitter(_))));
        assert!(matches!(ok(1, 5, 2.0, f64::NAN), Err(BackoffError::InvalidJitter(_))));
        assert!(ok(1, 1, 1.0, 1.0).is_ok());
        assert!(BackoffError::ZeroInitial.to_string().contains("initial"));
    }

    #[test]
    fn hand_built_nonsense_does_not_panic() {
        let b = Backoff { initial: Duration::MAX, max: ms(5), multiplier: f64::NAN, jitter: f64::NAN };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(b.base_delay(0), ms(5));
        assert_eq!(b.delay(u32::MAX, &mut rng), ms(5));
        let huge = Backoff { max: Duration::MAX, ..b };
        assert_eq!(huge.delay(3, &mut rng), Duration::MAX);
    }

    fn backoffs() -> impl Strategy<Value = Backoff> {
        (1u64..10_000, 0u64..1_000_000, 1.0f64..10.0, 0.0f64..=1.0).prop_map(
            |(initial, extra, multiplier, jitter)| Backoff {
                initial: ms(initial),
                max: ms(initial + extra),
                multiplier,
                jitter,
            },
        )
    }

    proptest! {
        #[test]
        fn delay_within_jitter_band(b in backoffs(), attempt in any::<u32>(), seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let base = b.base_delay(attempt);
            let d = b.delay(attempt, &mut rng);
            prop_assert!(d <= b.max);
            prop_assert!(d <= base);
            prop_assert!(d.as_secs_f64() >= base.as_secs_f64() * (1.0 - b.jitter) - 1e-9);
        }

        #[test]
        fn base_delay_is_monotone(b in backoffs(), attempt in 0u32..200) {
            prop_assert!(b.base_delay(attempt) <= b.base_delay(attempt + 1));
        }

        #[test]
        fn first_delay_is_initial(b in backoffs()) {
            prop_assert_eq!(b.base_delay(0), b.initial);
        }

        #[test]
        fn huge_attempts_saturate(b in backoffs(), attempt in u32::MAX - 1000..=u32::MAX) {
            let d = b.base_delay(attempt);
            prop_assert!(b.initial <= d && d <= b.max);
            if b.multiplier >= 1.01 {
                prop_assert_eq!(d, b.max);
            }
        }
    }
}
