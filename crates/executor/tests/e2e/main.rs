//! End-to-end tests of the `executor` binary, run as a process with env vars as in a Job.

mod util;

mod cache;
mod fuel;
mod golden;
mod hostile;
mod inputs;
mod kinds;
mod numbers;
mod samples;
mod settings;
mod streams;
mod termination;
