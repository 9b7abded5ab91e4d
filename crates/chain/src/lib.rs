//! The `TaskRegistry` contract (`contracts/TaskRegistry.sol`), bound with alloy's `sol!` from
//! the committed ABI and bytecode (`contracts/out`, rebuilt and checked by
//! `scripts/build-contracts`): the only crate that names alloy's contract types.
//!
//! Layout:
//!
//! - [`registry`]: the binding, deployment, typed reverts; [`connect`]: providers over HTTP(S)
//!   or WebSocket; [`heads`]: following the chain's head, pushed or polled.
//! - [`scan`]: reading `TaskSubmitted` events at a confirmation depth, noticing reorgs;
//!   [`node`]: the scanner's view of a real node.
//! - [`writer`]: writing results back exactly once, batched, pipelined, with fee bumps;
//!   [`receipts`]: the one poller that follows result transactions to their depth.
//! - [`setup`]: the checks before serving; [`key`]: the key file; [`requester`]: what a
//!   requester and the owner do (submit a task, wait for its result, authorise an executor).
//! - [`result_receipt`]: the EIP-712 receipt an operator signs for each finished task.

pub mod connect;
pub mod heads;
pub mod key;
pub mod node;
pub mod receipts;
pub mod registry;
pub mod requester;
pub mod result_receipt;
pub mod scan;
pub mod setup;
pub mod writer;

pub use alloy::primitives::{Address, B256, U256, keccak256};
pub use alloy::providers::DynProvider;
pub use alloy::signers::local::PrivateKeySigner;
pub use connect::{Transport, connect, connect_http};
pub use registry::{ChainError, Registry, TaskRegistry, deploy};
