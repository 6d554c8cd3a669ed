//! [`Broker`]: the carrier this node publishes through, RabbitMQ by the
//! [`Bridge`](super::bridge::Bridge) or in process by the [`LocalBroker`].

use super::bridge::Bridge;
use super::local::LocalBroker;
use super::transport::{Outgoing, PublishError};

/// Where messages go.
#[derive(Clone, Debug)]
pub enum Broker {
    /// RabbitMQ (`queue.amqp_url` set).
    Amqp(Bridge),
    /// In process (embedded).
    Local(LocalBroker),
}

impl Broker {
    /// Publishes `message`; `Ok` once the carrier has it (a publisher confirm over AMQP).
    pub async fn publish(&self, message: Outgoing) -> Result<(), PublishError> {
        match self {
            Self::Amqp(bridge) => bridge.publish(message).await,
            Self::Local(local) => local.publish(message).await,
        }
    }

    /// `amqp` or `embedded`, as `/health` names the mode.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Amqp(_) => "amqp",
            Self::Local(_) => "embedded",
        }
    }
}
