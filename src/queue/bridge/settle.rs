//! How a RabbitMQ delivery becomes a [`Delivery`] and is settled on its channel.

use futures::FutureExt;
use futures::future::BoxFuture;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};

use crate::metrics;
use crate::queue::transport::{Delivery, Settle};

/// Which queue a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Work,
    Events,
}

impl Source {
    /// Its metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Work => "work",
            Self::Events => "events",
        }
    }
}

/// Settles one delivery through its channel's acker.
struct AmqpSettle {
    acker: Acker,
    source: Source,
}

/// `delivery` as the rest of the node sees it.
pub(crate) fn delivery(delivery: lapin::message::Delivery, source: Source) -> Delivery {
    metrics::amqp_consumed(source.label(), delivery.redelivered);
    let id = delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned());
    let settle = Box::new(AmqpSettle { acker: delivery.acker, source });
    Delivery::new(id, delivery.data.into(), delivery.redelivered, settle)
}

/// What became of a settlement; `Ok(false)`: the channel was gone already.
fn settled(outcome: lapin::Result<bool>, what: &'static str, source: Source) -> bool {
    match outcome {
        Ok(true) => true,
        Ok(false) => {
            tracing::debug!(
                what,
                queue = source.label(),
                "delivery not settled: its channel is closed; the broker delivers it again"
            );
            false
        }
        Err(error) => {
            tracing::warn!(what, queue = source.label(), %error, "delivery not settled; the broker delivers it again");
            false
        }
    }
}

impl Settle for AmqpSettle {
    fn ack(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if settled(self.acker.ack(BasicAckOptions::default()).await, "ack", self.source) {
                metrics::amqp_acked();
            }
        })
    }

    fn dead_letter(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            match self.source {
                // the work queue's dead-letter exchange takes it to the dead queue
                Source::Work => {
                    let nack = BasicNackOptions { requeue: false, multiple: false };
                    if settled(self.acker.nack(nack).await, "dead_letter", self.source) {
                        metrics::amqp_dead_lettered();
                    }
                }
                // the events queue has none: the event is dropped
                Source::Events => {
                    let reject = BasicRejectOptions { requeue: false };
                    settled(self.acker.reject(reject).await, "reject", self.source);
                }
            }
        })
    }

    fn requeue(self: Box<Self>) {
        // Called from `Drop`, so it cannot wait. lapin queues the nack for its IO loop
        // on the future's first poll, before it waits for the IO loop's answer; that
        // answer is not needed, so the future is polled once and dropped. Should the
        // nack not go out, the message still returns to its queue when the channel closes.
        let nack = BasicNackOptions { requeue: true, multiple: false };
        if let Some(outcome) = self.acker.nack(nack).now_or_never() {
            settled(outcome, "requeue", self.source);
        }
    }
}
