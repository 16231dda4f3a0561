//! Recovery points of a whole machine. Each disk has its own journal; a
//! machine's point is one moment T, and every disk is served at its state
//! after every write acknowledged up to T. Writes a guest issues to one
//! disk after another disk acknowledged a write carry later times, so the
//! cut at T is crash-consistent across disks.

use serde::{Deserialize, Serialize};
use standby_format::PointKind;
use standby_vault::journal::{list_journal, JournalListing, BASE_LABEL};
use standby_vault::{format_time, PointSelector, Vault};

use crate::error::ControlError;

/// A machine's recovery point, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachinePoint {
    /// What the operator asked for (`latest`, an id, a time, …).
    pub asked: String,
    pub time_micros: i64,
    /// RFC 3339, as `standby export --point` takes it.
    pub time: String,
    /// How it was chosen, for the job's record.
    pub described: String,
}

/// Resolves `text` for a machine whose disks are `disks` (vault names;
/// the first names ids and bookmarks).
pub fn resolve(vault: &Vault, disks: &[String], text: &str) -> Result<MachinePoint, ControlError> {
    let selector = PointSelector::parse(text).map_err(ControlError::Refused)?;
    let mut listings = Vec::new();
    for disk in disks {
        let listing = list_journal(vault, disk)?;
        if listing.last_time_micros.is_none() {
            return Err(ControlError::Refused(format!(
                "disk '{disk}' has no replicated data in the vault yet; wait for protect to finish"
            )));
        }
        listings.push(listing);
    }
    let first = &listings[0];
    // Every disk has all its records up to this moment.
    let common_latest = listings.iter().filter_map(|l| l.last_time_micros).min().expect("every disk has records");
    let bookmark = |wanted: &dyn Fn(&standby_vault::journal::Bookmark) -> bool, what: &str| {
        first
            .bookmarks
            .iter()
            .rev()
            .find(|b| b.label != BASE_LABEL && wanted(b))
            .map(|b| (b.time_micros, format!("{what} {} ({})", b.sequence, b.time)))
            .ok_or_else(|| ControlError::Refused(format!("disk '{}' has no {what} yet; use latest", disks[0])))
    };
    let (time, described) = match &selector {
        PointSelector::Latest => (common_latest, format!("latest ({})", format_time(common_latest))),
        PointSelector::LatestProcessed => {
            bookmark(&|b| b.kind == PointKind::CrashConsistent, "crash-consistent point")?
        }
        PointSelector::LatestApp => bookmark(&|b| b.kind == PointKind::AppConsistent, "app-consistent point")?,
        PointSelector::Sequence(sequence) => first
            .bookmarks
            .iter()
            .find(|b| b.sequence == *sequence)
            .map(|b| (b.time_micros, format!("point {} ({})", b.sequence, b.time)))
            .ok_or_else(|| {
                let machine = disks[0].split('.').next().unwrap_or("").to_string();
                ControlError::Refused(format!("disk '{}' has no point {sequence}", disks[0]))
                    .with_hint(standby_api::Hint::Status { machine })
            })?,
        PointSelector::Time(time) => {
            let micros = time.as_microsecond();
            if micros > common_latest {
                (
                    common_latest,
                    format!("latest ({}), the newest moment at or before {time}", format_time(common_latest)),
                )
            } else {
                (micros, format!("the moment {time}"))
            }
        }
    };
    for (disk, listing) in disks.iter().zip(&listings) {
        check_restorable(disk, listing, time)?;
    }
    Ok(MachinePoint { asked: text.to_string(), time_micros: time, time: format_time(time), described })
}

/// Refuses a moment outside a disk's window or inside one of its gaps.
fn check_restorable(disk: &str, listing: &JournalListing, time: i64) -> Result<(), ControlError> {
    if let Some(first) = listing.first_time_micros {
        if time < first {
            return Err(ControlError::Refused(format!(
                "{} is older than disk '{disk}' keeps: the oldest restorable moment is {}",
                format_time(time),
                format_time(first)
            )));
        }
    }
    for (from, to) in &listing.gaps {
        if time >= *from && to.is_none_or(|to| time < to) {
            return Err(ControlError::Refused(format!(
                "disk '{disk}' cannot be restored exactly at {}: its splitter was re-reading the image from {}{}; \
                 choose a point outside that stretch",
                format_time(time),
                format_time(*from),
                to.map(|to| format!(" to {}", format_time(to))).unwrap_or_default()
            )));
        }
    }
    Ok(())
}
