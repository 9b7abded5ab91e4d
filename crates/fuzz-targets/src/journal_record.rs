//! One intact journal record (checksum good) whose payload is arbitrary: the batch decoding of
//! the replay path (`wasm_exec_coordinator::state::journal::damage::replay`).

use wasm_exec_coordinator::state::journal::damage::{Refusal, replay};
use wasm_exec_coordinator::state::journal::frame::encode_payload;

/// The batch number every framed input gets.
const SEQ: u64 = 7;

/// The input is the payload (a `{` put before it unless it starts so, as every batch does),
/// framed as the journal frames it. Checks: no panic; the record is either one batch with no
/// damage, or refused as unreadable, never corrupt or dropped; a batch framed again from its
/// JSON reads back the same.
pub fn journal_record(data: &[u8]) {
    let payload = if data.first() == Some(&b'{') {
        data.to_vec()
    } else {
        [b"{".as_slice(), data].concat()
    };
    let record = encode_payload(SEQ, &payload).expect("a fuzz input is under 1 GiB");
    let verdict = match replay(&record, 0) {
        Ok(verdict) => verdict,
        Err(Refusal::Unreadable(u)) => {
            assert_eq!((u.offset, u.index, u.seq), (0, 0, SEQ));
            return;
        }
        Err(Refusal::Corrupt(c)) => panic!("one intact record judged corrupt: {c:?}"),
    };
    assert_eq!(verdict.damage, None);
    assert_eq!(verdict.valid, record.len());
    let [(seq, batch)] = verdict.batches.as_slice() else {
        panic!("one record gave {} batches", verdict.batches.len());
    };
    assert_eq!(*seq, SEQ);
    let json = serde_json::to_vec(batch).expect("a batch serialises");
    let again = replay(&encode_payload(SEQ, &json).expect("small"), 0)
        .unwrap_or_else(|e| panic!("a batch written again is refused: {e:?}"));
    assert_eq!(again.batches, verdict.batches);
}
