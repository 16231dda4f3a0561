//! The web console at `/` of the operators' listener: pages rendered here
//! (maud), no script needed but a small one bundled into the binary for
//! confirmations. An operator signs in once with a token; the session is a
//! random id in a `Secure; HttpOnly; SameSite=Strict` cookie, never in a
//! URL, kept in memory (a restarted daemon asks again). Every action is a
//! request to the API router itself, with the session's caller: the same
//! checks, the same audit log, the same answers as the API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use standby_api::{ErrorBody, HealthLevel, JobStarted, MachineStatus, TokenRole};
use standby_lifecycle::{Command, State};
use tower::ServiceExt;

use super::access::{caller_of, Caller};
use super::board::Posted;
use super::http::on_worker;
use super::kept::Kept;
use super::Daemon;

/// The session cookie's name.
const COOKIE: &str = "standby_session";
/// How long a session lasts without signing in again.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The console's own state: the daemon, the API it acts through, sessions.
pub(super) struct Console {
    daemon: Arc<Daemon>,
    /// The API router (audited; callers come from the session).
    api: Router,
    sessions: Mutex<HashMap<String, (Caller, Instant)>>,
    /// Machines' pages (without the caller's navigation) as last made, by
    /// machine and whether they show actions.
    machine_pages: Kept<(String, bool), MachinePage>,
    /// The replicated items as last made, by filters.
    items_pages: Kept<(Option<String>, Option<String>), ItemsPage>,
}

/// The replicated items as made from the statuses on `board`.
struct ItemsPage {
    board: Arc<Posted>,
    body: Arc<str>,
}

/// A machine's page as made from the state at `data_version`.
struct MachinePage {
    data_version: i64,
    made: Instant,
    body: Arc<str>,
}

/// How long a machine's page is shown as it was made, unless the state
/// changed since: its points and RPOs are a second old at most (a week of
/// points is a page of 250 KB, and fifty operators asking at once need not
/// each have it made).
const MACHINE_PAGE_FRESH: Duration = Duration::from_secs(1);

/// How many pages of one kind are kept before those no longer fresh are
/// forgotten.
const PAGES_KEPT: usize = 64;

type Shared = AxumState<Arc<Console>>;

/// The console's routes; `api` is the audited API router without its token layer.
pub(super) fn routes(daemon: Arc<Daemon>, api: Router) -> Router {
    let console = Arc::new(Console {
        daemon,
        api,
        sessions: Mutex::default(),
        machine_pages: Kept::default(),
        items_pages: Kept::default(),
    });
    let pages = Router::new()
        .route("/", get(items))
        .route("/machines/{name}", get(machine))
        .route("/machines/{name}/{action}", post(act))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/alerts", get(alerts))
        .route("/sites", get(sites))
        .route("/logout", post(logout))
        .layer(axum::middleware::from_fn_with_state(console.clone(), signed_in));
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/console.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], CSS) }))
        .route("/console.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT) }))
        .merge(pages)
        .with_state(console)
}

impl Console {
    fn session(&self, headers: &HeaderMap) -> Option<Caller> {
        let id = session_id(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, (_, since)| since.elapsed() < SESSION_LIFETIME);
        sessions.get(&id).map(|(caller, _)| caller.clone())
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get_all(header::COOKIE);
    cookies
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Pages for a signed-in operator only; a form posted from another origin
/// is refused (with `SameSite=Strict`, the cookie would not come anyway).
async fn signed_in(AxumState(console): Shared, mut request: Request, next: Next) -> Response {
    let Some(caller) = console.session(request.headers()) else {
        return if request.method() == Method::GET {
            Redirect::to("/login").into_response()
        } else {
            (StatusCode::UNAUTHORIZED, page("Signed out", None, html! { p { "Sign in again." } })).into_response()
        };
    };
    if request.method() == Method::POST && !same_origin(&request) {
        let body = html! { p { "This form came from another site: refused." } };
        return (StatusCode::FORBIDDEN, page("Refused", Some(&caller), body)).into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Whether a posted form came from this console: its `Origin` names the
/// host it was sent to (HTTP/1.1's `Host`, HTTP/2's `:authority`).
fn same_origin(request: &Request) -> bool {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().authority().map(|authority| authority.as_str()));
    match (headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()), host) {
        (Some(origin), Some(host)) => origin.strip_prefix("https://") == Some(host),
        // Browsers send an Origin with every POST; a client without one
        // is no cross-site form.
        (None, _) => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Signing in and out.

async fn login_page() -> Markup {
    login_form(None)
}

fn login_form(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            form.login method="post" action="/login" {
                h1 { "Standby" }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                p.hint { "The token field of a token file: standby token create NAME" }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(serde::Deserialize)]
struct SignIn {
    token: String,
}

async fn login(AxumState(console): Shared, Form(form): Form<SignIn>) -> Response {
    let home = console.daemon.home.clone();
    let checked = tokio::task::spawn_blocking(move || caller_of(&home, Some(form.token.trim()))).await;
    match checked {
        Ok(Ok(caller)) => {
            let Some(id) = new_session_id() else {
                return (StatusCode::INTERNAL_SERVER_ERROR, login_form(Some("no random source"))).into_response();
            };
            console.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), (caller, Instant::now()));
            let cookie = format!(
                "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
                SESSION_LIFETIME.as_secs()
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Ok(Err(why)) => (StatusCode::UNAUTHORIZED, login_form(Some(&why))).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, login_form(Some("the token check failed"))).into_response(),
    }
}

fn new_session_id() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn logout(AxumState(console): Shared, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        console.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
    let cookie = format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

// ---------------------------------------------------------------------------
// Pages.

/// Every page: its title, the navigation, who is signed in.
fn page(title: &str, caller: Option<&Caller>, body: impl maud::Render) -> Markup {
    page_with(title, caller, body, false)
}

/// [`page`], reloading itself every second when `refresh` (a job that runs).
fn page_with(title: &str, caller: Option<&Caller>, body: impl maud::Render, refresh: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content="1"; }
                title { (title) " · Standby" }
                link rel="stylesheet" href="/console.css";
                script src="/console.js" defer {}
            }
            body {
                @if let Some(caller) = caller {
                    nav {
                        a.brand href="/" { "Standby" }
                        a href="/" { "Replicated items" }
                        a href="/jobs" { "Jobs" }
                        a href="/alerts" { "Alerts" }
                        a href="/sites" { "Sites" }
                        span.who { (caller.actor()) @if !caller.can_act() { " (read-only)" } }
                        form method="post" action="/logout" { button.link type="submit" { "Sign out" } }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page, or the error that kept it from being made.
fn answer(title: &str, caller: &Caller, made: Result<Markup, crate::error::ControlError>) -> Response {
    answer_with(title, caller, made.map(|body| (body, false)))
}

/// [`answer`] of a page that may reload itself.
fn answer_with(title: &str, caller: &Caller, made: Result<(Markup, bool), crate::error::ControlError>) -> Response {
    match made {
        Ok((body, refresh)) => page_with(title, Some(caller), body, refresh).into_response(),
        Err(e) => {
            let error = e.body();
            let status = StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, page(title, Some(caller), html! { p.error role="alert" { (error.message) } })).into_response()
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct Filters {
    health: Option<String>,
    state: Option<String>,
}

fn health_badge(health: Option<HealthLevel>) -> Markup {
    match health {
        Some(level) => html! { span class=(format!("badge {level}")) { (level) } },
        None => html! { span.badge.none { "not replicating" } },
    }
}

fn rpo_cell(machine: &MachineStatus, chart: &[Option<f64>]) -> Markup {
    match (machine.rpo_seconds, machine.rpo_threshold_seconds) {
        (Some(rpo), Some(threshold)) => {
            let share = (rpo / threshold.max(1) as f64).min(1.0) * 100.0;
            html! {
                span.rpo title=(format!("{rpo:.1} s of a {threshold} s threshold")) {
                    (format!("{rpo:.1} s")) " / " (threshold) " s"
                    span.meter { span style=(format!("width:{share:.0}%")) {} }
                }
                (rpo_chart(chart, threshold))
            }
        }
        _ => html! { "—" },
    }
}

/// A machine's RPO over the last hours as bars (the highest of each span),
/// the threshold at the top: bars that reach it are drawn as over it.
fn rpo_chart(chart: &[Option<f64>], threshold: u64) -> Markup {
    const HEIGHT: f64 = 16.0;
    let threshold = threshold.max(1) as f64;
    let (mut under, mut over) = (String::new(), String::new());
    for (i, rpo) in chart.iter().enumerate() {
        let Some(rpo) = rpo else { continue };
        let height = (rpo / threshold * HEIGHT).clamp(1.0, HEIGHT).round();
        let bars = if *rpo >= threshold { &mut over } else { &mut under };
        bars.push_str(&format!("M{} 16v-{height}h2v{height}z", i * 2));
    }
    let hours = chart.len() as i64 * super::rpo_history::BUCKET / 3600;
    let highest = chart.iter().flatten().copied().reduce(f64::max);
    let label = match highest {
        Some(highest) => {
            format!("RPO over the last {hours} hours: highest {highest:.1} s of a {threshold} s threshold")
        }
        None => format!("RPO over the last {hours} hours: not seen yet"),
    };
    html! {
        svg.chart width=(chart.len() * 2) height="16" viewBox=(format!("0 0 {} 16", chart.len() * 2)) role="img" {
            title { (label) }
            @if !under.is_empty() { path.under d=(under) {} }
            @if !over.is_empty() { path.over d=(over) {} }
        }
    }
}

/// Replicated items: every machine, filtered by health and state.
async fn items(
    AxumState(console): Shared,
    caller: axum::Extension<Caller>,
    Query(filters): Query<Filters>,
) -> Response {
    let made = on_worker(move || {
        let board = console.daemon.statuses()?;
        console.items_pages.sweep(PAGES_KEPT, |page| Arc::ptr_eq(&page.board, &board));
        console.items_pages.with(
            &(filters.health.clone(), filters.state.clone()),
            |page| Arc::ptr_eq(&page.board, &board),
            |_| {
                let now = jiff::Timestamp::now().as_second();
                let body = items_page(&board, &filters, |name| console.daemon.rpo_history.chart(name, now));
                Ok(ItemsPage { body: body.into_string().into(), board: board.clone() })
            },
            |page| page.body.clone(),
        )
    })
    .await;
    match made {
        Ok(body) => page("Replicated items", Some(&caller), maud::PreEscaped(&*body)).into_response(),
        Err(e) => answer("Replicated items", &caller, Err(e)),
    }
}

/// The body of the replicated items, from the statuses on `board`.
fn items_page(board: &Posted, filters: &Filters, chart: impl Fn(&str) -> Vec<Option<f64>>) -> Markup {
    let status = &board.list;
    let shown: Vec<&MachineStatus> = status
        .machines
        .iter()
        .filter(|m| filters.health.as_deref().is_none_or(|h| m.health.map(HealthLevel::name) == Some(h)))
        .filter(|m| filters.state.as_deref().is_none_or(|s| m.state.name() == s))
        .collect();
    html! {
        h1 { "Replicated items" }
        form.filters method="get" action="/" {
            label { "Health " select name="health" {
                option value="" { "any" }
                @for level in [HealthLevel::Healthy, HealthLevel::Warning, HealthLevel::Critical] {
                    option value=(level.name()) selected[filters.health.as_deref() == Some(level.name())] { (level) }
                }
            } }
            label { "State " select name="state" {
                option value="" { "any" }
                @for state in standby_lifecycle::STATES {
                    option value=(state.name()) selected[filters.state.as_deref() == Some(state.name())] { (state.name()) }
                }
            } }
            button type="submit" { "Filter" }
        }
        p.count { (shown.len()) " of " (status.machines.len()) " machines" }
        table #items {
            thead { tr { th { "Machine" } th { "State" } th { "Health" } th { "RPO / threshold" } th { "Latest point" } th { "Runs at" } } }
            tbody {
                @for machine in &shown {
                    tr data-machine=(machine.name) {
                        td { a href=(format!("/machines/{}", standby_api::routes::encode(&machine.name))) { (machine.name) } }
                        td { (machine.state.name()) }
                        td { (health_badge(machine.health)) }
                        td { (rpo_cell(machine, &chart(&machine.name))) }
                        td { (latest_of(machine)) }
                        td { (machine.site) @if machine.running { " (running)" } }
                    }
                }
            }
        }
    }
}

fn latest_of(machine: &MachineStatus) -> String {
    machine.disks.iter().flatten().filter_map(|disk| disk.latest.clone()).min().unwrap_or_else(|| "—".into())
}

/// Whether `command` stops or replaces what runs, so the console asks first.
fn disruptive(command: Command) -> bool {
    !matches!(command, Command::Protect | Command::TestFailover | Command::CleanupTestFailover)
}

/// A machine: its disks, its points on a timeline, the actions its state allows.
async fn machine(
    AxumState(console): Shared,
    caller: axum::Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let can_act = caller.can_act();
    let made = on_worker(move || {
        let data_version = console.daemon.state_version()?;
        console.machine_pages.sweep(PAGES_KEPT, |page| page.made.elapsed() < MACHINE_PAGE_FRESH);
        console.machine_pages.with(
            &(name.clone(), can_act),
            |page| page.data_version == data_version && page.made.elapsed() < MACHINE_PAGE_FRESH,
            |_| {
                let made = Instant::now();
                let body = machine_page(&console.daemon, &name, can_act)?.into_string().into();
                Ok(MachinePage { data_version, made, body })
            },
            |page| page.body.clone(),
        )
    })
    .await;
    match made {
        Ok(body) => page("Machine", Some(&caller), maud::PreEscaped(&*body)).into_response(),
        Err(e) => answer("Machine", &caller, Err(e)),
    }
}

/// The body of a machine's page, found now.
fn machine_page(daemon: &Daemon, name: &str, can_act: bool) -> Result<Markup, crate::error::ControlError> {
    let status = daemon.status(Some(name))?.machines.remove(0);
    let points = daemon.points(name)?;
    let name = standby_api::routes::encode(&status.name);
    Ok(html! {
        h1 { (status.name) }
        p { "State " strong #state { (status.state.name()) } ", health " (health_badge(status.health)) ", runs at the " (status.site) " site" }
        @if let Some(problems) = &status.problems { ul.problems { @for problem in problems { li { (problem) } } } }
        h2 { "Disks" }
        table { tbody { @for disk in status.disks.iter().flatten() {
            tr { td { (disk.disk) } td { "RPO " (disk.rpo_seconds.map(|r| format!("{r:.1} s")).unwrap_or_else(|| "—".into())) } td { "latest " (disk.latest.clone().unwrap_or_else(|| "—".into())) } }
        } } }
        h2 { "Recovery points" }
        @match (&points.from, &points.to) {
            (Some(from), Some(to)) => {
                p #window { "Any moment from " time { (from) } " to " time { (to) } " can be restored." }
                ol.timeline #timeline data-from=(from) data-to=(to) {
                    @for point in &points.points {
                        li class=(point.kind.clone()) data-time=(point.time) {
                            button.pick type="button" data-point=(point.time) { time { (point.time) } " " (point.kind) @if !point.label.is_empty() { " · " (point.label) } }
                        }
                    }
                }
            }
            _ => p { "No point yet." }
        }
        @if can_act {
            h2 { "Actions" }
            // Planned failover is one action (synchronising first is its box).
            @for command in status.state.allowed().into_iter().filter(|c| *c != Command::PlannedFailover { sync_first: true }) {
                (action_form(&name, command))
            }
        }
    })
}

/// The form of one action, with the fields it takes.
fn action_form(machine: &str, command: Command) -> Markup {
    let operation = standby_api::routes::operation(command);
    let takes_point = matches!(command, Command::TestFailover | Command::Failover | Command::ChangePoint);
    html! {
        form.action method="post" action=(format!("/machines/{machine}/{operation}")) data-confirm=[disruptive(command).then(|| format!("{operation} {machine}?"))] {
            @if takes_point {
                label { "Point " input.point type="text" name="point" placeholder="latest, an id, or a time in the window" required[command == Command::ChangePoint]; }
            }
            @if command == Command::Failover { label { input type="checkbox" name="shutdown_source" value="true"; " shut the source down" } }
            @if matches!(command, Command::PlannedFailover { .. }) { label { input type="checkbox" name="sync_first" value="true"; " synchronize first" } }
            @if command == Command::Reprotect {
                label { input type="checkbox" name="alternate_location" value="true"; " to an alternate location" }
                label { input type="checkbox" name="discard_source_writes" value="true"; " discard the old source's writes" }
            }
            button type="submit" data-command=(operation) { (operation) }
        }
    }
}

/// An action: sent to the API as the session's caller, then its job.
async fn act(
    AxumState(console): Shared,
    caller: axum::Extension<Caller>,
    UrlPath((name, action)): UrlPath<(String, String)>,
    Form(fields): Form<HashMap<String, String>>,
) -> Response {
    let mut body = serde_json::Map::new();
    for (key, value) in fields {
        let value = match value.as_str() {
            "true" => serde_json::Value::Bool(true),
            "" => continue,
            _ => serde_json::Value::String(value),
        };
        body.insert(key, value);
    }
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(standby_api::routes::machine(&name, &action))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::Value::Object(body).to_string()))
        .expect("a request builds");
    request.extensions_mut().insert(caller.0.clone());
    let answered = console.api.clone().oneshot(request).await.expect("routers do not fail");
    let status = answered.status();
    let bytes = axum::body::to_bytes(answered.into_body(), 1 << 20).await.unwrap_or_default();
    if status.is_success() {
        if let Ok(started) = serde_json::from_slice::<JobStarted>(&bytes) {
            return Redirect::to(&format!("/jobs/{}", started.job)).into_response();
        }
        return Redirect::to(&format!("/machines/{}", standby_api::routes::encode(&name))).into_response();
    }
    let message =
        serde_json::from_slice::<ErrorBody>(&bytes).map(|error| error.message).unwrap_or_else(|_| status.to_string());
    let body = html! {
        p.error role="alert" { (message) }
        p { a href=(format!("/machines/{}", standby_api::routes::encode(&name))) { "Back to " (name) } }
    };
    (status, page("Refused", Some(&caller), body)).into_response()
}

async fn jobs(AxumState(console): Shared, caller: axum::Extension<Caller>) -> Response {
    let daemon = console.daemon.clone();
    let made = on_worker(move || daemon.deployment()?.state.jobs()).await.map(|mut jobs| {
        jobs.reverse();
        html! {
            h1 { "Jobs" }
            table #jobs {
                thead { tr { th { "Job" } th { "Subject" } th { "Command" } th { "State" } th { "Updated" } } }
                tbody { @for job in jobs.iter().take(500) {
                    tr { td { a href=(format!("/jobs/{}", job.id)) { (job.id) } } td { (job.machine) } td { (job.command) } td class=(job.state.name()) { (job.state.name()) } td { (job.updated) } }
                } }
            }
        }
    });
    answer("Jobs", &caller, made)
}

/// One job, step by step; the page reloads itself while the job runs.
async fn job(AxumState(console): Shared, caller: axum::Extension<Caller>, UrlPath(id): UrlPath<i64>) -> Response {
    let daemon = console.daemon.clone();
    let can_act = caller.can_act();
    let made = on_worker(move || {
        let deployment = daemon.deployment()?;
        let job = deployment.state.job(id)?;
        let state = deployment.state.machine(&job.machine).map(|machine| machine.state).ok();
        Ok((job, state))
    })
    .await
    .map(|(job, state)| {
        let running = job.state == standby_lifecycle::job::JobState::Running;
        let body = html! {
            h1 { "Job " (job.id) ": " (job.command) " " (job.machine) }
            p { "State " strong #job-state { (job.state.name()) } }
            @if let Some(error) = &job.error { p.error role="alert" { (error) } }
            ol.steps #steps {
                @for step in &job.steps {
                    li class=(step.state.name()) { strong { (step.name) } " — " (step.state.name()) @if !step.detail.is_empty() { pre { (step.detail) } } }
                }
            }
            @if can_act && state == Some(State::ReadyToComplete) {
                (action_form(&standby_api::routes::encode(&job.machine), Command::CompleteFailover))
            }
            p { a href=(format!("/machines/{}", standby_api::routes::encode(&job.machine))) { "The machine" } }
        };
        (body, running)
    });
    answer_with("Job", &caller, made)
}

async fn alerts(AxumState(console): Shared, caller: axum::Extension<Caller>) -> Response {
    let daemon = console.daemon.clone();
    let made = on_worker(move || daemon.deployment()?.state.alerts(true)).await.map(|alerts| {
        html! {
            h1 { "Alerts" }
            @if alerts.iter().all(|alert| alert.cleared.is_some()) { p { "No alert stands." } }
            table #alerts {
                thead { tr { th { "Severity" } th { "Kind" } th { "Subject" } th { "Message" } th { "Raised" } th { "Cleared" } } }
                tbody { @for alert in alerts.iter().rev() {
                    tr class=(if alert.cleared.is_some() { "cleared" } else { "standing" }) {
                        td { (health_badge(Some(alert.severity))) } td { (alert.kind.name()) } td { (alert.subject) } td { (alert.message) } td { (alert.raised) } td { (alert.cleared.clone().unwrap_or_default()) }
                    }
                } }
            }
        }
    });
    answer("Alerts", &caller, made)
}

async fn sites(AxumState(console): Shared, caller: axum::Extension<Caller>) -> Response {
    let daemon = console.daemon.clone();
    let made = on_worker(move || daemon.sites()).await.map(|list| {
        html! {
            h1 { "Sites" }
            table #sites {
                thead { tr { th { "Site" } th { "Host" } th { "Answers" } th { "Vault" } th { "Replicating into it" } } }
                tbody { @for site in &list.sites {
                    tr { td { (site.site) } td { (site.address.clone().unwrap_or_else(|| "this host".into())) }
                         td { @if site.reachable { span.badge.healthy { "reachable" } } @else { span.badge.critical { "unreachable" } } " since " (site.since) }
                         td { (site.vault) } td { (site.replicating) } }
                } }
            }
        }
    });
    answer("Sites", &caller, made)
}

impl Caller {
    /// Whether it may act (the console shows actions to those only).
    pub(crate) fn can_act(&self) -> bool {
        matches!(self, Caller::Local | Caller::Token { role: TokenRole::Admin, .. })
    }
}

const CSS: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");
