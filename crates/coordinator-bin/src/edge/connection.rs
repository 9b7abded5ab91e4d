//! One connection: HTTP/1.1 under hyper, with hyper's header-read timeout (which also bounds a
//! kept-alive connection's wait for its next request) and a watchdog that closes the connection
//! once no byte has moved either way for the idle timeout.

use super::EdgeLimits;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Serves one connection until the client closes it, a timeout closes it, or `shutdown` (then
/// the request in flight is finished first). `slot` is its place under the connection cap, given
/// back when this returns.
pub async fn serve(
    stream: TcpStream,
    app: axum::Router,
    limits: EdgeLimits,
    shutdown: CancellationToken,
    slot: OwnedSemaphorePermit,
) {
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut conn = pin!(builder.serve_connection(io, TowerToHyperService::new(app)));
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = activity.idle_for(limits.idle_timeout) => {
                tracing::debug!(idle_sec = limits.idle_timeout.as_secs(), "closing an idle connection");
                break;
            }
            () = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
    drop(slot);
}

/// When a byte last moved on a connection, in milliseconds after `start`.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: std::time::Duration) {
        loop {
            let last = std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = self.start + last + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// The connection's stream, noting each read or write that moved bytes.
struct Watched {
    stream: TcpStream,
    activity: Activity,
}

impl Watched {
    fn note<T>(&self, polled: Poll<io::Result<T>>, moved: bool) -> Poll<io::Result<T>> {
        if moved && matches!(polled, Poll::Ready(Ok(_))) {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let moved = buf.filled().len() > before;
        self.note(polled, moved)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        self.note(polled, moved)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        self.note(polled, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
