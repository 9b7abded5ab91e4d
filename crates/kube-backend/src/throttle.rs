//! The wait a throttling API server asks for, kept for [`crate::retry`]: API Priority and
//! Fairness refuses a request it has no seat for with `429 Too Many Requests`, a `Retry-After`
//! header and a plain-text body, and kube-rs turns the reply into a `Status` from its body alone.
//! This layer, on the kube client, copies the header's seconds into the Status's
//! `details.retryAfterSeconds` (where the API server's own JSON errors put it).

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use kube::core::Status;
use kube::core::response::StatusDetails;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Wraps a client's service in [`RetryAfter`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryAfterLayer;

impl<S> Layer<S> for RetryAfterLayer {
    type Service = RetryAfter<S>;

    fn layer(&self, inner: S) -> RetryAfter<S> {
        RetryAfter { inner }
    }
}

/// A service whose error replies carry their `Retry-After` in the Status body.
#[derive(Debug, Clone)]
pub struct RetryAfter<S> {
    inner: S,
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for RetryAfter<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Either<B, Full<Bytes>>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let reply = self.inner.call(request);
        Box::pin(async move {
            let reply = reply.await?;
            let Some(seconds) = asked_wait(&reply) else {
                return Ok(reply.map(Either::Left));
            };
            let (mut parts, body) = reply.into_parts();
            // An unreadable body loses only the server's wording, not the wait.
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let status = with_retry_after(&text, parts.status, seconds);
            parts.headers.remove(CONTENT_LENGTH);
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(Response::from_parts(
                parts,
                Either::Right(Full::new(status)),
            ))
        })
    }
}

/// The seconds of an error reply's `Retry-After` (the delay form; the date form is not used by
/// the API server).
fn asked_wait<B>(reply: &Response<B>) -> Option<u32> {
    if !(reply.status().is_client_error() || reply.status().is_server_error()) {
        return None;
    }
    reply
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The reply's Status (its JSON body, or one made of its text) with `retryAfterSeconds` set.
fn with_retry_after(body: &[u8], code: StatusCode, seconds: u32) -> Bytes {
    let mut status = serde_json::from_slice::<Status>(body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(body);
        let reason = code.canonical_reason().unwrap_or("").replace(' ', "");
        Status::failure(text.trim(), &reason).with_code(code.as_u16())
    });
    status
        .details
        .get_or_insert_with(|| StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: 0,
        })
        .retry_after_seconds = seconds;
    // A Status always serializes: plain strings and numbers.
    serde_json::to_vec(&status).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryPolicy;
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::Api;
    use kube::client::Body;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A client whose API server answers the first `throttled` requests as APF does (429,
    /// `Retry-After: 7`, plain text), then with 404.
    fn throttling_client(throttled: u32) -> (kube::Client, Arc<AtomicU32>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            while let Some((_, reply)) = handle.next_request().await {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let response = if n < throttled {
                    Response::builder()
                        .status(429)
                        .header(RETRY_AFTER, "7")
                        .body(Body::from(
                            b"Too many requests, please try again later.\n".to_vec(),
                        ))
                } else {
                    let status = Status::failure("jobs \"j\" not found", "NotFound").with_code(404);
                    Response::builder()
                        .status(404)
                        .body(Body::from(serde_json::to_vec(&status).unwrap()))
                };
                reply.send_response(response.unwrap());
            }
        });
        let client =
            kube::client::ClientBuilder::new(RetryAfterLayer.layer(service), "tasks").build();
        (client, calls)
    }

    #[tokio::test]
    async fn a_plain_text_429_becomes_a_status_with_its_retry_after() {
        let (client, _) = throttling_client(1);
        let jobs: Api<Job> = Api::namespaced(client, "tasks");
        match jobs.get("j").await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 429);
                assert_eq!(status.reason, "TooManyRequests");
                assert!(status.message.contains("Too many requests"), "{status:?}");
                assert_eq!(status.details.map(|d| d.retry_after_seconds), Some(7));
            }
            other => panic!("not an API error: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_what_the_server_asks_bounded() {
        let (client, calls) = throttling_client(2);
        let jobs: Api<Job> = Api::namespaced(client, "tasks");
        let mut policy = RetryPolicy {
            max_retry_after: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let started = tokio::time::Instant::now();
        let result = policy.run("get", || jobs.get("j")).await;
        assert!(matches!(result, Err(kube::Error::Api(s)) if s.code == 404));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two waits of 7 s cut to 5 s, not 200 ms + 400 ms of our own backoff.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{waited:?}"
        );
        policy.max_retry_after = Duration::from_secs(60);
        let (client, _) = throttling_client(1);
        let jobs: Api<Job> = Api::namespaced(client, "tasks");
        let started = tokio::time::Instant::now();
        let _ = policy.run("get", || jobs.get("j")).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
            "{waited:?}"
        );
    }
}
