//! Replication groups: machines protected with `--group G`, whose points
//! are made together. Every bookmark interval (the shortest of the
//! members' policies) the groups loop asks the site where the group runs
//! to make one point in the splitters of every disk of every member at
//! once (`standby_splitter::group`: acknowledgements held, points queued,
//! released); every app-consistent period it freezes every running
//! member's filesystems first, and thaws them after. A point that could
//! not be made (a member's splitter restarting, catching up, slow to
//! answer) is tried again a second later, and the group's view names the
//! member that held it back; the points the group has keep.
//!
//! A group's point is one only when every disk of every member holds it:
//! `latest-group` is the newest such point in the vault (from the journal
//! summaries' newest group points).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use standby_api::{GroupAttempt, GroupList, GroupPoint, GroupView, HeldBack};
use standby_format::PointKind;
use standby_lifecycle::{Site, State};
use standby_vault::journal::Bookmark;

use super::{instance, lock, Daemon};
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::machine::Machine;

/// How often the loop looks whether a group's point is due.
const TICK: Duration = Duration::from_millis(250);
/// A point not made is tried again this soon (unless its interval is shorter).
const RETRY: Duration = Duration::from_secs(1);
/// Every member must hold within this; each member's hold ends by itself
/// then. The guests' acknowledgements wait at most this long.
pub(super) const HOLD_BOUND: Duration = Duration::from_millis(500);
/// How long the guests' agents have to freeze their filesystems.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most machines a group takes (every disk of each is held at once).
pub(super) const GROUP_MACHINES_MAX: usize = 64;

/// What the loop knows of a group since the daemon started.
#[derive(Debug, Default)]
pub(super) struct Activity {
    due: Option<Instant>,
    app_due: Option<Instant>,
    problem: Option<String>,
    last: Option<GroupAttempt>,
    made: u64,
    not_made: u64,
    hold_max_ms: f64,
}

/// The machines of each group, by group name.
fn groups_of(machines: Vec<Machine>) -> BTreeMap<String, Vec<Machine>> {
    let mut groups: BTreeMap<String, Vec<Machine>> = BTreeMap::new();
    for machine in machines {
        if let Some(group) = machine.group.clone() {
            groups.entry(group).or_default().push(machine);
        }
    }
    groups
}

/// Refuses `machine` joining `group` when the group's machines could not
/// make points with it: another site, a member not replicating, too many.
pub(super) fn check_joining(deployment: &Deployment, machine: &Machine, group: &str) -> Result<(), ControlError> {
    standby_format::validate_group_name(group).map_err(|e| ControlError::Refused(format!("--group: {e}")))?;
    let members: Vec<Machine> =
        deployment.state.machines()?.into_iter().filter(|m| m.group.as_deref() == Some(group)).collect();
    if let Some(away) = members.iter().find(|m| m.active_site != machine.active_site) {
        return Err(ControlError::Refused(format!(
            "group '{group}' runs at the {} site ('{}' is there) and '{}' at the {}: a group's machines run at one \
             site; choose another group",
            away.active_site,
            away.name(),
            machine.name(),
            machine.active_site
        )));
    }
    if let Some(stopped) = members.iter().find(|m| !m.state.replicating()) {
        return Err(ControlError::Refused(format!(
            "group '{group}''s machine '{}' is {} (not replicating): protect it again before adding machines",
            stopped.name(),
            stopped.state
        )));
    }
    if members.len() >= GROUP_MACHINES_MAX {
        return Err(ControlError::Refused(format!(
            "group '{group}' has {} machines, the most a group takes; choose another group",
            members.len()
        )));
    }
    Ok(())
}

/// Why `members` cannot make a point now, if they cannot.
fn not_ready(members: &[Machine]) -> Option<String> {
    let site = members[0].active_site;
    if let Some(away) = members.iter().find(|m| m.active_site != site) {
        return Some(format!(
            "its machines are at different sites ('{}' at the {}, '{}' at the {})",
            members[0].name(),
            site,
            away.name(),
            away.active_site
        ));
    }
    if let Some(member) = members.iter().find(|m| !m.state.replicating()) {
        return Some(format!("'{}' is {}: it does not replicate", member.name(), member.state));
    }
    let enabling: Vec<&str> = members.iter().filter(|m| m.state == State::Enabling).map(Machine::name).collect();
    (!enabling.is_empty()).then(|| format!("initial replication of {} is running", enabling.join(", ")))
}

impl Daemon {
    /// Runs forever: makes each group's points when due.
    pub(super) fn groups_loop(self: Arc<Self>) {
        loop {
            std::thread::sleep(TICK);
            let Ok(deployment) = self.deployment() else { continue };
            let Ok(machines) = deployment.state.machines() else { continue };
            let groups = groups_of(machines);
            lock(&self.groups).retain(|name, _| groups.contains_key(name));
            for (name, members) in groups {
                self.group_tick(&deployment, &name, &members);
            }
        }
    }

    pub(super) fn group_tick(&self, deployment: &Deployment, name: &str, members: &[Machine]) {
        let problem = not_ready(members);
        let now = Instant::now();
        let (due, app_due) = {
            let mut groups = lock(&self.groups);
            let activity = groups.entry(name.to_string()).or_default();
            activity.problem = problem.clone();
            (activity.due.is_none_or(|due| now >= due), activity.app_due.is_none_or(|due| now >= due))
        };
        if problem.is_some() || !due {
            return;
        }
        let (interval, app_period) = self.group_intervals(deployment, members);
        let running: Vec<&Machine> = members.iter().filter(|m| self.runtime(m, m.active_site.into()).running).collect();
        // App-consistent when due and every member runs (a stopped one's
        // disks do not change: its filesystems are as clean as they get).
        let app = app_due && !running.is_empty() && running.iter().all(|m| self.claims.holder(m.name()).is_none());
        let attempt = self.make_group_point(name, members, if app { &running } else { &[] });
        let mut groups = lock(&self.groups);
        let activity = groups.entry(name.to_string()).or_default();
        activity.hold_max_ms = activity.hold_max_ms.max(attempt.held_ms);
        if attempt.made {
            activity.made += 1;
            activity.due = Some(now + interval);
            if app {
                activity.app_due = Some(now + app_period);
            }
        } else {
            activity.not_made += 1;
            activity.due = Some(now + interval.min(RETRY));
        }
        activity.last = Some(attempt);
    }

    /// The group's point interval and app-consistent period: the shortest
    /// of its members' policies.
    fn group_intervals(&self, deployment: &Deployment, members: &[Machine]) -> (Duration, Duration) {
        let policies: Vec<crate::state::Policy> = members
            .iter()
            .filter_map(|m| deployment.state.policy(m.policy.as_deref().unwrap_or("default")).ok())
            .collect();
        let shortest = |of: fn(&crate::state::Policy) -> u64| {
            Duration::from_secs(policies.iter().map(of).min().unwrap_or(5).max(1))
        };
        (shortest(|p| p.bookmark_seconds), shortest(|p| p.app_consistent_seconds))
    }

    /// Makes one point of group `name` (app-consistent with `frozen`'s
    /// filesystems frozen around it).
    fn make_group_point(&self, name: &str, members: &[Machine], frozen: &[&Machine]) -> GroupAttempt {
        let site = members[0].active_site;
        let host = self.site(site);
        let id = jiff::Timestamp::now().as_microsecond().max(0) as u64;
        let label = standby_format::group_point_label(name, id);
        let mut disks = Vec::new();
        let mut owners = HashMap::new();
        for member in members {
            for disk in &member.disks {
                disks.push(disk.vault_disk.clone());
                owners.insert(disk.vault_disk.clone(), member.name().to_string());
            }
        }
        let mut thaw = Vec::new();
        let mut held_back = Vec::new();
        for machine in frozen {
            let key = instance(machine.name(), site);
            match host.freeze(&key, AGENT_TIMEOUT) {
                Ok(_) => thaw.push(key),
                Err(e) => held_back.push(HeldBack {
                    machine: machine.name().to_string(),
                    disk: String::new(),
                    problem: format!("its filesystems could not be frozen ({e})"),
                }),
            }
        }
        let app_consistent = !frozen.is_empty() && held_back.is_empty();
        let made = host.group_point(&disks, &label, app_consistent, HOLD_BOUND);
        for key in thaw {
            if let Err(e) = host.thaw(&key) {
                eprintln!("standby: group '{name}': the guest agent of {key} could not thaw: {e}");
            }
        }
        let at = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let (made, held_ms) = match made {
            Ok(made) => {
                held_back.extend(made.held_back.into_iter().map(|(disk, problem)| HeldBack {
                    machine: owners.get(&disk).cloned().unwrap_or_default(),
                    disk,
                    problem,
                }));
                (made.made, made.held_for_micros as f64 / 1000.0)
            }
            Err(e) => {
                held_back.push(HeldBack {
                    machine: String::new(),
                    disk: String::new(),
                    problem: format!("the {site} site's host: {e}"),
                });
                (false, 0.0)
            }
        };
        // An app-consistent point whose freeze failed is still a point,
        // crash-consistent; what held the freeze back is said with it.
        GroupAttempt { at, made, app_consistent, held_ms, held_back }
    }

    /// Every group, by name.
    pub(super) fn groups(&self) -> Result<GroupList, ControlError> {
        let deployment = self.deployment()?;
        let groups = groups_of(deployment.state.machines()?);
        let views: Result<Vec<GroupView>, ControlError> =
            groups.iter().map(|(name, members)| self.group_view(&deployment, name, members)).collect();
        Ok(GroupList { groups: views? })
    }

    /// Group `name`.
    pub(super) fn group(&self, name: &str) -> Result<GroupView, ControlError> {
        let deployment = self.deployment()?;
        let groups = groups_of(deployment.state.machines()?);
        let Some(members) = groups.get(name) else {
            let known: Vec<&str> = groups.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(ControlError::NotFound(format!(
                "no replication group named '{name}' (known: {known}); `standby protect NAME --group {name}` makes \
                 one"
            )));
        };
        self.group_view(&deployment, name, members)
    }

    fn group_view(&self, deployment: &Deployment, name: &str, members: &[Machine]) -> Result<GroupView, ControlError> {
        let sites: Vec<Site> = members.iter().map(|m| m.active_site).collect();
        let active_site = sites.iter().all(|s| *s == sites[0]).then_some(sites[0]);
        let (latest, latest_app) = match active_site {
            Some(site) => self.latest_group_points(deployment, site.other(), name, members)?,
            None => (None, None),
        };
        let groups = lock(&self.groups);
        let activity = groups.get(name);
        Ok(GroupView {
            name: name.to_string(),
            machines: members.iter().map(|m| m.name().to_string()).collect(),
            active_site,
            interval_seconds: self.group_intervals(deployment, members).0.as_secs(),
            latest,
            latest_app,
            problem: activity.and_then(|a| a.problem.clone()).or_else(|| not_ready(members)),
            last_attempt: activity.and_then(|a| a.last.clone()),
            points_made: activity.map_or(0, |a| a.made),
            points_not_made: activity.map_or(0, |a| a.not_made),
            hold_max_ms: activity.map_or(0.0, |a| a.hold_max_ms),
        })
    }

    /// The newest point of group `name` every disk of `members` holds in
    /// the vault at `site`, and the newest app-consistent one.
    fn latest_group_points(
        &self,
        deployment: &Deployment,
        site: Site,
        name: &str,
        members: &[Machine],
    ) -> Result<(Option<GroupPoint>, Option<GroupPoint>), ControlError> {
        let Ok(vault) = deployment.open_vault_at(site) else { return Ok((None, None)) };
        let mut per_disk: Vec<Vec<Bookmark>> = Vec::new();
        for disk in members.iter().flat_map(|m| &m.disks) {
            let recent = self.with_summary(site, &vault, &disk.vault_disk, |summary| {
                summary.recent_group_points.iter().cloned().collect::<Vec<_>>()
            });
            // A disk whose journal cannot be read holds no point.
            per_disk.push(recent.unwrap_or_default());
        }
        Ok((common_newest(&per_disk, name, false), common_newest(&per_disk, name, true)))
    }
}

/// The newest point of group `name` in every one of `per_disk` (only
/// app-consistent ones with `app`).
pub(crate) fn common_newest(per_disk: &[Vec<Bookmark>], name: &str, app: bool) -> Option<GroupPoint> {
    let (first, others) = per_disk.split_first()?;
    first
        .iter()
        .rev()
        .filter(|b| !app || b.kind == PointKind::AppConsistent)
        .filter(|b| standby_format::parse_group_point_label(&b.label).is_some_and(|(group, _)| group == name))
        .find(|b| others.iter().all(|disk| disk.iter().any(|other| other.label == b.label)))
        .map(|b| GroupPoint {
            id: standby_format::parse_group_point_label(&b.label).map_or(0, |(_, id)| id),
            time: b.time.clone(),
            kind: b.kind.name().to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: u64, app: bool) -> Bookmark {
        Bookmark {
            sequence: id,
            time: format!("t{id}"),
            time_micros: id as i64,
            kind: if app { PointKind::AppConsistent } else { PointKind::CrashConsistent },
            label: standby_format::group_point_label("shop", id),
        }
    }

    #[test]
    fn the_groups_latest_point_is_the_newest_every_disk_holds() {
        let a = vec![point(1, false), point(2, true), point(3, false), point(4, false)];
        let b = vec![point(1, false), point(2, true), point(3, false)];
        let c = vec![point(2, true), point(3, false), point(5, false)];
        let latest = common_newest(&[a.clone(), b.clone(), c.clone()], "shop", false).unwrap();
        assert_eq!(latest.id, 3);
        assert_eq!(common_newest(&[a.clone(), b, c], "shop", true).unwrap().id, 2);
        assert_eq!(common_newest(&[a.clone(), vec![]], "shop", false), None);
        assert_eq!(common_newest(&[a], "other", false), None);
        assert_eq!(common_newest(&[], "shop", false), None);
    }
}
