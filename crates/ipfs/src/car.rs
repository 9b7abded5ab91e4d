//! Trustless verification: rebuild a file from a CARv1 (a gateway's `?format=car` answer or
//! `/api/v0/dag/export`), checking every block against its CID and bounding the size, depth and
//! work that a hostile gateway can make us spend.

use std::collections::HashMap;

use crate::cid::{Cid, IntegrityError, check_supported, verify_raw_block};
use crate::unixfs::{self, RAW};

/// The deepest walk we ever make, whatever [`CarLimits::max_depth`] says: each level is one stack
/// frame.
pub const MAX_DEPTH: usize = 64;

/// Bounds on what a CAR from an untrusted gateway can make [`file_from_car`] do. The CAR itself is
/// already in memory; these bound what is built from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarLimits {
    /// Largest file to rebuild, in bytes (default 64 MiB).
    pub max_file_bytes: u64,
    /// Most links from the root to a leaf (default 16, at most [`MAX_DEPTH`]); `ipfs add` needs 3
    /// levels for 7 GB with its default chunks.
    pub max_depth: usize,
    /// Most blocks in the CAR and most nodes to visit, a node shared by several links counting
    /// once per link (default 1,048,576: a 64 MiB file in 64-byte chunks; default chunks need
    /// one per 256 KiB).
    pub max_nodes: usize,
}

impl Default for CarLimits {
    fn default() -> Self {
        CarLimits {
            max_file_bytes: 64 << 20,
            max_depth: 16,
            max_nodes: 1 << 20,
        }
    }
}

/// Parses a CARv1 whose header names `root`, verifies every block in it against its CID, then
/// walks the file DAG from `root` (dag-pb UnixFS `file` nodes over raw or `file` leaves, or one
/// raw block) and returns the file bytes, checking each node's declared sizes.
pub fn file_from_car(
    root: &Cid,
    car: &[u8],
    limits: &CarLimits,
) -> Result<Vec<u8>, IntegrityError> {
    let root_key = block_key(root)?;
    let Car { roots, blocks } = parse_car(car, limits)?;
    if !roots.iter().any(|r| block_key(r).ok() == Some(root_key)) {
        return Err(IntegrityError::RootMismatch {
            expected: *root,
            roots,
        });
    }
    let mut walk = Walk {
        blocks: &blocks,
        limits,
        visited: 0,
        file: Vec::new(),
    };
    walk.append(root, 0)?;
    Ok(walk.file)
}

/// What names a block: its codec and sha2-256 digest. A CIDv0 and the CIDv1 of the same dag-pb
/// block meet here, and a key takes 40 bytes where a `Cid` takes 96.
type BlockKey = (u64, [u8; 32]);

/// The key of a CID we can verify; any other CID is an error.
fn block_key(cid: &Cid) -> Result<BlockKey, IntegrityError> {
    check_supported(cid)?;
    let mut digest = [0; 32];
    // `check_supported` lets through only 32-byte sha2-256 digests, so the lengths match.
    digest.copy_from_slice(cid.hash().digest());
    Ok((cid.codec(), digest))
}

/// A parsed CAR: header roots and verified blocks.
struct Car<'a> {
    roots: Vec<Cid>,
    blocks: HashMap<BlockKey, &'a [u8]>,
}

fn malformed(offset: usize, reason: impl Into<String>) -> IntegrityError {
    IntegrityError::MalformedCar {
        offset,
        reason: reason.into(),
    }
}

fn parse_car<'a>(car: &'a [u8], limits: &CarLimits) -> Result<Car<'a>, IntegrityError> {
    let mut sections = Sections { car, pos: 0 };
    let Some((_, header)) = sections.next()? else {
        return Err(malformed(0, "the CAR is empty"));
    };
    let roots = parse_header(header).map_err(|reason| malformed(0, reason))?;
    let mut blocks = HashMap::new();
    while let Some((offset, mut block)) = sections.next()? {
        let cid = Cid::read_bytes(&mut block).map_err(|err| {
            malformed(offset, format!("section does not start with a CID ({err})"))
        })?;
        verify_raw_block(&cid, block)?;
        blocks.insert(block_key(&cid)?, block);
        if blocks.len() > limits.max_nodes {
            return Err(IntegrityError::TooManyNodes {
                limit: limits.max_nodes,
            });
        }
    }
    Ok(Car { roots, blocks })
}

/// Reads varint-length-prefixed sections, each with its offset in the CAR.
struct Sections<'a> {
    car: &'a [u8],
    pos: usize,
}

impl<'a> Sections<'a> {
    fn next(&mut self) -> Result<Option<(usize, &'a [u8])>, IntegrityError> {
        let offset = self.pos;
        let Some(rest) = self.car.get(offset..).filter(|rest| !rest.is_empty()) else {
            return Ok(None);
        };
        let (len, body) = unsigned_varint::decode::u64(rest)
            .map_err(|err| malformed(offset, format!("bad section length ({err})")))?;
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|&len| len > 0 && len <= body.len())
        else {
            let left = body.len();
            return Err(malformed(
                offset,
                format!("section of {len} bytes with {left} left; the CAR is truncated"),
            ));
        };
        self.pos = self.car.len() - body.len() + len;
        Ok(Some((offset, &body[..len])))
    }
}

/// CBOR major types in a CAR header.
const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
/// The dag-cbor tag of a CID.
const CID_TAG: u64 = 42;

/// Reads the dag-cbor header `{roots: [CID...], version: 1}`; nothing else is accepted.
fn parse_header(header: &[u8]) -> Result<Vec<Cid>, String> {
    let mut cbor = Cbor(header);
    let (mut roots, mut version) = (None, None);
    for _ in 0..cbor.expect(MAP, "a map")? {
        let len = cbor.expect(TEXT, "a text key")?;
        match cbor.take(len)? {
            b"roots" => {
                let count = cbor.expect(ARRAY, "an array of roots")?;
                roots = Some(
                    (0..count)
                        .map(|_| cbor.cid())
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            b"version" => version = Some(cbor.expect(UINT, "an integer version")?),
            key => {
                return Err(format!(
                    "unknown header key {:?}",
                    String::from_utf8_lossy(key)
                ));
            }
        }
    }
    if !cbor.0.is_empty() {
        return Err("bytes after the header map".to_owned());
    }
    match (version, roots) {
        (Some(1), Some(roots)) => Ok(roots),
        (Some(2), _) => Err("this is a CARv2".to_owned()),
        (Some(1), None) => Err("the header has no roots".to_owned()),
        (Some(version), _) => Err(format!("unknown CAR version {version}")),
        (None, _) => Err("the header has no version".to_owned()),
    }
}

/// A cursor over dag-cbor bytes: definite lengths only, as dag-cbor requires.
struct Cbor<'a>(&'a [u8]);

impl<'a> Cbor<'a> {
    fn take(&mut self, len: u64) -> Result<&'a [u8], String> {
        match usize::try_from(len).ok().filter(|&len| len <= self.0.len()) {
            Some(len) => {
                let (head, rest) = self.0.split_at(len);
                self.0 = rest;
                Ok(head)
            }
            None => Err("the header ends early".to_owned()),
        }
    }

    /// Reads an item head of major type `major` and returns its argument.
    fn expect(&mut self, major: u8, what: &str) -> Result<u64, String> {
        let first = self.take(1)?[0];
        let argument = match first & 0x1f {
            small @ 0..=23 => u64::from(small),
            info @ 24..=27 => self
                .take(1 << (info - 24))?
                .iter()
                .fold(0, |acc, &b| acc << 8 | u64::from(b)),
            _ => return Err("indefinite or reserved CBOR length".to_owned()),
        };
        if first >> 5 != major {
            return Err(format!("expected {what} in the header"));
        }
        Ok(argument)
    }

    /// Reads a CID: tag 42 over a byte string of 0x00 then the CID's binary form.
    fn cid(&mut self) -> Result<Cid, String> {
        if self.expect(TAG, "a CID tag")? != CID_TAG {
            return Err("a root is not tagged as a CID".to_owned());
        }
        let len = self.expect(BYTES, "CID bytes")?;
        let Some((&0, mut bytes)) = self.take(len)?.split_first() else {
            return Err("a root CID lacks its 0x00 prefix".to_owned());
        };
        let cid =
            Cid::read_bytes(&mut bytes).map_err(|err| format!("a root is not a CID ({err})"))?;
        if !bytes.is_empty() {
            return Err("a root CID has trailing bytes".to_owned());
        }
        Ok(cid)
    }
}

/// A depth-first walk that appends file bytes in order.
struct Walk<'a> {
    blocks: &'a HashMap<BlockKey, &'a [u8]>,
    limits: &'a CarLimits,
    visited: usize,
    file: Vec<u8>,
}

impl Walk<'_> {
    /// Appends the file bytes under `cid` and returns how many there were.
    fn append(&mut self, cid: &Cid, depth: usize) -> Result<u64, IntegrityError> {
        let max_depth = self.limits.max_depth.min(MAX_DEPTH);
        if depth > max_depth {
            return Err(IntegrityError::TooDeep { limit: max_depth });
        }
        self.visited += 1;
        if self.visited > self.limits.max_nodes {
            return Err(IntegrityError::TooManyNodes {
                limit: self.limits.max_nodes,
            });
        }
        let Some(&block) = self.blocks.get(&block_key(cid)?) else {
            return Err(IntegrityError::MissingBlock { cid: *cid });
        };
        if cid.codec() == RAW {
            self.push(block)?;
            return Ok(block.len() as u64);
        }
        // `block_key` accepted only raw and dag-pb.
        let bad = |reason: String| IntegrityError::MalformedNode { cid: *cid, reason };
        let node = unixfs::decode_node(block).map_err(|err| bad(err.0))?;
        let data = node.data.ok_or_else(|| bad("no Data field".to_owned()))?;
        let unixfs = unixfs::decode_unixfs(data).map_err(|err| bad(err.0))?;
        if let Some(kind) = unixfs.non_file_kind() {
            return Err(IntegrityError::NotAFile { cid: *cid, kind });
        }
        if unixfs.blocksizes.len() != node.links.len() {
            let (links, sizes) = (node.links.len(), unixfs.blocksizes.len());
            return Err(bad(format!("{links} links but {sizes} blocksizes")));
        }
        if depth == 0 {
            self.reserve(unixfs.file_size)?;
        }
        let start = self.file.len();
        self.push(unixfs.content)?;
        for (link, &declared) in node.links.iter().zip(&unixfs.blocksizes) {
            let actual = self.append(&link.cid, depth + 1)?;
            if actual != declared {
                return Err(IntegrityError::SizeMismatch {
                    cid: link.cid,
                    declared,
                    actual,
                });
            }
        }
        let actual = (self.file.len() - start) as u64;
        match unixfs.file_size {
            Some(declared) if declared != actual => Err(IntegrityError::SizeMismatch {
                cid: *cid,
                declared,
                actual,
            }),
            _ => Ok(actual),
        }
    }

    /// Refuses a root that declares too big a file before any work, else allocates it once.
    fn reserve(&mut self, declared: Option<u64>) -> Result<(), IntegrityError> {
        let Some(declared) = declared else {
            return Ok(());
        };
        if declared > self.limits.max_file_bytes {
            return Err(IntegrityError::TooLarge {
                limit: self.limits.max_file_bytes,
            });
        }
        self.file.reserve(usize::try_from(declared).unwrap_or(0));
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), IntegrityError> {
        if (self.file.len() + bytes.len()) as u64 > self.limits.max_file_bytes {
            return Err(IntegrityError::TooLarge {
                limit: self.limits.max_file_bytes,
            });
        }
        self.file.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::{CidError, parse_cid, tests::xorshift_bytes, verify_raw_block};
    use crate::unixfs::{DAG_PB, encode_file_node, sha256_cid};
    use ::cid::Version;

    /// `jsipfs add --chunker size-64 [--cid-version 1]` of the 12345-byte test file, then
    /// `jsipfs dag export`: 193 leaves under two parents (174 + 19 links) under the root.
    const V1_CAR: &[u8] = include_bytes!("../../../testdata/ipfs/xorshift-12345-chunk64-v1.car");
    const V1_ROOT: &str = "bafybeigbz7g5prsjc2h77odar6gld3ugyisoawtqrs3rp3ziatpc4qt66u";
    const V0_CAR: &[u8] = include_bytes!("../../../testdata/ipfs/xorshift-12345-chunk64-v0.car");
    const V0_ROOT: &str = "QmZ3EMnDuAvHFEaou1SQyWZaxn98evTABaZkhhc2kBp3vc";
    /// The 66-byte test file added with defaults: one raw block (v1), one dag-pb leaf (v0).
    const RAW_CAR: &[u8] = include_bytes!("../../../testdata/ipfs/xorshift-66-v1.car");
    const RAW_ROOT: &str = "bafkreidtzvyipc56wwfwmc2nbrtzq644ufbcdmycvrqvttuyemxlkzksge";
    const LEAF_CAR: &[u8] = include_bytes!("../../../testdata/ipfs/xorshift-66-v0.car");
    const LEAF_ROOT: &str = "QmQFU9kicJ7JWXJmew2rZSh6UoZPvZF81N6LDfaeVMC489";

    fn cid(text: &str) -> Cid {
        parse_cid(text).unwrap()
    }

    fn rebuild(root: &str, car: &[u8]) -> Result<Vec<u8>, IntegrityError> {
        file_from_car(&cid(root), car, &CarLimits::default())
    }

    /// The header and sections of a CAR, without their length prefixes.
    fn split(car: &[u8]) -> Vec<&[u8]> {
        let mut sections = Sections { car, pos: 0 };
        std::iter::from_fn(|| sections.next().unwrap().map(|(_, section)| section)).collect()
    }

    fn join(sections: &[&[u8]]) -> Vec<u8> {
        let mut car = Vec::new();
        for section in sections {
            car.extend_from_slice(unsigned_varint::encode::u64(
                section.len() as u64,
                &mut Default::default(),
            ));
            car.extend_from_slice(section);
        }
        car
    }

    /// A CARv1 with one root and the given blocks.
    fn write_car(root: &Cid, blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
        let cid_bytes = [vec![0], root.to_bytes()].concat();
        let mut header = vec![0xa2, 0x65];
        header.extend_from_slice(b"roots");
        header.extend_from_slice(&[0x81, 0xd8, 0x2a, 0x58, cid_bytes.len() as u8]);
        header.extend_from_slice(&cid_bytes);
        header.push(0x67);
        header.extend_from_slice(b"version");
        header.push(0x01);
        let sections: Vec<Vec<u8>> = blocks
            .iter()
            .map(|(cid, block)| [cid.to_bytes(), block.clone()].concat())
            .collect();
        let mut all: Vec<&[u8]> = vec![&header];
        all.extend(sections.iter().map(Vec::as_slice));
        join(&all)
    }

    /// A dag-pb UnixFS `file` node over `(child, file bytes below it)`, with its CID.
    fn file_node(content: &[u8], children: &[(Cid, u64)]) -> (Cid, Vec<u8>) {
        let mut block = Vec::new();
        let sizes: Vec<u64> = children.iter().map(|&(_, size)| size).collect();
        encode_file_node(children, content, &sizes, &mut block);
        (sha256_cid(Version::V1, DAG_PB, &block), block)
    }

    fn raw(bytes: &[u8]) -> (Cid, Vec<u8>) {
        (sha256_cid(Version::V1, RAW, bytes), bytes.to_vec())
    }

    #[test]
    fn js_ipfs_car_rebuilds_the_file() {
        let expected = xorshift_bytes(12_345);
        assert_eq!(rebuild(V1_ROOT, V1_CAR).unwrap(), expected);
        assert_eq!(rebuild(V0_ROOT, V0_CAR).unwrap(), expected);
    }

    #[test]
    fn single_block_car_is_the_file() {
        assert_eq!(rebuild(RAW_ROOT, RAW_CAR).unwrap(), xorshift_bytes(66));
        assert_eq!(rebuild(LEAF_ROOT, LEAF_CAR).unwrap(), xorshift_bytes(66));
    }

    #[test]
    fn root_given_as_v1_matches_a_v0_car() {
        let v1 = Cid::new_v1(DAG_PB, *cid(V0_ROOT).hash());
        assert_eq!(
            file_from_car(&v1, V0_CAR, &CarLimits::default())
                .unwrap()
                .len(),
            12_345
        );
    }

    #[test]
    fn js_ipfs_dag_pb_block_verifies_against_its_cid() {
        // The first section after the header is the root node.
        let mut section = split(V0_CAR)[1];
        let block_cid = Cid::read_bytes(&mut section).unwrap();
        assert_eq!(block_cid, cid(V0_ROOT));
        verify_raw_block(&block_cid, section).unwrap();
    }

    #[test]
    fn tampered_block_is_an_integrity_error() {
        let mut car = V1_CAR.to_vec();
        *car.last_mut().unwrap() ^= 0x01;
        let err = rebuild(V1_ROOT, &car).unwrap_err();
        let IntegrityError::BlockMismatch {
            cid: bad, actual, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_ne!(bad, &**actual);
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }

    #[test]
    fn missing_block_is_an_integrity_error() {
        let sections = split(V1_CAR);
        let mut last = *sections.last().unwrap();
        let dropped = Cid::read_bytes(&mut last).unwrap();
        let car = join(&sections[..sections.len() - 1]);
        let err = rebuild(V1_ROOT, &car).unwrap_err();
        assert_eq!(err, IntegrityError::MissingBlock { cid: dropped });
    }

    #[test]
    fn car_for_another_root_is_an_integrity_error() {
        let err = rebuild(RAW_ROOT, V1_CAR).unwrap_err();
        assert_eq!(
            err,
            IntegrityError::RootMismatch {
                expected: cid(RAW_ROOT),
                roots: vec![cid(V1_ROOT)]
            }
        );
        assert!(err.to_string().contains("another CID"), "{err}");
    }

    #[test]
    fn truncated_car_is_malformed() {
        let err = rebuild(V1_ROOT, &V1_CAR[..V1_CAR.len() - 10]).unwrap_err();
        assert!(
            matches!(err, IntegrityError::MalformedCar { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn carv2_is_refused_with_a_hint() {
        // The CARv2 pragma: a header of just {version: 2}.
        let mut header = vec![0xa1, 0x67];
        header.extend_from_slice(b"version");
        header.push(0x02);
        let err = rebuild(V1_ROOT, &join(&[&header])).unwrap_err();
        assert!(
            err.to_string().contains("CARv2") && err.to_string().contains("version=1"),
            "{err}"
        );
    }

    #[test]
    fn file_over_the_limit_is_refused_before_the_walk() {
        let limits = CarLimits {
            max_file_bytes: 12_344,
            ..CarLimits::default()
        };
        let err = file_from_car(&cid(V1_ROOT), V1_CAR, &limits).unwrap_err();
        assert_eq!(err, IntegrityError::TooLarge { limit: 12_344 });
    }

    #[test]
    fn directory_is_not_a_file() {
        // A PBNode whose Data is UnixFS {Type: Directory}.
        let block = vec![0x0a, 0x02, 0x08, 0x01];
        let dir = sha256_cid(Version::V1, DAG_PB, &block);
        let err = file_from_car(
            &dir,
            &write_car(&dir, &[(dir, block)]),
            &CarLimits::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            IntegrityError::NotAFile {
                cid: dir,
                kind: "directory"
            }
        );
    }

    #[test]
    fn lying_blocksizes_are_a_size_mismatch() {
        let (leaf, leaf_block) = raw(b"abcd");
        let (root, root_block) = file_node(b"", &[(leaf, 5)]);
        let car = write_car(&root, &[(root, root_block), (leaf, leaf_block)]);
        let err = file_from_car(&root, &car, &CarLimits::default()).unwrap_err();
        assert_eq!(
            err,
            IntegrityError::SizeMismatch {
                cid: leaf,
                declared: 5,
                actual: 4
            }
        );
    }

    #[test]
    fn deep_chain_is_refused() {
        let (mut top, leaf_block) = raw(b"x");
        let mut blocks = vec![(top, leaf_block)];
        for _ in 0..20 {
            let (cid, block) = file_node(b"", &[(top, 1)]);
            blocks.push((cid, block));
            top = cid;
        }
        let car = write_car(&top, &blocks);
        let err = file_from_car(&top, &car, &CarLimits::default()).unwrap_err();
        assert_eq!(err, IntegrityError::TooDeep { limit: 16 });
        let deep = CarLimits {
            max_depth: 20,
            ..CarLimits::default()
        };
        assert_eq!(file_from_car(&top, &car, &deep).unwrap(), b"x");
    }

    #[test]
    fn car_with_more_blocks_than_the_limit_is_refused() {
        let limits = CarLimits {
            max_nodes: 100,
            ..CarLimits::default()
        };
        let err = file_from_car(&cid(V1_ROOT), V1_CAR, &limits).unwrap_err();
        assert_eq!(err, IntegrityError::TooManyNodes { limit: 100 });
    }

    #[test]
    fn link_to_a_non_file_codec_is_unsupported() {
        let dag_cbor = Cid::new_v1(0x71, unixfs::sha256_multihash(b"{}"));
        let (root, block) = file_node(b"", &[(dag_cbor, 2)]);
        let car = write_car(&root, &[(root, block)]);
        let err = file_from_car(&root, &car, &CarLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                IntegrityError::Cid(CidError::UnsupportedCodec { codec: 0x71, .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn shared_nodes_cannot_multiply_the_work() {
        // Four levels of 174 links to one shared child: 174^4 visits of an empty leaf, in 5 blocks.
        let (mut top, leaf_block) = raw(b"");
        let mut blocks = vec![(top, leaf_block)];
        for _ in 0..4 {
            let (cid, block) = file_node(b"", &vec![(top, 0); 174]);
            blocks.push((cid, block));
            top = cid;
        }
        let err =
            file_from_car(&top, &write_car(&top, &blocks), &CarLimits::default()).unwrap_err();
        assert_eq!(err, IntegrityError::TooManyNodes { limit: 1 << 20 });
    }
}
