//! A subscription: a dedicated subscriber connection that resubscribes after
//! every reconnection, and a forwarding task that also watches every pooled
//! connection of the tier, turning fred's notifications into [`RedisEvent`]s.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::Options;
use fred::types::{ConnectHandle, Value};
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{EVENT_BUFFER, classify};

/// How long the subscriber waits for `SUBSCRIBE`, and then before trying again.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// What a [`Subscription`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEvent {
    /// A payload published on the subscribed channel.
    Message(String),
    /// A connection of the tier dropped: messages may be missed from now on
    /// until [`RedisEvent::Reconnected`].
    Disconnected,
    /// The subscription is live and the pool usable again. Sent once when the
    /// subscription first goes live, after every outage, and after a local
    /// overflow of the message stream: messages may have been missed before it.
    Reconnected,
}

/// Connects `subscriber` and starts forwarding: messages on `channel`, and
/// connection changes of `pool` and of the subscriber.
pub(super) fn start(pool: &[Client], subscriber: Client, channel: String) -> Subscription {
    // Take every receiver before connecting, so no event is missed.
    let mut sources = vec![stream(subscriber.message_rx(), |m| Signal::Message(m.value.into_string()))];
    let clients: Vec<Client> = pool.iter().cloned().chain([subscriber.clone()]).collect();
    for (i, client) in clients.iter().enumerate() {
        sources.push(stream(client.reconnect_rx(), move |_| Signal::Up(i)));
        sources.push(stream(client.error_rx(), move |_| Signal::Down(i)));
    }
    let connection = subscriber.connect();
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let mut up: Vec<bool> = clients.iter().map(ClientLike::is_connected).collect();
    if let Some(subscribed) = up.last_mut() {
        *subscribed = false;
    }
    let forwarder = Forwarder {
        up,
        clients,
        subscriber,
        channel,
        // Not fail-fast: the subscriber announces its connection just before it
        // is marked connected, and `SUBSCRIBE` must then wait rather than fail.
        options: Options { timeout: Some(SUBSCRIBE_TIMEOUT), ..Options::default() },
        resubscribe: false,
        wake_at: None,
        healthy: false,
        tx,
    };
    let task = tokio::spawn(forwarder.run(futures::stream::select_all(sources)));
    Subscription { rx, task, connection }
}

/// A live subscription. Dropping it stops its task and closes its connection.
pub struct Subscription {
    rx: mpsc::Receiver<RedisEvent>,
    task: JoinHandle<()>,
    connection: ConnectHandle,
}

impl Subscription {
    /// The next event; `None` once the subscription has stopped.
    pub async fn recv(&mut self) -> Option<RedisEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    ///
    /// # Errors
    /// [`mpsc::error::TryRecvError`] when none is waiting or the subscription stopped.
    pub fn try_recv(&mut self) -> Result<RedisEvent, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
        self.connection.abort();
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("stopped", &self.task.is_finished()).finish_non_exhaustive()
    }
}

/// What the forwarding task hears from fred. `Up`/`Down` carry the index of a
/// tier client; the subscriber is the last one.
enum Signal {
    Message(Option<String>),
    Up(usize),
    Down(usize),
    Lagged,
}

/// A fred broadcast receiver as a stream of signals; lag becomes `Lagged`.
fn stream<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    on_item: impl Fn(T) -> Signal + Send + Sync + 'static,
) -> BoxStream<'static, Signal> {
    let on_item = Arc::new(on_item);
    futures::stream::unfold(rx, move |mut rx| {
        let on_item = Arc::clone(&on_item);
        async move {
            let signal = match rx.recv().await {
                Ok(item) => on_item(item),
                Err(broadcast::error::RecvError::Lagged(_)) => Signal::Lagged,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((signal, rx))
        }
    })
    .boxed()
}

/// How soon to look again at a client that announced a connection but is not
/// marked connected yet (fred announces just before it flips the state).
const RECHECK_DELAY: Duration = Duration::from_millis(20);

/// The state of a subscription's forwarding task.
struct Forwarder {
    /// The pooled clients, then the subscriber.
    clients: Vec<Client>,
    subscriber: Client,
    /// Per client: whether it announced a connection and has not dropped since
    /// (for the subscriber: and the channel is subscribed).
    up: Vec<bool>,
    channel: String,
    options: Options,
    /// The subscriber is connected but not subscribed yet.
    resubscribe: bool,
    /// When to look again (resubscribe, or recheck a client's state).
    wake_at: Option<Instant>,
    /// Whether `Reconnected` was the last state event sent.
    healthy: bool,
    tx: mpsc::Sender<RedisEvent>,
}

impl Forwarder {
    fn sub(&self) -> usize {
        self.clients.len().saturating_sub(1)
    }

    async fn run(mut self, mut signals: SelectAll<BoxStream<'static, Signal>>) {
        loop {
            let wake_at = self.wake_at.unwrap_or_else(Instant::now);
            let signal = tokio::select! {
                () = self.tx.closed() => return,
                () = tokio::time::sleep_until(wake_at), if self.wake_at.is_some() => None,
                signal = signals.next() => match signal {
                    Some(signal) => Some(signal),
                    None => return,
                },
            };
            self.wake_at = None;
            let sent = match signal {
                None => self.settle().await,
                Some(Signal::Message(Some(payload))) => self.send(RedisEvent::Message(payload)).await,
                Some(Signal::Message(None)) => true,
                Some(Signal::Up(i)) => {
                    self.mark(i, true);
                    self.resubscribe |= i == self.sub();
                    self.settle().await
                }
                Some(Signal::Down(i)) => self.down(i).await,
                Some(Signal::Lagged) => self.resync().await,
            };
            if !sent {
                return;
            }
        }
    }

    fn mark(&mut self, i: usize, up: bool) {
        if let Some(slot) = self.up.get_mut(i) {
            *slot = up;
        }
    }

    /// Client `i` dropped: report it if the tier was healthy.
    async fn down(&mut self, i: usize) -> bool {
        let was_up = self.up.get(i).copied().unwrap_or(false);
        self.mark(i, false);
        if i == self.sub() {
            self.resubscribe = false;
        }
        if was_up && self.healthy {
            tracing::warn!(client = i, "redis connection lost");
            self.healthy = false;
            return self.send(RedisEvent::Disconnected).await;
        }
        true
    }

    /// A stream lagged, so drops may have gone unseen: report one, then take
    /// every client's state afresh.
    async fn resync(&mut self) -> bool {
        if self.healthy {
            self.healthy = false;
            if !self.send(RedisEvent::Disconnected).await {
                return false;
            }
        }
        self.up = self.clients.iter().map(ClientLike::is_connected).collect();
        let sub = self.sub();
        self.mark(sub, false);
        self.resubscribe = self.subscriber.is_connected();
        self.settle().await
    }

    /// Subscribes if due, then sends `Reconnected` once the tier is usable:
    /// subscribed, and at least one pooled connection up.
    async fn settle(&mut self) -> bool {
        let sub = self.sub();
        if self.resubscribe {
            if self.subscribe().await {
                self.resubscribe = false;
                self.mark(sub, true);
            } else {
                self.mark(sub, false);
                self.wake_at = Some(Instant::now() + RESUBSCRIBE_DELAY);
                return true;
            }
        }
        if self.healthy || !self.up.get(sub).copied().unwrap_or(false) {
            return true;
        }
        let (mut announced, mut connected) = (false, false);
        for (client, up) in self.clients.iter().zip(self.up.iter_mut()).take(sub) {
            // The state is the truth; a signal may have come before it flipped.
            let live = client.is_connected();
            *up |= live;
            announced |= *up;
            connected |= live;
        }
        if connected {
            tracing::info!("redis subscription live");
            self.healthy = true;
            return self.send(RedisEvent::Reconnected).await;
        }
        if announced {
            self.wake_at = Some(Instant::now() + RECHECK_DELAY);
        }
        true
    }

    /// `SUBSCRIBE`s the subscriber; false if that failed.
    ///
    /// fred answers `SUBSCRIBE` as soon as it is queued, without waiting for the
    /// server, so a `PING` follows as a barrier: the server answers commands of a
    /// connection in order, so its reply means the subscription is active.
    async fn subscribe(&self) -> bool {
        let client = self.subscriber.with_options(&self.options);
        let confirmed = async {
            client.subscribe(self.channel.clone()).await?;
            client.ping::<Value>(None).await.map(drop)
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, confirmed).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(error = %classify(&error), "redis subscribe failed; will retry");
                false
            }
            Err(_) => {
                tracing::warn!("redis subscribe timed out; will retry");
                false
            }
        }
    }

    /// False once the receiving side is gone.
    async fn send(&self, event: RedisEvent) -> bool {
        self.tx.send(event).await.is_ok()
    }
}
