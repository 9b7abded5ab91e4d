//! Signed receipts: an operator's EIP-712 signature over what it ran and what came out (the task,
//! the module's CID, the input's hash, the limits, the `result_hash`, the fuel), so anyone can
//! check its claim with any Ethereum library and rerun the task (`coordinator verify`).
//!
//! The domain is `{name: "wasm-exec receipt", version: "1"}`, with no chain id: `origin` says
//! where the task came from (`api`, or `eip155:<chain id>` for a task from a registry).

use alloy::primitives::{Address, B256, Signature, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};
use serde_json::{Value, json};

/// The signed struct, as EIP-712 types it.
mod typed {
    #![allow(missing_docs)]
    alloy::sol! {
        #[derive(Debug, PartialEq, Eq)]
        struct Receipt {
            string origin;
            string taskId;
            string moduleCid;
            string entry;
            bytes32 inputHash;
            uint64 fuelLimit;
            uint64 maxMemoryMb;
            uint64 timeoutMs;
            uint64 maxOutputBytes;
            bytes32 resultHash;
            uint64 fuelConsumed;
        }
    }
}

/// The signed struct; docs/RESULT_HASH.md ("Receipts") says what each field holds.
pub use typed::Receipt;

/// Why a receipt could not be made, read or checked.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The JSON is not a receipt: names the field.
    #[error("not a receipt: {0}")]
    Malformed(String),
    /// The signature does not recover to an address.
    #[error("the signature does not verify: {0}")]
    BadSignature(String),
    /// The signer could not sign.
    #[error("signing the receipt: {0}")]
    Signing(String),
}

/// The EIP-712 domain of every receipt.
pub fn domain() -> Eip712Domain {
    eip712_domain! { name: "wasm-exec receipt", version: "1", }
}

/// A receipt with its input document (so it can be rerun) and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// What was signed.
    pub receipt: Receipt,
    /// The input document's text, whose keccak-256 is `receipt.inputHash`.
    pub input: String,
    /// The address that signed, as the receipt claims it (checked by [`SignedReceipt::verify`]).
    pub signer: Address,
    /// The 65-byte signature (r, s, v) over the EIP-712 signing hash.
    pub signature: Signature,
}

impl SignedReceipt {
    /// Signs `receipt` with `key`; `input` must be the document `inputHash` is the hash of.
    pub fn sign(
        key: &PrivateKeySigner,
        receipt: Receipt,
        input: String,
    ) -> Result<Self, ReceiptError> {
        let hash = receipt.eip712_signing_hash(&domain());
        let signature = key
            .sign_hash_sync(&hash)
            .map_err(|e| ReceiptError::Signing(e.to_string()))?;
        Ok(Self {
            receipt,
            input,
            signer: key.address(),
            signature,
        })
    }

    /// Recovers the signer from the signature and checks it is the claimed `signer` and that
    /// `input` is what `inputHash` names; returns the signer.
    pub fn verify(&self) -> Result<Address, ReceiptError> {
        let hash = self.receipt.eip712_signing_hash(&domain());
        let recovered = self
            .signature
            .recover_address_from_prehash(&hash)
            .map_err(|e| ReceiptError::BadSignature(e.to_string()))?;
        if recovered != self.signer {
            return Err(ReceiptError::BadSignature(format!(
                "signed by {recovered}, not by the claimed signer {}",
                self.signer
            )));
        }
        if keccak256(self.input.as_bytes()) != self.receipt.inputHash {
            return Err(ReceiptError::Malformed(
                "input: its keccak-256 is not message.inputHash".into(),
            ));
        }
        Ok(recovered)
    }

    /// The receipt as JSON, in the shape of an `eth_signTypedData_v4` request plus `input`,
    /// `signer` and `signature`; 64-bit integers as decimal strings (JSON numbers lose them).
    pub fn to_json(&self) -> Value {
        let r = &self.receipt;
        json!({
            "domain": {"name": "wasm-exec receipt", "version": "1"},
            "primaryType": "Receipt",
            "message": {
                "origin": r.origin,
                "taskId": r.taskId,
                "moduleCid": r.moduleCid,
                "entry": r.entry,
                "inputHash": r.inputHash.to_string(),
                "fuelLimit": r.fuelLimit.to_string(),
                "maxMemoryMb": r.maxMemoryMb.to_string(),
                "timeoutMs": r.timeoutMs.to_string(),
                "maxOutputBytes": r.maxOutputBytes.to_string(),
                "resultHash": r.resultHash.to_string(),
                "fuelConsumed": r.fuelConsumed.to_string(),
            },
            "input": self.input,
            "signer": self.signer.to_string(),
            "signature": format!("0x{}", alloy::primitives::hex::encode(self.signature.as_bytes())),
        })
    }

    /// Reads a receipt from the JSON of [`SignedReceipt::to_json`]; the error names the field.
    pub fn from_json(value: &Value) -> Result<Self, ReceiptError> {
        let m = &value["message"];
        let text = |v: &Value, name: &str| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ReceiptError::Malformed(format!("{name}: expected a string")))
        };
        let field = |name: &str| text(&m[name], &format!("message.{name}"));
        let parse_err = |name: &str| {
            let name = name.to_owned();
            move |e: &dyn std::fmt::Display| ReceiptError::Malformed(format!("{name}: {e}"))
        };
        let bytes32 = |name: &str| -> Result<B256, ReceiptError> {
            field(name)?
                .parse()
                .map_err(|e| parse_err(&format!("message.{name}"))(&e))
        };
        let uint64 = |name: &str| -> Result<u64, ReceiptError> {
            field(name)?
                .parse()
                .map_err(|e| parse_err(&format!("message.{name}"))(&e))
        };
        let receipt = Receipt {
            origin: field("origin")?,
            taskId: field("taskId")?,
            moduleCid: field("moduleCid")?,
            entry: field("entry")?,
            inputHash: bytes32("inputHash")?,
            fuelLimit: uint64("fuelLimit")?,
            maxMemoryMb: uint64("maxMemoryMb")?,
            timeoutMs: uint64("timeoutMs")?,
            maxOutputBytes: uint64("maxOutputBytes")?,
            resultHash: bytes32("resultHash")?,
            fuelConsumed: uint64("fuelConsumed")?,
        };
        let signer = text(&value["signer"], "signer")?
            .parse()
            .map_err(|e| parse_err("signer")(&e))?;
        let signature = text(&value["signature"], "signature")?
            .parse()
            .map_err(|e| parse_err("signature")(&e))?;
        Ok(Self {
            receipt,
            input: text(&value["input"], "input")?,
            signer,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> Receipt {
        Receipt {
            origin: "api".into(),
            taskId: "t1".into(),
            moduleCid: "fib.wasm".into(),
            entry: "fib".into(),
            inputHash: keccak256(br#"{"args":[12]}"#),
            fuelLimit: 1_000_000,
            maxMemoryMb: 256,
            timeoutMs: 20_000,
            maxOutputBytes: 1 << 20,
            resultHash: B256::repeat_byte(7),
            fuelConsumed: u64::MAX,
        }
    }

    #[test]
    fn a_signed_receipt_verifies_after_a_json_round_trip() {
        let key = PrivateKeySigner::random();
        let signed =
            SignedReceipt::sign(&key, receipt(), r#"{"args":[12]}"#.into()).expect("signed");
        let back = SignedReceipt::from_json(&signed.to_json()).expect("read back");
        assert_eq!(back, signed);
        assert_eq!(back.verify().expect("verifies"), key.address());
        assert_eq!(
            signed.to_json()["message"]["fuelConsumed"],
            "18446744073709551615"
        );
    }

    #[test]
    fn a_changed_field_or_input_fails() {
        let key = PrivateKeySigner::random();
        let signed =
            SignedReceipt::sign(&key, receipt(), r#"{"args":[12]}"#.into()).expect("signed");
        let mut changed = signed.clone();
        changed.receipt.resultHash = B256::repeat_byte(8);
        let err = changed.verify().unwrap_err().to_string();
        assert!(err.contains("not by the claimed signer"), "{err}");
        let mut other_input = signed.clone();
        other_input.input = r#"{"args":[13]}"#.into();
        let err = other_input.verify().unwrap_err().to_string();
        assert!(err.contains("inputHash"), "{err}");
        let mut json = signed.to_json();
        json["message"]["timeoutMs"] = json!(5);
        let err = SignedReceipt::from_json(&json).unwrap_err().to_string();
        assert!(err.contains("message.timeoutMs"), "{err}");
    }
}
