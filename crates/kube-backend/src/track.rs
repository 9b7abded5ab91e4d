//! Waiting for a task's Job by watching it and its pod (two watch requests, no polling): ends on
//! the Job's Complete or Failed condition (or earlier, on the executor's exit when that settles
//! the Job), on a pod that cannot start, at the overall deadline, or at shutdown; and times the
//! phases a user waits through.

use super::pod::PodView;
use super::refusal::Refusals;
use super::watch::{Change, Watch};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Event, Pod};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use wasm_exec_task::Phases;

/// How long to wait, and for what.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The name of the executor's container, whose status is the task's.
    pub executor: String,
    /// When to give up on the Job as a whole.
    pub deadline: Instant,
    /// How long a pod may stay unschedulable before the task fails; for want of room
    /// ([`waits_for_room`]), counted from the last time one of this backend's tasks ended.
    pub unschedulable_grace: Duration,
    /// Changes each time one of this backend's tasks ends: room may have been made.
    pub progress: watch::Receiver<u64>,
    /// How long after the Job's creation no pod may be seen before the wait also watches the
    /// Job's `FailedCreate` events (one more request, only then).
    pub pod_create_grace: Duration,
    /// How long to wait for the pod's final status once the Job has ended (the two watches are
    /// not ordered with each other).
    pub pod_lag: Duration,
    /// True when the Job may run another pod after a failed one (`backoffLimit` above 0): a
    /// failed container then ends nothing until the Job says so.
    pub retries: bool,
}

/// How the wait ended.
#[derive(Debug)]
pub enum Ended {
    /// The Job ended, or its executor's exit settles how (`failed` tells which); `container` is
    /// the executor's final state if it was seen, `pod` the last pod seen.
    Finished {
        /// True for the Failed condition.
        failed: bool,
        /// The condition's reason (`DeadlineExceeded`, `PodFailurePolicy`, ...; empty when the
        /// executor's exit settled it).
        reason: String,
        /// The condition's message.
        message: String,
        /// Name of the last pod seen.
        pod: Option<String>,
        /// The executor container's terminated state, if seen.
        container: Option<ContainerStateTerminated>,
    },
    /// The pod cannot run (image, config, scheduling): the message says why and what to fix.
    Stuck(String),
    /// The cluster refused to create the pod (`FailedCreate`): the message says why.
    Refused(String),
    /// The Job failed with no pod of its own ending: the last was disrupted (evicted,
    /// preempted, drained), and the Job's podFailurePolicy counted it: the message says how.
    Disrupted(String),
    /// The overall deadline passed.
    Deadline,
    /// The coordinator is shutting down.
    Cancelled,
    /// The API failed, or the Job vanished.
    Api(String),
}

/// The watches of one task: its Job, its pods, and (opened only when no pod shows up in time)
/// the Job's `FailedCreate` events.
pub struct Watches<'a> {
    /// The task's Job.
    pub jobs: &'a mut Watch<Job>,
    /// Its pods.
    pub pods: &'a mut Watch<Pod>,
    /// Its `FailedCreate` events ([`refusal::params`]).
    pub events: &'a mut Watch<Event>,
}

/// Watches the task's Job and pods until the Job ends; `started` is when the Job was created
/// or adopted.
pub async fn track(
    watches: Watches<'_>,
    limits: Limits,
    started: Instant,
    shutdown: &CancellationToken,
) -> (Ended, Phases) {
    let mut clock = Clock::new(started);
    let ended = wait(watches, limits, &mut clock, shutdown).await;
    (ended, clock.phases())
}

async fn wait(
    Watches { jobs, pods, events }: Watches<'_>,
    limits: Limits,
    clock: &mut Clock,
    shutdown: &CancellationToken,
) -> Ended {
    if let Err(e) = jobs.open().await {
        return Ended::Api(e.to_string());
    }
    if let Err(e) = pods.open().await {
        return Ended::Api(e.to_string());
    }
    let mut seen = Seen::default();
    let mut refusals = Refusals::new(events);
    let mut progress = limits.progress.clone();
    loop {
        if let Some(ended) = seen.settled(&limits) {
            return ended;
        }
        let events_from = (refusals.is_closed() && seen.last_pod.is_none())
            .then_some(clock.started + limits.pod_create_grace);
        let unschedulable_until = seen
            .unschedulable
            .as_ref()
            .map(|(since, _)| *since + limits.unschedulable_grace);
        let lag_until = seen.job_end.as_ref().map(|end| end.at + limits.pod_lag);
        tokio::select! {
            () = shutdown.cancelled() => return Ended::Cancelled,
            () = sleep_until(limits.deadline) => return Ended::Deadline,
            () = sleep_until(unschedulable_until.unwrap_or(limits.deadline)), if unschedulable_until.is_some() => {
                return unschedulable(seen, &limits);
            }
            Ok(()) = progress.changed(), if seen.waits_for_room() => seen.restart_grace(),
            () = sleep_until(events_from.unwrap_or(limits.deadline)), if events_from.is_some() => {
                refusals.open().await;
            }
            refused = refusals.next(), if refusals.is_open() => {
                if let Some(message) = refused {
                    return Ended::Refused(message);
                }
            }
            () = sleep_until(lag_until.unwrap_or(limits.deadline)), if lag_until.is_some() => {
                if let Some(end) = seen.job_end.take() {
                    return seen.finish(end);
                }
            }
            change = jobs.next() => match change {
                Err(e) => return Ended::Api(e.to_string()),
                Ok(Change::Deleted(_)) => {
                    return Ended::Api("the Job was deleted before it finished (by someone else, or its ttlSecondsAfterFinished)".into());
                }
                Ok(Change::Now(job)) => seen.job(&job, clock),
            },
            change = pods.next() => match change {
                Err(e) => return Ended::Api(e.to_string()),
                Ok(Change::Deleted(_)) => {}
                Ok(Change::Now(pod)) => {
                    if let Some(stuck) = seen.pod(&pod, &limits.executor, clock) {
                        return stuck;
                    }
                }
            },
        }
    }
}

/// Whether the scheduler's `message` says some node lacks only room (`Insufficient cpu`,
/// `Insufficient memory`, `Too many pods`): such a pod waits its turn while the coordinator's
/// own tasks end and free it, instead of failing while its queue is moving. Any other reason (no
/// node matches its selector, tolerations, volumes) cannot change by waiting.
pub fn waits_for_room(message: &str) -> bool {
    message.contains("Insufficient ") || message.contains("Too many pods")
}

/// The end of a wait whose pod stayed unschedulable for the grace.
fn unschedulable(seen: Seen, limits: &Limits) -> Ended {
    let message = seen.unschedulable.map(|(_, m)| m).unwrap_or_default();
    Ended::Stuck(format!(
        "the pod could not be scheduled for {} s ({message}); make room in the cluster or lower \
         the template's resources.requests, nodeSelector or tolerations",
        limits.unschedulable_grace.as_secs()
    ))
}

impl Seen {
    /// Whether the pod is unschedulable for want of room only ([`waits_for_room`]).
    fn waits_for_room(&self) -> bool {
        self.unschedulable
            .as_ref()
            .is_some_and(|(_, message)| waits_for_room(message))
    }

    /// Another task of ours ended: the queue moves, so the unschedulable grace starts again.
    fn restart_grace(&mut self) {
        if let Some((since, _)) = self.unschedulable.as_mut() {
            *since = Instant::now();
        }
    }
}

/// What the watches have shown so far.
#[derive(Debug, Default)]
struct Seen {
    /// Name of the last pod seen.
    last_pod: Option<String>,
    /// The executor's terminated state in the newest pod, if it ended.
    container: Option<ContainerStateTerminated>,
    /// Since when, and why, the pod is unschedulable.
    unschedulable: Option<(Instant, String)>,
    /// The Job's terminal condition, once seen.
    job_end: Option<JobEnd>,
    /// The pods seen disrupted, and how: their end is not the task's, so their later views are
    /// ignored (the job controller runs another pod, unless the podFailurePolicy counts it).
    disrupted: Vec<(String, String)>,
}

/// A Job's terminal condition and when it was seen.
#[derive(Debug, Clone)]
struct JobEnd {
    /// When the watch showed it.
    at: Instant,
    /// True for the Failed condition.
    failed: bool,
    /// The condition's reason (`DeadlineExceeded`, `PodFailurePolicy`, ...).
    reason: String,
    /// The condition's message.
    message: String,
}

impl JobEnd {
    fn finished(self, pod: Option<String>, container: Option<ContainerStateTerminated>) -> Ended {
        Ended::Finished {
            failed: self.failed,
            reason: self.reason,
            message: self.message,
            pod,
            container,
        }
    }
}

impl Seen {
    /// How the wait ends at the Job's end `end`: a failed Job whose last pod was disrupted
    /// (no executor's end of its own seen) ends as disrupted, not as the task's failure.
    fn finish(mut self, end: JobEnd) -> Ended {
        if end.failed
            && self.container.is_none()
            && end.reason != "DeadlineExceeded"
            && let Some((_, how)) = self.disrupted.pop()
        {
            return Ended::Disrupted(format!(
                "{how}; the Job ended {}: {}",
                end.reason, end.message
            ));
        }
        end.finished(self.last_pod, self.container)
    }

    /// How the wait ends with what was seen, if it does now.
    fn settled(&mut self, limits: &Limits) -> Option<Ended> {
        if let Some(end) = &self.job_end
            && (self.container.is_some() || end.reason == "DeadlineExceeded")
        {
            let end = end.clone();
            return Some(end.finished(self.last_pod.take(), self.container.take()));
        }
        // The container's end settles the Job's: no need to wait for the Job controller to say
        // so (it batches pod updates, up to a second), unless another pod may follow.
        if self.job_end.is_none()
            && let Some(state) = &self.container
            && (state.exit_code == 0 || !limits.retries)
        {
            let end = JobEnd {
                at: Instant::now(),
                failed: state.exit_code != 0,
                reason: String::new(),
                message: String::new(),
            };
            return Some(end.finished(self.last_pod.take(), self.container.take()));
        }
        None
    }

    /// Takes in a new view of the Job.
    fn job(&mut self, job: &Job, clock: &mut Clock) {
        if self.job_end.is_none()
            && let Some((failed, reason, message)) = job_condition(job)
        {
            clock.mark_end();
            self.job_end = Some(JobEnd {
                at: Instant::now(),
                failed,
                reason,
                message,
            });
        }
    }

    /// Takes in a new view of a pod; `Some` when the pod cannot run.
    fn pod(&mut self, pod: &Pod, executor: &str, clock: &mut Clock) -> Option<Ended> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if self.disrupted.iter().any(|(n, _)| *n == name) {
            return None;
        }
        let view = PodView::of(pod, executor);
        if let Some(how) = view.disrupted {
            if self.last_pod.as_ref() == Some(&name) {
                self.container = None;
            }
            self.disrupted.push((name, how));
            return None;
        }
        self.last_pod = Some(name);
        if view.scheduled {
            clock.mark_scheduled();
            self.unschedulable = None;
        } else if let Some(message) = view.unschedulable {
            self.unschedulable.get_or_insert((Instant::now(), message));
        }
        if view.running {
            clock.mark_running();
        }
        if let Some(stuck) = view.stuck {
            return Some(Ended::Stuck(stuck));
        }
        if let Some(state) = view.terminated {
            clock.mark_running();
            clock.mark_end();
            self.container = Some(state);
        } else {
            // A pod still to end (a retry): an earlier pod's end is not the result.
            self.container = None;
        }
        None
    }
}

/// The Job's terminal condition, if it has one: (failed, reason, message). Since Kubernetes
/// 1.31 the job controller first sets `FailureTarget` or `SuccessCriteriaMet`, and `Failed` or
/// `Complete` only once its pods have terminated (a pod past the deadline may take its grace
/// period): the first settles the outcome already.
fn job_condition(job: &Job) -> Option<(bool, String, String)> {
    const ENDS: [(&str, bool); 4] = [
        ("Complete", false),
        ("SuccessCriteriaMet", false),
        ("Failed", true),
        ("FailureTarget", true),
    ];
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| ENDS.iter().find(|(t, _)| *t == c.type_).map(|end| (end, c)))
        .map(|((_, failed), c)| {
            (
                *failed,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// When each phase was first seen.
struct Clock {
    started: Instant,
    scheduled: Option<Instant>,
    running: Option<Instant>,
    ended: Option<Instant>,
}

impl Clock {
    fn new(started: Instant) -> Self {
        Self {
            started,
            scheduled: None,
            running: None,
            ended: None,
        }
    }

    fn mark_scheduled(&mut self) {
        self.scheduled.get_or_insert_with(Instant::now);
    }

    fn mark_running(&mut self) {
        self.mark_scheduled();
        self.running.get_or_insert_with(Instant::now);
    }

    fn mark_end(&mut self) {
        self.ended.get_or_insert_with(Instant::now);
    }

    /// A phase not seen takes no time: its start is the next mark seen (or now).
    fn phases(&self) -> Phases {
        let end = self.ended.unwrap_or_else(Instant::now);
        let running = self.running.unwrap_or(end).min(end);
        let scheduled = self.scheduled.unwrap_or(running).min(running);
        let ms =
            |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
        Phases {
            scheduling_ms: ms(self.started, scheduled),
            starting_ms: ms(scheduled, running),
            running_ms: ms(running, end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terminal_and_target_conditions_end_a_job() {
        let job = |conditions: serde_json::Value| -> Job {
            serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "j"}, "status": {"conditions": conditions}}))
            .unwrap()
        };
        assert_eq!(
            job_condition(&job(json!([{"type": "FailureTarget", "status": "True",
                "reason": "DeadlineExceeded"}]))),
            Some((true, "DeadlineExceeded".into(), String::new()))
        );
        assert_eq!(
            job_condition(&job(
                json!([{"type": "SuccessCriteriaMet", "status": "True"}])
            ))
            .map(|c| c.0),
            Some(false)
        );
        assert_eq!(
            job_condition(&job(json!([{"type": "Suspended", "status": "True"}]))),
            None
        );
        assert_eq!(
            job_condition(&job(json!([{"type": "Failed", "status": "True",
                "reason": "DeadlineExceeded", "message": "too long"}]))),
            Some((true, "DeadlineExceeded".into(), "too long".into()))
        );
        assert_eq!(
            job_condition(&job(json!([{"type": "Complete", "status": "True"}]))).map(|c| c.0),
            Some(false)
        );
    }

    #[test]
    fn unseen_phases_take_no_time() {
        let t0 = Instant::now();
        let clock = Clock {
            started: t0,
            scheduled: None,
            running: Some(t0 + Duration::from_millis(30)),
            ended: Some(t0 + Duration::from_millis(50)),
        };
        let phases = clock.phases();
        assert!((phases.scheduling_ms - 30.0).abs() < 1e-6);
        assert_eq!(phases.starting_ms, 0.0);
        assert!((phases.running_ms - 20.0).abs() < 1e-6);
    }
}
