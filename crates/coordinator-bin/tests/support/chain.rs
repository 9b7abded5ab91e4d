//! anvil with the TaskRegistry deployed, for the chain tests: a requester, a reader, the
//! coordinator command that serves the registry, and blocks mined on demand.

#![allow(dead_code)] // each test binary uses a different part of this helper

use crate::support::{command, post};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasm_exec_chain::requester::{Completion, TaskRequest, completions, set_executor, submit_task};
use wasm_exec_chain::{
    Address, DynProvider, PrivateKeySigner, Registry, U256, connect_http, deploy,
};
use wasm_exec_test_peers::{Anvil, KEYS};

/// anvil with a deployed registry, an authorised executor (KEYS[1]) and a requester (KEYS[2]).
pub struct Chain {
    /// The node.
    pub anvil: Anvil,
    /// Runs the chain crate's async calls for these blocking tests.
    pub rt: tokio::runtime::Runtime,
    /// The deployed TaskRegistry.
    pub contract: Address,
    /// The registry as the requester (KEYS[2]) sees it.
    pub requester: Registry<DynProvider>,
    /// A provider for reads (logs, heads).
    pub reader: DynProvider,
    /// Key files.
    dir: tempfile::TempDir,
}

/// The signer of a private key.
pub fn signer(key: &str) -> PrivateKeySigner {
    key.parse().expect("key")
}

impl Chain {
    pub fn start() -> Chain {
        Self::start_with(&[])
    }

    /// anvil started with extra arguments.
    pub fn start_with(anvil_args: &[&str]) -> Chain {
        let anvil = Anvil::start_with(anvil_args);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let owner = connect_http(&anvil.url, signer(KEYS[0])).expect("owner");
        let contract = rt.block_on(deploy(&owner)).expect("deploy");
        rt.block_on(set_executor(
            &Registry::new(contract, owner),
            signer(KEYS[1]).address(),
            true,
        ))
        .expect("authorise");
        let requester = Registry::new(
            contract,
            connect_http(&anvil.url, signer(KEYS[2])).expect("requester"),
        );
        let reader = connect_http(&anvil.url, signer(KEYS[0])).expect("reader");
        let dir = tempfile::tempdir().expect("tempdir");
        Chain {
            anvil,
            rt,
            contract,
            requester,
            reader,
            dir,
        }
    }

    /// A key file (mode 600) holding `key`.
    pub fn key_file(&self, key: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(format!("{}.key", &key[2..10]));
        std::fs::write(&path, format!("{key}\n")).expect("write the key file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// The coordinator serving this registry with `key`, state in `state`.
    pub fn coordinator(
        &self,
        state: &Path,
        key: &str,
        confirmations: u64,
    ) -> std::process::Command {
        self.coordinator_at(&self.anvil.url, state, key, confirmations)
    }

    /// The node's WebSocket endpoint (anvil serves it on its HTTP port).
    pub fn ws_url(&self) -> String {
        self.anvil.url.replacen("http://", "ws://", 1)
    }

    /// [`Chain::coordinator`] reaching the node at `url`.
    pub fn coordinator_at(
        &self,
        url: &str,
        state: &Path,
        key: &str,
        confirmations: u64,
    ) -> std::process::Command {
        let mut cmd = command(state);
        cmd.env("COORDINATOR_TASK_SOURCE", "chain")
            .env("COORDINATOR_CHAIN_RPC_URL", url)
            .env("COORDINATOR_CHAIN_ID", "31337")
            .env("COORDINATOR_CONTRACT_ADDRESS", self.contract.to_string())
            .env("COORDINATOR_CHAIN_KEY_FILE", self.key_file(key))
            .env("COORDINATOR_CONFIRMATIONS", confirmations.to_string())
            .env("COORDINATOR_CHAIN_POLL_MS", "100")
            .env("COORDINATOR_CONCURRENCY", "2");
        cmd
    }

    pub fn submit(&self, cid: &str, entry: &str, input: &str) -> (U256, u64) {
        let submitted = self
            .rt
            .block_on(submit_task(
                &self.requester,
                &TaskRequest {
                    wasm_cid: cid.into(),
                    entry: entry.into(),
                    input: input.into(),
                    fuel: 0,
                    timeout_sec: 0,
                },
            ))
            .expect("submit");
        (submitted.task_id, submitted.block)
    }

    pub fn completions(&self, id: U256) -> Vec<Completion> {
        self.rt
            .block_on(completions(&self.reader, self.contract, Some(id), 0))
            .expect("completions")
    }

    /// Waits (20 s at most) for task `id`'s `TaskCompleted`; returns every one it has.
    pub fn wait_completed(&self, id: U256) -> Vec<Completion> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.completions(id);
            if !found.is_empty() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} has no result on chain"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn rpc(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let reply = post(&self.anvil.url, "", &body.to_string(), None);
        assert_eq!(reply.status, 200, "{method}: {reply:?}");
        reply.body["result"].clone()
    }

    pub fn mine(&self, blocks: usize) {
        for _ in 0..blocks {
            self.rpc("evm_mine", json!([]));
        }
    }

    /// The coordinator's id of on-chain task `id`.
    pub fn task_id(&self, id: U256) -> String {
        format!(
            "eip155-31337-{}-{id}",
            self.contract.to_string().to_ascii_lowercase()
        )
    }

    /// Mines a block every `every` until the returned flag is cleared.
    pub fn keep_mining(&self, every: Duration) -> Arc<AtomicBool> {
        let on = Arc::new(AtomicBool::new(true));
        let flag = on.clone();
        let url = self.anvil.url.clone();
        std::thread::spawn(move || {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "evm_mine", "params": []});
            while flag.load(Ordering::Relaxed) {
                // The node may be down (restart test): a failed call is just a missed block.
                let _ = ureq::post(&url)
                    .header("Content-Type", "application/json")
                    .send(body.to_string());
                std::thread::sleep(every);
            }
        });
        on
    }
}
