//! Argument definitions. Names and flags are the command-line contract of
//! docs/cli.md: add, never rename.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "standby", version, about = "Site recovery for KVM/QEMU virtual machines and Linux disk images")]
pub struct Arguments {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct VaultArguments {
    /// The vault: a path, file://, az://container/prefix, s3://bucket/prefix or gs://bucket/prefix.
    #[arg(long)]
    pub vault: String,
    /// File holding the vault's encryption key (for encrypted vaults).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Vault administration.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// One replication pass of an image into the vault; makes a recovery point.
    Sync {
        image: PathBuf,
        #[command(flatten)]
        vault: VaultArguments,
        /// Disk name in the vault.
        #[arg(long)]
        disk: String,
        /// Tag the point as app-consistent (the image was quiesced).
        #[arg(long)]
        app_consistent: bool,
        /// A label for the point.
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        json: bool,
    },
    /// List a disk's recovery points.
    Points {
        #[command(flatten)]
        vault: VaultArguments,
        #[arg(long)]
        disk: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a disk at a recovery point to a raw image.
    Restore {
        #[command(flatten)]
        vault: VaultArguments,
        #[arg(long)]
        disk: String,
        /// latest, latest-processed, latest-app, a point id, or an RFC 3339 time.
        #[arg(long)]
        point: String,
        /// The image to write.
        output: PathBuf,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check every object's checksum and every point's completeness.
    Verify {
        #[command(flatten)]
        vault: VaultArguments,
        #[arg(long)]
        json: bool,
    },
    /// Make TARGET equal to SOURCE, writing only differing blocks.
    Resync {
        source: PathBuf,
        target: PathBuf,
        /// Resize TARGET when its size differs from SOURCE's.
        #[arg(long)]
        allow_resize: bool,
        #[arg(long)]
        json: bool,
    },
    /// Drop points older than the retention window and collect unreferenced data.
    Prune {
        #[command(flatten)]
        vault: VaultArguments,
        /// Keep points newer than this (90s, 15m, 24h, 7d); the newest point of a disk is always kept.
        #[arg(long)]
        retention: Option<String>,
        /// How long unreferenced data waits before it is deleted.
        #[arg(long, default_value = "1h")]
        grace: String,
        #[arg(long)]
        json: bool,
    },
    /// Run the splitter for one image: NBD on SOCKET, continuous replication into the vault's journal.
    /// Runs until interrupted (SIGINT or SIGTERM), then ships what is left and stops.
    ServeDisk {
        image: PathBuf,
        /// The unix socket QEMU (or any NBD client) opens the disk on.
        #[arg(long)]
        socket: PathBuf,
        #[command(flatten)]
        vault: VaultArguments,
        #[arg(long)]
        disk: String,
        /// A crash-consistent bookmark this often.
        #[arg(long, default_value = "5s")]
        bookmark_interval: String,
        /// Changes reach the vault at least this often.
        #[arg(long, default_value = "1s")]
        seal_interval: String,
        /// Memory for changes on their way to the vault, in MiB; beyond it
        /// (the vault is slow or down) only changed regions are tracked and
        /// re-read once the vault catches up.
        #[arg(long, default_value_t = 256)]
        queue_mib: u64,
        /// Serve the disk at once even when the vault cannot be opened
        /// (unreachable, gone, not mounted): it is tried again every second,
        /// changes are held, then tracked, as in an outage, and shipped
        /// once it opens. Without it, such a vault is an error at start.
        #[arg(long)]
        wait_for_vault: bool,
        /// The replication group of the disk's machine: the disk's points
        /// are the group's, made by the control plane in every member at
        /// once (no bookmark of its own every --bookmark-interval).
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Serve a disk at a recovery point over NBD, at once, without restoring it; writes go to an overlay.
    /// Runs until interrupted (SIGINT or SIGTERM); the overlay is kept.
    Export {
        #[command(flatten)]
        vault: VaultArguments,
        #[arg(long)]
        disk: String,
        /// latest, latest-app, a point id, or an RFC 3339 time.
        #[arg(long)]
        point: String,
        /// The unix socket to serve on.
        #[arg(long)]
        socket: PathBuf,
        /// Where writes go (default: SOCKET.overlay); must not exist yet.
        #[arg(long)]
        overlay: Option<PathBuf>,
        /// Copy the whole point into the overlay in the background, until the export no longer reads the
        /// vault (the written ranges are kept apart: they are what a reprotect ships).
        #[arg(long)]
        hydrate: bool,
    },
    /// Report a running splitter's state: caught up or not, and its lag.
    SplitterStatus {
        /// The splitter's NBD socket (as given to serve-disk).
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Ask a running splitter to record a named recovery point now.
    Mark {
        /// The splitter's NBD socket (as given to serve-disk).
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        app_consistent: bool,
        #[arg(long, default_value = "")]
        label: String,
        /// Answer as soon as the point has its place in the disk's change stream, without waiting for the vault
        /// to store it (for a guest frozen meanwhile); `points` lists it once stored.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Create a deployment: state, config, a primary and a recovery site with their vaults, the default policy.
    /// With --site and --listen: a host per site; this one holds the control plane and runs site NAME.
    Init {
        dir: PathBuf,
        /// The site this host runs (primary or recovery), in a deployment with a host per site; needs --listen.
        #[arg(long, requires = "listen")]
        site: Option<String>,
        /// The address and port of this host's TLS listener, as the other site's host reaches it.
        #[arg(long, requires = "site")]
        listen: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add this host to a deployment as the host of site NAME, with the join token file `init --site` made.
    Join {
        dir: PathBuf,
        /// The site this host runs (the one the control plane's host does not).
        #[arg(long)]
        site: String,
        /// The control plane's listener, https://ADDRESS:PORT.
        #[arg(long)]
        control: String,
        /// The join token file (DIR/join.token on the control plane's host).
        #[arg(long)]
        join_token: PathBuf,
        /// The address and port of this host's TLS listener, as the other site's host reaches it.
        #[arg(long)]
        listen: String,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a lost control plane on this host (made by `standby join`) from the control record in its
    /// site's vault: every machine, policy and protection relationship; then `standby serve` here holds the
    /// control plane. Makes a new CA, admin token and join token (the old CA's key was on the lost host).
    RecoverControl {
        dir: PathBuf,
        /// The vault holding the control record: this host's own site's vault (its folder or URL).
        #[arg(long)]
        vault: String,
        /// The vault's key file (default: DIR/keys/SITE.key, this host's copy).
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Define, list, start and stop machines.
    #[command(subcommand)]
    Machine(MachineCommand),
    /// Replication policies: RPO threshold, retention, app-consistent frequency, bookmark frequency.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Replication groups (`protect NAME --group G`): machines whose points are made together.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Recovery plans: the order machines come back in, steps around each group, health probes (a TOML file).
    #[command(subcommand)]
    Plan(PlanCommand),
    /// The daemon: runs the deployment's machines (both sites' agents) and serves the lifecycle commands
    /// over HTTP on HOME/run/standby.sock. Runs until interrupted (SIGINT or SIGTERM); it then waits up to a
    /// minute for running jobs, and leaves machines and replication running for the next daemon to adopt.
    Serve {
        #[command(flatten)]
        home: HomeArguments,
        /// Also serve operators over TLS at ADDR (as 127.0.0.1:7443): the API, for tokens made with
        /// `standby token create`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Also serve Prometheus' metrics (/metrics) over TLS at ADDR, without a token (they are on --listen
        /// too, with one).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Operators' API tokens: create (the secret is shown once, in a token file), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Raised alerts: RPO over threshold, replication stalled, a site unreachable, a vault error, an
    /// app-consistent point or a drill that failed.
    Alerts {
        /// With the newest cleared alerts too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Who did what: every request that acted, with the token that asked and the answer.
    Audit {
        /// The newest N entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Enable replication of a machine: initial replication into the vault, then every write, continuously.
    /// Works on a running machine (its disks move onto the splitters without a restart). Follows the job.
    Protect {
        name: String,
        /// The replication policy (default: `default`).
        #[arg(long)]
        policy: Option<String>,
        /// A replication group: the machine's points are made together with the group's other machines',
        /// one point consistent across all of them (`latest-group`).
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Disable replication: the machine's disks leave the splitters (still running), the last writes are shipped.
    /// The vault keeps what it holds.
    Unprotect {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// A drill: boot a copy of a protected machine at the recovery site from a point, at once, its NICs on the
    /// site's isolated test network, while replication carries on. Follows the job.
    TestFailover {
        name: String,
        /// latest (default), latest-processed, latest-app, a point id, or an RFC 3339 time.
        #[arg(long)]
        point: Option<String>,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Remove a drill: its copy, exports, overlays, sockets and logs (and say what was removed).
    CleanupTestFailover {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Unplanned failover: boot the machine at the recovery site from a point, at once. With --shutdown-source
    /// the source is shut down first (if it cannot be, the failover carries on and says why) and its last
    /// writes are waited for.
    Failover {
        name: String,
        /// latest (default), latest-processed, latest-app, a point id, or an RFC 3339 time.
        #[arg(long)]
        point: Option<String>,
        #[arg(long)]
        shutdown_source: bool,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Planned failover (or failback), losing no write. With --sync-first the machine keeps running and
    /// replicating, and waits in ready-to-complete for `complete-failover`; without, it is shut down, its last
    /// writes shipped, and started at the other site at once.
    PlannedFailover {
        name: String,
        #[arg(long)]
        sync_first: bool,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Finish a planned failover: shut the machine down, ship its last writes, start it at the other site;
    /// the job reports the downtime.
    CompleteFailover {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Before commit: boot the recovery VM again from another point (its writes so far are set aside, not deleted).
    ChangePoint {
        name: String,
        #[arg(long)]
        point: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Make a failover final.
    Commit {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Roll back an unfinished failover: the machine returns to its source, protected, replication resumed;
    /// the recovery VM's writes are set aside, not deleted.
    Cancel {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// After a committed failover, replicate the machine back to the site it came from, moving only the
    /// blocks that differ (the old source stays off). Follows the job.
    Reprotect {
        name: String,
        /// Leave the old source's disks untouched: every block is copied, and the machine's disks at the old
        /// site are built at new paths beside them (`NAME-diskN.alt-jobID.raw`, see `machine list`).
        #[arg(long)]
        alternate_location: bool,
        /// Overwrite writes the old source made after the failover began (a split brain).
        #[arg(long)]
        discard_source_writes: bool,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Replicated machines: state, health, current RPO, latest points.
    Status {
        name: Option<String>,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Jobs (every lifecycle operation is one) with their steps; with ID, one job.
    Jobs {
        id: Option<i64>,
        /// Follow until the job (or, without ID, every running job) has finished.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Each site: whether its host answers and since when, its address, its vault, the replication into it.
    Sites {
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Check whether /dev/kvm runs guests (used by the daemon, in a child process with a timeout).
    #[command(hide = true)]
    ProbeKvm,
    /// Run the whole disaster-recovery journey on a real guest under QEMU in a temporary deployment,
    /// narrating each step: protect, drill, failover, reprotect, planned failback, reprotect.
    Demo {
        /// Keep the demo's files in this directory (default: a temporary one, removed after).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The disk-level journey instead (a vault, sync, restore; no QEMU needed).
        #[arg(long)]
        disk: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Create a vault.
    Init {
        vault: String,
        /// Encrypt the vault with the key in this file (created with a random key if missing).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// zstd compression level for chunks (1 is faster, higher stores less).
        #[arg(long, default_value_t = standby_format::ZSTD_LEVEL_DEFAULT)]
        compression_level: i32,
        #[arg(long)]
        json: bool,
    },
}

/// Where the deployment is: --home, else $STANDBY_HOME, else the current directory.
#[derive(Args, Debug, Clone)]
pub struct HomeArguments {
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// A control plane on another host, https://ADDRESS:PORT (instead of the deployment in --home); needs
    /// --token-file.
    #[arg(long, env = "STANDBY_CONTROL", requires = "token_file")]
    pub control: Option<String>,
    /// The operator token file (DIR/admin.token of `init --site`), for --control.
    #[arg(long, env = "STANDBY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// What every command that runs a lifecycle job takes.
#[derive(Args, Debug, Clone)]
pub struct JobArguments {
    /// Print the job's id and return at once instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub home: HomeArguments,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make an operator token NAME and write it to a token file (readable by you only) for `--token-file`;
    /// its `token` field is what the API's `Authorization: Bearer` header and the console's sign-in take.
    Create {
        name: String,
        /// Look, never act.
        #[arg(long)]
        read_only: bool,
        /// The token file to write (must not exist; default NAME.token here).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// The tokens: name, role, when made and until when valid (never their secrets).
    List {
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Revoke token NAME: it opens nothing from now on.
    Revoke {
        name: String,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Check a plan file against the deployment (machines, groups, scripts); nothing is kept.
    Validate {
        file: PathBuf,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Check a plan file and keep it as the plan of its name.
    Create {
        file: PathBuf,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// One plan: its groups in order, their steps, its probes.
    Show {
        name: String,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Every plan.
    List {
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Forget a plan (its file is untouched).
    Delete {
        name: String,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// A drill of every machine of the plan, group by group, with the plan's steps; it waits for the
    /// machines' probes and reports the RTO.
    TestFailover {
        name: String,
        /// latest-group (default for a replication group's machines), latest, latest-app, or an RFC 3339 time.
        #[arg(long)]
        point: Option<String>,
        /// Remove the drill once it is measured (also when it failed).
        #[arg(long)]
        cleanup: bool,
        #[command(flatten)]
        job: JobArguments,
    },
    /// A drill now (test-failover --cleanup); with --every, one that often, run by the daemon (the first
    /// once due); --never stops them. A failed drill raises an alert.
    Drill {
        name: String,
        /// How often the daemon drills the plan (at least 1m), e.g. 7d.
        #[arg(long, conflicts_with = "never")]
        every: Option<String>,
        /// No more drills by the daemon.
        #[arg(long)]
        never: bool,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Remove the plan's drills, groups in reverse.
    CleanupTestFailover {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Unplanned failover of every machine of the plan, group by group, with the plan's steps.
    Failover {
        name: String,
        /// latest (default), latest-group, latest-app, or an RFC 3339 time.
        #[arg(long)]
        point: Option<String>,
        #[arg(long)]
        shutdown_source: bool,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Planned failover (or failback) of every machine of the plan, group by group, losing no write.
    PlannedFailover {
        name: String,
        #[arg(long)]
        sync_first: bool,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Finish the plan's planned failover with --sync-first, group by group.
    CompleteFailover {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Move every failed-over machine of the plan onto another point, group by group.
    ChangePoint {
        name: String,
        #[arg(long)]
        point: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Commit the failover of every machine of the plan.
    Commit {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Stop the plan's running job and undo what its runs did, groups in reverse (failovers cancelled,
    /// drills removed).
    Cancel {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Reprotect every machine of the plan.
    Reprotect {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
    /// Go on with the plan: past the manual step it waits at, or from where its last job failed or was
    /// interrupted (the steps done are not done again).
    Resume {
        name: String,
        #[command(flatten)]
        job: JobArguments,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Every replication group: its machines, its newest point, whether its points are being made.
    List {
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// One replication group: its machines, its newest points, its last attempt and what held it back.
    Show {
        name: String,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Define a policy; `standby protect NAME --policy P` chooses it.
    Add {
        name: String,
        /// Health turns critical when the RPO is over this.
        #[arg(long, default_value = "15m")]
        rpo_threshold: String,
        /// How far back any point can be restored.
        #[arg(long, default_value = "24h")]
        retention: String,
        /// An app-consistent point this often.
        #[arg(long, default_value = "60m")]
        app_consistent: String,
        /// A crash-consistent bookmark this often.
        #[arg(long, default_value = "5s")]
        bookmarks: String,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// List the policies.
    List {
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum MachineCommand {
    /// Define a machine; its disks (any image qemu-img reads) are imported as raw images at its site.
    Add {
        name: String,
        /// A disk image (repeat for more disks; the first is the boot disk), a path on the site's host.
        #[arg(long = "disk", required = true)]
        disks: Vec<PathBuf>,
        /// The site the machine runs at (primary, the default, or recovery), whose host imports the disks.
        #[arg(long)]
        site: Option<String>,
        #[arg(long, default_value_t = 256)]
        memory: u32,
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Boot this kernel directly (else the machine boots from its first disk): a path on the site's host.
        #[arg(long)]
        kernel: Option<PathBuf>,
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// The kernel command line.
        #[arg(long)]
        append: Option<String>,
        /// A network interface: NETWORK[,recovery=NETWORK][,mac=MAC][,model=MODEL]. NETWORK is a primary
        /// site network; at the recovery site it is plugged into `recovery=` or the one [network_map] in
        /// standby.toml names; drills use the site's isolated test network (repeat for more NICs). Static
        /// addresses set in the guest after it boots, per SITE (primary, recovery, drill):
        /// SITE-address=ADDRESS/PREFIX, SITE-gateway=IP, SITE-dns=IP+IP; apply=agent (qemu-guest-agent,
        /// the default) or apply=seed (a NoCloud seed disk for cloud-init).
        #[arg(long = "nic", value_name = "SPEC")]
        nics: Vec<String>,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Replace a machine's NICs (and their static addresses per site): every boot from now on has them
    /// (a failover, a drill, a failback, a start); an instance running now keeps the ones it booted with.
    #[command(name = "set-nics")]
    SetNics {
        name: String,
        /// A NIC, as `machine add --nic` takes it (repeat for more NICs): the whole list the machine has
        /// from now on, in order.
        #[arg(long = "nic", value_name = "SPEC", required = true)]
        nics: Vec<String>,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Boot a machine at its active site (needs `standby serve`).
    Start {
        name: String,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// Shut a machine down: ACPI power button, then forced after a timeout (needs `standby serve`).
    Stop {
        name: String,
        /// Cut the power at once.
        #[arg(long)]
        force: bool,
        /// Stop its instance at this site (primary or recovery) rather than at its active site: an old source
        /// left running by a failover.
        #[arg(long)]
        site: Option<String>,
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
    /// List machines: state, active site, and each disk's image at each site.
    List {
        #[command(flatten)]
        home: HomeArguments,
        #[arg(long)]
        json: bool,
    },
}

/// A duration as the command line takes it (`90s`, `15m`, `24h`, `7d`), or
/// an error naming the flag.
pub(crate) fn parse_duration(text: &str, flag: &str) -> anyhow::Result<std::time::Duration> {
    humantime::parse_duration(text)
        .map_err(|e| crate::bad_input(format!("{flag} {text:?} is not a duration ({e}); use e.g. 90s, 15m, 24h, 7d")))
}
