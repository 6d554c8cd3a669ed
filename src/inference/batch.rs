//! The embedding batcher of a deployment: concurrent embedding requests are
//! joined into one forward pass of at most `inference.embed_batch_max` texts.
//!
//! It never waits for company while a worker is idle for long: it takes what is
//! queued, waits at most `inference.embed_batch_wait_ms` for more, and keeps at
//! most one batch in flight per worker, so while every worker is busy the asks
//! pile up and the next batch is a full one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::backend::{BackendError, Embeddings};
use super::pool::{Deployment, Work};
use crate::metrics;

/// One embeddings request waiting for its batch.
pub(super) struct EmbedAsk {
    pub model: String,
    pub texts: Vec<String>,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Embeddings, EmbedFailure>>,
}

/// Why an ask got no vectors.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum EmbedFailure {
    /// The deployment's queue was full.
    Shed,
    Backend(BackendError),
}

/// Where asks are sent; full: shed.
#[derive(Clone)]
pub(super) struct Batcher {
    asks: mpsc::Sender<EmbedAsk>,
}

impl Batcher {
    /// Starts the batcher task of `deployment`; it ends when every sender is gone.
    pub(super) fn start(
        deployment: Arc<Deployment>,
        max_texts: usize,
        wait: Duration,
        capacity: usize,
    ) -> Self {
        let (asks, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(run(deployment, rx, max_texts.max(1), wait));
        Self { asks }
    }

    /// Queues an ask, or hands it back at once when too many are waiting.
    pub(super) fn submit(&self, ask: EmbedAsk) -> Result<(), EmbedAsk> {
        self.asks.try_send(ask).map_err(|e| match e {
            mpsc::error::TrySendError::Full(ask) | mpsc::error::TrySendError::Closed(ask) => ask,
        })
    }
}

async fn run(
    deployment: Arc<Deployment>,
    mut asks: mpsc::Receiver<EmbedAsk>,
    max_texts: usize,
    wait: Duration,
) {
    let in_flight = Arc::new(Semaphore::new(deployment.workers().max(1)));
    let mut carry: Option<EmbedAsk> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let first = match carry.take() {
            Some(ask) => ask,
            None => match asks.recv().await {
                Some(ask) => ask,
                None => return,
            },
        };
        let model = first.model.clone();
        let mut texts = first.texts.len();
        let mut batch = vec![first];
        let until = Instant::now() + wait;
        while texts < max_texts {
            let next = match asks.try_recv() {
                Ok(ask) => Some(ask),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if wait.is_zero() => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(until, asks.recv()).await.ok().flatten()
                }
            };
            let Some(ask) = next else { break };
            if ask.model != model || texts + ask.texts.len() > max_texts {
                carry = Some(ask);
                break;
            }
            texts += ask.texts.len();
            batch.push(ask);
        }
        batch.retain(|ask| !ask.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        metrics::inference_embed_batch(deployment.name(), texts);
        let deadline = batch.iter().map(|a| a.deadline).min().unwrap_or_else(Instant::now);
        let sizes: Vec<usize> = batch.iter().map(|a| a.texts.len()).collect();
        let all: Vec<String> = batch.iter_mut().flat_map(|a| std::mem::take(&mut a.texts)).collect();
        let (reply, answer) = oneshot::channel();
        let work = Work::Embed { model, texts: all, reply, deadline };
        if deployment.submit(work).is_err() {
            for ask in batch {
                let _ = ask.reply.send(Err(EmbedFailure::Shed));
            }
            continue;
        }
        tokio::spawn(async move {
            let result = answer
                .await
                .unwrap_or_else(|_| Err(BackendError::Retryable("the inference worker was lost".to_owned())));
            deliver(batch, sizes, result);
            drop(permit);
        });
    }
}

fn deliver(batch: Vec<EmbedAsk>, sizes: Vec<usize>, result: Result<Embeddings, BackendError>) {
    match result {
        Err(err) => {
            for ask in batch {
                let _ = ask.reply.send(Err(EmbedFailure::Backend(err.clone())));
            }
        }
        Ok(Embeddings { vectors, prompt_tokens }) => {
            let total: usize = sizes.iter().sum();
            let mut vectors = vectors.into_iter();
            for (ask, size) in batch.into_iter().zip(sizes) {
                let mine: Vec<Vec<f32>> = vectors.by_ref().take(size).collect();
                let share = if total == 0 { 0 } else { prompt_tokens as usize * size / total };
                let result = if mine.len() == size {
                    Ok(Embeddings { vectors: mine, prompt_tokens: u32::try_from(share).unwrap_or(u32::MAX) })
                } else {
                    Err(EmbedFailure::Backend(BackendError::Retryable(
                        "the backend returned fewer vectors than texts".to_owned(),
                    )))
                };
                let _ = ask.reply.send(result);
            }
        }
    }
}
