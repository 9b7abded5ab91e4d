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
//! Records are framed and checked as [`frame`] describes. On open, damage is told apart:
//! - bad bytes at the end with no intact record after them are a write cut by a crash, which
//!   nobody was told had happened: they are cut off, and the byte count logged;
//! - bad bytes followed by intact records are corruption: a copy of the file is kept and the open
//!   refused ([`OpenError::JournalCorrupt`]), unless every batch the damage could hold is already
//!   in the database (the next intact record follows the database's last batch);
//! - an intact record that does not parse refuses the open ([`OpenError::JournalUnreadable`]).
//!
//! [`super::salvage`] keeps every intact record of a corrupt journal.

pub mod damage;
pub mod frame;

use super::TaskState;
use super::callback::Attempt;
use super::error::OpenError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use wasm_exec_task::{ResultEnvelope, TaskSpec};

/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "journal.log";

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
    /// A task started too often without finishing is not run again: `result` says why (see
    /// [`super::quarantine`]). Journals holding it do not open in versions before it.
    Quarantine {
        /// The task's id.
        id: String,
        /// Its result document (an error).
        result: Box<ResultEnvelope>,
    },
    /// A task was cancelled by `by` (see
    /// [`StateStore::cancel`](super::StateStore::cancel)). Journals holding it do not open in
    /// versions before it.
    Cancel {
        /// The task's id.
        id: String,
        /// Who cancelled it.
        by: String,
    },
    /// New tasks submitted through the API, some with a webhook (`callbacks`: task id -> URL);
    /// known ids are left as they are. Journals holding it do not open in versions before it.
    Submit {
        /// The tasks.
        tasks: Vec<TaskSpec>,
        /// The `callback_url` of the tasks that have one.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        callbacks: BTreeMap<String, String>,
        /// The tenant that submitted them, if not the default caller.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
    },
    /// One attempt to deliver a task's webhook. Journals holding it do not open in versions
    /// before it.
    Delivery {
        /// The task's id.
        id: String,
        /// How it went.
        attempt: Attempt,
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
    /// A failed append may have left bytes after `len` that could not be cut off yet.
    dirty: bool,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and returns it with the batches it holds, in
    /// order, each with its number; `applied` is the last batch the database holds. A torn tail is
    /// cut off (logged at warn with its size); other damage refuses the open, as the module doc
    /// says.
    pub fn open(path: &Path, applied: u64) -> Result<(Self, Vec<(u64, Batch)>), OpenError> {
        let io = |what| {
            move |source| OpenError::Io {
                what,
                path: path.to_owned(),
                source,
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("opening the state journal"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io("reading the state journal"))?;
        let verdict = damage::judge(path, &bytes, applied)?;
        if verdict.valid < bytes.len() {
            file.set_len(verdict.valid as u64)
                .and_then(|()| file.sync_all())
                .map_err(io("cutting the torn tail of the state journal"))?;
        }
        file.seek(SeekFrom::Start(verdict.valid as u64))
            .map_err(io("opening the state journal"))?;
        let journal = Self {
            file,
            path: path.to_owned(),
            len: verdict.valid as u64,
            dirty: false,
        };
        Ok((journal, verdict.batches))
    }

    /// Appends batch `seq` and waits until it is on disk.
    pub fn append(&mut self, seq: u64, batch: &Batch) -> std::io::Result<()> {
        if self.dirty {
            self.truncate_to(self.len)?;
        }
        let record = frame::encode(seq, batch)?;
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
                // Leave no half record for the next append to follow; if that fails too, the
                // next append tries again first.
                self.dirty = self.truncate_to(self.len).is_err();
                Err(e)
            }
        }
    }

    /// Drops every byte after `len` (a length [`len`](Self::len) returned): the record of a
    /// batch the database could not apply, whose callers are told it failed.
    pub fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        let cut = self.file.metadata()?.len().saturating_sub(len);
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len))?;
        self.file.sync_data()?;
        if cut > 0 {
            tracing::warn!(path = %self.path.display(), bytes = cut, "state journal: cut off a record that was not applied");
        }
        self.len = len;
        self.dirty = false;
        Ok(())
    }

    /// Empties the journal: everything in it is durable in the database.
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.sync_all()?;
        tracing::debug!(
            bytes = self.len,
            "state journal: emptied after a checkpoint"
        );
        self.len = 0;
        self.dirty = false;
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
        let (mut journal, found) = Journal::open(&path, 0).unwrap();
        assert!(found.is_empty() && journal.is_empty());
        journal.append(1, &batch("a")).unwrap();
        journal.append(2, &batch("b")).unwrap();
        drop(journal);
        let (journal, found) = Journal::open(&path, 0).unwrap();
        assert_eq!(found, vec![(1, batch("a")), (2, batch("b"))]);
        assert_eq!(journal.len(), std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off_and_appending_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let (mut journal, _) = Journal::open(&path, 0).unwrap();
        journal.append(1, &batch("a")).unwrap();
        let good = journal.len();
        journal.append(2, &batch("b")).unwrap();
        drop(journal);
        // A crash in the middle of the second write.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let (mut journal, found) = Journal::open(&path, 0).unwrap();
        assert_eq!(found, vec![(1, batch("a"))]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        journal.append(3, &batch("c")).unwrap();
        drop(journal);
        // A flipped bit in a payload ends the journal there too.
        let (_, found) = Journal::open(&path, 0).unwrap();
        assert_eq!(found.len(), 2);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 12;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Journal::open(&path, 0).unwrap();
        assert_eq!(found, vec![(1, batch("a"))]);
    }

    #[test]
    fn clear_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let (mut journal, _) = Journal::open(&path, 0).unwrap();
        journal.append(1, &batch("a")).unwrap();
        journal.clear().unwrap();
        journal.append(2, &batch("b")).unwrap();
        drop(journal);
        let (_, found) = Journal::open(&path, 0).unwrap();
        assert_eq!(found, vec![(2, batch("b"))]);
    }
}
