//! Receipts end to end: the real coordinator signs a finished task's receipt with its key,
//! `coordinator verify` checks the signature and reruns the task (a good receipt verifies, a
//! tampered or forged one fails), and viem, a standard Ethereum library, verifies it too.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{Service, command, get, post, repo, wait_finished};
use wasm_exec_chain::result_receipt::SignedReceipt;
use wasm_exec_chain::{B256, PrivateKeySigner};
use wasm_exec_test_peers::KEYS;

/// Writes `key` to a private file in `dir`.
fn key_file(dir: &Path, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("receipt.key");
    std::fs::write(&path, key).expect("write the key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// `coordinator verify <receipt>` with the sample mirror; its output.
fn verify(dir: &Path, receipt: &Value) -> Output {
    let path = dir.join(format!("receipt-{}.json", fastrand::u64(..)));
    std::fs::write(&path, receipt.to_string()).expect("write the receipt");
    command(&dir.join("verify-state"))
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run coordinator verify")
}

/// `node peers/viem/verify-receipt.mjs <receipt>`; its output.
fn viem(dir: &Path, receipt: &Value) -> Output {
    let script = repo("peers/viem/verify-receipt.mjs");
    assert!(
        repo("peers/viem/node_modules/viem").exists(),
        "viem is missing: run scripts/install-test-peers"
    );
    let path = dir.join("receipt-viem.json");
    std::fs::write(&path, receipt.to_string()).expect("write the receipt");
    Command::new("node")
        .arg(script)
        .arg(&path)
        .output()
        .expect("run node (Node.js 20)")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[allow(
    clippy::too_many_lines,
    reason = "one receipt followed from signing to every check, read top to bottom"
)]
#[test]
fn a_receipt_verifies_and_a_tampered_or_forged_one_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let operator: PrivateKeySigner = KEYS[2].parse().expect("key");
    let mut cmd = command(&dir.path().join("state"));
    cmd.env(
        "COORDINATOR_RECEIPT_KEY_FILE",
        key_file(dir.path(), KEYS[2]),
    );
    let svc = Service::start(cmd);
    let path = "/v1/tasks/fib-r/receipt";
    assert_eq!(get(&svc.base, path, None).status, 404, "no task yet");
    let body = json!({"task_id": "fib-r", "wasm_cid": "fib.wasm",
        "input": {"entry": "fib", "args": [20]}, "limits": {"fuel": 1_000_000}});
    assert_eq!(
        post(&svc.base, "/v1/tasks", &body.to_string(), None).status,
        201
    );
    let view = wait_finished(&svc.base, "fib-r");
    assert_eq!(view["result"]["result"], 6765);
    let reply = get(&svc.base, path, None);
    assert_eq!(reply.status, 200, "{reply:?}");
    let receipt = reply.body;
    assert_eq!(receipt["signer"], operator.address().to_string());
    let message = &receipt["message"];
    assert_eq!(message["resultHash"], view["result_hash"]);
    assert_eq!(message["origin"], "api");
    assert_eq!(message["fuelLimit"], "1000000");
    assert_eq!(
        message["fuelConsumed"],
        view["result"]["fuel_consumed"].to_string()
    );

    // A good receipt: the signer is printed, the rerun matches.
    let out = verify(dir.path(), &receipt);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("signer: {}", operator.address())),
        "{stdout}"
    );
    assert!(stdout.contains("verified"), "{stdout}");

    // viem agrees: the signature is the operator's.
    let out = viem(dir.path(), &receipt);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let said: Value = serde_json::from_str(text(&out.stdout).trim()).expect("viem's JSON line");
    assert_eq!(said["valid"], true);
    assert_eq!(said["recovered"], operator.address().to_string());

    // The result_hash changed under the signature: the signature no longer verifies.
    let mut tampered = receipt.clone();
    tampered["message"]["resultHash"] = json!(B256::repeat_byte(0xab).to_string());
    let out = verify(dir.path(), &tampered);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("not by the claimed signer"),
        "{}",
        text(&out.stderr)
    );
    let out = viem(dir.path(), &tampered);
    assert_eq!(out.status.code(), Some(1), "viem: {}", text(&out.stdout));

    // The signature changed: it recovers to someone else, or to no one.
    let mut resigned = receipt.clone();
    let signature = receipt["signature"].as_str().expect("signature");
    let flipped = if signature.as_bytes()[10] == b'0' {
        "1"
    } else {
        "0"
    };
    resigned["signature"] = json!(format!("{}{flipped}{}", &signature[..10], &signature[11..]));
    let out = verify(dir.path(), &resigned);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("signature"),
        "{}",
        text(&out.stderr)
    );

    // A forged result, properly signed by another key: the signature holds, the rerun does not.
    let mut forged = SignedReceipt::from_json(&receipt).expect("a receipt");
    forged.receipt.resultHash = B256::repeat_byte(0xcd);
    let liar: PrivateKeySigner = KEYS[1].parse().expect("key");
    let forged = SignedReceipt::sign(&liar, forged.receipt, forged.input).expect("signed");
    let out = verify(dir.path(), &forged.to_json());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("signer: {}", liar.address())),
        "{stdout}"
    );
    assert!(stderr.contains("MISMATCH"), "{stderr}");
    assert!(
        stderr.contains(&view["result_hash"].as_str().expect("hash")[2..]),
        "{stderr}"
    );
}

#[test]
fn a_running_task_has_no_result_or_receipt_yet_409_naming_how_to_wait() {
    let dir = tempfile::tempdir().expect("temp dir");
    let svc = Service::start(command(&dir.path().join("state")));
    let wat =
        std::fs::read_to_string(repo("testdata/wat/loop.wat")).expect("testdata/wat/loop.wat");
    let uploaded = support::post_as(&svc.base, "/v1/modules", &wat, Some("application/wasm"));
    assert!(
        uploaded.status == 201 || uploaded.status == 200,
        "{uploaded:?}"
    );
    let cid = uploaded.body["cid_v1"]
        .as_str()
        .expect("the module's CID")
        .to_owned();
    let body = json!({"task_id": "spin", "wasm_cid": cid, "input": {"entry": "loop"},
        "limits": {"timeout_sec": 60}});
    assert_eq!(
        post(&svc.base, "/v1/tasks", &body.to_string(), None).status,
        201
    );
    for path in ["/v1/tasks/spin/result", "/v1/tasks/spin/receipt"] {
        let early = get(&svc.base, path, None);
        let message = early.body["error"]["message"].as_str().unwrap_or("");
        assert_eq!(early.status, 409, "{path}: {early:?}");
        assert!(
            message.contains("/v1/tasks/spin?wait=30"),
            "{path}: {message}"
        );
    }
    let cancel = post(&svc.base, "/v1/tasks/spin/cancel", "", None);
    assert_eq!(cancel.status, 200, "{cancel:?}");
    assert_eq!(get(&svc.base, "/v1/tasks/none/receipt", None).status, 404);
}
