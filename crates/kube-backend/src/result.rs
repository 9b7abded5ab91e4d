//! Getting the executor's result document: first from the container's termination message (in
//! the pod status already watched: no extra request, survives log rotation), else from the last
//! line of the pod's log (the seed's way).
//!
//! The log is read from its start, up to a size that the task's own limits bound, never by
//! lines: the kubelet counts CRI log entries, and a runtime splits a long line into partial
//! entries (containerd at 16 KiB, conmon at 8 KiB), so "the last 5 lines" of a 200 KB document
//! are its last 40 KB. The executor writes only its few log lines and the document there.

use super::errors::{ApiFailure, Call};
use super::retry::RetryPolicy;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::api::{Api, LogParams};
use wasm_exec_task::{CheckedTask, ErrorKind, ResultEnvelope};

/// Room in the log beyond the document's bounded fields: the executor's own log lines, the
/// result value, the error message and the JSON around them.
const LOG_SLACK_BYTES: u64 = 256 << 10;
/// Characters of log quoted in an error.
const QUOTED: usize = 600;

/// Where the result is read from.
pub struct Collector<'a> {
    /// The pods of the task's namespace.
    pub pods: &'a Api<Pod>,
    /// Its namespace, for messages.
    pub namespace: &'a str,
    /// The executor's container, whose log is read (a pod with a sidecar has more than one).
    pub executor: &'a str,
    /// Retries of the log request.
    pub retry: RetryPolicy,
    /// Bytes of log read at most ([`log_limit_bytes`]).
    pub log_bytes: i64,
}

/// The most log a task's executor can write, so the most read back: its stdout and stderr, each
/// at most `max_output_bytes` as encoded in the document, the arguments echoed (at most twice
/// their JSON as submitted, re-encoded), and [`LOG_SLACK_BYTES`].
pub fn log_limit_bytes(task: &CheckedTask) -> i64 {
    let input = task.input.text.len() as u64;
    let bytes = task
        .limits
        .max_output_bytes
        .saturating_mul(2)
        .saturating_add(input.saturating_mul(2))
        .saturating_add(LOG_SLACK_BYTES);
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

impl Collector<'_> {
    /// The result of the pod `pod` whose executor ended in `container` (if seen).
    pub async fn collect(
        &self,
        pod: Option<&str>,
        container: Option<&ContainerStateTerminated>,
    ) -> ResultEnvelope {
        if let Some(envelope) = container
            .and_then(|c| c.message.as_deref())
            .and_then(parse_last_line)
        {
            return envelope;
        }
        if container.is_some_and(|c| c.reason.as_deref() == Some("OOMKilled")) {
            return ResultEnvelope::failure(
                ErrorKind::OutOfMemory,
                "the executor's container was killed for using more memory than its limit \
                 (OOMKilled); raise resources.limits.memory in the Job template or lower \
                 MAX_MEMORY_MB so the guest fails first",
            );
        }
        let Some(pod) = pod else {
            return ResultEnvelope::failure(
                ErrorKind::Io,
                "the Job ended without a pod being seen, so there is no result to read",
            );
        };
        let params = LogParams {
            limit_bytes: Some(self.log_bytes),
            container: Some(self.executor.to_owned()),
            ..LogParams::default()
        };
        let log = match self
            .retry
            .run("reading the pod log", || self.pods.logs(pod, &params))
            .await
        {
            Ok(log) => log,
            Err(e) => {
                let failure = ApiFailure::new(Call::new("get", "pods/log"), self.namespace, &e);
                return ResultEnvelope::failure(
                    ErrorKind::Io,
                    format!("reading the result from the log of pod {pod}: {failure}"),
                );
            }
        };
        parse_last_line(&log).unwrap_or_else(|| self.not_a_document(pod, container, &log))
    }

    /// The failure for a log whose last line is not a result document: the exit code's kind,
    /// and the log's tail quoted.
    fn not_a_document(
        &self,
        pod: &str,
        container: Option<&ContainerStateTerminated>,
        log: &str,
    ) -> ResultEnvelope {
        let code = container.map(|c| c.exit_code);
        let kind = code
            .and_then(|code| ErrorKind::ALL.into_iter().find(|k| k.exit_code() == code))
            .unwrap_or(ErrorKind::Io);
        let exit = code.map_or(String::new(), |c| format!(" (exit code {c})"));
        let cut = if log.len() as u64 >= self.log_bytes.unsigned_abs() {
            format!(
                " (the log was read up to its limit of {} bytes, which the task's \
                 MAX_OUTPUT_BYTES bounds: something other than the executor wrote to it)",
                self.log_bytes
            )
        } else {
            String::new()
        };
        ResultEnvelope::failure(
            kind,
            format!(
                "the last line of pod {pod}'s log is not a result document{exit}{cut}; log \
                 tail: {:?}",
                tail(log)
            ),
        )
    }
}

/// The result document on the last non-blank line of `text`, if it is one.
pub fn parse_last_line(text: &str) -> Option<ResultEnvelope> {
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    serde_json::from_str(line.trim()).ok()
}

/// The end of `log`, at most [`QUOTED`] characters.
fn tail(log: &str) -> &str {
    let log = log.trim_end();
    let mut start = log.len().saturating_sub(QUOTED);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_non_blank_line_is_the_document() {
        let doc = ResultEnvelope::failure(ErrorKind::Trap, "unreachable").to_line();
        let text = format!("starting\n{doc}\n\n");
        assert_eq!(
            parse_last_line(&text).unwrap().kind(),
            Some(ErrorKind::Trap)
        );
        assert!(parse_last_line("starting\nnot json\n").is_none());
        assert!(parse_last_line("").is_none());
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        let log = format!("{}é{}", "a".repeat(1000), "b".repeat(QUOTED - 1));
        let t = tail(&log);
        assert!(t.len() <= QUOTED && t.ends_with('b'));
    }
}
