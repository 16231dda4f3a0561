//! Reprotect: after a committed failover, replicate the machine back to
//! the site it came from, moving only the blocks that differ.
//!
//! The machine runs at its new site from exports of the failover point T
//! with overlays; the old source's disks are at the old site. They differ
//! only where one of them was written after T:
//!
//! - **S**, the old source's writes after T: the journal records stamped
//!   after T in the vault it replicated into, plus the regions its intent
//!   log says never reached that vault;
//! - **O**, the writes at the new site since T: the overlays' maps.
//!
//! The old disk becomes the base of the journal in the old site's vault
//! (stored there, locally: no bytes between sites, and its chunks are then
//! known to that vault); the running disk is rebuilt from T at the new
//! site (locally again) plus the overlays; a splitter on it, replicating
//! into the old site's vault, starts with an intent log marking S ∪ O, so
//! it re-reads just those regions, and the vault stores only chunks it does
//! not have. When tracking is missing (no usable intent log or overlay
//! map, a compacted or gapped journal), every region is re-read and the
//! chunk ids (keyed BLAKE3) do the comparison.
//!
//! Refused while the old source runs, when the machine has internal
//! snapshots, and when the old source wrote after the failover began
//! (split brain: after the copy at the new site started) unless
//! `--discard-source-writes` says to overwrite that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use standby_api::JobStarted;
use standby_lifecycle::job::{JobKind, JobOrigin, StepState};
use standby_lifecycle::{Command, State};

use super::engine::{check, transition_of, Part};
use super::files::overlay_path;
use super::protection::splitters_dir;
use super::{instance, Daemon, JobSteps};
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::machine::Machine;
use crate::points::MachinePoint;
use crate::records::{MachineRecords, ReprotectRecord, ReprotectedRecord};
use crate::site::{MarkWait, SiteHost};
use crate::vaults::VaultAddress;

const STEPS: [&str; 5] = [
    "find the blocks that differ",
    "seed the old site's vault from the old disks",
    "rebuild the running disks from the point",
    "move the machine onto reverse replication",
    "ship the blocks that differ",
];

/// What is known to differ on one disk, or `None`: tracking is missing.
type Differences = Option<Vec<(u64, u64)>>;

fn total(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|(_, length)| length).sum()
}

fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

/// What the old source wrote after `point`, per disk (journal records
/// after it plus what its intent log says never reached the vault), or
/// `None` where that is not known (or not used: an alternate location).
fn source_writes(
    old_host: &dyn SiteHost,
    history: &standby_vault::Vault,
    machine: &Machine,
    point: &MachinePoint,
    alternate_location: bool,
) -> Result<Vec<Differences>, ControlError> {
    let old = machine.active_site.other();
    let mut writes = Vec::new();
    for disk in &machine.disks {
        let old_image = disk.image_at(old);
        if alternate_location || !old_host.is_file(old_image) {
            writes.push(None);
            continue;
        }
        let journal = standby_vault::compact::changed_since(history, &disk.vault_disk, point.time_micros)?;
        let unshipped = old_host.intent_log(old_image)?;
        writes.push(match (journal, unshipped) {
            (Some(mut journal), Some(unshipped)) => {
                journal.extend(unshipped);
                Some(journal)
            }
            _ => None,
        });
    }
    Ok(writes)
}

/// The first step's report: per disk, what is known to differ and how it
/// will be found.
fn describe_differences(
    host: &dyn SiteHost,
    deployment: &Deployment,
    machine: &Machine,
    source_writes: &[Differences],
    alternate_location: bool,
    job: i64,
) -> Result<String, ControlError> {
    let (active, old) = (machine.active_site, machine.active_site.other());
    let mut notes = Vec::new();
    for (index, disk) in machine.disks.iter().enumerate() {
        let here = host.overlay_ranges(&overlay_path(deployment, machine, index, active.into()))?;
        notes.push(match (&source_writes[index], &here) {
            (Some(source), Some(overlay)) => format!(
                "{}: {} written by the old source after the point, {} at the {active} site since",
                disk.vault_disk,
                mib(total(source)),
                mib(total(overlay))
            ),
            _ if alternate_location => format!(
                "{}: alternate location, every block is copied; the original disk {} stays untouched, the \
                 machine's disk at the {old} site becomes {}",
                disk.vault_disk,
                disk.image_at(old).display(),
                alternate_path(disk.image_at(old), job).display()
            ),
            _ => format!("{}: tracking is missing, every block is compared by its BLAKE3 id", disk.vault_disk),
        });
    }
    Ok(notes.join("; "))
}

/// Rebuilds the running disks at the point plus the writes since: a
/// hydrated overlay becomes the disk, else the point is restored from the
/// vault. Says which.
fn rebuild_running_disks(
    host: &dyn SiteHost,
    history: &VaultAddress,
    machine: &Machine,
    point: &MachinePoint,
    job: &JobSteps,
) -> Result<String, ControlError> {
    let active = machine.active_site;
    let mut local = 0;
    for (index, disk) in machine.disks.iter().enumerate() {
        let image = disk.image_at(active);
        let overlay = overlay_path(job.deployment, machine, index, active.into());
        let hydrated = wait_for_hydration(host, &overlay, HYDRATION_STALL, |detail| {
            job.step(STEPS[2], StepState::Running, &format!("{}: {detail}", disk.vault_disk))
        })?;
        if hydrated {
            // The overlay holds the point and the writes since: it becomes
            // the disk (a second name for the same file, or a local copy
            // across filesystems) while the guest runs on it, and stays its
            // disk once the export stops.
            host.take_over_overlay(&overlay, image)?;
            local += 1;
        } else {
            host.restore_journal(history, &disk.vault_disk, point.time_micros, image)?;
        }
    }
    Ok(match local {
        0 => "restored from the vault".to_string(),
        n if n == machine.disks.len() => "the hydrated overlays became the disks".to_string(),
        n => format!("{n} made of hydrated overlays, the rest restored from the vault"),
    })
}

impl Daemon {
    pub(super) fn reprotect(
        self: &Arc<Self>,
        name: &str,
        alternate_location: bool,
        discard_source_writes: bool,
    ) -> Result<JobStarted, ControlError> {
        self.lifecycle(name, Command::Reprotect, None, |daemon, deployment, machine, _| {
            daemon.reprotect_part(deployment, machine, alternate_location, discard_source_writes)
        })
    }

    /// The reprotect of `machine`, checked, as a job's part.
    pub(super) fn reprotect_part(
        &self,
        deployment: &Deployment,
        machine: Machine,
        alternate_location: bool,
        discard_source_writes: bool,
    ) -> Result<Part, ControlError> {
        check(&machine, Command::Reprotect)?;
        if machine.state == State::Reprotecting {
            // A failed reprotect, asked again: on from where it stopped.
            return Ok(resume_reprotect_part(machine));
        }
        let name = &machine.definition.name.clone();
        let active = machine.active_site;
        let old = active.other();
        if let Some(pid) = self.site(old).runtime(&instance(name, old)).pid {
            return Err(ControlError::Conflict(format!(
                "the old source of '{name}' still runs at the {old} site (pid {pid}); reprotect needs it off"
            ))
            .with_hint(standby_api::Hint::StopMachine { machine: name.to_string(), site: Some(old) }));
        }
        let snapshots = self.site(active).snapshots(&instance(name, active))?;
        if !snapshots.is_empty() {
            return Err(ControlError::Conflict(format!(
                "machine '{name}' has QEMU internal snapshots ({}); reprotect cannot track them: delete them first",
                snapshots.join("; ")
            )));
        }
        let point = machine.details.failover_point(name)?.clone();
        // Split brain: the old source wrote after the copy at this site started.
        let history = deployment.open_vault_at(active)?;
        if let Some(started) = machine.details.failover.as_ref().and_then(|failover| failover.diverged) {
            let mut written = 0;
            for disk in &machine.disks {
                let ranges = standby_vault::compact::changed_since(&history, &disk.vault_disk, started)?;
                written += ranges.map_or(0, |r| total(&r));
            }
            if written > 0 && !discard_source_writes {
                return Err(ControlError::Conflict(format!(
                    "split brain: the old source of '{name}' wrote {} after the copy at the {active} site started, \
                     and that copy (generation {}) is the newer one; reprotect would overwrite those writes: pass \
                     --discard-source-writes to accept that",
                    mib(written),
                    machine.generation
                )));
            }
        }
        Ok(Part::new(name, &STEPS, move |daemon, job| daemon.reprotect_job(&machine, &point, alternate_location, job)))
    }

    fn reprotect_job(
        &self,
        machine: &Machine,
        point: &MachinePoint,
        alternate_location: bool,
        job: &JobSteps,
    ) -> Result<(), ControlError> {
        let deployment = job.deployment;
        let (active, old) = (machine.active_site, machine.active_site.other());
        let history = deployment.open_vault_at(active)?;
        // Opened before it is seeded: a vault that is not there (`init`
        // made it) is an outage to bring back, never a new empty vault.
        deployment.open_vault_at(old)?;
        let (here, there) = (self.site(active), self.site(old));
        let source_writes = job.run(STEPS[0], || {
            // The old source's splitters ship what they still hold and stop:
            // their intent logs then say exactly what never reached the vault.
            self.stop_splitters_of(deployment, machine)?;
            let source_writes = source_writes(there, &history, machine, point, alternate_location)?;
            let notes = describe_differences(here, deployment, machine, &source_writes, alternate_location, job.id)?;
            Ok((source_writes, notes))
        })?;
        job.run(STEPS[1], || {
            let mut seeded = Vec::new();
            for (index, disk) in machine.disks.iter().enumerate() {
                let old_image = disk.image_at(old);
                if (source_writes[index].is_none() && alternate_location) || !there.is_file(old_image) {
                    continue;
                }
                let new = there.seed_journal(&deployment.vault_at(old), &disk.vault_disk, old_image)?;
                seeded.push(format!("{} ({} new at the {old} site)", disk.vault_disk, mib(new)));
            }
            Ok(((), if seeded.is_empty() { "nothing to seed".to_string() } else { seeded.join(", ") }))
        })?;
        job.run(STEPS[2], || {
            let from = rebuild_running_disks(here, &deployment.vault_at(active), machine, point, job)?;
            Ok(((), format!("at {} ({}), {from}", point.time, point.described)))
        })?;
        let details = job.run(STEPS[3], || {
            // The intent logs first, then the state: from here on a daemon
            // that dies is followed by one that finishes the move (see
            // `resume_reprotect`), never one that rebuilds the disks again.
            write_reverse_intent_logs(here, deployment, machine, &source_writes)?;
            let mut details = machine.details.clone();
            details.reprotect = Some(ReprotectRecord { job: job.id, switched: false, alternate_location });
            let during = transition_of(machine, Command::Reprotect)?.during;
            deployment.state.set_machine_placement(machine.name(), during, active, machine.generation, &details)?;
            job.moment("reverse-intent-logs-written");
            let paused = self.move_onto_reverse_replication(deployment, machine, &details, job)?;
            Ok((details, paused))
        })?;
        let shipped = job.run(STEPS[4], || {
            let shipped = self.wait_for_replication(machine, "reprotected", job, STEPS[4])?;
            Ok((shipped, format!("{} moved to the {old} site", mib(shipped))))
        })?;
        finish_reprotect(deployment, machine, details.reprotect.as_ref(), job.id, shipped)
    }

    /// Finishes a reprotect a daemon died in or that failed (state
    /// `reprotecting`; taken up by the next daemon, or asked again by the
    /// operator: `origin`).
    /// Before the disks were switched (`details.reprotect.switched` false)
    /// the guest has written only to its overlays: the move is done again
    /// (the intent logs are on disk), keeping splitters the guest is
    /// already on. After, the guest may have
    /// written through the splitters: nothing is redone, the guest is
    /// resumed if it was left paused, the exports and overlays go. Then
    /// the blocks that differ are shipped as usual.
    pub(super) fn resume_reprotect(
        self: &Arc<Self>,
        deployment: &Deployment,
        machine: Machine,
        origin: JobOrigin,
    ) -> Result<JobStarted, ControlError> {
        let part = resume_reprotect_part(machine);
        let steps: Vec<&str> = part.steps.iter().map(String::as_str).collect();
        self.spawn_job(deployment, &part.machine, JobKind::Lifecycle(Command::Reprotect), origin, &steps, part.work)
    }
}

/// Reprotect resumed after a failed attempt or a restart, as a job's part
/// (see [`Daemon::resume_reprotect`]).
fn resume_reprotect_part(machine: Machine) -> Part {
    const STEPS: [&str; 2] = ["move the machine onto reverse replication", "ship the blocks that differ"];
    let name = machine.definition.name.clone();
    Part::new(&name, &STEPS, move |daemon, job| {
        let deployment = job.deployment;
        let active = machine.active_site;
        job.step(STEPS[0], StepState::Running, "")?;
        // Without a record, the safe side: nothing is copied over the disks again.
        let switched = machine.details.reprotect.as_ref().is_none_or(|reprotect| reprotect.switched);
        let detail = if switched {
            daemon.site(active).resume(&instance(&machine.definition.name, active))?;
            daemon.ensure_splitters(deployment, &machine)?;
            daemon.remove_reverse_leftovers(deployment, &machine)?;
            "the disks were already on reverse replication".to_string()
        } else {
            // The move again, disk by disk: see
            // `move_onto_reverse_replication` for the disks an
            // earlier attempt moved already.
            daemon.move_onto_reverse_replication(deployment, &machine, &machine.details, job)?
        };
        job.step(STEPS[0], StepState::Done, &detail)?;
        job.step(STEPS[1], StepState::Running, "")?;
        let shipped = daemon.wait_for_replication(&machine, "reprotected", job, STEPS[1])?;
        job.step(STEPS[1], StepState::Done, &format!("{} moved to the {} site", mib(shipped), active.other()))?;
        finish_reprotect(deployment, &machine, machine.details.reprotect.as_ref(), job.id, shipped)
    })
}

impl Daemon {
    /// Stops the splitters of `machine`'s disks (they ship what they queued).
    /// Stops the splitters of `machine`'s disks (ours, or ones an earlier
    /// daemon left running), each after it shipped what it queued; returns
    /// how many ran.
    pub(super) fn stop_splitters_of(&self, deployment: &Deployment, machine: &Machine) -> Result<usize, ControlError> {
        let run_dir = splitters_dir(deployment);
        let host = self.site(machine.active_site);
        let mut stopped = 0;
        for disk in &machine.disks {
            stopped += usize::from(host.stop_splitter(&disk.vault_disk, &run_dir)?);
        }
        Ok(stopped)
    }

    /// Whether the running QEMU of `machine` has its disk `index` opened
    /// from that disk's splitter's socket.
    fn disk_on_its_splitter(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        index: usize,
    ) -> Result<bool, ControlError> {
        let key = instance(&machine.definition.name, machine.active_site);
        let (socket, _, _) = crate::agent::files(&splitters_dir(deployment), &machine.disks[index].vault_disk);
        let Some(opened) = self.site(machine.active_site).drive(&key, index)? else { return Ok(false) };
        Ok(opened.filename.contains(&*socket.to_string_lossy()))
    }

    /// The exports and overlays a machine ran on before reverse replication.
    fn remove_reverse_leftovers(&self, deployment: &Deployment, machine: &Machine) -> Result<(), ControlError> {
        let active = machine.active_site;
        self.stop_exports(deployment, machine, active.into())?;
        for index in 0..machine.disks.len() {
            let overlay = overlay_path(deployment, machine, index, active.into());
            self.site(active).remove_files(&standby_splitter::export::overlay_files(&overlay))?;
        }
        Ok(())
    }

    /// Waits until every splitter of `machine` has re-read what it had to
    /// and keeps up, then marks a point labelled `label` on each (answered
    /// once sealed, so everything queued before it is in the vault);
    /// returns the bytes they stored in the vault, reporting progress on
    /// the way.
    pub(super) fn wait_for_replication(
        &self,
        machine: &Machine,
        label: &str,
        job: &JobSteps,
        step: &str,
    ) -> Result<u64, ControlError> {
        self.wait_until_keeping_up(machine, job, step, "stopped on request")?;
        let host = self.site(machine.active_site);
        let mut shipped = 0;
        for disk in &machine.disks {
            host.mark(&disk.vault_disk, false, label, MarkWait::Sealed)?;
            shipped += host.splitter_status(&disk.vault_disk)?.bytes_shipped;
        }
        Ok(shipped)
    }

    /// With the machine paused (when it runs): the overlays' writes copied
    /// into the rebuilt images, intent logs marking what differs, the
    /// splitters started on the images and the disks moved onto them; then
    /// the machine runs on, its exports stopped and overlays removed.
    /// Returns how long the guest was paused.
    fn move_onto_reverse_replication(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        details: &MachineRecords,
        job: &JobSteps,
    ) -> Result<String, ControlError> {
        let name = machine.definition.name.as_str();
        let active = machine.active_site;
        let during = transition_of(machine, Command::Reprotect)?.during;
        let key = instance(name, active);
        let host = self.site(active);
        let started = Instant::now();
        let running = host.pause(&key)?;
        let moved = (|| {
            let run_dir = splitters_dir(deployment);
            for (index, disk) in machine.disks.iter().enumerate() {
                // A disk an earlier attempt moved (it failed on another
                // disk, or its daemon died before recording the move) had
                // its overlay copied before it moved, and the guest may
                // have written through the splitter since: a copy now would
                // put older blocks over those writes.
                if self.disk_on_its_splitter(deployment, machine, index)? {
                    continue;
                }
                // A splitter an earlier attempt started for a disk still on
                // its overlay ships what it read and stops: it must not
                // miss what the copy writes (started again below, with
                // the intent log whole).
                host.stop_splitter(&disk.vault_disk, &run_dir)?;
                let image = disk.image_at(active).to_path_buf();
                let overlay = overlay_path(deployment, machine, index, active.into());
                let Some(written) = host.overlay_ranges(&overlay)? else { continue };
                if !host.same_file(&overlay, &image) {
                    host.copy_ranges(&overlay, &image, &written)?;
                }
                // The guest ran on until the pause: what it wrote since the
                // intent log was written joins it before a splitter reads it.
                add_to_intent_log(host, &image, &written)?;
            }
            self.ensure_splitters(deployment, machine)?;
            job.moment("reverse-splitters-started");
            if running {
                for (index, drive) in self.splitter_drives(deployment, machine).iter().enumerate() {
                    host.switch_drive(&key, index, drive)?;
                }
            }
            job.moment("reverse-switched");
            // Recorded while the guest is still paused: from here on it
            // writes through the splitters, and a restarted daemon must not
            // copy the overlays over those writes.
            let mut details = details.clone();
            details.reprotect.as_mut().expect("recorded before the move").switched = true;
            let name = machine.definition.name.as_str();
            deployment.state.set_machine_placement(name, during, active, machine.generation, &details)?;
            Ok::<(), ControlError>(())
        })();
        if running {
            host.resume(&key)?;
        }
        let paused = started.elapsed();
        moved?;
        self.remove_reverse_leftovers(deployment, machine)?;
        Ok(if host.runtime(&key).running {
            format!("the guest was paused for {} ms", paused.as_millis())
        } else {
            "the machine is stopped".to_string()
        })
    }
}

/// Records a finished reprotect (`reprotect`: what its job recorded in the
/// machine's details when it began; `job`: the job finishing it): the
/// alternate disk paths when asked for, then the machine protected in the
/// reverse direction.
fn finish_reprotect(
    deployment: &Deployment,
    machine: &Machine,
    reprotect: Option<&ReprotectRecord>,
    job: i64,
    shipped: u64,
) -> Result<(), ControlError> {
    let name = machine.definition.name.as_str();
    let (active, old) = (machine.active_site, machine.active_site.other());
    let started_by = reprotect.map_or(job, |reprotect| reprotect.job);
    if reprotect.is_some_and(|reprotect| reprotect.alternate_location) {
        use_alternate_paths(deployment, machine, started_by)?;
    }
    let mut details = machine.details.clone();
    details.failover = None;
    details.reprotect = None;
    details.reprotected = Some(ReprotectedRecord { job, bytes_moved: shipped, to: old, resumed: started_by != job });
    let after = transition_of(machine, Command::Reprotect)?.after;
    deployment.state.set_machine_placement(name, after, active, machine.generation, &details)?;
    Ok(())
}

/// Where a disk is built at the old site after `reprotect
/// --alternate-location` (job `job`), beside the original, which stays:
/// `web-disk0.raw` → `web-disk0.alt-job12.raw`.
fn alternate_path(original: &Path, job: i64) -> PathBuf {
    let stem = original.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let extension = original.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    original.with_file_name(format!("{stem}.alt-job{job}{extension}"))
}

/// Records the alternate paths of `machine`'s disks at its old site: the
/// original disks are never written again by Standby.
fn use_alternate_paths(deployment: &Deployment, machine: &Machine, job: i64) -> Result<(), ControlError> {
    let old = machine.active_site.other();
    for (position, disk) in machine.disks.iter().enumerate() {
        let path = alternate_path(disk.image_at(old), job);
        deployment.state.set_disk_path(&machine.definition.name, position, old, &path)?;
    }
    Ok(())
}

/// The intent logs of the reverse splitters, written before the machine
/// moves onto them: the overlays' writes and the old source's since the
/// point, or none (the splitter re-reads the whole image) when either is
/// unknown.
fn write_reverse_intent_logs(
    host: &dyn SiteHost,
    deployment: &Deployment,
    machine: &Machine,
    source_writes: &[Differences],
) -> Result<(), ControlError> {
    let active = machine.active_site;
    for (index, disk) in machine.disks.iter().enumerate() {
        let image = disk.image_at(active);
        match (&source_writes[index], host.overlay_ranges(&overlay_path(deployment, machine, index, active.into()))?) {
            (Some(source), Some(mut written)) => {
                written.extend(source.iter().copied());
                host.set_intent_log(image, Some(&written))?;
            }
            _ => host.set_intent_log(image, None)?,
        }
    }
    Ok(())
}

/// Adds `written` to the intent log of `image` when it has one (none
/// means every block is read anyway).
fn add_to_intent_log(host: &dyn SiteHost, image: &Path, written: &[(u64, u64)]) -> Result<(), ControlError> {
    if let Some(mut ranges) = host.intent_log(image)? {
        ranges.extend(written.iter().copied());
        host.set_intent_log(image, Some(&ranges))?;
    }
    Ok(())
}

/// How long hydration may make no progress before reprotect restores the
/// disk from the vault instead of waiting for it.
const HYDRATION_STALL: Duration = Duration::from_secs(30);
/// How often reprotect looks how far hydration is.
const HYDRATION_POLL_INTERVAL: Duration = Duration::from_millis(300);

/// Waits until the overlay at `overlay` holds the whole disk (its export
/// hydrates it in the background), reporting progress; false when it has
/// no maps (nothing hydrates it) or hydration made no progress for
/// `stall` ([`HYDRATION_STALL`]).
fn wait_for_hydration(
    host: &dyn SiteHost,
    overlay: &Path,
    stall: Duration,
    progress: impl Fn(&str) -> Result<(), ControlError>,
) -> Result<bool, ControlError> {
    let mut last = None;
    let mut since = Instant::now();
    loop {
        match host.local_bytes(overlay)? {
            None => return Ok(false),
            Some((local, disk)) if local == disk => return Ok(true),
            Some((local, disk)) => {
                if last != Some(local) {
                    last = Some(local);
                    since = Instant::now();
                    progress(&format!("waiting for hydration: {} of {} local", mib(local), mib(disk)))?;
                } else if since.elapsed() > stall {
                    return Ok(false);
                }
            }
        }
        std::thread::sleep(HYDRATION_POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use standby_format::{encode_overlay_record, OverlayHeader};
    use std::io::Write;

    fn append(path: &Path, bytes: &[u8]) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
    }

    /// An export's maps: the guest wrote `written`, hydration copied `hydrated`.
    fn maps(overlay: &Path, written: &[(u64, u64)], hydrated: &[(u64, u64)]) {
        let header = OverlayHeader { disk: "d".into(), point: "journal 7".into(), disk_bytes: 8 << 20 }.encode();
        for (path, ranges) in [
            (standby_splitter::export::map_path(overlay), written),
            (standby_splitter::export::hydrated_path(overlay), hydrated),
        ] {
            append(&path, &header);
            for &(start, end) in ranges {
                append(&path, &encode_overlay_record(start, end));
            }
        }
    }

    #[test]
    fn hydration_is_waited_for_while_it_progresses_and_given_up_when_it_stalls() {
        let dir = tempfile::tempdir().unwrap();
        let host = crate::site::SimulatedHost::new();
        let reports = std::sync::Mutex::new(Vec::new());
        let progress = |detail: &str| {
            reports.lock().unwrap().push(detail.to_string());
            Ok(())
        };
        let stall = Duration::from_millis(1200);

        // No maps: nothing hydrates it, restore instead at once.
        let started = Instant::now();
        assert!(!wait_for_hydration(&host, &dir.path().join("none"), stall, progress).unwrap());
        assert!(started.elapsed() < stall);

        // Whole (the guest's writes and the copied ranges together).
        let whole = dir.path().join("whole");
        maps(&whole, &[(0, 1 << 20)], &[(1 << 20, 8 << 20)]);
        assert!(wait_for_hydration(&host, &whole, stall, progress).unwrap());

        // Stuck at half: given up once `stall` passes with no progress.
        let stuck = dir.path().join("stuck");
        maps(&stuck, &[], &[(0, 4 << 20)]);
        let started = Instant::now();
        assert!(!wait_for_hydration(&host, &stuck, stall, progress).unwrap());
        assert!(started.elapsed() >= stall, "gave up before the stall");
        assert_eq!(reports.lock().unwrap().last().unwrap(), "waiting for hydration: 4.0 MiB of 8.0 MiB local");

        // Slow but moving: every step restarts the clock, and it ends whole.
        let slow = dir.path().join("slow");
        maps(&slow, &[], &[(0, 1 << 20)]);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for step in 1..8u64 {
                    std::thread::sleep(stall / 2);
                    append(
                        &standby_splitter::export::hydrated_path(&slow),
                        &encode_overlay_record(step << 20, (step + 1) << 20),
                    );
                }
            });
            let started = Instant::now();
            assert!(wait_for_hydration(&host, &slow, stall, progress).unwrap());
            assert!(started.elapsed() > stall * 2, "longer than one stall in all");
        });
    }
}
