//! A vault as the processes that reach it name it: where it is and, for an
//! encrypted vault, the file holding its key (on the host that opens it).
//! Splitters and exports are started with both (`--vault`, `--key-file`:
//! a path, never the key itself); the daemon opens vaults with both.

use std::path::PathBuf;

use crate::error::ControlError;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VaultAddress {
    /// A folder or a URL (`az://`, `s3://`, …).
    pub location: String,
    /// The key of an encrypted vault; `None` for a vault stored in the clear.
    pub key_file: Option<PathBuf>,
    /// The site whose vault it is, when it is one of the deployment's two:
    /// the other site's host finds that vault by its own address for it.
    pub site: Option<standby_lifecycle::Site>,
}

impl VaultAddress {
    /// Opens the vault; a location that holds none is an error (see
    /// [`VaultAddress::open_or_not`]).
    pub fn open(&self) -> Result<standby_vault::Vault, ControlError> {
        match self.open_or_not()? {
            Some(vault) => Ok(vault),
            None => Err(ControlError::Failed(format!(
                "the vault {} is not there (no vault.config: moved, deleted, or its filesystem not mounted); \
                 bring it back where it was",
                self.location
            ))),
        }
    }

    /// Opens the vault, `None` when its location holds no vault.
    pub fn open_or_not(&self) -> Result<Option<standby_vault::Vault>, ControlError> {
        let backend = self.backend()?;
        let key = match &self.key_file {
            Some(path) => {
                Some((standby_vault::key_file::read(path).map_err(ControlError::Failed)?, path.display().to_string()))
            }
            None => None,
        };
        match standby_vault::Vault::open(backend, key) {
            Err(standby_vault::VaultError::NotAVault { .. }) => Ok(None),
            other => Ok(Some(other?)),
        }
    }

    /// Makes a new vault here, encrypted when the address has a key file
    /// (made with a new random key when it does not exist yet).
    pub fn init(&self) -> Result<standby_vault::Vault, ControlError> {
        let key = match &self.key_file {
            Some(path) => {
                if !path.exists() {
                    standby_vault::key_file::create(path).map_err(ControlError::Failed)?;
                }
                Some(standby_vault::key_file::read(path).map_err(ControlError::Failed)?)
            }
            None => None,
        };
        let options = standby_vault::InitOptions { key, ..standby_vault::InitOptions::default() };
        Ok(standby_vault::Vault::init(self.backend()?, options)?)
    }

    fn backend(&self) -> Result<std::sync::Arc<dyn standby_vault::backend::Backend>, ControlError> {
        let problem = |e: String| ControlError::Failed(format!("the vault {}: {e}", self.location));
        standby_link::open_location(&self.location).map_err(problem)
    }

    /// The arguments that name this vault to `standby serve-disk` and
    /// `standby export`.
    pub(crate) fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--vault".into(), self.location.clone().into()];
        if let Some(key) = &self.key_file {
            args.extend(["--key-file".into(), key.clone().into_os_string()]);
        }
        args
    }
}

impl std::fmt::Display for VaultAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location)
    }
}
