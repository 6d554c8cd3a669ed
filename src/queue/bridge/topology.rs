//! The exchanges and queues the bridge declares at every connect. Declaring what
//! exists with the same arguments changes nothing, so every node declares all of it.
//!
//! - `<prefix>.jobs`: durable direct exchange; `<prefix>.work`, a durable quorum
//!   queue, is bound to it under [`WORK_KEY`]. A work message rejected without
//!   requeueing, or delivered `queue.delivery_limit` times without being settled,
//!   is dead-lettered through the default exchange to `<prefix>.dead`.
//! - `<prefix>.dead`: durable quorum queue, read by operators (and the API).
//! - `<prefix>.retry.<ms>`, one per `queue.retry_delays_ms`: durable queues without
//!   consumers whose messages expire after their delay and are dead-lettered to the
//!   jobs exchange under [`WORK_KEY`], back into the work queue.
//! - `<prefix>.events`: durable topic exchange; each connection of each node binds
//!   its own exclusive, auto-deleted queue `<prefix>.events.node.<uuid>` with `#`,
//!   so every node sees every event published while it is connected (at most
//!   [`EVENTS_BACKLOG`] wait in it; past that the oldest are dropped).

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use super::{BridgeConfig, BridgeError};
use crate::queue::transport::Names;

/// Routing key of the work queue's binding to the jobs exchange.
pub const WORK_KEY: &str = "work";
/// Most events a node's events queue keeps waiting for the node (the oldest go first).
pub const EVENTS_BACKLOG: i64 = 10_000;

/// Declares everything on `channel`; returns the name of this connection's events queue.
///
/// # Errors
/// The first declaration or binding the broker refused (which also closes `channel`).
pub async fn declare(channel: &Channel, config: &BridgeConfig) -> Result<String, BridgeError> {
    let names = &config.names;
    exchange(channel, &names.jobs_exchange, ExchangeKind::Direct).await?;
    exchange(channel, &names.events_exchange, ExchangeKind::Topic).await?;
    queue(channel, &names.dead_queue, durable(), quorum()).await?;
    queue(channel, &names.work_queue, durable(), work_arguments(names, config.delivery_limit)).await?;
    bind(channel, &names.work_queue, &names.jobs_exchange, WORK_KEY).await?;
    for &delay in &config.retry_delays {
        queue(channel, &names.retry_queue(delay), durable(), retry_arguments(names, delay)).await?;
    }
    let events = events_queue(names);
    let private =
        QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    queue(channel, &events, private, events_arguments()).await?;
    bind(channel, &events, &names.events_exchange, "#").await?;
    Ok(events)
}

/// A fresh name for one connection's events queue.
pub fn events_queue(names: &Names) -> String {
    format!("{}.node.{}", names.events_exchange, uuid::Uuid::new_v4().simple())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), long_string("quorum"));
    arguments
}

/// A quorum queue that dead-letters to the dead queue after `delivery_limit` redeliveries.
pub fn work_arguments(names: &Names, delivery_limit: u32) -> FieldTable {
    let mut arguments = quorum();
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(delivery_limit)));
    arguments.insert("x-dead-letter-exchange".into(), long_string(""));
    arguments.insert("x-dead-letter-routing-key".into(), long_string(&names.dead_queue));
    arguments
}

/// A queue whose messages go back to work after `delay`.
pub fn retry_arguments(names: &Names, delay: Duration) -> FieldTable {
    let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    let mut arguments = FieldTable::default();
    arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    arguments.insert("x-dead-letter-exchange".into(), long_string(&names.jobs_exchange));
    arguments.insert("x-dead-letter-routing-key".into(), long_string(WORK_KEY));
    arguments
}

/// A node's events queue keeps at most [`EVENTS_BACKLOG`] events, dropping the oldest:
/// a node that reads none does not fill the broker.
fn events_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(EVENTS_BACKLOG));
    arguments.insert("x-overflow".into(), long_string("drop-head"));
    arguments
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<(), BridgeError> {
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(ShortString::from(name), kind, options, FieldTable::default())
        .await
        .map_err(|e| refused(format!("exchange {name}"), &e))
}

async fn queue(
    channel: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    arguments: FieldTable,
) -> Result<(), BridgeError> {
    channel
        .queue_declare(ShortString::from(name), options, arguments)
        .await
        .map(drop)
        .map_err(|e| refused(format!("queue {name}"), &e))
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), BridgeError> {
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from(key),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| refused(format!("binding of {queue} to {exchange}"), &e))
}

fn refused(what: String, error: &lapin::Error) -> BridgeError {
    BridgeError::Declare { what, error: error.to_string() }
}
