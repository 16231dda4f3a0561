//! The disaster-recovery lifecycle of one machine (docs/cli.md, lifecycle states) as a pure
//! state machine: which state a machine is in, which commands it accepts
//! there, and where each accepted command leads. Deterministic and free of
//! I/O: the control plane's jobs consult it before they touch anything, and
//! persist the state it returns.
//!
//! ```text
//! unprotected → enabling → protected ⇄ test-failover
//! protected → failover-in-progress → failed-over → committed → reprotecting → protected (reversed)
//! protected → ready-to-complete (planned, --sync-first) → failover-in-progress
//! failover-in-progress | failed-over | ready-to-complete → protected (cancel)
//! ```
//!
//! A refused command is a value ([`Refusal`]) that names the current state
//! and the commands allowed in it.
//!
//! Key types: [`State`], [`Command`], [`transition`] (the table), and the
//! words the control plane records with them: [`Site`] (where a machine
//! runs), [`Instance`] (a running copy of a machine: at a site, or a drill)
//! and [`job::JobState`] / [`job::StepState`]. Every one of them has one
//! spelling, its `name()`, used in the state database, the API and the CLI;
//! nothing outside this crate writes those spellings as literals.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod job;
mod site;

pub use site::{Instance, Site, INSTANCES, SITES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Unprotected,
    /// Initial replication is running.
    Enabling,
    Protected,
    /// Protected, with a drill copy running at the recovery site.
    TestFailover,
    /// Waiting for `complete-failover` while replication keeps the delta small.
    ReadyToComplete,
    FailoverInProgress,
    /// Running at the other site; commit pending (change-point and cancel allowed).
    FailedOver,
    /// Running at the other site for good; not protected until reprotect.
    Committed,
    Reprotecting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    Protect,
    Unprotect,
    TestFailover,
    CleanupTestFailover,
    Failover,
    PlannedFailover { sync_first: bool },
    CompleteFailover,
    ChangePoint,
    Commit,
    Cancel,
    Reprotect,
}

/// Every state, for exhaustive checks.
pub const STATES: [State; 9] = [
    State::Unprotected,
    State::Enabling,
    State::Protected,
    State::TestFailover,
    State::ReadyToComplete,
    State::FailoverInProgress,
    State::FailedOver,
    State::Committed,
    State::Reprotecting,
];

/// Every command, for exhaustive checks.
pub const COMMANDS: [Command; 12] = [
    Command::Protect,
    Command::Unprotect,
    Command::TestFailover,
    Command::CleanupTestFailover,
    Command::Failover,
    Command::PlannedFailover { sync_first: false },
    Command::PlannedFailover { sync_first: true },
    Command::CompleteFailover,
    Command::ChangePoint,
    Command::Commit,
    Command::Cancel,
    Command::Reprotect,
];

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Unprotected => "unprotected",
            State::Enabling => "enabling",
            State::Protected => "protected",
            State::TestFailover => "test-failover",
            State::ReadyToComplete => "ready-to-complete",
            State::FailoverInProgress => "failover-in-progress",
            State::FailedOver => "failed-over",
            State::Committed => "committed",
            State::Reprotecting => "reprotecting",
        }
    }

    pub fn parse(name: &str) -> Option<State> {
        STATES.into_iter().find(|state| state.name() == name)
    }

    /// Whether a machine in this state replicates: its disks at its active
    /// site go through splitters into the vault at the other site.
    pub fn replicating(self) -> bool {
        matches!(
            self,
            State::Enabling | State::Protected | State::TestFailover | State::ReadyToComplete | State::Reprotecting
        )
    }

    /// Whether a machine in this state runs (or would run) from its
    /// failover point's exports, until reprotect rebuilds its disks.
    pub fn on_exports(self) -> bool {
        matches!(self, State::FailedOver | State::Committed)
    }
}

impl std::str::FromStr for State {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<State, UnknownName> {
        State::parse(name).ok_or_else(|| UnknownName { kind: "lifecycle state", name: name.to_string() })
    }
}

/// A name read from outside (the state database, a request) that is none
/// of the known spellings: written by a newer version, or damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a {} this version knows", self.name, self.kind)
    }
}

impl std::error::Error for UnknownName {}

impl Command {
    /// The command as the operator types it.
    pub fn name(self) -> &'static str {
        match self {
            Command::Protect => "protect",
            Command::Unprotect => "unprotect",
            Command::TestFailover => "test-failover",
            Command::CleanupTestFailover => "cleanup-test-failover",
            Command::Failover => "failover",
            Command::PlannedFailover { sync_first: false } => "planned-failover",
            Command::PlannedFailover { sync_first: true } => "planned-failover --sync-first",
            Command::CompleteFailover => "complete-failover",
            Command::ChangePoint => "change-point",
            Command::Commit => "commit",
            Command::Cancel => "cancel",
            Command::Reprotect => "reprotect",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Where an accepted command leads: the state while its job runs, the
/// state when the job succeeds, and the state its roll-back leaves (a job
/// that fails or is cancelled undoes what it did). Jobs record exactly
/// these states and no others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub command: Command,
    pub from: State,
    pub during: State,
    pub after: State,
    /// Where a roll-back leaves the machine: where it came from, except a
    /// failover during a drill, which removed the drill first.
    pub undone: State,
    /// The machine ends up running at the other site.
    pub moves_site: bool,
}

/// A command the current state does not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub state: State,
    pub command: Command,
    pub allowed: Vec<Command>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allowed: Vec<&str> = self.allowed.iter().map(|c| c.name()).collect();
        write!(
            f,
            "the machine is {}: {} is not allowed now; allowed: {}",
            self.state,
            self.command.name(),
            allowed.join(", ")
        )
    }
}

/// Whether `state` accepts `command`, and where it leads.
pub fn transition(state: State, command: Command) -> Result<Transition, Refusal> {
    lead(state, command).ok_or_else(|| Refusal { state, command, allowed: state.allowed() })
}

/// The transition a job of `command` was making when the machine was left
/// in `state`, its `during` state: what a restarted daemon resumes or
/// rolls back. `None` when no transition of `command` passes through
/// `state` while its job runs.
pub fn in_flight(state: State, command: Command) -> Option<Transition> {
    STATES.into_iter().filter_map(|from| lead(from, command)).find(|step| step.during == state)
}

/// The one table of the lifecycle.
fn lead(state: State, command: Command) -> Option<Transition> {
    use Command as C;
    use State as S;
    let step =
        |during, after, moves_site| Some(Transition { command, from: state, during, after, undone: state, moves_site });
    // A failover rolled back leaves the machine protected at its source
    // (a drill it removed first is not brought back).
    let failover = |during, after| {
        Some(Transition { command, from: state, during, after, undone: S::Protected, moves_site: true })
    };
    match (state, command) {
        (S::Unprotected, C::Protect) => step(S::Enabling, S::Protected, false),
        // The machine keeps its state until its disks are off the
        // splitters (a restart finishes the unprotect from there).
        (S::Enabling | S::Protected | S::Reprotecting, C::Unprotect) => step(state, S::Unprotected, false),
        // After commit the machine runs at its new site unprotected until
        // reprotect; unprotect says so explicitly.
        (S::Committed, C::Unprotect) => step(state, S::Unprotected, false),
        (S::Protected, C::TestFailover) => step(S::TestFailover, S::TestFailover, false),
        (S::TestFailover, C::CleanupTestFailover) => step(S::TestFailover, S::Protected, false),
        // A disaster during a drill: the failover job removes the drill first.
        (S::Protected | S::TestFailover, C::Failover) => failover(S::FailoverInProgress, S::FailedOver),
        (S::Protected, C::PlannedFailover { sync_first: false }) => failover(S::FailoverInProgress, S::FailedOver),
        // The machine stays protected (running, replicating) until the
        // remaining delta is small, then waits for complete-failover.
        (S::Protected, C::PlannedFailover { sync_first: true }) => step(S::Protected, S::ReadyToComplete, false),
        (S::ReadyToComplete, C::CompleteFailover) => failover(S::FailoverInProgress, S::FailedOver),
        // The copy keeps running at the recovery site (failed over) while
        // it moves to another point; a restart resumes the change.
        (S::FailedOver, C::ChangePoint) => step(S::FailedOver, S::FailedOver, false),
        (S::FailedOver, C::Commit) => step(S::FailedOver, S::Committed, false),
        // Cancel is safe at every unfinished step: the machine returns to
        // protected at its original site with replication resumed (a
        // failover that already moved it moves it back).
        (S::FailoverInProgress | S::FailedOver, C::Cancel) => step(state, S::Protected, true),
        (S::ReadyToComplete, C::Cancel) => step(state, S::Protected, false),
        (S::Committed, C::Reprotect) => step(S::Reprotecting, S::Protected, false),
        // A reprotect that failed (a helper it paused the guest on was gone)
        // is run again from where it stopped, as a restarted daemon would.
        (S::Reprotecting, C::Reprotect) => Some(Transition {
            command,
            from: state,
            during: S::Reprotecting,
            after: S::Protected,
            undone: S::Committed,
            moves_site: false,
        }),
        _ => None,
    }
}

impl State {
    /// The commands this state accepts, in the order an operator would
    /// consider them.
    pub fn allowed(self) -> Vec<Command> {
        COMMANDS.into_iter().filter(|&command| lead(self, command).is_some()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_names_the_state_and_what_is_allowed() {
        for state in STATES {
            for command in COMMANDS {
                if let Err(refusal) = transition(state, command) {
                    let text = refusal.to_string();
                    assert!(text.contains(state.name()), "{text}");
                    assert!(text.contains(command.name()), "{text}");
                    for allowed in state.allowed() {
                        assert!(text.contains(allowed.name()), "{text} misses {}", allowed.name());
                    }
                }
            }
        }
    }

    #[test]
    fn every_state_has_a_way_on_and_names_round_trip() {
        for state in STATES {
            assert!(!state.allowed().is_empty(), "{state} is a dead end");
            assert_eq!(State::parse(state.name()), Some(state));
        }
    }

    #[test]
    fn the_seed_journey_is_accepted_in_order() {
        use Command as C;
        let journey = [
            C::Protect,
            C::TestFailover,
            C::CleanupTestFailover,
            C::Failover,
            C::ChangePoint,
            C::Commit,
            C::Reprotect,
            C::PlannedFailover { sync_first: true },
            C::CompleteFailover,
            C::Commit,
            C::Reprotect,
        ];
        let mut state = State::Unprotected;
        let mut site_moves = 0;
        for command in journey {
            let step = transition(state, command).unwrap_or_else(|refusal| panic!("{refusal}"));
            site_moves += usize::from(step.moves_site);
            state = step.after;
        }
        assert_eq!(state, State::Protected);
        assert_eq!(site_moves, 2, "failover and failback each move the machine once");
    }

    #[test]
    fn states_are_spelled_the_same_by_serde_and_by_name() {
        for state in STATES {
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{}\"", state.name()));
            assert_eq!(state.name().parse::<State>(), Ok(state));
            assert_eq!(format!("{state:<22}|").len(), 23, "Display pads like a str");
        }
        assert!("elsewhere".parse::<State>().is_err());
    }

    #[test]
    fn every_transition_in_flight_is_found_from_its_during_state() {
        for state in STATES {
            for command in COMMANDS {
                if let Ok(step) = transition(state, command) {
                    let found = in_flight(step.during, command).expect("a running job's state leads back to it");
                    assert_eq!((found.during, found.after, found.undone), (step.during, step.after, step.undone));
                    assert!(STATES.contains(&step.undone));
                }
            }
        }
        assert_eq!(in_flight(State::Enabling, Command::Protect).map(|step| step.from), Some(State::Unprotected));
        assert_eq!(in_flight(State::Reprotecting, Command::Reprotect).map(|step| step.after), Some(State::Protected));
        assert_eq!(in_flight(State::Protected, Command::Protect), None);
    }

    proptest::proptest! {
        /// Whatever the operator types, the machine is always in a known
        /// state, and cancel never leaves it anywhere but protected.
        #[test]
        fn random_commands_keep_the_machine_in_a_known_state(
            commands in proptest::collection::vec(0..COMMANDS.len(), 1..60)
        ) {
            let mut state = State::Unprotected;
            for index in commands {
                let command = COMMANDS[index];
                match transition(state, command) {
                    Ok(step) => {
                        proptest::prop_assert!(STATES.contains(&step.during) && STATES.contains(&step.after));
                        if command == Command::Cancel {
                            proptest::prop_assert_eq!(step.after, State::Protected);
                        }
                        state = step.after;
                    }
                    Err(refusal) => proptest::prop_assert!(!refusal.allowed.contains(&command)),
                }
            }
        }
    }
}
