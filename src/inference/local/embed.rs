//! The embedding model: all-MiniLM-L6-v2 (candle's BERT), 384-dimensional
//! sentence vectors: mean of the token vectors over the attention mask, then
//! L2-normalised, as sentence-transformers computes them.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use crate::inference::backend::Embeddings;

/// Tokens read of each text ([CLS] and [SEP] included); the rest is cut. The
/// model takes 512 but was trained on 128 to 256, and sentence-transformers
/// cuts at 256 (its `max_seq_length`).
pub(super) const MAX_TOKENS: usize = 256;

/// Padded tokens (texts x longest text) in one forward pass: bounds the
/// attention scores (texts x 12 heads x longest²) of a big batch, which is
/// then run as several passes.
const MAX_BATCH_TOKENS: usize = 8192;

/// The loaded embedding model; shared by every compute thread.
pub(super) struct EmbeddingModel {
    model: BertModel,
    tokenizer: Tokenizer,
    pad_id: u32,
}

impl EmbeddingModel {
    /// Reads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    /// Blocking (a fraction of a second). The error names the file at fault.
    pub(super) fn load(dir: &Path) -> Result<Self, (String, String)> {
        let at = |file: &'static str| move |e: String| (file.to_owned(), e);
        let config = std::fs::read(dir.join("config.json"))
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice::<Config>(&bytes).map_err(|e| e.to_string()))
            .map_err(at("config.json"))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| e.to_string())
            .map_err(at("tokenizer.json"))?;
        // the file pads every text to 128 and cuts there: pad to the longest of a
        // batch instead (the mask makes them equal) and cut at MAX_TOKENS
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..TruncationParams::default() }))
            .map_err(|e| e.to_string())
            .map_err(at("tokenizer.json"))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        // read whole rather than mapped: mapping a file is unsafe in candle's API
        let weights = std::fs::read(dir.join("model.safetensors")).map_err(|e| e.to_string());
        let model = weights
            .and_then(|bytes| {
                let vars = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
                    .map_err(|e| e.to_string())?;
                BertModel::load(vars, &config).map_err(|e| e.to_string())
            })
            .map_err(at("model.safetensors"))?;
        Ok(Self { model, tokenizer, pad_id })
    }

    /// One unit vector per text, in order: one forward pass per batch of up to
    /// [`MAX_BATCH_TOKENS`] padded tokens (texts of similar length together).
    pub(super) fn embed(&self, texts: &[String]) -> Result<Embeddings, String> {
        let encodings = texts
            .iter()
            .map(|text| self.tokenizer.encode(text.as_str(), true).map(|e| e.get_ids().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let prompt_tokens = encodings.iter().map(Vec::len).sum::<usize>();
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut vectors = vec![Vec::new(); encodings.len()];
        let mut start = 0;
        while start < order.len() {
            // sorted by length: the batch's longest is its last
            let mut end = start + 1;
            while end < order.len() && (end + 1 - start) * encodings[order[end]].len() <= MAX_BATCH_TOKENS {
                end += 1;
            }
            let batch: Vec<&[u32]> = order[start..end].iter().map(|&i| encodings[i].as_slice()).collect();
            let pooled = self.forward(&batch).map_err(|e| e.to_string())?;
            for (&i, vector) in order[start..end].iter().zip(pooled) {
                vectors[i] = vector;
            }
            start = end;
        }
        Ok(Embeddings { vectors, prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX) })
    }

    /// One forward pass over texts padded to the longest.
    fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let device = Device::Cpu;
        let longest = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for text in batch {
            ids.extend_from_slice(text);
            ids.extend(std::iter::repeat_n(self.pad_id, longest - text.len()));
            mask.extend(std::iter::repeat_n(1u32, text.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - text.len()));
        }
        let shape = (batch.len(), longest);
        let ids = Tensor::from_vec(ids, shape, &device)?;
        let mask = Tensor::from_vec(mask, shape, &device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // mean over the real tokens, then unit length
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}
