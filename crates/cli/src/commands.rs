//! One function per command: parse what clap left as text, call the engine,
//! render the result.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use standby_api::{FailoverRequest, PlannedFailoverRequest, PointRequest, ProtectRequest, ReprotectRequest};
use standby_format::{KeyMaterial, PointKind};
use standby_lifecycle::Command as Lifecycle;
use standby_vault::backend::{open_location, Backend, VaultLocation};
use standby_vault::prune::PruneOptions;
use standby_vault::restore::RestoreOptions;
use standby_vault::sync::SyncOptions;
use standby_vault::{format_time, InitOptions, PointSelector, Vault};

use crate::cli::{parse_duration, Arguments, Command, VaultArguments, VaultCommand};
use crate::output::{human_bytes, print_json, Progress};
use crate::{bad_input, demo};

pub fn run(arguments: Arguments) -> anyhow::Result<u8> {
    match arguments.command {
        Command::Vault(VaultCommand::Init { vault, key_file, compression_level, json }) => {
            vault_init(&vault, key_file.as_deref(), compression_level, json)
        }
        Command::Sync { image, vault, disk, app_consistent, label, json } => {
            sync(&image, &vault, &disk, app_consistent, label, json)
        }
        Command::ServeDisk { image, socket, vault, disk, bookmark_interval, seal_interval, queue_mib } => {
            serve_disk(&image, &socket, &vault, &disk, &bookmark_interval, &seal_interval, queue_mib)
        }
        Command::Export { vault, disk, point, socket, overlay, hydrate } => {
            export(&vault, &disk, &point, &socket, overlay, hydrate)
        }
        Command::SplitterStatus { socket, json } => splitter_status(&socket, json),
        Command::Mark { socket, app_consistent, label, no_wait, json } => {
            mark(&socket, app_consistent, label, no_wait, json)
        }
        Command::Points { vault, disk, json } => points(&vault, &disk, json),
        Command::Restore { vault, disk, point, output, force, json } => {
            restore(&vault, &disk, &point, &output, force, json)
        }
        Command::Verify { vault, json } => verify(&vault, json),
        Command::Resync { source, target, allow_resize, json } => resync(&source, &target, allow_resize, json),
        Command::Prune { vault, retention, grace, json } => prune(&vault, retention, &grace, json),
        Command::Init { dir, json } => crate::lifecycle::init(&dir, json),
        Command::Machine(command) => crate::lifecycle::machine(command),
        Command::Policy(command) => crate::lifecycle::policy(command),
        Command::Serve { home } => crate::lifecycle::serve(&home),
        Command::Jobs { id, watch, home, json } => crate::lifecycle::jobs(id, watch, &home, json),
        Command::Protect { name, policy, group, job } => {
            if group.is_some() {
                return Err(bad_input("--group: replication groups are not supported yet; protect without it"));
            }
            crate::lifecycle::run_job(&job, &name, Lifecycle::Protect, &ProtectRequest { policy })
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
    Err(bad_input(
        "this standby is built without the guest demo (the test guest builder is not shipped): scripts/demo builds \
         and runs it; `standby demo --disk` runs the disk-level journey",
    ))
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

fn has_journal(vault: &Vault, disk: &str) -> anyhow::Result<bool> {
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

fn serve_disk(
    image: &Path,
    socket: &Path,
    vault: &VaultArguments,
    disk: &str,
    bookmark_interval: &str,
    seal_interval: &str,
    queue_mib: u64,
) -> anyhow::Result<u8> {
    let bookmark_interval = parse_duration(bookmark_interval, "--bookmark-interval")?;
    let seal_interval = parse_duration(seal_interval, "--seal-interval")?;
    if bookmark_interval.is_zero() || seal_interval.is_zero() {
        return Err(bad_input("--bookmark-interval and --seal-interval must be longer than zero"));
    }
    standby_image::Image::open(image, false)?;
    let vault = open_vault(vault)?;
    check_socket_free(socket)?;
    // SIGINT and SIGTERM are taken by a waiting thread, so a stop ships
    // what is queued instead of dying with it.
    let signals = blocked_stop_signals();
    let options = standby_splitter::SplitterOptions {
        bookmark_interval,
        seal_interval,
        queue_bytes_max: queue_mib.max(1) << 20,
        ..standby_splitter::SplitterOptions::new(disk)
    };
    let splitter = standby_splitter::Splitter::start(vault, image, socket, options)?;
    eprintln!("standby: serving {} as disk '{disk}' on {}", image.display(), socket.display());
    wait_for_signal(&signals);
    eprintln!("standby: stopping: shipping queued changes");
    let status = splitter.stop()?;
    eprintln!("standby: stopped; journal sealed to sequence {}", status.sealed_sequence);
    Ok(0)
}

fn blocked_stop_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a set this function owns.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) {
    let mut signal = 0;
    // SAFETY: sigwait on a set of blocked signals.
    unsafe {
        libc::sigwait(set, &mut signal);
    }
}

/// Resolves a point selector against a disk's journal.
fn journal_target(
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

fn export(
    vault: &VaultArguments,
    disk: &str,
    point: &str,
    socket: &Path,
    overlay: Option<std::path::PathBuf>,
    hydrate: bool,
) -> anyhow::Result<u8> {
    use standby_vault::view::PointView;
    let started = std::time::Instant::now();
    let selector = PointSelector::parse(point).map_err(bad_input)?;
    let overlay = overlay.unwrap_or_else(|| std::path::PathBuf::from(format!("{}.overlay", socket.display())));
    let resuming = overlay_to_resume(&overlay)?;
    let vault = Arc::new(open_vault(vault)?);
    let view = if has_journal(&vault, disk)? {
        PointView::of_journal(vault.clone(), disk, journal_target(&vault, disk, &selector)?)?
    } else {
        let point = vault.select_point(disk, &selector)?;
        PointView::of_point(vault.clone(), &point)?
    };
    check_socket_free(socket)?;
    let header =
        standby_format::OverlayHeader { disk: disk.to_string(), point: view.point.clone(), disk_bytes: view.size() };
    let resolved = view.point.clone();
    let export = if resuming {
        standby_splitter::export::PointExport::resume(view, &overlay, &header)
    } else {
        standby_splitter::export::PointExport::new(view, &overlay, &header)
    };
    let export = export.map_err(|e| match e {
        standby_splitter::export::OverlayError::Mismatch(message) => bad_input(message),
        other => anyhow::anyhow!("cannot {} the overlay: {other}", if resuming { "resume" } else { "create" }),
    })?;
    let written = export.written_bytes();
    let signals = blocked_stop_signals();
    let listener =
        standby_nbd::server::bind_unix(socket).map_err(|e| bad_input(format!("{}: {e}", socket.display())))?;
    // Held while the export reads the vault: collection never sweeps what
    // its point needs, even once retention has compacted the point away.
    // (Taken once nothing can be refused any more.)
    let hold = Arc::new(std::sync::Mutex::new(Some(vault.hold("export", &format!("{disk} at {point}"))?)));
    let export = Arc::new(export);
    let server = standby_nbd::Server::new(
        export.clone(),
        standby_nbd::ServerConfig { name: disk.to_string(), ..standby_nbd::ServerConfig::default() },
    );
    let stop = server.stopper();
    let serving = std::thread::spawn(move || server.serve_listener(listener));
    let stop_hydrating = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hydrating = hydrate.then(|| spawn_hydration(export.clone(), stop_hydrating.clone(), hold.clone()));
    let resumed =
        if resuming { format!(", resumed with {} written before", human_bytes(written)) } else { String::new() };
    eprintln!(
        "standby: exporting disk '{disk}' at {point} ({resolved}) on {} (writes go to {}{resumed}); ready in {} ms",
        socket.display(),
        overlay.display(),
        started.elapsed().as_millis()
    );
    wait_for_signal(&signals);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stop_hydrating.store(true, std::sync::atomic::Ordering::Relaxed);
    serving.join().expect("the server thread does not panic")?;
    if let Some(hydrating) = hydrating {
        let _ = hydrating.join();
    }
    drop(hold);
    let _ = std::fs::remove_file(socket);
    eprintln!("standby: export stopped; the overlay {} keeps what was written", overlay.display());
    Ok(0)
}

/// Whether `overlay` is an export's overlay to resume (it and its map are
/// there) or a new one (neither is); anything else is refused, naming it.
fn overlay_to_resume(overlay: &Path) -> anyhow::Result<bool> {
    let map = standby_splitter::export::map_path(overlay);
    match (overlay.exists(), map.exists()) {
        (resuming, mapped) if resuming == mapped => Ok(resuming),
        (true, _) => Err(bad_input(format!(
            "{} exists but has no map {} (not an overlay of an export); move it away or pass another --overlay",
            overlay.display(),
            map.display()
        ))),
        (false, _) => Err(bad_input(format!(
            "{} exists without its overlay {}; move it away or pass another --overlay",
            map.display(),
            overlay.display()
        ))),
    }
}

/// The export's hydration, in the background: the point copied into the
/// overlay until every read is local, then the vault's hold let go.
fn spawn_hydration(
    export: Arc<standby_splitter::export::PointExport>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    hold: Arc<std::sync::Mutex<Option<standby_vault::Hold>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut told = 0;
        let hydrated = export.hydrate(&stopping, |local, size| {
            let percent = local * 100 / size.max(1);
            if percent >= told + 10 || local == size {
                told = percent;
                eprintln!("standby: hydrating: {percent}% of the disk is local ({})", human_bytes(local));
            }
        });
        match hydrated {
            Ok(()) if export.local_bytes().0 == export.local_bytes().1 => {
                // Every read is local now: the vault may let the point go.
                hold.lock().unwrap_or_else(|p| p.into_inner()).take();
                eprintln!("standby: hydrated: the whole disk is in the overlay; the vault is no longer read");
            }
            Ok(()) => {}
            Err(e) => eprintln!("standby: hydration stopped: {e}; reads of the rest still come from the vault"),
        }
    })
}

/// Refuses, before anything is created, a socket path that another server
/// is using or that is not a socket at all (a stale socket is fine).
fn check_socket_free(socket: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(metadata) = std::fs::symlink_metadata(socket) else { return Ok(()) };
    if !metadata.file_type().is_socket() {
        return Err(bad_input(format!("{} exists and is not a socket; choose another --socket", socket.display())));
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(bad_input(format!("{} is in use by another server; choose another --socket", socket.display())));
    }
    Ok(())
}

fn sync(
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

fn splitter_status(socket: &Path, json: bool) -> anyhow::Result<u8> {
    let reply =
        standby_splitter::control_request(socket, &json!({"op": "status"})).map_err(|e| bad_input(e.to_string()))?;
    if json {
        print_json(&reply);
    } else {
        let state = if reply["refreshed"] == true { "caught up" } else { "catching up with the image" };
        println!(
            "disk '{}': {state}; lag {:.1} s, {} not yet in the vault; {} to re-read; sealed to sequence {}",
            reply["disk"].as_str().unwrap_or(""),
            reply["lag_seconds"].as_f64().unwrap_or(0.0),
            human_bytes(reply["lag_bytes"].as_u64().unwrap_or(0)),
            human_bytes(reply["catch_up_bytes"].as_u64().unwrap_or(0)),
            reply["sealed_sequence"]
        );
        if let Some(error) = reply["error"].as_str() {
            println!("vault error: {error}");
        }
    }
    Ok(0)
}

fn mark(socket: &Path, app_consistent: bool, label: String, no_wait: bool, json: bool) -> anyhow::Result<u8> {
    let mut request = json!({"op": "mark", "app_consistent": app_consistent, "label": label});
    if no_wait {
        request["wait"] = json!("queued");
    }
    let reply = standby_splitter::control_request(socket, &request).map_err(|e| bad_input(e.to_string()))?;
    if let Some(problem) = reply["error"].as_str() {
        anyhow::bail!("the splitter on {} could not mark a point: {problem}", socket.display());
    }
    if json {
        print_json(&reply);
    } else if no_wait {
        println!("point queued ({}); `standby points` lists it once stored", reply["kind"].as_str().unwrap_or(""));
    } else {
        println!("recorded point {} ({})", reply["point"], reply["kind"].as_str().unwrap_or(""));
    }
    Ok(0)
}

fn points(vault: &VaultArguments, disk: &str, json: bool) -> anyhow::Result<u8> {
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

fn restore(
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

fn verify(vault: &VaultArguments, json: bool) -> anyhow::Result<u8> {
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

fn resync(source: &Path, target: &Path, allow_resize: bool, json: bool) -> anyhow::Result<u8> {
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

fn prune(vault: &VaultArguments, retention: Option<String>, grace: &str, json: bool) -> anyhow::Result<u8> {
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
