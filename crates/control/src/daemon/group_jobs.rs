//! Lifecycle commands on a machine of a replication group act on the whole
//! group: one job of the group (`Subject::Group`) claiming every machine
//! of it, each machine's part a job of its own run beside the others
//! (`Daemon::spawn_parts`), from one common point:
//!
//! - a drill and a change of point take the point the operator asked for
//!   (default `latest-group`) resolved once, for the group, before any
//!   part starts: a group point by its label, `latest` as the newest
//!   moment every disk of the group has, a time as it is (a point id names
//!   one disk's point and is refused);
//! - a failover's parts first shut their sources down and wait for their
//!   last writes, then meet ([`Agreement`]): the point is chosen once all
//!   have arrived, for all, or, when one failed before, none goes on and
//!   each rolls back: the group moves together or not at all. A planned
//!   move loses nothing and takes each machine's latest once all sources
//!   are stopped and drained; so does an unplanned one whose every source
//!   was stopped and drained (`--shutdown-source` with every source host
//!   answering): with no write after any source's last, every machine's
//!   own latest together is consistent, and loses nothing. Otherwise
//!   (a source that could not be stopped, or not drained) it is
//!   `latest-group`.
//!
//! Protect and unprotect stay a machine's own: they are how it joins and
//! leaves its group.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use standby_api::JobStarted;
use standby_lifecycle::job::Subject;
use standby_lifecycle::Command;

use super::engine::Part;
use super::{lock, Daemon};
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::machine::Machine;
use crate::points;

/// How long a failover's part waits for the others to reach the point's
/// choice (each is bounded by its own waits before it: the source's
/// shutdown and its last writes).
const AGREEMENT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The machines of group `group`, by name.
pub(super) fn members(deployment: &Deployment, group: &str) -> Result<Vec<Machine>, ControlError> {
    Ok(deployment.state.machines()?.into_iter().filter(|m| m.group.as_deref() == Some(group)).collect())
}

/// Whether `command` on a machine of a group acts on the whole group.
pub(super) fn acts_on_group(command: Command) -> bool {
    !matches!(command, Command::Protect | Command::Unprotect)
}

/// Where the parts of a group's failover meet to choose its point.
pub(super) struct Agreement {
    group: String,
    parts: usize,
    /// The point the operator asked for (None: `latest-group`, or each
    /// machine's latest for a planned move).
    asked: Option<String>,
    planned: bool,
    members: Vec<Machine>,
    met: Mutex<Met>,
    changed: Condvar,
}

#[derive(Default)]
struct Met {
    arrived: Vec<String>,
    /// Arrived parts whose source still ran or left writes unshipped.
    undrained: Vec<String>,
    failed: Vec<String>,
    chosen: Option<Result<String, String>>,
}

impl Agreement {
    pub(super) fn new(group: &str, members: Vec<Machine>, asked: Option<String>, planned: bool) -> Agreement {
        Agreement {
            group: group.to_string(),
            parts: members.len(),
            asked,
            planned,
            members,
            met: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    /// Machine `name` is past its source's last writes (`drained`: the
    /// source is stopped and every write it acknowledged is in the vault):
    /// waits for every other part, then returns the point all take (chosen
    /// by the first to see them all: each machine's `latest` when every
    /// source was drained and no point was asked, else with `choose`), or
    /// an error when a part failed on its way here.
    pub(super) fn agree(
        &self,
        name: &str,
        drained: bool,
        choose: impl FnOnce(&str, &[Machine], Option<&str>) -> Result<String, ControlError>,
    ) -> Result<String, ControlError> {
        let mut met = lock(&self.met);
        met.arrived.push(name.to_string());
        if !drained {
            met.undrained.push(name.to_string());
        }
        self.changed.notify_all();
        while met.arrived.len() + met.failed.len() < self.parts {
            let (waited, timeout) =
                self.changed.wait_timeout(met, AGREEMENT_TIMEOUT).unwrap_or_else(|p| p.into_inner());
            met = waited;
            if timeout.timed_out() {
                return Err(ControlError::Failed(format!(
                    "the other machines of group '{}' did not reach the choice of the point within {} s",
                    self.group,
                    AGREEMENT_TIMEOUT.as_secs()
                )));
            }
        }
        if !met.failed.is_empty() {
            return Err(ControlError::Failed(format!(
                "group '{}' does not move: {}",
                self.group,
                met.failed.join("; ")
            )));
        }
        if met.chosen.is_none() {
            let quiet = self.asked.is_none() && met.undrained.is_empty();
            let chosen = match self.planned || quiet {
                // Every source stopped and drained: each machine's latest.
                true => Ok("latest".to_string()),
                false => choose(&self.group, &self.members, self.asked.as_deref()).map_err(|e| e.to_string()),
            };
            met.chosen = Some(chosen);
        }
        met.chosen.clone().expect("chosen above").map_err(ControlError::Failed)
    }

    /// Machine `name`'s part failed: the others, waiting to choose the
    /// point or about to, roll back. After the choice nothing changes.
    pub(super) fn failed(&self, name: &str, error: &ControlError) {
        let mut met = lock(&self.met);
        if !met.arrived.iter().any(|arrived| arrived == name) {
            met.failed.push(format!("'{name}' failed: {error}"));
            self.changed.notify_all();
        }
    }
}

/// Whether `command` acts from a point the operator chooses (made one for
/// a whole group before its parts start).
fn takes_point(command: Command) -> bool {
    matches!(command, Command::TestFailover | Command::ChangePoint)
}

impl Daemon {
    /// Runs lifecycle command `command` on machine `name`: its part alone,
    /// or, for a machine of a replication group, every machine's part in
    /// one job of the group, from `point` made one for all (see the
    /// module's docs). Any machine's refusal refuses the command.
    pub(super) fn lifecycle(
        self: &Arc<Self>,
        name: &str,
        command: Command,
        point: Option<&str>,
        part: impl Fn(&Daemon, &Deployment, Machine, Option<&str>) -> Result<Part, ControlError>,
    ) -> Result<JobStarted, ControlError> {
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        match self.group_for(&deployment, &machine, command)? {
            None => {
                let part = part(self, &deployment, machine, point)?;
                self.spawn_part(&deployment, command, part)
            }
            Some((group, members)) => {
                let point = match takes_point(command) {
                    true => Some(self.group_point_text(&deployment, &group, &members, point)?),
                    false => None,
                };
                let parts: Result<Vec<Part>, ControlError> =
                    members.into_iter().map(|member| part(self, &deployment, member, point.as_deref())).collect();
                self.spawn_parts(&deployment, &Subject::Group(group), command, parts?)
            }
        }
    }

    /// The group of `machine` and its machines, when `command` on it acts
    /// on its whole group.
    pub(super) fn group_for(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        command: Command,
    ) -> Result<Option<(String, Vec<Machine>)>, ControlError> {
        match &machine.group {
            Some(group) if acts_on_group(command) => Ok(Some((group.clone(), members(deployment, group)?))),
            _ => Ok(None),
        }
    }

    /// The point group `group`'s command acts from, as a text each machine
    /// resolves to its own moment of the same point: `asked` (default
    /// `latest-group`) made one for all (see the module's docs).
    pub(super) fn group_point_text(
        &self,
        deployment: &Deployment,
        group: &str,
        members: &[Machine],
        asked: Option<&str>,
    ) -> Result<String, ControlError> {
        let asked = match asked.unwrap_or("latest-group") {
            "latest-processed" => "latest-group",
            "latest-app" => "latest-group-app",
            asked => asked,
        };
        let first = &members[0];
        let site = if first.state.on_exports() { first.active_site } else { first.active_site.other() };
        let vault = deployment.open_vault_at(site)?;
        let disks: Vec<String> = members.iter().flat_map(|m| m.disks.iter().map(|d| d.vault_disk.clone())).collect();
        if let Some(want) = points::group_want(group, asked)? {
            return points::group_label(&vault, group, &disks, want);
        }
        match standby_vault::PointSelector::parse(asked).map_err(ControlError::Refused)? {
            standby_vault::PointSelector::Latest => {
                Ok(standby_vault::format_time(points::common_latest(&vault, &disks)?))
            }
            standby_vault::PointSelector::Time(_) => Ok(asked.to_string()),
            _ => Err(ControlError::Refused(format!(
                "'{asked}' names one disk's point; group '{group}' acts from one point of all its machines: use \
                 latest-group, latest-group-app, a group point's label, latest or a time"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn meeting(parts: usize, planned: bool) -> Agreement {
        Agreement { parts, ..Agreement::new("shop", Vec::new(), None, planned) }
    }

    /// Every part waits for the others and takes the one point chosen once.
    #[test]
    fn the_parts_meet_and_take_one_point_chosen_once() {
        let agreement = meeting(3, false);
        let chosen = AtomicUsize::new(0);
        let points: Vec<String> = std::thread::scope(|scope| {
            let parts: Vec<_> = ["a", "b", "c"]
                .into_iter()
                .map(|name| {
                    let (agreement, chosen) = (&agreement, &chosen);
                    scope.spawn(move || {
                        std::thread::sleep(Duration::from_millis(if name == "c" { 200 } else { 0 }));
                        agreement.agree(name, name != "b", |_, _, _| {
                            chosen.fetch_add(1, Ordering::SeqCst);
                            Ok("group:shop:7".into())
                        })
                    })
                })
                .collect();
            parts.into_iter().map(|part| part.join().unwrap().unwrap()).collect()
        });
        assert_eq!(points, vec!["group:shop:7"; 3]);
        assert_eq!(chosen.load(Ordering::SeqCst), 1);
        assert_eq!(
            meeting(1, true).agree("a", true, |_, _, _| unreachable!("a planned move chooses nothing")).unwrap(),
            "latest"
        );
        // Every source stopped and drained: each machine's latest, unplanned too.
        let quiet = meeting(2, false);
        let points: Vec<String> = std::thread::scope(|scope| {
            let parts: Vec<_> = ["a", "b"]
                .into_iter()
                .map(|name| {
                    let quiet = &quiet;
                    scope.spawn(move || quiet.agree(name, true, |_, _, _| unreachable!("nothing to choose")))
                })
                .collect();
            parts.into_iter().map(|part| part.join().unwrap().unwrap()).collect()
        });
        assert_eq!(points, vec!["latest"; 2]);
    }

    /// A part that fails before the choice stops the parts waiting for
    /// it, naming it; one that fails after the choice changes nothing.
    #[test]
    fn a_part_that_fails_before_the_choice_stops_the_others() {
        let agreement = meeting(2, false);
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| agreement.agree("web", true, |_, _, _| Ok("never".into())));
            std::thread::sleep(Duration::from_millis(100));
            agreement.failed("db", &ControlError::Failed("its source would not stop".into()));
            let error = waiting.join().unwrap().unwrap_err().to_string();
            assert!(error.contains("group 'shop' does not move: 'db' failed: its source would not stop"), "{error}");
        });
        let agreement = meeting(1, false);
        assert_eq!(agreement.agree("web", false, |_, _, _| Ok("t".into())).unwrap(), "t");
        agreement.failed("web", &ControlError::Failed("the boot failed".into()));
        assert!(lock(&agreement.met).failed.is_empty());
    }
}
