//! The backend against [`FakeOpenAi`], over real HTTP on 127.0.0.1.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;

use super::*;
use crate::config::Secret;
use crate::inference::backend::{Role, Sampling};
use crate::inference::testing::{self, Behaviour, FakeOpenAi};

const TEXT: &str = "Paris is the capital of France.";

fn settings(base_url: &str) -> BackendSettings {
    BackendSettings {
        name: "fake".to_owned(),
        base_url: base_url.to_owned(),
        api_key: Secret::default(),
        models: BTreeMap::from([
            ("chat".to_owned(), testing::CHAT_MODEL.to_owned()),
            ("embed".to_owned(), testing::EMBEDDING_MODEL.to_owned()),
        ]),
        embedding_models: vec!["embed".to_owned()],
        workers: 4,
        queue_capacity: 16,
        connect_timeout_ms: 2000,
        breaker: None,
    }
}

fn backend(fake: &FakeOpenAi) -> OpenAiBackend {
    OpenAiBackend::new(&settings(&fake.base_url())).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        model: testing::CHAT_MODEL.to_owned(),
        messages: vec![ChatMessage::new(Role::User, "What is the capital of France?")],
        sampling: Sampling::greedy(32),
    }
}

use crate::inference::backend::ChatMessage;

async fn stream_items(backend: &OpenAiBackend) -> Vec<Result<Delta, BackendError>> {
    backend.chat_stream(request()).await.unwrap().collect().await
}

fn expected_usage() -> Usage {
    Usage { prompt_tokens: testing::PROMPT_TOKENS, completion_tokens: testing::STREAM_PIECES as u32 }
}

#[tokio::test]
async fn a_stream_gives_the_text_in_deltas_then_done_with_the_usage() {
    let fake = FakeOpenAi::start(Behaviour::ok(TEXT)).await;
    let items = stream_items(&backend(&fake)).await;
    let (done, texts) = items.split_last().unwrap();
    let text: String = texts
        .iter()
        .map(|d| match d {
            Ok(Delta::Text(piece)) => piece.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!((text.as_str(), texts.len()), (TEXT, testing::STREAM_PIECES));
    assert_eq!(done, &Ok(Delta::Done { finish: FinishReason::Stop, usage: expected_usage() }));
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn a_whole_answer_and_its_usage() {
    let fake = FakeOpenAi::start(Behaviour::ok(TEXT)).await;
    let answer = backend(&fake).chat(request()).await.unwrap();
    assert_eq!(
        answer,
        ChatResponse { text: TEXT.to_owned(), finish: FinishReason::Stop, usage: expected_usage() }
    );
}

#[tokio::test]
async fn connections_are_kept_alive_between_requests() {
    let fake = FakeOpenAi::start(Behaviour::ok(TEXT)).await;
    let backend = backend(&fake);
    for _ in 0..20 {
        // read up to `Done` and dropped there, as the pool does
        let stream = backend.chat_stream(request()).await.unwrap();
        assert_eq!(crate::inference::backend::collect(stream).await.unwrap().text, TEXT);
        backend.chat(request()).await.unwrap();
    }
    assert_eq!(fake.requests(), 40);
    assert_eq!(fake.connections(), 1);
}

#[tokio::test]
async fn a_rate_limit_says_how_long_to_wait() {
    let fake = FakeOpenAi::start(Behaviour::RateLimited { retry_after_secs: 3 }).await;
    let backend = backend(&fake);
    for error in [
        backend.chat_stream(request()).await.err().unwrap(),
        backend.chat(request()).await.unwrap_err(),
        backend.embed(testing::EMBEDDING_MODEL, vec!["x".into()]).await.unwrap_err(),
    ] {
        match error {
            BackendError::RateLimited { retry_after, message } => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
                assert!(message.contains("HTTP 429") && message.contains("Rate limit reached"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_server_error_is_retryable_on_every_call() {
    let fake = FakeOpenAi::start(Behaviour::ServerError).await;
    let backend = backend(&fake);
    let errors = [
        backend.chat_stream(request()).await.err().unwrap(),
        backend.chat(request()).await.unwrap_err(),
        backend.embed(testing::EMBEDDING_MODEL, vec!["x".into()]).await.unwrap_err(),
        backend.models().await.unwrap_err(),
    ];
    for error in errors {
        assert!(matches!(&error, BackendError::Retryable(m) if m.contains("HTTP 500")), "{error:?}");
    }
}

#[tokio::test]
async fn a_refused_request_is_fatal_with_the_servers_message() {
    let fake = FakeOpenAi::start(Behaviour::Status(404)).await;
    let backend = backend(&fake);
    for status in [400, 401, 403, 404, 422] {
        fake.set(Behaviour::Status(status));
        let error = backend.chat_stream(request()).await.err().unwrap();
        let expected = format!("HTTP {status}: invalid_request_error: refused with {status}");
        assert_eq!(error, BackendError::Fatal(expected), "{status}");
    }
}

#[tokio::test]
async fn an_error_mid_stream_is_an_error_item_after_the_first_deltas() {
    let fake = FakeOpenAi::start(Behaviour::ErrorMidStream).await;
    let items = stream_items(&backend(&fake)).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items[..2].iter().all(|d| matches!(d, Ok(Delta::Text(_)))), "{items:?}");
    assert!(matches!(&items[2], Err(BackendError::Retryable(m)) if m.contains("mid-answer")), "{items:?}");
    // whole, it is a 500
    assert!(matches!(backend(&fake).chat(request()).await, Err(BackendError::Retryable(_))));
}

#[tokio::test]
async fn a_cut_stream_is_truncated() {
    let fake = FakeOpenAi::start(Behaviour::CutStream).await;
    let backend = backend(&fake);
    let items = stream_items(&backend).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items[..2].iter().all(|d| matches!(d, Ok(Delta::Text(_)))), "{items:?}");
    assert!(matches!(&items[2], Err(BackendError::Truncated(_))), "{items:?}");
    // a whole answer broken off halfway
    assert!(matches!(backend.chat(request()).await, Err(BackendError::Truncated(_))));
    // the backend still works on the next connection
    fake.set(Behaviour::ok(TEXT));
    assert_eq!(backend.chat(request()).await.unwrap().text, TEXT);
}

#[tokio::test]
async fn embeddings_come_back_in_the_order_of_the_texts() {
    let fake = FakeOpenAi::start(Behaviour::ok(TEXT)).await;
    let texts: Vec<String> = ["first", "second text", "third"].map(String::from).to_vec();
    let embeddings = backend(&fake).embed(testing::EMBEDDING_MODEL, texts.clone()).await.unwrap();
    let expected: Vec<_> = texts.iter().map(|t| testing::fake_embedding(t)).collect();
    assert_eq!(embeddings.vectors, expected);
    assert_eq!(embeddings.prompt_tokens, 4);
    assert_eq!(embeddings.vectors[0].len(), testing::EMBEDDING_DIMENSION);
    let norm: f32 = embeddings.vectors[1].iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    assert_ne!(embeddings.vectors[0], embeddings.vectors[2]);
    // no texts, no request
    let none = backend(&fake).embed(testing::EMBEDDING_MODEL, Vec::new()).await.unwrap();
    assert!(none.vectors.is_empty());
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn models_are_listed_with_their_kind() {
    let fake = FakeOpenAi::start(Behaviour::ok(TEXT)).await;
    let models = backend(&fake).models().await.unwrap();
    assert_eq!(
        models,
        vec![
            ModelInfo { id: testing::CHAT_MODEL.to_owned(), kind: ModelKind::Chat },
            ModelInfo { id: testing::EMBEDDING_MODEL.to_owned(), kind: ModelKind::Embedding },
        ]
    );
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let backend = OpenAiBackend::new(&settings(&format!("http://{addr}/v1"))).unwrap();
    let error = backend.chat_stream(request()).await.err().unwrap();
    assert!(matches!(&error, BackendError::Retryable(m) if m.contains("connect")), "{error:?}");
    assert!(matches!(backend.models().await, Err(BackendError::Retryable(_))));
}

#[tokio::test]
async fn the_api_key_is_sent_as_bearer_and_never_shown() {
    let fake = FakeOpenAi::with_api_key(Behaviour::ok(TEXT), "sk-right-key-0123456789").await;
    let mut with_key = settings(&fake.base_url());
    with_key.api_key = Secret::new("sk-right-key-0123456789");
    assert_eq!(OpenAiBackend::new(&with_key).unwrap().chat(request()).await.unwrap().text, TEXT);

    with_key.api_key = Secret::new("sk-wrong-key-9876543210");
    let error = OpenAiBackend::new(&with_key).unwrap().chat(request()).await.unwrap_err();
    match &error {
        BackendError::Fatal(message) => {
            assert!(
                message.contains("HTTP 401") && message.contains("Incorrect API key provided"),
                "{message}"
            );
            assert!(message.contains("[redacted]") && !message.contains("sk-wrong"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // no key configured: none sent
    let error = backend(&fake).models().await.unwrap_err();
    assert!(matches!(error, BackendError::Fatal(_)), "{error:?}");
}

#[tokio::test]
async fn a_bad_base_url_is_refused_at_construction() {
    for url in ["ftp://example.com/v1", "not a url", "localhost:8000/v1", "http://"] {
        assert!(matches!(OpenAiBackend::new(&settings(url)), Err(OpenAiError::BaseUrl { .. })), "{url}");
    }
    let trailing = OpenAiBackend::new(&settings("http://127.0.0.1:1/v1/")).unwrap();
    assert_eq!(trailing.chat_url.as_str(), "http://127.0.0.1:1/v1/chat/completions");
}

/// The backend sets no first-token deadline (the pool does): a slow first token
/// arrives when the server sends it.
#[tokio::test(start_paused = true)]
async fn a_slow_first_token_arrives_after_its_delay() {
    let fake = FakeOpenAi::start(Behaviour::SlowFirstToken(Duration::from_secs(5))).await;
    let mut patient = settings(&fake.base_url());
    patient.connect_timeout_ms = 3_600_000;
    let backend = OpenAiBackend::new(&patient).unwrap();
    let start = tokio::time::Instant::now();
    let mut stream = backend.chat_stream(request()).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let waited = start.elapsed();
    assert!(matches!(first, Delta::Text(_)), "{first:?}");
    // the pool's idle timer (a minute) is the next timer after the server's delay
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(60), "{waited:?}");
    let rest: Vec<_> = stream.collect().await;
    assert!(matches!(rest.last(), Some(Ok(Delta::Done { .. }))), "{rest:?}");
}

#[tokio::test(start_paused = true)]
async fn a_hung_server_waits_for_the_callers_deadline_and_shutdown_ends_it() {
    let fake = FakeOpenAi::start(Behaviour::Hang).await;
    let backend = backend(&fake);
    let call = tokio::time::timeout(Duration::from_secs(1), backend.chat_stream(request())).await;
    assert!(call.is_err(), "answered: {:?}", call.map(|r| r.map(|_| ())));
    fake.shutdown().await;
}
