//! Rendering: JSON documents, human byte counts, progress bars (only when
//! stdout is a terminal and the output is not JSON).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("reports always serialise"));
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A progress bar that is a no-op when nobody is watching.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    pub fn bytes(json: bool, total: u64, what: &str) -> Self {
        if json || !std::io::stdout().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        Progress(Some(bar))
    }

    pub fn spinner(json: bool, what: &str) -> Self {
        if json || !std::io::stdout().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{prefix} {spinner} {bytes} {bytes_per_sec}").expect("valid"));
        bar.set_prefix(what.to_string());
        Progress(Some(bar))
    }

    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
