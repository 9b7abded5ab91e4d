//! Reaching a node: JSON-RPC over HTTP(S), or over a WebSocket (`ws://`, `wss://`) that also
//! pushes new heads. TLS is `wasm-exec-tls`'s for both (the system's store, `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` honoured, bundled roots where the system has none), as for the IPFS gateway.

use crate::registry::ChainError;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::pubsub::{ConnectionHandle, PubSubConnect};
use alloy::rpc::client::{ClientBuilder, RpcClient};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::ws::WsBackend;
use alloy::transports::{TransportErrorKind, TransportResult};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// First wait before reconnecting a dropped WebSocket; it doubles up to alloy's cap of 30 s.
const RECONNECT_BASE: Duration = Duration::from_millis(250);
/// A ping goes out after this long without traffic; no pong by the next one drops the socket.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// How a node is reached, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `http://` or `https://`: requests only; new heads are polled.
    Http,
    /// `ws://` or `wss://`: requests on one socket, new heads pushed (`eth_subscribe`).
    WebSocket,
}

impl Transport {
    /// The transport `url` names, or why it names none.
    pub fn of(url: &str) -> Result<Self, ChainError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("http" | "https") => Ok(Self::Http),
            Some("ws" | "wss") => Ok(Self::WebSocket),
            _ => Err(ChainError::Url(format!(
                "the RPC URL \"{url}\" is not http://, https://, ws:// or wss://; give the node's JSON-RPC endpoint, e.g. http://127.0.0.1:8545"
            ))),
        }
    }
}

/// A provider over HTTP or HTTPS that signs with `signer`.
///
/// Nonces are asked of the node for every transaction (alloy's default caches them, and a send
/// that fails after taking one leaves a gap that stalls every later transaction), gas is
/// estimated, and the chain id is read from the node.
pub fn connect_http(url: &str, signer: PrivateKeySigner) -> Result<DynProvider, ChainError> {
    if Transport::of(url)? != Transport::Http {
        return Err(ChainError::Url(format!(
            "the RPC URL \"{url}\" is a WebSocket URL where an http:// or https:// one is needed"
        )));
    }
    let parsed = url
        .parse()
        .map_err(|e| ChainError::Url(format!("the RPC URL \"{url}\" does not parse: {e}")))?;
    let client = wasm_exec_tls::http_client()
        .map_err(|e| ChainError::Tls(format!("for {url}: {e}")))?
        .build()
        .map_err(|e| ChainError::Tls(format!("building the HTTP client for {url}: {e}")))?;
    Ok(with_fillers(
        RpcClient::new_http_with_client(client, parsed),
        signer,
    ))
}

/// A provider over whichever transport `url` names, signing with `signer`, like
/// [`connect_http`]. A WebSocket is opened here (so the node must be up) and reopened with
/// backoff, for as long as the provider lives, whenever it drops; requests made meanwhile wait
/// and subscriptions are renewed.
pub async fn connect(url: &str, signer: PrivateKeySigner) -> Result<DynProvider, ChainError> {
    match Transport::of(url)? {
        Transport::Http => connect_http(url, signer),
        Transport::WebSocket => {
            let socket = Socket::new(url)?;
            let client = ClientBuilder::default()
                .pubsub(socket)
                .await
                .map_err(|e| ChainError::Other(format!("opening a WebSocket to {url}: {e}")))?;
            Ok(with_fillers(client, signer))
        }
    }
}

/// `client` with the fillers every provider here gets (gas estimated, nonce and chain id from
/// the node) and `signer`.
fn with_fillers(client: RpcClient, signer: PrivateKeySigner) -> DynProvider {
    ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(signer)
        .connect_client(client)
        .erased()
}

/// A WebSocket to the node, opened (and reopened) with our TLS configuration.
struct Socket {
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Socket {
    fn new(url: &str) -> Result<Self, ChainError> {
        url.into_client_request().map_err(|e| {
            ChainError::Url(format!("the RPC URL \"{url}\" is not a WebSocket URL: {e}"))
        })?;
        let tls = if url.to_ascii_lowercase().starts_with("wss://") {
            let config = wasm_exec_tls::client_config()
                .map_err(|e| ChainError::Tls(format!("for {url}: {e}")))?;
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(Self {
            url: url.to_string(),
            tls,
        })
    }
}

impl PubSubConnect for Socket {
    fn is_local(&self) -> bool {
        alloy::transports::utils::guess_local_url(&self.url)
    }

    async fn connect(&self) -> TransportResult<ConnectionHandle> {
        let request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(TransportErrorKind::custom)?;
        let connector = match &self.tls {
            Some(config) => Connector::Rustls(config.clone()),
            None => Connector::Plain,
        };
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
                .await
                .map_err(TransportErrorKind::custom)?;
        let (handle, interface) = ConnectionHandle::new();
        WsBackend::from_socket(socket, interface, KEEPALIVE).spawn();
        Ok(handle
            .with_max_retries(u32::MAX)
            .with_retry_interval(RECONNECT_BASE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> PrivateKeySigner {
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
            .parse()
            .unwrap()
    }

    #[test]
    fn the_scheme_names_the_transport_and_anything_else_is_refused_with_an_example() {
        assert_eq!(
            Transport::of("http://127.0.0.1:8545").unwrap(),
            Transport::Http
        );
        assert_eq!(
            Transport::of("HTTPS://rpc.example").unwrap(),
            Transport::Http
        );
        assert_eq!(
            Transport::of("ws://127.0.0.1:8545").unwrap(),
            Transport::WebSocket
        );
        assert_eq!(
            Transport::of("wss://rpc.example/v3/key").unwrap(),
            Transport::WebSocket
        );
        for url in [
            "127.0.0.1:8545",
            "ipc:///tmp/anvil.ipc",
            "ftp://rpc.example",
        ] {
            let err = Transport::of(url).unwrap_err().to_string();
            assert!(err.contains("e.g. http://127.0.0.1:8545"), "{url}: {err}");
        }
    }

    #[test]
    fn connect_http_takes_only_http_urls() {
        assert!(connect_http("http://127.0.0.1:8545", signer()).is_ok());
        assert!(connect_http("https://rpc.example", signer()).is_ok());
        let err = connect_http("ws://127.0.0.1:8545", signer()).unwrap_err();
        assert!(err.to_string().contains("WebSocket URL"), "{err}");
    }

    #[tokio::test]
    async fn a_websocket_to_nothing_fails_with_the_url() {
        // Port 9 (discard) on loopback: nothing listens there.
        let err = connect("ws://127.0.0.1:9", signer()).await.unwrap_err();
        assert!(err.to_string().contains("ws://127.0.0.1:9"), "{err}");
    }
}
