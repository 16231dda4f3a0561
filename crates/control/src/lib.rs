//! The control plane: a **deployment** (a directory holding a config file,
//! a SQLite state database, a primary and a recovery site on this host, and
//! the recovery site's vault), the machines defined in it, and (later in
//! this crate) the daemon that runs them on QEMU and the jobs that move them
//! between sites.
//!
//! Key types: [`Deployment`] (`init`, `open`), [`State`] (the database),
//! [`Machine`], [`Policy`].

pub mod addresses;
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
pub mod plans;
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
pub use state::{Job, Policy, State, Step, StoredPlan};

/// Entry points of `fuzz/` into decoders that are not this crate's API.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    /// A host agent's decoder of the control plane's requests, on untrusted
    /// bytes as its route reads a body: JSON, then an act with its paths
    /// placed under `home`. An act that decodes must survive the trip back
    /// to the wire and be read again as the same act.
    pub fn read_act(body: &[u8], home: &Path) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return };
        let Ok(act) = crate::site::remote::read_act(value, home) else { return };
        let mut again = serde_json::to_value(&act).expect("an act encodes");
        crate::site::remote::paths_to_wire(&mut again, home);
        let reread = crate::site::remote::read_act(again, home).expect("an encoded act decodes");
        assert_eq!(format!("{act:?}"), format!("{reread:?}"));
    }

    /// The control plane's decoder of an agent's answer: an outcome, a
    /// failure turned into the error it names.
    pub fn read_outcome(body: &[u8]) {
        if let Ok(outcome) = serde_json::from_slice::<crate::site::remote::Outcome>(body) {
            let _ = outcome.into_result();
        }
    }
}
