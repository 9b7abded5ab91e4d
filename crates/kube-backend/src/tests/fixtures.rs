//! A scripted Kubernetes API for the scenario tests (as in kube-rs/controller-rs): each step
//! asserts one request (method, path, query, body) and answers it as an API server would, with
//! JSON objects, `Status` errors, or a watch stream of events that arrive on a schedule.

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::{Method, Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;

/// The namespace every scenario uses.
pub const NS: &str = "tasks";

type Body = UnsyncBoxBody<Bytes, Infallible>;
type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<Body>>;

/// A check of a request's JSON body.
pub type BodyCheck = Box<dyn Fn(&Value) + Send + Sync>;

/// How a step answers.
pub enum Reply {
    /// A JSON object with this status.
    Json(u16, Value),
    /// Plain text (a pod log).
    Text(String),
    /// A watch stream: each event after its delay (from the stream's start), then silence.
    Watch(Vec<(u64, Value)>),
    /// A watch stream that the server ends after its events.
    WatchEnding(Vec<(u64, Value)>),
}

/// One expected request and its answer.
pub struct Step {
    method: Method,
    path: String,
    query: Vec<String>,
    check: Option<BodyCheck>,
    reply: Reply,
}

impl Step {
    /// Expects `method` on `path` (no query).
    pub fn new(method: Method, path: impl Into<String>, reply: Reply) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            check: None,
            reply,
        }
    }

    /// Also expects `part` (e.g. `watch=true`) in the query string.
    pub fn query(mut self, part: impl Into<String>) -> Self {
        self.query.push(part.into());
        self
    }

    /// Also checks the JSON body.
    pub fn body(mut self, check: impl Fn(&Value) + Send + Sync + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }
}

/// A mocked client and the task that plays `steps`; the task returns the number of requests and
/// fails if a request differs from its step or one is left over when the client is dropped.
pub fn scripted(steps: Vec<Step>) -> (kube::Client, tokio::task::JoinHandle<usize>) {
    let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
    let client = kube::Client::new(service, NS);
    (client, tokio::spawn(play(handle, steps)))
}

async fn play(mut handle: Handle, steps: Vec<Step>) -> usize {
    let mut served = 0;
    for (index, step) in steps.into_iter().enumerate() {
        let Some((request, respond)) = handle.next_request().await else {
            panic!(
                "step {index}: expected {} {} but the client made no more requests",
                step.method, step.path
            );
        };
        served += 1;
        let (parts, body) = request.into_parts();
        let what = format!("step {index}: {} {}", parts.method, parts.uri);
        assert_eq!(parts.method, step.method, "{what}");
        assert_eq!(parts.uri.path(), step.path, "{what}");
        let query = parts.uri.query().unwrap_or("");
        for part in &step.query {
            assert!(
                query.contains(part.as_str()),
                "{what}: {part:?} not in the query"
            );
        }
        if let Some(check) = &step.check {
            let bytes = body.collect().await.expect("request body").to_bytes();
            let value: Value = serde_json::from_slice(&bytes).expect("a JSON request body");
            check(&value);
        }
        respond.send_response(reply(step.reply));
    }
    if let Some((request, _)) = handle.next_request().await {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
    served
}

fn reply(reply: Reply) -> Response<Body> {
    let builder = Response::builder();
    match reply {
        Reply::Json(code, value) => builder
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(value.to_string())).boxed_unsync()),
        Reply::Text(text) => builder
            .status(200)
            .body(Full::new(Bytes::from(text)).boxed_unsync()),
        Reply::Watch(events) => builder
            .status(200)
            .body(StreamBody::new(timed(events).chain(stream::pending())).boxed_unsync()),
        Reply::WatchEnding(events) => builder
            .status(200)
            .body(StreamBody::new(timed(events)).boxed_unsync()),
    }
    .expect("a valid response")
}

/// `events` as body frames, each sent after its delay from now.
fn timed(
    events: Vec<(u64, Value)>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    let started = tokio::time::Instant::now();
    stream::iter(events).then(move |(after_ms, event)| async move {
        tokio::time::sleep_until(started + Duration::from_millis(after_ms)).await;
        Ok(Frame::data(Bytes::from(format!("{event}\n"))))
    })
}

/// The path of `resource` (`jobs`, `configmaps`, `pods`) in [`NS`], with `name` if given.
pub fn path(resource: &str, name: Option<&str>) -> String {
    let group = if resource == "jobs" {
        "/apis/batch/v1"
    } else {
        "/api/v1"
    };
    match name {
        Some(name) => format!("{group}/namespaces/{NS}/{resource}/{name}"),
        None => format!("{group}/namespaces/{NS}/{resource}"),
    }
}

/// A `Status` error as the API server sends it.
pub fn status(code: u16, reason: &str, message: &str) -> Reply {
    Reply::Json(
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
               "reason": reason, "message": message}),
    )
}

/// A watch event.
pub fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

/// The Job `name` made for `task_id`, with `uid` and these status conditions.
pub fn job(name: &str, task_id: &str, uid: &str, conditions: Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "uid": uid, "resourceVersion": "10",
                     "labels": {"app.kubernetes.io/managed-by": "wasm-exec-coordinator"},
                     "annotations": {"wasm-exec.io/task-id": task_id}},
        "spec": {"template": {"spec": {"containers": [{"name": "executor"}]}}},
        "status": {"conditions": conditions}
    })
}

/// A Job condition.
pub fn condition(kind: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": message})
}

/// A ConfigMap made for `task_id`.
pub fn config_map(name: &str, task_id: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "uid": format!("cm-{name}"),
                     "labels": {"app.kubernetes.io/managed-by": "wasm-exec-coordinator"},
                     "annotations": {"wasm-exec.io/task-id": task_id}}
    })
}

/// A list of `items` of `kind`.
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": if kind == "JobList" { "batch/v1" } else { "v1" }, "kind": kind,
           "metadata": {"resourceVersion": "20"}, "items": items})
}

/// The pod `name` of a Job, at one moment of its life.
pub fn pod(name: &str, moment: PodMoment) -> Value {
    let scheduled = json!([{"type": "PodScheduled", "status": "True"}]);
    let (phase, conditions, state) = match moment {
        PodMoment::Unschedulable(message) => (
            "Pending",
            json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": message}]),
            Value::Null,
        ),
        PodMoment::Scheduled => (
            "Pending",
            scheduled,
            json!({"waiting": {"reason": "ContainerCreating"}}),
        ),
        PodMoment::Waiting(reason) => (
            "Pending",
            scheduled,
            json!({"waiting": {"reason": reason, "message": format!("{reason}: registry says no")}}),
        ),
        PodMoment::Running => (
            "Running",
            scheduled,
            json!({"running": {"startedAt": "2026-01-01T00:00:01Z"}}),
        ),
        PodMoment::Terminated {
            exit_code,
            reason,
            message,
        } => (
            if exit_code == 0 {
                "Succeeded"
            } else {
                "Failed"
            },
            scheduled,
            json!({"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}),
        ),
    };
    let mut status = json!({"phase": phase, "conditions": conditions});
    if !state.is_null() {
        status["containerStatuses"] = json!([{"name": "executor", "image": "executor:test",
            "imageID": "", "ready": false, "restartCount": 0, "state": state}]);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NS, "resourceVersion": "11"},
           "spec": {"containers": [{"name": "executor"}]}, "status": status})
}

/// A moment in a pod's life.
pub enum PodMoment {
    /// Not placed: the scheduler's message.
    Unschedulable(&'static str),
    /// Bound to a node, container being created.
    Scheduled,
    /// Container waiting for this reason (`ImagePullBackOff`).
    Waiting(&'static str),
    /// Container running.
    Running,
    /// Container ended.
    Terminated {
        /// Exit code.
        exit_code: i32,
        /// `Completed`, `Error`, `OOMKilled`.
        reason: &'static str,
        /// The termination message.
        message: String,
    },
}
