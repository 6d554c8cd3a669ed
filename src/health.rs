//! Health: the [`Probe`] trait every concern implements for the dependencies it
//! needs, the HealthActor that runs the probes on an interval, and its place in
//! the tree.
//!
//! | file | what |
//! |---|---|
//! | `probe.rs` | [`Probe`] and the shared database's [`probe::DatabaseProbe`] |
//! | `actor.rs` | the HealthActor: each component's status, latency and last error |
//! | `tree.rs` | [`tree::child_spec`]: the HealthActor under supervision |

pub mod actor;
pub mod probe;
pub mod tree;

pub use actor::{ComponentHealth, ComponentStatus, HealthMsg, HealthReport};
pub use probe::Probe;
