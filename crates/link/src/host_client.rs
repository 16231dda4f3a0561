//! A host's client of the other site's host: the control plane asking the
//! agent of the site it does not run to act (`POST /v1/host`, JSON in and
//! out). Mutual TLS with this host's certificate, as for a remote vault;
//! blocking (its own small runtime), for the control plane's job threads.

use std::net::SocketAddr;
use std::time::Duration;

use crate::identity::{host_name, Identity};
use crate::remote::chain;
use crate::vault_service::WireError;

/// The route of a host's acts.
pub const HOST_CALL: &str = "/v1/host";

/// How long the other host has to take a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HostClient {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: reqwest::Url,
    /// `SITE.sites.standby at ADDRESS`, for messages.
    peer: String,
}

/// A call that failed: the host unreachable (or the link broke during the
/// call), or an error it answered with its stable code.
#[derive(Debug)]
pub enum HostCallError {
    Unreachable(String),
    Answered { code: String, message: String },
}

impl HostClient {
    /// A client of the host of `site` at `address`, as `identity`.
    pub fn new(address: SocketAddr, site: &str, identity: &Identity) -> Result<HostClient, String> {
        let tls = identity.client_config().map_err(|e| e.to_string())?;
        let name = host_name(site);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("standby-host-client")
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime for the host client: {e}"))?;
        let client = {
            let _entered = runtime.enter();
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .resolve(&name, address)
                .http2_prior_knowledge()
                .http2_keep_alive_interval(Duration::from_secs(5))
                .http2_keep_alive_timeout(Duration::from_secs(10))
                .http2_keep_alive_while_idle(true)
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .no_proxy()
                .build()
                .map_err(|e| format!("a client for the {site} site's host at {address}: {e}"))?
        };
        let url = reqwest::Url::parse(&format!("https://{name}:{}{HOST_CALL}", address.port()))
            .map_err(|e| format!("{address}: {e}"))?;
        Ok(HostClient { runtime, client, url, peer: format!("the {site} site's host at {address}") })
    }

    /// Sends `body`; the answer, given within `timeout`, unless `gone`
    /// completes first (the host was found dead meanwhile: a call on a
    /// connection to a dead host would otherwise wait out the keep-alive).
    pub fn call(
        &self,
        body: &serde_json::Value,
        timeout: Duration,
        gone: impl std::future::Future<Output = ()>,
    ) -> Result<serde_json::Value, HostCallError> {
        self.runtime.block_on(async {
            tokio::select! {
                answer = self.send(body, timeout) => answer,
                () = gone => Err(HostCallError::Unreachable(format!("{}: found dead during the call", self.peer))),
            }
        })
    }

    async fn send(&self, body: &serde_json::Value, timeout: Duration) -> Result<serde_json::Value, HostCallError> {
        let unreachable = |e: reqwest::Error| HostCallError::Unreachable(format!("{}: {}", self.peer, chain(&e)));
        let response =
            self.client.post(self.url.clone()).json(body).timeout(timeout).send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| HostCallError::Answered {
                code: "bad_answer".into(),
                message: format!("{} answered what this standby cannot read: {e}", self.peer),
            });
        }
        let wire: WireError = serde_json::from_slice(&bytes)
            .unwrap_or(WireError { code: "unknown".into(), message: format!("{} answered {status}", self.peer) });
        Err(HostCallError::Answered { code: wire.code, message: wire.message })
    }
}
