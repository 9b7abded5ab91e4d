//! Fuzz targets: one function per parser of untrusted input, each driving the real code and
//! asserting what must hold for any bytes (no panic; round trips where they exist; a refusal,
//! never silent loss, for a damaged journal). `fuzz/` runs them under libFuzzer on nightly;
//! `tests/replay.rs` replays the committed corpus through them on stable.
//!
//! # Layout
//! One module per target, named as its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`:
//! - [`task`]: a task document through the intake check, and the input document;
//! - [`convert`]: JSON arguments to Wasm values and back;
//! - [`cid`]: CID text;
//! - [`car`]: a CARv1 rebuilt into a file;
//! - [`unixfs`]: dag-pb nodes and UnixFS data;
//! - [`log_tail`]: the result document on an executor pod's last log line;
//! - [`api_body`]: `POST /v1/tasks`'s content type and body;
//! - [`chain_event`]: a `TaskSubmitted` log to a task;
//! - [`journal`]: the state journal's judgement of damaged files;
//! - [`journal_record`]: one intact journal record's payload decoded as a batch.

pub mod api_body;
pub mod car;
pub mod chain_event;
pub mod cid;
pub mod convert;
pub mod journal;
pub mod journal_record;
pub mod log_tail;
pub mod task;
pub mod unixfs;

/// A target: its name and the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[Target] = &[
    ("api_body", api_body::api_body),
    ("car", car::car),
    ("chain_event", chain_event::chain_event),
    ("cid", cid::cid),
    ("convert", convert::convert),
    ("journal", journal::journal),
    ("journal_record", journal_record::journal_record),
    ("log_tail", log_tail::log_tail),
    ("task", task::task),
    ("unixfs", unixfs::unixfs),
];
