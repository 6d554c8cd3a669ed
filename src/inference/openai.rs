//! The `openai` backend: any OpenAI-compatible server (llama.cpp's server, vLLM,
//! Ollama, OpenAI) by `base_url`, over reqwest.

use crate::config::BackendSettings;

/// A client of one `[[inference.backends]]` server (not yet usable).
pub struct OpenAiBackend {
    name: String,
}

impl OpenAiBackend {
    /// A client for `settings`.
    pub fn new(settings: &BackendSettings) -> Result<Self, String> {
        Err(format!("{}: the openai backend is not built yet", settings.name))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The client of `settings` as the pool holds it.
pub fn client(settings: &BackendSettings) -> Result<std::sync::Arc<dyn super::backend::LlmBackend>, String> {
    OpenAiBackend::new(settings).map(|b| {
        let _ = b.name();
        unreachable_backend()
    })
}

fn unreachable_backend() -> std::sync::Arc<dyn super::backend::LlmBackend> {
    struct Never;
    impl super::backend::LlmBackend for Never {
        fn name(&self) -> &str {
            "never"
        }
        fn chat_stream(
            &self,
            _request: super::backend::ChatRequest,
        ) -> futures::future::BoxFuture<'_, Result<super::backend::DeltaStream, super::backend::BackendError>>
        {
            Box::pin(async { Err(super::backend::BackendError::Fatal("not built".to_owned())) })
        }
        fn embed(
            &self,
            _model: &str,
            _texts: Vec<String>,
        ) -> futures::future::BoxFuture<'_, Result<super::backend::Embeddings, super::backend::BackendError>>
        {
            Box::pin(async { Err(super::backend::BackendError::Fatal("not built".to_owned())) })
        }
        fn models(
            &self,
        ) -> futures::future::BoxFuture<
            '_,
            Result<Vec<super::backend::ModelInfo>, super::backend::BackendError>,
        > {
            Box::pin(async { Ok(Vec::new()) })
        }
    }
    std::sync::Arc::new(Never)
}
