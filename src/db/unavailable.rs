//! Which database errors mean "the database cannot be reached now" (the request
//! may succeed when retried) rather than a failed statement: the HTTP layer
//! answers those 503 `database_unavailable` with `Retry-After`, never 500.

use sea_orm::sqlx::Error as SqlxError;
use sea_orm::{DbErr, RuntimeErr};

/// SQLSTATEs (PostgreSQL) that say the connection or the server went away:
/// admin shutdown (a terminated backend), crash shutdown, cannot connect now,
/// too many connections. Class `08` (connection exception) is matched as a class.
const UNAVAILABLE_SQLSTATES: [&str; 4] = ["57P01", "57P02", "57P03", "53300"];

/// Whether `err` is a connection-level failure: the pool could not give a
/// connection, the connection broke (I/O, TLS, protocol, a crashed worker), or
/// the server refused or ended the session.
pub fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx)) => {
            sqlx_unavailable(sqlx)
        }
        _ => false,
    }
}

fn sqlx_unavailable(err: &SqlxError) -> bool {
    match err {
        SqlxError::Io(_)
        | SqlxError::Tls(_)
        | SqlxError::Protocol(_)
        | SqlxError::PoolTimedOut
        | SqlxError::PoolClosed
        | SqlxError::WorkerCrashed => true,
        // SQLite reports numeric result codes, which never match these
        SqlxError::Database(db) => db.code().is_some_and(|code| sqlstate_unavailable(&code)),
        _ => false,
    }
}

fn sqlstate_unavailable(code: &str) -> bool {
    code.starts_with("08") || UNAVAILABLE_SQLSTATES.contains(&code)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use sea_orm::ConnAcquireErr;
    use sea_orm::sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// A database error with a given SQLSTATE, as a driver would return it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl DatabaseError for Coded {
        fn message(&self) -> &str {
            "coded"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn query(err: SqlxError) -> DbErr {
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
    }

    fn exec(err: SqlxError) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err)))
    }

    fn coded(code: &'static str) -> SqlxError {
        SqlxError::Database(Box::new(Coded(code)))
    }

    #[test]
    fn connection_level_errors_are_unavailable() {
        let reset = || SqlxError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let unavailable = [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            DbErr::Conn(RuntimeErr::Internal("gone".to_owned())),
            DbErr::Conn(RuntimeErr::SqlxError(Arc::new(reset()))),
            query(reset()),
            exec(SqlxError::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))),
            query(SqlxError::Tls("handshake".into())),
            query(SqlxError::Protocol("unexpected message".to_owned())),
            query(SqlxError::PoolTimedOut),
            exec(SqlxError::PoolClosed),
            query(SqlxError::WorkerCrashed),
            query(coded("57P01")),
            exec(coded("57P02")),
            query(coded("57P03")),
            query(coded("53300")),
            query(coded("08006")),
            query(coded("08003")),
            exec(coded("08P01")),
        ];
        for err in &unavailable {
            assert!(is_unavailable(err), "{err:?} should be unavailable");
        }
    }

    #[test]
    fn statement_errors_are_not() {
        let other = [
            query(coded("23505")),
            exec(coded("40001")),
            query(coded("42P01")),
            query(coded("57014")),
            // SQLite's numeric codes (SQLITE_BUSY, SQLITE_CONSTRAINT_UNIQUE)
            exec(coded("5")),
            exec(coded("2067")),
            query(SqlxError::RowNotFound),
            query(SqlxError::ColumnNotFound("x".to_owned())),
            DbErr::Query(RuntimeErr::Internal("bad".to_owned())),
            DbErr::Type("bad tags".to_owned()),
            DbErr::RecordNotFound("x".to_owned()),
            DbErr::Custom("unknown role".to_owned()),
        ];
        for err in &other {
            assert!(!is_unavailable(err), "{err:?} should not be unavailable");
        }
    }
}
