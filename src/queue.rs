//! Jobs and events: the QueueBridge to RabbitMQ (or the in-process broker when
//! `queue.amqp_url` is unset), the outbox relay, the JobWorker pool and the job
//! schedules, under one `child_spec()` in [`tree`].

pub mod bridge;
pub mod transport;
