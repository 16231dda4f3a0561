//! Alerts: raised and cleared by the daemon, every few seconds, from what
//! `status`, `sites` and the jobs say; kept in the state (`standby alerts`,
//! `GET /v1/alerts`) and sent to the webhook of `[alerts]`, if any, on a
//! thread of their own, retried with backoff: a webhook that is slow or
//! down never holds up replication, nor the next alert's evaluation.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use standby_api::{AlertEvent, AlertKind, HealthLevel, StatusList};
use standby_lifecycle::job::{JobKind, JobState};
use standby_lifecycle::Command;

use super::{lock, Daemon};
use crate::deployment::Deployment;
use crate::error::ControlError;

/// How often the conditions are looked at.
const EVALUATION_INTERVAL: Duration = Duration::from_secs(2);
/// How long a disk with writes to ship may go without storing any before
/// replication is said to be stalled.
const STALLED_AFTER: Duration = Duration::from_secs(60);
/// Events waiting for the webhook; more are dropped (and said so).
const WEBHOOK_QUEUE: usize = 1000;
/// The longest wait between two tries of one delivery.
const WEBHOOK_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long one delivery may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// An alert's cause, as found now.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    severity: HealthLevel,
    message: String,
}

/// What each disk last stored, and since when, to tell a stall.
type Progress = HashMap<String, (u64, Instant)>;

impl Daemon {
    /// Evaluates the alerts every few seconds, for as long as the daemon runs.
    pub(super) fn alerts_loop(self: &Arc<Self>) {
        let webhook = Webhook::start(self.home.clone());
        let mut progress = Progress::new();
        loop {
            if let Err(e) = self.evaluate_alerts(&webhook, &mut progress) {
                eprintln!("standby: the alerts could not be evaluated: {e}");
            }
            std::thread::sleep(EVALUATION_INTERVAL);
        }
    }

    /// Raises the alerts whose cause is found and were not standing, clears
    /// the standing ones whose cause is gone.
    fn evaluate_alerts(&self, webhook: &Webhook, progress: &mut Progress) -> Result<(), ControlError> {
        let found = self.alert_conditions(progress)?;
        let deployment = self.deployment()?;
        let standing = deployment.state.alerts(false)?;
        for alert in &standing {
            if !found.contains_key(&(alert.kind, alert.subject.clone())) {
                let cleared = deployment.state.clear_alert(alert)?;
                eprintln!("standby: alert cleared: {} {}", cleared.kind.name(), cleared.subject);
                webhook.send(AlertEvent { event: "cleared".into(), alert: cleared });
            }
        }
        for ((kind, subject), condition) in found {
            if standing.iter().any(|alert| alert.kind == kind && alert.subject == subject) {
                continue;
            }
            let raised = deployment.state.raise_alert(kind, &subject, condition.severity, &condition.message)?;
            eprintln!("standby: alert raised: {} {}: {}", kind.name(), subject, condition.message);
            webhook.send(AlertEvent { event: "raised".into(), alert: raised });
        }
        Ok(())
    }

    /// Every alert's cause found now, by kind and subject.
    fn alert_conditions(
        &self,
        progress: &mut Progress,
    ) -> Result<BTreeMap<(AlertKind, String), Condition>, ControlError> {
        let mut found = BTreeMap::new();
        let mut raise = |kind, subject: String, severity, message: String| {
            found.insert((kind, subject), Condition { severity, message });
        };
        // The alerts loop keeps the status board up to date (`sites` reads it too).
        let board = self.refresh_statuses()?;
        let status = &board.list;
        for site in self.sites()?.sites.iter().filter(|site| !site.reachable) {
            let message = format!("the {} site's host does not answer (since {})", site.site, site.since);
            raise(AlertKind::SiteUnreachable, site.site.name().to_string(), HealthLevel::Critical, message);
        }
        replication_conditions(status, progress, Instant::now(), &mut raise);
        for machine in &status.machines {
            let last = lock(&self.consistency).get(&machine.name).map(|consistency| consistency.last.clone());
            if let Some(Err(why)) = last {
                let message = format!("the last app-consistent point could only be crash-consistent: {why}");
                raise(AlertKind::AppConsistentFailed, machine.name.clone(), HealthLevel::Warning, message);
            }
        }
        let deployment = self.deployment()?;
        for plan in deployment.state.plans()? {
            if let Some(drill) = crate::plans::last_drill(&plan).filter(|drill| !drill.passed) {
                let message = format!(
                    "the last drill of plan '{}' failed ({}): {}",
                    plan.name,
                    drill.at,
                    drill.error.unwrap_or_default()
                );
                raise(AlertKind::DrillFailed, format!("plan/{}", plan.name), HealthLevel::Warning, message);
            }
        }
        let mut drills: HashMap<String, (JobState, Option<String>)> = HashMap::new();
        for job in deployment.state.jobs()? {
            // A plan's drills are its own (above); a group's parts are its machines'.
            let machine = matches!(job.subject, standby_lifecycle::job::Subject::Machine(_));
            if machine && job.kind == JobKind::Lifecycle(Command::TestFailover) {
                // Jobs come oldest first: the last one stays.
                drills.insert(job.machine.clone(), (job.state, job.error.clone()));
            }
        }
        for (machine, (state, error)) in drills {
            if state == JobState::Failed {
                let message = format!("the last drill failed: {}", error.unwrap_or_default());
                raise(AlertKind::DrillFailed, machine, HealthLevel::Warning, message);
            }
        }
        Ok(found)
    }
}

/// The RPO, vault and stall conditions of every replicating disk.
fn replication_conditions(
    status: &StatusList,
    progress: &mut Progress,
    now: Instant,
    raise: &mut impl FnMut(AlertKind, String, HealthLevel, String),
) {
    for machine in &status.machines {
        if let (Some(rpo), Some(threshold)) = (machine.rpo_seconds, machine.rpo_threshold_seconds) {
            if rpo > threshold as f64 {
                let message = format!("RPO {rpo:.0} s is over the policy's threshold of {threshold} s");
                raise(AlertKind::RpoOverThreshold, machine.name.clone(), HealthLevel::Critical, message);
            }
        }
        for disk in machine.disks.iter().flatten() {
            let Some(splitter) = &disk.splitter else { continue };
            let subject = format!("{}/{}", machine.name, disk.disk);
            if let Some(error) = &splitter.error {
                raise(AlertKind::VaultError, subject.clone(), HealthLevel::Critical, error.clone());
            }
            let stored = splitter.bytes_shipped;
            let since = match progress.get(&subject) {
                Some((before, since)) if *before == stored => *since,
                _ => now,
            };
            progress.insert(subject.clone(), (stored, since));
            if splitter.lag_bytes > 0 && now.duration_since(since) >= STALLED_AFTER {
                let message = format!(
                    "{} bytes wait to be shipped and nothing reached the vault for {} s",
                    splitter.lag_bytes,
                    now.duration_since(since).as_secs()
                );
                raise(AlertKind::ReplicationStalled, subject, HealthLevel::Warning, message);
            }
        }
    }
}

/// The webhook's delivery thread, fed through a bounded queue.
struct Webhook {
    events: SyncSender<AlertEvent>,
}

impl Webhook {
    fn start(home: std::path::PathBuf) -> Webhook {
        let (events, queue) = std::sync::mpsc::sync_channel(WEBHOOK_QUEUE);
        let started = std::thread::Builder::new().name("alerts-webhook".into()).spawn(move || deliver(&home, queue));
        if let Err(e) = started {
            eprintln!("standby: the alerts' webhook cannot run: {e}");
        }
        Webhook { events }
    }

    /// Queues `event` for the webhook; never waits.
    fn send(&self, event: AlertEvent) {
        if let Err(TrySendError::Full(event)) = self.events.try_send(event) {
            eprintln!("standby: the webhook is {WEBHOOK_QUEUE} alerts behind; alert {} not sent", event.alert.id);
        }
    }
}

/// Delivers each event in turn to the webhook the config names at that
/// moment, trying again with backoff (1 s, doubling, at most a minute)
/// until it answers 2xx or the config names none.
fn deliver(home: &std::path::Path, queue: Receiver<AlertEvent>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("standby: the alerts' webhook has no runtime");
        return;
    };
    // The client's timers belong to this runtime.
    let _entered = runtime.enter();
    let client = match reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("standby: the alerts' webhook has no client: {e}");
            return;
        }
    };
    for event in queue {
        let mut wait = Duration::from_secs(1);
        while let Some(url) = Deployment::read_config(home).ok().and_then(|config| config.alerts.webhook) {
            let sent = runtime.block_on(client.post(&url).json(&event).send());
            match sent {
                Ok(answer) if answer.status().is_success() => break,
                Ok(answer) => eprintln!("standby: the webhook {url} answered {}; trying again", answer.status()),
                Err(e) => eprintln!("standby: the webhook {url} failed ({e}); trying again"),
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(WEBHOOK_BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use standby_api::{DiskStatus, MachineStatus, SplitterStatus};
    use standby_lifecycle::{Site, State};

    use super::*;

    fn machine(rpo: f64, lag_bytes: u64, bytes_shipped: u64, error: Option<&str>) -> StatusList {
        let splitter =
            SplitterStatus { lag_bytes, bytes_shipped, error: error.map(str::to_string), ..SplitterStatus::default() };
        let disk = DiskStatus {
            disk: "web.disk0".into(),
            rpo_seconds: Some(rpo),
            splitter: Some(splitter),
            latest: None,
            latest_processed: None,
            latest_app_consistent: None,
        };
        let machine = MachineStatus {
            health: Some(HealthLevel::Healthy),
            replicates_to: Some(Site::Recovery),
            rpo_seconds: Some(rpo),
            rpo_threshold_seconds: Some(60),
            disks: Some(vec![disk]),
            ..MachineStatus::recorded("web", State::Protected, Site::Primary, true, None)
        };
        StatusList { machines: vec![machine], plans: Vec::new() }
    }

    fn kinds(status: &StatusList, progress: &mut Progress, now: Instant) -> Vec<(AlertKind, String)> {
        let mut found = Vec::new();
        replication_conditions(status, progress, now, &mut |kind, subject, _, _| found.push((kind, subject)));
        found
    }

    #[test]
    fn rpo_vault_errors_and_stalls_are_found_and_go_when_their_cause_does() {
        let (mut progress, start) = (Progress::new(), Instant::now());
        let disk = "web/web.disk0".to_string();
        assert_eq!(kinds(&machine(2.0, 0, 10, None), &mut progress, start), []);
        assert_eq!(
            kinds(&machine(61.0, 0, 10, None), &mut progress, start),
            [(AlertKind::RpoOverThreshold, "web".into())]
        );
        assert_eq!(
            kinds(&machine(1.0, 0, 10, Some("no vault")), &mut progress, start),
            [(AlertKind::VaultError, disk.clone())]
        );
        // Writes wait and nothing is stored: stalled after a minute, not before.
        let later = start + STALLED_AFTER - Duration::from_secs(1);
        assert_eq!(kinds(&machine(1.0, 4096, 10, None), &mut progress, later), []);
        let stalled = start + STALLED_AFTER;
        assert_eq!(
            kinds(&machine(1.0, 4096, 10, None), &mut progress, stalled),
            [(AlertKind::ReplicationStalled, disk)]
        );
        // Something stored: not stalled any more.
        assert_eq!(kinds(&machine(1.0, 4096, 20, None), &mut progress, stalled + Duration::from_secs(1)), []);
    }
}
