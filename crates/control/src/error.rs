use std::path::PathBuf;

/// Why a control-plane operation failed. [`ControlError::is_bad_input`]
/// splits the operator's mistakes (exit 2) from failures (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The operator asked for something that cannot be: the message says
    /// what and what to do instead.
    #[error("{0}")]
    Refused(String),
    #[error(
        "no Standby deployment at {path} (no {file}): run `standby init DIR`, or pass --home DIR or set STANDBY_HOME"
    )]
    NoDeployment { path: PathBuf, file: &'static str },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the state database {path}: {source}")]
    State { path: PathBuf, source: rusqlite::Error },
    #[error("{0}")]
    Vault(#[from] standby_vault::VaultError),
    #[error("{0}")]
    Failed(String),
}

impl ControlError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            ControlError::Refused(_) | ControlError::NoDeployment { .. } => true,
            ControlError::Vault(e) => e.is_bad_input(),
            ControlError::Io { .. } | ControlError::State { .. } | ControlError::Failed(_) => false,
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> ControlError {
        ControlError::Io { path: path.to_path_buf(), source }
    }
}
