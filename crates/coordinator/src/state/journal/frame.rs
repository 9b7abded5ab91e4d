//! How one journal record is framed and checked, and how a damaged file is walked record by
//! record: from each intact record to the next, and across a bad region to the next offset where
//! a whole record (length, checksum) verifies.
//!
//! A record is `[length: u32 LE][seq: u64 LE][payload][check]`, where `payload` is the batch as
//! JSON and `check` the first 8 bytes of SHA-256 over the seq and the payload. The checksum makes
//! a false match of random bytes a 1 in 2^64 event, so a record found past a bad region is real.

use super::Batch;
use sha2::{Digest, Sha256};

/// Bytes of a record besides its payload: length, seq, check.
pub(crate) const FRAME: usize = 4 + 8 + 8;
/// A record longer than this is not one: the length field was torn.
pub(crate) const MAX_RECORD: usize = 1 << 30;

/// Frames batch `seq` as one record.
pub(crate) fn encode(seq: u64, batch: &Batch) -> std::io::Result<Vec<u8>> {
    encode_payload(seq, &serde_json::to_vec(batch)?)
}

/// Frames `payload` (a batch as JSON) as record `seq`; public so the fuzz targets frame arbitrary
/// payloads as the journal does.
pub fn encode_payload(seq: u64, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|n| (*n as usize) <= MAX_RECORD)
        .ok_or_else(|| std::io::Error::other("a journal batch over 1 GiB"))?;
    let mut record = Vec::with_capacity(payload.len() + FRAME);
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&seq.to_le_bytes());
    record.extend_from_slice(payload);
    record.extend_from_slice(&check(seq, payload));
    Ok(record)
}

fn check(seq: u64, payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(seq.to_le_bytes())
        .chain_update(payload)
        .finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// A record whose framing and checksum verify, where it lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Its batch number.
    pub seq: u64,
    /// Offset of its first byte.
    pub start: usize,
    /// Offset just past its last byte.
    pub end: usize,
}

impl Frame {
    /// The JSON payload of this frame within `bytes`.
    pub(crate) fn payload<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        bytes.get(self.start + 12..self.end - 8).unwrap_or_default()
    }

    /// The batch it holds, or why it is not one (a record that checks but does not parse was
    /// written by a format this version does not know).
    pub(crate) fn batch(&self, bytes: &[u8]) -> Result<Batch, String> {
        serde_json::from_slice(self.payload(bytes)).map_err(|e| e.to_string())
    }
}

/// The record starting at `at`, if a whole one is there and its checksum verifies.
pub(crate) fn frame_at(bytes: &[u8], at: usize) -> Option<Frame> {
    let length = u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?) as usize;
    if length > MAX_RECORD {
        return None;
    }
    let end = at.checked_add(FRAME)?.checked_add(length)?;
    if end > bytes.len() {
        return None;
    }
    // Every batch is a JSON object: a cheap test that skips most offsets in garbage before
    // hashing.
    if bytes.get(at + 12) != Some(&b'{') {
        return None;
    }
    let seq = u64::from_le_bytes(bytes.get(at + 4..at + 12)?.try_into().ok()?);
    let payload = bytes.get(at + 12..end - 8)?;
    (bytes.get(end - 8..end)? == check(seq, payload)).then_some(Frame {
        seq,
        start: at,
        end,
    })
}

/// The first offset at or after `from` where an intact record starts.
pub(crate) fn next_frame(bytes: &[u8], from: usize) -> Option<Frame> {
    (from..bytes.len()).find_map(|at| frame_at(bytes, at))
}

/// One stretch of the file as the walk found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// An intact record.
    Record(Frame),
    /// Bytes at `start..end` that hold no intact record.
    Bad {
        /// Offset of the first bad byte.
        start: usize,
        /// Offset just past the last bad byte (the next intact record, or the end of the file).
        end: usize,
    },
}

/// Walks all of `bytes`: every intact record in order, and every region between them that holds
/// none. Never panics, whatever the bytes.
pub(crate) fn walk(bytes: &[u8]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if let Some(frame) = frame_at(bytes, at) {
            pieces.push(Piece::Record(frame));
            at = frame.end;
            continue;
        }
        match next_frame(bytes, at + 1) {
            Some(frame) => {
                pieces.push(Piece::Bad {
                    start: at,
                    end: frame.start,
                });
                at = frame.start;
            }
            None => {
                pieces.push(Piece::Bad {
                    start: at,
                    end: bytes.len(),
                });
                at = bytes.len();
            }
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(at_ms: u64) -> Batch {
        Batch {
            at_ms,
            changes: Vec::new(),
        }
    }

    fn file(n: u64) -> Vec<u8> {
        (1..=n)
            .flat_map(|seq| encode(seq, &batch(seq)).unwrap())
            .collect()
    }

    #[test]
    fn walk_finds_every_record_of_a_clean_file() {
        let bytes = file(3);
        let seqs: Vec<u64> = walk(&bytes)
            .into_iter()
            .map(|p| match p {
                Piece::Record(f) => f.seq,
                Piece::Bad { .. } => panic!("no bad piece in a clean file"),
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn walk_steps_over_a_garbage_prefix_and_a_flipped_byte() {
        let clean = file(5);
        let second = frame_at(&clean, 0).unwrap().end;
        let mut bytes = vec![0xA5; 16];
        bytes.extend_from_slice(&clean);
        bytes[16 + second + 14] ^= 0x40;
        let pieces = walk(&bytes);
        let records: Vec<u64> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Record(f) => Some(f.seq),
                Piece::Bad { .. } => None,
            })
            .collect();
        assert_eq!(records, [1, 3, 4, 5], "only the damaged record is lost");
        assert_eq!(pieces[0], Piece::Bad { start: 0, end: 16 });
    }

    #[test]
    fn a_record_whose_checksum_fails_is_not_a_frame() {
        let mut bytes = file(1);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(frame_at(&bytes, 0), None);
        assert_eq!(frame_at(&bytes[..5], 0), None, "a short record");
        assert_eq!(frame_at(&[], 3), None);
    }
}
