//! What a webhook request carries besides its body: the HMAC-SHA256 signature a receiver checks
//! and the idempotency key it deduplicates by; and the check of a `callback_url` at submission.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The time
/// is signed with the body, so a receiver can refuse an old request replayed.
pub const SIGNATURE_HEADER: &str = "X-Wasm-Exec-Signature";

/// The idempotency key header: the same on every attempt for one task, so a receiver that saw it
/// already (an answer lost, a restart after a 2xx not yet recorded) drops the repeat.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Longest `callback_url` accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// The signature header's value for `body` sent at `unix_s` under `secret`.
pub fn signature(secret: &[u8], unix_s: u64, body: &[u8]) -> String {
    // HMAC accepts a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(unix_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_s},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The idempotency key of task `task_id`'s delivery: `whk_` and the first 128 bits of the
/// SHA-256 of its id (stable, and a valid header value whatever the id holds).
pub fn idempotency_key(task_id: &str) -> String {
    let digest = Sha256::digest(task_id.as_bytes());
    format!("whk_{}", hex::encode(&digest[..16]))
}

/// Checks a submitted `callback_url`: at most [`MAX_URL_LEN`] bytes, an absolute `http` or
/// `https` URL with a host, and no user name or password (they would be stored and shown with
/// the task). Returns the message naming the fix when it is refused.
///
/// Private and loopback addresses are not refused: the coordinator posts from the operator's
/// network, and a receiver beside it is a common setup. An operator who takes tasks from
/// untrusted tenants confines where the coordinator may connect with an egress policy (a
/// Kubernetes NetworkPolicy); redirects are never followed, so a public URL cannot bounce a
/// delivery to an internal one.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "callback_url is {} bytes; the limit is {MAX_URL_LEN}",
            url.len()
        ));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!("callback_url is not an absolute URL ({e}); e.g. https://host/hook")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "callback_url has scheme \"{}\"; only http and https are posted to",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("callback_url has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "callback_url carries a user name or password, which would be stored and shown with \
             the task; authenticate the webhook by its signature header instead"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_time_dot_body() {
        // Computed apart: python3 -c "import hmac, hashlib; print(hmac.new(b'Jefe',
        // b'1700000000.{\"task_id\":\"t1\"}', hashlib.sha256).hexdigest())"
        let sig = signature(b"Jefe", 1_700_000_000, br#"{"task_id":"t1"}"#);
        assert_eq!(
            sig,
            "t=1700000000,v1=fac9c18bf6d4840936945eeaad2f6c617a1685ff4f97680be3078aaac9322943"
        );
        assert_ne!(
            sig,
            signature(b"Jefe", 1_700_000_001, br#"{"task_id":"t1"}"#)
        );
        assert_ne!(
            sig,
            signature(b"Jeff", 1_700_000_000, br#"{"task_id":"t1"}"#)
        );
    }

    #[test]
    fn a_callback_url_must_be_http_or_https_bounded_and_without_credentials() {
        assert_eq!(check_url("http://127.0.0.1:8080/hook"), Ok(()));
        assert_eq!(check_url("https://example.com/a?b=c"), Ok(()));
        for (bad, says) in [
            ("ftp://example.com/x", "scheme \"ftp\""),
            ("file:///etc/passwd", "scheme \"file\""),
            ("/relative", "not an absolute URL"),
            ("https://user:pw@example.com/", "user name or password"),
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long).unwrap_err().contains("the limit is 2048"));
    }

    #[test]
    fn the_idempotency_key_is_stable_per_task_and_a_header_value() {
        assert_eq!(idempotency_key("t1"), idempotency_key("t1"));
        assert_ne!(idempotency_key("t1"), idempotency_key("t2"));
        let key = idempotency_key("a\nb\"c");
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }
}
