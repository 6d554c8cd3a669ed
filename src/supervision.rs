//! Supervision: restart strategy, restart policy, restart intensity, backoff,
//! circuit breaker, the generic [`supervisor::Supervisor`] actor, its lifecycle
//! events and the actor-tree snapshot.
//!
//! Restart logic lives here once; every supervisor in castwork (the root and the
//! per-concern supervisors added under it) is a [`supervisor::Supervisor`] built
//! from a list of [`child::ChildSpec`]s, to which children can be added and from
//! which they can be removed at run time ([`handle::SupervisorHandle`]).

pub mod backoff;
pub mod breaker;
pub mod chaos;
pub mod child;
pub mod events;
pub mod handle;
pub mod intensity;
mod lifecycle;
pub mod root;
pub mod slot;
pub mod strategy;
pub mod supervisor;
pub mod tree;
