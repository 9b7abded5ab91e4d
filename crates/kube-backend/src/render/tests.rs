//! The Job and ConfigMap of a task, field by field, and the template's error cases.

use super::*;
use serde_json::{Value, json};
use std::path::Path;

const TEMPLATE: &str = include_str!("../../../../k8s/job.yaml");

fn settings() -> RunSettings {
    RunSettings {
        image: "registry.example/executor:1".into(),
        timeout_sec: 2.5,
        max_memory_mb: 64,
        max_output_bytes: 4096,
        fuel: Some(1_000_000),
        start_allowance_sec: 120,
    }
}

fn task() -> TaskSpec {
    let mut task = TaskSpec::new("Fib 12", "fib.wasm", json!({"entry": "fib", "args": [12]}));
    task.entry = Some("fib".into());
    task
}

fn rendered(template: &str) -> Value {
    let template = JobTemplate::parse(template).unwrap();
    let job = template.render(&task(), &TaskNames::for_task("Fib 12"), &settings());
    serde_json::to_value(job).unwrap()
}

fn env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let value = v["value"].as_str().unwrap().to_owned();
            (v["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[test]
fn job_carries_the_task_and_keeps_what_the_template_tunes() {
    let names = TaskNames::for_task("Fib 12");
    let job = rendered(TEMPLATE);
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    let meta = &job["metadata"];
    assert_eq!(meta["name"], json!(names.job));
    assert_eq!(
        meta["labels"]["app.kubernetes.io/managed-by"],
        "wasm-exec-coordinator"
    );
    assert_eq!(meta["labels"]["wasm-exec.io/task"], json!(names.task_hash));
    assert_eq!(meta["labels"]["app.kubernetes.io/name"], "wasm-executor");
    assert_eq!(meta["annotations"]["wasm-exec.io/task-id"], "Fib 12");
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["ttlSecondsAfterFinished"], 600);
    assert_eq!(spec["activeDeadlineSeconds"], 3 + 120);
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["wasm-exec.io/task"], json!(names.task_hash));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(
        volumes.len(),
        3,
        "the template's hostPath volumes are replaced"
    );
    assert_eq!(volumes[0]["configMap"]["name"], json!(names.job));
    assert_eq!(volumes[0]["configMap"]["items"][0]["key"], "module.wasm");
    assert_eq!(volumes[1]["configMap"]["items"][0]["path"], "input.json");
    assert!(volumes[2]["emptyDir"].is_object());
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/executor:1");
    assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(container["resources"]["requests"]["cpu"], "500m");
    assert_eq!(
        container["terminationMessagePolicy"],
        "FallbackToLogsOnError"
    );
    let ctx = &container["securityContext"];
    assert_eq!(ctx["readOnlyRootFilesystem"], true);
    assert_eq!(ctx["allowPrivilegeEscalation"], false);
    assert_eq!(ctx["capabilities"]["drop"], json!(["ALL"]));
    let mounts: Vec<(&str, &str, bool)> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let ro = m["readOnly"].as_bool().unwrap();
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
                ro,
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("wasm", "/mnt/wasm", true),
            ("input", "/mnt/input", true),
            ("shared", "/mnt/shared", false)
        ]
    );
    let env = env(container);
    let expected = [
        ("WASM_PATH", "/mnt/wasm/module.wasm"),
        ("INPUT_PATH", "/mnt/input/input.json"),
        ("OUTPUT_PATH", "/mnt/shared/result.json"),
        ("ENTRY", "fib"),
        ("TIMEOUT_SEC", "2.5"),
        ("MAX_MEMORY_MB", "64"),
        ("MAX_OUTPUT_BYTES", "4096"),
        ("FUEL", "1000000"),
        ("TERMINATION_MESSAGE_PATH", "/dev/termination-log"),
    ];
    for (name, value) in expected {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
    assert!(
        !env.contains_key("ARGS_JSON"),
        "the demo's ARGS_JSON would clash with INPUT_PATH"
    );
    assert_eq!(env.len(), expected.len());
}

#[test]
fn safe_defaults_fill_a_bare_template() {
    let job = rendered(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: executor}]\n",
    );
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["ttlSecondsAfterFinished"], TTL_AFTER_FINISHED);
    let rules = spec["podFailurePolicy"]["rules"].as_array().unwrap();
    // The job controller applies the first rule that matches: a disruption before any exit code.
    assert_eq!(rules[0]["action"], "Ignore");
    assert_eq!(rules[0]["onPodConditions"][0]["type"], "DisruptionTarget");
    assert_eq!(rules[1]["action"], "FailJob");
    assert_eq!(rules[1]["onExitCodes"]["containerName"], "executor");
    assert_eq!(
        rules[1]["onExitCodes"]["values"],
        json!([10, 11, 12, 13, 14, 20, 22, 23])
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
    let ctx = &pod["containers"][0]["securityContext"];
    assert_eq!(ctx["readOnlyRootFilesystem"], true);
    assert_eq!(ctx["capabilities"]["drop"], json!(["ALL"]));
    assert!(pod["containers"][0].get("resources").is_none());
}

#[test]
fn the_template_overrides_the_defaults() {
    let job = rendered(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  backoffLimit: 2\n  activeDeadlineSeconds: 900\n  template:\n    spec:\n      restartPolicy: OnFailure\n      securityContext: {runAsUser: 1000}\n      containers: [{name: executor, env: [{name: RUST_LOG, value: debug}, {name: ENTRY, value: run}]}]\n",
    );
    assert_eq!(job["spec"]["backoffLimit"], 2);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 900);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "OnFailure");
    assert_eq!(pod["securityContext"]["runAsUser"], 1000);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let env = env(&pod["containers"][0]);
    assert_eq!(
        env["RUST_LOG"], "debug",
        "the template's own variables stay"
    );
    assert_eq!(env["ENTRY"], "fib", "the task's entry wins");
}

#[test]
fn the_template_keeps_the_deterministic_codes_of_the_task_kinds() {
    let mut codes: Vec<i32> = ErrorKind::ALL
        .into_iter()
        .filter(|k| k.is_deterministic())
        .map(ErrorKind::exit_code)
        .collect();
    codes.sort_unstable();
    let job = rendered(TEMPLATE);
    let rules = &job["spec"]["podFailurePolicy"]["rules"];
    // The job controller applies the first rule that matches: a disruption before any exit code.
    assert_eq!(
        rules[0]["onPodConditions"][0]["type"], "DisruptionTarget",
        "k8s/job.yaml is stale"
    );
    assert_eq!(rules[1]["onExitCodes"]["containerName"], "executor");
    assert_eq!(
        rules[1]["onExitCodes"]["values"],
        json!(codes),
        "k8s/job.yaml is stale"
    );
}

#[test]
fn templates_that_cannot_serve_fail_with_the_path_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("missing.yaml", None, "cannot be read"),
        (
            "garbage.yaml",
            Some("spec: [unclosed"),
            "is not a batch/v1 Job",
        ),
        (
            "pod.yaml",
            Some("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"),
            "is not a batch/v1 Job",
        ),
        (
            "empty.yaml",
            Some(
                "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: []\n",
            ),
            "has no container",
        ),
    ];
    for (file, text, reason) in cases {
        let path = dir.path().join(file);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let message = JobTemplate::load(&path).unwrap_err().to_string();
        assert!(message.contains("COORDINATOR_JOB_TEMPLATE"), "{message}");
        assert!(message.contains(&*path.to_string_lossy()), "{message}");
        assert!(message.contains(reason), "{file}: {message}");
    }
}

#[test]
fn a_misspelt_field_is_named_instead_of_dropped() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/k8s/templates/misspelt-field.yaml");
    let message = JobTemplate::load(&path).unwrap_err().to_string();
    for part in [
        "does not know",
        "spec.template.spec.containers[0].imagePullPolicyy",
        "spelling",
    ] {
        assert!(message.contains(part), "{part:?} missing in {message}");
    }
    assert!(
        JobTemplate::parse(TEMPLATE).is_ok(),
        "k8s/job.yaml has no unknown field"
    );
}

#[test]
fn config_map_holds_module_and_input_and_is_owned_by_the_job() {
    let names = TaskNames::for_task("Fib 12");
    let owner = owner_reference(&names.job, "uid-1");
    let map = config_map(&task(), &names, b"\0asm\x01\0\0\0", owner).unwrap();
    let v = serde_json::to_value(&map).unwrap();
    assert_eq!(v["metadata"]["name"], json!(names.job));
    assert_eq!(
        v["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "wasm-exec-coordinator"
    );
    assert_eq!(
        v["metadata"]["annotations"]["wasm-exec.io/task-id"],
        "Fib 12"
    );
    let owner = &v["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["uid"]),
        (&json!("Job"), &json!("uid-1"))
    );
    assert_eq!(owner["apiVersion"], "batch/v1");
    assert_eq!(v["binaryData"]["module.wasm"], "AGFzbQEAAAA=");
    assert_eq!(v["data"]["input.json"], r#"{"args":[12],"entry":"fib"}"#);
    assert_eq!(v["immutable"], true);
}

#[test]
fn too_large_a_module_fails_before_anything_naming_the_limit() {
    let limit = CONFIG_MAP_LIMIT - MODULE_KEY.len() - INPUT_KEY.len();
    assert!(check_size(limit, 0).is_ok());
    let (kind, message) = check_size(limit - 10, 11).unwrap_err();
    assert_eq!(kind, ErrorKind::ModuleTooLarge);
    assert!(message.contains("1048576 bytes (1 MiB)"), "{message}");
}

/// `k8s/job.yaml` with `volumes` added to its pod and `env` to its container, as JSON text.
fn template_with(volumes: Value, env: Value) -> String {
    let mut job: Value = serde_saphyr::from_str(TEMPLATE).unwrap();
    let pod = &mut job["spec"]["template"]["spec"];
    pod["volumes"]
        .as_array_mut()
        .unwrap()
        .extend(volumes.as_array().unwrap().iter().cloned());
    pod["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .extend(env.as_array().unwrap().iter().cloned());
    job.to_string()
}

fn host_path_cache() -> Value {
    json!({"name": "wasm-cache", "hostPath": {"path": "/var/cache/wasm-exec", "type": "DirectoryOrCreate"}})
}

#[test]
fn the_cache_volumes_of_the_template_are_kept_and_mounted_with_their_paths() {
    let key = json!({"name": "wasm-cache-key", "secret": {"secretName": "wasm-exec-cache-key", "defaultMode": 288}});
    let job = rendered(&template_with(json!([key, host_path_cache()]), json!([])));
    let pod = &job["spec"]["template"]["spec"];
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        ["wasm", "input", "shared", "wasm-cache", "wasm-cache-key"]
    );
    assert_eq!(
        pod["volumes"][3]["hostPath"]["path"],
        "/var/cache/wasm-exec"
    );
    assert_eq!(
        pod["volumes"][4]["secret"]["secretName"],
        "wasm-exec-cache-key"
    );
    let container = &pod["containers"][0];
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert_eq!(
        mounts[3],
        json!({"name": "wasm-cache", "mountPath": CACHE_MOUNT, "readOnly": false})
    );
    assert_eq!(
        mounts[4],
        json!({"name": "wasm-cache-key", "mountPath": CACHE_KEY_MOUNT, "readOnly": true})
    );
    let env = env(container);
    assert_eq!(env["WASM_CACHE_DIR"], CACHE_DIR);
    assert_eq!(env["WASM_CACHE_KEY_FILE"], CACHE_KEY_FILE);
    assert!(CACHE_DIR.starts_with(CACHE_MOUNT) && CACHE_KEY_FILE.starts_with(CACHE_KEY_MOUNT));
    assert!(
        !job.to_string().contains("\"data\""),
        "the key is never in the Job: {job}"
    );
}

#[test]
fn a_cache_without_a_key_volume_keeps_its_key_beside_it_and_stray_paths_go() {
    let stray = json!([
        {"name": "WASM_CACHE_KEY_FILE", "value": "/somewhere/else.key"},
    ]);
    let job = rendered(&template_with(json!([host_path_cache()]), stray));
    let vars = env(&job["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(vars["WASM_CACHE_DIR"], CACHE_DIR);
    assert!(
        !vars.contains_key("WASM_CACHE_KEY_FILE"),
        "the executor's default, {CACHE_DIR}.key in the volume: {vars:?}"
    );
    // Off by default: the shipped template has no cache, and a stray WASM_CACHE_DIR without its
    // volume would point into the read-only root file system.
    let stray = json!([{"name": "WASM_CACHE_DIR", "value": "/var/cache/wasm-exec"}]);
    for template in [TEMPLATE.to_owned(), template_with(json!([]), stray)] {
        let job = rendered(&template);
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert!(!env(container).contains_key("WASM_CACHE_DIR"), "{job}");
        assert_eq!(container["volumeMounts"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn a_cache_key_volume_must_be_a_secret_beside_a_cache() {
    let secret = json!({"name": "wasm-cache-key", "secret": {"secretName": "k"}});
    let alone = JobTemplate::parse(&template_with(json!([secret]), json!([]))).unwrap_err();
    assert!(alone.contains("no wasm-cache"), "{alone}");
    let in_clear = json!({"name": "wasm-cache-key", "configMap": {"name": "k"}});
    let error = JobTemplate::parse(&template_with(
        json!([host_path_cache(), in_clear]),
        json!([]),
    ))
    .unwrap_err();
    assert!(error.contains("not a Secret"), "{error}");
}
