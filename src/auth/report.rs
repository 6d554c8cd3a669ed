//! [`AuthReport`]: this node's own login and password-hashing counters.
//!
//! The same events feed the Prometheus metrics, but the metrics recorder is global to the
//! process; these counters belong to one [`crate::auth::AuthService`], so they describe one node
//! even where several run in one process (the integration tests).

use super::hashing::HashingReport;
use super::limiter::LimiterReport;

/// `GET /api/v1/admin/auth`.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct AuthReport {
    /// Password hashes and verifications.
    pub hashing: HashingReport,
    /// Login attempts refused before any password work.
    pub limiter: LimiterReport,
}
