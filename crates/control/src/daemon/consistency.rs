//! App-consistent points on each policy's schedule: the guest's
//! filesystems frozen through qemu-guest-agent (`guest-fsfreeze-freeze`),
//! an app-consistent point marked on every disk (answered as soon as it has
//! its place in the disk's change stream: the guest stays frozen for
//! milliseconds even when the vault is slow or out of reach, and the point
//! reaches the vault with the writes before it), the filesystems thawed. A
//! guest without an agent gets crash-consistent points only, and `status`
//! says why.
//!
//! A daemon that dies with a guest frozen would leave it frozen: the next
//! daemon thaws every running machine's filesystems when it starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use standby_lifecycle::State;

use super::{instance, lock, Daemon};
use crate::machine::Machine;
use crate::site::MarkWait;

/// How long a guest has to answer on its agent channel.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the schedule is looked at.
const TICK: Duration = Duration::from_secs(2);

/// A machine's app-consistency as the daemon last saw it.
#[derive(Debug, Clone)]
pub(super) struct Consistency {
    /// When the next app-consistent point is due.
    pub due: Instant,
    /// What the last attempt recorded, or why it could not (`status`
    /// says it beside what the vault holds).
    pub last: Result<String, String>,
}

impl Daemon {
    /// Freezes, marks and thaws; says what it recorded, or why the point
    /// could only be crash-consistent.
    pub(super) fn app_consistent_point(&self, machine: &Machine) -> Result<String, String> {
        let name = &machine.definition.name;
        let key = instance(name, machine.active_site);
        let host = self.site(machine.active_site);
        let started = Instant::now();
        let frozen = host.freeze(&key, AGENT_TIMEOUT)?;
        let mut points = Vec::new();
        let mut failure = None;
        for disk in &machine.disks {
            match host.mark(&disk.vault_disk, true, "app-consistent", MarkWait::Queued) {
                Ok(_) => points.push(disk.vault_disk.clone()),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        // Thawed whatever happened.
        let thawed = host.thaw(&key);
        let held = started.elapsed();
        if let Some(failure) = failure {
            return Err(format!("the point could not be recorded ({failure})"));
        }
        thawed.map_err(|e| format!("the guest agent could not thaw ({e})"))?;
        Ok(format!(
            "point of {} at {} ({} filesystem(s) frozen for {} ms)",
            points.join(", "),
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            frozen,
            held.as_millis()
        ))
    }

    /// Runs forever: takes app-consistent points when due.
    pub(super) fn consistency_loop(self: Arc<Self>) {
        loop {
            std::thread::sleep(TICK);
            let Ok(deployment) = self.deployment() else { continue };
            let Ok(machines) = deployment.state.machines() else { continue };
            for machine in machines {
                let name = machine.definition.name.clone();
                // A group's machines are frozen together by the groups loop.
                let eligible = machine.group.is_none()
                    && machine.state.replicating()
                    && machine.state != State::Enabling
                    && self.runtime(&machine, machine.active_site.into()).running
                    && self.claims.holder(&name).is_none();
                if !eligible {
                    continue;
                }
                let Ok(policy) = deployment.state.policy(machine.policy.as_deref().unwrap_or("default")) else {
                    continue;
                };
                let period = Duration::from_secs(policy.app_consistent_seconds.max(1));
                let due = lock(&self.consistency).get(&name).map(|c| c.due);
                if due.is_some_and(|due| Instant::now() < due) {
                    continue;
                }
                let last = self.app_consistent_point(&machine);
                lock(&self.consistency).insert(name, Consistency { due: Instant::now() + period, last });
            }
        }
    }

    /// Thaws the filesystems of every running machine whose guest answers:
    /// a daemon that died between a freeze and its thaw left them frozen.
    pub(super) fn thaw_all(&self) {
        for host in self.sites.hosts() {
            host.thaw_all();
        }
    }
}
