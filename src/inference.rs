//! Inference: generation and embeddings behind the [`backend::LlmBackend`] trait,
//! served by a pool of InferenceActors per backend under the `inference`
//! supervisor, with breakers, shedding, routing with fallbacks, batching and a
//! response cache.

pub mod backend;
pub mod local;
pub mod openai;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
