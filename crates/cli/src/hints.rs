//! The operator's next step after an error, said as a command line: the
//! daemon and the control crate name it as an operation
//! ([`standby_api::Hint`]); saying it is the CLI's part.

use standby_api::Hint;

/// `hint` as the CLI says it, e.g. "`standby machine start web` starts it".
pub fn say(hint: &Hint) -> String {
    match hint {
        Hint::StopMachine { machine, site: None } => format!("`standby machine stop {machine}` stops it"),
        Hint::StopMachine { machine, site: Some(site) } => {
            format!("`standby machine stop {machine} --site {site}` stops it")
        }
        Hint::StartMachine { machine } => format!("`standby machine start {machine}` starts it"),
        Hint::AddMachine => "`standby machine add` defines one".to_string(),
        Hint::ListMachines => "`standby machine list` shows it".to_string(),
        Hint::WatchJob { job } => format!("follow it with `standby jobs {job} --watch`"),
        Hint::ListJobs => "`standby jobs` lists them".to_string(),
        Hint::Status { machine } => format!("`standby status {machine}` shows it"),
        Hint::MakeDeployment => "run `standby init DIR`, or pass --home DIR or set STANDBY_HOME".to_string(),
        // A hint from a newer daemon: the message stands on its own.
        _ => String::new(),
    }
}

/// `message` followed by what `hint` says to do.
pub fn with_hint(message: &str, hint: Option<&Hint>) -> String {
    match hint.map(say).filter(|said| !said.is_empty()) {
        Some(said) => format!("{message}; {said}"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use standby_lifecycle::Site;

    #[test]
    fn every_hint_is_a_command_the_cli_has() {
        let hints = [
            Hint::StopMachine { machine: "web".into(), site: None },
            Hint::StopMachine { machine: "web".into(), site: Some(Site::Primary) },
            Hint::StartMachine { machine: "web".into() },
            Hint::AddMachine,
            Hint::ListMachines,
            Hint::WatchJob { job: 7 },
            Hint::ListJobs,
            Hint::Status { machine: "web".into() },
            Hint::MakeDeployment,
        ];
        for hint in hints {
            let said = say(&hint);
            let command = said.split('`').nth(1).unwrap_or_else(|| panic!("{hint:?} says no command: {said}"));
            let words: Vec<&str> = command.split_whitespace().skip(1).collect();
            let parsed = <crate::cli::Arguments as clap::Parser>::try_parse_from(
                std::iter::once("standby").chain(words.iter().copied()),
            );
            // (`machine add` names the command; its arguments are the operator's.)
            let known = match &parsed {
                Ok(_) => true,
                Err(e) => e.kind() == clap::error::ErrorKind::MissingRequiredArgument,
            };
            assert!(known, "{hint:?}: `{command}` is not a command: {:?}", parsed.err().map(|e| e.kind()));
        }
        assert_eq!(with_hint("no job 5", Some(&Hint::ListJobs)), "no job 5; `standby jobs` lists them");
        assert_eq!(with_hint("no job 5", None), "no job 5");
    }
}
