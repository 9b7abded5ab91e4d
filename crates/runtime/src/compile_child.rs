//! Compiling in a child process: the one step of a task that wasmtime cannot interrupt, moved
//! where the kernel can stop it at the task's deadline and cap its memory.
//!
//! The parent ([`ChildCompiler`]) starts its own executable with a hidden command, sends the
//! module (binary Wasm, already shape-checked) on the child's stdin and the engine options in
//! [`OPTIONS_ENV`]; the child ([`serve`]) limits its data (`RLIMIT_DATA`), compiles with
//! `Engine::precompile_module` and writes the compiled code to stdout. The parent kills it when
//! the task's time runs out. It loads the code as its own, since the child is its own
//! executable and the pipe is private to the two.

use crate::RuntimeError;
use crate::engine::{EngineOptions, Interruption};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The variable that carries the engine options and memory cap to the child.
pub const OPTIONS_ENV: &str = "WASM_EXEC_COMPILE_OPTIONS";

/// The child's exit status when the module does not validate or compile (its stderr says why).
const EXIT_BAD_MODULE: u8 = 3;
/// The child's exit status when its own setup failed (options, limit, pipes).
const EXIT_SETUP: u8 = 4;
/// The most of the child's stderr kept for a message.
const STDERR_KEPT: u64 = 2048;

/// Starts compiler processes: `program args...`, each capped at `memory_limit_bytes` of data.
#[derive(Debug, Clone)]
pub struct ChildCompiler {
    /// The executable to start (the caller's own, which runs [`serve`] for `args`).
    program: PathBuf,
    /// The arguments that select its compile mode.
    args: Vec<OsString>,
    /// The child's data limit (`RLIMIT_DATA`), in bytes.
    memory_limit_bytes: u64,
    /// The setting that sets it, named in the message when a compile needs more.
    setting: &'static str,
}

impl ChildCompiler {
    /// A compiler that runs `program args...` (which must call [`serve`]) with a data limit of
    /// `memory_limit_bytes`, set by the caller's `setting`.
    pub fn new(
        program: PathBuf,
        args: Vec<OsString>,
        memory_limit_bytes: u64,
        setting: &'static str,
    ) -> Self {
        Self {
            program,
            args,
            memory_limit_bytes,
            setting,
        }
    }

    /// Compiles `wasm` for `options` in a child process within `time_limit` (measured from
    /// `started`, so that time already spent counts); the compiled code, as
    /// `Module::serialize` makes it.
    pub(crate) fn compile(
        &self,
        options: &EngineOptions,
        wasm: &[u8],
        started: Instant,
        time_limit: Option<Duration>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut child = self.start(options)?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        std::thread::scope(|scope| {
            let (done, finished) = mpsc::channel();
            scope.spawn(move || {
                // A child that dies early closes the pipe; its status says why.
                let _ = stdin.map(|mut pipe| pipe.write_all(wasm));
            });
            let errors = scope.spawn(move || {
                let mut text = Vec::new();
                let _ = stderr.map(|pipe| pipe.take(STDERR_KEPT).read_to_end(&mut text));
                String::from_utf8_lossy(&text).trim().to_owned()
            });
            scope.spawn(move || {
                let read = stdout.map(|mut pipe| {
                    let mut code = Vec::new();
                    pipe.read_to_end(&mut code).map(|_| code)
                });
                let _ = done.send(read);
            });
            let waited = match time_limit {
                Some(limit) => finished.recv_timeout(limit.saturating_sub(started.elapsed())),
                None => finished
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            let code = match waited {
                Ok(Some(Ok(code))) => code,
                Ok(Some(Err(e))) => {
                    end(&mut child);
                    return Err(RuntimeError::Io(format!(
                        "reading the compiler process's output: {e}"
                    )));
                }
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    end(&mut child);
                    return Err(RuntimeError::Io(
                        "the compiler process had no output pipe".into(),
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    end(&mut child);
                    return Err(RuntimeError::CompileTimeout {
                        limit_sec: time_limit.unwrap_or_default().as_secs_f64(),
                    });
                }
            };
            let status = child
                .wait()
                .map_err(|e| RuntimeError::Io(format!("waiting for the compiler process: {e}")))?;
            let stderr = errors.join().unwrap_or_default();
            outcome(status, code, &stderr, self)
        })
    }

    /// Starts the child with piped stdio and nothing of our environment but its options.
    fn start(&self, options: &EngineOptions) -> Result<Child, RuntimeError> {
        Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .env(OPTIONS_ENV, encode(options, self.memory_limit_bytes))
            // mimalloc (the static build's allocator) reserves 1 GiB of writable address space
            // up front; 64 MiB at a time keeps the data limit close to what is really used.
            .env("MIMALLOC_ARENA_RESERVE", "64MiB")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let message = format!(
                    "starting the compiler process {}: {e}",
                    self.program.display()
                );
                // Out of descriptors or processes for now: the task is tried again later.
                if crate::error::is_exhaustion(&e) {
                    RuntimeError::Exhausted(message)
                } else {
                    RuntimeError::Io(message)
                }
            })
    }
}

/// Kills the child and reaps it, so no zombie is left.
fn end(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The compiled code, or the error the child's status and stderr say.
fn outcome(
    status: ExitStatus,
    code: Vec<u8>,
    stderr: &str,
    compiler: &ChildCompiler,
) -> Result<Vec<u8>, RuntimeError> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return Ok(code);
    }
    let said = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.lines().collect::<Vec<_>>().join("; "))
    };
    // Rust reports a failed allocation ("memory allocation of N bytes failed") and aborts; under
    // RLIMIT_DATA that is the compiler running out of its allowance.
    let aborted = status.signal() == Some(rustix::process::Signal::ABORT.as_raw());
    if aborted && stderr.contains("memory allocation of") {
        return Err(RuntimeError::OutOfMemory(format!(
            "compiling the module needed more than the compiler's {} MiB ({}); make the \
             module smaller or raise the limit",
            compiler.memory_limit_bytes >> 20,
            compiler.setting
        )));
    }
    match status.code() {
        Some(c) if c == i32::from(EXIT_BAD_MODULE) => Err(RuntimeError::BadModule(format!(
            "the module does not validate or compile{said}"
        ))),
        Some(c) if c == i32::from(EXIT_SETUP) => Err(RuntimeError::Io(format!(
            "the compiler process could not start its work{said}"
        ))),
        _ => Err(RuntimeError::BadModule(format!(
            "the compiler process died on this module ({status}){said}"
        ))),
    }
}

/// `interruption,fuel,stack,memory`: the options the compiled code depends on, and the cap.
fn encode(options: &EngineOptions, memory_limit_bytes: u64) -> String {
    let interruption = match options.interruption {
        Interruption::Epoch => "epoch",
        Interruption::External => "external",
    };
    format!(
        "{interruption},{},{},{memory_limit_bytes}",
        u8::from(options.fuel_metering),
        options.max_wasm_stack
    )
}

/// The inverse of [`encode`].
fn decode(text: &str) -> Option<(EngineOptions, u64)> {
    let mut parts = text.split(',');
    let interruption = match parts.next()? {
        "epoch" => Interruption::Epoch,
        "external" => Interruption::External,
        _ => return None,
    };
    let fuel_metering = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let max_wasm_stack = parts.next()?.parse().ok()?;
    let memory = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((
        EngineOptions {
            interruption,
            fuel_metering,
            max_wasm_stack,
        },
        memory,
    ))
}

/// The child's side: caps its data, reads the module from stdin, compiles it, and
/// writes the compiled code to stdout. Call it from the hidden command that [`ChildCompiler`]
/// starts; it reads its settings from [`OPTIONS_ENV`].
pub fn serve() -> ExitCode {
    // A compile outlives nothing: if the parent dies, so does the child.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let setup = |message: String| {
        eprintln!("{message}");
        ExitCode::from(EXIT_SETUP)
    };
    let Some((options, memory)) = std::env::var(OPTIONS_ENV).ok().as_deref().and_then(decode)
    else {
        return setup(format!(
            "{OPTIONS_ENV} is missing or malformed; this command is internal"
        ));
    };
    let limit = rustix::process::Rlimit {
        current: Some(memory),
        maximum: Some(memory),
    };
    // RLIMIT_DATA counts every private writable mapping (heap and allocator arenas), not the
    // read-only or reserved address space that RLIMIT_AS would also count.
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Data, limit) {
        return setup(format!("limiting the compiler's memory: {e}"));
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        return setup(format!("reading the module: {e}"));
    }
    let engine = match options.engine() {
        Ok(engine) => engine,
        Err(e) => return setup(e.to_string()),
    };
    match engine.precompile_module(&wasm) {
        Ok(code) => match std::io::stdout().lock().write_all(&code) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => setup(format!("writing the compiled code: {e}")),
        },
        Err(e) => {
            eprintln!("{}", crate::classify::one_line(&e));
            ExitCode::from(EXIT_BAD_MODULE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        let options = EngineOptions {
            interruption: Interruption::External,
            fuel_metering: true,
            max_wasm_stack: 123_456,
        };
        assert_eq!(decode(&encode(&options, 1 << 30)), Some((options, 1 << 30)));
        assert_eq!(decode("epoch,1,5"), None);
        assert_eq!(decode("epoch,2,5,6"), None);
        assert_eq!(decode("epoch,1,5,6,7"), None);
    }
}
