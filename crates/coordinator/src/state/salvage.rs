//! Recovering a damaged journal by hand (`coordinator state check DIR`, `coordinator state
//! salvage DIR`): every intact record is kept, by its framing and checksum, wherever it lies, and
//! what was dropped is counted.

use super::error::OpenError;
use super::journal::damage::keep_copy;
use super::journal::frame::{self, Piece};
use super::journal::{Batch, Change, JOURNAL_FILE};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a look at a journal found, and (after [`salvage`]) what was kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// The journal.
    pub journal: PathBuf,
    /// Its size as found, in bytes.
    pub bytes: u64,
    /// Intact records that parse: kept by [`salvage`].
    pub records: usize,
    /// Tasks admitted by those records.
    pub admitted_tasks: usize,
    /// Intact records that do not parse (a newer format): dropped by [`salvage`].
    pub unreadable: usize,
    /// Stretches of bytes that hold no intact record.
    pub bad_regions: usize,
    /// Bytes in those stretches.
    pub bad_bytes: u64,
    /// Batch numbers missing between the first and the last intact record: batches lost for sure
    /// (the database may still hold them, if they are at or under its last batch).
    pub missing_batches: u64,
    /// The first and last intact batch numbers.
    pub batches: Option<(u64, u64)>,
    /// Where the journal as found was kept (by [`salvage`], when it changed anything).
    pub copy: Option<PathBuf>,
}

impl std::fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} bytes, {} intact records ({} tasks admitted), {} unreadable, {} bad regions \
             ({} bytes), {} batches missing between intact ones",
            self.journal.display(),
            self.bytes,
            self.records,
            self.admitted_tasks,
            self.unreadable,
            self.bad_regions,
            self.bad_bytes,
            self.missing_batches
        )?;
        if let Some((first, last)) = self.batches {
            write!(f, ", batches {first}..={last}")?;
        }
        if let Some(copy) = &self.copy {
            write!(f, "; the journal as found is kept at {}", copy.display())?;
        }
        Ok(())
    }
}

/// Looks at the journal in `dir` and reports what [`salvage`] would keep; changes nothing.
pub fn check(dir: &Path) -> Result<SalvageReport, OpenError> {
    let (report, _) = survey(dir)?;
    Ok(report)
}

/// Keeps every intact, readable record of the journal in `dir` and drops the rest, so that the
/// store opens again; the journal as found is kept as `journal.log.corrupt-<unix ms>` first. The
/// new journal is written aside, synced, and renamed over the old one.
pub fn salvage(dir: &Path) -> Result<SalvageReport, OpenError> {
    let (mut report, kept) = survey(dir)?;
    if report.bad_regions == 0 && report.unreadable == 0 {
        return Ok(report);
    }
    let path = report.journal.clone();
    let io = |what| {
        let path = path.clone();
        move |source| OpenError::Io { what, path, source }
    };
    let bytes = std::fs::read(&path).map_err(io("reading the state journal"))?;
    report.copy = Some(keep_copy(&path, &bytes).map_err(io("copying the state journal"))?);
    let aside = path.with_extension("log.salvage");
    let mut file = File::create(&aside).map_err(io("writing the salvaged journal"))?;
    file.write_all(&kept)
        .and_then(|()| file.sync_all())
        .map_err(io("writing the salvaged journal"))?;
    std::fs::rename(&aside, &path).map_err(io("replacing the state journal"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the state directory"))?;
    tracing::warn!(
        records = report.records,
        dropped_bytes = report.bad_bytes,
        unreadable = report.unreadable,
        "state journal salvaged"
    );
    Ok(report)
}

/// The report on the journal in `dir`, and the bytes of its intact, readable records.
fn survey(dir: &Path) -> Result<(SalvageReport, Vec<u8>), OpenError> {
    let journal = dir.join(JOURNAL_FILE);
    let bytes = std::fs::read(&journal).map_err(|source| OpenError::Io {
        what: "reading the state journal",
        path: journal.clone(),
        source,
    })?;
    let mut report = SalvageReport {
        journal,
        bytes: bytes.len() as u64,
        ..SalvageReport::default()
    };
    let mut kept = Vec::new();
    let mut last_seq: Option<u64> = None;
    for piece in frame::walk(&bytes) {
        match piece {
            Piece::Bad { start, end } => {
                report.bad_regions += 1;
                report.bad_bytes += (end - start) as u64;
            }
            Piece::Record(f) => match f.batch(&bytes) {
                Ok(batch) => {
                    report.records += 1;
                    report.admitted_tasks += admitted(&batch);
                    if let Some(last) = last_seq {
                        report.missing_batches += f.seq.saturating_sub(last + 1);
                    }
                    let first = report.batches.map_or(f.seq, |(first, _)| first);
                    report.batches = Some((first, f.seq));
                    last_seq = Some(f.seq);
                    kept.extend_from_slice(&bytes[f.start..f.end]);
                }
                Err(_) => report.unreadable += 1,
            },
        }
    }
    Ok((report, kept))
}

fn admitted(batch: &Batch) -> usize {
    batch
        .changes
        .iter()
        .map(|c| match c {
            Change::Admit { tasks, .. } | Change::Submit { tasks, .. } => tasks.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::journal::Journal;
    use crate::state::redb::RedbStore;
    use crate::state::{StateStore, TaskState};
    use serde_json::json;
    use wasm_exec_task::TaskSpec;

    /// The incident's journal: 1,761 acknowledged tasks in 59 batches (1, 2, 3... tasks, the last
    /// 50), next to a database that holds none of them yet.
    fn incident(dir: &Path) -> Vec<u8> {
        drop(RedbStore::open(dir).unwrap());
        let (mut journal, _) = Journal::open(&dir.join(JOURNAL_FILE), 0).unwrap();
        let mut n = 0;
        for seq in 1..=59u64 {
            let size = if seq == 59 { 50 } else { seq };
            let tasks = (0..size)
                .map(|_| {
                    n += 1;
                    TaskSpec::new(format!("t{n:04}"), "fib.wasm", json!([n]))
                })
                .collect();
            let changes = vec![Change::Admit {
                tasks,
                origin: "chain".into(),
                cursor: Some(n.to_string()),
            }];
            journal
                .append(
                    seq,
                    &Batch {
                        at_ms: seq,
                        changes,
                    },
                )
                .unwrap();
        }
        assert_eq!(n, 1761);
        std::fs::read(dir.join(JOURNAL_FILE)).unwrap()
    }

    fn pending(dir: &Path) -> u64 {
        RedbStore::open(dir).unwrap().counts().unwrap()[&TaskState::Pending]
    }

    #[test]
    fn salvage_keeps_every_record_but_the_one_with_a_changed_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = incident(dir.path());
        let mut at = 0;
        for _ in 0..10 {
            at = frame::frame_at(&bytes, at).unwrap().end;
        }
        bytes[at + 30] ^= 0x08;
        std::fs::write(dir.path().join(JOURNAL_FILE), &bytes).unwrap();
        let refused = RedbStore::open(dir.path()).err().unwrap();
        assert_eq!(refused.label(), "journal_corrupt", "{refused}");
        let looked = check(dir.path()).unwrap();
        assert_eq!(looked.copy, None, "check changes nothing");
        let report = salvage(dir.path()).unwrap();
        eprintln!("{report}");
        assert_eq!(
            (report.records, report.admitted_tasks, report.bad_regions),
            (58, 1750, 1)
        );
        assert_eq!((report.missing_batches, report.batches), (1, Some((1, 59))));
        assert_eq!(std::fs::read(report.copy.unwrap()).unwrap(), bytes);
        assert_eq!(
            pending(dir.path()),
            1750,
            "only batch 11's 11 tasks are lost"
        );
    }

    #[test]
    fn a_garbage_prefix_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0xEE; 16];
        bytes.extend_from_slice(&incident(dir.path()));
        std::fs::write(dir.path().join(JOURNAL_FILE), &bytes).unwrap();
        let report = check(dir.path()).unwrap();
        eprintln!("{report}");
        assert_eq!((report.records, report.admitted_tasks), (59, 1761));
        assert_eq!((report.bad_regions, report.bad_bytes), (1, 16));
        assert_eq!(pending(dir.path()), 1761, "the prefix hides no batch");
    }

    #[test]
    fn salvaging_a_sound_journal_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = incident(dir.path());
        let report = salvage(dir.path()).unwrap();
        assert_eq!(
            (report.records, report.bad_regions, report.copy),
            (59, 0, None)
        );
        assert_eq!(std::fs::read(dir.path().join(JOURNAL_FILE)).unwrap(), bytes);
    }
}
