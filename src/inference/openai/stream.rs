//! A streamed answer's body (server-sent `chat.completion.chunk`s) as a
//! [`DeltaStream`]: text deltas, then one `Done`, or an error item. Never a
//! silently short answer:
//!
//! - an error event (`event: error`, or data with an `error` object) is an `Err`
//!   item, classified by its code or type (`Retryable` when it says nothing), and
//!   ends the stream whatever follows;
//! - `[DONE]`, or the end of the body after a `finish_reason`, is `Done`;
//! - the end of the body before either is [`BackendError::Truncated`], and so is a
//!   connection that breaks off (a timeout of it is [`BackendError::Timeout`]).
//!
//! Usage comes from the usage chunk (`stream_options.include_usage`) or a chunk
//! that carries `usage`; a server that sends none gets an estimate: no prompt
//! tokens and one completion token per text delta (servers stream about one token
//! per chunk).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::classify::{ServerError, excerpt};
use super::redact;
use super::sse::{SseEvent, SseParser};
use super::wire::{Chunk, WireUsage, finish_reason};
use crate::inference::backend::{BackendError, Delta, DeltaStream, FinishReason, Usage};

/// How long, and how many bytes, the end of a body is awaited after `[DONE]`.
const DRAIN_WAIT: Duration = Duration::from_millis(50);
const DRAIN_BYTES: usize = 64 << 10;

/// The deltas of `body`, the bytes of a `text/event-stream` answer whose breaks
/// are already classified. `api_key` is redacted from error messages.
pub fn deltas<S>(body: S, max_event_bytes: usize, api_key: Option<Arc<str>>) -> DeltaStream
where
    S: Stream<Item = Result<Bytes, BackendError>> + Send + Unpin + 'static,
{
    let reader = Reader {
        body,
        parser: SseParser::new(max_event_bytes),
        out: VecDeque::new(),
        finish: None,
        usage: None,
        pieces: 0,
        ended: false,
        body_ended: false,
    };
    Box::pin(futures::stream::unfold(reader, move |mut reader| {
        let api_key = api_key.clone();
        async move {
            let item = reader.next().await?;
            Some((item.map_err(|e| redact(e, api_key.as_deref())), reader))
        }
    }))
}

struct Reader<S> {
    body: S,
    parser: SseParser,
    /// Items read and not yet taken.
    out: VecDeque<Result<Delta, BackendError>>,
    finish: Option<FinishReason>,
    usage: Option<WireUsage>,
    /// Text deltas so far (the usage estimate).
    pieces: u32,
    /// The last item (`Done` or an error) is in `out`.
    ended: bool,
    /// The body returned its end (it is not polled again).
    body_ended: bool,
}

impl<S> Reader<S>
where
    S: Stream<Item = Result<Bytes, BackendError>> + Unpin,
{
    async fn next(&mut self) -> Option<Result<Delta, BackendError>> {
        loop {
            if let Some(item) = self.out.pop_front() {
                if self.ended && self.out.is_empty() && item.is_ok() && !self.body_ended {
                    self.drain_end().await;
                }
                return Some(item);
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => match self.parser.push(&bytes) {
                    Ok(()) => self.read_events(false),
                    Err(too_large) => self.fail(BackendError::Retryable(too_large.to_string())),
                },
                Some(Err(broken)) => self.fail(broken),
                None => {
                    self.body_ended = true;
                    match self.parser.finish() {
                        Ok(()) => self.read_events(true),
                        Err(too_large) => self.fail(BackendError::Retryable(too_large.to_string())),
                    }
                    if !self.ended {
                        self.end_of_body();
                    }
                }
            }
        }
    }

    fn read_events(&mut self, at_end: bool) {
        while !self.ended
            && let Some(event) = self.parser.next_event()
        {
            self.read_event(event, at_end);
        }
    }

    fn read_event(&mut self, event: SseEvent, at_end: bool) {
        if event.event.as_deref() == Some("error") {
            let error = ServerError::parse(event.data.as_bytes()).unwrap_or_else(|| ServerError {
                message: Some(excerpt(event.data.as_bytes())),
                ..Default::default()
            });
            return self.fail(error.classify_in_stream());
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            return self.done();
        }
        let parsed: Chunk = match serde_json::from_str(data) {
            Ok(parsed) => parsed,
            // the body ended inside the last event's JSON: the connection was cut
            Err(_) if at_end => {
                return self.fail(BackendError::Truncated("the stream ended inside an event".to_owned()));
            }
            Err(error) => {
                return self.fail(BackendError::Retryable(format!(
                    "malformed stream event ({error}): {}",
                    excerpt(data.as_bytes())
                )));
            }
        };
        if parsed.error.is_some() || parsed.object.as_deref() == Some("error") {
            let error = ServerError::parse(data.as_bytes()).unwrap_or_default();
            return self.fail(error.classify_in_stream());
        }
        for choice in parsed.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.and_then(|d| d.content).filter(|t| !t.is_empty()) {
                self.pieces = self.pieces.saturating_add(1);
                self.out.push_back(Ok(Delta::Text(text)));
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        if parsed.usage.is_some() {
            self.usage = parsed.usage;
        }
    }

    fn end_of_body(&mut self) {
        if self.finish.is_some() {
            self.done();
        } else {
            self.fail(BackendError::Truncated(
                "the stream ended before its finish_reason or [DONE]".to_owned(),
            ));
        }
    }

    /// `[DONE]`, or a finish reason and the end of the body. A `[DONE]` without a
    /// finish reason is the server's word that the answer is whole: `Stop`.
    fn done(&mut self) {
        let usage =
            self.usage.map(Usage::from).unwrap_or(Usage { prompt_tokens: 0, completion_tokens: self.pieces });
        let finish = self.finish.unwrap_or(FinishReason::Stop);
        self.out.push_back(Ok(Delta::Done { finish, usage }));
        self.ended = true;
    }

    fn fail(&mut self, error: BackendError) {
        self.out.push_back(Err(error));
        self.ended = true;
    }

    /// After `[DONE]`, reads on to the end of the body (servers end it right after),
    /// so that the connection goes back to the pool instead of being closed when
    /// the caller drops the stream at `Done`. Bounded in time and bytes: a server
    /// that keeps the body open only loses its connection.
    async fn drain_end(&mut self) {
        let body = &mut self.body;
        let drain = async move {
            let mut left = DRAIN_BYTES;
            while let Some(Ok(bytes)) = body.next().await {
                left = match left.checked_sub(bytes.len()) {
                    Some(left) => left,
                    None => return,
                };
            }
        };
        let _ = tokio::time::timeout(DRAIN_WAIT, drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&str]) -> impl Stream<Item = Result<Bytes, BackendError>> + Send + Unpin + 'static {
        let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::copy_from_slice(p.as_bytes()))).collect();
        futures::stream::iter(parts)
    }

    async fn read(parts: &[&str]) -> Vec<Result<Delta, BackendError>> {
        deltas(body(parts), 1 << 20, Some("sk-secret".into())).collect().await
    }

    fn text(piece: &str) -> Result<Delta, BackendError> {
        Ok(Delta::Text(piece.to_owned()))
    }

    fn chunk(content: &str) -> String {
        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{content:?}}}}}]}}\n\n")
    }

    const STOP: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n";

    #[tokio::test]
    async fn a_whole_stream_gives_its_text_then_done_with_the_usage_sent() {
        let role =
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        let items = read(&[role, &chunk("Par"), &chunk("is"), STOP, USAGE, "data: [DONE]\n\n"]).await;
        let usage = Usage { prompt_tokens: 9, completion_tokens: 2 };
        assert_eq!(
            items,
            vec![text("Par"), text("is"), Ok(Delta::Done { finish: FinishReason::Stop, usage })]
        );
    }

    #[tokio::test]
    async fn without_usage_the_deltas_are_counted() {
        let length = "data: {\"choices\":[{\"delta\":{\"content\":\"b\"},\"finish_reason\":\"length\"}]}\n\n";
        let items = read(&[&chunk("a"), length, "data: [DONE]\n\n"]).await;
        let usage = Usage { prompt_tokens: 0, completion_tokens: 2 };
        assert_eq!(
            items,
            vec![text("a"), text("b"), Ok(Delta::Done { finish: FinishReason::Length, usage })]
        );
    }

    #[tokio::test]
    async fn a_finish_then_the_end_of_the_body_is_whole_but_no_finish_is_truncated() {
        let items = read(&[&chunk("a"), STOP]).await;
        assert!(
            matches!(items.last(), Some(Ok(Delta::Done { finish: FinishReason::Stop, .. }))),
            "{items:?}"
        );
        let items = read(&[&chunk("a"), &chunk("b")]).await;
        assert_eq!(items.len(), 3);
        assert!(matches!(items[2], Err(BackendError::Truncated(_))), "{items:?}");
        // cut inside the JSON of an event
        let items = read(&[&chunk("a"), "data: {\"choices\":[{\"delta\":{\"con"]).await;
        assert!(matches!(items[1], Err(BackendError::Truncated(_))), "{items:?}");
        assert!(matches!(read(&[]).await[..], [Err(BackendError::Truncated(_))]));
    }

    #[tokio::test]
    async fn error_events_end_the_stream_with_their_class() {
        let error = "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        let items = read(&[&chunk("a"), error, &chunk("b"), STOP, "data: [DONE]\n\n"]).await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(
            matches!(&items[1], Err(BackendError::Retryable(m)) if m.contains("overloaded")),
            "{items:?}"
        );

        let named = "event: error\ndata: {\"error\":{\"message\":\"slow down\",\"code\":429}}\n\n";
        let items = read(&[&chunk("a"), named]).await;
        assert!(matches!(&items[1], Err(BackendError::RateLimited { .. })), "{items:?}");

        let bare = "event: error\ndata: it broke, key sk-secret\n\n";
        let items = read(&[bare]).await;
        assert!(
            matches!(&items[0], Err(BackendError::Retryable(m)) if m.contains("it broke") && !m.contains("sk-secret")),
            "{items:?}"
        );

        let vllm = "data: {\"object\":\"error\",\"message\":\"too long\",\"type\":\"BadRequestError\",\"code\":400}\n\n";
        assert!(matches!(&read(&[vllm]).await[0], Err(BackendError::Fatal(_))));
    }

    #[tokio::test]
    async fn a_broken_connection_and_garbage_are_errors() {
        let broken = futures::stream::iter(vec![
            Ok(Bytes::from(chunk("a"))),
            Err(BackendError::Truncated("connection reset".into())),
        ]);
        let items: Vec<_> = deltas(broken, 1 << 20, None).collect().await;
        assert_eq!(items, vec![text("a"), Err(BackendError::Truncated("connection reset".into()))]);

        let items = read(&["data: <html>\n\n", STOP]).await;
        assert!(matches!(&items[..], [Err(BackendError::Retryable(m))] if m.contains("<html>")), "{items:?}");

        let huge = format!("data: {}\n\n", "x".repeat(2 << 20));
        assert!(matches!(&read(&[&huge]).await[..], [Err(BackendError::Retryable(_))]));
    }

    #[tokio::test]
    async fn other_choices_are_ignored() {
        let other = "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"no\"},\"finish_reason\":\"length\"}]}\n\n";
        let items = read(&[other, &chunk("yes"), STOP]).await;
        assert_eq!(items[0], text("yes"));
        assert!(matches!(items[1], Ok(Delta::Done { finish: FinishReason::Stop, .. })));
    }
}
