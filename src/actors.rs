//! castwork's actors, one per file. Each actor struct holds configuration only;
//! its `State` is built in `pre_start`; its messages are one enum.

pub mod health;
pub mod root;
pub mod views;
