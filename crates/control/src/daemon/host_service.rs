//! `standby serve` on a joined host (a host per site, the control plane on
//! the other one): this site's agent. It runs what the control plane asks
//! for through its [`LocalHost`] (each [`Act`] of `site/remote.rs`, on the
//! TLS listener, answered to the control plane's host only), serves this
//! site's vault to the other host, and starts again the helpers that die
//! (told to the control plane when it asks). It decides nothing and starts
//! no machine of its own accord: after a crash it adopts what still runs
//! and waits to be asked, so a machine that failed over to the other site
//! is never started here again behind the control plane's back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use standby_lifecycle::Site;
use standby_link::host_client::HOST_CALL;
use standby_link::vault_service::WireError;
use standby_link::Peer;

use super::lock;
use crate::config::HostConfig;
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::site::remote::{paths_to_wire, read_act, Act, FailureKind, Outcome, WireRestart};
use crate::site::{LocalHost, SiteHost, SUPERVISION_INTERVAL};

/// A joined host's agent.
pub(super) struct HostService {
    home: PathBuf,
    host: LocalHost,
    /// The site whose host holds the control plane: the only caller.
    control_site: Site,
    /// Helpers found dead and started again, until the control plane asks.
    restarts: Mutex<Vec<WireRestart>>,
}

/// At most this many restarts wait for the control plane (a control plane
/// away for long hears of the latest).
const RESTARTS_KEPT: usize = 1000;

impl HostService {
    pub(super) fn new(
        deployment: &Deployment,
        host: &HostConfig,
        exe: &Path,
    ) -> Result<Arc<HostService>, ControlError> {
        let service = HostService {
            home: deployment.home.clone(),
            host: LocalHost::new(deployment, exe)?,
            control_site: host.site.other(),
            restarts: Mutex::default(),
        };
        let adopted = service.host.adopt_left_running(&deployment.run_dir().join("machines"))?;
        if !adopted.is_empty() {
            eprintln!("standby: adopted running machines: {}", adopted.join(", "));
        }
        Ok(Arc::new(service))
    }

    /// Starts again the helpers that died, forever (a loop of its own).
    pub(super) fn supervise_loop(&self) {
        loop {
            for restart in self.host.supervise() {
                eprintln!("standby: {restart}");
                let mut restarts = lock(&self.restarts);
                if restarts.len() == RESTARTS_KEPT {
                    restarts.remove(0);
                }
                restarts.push(restart.into());
            }
            std::thread::sleep(SUPERVISION_INTERVAL);
        }
    }

    /// Carries out the act in `body` (as the wire has it); its outcome,
    /// as the wire has it.
    fn answer(&self, body: Value) -> Outcome {
        let mut act = match read_act(body, &self.home) {
            Ok(act) => act,
            Err(message) => return Outcome::Failed { kind: FailureKind::Refused, message },
        };
        if !act.vaults_mut().is_empty() {
            let deployment = match Deployment::open(&self.home) {
                Ok(deployment) => deployment,
                Err(e) => return Outcome::of::<()>(Err(e)),
            };
            for vault in act.vaults_mut() {
                if let Some(site) = vault.site {
                    *vault = deployment.vault_at(site);
                }
            }
        }
        let mut outcome = self.carry_out(act);
        if let Outcome::Done(value) = &mut outcome {
            paths_to_wire(value, &self.home);
        }
        outcome
    }

    fn carry_out(&self, act: Act) -> Outcome {
        let host = &self.host;
        match act {
            Act::Accelerator { kernel } => Outcome::of(Ok(host.accelerator(kernel.as_deref()))),
            Act::AcceleratorReason => Outcome::of(Ok(host.accelerator_reason())),
            Act::Launch { spec } => Outcome::of(host.launch(&spec)),
            Act::HealthProbe { check, key, environment, netns } => {
                Outcome::of(host.health_probe(&check, &key, &environment, netns.as_deref()))
            }
            Act::GroupPoint { disks, label, app_consistent, within_ms } => Outcome::of(host.group_point(
                &disks,
                &label,
                app_consistent,
                std::time::Duration::from_millis(within_ms),
            )),
            Act::AdoptMachine { key, run_dir } => Outcome::of(host.adopt_machine(&key, &run_dir)),
            Act::Runtime { key } => Outcome::of(Ok(host.runtime(&key))),
            Act::RunningMachines => Outcome::of(Ok(host.running_machines())),
            Act::StopMachine { key, how } => Outcome::of(host.stop_machine(&key, how)),
            Act::Pause { key } => Outcome::of(host.pause(&key)),
            Act::Resume { key } => Outcome::of(host.resume(&key)),
            Act::Drive { key, index } => Outcome::of(host.drive(&key, index)),
            Act::SwitchDrive { key, index, drive } => Outcome::of(host.switch_drive(&key, index, &drive)),
            Act::Snapshots { key } => Outcome::of(host.snapshots(&key)),
            Act::Freeze { key, timeout } => Outcome::of(Ok(host.freeze(&key, timeout))),
            Act::Thaw { key } => Outcome::of(Ok(host.thaw(&key))),
            Act::ThawAll => {
                host.thaw_all();
                Outcome::of(Ok(()))
            }
            Act::EnsureSplitter { spec } => Outcome::of(host.ensure_splitter(&spec)),
            Act::SplitterStatus { disk } => Outcome::of(host.splitter_status(&disk)),
            Act::SplitterRunning { disk, run_dir } => Outcome::of(Ok(host.splitter_running(&disk, &run_dir))),
            Act::Mark { disk, app_consistent, label, wait } => {
                Outcome::of(host.mark(&disk, app_consistent, &label, wait))
            }
            Act::StopSplitter { disk, run_dir } => Outcome::of(host.stop_splitter(&disk, &run_dir)),
            Act::ServeExport { spec } => Outcome::of(host.serve_export(&spec)),
            Act::StopExport { name, run_dir } => Outcome::of(host.stop_export(&name, &run_dir)),
            Act::Restarts => Outcome::of(Ok(std::mem::take(&mut *lock(&self.restarts)))),
            Act::LocalBytes { overlay } => Outcome::of(host.local_bytes(&overlay)),
            Act::IntentLog { image } => Outcome::of(host.intent_log(&image)),
            Act::SetIntentLog { image, ranges } => Outcome::of(host.set_intent_log(&image, ranges.as_deref())),
            Act::OverlayRanges { overlay } => Outcome::of(host.overlay_ranges(&overlay)),
            Act::CopyRanges { from, to, ranges } => Outcome::of(host.copy_ranges(&from, &to, &ranges)),
            Act::SameFile { a, b } => Outcome::of(Ok(host.same_file(&a, &b))),
            Act::TakeOverOverlay { overlay, image } => Outcome::of(host.take_over_overlay(&overlay, &image)),
            Act::ImportDisk { source, target } => Outcome::of(host.import_disk(&source, &target)),
            Act::SeedJournal { vault, disk, image } => Outcome::of(host.seed_journal(&vault, &disk, &image)),
            Act::RestoreJournal { vault, disk, time_micros, image } => {
                Outcome::of(host.restore_journal(&vault, &disk, time_micros, &image))
            }
            Act::RemoveFiles { files } => Outcome::of(host.remove_files(&files)),
            Act::RemoveDir { dir } => Outcome::of(host.remove_dir(&dir)),
            Act::MoveInto { files, folder } => Outcome::of(host.move_into(&files, &folder)),
            Act::CreateDir { dir } => Outcome::of(host.create_dir(&dir)),
            Act::IsFile { file } => Outcome::of(Ok(host.is_file(&file))),
        }
    }

    /// The machines running here, for the log at stop.
    pub(super) fn running_machines(&self) -> Vec<String> {
        self.host.running_machines()
    }
}

/// The route of the control plane's acts.
pub(super) fn routes(service: Arc<HostService>) -> Router {
    let control_site = service.control_site;
    Router::new()
        .route(HOST_CALL, post(act))
        .layer(axum::middleware::from_fn_with_state(control_site, control_plane_only))
        .with_state(service)
}

async fn control_plane_only(
    AxumState(control): AxumState<Site>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let refusal = match request.extensions().get::<Peer>() {
        Some(Peer::Host { site }) if site == control.name() => return next.run(request).await,
        Some(Peer::Host { site }) => refused(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this host acts for the control plane's host (the {control} site's) only, not the {site} site's"),
        ),
        _ => refused(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this host acts for the deployment's control plane only: connect with its host certificate".into(),
        ),
    };
    standby_link::server::refuse_after_body(request, refusal).await
}

async fn act(AxumState(service): AxumState<Arc<HostService>>, Json(body): Json<Value>) -> Response {
    match tokio::task::spawn_blocking(move || service.answer(body)).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(_) => refused(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the act failed".into()),
    }
}

fn refused(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(WireError { code: code.into(), message })).into_response()
}

/// The answer of a joined host's unix socket to every request: operators
/// drive the deployment through the control plane.
pub(super) fn elsewhere(host: &HostConfig) -> Router {
    let control = host.control.clone().unwrap_or_default();
    let message = format!(
        "this host runs the {} site's agent; the deployment is driven from the control plane's host at {control}: \
         run the command there, or here with --control {control} --token-file FILE",
        host.site
    );
    Router::new().fallback(move || {
        let body = standby_api::ErrorBody::new(standby_api::ErrorCode::Conflict, message.clone());
        async move { (StatusCode::CONFLICT, Json(body)).into_response() }
    })
}
