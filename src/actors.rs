//! castwork's actors, one per file. Each actor struct holds configuration only;
//! its `State` is built in `pre_start`; its messages are one enum.

pub mod cache_listener;
pub mod cache_shard;
pub mod health;
pub mod revocations;
pub mod root;
pub mod views;
