//! The site agents' commands, which the daemon runs as processes of their
//! own: `serve-disk` (a splitter), `export` (a recovery point over NBD),
//! and `splitter-status` and `mark`, which talk to a running splitter.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use standby_vault::PointSelector;

use crate::bad_input;
use crate::cli::{parse_duration, VaultArguments};
use crate::output::{human_bytes, print_json};

use crate::vault_commands::{has_journal, journal_target, open_vault};

/// How often a splitter bookmarks and seals, and how much it queues.
pub(crate) struct Pace {
    pub bookmark_interval: String,
    pub seal_interval: String,
    pub queue_mib: u64,
}

pub(crate) fn serve_disk(
    image: &Path,
    socket: &Path,
    vault: &VaultArguments,
    disk: &str,
    pace: &Pace,
    wait_for_vault: bool,
    group: Option<String>,
) -> anyhow::Result<u8> {
    let bookmark_interval = parse_duration(&pace.bookmark_interval, "--bookmark-interval")?;
    let seal_interval = parse_duration(&pace.seal_interval, "--seal-interval")?;
    if bookmark_interval.is_zero() || seal_interval.is_zero() {
        return Err(bad_input("--bookmark-interval and --seal-interval must be longer than zero"));
    }
    if let Some(group) = &group {
        standby_format::validate_group_name(group).map_err(|e| bad_input(format!("--group: {e}")))?;
    }
    standby_image::Image::open(image, false)?;
    let vault = match open_vault(vault) {
        Ok(vault) => standby_splitter::VaultSource::Open(vault),
        Err(e) if wait_for_vault => {
            eprintln!("standby: the vault cannot be opened yet ({e}); serving the disk and trying again every second");
            let arguments = vault.clone();
            standby_splitter::VaultSource::Later(Box::new(move || {
                open_vault(&arguments).map_err(|e| standby_vault::VaultError::Io {
                    operation: "open",
                    path: arguments.vault.clone(),
                    source: std::io::Error::other(format!("{e:#}")),
                })
            }))
        }
        Err(e) => return Err(e),
    };
    check_socket_free(socket)?;
    // SIGINT and SIGTERM are taken by a waiting thread, so a stop ships
    // what is queued instead of dying with it.
    let signals = blocked_stop_signals();
    let options = standby_splitter::SplitterOptions {
        bookmark_interval,
        seal_interval,
        queue_bytes_max: pace.queue_mib.max(1) << 20,
        group,
        ..standby_splitter::SplitterOptions::new(disk)
    };
    let splitter = standby_splitter::Splitter::start_from(vault, image, socket, options)?;
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

pub(crate) fn export(
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
    // Tests watching a hydration under way slow it down: the time to wait
    // after each 4 MiB region.
    let pace = std::env::var("STANDBY_TEST_HYDRATE_PACE_MS").ok().and_then(|ms| ms.parse().ok());
    let pace = std::time::Duration::from_millis(pace.unwrap_or(0));
    std::thread::spawn(move || {
        let mut told = 0;
        // A failed pass (a vault read that failed: an outage, a compaction
        // that overtook the point) is tried again, from where it stopped
        // (what is local is skipped), until the export stops: a reprotect
        // waits for the whole disk to be local.
        let mut backoff = HYDRATE_RETRY_FIRST;
        loop {
            let hydrated = export.hydrate(&stopping, pace, |local, size| {
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
                    return;
                }
                Ok(()) => return,
                Err(e) => eprintln!(
                    "standby: hydration stopped: {e}; reads of the rest come from the vault; trying again in {} s",
                    backoff.as_secs()
                ),
            }
            let deadline = std::time::Instant::now() + backoff;
            while std::time::Instant::now() < deadline {
                if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            backoff = (backoff * 2).min(HYDRATE_RETRY_MAX);
        }
    })
}

/// How long a failed hydration waits before it tries again, at first and at most.
const HYDRATE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const HYDRATE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

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

pub(crate) fn splitter_status(socket: &Path, json: bool) -> anyhow::Result<u8> {
    let reply = standby_splitter::control_status(socket).map_err(|e| bad_input(e.to_string()))?;
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
        if let Some(error) = reply["last_io_error"].as_str() {
            println!("{} failed I/O on the image or intent log since the start, the last: {error}", reply["io_errors"]);
        }
    }
    Ok(0)
}

pub(crate) fn mark(
    socket: &Path,
    app_consistent: bool,
    label: String,
    no_wait: bool,
    json: bool,
) -> anyhow::Result<u8> {
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
