//! Recovery plans: a declarative TOML file, kept in version control, that
//! says in what order a deployment's machines come back (ordered groups;
//! the machines of a group start side by side), what runs before and after
//! each group (a script at the control plane, or an operator's manual
//! step), and how each machine is known to be up (a health probe).
//!
//! ```toml
//! name = "shop"
//! description = "the web shop: its database first"
//!
//! [[groups]]
//! name = "database"
//! machines = ["db"]
//! pre = [{ script = "scripts/fence.sh", timeout = "2m" }]
//! post = [{ manual = "Check that the database takes writes" }]
//!
//! [[groups]]
//! machines = ["web1", "web2"]
//!
//! [probes.db]
//! tcp = "10.1.0.5:5432"
//! timeout = "5m"
//! ```
//!
//! A file is checked whole before anything is kept ([`check_plan`]); each
//! problem is one error naming its line and what to do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::ControlError;
use crate::machine::Machine;

/// Longest a step or a probe may be given.
const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);
/// A script's timeout when none is given.
pub const SCRIPT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(600);
/// A probe's timeout when none is given.
pub const PROBE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(600);

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    groups: Spanned<Vec<GroupFile>>,
    #[serde(default)]
    probes: BTreeMap<Spanned<String>, ProbeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    #[serde(default)]
    name: Option<String>,
    machines: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pre: Vec<Spanned<StepFile>>,
    #[serde(default)]
    post: Vec<Spanned<StepFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    #[serde(default)]
    script: Option<Spanned<String>>,
    #[serde(default)]
    manual: Option<String>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeFile {
    #[serde(default)]
    tcp: Option<Spanned<String>>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    console: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
}

/// A plan, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub groups: Vec<PlanGroup>,
    /// Health probes by machine.
    pub probes: BTreeMap<String, Probe>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanGroup {
    pub name: String,
    pub machines: Vec<String>,
    pub pre: Vec<PlanStep>,
    pub post: Vec<PlanStep>,
}

/// A step before or after a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStep {
    /// A script run at the control plane (its path made absolute).
    Script { path: PathBuf, timeout: Duration },
    /// An operator's action: the plan waits for `standby plan resume`.
    Manual { text: String },
}

/// How a machine is known to be up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub check: ProbeCheck,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeCheck {
    /// A TCP connection to `ADDRESS:PORT` is accepted; `:PORT` is the
    /// machine's own static address where it runs.
    Tcp(String),
    /// A command where the machine runs exits 0.
    Command(String),
    /// A line of the machine's serial console matches a regular expression.
    Console(String),
}

impl ProbeCheck {
    /// The check for a machine whose static address where it runs is
    /// `address`: a `tcp` without an address made to reach it there.
    pub fn at(&self, address: Option<std::net::IpAddr>) -> Result<ProbeCheck, ControlError> {
        match self {
            ProbeCheck::Tcp(target) if target.starts_with(':') => match address {
                Some(address) => Ok(ProbeCheck::Tcp(
                    std::net::SocketAddr::new(
                        address,
                        target[1..]
                            .parse()
                            .map_err(|_| ControlError::Refused(format!("probe port {target:?} is not a port")))?,
                    )
                    .to_string(),
                )),
                None => Err(ControlError::Refused(format!(
                    "the probe tcp = \"{target}\" reaches the machine at its static address, and it has none where \
                     it runs now: give its NIC one for this site (SITE-address=) or name the address in the probe"
                ))),
            },
            other => Ok(other.clone()),
        }
    }
}

impl Plan {
    /// The plan as the API shows it.
    pub fn view(&self, file: &str, created: Option<String>) -> standby_api::PlanView {
        let step = |step: &PlanStep| match step {
            PlanStep::Script { path, timeout } => standby_api::PlanStepView {
                kind: "script".into(),
                text: path.display().to_string(),
                timeout_seconds: Some(timeout.as_secs()),
            },
            PlanStep::Manual { text } => {
                standby_api::PlanStepView { kind: "manual".into(), text: text.clone(), timeout_seconds: None }
            }
        };
        standby_api::PlanView {
            name: self.name.clone(),
            description: self.description.clone(),
            file: file.to_string(),
            created,
            groups: self
                .groups
                .iter()
                .map(|group| standby_api::PlanGroupView {
                    name: group.name.clone(),
                    machines: group.machines.clone(),
                    pre: group.pre.iter().map(step).collect(),
                    post: group.post.iter().map(step).collect(),
                })
                .collect(),
            probes: self
                .probes
                .iter()
                .map(|(machine, probe)| {
                    let (kind, check) = match &probe.check {
                        ProbeCheck::Tcp(address) => ("tcp", address),
                        ProbeCheck::Command(command) => ("command", command),
                        ProbeCheck::Console(pattern) => ("console", pattern),
                    };
                    standby_api::PlanProbeView {
                        machine: machine.clone(),
                        kind: kind.into(),
                        check: check.clone(),
                        timeout_seconds: probe.timeout.as_secs(),
                    }
                })
                .collect(),
            problem: None,
            last_drill: None,
            drill_every_seconds: None,
            addresses: Vec::new(),
        }
    }
}

/// `view` with the static addresses of its machines' NICs.
fn with_addresses(
    mut view: standby_api::PlanView,
    machines: &[Machine],
    config: &crate::config::Config,
) -> standby_api::PlanView {
    for name in view.groups.iter().flat_map(|group| &group.machines) {
        let Some(machine) = machines.iter().find(|m| m.name() == name) else { continue };
        let Ok(nics) = crate::network::nics(&machine.definition.nics, name, config) else { continue };
        for nic in nics.iter().filter(|nic| !nic.addresses.is_empty()) {
            let at = |instance| nic.addresses.at(instance).map(|address| address.view(nic.apply));
            view.addresses.push(standby_api::PlanAddressView {
                machine: name.clone(),
                mac: nic.mac.clone(),
                primary: at(standby_lifecycle::Instance::Primary),
                recovery: at(standby_lifecycle::Instance::Recovery),
                drill: at(standby_lifecycle::Instance::Drill),
            });
        }
    }
    view
}

/// A kept plan as the API shows it, checked again against the deployment
/// as it is now (its problem said when it no longer holds).
pub fn stored_view(
    stored: &crate::StoredPlan,
    machines: &[Machine],
    config: &crate::config::Config,
) -> standby_api::PlanView {
    let mut view = match check_plan(&stored.source, &stored.file, &stored.base, machines) {
        Ok(plan) => with_addresses(plan.view(&stored.file, Some(stored.created.clone())), machines, config),
        Err(problem) => standby_api::PlanView {
            name: stored.name.clone(),
            description: String::new(),
            file: stored.file.clone(),
            created: Some(stored.created.clone()),
            groups: Vec::new(),
            probes: Vec::new(),
            problem: Some(problem.to_string()),
            last_drill: None,
            drill_every_seconds: None,
            addresses: Vec::new(),
        },
    };
    view.last_drill = last_drill(stored);
    view.drill_every_seconds = stored.drill_every;
    view
}

/// A kept plan's last drill, when it has one.
pub fn last_drill(stored: &crate::StoredPlan) -> Option<standby_api::PlanDrill> {
    stored.last_drill.as_deref().and_then(|drill| serde_json::from_str(drill).ok())
}

/// A kept plan as `status` shows it.
pub fn plan_status(stored: &crate::StoredPlan) -> standby_api::PlanStatus {
    standby_api::PlanStatus {
        name: stored.name.clone(),
        last_drill: last_drill(stored),
        drill_every_seconds: stored.drill_every,
    }
}

/// Checks `source` and keeps it as plan of its name (nothing is kept when
/// it does not check).
pub fn create_plan(
    deployment: &crate::Deployment,
    request: &standby_api::PlanSource,
) -> Result<standby_api::PlanView, ControlError> {
    let base = PathBuf::from(&request.base);
    let machines = deployment.state.machines()?;
    let plan = check_plan(&request.source, &request.file, &base, &machines)?;
    let stored = crate::StoredPlan {
        name: plan.name.clone(),
        file: request.file.clone(),
        base,
        source: request.source.clone(),
        created: String::new(),
        run: None,
        drill_every: None,
        last_drill: None,
    };
    deployment.state.add_plan(&plan.name, &stored)?;
    let kept = deployment.state.plan(&plan.name)?;
    Ok(with_addresses(plan.view(&request.file, Some(kept.created)), &machines, &deployment.config))
}

/// Checks `source` against the deployment; keeps nothing.
pub fn validate_plan(
    deployment: &crate::Deployment,
    request: &standby_api::PlanSource,
) -> Result<standby_api::PlanView, ControlError> {
    let base = PathBuf::from(&request.base);
    let machines = deployment.state.machines()?;
    let plan = check_plan(&request.source, &request.file, &base, &machines)?;
    Ok(with_addresses(plan.view(&request.file, None), &machines, &deployment.config))
}

/// Where a problem is: the line of a byte offset of `source`.
fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Checks plan `source` (the file `file`, whose relative script paths are
/// relative to `base`) against the deployment's `machines`: the plan, or
/// the first problem as `FILE:LINE: what is wrong; what to do`.
pub fn check_plan(source: &str, file: &str, base: &Path, machines: &[Machine]) -> Result<Plan, ControlError> {
    let at = |offset: usize, message: String| {
        ControlError::Refused(format!("{file}:{}: {message}", line_of(source, offset)))
    };
    let parsed: PlanFile = toml::from_str(source).map_err(|e| {
        let offset = e.span().map_or(0, |span| span.start);
        at(offset, format!("{}; see docs/plans.md for the plan's keys", e.message().trim_end_matches('.')))
    })?;
    if crate::validate_machine_name(parsed.name.get_ref()).is_err() {
        return Err(at(
            parsed.name.span().start,
            "the plan's name may hold 1 to 48 letters, digits, '.', '_' or '-'".into(),
        ));
    }
    if parsed.groups.get_ref().is_empty() {
        return Err(at(parsed.groups.span().start, "a plan needs at least one group of machines ([[groups]])".into()));
    }
    let mut groups = Vec::new();
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    for (index, group) in parsed.groups.into_inner().into_iter().enumerate() {
        let name = group.name.unwrap_or_else(|| format!("group {}", index + 1));
        if group.machines.get_ref().is_empty() {
            return Err(at(group.machines.span().start, format!("plan group '{name}' names no machine")));
        }
        let mut names = Vec::new();
        for machine in group.machines.into_inner() {
            let offset = machine.span().start;
            let machine = machine.into_inner();
            let Some(known) = machines.iter().find(|m| m.name() == machine) else {
                let known: Vec<&str> = machines.iter().map(Machine::name).collect();
                return Err(at(
                    offset,
                    format!(
                        "'{machine}' is not a machine of this deployment (known: {}); fix the name or add it with \
                         `standby machine add`",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ));
            };
            if let Some(first) = placed.insert(machine.clone(), index) {
                return Err(at(
                    offset,
                    format!(
                        "'{machine}' is already in plan group {} ('{}'): a machine comes back once; remove one",
                        first + 1,
                        groups.get(first).map_or(name.as_str(), |g: &PlanGroup| g.name.as_str())
                    ),
                ));
            }
            if let Some(replication) = &known.group {
                let split = placed.iter().find(|(other, at_index)| {
                    **at_index != index
                        && machines.iter().any(|m| m.name() == *other && m.group.as_ref() == Some(replication))
                });
                if let Some((other, _)) = split {
                    return Err(at(
                        offset,
                        format!(
                            "'{machine}' and '{other}' are in replication group '{replication}', which moves whole: put \
                             them in the same plan group"
                        ),
                    ));
                }
            }
            names.push(machine);
        }
        let pre = group.pre.into_iter().map(|step| check_step(step, base, &at)).collect::<Result<_, _>>()?;
        let post = group.post.into_iter().map(|step| check_step(step, base, &at)).collect::<Result<_, _>>()?;
        groups.push(PlanGroup { name, machines: names, pre, post });
    }
    // A replication group moves whole: every machine of one in the plan.
    for machine in machines.iter().filter(|m| placed.contains_key(m.name())) {
        let Some(replication) = &machine.group else { continue };
        if let Some(missing) =
            machines.iter().find(|m| m.group.as_ref() == Some(replication) && !placed.contains_key(m.name()))
        {
            let offset = source.find(&format!("\"{}\"", machine.name())).unwrap_or(0);
            return Err(at(
                offset,
                format!(
                    "'{}' is in replication group '{replication}', which moves whole, and its machine '{}' is not in \
                     the plan: add it to the same plan group",
                    machine.name(),
                    missing.name()
                ),
            ));
        }
    }
    let mut probes = BTreeMap::new();
    for (machine, probe) in parsed.probes {
        let offset = machine.span().start;
        let machine = machine.into_inner();
        if !placed.contains_key(&machine) {
            return Err(at(offset, format!("a probe of '{machine}', which is in none of the plan's groups; remove it or add the machine to a group")));
        }
        let probe = check_probe(probe, offset, &at)?;
        let addressed = machines
            .iter()
            .find(|m| m.name() == machine)
            .is_some_and(|m| crate::network::has_static_address(&m.definition.nics));
        if matches!(&probe.check, ProbeCheck::Tcp(target) if target.starts_with(':')) && !addressed {
            return Err(at(
                offset,
                format!(
                    "the probe of '{machine}' reaches it at its static address, and it has none: give a NIC of it \
                     SITE-address= (`machine add --nic`), or write the probe's address (tcp = \"ADDRESS:PORT\")"
                ),
            ));
        }
        probes.insert(machine, probe);
    }
    Ok(Plan { name: parsed.name.into_inner(), description: parsed.description, groups, probes })
}

fn timeout_of(
    timeout: Option<Spanned<String>>,
    default: Duration,
    at: &dyn Fn(usize, String) -> ControlError,
) -> Result<Duration, ControlError> {
    let Some(timeout) = timeout else { return Ok(default) };
    match humantime::parse_duration(timeout.get_ref()) {
        Ok(duration) if !duration.is_zero() && duration <= TIMEOUT_MAX => Ok(duration),
        _ => Err(at(
            timeout.span().start,
            format!("timeout {:?} is not a duration from 1s to 24h; use e.g. 90s, 15m, 2h", timeout.get_ref()),
        )),
    }
}

fn check_step(
    step: Spanned<StepFile>,
    base: &Path,
    at: &dyn Fn(usize, String) -> ControlError,
) -> Result<PlanStep, ControlError> {
    let offset = step.span().start;
    let step = step.into_inner();
    match (step.script, step.manual) {
        (Some(script), None) => {
            let timeout = timeout_of(step.timeout, SCRIPT_TIMEOUT_DEFAULT, at)?;
            let path = base.join(script.get_ref());
            let problem = match std::fs::metadata(&path) {
                Err(e) => Some(format!("script {} cannot be found ({e})", path.display())),
                Ok(meta) if !meta.is_file() => Some(format!("script {} is not a file", path.display())),
                Ok(meta) if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 => {
                    Some(format!("script {} is not executable; `chmod +x` it", path.display()))
                }
                Ok(_) => None,
            };
            match problem {
                Some(problem) => Err(at(
                    script.span().start,
                    format!("{problem} (relative paths are relative to the plan file's folder)"),
                )),
                None => Ok(PlanStep::Script { path, timeout }),
            }
        }
        (None, Some(text)) if !text.trim().is_empty() => {
            if step.timeout.is_some() {
                return Err(at(offset, "a manual step waits for `standby plan resume`: it takes no timeout".into()));
            }
            Ok(PlanStep::Manual { text })
        }
        _ => Err(at(offset, "a step is either `script = \"PATH\"` or `manual = \"what the operator does\"`".into())),
    }
}

fn check_probe(
    probe: ProbeFile,
    offset: usize,
    at: &dyn Fn(usize, String) -> ControlError,
) -> Result<Probe, ControlError> {
    let timeout = timeout_of(probe.timeout, PROBE_TIMEOUT_DEFAULT, at)?;
    let check = match (probe.tcp, probe.command, probe.console) {
        (Some(tcp), None, None) => {
            let valid =
                tcp.get_ref().rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid {
                return Err(at(
                    tcp.span().start,
                    format!(
                        "tcp {:?} is not ADDRESS:PORT (as \"10.1.0.5:5432\") or :PORT (the machine's static address)",
                        tcp.get_ref()
                    ),
                ));
            }
            ProbeCheck::Tcp(tcp.into_inner())
        }
        (None, Some(command), None) if !command.trim().is_empty() => ProbeCheck::Command(command),
        (None, None, Some(console)) => {
            if let Err(e) = regex::Regex::new(console.get_ref()) {
                return Err(at(
                    console.span().start,
                    format!("console pattern {:?} is not a regular expression ({e})", console.get_ref()),
                ));
            }
            ProbeCheck::Console(console.into_inner())
        }
        _ => {
            return Err(at(
                offset,
                "a probe is one of `tcp = \"ADDRESS:PORT\"`, `command = \"...\"` or `console = \"PATTERN\"`".into(),
            ))
        }
    };
    Ok(Probe { check, timeout })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::MachineDefinition;

    fn machine(name: &str, group: Option<&str>) -> Machine {
        Machine {
            definition: MachineDefinition {
                name: name.into(),
                cpus: 1,
                memory_mib: 64,
                kernel: None,
                initrd: None,
                append: None,
                nics: Vec::new(),
            },
            state: standby_lifecycle::State::Protected,
            active_site: standby_lifecycle::Site::Primary,
            policy: Some("default".into()),
            group: group.map(str::to_string),
            generation: 1,
            disks: Vec::new(),
            details: Default::default(),
        }
    }

    fn fleet() -> Vec<Machine> {
        vec![machine("db", Some("data")), machine("db2", Some("data")), machine("web1", None), machine("web2", None)]
    }

    fn checked(source: &str) -> Result<Plan, String> {
        checked_with(source, &fleet())
    }

    fn checked_with(source: &str, machines: &[Machine]) -> Result<Plan, String> {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fence.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let plain = dir.path().join("plain.sh");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        check_plan(source, "shop.toml", dir.path(), machines).map_err(|e| e.to_string())
    }

    #[test]
    fn a_probe_at_the_machines_own_address_needs_a_static_address() {
        let source = GOOD.replace(r#"tcp = "10.1.0.5:5432""#, r#"tcp = ":5432""#);
        assert!(checked(&source).unwrap_err().contains("it has none"));
        let mut machines = fleet();
        let db = machines.iter_mut().find(|m| m.name() == "db").unwrap();
        db.definition.nics = vec!["primary-lan,recovery=recovery-lan,recovery-address=10.20.0.5/24".into()];
        let plan = checked_with(&source, &machines).unwrap();
        assert_eq!(plan.probes["db"].check, ProbeCheck::Tcp(":5432".into()));
        let at = plan.probes["db"].check.at(Some("10.20.0.5".parse().unwrap())).unwrap();
        assert_eq!(at, ProbeCheck::Tcp("10.20.0.5:5432".into()));
        let v6 = plan.probes["db"].check.at(Some("fd00::5".parse().unwrap())).unwrap();
        assert_eq!(v6, ProbeCheck::Tcp("[fd00::5]:5432".into()));
        assert!(plan.probes["db"].check.at(None).unwrap_err().to_string().contains("has none where it runs now"));
    }

    const GOOD: &str = r#"name = "shop"
description = "the web shop"

[[groups]]
name = "database"
machines = ["db", "db2"]
pre = [{ script = "fence.sh", timeout = "2m" }]
post = [{ manual = "Check that the database takes writes" }]

[[groups]]
machines = ["web1", "web2"]

[probes.db]
tcp = "10.1.0.5:5432"
timeout = "5m"

[probes.web1]
console = "login:"
"#;

    #[test]
    fn a_good_plan_reads_whole() {
        let plan = checked(GOOD).unwrap();
        assert_eq!(plan.name, "shop");
        assert_eq!(plan.groups.len(), 2);
        assert_eq!(plan.groups[1].name, "group 2");
        assert_eq!(plan.groups[0].machines, vec!["db", "db2"]);
        assert!(
            matches!(&plan.groups[0].pre[0], PlanStep::Script { timeout, .. } if *timeout == Duration::from_secs(120))
        );
        assert_eq!(plan.groups[0].post[0], PlanStep::Manual { text: "Check that the database takes writes".into() });
        assert_eq!(plan.probes["db"].check, ProbeCheck::Tcp("10.1.0.5:5432".into()));
        assert_eq!(plan.probes["web1"].timeout, PROBE_TIMEOUT_DEFAULT);
    }

    /// Each bad file is refused with its line and what to do.
    #[test]
    fn every_problem_names_its_line() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"machines = ["db", "db2"]"#,
                r#"machines = ["db", "dbx"]"#,
                "shop.toml:6: 'dbx' is not a machine of this deployment (known: db, db2, web1, web2)",
            ),
            (
                r#"machines = ["web1", "web2"]"#,
                r#"machines = ["web1", "db"]"#,
                "shop.toml:11: 'db' is already in plan group 1 ('database')",
            ),
            (
                r#"machines = ["db", "db2"]"#,
                r#"machines = ["db"]"#,
                "'db' is in replication group 'data', which moves whole, and its machine 'db2' is not in the plan",
            ),
            (
                r#"machines = ["web1", "web2"]"#,
                r#"machines = ["web1", "web2", "db2"]"#,
                "shop.toml:11: 'db2' is already in plan group 1",
            ),
            (r#"script = "fence.sh""#, r#"script = "missing.sh""#, "shop.toml:7: script "),
            (r#"script = "fence.sh""#, r#"script = "plain.sh""#, "is not executable; `chmod +x` it"),
            (r#"timeout = "2m""#, r#"timeout = "soon""#, "shop.toml:7: timeout \"soon\" is not a duration"),
            (
                r#"description = "the web shop""#,
                r#"descripton = "the web shop""#,
                "shop.toml:2: unknown field `descripton`",
            ),
            (r#"tcp = "10.1.0.5:5432""#, r#"tcp = "10.1.0.5""#, "shop.toml:14: tcp \"10.1.0.5\" is not ADDRESS:PORT"),
            (
                r#"tcp = "10.1.0.5:5432""#,
                r#"tcp = ":5432""#,
                "shop.toml:13: the probe of 'db' reaches it at its static address, and it has none",
            ),
            (r#"console = "login:""#, r#"console = "login:(""#, "shop.toml:18: console pattern"),
            (
                r#"[probes.web1]"#,
                r#"[probes.nowhere]"#,
                "shop.toml:17: a probe of 'nowhere', which is in none of the plan's groups",
            ),
            (r#"name = "shop""#, r#"name = "shop"#, "shop.toml:1:"),
            (
                r#"post = [{ manual = "Check that the database takes writes" }]"#,
                r#"post = [{ manual = "x", script = "fence.sh" }]"#,
                "shop.toml:8: a step is either",
            ),
        ];
        for (from, to, expected) in cases {
            assert_eq!(GOOD.matches(from).count(), 1, "{from}");
            let error = checked(&GOOD.replace(from, to)).expect_err(to);
            assert!(error.contains(expected), "{to}: {error}");
        }
        let split = GOOD
            .replace(r#"machines = ["db", "db2"]"#, r#"machines = ["db"]"#)
            .replace(r#"machines = ["web1", "web2"]"#, r#"machines = ["web1", "web2", "db2"]"#);
        let error = checked(&split).unwrap_err();
        assert!(error.contains("shop.toml:11: 'db2' and 'db' are in replication group 'data', which moves whole: put them in the same plan group"), "{error}");
    }
}
