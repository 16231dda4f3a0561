//! Seeds a deployment with a protected fleet and its recorded history, for
//! the console's benchmark (`bench/console.py`): MACHINES machines of DISKS
//! disks each, protected under the default policy, whose journals in the
//! recovery site's vault hold HOURS of history (a bookmark every 5 s, a
//! write every minute, an app-consistent point every hour, a segment sealed
//! every 5 minutes); and machine `week` (3 disks) under policy `week`
//! (7 days' retention) with a week of it (a segment sealed every minute).
//!
//! The machines' images are not made: the benchmark's daemon finds no
//! splitter to start for them (status says so, critical), as it would on a
//! control plane whose primary site's splitters are elsewhere.
//!
//! Usage: cargo run --release -p standby-control --example fleet -- HOME [MACHINES] [DISKS] [HOURS]

use std::path::PathBuf;

use standby_control::{Deployment, DiskDefinition, MachineDefinition, Policy};
use standby_format::PointKind;
use standby_lifecycle::{Site, State};
use standby_vault::journal::JournalWriter;

const MICROS: i64 = 1_000_000;
const BOOKMARK_EVERY: i64 = 5 * MICROS;
const WRITE_EVERY: i64 = 60 * MICROS;
const APP_CONSISTENT_EVERY: i64 = 3600 * MICROS;
const DISK_BYTES: u64 = 1 << 30;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let Some(home) = arguments.first().map(PathBuf::from) else {
        return Err("usage: fleet HOME [MACHINES] [DISKS] [HOURS]".into());
    };
    let number = |index: usize, default: u64| arguments.get(index).map_or(Ok(default), |text| text.parse::<u64>());
    let (machines, disks, hours) = (number(1, 1000)?, number(2, 3)?, number(3, 2)?);
    let mut deployment = Deployment::open(&home)?;
    let vault = deployment.open_vault_at(Site::Recovery)?;
    let now = jiff::Timestamp::now().as_microsecond();
    let week = Policy {
        name: "week".into(),
        rpo_threshold_seconds: 900,
        retention_seconds: 7 * 24 * 3600,
        app_consistent_seconds: 3600,
        bookmark_seconds: 5,
    };
    deployment.state.add_policy(&week)?;
    let mut fleet: Vec<(String, u64, i64, i64, &str)> = (0..machines)
        .map(|index| (format!("vm{index:04}"), disks, hours as i64 * 3600 * MICROS, 300 * MICROS, "default"))
        .collect();
    fleet.push(("week".into(), 3, 7 * 24 * 3600 * MICROS, 60 * MICROS, "week"));
    for (done, (name, disks, history, seal_every, policy)) in fleet.iter().enumerate() {
        let definition = MachineDefinition {
            name: name.clone(),
            cpus: 1,
            memory_mib: 512,
            kernel: None,
            initrd: None,
            append: None,
            nics: Vec::new(),
        };
        let disk_definitions: Vec<DiskDefinition> = (0..*disks)
            .map(|disk| DiskDefinition {
                vault_disk: format!("{name}-{disk}"),
                primary_path: home.join(Site::Primary.name()).join(format!("{name}-{disk}.raw")),
                recovery_path: home.join(Site::Recovery.name()).join(format!("{name}-{disk}.raw")),
            })
            .collect();
        deployment.state.add_machine(&definition, &disk_definitions, Site::Primary)?;
        for disk in &disk_definitions {
            record_history(&vault, &disk.vault_disk, now - history, now, *seal_every)?;
        }
        deployment.state.set_machine_state(name, State::Protected, Some(Some(policy)))?;
        if done % 100 == 99 {
            eprintln!("fleet: {} of {} machines", done + 1, fleet.len());
        }
    }
    eprintln!("fleet: {} machines seeded", fleet.len());
    Ok(())
}

/// A disk's journal from `from` to `to`: bookmarks, writes and app-consistent points.
fn record_history(
    vault: &standby_vault::Vault,
    disk: &str,
    from: i64,
    to: i64,
    seal_every: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut writer = JournalWriter::open(vault, disk)?;
    writer.size(DISK_BYTES, from);
    let mut sealed = from;
    let mut time = from;
    while time <= to {
        if (time - from) % WRITE_EVERY == 0 {
            let block = ((time / WRITE_EVERY) as u64 % (DISK_BYTES / 4096)) * 4096;
            writer.write(block, &time.to_le_bytes().repeat(512), time);
        }
        let kind = if (time - from) % APP_CONSISTENT_EVERY == 0 {
            PointKind::AppConsistent
        } else {
            PointKind::CrashConsistent
        };
        writer.bookmark(kind, "", time);
        if time - sealed >= seal_every {
            writer.seal()?;
            sealed = time;
        }
        time += BOOKMARK_EVERY;
    }
    writer.seal()?;
    Ok(())
}
