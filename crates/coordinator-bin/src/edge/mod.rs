//! The API's HTTP edge: the accept loop, capped at `COORDINATOR_HTTP_MAX_CONNECTIONS` open
//! connections, each served over HTTP/1.1 under a header, a body and an idle timeout, so that
//! clients that send slowly or not at all cannot hold the process's file descriptors.
//!
//! # Layout
//! - `connection`: one connection under hyper, with the header timeout and the idle watchdog.
//! - `body`: the whole-body deadline of one request.
//!
//! Over the cap the loop stops accepting until a connection closes (as mini-redis does): further
//! clients wait in the kernel's listen backlog, holding no descriptor of ours, and are served in
//! turn, rather than being accepted and dropped at once.

mod body;
mod connection;

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The limits of the HTTP edge (`COORDINATOR_HTTP_*`).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Time from a connection's accept (or the end of its last response) to a whole request
    /// head; a client that has not sent its headers by then is disconnected.
    pub header_timeout: Duration,
    /// Time to receive a request's whole body once its head is in; a slower body fails the
    /// request (408) and the connection is closed.
    pub body_timeout: Duration,
    /// Time a connection may go without a byte read or written (a client that stops reading
    /// its response, or stalls mid-body) before it is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Longest wait between two attempts to accept after an error (e.g. EMFILE).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Time open connections get to finish their requests once `shutdown` is cancelled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` under `limits` until `shutdown`, then lets open connections finish
/// their requests for up to [`SHUTDOWN_GRACE`]. Accept errors never end it (see [`accept`]).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: EdgeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.body_timeout,
        body::deadline,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // A slot first: at the cap, nothing is accepted until a connection closes.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = shutdown.cancelled() => break,
        };
        // The semaphore is never closed, so acquiring can only fail after a `close` that no
        // code makes.
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            stream = accept(&listener) => stream,
            () = shutdown.cancelled() => break,
        };
        tokio::spawn(connection::serve(
            stream,
            app.clone(),
            limits,
            shutdown.clone(),
            slot,
        ));
    }
    // Every slot back means every connection closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace_sec = SHUTDOWN_GRACE.as_secs(),
            "connections still open at shutdown are dropped"
        );
    }
    Ok(())
}

/// The next connection. An error is logged and retried, never returned: a refused or reset
/// handshake at once, anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or the system
/// is out of descriptors or memory) after a wait from 10 ms doubling to 1 s, so the loop neither
/// spins nor gives up while descriptors are short.
async fn accept(listener: &TcpListener) -> tokio::net::TcpStream {
    let mut wait = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "accepting a connection failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// An error of one client's handshake, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
