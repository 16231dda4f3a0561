//! The lifecycle commands (DESIGN.md §5): deployments and machines.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::json;
use standby_control::{Deployment, MachineDefinition};

use crate::cli::{HomeArguments, MachineCommand};
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
            let started = call(&deployment, "POST", &format!("/v1/machines/{name}/start"))?;
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
        MachineCommand::Stop { name, force, home, json } => {
            let deployment = open(&home)?;
            let stopped = call(&deployment, "POST", &format!("/v1/machines/{name}/stop?force={force}"))?;
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
        let running = jobs.iter().any(|job| job.state == "running");
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
