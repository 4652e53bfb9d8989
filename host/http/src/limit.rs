//! Connections to the HTTP port, which every local user (a plugin's program included) can
//! open before showing a token: at most [`MAX_CONNECTIONS`] at once, so they can never use up
//! the control plane's open files, which its agents and journal need; a further one waits in
//! the kernel's backlog. A connection on which nothing was read or written for
//! [`IDLE_LIMIT`] is closed (an event stream writes a keep-alive every 15 s), so a peer that
//! sends half a request holds its place for a minute at most.

use axum::serve::Listener;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a connection may stay silent both ways.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// A listener that holds a place for each connection it hands out.
pub struct Limited<L> {
    inner: L,
    places: Arc<Semaphore>,
    idle_limit: Duration,
}

impl<L> Limited<L> {
    pub fn new(inner: L) -> Limited<L> {
        Limited::with(inner, MAX_CONNECTIONS, IDLE_LIMIT)
    }

    fn with(inner: L, places: usize, idle_limit: Duration) -> Limited<L> {
        Limited {
            inner,
            places: Arc::new(Semaphore::new(places)),
            idle_limit,
        }
    }
}

impl<L: Listener> Listener for Limited<L> {
    type Io = Counted<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let place = match self.places.clone().acquire_owned().await {
            Ok(place) => place,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        };
        let (io, addr) = self.inner.accept().await;
        let io = Counted {
            io,
            _place: place,
            idle_limit: self.idle_limit,
            idle: Box::pin(tokio::time::sleep(self.idle_limit)),
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding its place until it is dropped.
pub struct Counted<T> {
    io: T,
    _place: OwnedSemaphorePermit,
    idle_limit: Duration,
    idle: Pin<Box<Sleep>>,
}

impl<T> Counted<T> {
    fn active(&mut self) {
        let until = Instant::now() + self.idle_limit;
        self.idle.as_mut().reset(until);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending if this.idle.as_mut().poll(cx).is_ready() => Poll::Ready(Err(
                io::Error::new(io::ErrorKind::TimedOut, "connection idle too long"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.active();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn connections_beyond_the_places_wait_and_a_silent_one_is_closed() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut limited = Limited::with(tcp, 2, Duration::from_millis(300));
        let _clients: Vec<TcpStream> = futures_join(addr, 3).await;
        let (mut first, _) = limited.accept().await;
        let (second, _) = limited.accept().await;
        // No third place: the third connection waits in the backlog.
        let third = tokio::time::timeout(Duration::from_millis(300), limited.accept()).await;
        assert!(third.is_err(), "a third connection was served beside two");
        drop(second);
        let third = tokio::time::timeout(Duration::from_secs(5), limited.accept()).await;
        assert!(third.is_ok(), "a freed place was not taken");
        // The first never sends anything: it is closed after the idle limit.
        let mut buf = [0u8; 8];
        let started = std::time::Instant::now();
        let err = first.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    async fn futures_join(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(TcpStream::connect(addr).await.unwrap());
        }
        out
    }
}
