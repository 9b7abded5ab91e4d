//! The OpenAPI document: what the real binary serves at `/openapi.json` (without the token) and
//! prints with `coordinator openapi` is the committed `docs/openapi.json`, so that file never goes
//! stale. Schemathesis checks the API against it (scripts/schemathesis, run by the suite).

mod support;

use support::{Service, command, get_text, repo};

const REGENERATE: &str = "cargo run -p coordinator -- openapi > docs/openapi.json";

#[test]
fn the_served_and_printed_document_is_the_committed_one() {
    let committed = std::fs::read_to_string(repo("docs/openapi.json"))
        .unwrap_or_else(|e| panic!("reading docs/openapi.json ({e}); create it: {REGENERATE}"));
    let dir = tempfile::tempdir().unwrap();
    let printed = command(dir.path()).arg("openapi").output().unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert!(
        printed == committed,
        "docs/openapi.json differs from what the code generates; regenerate it: {REGENERATE}"
    );

    let mut cmd = command(dir.path());
    cmd.env("COORDINATOR_API_TOKEN", "s3cret");
    let svc = Service::start(cmd);
    let (status, served) = get_text(&svc.base, "/openapi.json");
    assert_eq!(status, 200, "served without the token: {served}");
    assert!(
        served == committed,
        "GET /openapi.json is not docs/openapi.json"
    );
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let (status, _) = get_text(&svc.base, "/v1/tasks");
    assert_eq!(status, 401, "the task routes still need the token");
}
