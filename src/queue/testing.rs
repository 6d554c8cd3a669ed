//! Test kit for the queue (feature `testing`): a RabbitMQ name prefix of one test's
//! own that cleans up after itself.

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

use super::transport::Names;
use crate::db::testing::{amqp_prefix, amqp_url};

/// A prefix of exchange and queue names in the shared RabbitMQ; dropping it deletes
/// what a node declares under it (work, dead and retry queues, both exchanges).
pub struct AmqpScope {
    pub prefix: String,
    retry_delays_ms: Vec<u64>,
}

impl AmqpScope {
    /// A fresh prefix; `retry_delays_ms` are the node's `queue.retry_delays_ms`.
    pub fn new(retry_delays_ms: &[u64]) -> Self {
        Self { prefix: amqp_prefix(), retry_delays_ms: retry_delays_ms.to_vec() }
    }
}

impl Drop for AmqpScope {
    fn drop(&mut self) {
        let names = Names::new(&self.prefix);
        let mut queues = vec![names.work_queue.clone(), names.dead_queue.clone()];
        queues.extend(self.retry_delays_ms.iter().map(|&ms| names.retry_queue(Duration::from_millis(ms))));
        let exchanges = [names.jobs_exchange.clone(), names.events_exchange.clone()];
        // on a thread of its own: Drop cannot await, and the test's runtime may be ending
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let Ok(connection) =
                    lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
                else {
                    return;
                };
                let Ok(channel) = connection.create_channel().await else {
                    return;
                };
                for queue in queues {
                    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
                }
                for exchange in exchanges {
                    let _ = channel
                        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = connection.close(200, lapin::types::ShortString::from("done")).await;
            });
        })
        .join();
    }
}
