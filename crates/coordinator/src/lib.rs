//! The coordinator: a long-running service that takes tasks from a source, fetches their modules
//! by CID with verification, runs them on a backend and writes each result back exactly once.
//!
//! # Layout
//! - [`scheduler`]: the loop that drives each task through the four roles below.
//! - [`source`]: task sources (the [`TaskSource`](source::TaskSource) trait): the placeholder
//!   (samples or a tasks file, with its results file) and the chain (the TaskRegistry contract).
//! - [`module`]: module stores (the [`ModuleStore`](module::ModuleStore) trait): the local mirror
//!   and the IPFS gateway, both verifying bytes by CID with the `wasm-exec-ipfs` crate.
//! - [`backend`]: where tasks run (the [`Backend`](backend::Backend) trait): the local backend
//!   here; the kubernetes backend is the `wasm-exec-kube-backend` crate.
//! - [`state`]: the persisted state of every task (the [`StateStore`](state::StateStore) trait):
//!   redb behind a write-ahead journal.
//! - [`api`]: the HTTP API (submit, read back, probes, metrics); [`metrics`]: what is counted;
//!   [`health`]: what is failing now, for `/readyz`; [`webhook`]: results posted to the
//!   tasks' `callback_url`, signed and retried; [`tenant`]: tenants, their tokens and quotas.
//!
//! The `coordinator` binary (crate `coordinator`, `crates/coordinator-bin`) wires these up.

pub mod api;
pub mod backend;
pub mod health;
pub mod metrics;
pub mod module;
pub mod scheduler;
pub mod source;
pub mod state;
pub mod tenant;
pub mod webhook;
