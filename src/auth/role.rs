//! Roles, ordered by privilege: `viewer < editor < admin`.

use std::fmt;
use std::str::FromStr;

use super::AuthError;

/// What a user may do. A higher role includes every right of the lower ones.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the catalogue and job results.
    Viewer,
    /// Also changes the catalogue and submits work.
    Editor,
    /// Also manages users and the system.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    /// The lowercase name, as stored in the database and carried in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    /// Whether this role is at least `required`.
    pub fn satisfies(self, required: Role) -> bool {
        self >= required
    }

    /// Refuses with [`AuthError::Forbidden`] unless this role is at least `required`.
    pub fn require(self, required: Role) -> Result<(), AuthError> {
        if self.satisfies(required) { Ok(()) } else { Err(AuthError::Forbidden { required }) }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    /// Parses `viewer`, `editor` or `admin`, ignoring ASCII case and surrounding blanks.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Role::ALL.into_iter().find(|role| role.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            AuthError::InvalidInput(format!("unknown role '{s}': expected one of viewer, editor, admin"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_privilege() {
        assert!(Role::Viewer < Role::Editor);
        assert!(Role::Editor < Role::Admin);
        assert_eq!(Role::ALL.iter().max(), Some(&Role::Admin));
    }

    #[test]
    fn satisfies_means_at_least() {
        assert!(Role::Admin.satisfies(Role::Viewer));
        assert!(Role::Admin.satisfies(Role::Admin));
        assert!(Role::Editor.satisfies(Role::Editor));
        assert!(!Role::Editor.satisfies(Role::Admin));
        assert!(!Role::Viewer.satisfies(Role::Editor));
        assert!(Role::Viewer.require(Role::Viewer).is_ok());
        assert!(matches!(
            Role::Viewer.require(Role::Admin),
            Err(AuthError::Forbidden { required: Role::Admin })
        ));
    }

    #[test]
    fn parses_names_and_round_trips() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(role.to_string(), role.as_str());
        }
        assert_eq!(" Admin ".parse::<Role>().unwrap(), Role::Admin);
    }

    #[test]
    fn unknown_role_lists_the_choices() {
        let err = "root".parse::<Role>().unwrap_err();
        let AuthError::InvalidInput(message) = err else { panic!("unexpected error {err:?}") };
        for name in ["viewer", "editor", "admin"] {
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn serde_uses_lowercase_names() {
        assert_eq!(serde_json::to_string(&Role::Editor).unwrap(), "\"editor\"");
        assert_eq!(serde_json::from_str::<Role>("\"admin\"").unwrap(), Role::Admin);
        assert!(serde_json::from_str::<Role>("\"Admin\"").is_err());
    }
}
