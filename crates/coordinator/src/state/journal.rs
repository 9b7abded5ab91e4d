//! The state store's write-ahead journal: an append-only file of numbered batches of changes.
//!
//! Making a change durable by committing the database costs one fsync of every page the commit
//! touched (here about 0.75 ms for a task's record, its counts and the tree pages above them);
//! appending the change to this file and syncing it costs one small sequential write (about
//! 0.25 ms). So each group of changes is appended here and synced before anyone is told it
//! happened, then applied to the database without waiting for the disk; a checkpoint (a durable
//! database commit, then an empty journal) bounds the file. On start, the batches the database
//! does not have yet (their numbers are above the one it recorded) are applied again.
//!
//! A record is `[length: u32 LE][seq: u64 LE][payload][check]`, where `payload` is the batch as
//! JSON and `check` the first 8 bytes of SHA-256 over the seq and the payload. Reading stops at
//! the first record that is short or does not check: the tail of a write cut by a crash, which
//! nobody was told had happened.

use super::TaskState;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use wasm_exec_task::{ResultEnvelope, TaskSpec};

/// One change to the tasks, as journaled and as applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// New tasks from `origin` (tasks whose id is known are left as they are).
    Admit {
        /// The tasks.
        tasks: Vec<TaskSpec>,
        /// Where they came from.
        origin: String,
        /// The origin's read position after these tasks, kept with them (see
        /// [`StateStore::admit_with_cursor`](super::StateStore::admit_with_cursor)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// A task moved to `fetching` or `running`.
    Progress {
        /// The task's id.
        id: String,
        /// Its new state.
        state: TaskState,
    },
    /// A task's result; `reported` when it needs no write-back.
    Finish {
        /// The task's id.
        id: String,
        /// Its result document.
        result: Box<ResultEnvelope>,
        /// True when nothing is left to report.
        reported: bool,
    },
    /// A task's result was written back to its source (or never can be: `note` says why).
    Reported {
        /// The task's id.
        id: String,
        /// Why the result was not written back, if it was not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

/// Changes applied together, at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// When the batch was applied, in ms since the Unix epoch (the records' timestamps).
    pub at_ms: u64,
    /// The changes, in order.
    pub changes: Vec<Change>,
}

/// The journal file, open for appending.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of valid records in the file.
    len: u64,
}

/// Bytes of a record besides its payload: length, seq, check.
const FRAME: usize = 4 + 8 + 8;
/// A record longer than this is not one: the length field was torn.
const MAX_RECORD: usize = 1 << 30;

impl Journal {
    /// Opens (or creates) the journal at `path` and returns it with the batches it holds, in
    /// order, each with its number. A torn tail is cut off.
    pub fn open(path: &Path) -> std::io::Result<(Self, Vec<(u64, Batch)>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (batches, valid) = parse(&bytes);
        if valid < bytes.len() {
            file.set_len(valid as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(valid as u64))?;
        let journal = Self {
            file,
            path: path.to_owned(),
            len: valid as u64,
        };
        Ok((journal, batches))
    }

    /// Appends batch `seq` and waits until it is on disk.
    pub fn append(&mut self, seq: u64, batch: &Batch) -> std::io::Result<()> {
        let payload = serde_json::to_vec(batch)?;
        let length = u32::try_from(payload.len())
            .ok()
            .filter(|n| (*n as usize) <= MAX_RECORD)
            .ok_or_else(|| std::io::Error::other("a journal batch over 1 GiB"))?;
        let mut record = Vec::with_capacity(payload.len() + FRAME);
        record.extend_from_slice(&length.to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&payload);
        record.extend_from_slice(&check(seq, &payload));
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Leave no half record for the next append to follow.
                let _ = self.file.set_len(self.len);
                let _ = self.file.seek(SeekFrom::Start(self.len));
                Err(e)
            }
        }
    }

    /// Empties the journal: everything in it is durable in the database.
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }

    /// Bytes of records in the journal.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the journal holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
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

/// The valid records at the start of `bytes`, and how many bytes they take.
fn parse(bytes: &[u8]) -> (Vec<(u64, Batch)>, usize) {
    let mut batches = Vec::new();
    let mut at = 0;
    while let Some((seq, batch, next)) = record_at(bytes, at) {
        batches.push((seq, batch));
        at = next;
    }
    (batches, at)
}

fn record_at(bytes: &[u8], at: usize) -> Option<(u64, Batch, usize)> {
    let length = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    if length > MAX_RECORD {
        return None;
    }
    let seq = u64::from_le_bytes(bytes.get(at + 4..at + 12)?.try_into().ok()?);
    let payload = bytes.get(at + 12..at + 12 + length)?;
    let stored = bytes.get(at + 12 + length..at + FRAME + length)?;
    if stored != check(seq, payload) {
        return None;
    }
    let batch = serde_json::from_slice(payload).ok()?;
    Some((seq, batch, at + FRAME + length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(id: &str) -> Batch {
        Batch {
            at_ms: 7,
            changes: vec![
                Change::Admit {
                    tasks: vec![TaskSpec::new(id, "add.wasm", json!([1, 2]))],
                    origin: "api".into(),
                    cursor: Some("block-9".into()),
                },
                Change::Progress {
                    id: id.into(),
                    state: TaskState::Running,
                },
                Change::Reported {
                    id: id.into(),
                    note: None,
                },
            ],
        }
    }

    #[test]
    fn reads_back_what_was_appended_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let (mut journal, found) = Journal::open(&path).unwrap();
        assert!(found.is_empty() && journal.is_empty());
        journal.append(1, &batch("a")).unwrap();
        journal.append(2, &batch("b")).unwrap();
        drop(journal);
        let (journal, found) = Journal::open(&path).unwrap();
        assert_eq!(found, vec![(1, batch("a")), (2, batch("b"))]);
        assert_eq!(journal.len(), std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off_and_appending_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let (mut journal, _) = Journal::open(&path).unwrap();
        journal.append(1, &batch("a")).unwrap();
        let good = journal.len();
        journal.append(2, &batch("b")).unwrap();
        drop(journal);
        // A crash in the middle of the second write.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let (mut journal, found) = Journal::open(&path).unwrap();
        assert_eq!(found, vec![(1, batch("a"))]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        journal.append(3, &batch("c")).unwrap();
        drop(journal);
        // A flipped bit in a payload ends the journal there too.
        let (_, found) = Journal::open(&path).unwrap();
        assert_eq!(found.len(), 2);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 12;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Journal::open(&path).unwrap();
        assert_eq!(found, vec![(1, batch("a"))]);
    }

    #[test]
    fn clear_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let (mut journal, _) = Journal::open(&path).unwrap();
        journal.append(1, &batch("a")).unwrap();
        journal.clear().unwrap();
        journal.append(2, &batch("b")).unwrap();
        drop(journal);
        let (_, found) = Journal::open(&path).unwrap();
        assert_eq!(found, vec![(2, batch("b"))]);
    }
}
