//! Restart intensity: at most `max_restarts` restarts within a sliding window.
//!
//! This mirrors Erlang/OTP's `intensity`/`period`: a supervisor that would
//! exceed the limit stops restarting and reports the child as down.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The most restarts allowed within a period of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartIntensity {
    /// Restarts allowed within `within`; 0 means never restart.
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub within: Duration,
}

impl Default for RestartIntensity {
    /// 5 restarts within 60 seconds.
    fn default() -> Self {
        Self { max_restarts: 5, within: Duration::from_secs(60) }
    }
}

/// The outcome of asking a [`RestartWindow`] for one more restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntensityDecision {
    /// The restart is allowed and was recorded; `recent` includes it.
    Allowed {
        /// Restarts in the window, this one included.
        recent: u32,
    },
    /// The restart would exceed the intensity; nothing was recorded.
    Exceeded {
        /// Restarts already in the window.
        recent: u32,
    },
}

impl IntensityDecision {
    /// Whether the restart may go ahead.
    #[must_use]
    pub fn is_allowed(self) -> bool {
        matches!(self, Self::Allowed { .. })
    }

    /// Restarts in the window after the decision.
    #[must_use]
    pub fn recent(self) -> u32 {
        match self {
            Self::Allowed { recent } | Self::Exceeded { recent } => recent,
        }
    }
}

/// The timestamps of recent restarts, checked against a [`RestartIntensity`].
#[derive(Debug, Clone)]
pub struct RestartWindow {
    intensity: RestartIntensity,
    restarts: VecDeque<Instant>,
}

impl RestartWindow {
    /// An empty window enforcing `intensity`.
    #[must_use]
    pub fn new(intensity: RestartIntensity) -> Self {
        let capacity = usize::try_from(intensity.max_restarts).unwrap_or(0).min(64);
        Self { intensity, restarts: VecDeque::with_capacity(capacity) }
    }

    /// The intensity this window enforces.
    #[must_use]
    pub fn intensity(&self) -> RestartIntensity {
        self.intensity
    }

    /// Records a restart at `now` if that keeps within the intensity.
    ///
    /// Restarts at least `within` before `now` have left the window.
    pub fn try_record(&mut self, now: Instant) -> IntensityDecision {
        self.forget_old(now);
        let recent = self.count();
        if recent < self.intensity.max_restarts {
            self.restarts.push_back(now);
            IntensityDecision::Allowed { recent: recent + 1 }
        } else {
            IntensityDecision::Exceeded { recent }
        }
    }

    /// Like [`try_record`](Self::try_record) at the current (tokio) time.
    pub fn try_record_now(&mut self) -> IntensityDecision {
        self.try_record(Instant::now())
    }

    /// Restarts recorded within the window ending at `now`.
    #[must_use]
    pub fn recent(&self, now: Instant) -> u32 {
        let within = self.intensity.within;
        let inside = self.restarts.iter().filter(|at| now.saturating_duration_since(**at) < within).count();
        u32::try_from(inside).unwrap_or(u32::MAX)
    }

    /// Forgets every recorded restart.
    pub fn clear(&mut self) {
        self.restarts.clear();
    }

    fn forget_old(&mut self, now: Instant) {
        let within = self.intensity.within;
        self.restarts.retain(|at| now.saturating_duration_since(*at) < within);
    }

    fn count(&self) -> u32 {
        u32::try_from(self.restarts.len()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn window(max_restarts: u32, secs: u64) -> RestartWindow {
        RestartWindow::new(RestartIntensity { max_restarts, within: Duration::from_secs(secs) })
    }

    #[test]
    fn allows_n_then_exceeds_then_slides() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = window(3, 10);
        assert_eq!(w.try_record(at(0)), IntensityDecision::Allowed { recent: 1 });
        assert_eq!(w.try_record(at(1)), IntensityDecision::Allowed { recent: 2 });
        assert_eq!(w.try_record(at(2)), IntensityDecision::Allowed { recent: 3 });
        assert_eq!(w.try_record(at(3)), IntensityDecision::Exceeded { recent: 3 });
        assert_eq!(w.recent(at(9)), 3);
        // The restart at 0 is exactly `within` old at 10, so it has left the window.
        assert_eq!(w.recent(at(10)), 2);
        assert_eq!(w.try_record(at(10)), IntensityDecision::Allowed { recent: 3 });
        assert!(!w.try_record(at(10)).is_allowed());
        w.clear();
        assert_eq!(w.recent(at(10)), 0);
        assert!(w.try_record(at(10)).is_allowed());
    }

    #[test]
    fn zero_means_never() {
        let mut w = window(0, 10);
        let decision = w.try_record(Instant::now());
        assert_eq!(decision, IntensityDecision::Exceeded { recent: 0 });
        assert_eq!(decision.recent(), 0);
    }

    #[test]
    fn default_is_five_in_a_minute() {
        let w = RestartWindow::new(RestartIntensity::default());
        assert_eq!(w.intensity().max_restarts, 5);
        assert_eq!(w.intensity().within, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn now_variant_follows_tokio_time() {
        let mut w = window(1, 5);
        assert!(w.try_record_now().is_allowed());
        assert!(!w.try_record_now().is_allowed());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(w.try_record_now().is_allowed());
    }

    proptest! {
        #[test]
        fn never_more_than_max_in_any_window(
            max_restarts in 0u32..6,
            within_ms in 1u64..1_000,
            gaps in prop::collection::vec(0u64..400, 0..80),
        ) {
            let within = Duration::from_millis(within_ms);
            let mut w = RestartWindow::new(RestartIntensity { max_restarts, within });
            let t0 = Instant::now();
            let mut now = t0;
            let mut allowed: Vec<Instant> = Vec::new();
            for gap in gaps {
                now += Duration::from_millis(gap);
                let in_window = allowed.iter().filter(|t| now - **t < within).count();
                let decision = w.try_record(now);
                // Reference model: allowed exactly when the window has room.
                prop_assert_eq!(decision.is_allowed(), in_window < max_restarts as usize);
                if decision.is_allowed() {
                    allowed.push(now);
                }
                prop_assert!(w.recent(now) <= max_restarts);
            }
            for (i, end) in allowed.iter().enumerate() {
                let inside = allowed[..=i].iter().filter(|t| *end - **t < within).count();
                prop_assert!(inside <= max_restarts as usize);
            }
        }
    }
}
