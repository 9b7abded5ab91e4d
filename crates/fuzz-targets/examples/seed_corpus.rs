//! Writes the seed inputs of every target into `fuzz/corpus/<target>/` from real inputs: the
//! files of `testdata/`, and documents, events and journals written by the project's own code.
//! Run once before a first campaign (`cargo run -p wasm-exec-fuzz-targets --example seed_corpus`);
//! the campaign then grows the corpus and `cargo fuzz cmin` shrinks it (docs/FUZZING.md).

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolEvent;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use wasm_exec_chain::TaskRegistry::TaskSubmitted;
use wasm_exec_fuzz_targets::journal;
use wasm_exec_task::{ErrorKind, ResultEnvelope, TaskSpec};

const FIB_CID: &str = "bafkreiesibz2ybgnmbptk3uq4lwwd2yh7njf2oqidqoxczgs6fvdqlv4je";

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut seeds = Seeds(root.join("fuzz/corpus"), 0);
    let testdata = root.join("testdata");
    ipfs(&mut seeds, &testdata)?;
    tasks(&mut seeds, &testdata)?;
    values(&mut seeds)?;
    chain(&mut seeds)?;
    journals(&mut seeds)?;
    println!("wrote {} seeds", seeds.1);
    Ok(())
}

/// The `testdata/ipfs` CARs (each with the pick of its root), their blocks, and CIDs.
fn ipfs(seeds: &mut Seeds, testdata: &Path) -> Result<()> {
    for (pick, car) in [
        "xorshift-12345-chunk64-v1.car",
        "xorshift-12345-chunk64-v0.car",
        "xorshift-66-v1.car",
        "xorshift-66-v0.car",
    ]
    .iter()
    .enumerate()
    {
        let bytes = read(&testdata.join("ipfs").join(car))?;
        seeds.put("car", &[&[pick as u8], bytes.as_slice()].concat())?;
        for block in car_blocks(&bytes) {
            seeds.put("unixfs", &block)?;
        }
    }
    let cids = std::fs::read_to_string(testdata.join("ipfs/js-ipfs-cids.txt"))?;
    for line in cids.lines().filter(|l| !l.starts_with('#')).take(4) {
        for cid in line.split_whitespace().skip(1) {
            seeds.put("cid", cid.as_bytes())?;
        }
    }

    Ok(())
}

/// Input documents, task documents and API bodies.
fn tasks(seeds: &mut Seeds, testdata: &Path) -> Result<()> {
    let mut inputs = Vec::new();
    for name in ["fib.json", "affine.json", "no-tasks.json"] {
        inputs.push(read(&testdata.join("input").join(name))?);
    }
    for input in &inputs {
        seeds.put("task", input)?;
    }
    let tasks = [
        TaskSpec::new(
            "t1",
            "fib.wasm",
            serde_json::json!({"entry": "fib", "args": [12]}),
        ),
        TaskSpec::new("t2", FIB_CID, serde_json::json!([1, "-2", 3.5, "NaN"])),
    ];
    for task in &tasks {
        let json = serde_json::to_vec(task)?;
        seeds.put("task", &json)?;
        seeds.put(
            "api_body",
            &[b"application/json\n".as_slice(), &json].concat(),
        )?;
    }
    seeds.put(
        "api_body",
        br#"application/json; charset=utf-8
{"wasm_cid":"fib.wasm","entry":"fib","input":{"args":[18446744073709551615]},"limits":{"timeout_sec":2.5,"fuel":1000}}"#,
    )?;

    Ok(())
}

/// Arguments of each type, and result lines in a log.
fn values(seeds: &mut Seeds) -> Result<()> {
    for (ty, value) in [
        (0, "12"),
        (1, "\"-1\""),
        (1, "18446744073709551615"),
        (2, "3.5"),
    ] {
        seeds.put("convert", &[&[ty], value.as_bytes()].concat())?;
    }
    for (ty, value) in [
        (3, "\"NaN\""),
        (3, "-1e308"),
        (2, "1e39"),
        (0, "4294967296"),
    ] {
        seeds.put("convert", &[&[ty], value.as_bytes()].concat())?;
    }

    let mut ok = ResultEnvelope::failure(ErrorKind::Io, "");
    (ok.ok, ok.error, ok.entry) = (true, None, Some("fib".into()));
    (ok.args, ok.result, ok.duration_ms) = (vec![12.into()], 144.into(), 0.25);
    let trap = ResultEnvelope::failure(ErrorKind::Trap, "wasm trap: unreachable");
    for envelope in [&ok, &trap] {
        let log = format!("starting\n{}\n\n", envelope.to_line());
        seeds.put("log_tail", log.as_bytes())?;
    }

    Ok(())
}

/// `TaskSubmitted` logs as the contract emits them, encoded by alloy.
fn chain(seeds: &mut Seeds) -> Result<()> {
    for (id, input) in [
        (1u64, "[12]"),
        (2, r#"{"entry":"add","args":[1,2]}"#),
        (3, "not json"),
    ] {
        let event = TaskSubmitted {
            taskId: U256::from(id),
            requester: Address::repeat_byte(0x11),
            wasmCid: FIB_CID.into(),
            entry: "fib".into(),
            input: input.into(),
            fuel: 1000,
            timeoutSec: 5,
        };
        let log = event.encode_log_data();
        let mut seed = vec![0b0000_0100]; // three topics, the first the signature
        for topic in &log.topics()[1..] {
            seed.extend_from_slice(topic.as_slice());
        }
        seed.extend_from_slice(&log.data);
        seeds.put("chain_event", &seed)?;
    }

    Ok(())
}

/// A journal written by the real code, a few edits of it, and its records' payloads.
fn journals(seeds: &mut Seeds) -> Result<()> {
    let sample = journal::sample();
    seeds.put("journal", &[&[0], sample.as_slice()].concat())?;
    seeds.put("journal", &[&[3], sample.as_slice()].concat())?;
    seeds.put("journal", &[1, 0, 0, 40, 1])?; // one flipped byte in the first record
    seeds.put("journal", &[1, 1, 1, 0, 0])?; // cut at byte 256
    let mut at = 0;
    while at + 12 <= sample.len() {
        let len = u32::from_le_bytes(sample[at..at + 4].try_into()?) as usize;
        seeds.put("journal_record", &sample[at + 12..at + 12 + len])?;
        at += 20 + len;
    }
    Ok(())
}

/// The blocks of a CARv1: after the header, each section is a varint length, a CID, the block.
fn car_blocks(car: &[u8]) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut rest = car;
    let mut header = true;
    while let Ok((len, tail)) = unsigned_varint_u64(rest) {
        let Some(section) = tail.get(..len) else {
            break;
        };
        rest = &tail[len..];
        if std::mem::take(&mut header) {
            continue;
        }
        let mut block = section;
        if wasm_exec_ipfs::Cid::read_bytes(&mut block).is_ok() {
            blocks.push(block.to_vec());
        }
    }
    blocks
}

fn unsigned_varint_u64(bytes: &[u8]) -> Result<(usize, &[u8]), ()> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The corpus directory and how many seeds were written.
struct Seeds(PathBuf, usize);

impl Seeds {
    fn put(&mut self, target: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("seed-{:03}", self.1));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        self.1 += 1;
        Ok(())
    }
}
