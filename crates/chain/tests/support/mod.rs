//! A real anvil with a deployed TaskRegistry v2, its owner, a requester and four authorised
//! executors, each with its own key; commitments and reveals as the contract checks them.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the fixture"
)]

use alloy::primitives::aliases::U40;
use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use wasm_exec_chain::registry::TaskRegistry::{self, TaskRegistryErrors};
use wasm_exec_chain::{ChainError, Registry, connect_http, deploy};
use wasm_exec_test_peers::{Anvil, KEYS};

/// Anvil's funded accounts 3 to 5 (its well-known test mnemonic), beside `KEYS` 0 to 2.
const MORE_KEYS: [&str; 3] = [
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
];

/// Sends a call and waits for it to be mined, or returns the contract's revert.
macro_rules! send {
    ($call:expr) => {
        async {
            let receipt = $call
                .send()
                .await?
                .get_receipt()
                .await
                .map_err(|e| ChainError::Other(format!("waiting for the receipt: {e}")))?;
            Ok::<_, ChainError>(receipt)
        }
    };
}

/// One account and the registry as it sees it.
pub struct Account {
    /// Its address.
    pub address: Address,
    /// The registry, signed by this account.
    pub registry: Registry<DynProvider>,
}

/// The chain and its accounts.
pub struct Fixture {
    /// The node (killed on drop).
    pub anvil: Anvil,
    /// The deployer and owner.
    pub owner: Account,
    /// Who submits and pays.
    pub requester: Account,
    /// Four authorised executors.
    pub executors: Vec<Account>,
    /// A provider for raw requests (time travel, balances).
    pub provider: DynProvider,
}

fn account(anvil: &Anvil, key: &str, contract: Address) -> Account {
    let signer: PrivateKeySigner = key.parse().expect("key");
    let address = signer.address();
    let provider = connect_http(&anvil.url, signer).expect("provider");
    Account {
        address,
        registry: TaskRegistry::new(contract, provider),
    }
}

/// Deploys the registry and authorises four executors.
pub async fn fixture() -> Fixture {
    let anvil = Anvil::start();
    let signer: PrivateKeySigner = KEYS[0].parse().expect("key");
    let provider = connect_http(&anvil.url, signer).expect("provider");
    let contract = deploy(&provider).await.expect("deploy");
    let owner = account(&anvil, KEYS[0], contract);
    let requester = account(&anvil, KEYS[2], contract);
    let executors: Vec<Account> = [KEYS[1], MORE_KEYS[0], MORE_KEYS[1], MORE_KEYS[2]]
        .iter()
        .map(|key| account(&anvil, key, contract))
        .collect();
    for executor in &executors {
        send!(owner.registry.setExecutor(executor.address, true))
            .await
            .expect("authorise");
    }
    Fixture {
        anvil,
        owner,
        requester,
        executors,
        provider,
    }
}

impl Fixture {
    /// The latest block's timestamp, in unix seconds.
    pub async fn now(&self) -> u64 {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .expect("latest block")
            .expect("a latest block");
        block.header.timestamp
    }

    /// Moves the chain's clock on by `seconds` and mines a block.
    pub async fn advance(&self, seconds: u64) {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_increaseTime".into(), [seconds])
            .await
            .expect("evm_increaseTime");
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_mine".into(), ())
            .await
            .expect("evm_mine");
    }

    /// Submits a k-of-n task from the requester with `fee` wei and a deadline `window` seconds
    /// from now; returns its id.
    pub async fn submit(&self, replicas: u8, quorum: u8, window: u64, fee: u128) -> U256 {
        self.submit_with_gas(replicas, quorum, window, fee).await.0
    }

    /// As [`Fixture::submit`], and the submission's gas.
    pub async fn submit_with_gas(
        &self,
        replicas: u8,
        quorum: u8,
        window: u64,
        fee: u128,
    ) -> (U256, u64) {
        let deadline = self.now().await + window;
        let receipt = send!(
            self.requester
                .registry
                .submitTask_1(
                    "bafkreiabc".into(),
                    "fib".into(),
                    "[12]".into(),
                    1_000_000,
                    5,
                    replicas,
                    quorum,
                    U40::from(deadline)
                )
                .value(U256::from(fee))
        )
        .await
        .expect("submit");
        let id = receipt
            .decoded_log::<TaskRegistry::TaskSubmitted>()
            .expect("a TaskSubmitted")
            .taskId;
        (id, receipt.gas_used)
    }
}

/// A result as an executor reveals it.
#[derive(Clone, Debug)]
pub struct Claim {
    /// Whether the task succeeded.
    pub ok: bool,
    /// The result value.
    pub result: String,
    /// The result hash (off chain: keccak-256 of the canonical encoding).
    pub hash: B256,
    /// The executor's secret salt.
    pub salt: B256,
}

impl Claim {
    /// The result `value`, hashed as a stand-in for the canonical encoding, with `salt`.
    pub fn new(value: &str, salt: u8) -> Self {
        Self {
            ok: true,
            result: value.into(),
            hash: keccak256(value.as_bytes()),
            salt: B256::repeat_byte(salt),
        }
    }

    /// `keccak256(abi.encode(resultHash, executor, salt))`: 96 bytes, one word each.
    pub fn commitment(&self, executor: Address) -> B256 {
        let encoded = (self.hash, executor, self.salt).abi_encode();
        assert_eq!(encoded.len(), 96);
        keccak256(encoded)
    }
}

/// Commits `claim` for `task` from `who`.
pub async fn commit(who: &Account, task: U256, claim: &Claim) -> Result<u64, ChainError> {
    let receipt = send!(
        who.registry
            .commitResult(task, claim.commitment(who.address))
    )
    .await?;
    Ok(receipt.gas_used)
}

/// Reveals `claim` for `task` from `who`; returns the receipt.
pub async fn reveal(
    who: &Account,
    task: U256,
    claim: &Claim,
) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
    send!(
        who.registry
            .revealResult(task, claim.ok, claim.result.clone(), claim.hash, claim.salt)
    )
    .await
}

/// The contract's revert, or a panic naming what happened instead.
pub fn reverted<T: std::fmt::Debug>(result: Result<T, ChainError>) -> TaskRegistryErrors {
    match result {
        Err(ChainError::Reverted(e)) => e,
        other => panic!("expected a revert, got {other:?}"),
    }
}

/// Every `TaskCompleted` of `task`.
pub async fn completions(f: &Fixture, task: U256) -> Vec<TaskRegistry::TaskCompleted> {
    let filter = alloy::rpc::types::Filter::new()
        .address(*f.owner.registry.address())
        .event_signature(
            <TaskRegistry::TaskCompleted as alloy::sol_types::SolEvent>::SIGNATURE_HASH,
        )
        .topic1(B256::from(task))
        .from_block(0);
    f.provider
        .get_logs(&filter)
        .await
        .expect("logs")
        .iter()
        .map(|log| {
            log.log_decode::<TaskRegistry::TaskCompleted>()
                .expect("decode")
                .inner
                .data
        })
        .collect()
}
