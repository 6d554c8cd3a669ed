//! A test-controlled TCP proxy, to break a dependency (Redis, RabbitMQ) for one
//! node without touching the machine's shared server.
//!
//! `Proxy::start(upstream)` listens on `127.0.0.1:0` and forwards every
//! accepted connection to `upstream`. A test can then [`cut`](Proxy::cut) it
//! (reset every live connection and every new one until
//! [`restore`](Proxy::restore)), [`reset_all`](Proxy::reset_all) live
//! connections once, or [`set_delay`](Proxy::set_delay) each forwarded chunk.
//! Resets are abrupt (`SO_LINGER` 0: the peer sees a connection reset, not a
//! clean close). Every task the proxy runs is aborted when it is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A running proxy; dropping it closes the listener and every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    cut: AtomicBool,
    delay_us: AtomicU64,
    /// Bumped to make every live connection reset itself.
    generation: watch::Sender<u64>,
    connections: Mutex<JoinSet<()>>,
}

impl Shared {
    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::SeqCst))
    }
}

impl Proxy {
    /// Starts forwarding connections made to [`addr`](Self::addr) to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            cut: AtomicBool::new(false),
            delay_us: AtomicU64::new(0),
            generation: watch::channel(0).0,
            connections: Mutex::new(JoinSet::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Proxy { addr, shared, accept }
    }

    /// Where clients should connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every live connection, and every new one until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.reset_all();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Delays each forwarded chunk, in both directions, by `delay` (zero: none).
    /// Applies to live connections from their next chunk on.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(micros, Ordering::SeqCst);
    }

    /// Resets every live connection now; new ones are forwarded as before.
    pub fn reset_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.connections.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            reset(&client);
            continue;
        }
        let reset_rx = shared.generation.subscribe();
        let mut connections = shared.connections.lock().unwrap_or_else(|e| e.into_inner());
        while connections.try_join_next().is_some() {}
        connections.spawn(serve(client, Arc::clone(&shared), reset_rx));
    }
}

/// Makes dropping `stream` send a reset instead of a clean close.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>, mut reset_rx: watch::Receiver<u64>) {
    let Ok(mut upstream) = TcpStream::connect(shared.upstream).await else {
        reset(&client);
        return;
    };
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let was_reset = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let forward = async {
            tokio::join!(
                pump(client_read, upstream_write, &shared),
                pump(upstream_read, client_write, &shared)
            )
        };
        tokio::select! {
            _ = forward => false,
            _ = reset_rx.changed() => true,
        }
    };
    if was_reset {
        reset(&client);
        reset(&upstream);
    }
}

/// Copies `from` to `to` chunk by chunk, delaying each; passes a half-close on.
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, shared: &Shared) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = shared.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}
