//! One error body for every failed request, with a stable code.

use serde::{Deserialize, Serialize};
use standby_lifecycle::{Site, State};

/// What went wrong, for programs: stable across versions (add, don't rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed or names something impossible (400).
    BadRequest,
    /// No such machine, job or policy (404).
    NotFound,
    /// The machine's lifecycle state does not allow the command; the body
    /// names the state and the commands allowed (409).
    TransitionRefused,
    /// Something else stands in the way: the machine runs a job, is
    /// already running, a name is taken (409).
    Conflict,
    /// The daemon failed; the message says what (500).
    Internal,
    /// A request over the network without a valid operator token: none,
    /// not this deployment's, expired, revoked, or not an operator's (401).
    Unauthenticated,
    /// The token is valid but may not do this: a read-only token acting,
    /// or managing tokens (403).
    Forbidden,
    /// The route exists but not with that method (405).
    MethodNotAllowed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::TransitionRefused,
        ErrorCode::Conflict,
        ErrorCode::Internal,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::MethodNotAllowed,
    ];

    /// The HTTP status it is sent with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::TransitionRefused | ErrorCode::Conflict => 409,
            ErrorCode::Internal => 500,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::MethodNotAllowed => 405,
        }
    }

    /// Whether the caller can fix it (the CLI exits 2) rather than the
    /// daemon having failed (exit 1).
    pub fn is_bad_input(self) -> bool {
        self != ErrorCode::Internal
    }
}

/// The body of every answer that is not 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// One line naming what was wrong and what to do.
    pub message: String,
    /// For a refused transition: the machine's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// For a refused transition: the commands the state allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// What the caller can do about it, when there is one thing to do
    /// (each client says it its own way: the CLI as a command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<Hint>,
}

/// The operator's next step after an error, as an operation (not as
/// words: the message says what is wrong, the client says how to do this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "do", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Hint {
    /// Stop the machine (at that site).
    StopMachine {
        machine: String,
        site: Option<Site>,
    },
    StartMachine {
        machine: String,
    },
    /// Define a machine.
    AddMachine,
    ListMachines,
    /// Follow a job.
    WatchJob {
        job: i64,
    },
    ListJobs,
    /// Look at a machine's status.
    Status {
        machine: String,
    },
    /// Make a deployment, or name the one meant.
    MakeDeployment,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { code, message: message.into(), state: None, allowed: Vec::new(), hint: None }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_strings_with_their_statuses() {
        let names: Vec<String> = ErrorCode::ALL.iter().map(|c| serde_json::to_string(c).unwrap()).collect();
        assert_eq!(
            names,
            [
                "\"bad_request\"",
                "\"not_found\"",
                "\"transition_refused\"",
                "\"conflict\"",
                "\"internal\"",
                "\"unauthenticated\"",
                "\"forbidden\"",
                "\"method_not_allowed\""
            ]
        );
        assert_eq!(ErrorCode::ALL.map(ErrorCode::status), [400, 404, 409, 409, 500, 401, 403, 405]);
    }
}
