//! Why the state store refuses to open: each variant names the file, what was found, and how to
//! recover, so that an operator never has to guess whether tasks were lost.

use std::path::PathBuf;

/// The state directory cannot be opened as it is. Nothing in it was changed, except that a copy of
/// a damaged journal is kept next to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A file or directory of the state could not be read or written.
    #[error("{what} \"{path}\": {source}")]
    Io {
        /// What was being done ("reading the state journal").
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The journal is damaged before its end: intact records follow the bad bytes, so this is not
    /// the tail of a write cut by a crash, and the bad bytes may hold batches the database lacks.
    #[error(
        "state journal \"{path}\" is corrupt at byte {offset} (record {index}): {bad_bytes} bad \
         bytes are followed by {following} intact records, so this is not a write cut by a crash, \
         and the damage may hold acknowledged changes the database lacks (it has batches up to \
         {applied}, the next intact record is batch {resume_seq}); nothing was changed and a copy \
         is at \"{copy}\". To keep every intact record run `coordinator state salvage {dir}` \
         (it reports what it kept and dropped), then start again"
    )]
    JournalCorrupt {
        /// The journal.
        path: PathBuf,
        /// Offset of the first bad byte.
        offset: u64,
        /// How many intact records precede it.
        index: usize,
        /// Bytes from `offset` to the next intact record.
        bad_bytes: u64,
        /// Intact records after the damage.
        following: usize,
        /// The last batch number the database holds.
        applied: u64,
        /// The batch number of the first intact record after the damage.
        resume_seq: u64,
        /// The copy of the journal, as found.
        copy: PathBuf,
        /// The state directory.
        dir: PathBuf,
    },
    /// A journal record is intact (its checksum verifies) but is not a batch this version reads.
    #[error(
        "state journal \"{path}\": record {index} at byte {offset} (batch {seq}) is intact but \
         not a batch this version reads ({reason}); was it written by a newer coordinator? Run \
         that version, or `coordinator state salvage {dir}` to drop the record"
    )]
    JournalUnreadable {
        /// The journal.
        path: PathBuf,
        /// Offset of the record.
        offset: u64,
        /// How many records precede it.
        index: usize,
        /// Its batch number.
        seq: u64,
        /// Why it does not parse.
        reason: String,
        /// The state directory.
        dir: PathBuf,
    },
    /// The database is missing or empty, yet the journal shows the directory held state before:
    /// opening would silently start with no tasks.
    #[error(
        "state database \"{path}\" is {found}, but \"{journal}\" shows this directory held state \
         before, so starting would forget every task. Restore state.redb from a copy; to start \
         afresh on purpose, move the whole directory away"
    )]
    DatabaseMissing {
        /// The database file.
        path: PathBuf,
        /// "missing" or "empty (0 bytes)".
        found: &'static str,
        /// The journal that proves an earlier run.
        journal: PathBuf,
    },
    /// The database fails redb's integrity check (a page's checksum, or its trees), or redb
    /// panicked reading it.
    #[error(
        "state database \"{path}\" is corrupt ({detail}); refusing to start on it. Restore \
         state.redb from a copy{hint}"
    )]
    DatabaseCorrupt {
        /// The database file.
        path: PathBuf,
        /// What redb found.
        detail: String,
        /// More ways to recover, when there are ("; or ...").
        hint: String,
    },
    /// redb refused the database for another reason (e.g. another process has it open).
    #[error("state database \"{path}\": {detail}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        detail: String,
    },
}

impl OpenError {
    /// The variant as a stable snake_case label (logs, metrics).
    pub fn label(&self) -> &'static str {
        match self {
            OpenError::Io { .. } => "io",
            OpenError::JournalCorrupt { .. } => "journal_corrupt",
            OpenError::JournalUnreadable { .. } => "journal_unreadable",
            OpenError::DatabaseMissing { .. } => "database_missing",
            OpenError::DatabaseCorrupt { .. } => "database_corrupt",
            OpenError::Database { .. } => "database",
        }
    }
}

impl From<OpenError> for super::StateError {
    fn from(e: OpenError) -> Self {
        super::StateError(e.to_string())
    }
}
