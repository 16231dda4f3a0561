//! An operator's (or a joining host's) client of a host's listener: TLS
//! that trusts only the deployment's CA and expects the named site's host,
//! a bearer token on every request, JSON answers. Blocking (its own small
//! runtime), for the command line.

use std::net::SocketAddr;
use std::time::Duration;

use crate::identity::{host_name, operator_client_config};
use crate::remote::chain;
use crate::token::Token;
use crate::vault_service::WireError;

pub struct ControlClient {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: reqwest::Url,
    token: Token,
    /// The URL as the operator gave it, for messages.
    url: String,
}

/// A request that failed: the listener unreachable or refusing TLS, or an
/// error answered with its stable code.
#[derive(Debug)]
pub enum ClientError {
    Unreachable(String),
    Answered { status: u16, code: String, message: String },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(e) => f.write_str(e),
            ClientError::Answered { message, code, .. } => write!(f, "{message} ({code})"),
        }
    }
}

/// `https://ADDRESS:PORT` (the trailing slash optional) as a socket address.
pub fn parse_control_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("control URL {url} is not https://ADDRESS:PORT (the listener speaks TLS only)"))?;
    rest.trim_end_matches('/')
        .parse()
        .map_err(|_| format!("control URL {url}: '{}' is not an IP address and port", rest.trim_end_matches('/')))
}

impl ControlClient {
    /// A client of the host of `site` at `url`, checked against `ca_pem`.
    pub fn new(url: &str, site: &str, ca_pem: &str, token: Token) -> Result<ControlClient, String> {
        let address = parse_control_url(url)?;
        let tls =
            operator_client_config(ca_pem, std::path::Path::new("the deployment's CA")).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime for the client: {e}"))?;
        let name = host_name(site);
        let client = {
            let _entered = runtime.enter();
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .resolve(&name, address)
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .no_proxy()
                .build()
                .map_err(|e| format!("a client for {url}: {e}"))?
        };
        let base = reqwest::Url::parse(&format!("https://{name}:{}/", address.port())).map_err(|e| e.to_string())?;
        Ok(ControlClient { runtime, client, base, token, url: url.to_string() })
    }

    /// POSTs `body` as JSON to `route`; the answer's JSON.
    pub fn post<T: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        route: &str,
        body: &T,
    ) -> Result<A, ClientError> {
        let url = self.base.join(route.trim_start_matches('/')).expect("a route joins");
        self.send(self.client.post(url).json(body))
    }

    /// GETs `route`; the answer's JSON.
    pub fn get<A: serde::de::DeserializeOwned>(&self, route: &str) -> Result<A, ClientError> {
        let url = self.base.join(route.trim_start_matches('/')).expect("a route joins");
        self.send(self.client.get(url))
    }

    fn send<A: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<A, ClientError> {
        self.runtime.block_on(async {
            let response = request
                .bearer_auth(self.token.secret())
                .send()
                .await
                .map_err(|e| ClientError::Unreachable(format!("cannot reach {}: {}", self.url, chain(&e))))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| ClientError::Unreachable(format!("{} broke off its answer: {}", self.url, chain(&e))))?;
            if status.is_success() {
                return serde_json::from_slice(&body).map_err(|e| ClientError::Answered {
                    status: status.as_u16(),
                    code: "bad_answer".into(),
                    message: format!("{} answered what this standby cannot read: {e}", self.url),
                });
            }
            let wire: WireError = serde_json::from_slice(&body)
                .unwrap_or(WireError { code: "unknown".into(), message: format!("{} answered {status}", self.url) });
            Err(ClientError::Answered { status: status.as_u16(), code: wire.code, message: wire.message })
        })
    }
}
