//! One client connection's state, shared by its socket, its requests and its
//! watchdog: which phase it is in (reading a request head, serving, idle between
//! requests) and since when, so the watchdog can close it at the right deadline.
//!
//! hyper 1's own `header_read_timeout` runs from the end of one response to the
//! end of the next request head, so it would also bound the idle time of a
//! keep-alive connection; castwork keeps the two apart instead: a head must
//! arrive within `server.header_read_timeout_secs` of the connection opening or
//! of the first byte of the next request, and a connection with no request in
//! flight and no byte of a next one is closed after `server.idle_timeout_secs`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opened, or the first bytes of a next request arrived: a head is being read.
    Head,
    /// At least one request is being served (its response not yet fully handed to the socket).
    Busy,
    /// Between requests, with no byte of the next one yet.
    Idle,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Head,
            1 => Self::Busy,
            _ => Self::Idle,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            Self::Head => 0,
            Self::Busy => 1,
            Self::Idle => 2,
        }
    }
}

/// Why castwork closed a connection before the client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No whole request head within `server.header_read_timeout_secs`.
    HeaderTimeout,
    /// No request within `server.idle_timeout_secs` after the last response.
    IdleTimeout,
    /// Closed at the connection cap to admit a newer connection.
    Evicted,
    /// The client accepted no byte of what castwork had to send for
    /// `server.write_timeout_secs`: it is not reading.
    WriteTimeout,
}

impl CloseReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Evicted => "evicted",
            Self::WriteTimeout => "write_timeout",
        }
    }
}

/// The connection deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From opening (or the first byte of a next request) to a whole head.
    pub header_read: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle: Duration,
    /// How long a write to the socket may make no progress (the client reads nothing) before
    /// the connection is closed. A connection serving a request is never evicted, so without
    /// it a client that stops reading a response could hold its connection for ever; a
    /// stream that the client keeps reading, however long, is not affected.
    pub write_stall: Duration,
}

/// State shared by a connection's socket wrapper, its in-flight requests and its watchdog.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    born: Instant,
    phase: AtomicU8,
    /// Milliseconds after `born` at which the current phase began.
    since_ms: AtomicU64,
    in_flight: AtomicU32,
    /// Milliseconds after `born` since which a write has been waiting for the client to
    /// read ([`NOT_STALLED`] while writes go through).
    stalled_since_ms: AtomicU64,
    evict: AtomicBool,
    /// Wakes the watchdog: a phase change or an eviction.
    wake: Notify,
    /// Wakes the accept loop when the connection becomes idle (so evictable).
    on_idle: Arc<Notify>,
}

impl ConnState {
    /// A connection just accepted: it starts reading its first head.
    pub fn new(id: u64, on_idle: Arc<Notify>) -> Self {
        Self {
            id,
            born: Instant::now(),
            phase: AtomicU8::new(Phase::Head.as_u8()),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            stalled_since_ms: AtomicU64::new(NOT_STALLED),
            evict: AtomicBool::new(false),
            wake: Notify::new(),
            on_idle,
        }
    }

    /// The connection's number, in accept order.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    /// Whether an eviction was asked and not yet carried out or declined.
    pub fn is_evicting(&self) -> bool {
        self.evict.load(Ordering::SeqCst)
    }

    /// Asks the connection to close unless it is serving a request by then.
    pub fn request_eviction(&self) {
        self.evict.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn enter(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::SeqCst);
        self.phase.store(phase.as_u8(), Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Bytes arrived: an idle connection starts reading its next head.
    fn on_bytes(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Head);
        }
    }

    /// A write could not go through (the socket's buffer is full): the stall timer starts,
    /// unless it runs already.
    fn on_write_blocked(&self) {
        let now = self.now_ms();
        if self
            .stalled_since_ms
            .compare_exchange(NOT_STALLED, now, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.wake.notify_one();
        }
    }

    /// Bytes went out: the client is reading.
    fn on_write_progress(&self) {
        self.stalled_since_ms.store(NOT_STALLED, Ordering::SeqCst);
    }

    /// Since when a write has been waiting for the client, if one is.
    fn stalled_since(&self) -> Option<Instant> {
        let ms = self.stalled_since_ms.load(Ordering::SeqCst);
        (ms != NOT_STALLED).then(|| self.born + Duration::from_millis(ms))
    }

    fn snapshot(&self) -> (Phase, Instant) {
        let phase = self.phase();
        let since = self.born + Duration::from_millis(self.since_ms.load(Ordering::SeqCst));
        (phase, since)
    }
}

/// `stalled_since_ms` while no write is waiting.
const NOT_STALLED: u64 = u64::MAX;

/// Completes when the connection must be closed, and says why. Polled next to
/// the connection for as long as it lives.
pub async fn watchdog(conn: &ConnState, timeouts: Timeouts) -> CloseReason {
    loop {
        let (phase, since) = conn.snapshot();
        if conn.evict.load(Ordering::SeqCst) {
            if phase != Phase::Busy {
                return CloseReason::Evicted;
            }
            // a request arrived first: it is served; the accept loop picks another
            conn.evict.store(false, Ordering::SeqCst);
        }
        let deadline = match phase {
            Phase::Head => Some((since + timeouts.header_read, CloseReason::HeaderTimeout)),
            Phase::Idle => Some((since + timeouts.idle, CloseReason::IdleTimeout)),
            // a request in flight is bounded by server.request_timeout_secs
            Phase::Busy => None,
        };
        // in any phase (hyper may still be flushing a response while idle), a write that has
        // waited for the client too long ends the connection
        let stall = conn.stalled_since().map(|at| (at + timeouts.write_stall, CloseReason::WriteTimeout));
        let deadline = match (deadline, stall) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        match deadline {
            Some((at, reason)) if at <= Instant::now() => return reason,
            Some((at, _)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = conn.wake.notified() => {}
                }
            }
            None => conn.wake.notified().await,
        }
    }
}

/// Held while a request is served, from the service call until hyper drops
/// the response body; the last one out marks the connection idle.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    /// A request head was parsed and handed to the service.
    pub fn begin(conn: Arc<ConnState>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        if conn.phase() != Phase::Busy {
            conn.enter(Phase::Busy);
        }
        Self(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.enter(Phase::Idle);
            self.0.on_idle.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in flight until hyper drops it.
pub struct GuardedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl GuardedBody {
    /// Wraps `inner`; `in_flight` ends when this body is dropped.
    pub fn new(inner: axum::body::Body, in_flight: InFlight) -> Self {
        Self { inner, _in_flight: in_flight }
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, watched: the first bytes read while idle start the head timer.
pub struct Watched<T> {
    inner: T,
    conn: Arc<ConnState>,
}

impl<T> Watched<T> {
    /// Wraps a socket.
    pub fn new(inner: T, conn: Arc<ConnState>) -> Self {
        Self { inner, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.on_bytes();
        }
        polled
    }
}

impl<T> Watched<T> {
    /// Tells the connection whether a write went through or waits for the client.
    fn track<R>(&self, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match &polled {
            Poll::Pending => self.conn.on_write_blocked(),
            Poll::Ready(_) => self.conn.on_write_progress(),
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.track(polled)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.track(polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(2),
        idle: Duration::from_secs(10),
        write_stall: Duration::from_secs(5),
    };

    fn conn() -> Arc<ConnState> {
        Arc::new(ConnState::new(1, Arc::new(Notify::new())))
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_completes_times_out() {
        let c = conn();
        let started = Instant::now();
        assert_eq!(watchdog(&c, T).await, CloseReason::HeaderTimeout);
        assert_eq!(started.elapsed(), T.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_cut_and_idle_follows_it() {
        let c = conn();
        let request = InFlight::begin(c.clone());
        let dog = tokio::spawn({
            let c = c.clone();
            async move { watchdog(&c, T).await }
        });
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!dog.is_finished());
        let done = Instant::now();
        drop(request);
        assert_eq!(dog.await.ok(), Some(CloseReason::IdleTimeout));
        assert_eq!(done.elapsed(), T.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_while_idle_start_the_head_timer() {
        let c = conn();
        drop(InFlight::begin(c.clone()));
        assert_eq!(c.phase(), Phase::Idle);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (mut client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(server, c.clone());
        client.write_all(b"GE").await.ok();
        let mut buf = [0u8; 8];
        let _ = tokio::io::AsyncReadExt::read(&mut watched, &mut buf).await;
        assert_eq!(c.phase(), Phase::Head);
        let at = Instant::now();
        assert_eq!(watchdog(&c, T).await, CloseReason::HeaderTimeout);
        assert_eq!(at.elapsed(), T.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_closes_an_idle_connection_but_not_a_busy_one() {
        let busy = conn();
        let request = InFlight::begin(busy.clone());
        busy.request_eviction();
        let dog = tokio::spawn({
            let c = busy.clone();
            async move { watchdog(&c, T).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!dog.is_finished());
        assert!(!busy.is_evicting(), "a busy connection declines the eviction");
        drop(request);
        busy.request_eviction();
        assert_eq!(dog.await.ok(), Some(CloseReason::Evicted));
    }

    /// Writes `total` bytes through `watched` in the background.
    fn write_in_background(mut watched: Watched<tokio::io::DuplexStream>, total: usize) {
        tokio::spawn(async move {
            let _ = watched.write_all(&vec![b'x'; total]).await;
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed_after_the_write_stall() {
        let c = conn();
        let _request = InFlight::begin(c.clone());
        let (_client, server) = tokio::io::duplex(1024);
        write_in_background(Watched::new(server, c.clone()), 64 * 1024);
        tokio::task::yield_now().await;
        let started = Instant::now();
        let closed = tokio::time::timeout(T.write_stall * 10, watchdog(&c, T)).await;
        assert_eq!(closed.ok(), Some(CloseReason::WriteTimeout));
        assert!(started.elapsed() <= T.write_stall, "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_reading_a_long_response_is_not_cut() {
        let c = conn();
        let request = InFlight::begin(c.clone());
        let (mut client, server) = tokio::io::duplex(1024);
        write_in_background(Watched::new(server, c.clone()), 64 * 1024);
        let dog = tokio::spawn({
            let c = c.clone();
            async move { watchdog(&c, T).await }
        });
        // 1 KiB a second: a slow reader, but one that reads, for far longer than the stall
        let mut buf = [0u8; 1024];
        let mut read = 0;
        while read < 64 * 1024 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            read += tokio::io::AsyncReadExt::read(&mut client, &mut buf).await.unwrap_or(0);
            assert!(!dog.is_finished(), "cut after {read} bytes");
        }
        drop(request);
        assert_eq!(dog.await.ok(), Some(CloseReason::IdleTimeout));
    }
}
