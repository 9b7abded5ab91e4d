//! Task and result types shared by every part of wasm-exec: serde types and their rules, no I/O.
//!
//! # Layout
//! - [`spec`]: a task as a source hands it over (module CID, entry, input, limits).
//! - [`check`]: the one intake check, from a [`TaskSpec`] to a [`CheckedTask`] under the
//!   operator's [`IntakeRules`] (limit defaults and maxima).
//! - [`input`]: the task's input document (`{"entry": "fib", "args": [12]}`) and how it is read.
//! - [`envelope`]: the result document every run produces, in a Job or in-process.
//! - [`result_hash`]: the deterministic `result_hash` of a result document (docs/RESULT_HASH.md).
//! - [`limits`]: the allowed range of every limit, and its conversion to a typed value.
//! - [`object`]: reading a struct from JSON as an object only, never as an array of its fields.
//! - [`protocol`]: the limits of a replicated (k-of-n) task, from the task or the protocol.
//! - [`text`]: text bounded by its size as encoded in the result document.
//! - [`kind`]: the stable, machine-readable error kinds and the exit codes that go with them.

pub mod check;
pub mod envelope;
pub mod input;
pub mod kind;
pub mod limits;
pub mod object;
pub mod protocol;
pub mod result_hash;
pub mod spec;
pub mod text;

pub use check::{CheckError, CheckedTask, IntakeRules, Limits, ModuleRef};
pub use envelope::{ErrorInfo, Phases, ResultEnvelope};
pub use input::{InputError, TaskInput};
pub use kind::ErrorKind;
pub use limits::LimitError;
pub use object::Object;
pub use result_hash::ResultHash;
pub use spec::{TaskLimits, TaskSpec};
