//! The state journal's judgement on open (`wasm_exec_coordinator::state::journal::damage::replay`):
//! arbitrary bytes, and a journal the real code wrote, damaged.

use std::sync::OnceLock;
use wasm_exec_coordinator::state::TaskState;
use wasm_exec_coordinator::state::journal::damage::{Damage, Refusal, replay};
use wasm_exec_coordinator::state::journal::frame::encode_payload;
use wasm_exec_coordinator::state::journal::{Batch, Change, Journal};
use wasm_exec_task::{ErrorKind, ResultEnvelope, TaskSpec};

/// Batches in [`sample`].
pub const SAMPLE_BATCHES: u64 = 6;

/// A journal of [`SAMPLE_BATCHES`] batches (every kind of change), written by [`Journal`] itself.
pub fn sample() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("journal.log");
    let (mut journal, _) = Journal::open(&path, 0).expect("a fresh journal opens");
    for (seq, batch) in (1..).zip(sample_batches()) {
        journal
            .append(seq, &batch)
            .expect("the journal takes a batch");
    }
    std::fs::read(&path).expect("the journal reads back")
}

fn sample_batches() -> Vec<Batch> {
    let failed = || Box::new(ResultEnvelope::failure(ErrorKind::Trap, "unreachable"));
    let changes = vec![
        Change::Admit {
            tasks: vec![
                TaskSpec::new("t1", "fib.wasm", serde_json::json!([12])),
                TaskSpec::new(
                    "t2",
                    "bafkreiesibz2ybgnmbptk3uq4lwwd2yh7njf2oqidqoxczgs6fvdqlv4je",
                    serde_json::json!({"entry": "add", "args": [1, "-2", 3.5]}),
                ),
            ],
            origin: "api".into(),
            cursor: Some(r#"{"next_block":7}"#.into()),
        },
        Change::Progress {
            id: "t1".into(),
            state: TaskState::Running,
        },
        Change::Finish {
            id: "t1".into(),
            result: failed(),
            reported: false,
        },
        Change::Quarantine {
            id: "t2".into(),
            result: failed(),
        },
        Change::Reported {
            id: "t1".into(),
            note: None,
        },
        Change::Reported {
            id: "t2".into(),
            note: Some("the source is gone".into()),
        },
    ];
    (1..)
        .zip(changes)
        .map(|(at_ms, change)| Batch {
            at_ms,
            changes: vec![change],
        })
        .collect()
}

/// The sample's records: each batch with its exact bytes in the file.
fn records() -> &'static [(u64, Batch, Vec<u8>)] {
    static RECORDS: OnceLock<Vec<(u64, Batch, Vec<u8>)>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        (1..)
            .zip(sample_batches())
            .map(|(seq, batch)| {
                let json = serde_json::to_vec(&batch).expect("a batch serialises");
                let record = encode_payload(seq, &json).expect("small");
                (seq, batch, record)
            })
            .collect()
    })
}

/// The first byte: its low bit says whether the rest is the journal (0) or edits to [`sample`]
/// (1); the other bits give the database's last batch. Checks: no panic; either a typed refusal
/// (corruption only where the damage may hide a batch the database lacks) or the batches with
/// every intact record of the sample among them, whatever else is lost being reported as damage;
/// the bytes kept replay again to the same batches with no damage left.
pub fn journal(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let applied = u64::from(head >> 1) % (SAMPLE_BATCHES + 2);
    let bytes = if head & 1 == 0 {
        rest.to_vec()
    } else {
        edit(sample_bytes(), rest)
    };
    let verdict = match replay(&bytes, applied) {
        Ok(verdict) => verdict,
        Err(Refusal::Corrupt(c)) => {
            assert!(c.resume_seq > applied + 1 && c.following > 0, "{c:?}");
            return;
        }
        Err(Refusal::Unreadable(u)) => {
            assert!(u.offset < bytes.len(), "{u:?}");
            return;
        }
    };
    assert!(verdict.valid <= bytes.len());
    if verdict.damage.is_none() {
        assert_eq!(
            verdict.valid,
            bytes.len(),
            "bytes dropped with no damage reported"
        );
    }
    for (seq, batch, record) in records() {
        if contains(&bytes, record) {
            let kept = verdict.batches.iter().any(|(s, b)| s == seq && b == batch);
            assert!(
                kept,
                "batch {seq} is intact in the file but was not replayed"
            );
        }
    }
    let again = replay(&bytes[..verdict.valid], applied).expect("the bytes kept replay again");
    assert_eq!(again.batches, verdict.batches);
    if matches!(verdict.damage, Some(Damage::TornTail { .. })) {
        assert_eq!(again.damage, None, "cutting the torn tail leaves no damage");
    }
}

fn sample_bytes() -> &'static [u8] {
    static SAMPLE: OnceLock<Vec<u8>> = OnceLock::new();
    SAMPLE.get_or_init(sample)
}

/// Applies `edits` to `clean`, four bytes each: an operation, a position (two bytes), a value.
/// Flip a byte, cut the file, insert a byte, or append the rest of the edits as bytes.
fn edit(clean: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut bytes = clean.to_vec();
    let mut chunks = edits.chunks(4);
    while let Some(&[op, hi, lo, value]) = chunks.next() {
        let at = usize::from(u16::from_be_bytes([hi, lo]));
        match op % 4 {
            0 if !bytes.is_empty() => {
                let len = bytes.len();
                bytes[at % len] ^= value.max(1);
            }
            1 => bytes.truncate(at % (bytes.len() + 1)),
            2 => bytes.insert(at % (bytes.len() + 1), value),
            3 => {
                bytes.extend(chunks.flatten());
                break;
            }
            _ => {}
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
