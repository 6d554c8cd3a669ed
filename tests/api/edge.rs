//! The HTTP edge: connection cap, header-read and idle timeouts, hyper's limits
//! against castwork's own (JSON) ones, request-id hygiene. Raw sockets, so the
//! tests see exactly what a client sees.

use std::time::Duration;

use castwork::db::testing::TestDatabase;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::helpers::{Backend, TestApp, poll_until, spawn_app, spawn_app_with, test_settings};

/// `host:port` of a test node.
fn socket_address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// A raw response: status, head, body.
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }
}

/// Sends `request` bytes on a fresh connection and reads until the server closes it.
async fn raw_exchange(address: &str, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    let read = timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let head = head.to_owned();
    let body = bytes[(head.len() + 4).min(bytes.len())..].to_vec();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Raw { status, head, body }
}

/// `GET path` with `Connection: close` and `extra` header lines (each ending in CRLF).
async fn get(address: &str, path: &str, extra: &str) -> Raw {
    let request = format!("GET {path} HTTP/1.1\r\nHost: castwork\r\nConnection: close\r\n{extra}\r\n");
    raw_exchange(address, request.as_bytes()).await
}

/// `/health/live` on a fresh connection answers 200 within 1 s.
async fn assert_live_within_a_second(address: &str) {
    let started = Instant::now();
    let answer = timeout(Duration::from_secs(1), get(address, "/health/live", "")).await;
    let Ok(answer) = answer else { panic!("/health/live took more than 1 s ({:?})", started.elapsed()) };
    assert_eq!(answer.status, 200, "{}", answer.head);
}

/// Opens `silent` connections that send nothing and `slow` ones that send half a head.
async fn open_attackers(address: &str, silent: usize, slow: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(silent + slow);
    for i in 0..silent.max(slow) {
        if i < silent {
            streams.push(TcpStream::connect(address).await.unwrap());
        }
        if i < slow {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: castwork\r\nX-Slow: ").await.unwrap();
            streams.push(stream);
        }
    }
    streams
}

/// How many of `streams` the server has not closed.
fn still_open(streams: &[TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    streams
        .iter()
        .filter(|s| matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_with_more_idle_and_slow_connections_than_the_cap() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.max_connections = 50;
        s.server.header_read_timeout_secs = 30;
        s.server.idle_timeout_secs = 30;
    })
    .await;
    let address = socket_address(&app);
    let attackers = open_attackers(&address, 60, 60).await;
    for _ in 0..5 {
        assert_live_within_a_second(&address).await;
    }
    // the oldest of them were closed to make room: at most the cap is left
    let settled = poll_until(Duration::from_secs(10), || async {
        let open = still_open(&attackers);
        (open <= 50).then_some(open)
    })
    .await;
    assert!(settled.is_some(), "{} attacker connections still open, cap 50", still_open(&attackers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_header_connections_are_closed_after_the_header_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.header_read_timeout_secs = 1;
        s.server.idle_timeout_secs = 30;
    })
    .await;
    let address = socket_address(&app);
    let attackers = open_attackers(&address, 20, 20).await;
    assert_live_within_a_second(&address).await;
    let closed =
        poll_until(Duration::from_secs(10), || async { (still_open(&attackers) == 0).then_some(()) }).await;
    assert!(closed.is_some(), "{} of 40 still open after the header timeout", still_open(&attackers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.header_read_timeout_secs = 30;
        s.server.idle_timeout_secs = 1;
    })
    .await;
    // keep-alive: the server closes it only once the idle timeout has passed
    let answer =
        raw_exchange(&socket_address(&app), b"GET /health/live HTTP/1.1\r\nHost: castwork\r\n\r\n").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.write_timeout_secs = 1;
        s.server.idle_timeout_secs = 60;
        s.server.header_read_timeout_secs = 60;
    })
    .await;
    let address: std::net::SocketAddr = socket_address(&app).parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address).await.unwrap();
    // far more answers (about 50 KB each) than the socket buffers between the two ends
    // hold, asked for at once and never read: the node's writes wait for the client
    let request = "GET /api/openapi.json HTTP/1.1\r\nHost: castwork\r\n\r\n".repeat(4000);
    let mut sent = 0;
    while sent < request.len() {
        stream.writable().await.unwrap();
        match stream.try_write(&request.as_bytes()[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    // the node closes it with requests still unread, which resets the connection
    let reset = poll_until(Duration::from_secs(10), || async { stream.take_error().ok().flatten() }).await;
    assert!(reset.is_some(), "a connection that read nothing was still open after the write timeout");
    assert_live_within_a_second(&socket_address(&app)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_and_returns_without_waiting_for_the_grace() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let mut settings = test_settings(&database.dir, &database.url);
    settings.server.shutdown_grace_secs = 30;
    let app = castwork::startup::Application::build(settings).await.unwrap();
    let address = format!("127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: castwork\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let silent = TcpStream::connect(&address).await.unwrap();
    let _ = stop.send(());
    let finished = timeout(Duration::from_secs(15), running).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "run_until did not return before the grace period");
    assert_eq!(idle.read(&mut buf).await.unwrap_or(0), 0);
    assert_eq!(still_open(std::slice::from_ref(&silent)), 0);
    assert!(TcpStream::connect(&address).await.is_err(), "still accepting after shutdown");
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_targets_get_a_json_414() {
    let app = spawn_app().await;
    let address = socket_address(&app);
    for len in [10_000, 60_000] {
        let answer = get(&address, &format!("/health/live?q={}", "a".repeat(len)), "").await;
        assert_eq!(answer.status, 414, "{len}: {}", answer.head);
        assert_eq!(answer.header("content-type").as_deref(), Some("application/json"));
        assert_eq!(answer.json()["error"]["code"], "uri_too_long");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_or_many_headers_get_a_json_431() {
    let app = spawn_app().await;
    let address = socket_address(&app);
    let big = format!("X-Big: {}\r\n", "b".repeat(20_000));
    let many: String = (0..150).map(|i| format!("X-N-{i}: v\r\n")).collect();
    for extra in [big, many] {
        let answer = get(&address, "/health/live", &extra).await;
        assert_eq!(answer.status, 431, "{}", answer.head);
        assert_eq!(answer.header("content-type").as_deref(), Some("application/json"));
        assert_eq!(answer.json()["error"]["code"], "headers_too_large");
    }
}

/// What hyper refuses before castwork sees a request: documented in OPERATIONS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_refuses_get_its_bare_status() {
    let app = spawn_app().await;
    let address = socket_address(&app);
    for request in [
        &b"GET /a\0b HTTP/1.1\r\nHost: castwork\r\n\r\n"[..],
        b"GET /a\xffb HTTP/1.1\r\nHost: castwork\r\n\r\n",
    ] {
        assert_eq!(raw_exchange(&address, request).await.status, 400);
    }
    let over_hyper = get(&address, &format!("/?q={}", "a".repeat(70_000)), "").await;
    assert_eq!(over_hyper.status, 414);
    // and the node is unharmed
    assert_live_within_a_second(&address).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_or_invisible_request_ids_are_replaced() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.max_header_bytes = 128 * 1024).await;
    let address = socket_address(&app);
    for id in ["r".repeat(60_000), "r".repeat(129), "has space".to_owned(), "caf\u{e9}".to_owned()] {
        let answer = get(&address, "/health/live", &format!("X-Request-Id: {id}\r\n")).await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        let echoed = answer.header("x-request-id").unwrap();
        assert_ne!(echoed, id);
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "a generated id replaces it: {echoed}");
    }
    let kept = "r".repeat(128);
    let answer = get(&address, "/health/live", &format!("X-Request-Id: {kept}\r\n")).await;
    assert_eq!(answer.header("x-request-id"), Some(kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_request_id_is_refused_by_the_header_limit() {
    let app = spawn_app().await;
    let id = "r".repeat(60_000);
    let answer = get(&socket_address(&app), "/health/live", &format!("X-Request-Id: {id}\r\n")).await;
    assert_eq!(answer.status, 431, "{}", answer.head);
    assert!(answer.header("x-request-id").is_none_or(|echoed| echoed != id));
}
