//! The vault's own commands: `vault init`, `sync`, `points`, `restore`,
//! `verify`, `resync`, `prune` (and the journal's points and restores
//! behind them), one function each: parse what clap left as text, call the
//! vault, render the result.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use standby_format::{KeyMaterial, PointKind};
use standby_vault::backend::Backend;
use standby_vault::prune::PruneOptions;
use standby_vault::restore::RestoreOptions;
use standby_vault::sync::SyncOptions;
use standby_vault::{format_time, InitOptions, PointSelector, Vault};

use crate::bad_input;
use crate::cli::{parse_duration, VaultArguments};
use crate::output::{human_bytes, print_json, Progress};

pub(crate) fn backend_for(text: &str) -> anyhow::Result<Arc<dyn Backend>> {
    standby_link::open_location(text).map_err(bad_input)
}

/// Reads a key file, with errors that name it.
pub(crate) fn read_key_file(path: &Path) -> anyhow::Result<KeyMaterial> {
    standby_vault::key_file::read(path).map_err(bad_input)
}

pub(crate) fn open_vault(arguments: &VaultArguments) -> anyhow::Result<Vault> {
    let backend = backend_for(&arguments.vault)?;
    let key = match &arguments.key_file {
        Some(path) => Some((read_key_file(path)?, path.display().to_string())),
        None => None,
    };
    Ok(Vault::open(backend, key)?)
}

pub(crate) fn vault_init(
    location: &str,
    key_file: Option<&Path>,
    compression_level: i32,
    json: bool,
) -> anyhow::Result<u8> {
    if !(1..=19).contains(&compression_level) {
        return Err(bad_input(format!("--compression-level {compression_level} is out of range (1 to 19)")));
    }
    let backend = backend_for(location)?;
    let mut key_created = false;
    let key = match key_file {
        Some(path) if !path.exists() => {
            create_key_file(path)?;
            key_created = true;
            Some(read_key_file(path)?)
        }
        Some(path) => Some(read_key_file(path)?),
        None => None,
    };
    let encrypted = key.is_some();
    let result = Vault::init(backend, InitOptions { key, zstd_level: compression_level, ..InitOptions::default() });
    let vault = match result {
        Ok(vault) => vault,
        Err(e) => {
            if key_created {
                // Leave nothing behind: the key belongs to a vault that was not made.
                let _ = std::fs::remove_file(key_file.expect("created"));
            }
            return Err(e.into());
        }
    };
    if json {
        print_json(&json!({
            "vault": vault.location(), "vault_id": vault.config().vault_id, "format_version": vault.format_version(),
            "chunk_bytes": vault.config().chunk_bytes, "encrypted": encrypted, "key_file_created": key_created,
        }));
    } else {
        println!(
            "created vault {} (format {}, {} chunks{})",
            vault.location(),
            vault.format_version(),
            human_bytes(u64::from(vault.config().chunk_bytes)),
            if encrypted { ", encrypted" } else { "" }
        );
        if key_created {
            println!(
                "wrote a new random key to {}: keep a copy outside this site; without it the vault cannot be read",
                key_file.expect("created").display()
            );
        }
    }
    Ok(0)
}

fn create_key_file(path: &Path) -> anyhow::Result<()> {
    standby_vault::key_file::create(path).map_err(bad_input)
}

pub(crate) fn has_journal(vault: &Vault, disk: &str) -> anyhow::Result<bool> {
    let objects = standby_vault::journal::journal_objects(vault, disk)?;
    Ok(!objects.segments.is_empty() || !objects.bases.is_empty())
}

fn journal_points(vault: &Vault, disk: &str, json: bool) -> anyhow::Result<u8> {
    let listing = standby_vault::journal::list_journal(vault, disk)?;
    let window = |micros: Option<i64>| micros.map(format_time);
    // How old the newest restorable moment is: the data at risk if the
    // protected site were lost now (the splitter's own status adds the bytes).
    let rpo_seconds =
        listing.last_time_micros.map(|last| (jiff::Timestamp::now().as_microsecond() - last).max(0) as f64 / 1e6);
    let gaps: Vec<_> =
        listing.gaps.iter().map(|(from, to)| json!({"from": format_time(*from), "to": to.map(format_time)})).collect();
    if json {
        let points: Vec<_> = listing
            .bookmarks
            .iter()
            .map(|b| json!({"id": b.sequence, "time": b.time, "kind": b.kind, "label": b.label}))
            .collect();
        print_json(&json!({
            "disk": disk, "points": points, "damaged": [],
            "journal": {"first_sequence": listing.first_sequence, "last_sequence": listing.last_sequence,
                        "from": window(listing.first_time_micros), "to": window(listing.last_time_micros),
                        "segments": listing.segments, "gaps": gaps,
                        "rpo_seconds": rpo_seconds},
        }));
    } else {
        println!("{:>10}  {:<27}  {:<16}  LABEL", "POINT", "TIME", "KIND");
        for b in &listing.bookmarks {
            println!("{:>10}  {:<27}  {:<16}  {}", b.sequence, b.time, b.kind.name(), b.label);
        }
        if let (Some(from), Some(to)) = (window(listing.first_time_micros), window(listing.last_time_micros)) {
            println!("journal: any time from {from} to {to} can be restored ({} segments)", listing.segments);
            for (gap_from, gap_to) in &listing.gaps {
                let until = gap_to.map_or("now".to_string(), format_time);
                println!("  except {} to {until} (the splitter was catching up)", format_time(*gap_from));
            }
            if let Some(rpo) = rpo_seconds {
                println!("newest restorable moment: {rpo:.1} s ago");
            }
        }
    }
    Ok(0)
}

fn journal_restore(
    vault: &Vault,
    disk: &str,
    selector: &PointSelector,
    output: &Path,
    force: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let target = journal_target(vault, disk, selector)?;
    let report = standby_vault::journal::restore_journal(vault, disk, target, output, force)?;
    if json {
        print_json(&report);
    } else {
        println!(
            "restored disk '{}' at journal sequence {} ({}) to {}: {} in {:.2} s",
            report.disk,
            report.point,
            report.time,
            report.output,
            human_bytes(report.disk_bytes),
            report.elapsed_seconds
        );
    }
    Ok(0)
}

/// Resolves a point selector against a disk's journal.
pub(crate) fn journal_target(
    vault: &Vault,
    disk: &str,
    selector: &PointSelector,
) -> anyhow::Result<standby_vault::journal::JournalTarget> {
    use standby_vault::journal::JournalTarget;
    let listing = standby_vault::journal::list_journal(vault, disk)?;
    let unknown = |reason: &str| standby_vault::VaultError::UnknownPoint {
        disk: disk.to_string(),
        point: format!("{selector:?}"),
        reason: reason.to_string(),
    };
    Ok(match selector {
        PointSelector::Latest | PointSelector::LatestProcessed => JournalTarget::Latest,
        PointSelector::LatestApp => {
            let app = listing.bookmarks.iter().rev().find(|b| b.kind == PointKind::AppConsistent);
            JournalTarget::Sequence(app.ok_or_else(|| unknown("the journal has no app-consistent point"))?.sequence)
        }
        PointSelector::Sequence(sequence) if listing.first_sequence.is_some_and(|first| *sequence < first) => {
            return Err(unknown(&older_than_window(&listing)).into());
        }
        PointSelector::Time(time)
            if listing.first_time_micros.is_some_and(|first| time.as_microsecond() < first)
                && listing.bookmarks.first().is_some_and(|b| b.label == standby_vault::journal::BASE_LABEL) =>
        {
            return Err(unknown(&older_than_window(&listing)).into());
        }
        PointSelector::Sequence(sequence) => {
            if !listing.bookmarks.iter().any(|b| b.sequence == *sequence) {
                return Err(unknown("no bookmark has this id; `standby points` lists them").into());
            }
            JournalTarget::Sequence(*sequence)
        }
        PointSelector::Time(time) => {
            let micros = time.as_microsecond();
            if listing.first_time_micros.is_none_or(|first| micros < first) {
                return Err(unknown("it is before the journal's first record").into());
            }
            JournalTarget::Time(micros)
        }
    })
}

/// Why a point before a compacted journal's base cannot be restored.
fn older_than_window(listing: &standby_vault::journal::JournalListing) -> String {
    match listing.bookmarks.first().filter(|b| b.label == standby_vault::journal::BASE_LABEL) {
        Some(base) => format!(
            "it is older than the retention window: older records were compacted; the oldest restorable moment is {} \
             (point {})",
            base.time, base.sequence
        ),
        None => "it is before the journal's first record".to_string(),
    }
}

pub(crate) fn sync(
    image: &Path,
    vault: &VaultArguments,
    disk: &str,
    app_consistent: bool,
    label: String,
    json: bool,
) -> anyhow::Result<u8> {
    let vault = open_vault(vault)?;
    let progress = Progress::bytes(json, std::fs::metadata(image).map(|m| m.len()).unwrap_or(0), "sync");
    let kind = if app_consistent { PointKind::AppConsistent } else { PointKind::CrashConsistent };
    let report = standby_vault::sync::sync_image(
        &vault,
        image,
        disk,
        SyncOptions { kind, label, progress: &|bytes| progress.advance(bytes) },
    )?;
    progress.finish();
    if json {
        print_json(&report);
    } else {
        let label = if report.label.is_empty() { String::new() } else { format!(" \"{}\"", report.label) };
        println!("point {} of disk '{}' ({}{label}) at {}", report.point, report.disk, report.kind.name(), report.time);
        if let Some(previous) = report.disk_bytes_previous {
            println!("  disk size changed: {} -> {}", human_bytes(previous), human_bytes(report.disk_bytes));
        }
        println!(
            "  read {} in {:.2} s, stored {} new ({} of {} chunks new, {} zero, {} packs)",
            human_bytes(report.bytes_read),
            report.elapsed_seconds,
            human_bytes(report.bytes_new),
            report.chunks_new,
            report.chunks_total,
            report.chunks_zero,
            report.packs_new
        );
    }
    Ok(0)
}

pub(crate) fn points(vault: &VaultArguments, disk: &str, json: bool) -> anyhow::Result<u8> {
    let vault = open_vault(vault)?;
    if has_journal(&vault, disk)? {
        return journal_points(&vault, disk, json);
    }
    let listing = vault.points(disk)?;
    if json {
        let points: Vec<_> = listing
            .points
            .iter()
            .map(|p| {
                json!({"id": p.sequence, "time": format_time(p.time_micros), "kind": p.kind, "label": p.label,
                       "disk_bytes": p.disk_bytes, "bytes_new": p.bytes_new})
            })
            .collect();
        let damaged: Vec<_> =
            listing.damaged.iter().map(|(object, problem)| json!({"object": object, "problem": problem})).collect();
        print_json(&json!({"disk": disk, "points": points, "damaged": damaged}));
    } else {
        println!("{:>6}  {:<27}  {:<16}  {:>10}  {:>10}  LABEL", "POINT", "TIME", "KIND", "SIZE", "NEW");
        for p in &listing.points {
            println!(
                "{:>6}  {:<27}  {:<16}  {:>10}  {:>10}  {}",
                p.sequence,
                format_time(p.time_micros),
                p.kind.name(),
                human_bytes(p.disk_bytes),
                human_bytes(p.bytes_new),
                p.label
            );
        }
        for (object, problem) in &listing.damaged {
            println!("damaged: {object}: {problem}");
        }
    }
    Ok(if listing.damaged.is_empty() { 0 } else { 1 })
}

pub(crate) fn restore(
    vault: &VaultArguments,
    disk: &str,
    point: &str,
    output: &Path,
    force: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let selector = PointSelector::parse(point).map_err(bad_input)?;
    let vault = open_vault(vault)?;
    if has_journal(&vault, disk)? {
        return journal_restore(&vault, disk, &selector, output, force, json);
    }
    let point = vault.select_point(disk, &selector)?;
    let progress = Progress::bytes(json, point.disk_bytes, "restore");
    let report = standby_vault::restore::restore_point(
        &vault,
        &point,
        output,
        RestoreOptions { force, progress: &|bytes| progress.advance(bytes) },
    )?;
    progress.finish();
    if json {
        print_json(&report);
    } else {
        println!(
            "restored disk '{}' point {} ({}) to {}: {} ({} of data) in {:.2} s",
            report.disk,
            report.point,
            report.time,
            report.output,
            human_bytes(report.disk_bytes),
            human_bytes(report.bytes_written),
            report.elapsed_seconds
        );
    }
    Ok(0)
}

pub(crate) fn verify(vault: &VaultArguments, json: bool) -> anyhow::Result<u8> {
    let vault = open_vault(vault)?;
    let progress = Progress::spinner(json, "verify");
    let report = standby_vault::verify::verify(&vault, &|bytes| progress.advance(bytes))?;
    progress.finish();
    if json {
        print_json(&json!({"clean": report.is_clean(), "report": report}));
    } else {
        println!(
            "checked {} packs ({}, {} chunks) and {} points",
            report.packs_checked,
            human_bytes(report.bytes_checked),
            report.chunks_checked,
            report.points_checked
        );
        for damaged in &report.damaged {
            let breaks = if damaged.breaks.is_empty() { "no point".to_string() } else { damaged.breaks.join(", ") };
            println!("DAMAGED {}: {} (breaks {breaks})", damaged.object, damaged.problem);
        }
        for broken in &report.broken_points {
            println!("BROKEN point {} of disk '{}': {}", broken.point, broken.disk, broken.reason);
        }
        for broken in &report.broken_journals {
            println!(
                "BROKEN journal of disk '{}' from sequence {}: {}",
                broken.disk, broken.from_sequence, broken.reason
            );
        }
        if report.packs_unreferenced > 0 {
            println!(
                "{} packs are unreferenced (left by an interrupted sync; prune collects them)",
                report.packs_unreferenced
            );
        }
    }
    if report.is_clean() {
        if !json {
            println!("vault is healthy");
        }
        Ok(0)
    } else {
        std::io::stdout().flush().ok();
        eprintln!(
            "standby: error: vault is damaged: {} damaged objects, {} points and {} journals cannot be restored",
            report.damaged.len(),
            report.broken_points.len(),
            report.broken_journals.len()
        );
        Ok(1)
    }
}

pub(crate) fn resync(source: &Path, target: &Path, allow_resize: bool, json: bool) -> anyhow::Result<u8> {
    let size = std::fs::metadata(source).map(|m| m.len()).unwrap_or(0);
    let progress = Progress::bytes(json, size, "resync");
    let report = standby_image::resync(source, target, standby_image::ResyncOptions { allow_resize }, &|bytes| {
        progress.advance(bytes)
    })?;
    progress.finish();
    if json {
        print_json(&json!({
            "source": source, "target": target, "source_bytes": report.source_bytes,
            "target_bytes_before": report.target_bytes_before, "bytes_compared": report.bytes_compared,
            "bytes_written": report.bytes_written, "elapsed_seconds": report.elapsed.as_secs_f64(),
        }));
    } else {
        println!(
            "{} now equals {}: compared {}, wrote {} in {:.2} s",
            target.display(),
            source.display(),
            human_bytes(report.bytes_compared),
            human_bytes(report.bytes_written),
            report.elapsed.as_secs_f64()
        );
    }
    Ok(0)
}

pub(crate) fn prune(vault: &VaultArguments, retention: Option<String>, grace: &str, json: bool) -> anyhow::Result<u8> {
    let retention = retention.map(|text| parse_duration(&text, "--retention")).transpose()?;
    let grace = parse_duration(grace, "--grace")?;
    let vault = open_vault(vault)?;
    let drop_before_micros =
        retention.map(|retention| jiff::Timestamp::now().as_microsecond() - retention.as_micros() as i64);
    let report = standby_vault::prune::prune(&vault, &PruneOptions { drop_before_micros, grace })?;
    if json {
        print_json(&report);
    } else {
        for dropped in &report.points_dropped {
            println!("dropped point {} of disk '{}' ({})", dropped.point, dropped.disk, dropped.time);
        }
        for compacted in &report.journals_compacted {
            println!(
                "compacted the journal of disk '{}': it now starts at point {} ({}); {} segments folded into \
                 the base, {} new",
                compacted.disk,
                compacted.base_sequence,
                compacted.base_time,
                compacted.segments_removed,
                human_bytes(compacted.bytes_new)
            );
        }
        println!(
            "dropped {} points; deleted {} packs ({}); marked {} packs for collection",
            report.points_dropped.len(),
            report.packs_deleted,
            human_bytes(report.bytes_freed),
            report.packs_marked
        );
        if report.abandoned_writes_removed > 0 {
            println!(
                "removed {} files left by interrupted writes ({})",
                report.abandoned_writes_removed,
                human_bytes(report.abandoned_bytes_freed)
            );
        }
        for waiting in &report.waiting {
            println!("waiting: {waiting}");
        }
    }
    Ok(0)
}
