//! [`EventConsumer`]: feeds the events this node receives (from its own queue on
//! the events exchange, or in process) to the node: item changes to the remote
//! change bus (the cache invalidates what they touched), job events to the job
//! event bus (SSE streams), cancellations to the worker running the job.
//!
//! Every event carries an id; one seen lately is dropped (a relay publishes at
//! least once).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

use super::Queue;
use super::model::JobEvent;
use super::transport::Delivery;
use super::worker::running::Running;
use crate::explore::{ChangeBus, ItemChange};
use crate::metrics;
use crate::outbox::{ITEM_CHANGED, ITEM_DELETED};
use crate::supervision::chaos::chaos_panic;
use crate::supervision::child::{ChaosTarget, ChildSpec, StartedChild};
use crate::supervision::tree::ActorStats;

/// Event ids remembered for deduplication.
pub const SEEN_IDS: usize = 65_536;

/// An event as it travels.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub payload: Value,
}

/// What the consumer hands events to.
pub struct Sinks {
    pub queue: Queue,
    pub running: Running,
    /// Item changes committed by other processes.
    pub remote_changes: ChangeBus,
    pub deliveries: Mutex<mpsc::Receiver<Delivery>>,
    pub seen: std::sync::Mutex<Seen>,
    /// Item changes this node committed itself (already applied before its write
    /// answered): their events coming back are not applied twice.
    pub local: Arc<std::sync::Mutex<Seen>>,
}

/// The key of an item change for [`Sinks::local`].
pub fn change_key(change: &ItemChange) -> String {
    format!("{}:{}@{}", change.event_type(), change.id, change.version)
}

/// Recently seen event ids, oldest forgotten first.
#[derive(Debug, Default)]
pub struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// Whether `id` was seen lately.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// True the first time `id` is seen (within the last [`SEEN_IDS`]).
    pub fn first(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == SEEN_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// Messages the consumer handles.
pub enum ConsumerMsg {
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for ConsumerMsg {}

impl ChaosTarget for ConsumerMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The consumer actor: its loop lives in its state.
pub struct EventConsumer;

/// Its state.
pub struct ConsumerState {
    _run: JoinSet<()>,
    stats: Arc<ActorStats>,
}

impl Actor for EventConsumer {
    type Msg = ConsumerMsg;
    type State = ConsumerState;
    type Arguments = (Arc<Sinks>, Arc<ActorStats>);

    async fn pre_start(
        &self,
        _myself: ActorRef<ConsumerMsg>,
        (sinks, stats): (Arc<Sinks>, Arc<ActorStats>),
    ) -> Result<ConsumerState, ActorProcessingErr> {
        let mut run = JoinSet::new();
        run.spawn(consume(sinks));
        Ok(ConsumerState { _run: run, stats })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ConsumerMsg>,
        msg: ConsumerMsg,
        state: &mut ConsumerState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match msg {
            ConsumerMsg::Panic => chaos_panic("event-consumer"),
        }
    }
}

async fn consume(sinks: Arc<Sinks>) {
    loop {
        let delivery = {
            let mut deliveries = sinks.deliveries.lock().await;
            deliveries.recv().await
        };
        let Some(delivery) = delivery else {
            return;
        };
        apply(&sinks, &delivery).await;
        delivery.ack().await;
    }
}

/// Applies one received event.
pub async fn apply(sinks: &Sinks, delivery: &Delivery) {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(&delivery.body) else {
        tracing::warn!(message = ?delivery.id, "undecodable event dropped");
        metrics::event_received("unknown", "undecodable");
        return;
    };
    if !sinks.seen.lock().unwrap_or_else(|p| p.into_inner()).first(&envelope.id) {
        metrics::event_received(&envelope.event_type, "duplicate");
        return;
    }
    match envelope.event_type.as_str() {
        ITEM_CHANGED | ITEM_DELETED => match ItemChange::from_payload(&envelope.payload) {
            Ok(change) => {
                let key = change_key(&change);
                if sinks.local.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
                    metrics::event_received(&envelope.event_type, "local");
                    return;
                }
                sinks.remote_changes.publish(vec![change]).await;
            }
            Err(err) => {
                tracing::warn!(event = %envelope.id, error = %err, "item event not understood");
                metrics::event_received(&envelope.event_type, "undecodable");
                return;
            }
        },
        "job.progress" | "job.finished" | "job.cancel" => {
            match serde_json::from_value::<JobEvent>(envelope.payload) {
                Ok(event) => {
                    if let JobEvent::Cancel { job_id } = &event {
                        sinks.running.cancel(job_id);
                    }
                    sinks.queue.events().publish(event).await;
                }
                Err(err) => {
                    tracing::warn!(event = %envelope.id, error = %err, "job event not understood");
                    metrics::event_received(&envelope.event_type, "undecodable");
                    return;
                }
            }
        }
        _ => {}
    }
    metrics::event_received(&envelope.event_type, "applied");
}

/// The consumer as a child of the queue supervisor.
pub fn child_spec(sinks: Arc<Sinks>) -> ChildSpec {
    ChildSpec::new("event-consumer", "event-consumer", move |ctx| {
        let sinks = sinks.clone();
        async move {
            let (actor, _handle) =
                Actor::spawn_linked(None, EventConsumer, (sinks, ctx.stats), ctx.supervisor).await?;
            Ok(StartedChild::worker(actor))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_counts_once_until_it_is_forgotten() {
        let mut seen = Seen::default();
        assert!(seen.first("a"));
        assert!(!seen.first("a"));
        for i in 0..SEEN_IDS {
            seen.first(&i.to_string());
        }
        assert_eq!(seen.ids.len(), SEEN_IDS);
        assert!(seen.first("a"), "the oldest ids are forgotten first");
    }
}
