//! sea-orm entities, one file per table. The schema itself lives in the `migration` crate.

pub mod refresh_token;
pub mod user;
