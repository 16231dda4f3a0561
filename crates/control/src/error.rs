use std::path::PathBuf;

/// Why a control-plane operation failed. [`ControlError::is_bad_input`]
/// splits the operator's mistakes (exit 2) from failures (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The operator asked for something that cannot be: the message says
    /// what and what to do instead.
    #[error("{0}")]
    Refused(String),
    /// No machine, job or policy of that name.
    #[error("{0}")]
    NotFound(String),
    /// Something stands in the way: a job runs, the machine already runs,
    /// the name is taken, the old source still runs.
    #[error("{0}")]
    Conflict(String),
    /// The machine's lifecycle state does not accept the command.
    #[error("machine '{machine}': {refusal}")]
    Transition { machine: String, refusal: standby_lifecycle::Refusal },
    #[error("no Standby deployment at {path} (no {file})")]
    NoDeployment { path: PathBuf, file: &'static str },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the state database {path}: {source}")]
    State { path: PathBuf, source: rusqlite::Error },
    #[error("{0}")]
    Vault(#[from] standby_vault::VaultError),
    #[error("{0}")]
    Failed(String),
    /// An error with the operator's next step (clients say it their way).
    #[error("{error}")]
    Hinted { error: Box<ControlError>, hint: standby_api::Hint },
}

impl ControlError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            ControlError::Refused(_)
            | ControlError::NotFound(_)
            | ControlError::Conflict(_)
            | ControlError::Transition { .. }
            | ControlError::NoDeployment { .. } => true,
            ControlError::Vault(e) => e.is_bad_input(),
            ControlError::Hinted { error, .. } => error.is_bad_input(),
            ControlError::Io { .. } | ControlError::State { .. } | ControlError::Failed(_) => false,
        }
    }

    /// The API's code for it.
    pub fn code(&self) -> standby_api::ErrorCode {
        use standby_api::ErrorCode;
        match self {
            ControlError::Hinted { error, .. } => error.code(),
            ControlError::NotFound(_) | ControlError::NoDeployment { .. } => ErrorCode::NotFound,
            ControlError::Conflict(_) => ErrorCode::Conflict,
            ControlError::Transition { .. } => ErrorCode::TransitionRefused,
            _ if self.is_bad_input() => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }

    /// The API's error body for it: the code, the message, for a refused
    /// transition the state and the commands it allows, and the hint.
    pub fn body(&self) -> standby_api::ErrorBody {
        let mut body = match self {
            ControlError::Hinted { error, .. } => error.body(),
            _ => standby_api::ErrorBody::new(self.code(), self.to_string()),
        };
        if let ControlError::Transition { refusal, .. } = self {
            body.state = Some(refusal.state);
            body.allowed = refusal.allowed.iter().map(|command| command.name().to_string()).collect();
        }
        body.hint = self.hint();
        body
    }

    /// The error with the operator's next step.
    pub fn with_hint(self, hint: standby_api::Hint) -> ControlError {
        ControlError::Hinted { error: Box::new(self), hint }
    }

    /// What the operator can do about it, when there is one thing to do.
    pub fn hint(&self) -> Option<standby_api::Hint> {
        match self {
            ControlError::Hinted { hint, .. } => Some(hint.clone()),
            ControlError::NoDeployment { .. } => Some(standby_api::Hint::MakeDeployment),
            _ => None,
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> ControlError {
        ControlError::Io { path: path.to_path_buf(), source }
    }
}
