//! sea-orm entities, one file per table. The schema itself lives in the `migration` crate.

pub mod item;
pub mod item_embedding;
pub mod item_summary;
pub mod item_tag;
pub mod job;
pub mod job_schedule_run;
pub mod lease;
pub mod outbox;
pub mod refresh_token;
pub mod revoked_session;
pub mod user;
