//! castwork's HTTP/1 accept loop, on hyper directly (in place of `axum::serve`,
//! which sets no timer and no limit): a header-read timeout, an idle timeout,
//! a cap on open connections, hyper's buffers sized so castwork's own limits
//! answer first (with JSON), and accept errors that back off instead of spinning.
//!
//! **At the cap** the loop does not accept (the excess waits in the kernel's
//! backlog, not in the descriptor table) until a slot is free, and frees one by
//! closing the oldest connection that is not serving a request: an idle
//! keep-alive connection or one still sending its head. Stopping alone would
//! let a few hundred silent sockets lock everyone out (health probes included)
//! until their timeouts; closing the oldest non-busy connection keeps the node
//! reachable, and a client whose request is in flight is not cut for it. When every
//! connection is serving a request, the loop waits for one to finish; requests
//! are bounded by `server.request_timeout_secs`, and a client that reads none of
//! its response for `server.write_timeout_secs` is closed.

pub mod conn;
pub mod limits;
pub mod registry;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use self::conn::{GuardedBody, InFlight, Timeouts, Watched, watchdog};
use self::registry::{Registered, Registry};
use crate::config::Settings;
use crate::metrics;

/// hyper's own ceiling on a request target: longer ones get its bodyless 414
/// (kept with the settings it bounds).
pub use crate::config::HYPER_MAX_URI_BYTES;

/// How long the loop pauses after an accept error that is not the peer's doing
/// (out of descriptors, ...), so the error cannot become a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one accept-error log line per this long (the rest are counted).
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// The serving limits, from `[server]` and the open-file limit.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// The connection cap in effect.
    pub max_connections: usize,
    /// The two connection deadlines.
    pub timeouts: Timeouts,
    /// hyper's read buffer: the largest request head it accepts.
    pub max_buf_size: usize,
    /// hyper's header-line limit.
    pub max_headers: usize,
}

impl ServeLimits {
    /// The limits `settings` describe, the cap bounded by the current open-file limit.
    pub fn from_settings(settings: &Settings) -> Self {
        let server = &settings.server;
        let reserved = limits::reserved_descriptors(settings);
        let soft = limits::file_limit().soft;
        let max_connections = limits::connection_cap(server.max_connections, soft, reserved);
        if server.max_connections > max_connections {
            tracing::warn!(
                configured = server.max_connections,
                effective = max_connections,
                soft_limit = ?soft,
                reserved,
                "server.max_connections is above what the open-file limit allows; using the lower value"
            );
        }
        Self {
            max_connections,
            timeouts: Timeouts {
                header_read: Duration::from_secs(server.header_read_timeout_secs),
                idle: Duration::from_secs(server.idle_timeout_secs),
                write_stall: Duration::from_secs(server.write_timeout_secs),
            },
            // room for hyper's longest target plus castwork's header budget, so
            // that every head within hyper's target limit reaches castwork's checks
            max_buf_size: HYPER_MAX_URI_BYTES + server.max_header_bytes + 4096,
            max_headers: server.max_headers.saturating_mul(2),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` turns true; then stops
/// accepting, lets every connection finish its request in flight and returns
/// once all are closed (the caller bounds that with the grace period; dropping
/// this future closes what is left).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    http.keep_alive(true)
        .max_buf_size(limits.max_buf_size.max(8192))
        .max_headers(limits.max_headers)
        // the watchdog in conn.rs owns both deadlines
        .header_read_timeout(None);
    let http = Arc::new(http);
    let registry = Arc::new(Registry::default());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::default();
    let mut stop = shutdown.clone();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = acquire_slot(&slots, &registry) => slot,
            _ = stop.wait_for(|stopping| *stopping) => None,
        };
        let Some(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                drop(slot);
                if errors.on_error(&err, &registry) {
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        _ = stop.wait_for(|stopping| *stopping) => break,
                    }
                }
                continue;
            }
        };
        metrics::http_connection_accepted();
        let conn = registry.register();
        let task =
            connection(stream, peer, conn, router.clone(), http.clone(), limits.timeouts, shutdown.clone());
        connections.spawn(async move {
            task.await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::debug!(open = registry.len(), "stopped accepting; draining connections");
    while connections.join_next().await.is_some() {}
}

/// A free connection slot; at the cap, evicts the oldest connection not serving
/// a request and waits for a slot. `None` only if the semaphore is closed.
async fn acquire_slot(slots: &Arc<Semaphore>, registry: &Registry) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        let changed = registry.changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        registry.evict_oldest_idle();
        tokio::select! {
            slot = slots.clone().acquire_owned() => return slot.ok(),
            // a connection became idle: evictable now, if the slot has not come yet
            () = changed => {}
        }
    }
}

/// Serves one connection until it closes, its watchdog closes it, or shutdown drains it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Registered,
    router: Router,
    http: Arc<http1::Builder>,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = conn.state().clone();
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = InFlight::begin(state.clone());
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                response.map(|response| response.map(|body| GuardedBody::new(body, in_flight)))
                    as Result<_, Infallible>
            }
        })
    };
    let io = TokioIo::new(Watched::new(stream, state.clone()));
    let served = http.serve_connection(io, service);
    tokio::pin!(served);
    let dog = watchdog(&state, timeouts);
    tokio::pin!(dog);
    let mut draining = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, %peer, "connection ended with an error");
                }
                break;
            }
            reason = &mut dog => {
                tracing::debug!(reason = reason.as_str(), %peer, "closing connection");
                metrics::http_connection_closed(reason.as_str());
                break;
            }
            _ = shutdown.wait_for(|stopping| *stopping), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Accept-error handling: classification, a metric, and rate-limited logs.
#[derive(Debug, Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// Records `err`; returns whether the loop should back off before the next accept.
    fn on_error(&mut self, err: &std::io::Error, registry: &Registry) -> bool {
        let kind = accept_error_kind(err);
        metrics::http_accept_error(kind.label());
        if kind == AcceptErrorKind::Peer {
            // the client gave up before we accepted: nothing wrong here
            return false;
        }
        if kind == AcceptErrorKind::FdLimit {
            // free a descriptor for the next client if an idle connection holds one
            registry.evict_oldest_idle();
        }
        let now = Instant::now();
        if self.last_logged.is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_EVERY) {
            tracing::warn!(
                error = %err,
                kind = kind.label(),
                suppressed = self.suppressed,
                open = registry.len(),
                "accept failed; backing off"
            );
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptErrorKind {
    /// EMFILE / ENFILE: out of descriptors.
    FdLimit,
    /// The peer reset or aborted the connection before it was accepted.
    Peer,
    Other,
}

impl AcceptErrorKind {
    fn label(self) -> &'static str {
        match self {
            Self::FdLimit => "fd_limit",
            Self::Peer => "peer",
            Self::Other => "other",
        }
    }
}

fn accept_error_kind(err: &std::io::Error) -> AcceptErrorKind {
    use std::io::ErrorKind;
    #[cfg(unix)]
    if let Some(errno) = rustix::io::Errno::from_io_error(err)
        && (errno == rustix::io::Errno::MFILE || errno == rustix::io::Errno::NFILE)
    {
        return AcceptErrorKind::FdLimit;
    }
    match err.kind() {
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused => {
            AcceptErrorKind::Peer
        }
        _ => AcceptErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let emfile = std::io::Error::from_raw_os_error(24);
        let enfile = std::io::Error::from_raw_os_error(23);
        assert_eq!(accept_error_kind(&emfile), AcceptErrorKind::FdLimit);
        assert_eq!(accept_error_kind(&enfile), AcceptErrorKind::FdLimit);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(accept_error_kind(&reset), AcceptErrorKind::Peer);
        assert_eq!(accept_error_kind(&std::io::Error::other("x")), AcceptErrorKind::Other);
    }

    #[tokio::test(start_paused = true)]
    async fn accept_error_logs_are_rate_limited() {
        let registry = Registry::default();
        let mut errors = AcceptErrors::default();
        let emfile = std::io::Error::from_raw_os_error(24);
        assert!(errors.on_error(&emfile, &registry));
        assert!(errors.on_error(&emfile, &registry));
        assert_eq!(errors.suppressed, 1);
        tokio::time::advance(ACCEPT_LOG_EVERY).await;
        assert!(errors.on_error(&emfile, &registry));
        assert_eq!(errors.suppressed, 0);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!errors.on_error(&reset, &registry), "a peer's reset needs no back-off");
    }
}
