//! How IPFS stores a file: the dag-pb node and UnixFS `Data` protobufs (hand-encoded, as each is
//! a handful of fields) and the js-ipfs importer's balanced layout that turns file bytes into a
//! DAG of such nodes, whose root CID is what `ipfs add` prints.

use ::cid::multihash::Multihash;
use ::cid::{Cid, Version};
use sha2::{Digest, Sha256};

/// Multicodec of a block that is plain bytes.
pub(crate) const RAW: u64 = 0x55;
/// Multicodec of a dag-pb (protobuf) node.
pub(crate) const DAG_PB: u64 = 0x70;
/// Multihash code of sha2-256, the only hash `ipfs add` uses by default.
pub(crate) const SHA2_256: u64 = 0x12;
/// Chunk size of the importer's default chunker `size-262144`, in bytes.
pub(crate) const CHUNK_SIZE: usize = 262_144;
/// Most links the importer's balanced layout puts in one node.
pub(crate) const MAX_LINKS: usize = 174;

/// UnixFS `Data.Type` values (unixfs.proto) that hold file content.
const TYPE_RAW: u64 = 0;
const TYPE_FILE: u64 = 2;

/// Protobuf wire types we meet.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// How an importer cut a file and linked its chunks; one value per `ipfs add` setting we redo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Bytes per leaf (`--chunker size-N`).
    pub(crate) chunk_size: usize,
    /// CID version of the dag-pb nodes (`--cid-version`).
    pub(crate) version: Version,
    /// Leaves are raw blocks (`--raw-leaves`, implied by `--cid-version 1`) rather than UnixFS
    /// `file` nodes.
    pub(crate) raw_leaves: bool,
}

impl Layout {
    /// `ipfs add`: CIDv0, UnixFS `file` leaves.
    pub(crate) const V0: Layout = Layout::new(Version::V0, false);
    /// `ipfs add --cid-version 1`: raw leaves.
    pub(crate) const V1_RAW_LEAVES: Layout = Layout::new(Version::V1, true);
    /// `ipfs add --cid-version 1 --raw-leaves false`.
    pub(crate) const V1_FILE_LEAVES: Layout = Layout::new(Version::V1, false);
    /// A raw-codec CID: the whole file as one raw block, i.e. raw leaves with a single chunk.
    pub(crate) const SINGLE_RAW_BLOCK: Layout = Layout {
        chunk_size: usize::MAX,
        ..Layout::V1_RAW_LEAVES
    };

    const fn new(version: Version, raw_leaves: bool) -> Layout {
        Layout {
            chunk_size: CHUNK_SIZE,
            version,
            raw_leaves,
        }
    }

    fn dag_pb_cid(&self, block: &[u8]) -> Cid {
        sha256_cid(self.version, DAG_PB, block)
    }
}

/// The sha2-256 multihash of `bytes`.
pub(crate) fn sha256_multihash(bytes: &[u8]) -> Multihash<64> {
    let digest = Sha256::digest(bytes);
    // 32 digest bytes always fit the 64-byte multihash buffer.
    Multihash::wrap(SHA2_256, &digest).expect("a 32-byte digest fits a 64-byte multihash")
}

/// The sha2-256 CID of `bytes`; a CIDv0 is always dag-pb, whatever `codec` says.
pub(crate) fn sha256_cid(version: Version, codec: u64, bytes: &[u8]) -> Cid {
    let hash = sha256_multihash(bytes);
    match version {
        // A CIDv0 needs exactly a 32-byte sha2-256 multihash, which `hash` is.
        Version::V0 => Cid::new_v0(hash).expect("a sha2-256 multihash makes a valid CIDv0"),
        Version::V1 => Cid::new_v1(codec, hash),
    }
}

/// One imported node as its parent sees it.
struct Child {
    cid: Cid,
    /// The link's `Tsize`: the block's length plus the `Tsize` of all its links.
    tsize: u64,
    /// File bytes below this node: its entry in the parent's `blocksizes`.
    file_size: u64,
}

/// The root CID that the js-ipfs importer (ipfs-unixfs-importer, balanced layout) gives `bytes`.
pub(crate) fn import(bytes: &[u8], layout: &Layout) -> Cid {
    let mut block = Vec::new();
    // An empty file is still one (empty) chunk.
    let chunks: Vec<&[u8]> = if bytes.is_empty() {
        vec![bytes]
    } else {
        bytes.chunks(layout.chunk_size.max(1)).collect()
    };
    let mut level: Vec<Child> = chunks
        .iter()
        .map(|chunk| leaf(chunk, layout, &mut block))
        .collect();
    // A one-chunk file is its leaf; otherwise batches of 174 become parents until one is left.
    while level.len() > 1 {
        level = level
            .chunks(MAX_LINKS)
            .map(|batch| parent(batch, layout, &mut block))
            .collect();
    }
    // `level` starts with at least one leaf and each round maps n > 1 nodes to ceil(n/174) >= 1.
    level.pop().expect("an import has at least one node").cid
}

fn leaf(chunk: &[u8], layout: &Layout, block: &mut Vec<u8>) -> Child {
    let len = chunk.len() as u64;
    if layout.raw_leaves {
        return Child {
            cid: Cid::new_v1(RAW, sha256_multihash(chunk)),
            tsize: len,
            file_size: len,
        };
    }
    block.clear();
    encode_file_node(&[], chunk, &[], block);
    Child {
        cid: layout.dag_pb_cid(block),
        tsize: block.len() as u64,
        file_size: len,
    }
}

fn parent(children: &[Child], layout: &Layout, block: &mut Vec<u8>) -> Child {
    let links: Vec<(Cid, u64)> = children.iter().map(|c| (c.cid, c.tsize)).collect();
    let blocksizes: Vec<u64> = children.iter().map(|c| c.file_size).collect();
    block.clear();
    encode_file_node(&links, &[], &blocksizes, block);
    Child {
        cid: layout.dag_pb_cid(block),
        tsize: block.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
        file_size: blocksizes.iter().sum(),
    }
}

/// Appends the dag-pb node of a UnixFS `file` as js-ipfs encodes it: every link (`Hash`, an
/// empty but present `Name`, `Tsize`) before `Data`; `Data` holds `Type`, the content if any,
/// `filesize` (content plus all `blocksizes`, always written) and `blocksizes`.
pub fn encode_file_node(
    links: &[(Cid, u64)],
    content: &[u8],
    blocksizes: &[u64],
    out: &mut Vec<u8>,
) {
    for (cid, tsize) in links {
        let hash = cid.to_bytes();
        let link_len = len_field_size(hash.len()) + len_field_size(0) + varint_field_size(*tsize);
        put_len_header(out, 2, link_len);
        put_len_header(out, 1, hash.len());
        out.extend_from_slice(&hash);
        put_len_header(out, 2, 0);
        put_varint_field(out, 3, *tsize);
    }
    let file_size = content.len() as u64 + blocksizes.iter().sum::<u64>();
    let content_size = if content.is_empty() {
        0
    } else {
        len_field_size(content.len())
    };
    let data_len = varint_field_size(TYPE_FILE)
        + content_size
        + varint_field_size(file_size)
        + blocksizes
            .iter()
            .map(|&size| varint_field_size(size))
            .sum::<usize>();
    put_len_header(out, 1, data_len);
    put_varint_field(out, 1, TYPE_FILE);
    if !content.is_empty() {
        put_len_header(out, 2, content.len());
        out.extend_from_slice(content);
    }
    put_varint_field(out, 3, file_size);
    for &size in blocksizes {
        put_varint_field(out, 4, size);
    }
}

fn varint_size(value: u64) -> usize {
    unsigned_varint::encode::u64(value, &mut unsigned_varint::encode::u64_buffer()).len()
}

/// Size of a field with a one-byte key (field numbers below 16) and a varint value.
fn varint_field_size(value: u64) -> usize {
    1 + varint_size(value)
}

/// Size of a length-delimited field with a one-byte key and `len` payload bytes.
fn len_field_size(len: usize) -> usize {
    1 + varint_size(len as u64) + len
}

fn put_varint(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(unsigned_varint::encode::u64(
        value,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    put_varint(out, field << 3 | VARINT);
    put_varint(out, value);
}

fn put_len_header(out: &mut Vec<u8>, field: u64, len: usize) {
    put_varint(out, field << 3 | LEN);
    put_varint(out, len as u64);
}

/// Why a block is not a dag-pb node with UnixFS file data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

fn malformed<T>(reason: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(reason.into()))
}

/// A dag-pb link as read from a block (`Name` and `Tsize` are not needed to rebuild a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The child's CID.
    pub cid: Cid,
}

/// A dag-pb node as read from a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbNode<'a> {
    /// Links in order.
    pub links: Vec<PbLink>,
    /// The `Data` field (UnixFS for files), if present.
    pub data: Option<&'a [u8]>,
}

/// The UnixFS `Data` fields that rebuild a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFs<'a> {
    /// `Type`: 0 raw and 2 file hold file content; 1 directory, 3 metadata, 4 symlink, 5 HAMT.
    pub kind: u64,
    /// File bytes held in this node, before those of its links.
    pub content: &'a [u8],
    /// Total file bytes below this node, if declared.
    pub file_size: Option<u64>,
    /// File bytes below each link, in link order.
    pub blocksizes: Vec<u64>,
}

impl UnixFs<'_> {
    /// What this node is, if not file content (for error messages).
    pub fn non_file_kind(&self) -> Option<&'static str> {
        match self.kind {
            TYPE_RAW | TYPE_FILE => None,
            1 => Some("directory"),
            3 => Some("metadata node"),
            4 => Some("symlink"),
            5 => Some("HAMT-sharded directory"),
            _ => Some("node of unknown type"),
        }
    }
}

/// One protobuf field: its number and value; fixed-width values are skipped.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Reads protobuf fields one by one from a buffer.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        match unsigned_varint::decode::u64(self.0) {
            Ok((value, rest)) => {
                self.0 = rest;
                Ok(value)
            }
            Err(err) => malformed(format!("bad varint ({err})")),
        }
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], DecodeError> {
        match usize::try_from(len).ok().filter(|&len| len <= self.0.len()) {
            Some(len) => {
                let (head, rest) = self.0.split_at(len);
                self.0 = rest;
                Ok(head)
            }
            None => malformed(format!("field of {len} bytes runs past the end")),
        }
    }

    fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, DecodeError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            VARINT => Value::Varint(self.varint()?),
            LEN => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            FIXED64 => self.take(8).map(|_| Value::Fixed)?,
            FIXED32 => self.take(4).map(|_| Value::Fixed)?,
            wire => return malformed(format!("unsupported wire type {wire}")),
        };
        Ok(Some((key >> 3, value)))
    }
}

/// Decodes a dag-pb block strictly, as the dag-pb spec asks: only `Links` then one `Data`.
pub fn decode_node(block: &[u8]) -> Result<PbNode<'_>, DecodeError> {
    let mut fields = Fields(block);
    let mut node = PbNode {
        links: Vec::new(),
        data: None,
    };
    while let Some((field, value)) = fields.next()? {
        match (field, value) {
            _ if node.data.is_some() => return malformed("field after Data"),
            (1, Value::Bytes(data)) => node.data = Some(data),
            (2, Value::Bytes(link)) => node.links.push(decode_link(link)?),
            (field, _) => return malformed(format!("unexpected PBNode field {field}")),
        }
    }
    Ok(node)
}

fn decode_link(bytes: &[u8]) -> Result<PbLink, DecodeError> {
    let mut fields = Fields(bytes);
    let mut cid = None;
    let mut last = 0;
    while let Some((field, value)) = fields.next()? {
        if field <= last {
            return malformed("PBLink fields repeated or out of order");
        }
        last = field;
        match (field, value) {
            (1, Value::Bytes(mut hash)) => {
                let parsed = Cid::read_bytes(&mut hash)
                    .map_err(|err| DecodeError(format!("link Hash is not a CID ({err})")))?;
                if !hash.is_empty() {
                    return malformed("link Hash has bytes after the CID");
                }
                cid = Some(parsed);
            }
            (2, Value::Bytes(_)) | (3, Value::Varint(_)) => {}
            (field, _) => return malformed(format!("unexpected PBLink field {field}")),
        }
    }
    match cid {
        Some(cid) => Ok(PbLink { cid }),
        None => malformed("link without Hash"),
    }
}

/// Decodes UnixFS `Data` leniently, as protobuf allows: unknown fields are skipped.
pub fn decode_unixfs(data: &[u8]) -> Result<UnixFs<'_>, DecodeError> {
    let mut fields = Fields(data);
    let mut kind = None;
    let mut unixfs = UnixFs {
        kind: 0,
        content: &[],
        file_size: None,
        blocksizes: Vec::new(),
    };
    while let Some((field, value)) = fields.next()? {
        match (field, value) {
            (1, Value::Varint(value)) => kind = Some(value),
            (2, Value::Bytes(content)) => unixfs.content = content,
            (3, Value::Varint(size)) => unixfs.file_size = Some(size),
            (4, Value::Varint(size)) => unixfs.blocksizes.push(size),
            (4, Value::Bytes(packed)) => {
                let mut sizes = Fields(packed);
                while !sizes.0.is_empty() {
                    unixfs.blocksizes.push(sizes.varint()?);
                }
            }
            // hashType, fanout, mode, mtime and unknown fields do not change the file bytes.
            _ => {}
        }
    }
    match kind {
        Some(kind) => Ok(UnixFs { kind, ..unixfs }),
        None => malformed("UnixFS Data without Type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::{parse_cid, tests::xorshift_bytes};

    #[test]
    fn importer_with_64_byte_chunks_matches_js_ipfs() {
        // `jsipfs add --chunker size-64 [--cid-version 1]` of the 12345-byte test file.
        let bytes = xorshift_bytes(12_345);
        let v0 = Layout {
            chunk_size: 64,
            ..Layout::V0
        };
        let v1 = Layout {
            chunk_size: 64,
            ..Layout::V1_RAW_LEAVES
        };
        let v0_root = parse_cid("QmZ3EMnDuAvHFEaou1SQyWZaxn98evTABaZkhhc2kBp3vc").unwrap();
        let v1_root = parse_cid("bafybeigbz7g5prsjc2h77odar6gld3ugyisoawtqrs3rp3ziatpc4qt66u");
        assert_eq!(import(&bytes, &v0), v0_root);
        assert_eq!(import(&bytes, &v1), v1_root.unwrap());
    }

    #[test]
    fn empty_file_node_matches_the_well_known_empty_file() {
        let mut block = Vec::new();
        encode_file_node(&[], &[], &[], &mut block);
        assert_eq!(block, [0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]);
        assert_eq!(
            Layout::V0.dag_pb_cid(&block).to_string(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
    }

    #[test]
    fn file_leaf_puts_content_before_filesize() {
        let mut block = Vec::new();
        encode_file_node(&[], b"abc", &[], &mut block);
        assert_eq!(
            block,
            [
                0x0a, 0x09, 0x08, 0x02, 0x12, 0x03, b'a', b'b', b'c', 0x18, 0x03
            ]
        );
    }

    #[test]
    fn parent_node_round_trips_through_the_decoder() {
        let leaf = Cid::new_v1(RAW, sha256_multihash(b"abc"));
        let mut block = Vec::new();
        encode_file_node(&[(leaf, 3), (leaf, 3)], &[], &[3, 3], &mut block);
        let node = decode_node(&block).unwrap();
        assert_eq!(node.links, vec![PbLink { cid: leaf }, PbLink { cid: leaf }]);
        let file = decode_unixfs(node.data.unwrap()).unwrap();
        assert_eq!(file.non_file_kind(), None);
        assert_eq!(
            (file.content, file.file_size, file.blocksizes),
            (&[][..], Some(6), vec![3, 3])
        );
    }

    #[test]
    fn data_before_links_is_rejected() {
        // Data (field 1) then a Links entry (field 2): not the canonical dag-pb order.
        let block = [0x0a, 0x02, 0x08, 0x02, 0x12, 0x00];
        let err = decode_node(&block).unwrap_err();
        assert!(err.0.contains("after Data"), "{err:?}");
    }

    #[test]
    fn truncated_field_is_rejected() {
        let err = decode_node(&[0x0a, 0x09, 0x08]).unwrap_err();
        assert!(err.0.contains("past the end"), "{err:?}");
    }

    #[test]
    fn directory_data_is_not_a_file() {
        let unixfs = decode_unixfs(&[0x08, 0x01]).unwrap();
        assert_eq!(unixfs.non_file_kind(), Some("directory"));
    }

    #[test]
    fn packed_blocksizes_are_read() {
        let file = decode_unixfs(&[0x08, 0x02, 0x22, 0x02, 0x05, 0x06]).unwrap();
        assert_eq!(file.blocksizes, vec![5, 6]);
    }
}
