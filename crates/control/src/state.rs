//! The deployment's state in SQLite (WAL, so the daemon and the command
//! line can both use it). Schema (version 1, and what later versions added):
//!
//! ```sql
//! meta(key PRIMARY KEY, value)                          -- schema_version
//! policies(name PRIMARY KEY, rpo_threshold_seconds, retention_seconds,
//!          app_consistent_seconds, bookmark_seconds)
//! machines(name PRIMARY KEY, cpus, memory_mib, kernel, initrd, append, nics (JSON),
//!          state, active_site, policy, generation, created)
//! disks(machine, position, vault_disk, primary_path, recovery_path, PRIMARY KEY (machine, position))
//! jobs(id INTEGER PRIMARY KEY, machine, command, state, steps (JSON), error, created, updated)   -- version 2
//! machines.details (JSON: the running drill, the failover's point and source, …)                -- version 3
//! jobs.kind, jobs.origin (what the job does and how it came to be: operator, resumed, rolled-back) -- version 4
//! jobs.subject (what `jobs.machine` names: a machine, a group or a plan; NULL is a machine)         -- version 5
//! tokens(hash PRIMARY KEY, role, expires, created): operators' and join tokens, by their hash      -- version 6
//! hosts(site PRIMARY KEY, address, joined): the hosts joined to a control plane                    -- version 6
//! tokens.name, audit(…)                                                                            -- version 7
//! alerts(…)                                                                                        -- version 8
//! machines.replication_group: the group whose points the machine's are (set while protected)     -- version 9
//! plans(name PRIMARY KEY, file, base, source, created, run, drill_every, last_drill): recovery plans
//!   as their TOML was given, what their last job was asked (JSON), their drills' schedule (seconds)
//!   and last drill (JSON)                                                                           -- version 10
//! ```
//!
//! `jobs.command` is the job as shown (its kind, and for a job a restarted
//! daemon took up, how); rows written before version 4 have no kind, which
//! is read from that text (`kind_of_command`).
//!
//! A database of an older version is migrated when opened (in one
//! transaction); a newer one is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use standby_lifecycle::job::{JobKind, JobOrigin, JobState, StepState, Subject};
use standby_lifecycle::{Site, State as MachineState, UnknownName};

use crate::error::ControlError;
use crate::machine::{DiskDefinition, Machine, MachineDefinition};
use crate::records::MachineRecords;

const SCHEMA_VERSION: i64 = 10;

/// How long a statement waits for another connection's write to end
/// (the daemon and a command line share the database).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Migrations from each version to the next: `MIGRATIONS[v - 1]` takes a
/// database from version v to v + 1.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    machine TEXT NOT NULL,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    steps TEXT NOT NULL,
    error TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
",
    "
ALTER TABLE machines ADD COLUMN details TEXT NOT NULL DEFAULT '{}';
",
    "
ALTER TABLE jobs ADD COLUMN kind TEXT;
ALTER TABLE jobs ADD COLUMN origin TEXT;
",
    "
ALTER TABLE jobs ADD COLUMN subject TEXT;
",
    "
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    expires TEXT,
    created TEXT NOT NULL
);
CREATE TABLE hosts (
    site TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    joined TEXT NOT NULL
);
",
    "
ALTER TABLE tokens ADD COLUMN name TEXT;
UPDATE tokens SET name = role || '-' || substr(hash, 1, 12);
CREATE UNIQUE INDEX tokens_by_name ON tokens (name);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    request TEXT,
    status INTEGER,
    code TEXT
);
",
    "
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    raised TEXT NOT NULL,
    cleared TEXT
);
CREATE UNIQUE INDEX alerts_standing ON alerts (kind, subject) WHERE cleared IS NULL;
",
    "
ALTER TABLE machines ADD COLUMN replication_group TEXT;
",
    "
CREATE TABLE plans (
    name TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    base TEXT NOT NULL,
    source TEXT NOT NULL,
    created TEXT NOT NULL,
    run TEXT,
    drill_every INTEGER,
    last_drill TEXT
);
",
];
const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION - 1);

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE policies (
    name TEXT PRIMARY KEY,
    rpo_threshold_seconds INTEGER NOT NULL,
    retention_seconds INTEGER NOT NULL,
    app_consistent_seconds INTEGER NOT NULL,
    bookmark_seconds INTEGER NOT NULL
);
CREATE TABLE machines (
    name TEXT PRIMARY KEY,
    cpus INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    kernel TEXT,
    initrd TEXT,
    append TEXT,
    nics TEXT NOT NULL,
    state TEXT NOT NULL,
    active_site TEXT NOT NULL,
    policy TEXT,
    generation INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE disks (
    machine TEXT NOT NULL REFERENCES machines(name) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    vault_disk TEXT NOT NULL,
    primary_path TEXT NOT NULL,
    recovery_path TEXT NOT NULL,
    PRIMARY KEY (machine, position)
);
";

pub(crate) fn machine_exists(name: &str) -> ControlError {
    ControlError::Conflict(format!("a machine named '{name}' already exists"))
        .with_hint(standby_api::Hint::ListMachines)
}

pub use standby_api::{Job, Policy, Step};

/// A recovery plan as kept: its TOML as given, the file's name (for its
/// errors' lines) and folder (its scripts' relative paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPlan {
    pub name: String,
    pub file: String,
    pub base: PathBuf,
    pub source: String,
    pub created: String,
    /// What its last job was asked (JSON), if it ran.
    pub run: Option<String>,
    /// How often the daemon drills it, in seconds.
    pub drill_every: Option<u64>,
    /// Its last drill (JSON `standby_api::PlanDrill`).
    pub last_drill: Option<String>,
}

/// RPO threshold 15 min, retention 24 h, app-consistent every 60 min,
/// bookmarks every 5 s.
pub fn default_policy() -> Policy {
    Policy {
        name: "default".into(),
        rpo_threshold_seconds: 15 * 60,
        retention_seconds: 24 * 3600,
        app_consistent_seconds: 3600,
        bookmark_seconds: 5,
    }
}

/// The longest interval a policy takes (100 years; the API's schema says so).
const INTERVAL_MAX_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// Checks a policy before it is recorded: a name that can be typed and
/// stored, every interval at least a second, bookmarks within retention.
pub fn check_policy(policy: &Policy) -> Result<(), ControlError> {
    let name = &policy.name;
    if crate::validate_machine_name(name).is_err() {
        return Err(ControlError::Refused(format!(
            "policy name {name:?} is not allowed: use 1 to 48 letters, digits, '.', '_' or '-'"
        )));
    }
    let intervals = [
        ("RPO threshold", policy.rpo_threshold_seconds),
        ("retention", policy.retention_seconds),
        ("app-consistent interval", policy.app_consistent_seconds),
        ("bookmark interval", policy.bookmark_seconds),
    ];
    for (what, seconds) in intervals {
        if seconds == 0 {
            return Err(ControlError::Refused(format!("policy '{name}': the {what} must be at least one second")));
        }
        if seconds > INTERVAL_MAX_SECONDS {
            return Err(ControlError::Refused(format!("policy '{name}': the {what} must be at most 100 years")));
        }
    }
    if policy.bookmark_seconds > policy.retention_seconds {
        return Err(ControlError::Refused(format!(
            "policy '{name}': the bookmark interval ({} s) is longer than the retention ({} s): no bookmark would be \
             kept",
            policy.bookmark_seconds, policy.retention_seconds
        )));
    }
    Ok(())
}

pub struct State {
    path: PathBuf,
    connection: Connection,
}

impl State {
    /// The database's file.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn create(path: &Path) -> Result<State, ControlError> {
        let state = State::connect(path)?;
        let policy = default_policy();
        state
            .connection
            .execute_batch(SCHEMA)
            .and_then(|()| state.connection.execute("INSERT INTO meta VALUES ('schema_version', '1')", []))
            .map_err(|e| state.error(e))?;
        let mut state = state;
        state.migrate(1)?;
        state.add_policy(&policy)?;
        Ok(state)
    }

    pub(crate) fn open(path: &Path) -> Result<State, ControlError> {
        if !path.is_file() {
            return Err(ControlError::Failed(format!(
                "the state database {} is missing; the deployment is damaged",
                path.display()
            )));
        }
        let state = State::connect(path)?;
        let version: Option<String> = state
            .connection
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0))
            .optional()
            .map_err(|e| state.error(e))?;
        let mut state = state;
        match version.as_deref().map(str::parse::<i64>) {
            Some(Ok(SCHEMA_VERSION)) => Ok(state),
            Some(Ok(older)) if (1..SCHEMA_VERSION).contains(&older) => {
                state.migrate(older)?;
                Ok(state)
            }
            Some(Ok(newer)) if newer > SCHEMA_VERSION => Err(ControlError::Refused(format!(
                "the state database {} is schema version {newer}, newer than this standby reads \
                 ({SCHEMA_VERSION}); upgrade standby",
                path.display()
            ))),
            _ => {
                Err(ControlError::Failed(format!("the state database {} has no known schema version", path.display())))
            }
        }
    }

    /// Brings the schema from `version` to [`SCHEMA_VERSION`], in one transaction.
    fn migrate(&mut self, version: i64) -> Result<(), ControlError> {
        self.migrate_to(version, SCHEMA_VERSION)
    }

    fn migrate_to(&mut self, version: i64, target: i64) -> Result<(), ControlError> {
        let path = self.path.clone();
        let error = |source| ControlError::State { path: path.clone(), source };
        let transaction = self.connection.transaction().map_err(error)?;
        for migration in &MIGRATIONS[(version - 1) as usize..(target - 1) as usize] {
            transaction.execute_batch(migration).map_err(error)?;
        }
        transaction
            .execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [target.to_string()])
            .map_err(error)?;
        transaction.commit().map_err(error)
    }

    fn connect(path: &Path) -> Result<State, ControlError> {
        let error = |source| ControlError::State { path: path.to_path_buf(), source };
        let connection = Connection::open(path).map_err(error)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(error)?;
        connection.pragma_update(None, "synchronous", "FULL").map_err(error)?;
        connection.pragma_update(None, "foreign_keys", "ON").map_err(error)?;
        Ok(State { path: path.to_path_buf(), connection })
    }

    /// A number that changes whenever another connection commits a change
    /// (SQLite's `PRAGMA data_version`): what was read through another
    /// connection before may no longer be true.
    pub(crate) fn data_version(&self) -> Result<i64, ControlError> {
        self.connection.query_row("PRAGMA data_version", [], |row| row.get(0)).map_err(|e| self.error(e))
    }

    fn error(&self, source: rusqlite::Error) -> ControlError {
        ControlError::State { path: self.path.clone(), source }
    }

    pub fn add_policy(&self, policy: &Policy) -> Result<(), ControlError> {
        check_policy(policy)?;
        let inserted = self
            .connection
            .execute(
                "INSERT OR IGNORE INTO policies VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    policy.name,
                    policy.rpo_threshold_seconds as i64,
                    policy.retention_seconds as i64,
                    policy.app_consistent_seconds as i64,
                    policy.bookmark_seconds as i64
                ],
            )
            .map_err(|e| self.error(e))?;
        if inserted == 0 {
            return Err(ControlError::Conflict(format!("a policy named '{}' already exists", policy.name)));
        }
        Ok(())
    }

    pub fn policies(&self) -> Result<Vec<Policy>, ControlError> {
        let mut statement = self
            .connection
            .prepare("SELECT name, rpo_threshold_seconds, retention_seconds, app_consistent_seconds, bookmark_seconds FROM policies ORDER BY name")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(Policy {
                    name: row.get(0)?,
                    rpo_threshold_seconds: row.get::<_, i64>(1)? as u64,
                    retention_seconds: row.get::<_, i64>(2)? as u64,
                    app_consistent_seconds: row.get::<_, i64>(3)? as u64,
                    bookmark_seconds: row.get::<_, i64>(4)? as u64,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    pub fn policy(&self, name: &str) -> Result<Policy, ControlError> {
        let policies = self.policies()?;
        let known: Vec<String> = policies.iter().map(|p| p.name.clone()).collect();
        policies
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ControlError::NotFound(format!("no policy named '{name}' (known: {})", known.join(", "))))
    }

    /// Sets a machine's lifecycle state and, when given, its policy (a
    /// machine without a policy is in no replication group either).
    pub fn set_machine_state(
        &self,
        name: &str,
        state: MachineState,
        policy: Option<Option<&str>>,
    ) -> Result<(), ControlError> {
        let changed = match policy {
            Some(policy) => self.connection.execute(
                "UPDATE machines SET state = ?1, policy = ?2, \
                 replication_group = CASE WHEN ?2 IS NULL THEN NULL ELSE replication_group END WHERE name = ?3",
                params![state.name(), policy, name],
            ),
            None => {
                self.connection.execute("UPDATE machines SET state = ?1 WHERE name = ?2", params![state.name(), name])
            }
        }
        .map_err(|e| self.error(e))?;
        if changed == 0 {
            return Err(ControlError::Failed(format!("machine '{name}' vanished from the state")));
        }
        #[cfg(test)]
        written::record(&self.path, name, state);
        Ok(())
    }

    /// Sets a machine's lifecycle state, policy and replication group at
    /// once (protect, in one statement: a restarted daemon resumes it with
    /// the group its splitters are started in).
    pub fn set_machine_protection(
        &self,
        name: &str,
        state: MachineState,
        policy: &str,
        group: Option<&str>,
    ) -> Result<(), ControlError> {
        let changed = self
            .connection
            .execute(
                "UPDATE machines SET state = ?1, policy = ?2, replication_group = ?3 WHERE name = ?4",
                params![state.name(), policy, group, name],
            )
            .map_err(|e| self.error(e))?;
        if changed == 0 {
            return Err(ControlError::Failed(format!("machine '{name}' vanished from the state")));
        }
        #[cfg(test)]
        written::record(&self.path, name, state);
        Ok(())
    }

    /// Records where a machine runs and its details (after a failover, a
    /// cancel, …) together with its state, in one statement.
    pub fn set_machine_placement(
        &self,
        name: &str,
        state: MachineState,
        active_site: Site,
        generation: u64,
        details: &MachineRecords,
    ) -> Result<(), ControlError> {
        let changed = self
            .connection
            .execute(
                "UPDATE machines SET state = ?1, active_site = ?2, generation = ?3, details = ?4 WHERE name = ?5",
                params![
                    state.name(),
                    active_site.name(),
                    generation as i64,
                    serde_json::to_string(details).expect("records serialise"),
                    name
                ],
            )
            .map_err(|e| self.error(e))?;
        if changed == 0 {
            return Err(ControlError::Failed(format!("machine '{name}' vanished from the state")));
        }
        #[cfg(test)]
        written::record(&self.path, name, state);
        Ok(())
    }

    /// Replaces machine `name`'s NIC specifications (stored resolved).
    pub fn set_machine_nics(&self, name: &str, nics: &[String]) -> Result<(), ControlError> {
        let changed = self
            .connection
            .execute(
                "UPDATE machines SET nics = ?1 WHERE name = ?2",
                params![serde_json::to_string(nics).expect("strings serialise"), name],
            )
            .map_err(|e| self.error(e))?;
        if changed == 0 {
            return Err(ControlError::Failed(format!("machine '{name}' vanished from the state")));
        }
        Ok(())
    }

    /// Moves disk `position` of machine `name` at `site` to another image path.
    pub fn set_disk_path(&self, name: &str, position: usize, site: Site, path: &Path) -> Result<(), ControlError> {
        let column = match site {
            Site::Primary => "primary_path",
            Site::Recovery => "recovery_path",
        };
        let changed = self
            .connection
            .execute(
                &format!("UPDATE disks SET {column} = ?1 WHERE machine = ?2 AND position = ?3"),
                params![path.display().to_string(), name, position as i64],
            )
            .map_err(|e| self.error(e))?;
        if changed == 0 {
            return Err(ControlError::Failed(format!("disk {position} of machine '{name}' vanished from the state")));
        }
        Ok(())
    }

    /// Records a new machine and its disks in one transaction.
    /// Records a machine, unprotected, running (when started) at `site`.
    pub fn add_machine(
        &mut self,
        definition: &MachineDefinition,
        disks: &[DiskDefinition],
        site: Site,
    ) -> Result<(), ControlError> {
        let path = self.path.clone();
        let error = |source| ControlError::State { path: path.clone(), source };
        let transaction = self.connection.transaction().map_err(error)?;
        let exists: bool = transaction
            .query_row("SELECT EXISTS (SELECT 1 FROM machines WHERE name = ?1)", [&definition.name], |row| row.get(0))
            .map_err(error)?;
        if exists {
            return Err(machine_exists(&definition.name));
        }
        transaction
            .execute(
                "INSERT INTO machines VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, 1, ?10, '{}', NULL)",
                params![
                    definition.name,
                    definition.cpus,
                    definition.memory_mib,
                    definition.kernel.as_ref().map(|p| p.display().to_string()),
                    definition.initrd.as_ref().map(|p| p.display().to_string()),
                    definition.append,
                    serde_json::to_string(&definition.nics).expect("strings serialise"),
                    MachineState::Unprotected.name(),
                    site.name(),
                    jiff::Timestamp::now().to_string(),
                ],
            )
            .map_err(error)?;
        for (position, disk) in disks.iter().enumerate() {
            transaction
                .execute(
                    "INSERT INTO disks VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        definition.name,
                        position as i64,
                        disk.vault_disk,
                        disk.primary_path.display().to_string(),
                        disk.recovery_path.display().to_string()
                    ],
                )
                .map_err(error)?;
        }
        transaction.commit().map_err(error)
    }

    pub fn machines(&self) -> Result<Vec<Machine>, ControlError> {
        self.machines_named(None)
    }

    /// Every machine, or the one named `name` (none if there is none).
    fn machines_named(&self, name: Option<&str>) -> Result<Vec<Machine>, ControlError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT name, cpus, memory_mib, kernel, initrd, append, nics, state, active_site, policy, generation, \
                 details, replication_group FROM machines WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([name], |row| {
                Ok(Machine {
                    definition: MachineDefinition {
                        name: row.get(0)?,
                        cpus: row.get(1)?,
                        memory_mib: row.get(2)?,
                        kernel: row.get::<_, Option<String>>(3)?.map(PathBuf::from),
                        initrd: row.get::<_, Option<String>>(4)?.map(PathBuf::from),
                        append: row.get(5)?,
                        nics: parse_json(row, 6)?,
                    },
                    state: parse_column(row, 7)?,
                    active_site: parse_column(row, 8)?,
                    policy: row.get(9)?,
                    generation: row.get::<_, i64>(10)? as u64,
                    details: parse_json(row, 11)?,
                    group: row.get(12)?,
                    disks: Vec::new(),
                })
            })
            .map_err(|e| self.error(e))?;
        let mut machines: Vec<Machine> = rows.collect::<Result<_, _>>().map_err(|e| self.error(e))?;
        let mut statement = self
            .connection
            .prepare("SELECT vault_disk, primary_path, recovery_path FROM disks WHERE machine = ?1 ORDER BY position")
            .map_err(|e| self.error(e))?;
        for machine in &mut machines {
            let disks = statement
                .query_map([&machine.definition.name], |row| {
                    Ok(DiskDefinition {
                        vault_disk: row.get(0)?,
                        primary_path: PathBuf::from(row.get::<_, String>(1)?),
                        recovery_path: PathBuf::from(row.get::<_, String>(2)?),
                    })
                })
                .map_err(|e| self.error(e))?;
            machine.disks = disks.collect::<Result<_, _>>().map_err(|e| self.error(e))?;
        }
        Ok(machines)
    }

    /// Keeps plan `name` as its file was given; a plan of that name already
    /// kept is a conflict.
    pub fn add_plan(&self, name: &str, plan: &StoredPlan) -> Result<(), ControlError> {
        let inserted = self
            .connection
            .execute(
                "INSERT OR IGNORE INTO plans VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, NULL)",
                params![name, plan.file, plan.base.to_string_lossy(), plan.source, jiff::Timestamp::now().to_string()],
            )
            .map_err(|e| self.error(e))?;
        if inserted == 0 {
            return Err(ControlError::Conflict(format!(
                "a plan named '{name}' exists; `standby plan delete {name}` first to replace it"
            )));
        }
        Ok(())
    }

    /// Every plan kept, by name.
    pub fn plans(&self) -> Result<Vec<StoredPlan>, ControlError> {
        let mut statement = self
            .connection
            .prepare("SELECT name, file, base, source, created, run, drill_every, last_drill FROM plans ORDER BY name")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(StoredPlan {
                    name: row.get(0)?,
                    file: row.get(1)?,
                    base: PathBuf::from(row.get::<_, String>(2)?),
                    source: row.get(3)?,
                    created: row.get(4)?,
                    run: row.get(5)?,
                    drill_every: row.get::<_, Option<i64>>(6)?.map(|seconds| seconds.max(0) as u64),
                    last_drill: row.get(7)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    pub fn plan(&self, name: &str) -> Result<StoredPlan, ControlError> {
        let plans = self.plans()?;
        let known: Vec<&str> = plans.iter().map(|plan| plan.name.as_str()).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        plans.iter().find(|plan| plan.name == name).cloned().ok_or_else(|| {
            ControlError::NotFound(format!(
                "no plan named '{name}' (known: {known}); `standby plan create FILE` adds one"
            ))
        })
    }

    /// Records what plan `name`'s last job was asked (JSON), for `resume`.
    pub fn set_plan_run(&self, name: &str, run: &str) -> Result<(), ControlError> {
        self.connection
            .execute("UPDATE plans SET run = ?1 WHERE name = ?2", params![run, name])
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Sets how often plan `name` is drilled (None: not by the daemon).
    pub fn set_plan_drill_every(&self, name: &str, seconds: Option<u64>) -> Result<(), ControlError> {
        self.plan(name)?;
        self.connection
            .execute("UPDATE plans SET drill_every = ?1 WHERE name = ?2", params![seconds.map(|s| s as i64), name])
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Records plan `name`'s last drill (JSON).
    pub fn set_plan_last_drill(&self, name: &str, drill: &str) -> Result<(), ControlError> {
        self.connection
            .execute("UPDATE plans SET last_drill = ?1 WHERE name = ?2", params![drill, name])
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub fn delete_plan(&self, name: &str) -> Result<(), ControlError> {
        self.plan(name)?;
        self.connection.execute("DELETE FROM plans WHERE name = ?1", [name]).map_err(|e| self.error(e))?;
        Ok(())
    }

    pub fn machine(&self, name: &str) -> Result<Machine, ControlError> {
        if let Some(machine) = self.machines_named(Some(name))?.pop() {
            return Ok(machine);
        }
        Err(ControlError::NotFound(format!("no machine named '{name}' ({})", self.known_machines()?))
            .with_hint(standby_api::Hint::AddMachine))
    }

    /// The machines there are, as an error naming an unknown one says them:
    /// every name while they are few, else how many.
    fn known_machines(&self) -> Result<String, ControlError> {
        const NAMED: usize = 20;
        let mut statement =
            self.connection.prepare("SELECT name FROM machines ORDER BY name").map_err(|e| self.error(e))?;
        let names: Vec<String> =
            statement.query_map([], |row| row.get(0)).and_then(|rows| rows.collect()).map_err(|e| self.error(e))?;
        Ok(match names.len() {
            0 => "known: none".to_string(),
            n if n <= NAMED => format!("known: {}", names.join(", ")),
            n => format!("{n} machines known; `standby machine list` names them"),
        })
    }
}

/// The kind and origin of a job recorded before schema version 4, from its
/// command as shown: "failover", "protect (resumed)", "cancel (resumed
/// after a daemon restart)", "machine start (owed by job 7, resumed …)".
fn kind_of_command(command: &str) -> Option<(JobKind, JobOrigin)> {
    let (name, how) = command.split_once(" (").unwrap_or((command, ""));
    if name == "machine start" && how.starts_with("owed") {
        return Some((JobKind::OwedStart, JobOrigin::Resumed));
    }
    let origin = match how {
        "" => JobOrigin::Operator,
        how if how.starts_with("rolled back") => JobOrigin::RolledBack,
        _ => JobOrigin::Resumed,
    };
    Some((JobKind::parse(name)?, origin))
}

/// A column holding one of the lifecycle crate's names, read back into its
/// type; a name this version does not know fails the read (never guessed).
fn parse_column<T: std::str::FromStr<Err = UnknownName>>(row: &rusqlite::Row, column: usize) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    text.parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e)))
}

/// A column holding JSON, read into its type; JSON this version cannot
/// read fails the read (never replaced by a default).
fn parse_json<T: serde::de::DeserializeOwned>(row: &rusqlite::Row, column: usize) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e)))
}

impl State {
    /// Records a new running job with its steps, all pending.
    pub fn create_job(
        &self,
        subject: &Subject,
        kind: JobKind,
        origin: JobOrigin,
        steps: &[&str],
    ) -> Result<i64, ControlError> {
        let command = format!("{kind}{}", origin.suffix());
        let steps: Vec<Step> = steps
            .iter()
            .map(|name| Step { name: name.to_string(), state: StepState::Pending, detail: String::new() })
            .collect();
        let now = jiff::Timestamp::now().to_string();
        self.connection
            .execute(
                "INSERT INTO jobs (machine, command, state, steps, error, created, updated, kind, origin, subject) \
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?5, ?6, ?7, ?8)",
                params![
                    subject.name(),
                    command,
                    JobState::Running.name(),
                    serde_json::to_string(&steps).expect("steps serialise"),
                    now,
                    kind.name(),
                    origin.name(),
                    subject.kind()
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(self.connection.last_insert_rowid())
    }

    /// Sets one step's state and detail.
    pub fn job_step(&self, id: i64, step: &str, state: StepState, detail: &str) -> Result<(), ControlError> {
        let mut job = self.job(id)?;
        for candidate in &mut job.steps {
            if candidate.name == step {
                candidate.state = state;
                candidate.detail = detail.to_string();
            }
        }
        self.connection
            .execute(
                "UPDATE jobs SET steps = ?1, updated = ?2 WHERE id = ?3",
                params![
                    serde_json::to_string(&job.steps).expect("steps serialise"),
                    jiff::Timestamp::now().to_string(),
                    id
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Ends a job: succeeded, failed (with the error) or interrupted.
    pub fn finish_job(&self, id: i64, state: JobState, error: Option<&str>) -> Result<(), ControlError> {
        assert!(state.ended(), "a job is finished as succeeded, failed or interrupted");
        self.connection
            .execute(
                "UPDATE jobs SET state = ?1, error = ?2, updated = ?3 WHERE id = ?4",
                params![state.name(), error, jiff::Timestamp::now().to_string(), id],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub fn job(&self, id: i64) -> Result<Job, ControlError> {
        self.jobs_where("WHERE id = ?1", params![id])?
            .pop()
            .ok_or_else(|| ControlError::NotFound(format!("no job {id}")).with_hint(standby_api::Hint::ListJobs))
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Result<Vec<Job>, ControlError> {
        self.jobs_where("ORDER BY id DESC", params![])
    }

    /// Marks jobs a dead daemon left running as interrupted; returns them.
    /// Records every running job `interrupted` (with `why`); returns them.
    pub fn interrupt_running_jobs(&self, why: &str) -> Result<Vec<Job>, ControlError> {
        let running = self.jobs_where("WHERE state = ?1", params![JobState::Running.name()])?;
        for job in &running {
            self.finish_job(job.id, JobState::Interrupted, Some(why))?;
        }
        Ok(running)
    }

    fn jobs_where(&self, clause: &str, parameters: &[&dyn rusqlite::ToSql]) -> Result<Vec<Job>, ControlError> {
        let mut statement = self
            .connection
            .prepare(&format!(
                "SELECT id, machine, command, state, steps, error, created, updated, kind, origin, subject FROM jobs \
                 {clause}"
            ))
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(parameters, |row| {
                let command: String = row.get(2)?;
                let (kind, origin) = match (row.get::<_, Option<String>>(8)?, row.get::<_, Option<String>>(9)?) {
                    (Some(_), Some(_)) => (parse_column(row, 8)?, parse_column(row, 9)?),
                    _ => kind_of_command(&command).ok_or_else(|| {
                        let unknown = UnknownName { kind: "job command", name: command.clone() };
                        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(unknown))
                    })?,
                };
                let name: String = row.get(1)?;
                let subject = match row.get::<_, Option<String>>(10)? {
                    None => Subject::Machine(name.clone()),
                    Some(kind) => Subject::of(&kind, &name).map_err(|unknown| {
                        rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, Box::new(unknown))
                    })?,
                };
                Ok(Job {
                    id: row.get(0)?,
                    machine: name,
                    subject,
                    kind,
                    origin,
                    command,
                    state: parse_column(row, 3)?,
                    steps: parse_json(row, 4)?,
                    error: row.get(5)?,
                    created: row.get(6)?,
                    updated: row.get(7)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use standby_lifecycle::Command;

    fn with_machines(count: usize) -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::create(&dir.path().join("state.db")).unwrap();
        for n in 0..count {
            let name = format!("vm{n:02}");
            let definition = MachineDefinition {
                name: name.clone(),
                cpus: 1,
                memory_mib: 64,
                kernel: None,
                initrd: None,
                append: None,
                nics: Vec::new(),
            };
            let disk = DiskDefinition {
                vault_disk: format!("{name}-0"),
                primary_path: PathBuf::from(format!("/p/{name}.raw")),
                recovery_path: PathBuf::from(format!("/r/{name}.raw")),
            };
            state.add_machine(&definition, &[disk], Site::Primary).unwrap();
        }
        (dir, state)
    }

    #[test]
    fn one_machine_is_found_with_its_disks() {
        let (_dir, state) = with_machines(3);
        let machine = state.machine("vm01").unwrap();
        assert_eq!(machine.name(), "vm01");
        assert_eq!(machine.disks.len(), 1);
        assert_eq!(machine.disks[0].vault_disk, "vm01-0");
        assert_eq!(state.machines().unwrap().len(), 3);
    }

    /// An unknown name is answered with the names there are while they
    /// are few, with how many when they are many (never a thousand names).
    #[test]
    fn an_unknown_machine_is_said_with_the_machines_known() {
        let message = |count| with_machines(count).1.machine("nope").unwrap_err().to_string();
        assert!(message(0).contains("no machine named 'nope' (known: none)"), "{}", message(0));
        assert!(message(2).contains("(known: vm00, vm01)"), "{}", message(2));
        let many = message(25);
        assert!(many.contains("(25 machines known; `standby machine list` names them)"), "{many}");
        assert!(!many.contains("vm24"), "{many}");
    }

    fn version_one(path: &Path) {
        let state = State::connect(path).unwrap();
        state.connection.execute_batch(SCHEMA).unwrap();
        state.connection.execute("INSERT INTO meta VALUES ('schema_version', '1')", []).unwrap();
    }

    #[test]
    fn a_version_one_database_is_migrated_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        version_one(&path);
        let state = State::open(&path).unwrap();
        assert!(state.jobs().unwrap().is_empty());
        let web = Subject::Machine("web".into());
        let id = state.create_job(&web, JobKind::MachineStart, JobOrigin::Operator, &["one", "two"]).unwrap();
        state.job_step(id, "one", StepState::Done, "fine").unwrap();
        let job = state.job(id).unwrap();
        assert_eq!(
            (job.state, job.steps[0].state, job.steps[1].state),
            (JobState::Running, StepState::Done, StepState::Pending)
        );
        assert_eq!(
            state.interrupt_running_jobs("gone").unwrap().iter().map(|job| job.id).collect::<Vec<_>>(),
            vec![id]
        );
        assert_eq!(state.job(id).unwrap().state, JobState::Interrupted);
        drop(state);
        // Opening again finds it current.
        State::open(&path).unwrap();
    }

    /// Jobs written by schema 3 (no kind column) read back with the kind
    /// and origin their command names.
    #[test]
    fn jobs_of_version_three_read_back_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        version_one(&path);
        let mut state = State::connect(&path).unwrap();
        state.migrate_to(1, 3).unwrap();
        for command in [
            "failover",
            "protect (resumed)",
            "planned-failover --sync-first (resumed after a daemon restart)",
            "complete-failover (rolled back after a daemon restart)",
            "machine start (owed by job 7, resumed after a daemon restart)",
        ] {
            state
                .connection
                .execute(
                    "INSERT INTO jobs (machine, command, state, steps, error, created, updated) \
                     VALUES ('web', ?1, 'succeeded', '[]', NULL, 'then', 'then')",
                    [command],
                )
                .unwrap();
        }
        drop(state);
        let state = State::open(&path).unwrap();
        // (Before version 5 every job's subject was a machine.)
        assert!(state.jobs().unwrap().iter().all(|job| job.subject == Subject::Machine("web".into())));
        let jobs: Vec<(JobKind, JobOrigin)> = state.jobs().unwrap().iter().rev().map(|j| (j.kind, j.origin)).collect();
        assert_eq!(
            jobs,
            [
                (JobKind::Lifecycle(Command::Failover), JobOrigin::Operator),
                (JobKind::Lifecycle(Command::Protect), JobOrigin::Resumed),
                (JobKind::Lifecycle(Command::PlannedFailover { sync_first: true }), JobOrigin::Resumed),
                (JobKind::Lifecycle(Command::CompleteFailover), JobOrigin::RolledBack),
                (JobKind::OwedStart, JobOrigin::Resumed),
            ]
        );
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        version_one(&path);
        State::connect(&path).unwrap().connection.execute("UPDATE meta SET value = '99'", []).unwrap();
        let error = State::open(&path).err().unwrap();
        assert!(error.is_bad_input() && error.to_string().contains("upgrade standby"), "{error}");
    }
}

/// Every state a machine was recorded in, in order, by database (tests
/// check each against the lifecycle table).
#[cfg(test)]
pub(crate) mod written {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::MachineState;

    static WRITTEN: Mutex<Vec<(PathBuf, String, MachineState)>> = Mutex::new(Vec::new());

    pub(super) fn record(database: &Path, machine: &str, state: MachineState) {
        let mut written = WRITTEN.lock().unwrap_or_else(|p| p.into_inner());
        written.push((database.to_path_buf(), machine.to_string(), state));
    }

    /// Takes the states recorded in `database` so far.
    pub(crate) fn take(database: &Path) -> Vec<(String, MachineState)> {
        let mut written = WRITTEN.lock().unwrap_or_else(|p| p.into_inner());
        let (taken, kept): (Vec<_>, Vec<_>) = written.drain(..).partition(|(path, _, _)| path == database);
        *written = kept;
        taken.into_iter().map(|(_, machine, state)| (machine, state)).collect()
    }
}

pub use standby_api::TokenRole;

/// A token the control plane knows, by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownToken {
    pub name: String,
    pub role: TokenRole,
    pub expires: Option<jiff::Timestamp>,
}

fn token_fields(role: &str, expires: Option<&str>) -> Result<(TokenRole, Option<jiff::Timestamp>), ControlError> {
    let unreadable = |what: &str| ControlError::Failed(format!("the state holds a token with {what}"));
    let role = TokenRole::parse(role).ok_or_else(|| unreadable(&format!("the role '{role}'")))?;
    let expires = match expires {
        Some(text) => Some(text.parse().map_err(|_| unreadable(&format!("the expiry '{text}'")))?),
        None => None,
    };
    Ok((role, expires))
}

/// A host joined to the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedHost {
    pub site: Site,
    pub address: String,
    pub joined: String,
}

impl State {
    /// Records a token named `name` by its hash (never the token); a
    /// name taken is a conflict.
    pub fn add_token(
        &self,
        name: &str,
        hash: &str,
        role: TokenRole,
        expires: Option<jiff::Timestamp>,
    ) -> Result<(), ControlError> {
        if crate::validate_machine_name(name).is_err() {
            return Err(ControlError::Refused(format!(
                "token name {name:?} is not allowed: use 1 to 48 letters, digits, '.', '_' or '-'"
            )));
        }
        let inserted = self
            .connection
            .execute(
                "INSERT OR IGNORE INTO tokens (name, hash, role, expires, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, hash, role.name(), expires.map(|t| t.to_string()), jiff::Timestamp::now().to_string()],
            )
            .map_err(|e| self.error(e))?;
        if inserted == 0 {
            return Err(ControlError::Conflict(format!(
                "a token named '{name}' already exists; choose another name or revoke it first (standby token revoke \
                 {name})"
            )));
        }
        Ok(())
    }

    /// The token whose hash is `hash`, `None` when unknown (or revoked).
    pub fn token(&self, hash: &str) -> Result<Option<KnownToken>, ControlError> {
        let row: Option<(String, String, Option<String>)> = self
            .connection
            .query_row("SELECT name, role, expires FROM tokens WHERE hash = ?1", [hash], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
            .map_err(|e| self.error(e))?;
        let Some((name, role, expires)) = row else { return Ok(None) };
        let (role, expires) = token_fields(&role, expires.as_deref())?;
        Ok(Some(KnownToken { name, role, expires }))
    }

    /// Every token, by name (never a secret nor a hash).
    pub fn tokens(&self) -> Result<Vec<standby_api::TokenView>, ControlError> {
        let mut statement = self
            .connection
            .prepare("SELECT name, role, created, expires FROM tokens ORDER BY name")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get(2)?, row.get::<_, Option<String>>(3)?))
            })
            .map_err(|e| self.error(e))?;
        let mut tokens = Vec::new();
        for row in rows {
            let (name, role, created, expires) = row.map_err(|e| self.error(e))?;
            let (role, _) = token_fields(&role, expires.as_deref())?;
            tokens.push(standby_api::TokenView { name, role, created, expires });
        }
        Ok(tokens)
    }

    /// Forgets the token named `name`: it opens nothing from now on.
    pub fn revoke_token(&self, name: &str) -> Result<(), ControlError> {
        let deleted =
            self.connection.execute("DELETE FROM tokens WHERE name = ?1", [name]).map_err(|e| self.error(e))?;
        if deleted == 0 {
            return Err(ControlError::NotFound(format!("no token named '{name}' (standby token list shows them)")));
        }
        Ok(())
    }

    /// The alerts standing now (`all`: with the newest 200 cleared ones
    /// too), oldest first.
    pub fn alerts(&self, all: bool) -> Result<Vec<standby_api::Alert>, ControlError> {
        let query = if all {
            "SELECT * FROM (SELECT id, kind, subject, severity, message, raised, cleared FROM alerts \
             WHERE cleared IS NULL OR id IN (SELECT id FROM alerts WHERE cleared IS NOT NULL ORDER BY id DESC LIMIT 200)) \
             ORDER BY id"
        } else {
            "SELECT id, kind, subject, severity, message, raised, cleared FROM alerts WHERE cleared IS NULL ORDER BY id"
        };
        let mut statement = self.connection.prepare(query).map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut alerts = Vec::new();
        for row in rows {
            let (id, kind, subject, severity, message, raised, cleared) = row.map_err(|e| self.error(e))?;
            let unreadable = |what: String| ControlError::Failed(format!("the state holds an alert with {what}"));
            let kind = standby_api::AlertKind::parse(&kind).ok_or_else(|| unreadable(format!("the kind '{kind}'")))?;
            let severity = serde_json::from_value(serde_json::Value::String(severity.clone()))
                .map_err(|_| unreadable(format!("the severity '{severity}'")))?;
            alerts.push(standby_api::Alert { id, kind, subject, severity, message, raised, cleared });
        }
        Ok(alerts)
    }

    /// Raises an alert of `kind` about `subject`.
    pub fn raise_alert(
        &self,
        kind: standby_api::AlertKind,
        subject: &str,
        severity: standby_api::HealthLevel,
        message: &str,
    ) -> Result<standby_api::Alert, ControlError> {
        let raised = jiff::Timestamp::now().to_string();
        self.connection
            .execute(
                "INSERT INTO alerts (kind, subject, severity, message, raised) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![kind.name(), subject, severity.name(), message, raised],
            )
            .map_err(|e| self.error(e))?;
        let id = self.connection.last_insert_rowid();
        Ok(standby_api::Alert {
            id,
            kind,
            subject: subject.into(),
            severity,
            message: message.into(),
            raised,
            cleared: None,
        })
    }

    /// Clears the standing alert `alert`; it as cleared.
    pub fn clear_alert(&self, alert: &standby_api::Alert) -> Result<standby_api::Alert, ControlError> {
        let cleared = jiff::Timestamp::now().to_string();
        self.connection
            .execute("UPDATE alerts SET cleared = ?2 WHERE id = ?1", params![alert.id, cleared])
            .map_err(|e| self.error(e))?;
        Ok(standby_api::Alert { cleared: Some(cleared), ..alert.clone() })
    }

    /// How many jobs there are of each kind in each state, as `(kind,
    /// state, count)`.
    pub fn job_counts(&self) -> Result<Vec<(String, String, u64)>, ControlError> {
        let mut statement = self
            .connection
            .prepare("SELECT COALESCE(kind, command), state, COUNT(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
            .map_err(|e| self.error(e))?;
        let rows =
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// Records a request that acts, before it runs; [`State::audit_answered`]
    /// adds its answer.
    pub fn audit_asked(
        &self,
        actor: &str,
        method: &str,
        path: &str,
        request: Option<&str>,
    ) -> Result<i64, ControlError> {
        self.connection
            .execute(
                "INSERT INTO audit (at, actor, method, path, request) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![jiff::Timestamp::now().to_string(), actor, method, path, request],
            )
            .map_err(|e| self.error(e))?;
        Ok(self.connection.last_insert_rowid())
    }

    pub fn audit_answered(
        &self,
        id: i64,
        status: u16,
        code: Option<standby_api::ErrorCode>,
    ) -> Result<(), ControlError> {
        let code = code.map(|code| serde_json::to_value(code).expect("codes serialise"));
        let code = code.as_ref().and_then(|code| code.as_str());
        self.connection
            .execute("UPDATE audit SET status = ?2, code = ?3 WHERE id = ?1", params![id, status, code])
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The newest `limit` entries of the audit log, oldest first.
    pub fn audit(&self, limit: u32) -> Result<Vec<standby_api::AuditEntry>, ControlError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT * FROM (SELECT id, at, actor, method, path, request, status, code FROM audit \
                 ORDER BY id DESC LIMIT ?1) ORDER BY id",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, Option<u16>>(6)?,
                    row.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut entries = Vec::new();
        for row in rows {
            let (id, at, actor, method, path, request, status, code) = row.map_err(|e| self.error(e))?;
            let request = request.map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
            let code = match code {
                Some(code) => Some(serde_json::from_value(serde_json::Value::String(code.clone())).map_err(|_| {
                    ControlError::Failed(format!("the state's audit log holds an unknown error code '{code}'"))
                })?),
                None => None,
            };
            entries.push(standby_api::AuditEntry { id, at, actor, method, path, request, status, code });
        }
        Ok(entries)
    }

    /// Records the host of `site`; a site that has one already is a conflict.
    pub fn add_host(&self, site: Site, address: &str) -> Result<(), ControlError> {
        if let Some(host) = self.hosts()?.into_iter().find(|host| host.site == site) {
            return Err(ControlError::Conflict(format!(
                "the {site} site already has a host ({}, joined {}); a site has one host",
                host.address, host.joined
            )));
        }
        self.connection
            .execute(
                "INSERT INTO hosts (site, address, joined) VALUES (?1, ?2, ?3)",
                params![site.name(), address, jiff::Timestamp::now().to_string()],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub fn hosts(&self) -> Result<Vec<JoinedHost>, ControlError> {
        let mut statement = self
            .connection
            .prepare("SELECT site, address, joined FROM hosts ORDER BY site")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?)))
            .map_err(|e| self.error(e))?;
        let mut hosts = Vec::new();
        for row in rows {
            let (site, address, joined) = row.map_err(|e| self.error(e))?;
            let site = Site::parse(&site)
                .ok_or_else(|| ControlError::Failed(format!("the state holds a host of an unknown site '{site}'")))?;
            hosts.push(JoinedHost { site, address, joined });
        }
        Ok(hosts)
    }
}
