//! The daemon's HTTP edge: the routes of [`standby_api::routes`] on the
//! unix socket, each a typed request handed to the daemon on a blocking
//! worker and its typed answer or [`ErrorBody`](standby_api::ErrorBody)
//! sent back. No decision is made here.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRequest, Path as UrlPath, Request, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use standby_api::{
    routes, AddMachine, FailoverRequest, Health, JobStarted, MachineList, PlannedFailoverRequest, PointRequest, Policy,
    PolicyList, ProtectRequest, ReprotectRequest, StopRequest,
};

use super::Daemon;
use crate::error::ControlError;

pub(super) async fn serve_http(daemon: Arc<Daemon>, socket: &Path) -> Result<(), ControlError> {
    let app = routes(daemon.clone());
    let here = daemon.sites.hosts().into_iter().find(|host| !host.is_remote());
    let (accel, why) = here.map(|host| host.accelerator_reason()).unwrap_or_default();
    serve_router(app, socket, &format!("{} (accelerator: {accel}, {why})", daemon.home.display())).await
}

/// Serves `app` on the unix socket `socket` until SIGINT or SIGTERM.
pub(super) async fn serve_router(app: Router, socket: &Path, what: &str) -> Result<(), ControlError> {
    let listener = tokio::net::UnixListener::bind(socket).map_err(|e| ControlError::io(socket, e))?;
    eprintln!("standby: serving {what} on {}", socket.display());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler installs");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("standby: stopping");
        })
        .await
        .map_err(|e| ControlError::Failed(format!("the daemon's API failed: {e}")))
}

/// The API's routes (on the unix socket, and behind operator tokens on a
/// host's TLS listener).
pub(super) fn routes(daemon: Arc<Daemon>) -> Router {
    let machine = |operation: &str| format!("{}/{{name}}/{operation}", routes::MACHINES);
    let lifecycle = |command| machine(routes::operation(command));
    use standby_lifecycle::Command as C;
    Router::new()
        .route(routes::HEALTH, get(health))
        .route(routes::MACHINES, get(machines).post(add_machine))
        .route(&machine("start"), post(start))
        .route(&machine("stop"), post(stop))
        .route(&lifecycle(C::Protect), post(protect))
        .route(&lifecycle(C::Unprotect), post(unprotect))
        .route(&lifecycle(C::TestFailover), post(test_failover))
        .route(&lifecycle(C::CleanupTestFailover), post(cleanup_test_failover))
        .route(&lifecycle(C::Failover), post(failover))
        .route(&lifecycle(C::PlannedFailover { sync_first: false }), post(planned_failover))
        .route(&lifecycle(C::CompleteFailover), post(complete_failover))
        .route(&lifecycle(C::ChangePoint), post(change_point))
        .route(&lifecycle(C::Commit), post(commit))
        .route(&lifecycle(C::Cancel), post(cancel))
        .route(&lifecycle(C::Reprotect), post(reprotect))
        .route(routes::STATUS, get(status_all))
        .route(&format!("{}/{{name}}", routes::STATUS), get(status_one))
        .route(routes::JOBS, get(jobs))
        .route(&format!("{}/{{id}}", routes::JOBS), get(job))
        .route(routes::POLICIES, get(policies).post(add_policy))
        .route(routes::SITES, get(sites))
        .fallback(unknown_route)
        .with_state(daemon)
}

/// A failed request: its error body with the code's status.
struct ApiError(ControlError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.0.body();
        let status = StatusCode::from_u16(body.code.status()).expect("codes have valid statuses");
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// A request's JSON body; one that does not parse is a `bad_request` with
/// the parser's reason, in the API's error body like every other error.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Body<T>, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => {
                Err(ApiError(ControlError::Refused(format!("the request's body: {}", rejection.body_text()))))
            }
        }
    }
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError(ControlError::NotFound(format!("no route {}; the API's routes are under /v1", uri.path())))
}
type Daemon_ = AxumState<Arc<Daemon>>;

/// Runs `work` on a blocking worker (jobs touch files, QEMU and SQLite).
async fn blocking<T: Serialize + Send + 'static>(
    work: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(Json(value)),
        Ok(Err(e)) => Err(ApiError(e)),
        Err(e) => Err(ApiError(ControlError::Failed(format!("the request's worker failed: {e}")))),
    }
}

async fn health(AxumState(daemon): Daemon_) -> ApiResult<Health> {
    let (accel, accel_reason) = daemon.site(standby_lifecycle::Site::Primary).accelerator_reason();
    Ok(Json(Health {
        pid: std::process::id(),
        home: daemon.home.clone(),
        accel,
        accel_reason,
        exe: daemon.exe.clone(),
    }))
}

async fn machines(AxumState(daemon): Daemon_) -> ApiResult<MachineList> {
    blocking(move || daemon.machine_list()).await
}

async fn add_machine(
    AxumState(daemon): Daemon_,
    Body(request): Body<AddMachine>,
) -> ApiResult<standby_api::MachineView> {
    blocking(move || daemon.add_machine(&request)).await
}

async fn start(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<standby_api::Started> {
    blocking(move || daemon.start(&name)).await
}

async fn stop(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<StopRequest>,
) -> ApiResult<standby_api::Stopped> {
    blocking(move || daemon.stop(&name, request.force, request.site)).await
}

async fn protect(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<ProtectRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.protect(&name, request.policy)).await
}

async fn unprotect(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.unprotect(&name)).await
}

async fn test_failover(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<PointRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.test_failover(&name, request.point)).await
}

async fn cleanup_test_failover(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.cleanup_test_failover(&name)).await
}

async fn failover(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<FailoverRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.failover(&name, request.point, request.shutdown_source)).await
}

async fn planned_failover(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<PlannedFailoverRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.planned_failover(&name, request.sync_first)).await
}

async fn complete_failover(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.complete_failover(&name)).await
}

async fn change_point(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<PointRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || match request.point {
        Some(point) => daemon.change_point(&name, point),
        None => Err(ControlError::Refused("change-point needs a point (--point P)".into())),
    })
    .await
}

async fn commit(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.commit(&name)).await
}

async fn cancel(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.cancel(&name)).await
}

async fn reprotect(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<ReprotectRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.reprotect(&name, request.alternate_location, request.discard_source_writes)).await
}

async fn status_all(AxumState(daemon): Daemon_) -> ApiResult<standby_api::StatusList> {
    blocking(move || daemon.status(None)).await
}

async fn status_one(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<standby_api::StatusList> {
    blocking(move || daemon.status(Some(&name))).await
}

async fn sites(AxumState(daemon): Daemon_) -> ApiResult<standby_api::SiteList> {
    blocking(move || daemon.sites()).await
}

async fn jobs(AxumState(daemon): Daemon_) -> ApiResult<standby_api::JobList> {
    blocking(move || Ok(standby_api::JobList { jobs: daemon.deployment()?.state.jobs()? })).await
}

async fn job(AxumState(daemon): Daemon_, UrlPath(id): UrlPath<String>) -> ApiResult<standby_api::Job> {
    blocking(move || {
        let id = id.parse().map_err(|_| ControlError::NotFound(format!("no job {id:?}: job ids are numbers")))?;
        daemon.deployment()?.state.job(id)
    })
    .await
}

async fn policies(AxumState(daemon): Daemon_) -> ApiResult<PolicyList> {
    blocking(move || Ok(PolicyList { policies: daemon.deployment()?.state.policies()? })).await
}

async fn add_policy(AxumState(daemon): Daemon_, Body(policy): Body<Policy>) -> ApiResult<Policy> {
    blocking(move || {
        daemon.deployment()?.state.add_policy(&policy)?;
        Ok(policy)
    })
    .await
}
