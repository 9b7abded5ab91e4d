//! Test peers, for tests and benchmarks only: real processes started on free loopback ports and
//! stopped on drop. Every crate's tests use these instead of copies of their own.
//!
//! # Layout
//! - [`anvil`]: a real Ethereum node (anvil from `peers/anvil`).
//! - [`ipfs`]: a real IPFS node (js-ipfs from `peers/ipfs`).
//! - [`kube`]: the suite's real Kubernetes control plane (`scripts/cluster`), a namespace per test.
//! - [`service`]: one of our binaries, its log collected and its API address read from it.
//! - [`hostile`]: hostile guests generated as WAT, too large to commit.
//! - [`golden`]: the golden result hashes of the samples and the hostile guests.
//! - [`http`]: blocking HTTP calls with statuses as data.
//! - [`tmpfs`]: a small filesystem of its own, for disk-full tests.
//! - [`tls`]: a throwaway CA and a TLS proxy in front of a plain-HTTP peer.

pub mod anvil;
pub mod golden;
pub mod hostile;
pub mod http;
pub mod ipfs;
pub mod kube;
pub mod service;
pub mod tls;
pub mod tmpfs;

pub use anvil::{Anvil, KEYS};
pub use ipfs::JsIpfs;
pub use kube::Cluster;
pub use service::Service;
pub use tls::{TestCa, TlsProxy};
pub use tmpfs::Tmpfs;

use std::path::{Path, PathBuf};

/// A path under the repository root (where `peers/`, `host/` and `testdata/` are).
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
