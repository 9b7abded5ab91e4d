//! Deterministic names and labels for a task's Kubernetes objects: the same task id always gives
//! the same Job name, so a restarted coordinator finds (and adopts) the Job it made before.

use sha2::{Digest, Sha256};

/// Label on every object the coordinator creates; orphan clean-up lists by it.
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_KEY`].
pub const MANAGED_BY_VALUE: &str = "wasm-exec-coordinator";
/// Label holding a hash of the task id (label values allow only 63 characters of `[A-Za-z0-9-_.]`,
/// task ids do not); on the Job, the ConfigMap and the pod.
pub const TASK_LABEL: &str = "wasm-exec.io/task";
/// Annotation holding the task id itself, unchanged.
pub const TASK_ID_ANNOTATION: &str = "wasm-exec.io/task-id";

/// What every name starts with, so `kubectl get jobs` shows whose Jobs they are.
const PREFIX: &str = "wasm-exec-";
/// Characters kept from the task id: `PREFIX` + 40 + `-` + [`NAME_HASH_LEN`] stays under 63, the
/// limit of a DNS-1123 label (Job names end up in the pod's `job-name` label).
const READABLE_LEN: usize = 40;
/// Hex digits of the task id's SHA-256 in the name: two ids that sanitise alike still differ.
const NAME_HASH_LEN: usize = 10;
/// Hex digits of the task id's SHA-256 in the task label.
const LABEL_HASH_LEN: usize = 20;

/// The names and labels of one task's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNames {
    /// The task id, as given.
    pub task_id: String,
    /// Name of the Job and of its ConfigMap (different kinds may share a name).
    pub job: String,
    /// Value of [`TASK_LABEL`].
    pub task_hash: String,
}

impl TaskNames {
    /// Names for `task_id`: `wasm-exec-<sanitised id>-<hash>`, a valid DNS-1123 label.
    pub fn for_task(task_id: &str) -> Self {
        let digest = hex::encode(Sha256::digest(task_id.as_bytes()));
        let readable = sanitise(task_id);
        let hash = &digest[..NAME_HASH_LEN];
        let job = if readable.is_empty() {
            format!("{PREFIX}{hash}")
        } else {
            format!("{PREFIX}{readable}-{hash}")
        };
        Self {
            task_id: task_id.to_owned(),
            job,
            task_hash: digest[..LABEL_HASH_LEN].to_owned(),
        }
    }

    /// The label selector that finds this task's objects (and its pod).
    pub fn selector(&self) -> String {
        format!("{TASK_LABEL}={}", self.task_hash)
    }
}

/// The label selector that finds every object the coordinator made.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_KEY}={MANAGED_BY_VALUE}")
}

/// Lower case, `[a-z0-9-]` only, no leading, trailing or doubled `-`, at most [`READABLE_LEN`].
fn sanitise(id: &str) -> String {
    let mut out = String::with_capacity(READABLE_LEN);
    for c in id.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        if out.len() == READABLE_LEN {
            break;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns1123_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn names_are_deterministic_readable_and_hashed() {
        let a = TaskNames::for_task("fib");
        assert_eq!(a, TaskNames::for_task("fib"));
        assert!(a.job.starts_with("wasm-exec-fib-"), "{}", a.job);
        assert_eq!(a.job.len(), "wasm-exec-fib-".len() + NAME_HASH_LEN);
        assert_eq!(a.task_hash.len(), LABEL_HASH_LEN);
        assert_eq!(a.selector(), format!("wasm-exec.io/task={}", a.task_hash));
    }

    #[test]
    fn hostile_ids_give_valid_distinct_names() {
        let ids = [
            "Fib_12",
            "fib-12",
            "FIB 12",
            "--",
            "",
            "ünïcode/ταυ",
            &"x".repeat(300),
            "a..b__c--d",
            "0xDEADBEEF:42",
        ];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let names = TaskNames::for_task(id);
            assert!(is_dns1123_label(&names.job), "{id:?} -> {}", names.job);
            assert!(seen.insert(names.job.clone()), "collision for {id:?}");
            assert!(names.task_hash.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(
            TaskNames::for_task("a..b__c--d").job[..16],
            *"wasm-exec-a-b-c-"
        );
    }
}
