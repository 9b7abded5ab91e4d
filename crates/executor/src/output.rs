//! The executor's two output streams, kept in an order a container log can rely on.
//!
//! The seed's contract is that the LAST line of the container's log is the result document. A
//! container runtime (conmon, containerd, docker) reads stdout and stderr through two pipes and
//! interleaves them as they arrive, so a log line written to stderr before the document can still
//! land after it in the combined log. Two rules make the contract hold:
//!
//! - Where the streams are two pipes (the container case), the executor's own log lines go to
//!   stdout, ahead of the document on the same pipe, whose order the runtime keeps
//!   ([`LogStream::Auto`]; `LOG_STREAM` chooses explicitly).
//! - [`OutputGate`] seals both streams when the document is written: a log line from any thread
//!   (the watchdog, a panic) after that is dropped, and one being written finishes first.

use clap::ValueEnum;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Where the executor's own log lines go (`LOG_STREAM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogStream {
    /// stdout when stdout and stderr are two different pipes or sockets (a container runtime
    /// reading them apart), stderr otherwise (a terminal, a file, `2>&1`).
    Auto,
    /// Always stdout, before the document: one ordered stream.
    Stdout,
    /// Always stderr: under a container runtime a log line may then land after the document.
    Stderr,
}

impl LogStream {
    /// `Stdout` or `Stderr`: what `Auto` means for this process's streams.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto if streams_read_apart() => Self::Stdout,
            Self::Auto => Self::Stderr,
            other => other,
        }
    }
}

/// True when stdout and stderr are two different pipes or sockets.
fn streams_read_apart() -> bool {
    let (Ok(out), Ok(err)) = (
        rustix::fs::fstat(std::io::stdout()),
        rustix::fs::fstat(std::io::stderr()),
    ) else {
        return false;
    };
    let piped = |mode: u32| {
        matches!(
            rustix::fs::FileType::from_raw_mode(mode),
            rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket
        )
    };
    piped(out.st_mode) && piped(err.st_mode) && (out.st_dev, out.st_ino) != (err.st_dev, err.st_ino)
}

/// Serialises every write to the process's streams and closes them after the document.
#[derive(Debug)]
pub struct OutputGate {
    /// Where log lines go (resolved: never `Auto`).
    stream: LogStream,
    /// True once the document was written; held while writing, so no write interleaves.
    sealed: Mutex<bool>,
}

impl OutputGate {
    /// A gate sending log lines to `stream` (resolved against the process's streams).
    pub fn new(stream: LogStream) -> Arc<Self> {
        Arc::new(Self {
            stream: stream.resolve(),
            sealed: Mutex::new(false),
        })
    }

    /// Writes one log record, unless the document was written already (then it is dropped).
    fn write_log(&self, record: &[u8]) -> std::io::Result<()> {
        let sealed = self.sealed.lock().unwrap_or_else(|p| p.into_inner());
        if *sealed {
            return Ok(());
        }
        match self.stream {
            LogStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(record)?;
                out.flush()
            }
            _ => std::io::stderr().lock().write_all(record),
        }
    }

    /// Prints `line` as the last line of stdout and seals both streams: nothing this process
    /// logs afterwards is written. A failure to write is ignored (nobody is left to tell).
    pub fn write_last_line(&self, line: &str) {
        let mut sealed = self.sealed.lock().unwrap_or_else(|p| p.into_inner());
        *sealed = true;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The writer tracing formats each event into: one buffered record, written whole on drop.
pub struct LogRecord {
    gate: Arc<OutputGate>,
    buffer: Vec<u8>,
}

impl Write for LogRecord {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogRecord {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            let _ = self.gate.write_log(&self.buffer);
        }
    }
}

/// Makes one [`LogRecord`] per event for `tracing_subscriber`.
#[derive(Clone)]
pub struct GateWriter(pub Arc<OutputGate>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for GateWriter {
    type Writer = LogRecord;

    fn make_writer(&'a self) -> Self::Writer {
        LogRecord {
            gate: self.0.clone(),
            buffer: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_streams_resolve_to_themselves() {
        assert_eq!(LogStream::Stdout.resolve(), LogStream::Stdout);
        assert_eq!(LogStream::Stderr.resolve(), LogStream::Stderr);
        assert_ne!(LogStream::Auto.resolve(), LogStream::Auto);
    }
}
