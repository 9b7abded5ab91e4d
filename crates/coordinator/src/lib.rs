//! The coordinator: a long-running service that takes tasks from a source, fetches their modules
//! by CID with verification, runs them on a backend and writes each result back exactly once.
//!
//! # Layout
//! - [`scheduler`]: the loop that drives each task through the four roles below.
//! - [`source`]: task sources (the [`TaskSource`](source::TaskSource) trait; the placeholder).
//! - [`module`]: module stores (the [`ModuleStore`](module::ModuleStore) trait; the local mirror;
//!   CID computation and verification).
//! - [`backend`]: where tasks run (the [`Backend`](backend::Backend) trait; the local backend).
//! - [`state`]: the persisted state of every task (the [`StateStore`](state::StateStore) trait;
//!   redb).
//! - [`api`]: the HTTP API (submit, read back, probes, metrics); [`metrics`]: what is counted.
//! - [`config`]: the binary's settings; [`table`]: the `--once` summary.

pub mod api;
pub mod backend;
pub mod config;
pub mod metrics;
pub mod module;
pub mod scheduler;
pub mod source;
pub mod state;
pub mod table;
