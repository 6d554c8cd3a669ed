//! The `local` backend: SmolLM2-135M-Instruct (GGUF, candle's quantized llama)
//! and all-MiniLM-L6-v2 (candle's BERT) in process, on dedicated compute threads.

use std::path::{Path, PathBuf};

use crate::config::LocalSettings;

/// Public name of the local chat model.
pub const CHAT_MODEL: &str = "smollm2-135m-instruct";
/// Public name of the local embedding model.
pub const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";
/// The command that fetches the model files.
pub const FETCH_COMMAND: &str = "scripts/fetch-models.sh";

/// Why the local models could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LocalLoadError {
    #[error("model files missing in {dir}: {missing}; run {FETCH_COMMAND}", dir = .dir.display(), missing = .missing.join(", "))]
    Missing { dir: PathBuf, missing: Vec<String> },
    #[error("failed to load {path}: {reason}", path = .path.display())]
    Load { path: PathBuf, reason: String },
}

/// The local backend (not yet loadable).
pub struct LocalBackend;

impl LocalBackend {
    /// Loads the models found in `settings.models_dir`. Blocking: call it off the async runtime.
    pub fn load(settings: &LocalSettings) -> Result<Self, LocalLoadError> {
        Err(LocalLoadError::Missing {
            dir: settings.models_dir.clone(),
            missing: missing_files(&settings.models_dir),
        })
    }
}

/// Loads the local backend as the pool holds it. Blocking: call it off the async runtime.
pub fn load_backend(
    settings: &LocalSettings,
) -> Result<std::sync::Arc<dyn super::backend::LlmBackend>, LocalLoadError> {
    let _backend = LocalBackend::load(settings)?;
    Err(LocalLoadError::Load {
        path: settings.models_dir.clone(),
        reason: "the local backend is not built yet".to_owned(),
    })
}

/// The model files not present in `dir`.
pub fn missing_files(dir: &Path) -> Vec<String> {
    ["SmolLM2-135M-Instruct.gguf", "all-MiniLM-L6-v2/model.safetensors"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .map(str::to_owned)
        .collect()
}
