//! Retention, applied by the daemon: each replicated machine's journals
//! keep the last `retention` of its policy restorable and fold what is
//! older into a base (`compact_journal`); then the vault's unreferenced
//! packs are marked and, after the grace period, swept (`prune`).
//!
//! A machine running from a point (a drill, a failover not yet
//! reprotected) reads its disks' journals where they stand: retention
//! waits for it, so the point it runs from is never compacted away.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use standby_lifecycle::State;

use super::Daemon;

/// How long unreferenced data waits before it is deleted (as `standby prune`'s default).
const GRACE: Duration = Duration::from_secs(3600);

/// How often retention runs, unless `STANDBY_RETENTION_INTERVAL` says.
const RETENTION_INTERVAL: Duration = Duration::from_secs(600);

/// How often retention runs (`STANDBY_RETENTION_INTERVAL` overrides it,
/// for tests).
fn interval() -> Duration {
    std::env::var("STANDBY_RETENTION_INTERVAL")
        .ok()
        .and_then(|text| humantime::parse_duration(&text).ok())
        .unwrap_or(RETENTION_INTERVAL)
}

impl Daemon {
    /// Runs forever: one retention pass per interval.
    pub(super) fn retention_loop(self: Arc<Self>) {
        let interval = interval();
        loop {
            std::thread::sleep(interval);
            if let Err(e) = self.retention_pass() {
                eprintln!("standby: retention: {e}");
            }
        }
    }

    fn retention_pass(&self) -> Result<(), crate::ControlError> {
        let deployment = self.deployment()?;
        let now = jiff::Timestamp::now().as_microsecond();
        let mut compacted_vaults = BTreeSet::new();
        for machine in deployment.state.machines()? {
            // A drill reads a point of the replica: not compacted away under it.
            if !machine.state.replicating() || machine.state == State::TestFailover {
                continue;
            }
            let policy = deployment.state.policy(machine.policy.as_deref().unwrap_or("default"))?;
            let site = machine.active_site.other();
            let vault = deployment.open_vault_at(site)?;
            let cutoff = now - (policy.retention_seconds as i64) * 1_000_000;
            for disk in &machine.disks {
                if let Some(report) = standby_vault::compact::compact_journal(&vault, &disk.vault_disk, cutoff)? {
                    compacted_vaults.insert(site);
                    eprintln!(
                        "standby: retention: {} compacted up to {} ({} segment(s) removed)",
                        disk.vault_disk, report.base_time, report.segments_removed
                    );
                }
            }
        }
        // Data no journal references any more is marked, and swept after
        // the grace period (a later pass).
        for site in compacted_vaults {
            let vault = deployment.open_vault_at(site)?;
            let options = standby_vault::prune::PruneOptions { drop_before_micros: None, grace: GRACE };
            standby_vault::prune::prune(&vault, &options)?;
        }
        Ok(())
    }
}
