//! Supervision: restart strategy, restart intensity, backoff, circuit breaker, the
//! generic [`supervisor::Supervisor`] actor and the actor-tree snapshot.
//!
//! Restart logic lives here once; every supervisor in castwork (the root and the
//! per-concern supervisors added under it) is a [`supervisor::Supervisor`] built
//! from a list of [`child::ChildSpec`]s.

pub mod backoff;
pub mod breaker;
pub mod child;
pub mod intensity;
pub mod root;
pub mod slot;
pub mod strategy;
pub mod supervisor;
pub mod tree;
