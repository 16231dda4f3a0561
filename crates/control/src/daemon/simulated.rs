//! Job tests on a simulated site (no QEMU; real splitters, vaults, state):
//! every step of every job of the journey crashed in turn, as a `kill -9`
//! of the daemon would leave it, and taken up by the next daemon; each
//! job's roll-back when an act of the site fails; and the refusals. They
//! check what the journey through QEMU (`crates/cli/tests/killed.rs`) can
//! only sample: every step, deterministically, in seconds.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use standby_lifecycle::job::{JobOrigin, JobState, StepState};
use standby_lifecycle::{transition, Command, Instance, State};

use super::engine::{Crash, Hooks};
use super::{instance, Daemon};
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::qemu::Drive;
use crate::site::simulated::Act;
use crate::site::{SimulatedHost, SiteHost, Sites};
use crate::state::written;
use crate::MachineDefinition;

const NAME: &str = "web";
/// How long a test waits for a job (it runs in well under a second).
const JOB_DEADLINE: Duration = Duration::from_secs(60);

/// A deployment with machine `web` (two disks) on one simulated host.
struct Bench {
    _dir: tempfile::TempDir,
    deployment: Deployment,
    host: Arc<SimulatedHost>,
}

impl Bench {
    fn new() -> Bench {
        quiet_crashes();
        let dir = tempfile::tempdir().unwrap();
        let mut deployment = Deployment::init(&dir.path().join("deployment")).unwrap();
        let mut sources = Vec::new();
        for (index, byte) in [(0, 0x5a_u8), (1, 0xa5)] {
            let source = dir.path().join(format!("disk{index}.raw"));
            let mut bytes = vec![0u8; 2 << 20];
            bytes[..4096].fill(byte);
            std::fs::write(&source, bytes).unwrap();
            sources.push(source);
        }
        let definition = MachineDefinition {
            name: NAME.into(),
            cpus: 1,
            memory_mib: 64,
            kernel: None,
            initrd: None,
            append: None,
            nics: Vec::new(),
        };
        deployment.add_machine(&definition, &sources, standby_lifecycle::Site::Primary).unwrap();
        Bench { _dir: dir, deployment, host: Arc::new(SimulatedHost::new()) }
    }

    /// A daemon on the bench's host, crashing where `hooks` say.
    fn daemon(&self, hooks: Hooks) -> Arc<Daemon> {
        let host: Arc<dyn SiteHost> = self.host.clone();
        Daemon::new(&self.deployment, Path::new("/nonexistent/standby"), Sites::one(host), hooks)
    }

    fn machine(&self) -> crate::Machine {
        self.deployment.state.machine(NAME).unwrap()
    }

    /// The instances of `web` running, by where.
    fn running(&self) -> Vec<Instance> {
        standby_lifecycle::INSTANCES
            .into_iter()
            .filter(|role| self.host.machine(&instance(NAME, *role)).is_some())
            .collect()
    }

    fn last_job(&self) -> crate::Job {
        self.deployment.state.jobs().unwrap().into_iter().next().expect("a job ran")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.host.stop_all();
    }
}

/// A simulated crash is a panic the job engine catches: not worth a
/// message and a backtrace each time; every other panic still has them.
fn quiet_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<super::engine::SimulatedCrash>() {
                default(info);
            }
        }));
    });
}

/// Waits until no job holds a machine of `daemon` (ended, or crashed).
fn wait_for_jobs(daemon: &Daemon) {
    let deadline = Instant::now() + JOB_DEADLINE;
    while !daemon.claims.held().is_empty() {
        assert!(Instant::now() < deadline, "jobs still running: {:?}", daemon.claims.held());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One job of the journey: how to ask for it, the name its crash hooks
/// use, its step count, and the state it leaves.
struct Stage {
    job: &'static str,
    /// Its lifecycle command; `None` for machine start and stop.
    command: Option<Command>,
    steps: usize,
    leaves: Leaves,
    run: fn(&Arc<Daemon>) -> Result<(), ControlError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaves {
    State(State),
    Running(bool),
}

fn started<T>(result: Result<T, ControlError>) -> Result<(), ControlError> {
    result.map(|_| ())
}

const JOURNEY: &[Stage] = &[
    Stage {
        job: "machine start",
        command: None,
        steps: 3,
        leaves: Leaves::Running(true),
        run: |d| started(d.start(NAME)),
    },
    Stage {
        job: "protect",
        command: Some(Command::Protect),
        steps: 4,
        leaves: Leaves::State(State::Protected),
        run: |d| started(d.protect(NAME, None, None)),
    },
    Stage {
        job: "test-failover",
        command: Some(Command::TestFailover),
        steps: 3,
        leaves: Leaves::State(State::TestFailover),
        run: |d| started(d.test_failover(NAME, None)),
    },
    Stage {
        job: "cleanup-test-failover",
        command: Some(Command::CleanupTestFailover),
        steps: 1,
        leaves: Leaves::State(State::Protected),
        run: |d| started(d.cleanup_test_failover(NAME)),
    },
    Stage {
        job: "failover",
        command: Some(Command::Failover),
        steps: 6,
        leaves: Leaves::State(State::FailedOver),
        run: |d| started(d.failover(NAME, None, true)),
    },
    Stage {
        job: "change-point",
        command: Some(Command::ChangePoint),
        steps: 4,
        leaves: Leaves::State(State::FailedOver),
        run: |d| started(d.change_point(NAME, "latest".into())),
    },
    Stage {
        job: "cancel",
        command: Some(Command::Cancel),
        steps: 1,
        leaves: Leaves::State(State::Protected),
        run: |d| started(d.cancel(NAME)),
    },
    // A planned failover called off before anything moved.
    Stage {
        job: "planned-failover --sync-first",
        command: Some(Command::PlannedFailover { sync_first: true }),
        steps: 1,
        leaves: Leaves::State(State::ReadyToComplete),
        run: |d| started(d.planned_failover(NAME, true)),
    },
    Stage {
        job: "cancel",
        command: Some(Command::Cancel),
        steps: 1,
        leaves: Leaves::State(State::Protected),
        run: |d| started(d.cancel(NAME)),
    },
    Stage {
        job: "planned-failover --sync-first",
        command: Some(Command::PlannedFailover { sync_first: true }),
        steps: 1,
        leaves: Leaves::State(State::ReadyToComplete),
        run: |d| started(d.planned_failover(NAME, true)),
    },
    Stage {
        job: "complete-failover",
        command: Some(Command::CompleteFailover),
        steps: 6,
        leaves: Leaves::State(State::FailedOver),
        run: |d| started(d.complete_failover(NAME)),
    },
    Stage {
        job: "commit",
        command: Some(Command::Commit),
        steps: 2,
        leaves: Leaves::State(State::Committed),
        run: |d| started(d.commit(NAME)),
    },
    Stage {
        job: "reprotect",
        command: Some(Command::Reprotect),
        steps: 5,
        leaves: Leaves::State(State::Protected),
        run: |d| started(d.reprotect(NAME, false, false)),
    },
    Stage {
        job: "unprotect",
        command: Some(Command::Unprotect),
        steps: 3,
        leaves: Leaves::State(State::Unprotected),
        run: |d| started(d.unprotect(NAME)),
    },
    Stage {
        job: "machine stop",
        command: None,
        steps: 2,
        leaves: Leaves::Running(false),
        run: |d| started(d.stop(NAME, false, None)),
    },
];

/// What the machine is now, as a stage's `leaves` names it.
fn reached(bench: &Bench, leaves: Leaves) -> bool {
    let machine = bench.machine();
    match leaves {
        Leaves::State(state) => machine.state == state,
        Leaves::Running(running) => bench.running().contains(&machine.active_site.into()) == running,
    }
}

/// Runs `stage` on a daemon crashing at step `crash_at` (a `kill -9` there,
/// simulated), then, when it crashed, a daemon taking over; a job rolled
/// back is asked for again. Checks what every take-over must leave: no job
/// running, every job it started succeeded, the machine at rest and
/// running at one site at most. Says whether the crash happened.
fn run_stage(bench: &Bench, stage: &Stage, crash_at: usize) -> bool {
    let hooks =
        Hooks { crash_at: Some(format!("{}/{crash_at}/0", stage.job)), crash: Crash::Unwind, ..Hooks::default() };
    let daemon = bench.daemon(hooks);
    let before = bench.deployment.state.jobs().unwrap().first().map_or(0, |job| job.id);
    let from = bench.machine().state;
    written::take(bench.deployment.state.path());
    // `machine start` and `stop` run on the request's thread: its crash
    // unwinds out of the request.
    let asked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (stage.run)(&daemon)));
    if let Ok(result) = &asked {
        result.as_ref().unwrap_or_else(|e| panic!("{}: {e}", stage.job));
    }
    wait_for_jobs(&daemon);
    let job = bench.last_job();
    assert!(job.id > before, "{}: no job recorded", stage.job);
    let crashed = job.state == JobState::Running;
    let context = format!("{} crashed at step {crash_at}", stage.job);
    if crashed {
        drop(daemon);
        let next = bench.daemon(Hooks::default());
        next.take_over(&bench.deployment).unwrap();
        wait_for_jobs(&next);
        for job in bench.deployment.state.jobs().unwrap().into_iter().filter(|j| j.id > job.id) {
            assert_eq!(
                job.state,
                JobState::Succeeded,
                "{context}: taken up by job {} ({}): {:?}",
                job.id,
                job.command,
                job.error
            );
        }
        if !reached(bench, stage.leaves) {
            // Rolled back: asked for again, with no crash (a complete-failover
            // rolled back to before its planned failover, that first).
            if stage.job == "complete-failover" && bench.machine().state == State::Protected {
                next.planned_failover(NAME, true).unwrap_or_else(|e| panic!("{context}, planned again: {e}"));
                wait_for_jobs(&next);
            }
            (stage.run)(&next).unwrap_or_else(|e| panic!("{context}, asked again: {e}"));
            wait_for_jobs(&next);
            let again = bench.last_job();
            assert_eq!(again.state, JobState::Succeeded, "{context}, asked again: {:?}", again.error);
        }
    } else {
        assert_eq!(job.state, JobState::Succeeded, "{context}: {:?}", job.error);
    }
    assert!(
        reached(bench, stage.leaves),
        "{context}: the machine is {}, not {:?}",
        bench.machine().state,
        stage.leaves
    );
    let running = bench.running();
    assert!(
        !(running.contains(&Instance::Primary) && running.contains(&Instance::Recovery)),
        "{context}: runs at both sites"
    );
    check_states_written(bench, stage, from, &context);
    crashed
}

/// Every state the stage's jobs recorded (the job, the one that took it
/// up, the one asked again) is one the lifecycle table gives its command
/// from where the machine was: the table is the behaviour.
fn check_states_written(bench: &Bench, stage: &Stage, from: State, context: &str) {
    let written = written::take(bench.deployment.state.path());
    let Some(command) = stage.command else {
        assert!(written.is_empty(), "{context}: a machine start or stop recorded states {written:?}");
        return;
    };
    let mut allowed = Vec::new();
    let mut add = |from: State, command: Command| {
        let step = transition(from, command).unwrap_or_else(|e| panic!("{context}: {e}"));
        allowed.extend([step.from, step.during, step.after, step.undone]);
    };
    add(from, command);
    if command == Command::CompleteFailover {
        // Rolled back to before its planned failover, which runs again.
        add(State::Protected, Command::PlannedFailover { sync_first: true });
    }
    for (machine, state) in written {
        assert_eq!(machine, NAME);
        assert!(
            allowed.contains(&state),
            "{context}: recorded {state}, which {} from {from} never gives",
            command.name()
        );
    }
}

/// Checks what the machine's state says runs: on its splitters, which
/// run, when replicated; none and its disks on its images when
/// unprotected; the exports of its point while it runs from one, a drill
/// copy only during a drill, and nothing left paused.
fn check_what_runs(bench: &Bench, context: &str) {
    let machine = bench.machine();
    let exports: Vec<String> = match machine.state {
        State::TestFailover => machine.disks.iter().map(|d| instance(&d.vault_disk, Instance::Drill)).collect(),
        state if state.on_exports() => {
            machine.disks.iter().map(|d| instance(&d.vault_disk, machine.active_site)).collect()
        }
        _ => Vec::new(),
    };
    assert_eq!(bench.host.exports(), exports, "{context}: exports");
    let drill = bench.running().contains(&Instance::Drill);
    assert_eq!(drill, machine.state == State::TestFailover, "{context}: a drill copy runs: {drill}");
    let key = instance(NAME, machine.active_site);
    let splitters = bench.host.splitters();
    let disks: Vec<String> = machine.disks.iter().map(|d| d.vault_disk.clone()).collect();
    if machine.state.replicating() {
        assert_eq!(splitters, disks, "{context}: splitters");
        if let Some(running) = bench.host.machine(&key) {
            assert!(running.drives.iter().all(|d| matches!(d, Drive::Nbd { .. })), "{context}: {:?}", running.drives);
        }
    } else if machine.state == State::Unprotected {
        assert!(splitters.is_empty(), "{context}: splitters {splitters:?}");
        if let Some(running) = bench.host.machine(&key) {
            assert!(running.drives.iter().all(|d| matches!(d, Drive::File(_))), "{context}: {:?}", running.drives);
        }
    }
    for role in standby_lifecycle::INSTANCES {
        let paused = bench.host.machine(&instance(NAME, role)).is_some_and(|running| running.paused);
        assert!(!paused, "{context}: {role} left paused");
    }
}

/// The whole journey once per step number: every job crashed at that step
/// (or at its last, for shorter jobs), taken up, and the journey goes on.
/// Together, every step of every job.
#[test]
fn a_crash_at_any_step_of_any_job_is_taken_up_by_the_next_daemon() {
    let started = Instant::now();
    let most = JOURNEY.iter().map(|stage| stage.steps).max().unwrap();
    let mut crashed = std::collections::BTreeSet::new();
    for step in 0..most {
        let bench = Bench::new();
        for (index, stage) in JOURNEY.iter().enumerate() {
            let crash_at = step.min(stage.steps - 1);
            if run_stage(&bench, stage, crash_at) {
                crashed.insert((index, crash_at));
            }
            check_what_runs(&bench, &format!("{} crashed at step {crash_at}", stage.job));
        }
    }
    let every: usize = JOURNEY.iter().map(|stage| stage.steps).sum();
    assert_eq!(crashed.len(), every, "steps crashed: {crashed:?}");
    eprintln!("{} crashes taken up in {:.1} s", crashed.len(), started.elapsed().as_secs_f64());
}

/// Runs the journey's stages before `job`, with no crash.
fn journey_to(bench: &Bench, daemon: &Arc<Daemon>, job: &str) {
    for stage in JOURNEY.iter().take_while(|stage| stage.job != job) {
        (stage.run)(daemon).unwrap_or_else(|e| panic!("{}: {e}", stage.job));
        wait_for_jobs(daemon);
        assert!(reached(bench, stage.leaves), "{}: the machine is {}", stage.job, bench.machine().state);
    }
}

/// Each job whose site fails an act midway rolls the machine back to where
/// it was (nothing half-way, nothing left running or paused that should
/// not be, the source running again when the job had shut it down), and
/// the same command succeeds once the site works again.
#[test]
fn a_job_whose_site_fails_rolls_the_machine_back() {
    let cases: &[(&str, Act, &str, State)] = &[
        ("protect", Act::EnsureSplitter, "", State::Unprotected),
        ("protect", Act::SwitchDrive, "", State::Unprotected),
        ("protect", Act::Mark, "", State::Unprotected),
        ("test-failover", Act::ServeExport, "", State::Protected),
        ("test-failover", Act::Launch, "@drill", State::Protected),
        ("failover", Act::ServeExport, "", State::Protected),
        ("failover", Act::Launch, "@recovery", State::Protected),
        // (An unplanned failover goes on when the source cannot be shut
        // down; a planned one does not.)
        ("complete-failover", Act::Stop, "@primary", State::Protected),
        ("complete-failover", Act::Mark, "", State::Protected),
        ("complete-failover", Act::Launch, "@recovery", State::Protected),
    ];
    for &(job, act, on, undone) in cases {
        let context = format!("{job} with {act:?} failing on '{on}'");
        let bench = Bench::new();
        let daemon = bench.daemon(Hooks::default());
        journey_to(&bench, &daemon, job);
        let was_running = bench.running();
        let stage = JOURNEY.iter().find(|stage| stage.job == job).unwrap();
        bench.host.fail(act, on, "the host said no");
        (stage.run)(&daemon).unwrap_or_else(|e| panic!("{context}: refused: {e}"));
        wait_for_jobs(&daemon);
        let failed = bench.last_job();
        assert_eq!(failed.state, JobState::Failed, "{context}");
        let error = failed.error.unwrap_or_default();
        assert!(error.contains("simulated") && error.contains("the host said no"), "{context}: {error}");
        assert_eq!(bench.machine().state, undone, "{context}: {error}");
        assert_eq!(bench.machine().active_site, standby_lifecycle::Site::Primary, "{context}");
        check_what_runs(&bench, &context);
        // A planned failover that failed stopped waiting: ready-to-complete
        // is asked for again by the next `planned-failover --sync-first`.
        assert_eq!(bench.running(), was_running, "{context}: {error}");
        bench.host.heal(act);
        if job == "complete-failover" {
            daemon.planned_failover(NAME, true).unwrap();
            wait_for_jobs(&daemon);
        }
        (stage.run)(&daemon).unwrap_or_else(|e| panic!("{context}, healed: {e}"));
        wait_for_jobs(&daemon);
        assert_eq!(bench.last_job().state, JobState::Succeeded, "{context}, healed: {:?}", bench.last_job().error);
        assert!(reached(&bench, stage.leaves), "{context}, healed");
        check_what_runs(&bench, &format!("{context}, healed"));
    }
}

/// A reprotect whose site fails an act once the machine is reprotecting
/// (the pause, a splitter, a disk's switch, the second disk's switch with
/// the first already on its splitter) leaves it reprotecting, running and
/// not paused; asked again once the site works, it goes on from there to
/// protected with every disk on its splitter.
#[test]
fn a_failed_reprotect_asked_again_goes_on_from_where_it_stopped() {
    for (act, passes) in [(Act::Pause, 0), (Act::EnsureSplitter, 0), (Act::SwitchDrive, 0), (Act::SwitchDrive, 1)] {
        let context = format!("reprotect with {act:?} failing after {passes}");
        let bench = Bench::new();
        let daemon = bench.daemon(Hooks::default());
        journey_to(&bench, &daemon, "reprotect");
        bench.host.fail_after(act, "", "the host said no", passes);
        daemon.reprotect(NAME, false, false).unwrap_or_else(|e| panic!("{context}: refused: {e}"));
        wait_for_jobs(&daemon);
        let failed = bench.last_job();
        assert_eq!(failed.state, JobState::Failed, "{context}");
        assert!(failed.error.as_deref().unwrap_or_default().contains("the host said no"), "{context}");
        assert_eq!(bench.machine().state, State::Reprotecting, "{context}");
        let key = instance(NAME, bench.machine().active_site);
        assert!(bench.host.machine(&key).is_some_and(|running| !running.paused), "{context}: not running on");

        bench.host.heal(act);
        daemon.reprotect(NAME, false, false).unwrap_or_else(|e| panic!("{context}, healed: refused: {e}"));
        wait_for_jobs(&daemon);
        let job = bench.last_job();
        assert_eq!(job.state, JobState::Succeeded, "{context}, healed: {:?}", job.error);
        assert_eq!(job.origin, JobOrigin::Operator, "{context}");
        assert_eq!(bench.machine().state, State::Protected, "{context}, healed");
        check_what_runs(&bench, &format!("{context}, healed"));
    }
}

/// What the guest at the recovery site writes through disk `index`'s
/// export while it runs on it: `byte` over 64 KiB at `offset` of the
/// overlay, recorded in its map (both made when missing).
fn written_through_export(bench: &Bench, index: usize, offset: u64, byte: u8) {
    use std::io::{Seek, SeekFrom, Write};
    let machine = bench.machine();
    let overlay = super::files::overlay_path(&bench.deployment, &machine, index, Instance::Recovery);
    let disk_bytes = std::fs::metadata(&machine.disks[index].primary_path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&overlay).unwrap();
    if file.metadata().unwrap().len() < disk_bytes {
        file.set_len(disk_bytes).unwrap();
    }
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&[byte; 65536]).unwrap();
    let map_path = standby_splitter::export::map_path(&overlay);
    let mut map = std::fs::OpenOptions::new().create(true).append(true).open(&map_path).unwrap();
    if map.metadata().unwrap().len() == 0 {
        let disk = machine.disks[index].vault_disk.clone();
        let header = standby_format::OverlayHeader { disk, point: "latest".into(), disk_bytes };
        map.write_all(&header.encode()).unwrap();
    }
    map.write_all(&standby_format::encode_overlay_record(offset, offset + 65536)).unwrap();
}

/// A reprotect that moved the first disk onto its splitter and failed on
/// the second leaves the guest writing to the second disk's export, beside
/// the splitter the failed attempt started for it: asked again, what the
/// guest wrote there in between reaches the reverse replica (the splitter
/// is stopped, the writes join its intent log, it starts again).
#[test]
fn a_reprotect_asked_again_after_a_half_move_replicates_what_the_export_took_in_between() {
    let bench = Bench::new();
    let daemon = bench.daemon(Hooks::default());
    journey_to(&bench, &daemon, "reprotect");
    written_through_export(&bench, 1, 1 << 20, 0x77);
    bench.host.fail_after(Act::SwitchDrive, "", "the host said no", 1);
    daemon.reprotect(NAME, false, false).unwrap();
    wait_for_jobs(&daemon);
    assert_eq!(bench.last_job().state, JobState::Failed);
    let key = instance(NAME, bench.machine().active_site);
    let drives = bench.host.machine(&key).unwrap().drives;
    assert!(
        matches!(&drives[0], Drive::Nbd { socket, .. } if socket.to_string_lossy().contains("disks")),
        "{drives:?}"
    );
    written_through_export(&bench, 1, (1 << 20) + (256 << 10), 0x99);

    bench.host.heal(Act::SwitchDrive);
    daemon.reprotect(NAME, false, false).unwrap();
    wait_for_jobs(&daemon);
    assert_eq!(bench.last_job().state, JobState::Succeeded, "{:?}", bench.last_job().error);
    let machine = bench.machine();
    let vault = bench.deployment.vault_at(standby_lifecycle::Site::Primary).open().unwrap();
    let restored = bench._dir.path().join("disk1.restored");
    let latest = standby_vault::journal::JournalTarget::Latest;
    standby_vault::journal::restore_journal(&vault, &machine.disks[1].vault_disk, latest, &restored, true).unwrap();
    let bytes = std::fs::read(&restored).unwrap();
    let at = |offset: usize| &bytes[offset..offset + 65536];
    assert!(at(1 << 20).iter().all(|&b| b == 0x77), "the write before the failed attempt is missing");
    assert!(at((1 << 20) + (256 << 10)).iter().all(|&b| b == 0x99), "the write in between never reached the replica");
}

/// Refusals come before any job: nothing is recorded, nothing changes,
/// and each names what is wrong with its own error code.
#[test]
fn refusals_record_nothing_and_change_nothing() {
    let bench = Bench::new();
    // Protect is held at its initial replication until `release` exists.
    let release = bench._dir.path().join("release");
    let hooks =
        Hooks { stall_at: Some("protect/2/60000".into()), stall_until: Some(release.clone()), ..Hooks::default() };
    let daemon = bench.daemon(hooks);
    let refused = |what: &str, result: Result<(), ControlError>, code: standby_api::ErrorCode| {
        let jobs = bench.deployment.state.jobs().unwrap().len();
        let error = result.err().unwrap_or_else(|| panic!("{what} was not refused"));
        assert_eq!(error.code(), code, "{what}: {error}");
        assert_eq!(bench.deployment.state.jobs().unwrap().len(), jobs, "{what}: a job was recorded");
    };
    use standby_api::ErrorCode::{BadRequest, Conflict, NotFound, TransitionRefused};
    refused("protect of an unknown machine", started(daemon.protect("db", None, None)), NotFound);
    refused("failover while unprotected", started(daemon.failover(NAME, None, true)), TransitionRefused);
    refused("stop while stopped", started(daemon.stop(NAME, false, None)), Conflict);
    daemon.start(NAME).unwrap();
    refused("a second start", started(daemon.start(NAME)), Conflict);
    daemon.protect(NAME, None, None).unwrap();
    while bench.deployment.state.job(bench.last_job().id).unwrap().steps[2].state != StepState::Running {
        std::thread::sleep(Duration::from_millis(10));
    }
    refused("a stop while protect runs", started(daemon.stop(NAME, false, None)), Conflict);
    refused("a drill while protect runs", started(daemon.test_failover(NAME, None)), TransitionRefused);
    std::fs::write(&release, b"").unwrap();
    wait_for_jobs(&daemon);
    refused("a point that is no point", started(daemon.test_failover(NAME, Some("job-9999".into()))), BadRequest);
    let before_any = Some("2000-01-01T00:00:00Z".to_string());
    refused("a time before any point", started(daemon.test_failover(NAME, before_any)), BadRequest);
    assert_eq!(bench.machine().state, State::Protected);
    assert_eq!(bench.running(), vec![Instance::Primary]);
    check_what_runs(&bench, "after the refusals");
}

/// A guest that ignores the power button is forced off, and says so; one
/// that stopped by itself is found stopped, and a failover says the source
/// was not running.
#[test]
fn stops_say_how_the_guest_went() {
    let bench = Bench::new();
    let daemon = bench.daemon(Hooks::default());
    daemon.start(NAME).unwrap();
    bench.host.ignore_power_button(&instance(NAME, Instance::Primary));
    let stopped = daemon.stop(NAME, false, None).unwrap();
    assert_eq!(stopped.stopped, "forced after the guest ignored the power button");
    daemon.start(NAME).unwrap();
    daemon.protect(NAME, None, None).unwrap();
    wait_for_jobs(&daemon);
    bench.host.crash_machine(&instance(NAME, Instance::Primary));
    daemon.failover(NAME, None, true).unwrap();
    wait_for_jobs(&daemon);
    let job = bench.last_job();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert_eq!(job.steps[1].detail, "the source was not running", "{:?}", job.steps);
    assert_eq!(bench.running(), vec![Instance::Recovery]);
}

/// The Site boundary holds (ARCHITECTURE.md): no job reaches QEMU, an
/// agent process, a guest agent or a file except through a site. The
/// jobs' sources, their tests aside, name none of them.
#[test]
fn jobs_reach_qemu_processes_and_files_only_through_a_site() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon");
    let forbidden = ["std::fs", "Qemu::", "Agent::", "GuestAgent", "Command::new", "libc::kill"];
    let mut checked = 0;
    let mut files: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|entry| entry.unwrap().path()).collect();
    files.push(folder.with_extension("rs"));
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "simulated.rs" {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        // The unit tests at the end of a file are not jobs.
        let code = source.split("#[cfg(test)]\nmod tests").next().unwrap();
        // `serve` (and `serve_agent`) make the daemon's own socket and pid file.
        let mut in_serve = false;
        for (number, line) in code.lines().enumerate() {
            let serving = line.starts_with("pub fn serve(") || line.starts_with("fn serve_agent(");
            in_serve = (in_serve || serving) && line != "}";
            if in_serve {
                continue;
            }
            let line = line.split("//").next().unwrap();
            // The test hooks' SIGKILL is the daemon ending itself, not a job's act.
            if name == "engine.rs" && line.contains("libc::kill(libc::getpid()") {
                continue;
            }
            for word in forbidden {
                assert!(!line.contains(word), "{name}:{}: a job uses {word}: {line}", number + 1);
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} files read in {}", folder.display());
}

/// A job's subject may be a group (or a plan): it claims every machine of
/// it at once, a job on any of them meanwhile is refused naming it, and
/// the record says what it acted on.
#[test]
fn a_job_on_a_group_holds_all_its_machines() {
    use standby_lifecycle::job::{JobKind, JobOrigin, Subject};
    let bench = Bench::new();
    let daemon = bench.daemon(Hooks::default());
    let group = Subject::Group("shop".into());
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let kind = JobKind::Lifecycle(Command::Failover);
    let started = daemon
        .spawn_job_on(&bench.deployment, &group, &[NAME, "db"], kind, JobOrigin::Operator, &["hold"], move |_, job| {
            job.run("hold", || {
                wait.lock().unwrap().recv().unwrap();
                Ok(((), "held".to_string()))
            })
        })
        .unwrap();
    assert_eq!(started.machine, "shop");
    assert_eq!(daemon.claims.holder("db"), Some(started.job));
    let busy = daemon.start(NAME).expect_err("web is held by the group's job");
    assert!(busy.to_string().contains(&format!("busy with job {}", started.job)), "{busy}");
    assert_eq!(bench.deployment.state.jobs().unwrap().len(), 1, "the refused start left a job");
    go.send(()).unwrap();
    wait_for_jobs(&daemon);
    let job = bench.deployment.state.job(started.job).unwrap();
    assert_eq!((job.subject, job.state), (group, JobState::Succeeded));
    assert!(daemon.claims.held().is_empty());
}

/// `cancel` while a failover runs, at each of its steps (held there until
/// the cancel arrives): the failover stops before its next act and rolls
/// back, the cancel job says where, and the machine is protected at its
/// source, running (started again when the failover had shut it down),
/// with no recovery VM and no export left.
#[test]
fn a_failover_cancelled_at_any_step_is_rolled_back() {
    for step in 1..6 {
        let context = format!("cancelled at step {step}");
        let bench = Bench::new();
        journey_to(&bench, &bench.daemon(Hooks::default()), "test-failover");
        let hooks = Hooks { stall_at: Some(format!("failover/{step}/60000")), ..Hooks::default() };
        let daemon = bench.daemon(hooks);
        let failover = daemon.failover(NAME, None, true).unwrap();
        let running = |job: &crate::Job| job.steps[step].state != StepState::Pending;
        let deadline = Instant::now() + JOB_DEADLINE;
        while !running(&bench.deployment.state.job(failover.job).unwrap()) {
            assert!(Instant::now() < deadline, "{context}: the failover never reached it");
            std::thread::sleep(Duration::from_millis(5));
        }
        let cancel = daemon.cancel(NAME).unwrap();
        wait_for_jobs(&daemon);
        let failed = bench.deployment.state.job(failover.job).unwrap();
        assert_eq!(failed.state, JobState::Failed, "{context}");
        let cancelled = bench.deployment.state.job(cancel.job).unwrap();
        assert_eq!(cancelled.state, JobState::Succeeded, "{context}: {:?}", cancelled.error);
        let at = format!("cancelled by `standby cancel` at '{}'", failed.steps[step].name);
        assert!(cancelled.steps[0].detail.contains(&at), "{context}: {}", cancelled.steps[0].detail);
        let machine = bench.machine();
        assert_eq!((machine.state, machine.active_site), (State::Protected, standby_lifecycle::Site::Primary));
        assert_eq!(bench.running(), vec![Instance::Primary], "{context}");
        check_what_runs(&bench, &context);
        let booted = bench.host.journal.lock().unwrap().iter().any(|act| act == "Launch web@recovery");
        assert!(!booted, "{context}: the recovery VM was booted");
    }
}

/// A replication group on the simulated site: a point is made in every
/// disk of both machines, a drill of one machine starts at the group's
/// point, and a member whose splitter is gone holds the next point back
/// and is named; a bad group name, an unknown group and a group point of
/// a machine in no group are refused.
#[test]
fn a_group_makes_points_in_every_disk_and_names_the_member_that_held_one_back() {
    let bench = bench_with_db();
    let daemon = bench.daemon(Hooks::default());
    let refused = daemon.protect(NAME, None, Some("a:b".into())).unwrap_err();
    assert!(refused.to_string().contains("group name may only hold"), "{refused}");
    daemon.protect(NAME, None, Some("shop".into())).unwrap();
    daemon.protect("db", None, Some("shop".into())).unwrap();
    wait_for_jobs(&daemon);
    let members: Vec<crate::Machine> = bench.deployment.state.machines().unwrap();
    assert!(members.iter().all(|m| m.state == State::Protected && m.group.as_deref() == Some("shop")));

    daemon.group_tick(&bench.deployment, "shop", &members);
    let view = daemon.group("shop").unwrap();
    let attempt = view.last_attempt.clone().expect("an attempt");
    assert!(attempt.made && attempt.held_back.is_empty(), "{attempt:?}");
    assert_eq!(view.machines, vec!["db".to_string(), NAME.to_string()]);
    let deadline = Instant::now() + JOB_DEADLINE;
    let latest = loop {
        if let Some(latest) = daemon.group("shop").unwrap().latest {
            break latest;
        }
        assert!(Instant::now() < deadline, "the group's point never reached every disk's journal");
        std::thread::sleep(Duration::from_millis(200));
    };
    daemon.test_failover(NAME, Some("latest-group".into())).unwrap();
    wait_for_jobs(&daemon);
    let drill = bench.last_job();
    assert_eq!(drill.state, JobState::Succeeded, "{:?}", drill.error);
    let said = format!("{:?}", drill.steps);
    assert!(said.contains(&format!("group 'shop' point {}", latest.id)), "{said}");

    let db = bench.deployment.state.machine("db").unwrap();
    let run_dir = super::protection::splitters_dir(&bench.deployment);
    assert!(bench.host.stop_splitter(&db.disks[0].vault_disk, &run_dir).unwrap());
    // Not due yet: the next tick makes none; once due, it is held back.
    std::thread::sleep(Duration::from_secs(5));
    daemon.group_tick(&bench.deployment, "shop", &members);
    let view = daemon.group("shop").unwrap();
    let attempt = view.last_attempt.expect("an attempt");
    assert!(!attempt.made, "{attempt:?}");
    assert_eq!(attempt.held_back.len(), 1, "{attempt:?}");
    assert_eq!(attempt.held_back[0].machine, "db");
    assert!(attempt.held_back[0].problem.contains("not running"), "{attempt:?}");
    assert_eq!((view.points_made, view.points_not_made), (1, 1));
    assert_eq!(view.latest.map(|p| p.id), Some(latest.id), "the group's points keep");

    let unknown = daemon.group("nope").unwrap_err();
    assert_eq!(unknown.code(), standby_api::ErrorCode::NotFound, "{unknown}");
    assert!(unknown.to_string().contains("known: shop"), "{unknown}");
}

/// The bench with a second machine, `db` (one disk).
fn bench_with_db() -> Bench {
    let mut bench = Bench::new();
    let source = bench._dir.path().join("db.raw");
    std::fs::write(&source, vec![0x3c_u8; 1 << 20]).unwrap();
    let definition = MachineDefinition { name: "db".into(), ..bench.machine().definition };
    bench.deployment.add_machine(&definition, &[source], standby_lifecycle::Site::Primary).unwrap();
    bench
}

/// `web` and `db` running, protected in group `shop`, with a point of the
/// group in every disk's journal; returns its id.
fn running_group(bench: &Bench, daemon: &Arc<Daemon>) -> u64 {
    for name in [NAME, "db"] {
        daemon.start(name).unwrap();
        daemon.protect(name, None, Some("shop".into())).unwrap();
    }
    wait_for_jobs(daemon);
    let members = bench.deployment.state.machines().unwrap();
    assert!(members.iter().all(|m| m.state == State::Protected), "{members:?}");
    daemon.group_tick(&bench.deployment, "shop", &members);
    let deadline = Instant::now() + JOB_DEADLINE;
    loop {
        if let Some(latest) = daemon.group("shop").unwrap().latest {
            return latest.id;
        }
        assert!(Instant::now() < deadline, "the group's point never reached every disk's journal");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The newest job of group `shop`.
fn group_job(bench: &Bench) -> crate::Job {
    let shop = standby_lifecycle::job::Subject::Group("shop".into());
    bench.deployment.state.jobs().unwrap().into_iter().find(|job| job.subject == shop).expect("a job of the group")
}

/// Both machines in `state`, each recorded at `point` (its description).
fn both(bench: &Bench, state: State, point: impl Fn(&crate::Machine) -> Option<String>) -> Vec<Option<String>> {
    [NAME, "db"]
        .into_iter()
        .map(|name| {
            let machine = bench.deployment.state.machine(name).unwrap();
            assert_eq!(machine.state, state, "{name}");
            point(&machine)
        })
        .collect()
}

/// A lifecycle command on one machine of a group acts on the group: one
/// job of the group with a part per machine, every machine from the same
/// group point; a planned failover whose one part fails before the point
/// is chosen moves neither machine.
#[test]
fn a_groups_machines_move_together_from_one_point_or_not_at_all() {
    let bench = bench_with_db();
    let daemon = bench.daemon(Hooks::default());
    let id = running_group(&bench, &daemon);
    let at = |described: Option<String>| described.unwrap_or_default();
    let point = format!("group 'shop' point {id}");

    daemon.test_failover("db", None).unwrap();
    wait_for_jobs(&daemon);
    let job = group_job(&bench);
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let parts: Vec<&str> = job.steps.iter().map(|step| step.name.as_str()).collect();
    assert_eq!(parts, vec!["db", NAME]);
    assert!(job.steps.iter().all(|step| step.detail.ends_with("succeeded")), "{:?}", job.steps);
    let drills = both(&bench, State::TestFailover, |m| m.details.drill.as_ref().map(|d| d.point.described.clone()));
    assert!(drills.into_iter().all(|drill| at(drill).starts_with(&point)), "every drill at {point}");
    daemon.cleanup_test_failover(NAME).unwrap();
    wait_for_jobs(&daemon);
    both(&bench, State::Protected, |_| None);

    // A planned move needs every source down: db's does not go.
    bench.host.fail(Act::Stop, "db@primary", "the power button is stuck");
    daemon.planned_failover(NAME, false).unwrap();
    wait_for_jobs(&daemon);
    let job = group_job(&bench);
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.unwrap_or_default();
    assert!(error.contains("db:") && error.contains("power button is stuck"), "{error}");
    assert!(error.contains(&format!("{NAME}: ")) && error.contains("group 'shop' does not move"), "{error}");
    both(&bench, State::Protected, |_| None);

    // Unplanned with the sources left running (not drained): one group point
    // for both. (With every source shut down and drained each machine's
    // latest is taken: `group_jobs`' tests, `tests/two_hosts.rs`.)
    bench.host.heal(Act::Stop);
    daemon.failover("db", None, false).unwrap();
    wait_for_jobs(&daemon);
    let job = group_job(&bench);
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let moved = both(&bench, State::FailedOver, |m| {
        m.details.failover.as_ref().and_then(|f| f.point.as_ref()).map(|p| p.described.clone())
    });
    let ids: Vec<String> = moved.into_iter().map(at).collect();
    assert!(ids.iter().all(|described| described.starts_with("group 'shop' point ")), "{ids:?}");
    let id_of = |described: &str| described.split_whitespace().nth(3).map(str::to_string);
    assert_eq!(id_of(&ids[0]), id_of(&ids[1]), "one point for both: {ids:?}");
    daemon.commit(NAME).unwrap();
    wait_for_jobs(&daemon);
    both(&bench, State::Committed, |_| None);
}

/// Plan `shop` kept: group 1 `database` (db) with a script before and a
/// manual step after, group 2 `app` (web).
fn keep_plan(bench: &Bench, script_body: &str) -> std::path::PathBuf {
    let folder = bench._dir.path().join("plans");
    std::fs::create_dir_all(&folder).unwrap();
    let script = folder.join("fence.sh");
    std::fs::write(&script, script_body).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let source = r#"name = "shop"
[[groups]]
name = "database"
machines = ["db"]
pre = [{ script = "fence.sh", timeout = "30s" }]
post = [{ manual = "Check that the database takes writes" }]
[[groups]]
name = "app"
machines = ["web"]
[probes.db]
command = "test \"$STANDBY_INSTANCE\" = db@drill -o \"$STANDBY_INSTANCE\" = db@recovery"
timeout = "20s"
"#;
    bench.deployment.state.add_plan("shop", &stored_plan(source, &folder)).unwrap();
    script
}

/// Plan `shop` of `source` as kept, its scripts in `folder`.
fn stored_plan(source: &str, folder: &Path) -> crate::StoredPlan {
    crate::StoredPlan {
        name: "shop".into(),
        file: "shop.toml".into(),
        base: folder.to_path_buf(),
        source: source.into(),
        created: String::new(),
        run: None,
        drill_every: None,
        last_drill: None,
    }
}

/// The newest job of plan `shop`, once it has ended or waits at a manual step.
fn plan_job_settled(bench: &Bench) -> crate::Job {
    plan_job_when(bench, true)
}

/// The newest job of plan `shop` once it has ended.
fn plan_job_ended(bench: &Bench) -> crate::Job {
    plan_job_when(bench, false)
}

fn plan_job_when(bench: &Bench, or_waiting: bool) -> crate::Job {
    let shop = standby_lifecycle::job::Subject::Plan("shop".into());
    let deadline = Instant::now() + JOB_DEADLINE;
    loop {
        let job = bench.deployment.state.jobs().unwrap().into_iter().find(|job| job.subject == shop);
        if let Some(job) = job {
            let waiting = job.steps.iter().any(|s| s.state == StepState::Running && s.detail.starts_with("waiting"));
            if job.state != JobState::Running || (or_waiting && waiting) {
                return job;
            }
        }
        assert!(Instant::now() < deadline, "the plan's job never settled");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The id of machine `name`'s newest job.
fn newest_job_of(bench: &Bench, name: &str) -> i64 {
    let machine = standby_lifecycle::job::Subject::Machine(name.into());
    bench.deployment.state.jobs().unwrap().into_iter().find(|job| job.subject == machine).expect("a job").id
}

/// A plan's drill: its failing script stops it with nothing moved; fixed
/// and resumed, the script runs with the plan's environment, the database
/// group comes up, the manual step waits for `plan resume`, then the app
/// group; the cleanup goes in reverse; a plan failover cancelled while it
/// waits at its manual step undoes what it did.
#[test]
fn a_plan_runs_its_groups_in_order_stops_at_a_failed_step_and_resumes() {
    use super::plan_jobs::PlanAsk;
    let bench = bench_with_db();
    let daemon = bench.daemon(Hooks::default());
    for name in [NAME, "db"] {
        daemon.start(name).unwrap();
        daemon.protect(name, None, None).unwrap();
    }
    wait_for_jobs(&daemon);
    let seen = bench._dir.path().join("seen");
    let script = keep_plan(&bench, "#!/bin/sh\necho fencing failed >&2\nexit 4\n");

    daemon.plan_command("shop", Command::TestFailover, PlanAsk::default()).unwrap();
    let job = plan_job_settled(&bench);
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.as_deref().unwrap_or("").contains("exit 4"), "{:?}", job.error);
    assert_eq!(job.steps[0].state, StepState::Failed);
    assert!(job.steps[0].detail.contains("fencing failed"), "{:?}", job.steps[0]);
    assert!(job.steps[1..].iter().all(|s| s.state == StepState::Pending), "{:?}", job.steps);
    both(&bench, State::Protected, |_| None);

    std::fs::write(&script, format!("#!/bin/sh\nenv | grep ^STANDBY_ | sort > {}\n", seen.display())).unwrap();
    daemon.plan_resume("shop").unwrap();
    let job = plan_job_settled(&bench);
    assert_eq!(job.origin, standby_lifecycle::job::JobOrigin::Resumed);
    assert_eq!(job.state, JobState::Running, "{:?}", job.error);
    let names: Vec<&str> = job.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "group 1 (database) before 1: script fence.sh",
            "group 1 (database): db",
            "group 1 (database): health probes",
            "group 1 (database) after 1: manual step",
            "group 2 (app): web",
            "the plan's RTO",
        ]
    );
    assert!(job.steps[2].detail.starts_with("db: passed, RTO "), "{:?}", job.steps[2]);
    assert!(job.steps[3].detail.contains("Check that the database takes writes"), "{:?}", job.steps[3]);
    assert_eq!(bench.deployment.state.machine("db").unwrap().state, State::TestFailover);
    assert_eq!(bench.machine().state, State::Protected, "the app group waits for the manual step");
    let environment = std::fs::read_to_string(&seen).unwrap();
    assert!(environment.contains("STANDBY_PLAN=shop\n") && environment.contains("STANDBY_GROUP=database\n"));
    assert!(environment.contains("STANDBY_DIRECTION=primary-to-recovery\n"), "{environment}");
    daemon.plan_resume("shop").unwrap();
    let job = plan_job_ended(&bench);
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert!(job.steps[5].detail.starts_with("RTO ") && job.steps[5].detail.contains("(db "), "{:?}", job.steps[5]);
    both(&bench, State::TestFailover, |_| None);
    assert!(newest_job_of(&bench, "db") < newest_job_of(&bench, NAME), "db came up before web");

    daemon.plan_command("shop", Command::CleanupTestFailover, PlanAsk::default()).unwrap();
    let job = plan_job_ended(&bench);
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert_eq!(job.steps[0].name, "group 2 (app): web", "down in reverse");
    both(&bench, State::Protected, |_| None);
    assert!(newest_job_of(&bench, NAME) < newest_job_of(&bench, "db"), "web went before db");

    daemon.plan_command("shop", Command::Failover, PlanAsk { shutdown_source: true, ..PlanAsk::default() }).unwrap();
    let job = plan_job_settled(&bench);
    assert_eq!(job.state, JobState::Running);
    assert_eq!(bench.deployment.state.machine("db").unwrap().state, State::FailedOver);
    daemon.plan_command("shop", Command::Cancel, PlanAsk::default()).unwrap();
    wait_for_jobs(&daemon);
    let job = plan_job_ended(&bench);
    assert_eq!(job.state, JobState::Succeeded, "the cancel: {:?}", job.error);
    assert!(job.steps.iter().any(|s| s.detail.contains("db: job")), "{:?}", job.steps);
    both(&bench, State::Protected, |_| None);
}

/// A plan's failover whose daemon dies (simulated `kill -9`) as the first
/// group's machine chooses its point: the next daemon rolls that
/// machine's failover back, then resumes the plan, which fails both
/// groups over in order.
#[test]
fn a_plan_failover_cut_by_a_crash_is_resumed_by_the_next_daemon() {
    use super::plan_jobs::PlanAsk;
    let bench = bench_with_db();
    let source = r#"name = "shop"
[[groups]]
machines = ["db"]
[[groups]]
machines = ["web"]
"#;
    bench.deployment.state.add_plan("shop", &stored_plan(source, bench._dir.path())).unwrap();
    let daemon = bench.daemon(Hooks::default());
    for name in [NAME, "db"] {
        daemon.start(name).unwrap();
        daemon.protect(name, None, None).unwrap();
    }
    wait_for_jobs(&daemon);
    drop(daemon);
    let hooks = Hooks { crash_at: Some("failover/3/0".into()), crash: Crash::Unwind, ..Hooks::default() };
    let daemon = bench.daemon(hooks);
    daemon.plan_command("shop", Command::Failover, PlanAsk { shutdown_source: true, ..PlanAsk::default() }).unwrap();
    wait_for_jobs(&daemon);
    let shop = standby_lifecycle::job::Subject::Plan("shop".into());
    let cut = bench.deployment.state.jobs().unwrap().into_iter().find(|job| job.subject == shop).unwrap();
    assert_eq!(cut.state, JobState::Running, "the plan's job was cut where it was: {:?}", cut.steps);
    assert_eq!(bench.deployment.state.machine("db").unwrap().state, State::FailoverInProgress);
    drop(daemon);

    let next = bench.daemon(Hooks::default());
    next.take_over(&bench.deployment).unwrap();
    let deadline = Instant::now() + JOB_DEADLINE;
    let resumed = loop {
        let newest = bench.deployment.state.jobs().unwrap().into_iter().find(|job| job.subject == shop).unwrap();
        if newest.id != cut.id && newest.state != JobState::Running {
            break newest;
        }
        assert!(Instant::now() < deadline, "the plan was not resumed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(resumed.origin, standby_lifecycle::job::JobOrigin::Resumed);
    assert_eq!(resumed.state, JobState::Succeeded, "{:?}", resumed.error);
    assert_eq!(bench.deployment.state.job(cut.id).unwrap().state, JobState::Interrupted);
    both(&bench, State::FailedOver, |_| None);
    assert!(newest_job_of(&bench, "db") < newest_job_of(&bench, NAME), "db came up before web");
}

/// A plan's drill removes itself once measured, also when a probe did not
/// pass; the plan keeps how it went (RTO per machine and for the plan); a
/// schedule shorter than a minute is refused.
#[test]
fn a_plan_drill_is_measured_removed_and_kept_with_the_plan() {
    use super::plan_jobs::PlanAsk;
    let bench = bench_with_db();
    let marker = bench._dir.path().join("web-answers");
    let source = format!(
        r#"name = "shop"
[[groups]]
machines = ["db"]
[[groups]]
machines = ["web"]
[probes.web]
command = "test -e {}"
timeout = "2s"
"#,
        marker.display()
    );
    bench.deployment.state.add_plan("shop", &stored_plan(&source, bench._dir.path())).unwrap();
    let daemon = bench.daemon(Hooks::default());
    for name in [NAME, "db"] {
        daemon.protect(name, None, None).unwrap();
    }
    wait_for_jobs(&daemon);
    let drill = PlanAsk { cleanup: true, ..PlanAsk::default() };
    let last_drill = || crate::plans::last_drill(&bench.deployment.state.plan("shop").unwrap()).expect("a drill kept");

    daemon.plan_command("shop", Command::TestFailover, drill.clone()).unwrap();
    let job = plan_job_ended(&bench);
    assert_eq!(job.state, JobState::Failed);
    let names: Vec<&str> = job.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names[names.len() - 2..],
        ["remove the drill of group 2 (group 2)", "remove the drill of group 1 (group 1)"]
    );
    assert!(job.steps.iter().rev().take(2).all(|s| s.state == StepState::Done), "{:?}", job.steps);
    both(&bench, State::Protected, |_| None);
    let failed = last_drill();
    assert!(!failed.passed && failed.rto_seconds.is_none(), "{failed:?}");
    assert!(failed.error.as_deref().unwrap_or("").contains("its probe did not pass within 2 s"), "{failed:?}");

    std::fs::write(&marker, b"").unwrap();
    daemon.plan_command("shop", Command::TestFailover, drill).unwrap();
    let job = plan_job_ended(&bench);
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    both(&bench, State::Protected, |_| None);
    let passed = last_drill();
    assert!(passed.passed && passed.job == job.id, "{passed:?}");
    assert_eq!(passed.machines.iter().map(|m| m.machine.as_str()).collect::<Vec<_>>(), vec![NAME]);
    assert_eq!(passed.rto_seconds, Some(passed.machines[0].rto_seconds));

    let short = standby_api::PlanSchedule { every_seconds: Some(10) };
    let refused = daemon.schedule_drills("shop", short).unwrap_err();
    assert!(refused.to_string().contains("shorter than a drill may be apart (60 s)"), "{refused}");
    let weekly = daemon.schedule_drills("shop", standby_api::PlanSchedule { every_seconds: Some(7 * 86400) }).unwrap();
    assert_eq!(weekly.drill_every_seconds, Some(7 * 86400));
    assert_eq!(weekly.last_drill.map(|d| d.job), Some(job.id));
}
