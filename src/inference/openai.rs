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
