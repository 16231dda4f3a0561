//! Machines run as `qemu-system-x86_64` processes driven over QMP (QEMU's
//! JSON machine protocol, on a unix socket): start, status, ACPI power-down
//! with a timeout then quit, and the queries lifecycle checks need.
//!
//! The accelerator is a setting: `kvm` on a host with a working /dev/kvm,
//! `tcg` (software emulation) anywhere. `auto` probes KVM by running one
//! `hlt` instruction in a throw-away VM in a child process (`standby
//! probe-kvm`): a /dev/kvm that opens but never runs a guest (nested or
//! broken virtualisation) is caught by the child's timeout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::Accel;
use crate::error::ControlError;
use crate::process::{alive, last_line, Process};

/// Where a machine's disk comes from, as QEMU opens it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Drive {
    /// A raw image, opened directly (the machine is not replicated).
    File(PathBuf),
    /// An NBD export on a unix socket: a splitter (replicated) or an export
    /// of a recovery point (test failover, failover).
    Nbd { socket: PathBuf, export: String },
}

impl Drive {
    pub fn kind(&self) -> &'static str {
        match self {
            Drive::File(_) => "file",
            Drive::Nbd { .. } => "nbd",
        }
    }

    /// The `-blockdev` / `blockdev-add` options of the protocol node of disk
    /// `index`.
    fn protocol_node(&self, index: usize) -> Value {
        let node = format!("disk{index}-{}", self.kind());
        match self {
            Drive::File(path) => json!({
                "driver": "file", "node-name": node, "filename": path,
                "cache": {"direct": true}, "discard": "unmap",
            }),
            // A splitter or export that restarts (an upgrade, a crash) is
            // reconnected to; the guest's requests wait meanwhile.
            Drive::Nbd { socket, export } => json!({
                "driver": "nbd", "node-name": node, "export": export,
                "server": {"type": "unix", "path": socket}, "reconnect-delay": RECONNECT_DELAY_SECONDS,
            }),
        }
    }

    fn format_node(&self, index: usize) -> Value {
        json!({"driver": "raw", "node-name": format!("disk{index}"), "file": format!("disk{index}-{}", self.kind()),
               "discard": "unmap"})
    }
}

/// How long QEMU keeps a guest's disk requests waiting while it reconnects
/// to a splitter or export that went away.
const RECONNECT_DELAY_SECONDS: u64 = 60;

/// The file the format node of disk `index` is opened on, from
/// `query-named-block-nodes`.
fn opened_file(nodes: &[&Value], index: usize) -> Result<String, ControlError> {
    let format = format!("disk{index}");
    nodes
        .iter()
        .find(|node| node["node-name"] == format.as_str())
        .and_then(|node| node["file"].as_str())
        .map(str::to_string)
        .ok_or_else(|| ControlError::Failed(format!("QEMU has no disk {index}")))
}

/// The socket an NBD node's filename names (`nbd+unix:///EXPORT?socket=PATH`).
fn nbd_socket(filename: &str) -> Option<PathBuf> {
    let (_, socket) = filename.split_once("socket=")?;
    socket.split('&').next().filter(|s| !s.is_empty()).map(PathBuf::from)
}

/// How long QEMU waits for an NBD server that went away before it fails
/// the I/O (and a pause, which flushes every disk, waits with it).
pub const RECONNECT_DELAY: Duration = Duration::from_secs(RECONNECT_DELAY_SECONDS);

/// What QEMU is started with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QemuSpec {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    /// Each disk; the first is the boot disk.
    pub drives: Vec<Drive>,
    /// `-netdev`/`-device` arguments of its NICs (see `network`); none
    /// means no network device at all.
    pub network: Vec<String>,
    /// Its NICs' static addresses there, when any has one: a NoCloud seed
    /// disk is added for them, or the host's address keeper sets them
    /// through the guest agent.
    #[serde(default)]
    pub addresses: Option<crate::addresses::GuestAddresses>,
    /// `kvm` or `tcg` (resolved, never `auto`).
    pub accel: String,
    /// Where the QMP socket and the serial console log go.
    pub run_dir: PathBuf,
    /// The site's network namespace, if it has one.
    pub netns: Option<PathBuf>,
}

/// `kvm` or `tcg`, as a static name.
pub(crate) fn static_accelerator(name: &str) -> Option<&'static str> {
    match name {
        "kvm" => Some("kvm"),
        "tcg" => Some("tcg"),
        _ => None,
    }
}

/// A running QEMU and its QMP connection.
pub struct Qemu {
    process: Process,
    qmp: Qmp,
    pub console: PathBuf,
    pub qmp_socket: PathBuf,
    /// The guest agent's channel (a virtio-serial port named
    /// `org.qemu.guest_agent.0`), answered by qemu-guest-agent when the
    /// guest runs one.
    pub agent_socket: PathBuf,
    pid_file: PathBuf,
    /// The accelerator it runs with.
    pub accel: &'static str,
}

/// How a power-down ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stopped {
    /// The guest shut itself down after the ACPI request.
    Clean,
    /// It did not within the timeout; QEMU was told to quit.
    Forced,
    /// QEMU did not answer the power-down request (hung): it was killed.
    Unresponsive(String),
    /// Its power was cut without asking the guest.
    PowerCut,
}

impl Stopped {
    /// What happened to the guest, for a job's step.
    pub fn describe(&self) -> String {
        match self {
            Stopped::Clean => "shut down cleanly".into(),
            Stopped::Forced => "was forced off after the guest ignored the power button".into(),
            Stopped::Unresponsive(why) => format!("was hung and had its power cut ({why})"),
            Stopped::PowerCut => "powered off".into(),
        }
    }
}

/// How long a starting QEMU has to open its QMP socket.
const QMP_AT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a QEMU that failed at start has to write why to its log.
const FAILED_START_GRACE: Duration = Duration::from_millis(200);
/// How long an earlier daemon's QEMU has to answer on QMP when adopted.
const QMP_AT_ADOPTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a QEMU that closed QMP under us has to exit (one on its way
/// out after its guest powered off).
const EXIT_AFTER_QMP_CLOSED: Duration = Duration::from_secs(5);
/// How long QEMU has to exit after `quit`, before it is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long QEMU has to answer a power-down request before it is taken
/// for hung.
const HUNG_AFTER: Duration = Duration::from_secs(5);

impl Qemu {
    pub fn start(spec: &QemuSpec) -> Result<Qemu, ControlError> {
        let accel = static_accelerator(&spec.accel)
            .ok_or_else(|| ControlError::Failed(format!("'{}' is not an accelerator (kvm or tcg)", spec.accel)))?;
        std::fs::create_dir_all(&spec.run_dir).map_err(|e| ControlError::io(&spec.run_dir, e))?;
        let qmp_socket = spec.run_dir.join(format!("{}.qmp", spec.name));
        let console = spec.run_dir.join(format!("{}.console", spec.name));
        let pid_file = spec.run_dir.join(format!("{}.pid", spec.name));
        let log = spec.run_dir.join(format!("{}.log", spec.name));
        let agent_socket = spec.run_dir.join(format!("{}.qga", spec.name));
        let _ = std::fs::remove_file(&qmp_socket);
        let _ = std::fs::remove_file(&agent_socket);
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-name", &spec.name, "-accel", accel, "-smp", &spec.cpus.to_string()])
            .args(["-m", &spec.memory_mib.to_string(), "-display", "none", "-nodefaults", "-no-reboot"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_socket.display()))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-pidfile")
            .arg(&pid_file)
            // Paused until QMP is connected, so nothing the guest does is missed.
            .arg("-S")
            .arg("-chardev")
            .arg(format!("socket,id=agent,path={},server=on,wait=off", agent_socket.display()))
            .args(["-device", "virtio-serial-pci,id=serial0"])
            .args(["-device", "virtserialport,bus=serial0.0,chardev=agent,name=org.qemu.guest_agent.0"])
            .args(&spec.network);
        if let Some(kernel) = &spec.kernel {
            command.arg("-kernel").arg(kernel);
            if let Some(initrd) = &spec.initrd {
                command.arg("-initrd").arg(initrd);
            }
            if let Some(append) = &spec.append {
                command.args(["-append", append]);
            }
        }
        // Named block nodes (diskN over diskN-file or diskN-nbd), so a
        // running machine's disk can be moved onto a splitter and back.
        for (index, drive) in spec.drives.iter().enumerate() {
            command.arg("-blockdev").arg(drive.protocol_node(index).to_string());
            command.arg("-blockdev").arg(drive.format_node(index).to_string());
            command
                .args(["-device", &format!("virtio-blk-pci,drive=disk{index},id=vd{index},bootindex={}", index + 1)]);
        }
        if let Some(addresses) = spec.addresses.as_ref().filter(|a| a.apply == standby_api::AddressApply::Seed) {
            // After the machine's disks: their names in the guest stay.
            let seed = spec.run_dir.join(format!("{}.seed", spec.name));
            let hostname = spec.name.split('@').next().unwrap_or(&spec.name);
            crate::addresses::seed_image(&seed, addresses, hostname)?;
            let node = json!({"driver": "raw", "node-name": "seed", "read-only": true,
                "file": {"driver": "file", "filename": seed, "read-only": true}});
            command.arg("-blockdev").arg(node.to_string()).args(["-device", "virtio-blk-pci,drive=seed,id=seed"]);
        }
        crate::process::reserve_pid_file(&pid_file)?;
        let mut process = Process::spawn(
            &mut command,
            &log,
            "qemu-system-x86_64 (apt-get install qemu-system-x86)",
            spec.netns.as_deref(),
        )
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&pid_file);
        })?;
        let qmp = match Qmp::connect(&qmp_socket, Some((&mut process, &log)), QMP_AT_START_TIMEOUT) {
            Ok(qmp) => qmp,
            Err(e) => {
                // QEMU may open QMP and then fail (a kernel it cannot load):
                // its own message says why.
                std::thread::sleep(FAILED_START_GRACE);
                let error = if process.exited() { exited_at_start(&log) } else { e };
                process.kill();
                let _ = std::fs::remove_file(&qmp_socket);
                return Err(error);
            }
        };
        let mut qemu = Qemu { process, qmp, console, qmp_socket, agent_socket, pid_file, accel };
        if let Err(e) = qemu.qmp.execute("cont", json!({})) {
            qemu.kill();
            return Err(e);
        }
        Ok(qemu)
    }

    /// The QEMU a previous daemon started for machine `name` in `run_dir`,
    /// if it still runs: reconnected over its QMP socket.
    pub fn adopt(run_dir: &Path, name: &str) -> Result<Option<Qemu>, ControlError> {
        let pid_file = run_dir.join(format!("{name}.pid"));
        // `-pidfile PATH` names this deployment's QEMU alone (`-name` is the
        // same in two deployments with a machine of the same name).
        let Some(process) = Process::adopt(&pid_file, "-pidfile", pid_file.as_os_str()) else { return Ok(None) };
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", process.pid())).unwrap_or_default();
        let arguments: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let accel =
            if arguments.windows(2).any(|pair| pair[0] == b"-accel" && pair[1] == b"kvm") { "kvm" } else { "tcg" };
        let qmp_socket = run_dir.join(format!("{name}.qmp"));
        // A QEMU on its way out (its guest just powered off) closes QMP
        // under us: that one is not running any more.
        let mut process = process;
        let qmp = match Qmp::connect(&qmp_socket, None, QMP_AT_ADOPTION_TIMEOUT) {
            Ok(qmp) => qmp,
            Err(_) if process.wait_exit(EXIT_AFTER_QMP_CLOSED) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut qemu = Qemu {
            process,
            qmp,
            console: run_dir.join(format!("{name}.console")),
            qmp_socket,
            agent_socket: run_dir.join(format!("{name}.qga")),
            pid_file,
            accel,
        };
        match qemu.status() {
            Ok(status) if status == "prelaunch" => {
                // Started paused (`-S`) by a daemon that died before letting
                // it boot: the start never happened; it goes.
                qemu.kill();
                Ok(None)
            }
            Ok(_) => {
                qemu.remove_half_done_switches()?;
                Ok(Some(qemu))
            }
            Err(_) if qemu.process.wait_exit(EXIT_AFTER_QMP_CLOSED) => {
                qemu.forget();
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// QEMU's run state: "running", "paused", "shutdown", …
    pub fn status(&mut self) -> Result<String, ControlError> {
        let reply = self.qmp.execute("query-status", json!({}))?;
        Ok(reply["status"].as_str().unwrap_or("unknown").to_string())
    }

    /// Moves disk `index` of the running machine onto `to` (a splitter, back
    /// to its image, or from one NBD server to another), with the guest
    /// paused meanwhile so that no write goes to the old place after the
    /// new one took over: pausing drains every request in flight and
    /// flushes. The guest sees a pause of a few milliseconds, not an error.
    /// A guest the caller paused stays paused.
    pub fn switch_drive(&mut self, index: usize, to: &Drive) -> Result<(), ControlError> {
        let (current, leftovers) = self.protocol_nodes(index)?;
        for leftover in leftovers {
            // Added by a switch that never finished: it holds a name (and
            // maybe a connection) and nothing else.
            self.qmp.execute("blockdev-del", json!({"node-name": leftover}))?;
        }
        if matches!(to, Drive::File(_)) && current.starts_with(&format!("disk{index}-file")) {
            return Ok(());
        }
        // Each kind has two names, so one node can replace another of its kind.
        let mut node = to.protocol_node(index);
        let name = node["node-name"].as_str().expect("nodes have names").to_string();
        let name = if current == name { format!("{name}-b") } else { name };
        node["node-name"] = json!(name);
        let mut format = to.format_node(index);
        format["file"] = json!(name);
        let was_running = self.status()? == "running";
        self.qmp.execute("stop", json!({}))?;
        let switched = (|| {
            self.qmp.execute("blockdev-add", node.clone())?;
            if let Err(e) = self.qmp.execute("blockdev-reopen", json!({"options": [format]})) {
                let _ = self.qmp.execute("blockdev-del", json!({"node-name": name}));
                return Err(e);
            }
            self.qmp.execute("blockdev-del", json!({"node-name": current}))?;
            Ok(())
        })();
        if was_running {
            self.qmp.execute("cont", json!({}))?;
        }
        switched
    }

    /// Runs a raw QMP command (diagnostics, and tests that put QEMU in
    /// states a crash leaves behind).
    pub fn qmp(&mut self, command: &str, arguments: Value) -> Result<Value, ControlError> {
        self.qmp.execute(command, arguments)
    }

    /// Pauses the guest (its disk requests drained and flushed).
    pub fn pause(&mut self) -> Result<(), ControlError> {
        self.qmp.execute("stop", json!({})).map(|_| ())
    }

    /// Lets a paused guest run again.
    pub fn resume(&mut self) -> Result<(), ControlError> {
        self.qmp.execute("cont", json!({})).map(|_| ())
    }

    /// The name of the node disk `index` is opened on (`diskN-file`,
    /// `diskN-nbd`, or either with `-b`): the protocol node under the
    /// format node `diskN`.
    fn protocol_node(&mut self, index: usize) -> Result<String, ControlError> {
        Ok(self.protocol_nodes(index)?.0)
    }

    /// Removes the protocol nodes a daemon that died in the middle of
    /// `switch_drive` added and never opened, on every disk. It is done
    /// when adopting, while whatever such a node connects to (a splitter
    /// that may be stopped next) still runs: once its server is gone,
    /// every `stop` of the guest, which flushes every node, would wait out
    /// that node's reconnect delay.
    fn remove_half_done_switches(&mut self) -> Result<(), ControlError> {
        let nodes = self.qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
        let disks = nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|node| node["node-name"].as_str()?.strip_prefix("disk")?.parse::<usize>().ok())
            .collect::<Vec<_>>();
        for index in disks {
            for leftover in self.protocol_nodes(index)?.1 {
                self.qmp.execute("blockdev-del", json!({"node-name": leftover}))?;
            }
        }
        Ok(())
    }

    /// The protocol node disk `index` is opened on, and its other protocol
    /// nodes: leftovers of a switch a daemon died in the middle of (added,
    /// never opened by the format node). Which one is in use is told by
    /// the format node's file name, never by the order QEMU lists nodes in.
    fn protocol_nodes(&mut self, index: usize) -> Result<(String, Vec<String>), ControlError> {
        let nodes = self.qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
        let nodes: Vec<&Value> = nodes.as_array().into_iter().flatten().collect();
        let format = format!("disk{index}");
        let prefix = format!("disk{index}-");
        let opened = opened_file(&nodes, index)?;
        let protocol: Vec<&Value> = nodes
            .into_iter()
            .filter(|node| node["node-name"].as_str().is_some_and(|name| name.starts_with(&prefix)))
            .collect();
        let named = |node: &&Value| node["node-name"].as_str().unwrap_or_default().to_string();
        let in_use: Vec<String> = protocol.iter().filter(|node| node["file"] == opened.as_str()).map(named).collect();
        let current = match in_use.as_slice() {
            [one] => one.clone(),
            // Two nodes on the same file: the block graph says which is the child.
            _ => self.child_of(&format)?,
        };
        let others = protocol.iter().map(named).filter(|name| *name != current).collect();
        Ok((current, others))
    }

    /// The `file` child of node `parent`, from QEMU's block graph.
    fn child_of(&mut self, parent: &str) -> Result<String, ControlError> {
        let graph = self.qmp.execute("x-debug-query-block-graph", json!({}))?;
        let id_of = |name: &str| {
            graph["nodes"].as_array().into_iter().flatten().find(|n| n["name"] == name).map(|n| n["id"].clone())
        };
        let parent = id_of(parent).ok_or_else(|| ControlError::Failed(format!("QEMU has no node {parent}")))?;
        let child = graph["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|edge| edge["parent"] == parent && edge["name"] == "file")
            .map(|edge| edge["child"].clone());
        graph["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|node| Some(&node["id"]) == child.as_ref())
            .and_then(|node| node["name"].as_str())
            .map(str::to_string)
            .ok_or_else(|| ControlError::Failed("QEMU's block graph names no file under the disk".into()))
    }

    /// What disk `index` is opened from now: the protocol node's filename
    /// (an image path, or an NBD URI naming its socket).
    pub fn drive_filename(&mut self, index: usize) -> Result<String, ControlError> {
        let nodes = self.qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
        let nodes: Vec<&Value> = nodes.as_array().into_iter().flatten().collect();
        opened_file(&nodes, index)
    }

    /// The unix sockets of the NBD servers (splitters, exports) the
    /// machine's disks are opened on.
    pub fn nbd_sockets(&mut self) -> Result<Vec<PathBuf>, ControlError> {
        let nodes = self.qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
        let mut sockets: Vec<PathBuf> = nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|node| node["drv"] == "nbd")
            .filter_map(|node| node["file"].as_str().and_then(nbd_socket))
            .collect();
        sockets.sort();
        sockets.dedup();
        Ok(sockets)
    }

    pub fn drive_kind(&mut self, index: usize) -> Result<&'static str, ControlError> {
        let node = self.protocol_node(index)?;
        Ok(if node.starts_with(&format!("disk{index}-file")) { "file" } else { "nbd" })
    }

    /// Internal snapshots of the machine's disks (`info snapshots`): a
    /// machine with any cannot be reprotected safely.
    pub fn snapshots(&mut self) -> Result<Vec<String>, ControlError> {
        let reply = self.qmp.execute("human-monitor-command", json!({"command-line": "info snapshots"}))?;
        let text = reply.as_str().unwrap_or("");
        Ok(text
            .lines()
            .skip_while(|line| !line.trim_start().starts_with("ID"))
            .skip(1)
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.trim().to_string())
            .collect())
    }

    /// Asks the guest to shut down (ACPI power button); if it has not within
    /// `timeout`, tells QEMU to quit. Waits for the process to end.
    pub fn power_down(mut self, timeout: Duration) -> Result<Stopped, ControlError> {
        // QEMU answers at once; one that does not is hung (a stopped
        // process, a stuck host) and will not quit when asked either: its
        // power is cut rather than waited for.
        if let Err(e) = self.qmp.execute_within("system_powerdown", json!({}), HUNG_AFTER) {
            if self.running() {
                self.kill();
                return Ok(Stopped::Unresponsive(e.to_string()));
            }
        }
        if self.wait_exit(timeout) {
            return Ok(Stopped::Clean);
        }
        let _ = self.qmp.execute("quit", json!({}));
        if !self.wait_exit(QUIT_TIMEOUT) {
            self.kill();
        }
        Ok(Stopped::Forced)
    }

    /// Ends QEMU at once (the guest sees a power cut).
    pub fn kill(&mut self) {
        self.process.kill();
        self.forget();
    }

    fn forget(&self) {
        let _ = std::fs::remove_file(&self.qmp_socket);
        let _ = std::fs::remove_file(&self.agent_socket);
        let _ = std::fs::remove_file(&self.pid_file);
    }

    /// Whether the process has ended (reaping it when it is our child).
    pub fn exited(&mut self) -> bool {
        self.process.exited()
    }

    /// Whether the QEMU process is still there (without reaping it).
    pub fn running(&self) -> bool {
        alive(self.pid())
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let exited = self.process.wait_exit(timeout);
        if exited {
            self.forget();
        }
        exited
    }
}

fn exited_at_start(log: &Path) -> ControlError {
    ControlError::Failed(format!("QEMU exited at start: {}", last_line(log)))
}

/// How long a QMP command may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(30);

/// A QMP connection: one command at a time, events skipped.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path, mut child: Option<(&mut Process, &Path)>, timeout: Duration) -> Result<Qmp, ControlError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            if let Ok(stream) = UnixStream::connect(path) {
                break stream;
            }
            if let Some((child, log)) = child.as_mut() {
                if child.exited() {
                    return Err(exited_at_start(log));
                }
            }
            if Instant::now() > deadline {
                return Err(ControlError::Failed(format!("QEMU's QMP socket {} never opened", path.display())));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let io = |e| ControlError::io(path, e);
        stream.set_read_timeout(Some(QMP_TIMEOUT)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Qmp { reader: BufReader::new(stream), writer };
        let greeting = qmp.read_message(path)?;
        if greeting.get("QMP").is_none() {
            return Err(ControlError::Failed(format!("{} did not greet like QMP: {greeting}", path.display())));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read_message(&mut self, path: &Path) -> Result<Value, ControlError> {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).map_err(|e| ControlError::io(path, e))?;
        if read == 0 {
            return Err(ControlError::Failed("QEMU closed its QMP connection".into()));
        }
        serde_json::from_str(&line)
            .map_err(|e| ControlError::Failed(format!("QMP sent something not JSON ({e}): {line}")))
    }

    /// Runs a command that QEMU must answer within `timeout`.
    pub fn execute_within(
        &mut self,
        command: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<Value, ControlError> {
        let stream = self.reader.get_ref();
        let _ = stream.set_read_timeout(Some(timeout));
        // `execute` names the command and this timeout when it runs out.
        let result = self.execute(command, arguments);
        let _ = self.reader.get_ref().set_read_timeout(Some(QMP_TIMEOUT));
        result
    }

    /// Runs a command; returns its `return` value or its error.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, ControlError> {
        let request = json!({"execute": command, "arguments": arguments});
        let mut bytes = serde_json::to_vec(&request).expect("JSON serialises");
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .map_err(|e| ControlError::Failed(format!("QMP {command}: the connection to QEMU is gone ({e})")))?;
        let waited = self.reader.get_ref().read_timeout().ok().flatten().unwrap_or(QMP_TIMEOUT);
        loop {
            let message = self.read_message(Path::new("QMP")).map_err(|e| match e {
                ControlError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock => {
                    ControlError::Failed(format!(
                        "QEMU did not answer QMP {command} within {} s ({arguments})",
                        waited.as_secs()
                    ))
                }
                e => e,
            })?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(ControlError::Failed(format!(
                    "QMP {command} failed: {}",
                    error["desc"].as_str().unwrap_or("no description")
                )));
            }
            // An asynchronous event ({"event": ...}): not our answer.
        }
    }
}

/// The accelerator to run guests with, and why. `source` names where the
/// setting came from (the deployment's config, an environment variable).
pub fn resolve_accel(
    configured: Accel,
    source: &str,
    probe: impl FnOnce() -> Result<(), String>,
) -> (&'static str, String) {
    match configured {
        Accel::Tcg => ("tcg", format!("{source} says accel = \"tcg\"")),
        Accel::Kvm => ("kvm", format!("{source} says accel = \"kvm\"")),
        Accel::Auto => match probe() {
            Ok(()) => ("kvm", "/dev/kvm runs guests".into()),
            Err(why) => ("tcg", format!("software emulation: {why}")),
        },
    }
}

/// Probes KVM in a child process (`exe probe-kvm`) that must report
/// success within `timeout`: a KVM that hangs is as unusable as none.
pub fn probe_kvm_in_child(exe: &Path, timeout: Duration) -> Result<(), String> {
    if !Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm is missing".into());
    }
    let mut child = Command::new(exe)
        .arg("probe-kvm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("the KVM probe could not start: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(_)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                return Err(stderr.trim().to_string());
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("/dev/kvm did not run a guest instruction within {timeout:?}"));
            }
        }
    }
}

/// Runs one `hlt` in a fresh KVM virtual machine (the reset vector of a
/// 4 KiB page at the top of the 32-bit space). For `standby probe-kvm`:
/// may hang on a broken KVM, which is why it runs in a child.
pub fn probe_kvm() -> Result<(), String> {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
    const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
    const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
    const KVM_RUN: libc::c_ulong = 0xAE80;
    const KVM_EXIT_HLT: u32 = 5;

    #[repr(C)]
    struct MemoryRegion {
        slot: u32,
        flags: u32,
        guest_phys_addr: u64,
        memory_size: u64,
        userspace_addr: u64,
    }

    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain KVM ioctls on descriptors this function owns, with
    // arguments laid out as <linux/kvm.h> defines them; the guest page and
    // the run area are mappings this function creates and never frees
    // (the process exits right after the probe).
    unsafe {
        let kvm = libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if kvm < 0 {
            return Err(os("cannot open /dev/kvm"));
        }
        if libc::ioctl(kvm, KVM_GET_API_VERSION, 0) != 12 {
            return Err("/dev/kvm speaks an unknown API version".into());
        }
        let vm = libc::ioctl(kvm, KVM_CREATE_VM, 0);
        if vm < 0 {
            return Err(os("KVM_CREATE_VM"));
        }
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if page == libc::MAP_FAILED {
            return Err(os("mmap"));
        }
        // The reset vector is physical 0xFFFFFFF0: offset 0xFF0 of this page.
        *(page as *mut u8).add(0xFF0) = 0xF4; // hlt
        let region = MemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0xFFFF_F000,
            memory_size: 4096,
            userspace_addr: page as u64,
        };
        if libc::ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0 {
            return Err(os("KVM_SET_USER_MEMORY_REGION"));
        }
        let vcpu = libc::ioctl(vm, KVM_CREATE_VCPU, 0);
        if vcpu < 0 {
            return Err(os("KVM_CREATE_VCPU"));
        }
        let size = libc::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
        if size <= 0 {
            return Err(os("KVM_GET_VCPU_MMAP_SIZE"));
        }
        let run = libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu,
            0,
        );
        if run == libc::MAP_FAILED {
            return Err(os("mmap of the vCPU"));
        }
        if libc::ioctl(vcpu, KVM_RUN, 0) < 0 {
            return Err(os("KVM_RUN"));
        }
        // struct kvm_run: request_interrupt_window u8, immediate_exit u8, padding [6], exit_reason u32.
        let exit_reason = *((run as *const u8).add(8) as *const u32);
        if exit_reason != KVM_EXIT_HLT {
            return Err(format!("the KVM probe guest exited with reason {exit_reason}, not hlt"));
        }
    }
    Ok(())
}

/// A stronger KVM check for machines that boot a kernel: starts it under
/// KVM with no root device and waits for it to get as far as looking for
/// one (or to panic trying), which takes a second or two on a working KVM.
/// Some nested hosts run simple code under KVM but hang a real kernel
/// early (seen here: "Physical KASLR disabled: no suitable memory region",
/// then nothing); the `hlt` probe cannot see that, this one does.
pub fn probe_kvm_boot(kernel: &Path, run_dir: &Path, timeout: Duration) -> Result<(), String> {
    let console = run_dir.join(format!("kvm-probe-{}.console", std::process::id()));
    let _ = std::fs::remove_file(&console);
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64 could not start: {e}"))?;
    let deadline = Instant::now() + timeout;
    let booted = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains("VFS:") || text.contains("Kernel panic") || text.contains("Run /init") {
            break true;
        }
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&console);
    if booted {
        Ok(())
    } else {
        Err(format!("a kernel started under KVM did not get to mounting its root within {timeout:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_of_an_nbd_node_is_read_from_its_filename() {
        let read = |filename| nbd_socket(filename).map(|p| p.display().to_string());
        assert_eq!(
            read("nbd+unix:///web.disk0?socket=/d/run/disks/web.disk0.sock").as_deref(),
            Some("/d/run/disks/web.disk0.sock")
        );
        assert_eq!(read("nbd+unix:///d?socket=/x.sock&other=1").as_deref(), Some("/x.sock"));
        assert_eq!(read("/d/sites/primary/disks/web-disk0.raw"), None);
        assert_eq!(read("nbd+unix:///d?socket="), None);
    }
}
