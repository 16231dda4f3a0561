//! `docs/cli.md` is the command-line contract (issue 13): checked here
//! against the binary's own `--help`, so neither can drift from the other.
//! Every command the binary lists (and every subcommand of a group) has a
//! `### \`standby …\`` heading there, every long flag its help shows is
//! named in that section, every command the file heads exists; and the
//! file's table of lifecycle states is the lifecycle crate's.

mod support;

use std::collections::BTreeMap;

use standby_lifecycle::STATES;
use support::standby_command;

fn help(path: &[&str]) -> String {
    let output = standby_command().args(path).arg("--help").output().unwrap();
    assert!(output.status.success(), "standby {} --help failed", path.join(" "));
    String::from_utf8(output.stdout).unwrap()
}

/// The first word of each line of a help section (`Commands:`, `Options:`).
fn section(help: &str, title: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != title)
        .skip(1)
        .take_while(|line| !line.trim().is_empty() && line.starts_with(' '))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The long flags of a help's option lines (`  -f, --force  …`, `      --home <HOME>`).
fn long_flags(help: &str) -> Vec<String> {
    help.lines()
        .filter(|line| line.trim_start().starts_with('-'))
        .filter_map(|line| line.split_whitespace().find(|word| word.starts_with("--")))
        .map(|word| word.trim_end_matches(',').to_string())
        .filter(|flag| flag != "--help" && flag != "--version")
        .collect()
}

/// Each `### \`standby …\`` section of the doc: its command path and text.
fn doc_sections(doc: &str) -> BTreeMap<String, String> {
    let mut sections = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("### `standby ") {
            if let Some((path, text)) = current.take() {
                sections.insert(path, text);
            }
            let words: Vec<&str> = rest
                .trim_end_matches('`')
                .split_whitespace()
                .take_while(|word| !word.starts_with('-') && word.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .collect();
            current = Some((words.join(" "), line.to_string()));
        } else if line.starts_with("## ") {
            if let Some((path, text)) = current.take() {
                sections.insert(path, text);
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push('\n');
            text.push_str(line);
        }
    }
    if let Some((path, text)) = current {
        sections.insert(path, text);
    }
    sections
}

#[test]
fn every_command_and_flag_of_the_binary_is_in_the_contract_and_back() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md")).unwrap();
    let sections = doc_sections(&doc);
    let mut commands = Vec::new();
    for command in section(&help(&[]), "Commands:").into_iter().filter(|c| c != "help") {
        let group = section(&help(&[&command]), "Commands:");
        if group.is_empty() {
            commands.push(command);
        } else {
            commands.extend(group.into_iter().filter(|c| c != "help").map(|sub| format!("{command} {sub}")));
        }
    }
    for command in &commands {
        let path: Vec<&str> = command.split(' ').collect();
        let text = sections.get(command).unwrap_or_else(|| panic!("docs/cli.md has no section `standby {command}`"));
        for flag in long_flags(&help(&path)) {
            assert!(text.contains(&flag), "docs/cli.md: `standby {command}` does not name {flag}");
        }
    }
    for documented in sections.keys() {
        assert!(commands.contains(documented), "docs/cli.md documents `standby {documented}`, which does not exist");
    }
}

#[test]
fn the_table_of_lifecycle_states_is_the_lifecycle_crates() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md")).unwrap();
    let rows: BTreeMap<&str, &str> = doc
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            (cells.len() == 2).then(|| (cells[0], cells[1]))
        })
        .collect();
    for state in STATES {
        let allowed: Vec<&str> = state.allowed().iter().map(|command| command.name()).collect();
        assert_eq!(rows.get(state.name()).copied(), Some(allowed.join(", ").as_str()), "the row of {state}");
    }
}
