//! A blocking client for the daemon's API: over its unix socket, or over
//! TLS to a control plane on another host (`--control URL`, with an
//! operator token). HTTP/1.1 (hyper) on a small runtime of its own, one
//! connection per request, typed requests and answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use standby_lifecycle::Command;

use crate::error::ErrorBody;
use crate::routes;
use crate::types::*;

/// How long one request may take: the longest the daemon answers in is a
/// machine stop (the guest's power-down timeout, then a forced stop).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest answer read (a job list of a big deployment fits many times).
pub const ANSWER_BYTES_MAX: usize = 64 << 20;

/// Why a request got no answer it could use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers: no daemon runs (the socket), or the control
    /// plane's host cannot be reached or its TLS handshake failed.
    #[error("no daemon answers on {endpoint}: {source}")]
    Unreachable { endpoint: String, source: std::io::Error },
    /// The daemon answered with an error.
    #[error("{body}")]
    Api { status: u16, body: ErrorBody },
    /// The answer was not what the API says (a daemon of another version, a
    /// connection cut mid-answer).
    #[error("the daemon's answer could not be read: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The caller can fix it (exit 2): a refusal, an unknown name, no daemon.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Api { body, .. } => body.code.is_bad_input(),
            ClientError::Protocol(_) => false,
        }
    }
}

/// How long reaching a control plane over the network may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How requests reach the daemon.
enum Transport {
    Unix(PathBuf),
    Tls {
        /// As the operator named it, for messages.
        url: String,
        address: std::net::SocketAddr,
        /// The name the server's certificate must carry.
        server_name: rustls::pki_types::ServerName<'static>,
        config: std::sync::Arc<rustls::ClientConfig>,
        /// The operator's bearer token.
        token: String,
    },
}

pub struct Client {
    transport: Transport,
    runtime: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds (it creates no threads)")
}

impl Client {
    /// A client of the daemon listening on unix socket `socket`.
    pub fn unix(socket: &Path) -> Client {
        Client { transport: Transport::Unix(socket.to_path_buf()), runtime: runtime() }
    }

    /// A client of the control plane at `address` (named `url` in
    /// messages) over TLS with `config` (which trusts the deployment's CA
    /// only and offers HTTP/1.1), whose certificate names `server_name`;
    /// every request carries `token`.
    pub fn tls(
        url: &str,
        address: std::net::SocketAddr,
        server_name: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
        token: String,
    ) -> Result<Client, String> {
        let server_name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("'{server_name}' cannot name a server: {e}"))?;
        let transport = Transport::Tls { url: url.to_string(), address, server_name, config, token };
        Ok(Client { transport, runtime: runtime() })
    }

    /// Whether the daemon is on another host.
    pub fn is_remote(&self) -> bool {
        matches!(self.transport, Transport::Tls { .. })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request(http::Method::GET, path, Bytes::new())
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("requests serialise");
        self.request(http::Method::POST, path, Bytes::from(body))
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request(http::Method::DELETE, path, Bytes::new())
    }

    fn request<T: DeserializeOwned>(&self, method: http::Method, path: &str, body: Bytes) -> Result<T, ClientError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "standby")
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Transport::Tls { token, .. } = &self.transport {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request =
            request.body(Full::new(body)).map_err(|e| ClientError::Protocol(format!("request {path}: {e}")))?;
        let answer = self.runtime.block_on(async {
            tokio::time::timeout(REQUEST_TIMEOUT, send(&self.transport, request)).await.unwrap_or_else(|_| {
                Err(ClientError::Protocol(format!("no answer to {path} within {} s", REQUEST_TIMEOUT.as_secs())))
            })
        });
        let (status, bytes) = answer?;
        if status == 200 {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("{path} answered JSON this version does not read ({e})")));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(_) => Err(ClientError::Protocol(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))),
        }
    }

    pub fn health(&self) -> Result<Health, ClientError> {
        self.get(routes::HEALTH)
    }

    pub fn machines(&self) -> Result<MachineList, ClientError> {
        self.get(routes::MACHINES)
    }

    pub fn add_machine(&self, machine: &AddMachine) -> Result<MachineView, ClientError> {
        self.post(routes::MACHINES, machine)
    }

    pub fn start(&self, name: &str) -> Result<Started, ClientError> {
        self.post(&routes::machine(name, "start"), &serde_json::json!({}))
    }

    pub fn stop(&self, name: &str, request: &StopRequest) -> Result<Stopped, ClientError> {
        self.post(&routes::machine(name, "stop"), request)
    }

    /// Replaces machine `name`'s NICs.
    pub fn set_nics(&self, name: &str, request: &SetNics) -> Result<MachineView, ClientError> {
        self.post(&routes::machine(name, "nics"), request)
    }

    /// Lifecycle command `command` on machine `name`, started as a job
    /// (its flags in `request`).
    pub fn act<B: Serialize>(&self, name: &str, command: Command, request: &B) -> Result<JobStarted, ClientError> {
        self.post(&routes::machine(name, routes::operation(command)), request)
    }

    pub fn points(&self, name: &str) -> Result<MachinePoints, ClientError> {
        self.get(&routes::machine(name, "points"))
    }

    pub fn status(&self, name: Option<&str>) -> Result<StatusList, ClientError> {
        match name {
            Some(name) => self.get(&routes::status_of(name)),
            None => self.get(routes::STATUS),
        }
    }

    pub fn jobs(&self) -> Result<JobList, ClientError> {
        self.get(routes::JOBS)
    }

    pub fn job(&self, id: JobId) -> Result<Job, ClientError> {
        self.get(&routes::job(id))
    }

    pub fn sites(&self) -> Result<SiteList, ClientError> {
        self.get(routes::SITES)
    }

    pub fn groups(&self) -> Result<GroupList, ClientError> {
        self.get(routes::GROUPS)
    }

    pub fn group(&self, name: &str) -> Result<GroupView, ClientError> {
        self.get(&routes::group(name))
    }

    pub fn plans(&self) -> Result<PlanList, ClientError> {
        self.get(routes::PLANS)
    }

    pub fn plan(&self, name: &str) -> Result<PlanView, ClientError> {
        self.get(&routes::plan(name))
    }

    pub fn create_plan(&self, source: &PlanSource) -> Result<PlanView, ClientError> {
        self.post(routes::PLANS, source)
    }

    pub fn validate_plan(&self, source: &PlanSource) -> Result<PlanView, ClientError> {
        self.post(routes::PLAN_VALIDATE, source)
    }

    /// A plan's lifecycle command (`routes::operation`) or `routes::RESUME`.
    pub fn plan_job(&self, name: &str, operation: &str, request: &PlanJobRequest) -> Result<JobStarted, ClientError> {
        self.post(&routes::plan_operation(name, operation), request)
    }

    pub fn schedule_drills(&self, name: &str, schedule: &PlanSchedule) -> Result<PlanView, ClientError> {
        self.post(&routes::plan_operation(name, routes::SCHEDULE), schedule)
    }

    pub fn delete_plan(&self, name: &str) -> Result<PlanDeleted, ClientError> {
        self.delete(&routes::plan(name))
    }

    pub fn policies(&self) -> Result<PolicyList, ClientError> {
        self.get(routes::POLICIES)
    }

    pub fn add_policy(&self, policy: &Policy) -> Result<Policy, ClientError> {
        self.post(routes::POLICIES, policy)
    }

    pub fn create_token(&self, request: &TokenRequest) -> Result<NewToken, ClientError> {
        self.post(routes::TOKENS, request)
    }

    pub fn tokens(&self) -> Result<TokenList, ClientError> {
        self.get(routes::TOKENS)
    }

    pub fn revoke_token(&self, name: &str) -> Result<TokenRevoked, ClientError> {
        self.delete(&routes::token(name))
    }

    pub fn alerts(&self, all: bool) -> Result<AlertList, ClientError> {
        self.get(&format!("{}?all={all}", routes::ALERTS))
    }

    pub fn audit(&self, limit: u32) -> Result<AuditList, ClientError> {
        self.get(&format!("{}?limit={limit}", routes::AUDIT))
    }
}

async fn send(transport: &Transport, request: http::Request<Full<Bytes>>) -> Result<(u16, Bytes), ClientError> {
    match transport {
        Transport::Unix(socket) => {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|source| ClientError::Unreachable { endpoint: socket.display().to_string(), source })?;
            exchange(stream, request).await
        }
        Transport::Tls { url, address, server_name, config, .. } => {
            let unreachable = |source| ClientError::Unreachable { endpoint: url.clone(), source };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 5 s")))
                .map_err(unreachable)?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name.clone(), stream))
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake within 5 s"))
                })
                .map_err(unreachable)?;
            exchange(stream, request).await
        }
    }
}

/// One request and its answer on a fresh connection.
async fn exchange<Io>(stream: Io, request: http::Request<Full<Bytes>>) -> Result<(u16, Bytes), ClientError>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: &dyn std::fmt::Display| ClientError::Protocol(e.to_string());
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| protocol(&e))?;
    let connection = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| protocol(&e))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), ANSWER_BYTES_MAX).collect().await.map_err(|e| protocol(&e))?;
    drop(sender);
    let _ = connection.await;
    Ok((status, body.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_daemon_is_unreachable_and_the_callers_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::unix(&dir.path().join("standby.sock"));
        let error = client.health().unwrap_err();
        assert!(matches!(error, ClientError::Unreachable { .. }) && error.is_bad_input(), "{error}");
    }
}
