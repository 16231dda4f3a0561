//! The daemon's HTTP edge: the routes of [`standby_api::routes`] on the
//! unix socket, each a typed request handed to the daemon on a blocking
//! worker and its typed answer or [`ErrorBody`](standby_api::ErrorBody)
//! sent back. No decision is made here.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRequest, Path as UrlPath, Request, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use standby_api::{
    routes, AddMachine, FailoverRequest, Health, JobStarted, MachineList, PlannedFailoverRequest, PointRequest, Policy,
    PolicyList, ProtectRequest, ReprotectRequest, SetNics, StopRequest,
};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use super::Daemon;
use crate::error::ControlError;

pub(super) async fn serve_http(daemon: Arc<Daemon>, socket: &Path) -> Result<(), ControlError> {
    let app = super::access::local(routes(daemon.clone()));
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

/// The API's routes (on the unix socket, and behind operators' tokens on
/// the TLS listeners), each documented in the OpenAPI document the router
/// is built with (`GET /api/openapi.json`).
pub(super) fn routes(daemon: Arc<Daemon>) -> Router {
    let (api, mut document) = OpenApiRouter::with_openapi(ApiDocument::openapi())
        .routes(utoipa_axum::routes!(health))
        .routes(utoipa_axum::routes!(machines, add_machine))
        .routes(utoipa_axum::routes!(start))
        .routes(utoipa_axum::routes!(stop))
        .routes(utoipa_axum::routes!(set_nics))
        .routes(utoipa_axum::routes!(protect))
        .routes(utoipa_axum::routes!(unprotect))
        .routes(utoipa_axum::routes!(test_failover))
        .routes(utoipa_axum::routes!(cleanup_test_failover))
        .routes(utoipa_axum::routes!(failover))
        .routes(utoipa_axum::routes!(planned_failover))
        .routes(utoipa_axum::routes!(complete_failover))
        .routes(utoipa_axum::routes!(change_point))
        .routes(utoipa_axum::routes!(commit))
        .routes(utoipa_axum::routes!(cancel))
        .routes(utoipa_axum::routes!(reprotect))
        .routes(utoipa_axum::routes!(points))
        .routes(utoipa_axum::routes!(status_all))
        .routes(utoipa_axum::routes!(status_one))
        .routes(utoipa_axum::routes!(jobs))
        .routes(utoipa_axum::routes!(job))
        .routes(utoipa_axum::routes!(policies, add_policy))
        .routes(utoipa_axum::routes!(sites))
        .routes(utoipa_axum::routes!(groups))
        .routes(utoipa_axum::routes!(group))
        .routes(utoipa_axum::routes!(plans, create_plan))
        .routes(utoipa_axum::routes!(validate_plan))
        .routes(utoipa_axum::routes!(plan, delete_plan))
        .routes(utoipa_axum::routes!(plan_job))
        .routes(utoipa_axum::routes!(plan_schedule))
        .routes(utoipa_axum::routes!(tokens, create_token))
        .routes(utoipa_axum::routes!(revoke_token))
        .routes(utoipa_axum::routes!(audit))
        .routes(utoipa_axum::routes!(alerts))
        .split_for_parts();
    errors_everywhere(&mut document);
    let document = document.to_json().expect("the OpenAPI document serialises");
    let answer =
        move || std::future::ready(([(axum::http::header::CONTENT_TYPE, "application/json")], document.clone()));
    let api = api
        .route(routes::OPENAPI, get(answer))
        .route(routes::METRICS, get(metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(daemon.clone());
    super::access::audited(api, daemon.home.clone())
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Standby", description = "Site recovery for KVM/QEMU machines: the control plane's API"),
    components(schemas(standby_api::ErrorBody)),
    modifiers(&BearerTokens),
    security(("token" = []))
)]
struct ApiDocument;

/// Operators' tokens, as the document says.
struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = document.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An operator token (standby token create); none on the daemon's unix socket"))
            .build();
        components.add_security_scheme("token", SecurityScheme::Http(scheme));
    }
}

/// Every operation may answer each error status with the API's one error
/// body; added to each, rather than written at each handler.
fn errors_everywhere(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let mut statuses: Vec<u16> = standby_api::ErrorCode::ALL.iter().map(|code| code.status()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    for item in document.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.post, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            for status in &statuses {
                let response = ResponseBuilder::new()
                    .description("The error: a stable code and a message naming what to do")
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                    )
                    .build();
                operation.responses.responses.entry(status.to_string()).or_insert(response.into());
            }
        }
    }
}

/// A failed request: its error body with the code's status.
struct ApiError(ControlError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.0.body();
        let (code, status) = (body.code, StatusCode::from_u16(body.code.status()).expect("codes have valid statuses"));
        let mut response = (status, Json(body)).into_response();
        // For the audit log.
        response.extensions_mut().insert(code);
        response
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
/// The metrics alone, for `serve --metrics-listen` (no token asked).
pub(super) fn metrics_routes(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route(routes::METRICS, get(metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(daemon)
}

/// `GET /metrics`: OpenMetrics text (`metrics.rs`).
async fn metrics(AxumState(daemon): Daemon_) -> Response {
    match tokio::task::spawn_blocking(move || daemon.metrics()).await {
        Ok(Ok(text)) => ([(axum::http::header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => ApiError(e).into_response(),
        Err(e) => ApiError(ControlError::Failed(format!("the metrics' worker failed: {e}"))).into_response(),
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let message = format!(
        "{} does not take {method}; the OpenAPI document ({}) lists each route's methods",
        uri.path(),
        routes::OPENAPI
    );
    let body = standby_api::ErrorBody::new(standby_api::ErrorCode::MethodNotAllowed, message);
    let mut response = (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response();
    response.extensions_mut().insert(standby_api::ErrorCode::MethodNotAllowed);
    response
}

type Daemon_ = AxumState<Arc<Daemon>>;

/// Runs `work` on a blocking worker (jobs touch files, QEMU and SQLite).
async fn blocking<T: Serialize + Send + 'static>(
    work: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> ApiResult<T> {
    on_worker(work).await.map(Json).map_err(ApiError)
}

/// `work` on a blocking worker thread (every handler's and page's).
pub(super) async fn on_worker<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(ControlError::Failed(format!("the request's worker failed: {e}"))))
}

/// The daemon: its process, folder and accelerator.
#[utoipa::path(get, path = "/v1/health", responses((status = 200, body = Health)))]
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

/// Every machine with its definition, state and disks.
#[utoipa::path(get, path = "/v1/machines", responses((status = 200, body = MachineList)))]
async fn machines(AxumState(daemon): Daemon_) -> ApiResult<MachineList> {
    blocking(move || daemon.machine_list()).await
}

/// Define a machine from disk images on its site's host.
#[utoipa::path(post, path = "/v1/machines", request_body = AddMachine, responses((status = 200, body = standby_api::MachineView)))]
async fn add_machine(
    AxumState(daemon): Daemon_,
    Body(request): Body<AddMachine>,
) -> ApiResult<standby_api::MachineView> {
    blocking(move || daemon.add_machine(&request)).await
}

/// Boot the machine at its active site.
#[utoipa::path(post, path = "/v1/machines/{name}/start", params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = standby_api::Started)))]
async fn start(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<standby_api::Started> {
    blocking(move || daemon.start(&name)).await
}

/// Shut the machine down (ACPI, then forced).
#[utoipa::path(post, path = "/v1/machines/{name}/stop", request_body = StopRequest, params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = standby_api::Stopped)))]
async fn stop(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<StopRequest>,
) -> ApiResult<standby_api::Stopped> {
    blocking(move || daemon.stop(&name, request.force, request.site)).await
}

/// Replace the machine's NICs: its next boot at any site has them.
#[utoipa::path(post, path = "/v1/machines/{name}/nics", request_body = SetNics, params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = standby_api::MachineView)))]
async fn set_nics(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<SetNics>,
) -> ApiResult<standby_api::MachineView> {
    blocking(move || daemon.set_nics(&name, &request)).await
}

/// Enable replication.
#[utoipa::path(post, path = "/v1/machines/{name}/protect", request_body = ProtectRequest, params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn protect(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<ProtectRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.protect(&name, request.policy, request.group)).await
}

/// Disable replication.
#[utoipa::path(post, path = "/v1/machines/{name}/unprotect", params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn unprotect(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.unprotect(&name)).await
}

/// A drill: boot a copy from a point in an isolated network.
#[utoipa::path(post, path = "/v1/machines/{name}/test-failover", request_body = PointRequest, params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn test_failover(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<PointRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.test_failover(&name, request.point)).await
}

/// Remove the drill and every file it used.
#[utoipa::path(post, path = "/v1/machines/{name}/cleanup-test-failover", params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn cleanup_test_failover(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.cleanup_test_failover(&name)).await
}

/// Unplanned failover to a point.
#[utoipa::path(post, path = "/v1/machines/{name}/failover", request_body = FailoverRequest, params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn failover(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<FailoverRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.failover(&name, request.point, request.shutdown_source)).await
}

/// Planned failover: no data loss.
#[utoipa::path(post, path = "/v1/machines/{name}/planned-failover", request_body = PlannedFailoverRequest, params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn planned_failover(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<PlannedFailoverRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.planned_failover(&name, request.sync_first)).await
}

/// Finish a planned failover waiting in ready-to-complete.
#[utoipa::path(post, path = "/v1/machines/{name}/complete-failover", params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn complete_failover(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.complete_failover(&name)).await
}

/// Before commit: run from another point (point required).
#[utoipa::path(post, path = "/v1/machines/{name}/change-point", request_body = standby_api::ChangePointRequest, params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn change_point(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<standby_api::ChangePointRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.change_point(&name, request.point)).await
}

/// Make a failover final.
#[utoipa::path(post, path = "/v1/machines/{name}/commit", params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn commit(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.commit(&name)).await
}

/// Roll an unfinished failover back.
#[utoipa::path(post, path = "/v1/machines/{name}/cancel", params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn cancel(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<JobStarted> {
    blocking(move || daemon.cancel(&name)).await
}

/// Replicate in the reverse direction.
#[utoipa::path(post, path = "/v1/machines/{name}/reprotect", request_body = ReprotectRequest, params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = JobStarted)))]
async fn reprotect(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<ReprotectRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.reprotect(&name, request.alternate_location, request.discard_source_writes)).await
}

/// Replicated items: state, health, RPO, latest points.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = standby_api::StatusList)))]
async fn status_all(AxumState(daemon): Daemon_) -> Result<Response, ApiError> {
    let board = on_worker(move || daemon.statuses()).await.map_err(ApiError)?;
    // The board's JSON, made once for all its readers.
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], board.json()).into_response())
}

/// One machine's status.
#[utoipa::path(get, path = "/v1/status/{name}", params(("name" = String, Path, description = "the machine's name" )), responses((status = 200, body = standby_api::StatusList)))]
async fn status_one(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<standby_api::StatusList> {
    blocking(move || daemon.status(Some(&name))).await
}

/// Each site: reachable or not, its vault, replication into it.
#[utoipa::path(get, path = "/v1/sites", responses((status = 200, body = standby_api::SiteList)))]
async fn sites(AxumState(daemon): Daemon_) -> ApiResult<standby_api::SiteList> {
    blocking(move || daemon.sites()).await
}

/// Every replication group: its machines, its newest points, its last attempt.
#[utoipa::path(get, path = "/v1/groups", responses((status = 200, body = standby_api::GroupList)))]
async fn groups(AxumState(daemon): Daemon_) -> ApiResult<standby_api::GroupList> {
    blocking(move || daemon.groups()).await
}

/// One replication group.
#[utoipa::path(get, path = "/v1/groups/{name}", params(("name" = String, Path, description = "the group's name")), responses((status = 200, body = standby_api::GroupView)))]
async fn group(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<standby_api::GroupView> {
    blocking(move || daemon.group(&name)).await
}

/// Every recovery plan, each checked again against the deployment.
#[utoipa::path(get, path = "/v1/plans", responses((status = 200, body = standby_api::PlanList)))]
async fn plans(AxumState(daemon): Daemon_) -> ApiResult<standby_api::PlanList> {
    blocking(move || {
        let deployment = daemon.deployment()?;
        let machines = deployment.state.machines()?;
        let plans = deployment
            .state
            .plans()?
            .iter()
            .map(|plan| crate::plans::stored_view(plan, &machines, &deployment.config))
            .collect();
        Ok(standby_api::PlanList { plans })
    })
    .await
}

/// Check a plan file and keep it (nothing is kept when it does not check).
#[utoipa::path(post, path = "/v1/plans", request_body = standby_api::PlanSource, responses((status = 200, body = standby_api::PlanView)))]
async fn create_plan(
    AxumState(daemon): Daemon_,
    Body(request): Body<standby_api::PlanSource>,
) -> ApiResult<standby_api::PlanView> {
    blocking(move || crate::plans::create_plan(&daemon.deployment()?, &request)).await
}

/// Check a plan file against the deployment; nothing is kept.
#[utoipa::path(post, path = "/v1/plans/validate", request_body = standby_api::PlanSource, responses((status = 200, body = standby_api::PlanView)))]
async fn validate_plan(
    AxumState(daemon): Daemon_,
    Body(request): Body<standby_api::PlanSource>,
) -> ApiResult<standby_api::PlanView> {
    blocking(move || crate::plans::validate_plan(&daemon.deployment()?, &request)).await
}

/// One recovery plan, checked again against the deployment.
#[utoipa::path(get, path = "/v1/plans/{name}", params(("name" = String, Path, description = "the plan's name")), responses((status = 200, body = standby_api::PlanView)))]
async fn plan(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<standby_api::PlanView> {
    blocking(move || {
        let deployment = daemon.deployment()?;
        Ok(crate::plans::stored_view(&deployment.state.plan(&name)?, &deployment.state.machines()?, &deployment.config))
    })
    .await
}

/// A lifecycle command on every machine of a plan, group by group (any
/// command's name but protect and unprotect), or `resume`.
#[utoipa::path(post, path = "/v1/plans/{name}/{operation}", request_body = standby_api::PlanJobRequest, params(("name" = String, Path, description = "the plan's name"), ("operation" = String, Path, description = "test-failover, cleanup-test-failover, failover, planned-failover, complete-failover, change-point, commit, cancel, reprotect or resume")), responses((status = 200, body = JobStarted)))]
async fn plan_job(
    AxumState(daemon): Daemon_,
    UrlPath((name, operation)): UrlPath<(String, String)>,
    Body(request): Body<standby_api::PlanJobRequest>,
) -> ApiResult<JobStarted> {
    blocking(move || daemon.plan_operation(&name, &operation, request)).await
}

/// How often the daemon drills the plan (`every_seconds`, at least 60), or
/// not at all (absent).
#[utoipa::path(post, path = "/v1/plans/{name}/schedule", request_body = standby_api::PlanSchedule, params(("name" = String, Path, description = "the plan's name")), responses((status = 200, body = standby_api::PlanView)))]
async fn plan_schedule(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<standby_api::PlanSchedule>,
) -> ApiResult<standby_api::PlanView> {
    blocking(move || daemon.schedule_drills(&name, request)).await
}

/// Forget a recovery plan (its file stays where it is kept).
#[utoipa::path(delete, path = "/v1/plans/{name}", params(("name" = String, Path, description = "the plan's name")), responses((status = 200, body = standby_api::PlanDeleted)))]
async fn delete_plan(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<standby_api::PlanDeleted> {
    blocking(move || {
        daemon.deployment()?.state.delete_plan(&name)?;
        Ok(standby_api::PlanDeleted { name })
    })
    .await
}

/// Every job with its steps.
#[utoipa::path(get, path = "/v1/jobs", responses((status = 200, body = standby_api::JobList)))]
async fn jobs(AxumState(daemon): Daemon_) -> ApiResult<standby_api::JobList> {
    blocking(move || Ok(standby_api::JobList { jobs: daemon.deployment()?.state.jobs()? })).await
}

/// One job with its steps.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = i64, Path, description = "the job's id")), responses((status = 200, body = standby_api::Job)))]
async fn job(AxumState(daemon): Daemon_, UrlPath(id): UrlPath<String>) -> ApiResult<standby_api::Job> {
    blocking(move || {
        let id = id.parse().map_err(|_| ControlError::NotFound(format!("no job {id:?}: job ids are numbers")))?;
        daemon.deployment()?.state.job(id)
    })
    .await
}

/// The replication policies.
#[utoipa::path(get, path = "/v1/policies", responses((status = 200, body = PolicyList)))]
async fn policies(AxumState(daemon): Daemon_) -> ApiResult<PolicyList> {
    blocking(move || Ok(PolicyList { policies: daemon.deployment()?.state.policies()? })).await
}

/// Define a replication policy.
#[utoipa::path(post, path = "/v1/policies", request_body = Policy, responses((status = 200, body = Policy)))]
async fn add_policy(AxumState(daemon): Daemon_, Body(policy): Body<Policy>) -> ApiResult<Policy> {
    blocking(move || {
        daemon.deployment()?.state.add_policy(&policy)?;
        Ok(policy)
    })
    .await
}

/// The operators' tokens (admin only; never their secrets).
#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = standby_api::TokenList)))]
async fn tokens(AxumState(daemon): Daemon_) -> ApiResult<standby_api::TokenList> {
    blocking(move || Ok(standby_api::TokenList { tokens: daemon.deployment()?.state.tokens()? })).await
}

/// Make an operator token; its secret is answered this once (admin only).
#[utoipa::path(post, path = "/v1/tokens", request_body = standby_api::TokenRequest, responses((status = 200, body = standby_api::NewToken)))]
async fn create_token(
    AxumState(daemon): Daemon_,
    Body(request): Body<standby_api::TokenRequest>,
) -> ApiResult<standby_api::NewToken> {
    blocking(move || daemon.create_token(&request)).await
}

/// Revoke a token (admin only).
#[utoipa::path(delete, path = "/v1/tokens/{name}", params(("name" = String, Path, description = "the token's name")), responses((status = 200, body = standby_api::TokenRevoked)))]
async fn revoke_token(
    AxumState(daemon): Daemon_,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<standby_api::TokenRevoked> {
    blocking(move || {
        daemon.deployment()?.state.revoke_token(&name)?;
        Ok(standby_api::TokenRevoked { name })
    })
    .await
}

/// `GET /v1/audit?limit=N`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// The newest N entries (100 when absent).
    #[serde(default = "default_audit_limit")]
    #[param(minimum = 1, maximum = 10000)]
    limit: u32,
}

fn default_audit_limit() -> u32 {
    100
}

/// The audit log: every request that acted, newest last.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), responses((status = 200, body = standby_api::AuditList)))]
async fn audit(
    AxumState(daemon): Daemon_,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<standby_api::AuditList> {
    let axum::extract::Query(query) =
        query.map_err(|e| ApiError(ControlError::Refused(format!("the query: {}", e.body_text()))))?;
    if !(1..=10_000).contains(&query.limit) {
        return Err(ApiError(ControlError::Refused(format!("limit={}: ask for 1 to 10000 entries", query.limit))));
    }
    blocking(move || Ok(standby_api::AuditList { entries: daemon.deployment()?.state.audit(query.limit)? })).await
}

/// `GET /v1/alerts?all=BOOL`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AlertsQuery {
    /// With the newest cleared alerts too (only the standing ones when absent).
    #[serde(default)]
    all: bool,
}

/// The alerts standing (and with `all`, the newest cleared ones), oldest first.
#[utoipa::path(get, path = "/v1/alerts", params(AlertsQuery), responses((status = 200, body = standby_api::AlertList)))]
async fn alerts(
    AxumState(daemon): Daemon_,
    query: Result<axum::extract::Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<standby_api::AlertList> {
    let axum::extract::Query(query) =
        query.map_err(|e| ApiError(ControlError::Refused(format!("the query: {}", e.body_text()))))?;
    blocking(move || Ok(standby_api::AlertList { alerts: daemon.deployment()?.state.alerts(query.all)? })).await
}

/// A machine's named points and the window any moment of which can be restored.
#[utoipa::path(get, path = "/v1/machines/{name}/points", params(("name" = String, Path, description = "the machine's name")), responses((status = 200, body = standby_api::MachinePoints)))]
async fn points(AxumState(daemon): Daemon_, UrlPath(name): UrlPath<String>) -> ApiResult<standby_api::MachinePoints> {
    blocking(move || daemon.points(&name)).await
}
