//! What one pod status says for the wait on its Job: scheduled or not, running, stuck on a
//! reason that will not clear up by itself, disrupted, or the executor's container terminated
//! (found by its name: a kubelet lists container statuses sorted by name, so a sidecar may come
//! first).

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

/// Container waiting reasons that will not clear up by themselves: fail fast on them.
/// `ErrImageNeverPull` is a kubelet's for an image that is not on the node when the pull policy
/// is `Never` (seen on the suite's real node: without it the task waited for its deadline).
const STUCK_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ErrImageNeverPull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// What one pod status says, for the wait.
#[derive(Debug, Default)]
pub struct PodView {
    /// Bound to a node.
    pub scheduled: bool,
    /// Why the scheduler cannot place it, if it cannot.
    pub unschedulable: Option<String>,
    /// The executor's container is running.
    pub running: bool,
    /// Why the executor cannot start and never will (with the fix), if so.
    pub stuck: Option<String>,
    /// The executor's terminated state, once it ended.
    pub terminated: Option<ContainerStateTerminated>,
    /// Why the pod was disrupted (its `DisruptionTarget` condition: an eviction, a preemption,
    /// a node drain or a taint), if it was: its end is not the task's.
    pub disrupted: Option<String>,
}

impl PodView {
    /// The view of `pod`, whose executor's container is named `executor`.
    pub fn of(pod: &Pod, executor: &str) -> Self {
        let mut view = Self {
            scheduled: pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()),
            ..Self::default()
        };
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let Some(status) = &pod.status else {
            return view;
        };
        for c in status.conditions.iter().flatten() {
            if c.type_ == "DisruptionTarget" && c.status == "True" {
                view.disrupted = Some(format!(
                    "pod {name}: {}: {}",
                    c.reason.as_deref().unwrap_or("DisruptionTarget"),
                    c.message.as_deref().unwrap_or("")
                ));
            }
            if c.type_ == "PodScheduled" {
                if c.status == "True" {
                    view.scheduled = true;
                } else if c.reason.as_deref() == Some("Unschedulable") {
                    view.unschedulable = Some(c.message.clone().unwrap_or_default());
                }
            }
        }
        let Some(state) = status
            .container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == executor)
            .and_then(|c| c.state.as_ref())
        else {
            return view;
        };
        view.running = state.running.is_some();
        view.terminated = state.terminated.clone();
        if let Some(waiting) = &state.waiting
            && let Some(reason) = waiting.reason.as_deref()
            && STUCK_REASONS.contains(&reason)
        {
            let message = waiting.message.as_deref().unwrap_or("");
            let fix = if reason.contains("Image") {
                "check COORDINATOR_EXECUTOR_IMAGE: the image must exist in a registry the \
                 nodes can pull from, or be loaded into the cluster (kind load docker-image)"
            } else {
                "check the Job template (COORDINATOR_JOB_TEMPLATE): env, volumes and \
                 securityContext (runAsNonRoot needs a numeric non-root user)"
            };
            view.stuck = Some(format!(
                "pod {name} cannot start the executor: {reason}: {message}; {fix}"
            ));
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status
        }))
        .unwrap()
    }

    #[test]
    fn image_pull_errors_are_stuck_with_the_fix() {
        let view = PodView::of(
            &pod(json!({"containerStatuses": [{
                "name": "executor", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
            }]})),
            "executor",
        );
        let stuck = view.stuck.unwrap();
        assert!(stuck.contains("ImagePullBackOff") && stuck.contains("COORDINATOR_EXECUTOR_IMAGE"));
        let never = "Container image \"x:1\" is not present with pull policy of Never";
        let view = PodView::of(
            &pod(json!({"containerStatuses": [{
                "name": "executor", "image": "x:1", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImageNeverPull", "message": never}}
            }]})),
            "executor",
        );
        let stuck = view.stuck.unwrap();
        assert!(
            stuck.contains("ErrImageNeverPull") && stuck.contains(never),
            "{stuck}"
        );
        let view = PodView::of(
            &pod(json!({"containerStatuses": [{
                "name": "executor", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            }]})),
            "executor",
        );
        assert!(view.stuck.is_none());
    }

    #[test]
    fn the_executor_is_found_by_name_not_first_place() {
        let status = |name: &str, code: i32| {
            json!({"name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code}}})
        };
        let pod =
            pod(json!({"containerStatuses": [status("aaa-sidecar", 0), status("executor", 20)]}));
        assert_eq!(
            PodView::of(&pod, "executor").terminated.unwrap().exit_code,
            20
        );
    }

    #[test]
    fn a_disruption_target_condition_marks_the_pod_disrupted() {
        let view = PodView::of(
            &pod(json!({"conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting"
            }]})),
            "executor",
        );
        let disrupted = view.disrupted.unwrap();
        assert!(disrupted.contains("EvictionByEvictionAPI") && disrupted.contains("pod p"));
        let view = PodView::of(
            &pod(json!({"conditions": [{"type": "DisruptionTarget", "status": "False"}]})),
            "executor",
        );
        assert!(view.disrupted.is_none());
    }

    #[test]
    fn unschedulable_and_scheduled_come_from_the_condition() {
        let view = PodView::of(
            &pod(json!({"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient memory."
            }]})),
            "executor",
        );
        assert!(!view.scheduled);
        assert!(view.unschedulable.unwrap().contains("Insufficient memory"));
        let view = PodView::of(
            &pod(json!({"conditions": [{"type": "PodScheduled", "status": "True"}]})),
            "executor",
        );
        assert!(view.scheduled && view.unschedulable.is_none());
    }
}
