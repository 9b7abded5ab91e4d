//! The `TaskRegistry` contract (`contracts/TaskRegistry.sol`), bound with alloy's `sol!` from
//! the committed ABI and bytecode (`contracts/out`, rebuilt and checked by
//! `scripts/build-contracts`): the only crate that names alloy's contract types.
//!
//! - [`registry`]: the binding, deployment, typed reverts, an HTTP provider.
//! - [`scan`]: reading `TaskSubmitted` events at a confirmation depth, noticing reorgs;
//!   [`node`]: the scanner's view of a real node.
//! - [`writer`]: writing results back exactly once, pipelined, with fee bumps.
//! - [`setup`]: the checks before serving; [`key`]: the key file.

pub mod key;
pub mod node;
pub mod receipts;
pub mod registry;
pub mod requester;
pub mod scan;
pub mod setup;
pub mod writer;

pub use alloy::primitives::{Address, B256, U256, keccak256};
pub use alloy::providers::DynProvider;
pub use alloy::signers::local::PrivateKeySigner;
pub use registry::{ChainError, Registry, TaskRegistry, connect_http, deploy};
