//! Replication groups' points: one point across every disk of every
//! machine of a group, with no write acknowledged after the point on one
//! disk in it while a write acknowledged before the point on another disk
//! is missing.
//!
//! The barrier, in two steps the control plane drives ([`make_point`]):
//!
//! 1. **Hold**, in every member at once: the splitter queues the point
//!    (`group:GROUP:ID`) at this place in its change stream, and from then
//!    on does not acknowledge a change it queued after it. The point's
//!    entry is pending: the shipper stops before it (the vault never sees
//!    a point that may not be one).
//! 2. **Release**, once every member holds: each makes its pending entry a
//!    bookmark and acknowledges what it held back.
//!
//! Why that is consistent: a write acknowledged before a member's point
//! was queued before it, so it is in the point. A write queued after a
//! member's point is acknowledged only after the release, which comes
//! after every member queued its point: whatever the guests write because
//! of it (they see the acknowledgement first) is queued after every point.
//! So a point never holds a write whose cause it lacks. No clock is
//! compared: the points are places in each journal.
//!
//! Bounded: each hold ends by itself at its deadline (a coordinator that
//! died, a member that never answered, must not stall the guests). A hold
//! that ended so drops its point, so the group point is missing in that
//! member and is no point of the group; the coordinator releases the
//! others without keeping theirs as soon as one member fails to hold.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use standby_format::PointKind;

use crate::{now_micros, Entry, Queue, Shared};

/// A hold in force: the point queued and its deadline.
pub(crate) struct Hold {
    label: String,
    began: Instant,
    until: Instant,
}

impl Shared {
    /// Queues the pending point `label` and holds the acknowledgement of
    /// every change queued after it, for at most `within`.
    pub(crate) fn group_hold(&self, label: &str, kind: PointKind, within: Duration) -> Result<(), String> {
        let mut queue = self.lock();
        self.expire_hold(&mut queue);
        if queue.stopping {
            return Err("the splitter is stopping".into());
        }
        if let Some(hold) = &queue.hold {
            return Err(format!("the group point '{}' is still being made; try again after it", hold.label));
        }
        if !queue.exact {
            return Err("the journal is catching up with the image (after a start, a restart or a vault outage): \
                        no point can be made until it has"
                .into());
        }
        let now = Instant::now();
        queue.hold = Some(Hold { label: label.to_string(), began: now, until: now + within });
        queue.holds_begun += 1;
        queue.entries.push_back(Entry::GroupPending { kind, label: label.to_string(), time: now_micros() });
        self.status.lock().unwrap_or_else(|p| p.into_inner()).group_holds += 1;
        Ok(())
    }

    /// Ends the hold of `label`: its point becomes a bookmark when `keep`,
    /// else it is dropped. Answers whether the point was kept; an error
    /// when no such hold is in force (it ended at its deadline).
    pub(crate) fn group_release(&self, label: &str, keep: bool) -> Result<bool, String> {
        let mut queue = self.lock();
        self.expire_hold(&mut queue);
        match &queue.hold {
            Some(hold) if hold.label == label => {}
            _ => {
                return Err(format!(
                    "no hold of the group point '{label}' is in force (it ended at its deadline, or was never \
                     begun): the point was not made"
                ))
            }
        }
        self.end_hold(&mut queue, keep);
        Ok(keep)
    }

    /// Ends a hold past its deadline, dropping its point.
    pub(crate) fn expire_hold(&self, queue: &mut Queue) {
        if queue.hold.as_ref().is_some_and(|hold| Instant::now() >= hold.until) {
            let label = queue.hold.as_ref().map(|hold| hold.label.clone()).unwrap_or_default();
            tracing::warn!("the group point '{label}' was not released in time: dropped, writes go on");
            self.status.lock().unwrap_or_else(|p| p.into_inner()).group_holds_expired += 1;
            self.end_hold(queue, false);
        }
    }

    /// Ends the hold in force: its pending point is made a bookmark or
    /// dropped, and the changes held back are acknowledged.
    pub(crate) fn end_hold(&self, queue: &mut Queue, keep: bool) {
        let Some(hold) = queue.hold.take() else { return };
        let at = queue.entries.iter().position(|entry| matches!(entry, Entry::GroupPending { .. }));
        if let Some(at) = at {
            let Some(Entry::GroupPending { kind, label, time }) = queue.entries.remove(at) else {
                unreachable!("found above")
            };
            if keep {
                queue.entries.insert(at, Entry::Bookmark { kind, label, time, reply: None });
            }
        }
        let held = hold.began.elapsed().as_secs_f64();
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.group_hold_max_seconds = status.group_hold_max_seconds.max(held);
        drop(status);
        self.released.notify_all();
        self.changed.notify_all();
    }

    /// Waits while hold number `hold` is in force (never past its deadline).
    pub(crate) fn wait_for_release(&self, hold: u64) {
        let mut queue = self.lock();
        while queue.holds_begun == hold && queue.hold.is_some() {
            self.expire_hold(&mut queue);
            let Some(until) = queue.hold.as_ref().map(|hold| hold.until) else { break };
            let left = until.saturating_duration_since(Instant::now());
            queue = self.released.wait_timeout(queue, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// How a group point went in one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberOutcome {
    pub socket: PathBuf,
    /// Why it did not hold or release in time, when it did not.
    pub problem: Option<String>,
}

/// A group point's outcome: made in every member, or not (and why, per
/// member).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPoint {
    pub label: String,
    pub made: bool,
    pub members: Vec<MemberOutcome>,
    /// From the first hold asked to the last release answered.
    pub held_for: Duration,
}

impl GroupPoint {
    /// The members that held the point back, with why.
    pub fn held_back(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.members.iter().filter_map(|member| Some((member.socket.as_path(), member.problem.as_deref()?)))
    }
}

/// Makes the point `label` in the splitters on `sockets` (their NBD
/// sockets): holds every member at once, then releases every member,
/// keeping the point only when every member held. A member that does not
/// hold within `within` fails the point (each hold ends by itself then).
pub fn make_point(sockets: &[PathBuf], label: &str, kind: PointKind, within: Duration) -> GroupPoint {
    let began = Instant::now();
    let ask = |socket: &PathBuf, request: serde_json::Value| {
        crate::control::request_within(socket, &request, within).map_err(|e| e.to_string()).and_then(
            |reply| match reply["error"].as_str() {
                Some(problem) => Err(problem.to_string()),
                None => Ok(reply),
            },
        )
    };
    let app_consistent = kind == PointKind::AppConsistent;
    let answers: Vec<(Result<serde_json::Value, String>, Duration)> = std::thread::scope(|scope| {
        let asked: Vec<_> = sockets
            .iter()
            .map(|socket| {
                let request = json!({"op": "group-hold", "label": label, "app_consistent": app_consistent,
                                     "within_ms": within.as_millis() as u64});
                scope.spawn(move || (ask(socket, request), began.elapsed()))
            })
            .collect();
        asked
            .into_iter()
            .map(|thread| thread.join().unwrap_or_else(|_| (Err("the request panicked".into()), began.elapsed())))
            .collect()
    });
    let holds: Vec<Result<serde_json::Value, String>> = answers
        .into_iter()
        .map(|(held, took)| match held {
            // Every hold must be in force together, well inside the bound.
            Ok(_) if took >= within / 2 => {
                Err(format!("held only after {} ms (bound {} ms)", took.as_millis(), within.as_millis()))
            }
            held => held,
        })
        .collect();
    let keep = holds.iter().all(Result::is_ok);
    let releases: Vec<Option<Result<serde_json::Value, String>>> = std::thread::scope(|scope| {
        let asked: Vec<_> = sockets
            .iter()
            .zip(&holds)
            .map(|(socket, held)| {
                let request = json!({"op": "group-release", "label": label, "keep": keep});
                // A member that did not hold has nothing to release.
                held.is_ok().then(|| scope.spawn(move || ask(socket, request)))
            })
            .collect();
        asked
            .into_iter()
            .map(|thread| thread.map(|t| t.join().unwrap_or_else(|_| Err("the request panicked".into()))))
            .collect()
    });
    let held_for = began.elapsed();
    let members: Vec<MemberOutcome> = sockets
        .iter()
        .zip(holds.into_iter().zip(releases))
        .map(|(socket, (held, released))| {
            let problem = match (held, released) {
                (Err(problem), _) => Some(format!("did not hold: {problem}")),
                (Ok(_), Some(Err(problem))) => Some(format!("did not release: {problem}")),
                _ => None,
            };
            MemberOutcome { socket: socket.clone(), problem }
        })
        .collect();
    let made = keep && members.iter().all(|member| member.problem.is_none());
    GroupPoint { label: label.to_string(), made, members, held_for }
}
