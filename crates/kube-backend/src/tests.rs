//! Scenario tests of a task's whole Job lifecycle against a scripted API server: every request
//! the backend makes is asserted, and answered as a real API server would.

mod fixtures;

use super::*;
use fixtures::{
    NS, PodMoment, Reply, Step, condition, config_map, event, job, list, path, pod, scripted,
    status,
};
use http::Method;
use serde_json::{Value, json};

const TEMPLATE: &str = include_str!("../../../k8s/job.yaml");
const MODULE: &[u8] = b"\0asm\x01\0\0\0";
const POD: &str = "pod-1";

/// `task` through the intake check with the default rules.
fn checked(task: &TaskSpec) -> wasm_exec_task::CheckedTask {
    task.check(&wasm_exec_task::IntakeRules::default())
        .expect("a task the intake check takes")
}

fn task() -> TaskSpec {
    TaskSpec::new("fib", "fib.wasm", json!({"entry": "fib", "args": [12]}))
}

fn names() -> TaskNames {
    TaskNames::for_task("fib")
}

fn settings() -> KubernetesSettings {
    let mut settings = KubernetesSettings::new(NS, "executor:test", "k8s/job.yaml".into());
    settings.unschedulable_grace = Duration::from_millis(200);
    settings.pod_lag = Duration::from_millis(200);
    settings.retry = RetryPolicy {
        attempts: 4,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_millis(5),
        throttled: Duration::from_millis(20),
        outage: Duration::from_millis(20),
    };
    settings
}

fn backend(
    client: Client,
    settings: KubernetesSettings,
    abandon: CancellationToken,
) -> KubernetesBackend {
    backend_from(TEMPLATE, client, settings, abandon)
}

fn backend_from(
    template: &str,
    client: Client,
    settings: KubernetesSettings,
    abandon: CancellationToken,
) -> KubernetesBackend {
    let template = JobTemplate::parse(template).unwrap();
    KubernetesBackend::with_client(client, settings, template, abandon)
}

/// Runs `task` through the backend against `steps`; returns the result, the number of
/// requests and the time the backend took.
async fn run_scenario(
    steps: Vec<Step>,
    settings: KubernetesSettings,
    task: TaskSpec,
    abandon: CancellationToken,
) -> (ResultEnvelope, usize, Duration) {
    let (client, server) = scripted(steps);
    let backend = backend(client, settings, abandon);
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        backend.run(&checked(&task), Arc::new(MODULE.to_vec())),
    )
    .await
    .expect("the backend finished within 10 s");
    let took = started.elapsed();
    drop(backend);
    let requests = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the script ended")
        .expect("every request matched its step");
    (result, requests, took)
}

fn ok_document(result: i64) -> String {
    let mut doc = ResultEnvelope::failure(ErrorKind::Io, "");
    doc.ok = true;
    doc.error = None;
    doc.entry = Some("fib".into());
    doc.result = json!(result);
    doc.duration_ms = 0.2;
    doc.to_line()
}

fn create_job() -> Step {
    let names = names();
    Step::new(
        Method::POST,
        path("jobs", None),
        Reply::Json(201, job(&names.job, "fib", "uid-1", json!([]))),
    )
    .body(move |body: &Value| {
        assert_eq!(body["metadata"]["name"], json!(names.job));
        assert_eq!(
            body["metadata"]["annotations"]["wasm-exec.io/task-id"],
            "fib"
        );
        let container = &body["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "executor:test");
        assert_eq!(
            container["terminationMessagePolicy"],
            "FallbackToLogsOnError"
        );
        assert_eq!(body["spec"]["backoffLimit"], 0);
    })
}

fn create_config_map(owner_uid: &'static str, reply: Reply) -> Step {
    Step::new(Method::POST, path("configmaps", None), reply).body(move |body: &Value| {
        assert_eq!(body["metadata"]["name"], json!(names().job));
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], owner_uid);
        assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(body["binaryData"]["module.wasm"], "AGFzbQEAAAA=");
        assert_eq!(body["data"]["input.json"], r#"{"args":[12],"entry":"fib"}"#);
    })
}

fn created_config_map() -> Reply {
    Reply::Json(201, config_map(&names().job, "fib"))
}

fn watch_job(events: Vec<(u64, Value)>) -> Step {
    Step::new(Method::GET, path("jobs", None), Reply::Watch(events))
        .query("watch=true")
        .query("resourceVersion=0")
        .query(format!("fieldSelector=metadata.name%3D{}", names().job))
}

fn watch_pods(events: Vec<(u64, Value)>) -> Step {
    Step::new(Method::GET, path("pods", None), Reply::Watch(events))
        .query("watch=true")
        .query(format!(
            "labelSelector=wasm-exec.io%2Ftask%3D{}",
            names().task_hash
        ))
}

fn delete_job() -> Step {
    let name = names().job;
    Step::new(
        Method::DELETE,
        path("jobs", Some(&name)),
        Reply::Json(200, job(&name, "fib", "uid-1", json!([]))),
    )
    .body(|body: &Value| assert_eq!(body["propagationPolicy"], "Background"))
}

fn job_event(at_ms: u64, conditions: Value) -> (u64, Value) {
    (
        at_ms,
        event("MODIFIED", job(&names().job, "fib", "uid-1", conditions)),
    )
}

fn pod_event(at_ms: u64, moment: PodMoment) -> (u64, Value) {
    (at_ms, event("MODIFIED", pod(POD, moment)))
}

fn terminated(exit_code: i32, reason: &'static str, message: String) -> PodMoment {
    PodMoment::Terminated {
        exit_code,
        reason,
        message,
    }
}

/// A pod's life to success: scheduled at 50 ms, running at 150 ms, done at 250 ms.
fn successful_pod(message: String) -> Vec<(u64, Value)> {
    vec![
        pod_event(50, PodMoment::Scheduled),
        pod_event(150, PodMoment::Running),
        pod_event(250, terminated(0, "Completed", message)),
    ]
}

fn complete_at(at_ms: u64) -> Vec<(u64, Value)> {
    vec![
        (
            0,
            event("ADDED", job(&names().job, "fib", "uid-1", json!([]))),
        ),
        job_event(
            at_ms,
            json!([condition("Complete", "CompletionsReached", "")]),
        ),
    ]
}

#[tokio::test]
async fn success_reads_the_termination_message_in_five_requests() {
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(complete_at(260)),
        watch_pods(successful_pod(ok_document(144))),
        delete_job(),
    ];
    let (result, requests, took) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.result, json!(144));
    assert!(requests <= 8);
    assert_eq!(requests, 5);
    let phases = result.phases.expect("phases are recorded");
    assert!((40.0..120.0).contains(&phases.scheduling_ms), "{phases:?}");
    assert!((80.0..160.0).contains(&phases.starting_ms), "{phases:?}");
    assert!((80.0..160.0).contains(&phases.running_ms), "{phases:?}");
    let waited = phases.scheduling_ms + phases.starting_ms + phases.running_ms;
    let overhead_ms = took.as_secs_f64() * 1e3 - waited;
    println!(
        "requests per task: {requests}; coordinator overhead beyond the Job's phases: {overhead_ms:.1} ms"
    );
    assert!(overhead_ms < 50.0, "overhead {overhead_ms} ms");
}

#[tokio::test]
async fn success_falls_back_to_the_last_log_line() {
    let log = format!("executor starting\n{}\n", ok_document(144));
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(complete_at(260)),
        watch_pods(successful_pod(String::new())),
        Step::new(
            Method::GET,
            path("pods", Some(&format!("{POD}/log"))),
            Reply::Text(log),
        )
        // The whole log up to what the task's limits bound, never a count of CRI entries.
        .query(format!(
            "limitBytes={}",
            crate::result::log_limit_bytes(&checked(&task()))
        ))
        .query("container=executor"),
        delete_job(),
    ];
    let (result, requests, _) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.result, json!(144));
    assert_eq!(requests, 6);
}

#[tokio::test]
async fn an_unparsable_log_quotes_its_tail_and_keeps_the_exit_kind() {
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![job_event(
            60,
            json!([condition("Failed", "PodFailurePolicy", "exit 20")]),
        )]),
        watch_pods(vec![pod_event(50, terminated(20, "Error", String::new()))]),
        Step::new(
            Method::GET,
            path("pods", Some(&format!("{POD}/log"))),
            Reply::Text("panic: the end\n".into()),
        ),
        delete_job(),
    ];
    let (result, _, _) = run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Trap));
    let message = &result.error.unwrap().message;
    assert!(
        message.contains("not a result document") && message.contains("panic: the end"),
        "{message}"
    );
}

#[tokio::test]
async fn a_trapping_guest_is_a_trap_and_its_job_is_deleted() {
    let doc = ResultEnvelope::failure(ErrorKind::Trap, "wasm trap: unreachable").to_line();
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![job_event(
            120,
            json!([condition(
                "Failed",
                "PodFailurePolicy",
                "Container executor for pod tasks/pod-1 failed with exit code 20 matching FailJob rule at index 0"
            )]),
        )]),
        watch_pods(vec![
            pod_event(30, PodMoment::Running),
            pod_event(100, terminated(20, "Error", doc)),
        ]),
        delete_job(),
    ];
    let (result, requests, _) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Trap));
    assert!(result.error.unwrap().message.contains("unreachable"));
    assert_eq!(requests, 5);
}

#[tokio::test]
async fn an_image_pull_error_fails_fast_naming_the_image_setting() {
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![]),
        watch_pods(vec![
            pod_event(20, PodMoment::Scheduled),
            pod_event(40, PodMoment::Waiting("ErrImagePull")),
        ]),
        delete_job(),
    ];
    let (result, _, took) = run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Io));
    let message = result.error.unwrap().message;
    assert!(
        message.contains("ErrImagePull") && message.contains("COORDINATOR_EXECUTOR_IMAGE"),
        "{message}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn an_unschedulable_pod_fails_after_its_grace() {
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![]),
        watch_pods(vec![pod_event(
            10,
            PodMoment::Unschedulable("0/3 nodes are available: 3 Insufficient memory."),
        )]),
        delete_job(),
    ];
    let (result, _, took) = run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Io));
    let message = result.error.unwrap().message;
    assert!(
        message.contains("could not be scheduled") && message.contains("Insufficient memory"),
        "{message}"
    );
    assert!(took >= Duration::from_millis(200), "{took:?}");
}

/// An unschedulable pod's task while the backend's other tasks end every 100 ms for 600 ms
/// (grace 200 ms): the result and how long it took.
async fn unschedulable_while_others_end(message: &'static str) -> (ResultEnvelope, Duration) {
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![]),
        watch_pods(vec![pod_event(10, PodMoment::Unschedulable(message))]),
        delete_job(),
    ];
    let (client, _server) = scripted(steps);
    let backend = backend(client, settings(), CancellationToken::new());
    let others = backend.clone();
    let ending = tokio::spawn(async move {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            others.inner.progress.send_modify(|ended| *ended += 1);
        }
    });
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        backend.run(&checked(&task()), Arc::new(MODULE.to_vec())),
    )
    .await
    .expect("a result within 10 s");
    ending.abort();
    (result, started.elapsed())
}

#[tokio::test]
async fn a_pod_that_lacks_room_waits_while_other_tasks_end_then_fails_after_its_grace() {
    let (result, took) =
        unschedulable_while_others_end("0/3 nodes are available: 3 Insufficient cpu.").await;
    assert_eq!(result.kind(), Some(ErrorKind::Io));
    assert!(took >= Duration::from_millis(700), "{took:?}");
}

#[tokio::test]
async fn a_pod_no_node_matches_fails_after_its_grace_though_other_tasks_end() {
    let (result, took) = unschedulable_while_others_end(
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
    )
    .await;
    assert_eq!(result.kind(), Some(ErrorKind::Io));
    assert!(took < Duration::from_millis(500), "{took:?}");
}

#[tokio::test]
async fn an_oom_kill_is_a_memory_error() {
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![job_event(
            90,
            json!([condition(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit"
            )]),
        )]),
        watch_pods(vec![
            pod_event(20, PodMoment::Running),
            pod_event(
                80,
                terminated(137, "OOMKilled", "executor starting\n".into()),
            ),
        ]),
        delete_job(),
    ];
    let (result, requests, _) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::OutOfMemory));
    assert!(result.error.unwrap().message.contains("OOMKilled"));
    assert_eq!(requests, 5, "no log request: the pod status says it all");
}

#[tokio::test]
async fn a_job_past_its_deadline_is_a_timeout() {
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![job_event(
            100,
            json!([condition(
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline"
            )]),
        )]),
        watch_pods(vec![pod_event(20, PodMoment::Running)]),
        delete_job(),
    ];
    let (result, _, _) = run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Timeout));
    let message = result.error.unwrap().message;
    assert!(
        message.contains("activeDeadlineSeconds (140 s"),
        "{message}"
    );
    assert!(result.phases.unwrap().running_ms > 50.0);
}

#[tokio::test]
async fn the_coordinator_gives_up_at_its_own_deadline() {
    let mut settings = settings();
    settings.start_allowance = Duration::ZERO;
    settings.deadline_grace = Duration::ZERO;
    let mut task = task();
    task.limits.timeout_sec = Some(0.5);
    let steps = vec![
        Step::new(
            Method::POST,
            path("jobs", None),
            Reply::Json(201, job(&names().job, "fib", "uid-1", json!([]))),
        )
        .body(|body: &Value| assert_eq!(body["spec"]["activeDeadlineSeconds"], 1)),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![]),
        watch_pods(vec![pod_event(20, PodMoment::Running)]),
        delete_job(),
    ];
    let (result, _, took) = run_scenario(steps, settings, task, CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Timeout));
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[tokio::test]
async fn an_existing_job_is_adopted_not_run_twice() {
    let name = names().job;
    let steps = vec![
        Step::new(
            Method::POST,
            path("jobs", None),
            status(
                409,
                "AlreadyExists",
                &format!("jobs.batch \"{name}\" already exists"),
            ),
        ),
        Step::new(
            Method::GET,
            path("jobs", Some(&name)),
            Reply::Json(200, job(&name, "fib", "uid-old", json!([]))),
        ),
        create_config_map(
            "uid-old",
            status(409, "AlreadyExists", "configmaps already exists"),
        ),
        watch_job(vec![(
            0,
            event(
                "ADDED",
                job(
                    &name,
                    "fib",
                    "uid-old",
                    json!([condition("Complete", "", "")]),
                ),
            ),
        )]),
        watch_pods(vec![(
            0,
            event(
                "ADDED",
                pod(POD, terminated(0, "Completed", ok_document(144))),
            ),
        )]),
        delete_job(),
    ];
    let (result, requests, _) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(requests, 6);
}

#[tokio::test]
async fn a_job_of_another_task_with_the_same_name_is_not_adopted() {
    let name = names().job;
    let steps = vec![
        Step::new(
            Method::POST,
            path("jobs", None),
            status(409, "AlreadyExists", "exists"),
        ),
        Step::new(
            Method::GET,
            path("jobs", Some(&name)),
            Reply::Json(200, job(&name, "other", "uid-x", json!([]))),
        ),
    ];
    let (result, _, _) = run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Io));
    assert!(result.error.unwrap().message.contains("for another task"));
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried() {
    let mut steps = vec![
        Step::new(
            Method::POST,
            path("jobs", None),
            status(503, "ServiceUnavailable", "etcd leader changed"),
        ),
        Step::new(
            Method::POST,
            path("jobs", None),
            status(500, "InternalError", "try again"),
        ),
        create_job(),
        create_config_map("uid-1", status(429, "TooManyRequests", "slow down")),
        create_config_map("uid-1", created_config_map()),
        watch_job(complete_at(40)),
        watch_pods(vec![pod_event(
            30,
            terminated(0, "Completed", ok_document(144)),
        )]),
    ];
    steps.push(Step::new(
        Method::DELETE,
        path("jobs", Some(&names().job)),
        status(502, "BadGateway", "proxy"),
    ));
    steps.push(delete_job());
    let (result, requests, _) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(requests, 9);
}

#[tokio::test]
async fn retries_are_bounded() {
    let steps = (0..4)
        .map(|_| {
            Step::new(
                Method::POST,
                path("jobs", None),
                status(500, "InternalError", "down"),
            )
        })
        .collect();
    let (result, requests, _) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Io));
    assert!(result.error.unwrap().message.contains("HTTP 500"));
    assert_eq!(requests, 4);
}

#[tokio::test]
async fn forbidden_names_the_missing_rbac_permission_without_retrying() {
    let steps = vec![Step::new(
        Method::POST,
        path("jobs", None),
        status(
            403,
            "Forbidden",
            "jobs.batch is forbidden: User \"system:serviceaccount:tasks:coordinator\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"tasks\"",
        ),
    )];
    let (result, requests, _) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Io));
    let message = result.error.unwrap().message;
    assert!(
        message.contains("may not create jobs")
            && message.contains("grant verb \"create\" on resource \"jobs\""),
        "{message}"
    );
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn a_module_too_large_for_a_config_map_creates_nothing() {
    let (client, server) = scripted(vec![]);
    let backend = backend(client, settings(), CancellationToken::new());
    let result = backend
        .run(&checked(&task()), Arc::new(vec![0; 2 << 20]))
        .await;
    drop(backend);
    assert_eq!(result.kind(), Some(ErrorKind::ModuleTooLarge));
    assert!(result.error.unwrap().message.contains("1 MiB"));
    assert_eq!(server.await.unwrap(), 0);
}

#[tokio::test]
async fn a_shutdown_deletes_the_running_job_and_leaves_the_task_unfinished() {
    let abandon = CancellationToken::new();
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![]),
        watch_pods(vec![pod_event(10, PodMoment::Running)]),
        delete_job(),
    ];
    let stop = abandon.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
    });
    let (result, _, _) = run_scenario(steps, settings(), task(), abandon).await;
    assert_eq!(result.kind(), Some(ErrorKind::Cancelled));
    assert!(result.phases.is_none());
}

#[tokio::test]
async fn a_cancel_deletes_the_running_job_with_background_propagation() {
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        watch_job(vec![]),
        watch_pods(vec![pod_event(10, PodMoment::Running)]),
        delete_job(),
    ];
    let (client, server) = scripted(steps);
    let backend = backend(client, settings(), CancellationToken::new());
    let canceller = backend.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        canceller.cancel("fib").await;
    });
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        backend.run(&checked(&task()), Arc::new(MODULE.to_vec())),
    )
    .await
    .expect("the cancel ended the run");
    assert_eq!(result.kind(), Some(ErrorKind::Cancelled), "{result:?}");
    drop(backend);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the script ended")
        .expect("every request matched its step, the delete last");
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn start_up_removes_objects_no_unfinished_task_needs() {
    let kept = TaskNames::for_task("kept");
    let gone = TaskNames::for_task("gone");
    let stale = TaskNames::for_task("stale");
    let managed = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dwasm-exec-coordinator";
    let steps = vec![
        Step::new(
            Method::GET,
            path("jobs", None),
            Reply::Json(
                200,
                list(
                    "JobList",
                    vec![
                        job(&kept.job, "kept", "u1", json!([])),
                        job(&gone.job, "gone", "u2", json!([])),
                    ],
                ),
            ),
        )
        .query(managed),
        Step::new(
            Method::DELETE,
            path("jobs", Some(&gone.job)),
            Reply::Json(200, job(&gone.job, "gone", "u2", json!([]))),
        )
        .body(|body: &Value| assert_eq!(body["propagationPolicy"], "Background")),
        Step::new(
            Method::GET,
            path("configmaps", None),
            Reply::Json(
                200,
                list(
                    "ConfigMapList",
                    vec![
                        config_map(&kept.job, "kept"),
                        config_map(&gone.job, "gone"),
                        config_map(&stale.job, "stale"),
                    ],
                ),
            ),
        )
        .query(managed),
        Step::new(
            Method::DELETE,
            path("configmaps", Some(&gone.job)),
            status(404, "NotFound", "already collected"),
        ),
        Step::new(
            Method::DELETE,
            path("configmaps", Some(&stale.job)),
            Reply::Json(200, config_map(&stale.job, "stale")),
        ),
    ];
    let (client, server) = scripted(steps);
    let backend = backend(client, settings(), CancellationToken::new());
    backend
        .reconcile(&["kept".into(), "stale".into()])
        .await
        .unwrap();
    drop(backend);
    assert_eq!(server.await.unwrap(), 5);
}

#[tokio::test]
async fn start_up_clean_up_reports_a_forbidden_list() {
    let steps = vec![Step::new(
        Method::GET,
        path("jobs", None),
        status(403, "Forbidden", "cannot list"),
    )];
    let (client, server) = scripted(steps);
    let backend = backend(client, settings(), CancellationToken::new());
    let message = backend.reconcile(&[]).await.unwrap_err().to_string();
    drop(backend);
    assert!(
        message.contains("grant verb \"list\" on resource \"jobs\""),
        "{message}"
    );
    assert_eq!(server.await.unwrap(), 1);
}

#[tokio::test]
async fn with_retries_allowed_a_failed_pod_waits_for_the_job() {
    let template = TEMPLATE.replace("backoffLimit: 0", "backoffLimit: 1");
    let timeout = ResultEnvelope::failure(ErrorKind::Timeout, "took too long").to_line();
    let steps = vec![
        create_job().body(|body: &Value| assert_eq!(body["spec"]["backoffLimit"], 1)),
        create_config_map("uid-1", created_config_map()),
        watch_job(complete_at(150)),
        watch_pods(vec![
            pod_event(30, terminated(21, "Error", timeout)),
            (
                100,
                event(
                    "ADDED",
                    pod("pod-2", terminated(0, "Completed", ok_document(144))),
                ),
            ),
        ]),
        delete_job(),
    ];
    let (client, server) = scripted(steps);
    let backend = backend_from(&template, client, settings(), CancellationToken::new());
    let result = backend
        .run(&checked(&task()), Arc::new(MODULE.to_vec()))
        .await;
    drop(backend);
    assert!(result.ok, "the second pod's result counts: {result:?}");
    assert_eq!(server.await.unwrap(), 5);
}

#[tokio::test]
async fn a_watch_ended_by_the_server_resumes_where_it_left_off() {
    let mut added = job(&names().job, "fib", "uid-1", json!([]));
    added["metadata"]["resourceVersion"] = json!("42");
    let steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        Step::new(
            Method::GET,
            path("jobs", None),
            Reply::WatchEnding(vec![(0, event("ADDED", added))]),
        )
        .query("resourceVersion=0"),
        watch_pods(vec![pod_event(50, PodMoment::Running)]),
        Step::new(
            Method::GET,
            path("jobs", None),
            Reply::Watch(vec![job_event(
                100,
                json!([condition("Failed", "DeadlineExceeded", "too long")]),
            )]),
        )
        .query("watch=true")
        .query("resourceVersion=42"),
        delete_job(),
    ];
    let (result, requests, _) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Timeout), "{result:?}");
    assert_eq!(requests, 6);
}

#[tokio::test]
async fn a_watch_that_keeps_ending_empty_is_an_api_error() {
    let mut steps = vec![
        create_job(),
        create_config_map("uid-1", created_config_map()),
        Step::new(Method::GET, path("jobs", None), Reply::WatchEnding(vec![])),
        watch_pods(vec![]),
    ];
    for _ in 0..5 {
        steps.push(Step::new(
            Method::GET,
            path("jobs", None),
            Reply::WatchEnding(vec![]),
        ));
    }
    steps.push(delete_job());
    let (result, requests, _) =
        run_scenario(steps, settings(), task(), CancellationToken::new()).await;
    assert_eq!(result.kind(), Some(ErrorKind::Io), "{result:?}");
    assert!(result.error.unwrap().message.contains("kept ending"));
    assert_eq!(requests, 10);
}
