//! Restart strategies, as in Erlang/OTP supervisors.
//!
//! Children are indexed in start order; a strategy says which of them must be
//! restarted when one fails.

use std::fmt;
use std::ops::Range;

/// Which children a supervisor restarts when one of them fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartStrategy {
    /// Restart only the failed child.
    #[default]
    OneForOne,
    /// Restart every child.
    OneForAll,
    /// Restart the failed child and every child started after it.
    RestForOne,
}

impl RestartStrategy {
    /// Indices (in start order) of the children to restart when child
    /// `failed` of `children` fails; empty when `failed >= children`.
    #[must_use]
    pub fn affected(self, failed: usize, children: usize) -> Range<usize> {
        if failed >= children {
            return 0..0;
        }
        match self {
            Self::OneForOne => failed..failed + 1,
            Self::OneForAll => 0..children,
            Self::RestForOne => failed..children,
        }
    }

    /// The configuration name: `one_for_one`, `one_for_all` or `rest_for_one`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneForOne => "one_for_one",
            Self::OneForAll => "one_for_all",
            Self::RestForOne => "rest_for_one",
        }
    }
}

impl fmt::Display for RestartStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [RestartStrategy; 3] =
        [RestartStrategy::OneForOne, RestartStrategy::OneForAll, RestartStrategy::RestForOne];

    #[test]
    fn examples() {
        assert_eq!(RestartStrategy::OneForOne.affected(2, 5), 2..3);
        assert_eq!(RestartStrategy::OneForAll.affected(2, 5), 0..5);
        assert_eq!(RestartStrategy::RestForOne.affected(2, 5), 2..5);
        for s in ALL {
            assert!(s.affected(5, 5).is_empty());
            assert!(s.affected(usize::MAX, usize::MAX).is_empty());
        }
        assert_eq!(RestartStrategy::default(), RestartStrategy::OneForOne);
    }

    #[test]
    fn serde_names_match_as_str() {
        for s in ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.to_string(), s.as_str());
            let back: RestartStrategy = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s);
        }
        assert!(serde_json::from_str::<RestartStrategy>("\"OneForOne\"").is_err());
    }

    fn subset(a: &Range<usize>, b: &Range<usize>) -> bool {
        a.is_empty() || (b.start <= a.start && a.end <= b.end)
    }

    proptest! {
        #[test]
        fn ranges_are_sound(failed in 0usize..200, children in 0usize..200) {
            for s in ALL {
                let r = s.affected(failed, children);
                prop_assert!(r.end <= children);
                prop_assert_eq!(r.contains(&failed), failed < children);
            }
            let one = RestartStrategy::OneForOne.affected(failed, children);
            let rest = RestartStrategy::RestForOne.affected(failed, children);
            let all = RestartStrategy::OneForAll.affected(failed, children);
            prop_assert!(subset(&one, &rest));
            prop_assert!(subset(&rest, &all));
        }
    }
}
