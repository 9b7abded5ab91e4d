//! The result document on an executor pod's last log line
//! (`wasm_exec_kube_backend::result::parse_last_line`).

use wasm_exec_kube_backend::result::parse_last_line;

/// Checks: no panic on any log (read lossily, as the pod log is); a document found there,
/// written back as the executor writes its line, is found again unchanged.
pub fn log_tail(data: &[u8]) {
    let log = String::from_utf8_lossy(data);
    let Some(envelope) = parse_last_line(&log) else {
        return;
    };
    let again = format!("{log}\n{}\n", envelope.to_line());
    assert_eq!(parse_last_line(&again), Some(envelope));
}
