//! A deployment on disk:
//!
//! ```text
//! DIR/standby.toml               the config (written last by `init`: its presence means "a deployment")
//! DIR/state.db                   SQLite: policies, machines, disks, jobs
//! DIR/run/                       sockets, consoles and pid files of running things
//! DIR/sites/primary/disks/       the primary site's disk images
//! DIR/sites/recovery/disks/      the recovery site's disk images
//! DIR/sites/recovery/vault/      the vault at the recovery site (replication into it)
//! DIR/sites/primary/vault/       the vault at the primary site (reverse replication after a reprotect)
//! DIR/keys/SITE.key              the key of each site's vault (both vaults are encrypted)
//! ```
//!
//! Everything in DIR is the service's user's alone: the folder is 0700 and
//! what Standby writes in it 0600 (the binary runs with umask 077).
//!
//! Paths in the config are relative to DIR, so a deployment can be moved.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use standby_lifecycle::Site;

pub use crate::config::{Accel, Config, SiteConfig};
use crate::error::ControlError;
use crate::state::State;
pub use crate::vaults::VaultAddress;

pub const CONFIG_FILE: &str = "standby.toml";
pub const STATE_FILE: &str = "state.db";
/// The daemon's socket, in `run/`.
pub const SOCKET: &str = "standby.sock";
/// The vaults' keys.
pub const KEYS_DIR: &str = "keys";

pub struct Deployment {
    pub home: PathBuf,
    pub config: Config,
    pub state: State,
    /// In a deployment with a host per site: the other site's host, where
    /// this one reaches it (the control plane's address for a joined
    /// host; the joined host's, once it joined, for the control plane).
    pub other_host: Option<(Site, std::net::SocketAddr)>,
}

impl Deployment {
    /// Creates a deployment in `dir` (which must not exist or be empty):
    /// both sites' folders, both sites' vaults (encrypted, their keys in
    /// `keys/`), the state with the default policy, then the config. On
    /// failure nothing is left behind.
    pub fn init(dir: &Path) -> Result<Deployment, ControlError> {
        Self::make(dir, Config::default_for_init(), |_, _| Ok(()))
    }

    /// Makes a deployment in `dir` configured by `config`: its folders, its
    /// state, what `prepare` adds (given the folder and the state: a host's
    /// certificates and tokens, the keys a joining host received), the
    /// vaults of the sites it runs, and the config last. On failure nothing
    /// is left behind.
    pub(crate) fn make(
        dir: &Path,
        config: Config,
        prepare: impl FnOnce(&Path, &State) -> Result<(), ControlError>,
    ) -> Result<Deployment, ControlError> {
        let existed = Self::check_new_dir(dir)?;
        let result = Self::create(dir, config, prepare);
        if result.is_err() {
            // Leave the directory as it was.
            if existed {
                if let Ok(entries) = fs::read_dir(dir) {
                    for entry in entries.flatten() {
                        let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
                    }
                }
            } else {
                let _ = fs::remove_dir_all(dir);
            }
        }
        result
    }

    /// Refuses a folder that holds a deployment or anything else; says
    /// whether it exists (empty).
    pub(crate) fn check_new_dir(dir: &Path) -> Result<bool, ControlError> {
        if dir.join(CONFIG_FILE).exists() {
            return Err(ControlError::Refused(format!(
                "{} is already a Standby deployment; use it with --home {}",
                dir.display(),
                dir.display()
            )));
        }
        let existed = dir.exists();
        if existed {
            if !dir.is_dir() {
                return Err(ControlError::Refused(format!("{} exists and is not a directory", dir.display())));
            }
            let mut entries = fs::read_dir(dir).map_err(|e| ControlError::io(dir, e))?;
            if entries.next().is_some() {
                return Err(ControlError::Refused(format!(
                    "{} is not empty; give a new or empty directory for the deployment",
                    dir.display()
                )));
            }
        }
        Ok(existed)
    }

    fn create(
        dir: &Path,
        config: Config,
        prepare: impl FnOnce(&Path, &State) -> Result<(), ControlError>,
    ) -> Result<Deployment, ControlError> {
        let folders = [config.primary.disks.clone(), config.recovery.disks.clone(), "run".into(), KEYS_DIR.into()];
        for folder in folders {
            let path = dir.join(folder);
            fs::create_dir_all(&path).map_err(|e| ControlError::io(&path, e))?;
        }
        // The folder may have been made (empty) by the operator with a
        // laxer mode; what it will hold is for the service's user only.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| ControlError::io(dir, e))?;
        let home = dir.canonicalize().map_err(|e| ControlError::io(dir, e))?;
        let state = State::create(&home.join(STATE_FILE))?;
        prepare(&home, &state)?;
        // A host keeps the vault of its own site (replication into it);
        // one process running both sites keeps both.
        let sites = match &config.host {
            Some(host) => vec![host.site],
            None => vec![Site::Recovery, Site::Primary],
        };
        for site in sites {
            vault_address(&home, &config, None, site).init()?;
        }
        write_config(&home, &config)?;
        Ok(Deployment { home, config, state, other_host: None })
    }

    /// Opens the deployment at `home`.
    pub fn open(home: &Path) -> Result<Deployment, ControlError> {
        let config = Self::read_config(home)?;
        let home = home.canonicalize().map_err(|e| ControlError::io(home, e))?;
        let state = State::open(&home.join(STATE_FILE))?;
        let other_host = other_host(&config, &state)?;
        Ok(Deployment { home, config, state, other_host })
    }

    /// The config of the deployment at `home`, checked.
    pub fn read_config(home: &Path) -> Result<Config, ControlError> {
        let config_path = home.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(ControlError::NoDeployment { path: home.to_path_buf(), file: CONFIG_FILE });
        }
        let text = fs::read_to_string(&config_path).map_err(|e| ControlError::io(&config_path, e))?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| ControlError::Refused(format!("{} is not a valid config: {e}", config_path.display())))?;
        crate::network::check_config(&config)?;
        for (site, limits) in &config.sites {
            limits
                .bandwidth()
                .map_err(|e| ControlError::Refused(format!("{} [sites.{site}]: {e}", config_path.display())))?;
        }
        Ok(config)
    }

    /// Where the deployment is: `--home`, else `$STANDBY_HOME`, else the
    /// current directory.
    pub fn locate(home: Option<&Path>) -> PathBuf {
        home.map(Path::to_path_buf)
            .or_else(|| std::env::var_os("STANDBY_HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// A path of the config, made absolute.
    pub fn path(&self, relative: &Path) -> PathBuf {
        self.home.join(relative)
    }

    /// The recovery site's vault.
    pub fn vault(&self) -> VaultAddress {
        self.vault_at(Site::Recovery)
    }

    /// The vault at `site`: where replication into that site goes.
    pub fn vault_at(&self, site: Site) -> VaultAddress {
        vault_address(&self.home, &self.config, self.other_host, site)
    }

    /// Opens the vault at `site`. A location holding no vault (its folder
    /// moved or deleted, its filesystem not mounted) is never made one
    /// here: replication into it would go where the real vault never sees
    /// it. `init` makes each site's vault.
    pub fn open_vault_at(&self, site: Site) -> Result<standby_vault::Vault, ControlError> {
        let vault = self.vault_at(site);
        match vault.open_or_not() {
            Ok(Some(vault)) => Ok(vault),
            Ok(None) => Err(ControlError::Failed(format!(
                "the {site} site's vault {vault} is not there (no vault.config: moved, deleted, or its filesystem not \
                 mounted); bring it back where it was"
            ))),
            Err(e) => Err(ControlError::Failed(format!("the {site} site's vault: {e}"))),
        }
    }

    /// The network namespace of `site`'s processes, as a file.
    pub fn netns(&self, site: Site) -> Option<PathBuf> {
        let name = self.config.site(site).netns.as_ref()?;
        Some(if name.starts_with('/') { PathBuf::from(name) } else { Path::new("/run/netns").join(name) })
    }

    /// The daemon's socket of the deployment at `home`, without opening its
    /// state: refused when `home` holds no deployment.
    pub fn socket_of(home: &Path) -> Result<PathBuf, ControlError> {
        if !home.join(CONFIG_FILE).is_file() {
            return Err(ControlError::NoDeployment { path: home.to_path_buf(), file: CONFIG_FILE });
        }
        Ok(home.join("run").join(SOCKET))
    }

    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }
}

impl Deployment {
    /// Defines a machine: imports its disks (any image `qemu-img` reads) as
    /// raw images at `site` and records it there, unprotected. On failure
    /// nothing is left behind.
    pub fn add_machine(
        &mut self,
        definition: &crate::MachineDefinition,
        sources: &[PathBuf],
        site: Site,
    ) -> Result<crate::Machine, ControlError> {
        self.add_machine_at(definition, sources, site, None)
    }

    /// [`Deployment::add_machine`] with the disks imported by `host`, the
    /// host of `site` (the paths are that host's), or here.
    pub(crate) fn add_machine_at(
        &mut self,
        definition: &crate::MachineDefinition,
        sources: &[PathBuf],
        site: Site,
        host: Option<&dyn crate::site::SiteHost>,
    ) -> Result<crate::Machine, ControlError> {
        let exists = |path: &Path| host.map_or_else(|| path.exists(), |host| host.is_file(path));
        let is_file = |path: &Path| host.map_or_else(|| path.is_file(), |host| host.is_file(path));
        let import = |source: &Path, target: &Path| match host {
            Some(host) => host.import_disk(source, target),
            None => crate::import_disk(source, target).map(|_| ()),
        };
        crate::validate_machine_name(&definition.name)?;
        if sources.is_empty() {
            return Err(ControlError::Refused("a machine needs at least one --disk".into()));
        }
        if definition.cpus == 0 || definition.memory_mib < 16 {
            return Err(ControlError::Refused("a machine needs at least 1 CPU and 16 MiB of memory".into()));
        }
        // The QEMU that boots the machine reads them: paths on its host.
        let remote = host.is_some_and(|host| host.is_remote());
        let at = if remote { format!(" at the {site} site's host") } else { String::new() };
        for (flag, path) in [("--kernel", &definition.kernel), ("--initrd", &definition.initrd)] {
            let Some(path) = path.as_ref() else { continue };
            if remote && !path.is_absolute() {
                return Err(ControlError::Refused(format!("{flag} {}: give the full path{at}", path.display())));
            }
            if !is_file(path) {
                return Err(ControlError::Refused(format!(
                    "{flag} {} does not exist{at} or is not a file",
                    path.display()
                )));
            }
        }
        if definition.kernel.is_none() && (definition.initrd.is_some() || definition.append.is_some()) {
            return Err(ControlError::Refused("--initrd and --append need --kernel".into()));
        }
        // Checked again when recorded; here so no disk is imported in vain.
        if self.state.machines()?.iter().any(|m| m.definition.name == definition.name) {
            return Err(crate::state::machine_exists(&definition.name));
        }
        // Another host's paths are kept as given (checked absolute above).
        let absolute = |path: &Option<PathBuf>| -> Result<Option<PathBuf>, ControlError> {
            match remote {
                true => Ok(path.clone()),
                false => path.as_ref().map(|p| p.canonicalize().map_err(|e| ControlError::io(p, e))).transpose(),
            }
        };
        // NICs are stored resolved: both sites' networks and the MAC.
        let nics = crate::network::nics(&definition.nics, &definition.name, &self.config)?;
        let definition = crate::MachineDefinition {
            kernel: absolute(&definition.kernel)?,
            initrd: absolute(&definition.initrd)?,
            nics: nics.iter().map(crate::network::Nic::spec).collect(),
            ..definition.clone()
        };
        let mut disks = Vec::new();
        let mut imported: Vec<PathBuf> = Vec::new();
        let result = (|| {
            for (position, source) in sources.iter().enumerate() {
                let file = format!("{}-disk{position}.raw", definition.name);
                let disk = crate::DiskDefinition {
                    vault_disk: format!("{}.disk{position}", definition.name),
                    primary_path: self.path(&self.config.primary.disks).join(&file),
                    recovery_path: self.path(&self.config.recovery.disks).join(&file),
                };
                let target = disk.image_at(site);
                if exists(target) {
                    return Err(ControlError::Refused(format!(
                        "{} already exists at the {site} site; remove it or choose another machine name",
                        target.display()
                    )));
                }
                import(source, target)?;
                imported.push(target.to_path_buf());
                disks.push(disk);
            }
            self.state.add_machine(&definition, &disks, site)
        })();
        if let Err(e) = result {
            match host {
                Some(host) => drop(host.remove_files(&imported)),
                None => imported.iter().for_each(|path| drop(std::fs::remove_file(path))),
            }
            return Err(e);
        }
        self.state.machine(&definition.name)
    }

    /// Replaces machine `name`'s NICs with `specs` (as `machine add --nic`
    /// takes them), checked whole before any is kept. The machine's
    /// instances boot with them from then on (a failover, a drill, a
    /// failback, a start); one running now keeps the NICs it booted with.
    /// A recovery plan that holds now and would not with them (a probe
    /// reaching the machine at the static address it would no longer have)
    /// refuses them.
    pub fn set_nics(&self, name: &str, specs: &[String]) -> Result<crate::Machine, ControlError> {
        let machine = self.state.machine(name)?;
        let nics = crate::network::nics(specs, name, &self.config)?;
        let stored: Vec<String> = nics.iter().map(crate::network::Nic::spec).collect();
        if stored == machine.definition.nics {
            return Ok(machine);
        }
        let now = self.state.machines()?;
        let mut then = now.clone();
        for other in then.iter_mut().filter(|other| other.name() == name) {
            other.definition.nics = stored.clone();
        }
        for plan in self.state.plans()? {
            let check = |machines: &[crate::Machine]| {
                crate::plans::check_plan(&plan.source, &plan.file, &plan.base, machines).map(drop)
            };
            if let (Ok(()), Err(e)) = (check(&now), check(&then)) {
                return Err(ControlError::Refused(format!(
                    "recovery plan '{}' would no longer hold with these NICs ({e}): keep what it needs, or change \
                     the plan first",
                    plan.name
                )));
            }
        }
        self.state.set_machine_nics(name, &stored)?;
        self.state.machine(name)
    }
}

/// The vault at `site` of the deployment at `home` configured by `config`.
/// A vault in a folder of the other site's host is reached through that
/// host (`standby://ADDRESS/SITE`).
fn vault_address(
    home: &Path,
    config: &Config,
    other_host: Option<(Site, std::net::SocketAddr)>,
    site: Site,
) -> VaultAddress {
    let configured = match site {
        Site::Primary => config.primary.vault.clone().unwrap_or_else(|| "sites/primary/vault".into()),
        Site::Recovery => config.recovery.vault.clone().unwrap_or_else(|| config.vault.clone()),
    };
    let location = match other_host {
        _ if configured.contains("://") => configured,
        Some((other, address)) if other == site => {
            standby_link::RemoteLocation { address, site: site.name().to_string() }.to_string()
        }
        _ => home.join(&configured).display().to_string(),
    };
    let key_file = config.site(site).vault_key.as_ref().map(|key| home.join(key));
    VaultAddress { location, key_file, site: Some(site) }
}

/// Writes `config` as the config of the deployment at `home` (whole or
/// not at all: a new file moved over the old).
pub(crate) fn write_config(home: &Path, config: &Config) -> Result<(), ControlError> {
    let text = format!(
        "# A Standby deployment, made by `standby init`. Paths are relative to this folder.\n{}",
        toml::to_string_pretty(config).map_err(|e| ControlError::Failed(format!("config: {e}")))?
    );
    let config_path = home.join(CONFIG_FILE);
    let partial = home.join(format!("{CONFIG_FILE}.partial"));
    fs::write(&partial, text).map_err(|e| ControlError::io(&partial, e))?;
    fs::rename(&partial, &config_path).map_err(|e| ControlError::io(&config_path, e))
}

/// The other site's host of a deployment with a host per site, as far as
/// this host knows it.
fn other_host(config: &Config, state: &State) -> Result<Option<(Site, std::net::SocketAddr)>, ControlError> {
    let Some(host) = &config.host else { return Ok(None) };
    let other = host.site.other();
    if let Some(control) = &host.control {
        let address = standby_link::client::parse_control_url(control).map_err(ControlError::Failed)?;
        return Ok(Some((other, address)));
    }
    let joined = state.hosts()?.into_iter().find(|joined| joined.site == other);
    match joined {
        Some(joined) => {
            let address = joined.address.parse().map_err(|_| {
                ControlError::Failed(format!("the state holds '{}' as the {other} site's host address", joined.address))
            })?;
            Ok(Some((other, address)))
        }
        None => Ok(None),
    }
}
