//! The daemons' HTTP listeners (control API, dashboard, `/metrics`) with two bounds that
//! `axum::serve` does not set: at most [`HTTP_CONNECTIONS_MAX`] connections at once, and
//! none that carries nothing either way for [`HTTP_IDLE_TIMEOUT`]. Without them a client
//! that opens connections and sends nothing holds a file descriptor and a task each, for
//! ever: an unattended county's daemon would run out of descriptors for its own files.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::warn;

/// Connections served at once by one listener; one more is closed as soon as it is accepted.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// A connection that neither sends nor takes a byte for this long is closed: far longer
/// than any request of ours takes between two bytes (commands answer within 10 s, uploads
/// stall out after `body_stall_secs`).
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long accepting pauses after an error (out of descriptors, say), so the loop does
/// not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Refused connections are logged once per this many, not one line each.
const REFUSED_LOG_EVERY: u64 = 1000;

/// A TCP listener for `axum::serve` that bounds its connections.
#[derive(Debug)]
pub struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    connections_max: usize,
    idle_timeout: Duration,
    refused: u64,
}

impl BoundedListener {
    /// Bounds `inner` with [`HTTP_CONNECTIONS_MAX`] and [`HTTP_IDLE_TIMEOUT`].
    pub fn new(inner: TcpListener) -> Self {
        Self::with_limits(inner, HTTP_CONNECTIONS_MAX, HTTP_IDLE_TIMEOUT)
    }

    /// Bounds `inner` with other limits (tests).
    pub fn with_limits(inner: TcpListener, connections_max: usize, idle_timeout: Duration) -> Self {
        BoundedListener { inner, permits: Arc::new(Semaphore::new(connections_max)), connections_max, idle_timeout, refused: 0 }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => return (BoundedStream::new(stream, permit, self.idle_timeout), addr),
                    Err(_) => {
                        drop(stream);
                        if self.refused % REFUSED_LOG_EVERY == 0 {
                            warn!(
                                refused = self.refused + 1,
                                connections_max = self.connections_max,
                                "HTTP connection refused: all connections in use (said once per {REFUSED_LOG_EVERY})"
                            );
                        }
                        self.refused += 1;
                    }
                },
                Err(error) => {
                    warn!(%error, "cannot accept an HTTP connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: holds its permit until it closes, and fails with `TimedOut`
/// once it has been idle for the listener's timeout.
#[derive(Debug)]
pub struct BoundedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl BoundedStream {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        BoundedStream { stream, _permit: permit, idle_timeout, idle: Box::pin(tokio::time::sleep(idle_timeout)) }
    }

    fn active(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    /// Turns a pending operation into an error once the connection has been idle too long.
    fn pending_or_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "HTTP connection idle"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.pending_or_idle(cx),
        }
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    self.active();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.pending_or_idle(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_health(addr: SocketAddr) -> io::Result<String> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
        Ok(answer)
    }

    /// Silent connections beyond the bound are closed at once; the silent ones within it
    /// are closed once idle, and the server answers again.
    #[tokio::test]
    async fn silent_connections_are_bounded_and_closed_when_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let idle = Duration::from_millis(500);
        let bounded = BoundedListener::with_limits(listener, 4, idle);
        let app = Router::new().route("/health", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(bounded, app).await });
        assert!(get_health(addr).await.expect("health").ends_with("ok"));

        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A fifth is accepted by the kernel and closed by the server at once.
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a connection beyond the bound must be closed: {closed:?}");

        // The silent ones are closed once idle; then the server answers again.
        for stream in &mut silent {
            let closed = tokio::time::timeout(idle * 4, stream.read(&mut byte)).await;
            assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "an idle connection must be closed: {closed:?}");
        }
        assert!(get_health(addr).await.expect("health after the idle ones closed").ends_with("ok"));
    }
}
