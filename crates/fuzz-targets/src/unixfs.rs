//! dag-pb nodes and their UnixFS `Data` (`wasm_exec_ipfs::unixfs`), as the CAR walk decodes them.

use wasm_exec_ipfs::Cid;
use wasm_exec_ipfs::unixfs::{decode_node, decode_unixfs, encode_file_node};

/// Checks: no panic on a block or on bare UnixFS data; a file node that decodes, encoded again
/// the way js-ipfs writes it, decodes to the same links, content and sizes.
pub fn unixfs(data: &[u8]) {
    let _ = decode_unixfs(data);
    let Ok(node) = decode_node(data) else {
        return;
    };
    let Some(Ok(file)) = node.data.map(decode_unixfs) else {
        return;
    };
    if file.non_file_kind().is_some() || file.blocksizes.len() != node.links.len() {
        return;
    }
    // The encoder writes the sum of the sizes, which real files never overflow.
    let Some(total) = file
        .blocksizes
        .iter()
        .try_fold(file.content.len() as u64, |sum, &s| sum.checked_add(s))
    else {
        return;
    };
    let links: Vec<(Cid, u64)> = node
        .links
        .iter()
        .zip(&file.blocksizes)
        .map(|(link, &size)| (link.cid, size))
        .collect();
    let mut block = Vec::new();
    encode_file_node(&links, file.content, &file.blocksizes, &mut block);
    let again = decode_node(&block).expect("an encoded node decodes");
    assert_eq!(again.links, node.links);
    let data = again.data.expect("an encoded node has Data");
    let again = decode_unixfs(data).expect("encoded UnixFS data decodes");
    assert_eq!(again.non_file_kind(), None);
    assert_eq!(again.content, file.content);
    assert_eq!(again.blocksizes, file.blocksizes);
    assert_eq!(again.file_size, Some(total));
}
