//! Two stores asked in turn: the uploaded modules first, then the configured store (mirror or
//! gateway), so a module uploaded through the API runs with no IPFS at all.

use super::{ModuleError, ModuleStore};
use async_trait::async_trait;
use std::sync::Arc;

/// Asks `first`; only when it has no such module (`NotFound`) asks `then`. Any other failure
/// of `first` (an integrity mismatch, a read error) is the answer: a module known here but
/// damaged is never replaced silently by another store's.
pub struct Layered {
    /// Asked first (the uploaded modules).
    pub first: Arc<dyn ModuleStore>,
    /// Asked when `first` has no such module.
    pub then: Arc<dyn ModuleStore>,
}

#[async_trait]
impl ModuleStore for Layered {
    async fn fetch(&self, cid: &str) -> Result<Arc<Vec<u8>>, ModuleError> {
        match self.first.fetch(cid).await {
            Err(ModuleError::NotFound { .. }) => self.then.fetch(cid).await,
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Has one module, `name`, or fails every fetch with `Io` when `broken`.
    struct One {
        name: &'static str,
        broken: bool,
    }

    #[async_trait]
    impl ModuleStore for One {
        async fn fetch(&self, cid: &str) -> Result<Arc<Vec<u8>>, ModuleError> {
            if self.broken {
                return Err(ModuleError::Io("disk".into()));
            }
            if cid == self.name {
                return Ok(Arc::new(self.name.as_bytes().to_vec()));
            }
            Err(ModuleError::NotFound {
                cid: cid.into(),
                place: self.name.into(),
            })
        }
    }

    #[tokio::test]
    async fn the_second_store_is_asked_only_for_what_the_first_does_not_have() {
        let layered = Layered {
            first: Arc::new(One {
                name: "a",
                broken: false,
            }),
            then: Arc::new(One {
                name: "b",
                broken: false,
            }),
        };
        assert_eq!(*layered.fetch("a").await.unwrap(), b"a");
        assert_eq!(*layered.fetch("b").await.unwrap(), b"b");
        let e = layered.fetch("c").await.unwrap_err();
        assert!(matches!(e, ModuleError::NotFound { place, .. } if place == "b"));
        let broken = Layered {
            first: Arc::new(One {
                name: "a",
                broken: true,
            }),
            then: Arc::new(One {
                name: "a",
                broken: false,
            }),
        };
        assert!(matches!(broken.fetch("a").await, Err(ModuleError::Io(_))));
    }
}
