//! The whole-body deadline: a request's body must arrive in full within the body timeout of its
//! head, however it trickles (a per-read timeout would let one byte every few seconds through).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// Middleware: gives the request's body `timeout` from now to arrive in full.
pub async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let request = request.map(|body| {
        Body::new(Deadline {
            body,
            timeout,
            expiry: Box::pin(tokio::time::sleep(timeout)),
        })
    });
    next.run(request).await
}

/// A body that fails with [`BodyTimeout`] once its deadline passes.
struct Deadline {
    body: Body,
    timeout: Duration,
    expiry: Pin<Box<Sleep>>,
}

/// The request body did not arrive within `COORDINATOR_HTTP_BODY_TIMEOUT_SEC`.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body did not arrive within {0:?} (COORDINATOR_HTTP_BODY_TIMEOUT_SEC); send it at once"
)]
pub struct BodyTimeout(Duration);

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.expiry.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(self.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
