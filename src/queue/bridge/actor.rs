//! The QueueBridge actor (`queue-bridge`): owns the connection to RabbitMQ and
//! its three channels (publishing in confirm mode; consuming the work queue with
//! `basic_qos(prefetch)`; consuming this node's events queue), and makes them again
//! when they fail.
//!
//! Each connection has a generation. Whatever can see it fail (the connection's
//! error event, a consumer stream that ends, a publish whose channel is gone) sends
//! [`BridgeMsg::Lost`] with its generation; the actor drops that connection, marks
//! the link down, and sends itself [`BridgeMsg::Connect`] after the backoff's next
//! delay. A `Lost` of an older generation is ignored, so one failure seen three
//! ways reconnects once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{Stream, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer, Event};
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::settle::{self, Source};
use super::{
    Bridge, BridgeConfig, BridgeError, EVENTS_PREFETCH, LinkState, Publisher, parse_url, redacted, topology,
};
use crate::metrics;
use crate::queue::transport::Delivery;
use crate::supervision::child::ChaosTarget;
use crate::supervision::supervisor::chaos_panic;
use crate::supervision::tree::ActorStats;

/// How long a stopping bridge waits for the broker to confirm the connection's close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages the QueueBridge handles.
pub enum BridgeMsg {
    /// Time to connect (at start, and after each backoff delay).
    Connect,
    /// The connection of this generation failed.
    Lost { generation: u64, error: String },
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for BridgeMsg {}

impl ChaosTarget for BridgeMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The QueueBridge's configuration.
pub struct QueueBridge {
    pub config: BridgeConfig,
}

/// What the QueueBridge is started with.
pub struct BridgeArgs {
    /// The handle it publishes its channel into and forwards deliveries through.
    pub bridge: Bridge,
    pub stats: Arc<ActorStats>,
}

/// The QueueBridge's state.
pub struct BridgeState {
    bridge: Bridge,
    stats: Arc<ActorStats>,
    /// The connection, while up.
    live: Option<Live>,
    /// Connection attempts since the last success: the backoff's attempt number.
    attempt: u32,
    /// A connection was lost since the last success: the next one is a reconnection.
    reconnecting: bool,
    /// The pending [`BridgeMsg::Connect`].
    retry: Option<JoinHandle<Result<(), MessagingErr<BridgeMsg>>>>,
}

/// A connection that is up, with the tasks that watch it.
struct Live {
    connection: Connection,
    generation: u64,
    /// The connection's event watcher and the consumers' forwarders; aborted on drop.
    tasks: JoinSet<()>,
    bridge: Bridge,
}

impl Drop for Live {
    fn drop(&mut self) {
        // publishes stop using this connection's channel, so it can close
        let publisher = &self.bridge.inner.publisher;
        let current = publisher.load();
        if current.as_ref().is_some_and(|p| p.generation == self.generation) {
            publisher.compare_and_swap(&*current, None);
        }
        metrics::amqp_connected(false);
        // the actor died holding it (a clean loss has marked the link down already)
        self.bridge.inner.link.send_if_modified(|state| {
            let up = *state == LinkState::Up;
            if up {
                *state = LinkState::Down {
                    since: chrono::Utc::now(),
                    error: "the queue bridge restarted".to_owned(),
                };
            }
            up
        });
    }
}

impl Actor for QueueBridge {
    type Msg = BridgeMsg;
    type State = BridgeState;
    type Arguments = BridgeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<BridgeMsg>,
        args: BridgeArgs,
    ) -> Result<BridgeState, ActorProcessingErr> {
        let reconnecting = *args.bridge.inner.link.borrow() != LinkState::Connecting;
        Ok(BridgeState {
            bridge: args.bridge,
            stats: args.stats,
            live: None,
            attempt: 0,
            reconnecting,
            retry: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<BridgeMsg>,
        _state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(BridgeMsg::Connect)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<BridgeMsg>,
        message: BridgeMsg,
        state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match message {
            BridgeMsg::Connect => {
                state.retry = None;
                if state.live.is_none() {
                    self.connect(&myself, state).await;
                }
            }
            BridgeMsg::Lost { generation, error } => {
                if state.live.as_ref().is_some_and(|live| live.generation == generation) {
                    tracing::warn!(broker = %redacted(self.config.url.expose()), %error, "connection to rabbitmq lost");
                    mark_down(&state.bridge, error);
                    state.live = None;
                    state.reconnecting = true;
                    state.attempt = 0;
                    self.retry_later(&myself, state);
                }
            }
            BridgeMsg::Panic => chaos_panic("queue-bridge"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BridgeMsg>,
        state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(retry) = state.retry.take() {
            retry.abort();
        }
        mark_down(&state.bridge, "the queue bridge stopped".to_owned());
        if let Some(mut live) = state.live.take() {
            live.tasks.abort_all();
            // a clean close gives the unsettled deliveries back at once
            let close = live.connection.close(200, ShortString::from("castwork stopping"));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
        }
        Ok(())
    }
}

impl QueueBridge {
    /// One connection attempt; on failure, the next is scheduled.
    async fn connect(&self, myself: &ActorRef<BridgeMsg>, state: &mut BridgeState) {
        let broker = redacted(self.config.url.expose());
        let generation = state.bridge.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let opened =
            tokio::time::timeout(self.config.connect_timeout, self.open(myself, &state.bridge, generation))
                .await
                .unwrap_or_else(|_| Err(BridgeError::ConnectTimeout(broker.clone())));
        match opened {
            Ok((live, channel)) => {
                let publisher = Publisher { channel, generation, actor: myself.clone() };
                state.bridge.inner.publisher.store(Some(Arc::new(publisher)));
                state.live = Some(live);
                state.attempt = 0;
                state.bridge.inner.link.send_replace(LinkState::Up);
                metrics::amqp_connected(true);
                if std::mem::take(&mut state.reconnecting) {
                    metrics::amqp_reconnect();
                    tracing::info!(%broker, "connected to rabbitmq again");
                } else {
                    tracing::info!(%broker, "connected to rabbitmq");
                }
            }
            Err(error) => {
                tracing::warn!(%broker, %error, attempt = state.attempt, "could not connect to rabbitmq");
                mark_down(&state.bridge, error.to_string());
                self.retry_later(myself, state);
            }
        }
    }

    /// Sends [`BridgeMsg::Connect`] after the backoff's next delay.
    fn retry_later(&self, myself: &ActorRef<BridgeMsg>, state: &mut BridgeState) {
        let delay = self.config.reconnect.delay(state.attempt, &mut rand::rng());
        state.attempt = state.attempt.saturating_add(1);
        if let Some(previous) = state.retry.take() {
            previous.abort();
        }
        tracing::debug!(delay_ms = delay.as_millis(), "next connection attempt scheduled");
        state.retry = Some(myself.send_after(delay, || BridgeMsg::Connect));
    }

    /// Connects, declares the topology, starts the consumers; returns the connection
    /// and the confirm-mode channel to publish on.
    async fn open(
        &self,
        myself: &ActorRef<BridgeMsg>,
        bridge: &Bridge,
        generation: u64,
    ) -> Result<(Live, Channel), BridgeError> {
        let config = &self.config;
        let uri = parse_url(config.url.expose())?;
        let properties = ConnectionProperties::default().with_connection_name("castwork".into());
        // `amqps://` takes the same call: the scheme selects TLS (rustls)
        let connection = Connection::connect_uri(uri, properties)
            .await
            .map_err(|e| BridgeError::amqp("connecting", &e))?;
        let mut tasks = JoinSet::new();
        tasks.spawn(watch_connection(connection.events_listener(), myself.clone(), generation));

        let publish = open_channel(&connection, "opening the publish channel").await?;
        let events_queue = topology::declare(&publish, config).await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| BridgeError::amqp("enabling publisher confirms", &e))?;

        if config.consume_work {
            let (channel, consumer) =
                consume(&connection, &config.names.work_queue, config.prefetch, Source::Work).await?;
            let to = bridge.inner.work.clone();
            tasks.spawn(forward(consumer, channel, Source::Work, to, myself.clone(), generation));
        }
        let (channel, consumer) =
            consume(&connection, &events_queue, EVENTS_PREFETCH, Source::Events).await?;
        let to = bridge.inner.events.clone();
        tasks.spawn(forward(consumer, channel, Source::Events, to, myself.clone(), generation));

        Ok((Live { connection, generation, tasks, bridge: bridge.clone() }, publish))
    }
}

/// Marks the link down with `error`, keeping when the outage began.
fn mark_down(bridge: &Bridge, error: String) {
    metrics::amqp_connected(false);
    bridge.inner.link.send_modify(|state| {
        let since = match state {
            LinkState::Down { since, .. } => *since,
            _ => chrono::Utc::now(),
        };
        *state = LinkState::Down { since, error };
    });
}

async fn open_channel(connection: &Connection, step: &'static str) -> Result<Channel, BridgeError> {
    connection.create_channel().await.map_err(|e| BridgeError::amqp(step, &e))
}

/// A channel consuming `queue`, with at most `prefetch` deliveries unsettled.
async fn consume(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
    source: Source,
) -> Result<(Channel, Consumer), BridgeError> {
    let channel = open_channel(connection, "opening a consume channel").await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| BridgeError::amqp("setting the prefetch", &e))?;
    let tag = format!("castwork-{}-{}", source.label(), uuid::Uuid::new_v4().simple());
    let consumer = channel
        .basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| BridgeError::amqp("starting a consumer", &e))?;
    Ok((channel, consumer))
}

/// Reports the connection's failure; logs flow control.
async fn watch_connection(
    events: impl Stream<Item = Event> + Send + 'static,
    actor: ActorRef<BridgeMsg>,
    generation: u64,
) {
    let mut events = Box::pin(events);
    while let Some(event) = events.next().await {
        match event {
            Event::Error(error) => {
                let _ = actor.cast(BridgeMsg::Lost { generation, error: error.to_string() });
                return;
            }
            Event::ConnectionBlocked(reason) => {
                tracing::warn!(%reason, "rabbitmq blocks publishing on this connection (a resource alarm)");
            }
            Event::ConnectionUnblocked => tracing::info!("rabbitmq accepts publishing again"),
            _ => {}
        }
    }
}

/// Hands each delivery of `consumer` on; reports the consumer's end.
async fn forward(
    mut consumer: Consumer,
    channel: Channel,
    source: Source,
    to: mpsc::Sender<Delivery>,
    actor: ActorRef<BridgeMsg>,
    generation: u64,
) {
    let error = loop {
        match consumer.next().await {
            Some(Ok(delivery)) => {
                if to.send(settle::delivery(delivery, source)).await.is_err() {
                    // nothing takes these any more: closing the channel gives its unsettled ones back
                    tracing::info!(
                        queue = source.label(),
                        "deliveries have no receiver; closing their channel"
                    );
                    let _ = channel.close(200, ShortString::from("no receiver")).await;
                    return;
                }
            }
            Some(Err(error)) => break error.to_string(),
            None => break "the broker cancelled the consumer".to_owned(),
        }
    };
    let _ = actor.cast(BridgeMsg::Lost { generation, error });
}
