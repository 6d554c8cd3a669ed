//! Lifecycle events: every supervisor of a tree publishes what happens to its
//! children (started, exited, restarted, down, up, removed) on one shared
//! [`LifecycleEvents`]; any number of parts of the node follow them. [`DownSet`]
//! is one: the names of the actors now down, readable without asking a mailbox.
//!
//! Why not `ractor::OutputPort`: in ractor 0.16 a subscriber must be an actor
//! (`subscribe(ActorRef, converter)`), each subscription is a task ractor spawns
//! and nobody joins, and its buffer of 10 skips events a slow subscriber has not
//! taken yet (`Lagged` is ignored). A down set that skips a `Down` or an `Up` is
//! wrong until the process restarts. So the hub here tells in-process observers
//! ([`LifecycleObserver`], such as [`DownSet`]) synchronously, in publish order,
//! and offers a `tokio::sync::broadcast` channel to asynchronous subscribers (the
//! dashboard, the cluster), which see an explicit `Lagged` when they fall behind
//! and can resynchronise from the tree.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use super::tree::FailureKind;

/// Events an asynchronous subscriber may fall behind by before it sees `Lagged`.
const CHANNEL_CAPACITY: usize = 1024;

/// What happened to a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleKind {
    /// Its first start succeeded (at the supervisor's start, or after being added).
    Started,
    /// It ended without being asked to by its supervisor, or its start failed.
    Exited { kind: FailureKind, reason: String },
    /// A restart succeeded.
    Restarted,
    /// Past its restart intensity: marked down.
    Down,
    /// Marked down before, started again.
    Up,
    /// Removed from its supervisor at run time (and stopped).
    Removed,
}

/// One event of one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The name of the supervisor the child belongs to.
    pub supervisor: Arc<str>,
    /// The child's name.
    pub child: Arc<str>,
    pub kind: LifecycleKind,
    pub at: DateTime<Utc>,
}

/// Told of every event, in order, from the publishing supervisor's handler: it
/// must be quick and must not block.
pub trait LifecycleObserver: Send + Sync {
    fn observe(&self, event: &LifecycleEvent);
}

/// The lifecycle events of one actor tree: one `Arc` shared by all its supervisors.
pub struct LifecycleEvents {
    tx: broadcast::Sender<LifecycleEvent>,
    observers: RwLock<Vec<Arc<dyn LifecycleObserver>>>,
}

impl Default for LifecycleEvents {
    fn default() -> Self {
        Self { tx: broadcast::Sender::new(CHANNEL_CAPACITY), observers: RwLock::default() }
    }
}

impl std::fmt::Debug for LifecycleEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecycleEvents").field("subscribers", &self.tx.receiver_count()).finish()
    }
}

impl LifecycleEvents {
    /// A hub with no subscribers yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Every event published from now on (an explicit `Lagged` after falling
    /// more than 1024 events behind).
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.tx.subscribe()
    }

    /// Tells `observer` of every event published from now on, synchronously.
    pub fn observe(&self, observer: Arc<dyn LifecycleObserver>) {
        self.observers.write().unwrap_or_else(|e| e.into_inner()).push(observer);
    }

    /// Publishes `kind` for `child` of `supervisor`.
    pub(super) fn publish(&self, supervisor: &Arc<str>, child: &Arc<str>, kind: LifecycleKind) {
        let event =
            LifecycleEvent { supervisor: supervisor.clone(), child: child.clone(), kind, at: Utc::now() };
        for observer in self.observers.read().unwrap_or_else(|e| e.into_inner()).iter() {
            observer.observe(&event);
        }
        // no subscriber is not an error
        let _ = self.tx.send(event);
    }
}

/// The names of the actors now down: an actor is in it from the moment its
/// supervisor marks it down until it is started again or removed.
#[derive(Debug, Clone, Default)]
pub struct DownSet {
    names: Arc<RwLock<BTreeSet<Arc<str>>>>,
}

impl DownSet {
    /// A set that follows `events` from now on (attach it before starting the tree).
    pub fn attach(events: &LifecycleEvents) -> Self {
        let set = Self::default();
        events.observe(Arc::new(set.clone()));
        set
    }

    /// The names of the actors now down, sorted.
    pub fn down(&self) -> Vec<String> {
        self.names.read().unwrap_or_else(|e| e.into_inner()).iter().map(|n| n.to_string()).collect()
    }

    /// Whether the actor called `name` is down.
    pub fn is_down(&self, name: &str) -> bool {
        self.names.read().unwrap_or_else(|e| e.into_inner()).contains(name)
    }
}

impl LifecycleObserver for DownSet {
    fn observe(&self, event: &LifecycleEvent) {
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        match event.kind {
            LifecycleKind::Down => {
                names.insert(event.child.clone());
            }
            LifecycleKind::Started
            | LifecycleKind::Restarted
            | LifecycleKind::Up
            | LifecycleKind::Removed => {
                names.remove(&event.child);
            }
            LifecycleKind::Exited { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_and_up_events_update_the_down_set() {
        let events = LifecycleEvents::new();
        let down = DownSet::attach(&events);
        let mut rx = events.subscribe();
        let sup: Arc<str> = "root".into();
        let (health, views): (Arc<str>, Arc<str>) = ("health".into(), "views".into());

        events.publish(&sup, &health, LifecycleKind::Down);
        events.publish(&sup, &views, LifecycleKind::Down);
        assert_eq!(down.down(), ["health", "views"]);
        assert!(down.is_down("health"));

        let exited = LifecycleKind::Exited { kind: FailureKind::Killed, reason: "killed".into() };
        events.publish(&sup, &health, exited.clone());
        assert!(down.is_down("health"), "an exit alone does not change the set");
        events.publish(&sup, &health, LifecycleKind::Up);
        assert_eq!(down.down(), ["views"]);
        events.publish(&sup, &views, LifecycleKind::Removed);
        assert!(down.down().is_empty());

        // the broadcast subscriber saw the same events in the same order
        let seen: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).map(|e| (e.child, e.kind)).collect();
        assert_eq!(
            seen,
            [
                (health.clone(), LifecycleKind::Down),
                (views.clone(), LifecycleKind::Down),
                (health.clone(), exited),
                (health, LifecycleKind::Up),
                (views, LifecycleKind::Removed),
            ]
        );
    }
}
