//! What a node's refusal of a result transaction means: an account that cannot pay, a nonce
//! already used, a transaction the node has already, or anything else, told apart by the
//! JSON-RPC error code first.

use super::WriteError;
use alloy::primitives::Address;
use alloy::transports::TransportError;

/// "Transaction rejected" (EIP-1474): anvil 1.7.1 and reth answer a refused transaction so.
const TRANSACTION_REJECTED: i64 = -32003;
/// geth's code for nearly every refusal, funds and nonces alike.
const SERVER_ERROR: i64 = -32000;

/// The words a node puts in a `TRANSACTION_REJECTED` or `SERVER_ERROR` answer when the account
/// cannot pay: the transaction's cost (send), or gas limited by the balance (estimate).
const NO_FUNDS: [&str; 2] = ["insufficient funds", "gas required exceeds allowance"];

/// `error`, from sending or simulating a transaction from `from`, as a [`WriteError`].
///
/// Only an error response from the node can mean "no funds"; a transport failure (a refused
/// connection, a timeout) is [`WriteError::Node`] whatever its text.
pub(super) fn classify(error: &TransportError, from: Address) -> WriteError {
    let Some(payload) = error.as_error_resp() else {
        return WriteError::Node(error.to_string());
    };
    // The code alone cannot say "no funds": anvil answers -32003 for "Insufficient funds for gas
    // * price + value", for "Out of gas: gas required exceeds allowance: 549" and for "nonce too
    // low" alike, geth -32000 for all three, and neither sends `data` with them. Within those
    // two codes the message is all the node gives, so it is read there and nowhere else.
    let rejected = matches!(payload.code, TRANSACTION_REJECTED | SERVER_ERROR);
    let message = payload.message.to_ascii_lowercase();
    if rejected && NO_FUNDS.iter().any(|words| message.contains(words)) {
        WriteError::NoFunds {
            address: from,
            detail: payload.message.to_string(),
        }
    } else {
        WriteError::Node(error.to_string())
    }
}

/// The words of a refusal because the account's nonce has passed the transaction's: anvil
/// 1.7.1 and geth say "nonce too low" (reth too, with more words after).
const NONCE_USED: &str = "nonce too low";
/// The words of a refusal because the node holds this very transaction already: anvil 1.7.1
/// says "transaction already imported", geth and reth "already known".
const KNOWN: [&str; 2] = ["already imported", "already known"];

/// What a node's refusal of a transaction sent (again) at a nonce of ours says about that nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NonceRefusal {
    /// The nonce is used: one of our transactions at it was mined, or another one was.
    Used,
    /// The node holds this transaction already (in its pool, or mined).
    Known,
    /// Anything else (the node's words say nothing of the nonce).
    Other,
}

/// Reads `error`, from sending a transaction, for what it says about its nonce. As in
/// [`classify`], only an error response with a refusal code is read for words.
pub(super) fn nonce_refusal(error: &TransportError) -> NonceRefusal {
    let Some(payload) = error.as_error_resp() else {
        return NonceRefusal::Other;
    };
    if !matches!(payload.code, TRANSACTION_REJECTED | SERVER_ERROR) {
        return NonceRefusal::Other;
    }
    let message = payload.message.to_ascii_lowercase();
    if message.contains(NONCE_USED) {
        NonceRefusal::Used
    } else if KNOWN.iter().any(|words| message.contains(words)) {
        NonceRefusal::Known
    } else {
        NonceRefusal::Other
    }
}

/// [`classify`] for a contract call's error (simulating a batch); errors that did not come from
/// the node are [`WriteError::Node`].
pub(super) fn classify_call(error: &alloy::contract::Error, from: Address) -> WriteError {
    match error {
        alloy::contract::Error::TransportError(e) => classify(e, from),
        other => WriteError::Node(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::transports::{RpcError, TransportErrorKind};

    const FROM: Address = Address::repeat_byte(7);

    /// A node's error answer, as JSON-RPC carries it.
    fn answer(json: &str) -> TransportError {
        RpcError::ErrorResp(serde_json::from_str(json).expect("an error payload"))
    }

    fn is_no_funds(error: &TransportError) -> bool {
        matches!(classify(error, FROM), WriteError::NoFunds { address, .. } if address == FROM)
    }

    #[test]
    fn anvils_answers_to_an_account_without_funds_are_no_funds() {
        // Recorded from anvil 1.7.1: a send from an empty account, and an estimate with a fee
        // from an account whose balance pays for 549 gas.
        let send =
            answer(r#"{"code":-32003,"message":"Insufficient funds for gas * price + value"}"#);
        let estimate = answer(
            r#"{"code":-32003,"message":"Out of gas: gas required exceeds allowance: 549"}"#,
        );
        assert!(is_no_funds(&send));
        assert!(is_no_funds(&estimate));
    }

    #[test]
    fn geths_answer_to_an_account_without_funds_is_no_funds() {
        let send = answer(
            r#"{"code":-32000,"message":"insufficient funds for gas * price + value: balance 0, tx cost 42000"}"#,
        );
        assert!(is_no_funds(&send));
    }

    #[test]
    fn other_refusals_with_the_same_code_are_node_errors() {
        // Recorded from anvil 1.7.1: a nonce already used, a gas limit under 21,000, a revert.
        for json in [
            r#"{"code":-32003,"message":"nonce too low"}"#,
            r#"{"code":-32000,"message":"intrinsic gas too low"}"#,
            r#"{"code":3,"message":"execution reverted","data":"0x"}"#,
        ] {
            assert!(
                matches!(classify(&answer(json), FROM), WriteError::Node(_)),
                "{json}"
            );
        }
    }

    #[test]
    fn a_used_nonce_and_a_known_transaction_are_told_apart() {
        for (json, refusal) in [
            (
                r#"{"code":-32003,"message":"nonce too low"}"#,
                NonceRefusal::Used,
            ),
            (
                r#"{"code":-32000,"message":"nonce too low: next nonce 7, tx nonce 5"}"#,
                NonceRefusal::Used,
            ),
            (
                r#"{"code":-32003,"message":"transaction already imported"}"#,
                NonceRefusal::Known,
            ),
            (
                r#"{"code":-32000,"message":"already known"}"#,
                NonceRefusal::Known,
            ),
            (
                r#"{"code":-32003,"message":"replacement transaction underpriced"}"#,
                NonceRefusal::Other,
            ),
            (
                r#"{"code":-32602,"message":"nonce too low"}"#,
                NonceRefusal::Other,
            ),
        ] {
            assert_eq!(nonce_refusal(&answer(json)), refusal, "{json}");
        }
        let transport = TransportErrorKind::custom_str("nonce too low");
        assert_eq!(nonce_refusal(&transport), NonceRefusal::Other);
    }

    #[test]
    fn funds_words_outside_a_refusal_code_are_node_errors() {
        let other_code = answer(r#"{"code":-32602,"message":"insufficient funds"}"#);
        let transport = TransportErrorKind::custom_str("proxy said: insufficient funds");
        assert!(!is_no_funds(&other_code));
        assert!(!is_no_funds(&transport));
    }
}
