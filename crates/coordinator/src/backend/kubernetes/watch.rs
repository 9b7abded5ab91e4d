//! A resumable watch on one kind of object: reopens itself where it left off when the API server
//! ends the stream (it does every few minutes), and from the current state after a `410 Gone`.

use super::errors::{ApiFailure, Call};
use super::retry::RetryPolicy;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::core::Resource;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

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
}

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
        }
    }

    /// Opens the stream now (one request) unless it is open.
    pub async fn open(&mut self) -> Result<(), ApiFailure> {
        if self.stream.is_none() {
            let (api, params, version) = (&self.api, &self.params, self.version.as_str());
            let stream = self
                .retry
                .run("opening a watch", || api.watch(params, version))
                .await
                .map_err(|e| ApiFailure::new(self.call, &self.namespace, &e))?;
            self.stream = Some(stream.boxed());
        }
        Ok(())
    }

    /// The next change, reopening the stream as needed. Cancel-safe between events.
    pub async fn next(&mut self) -> Result<Change<K>, ApiFailure> {
        loop {
            self.open().await?;
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.next().await {
                None => self.stream = None,
                Some(Ok(WatchEvent::Added(k) | WatchEvent::Modified(k))) => {
                    self.remember(&k);
                    return Ok(Change::Now(k));
                }
                Some(Ok(WatchEvent::Deleted(k))) => {
                    self.remember(&k);
                    return Ok(Change::Deleted(k));
                }
                Some(Ok(WatchEvent::Bookmark(b))) => self.version = b.metadata.resource_version,
                Some(Ok(WatchEvent::Error(status))) if status.code == 410 => {
                    self.version = "0".into();
                    self.stream = None;
                }
                Some(Ok(WatchEvent::Error(status))) => {
                    self.stream = None;
                    return Err(ApiFailure::new(
                        self.call,
                        &self.namespace,
                        &kube::Error::Api(status),
                    ));
                }
                Some(Err(e)) if super::errors::is_transient(&e) => self.stream = None,
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(ApiFailure::new(self.call, &self.namespace, &e));
                }
            }
        }
    }

    fn remember(&mut self, k: &K) {
        if let Some(version) = &k.meta().resource_version {
            self.version.clone_from(version);
        }
    }
}
