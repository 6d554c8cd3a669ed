//! The QueueBridge: this node's link to RabbitMQ.
//!
//! [`Bridge`] is the handle the rest of the node holds (it exists before the
//! actor starts and outlives its restarts): [`Bridge::publish`] sends a message
//! and waits for RabbitMQ's publisher confirm, [`Bridge::link`] tells the
//! connection's state, and the [`Consumers`] made with it receive what the
//! node consumes. The [`QueueBridge`](actor::QueueBridge) actor owns the
//! connection: it connects, declares the [topology](topology) (idempotently, at
//! every connect), starts the consumers and publishes the confirm-mode channel
//! into the handle; when the connection fails (the broker restarted, the TCP
//! connection was cut) it marks the link down and connects again after an
//! exponential backoff with jitter, one `send_after` at a time.
//!
//! While the link is down a publish fails at once with
//! [`PublishError::Unavailable`]; nothing is queued. A publish that gets no
//! confirm within `confirm_timeout` fails with [`PublishError::Timeout`], and the
//! `amqp` circuit breaker, which counts timeouts and channel failures, turns
//! publishes away without waiting once the broker stops answering.
//!
//! A delivery is settled on the channel it came from; one still held when its
//! channel is gone cannot be acknowledged any more (that is logged), and the
//! broker delivers it again.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Confirmation};
use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use super::transport::Consumers;
use super::transport::{Delivery, Names, Outgoing, PublishError, Route};
use crate::config::{QueueSettings, Secret};
use crate::health::probe::Probe;
use crate::metrics;
use crate::supervision::backoff::Backoff;
use crate::supervision::breaker::{BreakerConfig, CircuitBreaker};
use crate::supervision::child::{ChildSpec, StartedChild};

mod actor;
mod settle;
pub mod topology;

pub use actor::{BridgeArgs, BridgeMsg, QueueBridge};

/// Name of the publish circuit breaker (its metrics label).
pub const BREAKER_NAME: &str = "amqp";
/// Deliveries of the events queue the broker hands this node before any is settled,
/// and the capacity of [`Consumers::events`].
pub const EVENTS_PREFETCH: u16 = 256;

/// What the bridge needs to know; [`BridgeConfig::from_settings`] reads `[queue]`.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// `amqp://` or `amqps://` URL; never logged (see [`redacted`]).
    pub url: Secret,
    /// The exchange and queue names.
    pub names: Names,
    /// Unsettled work deliveries at once (AMQP prefetch); also the capacity of [`Consumers::work`].
    pub prefetch: u16,
    /// One retry queue per delay.
    pub retry_delays: Vec<Duration>,
    /// Redeliveries of a work message before the broker dead-letters it.
    pub delivery_limit: u32,
    /// Waits between connection attempts.
    pub reconnect: Backoff,
    /// Whether this node consumes the work queue (a node may only publish and take events).
    pub consume_work: bool,
    /// Longest wait for a publisher confirm.
    pub confirm_timeout: Duration,
    /// Longest wait for a connection attempt (TCP, TLS, AMQP handshake and declarations).
    pub connect_timeout: Duration,
    /// Tuning of the `amqp` breaker.
    pub breaker: BreakerConfig,
}

impl BridgeConfig {
    /// The bridge `[queue]` describes (the settings are validated at load).
    pub fn from_settings(settings: &QueueSettings) -> Self {
        let initial = Duration::from_millis(settings.reconnect_initial_ms.max(1));
        let max = Duration::from_millis(settings.reconnect_max_ms).max(initial);
        Self {
            url: settings.amqp_url.clone(),
            names: Names::new(&settings.prefix),
            prefetch: settings.prefetch.max(1),
            retry_delays: settings.retry_delays_ms.iter().map(|&ms| Duration::from_millis(ms)).collect(),
            delivery_limit: settings.delivery_limit,
            reconnect: Backoff::new(initial, max, 2.0, 0.5).unwrap_or_default(),
            consume_work: true,
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            breaker: BreakerConfig::default(),
        }
    }

    /// The declared retry delays, shortest first, without repeats.
    fn sorted_delays(&self) -> Vec<Duration> {
        let mut delays = self.retry_delays.clone();
        delays.sort_unstable();
        delays.dedup();
        delays
    }
}

/// Why the bridge could not connect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BridgeError {
    /// The URL does not parse (its text is not repeated: it may hold a password).
    #[error("queue.amqp_url is not a valid amqp:// or amqps:// URL")]
    InvalidUrl,
    /// No connection within `connect_timeout`.
    #[error("no connection to {0} in time")]
    ConnectTimeout(String),
    /// The connection or one of its channels failed.
    #[error("{step} failed: {error}")]
    Amqp { step: &'static str, error: String },
    /// A declaration was refused.
    #[error(
        "declaring {what} failed: {error}; if it exists with other arguments, delete it or restore the setting it was declared with"
    )]
    Declare { what: String, error: String },
}

impl BridgeError {
    /// The failure of `step`.
    pub(crate) fn amqp(step: &'static str, error: &lapin::Error) -> Self {
        Self::Amqp { step, error: error.to_string() }
    }
}

/// The state of the link to RabbitMQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet.
    Connecting,
    /// Connected: topology declared, consumers running, publishes confirmed.
    Up,
    /// Lost, or never made: `since` the outage began, with the last error.
    Down { since: chrono::DateTime<chrono::Utc>, error: String },
}

/// The confirm-mode channel of the live connection, published by the actor.
pub(crate) struct Publisher {
    pub(crate) channel: lapin::Channel,
    pub(crate) generation: u64,
    pub(crate) actor: ActorRef<BridgeMsg>,
}

pub(crate) struct Inner {
    pub(crate) config: BridgeConfig,
    pub(crate) publisher: ArcSwapOption<Publisher>,
    pub(crate) link: watch::Sender<LinkState>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) work: mpsc::Sender<Delivery>,
    pub(crate) events: mpsc::Sender<Delivery>,
    /// Numbers each connection, across the actor's incarnations.
    pub(crate) generations: AtomicU64,
    delays: Vec<Duration>,
}

/// The handle to the bridge; cheap to clone.
#[derive(Clone)]
pub struct Bridge {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("link", &*self.inner.link.borrow()).finish_non_exhaustive()
    }
}

impl Bridge {
    /// A handle for a bridge configured by `config`, and the receivers of what it consumes.
    pub fn new(config: &BridgeConfig) -> (Self, Consumers) {
        let (work_tx, work) = mpsc::channel(usize::from(config.prefetch.max(1)));
        let (events_tx, events) = mpsc::channel(usize::from(EVENTS_PREFETCH));
        let inner = Inner {
            delays: config.sorted_delays(),
            config: config.clone(),
            publisher: ArcSwapOption::empty(),
            link: watch::Sender::new(LinkState::Connecting),
            breaker: CircuitBreaker::new(BREAKER_NAME, config.breaker.clone()),
            work: work_tx,
            events: events_tx,
            generations: AtomicU64::new(0),
        };
        (Self { inner: Arc::new(inner) }, Consumers { work, events })
    }

    /// The link's state, now and as it changes.
    pub fn link(&self) -> watch::Receiver<LinkState> {
        self.inner.link.subscribe()
    }

    /// The `amqp` breaker publishes go through.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.inner.breaker
    }

    /// The health probe of the link.
    pub fn probe(&self) -> AmqpProbe {
        AmqpProbe { link: self.link() }
    }

    /// Sends `message` where its route says and waits for RabbitMQ's confirm.
    ///
    /// # Errors
    /// [`PublishError::Unavailable`] at once while not connected (or the `amqp`
    /// breaker is open), [`PublishError::Nacked`] when the broker refused the
    /// message or could not route it, [`PublishError::Timeout`] when no confirm came
    /// within `confirm_timeout`. The message may have arrived all the same: keep
    /// it and publish it again (consumers deduplicate by id).
    pub async fn publish(&self, message: Outgoing) -> Result<(), PublishError> {
        let inner = &self.inner;
        let publisher = match inner.publisher.load_full() {
            Some(publisher) if publisher.channel.status().connected() => publisher,
            _ => return Err(PublishError::Unavailable("not connected to RabbitMQ".to_owned())),
        };
        let permit = inner.breaker.try_acquire().map_err(|r| PublishError::Unavailable(r.to_string()))?;
        let (exchange, routing_key, label) = self.destination(&message.route);
        // work, retries and dead letters must reach a queue: unroutable comes back
        let mandatory = !matches!(message.route, Route::Event(_));
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(message.id.clone()));
        let started = Instant::now();
        let sent = tokio::time::timeout(inner.config.confirm_timeout, async {
            let confirm = publisher
                .channel
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions { mandatory, ..BasicPublishOptions::default() },
                    &message.body,
                    properties,
                )
                .await?;
            metrics::amqp_published(label);
            confirm.await
        })
        .await;
        let elapsed = started.elapsed();
        match sent {
            Err(_) => {
                permit.failure(elapsed);
                tracing::warn!(id = %message.id, route = label, "no publisher confirm in time");
                Err(PublishError::Timeout)
            }
            Ok(Err(error)) => {
                permit.failure(elapsed);
                tracing::warn!(id = %message.id, route = label, %error, "publish failed");
                // the channel is gone: the actor connects again
                let lost = BridgeMsg::Lost { generation: publisher.generation, error: error.to_string() };
                let _ = publisher.actor.cast(lost);
                Err(PublishError::Unavailable(error.to_string()))
            }
            Ok(Ok(confirmation)) => {
                // a prompt answer, positive or not: the broker is there
                permit.success(elapsed);
                confirmed(confirmation, &message.id, label)
            }
        }
    }

    /// Exchange, routing key and metric label of `route`.
    fn destination(&self, route: &Route) -> (ShortString, ShortString, &'static str) {
        let names = &self.inner.config.names;
        match route {
            Route::Work => (names.jobs_exchange.as_str().into(), topology::WORK_KEY.into(), "work"),
            Route::Retry(delay) => ("".into(), self.retry_queue(*delay).into(), "retry"),
            Route::DeadLetter => ("".into(), names.dead_queue.as_str().into(), "dead"),
            Route::Event(key) => (names.events_exchange.as_str().into(), key.as_str().into(), "event"),
        }
    }

    /// The retry queue for `delay`: its own, else the nearest longer one, else the longest.
    pub fn retry_queue(&self, delay: Duration) -> String {
        let delays = &self.inner.delays;
        let chosen = delays.iter().find(|&&d| d >= delay).or_else(|| delays.last()).copied().unwrap_or(delay);
        self.inner.config.names.retry_queue(chosen)
    }
}

/// The outcome of a confirmed publish.
fn confirmed(confirmation: Confirmation, id: &str, route: &'static str) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => {
            metrics::amqp_confirmed();
            Ok(())
        }
        Confirmation::Ack(Some(returned)) => {
            metrics::amqp_nacked();
            tracing::warn!(
                id,
                route,
                queue = %returned.delivery.routing_key,
                reply = %returned.reply_text,
                "message unroutable: its queue is missing",
            );
            Err(PublishError::Nacked)
        }
        Confirmation::Nack(_) => {
            metrics::amqp_nacked();
            tracing::warn!(id, route, "message refused by the broker");
            Err(PublishError::Nacked)
        }
    }
}

/// The health of the link: component `amqp`, not critical (jobs and events wait,
/// the rest of the node serves).
pub struct AmqpProbe {
    link: watch::Receiver<LinkState>,
}

impl Probe for AmqpProbe {
    fn component(&self) -> &str {
        "amqp"
    }
    fn critical(&self) -> bool {
        false
    }
    fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        let state = self.link.borrow().clone();
        Box::pin(async move {
            match state {
                LinkState::Up => Ok(()),
                LinkState::Connecting => Err("connecting to RabbitMQ".to_owned()),
                LinkState::Down { since, error } => Err(format!(
                    "no connection to RabbitMQ since {}: {error}",
                    since.format("%Y-%m-%dT%H:%M:%SZ")
                )),
            }
        })
    }
}

/// Parses an `amqp://` or `amqps://` URL (`amqps` is TLS by rustls, with the
/// webpki roots).
///
/// # Errors
/// [`BridgeError::InvalidUrl`], which does not repeat the URL.
pub fn parse_url(url: &str) -> Result<AMQPUri, BridgeError> {
    url.parse::<AMQPUri>().map_err(|_| BridgeError::InvalidUrl)
}

/// The URL without its credentials, for logs: `amqps://host:5671/vhost`.
pub fn redacted(url: &str) -> String {
    match parse_url(url) {
        Ok(uri) => {
            let scheme = match uri.scheme {
                AMQPScheme::AMQP => "amqp",
                AMQPScheme::AMQPS => "amqps",
            };
            let vhost: String = url::form_urlencoded::byte_serialize(uri.vhost.as_bytes()).collect();
            format!("{scheme}://{}:{}/{vhost}", uri.authority.host, uri.authority.port)
        }
        Err(_) => "(invalid url)".to_owned(),
    }
}

/// The QueueBridge's place in the tree: a worker linked to the queue supervisor,
/// showing the `amqp` breaker beside it.
pub fn child_spec(config: BridgeConfig, bridge: Bridge) -> ChildSpec {
    let breaker = bridge.breaker().clone();
    ChildSpec::new("queue-bridge", "queue-bridge", move |ctx| {
        let actor = QueueBridge { config: config.clone() };
        let args = BridgeArgs { bridge: bridge.clone(), stats: ctx.stats };
        async move {
            let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
            Ok(StartedChild::worker(actor))
        }
    })
    .with_breaker(breaker)
}

#[cfg(test)]
mod tests;
