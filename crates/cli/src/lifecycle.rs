//! The lifecycle commands (docs/cli.md): deployments and machines.

use std::path::Path;

use std::path::PathBuf;

use serde_json::json;
use standby_api::{
    AddMachine, BookmarkView, Client, ClientError, Hydration, JobList, MachineList, MachineStatus, PlanJobRequest,
    PolicyList, SetNics, StopRequest,
};
use standby_control::{Deployment, MachineDefinition, VaultAddress};
use standby_lifecycle::job::{JobState, StepState};
use standby_lifecycle::{Command, Site};

use crate::cli::{GroupCommand, HomeArguments, JobArguments, MachineCommand, PlanCommand, PolicyCommand, TokenCommand};
use crate::output::print_json;

pub fn init(dir: &Path, json: bool) -> anyhow::Result<u8> {
    let deployment = Deployment::init(dir)?;
    let (recovery, primary) = (deployment.vault_at(Site::Recovery), deployment.vault_at(Site::Primary));
    let keys = deployment.path(Path::new(standby_control::KEYS_DIR));
    if json {
        let vault = |vault: &VaultAddress| json!({"location": vault.location, "key_file": vault.key_file});
        print_json(&json!({
            "home": deployment.home,
            "vault": recovery.location,
            "vaults": {Site::Recovery.name(): vault(&recovery), Site::Primary.name(): vault(&primary)},
            "policies": deployment.state.policies()?,
        }));
    } else {
        println!("created a deployment in {}", deployment.home.display());
        println!("  primary site disks:  {}", deployment.path(&deployment.config.primary.disks).display());
        println!("  recovery site disks: {}", deployment.path(&deployment.config.recovery.disks).display());
        println!("  recovery site vault: {recovery} (encrypted)");
        println!("  primary site vault:  {primary} (encrypted; reverse replication after a reprotect)");
        println!(
            "  policy 'default':    RPO threshold 15m, retention 24h, app-consistent every 60m, bookmarks every 5s"
        );
        println!(
            "the vaults' keys are in {}: keep a copy away from both sites; without them no vault can be read",
            keys.display()
        );
        println!("next: standby machine add NAME --disk IMAGE --home {}", deployment.home.display());
    }
    Ok(0)
}

/// `sites`: each site as the control plane sees it.
pub fn sites(home: &HomeArguments, json: bool) -> anyhow::Result<u8> {
    let daemon = Daemon::of(home)?;
    let list = daemon.answer(daemon.client.sites())?;
    if json {
        print_json(&list);
        return Ok(0);
    }
    for site in &list.sites {
        let address = site.address.as_deref().unwrap_or("this host");
        let answers = if site.reachable { "reachable" } else { "UNREACHABLE" };
        let rpo = site.worst_rpo_seconds.map(|rpo| format!(", worst RPO {rpo:.1} s")).unwrap_or_default();
        println!(
            "{:<9} {address}: {answers} since {}; vault {}; {} machine(s) replicating into it{rpo}",
            site.site, site.since, site.vault, site.replicating
        );
    }
    Ok(0)
}

/// A plan file as the daemon takes it: its text, its name as given, and
/// its folder (absolute: its scripts' relative paths start there).
fn plan_source(file: &Path) -> anyhow::Result<standby_api::PlanSource> {
    let source = std::fs::read_to_string(file)
        .map_err(|e| crate::bad_input(format!("cannot read the plan file {} ({e})", file.display())))?;
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    Ok(standby_api::PlanSource { source, file: file.display().to_string(), base: base.display().to_string() })
}

/// `plan validate|create|show|list|delete` and the plan's lifecycle commands.
pub fn plan(command: PlanCommand) -> anyhow::Result<u8> {
    match command {
        PlanCommand::Validate { file, home, json } => {
            let source = plan_source(&file)?;
            let daemon = Daemon::of(&home)?;
            // Through the daemon when it runs; else against the state here.
            let plan = match daemon.answer_if_running(daemon.client.validate_plan(&source))? {
                Some(plan) => plan,
                None => standby_control::plans::validate_plan(&open(&home)?, &source)?,
            };
            if json {
                print_json(&plan);
            } else {
                let machines: usize = plan.groups.iter().map(|g| g.machines.len()).sum();
                println!(
                    "{}: plan '{}' is valid: {} group(s), {machines} machine(s), {} probe(s)",
                    source.file,
                    plan.name,
                    plan.groups.len(),
                    plan.probes.len()
                );
            }
            Ok(0)
        }
        PlanCommand::Create { file, home, json } => {
            let source = plan_source(&file)?;
            let daemon = Daemon::of(&home)?;
            let plan = daemon.answer(daemon.client.create_plan(&source))?;
            if json {
                print_json(&plan);
            } else {
                println!(
                    "created plan '{}' from {}; `standby plan show {}` shows it",
                    plan.name, source.file, plan.name
                );
            }
            Ok(0)
        }
        PlanCommand::Show { name, home, json } => {
            let daemon = Daemon::of(&home)?;
            let plan = daemon.answer(daemon.client.plan(&name))?;
            if json {
                print_json(&plan);
            } else {
                show_plan(&plan);
            }
            Ok(0)
        }
        PlanCommand::List { home, json } => {
            let daemon = Daemon::of(&home)?;
            let list = daemon.answer(daemon.client.plans())?;
            if json {
                print_json(&list);
                return Ok(0);
            }
            if list.plans.is_empty() {
                println!("no plans; `standby plan create FILE` adds one");
            }
            for plan in &list.plans {
                let machines: Vec<&str> =
                    plan.groups.iter().flat_map(|g| g.machines.iter().map(String::as_str)).collect();
                let problem = plan.problem.as_deref().map(|p| format!("; PROBLEM: {p}")).unwrap_or_default();
                println!(
                    "{:<16} {} group(s): {} (from {}){problem}",
                    plan.name,
                    plan.groups.len(),
                    machines.join(", "),
                    plan.file
                );
            }
            Ok(0)
        }
        PlanCommand::TestFailover { name, point, cleanup, job } => {
            let request = PlanJobRequest { point, cleanup, ..PlanJobRequest::default() };
            plan_job(&job, &name, Command::TestFailover, request)
        }
        PlanCommand::Drill { name, every, never, job } => {
            if every.is_none() && !never {
                let request = PlanJobRequest { cleanup: true, ..PlanJobRequest::default() };
                return plan_job(&job, &name, Command::TestFailover, request);
            }
            let every_seconds = match every {
                Some(every) => Some(crate::cli::parse_duration(&every, "--every")?.as_secs()),
                None => None,
            };
            let daemon = Daemon::of(&job.home)?;
            let schedule = standby_api::PlanSchedule { every_seconds };
            let plan = daemon.answer(daemon.client.schedule_drills(&name, &schedule))?;
            if job.json {
                print_json(&plan);
            } else {
                println!("plan {}: {}", plan.name, drill_line(plan.last_drill.as_ref(), plan.drill_every_seconds));
            }
            Ok(0)
        }
        PlanCommand::CleanupTestFailover { name, job } => {
            plan_job(&job, &name, Command::CleanupTestFailover, PlanJobRequest::default())
        }
        PlanCommand::Failover { name, point, shutdown_source, job } => {
            let request = PlanJobRequest { point, shutdown_source, ..PlanJobRequest::default() };
            plan_job(&job, &name, Command::Failover, request)
        }
        PlanCommand::PlannedFailover { name, sync_first, job } => {
            let request = PlanJobRequest { sync_first, ..PlanJobRequest::default() };
            plan_job(&job, &name, Command::PlannedFailover { sync_first }, request)
        }
        PlanCommand::CompleteFailover { name, job } => {
            plan_job(&job, &name, Command::CompleteFailover, PlanJobRequest::default())
        }
        PlanCommand::ChangePoint { name, point, job } => {
            let request = PlanJobRequest { point: Some(point), ..PlanJobRequest::default() };
            plan_job(&job, &name, Command::ChangePoint, request)
        }
        PlanCommand::Commit { name, job } => plan_job(&job, &name, Command::Commit, PlanJobRequest::default()),
        PlanCommand::Cancel { name, job } => plan_job(&job, &name, Command::Cancel, PlanJobRequest::default()),
        PlanCommand::Reprotect { name, job } => plan_job(&job, &name, Command::Reprotect, PlanJobRequest::default()),
        PlanCommand::Resume { name, job } => {
            run_job_with(&job, |client| client.plan_job(&name, standby_api::routes::RESUME, &PlanJobRequest::default()))
        }
        PlanCommand::Delete { name, home, json } => {
            let daemon = Daemon::of(&home)?;
            let deleted = daemon.answer(daemon.client.delete_plan(&name))?;
            if json {
                print_json(&deleted);
            } else {
                println!("deleted plan '{}'", deleted.name);
            }
            Ok(0)
        }
    }
}

/// Runs lifecycle command `command` on plan `name` and follows its job.
fn plan_job(arguments: &JobArguments, name: &str, command: Command, request: PlanJobRequest) -> anyhow::Result<u8> {
    run_job_with(arguments, |client| client.plan_job(name, standby_api::routes::operation(command), &request))
}

fn show_plan(plan: &standby_api::PlanView) {
    println!("plan {} (from {}): {}", plan.name, plan.file, plan.description);
    println!("  {}", drill_line(plan.last_drill.as_ref(), plan.drill_every_seconds));
    for machine in plan.last_drill.iter().flat_map(|drill| &drill.machines) {
        println!("    {}: RTO {:.1} s", machine.machine, machine.rto_seconds);
    }
    if let Some(problem) = &plan.problem {
        println!("  PROBLEM: {problem}");
    }
    let step = |when: &str, step: &standby_api::PlanStepView| match step.timeout_seconds {
        Some(timeout) => println!("    {when}: {} {} (timeout {timeout} s)", step.kind, step.text),
        None => println!("    {when}: {} {}", step.kind, step.text),
    };
    for (index, group) in plan.groups.iter().enumerate() {
        println!("  {}. {}: {}", index + 1, group.name, group.machines.join(", "));
        group.pre.iter().for_each(|s| step("before", s));
        group.post.iter().for_each(|s| step("after", s));
    }
    for probe in &plan.probes {
        println!("  probe {}: {} {} (timeout {} s)", probe.machine, probe.kind, probe.check, probe.timeout_seconds);
    }
    for nic in &plan.addresses {
        let at = |address: &Option<standby_api::StaticAddress>| {
            address.as_ref().map_or("-".to_string(), ToString::to_string)
        };
        println!(
            "  address {} {}: primary {}, recovery {}, drill {}",
            nic.machine,
            nic.mac,
            at(&nic.primary),
            at(&nic.recovery),
            at(&nic.drill)
        );
    }
}

/// `machine` as `machine list` shows it without a daemon (no runtime).
fn offline_view(
    deployment: &Deployment,
    machine: &standby_control::Machine,
) -> anyhow::Result<standby_api::MachineView> {
    let mut view = machine.view();
    view.networks = Some(standby_control::network::describe(machine, &deployment.config, &deployment.home)?);
    Ok(view)
}

/// A machine's static addresses under its line of `machine list`: each
/// NIC's at each site and in a drill, and whether its guest has them.
fn print_addresses(machine: &standby_api::MachineView) {
    let at = |attachment: &standby_api::Attachment| attachment.address.as_ref().map_or("-".into(), ToString::to_string);
    for nic in machine.networks.iter().flatten() {
        if [&nic.primary, &nic.recovery, &nic.drill].iter().all(|a| a.address.is_none()) {
            continue;
        }
        println!(
            "    nic {}: primary {}, recovery {}, drill {}",
            nic.mac,
            at(&nic.primary),
            at(&nic.recovery),
            at(&nic.drill)
        );
    }
    if let Some(state) = machine.runtime.as_ref().and_then(|runtime| runtime.addresses.as_ref()) {
        let phase = match state.state {
            standby_api::AddressesPhase::Waiting => "waiting",
            standby_api::AddressesPhase::Applied => "applied",
            standby_api::AddressesPhase::Seeded => "seeded",
        };
        println!("    addresses {phase} since {}: {}", state.since, state.detail);
    }
}

/// `group list` and `group show NAME`.
pub fn group(command: GroupCommand) -> anyhow::Result<u8> {
    match command {
        GroupCommand::List { home, json } => {
            let daemon = Daemon::of(&home)?;
            let list = daemon.answer(daemon.client.groups())?;
            if json {
                print_json(&list);
                return Ok(0);
            }
            if list.groups.is_empty() {
                println!("no replication groups; `standby protect NAME --group G` makes one");
            }
            for group in &list.groups {
                let latest = group.latest.as_ref().map_or("none yet".to_string(), |p| format!("{} ({})", p.id, p.time));
                let state = group.problem.as_deref().map_or("making points".to_string(), |p| format!("NO POINTS: {p}"));
                println!(
                    "{:<16} {} machine(s): {}; latest point {latest}; {state}",
                    group.name,
                    group.machines.len(),
                    group.machines.join(", ")
                );
            }
            Ok(0)
        }
        GroupCommand::Show { name, home, json } => {
            let daemon = Daemon::of(&home)?;
            let group = daemon.answer(daemon.client.group(&name))?;
            if json {
                print_json(&group);
                return Ok(0);
            }
            show_group(&group);
            Ok(0)
        }
    }
}

fn show_group(group: &standby_api::GroupView) {
    let point = |p: &Option<standby_api::GroupPoint>| {
        p.as_ref().map_or("none yet".to_string(), |p| format!("{} at {} ({})", p.id, p.time, p.kind))
    };
    println!("group {}: {}", group.name, group.machines.join(", "));
    match group.active_site {
        Some(site) => println!("  runs at:            the {site} site, points every {} s", group.interval_seconds),
        None => println!("  runs at:            different sites"),
    }
    println!("  latest-group:       {}", point(&group.latest));
    println!("  latest-group-app:   {}", point(&group.latest_app));
    if let Some(problem) = &group.problem {
        println!("  NO POINTS:          {problem}");
    }
    println!(
        "  since the daemon started: {} made, {} not made, guests' writes held at most {:.1} ms",
        group.points_made, group.points_not_made, group.hold_max_ms
    );
    if let Some(last) = &group.last_attempt {
        let made = if last.made { "made" } else { "NOT MADE" };
        let kind = if last.app_consistent { "app-consistent" } else { "crash-consistent" };
        println!("  last attempt:       {} {made} ({kind}, writes held {:.1} ms)", last.at, last.held_ms);
        for held in &last.held_back {
            let who = match (held.machine.as_str(), held.disk.as_str()) {
                ("", _) => String::new(),
                (machine, "") => format!("{machine}: "),
                (machine, disk) => format!("{machine} ({disk}): "),
            };
            println!("    held back by {who}{}", held.problem);
        }
    }
}

/// `init DIR --site NAME --listen ADDR`: the host holding the control plane.
pub fn init_host(dir: &Path, site: &str, listen: &str, json: bool) -> anyhow::Result<u8> {
    let made = standby_control::host::init_host(dir, site, listen)?;
    let deployment = &made.deployment;
    let host = deployment.config.host.as_ref().expect("a host was made");
    let vault = deployment.vault_at(host.site);
    if json {
        print_json(&json!({
            "home": deployment.home, "site": host.site, "listen": host.listen.to_string(),
            "vault": vault.location, "admin_token": made.admin_token, "join_token": made.join_token,
        }));
    } else {
        println!("created the {} site's host in {}, holding the control plane", host.site, deployment.home.display());
        println!("  listens at:          {} (TLS under the deployment's own CA, in tls/)", host.listen);
        println!("  {} site vault: {vault} (encrypted)", host.site);
        println!("  admin token:         {} (for --token-file)", made.admin_token.display());
        println!(
            "  join token:          {} (valid 24 h: copy it to the {} site's host, securely)",
            made.join_token.display(),
            host.site.other()
        );
        println!(
            "next: standby serve --home {}, then on the other host: standby join DIR --site {} --control https://{} \
             --join-token FILE --listen ADDR",
            deployment.home.display(),
            host.site.other(),
            host.listen
        );
    }
    Ok(0)
}

/// `join DIR --site NAME --control URL --join-token FILE --listen ADDR`.
pub fn join(dir: &Path, site: &str, control: &str, join_token: &Path, listen: &str, json: bool) -> anyhow::Result<u8> {
    let deployment = standby_control::host::join(dir, site, control, join_token, listen)?;
    let host = deployment.config.host.as_ref().expect("a host was made");
    let vault = deployment.vault_at(host.site);
    if json {
        print_json(&json!({
            "home": deployment.home, "site": host.site, "listen": host.listen.to_string(),
            "control": host.control, "vault": vault.location,
        }));
    } else {
        println!("joined {} as the {} site's host, in {}", control, host.site, deployment.home.display());
        println!("  listens at:          {} (TLS)", host.listen);
        println!("  {} site vault: {vault} (encrypted)", host.site);
        println!("next: standby serve --home {}", deployment.home.display());
    }
    Ok(0)
}

/// `recover-control DIR --vault VAULT [--key-file FILE]`.
pub fn recover_control(dir: &Path, vault: &str, key_file: Option<&Path>, json: bool) -> anyhow::Result<u8> {
    let recovered = standby_control::control_records::recover_control(dir, vault, key_file)?;
    let home = &recovered.deployment.home;
    if json {
        let machines: Vec<_> = recovered
            .machines
            .iter()
            .map(|(name, state, site)| json!({"name": name, "state": state, "active_site": site}))
            .collect();
        print_json(&json!({
            "home": home, "record_time": recovered.record_time, "machines": machines,
            "admin_token": recovered.admin_token, "join_token": recovered.join_token,
        }));
    } else {
        println!(
            "{} now holds the control plane, rebuilt from the control record of {} in {vault}",
            home.display(),
            recovered.record_time
        );
        for (name, state, site) in &recovered.machines {
            println!("  machine {name}: {state}, at the {site} site");
        }
        println!(
            "  admin token:         {} (a new CA: operators need this token file)",
            recovered.admin_token.display()
        );
        println!("  join token:          {} (for a new host of the other site)", recovered.join_token.display());
        println!("next: standby serve --home {}, then fail over what ran at the lost site", home.display());
    }
    Ok(0)
}

fn open(home: &HomeArguments) -> anyhow::Result<Deployment> {
    Ok(Deployment::open(&Deployment::locate(home.home.as_deref()))?)
}

pub fn serve(home: &HomeArguments, listen: Option<String>, metrics_listen: Option<String>) -> anyhow::Result<u8> {
    if home.control.is_some() {
        return Err(crate::bad_input("serve runs this host's own deployment (--home); --control is for commands"));
    }
    let exe = std::env::current_exe()?;
    let serving = standby_control::daemon::Serving { listen, metrics_listen };
    standby_control::daemon::serve(&Deployment::locate(home.home.as_deref()), &exe, &serving)?;
    Ok(0)
}

/// A client of the control plane at `control`, with the operator token
/// file `token_file` (its token, and the CA and site to check the host by).
fn remote_client(control: &str, token_file: &Path) -> anyhow::Result<Client> {
    let file = standby_link::TokenFile::read_file(token_file, standby_link::TokenFileRole::Operator)
        .map_err(crate::bad_input)?;
    let address = standby_link::client::parse_control_url(control).map_err(crate::bad_input)?;
    let mut tls = standby_link::identity::operator_client_config(&file.ca_pem, token_file)
        .map_err(|e| crate::bad_input(e.to_string()))?;
    // The API client speaks HTTP/1.1.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let token = file.token().map_err(crate::bad_input)?;
    let name = standby_link::identity::host_name(&file.control_site);
    Client::tls(control, address, &name, std::sync::Arc::new(tls), token.secret().to_string()).map_err(crate::bad_input)
}

/// The deployment's daemon, through the API client; a deployment that does
/// not exist is refused here, before any request.
struct Daemon {
    home: PathBuf,
    client: Client,
}

impl Daemon {
    fn of(home: &HomeArguments) -> anyhow::Result<Daemon> {
        if let Some(control) = &home.control {
            let token_file = home.token_file.as_deref().expect("clap requires --token-file with --control");
            return Ok(Daemon { home: PathBuf::from(control), client: remote_client(control, token_file)? });
        }
        if home.token_file.is_some() {
            return Err(crate::bad_input(
                "--token-file is for a control plane on another host: give --control URL too",
            ));
        }
        let home = Deployment::locate(home.home.as_deref());
        let socket = Deployment::socket_of(&home)?;
        Ok(Daemon { home, client: Client::unix(&socket) })
    }

    /// The daemon's answer, or `None` when no daemon runs (the caller then
    /// reads or writes the state itself; never for a remote control plane).
    fn answer_if_running<T>(&self, answer: Result<T, ClientError>) -> anyhow::Result<Option<T>> {
        match answer {
            Err(ClientError::Unreachable { .. }) if !self.client.is_remote() => Ok(None),
            answer => self.answer(answer).map(Some),
        }
    }

    /// A request's answer, with the operator's next step when no daemon runs.
    fn answer<T>(&self, answer: Result<T, ClientError>) -> anyhow::Result<T> {
        answer.map_err(|e| match e {
            ClientError::Unreachable { endpoint, source } if self.client.is_remote() => crate::bad_input(format!(
                "cannot reach the control plane at {endpoint} ({source}): check --control and that its host serves"
            )),
            ClientError::Unreachable { .. } => crate::bad_input(format!(
                "no daemon is running for the deployment at {}: start it with `standby serve --home {}`",
                self.home.display(),
                self.home.display()
            )),
            ClientError::Api { body, .. } if body.code.is_bad_input() => {
                crate::bad_input(crate::hints::with_hint(&body.message, body.hint.as_ref()))
            }
            ClientError::Api { body, .. } => {
                anyhow::anyhow!(crate::hints::with_hint(&body.message, body.hint.as_ref()))
            }
            e if e.is_bad_input() => crate::bad_input(e.to_string()),
            e => anyhow::Error::new(e),
        })
    }
}

pub fn machine(command: MachineCommand) -> anyhow::Result<u8> {
    match command {
        MachineCommand::Add { name, disks, site, memory, cpus, kernel, initrd, append, nics, home, json } => {
            let site = match site {
                Some(site) => site
                    .parse::<Site>()
                    .map_err(|_| crate::bad_input(format!("--site {site:?}: use primary or recovery")))?,
                None => Site::Primary,
            };
            // The daemon reads the paths from its own folder: relative ones
            // are this command's, made whole here.
            let absolute = |path: PathBuf| std::path::absolute(&path).unwrap_or(path);
            let (kernel, initrd) = (kernel.map(absolute), initrd.map(absolute));
            let disks: Vec<PathBuf> = disks.into_iter().map(absolute).collect();
            let definition = MachineDefinition { name, cpus, memory_mib: memory, kernel, initrd, append, nics };
            // Through the daemon when it runs (it owns the state); else here.
            let daemon = Daemon::of(&home)?;
            let request = AddMachine { definition, disks, site: Some(site) };
            let machine = match daemon.answer_if_running(daemon.client.add_machine(&request))? {
                Some(machine) => machine,
                None => open(&home)?.add_machine(&request.definition, &request.disks, site)?.view(),
            };
            if json {
                print_json(&machine);
            } else {
                println!(
                    "defined machine '{}' ({} CPU, {} MiB, {} disk{}) at the {site} site, unprotected",
                    machine.definition.name,
                    machine.definition.cpus,
                    machine.definition.memory_mib,
                    machine.disks.len(),
                    if machine.disks.len() == 1 { "" } else { "s" }
                );
                for disk in &machine.disks {
                    println!("  {}", disk.definition.image_at(site).display());
                }
            }
            Ok(0)
        }
        MachineCommand::SetNics { name, nics, home, json } => {
            // Through the daemon when it runs (it owns the state); else here.
            let daemon = Daemon::of(&home)?;
            let request = SetNics { nics };
            let machine = match daemon.answer_if_running(daemon.client.set_nics(&name, &request))? {
                Some(machine) => machine,
                None => {
                    let deployment = open(&home)?;
                    offline_view(&deployment, &deployment.set_nics(&name, &request.nics)?)?
                }
            };
            if json {
                print_json(&machine);
                return Ok(0);
            }
            let count = machine.definition.nics.len();
            println!("machine '{name}' boots with {count} NIC{} from now on", if count == 1 { "" } else { "s" });
            for nic in machine.networks.iter().flatten() {
                println!(
                    "  {} on {} ({} site: {})",
                    nic.mac,
                    nic.primary.network,
                    Site::Recovery,
                    nic.recovery.network
                );
            }
            print_addresses(&machine);
            if machine.runtime.as_ref().is_some_and(|runtime| runtime.running) {
                println!(
                    "its instance running at the {} site keeps the NICs it booted with until it boots again",
                    machine.active_site
                );
            }
            Ok(0)
        }
        MachineCommand::Start { name, home, json } => {
            let daemon = Daemon::of(&home)?;
            let started = daemon.answer(daemon.client.start(&name))?;
            if json {
                print_json(&started);
            } else {
                println!(
                    "machine '{name}' is running at the {} site (pid {}, {}); its console is {}",
                    started.site,
                    started.pid,
                    started.accel,
                    started.console.display()
                );
            }
            Ok(0)
        }
        MachineCommand::Stop { name, force, site, home, json } => {
            let site = site
                .map(|site| {
                    site.parse::<Site>()
                        .map_err(|_| crate::bad_input(format!("--site {site:?}: use primary or recovery")))
                })
                .transpose()?;
            let daemon = Daemon::of(&home)?;
            let stopped = daemon.answer(daemon.client.stop(&name, &StopRequest { force, site }))?;
            if json {
                print_json(&stopped);
            } else {
                println!("machine '{name}' stopped ({})", stopped.stopped);
            }
            Ok(0)
        }
        MachineCommand::List { home, json } => {
            // With a daemon, each machine's runtime too; without, the state.
            let daemon = Daemon::of(&home)?;
            let machines = match daemon.answer_if_running(daemon.client.machines())? {
                Some(listed) => listed.machines,
                None => {
                    let deployment = open(&home)?;
                    let machines = deployment.state.machines()?;
                    machines.iter().map(|machine| offline_view(&deployment, machine)).collect::<Result<_, _>>()?
                }
            };
            if json {
                print_json(&MachineList { machines });
            } else if machines.is_empty() {
                println!("no machines; `standby machine add NAME --disk IMAGE` defines one");
            } else {
                println!(
                    "{:<20} {:<14} {:<9} {:>4} {:>7}  disks (primary site)",
                    "name", "state", "site", "cpus", "MiB"
                );
                for machine in &machines {
                    let disks: Vec<String> =
                        machine.disks.iter().map(|d| d.definition.primary_path.display().to_string()).collect();
                    println!(
                        "{:<20} {:<14} {:<9} {:>4} {:>7}  {}",
                        machine.definition.name,
                        machine.state,
                        machine.active_site,
                        machine.definition.cpus,
                        machine.definition.memory_mib,
                        disks.join(", ")
                    );
                    print_addresses(machine);
                }
            }
            Ok(0)
        }
    }
}

/// Starts lifecycle command `command` on machine `name` as a job through the
/// daemon and, unless `no_wait`, follows it to its end, printing each step
/// as it changes; exit 0 when it succeeded.
pub fn run_job(
    arguments: &JobArguments,
    name: &str,
    command: Command,
    request: &impl serde::Serialize,
) -> anyhow::Result<u8> {
    run_job_with(arguments, |client| client.act(name, command, request))
}

/// Starts a job with `start` and follows it (see [`run_job`]).
fn run_job_with(
    arguments: &JobArguments,
    start: impl FnOnce(&standby_api::Client) -> Result<standby_api::JobStarted, ClientError>,
) -> anyhow::Result<u8> {
    let (no_wait, json) = (arguments.no_wait, arguments.json);
    let daemon = Daemon::of(&arguments.home)?;
    let started = daemon.answer(start(&daemon.client))?;
    let id = started.job;
    if no_wait {
        if json {
            print_json(&started);
        } else {
            println!("job {id} started; follow it with `standby jobs {id} --watch`");
        }
        return Ok(0);
    }
    let mut printed: Vec<(String, StepState, String)> = Vec::new();
    let job = loop {
        let job = match daemon.client.job(id) {
            Err(ClientError::Unreachable { .. }) => {
                return Err(anyhow::anyhow!(
                    "the daemon stopped while job {id} ran; when it starts again it resumes or rolls the job back \
                     (`standby jobs {id}`)"
                ));
            }
            answer => daemon.answer(answer)?,
        };
        if !json {
            for (index, step) in job.steps.iter().enumerate() {
                let line = (step.name.clone(), step.state, step.detail.clone());
                if printed.get(index) != Some(&line) && step.state != StepState::Pending {
                    let detail = if step.detail.is_empty() { String::new() } else { format!(": {}", step.detail) };
                    println!("  {:<8} {}{detail}", step.state, step.name);
                }
            }
            printed = job.steps.iter().map(|s| (s.name.clone(), s.state, s.detail.clone())).collect();
        }
        if job.state.ended() {
            break job;
        }
        std::thread::sleep(JOB_POLL_INTERVAL);
    };
    if json {
        print_json(&job);
    } else {
        println!("job {id} {} of {}: {}", job.command, subject(&job.subject), job.state);
    }
    match job.state {
        JobState::Succeeded => Ok(0),
        _ => Err(anyhow::anyhow!("job {id} {}: {}", job.state, job.error.unwrap_or_default())),
    }
}

/// How often a followed job is asked for its steps.
const JOB_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// `standby status`: health, RPO and latest points (from the daemon).
pub fn status(name: Option<&str>, home: &HomeArguments, json: bool) -> anyhow::Result<u8> {
    let daemon = Daemon::of(home)?;
    let status = daemon.answer(daemon.client.status(name))?;
    if json {
        print_json(&status);
        return Ok(0);
    }
    if status.machines.is_empty() {
        println!("no machines; `standby machine add NAME --disk IMAGE` defines one");
    }
    for machine in &status.machines {
        print_status(machine);
    }
    for plan in &status.plans {
        println!("plan {}: {}", plan.name, drill_line(plan.last_drill.as_ref(), plan.drill_every_seconds));
    }
    Ok(0)
}

/// A plan's last drill and schedule, in a line.
fn drill_line(drill: Option<&standby_api::PlanDrill>, every: Option<u64>) -> String {
    let last = match drill {
        None => "never drilled".to_string(),
        Some(drill) if drill.passed => {
            let rto = drill.rto_seconds.map(|rto| format!(", RTO {rto:.1} s")).unwrap_or_default();
            format!("last drill passed at {}{rto}", drill.at)
        }
        Some(drill) => format!("last drill FAILED at {}: {}", drill.at, drill.error.as_deref().unwrap_or("")),
    };
    match every {
        Some(every) => {
            format!("{last}; drilled every {}", humantime::format_duration(std::time::Duration::from_secs(every)))
        }
        None => last,
    }
}

fn print_status(machine: &MachineStatus) {
    let (name, state, site) = (&machine.name, machine.state, machine.site);
    let running = if machine.running { "running" } else { "stopped" };
    let Some(health) = machine.health else {
        println!("{name}: {state}, {running} at the {site} site (not replicated)");
        for disk in machine.hydration.iter().flatten() {
            print_hydration(disk);
        }
        return;
    };
    println!(
        "{name}: {state}, {running} at the {site} site; health {health}; RPO {:.1} s (threshold {} s)",
        machine.rpo_seconds.unwrap_or(0.0),
        machine.rpo_threshold_seconds.unwrap_or(0)
    );
    for problem in machine.problems.iter().flatten() {
        println!("  ! {problem}");
    }
    for disk in machine.disks.iter().flatten() {
        let point = |point: &Option<BookmarkView>| match point {
            Some(point) => format!("{} ({})", point.sequence, point.time),
            None => "none".to_string(),
        };
        println!(
            "  disk {}: latest {}; latest processed {}; latest app-consistent {}",
            disk.disk,
            disk.latest.as_deref().unwrap_or("none"),
            point(&disk.latest_processed),
            point(&disk.latest_app_consistent)
        );
    }
    if let Some(consistency) = &machine.consistency {
        println!("  points: {consistency}");
    }
}

fn print_hydration(disk: &Hydration) {
    let name = &disk.disk;
    match (disk.local_bytes, disk.disk_bytes) {
        (Some(local), Some(total)) if local == total => {
            println!("  disk {name}: local (hydrated), reads nothing from the vault")
        }
        (Some(local), Some(total)) => println!(
            "  disk {name}: hydrating, {} of {} MiB local ({:.0}%); the rest is read from the vault",
            local >> 20,
            total >> 20,
            local as f64 * 100.0 / total.max(1) as f64
        ),
        _ => println!("  disk {name}: served from the vault (not hydrating)"),
    }
}

pub fn policy(command: PolicyCommand) -> anyhow::Result<u8> {
    use crate::cli::parse_duration;
    match command {
        PolicyCommand::Add { name, rpo_threshold, retention, app_consistent, bookmarks, home, json } => {
            standby_control::validate_machine_name(&name).map_err(|_| {
                crate::bad_input(format!(
                    "policy name {name:?} is not allowed: use 1 to 48 letters, digits, '.', '_' or '-'"
                ))
            })?;
            let seconds = |text: &str, flag: &str| -> anyhow::Result<u64> {
                let duration = parse_duration(text, flag)?;
                if duration.as_secs() == 0 {
                    return Err(crate::bad_input(format!("{flag} {text:?} must be at least one second")));
                }
                Ok(duration.as_secs())
            };
            let policy = standby_control::Policy {
                name,
                rpo_threshold_seconds: seconds(&rpo_threshold, "--rpo-threshold")?,
                retention_seconds: seconds(&retention, "--retention")?,
                app_consistent_seconds: seconds(&app_consistent, "--app-consistent")?,
                bookmark_seconds: seconds(&bookmarks, "--bookmarks")?,
            };
            if policy.bookmark_seconds > policy.retention_seconds {
                return Err(crate::bad_input(format!(
                    "--bookmarks {bookmarks} is longer than --retention {retention}: no bookmark would be kept"
                )));
            }
            // Through the daemon when it runs; else here. Either checks it again.
            let daemon = Daemon::of(&home)?;
            if daemon.answer_if_running(daemon.client.add_policy(&policy))?.is_none() {
                open(&home)?.state.add_policy(&policy)?;
            }
            if json {
                print_json(&policy);
            } else {
                println!("defined policy '{}'; `standby protect NAME --policy {}` uses it", policy.name, policy.name);
            }
            Ok(0)
        }
        PolicyCommand::List { home, json } => {
            let daemon = Daemon::of(&home)?;
            let policies = match daemon.answer_if_running(daemon.client.policies())? {
                Some(listed) => listed.policies,
                None => open(&home)?.state.policies()?,
            };
            if json {
                print_json(&PolicyList { policies });
            } else {
                println!(
                    "{:<20} {:>10} {:>10} {:>15} {:>10}",
                    "name", "RPO", "retention", "app-consistent", "bookmarks"
                );
                for p in &policies {
                    let d = |s: u64| humantime::format_duration(std::time::Duration::from_secs(s)).to_string();
                    println!(
                        "{:<20} {:>10} {:>10} {:>15} {:>10}",
                        p.name,
                        d(p.rpo_threshold_seconds),
                        d(p.retention_seconds),
                        d(p.app_consistent_seconds),
                        d(p.bookmark_seconds)
                    );
                }
            }
            Ok(0)
        }
    }
}

fn print_job(job: &standby_api::Job) {
    println!("job {} {} of {}: {} (started {})", job.id, job.command, subject(&job.subject), job.state, job.created);
    for step in &job.steps {
        let detail = if step.detail.is_empty() { String::new() } else { format!(" ({})", step.detail) };
        println!("  {:<8} {}{detail}", step.state, step.name);
    }
    if let Some(error) = &job.error {
        println!("  error: {error}");
    }
}

/// `standby jobs`: read from the state, so it works with or without a daemon.
pub fn jobs(id: Option<i64>, watch: bool, home: &HomeArguments, json: bool) -> anyhow::Result<u8> {
    // From the daemon when it runs; else from the state, which only a daemon
    // changes (jobs shown running there were left by a daemon that stopped).
    let daemon = Daemon::of(home)?;
    let mut shown = String::new();
    loop {
        let asked = match id {
            Some(id) => daemon.answer_if_running(daemon.client.job(id))?.map(|job| vec![job]),
            None => daemon.answer_if_running(daemon.client.jobs())?.map(|listed| listed.jobs),
        };
        let live = asked.is_some();
        let jobs = match (asked, id) {
            (Some(jobs), _) => jobs,
            (None, Some(id)) => vec![open(home)?.state.job(id)?],
            (None, None) => open(home)?.state.jobs()?,
        };
        let running = live && jobs.iter().any(|job| !job.state.ended());
        if json {
            if !watch || !running {
                match id {
                    Some(_) => print_json(&jobs[0]),
                    None => print_json(&JobList { jobs }),
                }
            }
        } else {
            // With --watch, print again only when something changed.
            let text = serde_json::to_string(&jobs)?;
            if text != shown {
                if jobs.is_empty() {
                    println!("no jobs yet");
                }
                for job in &jobs {
                    print_job(job);
                }
                shown = text;
            }
        }
        if !watch || !running {
            return Ok(0);
        }
        std::thread::sleep(JOBS_WATCH_INTERVAL);
    }
}

/// How often `jobs --watch` looks again.
const JOBS_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A job's subject as its lines name it: `'web'` for a machine (the usual
/// case), `group 'shop'`, `plan 'dr'`.
fn subject(subject: &standby_lifecycle::job::Subject) -> String {
    match subject {
        standby_lifecycle::job::Subject::Machine(name) => format!("'{name}'"),
        other => other.to_string(),
    }
}

pub fn token(command: TokenCommand) -> anyhow::Result<u8> {
    match command {
        TokenCommand::Create { name, read_only, file, home, json } => {
            let file = file.unwrap_or_else(|| PathBuf::from(format!("{name}.token")));
            // Checked first: a token made whose file cannot be written is revoked again.
            if file.exists() {
                return Err(crate::bad_input(format!(
                    "--file {} exists; a token file is never overwritten: name another",
                    file.display()
                )));
            }
            let daemon = Daemon::of(&home)?;
            let made = daemon.answer(daemon.client.create_token(&standby_api::TokenRequest { name, read_only }))?;
            let token = standby_link::Token::parse(&made.token)
                .map_err(|e| anyhow::anyhow!("the daemon answered a token this version does not read: {e}"))?;
            let written = standby_link::TokenFile::new(
                standby_link::TokenFileRole::Operator,
                &token,
                made.control_site.name(),
                &made.ca_pem,
                None,
            )
            .write_file(&file);
            if let Err(e) = written {
                let _ = daemon.client.revoke_token(&made.name);
                return Err(crate::bad_input(format!("{e}; the token was revoked again")));
            }
            let file = std::path::absolute(&file).unwrap_or(file);
            if json {
                print_json(&json!({"name": made.name, "role": made.role, "file": file}));
            } else {
                println!("made {} token '{}' in {} (readable by you only)", made.role, made.name, file.display());
                println!(
                    "  the API and the console take its \"token\" field; the CLI takes --token-file {}",
                    file.display()
                );
            }
            Ok(0)
        }
        TokenCommand::List { home, json } => {
            let daemon = Daemon::of(&home)?;
            let list = daemon.answer(daemon.client.tokens())?;
            if json {
                print_json(&list);
            } else {
                println!("{:<24} {:<10} {:<28} expires", "name", "role", "created");
                for token in &list.tokens {
                    let expires = token.expires.as_deref().unwrap_or("never");
                    println!("{:<24} {:<10} {:<28} {expires}", token.name, token.role, token.created);
                }
            }
            Ok(0)
        }
        TokenCommand::Revoke { name, home, json } => {
            let daemon = Daemon::of(&home)?;
            let revoked = daemon.answer(daemon.client.revoke_token(&name))?;
            if json {
                print_json(&revoked);
            } else {
                println!("revoked token '{}': it opens nothing from now on", revoked.name);
            }
            Ok(0)
        }
    }
}

/// `audit`: who did what.
pub fn audit(limit: u32, home: &HomeArguments, json: bool) -> anyhow::Result<u8> {
    let daemon = Daemon::of(home)?;
    let list = daemon.answer(daemon.client.audit(limit))?;
    if json {
        print_json(&list);
        return Ok(0);
    }
    for entry in &list.entries {
        let answer = match (entry.status, entry.code) {
            (None, _) => "no answer".to_string(),
            (Some(200), _) => "ok".to_string(),
            (Some(status), Some(code)) => format!("{status} {}", serde_json::to_value(code)?.as_str().unwrap_or("")),
            (Some(status), None) => status.to_string(),
        };
        let request = entry.request.as_ref().map(|body| format!(" {body}")).unwrap_or_default();
        println!("{}  {:<16} {} {}{request}  -> {answer}", entry.at, entry.actor, entry.method, entry.path);
    }
    Ok(0)
}

/// `alerts`: what stands (and with `--all`, what was cleared lately).
pub fn alerts(all: bool, home: &HomeArguments, json: bool) -> anyhow::Result<u8> {
    let daemon = Daemon::of(home)?;
    let list = daemon.answer(daemon.client.alerts(all))?;
    if json {
        print_json(&list);
        return Ok(0);
    }
    if list.alerts.is_empty() {
        println!("no alert{}", if all { "" } else { " stands" });
    }
    for alert in &list.alerts {
        let when = match &alert.cleared {
            Some(cleared) => format!("raised {}, cleared {cleared}", alert.raised),
            None => format!("since {}", alert.raised),
        };
        println!("{:<8} {:<22} {:<24} {}  ({when})", alert.severity, alert.kind.name(), alert.subject, alert.message);
    }
    Ok(0)
}
