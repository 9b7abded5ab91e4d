//! How a journal's damage is judged on open: a torn tail (cut off), corruption (refused, a copy
//! kept), or corruption that only touches batches the database already holds (replayed past).

use super::Batch;
use super::frame::{self, Piece};
use crate::state::error::OpenError;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a journal holds past its intact start, as [`replay`] judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Bad bytes at the end, with no intact record after them: a write cut by a crash.
    TornTail {
        /// Offset of the first bad byte.
        offset: usize,
        /// How many bytes are bad (to the end of the file).
        bytes: usize,
    },
    /// Bad bytes with intact records after them.
    Corrupt(Corruption),
}

/// Bad bytes followed by intact records: where they are and what follows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Offset of the first bad byte.
    pub offset: usize,
    /// How many intact records precede it.
    pub index: usize,
    /// Bytes from `offset` to the next intact record.
    pub bad_bytes: usize,
    /// Intact records after `offset`.
    pub following: usize,
    /// The batch number of the next intact record.
    pub resume_seq: u64,
}

/// Judges the damage in a walked journal: `None` when every byte belongs to an intact record.
pub(crate) fn damage(pieces: &[Piece]) -> Option<Damage> {
    let index = pieces.iter().position(|p| matches!(p, Piece::Bad { .. }))?;
    let Piece::Bad { start, end } = pieces[index] else {
        return None;
    };
    let after: Vec<u64> = pieces[index..]
        .iter()
        .filter_map(|p| match p {
            Piece::Record(f) => Some(f.seq),
            Piece::Bad { .. } => None,
        })
        .collect();
    Some(match after.first() {
        None => Damage::TornTail {
            offset: start,
            bytes: end - start,
        },
        Some(&resume_seq) => Damage::Corrupt(Corruption {
            offset: start,
            index,
            bad_bytes: end - start,
            following: after.len(),
            resume_seq,
        }),
    })
}

/// An intact record that does not parse as a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// How many pieces precede it.
    pub index: usize,
    /// Its offset.
    pub offset: usize,
    /// Its batch number.
    pub seq: u64,
    /// Why it does not parse.
    pub reason: String,
}

/// The batches of the intact records in `pieces`, or the first intact record that does not parse.
pub(crate) fn batches(bytes: &[u8], pieces: &[Piece]) -> Result<Vec<(u64, Batch)>, Unreadable> {
    let mut out = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        if let Piece::Record(f) = piece {
            let batch = f.batch(bytes).map_err(|reason| Unreadable {
                index,
                offset: f.start,
                seq: f.seq,
                reason,
            })?;
            out.push((f.seq, batch));
        }
    }
    Ok(out)
}

/// What a journal's bytes give: the batches to replay, how many bytes to keep, and the damage
/// that was stepped over.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Every intact record's batch, in file order, with its number.
    pub batches: Vec<(u64, Batch)>,
    /// Bytes to keep (less than the file when a torn tail is cut off).
    pub valid: usize,
    /// The damage found and accepted: a torn tail, or corruption that only hides batches the
    /// database already holds. `None` when every byte belongs to an intact record.
    pub damage: Option<Damage>,
}

/// Why a journal's bytes must not be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An intact record that does not parse as a batch.
    Unreadable(Unreadable),
    /// Bad bytes before intact records that may hide batches the database lacks.
    Corrupt(Corruption),
}

/// Judges a journal's `bytes` for a database holding batches up to `applied`, touching nothing:
/// the batches to replay with any damage stepped over, or why they must not be replayed. Never
/// panics, whatever the bytes; public so the fuzz targets drive the very judgement
/// [`Journal::open`](super::Journal::open) makes.
pub fn replay(bytes: &[u8], applied: u64) -> Result<Verdict, Refusal> {
    let pieces = frame::walk(bytes);
    let batches = batches(bytes, &pieces).map_err(Refusal::Unreadable)?;
    let damage = damage(&pieces);
    let valid = match &damage {
        None => bytes.len(),
        Some(Damage::TornTail { offset, .. }) => *offset,
        Some(Damage::Corrupt(c)) if c.resume_seq > applied.saturating_add(1) => {
            return Err(Refusal::Corrupt(c.clone()));
        }
        Some(Damage::Corrupt(_)) => bytes.len(),
    };
    Ok(Verdict {
        batches,
        valid,
        damage,
    })
}

/// Judges the journal at `path`, whose content is `bytes`, as [`replay`] does; logs a torn tail at
/// warn, keeps a copy of a corrupt journal, and turns a refusal into its [`OpenError`].
pub(crate) fn judge(path: &Path, bytes: &[u8], applied: u64) -> Result<Verdict, OpenError> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    let copy = || {
        keep_copy(path, bytes).map_err(|source| OpenError::Io {
            what: "copying the corrupt state journal",
            path: path.to_owned(),
            source,
        })
    };
    let verdict = match replay(bytes, applied) {
        Ok(verdict) => verdict,
        Err(Refusal::Unreadable(u)) => {
            return Err(OpenError::JournalUnreadable {
                path: path.to_owned(),
                offset: u.offset as u64,
                index: u.index,
                seq: u.seq,
                reason: u.reason,
                dir,
            });
        }
        Err(Refusal::Corrupt(c)) => {
            return Err(OpenError::JournalCorrupt {
                path: path.to_owned(),
                offset: c.offset as u64,
                index: c.index,
                bad_bytes: c.bad_bytes as u64,
                following: c.following,
                applied,
                resume_seq: c.resume_seq,
                copy: copy()?,
                dir,
            });
        }
    };
    match &verdict.damage {
        None => {}
        Some(Damage::TornTail { offset, bytes: cut }) => tracing::warn!(
            path = %path.display(),
            offset,
            bytes = cut,
            "state journal: cutting off a torn tail (a write a crash interrupted, never acknowledged)"
        ),
        Some(Damage::Corrupt(c)) => {
            let copy = copy()?;
            tracing::warn!(
                path = %path.display(),
                offset = c.offset,
                bad_bytes = c.bad_bytes,
                following = c.following,
                applied,
                copy = %copy.display(),
                "state journal: damaged, but the database holds every batch the damage could hold; replaying the intact records"
            );
        }
    }
    Ok(verdict)
}

/// Keeps a copy of a damaged journal as `<name>.corrupt-<unix ms>` next to it, unless an identical
/// copy is already there (a coordinator restarted in a loop keeps one copy, not one per start).
pub(crate) fn keep_copy(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "journal".into(), |n| n.to_string_lossy().into_owned());
    let prefix = format!("{name}.corrupt-");
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let same_name = entry.file_name().to_string_lossy().starts_with(&prefix);
        if same_name
            && entry.metadata()?.len() == bytes.len() as u64
            && std::fs::read(entry.path())? == bytes
        {
            return Ok(entry.path());
        }
    }
    let copy = dir.join(format!("{prefix}{}", crate::state::now_ms()));
    let mut file = File::create(&copy)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::super::{Change, Journal};
    use super::*;
    use crate::state::TaskState;
    use serde_json::json;
    use wasm_exec_task::TaskSpec;

    /// A journal as the store writes it: batches 1..=n of admissions and progress of varied size.
    fn journal(n: u64) -> Vec<u8> {
        (1..=n)
            .flat_map(|seq| {
                let ids: Vec<String> = (0..=seq % 4).map(|i| format!("t{seq}-{i}")).collect();
                let mut changes = vec![Change::Admit {
                    tasks: ids
                        .iter()
                        .map(|id| TaskSpec::new(id, "fib.wasm", json!([seq])))
                        .collect(),
                    origin: "api".into(),
                    cursor: None,
                }];
                changes.push(Change::Progress {
                    id: ids[0].clone(),
                    state: TaskState::Running,
                });
                frame::encode(
                    seq,
                    &Batch {
                        at_ms: seq,
                        changes,
                    },
                )
                .unwrap()
            })
            .collect()
    }

    fn open(dir: &Path, bytes: &[u8], applied: u64) -> Result<Vec<u64>, OpenError> {
        let path = dir.join("journal.log");
        std::fs::write(&path, bytes).unwrap();
        Journal::open(&path, applied).map(|(_, b)| b.into_iter().map(|(s, _)| s).collect())
    }

    fn record_start(bytes: &[u8], index: usize) -> usize {
        let mut at = 0;
        for _ in 0..index {
            at = frame::frame_at(bytes, at).unwrap().end;
        }
        at
    }

    #[test]
    fn a_flipped_byte_mid_journal_refuses_the_open_and_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = journal(20);
        let at = record_start(&bytes, 10) + 20;
        bytes[at] ^= 0x01;
        let err = open(dir.path(), &bytes, 0).unwrap_err();
        let OpenError::JournalCorrupt {
            index,
            following,
            resume_seq,
            ref copy,
            ..
        } = err
        else {
            panic!("not a corruption refusal: {err}")
        };
        assert_eq!((index, following, resume_seq), (10, 9, 12));
        assert_eq!(
            std::fs::read(copy).unwrap(),
            bytes,
            "the copy is the file as found"
        );
        let journal = std::fs::read(dir.path().join("journal.log")).unwrap();
        assert_eq!(journal, bytes, "nothing is cut off");
        let message = err.to_string();
        for words in [
            "corrupt at byte",
            "record 10",
            "9 intact records",
            "salvage",
        ] {
            assert!(message.contains(words), "{words:?} missing from: {message}");
        }
        open(dir.path(), &bytes, 0).unwrap_err();
        let copies = std::fs::read_dir(dir.path()).unwrap().count() - 1;
        assert_eq!(copies, 1, "a second refusal reuses the identical copy");
    }

    #[test]
    fn a_garbage_prefix_is_refused_only_when_it_may_hide_a_batch_the_database_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let clean = journal(5);
        let mut prefixed = vec![0x5A; 16];
        prefixed.extend_from_slice(&clean);
        assert_eq!(
            open(dir.path(), &prefixed, 0).unwrap(),
            [1, 2, 3, 4, 5],
            "bytes before batch 1 hide nothing"
        );
        let mut overwritten = clean.clone();
        overwritten[..16].fill(0x5A);
        let err = open(dir.path(), &overwritten, 0).unwrap_err();
        assert_eq!(err.label(), "journal_corrupt", "{err}");
        assert_eq!(
            open(dir.path(), &overwritten, 1).unwrap(),
            [2, 3, 4, 5],
            "the database holds batch 1, which the damage hid"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_its_size_is_the_only_loss() {
        let dir = tempfile::tempdir().unwrap();
        let clean = journal(4);
        let keep = record_start(&clean, 3);
        let mut torn = clean[..clean.len() - 3].to_vec();
        torn.extend_from_slice(&[0; 4096]);
        assert_eq!(open(dir.path(), &torn, 0).unwrap(), [1, 2, 3]);
        let len = std::fs::metadata(dir.path().join("journal.log"))
            .unwrap()
            .len();
        assert_eq!(len, keep as u64);
    }

    #[test]
    fn an_intact_record_that_is_no_batch_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = journal(2);
        let payload = br#"{"at_ms":1,"changes":[{"Unknown":{}}]}"#;
        // An unknown change, framed with a valid checksum, as a newer version might write it.
        let foreign = frame::encode_payload(3, payload).unwrap();
        bytes.extend_from_slice(&foreign);
        let err = open(dir.path(), &bytes, 0).unwrap_err();
        assert_eq!(err.label(), "journal_unreadable", "{err}");
        assert!(err.to_string().contains("batch 3"), "{err}");
    }

    /// xorshift64*: reproducible randomness without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, clean: &[u8]) -> Vec<u8> {
        let mut bytes = clean.to_vec();
        match rng.below(6) {
            0 => {
                for _ in 0..=rng.below(3) {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            1 => bytes.truncate(rng.below(bytes.len())),
            2 => {
                let prefix: Vec<u8> = (0..=rng.below(64)).map(|_| rng.next() as u8).collect();
                bytes.splice(0..0, prefix);
            }
            3 => {
                let at = rng.below(bytes.len());
                let end = (at + 1 + rng.below(64)).min(bytes.len());
                bytes[at..end]
                    .iter_mut()
                    .for_each(|b| *b = rng.next() as u8);
            }
            4 => bytes = (0..rng.below(4096)).map(|_| rng.next() as u8).collect(),
            _ => {
                let at = rng.below(bytes.len());
                bytes.truncate(at);
                bytes.resize(at + rng.below(8192), 0);
            }
        }
        bytes
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn random_damage_never_panics_nor_silently_drops_an_intact_record() {
        let clean = journal(30);
        let records: Vec<(u64, Vec<u8>)> = frame::walk(&clean)
            .into_iter()
            .map(|p| match p {
                Piece::Record(f) => (f.seq, clean[f.start..f.end].to_vec()),
                Piece::Bad { .. } => panic!("the clean journal is clean"),
            })
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut clean_opens, mut torn, mut refused) = (0, 0, 0);
        for round in 0..400 {
            let dir = tempfile::tempdir().unwrap();
            let bytes = mutate(&mut rng, &clean);
            let intact: Vec<u64> = records
                .iter()
                .filter(|(_, r)| contains(&bytes, r))
                .map(|(s, _)| *s)
                .collect();
            match open(dir.path(), &bytes, 0) {
                Ok(replayed) => {
                    let last = intact.last().copied().unwrap_or(0);
                    let expected: Vec<u64> = (1..=last).collect();
                    assert_eq!(replayed, expected, "round {round}: silent loss");
                    let len = std::fs::metadata(dir.path().join("journal.log"))
                        .unwrap()
                        .len();
                    if len == bytes.len() as u64 {
                        clean_opens += 1;
                    } else {
                        torn += 1;
                    }
                }
                Err(OpenError::JournalCorrupt { copy, .. }) => {
                    let kept = std::fs::read(dir.path().join("journal.log")).unwrap();
                    assert_eq!(kept, bytes, "round {round}: a refusal changes nothing");
                    assert_eq!(std::fs::read(copy).unwrap(), bytes);
                    refused += 1;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert!(
            clean_opens > 0 && torn > 0 && refused > 0,
            "{clean_opens} {torn} {refused}"
        );
    }
}
