//! The watchdog: a thread that enforces TIMEOUT_SEC on the whole process.
//!
//! At the deadline it reports a `timeout` result, with whatever the guest wrote so far, and ends
//! the process. The guest thus runs without interruption checks compiled into it (full speed), and
//! even a guest stuck in a host call cannot outlive its limit.

use crate::report::Reporter;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasm_exec_runtime::{Captures, RuntimeError, failed};
use wasm_exec_task::{ErrorKind, ResultEnvelope};

/// What the watchdog knows of the run, filled in as the run progresses.
#[derive(Debug)]
struct Progress {
    /// The result document so far (entry, args, module digest once known).
    base: ResultEnvelope,
    /// The guest's output captures, once the call is about to start.
    captures: Option<Captures>,
    /// When the call started.
    call_started: Option<Instant>,
}

/// Handle to the watchdog thread; the main thread tells it how far the run got.
#[derive(Debug, Clone)]
pub struct Watchdog {
    progress: Arc<Mutex<Progress>>,
}

impl Watchdog {
    /// Starts the watchdog: at `deadline` it reports a timeout of `limit` through `reporter`
    /// and exits the process (unless a result was reported already).
    pub fn start(
        reporter: Arc<Reporter>,
        deadline: Instant,
        limit: Duration,
    ) -> std::io::Result<Self> {
        let mut base = ResultEnvelope::failure(ErrorKind::Timeout, "");
        base.error = None;
        let progress = Arc::new(Mutex::new(Progress {
            base,
            captures: None,
            call_started: None,
        }));
        let watched = progress.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                loop {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    std::thread::park_timeout(deadline - now);
                }
                let envelope = {
                    let progress = watched.lock().unwrap_or_else(|p| p.into_inner());
                    let mut envelope = failed(
                        &progress.base,
                        RuntimeError::Timeout {
                            limit_sec: limit.as_secs_f64(),
                        },
                    );
                    if let Some(captures) = &progress.captures {
                        captures.fill(&mut envelope);
                    }
                    if let Some(started) = progress.call_started {
                        envelope.duration_ms =
                            (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
                    }
                    envelope
                };
                tracing::warn!(
                    limit_sec = limit.as_secs_f64(),
                    "time limit reached; stopping the guest"
                );
                if let Some(code) = reporter.report(envelope) {
                    std::process::exit(code);
                }
            })?;
        Ok(Self { progress })
    }

    /// Records the planned run (entry, arguments, digest) and its captures as the call starts.
    pub fn call_starting(&self, base: &ResultEnvelope, captures: &Captures) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.base = base.clone();
        progress.captures = Some(captures.clone());
        progress.call_started = Some(Instant::now());
    }
}
