//! Who asks, and what they may do.
//!
//! A request on the daemon's unix socket comes from the service's own user
//! ([`Caller::Local`]); one over the network shows an operator token
//! (`Authorization: Bearer`) and becomes [`Caller::Token`], or is refused
//! with 401 before it reaches a handler. Then, innermost, [`audited`]: a
//! request that acts (anything but `GET`) is checked against its caller's
//! role (403 for a read-only token) and recorded in the audit log before it
//! runs, its answer's status and error code after.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State as AxumState};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use standby_api::{routes, ErrorBody, ErrorCode, TokenRole};
use standby_link::Token;

use crate::deployment::STATE_FILE;
use crate::error::ControlError;

/// Bytes of a request's body the audit log keeps (every request the API
/// takes is far smaller).
const AUDITED_BODY_BYTES: usize = 1 << 20;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The daemon's unix socket: the service's own user, who may do anything.
    Local,
    /// An operator's token, by its name.
    Token { name: String, role: TokenRole },
}

impl Caller {
    /// As the audit log names it.
    pub(crate) fn actor(&self) -> &str {
        match self {
            Caller::Local => "local",
            Caller::Token { name, .. } => name,
        }
    }

    /// Whether it may ask `method` on `path`; otherwise why not.
    fn may(&self, method: &Method, path: &str) -> Result<(), String> {
        let Caller::Token { name, role: TokenRole::ReadOnly } = self else { return Ok(()) };
        let looks = method == Method::GET || method == Method::HEAD;
        if path.starts_with(routes::TOKENS) {
            return Err(format!("the token '{name}' is read-only: tokens are managed with an admin token"));
        }
        if !looks {
            return Err(format!("the token '{name}' is read-only: it can look, not act; use an admin token"));
        }
        Ok(())
    }
}

/// `router` as served on the unix socket: every caller is [`Caller::Local`].
pub(super) fn local(router: Router) -> Router {
    router.layer(Extension(Caller::Local))
}

/// `router` as served over the network: a caller shows an operator token.
pub(super) fn with_tokens(router: Router, home: PathBuf) -> Router {
    router.layer(axum::middleware::from_fn_with_state(home, authenticate))
}

/// `router` with its acting requests checked and recorded (the innermost
/// layer: callers are known by then).
pub(super) fn audited(router: Router, home: PathBuf) -> Router {
    router.layer(axum::middleware::from_fn_with_state(home, audit))
}

/// The error body of a refused request, sent once its body is read.
pub(super) async fn refuse(request: Request, code: ErrorCode, message: String) -> Response {
    let status = StatusCode::from_u16(code.status()).expect("codes have valid statuses");
    let mut refusal = (status, Json(ErrorBody::new(code, message))).into_response();
    refusal.extensions_mut().insert(code);
    standby_link::server::refuse_after_body(request, refusal).await
}

async fn authenticate(AxumState(home): AxumState<PathBuf>, mut request: Request, next: Next) -> Response {
    let bearer = bearer_of(&request);
    let checked = tokio::task::spawn_blocking(move || caller_of(&home, bearer.as_deref())).await;
    match checked {
        Ok(Ok(caller)) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(Err(message)) => refuse(request, ErrorCode::Unauthenticated, message).await,
        Err(_) => refuse(request, ErrorCode::Internal, "the token check failed".into()).await,
    }
}

/// The bearer token of `request`, when it has one.
pub(super) fn bearer_of(request: &Request) -> Option<String> {
    request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_string())
}

/// The operator `bearer` belongs to: a token of this deployment, still
/// valid, an admin's or a read-only one; otherwise why not.
pub(crate) fn caller_of(home: &Path, bearer: Option<&str>) -> Result<Caller, String> {
    let bearer = bearer.ok_or(
        "the API answers operators with a token only: send 'Authorization: Bearer TOKEN' (standby token create)",
    )?;
    let token = Token::parse(bearer).map_err(|e| format!("the token: {e}"))?;
    let state = crate::state::State::open(&home.join(STATE_FILE)).map_err(|e| e.to_string())?;
    match state.token(&token.hash()).map_err(|e| e.to_string())? {
        None => Err("the token is not one of this deployment's (or was revoked)".into()),
        Some(known) if known.role == TokenRole::Join => Err("that token is not an operator's token".into()),
        Some(known) if known.expires.is_some_and(|at| at < jiff::Timestamp::now()) => {
            Err(format!("the token expired at {}", known.expires.expect("checked")))
        }
        Some(known) => Ok(Caller::Token { name: known.name, role: known.role }),
    }
}

async fn audit(AxumState(home): AxumState<PathBuf>, request: Request, next: Next) -> Response {
    let caller = request.extensions().get::<Caller>().cloned().unwrap_or(Caller::Local);
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let acts = method != Method::GET && method != Method::HEAD;
    if let Err(message) = caller.may(&method, &path) {
        if acts {
            let (home, actor, method, path) = (home.clone(), caller.actor().to_string(), method.clone(), path.clone());
            let _ = tokio::task::spawn_blocking(move || {
                let state = crate::state::State::open(&home.join(STATE_FILE))?;
                let id = state.audit_asked(&actor, method.as_str(), &path, None)?;
                state.audit_answered(id, 403, Some(ErrorCode::Forbidden))
            })
            .await;
        }
        return refuse(request, ErrorCode::Forbidden, message).await;
    }
    if !acts {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, AUDITED_BODY_BYTES).await else {
        let message = format!("the request's body is larger than {} KiB or was cut off", AUDITED_BODY_BYTES >> 10);
        let status = StatusCode::from_u16(ErrorCode::BadRequest.status()).expect("valid");
        return (status, Json(ErrorBody::new(ErrorCode::BadRequest, message))).into_response();
    };
    let text = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    let asked = {
        let (home, actor, method, path) = (home.clone(), caller.actor().to_string(), method.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            crate::state::State::open(&home.join(STATE_FILE))?.audit_asked(
                &actor,
                method.as_str(),
                &path,
                text.as_deref(),
            )
        })
        .await
        .unwrap_or_else(|e| Err(ControlError::Failed(e.to_string())))
    };
    let id = match asked {
        Ok(id) => id,
        Err(e) => {
            // Nothing is done that the log does not hold.
            let message = format!("the request was not carried out: the audit log could not record it ({e})");
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(ErrorBody::new(ErrorCode::Internal, message)))
                .into_response();
        }
    };
    let response = next.run(Request::from_parts(parts, axum::body::Body::from(body))).await;
    let (status, code) = (response.status().as_u16(), response.extensions().get::<ErrorCode>().copied());
    let answered = tokio::task::spawn_blocking(move || {
        crate::state::State::open(&home.join(STATE_FILE))?.audit_answered(id, status, code)
    })
    .await;
    if !matches!(answered, Ok(Ok(()))) {
        eprintln!("standby: the audit log did not record the answer to {method} {path} (entry {id})");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_token_looks_but_does_not_act_nor_manage_tokens() {
        let reader = Caller::Token { name: "noc".into(), role: TokenRole::ReadOnly };
        assert!(reader.may(&Method::GET, routes::STATUS).is_ok());
        assert!(reader.may(&Method::GET, routes::JOBS).is_ok());
        for (method, path) in [
            (Method::POST, "/v1/machines/web/failover".to_string()),
            (Method::POST, routes::POLICIES.to_string()),
            (Method::GET, routes::TOKENS.to_string()),
            (Method::DELETE, format!("{}/noc", routes::TOKENS)),
        ] {
            let refusal = reader.may(&method, &path).unwrap_err();
            assert!(refusal.contains("'noc' is read-only"), "{refusal}");
        }
        for caller in [Caller::Local, Caller::Token { name: "ops".into(), role: TokenRole::Admin }] {
            assert!(caller.may(&Method::POST, "/v1/machines/web/failover").is_ok());
            assert!(caller.may(&Method::DELETE, &format!("{}/noc", routes::TOKENS)).is_ok());
        }
    }
}
