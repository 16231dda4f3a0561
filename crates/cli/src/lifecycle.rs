//! The lifecycle commands (DESIGN.md §5): deployments and machines.

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
        MachineCommand::List { home, json } => {
            let deployment = open(&home)?;
            let machines = deployment.state.machines()?;
            if json {
                print_json(&json!({ "machines": machines }));
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
