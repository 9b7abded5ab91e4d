//! The `TaskRegistry` contract (`contracts/TaskRegistry.sol`), bound with alloy's `sol!` from
//! the committed ABI and bytecode (`contracts/out`, rebuilt and checked by
//! `scripts/build-contracts`): the only crate that names alloy's contract types.

pub mod node;
pub mod registry;
pub mod scan;

pub use registry::{ChainError, Registry, TaskRegistry, connect_http, deploy};
