//! The JSON of OpenAI's API, as much of it as castwork sends and reads. Unknown
//! fields are ignored and missing ones take defaults, so llama.cpp's server,
//! vLLM, Ollama and OpenAI all read the same.

use serde::{Deserialize, Serialize};

use crate::inference::backend::{ChatMessage, ChatRequest, FinishReason, Usage};

/// `POST /chat/completions`.
#[derive(Debug, Serialize)]
pub struct ChatBody<'a> {
    pub model: &'a str,
    pub messages: &'a [ChatMessage],
    pub temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "no_stop")]
    pub stop: &'a [String],
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

fn no_stop(stop: &&[String]) -> bool {
    stop.is_empty()
}

#[derive(Debug, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

impl<'a> ChatBody<'a> {
    pub fn new(request: &'a ChatRequest, stream: bool) -> Self {
        let sampling = &request.sampling;
        Self {
            model: &request.model,
            messages: &request.messages,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            seed: sampling.seed,
            max_tokens: sampling.max_tokens,
            stop: &sampling.stop,
            stream,
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
        }
    }
}

/// `POST /embeddings`.
#[derive(Debug, Serialize)]
pub struct EmbeddingsBody<'a> {
    pub model: &'a str,
    pub input: &'a [String],
}

/// `usage`, as servers send it (any field may be missing).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    #[serde(default)]
    pub completion_tokens: Option<u32>,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens.unwrap_or(0),
            completion_tokens: usage.completion_tokens.unwrap_or(0),
        }
    }
}

/// `finish_reason`: "length" is [`FinishReason::Length`]; any other reason
/// ("stop", "eos", "content_filter", "tool_calls", ...) ends the answer as `Stop`.
pub fn finish_reason(reason: &str) -> FinishReason {
    if reason == "length" { FinishReason::Length } else { FinishReason::Stop }
}

/// A whole completion (`stream: false`).
#[derive(Debug, Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub choices: Vec<CompletionChoice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionChoice {
    #[serde(default)]
    pub message: Option<CompletionMessage>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionMessage {
    #[serde(default)]
    pub content: Option<String>,
}

/// One streamed event's data: a chunk (`chat.completion.chunk`), or an error.
#[derive(Debug, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
    /// OpenAI's error object (its fields are read again when present).
    #[serde(default)]
    pub error: Option<serde::de::IgnoredAny>,
    /// vLLM's older errors: `{"object": "error", "message": ...}`.
    #[serde(default)]
    pub object: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Option<ChunkDelta>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChunkDelta {
    #[serde(default)]
    pub content: Option<String>,
}

/// `/embeddings`' answer.
#[derive(Debug, Deserialize)]
pub struct EmbeddingList {
    pub data: Vec<EmbeddingItem>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingItem {
    pub embedding: Vec<f32>,
    /// Missing: the item's position in `data`.
    #[serde(default)]
    pub index: Option<usize>,
}

/// `/models`' answer.
#[derive(Debug, Deserialize)]
pub struct ModelList {
    pub data: Vec<ModelItem>,
}

#[derive(Debug, Deserialize)]
pub struct ModelItem {
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::backend::{Role, Sampling};

    #[test]
    fn a_chat_body_sends_only_what_is_set() {
        let mut request = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, "hi")],
            sampling: Sampling::greedy(16),
        };
        let body = serde_json::to_value(ChatBody::new(&request, false)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.0, "max_tokens": 16, "stream": false})
        );
        request.sampling =
            Sampling { top_p: Some(0.5), seed: Some(7), stop: vec!["\n".into()], ..request.sampling };
        let body = serde_json::to_value(ChatBody::new(&request, true)).unwrap();
        assert_eq!(body["top_p"], 0.5);
        assert_eq!(body["seed"], 7);
        assert_eq!(body["stop"], serde_json::json!(["\n"]));
        assert_eq!(body["stream_options"], serde_json::json!({"include_usage": true}));
    }

    #[test]
    fn chunks_read_with_fields_missing_or_unknown() {
        let role_only: Chunk = serde_json::from_str(
            r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant"},"logprobs":null}]}"#,
        )
        .unwrap();
        assert!(role_only.choices[0].delta.as_ref().unwrap().content.is_none());
        let usage_only: Chunk =
            serde_json::from_str(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"x":1}}"#)
                .unwrap();
        assert_eq!(Usage::from(usage_only.usage.unwrap()).total(), 5);
        let finish: Chunk =
            serde_json::from_str(r#"{"choices":[{"delta":{},"finish_reason":"length"}],"timings":{}}"#)
                .unwrap();
        assert_eq!(finish.choices[0].finish_reason.as_deref().map(finish_reason), Some(FinishReason::Length));
        assert_eq!(finish_reason("eos"), FinishReason::Stop);
        assert_eq!(finish_reason("content_filter"), FinishReason::Stop);
    }
}
