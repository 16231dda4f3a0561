//! The TLS listener of a host in a deployment with a host per site
//! (`[host]` in the config): its site's vault served to the other site's
//! host (`standby_link::vault_service`, hosts only, held to the site's
//! `max_bandwidth`, read again from the config every few seconds); on
//! the control plane's host the join of the other site's host and the API
//! for operators, on the other the control plane's acts
//! (`host_service.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use standby_link::identity::{Identity, TLS_DIR};
use standby_link::join::{JoinRequest, JOIN};
use standby_link::vault_service::{self, Bandwidth, WireError};
use standby_link::{Refusals, Token};

use crate::config::HostConfig;
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::state::TokenRole;

/// How often the bandwidth limit is read again from the config.
const LIMITS_RELOAD: Duration = Duration::from_secs(2);

/// What the control plane's host serves beside its vault: the join of the
/// other site's host, and the API to operators' tokens.
pub(super) fn control_routes(deployment: &Deployment, api: Router) -> Router {
    let api = super::access::with_tokens(api, deployment.home.clone());
    Router::new().route(JOIN, post(join)).with_state(deployment.home.clone()).merge(api)
}

/// Binds the listener of `host` (before the daemon says it serves, so a
/// taken address is an error at start) and returns what serves it: the
/// site's vault and `routes`.
pub(super) async fn bind(
    deployment: &Deployment,
    host: &HostConfig,
    routes: Router,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, ControlError> {
    let identity = Identity::load(&deployment.home.join(TLS_DIR)).map_err(|e| ControlError::Failed(e.to_string()))?;
    let tls = identity.server_config().map_err(|e| ControlError::Failed(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(host.listen).await.map_err(|e| {
        ControlError::Refused(format!("cannot listen at {} ({e}); is another daemon serving there?", host.listen))
    })?;
    let vault = deployment.vault_at(host.site);
    let backend = standby_link::open_location(&vault.location)
        .map_err(|e| ControlError::Failed(format!("the {} site's vault {vault}: {e}", host.site)))?;
    let bandwidth = Arc::new(Bandwidth::default());
    let app = vault_service::routes(backend, bandwidth.clone()).merge(routes);
    let refusals = Arc::new(Refusals::default());
    eprintln!("standby: the {} site's host listens at {} (TLS)", host.site, host.listen);
    let (home, site) = (deployment.home.clone(), host.site);
    tokio::spawn(keep_limits(home, site, bandwidth));
    Ok(standby_link::server::serve(listener, tls, app, refusals, std::future::pending()))
}

/// Sets the site's bandwidth limit from the config, now and whenever it changes.
async fn keep_limits(home: PathBuf, site: standby_lifecycle::Site, bandwidth: Arc<Bandwidth>) {
    let mut told: Option<Result<u64, String>> = None;
    loop {
        let limit = tokio::task::spawn_blocking({
            let home = home.clone();
            move || limit_of(&home, site)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if told.as_ref() != Some(&limit) {
            match &limit {
                Ok(0) => eprintln!("standby: replication into the {site} site: no bandwidth limit"),
                Ok(rate) => eprintln!("standby: replication into the {site} site: at most {rate} bytes/s"),
                Err(e) => eprintln!("standby: the bandwidth limit stays {} bytes/s: {e}", bandwidth.limit()),
            }
            told = Some(limit.clone());
        }
        if let Ok(rate) = limit {
            bandwidth.set(rate);
        }
        tokio::time::sleep(LIMITS_RELOAD).await;
    }
}

fn limit_of(home: &Path, site: standby_lifecycle::Site) -> Result<u64, String> {
    let config = Deployment::read_config(home).map_err(|e| e.to_string())?;
    config.sites.get(&site).map(|limits| limits.bandwidth()).unwrap_or(Ok(0))
}

/// A refused request: its status and its error body's code and message.
struct Refused(StatusCode, &'static str, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, Json(WireError { code: self.1.into(), message: self.2 })).into_response()
    }
}

fn refused(status: StatusCode, code: &'static str, message: String) -> Refused {
    Refused(status, code, message)
}

/// `POST /v1/join`: a host shows a join token and is admitted for its site.
async fn join(AxumState(home): AxumState<PathBuf>, request: Request) -> Response {
    let bearer = super::access::bearer_of(&request);
    let body = match axum::body::to_bytes(request.into_body(), 64 << 10).await {
        Ok(body) => body,
        Err(e) => {
            return refused(StatusCode::BAD_REQUEST, "bad_request", format!("the request's body: {e}")).into_response()
        }
    };
    let answer = tokio::task::spawn_blocking(move || admit(&home, bearer.as_deref(), &body)).await;
    match answer {
        Ok(Ok(joined)) => Json(joined).into_response(),
        Ok(Err(refusal)) => refusal.into_response(),
        Err(_) => refused(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the join failed".into()).into_response(),
    }
}

fn admit(home: &Path, bearer: Option<&str>, body: &[u8]) -> Result<standby_link::join::Joined, Refused> {
    let unauthenticated = |message: &str| refused(StatusCode::UNAUTHORIZED, "unauthenticated", message.into());
    let token = Token::parse(bearer.ok_or_else(|| unauthenticated("a join needs a join token"))?)
        .map_err(|e| unauthenticated(&format!("the join token: {e}")))?;
    let deployment = Deployment::open(home).map_err(internal)?;
    let known = deployment.state.token(&token.hash()).map_err(internal)?;
    match known {
        None => return Err(unauthenticated("the join token is not this deployment's")),
        Some(known) if known.role != TokenRole::Join => {
            return Err(refused(StatusCode::FORBIDDEN, "forbidden", "that token is not a join token".into()))
        }
        Some(known) if known.expires.is_some_and(|at| at < jiff::Timestamp::now()) => {
            return Err(unauthenticated(&format!(
                "the join token expired at {}; make a new one on the control plane's host",
                known.expires.expect("checked")
            )))
        }
        Some(_) => {}
    }
    let request: JoinRequest = serde_json::from_slice(body)
        .map_err(|e| refused(StatusCode::BAD_REQUEST, "bad_request", format!("the request's body: {e}")))?;
    crate::host::admit(&deployment, &request).map_err(|e| {
        let (status, code) = match &e {
            ControlError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            e if e.is_bad_input() => (StatusCode::BAD_REQUEST, "bad_request"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        refused(status, code, e.to_string())
    })
}

fn internal(e: ControlError) -> Refused {
    refused(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}
