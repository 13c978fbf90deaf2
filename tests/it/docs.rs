//! Docs that run: every `aioq` command line in the README and in each
//! subcommand's `--help` examples is parsed by the real command-line parser,
//! so a renamed flag or a bad value in the docs fails here.

use std::process::Command;

use clap::Parser;

use crate::util::{BIN, SUBCOMMANDS};

/// Splits a shell line into words: quotes kept together, a comment, pipe,
/// redirection or `&` ends the command.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#' | '|' | '>' | '&' | ';') if !started || word.is_empty() => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// The `aioq ...` commands in a text: code lines (indented), `$ ` prompts
/// and `\` continuations handled; lines with placeholders (`...`) skipped.
fn commands(text: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        joined.push(std::mem::take(&mut pending));
    }
    joined
        .iter()
        // Two terminals side by side: `$ aioq serve ...        $ aioq listen ...`.
        .flat_map(|l| l.split("  $ "))
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("$ ");
            let at = l.find("aioq ")?;
            // A command, not prose: at the start, or after env assignments.
            let before = &l[..at];
            if !before.split_whitespace().all(|w| w.contains('=')) {
                return None;
            }
            let cmd = &l[at..];
            // Placeholders (`...`) and synopses (`[--flag VALUE]`) are not
            // commands to run.
            (!cmd.contains("...") && !cmd.contains(" [")).then(|| cmd.trim_end().to_string())
        })
        .collect()
}

fn parses(cmd: &str) -> Result<(), String> {
    let w = words(cmd);
    aioq::cli::Cli::try_parse_from(&w)
        .map(|_| ())
        .map_err(|e| format!("{cmd}\n  {w:?}\n  {e}"))
}

#[test]
fn every_command_in_the_readme_parses() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let cmds = commands(&readme);
    assert!(cmds.len() > 25, "found only {} commands", cmds.len());
    let bad: Vec<String> = cmds.iter().filter_map(|c| parses(c).err()).collect();
    assert!(
        bad.is_empty(),
        "{} README command(s) do not parse:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn every_help_example_parses() {
    let mut found = 0;
    let mut bad = Vec::new();
    // The generators' own help has no examples; the top level has.
    for sub in SUBCOMMANDS.into_iter().chain([&[][..]]) {
        let out = Command::new(BIN).args(sub).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let examples = help.split("Examples:").nth(1).unwrap_or("");
        for cmd in commands(examples) {
            found += 1;
            if let Err(e) = parses(&cmd) {
                bad.push(e);
            }
        }
    }
    assert!(found > 20, "found only {found} examples");
    assert!(
        bad.is_empty(),
        "{} example(s) do not parse:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn the_shell_word_splitter_keeps_quotes_and_stops_at_pipes() {
    assert_eq!(
        words(r#"aioq send --message 'hello world' | jq ."#),
        ["aioq", "send", "--message", "hello world"]
    );
    assert_eq!(words("aioq listen   # a worker"), ["aioq", "listen"]);
    assert_eq!(
        words("aioq send --message ''"),
        ["aioq", "send", "--message", ""]
    );
}
