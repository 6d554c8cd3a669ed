//! The test proxy itself: data flows, cuts and resets break connections,
//! restore brings new ones back, delays delay.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::proxy::Proxy;

/// An echo server; its tasks stop when the returned set drops.
async fn echo_server() -> (SocketAddr, JoinSet<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut echoes = JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            echoes.spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, tasks)
}

/// Sends `message` and reads the echo back, within a deadline.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        stream.write_all(message).await?;
        let mut echoed = vec![0; message.len()];
        stream.read_exact(&mut echoed).await?;
        Ok(echoed)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.expect("no answer in time")
}

/// Whether the connection is dead: a read gives EOF or an error, within a deadline.
async fn is_broken(stream: &mut TcpStream) -> bool {
    let _ = stream.write_all(b"anyone?").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    matches!(read.expect("neither data nor EOF in time"), Ok(0) | Err(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_forwards_cuts_restores_resets_and_delays() {
    let (upstream, _echo) = echo_server().await;
    let proxy = Proxy::start(upstream).await;

    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut conn, b"hello").await.unwrap(), b"hello");

    proxy.cut();
    assert!(is_broken(&mut conn).await, "a live connection survived the cut");
    // The reset may even beat the handshake's completion to the connecting side.
    if let Ok(mut during) = TcpStream::connect(proxy.addr()).await {
        assert!(is_broken(&mut during).await, "a new connection went through while cut");
    }

    proxy.restore();
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut after, b"back").await.unwrap(), b"back");

    proxy.reset_all();
    assert!(is_broken(&mut after).await, "a live connection survived reset_all");
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut fresh, b"fresh").await.unwrap(), b"fresh");

    proxy.set_delay(Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(round_trip(&mut fresh, b"slow").await.unwrap(), b"slow");
    // One chunk each way, each delayed.
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    proxy.set_delay(Duration::ZERO);
    let started = Instant::now();
    assert_eq!(round_trip(&mut fresh, b"fast").await.unwrap(), b"fast");
    assert!(started.elapsed() < Duration::from_millis(150), "{:?}", started.elapsed());
}
