//! The Kubernetes objects the coordinator makes, and every manifest in `k8s/`, checked offline
//! against the Kubernetes 1.32 schemas with `kubernetes-validate --strict` (it rejects unknown
//! fields and wrong types); and the coordinator refusing to start on a template it cannot use.

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{command, repo};
use wasm_exec_kube_backend::names::TaskNames;
use wasm_exec_kube_backend::render::{self, JobTemplate, RunSettings};
use wasm_exec_task::TaskSpec;

/// Installed by `scripts/install-test-peers` (PyPI kubernetes-validate==1.37.0).
fn validator() -> PathBuf {
    let path = repo("peers/k8s/.venv/bin/kubernetes-validate");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-peers",
        path.display()
    );
    path
}

/// Runs the validator on `files`; panics with its output unless every object passes.
fn validate(files: &[PathBuf]) {
    let out = Command::new(validator())
        .args(["--strict", "-k", "1.32.0"])
        .args(files)
        .output()
        .expect("running kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    let passed = text.matches(" passed ").count();
    assert!(passed >= files.len(), "not every file was checked:\n{text}");
}

fn write_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> PathBuf {
    let path = dir.join(name);
    let bytes = serde_json::to_vec_pretty(value).expect("serialisable object");
    std::fs::write(&path, bytes).expect("writing to the temp dir");
    path
}

#[test]
fn rendered_job_and_config_map_pass_the_kubernetes_schemas() {
    let template = JobTemplate::load(&repo("k8s/job.yaml")).unwrap();
    let mut task = TaskSpec::new(
        "Fib 12 / ünïcode",
        "fib.wasm",
        json!({"entry": "fib", "args": [12]}),
    );
    task.limits.fuel = Some(1_000_000);
    let names = TaskNames::for_task(&task.task_id);
    let run = RunSettings {
        image: "executor-demo/executor:demo".into(),
        timeout_sec: 2.5,
        max_memory_mb: 64,
        max_output_bytes: 1 << 20,
        fuel: task.limits.fuel,
        start_allowance_sec: 120,
    };
    let job = template.render(&task, &names, &run);
    let owner = render::owner_reference(&names.job, "0b1c5d1e-3f4a-4b5c-8d9e-0f1a2b3c4d5e");
    let map = render::config_map(&task, &names, b"\0asm\x01\0\0\0", owner).unwrap();
    let dir = tempfile::tempdir().unwrap();
    validate(&[
        write_json(dir.path(), "job.json", &job),
        write_json(dir.path(), "configmap.json", &map),
    ]);
}

#[test]
fn a_broken_object_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                     "data": {"a": "b"}, "binaryDatta": {}});
    let path = write_json(dir.path(), "bad.json", &bad);
    let out = Command::new(validator())
        .args(["--strict", "-k", "1.32.0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a misspelt field must be rejected");
}

#[test]
fn every_manifest_in_k8s_passes_the_kubernetes_schemas() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.iter().any(|p| p.ends_with("job.yaml")), "{files:?}");
    validate(&files);
}

#[test]
fn the_coordinator_refuses_a_template_it_cannot_use_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("no-container.yaml");
    std::fs::write(
        &template,
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: []\n",
    )
    .unwrap();
    let out = command(&dir.path().join("state"))
        .args(["--once"])
        .env("COORDINATOR_BACKEND", "kubernetes")
        .env("COORDINATOR_JOB_TEMPLATE", &template)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&*template.to_string_lossy()) && stderr.contains("has no container"),
        "{stderr}"
    );
}

#[test]
fn the_coordinator_says_how_to_reach_a_cluster_when_it_finds_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(&dir.path().join("state"))
        .args(["--once"])
        .env("COORDINATOR_BACKEND", "kubernetes")
        .env("COORDINATOR_JOB_TEMPLATE", repo("k8s/job.yaml"))
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no Kubernetes cluster") && stderr.contains("KUBECONFIG"),
        "{stderr}"
    );
}
