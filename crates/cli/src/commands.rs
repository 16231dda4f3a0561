//! One function per command: parse what clap left as text, call the engine,
//! render the result.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use standby_format::{KeyMaterial, PointKind};
use standby_vault::backend::{open_location, Backend, VaultLocation};
use standby_vault::prune::PruneOptions;
use standby_vault::restore::RestoreOptions;
use standby_vault::sync::SyncOptions;
use standby_vault::{format_time, InitOptions, PointSelector, Vault};

use crate::cli::{Arguments, Command, VaultArguments, VaultCommand};
use crate::output::{human_bytes, print_json, Progress};
use crate::{bad_input, demo};

pub fn run(arguments: Arguments) -> anyhow::Result<u8> {
    match arguments.command {
        Command::Vault(VaultCommand::Init { vault, key_file, compression_level, json }) => {
            vault_init(&vault, key_file.as_deref(), compression_level, json)
        }
        Command::Sync { image, vault, disk, app_consistent, label, json } => {
            let vault = open_vault(&vault)?;
            let progress = Progress::bytes(json, std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0), "sync");
            let kind = if app_consistent { PointKind::AppConsistent } else { PointKind::CrashConsistent };
            let report = standby_vault::sync::sync_image(
                &vault,
                &image,
                &disk,
                SyncOptions { kind, label, progress: &|bytes| progress.advance(bytes) },
            )?;
            progress.finish();
            if json {
                print_json(&report);
            } else {
                let label = if report.label.is_empty() { String::new() } else { format!(" \"{}\"", report.label) };
                println!(
                    "point {} of disk '{}' ({}{label}) at {}",
                    report.point,
                    report.disk,
                    report.kind.name(),
                    report.time
                );
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
        Command::Points { vault, disk, json } => {
            let vault = open_vault(&vault)?;
            let listing = vault.points(&disk)?;
            if json {
                let points: Vec<_> = listing
                    .points
                    .iter()
                    .map(|p| {
                        json!({"id": p.sequence, "time": format_time(p.time_micros), "kind": p.kind, "label": p.label,
                               "disk_bytes": p.disk_bytes, "bytes_new": p.bytes_new})
                    })
                    .collect();
                let damaged: Vec<_> = listing
                    .damaged
                    .iter()
                    .map(|(object, problem)| json!({"object": object, "problem": problem}))
                    .collect();
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
        Command::Restore { vault, disk, point, output, force, json } => {
            let selector = PointSelector::parse(&point).map_err(bad_input)?;
            let vault = open_vault(&vault)?;
            let point = vault.select_point(&disk, &selector)?;
            let progress = Progress::bytes(json, point.disk_bytes, "restore");
            let report = standby_vault::restore::restore_point(
                &vault,
                &point,
                &output,
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
        Command::Verify { vault, json } => {
            let vault = open_vault(&vault)?;
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
                    let breaks =
                        if damaged.breaks.is_empty() { "no point".to_string() } else { damaged.breaks.join(", ") };
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
        Command::Resync { source, target, allow_resize, json } => {
            let size = std::fs::metadata(&source).map(|m| m.len()).unwrap_or(0);
            let progress = Progress::bytes(json, size, "resync");
            let report =
                standby_image::resync(&source, &target, standby_image::ResyncOptions { allow_resize }, &|bytes| {
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
        Command::Prune { vault, retention, grace, json } => {
            let retention = retention.map(|text| parse_duration(&text, "--retention")).transpose()?;
            let grace = parse_duration(&grace, "--grace")?;
            let vault = open_vault(&vault)?;
            let drop_before_micros =
                retention.map(|retention| jiff::Timestamp::now().as_microsecond() - retention.as_micros() as i64);
            let report = standby_vault::prune::prune(&vault, &PruneOptions { drop_before_micros, grace })?;
            if json {
                print_json(&report);
            } else {
                for dropped in &report.points_dropped {
                    println!("dropped point {} of disk '{}' ({})", dropped.point, dropped.disk, dropped.time);
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
        Command::Demo { dir } => demo::run(dir),
    }
}

fn parse_duration(text: &str, flag: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text)
        .map_err(|e| bad_input(format!("{flag} {text:?} is not a duration ({e}); use e.g. 90s, 15m, 24h, 7d")))
}

pub fn backend_for(text: &str) -> anyhow::Result<Arc<dyn Backend>> {
    let location = VaultLocation::parse(text).map_err(bad_input)?;
    open_location(&location).map_err(bad_input)
}

/// Reads a key file, with errors that name it.
pub fn read_key_file(path: &Path) -> anyhow::Result<KeyMaterial> {
    if path.is_dir() {
        return Err(bad_input(format!("key file {} is a directory", path.display())));
    }
    let secret = std::fs::read(path).map_err(|e| bad_input(format!("cannot read key file {}: {e}", path.display())))?;
    KeyMaterial::new(secret).map_err(|e| bad_input(format!("{}: {e}", path.display())))
}

pub fn open_vault(arguments: &VaultArguments) -> anyhow::Result<Vault> {
    let backend = backend_for(&arguments.vault)?;
    let key = match &arguments.key_file {
        Some(path) => Some((read_key_file(path)?, path.display().to_string())),
        None => None,
    };
    Ok(Vault::open(backend, key)?)
}

fn vault_init(location: &str, key_file: Option<&Path>, compression_level: i32, json: bool) -> anyhow::Result<u8> {
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
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("reading the system's random source: {e}"))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| bad_input(format!("cannot create key file {}: {e}", path.display())))?;
    file.write_all(format!("{hex}\n").as_bytes())?;
    file.sync_all()?;
    Ok(())
}
