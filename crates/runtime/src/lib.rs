//! Runs one Wasm task with wasmtime + WASI preview 1 under hard limits. The only crate of
//! wasm-exec that knows wasmtime; the executor binary and the coordinator's local backend both call
//! it, so a task gives the same result document in a Kubernetes Job and in-process.
//!
//! # Layout
//! - [`engine`]: engine settings (determinism, fuel, how time is enforced) and their fingerprint.
//! - [`runtime`]: [`Runtime`]: load, plan (entry + arguments), call.
//! - [`prepare`]: input document to a run ready to call, shared by the executor and the local backend.
//! - [`module`]: loading: shape check, then the cache or the compiler.
//! - [`compile_child`]: compiling in a child process that the deadline can kill, memory capped.
//! - [`shape`]: [`ModuleLimits`]: the module's shape, checked before compiling.
//! - [`entry`]: which export to call, by the seed's rules.
//! - [`inspect`]: an uploaded module checked without compiling it, with its exports' signatures.
//! - [`convert`]: JSON arguments to Wasm values and results back.
//! - [`sandbox`]: the guest's WASI view of the world (nothing of the host).
//! - [`clock`]: the guest's virtual clocks; [`poll`]: `poll_oneoff` on them, never blocking.
//! - [`limiter`]: one memory budget per task, shared by every memory and table.
//! - `fuel`: the fuel budget as a hard limit, checked where control leaves the guest.
//! - `classify`: wasmtime errors to outcomes, by type.
//! - [`capture`]: bounded stdout/stderr capture.
//! - [`cache`]: the on-disk cache of compiled modules, entries authenticated by HMAC;
//!   [`cache_key`]: its directory's ownership and its key, kept outside it.
//! - [`cancel`]: [`CancelFlag`], which stops a run from another thread within one tick.
//! - [`ticker`]: the epoch ticker that interrupts guests at their deadline.
//! - [`error`]: typed errors, each with its stable result kind.
//!
//! # Example
//! ```
//! use wasm_exec_runtime::{EngineOptions, RunRequest, Runtime};
//! let runtime = Runtime::new(EngineOptions::default(), None).unwrap();
//! let module = runtime
//!     .load(br#"(module (func (export "run") (result i64) i64.const 42))"#)
//!     .unwrap();
//! let result = runtime.run(&module, &RunRequest::default());
//! assert_eq!(result.result, serde_json::json!(42));
//! ```

pub mod cache;
pub mod cache_key;
pub mod cancel;
pub mod capture;
mod classify;
pub mod clock;
pub mod compile_child;
pub mod convert;
pub mod engine;
pub mod entry;
pub mod error;
mod fuel;
pub mod inspect;
pub mod limiter;
pub mod module;
pub mod poll;
pub mod prepare;
pub mod runtime;
pub mod sandbox;
pub mod shape;
pub mod ticker;

pub use cache_key::CacheLocation;
pub use cancel::CancelFlag;
pub use capture::OutputCapture;
pub use compile_child::ChildCompiler;
pub use engine::{EngineOptions, Interruption, native_stack_size};
pub use entry::EntryRequest;
pub use error::{RuntimeError, caused_by_exhaustion, is_exhaustion};
pub use inspect::{ExportedFunction, Inspected, Inspector};
pub use module::{CacheOutcome, LoadedModule, module_sha256_hex};
pub use prepare::Prepared;
pub use runtime::{Captures, Plan, RunLimits, RunRequest, Runtime, failed};
pub use shape::{ModuleLimits, ModuleShape};
pub use ticker::EpochTicker;
