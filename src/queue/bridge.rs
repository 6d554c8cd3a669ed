//! Placeholder until the AMQP bridge lands.
use std::sync::Arc;

use super::transport::{Consumers, Outgoing, PublishError};
use crate::config::Settings;
use crate::health::Probe;

#[derive(Clone, Debug)]
pub struct Bridge;

impl Bridge {
    pub async fn publish(&self, _message: Outgoing) -> Result<(), PublishError> {
        Err(PublishError::Unavailable("not built".into()))
    }
}

pub fn parts(_settings: &Settings) -> (Bridge, Consumers, super::tree::BridgeChild, Arc<dyn Probe>) {
    unimplemented!()
}
