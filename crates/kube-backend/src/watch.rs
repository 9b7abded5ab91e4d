//! A resumable watch on one kind of object: reopens itself where it left off when the API server
//! ends the stream (it does every few minutes, and when it restarts), and from the current state
//! after a `410 Gone` (a version older than the server's watch cache: after its restart, or
//! etcd's compaction). Bookmarks are asked for (kube's `WatchParams` default) and move the
//! version on while nothing changes, so that a quiet watch resumes from a recent version.

use super::errors::{ApiFailure, Call};
use super::retry::RetryPolicy;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::core::Resource;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use tracing::debug;

/// What a watch saw happen to an object.
#[derive(Debug)]
pub enum Change<K> {
    /// The object now looks like this (added or modified).
    Now(K),
    /// The object was deleted.
    Deleted(K),
}

/// A watch of the objects selected by `params`, from `version` on.
pub struct Watch<K: 'static> {
    api: Api<K>,
    params: WatchParams,
    /// Resource version to resume from: `"0"` replays the current state first.
    version: String,
    stream: Option<BoxStream<'static, kube::Result<WatchEvent<K>>>>,
    call: Call,
    namespace: String,
    retry: RetryPolicy,
    /// Streams ended in a row soon after opening with no event: bounded, so a broken server
    /// cannot spin us (a quiet stream the server ends on its timeout does not count).
    empty_ends: u32,
    /// When the stream was last opened.
    opened: tokio::time::Instant,
}

/// Streams that may end in a row without an event before the watch fails.
const MAX_EMPTY_ENDS: u32 = 5;
/// A stream that lived this long ended normally, however quiet.
const NORMAL_LIFE: std::time::Duration = std::time::Duration::from_secs(10);

impl<K> Watch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    /// A watch that starts with the current state of the selected objects.
    pub fn new(
        api: Api<K>,
        params: WatchParams,
        call: Call,
        namespace: &str,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            api,
            params,
            version: "0".into(),
            stream: None,
            call,
            namespace: namespace.to_owned(),
            retry,
            empty_ends: 0,
            opened: tokio::time::Instant::now(),
        }
    }

    /// The same watch, resuming from `version` (what an earlier watch had seen) rather than
    /// replaying the current state first.
    pub fn resuming_from(mut self, version: &str) -> Self {
        version.clone_into(&mut self.version);
        self
    }

    /// The resource version the watch resumes from: that of the last event or bookmark.
    pub fn resource_version(&self) -> &str {
        &self.version
    }

    /// Opens the stream now (one request) unless it is open.
    pub async fn open(&mut self) -> Result<(), ApiFailure> {
        if self.stream.is_none() {
            let opened = match request(&self.api, &self.params, &self.version, self.retry).await {
                // Some servers refuse a too old version with the reply itself, not an event.
                Err(e) if super::errors::status_code(&e) == Some(410) => {
                    self.expired();
                    request(&self.api, &self.params, &self.version, self.retry).await
                }
                other => other,
            };
            let stream = opened.map_err(|e| ApiFailure::new(self.call, &self.namespace, &e))?;
            self.stream = Some(stream);
            self.opened = tokio::time::Instant::now();
        }
        Ok(())
    }

    /// The version is too old for the server (`410 Gone`): start again from the current state,
    /// which the reopened watch replays.
    fn expired(&mut self) {
        debug!(call = ?self.call, version = %self.version, "watch expired (410 Gone); resuming from the current state");
        self.version = "0".into();
        self.stream = None;
    }

    /// The next change, reopening the stream as needed. Cancel-safe between events.
    pub async fn next(&mut self) -> Result<Change<K>, ApiFailure> {
        loop {
            self.open().await?;
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.next().await {
                None => self.ended(None).await?,
                Some(Ok(WatchEvent::Added(k) | WatchEvent::Modified(k))) => {
                    self.remember(&k);
                    return Ok(Change::Now(k));
                }
                Some(Ok(WatchEvent::Deleted(k))) => {
                    self.remember(&k);
                    return Ok(Change::Deleted(k));
                }
                Some(Ok(WatchEvent::Bookmark(b))) => self.version = b.metadata.resource_version,
                Some(Ok(WatchEvent::Error(status))) if status.code == 410 => self.expired(),
                Some(Ok(WatchEvent::Error(status))) => {
                    self.stream = None;
                    return Err(ApiFailure::new(
                        self.call,
                        &self.namespace,
                        &kube::Error::Api(status),
                    ));
                }
                Some(Err(e)) if super::errors::is_transient(&e) => self.ended(Some(e)).await?,
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(ApiFailure::new(self.call, &self.namespace, &e));
                }
            }
        }
    }

    fn remember(&mut self, k: &K) {
        self.empty_ends = 0;
        if let Some(version) = &k.meta().resource_version {
            self.version.clone_from(version);
        }
    }

    /// The stream ended (the server's timeout, or a transient `error`): reopen after a pause
    /// that grows with each end in a row that brought no event; fail after [`MAX_EMPTY_ENDS`].
    async fn ended(&mut self, error: Option<kube::Error>) -> Result<(), ApiFailure> {
        self.stream = None;
        if self.opened.elapsed() >= NORMAL_LIFE {
            self.empty_ends = 0;
        }
        self.empty_ends += 1;
        if self.empty_ends > MAX_EMPTY_ENDS {
            let detail = error.map_or_else(
                || "the stream kept ending without an event".to_owned(),
                |e| e.to_string(),
            );
            return Err(ApiFailure {
                call: self.call,
                namespace: self.namespace.clone(),
                code: None,
                detail,
            });
        }
        tokio::time::sleep(self.retry.first_backoff * (self.empty_ends - 1)).await;
        Ok(())
    }
}

/// One watch request from `version`, retried by `retry`.
async fn request<K>(
    api: &Api<K>,
    params: &WatchParams,
    version: &str,
    retry: RetryPolicy,
) -> kube::Result<BoxStream<'static, kube::Result<WatchEvent<K>>>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    retry
        .run("opening a watch", || api.watch(params, version))
        .await
        .map(StreamExt::boxed)
}
