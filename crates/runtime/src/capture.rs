//! Bounded capture of a guest's stdout or stderr.
//!
//! The guest may write without end; we keep the first `limit` bytes, drop the rest and remember
//! that we did. What reaches the result document is also cut at `limit` bytes as encoded there. Writes never fail, so a chatty guest is not killed for talking: it is the time or
//! fuel limit that ends a guest that only talks. The capture is shared (`Clone`), so a watchdog can
//! read what was written so far while the guest still runs.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasm_exec_task::text::truncate_encoded;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How many bytes a guest may hand over in one write (WASI's "permit").
const WRITE_PERMIT: usize = 64 * 1024;

/// A shared, bounded buffer standing in for a guest's output stream.
#[derive(Debug, Clone)]
pub struct OutputCapture {
    inner: Arc<Mutex<Captured>>,
    limit: usize,
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl OutputCapture {
    /// A capture that keeps at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::default(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A panic while holding this lock cannot leave the buffer inconsistent (appends only),
        // so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends what fits under the limit; reports whether anything was dropped.
    pub fn append(&self, data: &[u8]) {
        let mut captured = self.lock();
        let room = self.limit.saturating_sub(captured.bytes.len());
        let kept = data.len().min(room);
        captured.bytes.extend_from_slice(&data[..kept]);
        if kept < data.len() {
            captured.truncated = true;
        }
    }

    /// The text so far (invalid UTF-8 replaced), cut where its JSON encoding reaches the limit,
    /// and whether output was dropped.
    ///
    /// Bounding the encoded size keeps the result document within a fixed size whatever the
    /// guest writes: a control character takes six bytes there (`\u0001`), a replaced byte three.
    pub fn snapshot(&self) -> (String, bool) {
        let captured = self.lock();
        let mut text = String::from_utf8_lossy(&captured.bytes).into_owned();
        let cut = truncate_encoded(&mut text, self.limit);
        (text, captured.truncated || cut)
    }
}

impl IsTerminal for OutputCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for OutputCapture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for OutputCapture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for OutputCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_flags_the_rest() {
        let capture = OutputCapture::new(5);
        capture.append(b"abc");
        assert_eq!(capture.snapshot(), ("abc".to_string(), false));
        capture.append(b"defgh");
        assert_eq!(capture.snapshot(), ("abcde".to_string(), true));
        capture.clone().append(b"more");
        assert_eq!(capture.snapshot(), ("abcde".to_string(), true));
    }

    #[test]
    fn control_characters_are_kept_up_to_the_limit_as_encoded() {
        let capture = OutputCapture::new(60);
        capture.append(&[1u8; 60]);
        let (text, truncated) = capture.snapshot();
        assert_eq!(text, "\u{1}".repeat(10));
        assert!(truncated);
        let capture = OutputCapture::new(60);
        capture.append(b"line\n");
        assert_eq!(capture.snapshot(), ("line\n".to_string(), false));
    }
}
