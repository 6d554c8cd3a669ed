//! sea-orm entities, one file per table. The schema itself lives in the `migration` crate.

pub mod item;
pub mod item_tag;
pub mod outbox;
pub mod refresh_token;
pub mod revoked_session;
pub mod user;
