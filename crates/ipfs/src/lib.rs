//! IPFS byte formats, as pure functions over bytes (no I/O): which CIDs we accept, the CIDs
//! `ipfs add` gives a file, and verification of plain bytes, single blocks and CARs against a
//! CID. The coordinator's module stores (mirror, gateway) fetch bytes and call these.
//!
//! # Layout
//! - [`cid`]: parse the CIDs we accept, compute a file's CIDs, verify bytes or a block.
//! - [`car`]: rebuild a file from a CARv1, every block checked, with bounded work.
//! - [`unixfs`]: the dag-pb and UnixFS protobufs and the js-ipfs importer's balanced layout.

pub mod car;
pub mod cid;
pub mod unixfs;

pub use car::{CarLimits, file_from_car};
pub use cid::{
    Cid, CidError, FileCids, IntegrityError, file_cids, parse_cid, verify_file, verify_raw_block,
};
