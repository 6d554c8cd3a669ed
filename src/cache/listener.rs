//! CacheListener: keeps this node's cache in step with the others. It listens on
//! the Redis invalidation channel (other nodes' writes and flushes) and to
//! connection changes: when the connection drops, announcements may be missed,
//! so L1 is flushed; when it comes back, families bumped locally meanwhile are
//! bumped in Redis.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::Cache;
use super::handle::CHANNEL;
use super::redis::RedisEvent;
use crate::supervision::child::ChaosTarget;
use crate::supervision::supervisor::chaos_panic;
use crate::supervision::tree::ActorStats;

/// Messages the CacheListener handles.
pub enum ListenerMsg {
    /// Something arrived from Redis.
    Event(RedisEvent),
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for ListenerMsg {}

impl ChaosTarget for ListenerMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The CacheListener's configuration (none beyond its arguments).
pub struct CacheListener;

/// What the CacheListener is started with.
pub struct ListenerArgs {
    pub cache: Cache,
    pub stats: Arc<ActorStats>,
}

/// The CacheListener's state.
pub struct ListenerState {
    cache: Cache,
    stats: Arc<ActorStats>,
    forward: Option<JoinHandle<()>>,
    reconnecting: Option<JoinHandle<()>>,
    /// The connection dropped since it was last up (the first connection is not a reconnection).
    lost: bool,
    /// The subscription has been confirmed live at least once.
    live: bool,
}

impl Actor for CacheListener {
    type Msg = ListenerMsg;
    type State = ListenerState;
    type Arguments = ListenerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ListenerMsg>,
        args: ListenerArgs,
    ) -> Result<ListenerState, ActorProcessingErr> {
        Ok(ListenerState {
            cache: args.cache,
            stats: args.stats,
            forward: None,
            reconnecting: None,
            lost: false,
            live: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<ListenerMsg>,
        state: &mut ListenerState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(l2) = state.cache.l2() else { return Ok(()) };
        let mut events =
            l2.subscribe(CHANNEL).await.map_err(|e| format!("cannot subscribe to invalidations: {e}"))?;
        // while this listener was not running, announcements may have been missed
        state.cache.on_disconnect();
        state.forward = Some(tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if myself.cast(ListenerMsg::Event(event)).is_err() {
                    break;
                }
            }
        }));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ListenerMsg>,
        message: ListenerMsg,
        state: &mut ListenerState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match message {
            ListenerMsg::Event(RedisEvent::Message(text)) => state.cache.apply_remote(&text),
            ListenerMsg::Event(RedisEvent::Disconnected) => {
                if !state.lost {
                    state.lost = true;
                    state.cache.on_disconnect();
                }
            }
            ListenerMsg::Event(RedisEvent::Reconnected) if !state.live => {
                // announcements sent before the subscription was live were missed: whatever
                // was cached meanwhile, and the generations seen meanwhile, are suspect
                state.live = true;
                state.lost = false;
                state.cache.generations().mark_unsynced();
                state.cache.flush_local();
                state.cache.set_subscribed(true);
            }
            ListenerMsg::Event(RedisEvent::Reconnected) => {
                if std::mem::take(&mut state.lost) {
                    // a newer reconnection supersedes one still being handled
                    if let Some(previous) = state.reconnecting.take() {
                        previous.abort();
                    }
                    let cache = state.cache.clone();
                    state.reconnecting = Some(tokio::spawn(async move { cache.on_reconnect().await }));
                }
            }
            ListenerMsg::Panic => chaos_panic("cache-listener"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ListenerMsg>,
        state: &mut ListenerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.forward.take() {
            task.abort();
        }
        if let Some(task) = state.reconnecting.take() {
            task.abort();
        }
        Ok(())
    }
}
