//! The executor's configuration: the seed's environment variables and ours, each also a flag.
//!
//! Parsed by clap into [`Config`], then validated once into [`Settings`] (typed values, conflicts
//! named) so that the rest of the program never re-checks a setting.

use crate::output::LogStream;
use anyhow::{Context, bail};
use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{Parser, ValueEnum};
use serde_json::Value;
use std::path::{Path, PathBuf};
use wasm_exec_runtime::{CacheLocation, ChildCompiler, EngineOptions, Interruption, RunLimits};
use wasm_exec_task::limits;

/// Runs one WebAssembly task and writes its result document.
///
/// The result is written to OUTPUT_PATH and printed, compact, as the last line of stdout; the
/// executor's own logs go before it (LOG_STREAM). Exit status: 0 ok, 10 bad_input, 11 bad_module,
/// 12 entry_not_found, 20 trap, 21 timeout, 22 out_of_memory, 23 out_of_fuel, 30 io,
/// 2 invalid flags.
#[derive(Debug, Clone, Parser)]
#[command(name = "executor", version)]
pub struct Config {
    /// The Wasm module to run (binary, or WAT text).
    #[arg(long, env = "WASM_PATH", default_value = "/mnt/wasm/module.wasm")]
    pub wasm_path: PathBuf,

    /// Where to write the result: `*.json` gets the document, any other name a short report whose
    /// last line is the document. Written atomically; parent directories are created.
    #[arg(long, env = "OUTPUT_PATH", default_value = "/mnt/shared/result.txt")]
    pub output_path: PathBuf,

    /// Entry function to call, unless the input names one. When neither names one: `run` if
    /// exported, else `add(ADD_X, ADD_Y)`, else a WASI command's `_start`.
    #[arg(long, env = "ENTRY", value_name = "NAME (default: run)")]
    pub entry: Option<String>,

    /// First argument of the `add` fallback (used when `add` is called without arguments).
    #[arg(long, env = "ADD_X", default_value = "5", allow_hyphen_values = true)]
    pub add_x: String,

    /// Second argument of the `add` fallback.
    #[arg(long, env = "ADD_Y", default_value = "7", allow_hyphen_values = true)]
    pub add_y: String,

    /// Hard wall-clock limit, in seconds (fractions allowed), covering compilation and the call;
    /// above 0, at most 604800 (7 days).
    #[arg(long, env = "TIMEOUT_SEC", default_value_t = limits::DEFAULT_TIMEOUT_SEC)]
    pub timeout_sec: f64,

    /// Input document file: `{"entry": "fib", "args": [12]}` or a bare array of arguments.
    #[arg(long, env = "INPUT_PATH")]
    pub input_path: Option<PathBuf>,

    /// Input document given inline (same forms as INPUT_PATH; set one, not both).
    #[arg(long, env = "ARGS_JSON", allow_hyphen_values = true)]
    pub args_json: Option<String>,

    /// Memory budget of the task, in MiB: all its linear memories and tables together (a table
    /// element counts 8 bytes); 1 to 65536.
    #[arg(long, env = "MAX_MEMORY_MB", default_value_t = limits::DEFAULT_MEMORY_MB)]
    pub max_memory_mb: u64,

    /// Instruction budget for deterministic metering; the result reports fuel consumed.
    /// Off by default (metering slows guests down).
    #[arg(long, env = "FUEL")]
    pub fuel: Option<u64>,

    /// Bytes of the guest's stdout, and of its stderr, kept in the result; the rest is dropped
    /// and the result says `truncated`; 0 to 67108864.
    #[arg(long, env = "MAX_OUTPUT_BYTES", default_value_t = limits::DEFAULT_OUTPUT_BYTES)]
    pub max_output_bytes: u64,

    /// Directory for compiled modules, keyed by module SHA-256 and engine settings; a second run
    /// of the same module skips compilation. Created with mode 0700; refused if it belongs to
    /// another user or group or others can write it.
    #[arg(long, env = "WASM_CACHE_DIR")]
    pub wasm_cache_dir: Option<PathBuf>,

    /// Key that authenticates the cache's entries (HMAC-SHA256; at least 32 bytes), outside
    /// WASM_CACHE_DIR; created with mode 0600 if missing; refused if others can read it or group
    /// or others can write it. Default: WASM_CACHE_DIR with `.key` appended.
    #[arg(long, env = "WASM_CACHE_KEY_FILE")]
    pub wasm_cache_key_file: Option<PathBuf>,

    /// Largest Wasm call stack, in KiB; deeper recursion traps; 1 to 65536.
    #[arg(long, env = "MAX_WASM_STACK_KB", default_value_t = 1024)]
    pub max_wasm_stack_kb: u64,

    /// Data one compiler child process may use, in MiB: the module is compiled in a child process
    /// of this executable, killed at TIMEOUT_SEC, and a compile needing more is `out_of_memory`.
    /// 0 compiles in this process (bounded by the watchdog and the module shape check only).
    #[arg(long, env = "COMPILE_MEMORY_MB", default_value_t = 1024)]
    pub compile_memory_mb: u64,

    /// Internal: be the compiler child process (module on stdin, compiled code on stdout).
    #[arg(long, hide = true)]
    pub compile_module: bool,

    /// Where the executor's own log lines go: `auto` (stdout, ahead of the result, when stdout
    /// and stderr are two pipes as under a container runtime, which would otherwise interleave
    /// them and could put a log line after the result; stderr otherwise), `stdout` or `stderr`.
    #[arg(long, env = "LOG_STREAM", value_enum, default_value_t = LogStream::Auto)]
    pub log_stream: LogStream,

    /// How TIMEOUT_SEC is enforced: `watchdog` (a thread reports the timeout and ends the
    /// process; guests run at full speed) or `epoch` (checks compiled into the guest, as
    /// in-process; slower on call-heavy code).
    #[arg(long, env = "TIMEOUT_ENFORCEMENT", value_enum, default_value_t = Enforcement::Watchdog)]
    pub timeout_enforcement: Enforcement,

    /// A file that also gets the compact result document (the last stdout line), written in
    /// place, when it is at most 4096 bytes; nothing is written there when it is larger. For
    /// Kubernetes' termination message: `/dev/termination-log`. A failure to write it is only a
    /// warning. Empty: off.
    #[arg(
        long,
        env = "TERMINATION_MESSAGE_PATH",
        default_value = "",
        hide_default_value = true,
        // Unlike the default path parser, this one takes the empty value that means off.
        value_parser = OsStringValueParser::new().map(PathBuf::from)
    )]
    pub termination_message_path: PathBuf,
}

/// How the wall-clock limit is enforced in the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Enforcement {
    /// A watchdog thread ends the process at the deadline.
    Watchdog,
    /// Epoch interruption inside the guest, with the watchdog as a backstop.
    Epoch,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Engine options derived from the configuration.
    pub engine: EngineOptions,
    /// Limits of the run.
    pub limits: RunLimits,
    /// The input document's text, from INPUT_PATH or ARGS_JSON (empty if neither).
    pub input_text: String,
    /// The `add` fallback's arguments.
    pub add_fallback: [Value; 2],
    /// The compiled-module cache and its key, if WASM_CACHE_DIR is set.
    pub cache: Option<CacheLocation>,
    /// Compiles in child processes of this executable, unless COMPILE_MEMORY_MB is 0.
    pub compiler: Option<ChildCompiler>,
}

/// Largest input document read from INPUT_PATH.
const MAX_INPUT_BYTES: u64 = 64 << 20;

impl Config {
    /// TERMINATION_MESSAGE_PATH, unless it is empty (off).
    pub fn termination_message_path(&self) -> Option<&Path> {
        Some(self.termination_message_path.as_path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// Validates the configuration and reads the input document. Errors name the setting.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let timeout = limits::timeout("TIMEOUT_SEC", self.timeout_sec)?;
        let max_memory_bytes = limits::memory_bytes("MAX_MEMORY_MB", self.max_memory_mb)?;
        let max_output_bytes = limits::output_bytes("MAX_OUTPUT_BYTES", self.max_output_bytes)?;
        let max_wasm_stack = limits::wasm_stack_bytes("MAX_WASM_STACK_KB", self.max_wasm_stack_kb)?;
        let cache = self.cache_location()?;
        let input_text = match (&self.input_path, &self.args_json) {
            (Some(path), Some(_)) => bail!(
                "set INPUT_PATH or ARGS_JSON, not both (INPUT_PATH is {})",
                path.display()
            ),
            (Some(path), None) => read_input(path)?,
            (None, Some(text)) => text.clone(),
            (None, None) => String::new(),
        };
        Ok(Settings {
            engine: EngineOptions {
                interruption: match self.timeout_enforcement {
                    Enforcement::Watchdog => Interruption::External,
                    Enforcement::Epoch => Interruption::Epoch,
                },
                fuel_metering: self.fuel.is_some(),
                max_wasm_stack,
            },
            limits: RunLimits {
                timeout,
                max_memory_bytes,
                fuel: self.fuel,
                max_output_bytes,
                spent: std::time::Duration::ZERO,
            },
            input_text,
            add_fallback: [json_or_string(&self.add_x), json_or_string(&self.add_y)],
            cache,
            compiler: self.compiler()?,
        })
    }

    /// The compiler child processes: this executable with `--compile-module`.
    fn compiler(&self) -> anyhow::Result<Option<ChildCompiler>> {
        if self.compile_memory_mb == 0 {
            return Ok(None);
        }
        let program = std::env::current_exe()
            .context("finding this executable to compile in (or set COMPILE_MEMORY_MB=0)")?;
        Ok(Some(ChildCompiler::new(
            program,
            vec!["--compile-module".into()],
            self.compile_memory_mb.saturating_mul(1 << 20),
            "COMPILE_MEMORY_MB",
        )))
    }

    /// WASM_CACHE_DIR with its key: WASM_CACHE_KEY_FILE, or the default beside the directory.
    fn cache_location(&self) -> anyhow::Result<Option<CacheLocation>> {
        let Some(dir) = &self.wasm_cache_dir else {
            if let Some(key) = &self.wasm_cache_key_file {
                bail!(
                    "WASM_CACHE_KEY_FILE is set (\"{}\") but WASM_CACHE_DIR is not; set both or neither",
                    key.display()
                );
            }
            return Ok(None);
        };
        let mut location = CacheLocation::beside(dir);
        if let Some(key) = &self.wasm_cache_key_file {
            location.key_file = key.clone();
        }
        if location.key_file.starts_with(dir) {
            bail!(
                "WASM_CACHE_KEY_FILE \"{}\" is inside WASM_CACHE_DIR \"{}\": whoever can write entries could then read or replace the key; keep it outside",
                location.key_file.display(),
                dir.display()
            );
        }
        Ok(Some(location))
    }
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading INPUT_PATH \"{}\"", path.display()))?;
    if meta.len() > MAX_INPUT_BYTES {
        bail!(
            "INPUT_PATH \"{}\" is {} bytes, over the {MAX_INPUT_BYTES}-byte limit",
            path.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("reading INPUT_PATH \"{}\"", path.display()))
}

/// `ADD_X=5` is the number 5; anything that is not JSON is kept as a string for the converter.
fn json_or_string(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("executor").chain(args.iter().copied()))
    }

    #[test]
    fn both_inputs_is_an_error_naming_both() {
        let err = config(&["--input-path", "/x.json", "--args-json", "[1]"])
            .settings()
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("INPUT_PATH") && msg.contains("ARGS_JSON"),
            "{msg}"
        );
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = config(&[]);
        assert_eq!(c.wasm_path, PathBuf::from("/mnt/wasm/module.wasm"));
        assert_eq!(c.output_path, PathBuf::from("/mnt/shared/result.txt"));
        let s = c.settings().unwrap();
        assert_eq!(s.add_fallback, [serde_json::json!(5), serde_json::json!(7)]);
        assert_eq!(s.limits.timeout, std::time::Duration::from_secs(20));
        assert_eq!(s.limits.max_memory_bytes, 256 << 20);
        assert_eq!(s.engine.interruption, Interruption::External);
        assert_eq!(c.termination_message_path(), None);
    }

    #[test]
    fn termination_message_path_is_off_when_empty() {
        let c = config(&["--termination-message-path", "/dev/termination-log"]);
        assert_eq!(
            c.termination_message_path(),
            Some(Path::new("/dev/termination-log"))
        );
        assert_eq!(
            config(&["--termination-message-path", ""]).termination_message_path(),
            None
        );
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert!(config(&["--timeout-sec", "0"]).settings().is_err());
        assert!(config(&["--max-memory-mb", "0"]).settings().is_err());
        for (flag, value) in [
            ("--timeout-sec", "1e20"),
            ("--max-memory-mb", "18446744073709551615"),
            ("--max-output-bytes", "18446744073709551615"),
            ("--max-wasm-stack-kb", "18446744073709551615"),
        ] {
            let err = config(&[flag, value]).settings().unwrap_err();
            assert!(format!("{err:#}").contains("must be"), "{flag}: {err:#}");
        }
    }
}
