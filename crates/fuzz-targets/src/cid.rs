//! CID text, as a task's `wasm_cid` gives it (`wasm_exec_ipfs::parse_cid`).

use wasm_exec_ipfs::parse_cid;

/// Checks: no panic; a CID that parses prints as text that parses to the same CID.
pub fn cid(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cid) = parse_cid(text) else {
        return;
    };
    let printed = cid.to_string();
    let again = parse_cid(&printed)
        .unwrap_or_else(|e| panic!("{text:?} parsed, but its printed form {printed} did not: {e}"));
    assert_eq!(again, cid, "{text:?} -> {printed}");
}
