//! The chat model: SmolLM2-135M-Instruct's weights (candle's quantized llama)
//! and its tokenizer, and one generation decoded token by token on the calling
//! (compute) thread.

use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling as Sampler};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use tokio::sync::mpsc::Sender;

use super::CHAT_MODEL;
use super::chat_tokenizer::ChatTokenizer;
use super::text::{Step, TextStream};
use crate::inference::backend::{BackendError, ChatMessage, Delta, FinishReason, Sampling, Usage};

/// Prompt tokens fed to the model at once: bounds the attention scores of a
/// long prompt (heads x chunk x context floats) and lets a cancelled request
/// stop between chunks.
const PREFILL_CHUNK: usize = 256;

/// How the weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChatWeights {
    /// As the GGUF ships them (Q4_1): smaller, slower to decode.
    AsShipped,
    /// Requantised to Q8_0 at load: about 50% more memory, faster decoding
    /// (docs/BENCHMARKS.md, "Inference: local models").
    #[default]
    Q8_0,
}

/// What a generation ended with.
pub(super) enum Generated {
    Done {
        finish: FinishReason,
        usage: Usage,
    },
    /// The receiver went away: nothing more was computed.
    Cancelled,
}

/// The loaded chat model; shared by every compute thread.
pub(super) struct ChatModel {
    /// Weights with an empty KV cache: each generation clones them (the
    /// tensors are shared, the cache is its own).
    weights: ModelWeights,
    tokenizer: ChatTokenizer,
    /// Tokens of prompt and answer together.
    context: usize,
}

impl ChatModel {
    /// Reads a GGUF file. Blocking (about a second).
    pub(super) fn load(path: &Path, choice: ChatWeights) -> Result<Self, String> {
        let started = Instant::now();
        let file = std::fs::read(path).map_err(|e| e.to_string())?;
        let mut reader = Cursor::new(file);
        let content = Content::read(&mut reader).map_err(|e| e.to_string())?;
        let tokenizer = ChatTokenizer::from_gguf(&content.metadata)?;
        if !tokenizer.template_matches {
            tracing::warn!(
                model = CHAT_MODEL,
                "the GGUF's chat template differs from the ChatML prompt castwork renders; answers may suffer"
            );
        }
        let trained = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(MAX_SEQ_LEN);
        // candle's rotary tables stop at MAX_SEQ_LEN
        let context = trained.min(MAX_SEQ_LEN);
        let device = Device::Cpu;
        let weights = match choice {
            ChatWeights::AsShipped => ModelWeights::from_gguf(content, &mut reader, &device),
            ChatWeights::Q8_0 => requantized(&content, &mut reader, &device)
                .and_then(|(content, mut reader)| ModelWeights::from_gguf(content, &mut reader, &device)),
        }
        .map_err(|e| e.to_string())?;
        tracing::info!(
            model = CHAT_MODEL,
            weights = ?choice,
            context,
            load_ms = started.elapsed().as_millis(),
            "chat model loaded"
        );
        Ok(Self { weights, tokenizer, context })
    }

    /// Tokens of prompt and answer together.
    pub(super) fn context(&self) -> usize {
        self.context
    }

    /// The prompt's tokens; a prompt that leaves no room for an answer is refused.
    pub(super) fn prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, BackendError> {
        let ids = self.tokenizer.prompt(messages).map_err(BackendError::Retryable)?;
        if ids.len() >= self.context {
            return Err(BackendError::Fatal(format!(
                "the prompt is {} tokens; {CHAT_MODEL} reads at most {} tokens of prompt and answer together",
                ids.len(),
                self.context
            )));
        }
        Ok(ids)
    }

    /// Generates the answer to `prompt`, sending its text through `out` as it is
    /// decoded; stops as soon as `out`'s receiver is gone. The caller sends `Done`.
    pub(super) fn generate(
        &self,
        prompt: &[u32],
        sampling: &Sampling,
        out: &Sender<Result<Delta, BackendError>>,
    ) -> Result<Generated, BackendError> {
        let failed = |e: candle_core::Error| BackendError::Retryable(format!("{CHAT_MODEL} failed: {e}"));
        let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        let mut usage = Usage { prompt_tokens, completion_tokens: 0 };
        if sampling.max_tokens == 0 {
            return Ok(Generated::Done { finish: FinishReason::Length, usage });
        }
        let device = Device::Cpu;
        let mut model = self.weights.clone();
        let mut sampler = sampler(sampling);
        let mut text = TextStream::new(&sampling.stop);

        let mut logits = None;
        for (index, chunk) in prompt.chunks(PREFILL_CHUNK).enumerate() {
            if out.is_closed() {
                return Ok(Generated::Cancelled);
            }
            let input = Tensor::new(chunk, &device).and_then(|t| t.unsqueeze(0)).map_err(failed)?;
            logits = Some(model.forward(&input, index * PREFILL_CHUNK).map_err(failed)?);
        }
        let Some(mut logits) = logits else {
            return Err(BackendError::Fatal("the prompt is empty".to_owned()));
        };
        let mut position = prompt.len();
        let finish = loop {
            let token = logits.squeeze(0).and_then(|l| sampler.sample(&l)).map_err(failed)?;
            if self.tokenizer.is_stop(token) {
                break FinishReason::Stop;
            }
            usage.completion_tokens += 1;
            match text.push(self.tokenizer.bytes(token)) {
                Step::Text(piece) => {
                    if !piece.is_empty() && out.blocking_send(Ok(Delta::Text(piece))).is_err() {
                        return Ok(Generated::Cancelled);
                    }
                }
                Step::Stop(piece) => {
                    if !piece.is_empty() && out.blocking_send(Ok(Delta::Text(piece))).is_err() {
                        return Ok(Generated::Cancelled);
                    }
                    return Ok(Generated::Done { finish: FinishReason::Stop, usage });
                }
            }
            if usage.completion_tokens >= sampling.max_tokens || position + 1 >= self.context {
                break FinishReason::Length;
            }
            if out.is_closed() {
                return Ok(Generated::Cancelled);
            }
            let input = Tensor::new(&[token], &device).and_then(|t| t.unsqueeze(0)).map_err(failed)?;
            logits = model.forward(&input, position).map_err(failed)?;
            position += 1;
        };
        let rest = text.finish();
        if !rest.is_empty() && out.blocking_send(Ok(Delta::Text(rest))).is_err() {
            return Ok(Generated::Cancelled);
        }
        Ok(Generated::Done { finish, usage })
    }

    #[cfg(test)]
    pub(super) fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }
}

/// The sampler for a request: greedy at temperature 0, else softmax at the
/// temperature, cut to the nucleus when `top_p` is below 1; seeded when asked.
fn sampler(sampling: &Sampling) -> LogitsProcessor {
    let seed = sampling.seed.unwrap_or_else(rand::random);
    let temperature = f64::from(sampling.temperature);
    let how = if sampling.temperature <= 0.0 {
        Sampler::ArgMax
    } else {
        match sampling.top_p {
            Some(p) if p > 0.0 && p < 1.0 => Sampler::TopP { p: f64::from(p), temperature },
            _ => Sampler::All { temperature },
        }
    };
    LogitsProcessor::from_sampling(seed, how)
}

/// The GGUF again, with every tensor below 8 bits requantised to Q8_0, in memory.
fn requantized(
    content: &Content,
    reader: &mut Cursor<Vec<u8>>,
    device: &Device,
) -> candle_core::Result<(Content, Cursor<Vec<u8>>)> {
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let tensor = content.tensor(reader, name, device)?;
        let tensor = match info.ggml_dtype {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_0 => tensor,
            _ => QTensor::quantize(&tensor.dequantize(device)?, GgmlDType::Q8_0)?,
        };
        tensors.push((name.as_str(), tensor));
    }
    // the model reads only its hyper-parameters; the tokenizer was built already
    let metadata: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .filter(|(key, _)| key.starts_with("llama.") || key.as_str() == "general.architecture")
        .map(|(key, value)| (key.as_str(), value))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(name, t)| (*name, t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensor_refs)?;
    drop(tensors);
    out.set_position(0);
    let content = Content::read(&mut out)?;
    Ok((content, out))
}
