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

/// The selectors of a replication group's points: `latest-group` (the
/// newest point every disk of the group holds) and `latest-group-app` (the
/// newest app-consistent one). Returns whether it asks for app-consistent.
pub fn group_selector(text: &str) -> Option<bool> {
    match text {
        "latest-group" => Some(false),
        "latest-group-app" => Some(true),
        _ => None,
    }
}

/// Which of a group's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupWant {
    /// The newest every disk holds (app-consistent only with `app`).
    Latest { app: bool },
    /// The point of this id (its label `group:GROUP:ID`).
    Id(u64),
}

/// Reads what `text` asks of group `group`: a group selector or a group
/// point's label; None for any other point.
pub fn group_want(group: &str, text: &str) -> Result<Option<GroupWant>, ControlError> {
    if let Some(app) = group_selector(text) {
        return Ok(Some(GroupWant::Latest { app }));
    }
    match standby_format::parse_group_point_label(text) {
        Some((of, id)) if of == group => Ok(Some(GroupWant::Id(id))),
        Some((of, _)) => Err(ControlError::Refused(format!("'{text}' is a point of group '{of}', not of '{group}'"))),
        None => Ok(None),
    }
}

/// The label of group `group`'s point `want` that every disk of
/// `group_disks` holds.
pub fn group_label(
    vault: &Vault,
    group: &str,
    group_disks: &[String],
    want: GroupWant,
) -> Result<String, ControlError> {
    let mut listings = Vec::new();
    for disk in group_disks {
        listings.push(list_journal(vault, disk)?);
    }
    find_group_label(&listings, group, want)
}

fn find_group_label(listings: &[JournalListing], group: &str, want: GroupWant) -> Result<String, ControlError> {
    let (first, others) = listings.split_first().expect("a group has disks");
    let wanted = |b: &&standby_vault::journal::Bookmark| match (want, standby_format::parse_group_point_label(&b.label))
    {
        (GroupWant::Latest { app }, Some((name, _))) => name == group && (!app || b.kind == PointKind::AppConsistent),
        (GroupWant::Id(id), Some((name, of))) => name == group && of == id,
        (_, None) => false,
    };
    first
        .bookmarks
        .iter()
        .rev()
        .filter(wanted)
        .find(|b| others.iter().all(|listing| listing.bookmarks.iter().any(|other| other.label == b.label)))
        .map(|b| b.label.clone())
        .ok_or_else(|| {
            let what = match want {
                GroupWant::Latest { app: false } => "point".to_string(),
                GroupWant::Latest { app: true } => "app-consistent point".to_string(),
                GroupWant::Id(id) => format!("point {id}"),
            };
            ControlError::Refused(format!(
                "group '{group}' has no {what} that every one of its disks holds; use latest, or another of the \
                 group's points (`standby group show {group}`)"
            ))
        })
}

/// The newest moment every disk of `disks` has all its records up to.
pub fn common_latest(vault: &Vault, disks: &[String]) -> Result<i64, ControlError> {
    let mut latest = i64::MAX;
    for disk in disks {
        let listing = list_journal(vault, disk)?;
        let last = listing.last_time_micros.ok_or_else(|| {
            ControlError::Refused(format!(
                "disk '{disk}' has no replicated data in the vault yet; wait for protect to finish"
            ))
        })?;
        latest = latest.min(last);
    }
    Ok(latest)
}

/// Resolves group `group`'s point `want` for a machine whose disks are
/// `disks`, the group's being `group_disks` (this machine's among them):
/// the point every one of them holds, at the moment this machine's disks
/// recorded it (the latest of them: what a disk wrote after its own point
/// and before the group's last was held back from the guests until every
/// disk had its point, so nothing depends on it).
pub fn resolve_group(
    vault: &Vault,
    group: &str,
    group_disks: &[String],
    disks: &[String],
    want: GroupWant,
) -> Result<MachinePoint, ControlError> {
    let mut listings = Vec::new();
    for disk in group_disks {
        listings.push(list_journal(vault, disk)?);
    }
    let label = find_group_label(&listings, group, want)?;
    let mut time = i64::MIN;
    for (disk, listing) in group_disks.iter().zip(&listings).filter(|(disk, _)| disks.contains(disk)) {
        let point = listing.bookmarks.iter().find(|b| b.label == label).expect("every disk holds it");
        time = time.max(point.time_micros);
        check_restorable(disk, listing, point.time_micros)?;
    }
    let id = standby_format::parse_group_point_label(&label).map_or(0, |(_, id)| id);
    let asked = match want {
        GroupWant::Latest { app: false } => "latest-group".to_string(),
        GroupWant::Latest { app: true } => "latest-group-app".to_string(),
        GroupWant::Id(_) => label.clone(),
    };
    Ok(MachinePoint {
        asked,
        time_micros: time,
        time: format_time(time),
        described: format!("group '{group}' point {id} ({})", format_time(time)),
    })
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
