//! `standby`: the command-line edge. It parses arguments, opens vaults,
//! calls the library crates, and renders results as text or `--json`.
//! Nothing here decides anything about data: the engines do.
//!
//! Exit codes: 0 success; 1 failure (including a damaged vault found by
//! `verify`); 2 bad input or a refused operation. Errors are one line on
//! stderr naming what was wrong and what to do.

mod agent_commands;
mod cli;
mod commands;
mod demo;
mod hints;
#[cfg(feature = "guest-demo")]
mod journey;
mod lifecycle;
mod output;
mod vault_commands;

use std::process::ExitCode;

use clap::Parser;

/// An operator's mistake: exit code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<BadInput>() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<standby_vault::VaultError>() {
            return if e.is_bad_input() { 2 } else { 1 };
        }
        if let Some(e) = cause.downcast_ref::<standby_control::ControlError>() {
            return if e.is_bad_input() { 2 } else { 1 };
        }
        if let Some(e) = cause.downcast_ref::<standby_image::ResyncError>() {
            return if e.is_bad_input() { 2 } else { 1 };
        }
        if let Some(e) = cause.downcast_ref::<standby_image::ImageError>() {
            return if e.is_bad_input() { 2 } else { 1 };
        }
    }
    1
}

/// The error and its causes on one line, skipping causes whose text the
/// message already carries (error types that print their source).
fn one_line(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    // The next step a control error names, said as a command line.
    let hint = error.chain().find_map(|cause| cause.downcast_ref::<standby_control::ControlError>()?.hint());
    hints::with_hint(&message, hint.as_ref()).replace('\n', " ")
}

/// What Standby's helpers report as they go (a vault that stopped
/// answering, a seal retried, an NBD connection closed) goes to stderr,
/// which a helper's log file holds: warnings and errors unless
/// `STANDBY_LOG` asks for more (`STANDBY_LOG=info`, `STANDBY_LOG=standby_splitter=debug`).
fn log_warnings() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STANDBY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_target(false).init();
}

fn main() -> ExitCode {
    // What Standby writes (disk images, vault objects, state, keys, logs) is
    // the service's user's alone: files 0600, folders 0700, whatever the
    // shell's umask. QEMU and qemu-img, started from here, inherit it.
    // SAFETY: umask(2) cannot fail and touches no memory.
    unsafe { libc::umask(0o077) };
    log_warnings();
    let arguments = match cli::Arguments::try_parse() {
        Ok(arguments) => arguments,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to
            // stderr; usage errors are bad input.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match commands::run(arguments) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let message = one_line(&error);
            eprintln!("standby: error: {message}");
            ExitCode::from(exit_code(&error))
        }
    }
}
