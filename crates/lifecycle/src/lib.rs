//! The disaster-recovery lifecycle of one machine (DESIGN.md §6) as a pure
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

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
}

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
        f.write_str(self.name())
    }
}

/// Where an accepted command leads: the state while its job runs, and the
/// state when the job succeeds. `reverses` says the protection direction
/// (and, for failovers, the active site) flips on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: State,
    pub during: State,
    pub after: State,
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

/// The one table of the lifecycle.
fn lead(state: State, command: Command) -> Option<Transition> {
    use Command as C;
    use State as S;
    let step = |during, after, moves_site| Some(Transition { from: state, during, after, moves_site });
    match (state, command) {
        (S::Unprotected, C::Protect) => step(S::Enabling, S::Protected, false),
        (S::Enabling | S::Protected | S::Reprotecting, C::Unprotect) => step(S::Unprotected, S::Unprotected, false),
        // After commit the machine runs at its new site unprotected until
        // reprotect; unprotect says so explicitly.
        (S::Committed, C::Unprotect) => step(S::Unprotected, S::Unprotected, false),
        (S::Protected, C::TestFailover) => step(S::TestFailover, S::TestFailover, false),
        (S::TestFailover, C::CleanupTestFailover) => step(S::TestFailover, S::Protected, false),
        // A disaster during a drill: the failover job removes the drill first.
        (S::Protected | S::TestFailover, C::Failover) => step(S::FailoverInProgress, S::FailedOver, true),
        (S::Protected, C::PlannedFailover { sync_first: false }) => step(S::FailoverInProgress, S::FailedOver, true),
        (S::Protected, C::PlannedFailover { sync_first: true }) => step(S::ReadyToComplete, S::ReadyToComplete, false),
        (S::ReadyToComplete, C::CompleteFailover) => step(S::FailoverInProgress, S::FailedOver, true),
        (S::FailedOver, C::ChangePoint) => step(S::FailoverInProgress, S::FailedOver, false),
        (S::FailedOver, C::Commit) => step(S::FailedOver, S::Committed, false),
        // Cancel is safe at every unfinished step: the machine returns to
        // protected at its original site with replication resumed (a
        // failover that already moved it moves it back).
        (S::FailoverInProgress | S::FailedOver, C::Cancel) => step(state, S::Protected, true),
        (S::ReadyToComplete, C::Cancel) => step(state, S::Protected, false),
        (S::Committed, C::Reprotect) => step(S::Reprotecting, S::Protected, false),
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
