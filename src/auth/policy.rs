//! What usernames and passwords must be. One set of rules for every way a user or a password
//! is made: `POST /api/v1/admin/users`, password changes, the bootstrap admin and
//! `castwork user add` all go through [`crate::auth::AuthService`], which applies them.
//!
//! A password must be [`PASSWORD_MIN`]–[`PASSWORD_MAX`] characters, hold no control character
//! (NUL, tab, line breaks, ...: they are invisible, differ between keyboards and terminals,
//! and truncate in C strings), and reach `auth.password_min_score` on zxcvbn's 0–4 strength
//! scale, with the username and `castwork` counted as words an attacker would try first.
//! zxcvbn reads at most [`STRENGTH_INPUT_MAX`] characters, which bounds its cost (a few
//! milliseconds); the service runs it on the blocking pool.

/// Shortest username.
pub const USERNAME_MIN: usize = 3;
/// Longest username.
pub const USERNAME_MAX: usize = 64;
/// Shortest password, in characters.
pub const PASSWORD_MIN: usize = 8;
/// Longest password, in characters.
pub const PASSWORD_MAX: usize = 1024;
/// Characters of a password the strength estimate reads; a longer password is judged by its
/// start, which must then be strong on its own.
pub const STRENGTH_INPUT_MAX: usize = 256;
/// The highest zxcvbn score (kept with the setting it bounds).
pub use crate::config::PASSWORD_MAX_SCORE as MAX_SCORE;

/// A username or password that breaks a rule; the message names the rule and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Wrong length or characters.
    #[error("username must be {USERNAME_MIN} to {USERNAME_MAX} characters of A-Z, a-z, 0-9, '_', '.' or '-'")]
    Username,
    /// Too short or too long.
    #[error("password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")]
    PasswordLength,
    /// A control character.
    #[error(
        "password must not contain control characters (NUL, tab, line breaks, ...); use letters, digits, \
         spaces and punctuation"
    )]
    ControlCharacter,
    /// Too easy to guess.
    #[error(
        "password is too easy to guess (strength {score} of {MAX_SCORE}, at least {required} required){hint}; \
         use a longer passphrase of several unrelated words, without the username, common passwords, \
         repeats or sequences"
    )]
    TooWeak {
        /// zxcvbn's score.
        score: u8,
        /// `auth.password_min_score`.
        required: u8,
        /// zxcvbn's warning, as `": ..."`, or empty.
        hint: String,
    },
}

impl PolicyError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Username => "username",
            Self::PasswordLength | Self::ControlCharacter | Self::TooWeak { .. } => "password",
        }
    }
}

/// Checks a new username.
pub fn check_username(username: &str) -> Result<(), PolicyError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if (USERNAME_MIN..=USERNAME_MAX).contains(&username.len()) && username.chars().all(allowed) {
        Ok(())
    } else {
        Err(PolicyError::Username)
    }
}

/// Checks a new password for `username`: length, control characters, then strength.
pub fn check_password(password: &str, username: &str, min_score: u8) -> Result<(), PolicyError> {
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&password.chars().count()) {
        return Err(PolicyError::PasswordLength);
    }
    if password.chars().any(char::is_control) {
        return Err(PolicyError::ControlCharacter);
    }
    if min_score == 0 {
        return Ok(());
    }
    let judged = match password.char_indices().nth(STRENGTH_INPUT_MAX) {
        Some((end, _)) => &password[..end],
        None => password,
    };
    let estimate = zxcvbn::zxcvbn(judged, &[username, "castwork"]);
    let score = u8::from(estimate.score());
    if score >= min_score {
        return Ok(());
    }
    let hint = estimate
        .feedback()
        .and_then(|f| f.warning())
        .map(|w| format!(": {}", w.to_string().trim_end_matches('.').to_lowercase()))
        .unwrap_or_default();
    Err(PolicyError::TooWeak { score, required: min_score, hint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weak_passwords_of_the_audit_are_refused() {
        for (password, rule) in [
            ("12345678", "too easy to guess"),
            ("        ", "too easy to guess"),
            ("abc\0defgh", "control characters"),
            ("password", "too easy to guess"),
            ("alice12345", "too easy to guess"),
            ("castwork123", "too easy to guess"),
            ("aaaaaaaaaaaaaaaaaaaa", "too easy to guess"),
            ("correct\thorse battery staple", "control characters"),
            ("correct horse\nbattery staple", "control characters"),
            ("short", "8 to 1024 characters"),
        ] {
            let err = check_password(password, "alice", 3).unwrap_err();
            assert!(err.to_string().contains(rule), "{password:?}: {err}");
            assert_eq!(err.field(), "password");
        }
    }

    #[test]
    fn strong_passwords_pass() {
        for password in ["correct horse battery staple", "a brand new password", "bootstrap-admin-password"] {
            assert_eq!(check_password(password, "alice", 3), Ok(()), "{password}");
        }
    }

    #[test]
    fn the_username_counts_against_the_password() {
        assert!(check_password("tangerinepolka77", "someone", 3).is_ok());
        assert!(matches!(
            check_password("tangerinepolka77", "tangerinepolka", 3),
            Err(PolicyError::TooWeak { .. })
        ));
    }

    #[test]
    fn the_message_says_what_to_do() {
        let err = check_password("12345678", "alice", 3).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("strength 0 of 4, at least 3 required): this is a top-10 common password; use"),
            "{text}"
        );
        assert!(text.contains("passphrase"), "{text}");
    }

    #[test]
    fn score_zero_only_checks_length_and_characters() {
        assert_eq!(check_password("12345678", "alice", 0), Ok(()));
        assert_eq!(check_password("abc\0defgh", "alice", 0), Err(PolicyError::ControlCharacter));
    }

    #[test]
    fn length_counts_characters_and_long_inputs_are_bounded() {
        assert_eq!(check_password(&"é".repeat(1024), "alice", 0), Ok(()));
        assert_eq!(check_password(&"é".repeat(1025), "alice", 0), Err(PolicyError::PasswordLength));
        // a strong start carries a long password; a weak start does not
        let strong = format!("correct horse battery staple {}", "x".repeat(900));
        assert_eq!(check_password(&strong, "alice", 3), Ok(()));
        let weak = format!("{}correct horse battery staple", "a".repeat(300));
        assert!(matches!(check_password(&weak, "alice", 3), Err(PolicyError::TooWeak { .. })));
    }

    #[test]
    fn usernames() {
        for ok in ["ada", "a.b-c_d", &"x".repeat(64)] {
            assert_eq!(check_username(ok), Ok(()), "{ok}");
        }
        for bad in ["ab", "with space", "ümlaut", &"x".repeat(65)] {
            assert_eq!(check_username(bad), Err(PolicyError::Username), "{bad}");
        }
    }
}
