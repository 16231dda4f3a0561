//! Requests and answers. Every type serialises to the JSON the daemon sends
//! and the CLI prints with `--json`; field names are the contract.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use standby_lifecycle::job::{JobKind, JobOrigin, JobState, StepState, Subject};
use standby_lifecycle::{Instance, Site, State};

/// A job's id.
pub type JobId = i64;

// ---------------------------------------------------------------------------
// Definitions: what an operator defines and the state records.

/// What `standby machine add` defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineDefinition {
    /// 1 to 48 letters, digits, '.', '_' or '-', not starting with '.' or '-'.
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,47}$")]
    pub name: String,
    #[schema(minimum = 1)]
    pub cpus: u32,
    #[schema(minimum = 16)]
    pub memory_mib: u32,
    /// Direct kernel boot; without it the machine boots from its first disk.
    #[schema(value_type = Option<String>)]
    pub kernel: Option<PathBuf>,
    #[schema(value_type = Option<String>)]
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    /// NIC specifications, each mapped to a site network.
    pub nics: Vec<String>,
}

/// One disk of a machine: its name in the vault and its raw image at each
/// site (the recovery image exists once the machine has run there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiskDefinition {
    pub vault_disk: String,
    #[schema(value_type = String)]
    pub primary_path: PathBuf,
    #[schema(value_type = String)]
    pub recovery_path: PathBuf,
}

impl DiskDefinition {
    /// Its image at `site`.
    pub fn image_at(&self, site: Site) -> &Path {
        match site {
            Site::Primary => &self.primary_path,
            Site::Recovery => &self.recovery_path,
        }
    }
}

/// A replication policy (docs/cli.md); every interval 1 s to 100 years.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policy {
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,47}$")]
    pub name: String,
    #[schema(minimum = 1, maximum = 3153600000.0)]
    pub rpo_threshold_seconds: u64,
    /// At least the bookmark interval.
    #[schema(minimum = 1, maximum = 3153600000.0)]
    pub retention_seconds: u64,
    #[schema(minimum = 1, maximum = 3153600000.0)]
    pub app_consistent_seconds: u64,
    #[schema(minimum = 1, maximum = 3153600000.0)]
    pub bookmark_seconds: u64,
}

/// `POST /v1/machines`: define a machine from disk images on the daemon's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddMachine {
    #[serde(flatten)]
    pub definition: MachineDefinition,
    /// Images of any format qemu-img reads, imported as raw.
    #[schema(value_type = Vec<String>, min_items = 1)]
    pub disks: Vec<PathBuf>,
    /// The site whose host holds the images and imports them, where the
    /// machine runs until it fails over (the primary site when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<Site>,
}

// ---------------------------------------------------------------------------
// Machines.

/// A machine as `machine list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineView {
    #[serde(flatten)]
    pub definition: MachineDefinition,
    pub state: State,
    pub active_site: Site,
    pub policy: Option<String>,
    /// The replication group whose points are the machine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Bumped whenever the machine's authoritative copy moves between sites.
    pub generation: u64,
    pub disks: Vec<DiskView>,
    /// What the lifecycle remembers (the drill, the failover, …), as recorded.
    pub details: Value,
    /// Running or not, from the daemon (absent when read without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// Where each NIC is plugged in at each site and in a drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<NicView>>,
}

/// Where a NIC is plugged in when its machine runs somewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attachment {
    pub network: String,
    pub mac: String,
    pub model: String,
    #[serde(flatten)]
    pub backend: NicBackend,
    /// The static address the NIC gets inside the guest there, once it
    /// boots (none: the guest's own configuration stands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<StaticAddress>,
}

/// A NIC's static address at one site (or in a drill): set inside the
/// guest after it boots, by its agent or a NoCloud seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StaticAddress {
    /// Address and prefix length, as `10.1.0.5/24`.
    pub address: String,
    /// The default route's next hop, in the address's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Name servers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// How the address gets into the guest.
    pub apply: AddressApply,
}

impl std::fmt::Display for StaticAddress {
    /// `10.1.0.5/24 via 10.1.0.1, dns 10.1.0.53 10.1.0.54`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.address)?;
        if let Some(gateway) = &self.gateway {
            write!(f, " via {gateway}")?;
        }
        if !self.dns.is_empty() {
            write!(f, ", dns {}", self.dns.join(" "))?;
        }
        Ok(())
    }
}

/// How a machine's static addresses get into its guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressApply {
    /// qemu-guest-agent sets them once it answers, and again whenever the
    /// guest lost them (a reboot inside the guest).
    Agent,
    /// A NoCloud seed (a FAT disk labelled `cidata` with a
    /// `network-config`) cloud-init reads at boot.
    Seed,
}

/// Whether a running guest has its static addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddressesState {
    pub state: AddressesPhase,
    /// What was set, or why not yet.
    pub detail: String,
    /// When this phase began (RFC 3339).
    pub since: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AddressesPhase {
    /// The guest's agent has not set them yet (it may still be booting).
    Waiting,
    /// Every NIC has its address.
    Applied,
    /// Handed to the guest in its NoCloud seed (cloud-init sets them; the
    /// host cannot see whether it did).
    Seeded,
}

/// What a NIC is attached to on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum NicBackend {
    /// A multicast group on the loopback interface, e.g. `239.255.12.34:41234`.
    Segment { segment: String },
    /// A Linux bridge on the host.
    Bridge { bridge: String },
}

/// One NIC of a machine: where it is plugged in at each site and in a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NicView {
    pub mac: String,
    pub model: String,
    pub primary: Attachment,
    pub recovery: Attachment,
    pub drill: Attachment,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiskView {
    #[serde(flatten)]
    pub definition: DiskDefinition,
    /// After a failover, until reprotect: how much of the disk is local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_from: Option<Hydration>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineList {
    pub machines: Vec<MachineView>,
}

/// A machine's QEMU at its active site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Runtime {
    pub running: bool,
    pub pid: Option<u32>,
    #[schema(value_type = Option<String>)]
    pub console: Option<PathBuf>,
    pub accel: Option<String>,
    /// Its NICs' static addresses, when it has any where it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<AddressesState>,
}

/// `POST …/start`: the machine's QEMU runs.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Started {
    pub name: String,
    pub pid: u32,
    #[schema(value_type = String)]
    pub console: PathBuf,
    pub accel: String,
    /// Where it runs.
    pub site: Instance,
    /// Where each NIC is plugged in.
    pub nics: Vec<Attachment>,
    pub job: JobId,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct StopRequest {
    /// Cut the power instead of asking the guest (ACPI).
    pub force: bool,
    /// An instance at another site than the active one (an old source).
    pub site: Option<Site>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stopped {
    pub name: String,
    /// How it stopped: clean, forced, …
    pub stopped: String,
    pub job: JobId,
}

/// `POST /v1/machines/NAME/nics`: the machine's NICs from now on, each as
/// `machine add --nic` takes it; the whole list, replacing the one it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetNics {
    pub nics: Vec<String>,
}

// ---------------------------------------------------------------------------
// Replication groups.

/// A replication group: machines whose points are made together, each one
/// point consistent across every disk of every machine in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupView {
    pub name: String,
    pub machines: Vec<String>,
    /// Where its machines run; absent while they are at different sites.
    pub active_site: Option<Site>,
    /// How often it makes a point: the shortest bookmark interval of its
    /// machines' policies.
    pub interval_seconds: u64,
    /// The newest point every disk of every machine holds in the vault
    /// (`latest-group`), and the newest app-consistent one
    /// (`latest-group-app`).
    pub latest: Option<GroupPoint>,
    pub latest_app: Option<GroupPoint>,
    /// Why it makes no points now (a machine failed over, catching up, …).
    pub problem: Option<String>,
    /// The last attempt at a point, made or not.
    pub last_attempt: Option<GroupAttempt>,
    /// Points made and not made since the daemon started.
    pub points_made: u64,
    pub points_not_made: u64,
    /// The longest the guests' acknowledgements were held for one point
    /// since the daemon started, in milliseconds.
    pub hold_max_ms: f64,
}

/// One of a group's points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupPoint {
    pub id: u64,
    /// When the first of its disks recorded it (RFC 3339).
    pub time: String,
    pub kind: String,
}

/// An attempt at a group point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupAttempt {
    pub at: String,
    pub made: bool,
    pub app_consistent: bool,
    /// How long the guests' acknowledgements were held, in milliseconds.
    pub held_ms: f64,
    /// The machines whose disks held the point back, with why.
    pub held_back: Vec<HeldBack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldBack {
    pub machine: String,
    pub disk: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupView>,
}

// ---------------------------------------------------------------------------
// Recovery plans.

/// A plan file to check or keep: its TOML, the file's name (its errors
/// name `FILE:LINE`) and the folder its scripts' relative paths start from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanSource {
    pub source: String,
    pub file: String,
    pub base: String,
}

/// A recovery plan: ordered groups of machines (each group's machines
/// start side by side), steps before and after each group, probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanView {
    pub name: String,
    pub description: String,
    /// The file it was made from.
    pub file: String,
    /// When it was kept (absent for a file only checked).
    pub created: Option<String>,
    pub groups: Vec<PlanGroupView>,
    pub probes: Vec<PlanProbeView>,
    /// Why the plan no longer holds against the deployment (a machine
    /// removed since, a script gone), when it does not.
    pub problem: Option<String>,
    /// Its last drill (a test failover of the plan).
    #[serde(default)]
    pub last_drill: Option<PlanDrill>,
    /// How often the daemon drills it, when it does (`plan drill --every`).
    #[serde(default)]
    pub drill_every_seconds: Option<u64>,
    /// The static addresses of its machines' NICs, at each site and in a
    /// drill (NICs without any are left out).
    #[serde(default)]
    pub addresses: Vec<PlanAddressView>,
}

/// One NIC of a plan's machine and the static address it gets where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanAddressView {
    pub machine: String,
    pub mac: String,
    pub primary: Option<StaticAddress>,
    pub recovery: Option<StaticAddress>,
    pub drill: Option<StaticAddress>,
}

/// A plan's drill: a test failover of every machine, group by group, its
/// probes waited for, and (when asked) the drill removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanDrill {
    pub job: i64,
    /// When it ended (RFC 3339).
    pub at: String,
    /// Every machine came up and every probe passed.
    pub passed: bool,
    /// From the command to the last probe passing (absent without probes
    /// or when one did not pass).
    pub rto_seconds: Option<f64>,
    /// Each probed machine's RTO.
    pub machines: Vec<MachineRto>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineRto {
    pub machine: String,
    pub rto_seconds: f64,
}

/// `plan drill NAME --every DUR`, or (`every_seconds` absent) no more
/// scheduled drills.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct PlanSchedule {
    pub every_seconds: Option<u64>,
}

/// A plan in `status`: its last drill and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanStatus {
    pub name: String,
    pub last_drill: Option<PlanDrill>,
    pub drill_every_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanGroupView {
    pub name: String,
    pub machines: Vec<String>,
    pub pre: Vec<PlanStepView>,
    pub post: Vec<PlanStepView>,
}

/// A step: a script at the control plane (with its timeout) or an
/// operator's manual action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanStepView {
    /// `script` or `manual`.
    pub kind: String,
    /// The script's path, or what the operator does.
    pub text: String,
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanProbeView {
    pub machine: String,
    /// `tcp`, `command` or `console`.
    pub kind: String,
    /// The address and port, the command, or the console's pattern.
    pub check: String,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanList {
    pub plans: Vec<PlanView>,
}

/// What a plan's lifecycle command is asked besides it: the point (for
/// test-failover, failover, change-point), `shutdown_source` (failover),
/// `sync_first` (planned-failover).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct PlanJobRequest {
    pub point: Option<String>,
    pub shutdown_source: bool,
    pub sync_first: bool,
    /// test-failover: remove the drill once it is measured (a drill).
    pub cleanup: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanDeleted {
    pub name: String,
}

// ---------------------------------------------------------------------------
// Lifecycle requests: each starts a job.

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ProtectRequest {
    pub policy: Option<String>,
    /// A replication group to protect the machine in: its points are made
    /// together with the group's other machines'.
    pub group: Option<String>,
}

/// A recovery point: `latest`, `latest-processed`, `latest-app`, an id or
/// an RFC 3339 time (test-failover: default `latest`; change-point: required).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct PointRequest {
    pub point: Option<String>,
}

/// `change-point`: the point is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangePointRequest {
    pub point: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct FailoverRequest {
    pub point: Option<String>,
    pub shutdown_source: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct PlannedFailoverRequest {
    pub sync_first: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ReprotectRequest {
    pub alternate_location: bool,
    pub discard_source_writes: bool,
}

/// An operation started as a job; `GET /v1/jobs/ID` follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStarted {
    pub job: JobId,
    pub machine: String,
    pub command: String,
}

// ---------------------------------------------------------------------------
// Jobs.

/// One step of a job, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    pub name: String,
    pub state: StepState,
    pub detail: String,
}

/// A job: one operation on a machine (or on a group or a plan of
/// several), with named steps (docs/cli.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: JobId,
    /// The subject's name (a machine's, for a machine's job).
    pub machine: String,
    /// What it acts on.
    pub subject: Subject,
    /// What it does.
    pub kind: JobKind,
    /// How it came to be: asked for, or taken up by a restarted daemon.
    pub origin: JobOrigin,
    /// As shown: its kind and, for one a restarted daemon took up, how.
    pub command: String,
    pub state: JobState,
    pub steps: Vec<Step>,
    pub error: Option<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyList {
    pub policies: Vec<Policy>,
}

// ---------------------------------------------------------------------------
// Status.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthLevel {
    Healthy,
    Warning,
    Critical,
}

impl HealthLevel {
    pub fn name(self) -> &'static str {
        match self {
            HealthLevel::Healthy => "healthy",
            HealthLevel::Warning => "warning",
            HealthLevel::Critical => "critical",
        }
    }
}

impl std::fmt::Display for HealthLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusList {
    pub machines: Vec<MachineStatus>,
    /// Every recovery plan's last drill and schedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<PlanStatus>,
}

/// `standby status`: a machine's state and, when it replicates, its
/// health, current RPO and latest points.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineStatus {
    pub name: String,
    pub state: State,
    pub site: Site,
    pub running: bool,
    pub policy: Option<String>,
    /// `None` when the machine does not replicate.
    pub health: Option<HealthLevel>,
    /// Running from a failover point: how much of each disk is local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydration: Option<Vec<Hydration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicates_to: Option<Site>,
    /// How app-consistent points go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_threshold_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<DiskStatus>>,
}

impl MachineStatus {
    /// The status of a machine as its record says, before anything is
    /// found of its replication.
    pub fn recorded(name: &str, state: State, site: Site, running: bool, policy: Option<String>) -> MachineStatus {
        MachineStatus {
            name: name.to_string(),
            state,
            site,
            running,
            policy,
            health: None,
            hydration: None,
            replicates_to: None,
            consistency: None,
            rpo_seconds: None,
            rpo_threshold_seconds: None,
            problems: None,
            disks: None,
        }
    }
}

/// One disk of a replicated machine.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiskStatus {
    pub disk: String,
    /// The disk's part of the machine's RPO, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    /// Its splitter's own report, while it runs.
    pub splitter: Option<SplitterStatus>,
    /// The newest restorable moment (RFC 3339).
    pub latest: Option<String>,
    pub latest_processed: Option<BookmarkView>,
    pub latest_app_consistent: Option<BookmarkView>,
}

/// A recorded point of a disk's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BookmarkView {
    pub sequence: u64,
    pub time: String,
    pub label: String,
}

/// What a running splitter reports (`standby splitter-status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct SplitterStatus {
    pub disk: String,
    /// Every region it had to re-read is re-read: every point is exact.
    pub refreshed: bool,
    /// Sequence of the last record sealed into the vault.
    pub sealed_sequence: u64,
    pub sealed_time: Option<String>,
    /// Seconds since the oldest change not yet in the vault (0 when none).
    pub lag_seconds: f64,
    /// Bytes of write data not yet in the vault.
    pub lag_bytes: u64,
    /// Bytes of the image to re-read before the journal is exact again.
    pub catch_up_bytes: u64,
    pub segments_sealed: u64,
    pub bytes_shipped: u64,
    /// The last seal's error, while the vault is failing.
    pub error: Option<String>,
    /// Reads and writes of the image and syncs of its intent log that
    /// failed since the splitter started (each failed to the guest, or
    /// was retried).
    #[serde(default)]
    pub io_errors: u64,
    /// The last of them.
    #[serde(default)]
    pub last_io_error: Option<String>,
    /// Failed attempts to open the vault or store a segment in it since
    /// the splitter started (each retried).
    #[serde(default)]
    pub vault_errors: u64,
    /// How long the guest's writes took.
    #[serde(default)]
    pub write_latency: LatencyHistogram,
    /// The replication group whose points the disk's points are.
    #[serde(default)]
    pub group: Option<String>,
    /// Group points the splitter held the guest's writes for, and how many
    /// of those holds ended at their deadline (no point made).
    #[serde(default)]
    pub group_holds: u64,
    #[serde(default)]
    pub group_holds_expired: u64,
    /// The longest hold, in seconds.
    #[serde(default)]
    pub group_hold_max_seconds: f64,
}

/// A histogram of durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LatencyHistogram {
    /// Each bucket's upper bound in seconds, the +Inf one left out.
    pub bounds_seconds: Vec<f64>,
    /// How many fell in each bucket (not cumulative), the +Inf one last.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// How much of a disk running from a failover point is local.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Hydration {
    pub disk: String,
    #[schema(value_type = String)]
    pub overlay: PathBuf,
    /// `None` without an overlay map (nothing written or hydrated yet).
    pub local_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    /// The whole disk is local: nothing is read from the vault.
    pub complete: bool,
}

/// `GET /v1/health`: the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub pid: u32,
    #[schema(value_type = String)]
    pub home: PathBuf,
    pub accel: String,
    pub accel_reason: String,
    #[schema(value_type = String)]
    pub exe: PathBuf,
}

/// The deployment's sites (`standby sites`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteList {
    pub sites: Vec<SiteView>,
}

/// One site as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteView {
    pub site: Site,
    /// Its host's listener; `None` when the control plane's own process
    /// runs the site (the embedded default, or the control plane's host).
    pub address: Option<String>,
    /// Whether its host answers now.
    pub reachable: bool,
    /// Since when it answers (or not), as this daemon has seen it.
    pub since: String,
    /// The vault replication into the site writes to.
    pub vault: String,
    /// Machines replicating into the site.
    pub replicating: u64,
    /// The largest RPO among them, in seconds.
    pub worst_rpo_seconds: Option<f64>,
}

// ---------------------------------------------------------------------------
// Tokens and the audit log.

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TokenRole {
    /// Every operator request: look and act, manage tokens.
    Admin,
    /// Look (every `GET` but the tokens'), never act.
    ReadOnly,
    /// Join a host to the deployment, nothing else.
    Join,
}

impl TokenRole {
    pub const ALL: [TokenRole; 3] = [TokenRole::Admin, TokenRole::ReadOnly, TokenRole::Join];

    pub fn name(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::ReadOnly => "read-only",
            TokenRole::Join => "join",
        }
    }

    pub fn parse(name: &str) -> Option<TokenRole> {
        TokenRole::ALL.into_iter().find(|role| role.name() == name)
    }
}

impl std::fmt::Display for TokenRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// `POST /v1/tokens`: a new operator token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// How it is listed, revoked and named in the audit log.
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,47}$")]
    pub name: String,
    /// Look, never act.
    #[serde(default)]
    pub read_only: bool,
}

/// A token just made: the only time its secret is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    pub name: String,
    pub role: TokenRole,
    /// The secret: `Authorization: Bearer SECRET`, or the console's sign-in.
    pub token: String,
    /// The deployment's CA, which the API's certificate is signed by.
    pub ca_pem: String,
    /// The site whose name the API's certificate carries.
    pub control_site: Site,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("NewToken").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub name: String,
    pub role: TokenRole,
    pub created: String,
    pub expires: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

/// `DELETE /v1/tokens/NAME`: the token no longer opens anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRevoked {
    pub name: String,
}

/// One request that acts (anything but a `GET`), as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// When it was asked (RFC 3339).
    pub at: String,
    /// Who asked: a token's name, or `local` (the daemon's unix socket).
    pub actor: String,
    pub method: String,
    pub path: String,
    /// The request's JSON body, as sent.
    pub request: Option<Value>,
    /// The answer's HTTP status; `None` while the request runs (or when the
    /// daemon stopped before it answered).
    pub status: Option<u16>,
    /// The error's code when it was refused or failed.
    pub code: Option<crate::ErrorCode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

// ---------------------------------------------------------------------------
// Alerts.

/// What an alert is about (stable names: add, don't rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A machine's RPO is over its policy's threshold.
    RpoOverThreshold,
    /// A disk has writes to ship and nothing reached the vault for a while.
    ReplicationStalled,
    /// A site's host does not answer.
    SiteUnreachable,
    /// The last app-consistent point of a machine could only be crash-consistent.
    AppConsistentFailed,
    /// A disk's splitter cannot store into its vault.
    VaultError,
    /// A machine's last drill (test failover) failed.
    DrillFailed,
}

impl AlertKind {
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::RpoOverThreshold => "rpo_over_threshold",
            AlertKind::ReplicationStalled => "replication_stalled",
            AlertKind::SiteUnreachable => "site_unreachable",
            AlertKind::AppConsistentFailed => "app_consistent_failed",
            AlertKind::VaultError => "vault_error",
            AlertKind::DrillFailed => "drill_failed",
        }
    }

    pub fn parse(name: &str) -> Option<AlertKind> {
        use AlertKind::*;
        [RpoOverThreshold, ReplicationStalled, SiteUnreachable, AppConsistentFailed, VaultError, DrillFailed]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// An alert the daemon raised, and cleared once its cause was gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: i64,
    pub kind: AlertKind,
    /// What it is about: a machine's name, `machine/disk`, or a site.
    pub subject: String,
    pub severity: HealthLevel,
    /// What is wrong, in one line.
    pub message: String,
    pub raised: String,
    /// When its cause was gone; `None` while it stands.
    pub cleared: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
}

/// What the webhook receives: an alert raised or cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertEvent {
    /// `raised` or `cleared`.
    pub event: String,
    pub alert: Alert,
}

// ---------------------------------------------------------------------------
// A machine's recovery points.

/// One named point of a machine (its first disk's bookmark; every disk is
/// cut at its time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PointView {
    /// Its id, for `--point`.
    pub sequence: u64,
    /// RFC 3339.
    pub time: String,
    /// `crash-consistent` or `app-consistent`.
    pub kind: String,
    pub label: String,
}

/// `GET /v1/machines/NAME/points`: the named points and the window of
/// moments any of which can be restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachinePoints {
    pub machine: String,
    /// The oldest moment every disk can be restored at (RFC 3339).
    pub from: Option<String>,
    /// The newest.
    pub to: Option<String>,
    /// The first disk's points worth naming, oldest first: every
    /// app-consistent or labelled point and the base, the first
    /// crash-consistent point of every 10 minutes, and the newest (a
    /// bookmark every 5 s would be thousands; any moment from `from` to
    /// `to` can be restored).
    pub points: Vec<PointView>,
}
