//! The TLS client setup that every outbound HTTPS and WSS connection uses (the chain RPC, the
//! IPFS gateway), so that both trust the same roots and a private CA works for both.
//!
//! The roots are the system's store, read as `rustls-native-certs` (and so
//! `rustls-platform-verifier` on Linux) reads it: `SSL_CERT_FILE` or `SSL_CERT_DIR` when set
//! (they replace the store), else the distribution's bundle. A system with no store at all (the
//! `FROM scratch` images) gets the Mozilla roots compiled in, with a warning; an `SSL_CERT_FILE`
//! or `SSL_CERT_DIR` that yields no certificate is an error, never a silent fallback.
//!
//! # Layout
//! - [`client_config`]: the rustls configuration (ring provider, the roots above).
//! - [`http_client`]: a reqwest client builder that uses it.
//! - [`TlsError`]: why there are no roots.

use rustls::RootCertStore;
use std::sync::Arc;

/// The variables that replace the system's store (as OpenSSL reads them).
const CERT_VARS: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];

/// Where the trusted roots came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roots {
    /// The system's store, or `SSL_CERT_FILE` / `SSL_CERT_DIR`.
    System,
    /// The Mozilla roots compiled in: the system had no store and neither variable was set.
    Bundled,
}

/// Why no TLS configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `SSL_CERT_FILE` or `SSL_CERT_DIR` is set but yields no usable certificate.
    #[error(
        "{setting} gives no usable CA certificate{detail}; point SSL_CERT_FILE at a PEM bundle (with the public roots too, if public servers are reached) or unset it"
    )]
    NoCertificates {
        /// The variables as set, e.g. `SSL_CERT_FILE="/etc/ca.pem"`.
        setting: String,
        /// What went wrong reading them (`": ..."`), or nothing.
        detail: String,
    },
    /// rustls or reqwest refused the configuration (a bug, not a setting).
    #[error("setting up TLS: {0}")]
    Setup(String),
}

/// The rustls client configuration for HTTPS and WSS: the ring provider, TLS 1.2 and 1.3, the
/// roots described in the crate doc.
pub fn client_config() -> Result<rustls::ClientConfig, TlsError> {
    let setting: Vec<String> = CERT_VARS
        .iter()
        .filter_map(|var| Some(format!("{var}={:?}", std::env::var_os(var)?)))
        .collect();
    let (store, roots) = choose_roots(rustls_native_certs::load_native_certs(), &setting)?;
    if roots == Roots::Bundled {
        tracing::warn!(
            "the system has no CA store: trusting the bundled Mozilla roots; set SSL_CERT_FILE to trust a private CA"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(config)
}

/// A reqwest client builder whose TLS is [`client_config`]'s; the caller adds timeouts etc.
pub fn http_client() -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(client_config()?))
}

/// The root store from what the system gave (`native`) and the variables set (`setting`).
fn choose_roots(
    native: rustls_native_certs::CertificateResult,
    setting: &[String],
) -> Result<(RootCertStore, Roots), TlsError> {
    let mut store = RootCertStore::empty();
    let (_, ignored) = store.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::warn!(ignored, "CA certificates that do not parse were ignored");
    }
    for error in &native.errors {
        tracing::debug!(%error, "reading the system's CA store");
    }
    if !store.is_empty() {
        return Ok((store, Roots::System));
    }
    if !setting.is_empty() {
        let detail = native
            .errors
            .first()
            .map_or(String::new(), |e| format!(": {e}"));
        return Err(TlsError::NoCertificates {
            setting: setting.join(" "),
            detail,
        });
    }
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok((store, Roots::Bundled))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing() -> rustls_native_certs::CertificateResult {
        rustls_native_certs::CertificateResult::default()
    }

    #[test]
    fn a_system_without_a_store_gets_the_bundled_roots() {
        let (store, roots) = choose_roots(nothing(), &[]).unwrap();
        assert_eq!(roots, Roots::Bundled);
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len());
    }

    #[test]
    fn an_empty_ssl_cert_file_is_an_error_that_names_it_not_a_fallback() {
        let setting = ["SSL_CERT_FILE=\"/etc/empty.pem\"".to_string()];
        let err = choose_roots(nothing(), &setting).unwrap_err().to_string();
        assert!(err.contains("SSL_CERT_FILE=\"/etc/empty.pem\""), "{err}");
        assert!(err.contains("point SSL_CERT_FILE at a PEM bundle"), "{err}");
    }

    #[test]
    fn the_http_client_builds_without_a_process_wide_provider() {
        // reqwest's rustls-no-provider panics when it has to pick a provider itself.
        http_client().unwrap().build().unwrap();
    }
}
