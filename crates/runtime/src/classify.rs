//! Turning wasmtime's errors into outcomes: by their type (trap codes, our limiter's error, WASI
//! exits), never by their text, with messages that name the trap and the guest frames.

use crate::RuntimeError;
use crate::limiter::LimitExceeded;
use crate::runtime::RunLimits;
use wasmtime::{Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

/// A failure of instantiation or the call, before it becomes a [`RuntimeError`].
pub(crate) enum Failure {
    /// A WASI `proc_exit` with this status.
    Exit(i32),
    /// Anything else.
    Error(RuntimeError),
}
pub(crate) use Failure::Exit;

impl Failure {
    pub(crate) fn into_error(self) -> RuntimeError {
        match self {
            Exit(code) => RuntimeError::Trap(format!(
                "the command exited with status {code}; see its stderr"
            )),
            Failure::Error(e) => e,
        }
    }
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure::Error(e)
    }
}

/// Classifies a wasmtime error by its type, never by its text.
pub(crate) fn classify(e: wasmtime::Error, limits: &RunLimits, instantiating: bool) -> Failure {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Exit(exit.0);
    }
    if e.downcast_ref::<crate::cancel::Stopped>().is_some() {
        return Failure::Error(RuntimeError::Cancelled);
    }
    if let Some(limit) = e.downcast_ref::<LimitExceeded>() {
        return Failure::Error(RuntimeError::OutOfMemory(limit.to_string()));
    }
    // Out of descriptors or memory for a mapping (a memfd, a stack): the host's state, not the
    // module's, found by the I/O error's code in the chain.
    if e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(crate::error::is_exhaustion)
    }) {
        return Failure::Error(RuntimeError::Exhausted(one_line(&e)));
    }
    let error = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RuntimeError::Timeout {
            limit_sec: limits.timeout.as_secs_f64(),
        },
        Some(Trap::OutOfFuel) => RuntimeError::OutOfFuel {
            budget: limits.fuel.unwrap_or(u64::MAX),
        },
        Some(Trap::StackOverflow) => RuntimeError::Trap(format!(
            "wasm trap: call stack exhausted: the guest recursed deeper than the Wasm stack limit (MAX_WASM_STACK_KB){}",
            backtrace(&e)
        )),
        Some(trap) => RuntimeError::Trap(format!("{trap}{}", backtrace(&e))),
        None if instantiating => RuntimeError::BadModule(format!(
            "the module cannot be instantiated: {}; it may import something other than WASI preview 1",
            one_line(&e)
        )),
        None => RuntimeError::Trap(one_line(&e)),
    };
    Failure::Error(error)
}

/// The innermost Wasm frames of a trap, e.g. ` at divide < #43 < #12`, if wasmtime recorded them.
fn backtrace(e: &wasmtime::Error) -> String {
    const FRAMES: usize = 6;
    let Some(trace) = e.downcast_ref::<WasmBacktrace>() else {
        return String::new();
    };
    let frames: Vec<String> = trace
        .frames()
        .iter()
        .take(FRAMES)
        .map(|f| match f.func_name() {
            Some(name) => name.to_owned(),
            None => format!("#{}", f.func_index()),
        })
        .collect();
    if frames.is_empty() {
        return String::new();
    }
    let more = if trace.frames().len() > FRAMES {
        " < ..."
    } else {
        ""
    };
    format!(
        " (wasm frames, innermost first: {}{more})",
        frames.join(" < ")
    )
}

/// An error chain on one line: `outer: inner: cause`, backtrace lines joined with `; `.
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
