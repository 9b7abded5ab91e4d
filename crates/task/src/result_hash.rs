//! The deterministic `result_hash` of a result document: keccak-256 over one canonical byte
//! encoding of the fields that the same module and input decide, specified in docs/RESULT_HASH.md.
//!
//! Typed and length-prefixed rather than canonical JSON (RFC 8785): JCS reads every number as an
//! IEEE double, so two i64 results above 2^53 that differ in their low bits would hash the same.
//! Here integers keep every digit and floats are their exact binary64 bits.

use crate::ResultEnvelope;
use serde_json::{Number, Value};
use sha3::{Digest, Keccak256};
use std::fmt;

/// The first bytes of every encoding: names the scheme and its version, so a hash of this
/// encoding can never be mistaken for the hash of other bytes, and a new version never collides.
pub const DOMAIN: &[u8] = b"wasm-exec:result_hash:v1";

/// Tag bytes of the value encoding (docs/RESULT_HASH.md, "Values").
mod tag {
    pub const NULL: u8 = 0x00;
    pub const FALSE: u8 = 0x01;
    pub const TRUE: u8 = 0x02;
    pub const INTEGER: u8 = 0x03;
    pub const FLOAT: u8 = 0x04;
    pub const STRING: u8 = 0x05;
    pub const ARRAY: u8 = 0x06;
    pub const OBJECT: u8 = 0x07;
}

/// A keccak-256 `result_hash`; shown and serialised as `0x` and 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultHash(pub [u8; 32]);

impl fmt::Display for ResultHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl serde::Serialize for ResultHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ResultHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for ResultHash {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.strip_prefix("0x").unwrap_or(text);
        let bad = || format!("{text:?} is not a result_hash: expected 0x and 64 hex digits");
        if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.as_bytes().chunks(2)) {
            // Hex digits checked above, so every pair is ASCII and parses.
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

impl ResultEnvelope {
    /// The canonical encoding of this result's deterministic part: [`DOMAIN`], then the array
    /// `[ok, entry, args, result, stdout, stderr, truncated, exit_code, fuel_consumed,
    /// module_sha256, error kind]` in the value encoding. `duration_ms`, `phases` and the error
    /// message are left out: they differ between runs and hosts.
    pub fn canonical_encoding(&self) -> Vec<u8> {
        let fields = [
            Value::Bool(self.ok),
            self.entry.clone().map_or(Value::Null, Value::String),
            Value::Array(self.args.clone()),
            self.result.clone(),
            Value::String(self.stdout.clone()),
            Value::String(self.stderr.clone()),
            Value::Bool(self.truncated),
            self.exit_code.map_or(Value::Null, Value::from),
            self.fuel_consumed.map_or(Value::Null, Value::from),
            self.module_sha256
                .clone()
                .map_or(Value::Null, Value::String),
            self.kind()
                .map_or(Value::Null, |k| Value::String(k.as_str().to_owned())),
        ];
        let mut out = DOMAIN.to_vec();
        encode_array(&mut out, &fields);
        out
    }

    /// keccak-256 of [`ResultEnvelope::canonical_encoding`]: equal for two runs of the same
    /// module and input under the same limits, wherever they ran; what goes on chain.
    pub fn result_hash(&self) -> ResultHash {
        ResultHash(Keccak256::digest(self.canonical_encoding()).into())
    }
}

/// Appends the value encoding of `value`.
fn encode_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(tag::NULL),
        Value::Bool(false) => out.push(tag::FALSE),
        Value::Bool(true) => out.push(tag::TRUE),
        Value::Number(n) => encode_number(out, n),
        Value::String(s) => {
            out.push(tag::STRING);
            encode_bytes(out, s.as_bytes());
        }
        Value::Array(items) => encode_array(out, items),
        Value::Object(members) => {
            out.push(tag::OBJECT);
            let mut sorted: Vec<_> = members.iter().collect();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            encode_len(out, sorted.len());
            for (key, value) in sorted {
                encode_bytes(out, key.as_bytes());
                encode_value(out, value);
            }
        }
    }
}

/// An integer as its shortest decimal digits (they have no fixed width: i64 and u64 both occur);
/// any other number as its binary64 bits, big-endian.
fn encode_number(out: &mut Vec<u8>, n: &Number) {
    if n.is_i64() || n.is_u64() {
        out.push(tag::INTEGER);
        encode_bytes(out, n.to_string().as_bytes());
    } else {
        // Not an integer, so serde_json holds it as an f64 (finite: JSON has no other).
        let x = n.as_f64().unwrap_or(f64::NAN);
        out.push(tag::FLOAT);
        out.extend_from_slice(&x.to_bits().to_be_bytes());
    }
}

fn encode_array(out: &mut Vec<u8>, items: &[Value]) {
    out.push(tag::ARRAY);
    encode_len(out, items.len());
    items.iter().for_each(|item| encode_value(out, item));
}

/// A length or count as 4 bytes, big-endian. Documents are bounded far below 4 GiB (stdout and
/// stderr at 1 MiB each, inputs by the intake check), so the cast cannot wrap.
fn encode_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

fn encode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;
    use std::path::Path;

    /// The committed vectors: each envelope's encoding and hash as docs/RESULT_HASH.md defines
    /// them (scripts/check-result-hash recomputes them apart from this code).
    #[test]
    fn committed_vectors_match() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/result_hash/vectors.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert!(vectors.len() >= 8, "{} vectors", vectors.len());
        for v in &vectors {
            let name = v["name"].as_str().unwrap();
            let envelope: ResultEnvelope = serde_json::from_value(v["envelope"].clone()).unwrap();
            let encoding: String = envelope
                .canonical_encoding()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                encoding,
                v["encoding"].as_str().unwrap(),
                "{name}: encoding"
            );
            assert_eq!(
                envelope.result_hash().to_string(),
                v["result_hash"].as_str().unwrap(),
                "{name}: hash"
            );
        }
    }

    fn fib() -> ResultEnvelope {
        let mut env = ResultEnvelope::failure(ErrorKind::Trap, "x");
        env.ok = true;
        env.error = None;
        env.entry = Some("fib".into());
        env.args = vec![json!(12)];
        env.result = json!(144);
        env
    }

    #[test]
    fn time_phases_and_messages_do_not_change_the_hash() {
        let a = fib();
        let mut b = a.clone();
        b.duration_ms = 12.5;
        b.phases = Some(crate::Phases::default());
        assert_eq!(a.result_hash(), b.result_hash());
        let mut failed = ResultEnvelope::failure(ErrorKind::Trap, "at 0x1234 on host a");
        let other = ResultEnvelope::failure(ErrorKind::Trap, "at 0x9999 on host b");
        assert_eq!(failed.result_hash(), other.result_hash());
        failed.error = Some(crate::ErrorInfo::new(ErrorKind::OutOfFuel, "at 0x1234"));
        assert_ne!(failed.result_hash(), other.result_hash());
    }

    #[test]
    fn every_deterministic_field_changes_the_hash() {
        let base = fib();
        let changes: [fn(&mut ResultEnvelope); 10] = [
            |e| e.ok = false,
            |e| e.entry = None,
            |e| e.args = vec![json!("12")],
            |e| e.result = json!(144.0),
            |e| e.stdout = "a".into(),
            |e| e.stderr = "a".into(),
            |e| e.truncated = true,
            |e| e.exit_code = Some(0),
            |e| e.fuel_consumed = Some(0),
            |e| e.module_sha256 = Some(String::new()),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(changed.result_hash(), base.result_hash(), "change {i}");
        }
    }

    #[test]
    fn large_integers_keep_every_digit_and_floats_their_bits() {
        let mut a = fib();
        let mut b = fib();
        a.result = json!(9_007_199_254_740_993_i64);
        b.result = json!(9_007_199_254_740_992_i64);
        assert_ne!(a.result_hash(), b.result_hash());
        a.result = json!(0.0);
        b.result = json!(-0.0);
        assert_ne!(a.result_hash(), b.result_hash());
    }

    #[test]
    fn object_members_are_hashed_in_key_order() {
        let mut a = fib();
        let mut b = fib();
        a.result = serde_json::from_str(r#"{"b":1,"a":[true,null]}"#).unwrap();
        b.result = serde_json::from_str(r#"{"a":[true,null],"b":1}"#).unwrap();
        assert_eq!(a.result_hash(), b.result_hash());
    }

    #[test]
    fn the_hash_reads_back_from_its_text() {
        let hash = fib().result_hash();
        let text = hash.to_string();
        assert_eq!(text.len(), 66);
        assert_eq!(text.parse::<ResultHash>().unwrap(), hash);
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(serde_json::from_str::<ResultHash>(&json).unwrap(), hash);
        assert!("0x12".parse::<ResultHash>().unwrap_err().contains("64 hex"));
    }
}
