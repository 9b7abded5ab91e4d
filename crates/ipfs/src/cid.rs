//! CIDs of module files: parse the CIDs we accept, compute the CIDs `ipfs add` gives a file's
//! bytes, and verify plain file bytes or single blocks against a CID. Verifying a CAR (trustless
//! gateway response) is in [`crate::car`].

pub use ::cid::Cid;
use ::cid::Version;
use ::cid::multibase::{self, Base};
use thiserror::Error;

use crate::unixfs::{self, DAG_PB, Layout, RAW, SHA2_256};

/// Longest CID text we decode: a sha2-256 CIDv1 is 59 characters in base32 and 289 in base2.
const MAX_CID_TEXT: usize = 512;

/// Why a CID text or value is not one we can fetch and verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CidError {
    /// The text does not decode to a CID.
    #[error(
        "{text:?} is not a CID: {reason}; give a bare CIDv0 (Qm...) or multibase CIDv1 \
         (bafy..., bafk...)"
    )]
    Malformed {
        /// The text given, cut to 80 characters.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The multihash is not a full sha2-256 digest, so we cannot recompute it.
    #[error(
        "CID {cid} uses multihash 0x{code:x} with a {size}-byte digest; only sha2-256 (0x12, \
         32 bytes) is supported; add the module without --hash to get one"
    )]
    UnsupportedHash {
        /// The CID.
        cid: Cid,
        /// Its multihash code.
        code: u64,
        /// Its digest length in bytes.
        size: u8,
    },
    /// The codec is neither raw nor dag-pb, so the CID does not name a file.
    #[error(
        "CID {cid} has codec 0x{codec:x}; only raw (0x55) and dag-pb (0x70) name a file; use \
         the CID that `ipfs add` printed for the module"
    )]
    UnsupportedCodec {
        /// The CID.
        cid: Cid,
        /// Its multicodec.
        codec: u64,
    },
}

/// Bytes that do not match their CID, or a CAR that cannot prove they do: the envelope kind
/// `integrity`, except [`IntegrityError::Cid`], where the CID itself is unusable (bad input).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The CID asked for cannot be verified here.
    #[error(transparent)]
    Cid(#[from] CidError),
    /// File bytes do not hash to the CID under any importer layout we reproduce.
    #[error(
        "{len}-byte file does not match CID {expected}: `ipfs add` defaults (chunker \
         size-262144, balanced layout) give it {}; the source sent other bytes, or the module \
         was added with other options: fetch it as a CAR to verify any layout",
        list(.computed)
    )]
    FileMismatch {
        /// The CID asked for.
        expected: Cid,
        /// Length of the bytes received.
        len: usize,
        /// The CIDs the bytes have under each layout tried (boxed, like `actual` below, to keep
        /// the error small: a `Cid` is 96 bytes).
        computed: Box<[Cid]>,
    },
    /// A block's bytes do not hash to the CID it came under.
    #[error(
        "block {cid} is corrupt: its {len} bytes hash to {actual}; the source sent wrong \
         bytes, try another gateway"
    )]
    BlockMismatch {
        /// The CID the block came under.
        cid: Cid,
        /// The CID its bytes have (same version and codec).
        actual: Box<Cid>,
        /// The block's length in bytes.
        len: usize,
    },
    /// The CAR stream cannot be parsed.
    #[error(
        "CAR is malformed at byte {offset}: {reason}; the gateway must send a CARv1 \
         (application/vnd.ipld.car;version=1)"
    )]
    MalformedCar {
        /// Byte offset of the bad section in the CAR.
        offset: usize,
        /// What is wrong there.
        reason: String,
    },
    /// The CAR header names other roots than the CID asked for.
    #[error("CAR has roots [{}], not {expected}; the gateway answered for another CID", list(.roots))]
    RootMismatch {
        /// The CID asked for.
        expected: Cid,
        /// The roots in the CAR header.
        roots: Vec<Cid>,
    },
    /// The DAG links to a block the CAR does not hold.
    #[error(
        "block {cid} is missing from the CAR; ask the gateway for the whole DAG \
         (dag-scope=all) or try another gateway"
    )]
    MissingBlock {
        /// The missing block's CID.
        cid: Cid,
    },
    /// A dag-pb block is not a valid node with UnixFS data.
    #[error(
        "block {cid} is not a dag-pb UnixFS node: {reason}; the DAG was not made by `ipfs add`"
    )]
    MalformedNode {
        /// The block's CID.
        cid: Cid,
        /// What is wrong with it.
        reason: String,
    },
    /// The DAG holds a UnixFS directory, symlink or other non-file.
    #[error("block {cid} is a UnixFS {kind}, not a file; a module CID must name one file")]
    NotAFile {
        /// The block's CID.
        cid: Cid,
        /// What it is instead.
        kind: &'static str,
    },
    /// A node's declared size disagrees with the bytes below it.
    #[error(
        "block {cid} should hold {declared} file bytes but holds {actual}; the DAG is inconsistent"
    )]
    SizeMismatch {
        /// The node's CID.
        cid: Cid,
        /// The size its parent (`blocksizes`) or itself (`filesize`) declares.
        declared: u64,
        /// The size found.
        actual: u64,
    },
    /// The file is larger than the caller allows.
    #[error(
        "file is larger than the limit of {limit} bytes; raise max_file_bytes if the module is \
         really this big"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The DAG is deeper than the caller allows.
    #[error(
        "DAG is deeper than {limit} levels; raise max_depth if the file was added with tiny \
         chunks or the trickle layout"
    )]
    TooDeep {
        /// The depth limit.
        limit: usize,
    },
    /// The CAR holds more blocks, or its DAG needs more node visits (a shared node counts once
    /// per link), than the caller allows.
    #[error(
        "CAR has more than {limit} blocks or its DAG more than {limit} node visits; raise \
         max_nodes if the file was added with tiny chunks"
    )]
    TooManyNodes {
        /// The limit on blocks and on visits (`CarLimits::max_nodes`).
        limit: usize,
    },
}

fn list(cids: &[Cid]) -> String {
    cids.iter()
        .map(Cid::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a CIDv0 (`Qm...`, bare base58btc) or a CIDv1 in any multibase (`bafy...`, `bafk...`,
/// `z...`); only sha2-256 multihashes and the codecs raw and dag-pb are accepted.
pub fn parse_cid(text: &str) -> Result<Cid, CidError> {
    let malformed = |reason: String| CidError::Malformed {
        text: text.chars().take(80).collect(),
        reason,
    };
    if text.len() > MAX_CID_TEXT {
        return Err(malformed(format!(
            "{} bytes long, more than any CID we accept",
            text.len()
        )));
    }
    if text.contains('/') {
        return Err(malformed("it is a path, not a bare CID".to_owned()));
    }
    // A CIDv0 is 46 base58btc characters starting "Qm"; any other CID has a multibase prefix.
    let is_v0 = text.len() == 46 && text.starts_with("Qm");
    let decoded = if is_v0 {
        Base::Base58Btc.decode(text)
    } else {
        multibase::decode(text).map(|(_, bytes)| bytes)
    };
    let bytes = decoded.map_err(|err| malformed(format!("bad multibase text ({err})")))?;
    let mut rest = bytes.as_slice();
    let cid =
        Cid::read_bytes(&mut rest).map_err(|err| malformed(format!("bad CID bytes ({err})")))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the multihash",
            rest.len()
        )));
    }
    if !is_v0 && cid.version() == Version::V0 {
        return Err(malformed(
            "a CIDv0 cannot carry a multibase prefix".to_owned(),
        ));
    }
    check_supported(&cid)?;
    Ok(cid)
}

/// Checks that `cid` has a sha2-256 multihash and the codec raw or dag-pb.
pub(crate) fn check_supported(cid: &Cid) -> Result<(), CidError> {
    let hash = cid.hash();
    if hash.code() != SHA2_256 || hash.size() != 32 {
        return Err(CidError::UnsupportedHash {
            cid: *cid,
            code: hash.code(),
            size: hash.size(),
        });
    }
    match cid.codec() {
        RAW | DAG_PB => Ok(()),
        codec => Err(CidError::UnsupportedCodec { cid: *cid, codec }),
    }
}

/// The CIDs that `ipfs add` gives one file's bytes with the importer defaults (chunker
/// size-262144, balanced layout of at most 174 links per node), as js-ipfs 0.66 computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileCids {
    /// `ipfs add`: CIDv0 dag-pb whose leaves are UnixFS `file` nodes (`Qm...`).
    pub v0: Cid,
    /// `ipfs add --cid-version 1` (raw leaves): one raw block (`bafkrei...`) for a file of at most
    /// 262144 bytes, else a dag-pb root (`bafybei...`) over raw leaves.
    pub v1: Cid,
}

/// Computes the [`FileCids`] of a file's bytes, e.g. to index a directory of modules by CID.
pub fn file_cids(bytes: &[u8]) -> FileCids {
    FileCids {
        v0: unixfs::import(bytes, &Layout::V0),
        v1: unixfs::import(bytes, &Layout::V1_RAW_LEAVES),
    }
}

/// Checks plain file bytes (a gateway answer that ignored the trustless formats) against `cid`.
/// A raw CID is the sha2-256 of the bytes; a dag-pb CID is rebuilt with each default layout that
/// could have made it (v0: `file` leaves; v1: raw leaves, then `file` leaves), chunker 262144.
pub fn verify_file(cid: &Cid, bytes: &[u8]) -> Result<(), IntegrityError> {
    check_supported(cid)?;
    let layouts: &[Layout] = match (cid.codec(), cid.version()) {
        (RAW, _) => &[Layout::SINGLE_RAW_BLOCK],
        (_, Version::V0) => &[Layout::V0],
        (_, Version::V1) => &[Layout::V1_RAW_LEAVES, Layout::V1_FILE_LEAVES],
    };
    let mut computed = Vec::new();
    for layout in layouts {
        let got = unixfs::import(bytes, layout);
        if got == *cid {
            return Ok(());
        }
        computed.push(got);
    }
    Err(IntegrityError::FileMismatch {
        expected: *cid,
        len: bytes.len(),
        computed: computed.into(),
    })
}

/// Checks that one block's bytes hash to `cid`'s multihash: a trustless `?format=raw` answer,
/// `/api/v0/block/get`, or a section of a CAR.
pub fn verify_raw_block(cid: &Cid, block: &[u8]) -> Result<(), IntegrityError> {
    check_supported(cid)?;
    let actual = unixfs::sha256_cid(cid.version(), cid.codec(), block);
    if actual.hash() == cid.hash() {
        return Ok(());
    }
    Err(IntegrityError::BlockMismatch {
        cid: *cid,
        actual: Box::new(actual),
        len: block.len(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ::cid::multihash::Multihash;

    /// The test files: the little-endian bytes of xorshift64 (13, 7, 17) states from a fixed seed,
    /// cut to `len`; `testdata/ipfs/README.md` has the same generator in Python.
    pub(crate) fn xorshift_bytes(len: usize) -> Vec<u8> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        bytes.truncate(len);
        bytes
    }

    fn cid(text: &str) -> Cid {
        parse_cid(text).unwrap()
    }

    /// What js-ipfs 0.66.1 printed for each test file: `file v0 v1 v1-with-file-leaves` per line.
    const JS_IPFS_CIDS: &str = include_str!("../../../testdata/ipfs/js-ipfs-cids.txt");

    /// The rows of [`JS_IPFS_CIDS`] as `(file, [v0, v1, v1 with file leaves])`.
    fn js_ipfs_cids() -> Vec<(&'static str, [Cid; 3])> {
        let rows = JS_IPFS_CIDS.lines().filter(|line| !line.starts_with('#'));
        let row = |line: &'static str| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[0], [cid(fields[1]), cid(fields[2]), cid(fields[3])])
        };
        rows.map(row).collect()
    }

    /// The bytes of a file named in [`JS_IPFS_CIDS`], `generated` holding the longest test file.
    fn file_bytes<'a>(file: &str, generated: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match file.strip_prefix("xorshift:") {
            Some(len) => generated[..len.parse::<usize>().unwrap()].into(),
            None => std::fs::read(format!("{}/../../{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .into(),
        }
    }

    #[test]
    fn file_cids_match_js_ipfs() {
        let rows = js_ipfs_cids();
        assert_eq!(rows.len(), 12, "testdata/ipfs/js-ipfs-cids.txt lost rows");
        // 46,000,000 bytes are 176 chunks: the only file whose root has a second level of parents.
        let generated = xorshift_bytes(46_000_000);
        for (file, [v0, v1, v1_file_leaves]) in rows {
            let bytes = file_bytes(file, &generated);
            let hint = format!("{file} (a module rebuilt? see testdata/ipfs/README.md)");
            assert_eq!(file_cids(&bytes), FileCids { v0, v1 }, "{hint}");
            let file_leaves = unixfs::import(&bytes, &Layout::V1_FILE_LEAVES);
            assert_eq!(file_leaves, v1_file_leaves, "{hint}");
        }
    }

    #[test]
    fn verify_file_accepts_every_default_layout() {
        let generated = xorshift_bytes(3_000_000);
        for (file, cids) in js_ipfs_cids()
            .into_iter()
            .filter(|(file, _)| !file.ends_with("46000000"))
        {
            let bytes = file_bytes(file, &generated);
            for cid in cids {
                verify_file(&cid, &bytes).unwrap_or_else(|err| panic!("{file}: {err}"));
            }
        }
    }

    #[test]
    fn wrong_file_for_cid_is_an_integrity_error() {
        let [v0, raw, _] = js_ipfs_cids()[2].1;
        let err = verify_file(&v0, &xorshift_bytes(65)).unwrap_err();
        let IntegrityError::FileMismatch {
            computed, len: 65, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        let message = err.to_string();
        assert!(message.contains(&format!("match CID {v0}: ")), "{message}");
        assert!(
            message.contains(&format!("give it {}; ", computed[0])),
            "{message}"
        );
        let err = verify_file(&raw, &xorshift_bytes(65)).unwrap_err();
        assert!(
            matches!(err, IntegrityError::FileMismatch { len: 65, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn v1_dag_pb_mismatch_lists_both_leaf_layouts() {
        let expected = js_ipfs_cids()[5].1[1];
        let err = verify_file(&expected, &xorshift_bytes(66)).unwrap_err();
        let IntegrityError::FileMismatch { computed, .. } = err else {
            panic!("{err:?}")
        };
        let [_, raw, file_leaves] = js_ipfs_cids()[2].1;
        assert_eq!(*computed, [raw, file_leaves]);
    }

    #[test]
    fn cid_from_a_non_default_chunker_is_a_mismatch_that_points_to_car() {
        // `jsipfs add --chunker size-64` of the 12345-byte test file.
        let expected = cid("QmZ3EMnDuAvHFEaou1SQyWZaxn98evTABaZkhhc2kBp3vc");
        let err = verify_file(&expected, &xorshift_bytes(12_345)).unwrap_err();
        assert!(err.to_string().contains("fetch it as a CAR"), "{err}");
    }

    #[test]
    fn parse_cid_accepts_any_multibase_of_a_v1() {
        // js-ipfs prints CIDv1 in base58btc unless given --cid-base base32.
        let base32 = cid("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
        assert_eq!(
            cid("zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW"),
            base32
        );
        assert_eq!(
            cid(&base32.to_string_of_base(Base::Base36Lower).unwrap()),
            base32
        );
        assert_eq!(cid(&base32.to_string().to_uppercase()), base32);
        let v0 = cid("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
        assert_eq!((v0.version(), v0.codec()), (Version::V0, DAG_PB));
    }

    #[test]
    fn sha1_cid_is_an_unsupported_hash() {
        let sha1 = Cid::new_v1(RAW, Multihash::wrap(0x11, &[7; 20]).unwrap());
        let err = parse_cid(&sha1.to_string()).unwrap_err();
        let CidError::UnsupportedHash { code, size, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!((code, size), (0x11, 20));
        assert!(err.to_string().contains("only sha2-256"), "{err}");
    }

    #[test]
    fn dag_cbor_cid_is_an_unsupported_codec() {
        let dag_cbor = Cid::new_v1(0x71, unixfs::sha256_multihash(b"{}"));
        let err = parse_cid(&dag_cbor.to_string()).unwrap_err();
        assert!(
            matches!(err, CidError::UnsupportedCodec { codec: 0x71, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_cid_texts_are_rejected_with_the_reason() {
        let raw = js_ipfs_cids()[0].1[1];
        let trailing = multibase::encode(Base::Base32Lower, [raw.to_bytes(), vec![0]].concat());
        let v0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH";
        for (text, reason) in [
            (String::new(), "multibase"),
            (format!("/ipfs/{v0}"), "path"),
            (v0.replace('H', "0"), "multibase"),
            (trailing, "after the multihash"),
        ] {
            let err = parse_cid(&text).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, CidError::Malformed { .. }), "{text}: {err:?}");
            assert!(message.contains(reason), "{text}: {message}");
        }
    }

    #[test]
    fn raw_block_verifies_against_its_cid() {
        let raw = js_ipfs_cids()[2].1[1];
        verify_raw_block(&raw, &xorshift_bytes(66)).unwrap();
    }

    #[test]
    fn tampered_raw_block_is_an_integrity_error() {
        let raw = js_ipfs_cids()[2].1[1];
        let mut block = xorshift_bytes(66);
        block[10] ^= 1;
        let err = verify_raw_block(&raw, &block).unwrap_err();
        let IntegrityError::BlockMismatch {
            actual, len: 66, ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!((actual.codec(), actual.version()), (RAW, Version::V1));
        assert_ne!(*actual, raw);
    }
}
