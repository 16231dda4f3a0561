//! The control plane: a **deployment** (a directory holding a config file,
//! a SQLite state database, a primary and a recovery site on this host, and
//! the recovery site's vault), the machines defined in it, and (later in
//! this crate) the daemon that runs them on QEMU and the jobs that move them
//! between sites.
//!
//! Key types: [`Deployment`] (`init`, `open`), [`State`] (the database),
//! [`Machine`], [`Policy`].

mod agent;
mod config;
pub mod control_records;
pub mod daemon;
mod deployment;
mod error;
pub mod guest_agent;
pub mod host;
mod machine;
pub mod network;
pub mod points;
mod process;
pub mod qemu;
pub mod records;
mod site;
mod state;
mod vaults;

pub use deployment::{Accel, Config, Deployment, SiteConfig, VaultAddress, CONFIG_FILE, KEYS_DIR, STATE_FILE};
pub use error::ControlError;
pub use machine::{import_disk, validate_machine_name, DiskDefinition, Machine, MachineDefinition};
pub use state::{Job, Policy, State, Step};
