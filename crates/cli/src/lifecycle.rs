//! The lifecycle commands (DESIGN.md §5): deployments and machines.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::json;
use standby_control::{Deployment, MachineDefinition};
use standby_lifecycle::job::{JobState, StepState};

use crate::cli::{HomeArguments, MachineCommand, PolicyCommand};
use crate::output::print_json;

pub fn init(dir: &Path, json: bool) -> anyhow::Result<u8> {
    let deployment = Deployment::init(dir)?;
    if json {
        print_json(&json!({
            "home": deployment.home,
            "vault": deployment.vault(),
            "policies": deployment.state.policies()?,
        }));
    } else {
        println!("created a deployment in {}", deployment.home.display());
        println!("  primary site disks:  {}", deployment.path(&deployment.config.primary.disks).display());
        println!("  recovery site disks: {}", deployment.path(&deployment.config.recovery.disks).display());
        println!("  vault:               {}", deployment.vault());
        println!(
            "  policy 'default':    RPO threshold 15m, retention 24h, app-consistent every 60m, bookmarks every 5s"
        );
        println!("next: standby machine add NAME --disk IMAGE --home {}", deployment.home.display());
    }
    Ok(0)
}

fn open(home: &HomeArguments) -> anyhow::Result<Deployment> {
    Ok(Deployment::open(&Deployment::locate(home.home.as_deref()))?)
}

pub fn serve(home: &HomeArguments) -> anyhow::Result<u8> {
    let exe = std::env::current_exe()?;
    standby_control::daemon::serve(&Deployment::locate(home.home.as_deref()), &exe)?;
    Ok(0)
}

/// `text` as one URL path segment or query value (percent-encoded).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request to the deployment's daemon; its JSON answer, or its error
/// (a refusal is bad input).
fn call(deployment: &Deployment, method: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let socket = deployment.run_dir().join(standby_control::daemon::SOCKET);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).map_err(|_| {
        crate::bad_input(format!(
            "no daemon is running for the deployment at {}: start it with `standby serve --home {}`",
            deployment.home.display(),
            deployment.home.display()
        ))
    })?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: standby\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("the daemon sent no HTTP response"))?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| anyhow::anyhow!("the daemon answered {status} without JSON ({e})"))?;
    if status == 200 {
        return Ok(value);
    }
    let message = value["error"].as_str().unwrap_or("no message").to_string();
    if value["bad_input"].as_bool() == Some(true) {
        return Err(crate::bad_input(message));
    }
    Err(anyhow::anyhow!(message))
}

pub fn machine(command: MachineCommand) -> anyhow::Result<u8> {
    match command {
        MachineCommand::Add { name, disks, memory, cpus, kernel, initrd, append, nics, home, json } => {
            let mut deployment = open(&home)?;
            let definition = MachineDefinition { name, cpus, memory_mib: memory, kernel, initrd, append, nics };
            let machine = deployment.add_machine(&definition, &disks)?;
            if json {
                print_json(&machine);
            } else {
                println!(
                    "defined machine '{}' ({} CPU, {} MiB, {} disk{}) at the primary site, unprotected",
                    machine.definition.name,
                    machine.definition.cpus,
                    machine.definition.memory_mib,
                    machine.disks.len(),
                    if machine.disks.len() == 1 { "" } else { "s" }
                );
                for disk in &machine.disks {
                    println!("  {}", disk.primary_path.display());
                }
            }
            Ok(0)
        }
        MachineCommand::Start { name, home, json } => {
            let deployment = open(&home)?;
            let started = call(&deployment, "POST", &format!("/v1/machines/{}/start", encode(&name)))?;
            if json {
                print_json(&started);
            } else {
                println!(
                    "machine '{name}' is running at the {} site (pid {}, {}); its console is {}",
                    started["site"].as_str().unwrap_or("?"),
                    started["pid"],
                    started["accel"].as_str().unwrap_or("?"),
                    started["console"].as_str().unwrap_or("?")
                );
            }
            Ok(0)
        }
        MachineCommand::Stop { name, force, site, home, json } => {
            let deployment = open(&home)?;
            let site = site.map(|s| format!("&site={}", encode(&s))).unwrap_or_default();
            let stopped =
                call(&deployment, "POST", &format!("/v1/machines/{}/stop?force={force}{site}", encode(&name)))?;
            if json {
                print_json(&stopped);
            } else {
                println!("machine '{name}' stopped ({})", stopped["stopped"].as_str().unwrap_or("?"));
            }
            Ok(0)
        }
        MachineCommand::List { home, json } => {
            let deployment = open(&home)?;
            let machines = deployment.state.machines()?;
            if json {
                // With a daemon, each machine's runtime too.
                let listed =
                    call(&deployment, "GET", "/v1/machines").unwrap_or_else(|_| json!({ "machines": machines }));
                print_json(&listed);
            } else if machines.is_empty() {
                println!("no machines; `standby machine add NAME --disk IMAGE` defines one");
            } else {
                println!(
                    "{:<20} {:<14} {:<9} {:>4} {:>7}  disks (primary site)",
                    "name", "state", "site", "cpus", "MiB"
                );
                for machine in &machines {
                    let disks: Vec<String> =
                        machine.disks.iter().map(|d| d.primary_path.display().to_string()).collect();
                    println!(
                        "{:<20} {:<14} {:<9} {:>4} {:>7}  {}",
                        machine.definition.name,
                        machine.state,
                        machine.active_site,
                        machine.definition.cpus,
                        machine.definition.memory_mib,
                        disks.join(", ")
                    );
                }
            }
            Ok(0)
        }
    }
}

/// Starts a job through the daemon and, unless `no_wait`, follows it to
/// its end, printing each step as it changes; exit 0 when it succeeded.
pub fn run_job(home: &HomeArguments, path: &str, no_wait: bool, json: bool) -> anyhow::Result<u8> {
    let deployment = open(home)?;
    let started = call(&deployment, "POST", path)?;
    let id = started["job"].as_i64().ok_or_else(|| anyhow::anyhow!("the daemon started no job: {started}"))?;
    if no_wait {
        if json {
            print_json(&started);
        } else {
            println!("job {id} started; follow it with `standby jobs {id} --watch`");
        }
        return Ok(0);
    }
    let socket = deployment.run_dir().join(standby_control::daemon::SOCKET);
    let mut printed: Vec<(String, StepState, String)> = Vec::new();
    let job = loop {
        let job = deployment.state.job(id)?;
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
        if std::os::unix::net::UnixStream::connect(&socket).is_err() {
            return Err(anyhow::anyhow!(
                "the daemon stopped while job {id} ran; when it starts again it resumes or rolls the job back \
                 (`standby jobs {id}`)"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if json {
        print_json(&job);
    } else {
        println!("job {id} {} of '{}': {}", job.command, job.machine, job.state);
    }
    match job.state {
        JobState::Succeeded => Ok(0),
        _ => Err(anyhow::anyhow!("job {id} {}: {}", job.state, job.error.unwrap_or_default())),
    }
}

/// `standby status`: health, RPO and latest points (from the daemon).
pub fn status(name: Option<&str>, home: &HomeArguments, json: bool) -> anyhow::Result<u8> {
    let deployment = open(home)?;
    let path = match name {
        Some(name) => format!("/v1/status/{}", encode(name)),
        None => "/v1/status".to_string(),
    };
    let status = call(&deployment, "GET", &path)?;
    if json {
        print_json(&status);
        return Ok(0);
    }
    let machines = status["machines"].as_array().cloned().unwrap_or_default();
    if machines.is_empty() {
        println!("no machines; `standby machine add NAME --disk IMAGE` defines one");
    }
    for machine in &machines {
        let name = machine["name"].as_str().unwrap_or("?");
        let state = machine["state"].as_str().unwrap_or("?");
        let site = machine["site"].as_str().unwrap_or("?");
        let running = if machine["running"] == true { "running" } else { "stopped" };
        let Some(health) = machine["health"].as_str() else {
            println!("{name}: {state}, {running} at the {site} site (not replicated)");
            for disk in machine["hydration"].as_array().into_iter().flatten() {
                let disk_name = disk["disk"].as_str().unwrap_or("?");
                match (disk["local_bytes"].as_u64(), disk["disk_bytes"].as_u64()) {
                    (Some(local), Some(total)) if local == total => {
                        println!("  disk {disk_name}: local (hydrated), reads nothing from the vault")
                    }
                    (Some(local), Some(total)) => println!(
                        "  disk {disk_name}: hydrating, {} of {} MiB local ({:.0}%); the rest is read from the vault",
                        local >> 20,
                        total >> 20,
                        local as f64 * 100.0 / total.max(1) as f64
                    ),
                    _ => println!("  disk {disk_name}: served from the vault (not hydrating)"),
                }
            }
            continue;
        };
        println!(
            "{name}: {state}, {running} at the {site} site; health {health}; RPO {:.1} s (threshold {} s)",
            machine["rpo_seconds"].as_f64().unwrap_or(0.0),
            machine["rpo_threshold_seconds"]
        );
        for problem in machine["problems"].as_array().into_iter().flatten() {
            println!("  ! {}", problem.as_str().unwrap_or(""));
        }
        for disk in machine["disks"].as_array().into_iter().flatten() {
            let point = |key: &str| match disk[key]["time"].as_str() {
                Some(time) => format!("{} ({})", disk[key]["sequence"], time),
                None => "none".to_string(),
            };
            println!(
                "  disk {}: latest {}; latest processed {}; latest app-consistent {}",
                disk["disk"].as_str().unwrap_or("?"),
                disk["latest"].as_str().unwrap_or("none"),
                point("latest_processed"),
                point("latest_app_consistent")
            );
        }
        if let Some(consistency) = machine["consistency"].as_str() {
            println!("  points: {consistency}");
        }
    }
    Ok(0)
}

pub fn policy(command: PolicyCommand) -> anyhow::Result<u8> {
    use crate::commands::parse_duration;
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
            let deployment = open(&home)?;
            deployment.state.add_policy(&policy)?;
            if json {
                print_json(&policy);
            } else {
                println!("defined policy '{}'; `standby protect NAME --policy {}` uses it", policy.name, policy.name);
            }
            Ok(0)
        }
        PolicyCommand::List { home, json } => {
            let policies = open(&home)?.state.policies()?;
            if json {
                print_json(&json!({ "policies": policies }));
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

fn print_job(job: &standby_control::Job) {
    println!("job {} {} of '{}': {} (started {})", job.id, job.command, job.machine, job.state, job.created);
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
    let deployment = open(home)?;
    let mut shown = String::new();
    loop {
        let jobs = match id {
            Some(id) => vec![deployment.state.job(id)?],
            None => deployment.state.jobs()?,
        };
        let running = jobs.iter().any(|job| !job.state.ended());
        if json {
            if !watch || !running {
                match id {
                    Some(_) => print_json(&jobs[0]),
                    None => print_json(&json!({ "jobs": jobs })),
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
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
