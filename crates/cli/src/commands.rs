//! Where each command goes: the vault's (`vault_commands`), the site
//! agents' (`agent_commands`), the deployment's and its machines'
//! (`lifecycle`, through the daemon's API), the demos.

use serde_json::json;
use standby_api::{FailoverRequest, PlannedFailoverRequest, PointRequest, ProtectRequest, ReprotectRequest};
use standby_lifecycle::Command as Lifecycle;

use crate::cli::{Arguments, Command, VaultCommand};
use crate::{agent_commands, demo, vault_commands};

pub fn run(arguments: Arguments) -> anyhow::Result<u8> {
    match arguments.command {
        Command::Vault(VaultCommand::Init { vault, key_file, compression_level, json }) => {
            vault_commands::vault_init(&vault, key_file.as_deref(), compression_level, json)
        }
        Command::Sync { image, vault, disk, app_consistent, label, json } => {
            vault_commands::sync(&image, &vault, &disk, app_consistent, label, json)
        }
        Command::ServeDisk {
            image,
            socket,
            vault,
            disk,
            bookmark_interval,
            seal_interval,
            queue_mib,
            wait_for_vault,
            group,
        } => {
            let pace = agent_commands::Pace { bookmark_interval, seal_interval, queue_mib };
            agent_commands::serve_disk(&image, &socket, &vault, &disk, &pace, wait_for_vault, group)
        }
        Command::Export { vault, disk, point, socket, overlay, hydrate } => {
            agent_commands::export(&vault, &disk, &point, &socket, overlay, hydrate)
        }
        Command::SplitterStatus { socket, json } => agent_commands::splitter_status(&socket, json),
        Command::Mark { socket, app_consistent, label, no_wait, json } => {
            agent_commands::mark(&socket, app_consistent, label, no_wait, json)
        }
        Command::Points { vault, disk, json } => vault_commands::points(&vault, &disk, json),
        Command::Restore { vault, disk, point, output, force, json } => {
            vault_commands::restore(&vault, &disk, &point, &output, force, json)
        }
        Command::Verify { vault, json } => vault_commands::verify(&vault, json),
        Command::Resync { source, target, allow_resize, json } => {
            vault_commands::resync(&source, &target, allow_resize, json)
        }
        Command::Prune { vault, retention, grace, json } => vault_commands::prune(&vault, retention, &grace, json),
        Command::Init { dir, site: None, json, .. } => crate::lifecycle::init(&dir, json),
        Command::Init { dir, site: Some(site), listen, json } => {
            crate::lifecycle::init_host(&dir, &site, listen.as_deref().unwrap_or_default(), json)
        }
        Command::Join { dir, site, control, join_token, listen, json } => {
            crate::lifecycle::join(&dir, &site, &control, &join_token, &listen, json)
        }
        Command::RecoverControl { dir, vault, key_file, json } => {
            crate::lifecycle::recover_control(&dir, &vault, key_file.as_deref(), json)
        }
        Command::Machine(command) => crate::lifecycle::machine(command),
        Command::Policy(command) => crate::lifecycle::policy(command),
        Command::Group(command) => crate::lifecycle::group(command),
        Command::Plan(command) => crate::lifecycle::plan(command),
        Command::Serve { home, listen, metrics_listen } => crate::lifecycle::serve(&home, listen, metrics_listen),
        Command::Token(command) => crate::lifecycle::token(command),
        Command::Alerts { all, home, json } => crate::lifecycle::alerts(all, &home, json),
        Command::Audit { limit, home, json } => crate::lifecycle::audit(limit, &home, json),
        Command::Jobs { id, watch, home, json } => crate::lifecycle::jobs(id, watch, &home, json),
        Command::Sites { home, json } => crate::lifecycle::sites(&home, json),
        Command::Protect { name, policy, group, job } => {
            crate::lifecycle::run_job(&job, &name, Lifecycle::Protect, &ProtectRequest { policy, group })
        }
        Command::Unprotect { name, job } => crate::lifecycle::run_job(&job, &name, Lifecycle::Unprotect, &json!({})),
        Command::TestFailover { name, point, job } => {
            crate::lifecycle::run_job(&job, &name, Lifecycle::TestFailover, &PointRequest { point })
        }
        Command::CleanupTestFailover { name, job } => {
            crate::lifecycle::run_job(&job, &name, Lifecycle::CleanupTestFailover, &json!({}))
        }
        Command::Failover { name, point, shutdown_source, job } => {
            let request = FailoverRequest { point, shutdown_source };
            crate::lifecycle::run_job(&job, &name, Lifecycle::Failover, &request)
        }
        Command::PlannedFailover { name, sync_first, job } => {
            let request = PlannedFailoverRequest { sync_first };
            crate::lifecycle::run_job(&job, &name, Lifecycle::PlannedFailover { sync_first }, &request)
        }
        Command::CompleteFailover { name, job } => {
            crate::lifecycle::run_job(&job, &name, Lifecycle::CompleteFailover, &json!({}))
        }
        Command::ChangePoint { name, point, job } => {
            let request = PointRequest { point: Some(point) };
            crate::lifecycle::run_job(&job, &name, Lifecycle::ChangePoint, &request)
        }
        Command::Commit { name, job } => crate::lifecycle::run_job(&job, &name, Lifecycle::Commit, &json!({})),
        Command::Cancel { name, job } => crate::lifecycle::run_job(&job, &name, Lifecycle::Cancel, &json!({})),
        Command::Reprotect { name, alternate_location, discard_source_writes, job } => {
            let request = ReprotectRequest { alternate_location, discard_source_writes };
            crate::lifecycle::run_job(&job, &name, Lifecycle::Reprotect, &request)
        }
        Command::Status { name, home, json } => crate::lifecycle::status(name.as_deref(), &home, json),
        Command::ProbeKvm => match standby_control::qemu::probe_kvm() {
            Ok(()) => Ok(0),
            Err(why) => Err(anyhow::anyhow!("{why}")),
        },
        Command::Demo { dir, disk: true } => demo::run(dir),
        Command::Demo { dir, disk: false } => guest_demo(dir),
    }
}

#[cfg(feature = "guest-demo")]
fn guest_demo(dir: Option<std::path::PathBuf>) -> anyhow::Result<u8> {
    crate::journey::run(dir)
}

/// The shipped binary does not carry the test guest builder.
#[cfg(not(feature = "guest-demo"))]
fn guest_demo(_dir: Option<std::path::PathBuf>) -> anyhow::Result<u8> {
    Err(crate::bad_input(
        "this standby is built without the guest demo (the test guest builder is not shipped): scripts/demo builds \
         and runs it; `standby demo --disk` runs the disk-level journey",
    ))
}
