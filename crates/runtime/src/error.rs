//! The runtime's typed errors; each maps to one stable [`ErrorKind`] of the result document.

use wasm_exec_task::ErrorKind;

/// Everything that can stop a task before or while it runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The input document or an argument does not fit the entry.
    #[error("{0}")]
    BadInput(String),
    /// The module does not parse, validate, compile or link.
    #[error("{0}")]
    BadModule(String),
    /// The named entry is not exported; the message lists what is.
    #[error("{0}")]
    EntryNotFound(String),
    /// The guest trapped (the message says which trap, with a Wasm backtrace when available).
    #[error("{0}")]
    Trap(String),
    /// The wall-clock limit ran out.
    #[error(
        "the task ran past its time limit of {limit_sec} s (TIMEOUT_SEC); make the guest do less or raise the limit"
    )]
    Timeout {
        /// The limit that ran out, in seconds.
        limit_sec: f64,
    },
    /// Compiling the module outlasted the task's time limit (the compiler process was killed).
    #[error(
        "compiling the module took longer than the task's time limit of {limit_sec} s; make the module smaller or raise the limit"
    )]
    CompileTimeout {
        /// The limit that ran out, in seconds.
        limit_sec: f64,
    },
    /// Linear memory or table growth beyond the limit.
    #[error("{0}")]
    OutOfMemory(String),
    /// The fuel budget ran out.
    #[error(
        "the guest used all of its fuel ({budget} units, FUEL); raise FUEL or make the guest do less"
    )]
    OutOfFuel {
        /// The budget that ran out.
        budget: u64,
    },
    /// A host file (cache, engine setup) could not be used.
    #[error("{0}")]
    Io(String),
    /// The host is short of descriptors, memory or threads for now (see [`is_exhaustion`]).
    #[error("{0}; the host is short of file descriptors or memory for now")]
    Exhausted(String),
    /// The run was stopped by its [`CancelFlag`](crate::CancelFlag).
    #[error("the run was cancelled while it ran")]
    Cancelled,
}

/// Whether `e` says the host is short of a resource for now (EMFILE, ENFILE, ENOMEM, EAGAIN,
/// ENOBUFS), rather than that a file, a module or a request is wrong. Read from the OS error
/// code, never from the message.
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let transient = [
        Errno::MFILE,
        Errno::NFILE,
        Errno::NOMEM,
        Errno::AGAIN,
        Errno::NOBUFS,
    ];
    e.kind() == std::io::ErrorKind::OutOfMemory
        || e.raw_os_error()
            .is_some_and(|code| transient.iter().any(|t| t.raw_os_error() == code))
}

/// Whether `error` or any of its causes is an I/O error of [`is_exhaustion`].
pub fn caused_by_exhaustion(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(is_exhaustion)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

impl RuntimeError {
    /// The stable kind reported in the result document.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::BadInput(_) => ErrorKind::BadInput,
            RuntimeError::BadModule(_) => ErrorKind::BadModule,
            RuntimeError::EntryNotFound(_) => ErrorKind::EntryNotFound,
            RuntimeError::Trap(_) => ErrorKind::Trap,
            RuntimeError::Timeout { .. } | RuntimeError::CompileTimeout { .. } => {
                ErrorKind::Timeout
            }
            RuntimeError::OutOfMemory(_) => ErrorKind::OutOfMemory,
            RuntimeError::OutOfFuel { .. } => ErrorKind::OutOfFuel,
            RuntimeError::Io(_) => ErrorKind::Io,
            RuntimeError::Exhausted(_) => ErrorKind::HostExhausted,
            RuntimeError::Cancelled => ErrorKind::CancelledByRequest,
        }
    }
}
