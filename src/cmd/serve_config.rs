//! `serve --config FILE`: every `serve` setting in a TOML file, by its flag's
//! name without the dashes, plus what flags cannot say: `[[channel]]`
//! entries (bounds and overflow policy by channel prefix) and `[access]`
//! (rules by TLS client identity). Flags and environment variables given
//! when the broker starts override the file.
//!
//! The file's settings become command-line arguments placed before the real
//! ones, so that one parser checks both alike: a bad value in the file gets
//! the same message as the flag would, prefixed with the file's name.
//!
//! SIGHUP reads the file again. What can change while the broker runs is in
//! [`RELOADABLE`], `[[channel]]` and `[access]`; a change to anything else is
//! logged as needing a restart, and a file that does not load leaves the
//! running configuration as it was.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, FromArgMatches};

use super::serve_args::ServeArgs;
use crate::broker::access::Access;
use crate::broker::policy::{ChannelRule, Policy};
use crate::exit::usage;

/// The `serve` command line a file's settings go under, as the caller has
/// it: the subcommand's clap definition (global flags included) and the
/// arguments given after `serve`. A reload parses the file under the same
/// line, so that flags given at start keep winning.
#[derive(Clone)]
pub struct ServeLine {
    pub command: clap::Command,
    pub args: Vec<OsString>,
}

impl ServeLine {
    /// `command` is `serve`'s definition; `args` what followed `serve`.
    pub fn new(command: clap::Command, args: Vec<OsString>) -> Self {
        Self {
            // A file's setting and a flag may both be given: the flag, after
            // it, wins.
            command: command.args_override_self(true),
            args,
        }
    }
}

/// Settings a reload applies: the defaults of every channel's policy (the
/// acknowledgement settings to subscriptions made from then on).
pub const RELOADABLE: [&str; 9] = [
    "durable",
    "send-queue",
    "send-queue-bytes",
    "worker-queue",
    "backlog",
    "backlog-bytes",
    "topic-overflow",
    "ack-wait",
    "max-deliveries",
];

/// A file read and checked, with the command line over it.
pub struct Loaded {
    pub path: PathBuf,
    pub args: ServeArgs,
    /// The `serve` arguments as parsed, to tell what a reload changed.
    pub matches: ArgMatches,
    pub rules: Vec<ChannelRule>,
    pub access: Access,
    /// The file has an `[access]` table (without one, everyone may do everything).
    pub has_access: bool,
}

impl Loaded {
    /// The policy the file and the flags give.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let plan = self.args.plan()?;
        Ok(Policy::new(
            &plan.broker,
            self.rules.clone(),
            self.access.clone(),
        ))
    }

    /// Settings that differ from those the broker started with and need a
    /// restart, with the value in force (URL passwords hidden).
    pub fn needs_restart(&self, started: &Loaded, line: &ServeLine) -> Vec<(String, String)> {
        line.command
            .get_arguments()
            .filter_map(|a| {
                let long = a.get_long()?;
                if RELOADABLE.contains(&long) {
                    return None;
                }
                let id = a.get_id().as_str();
                let raw = |m: &ArgMatches| -> Vec<OsString> {
                    m.get_raw(id)
                        .map(|v| v.map(|s| s.to_os_string()).collect())
                        .unwrap_or_default()
                };
                let (now, then) = (raw(&self.matches), raw(&started.matches));
                (now != then).then(|| {
                    let then = if then.is_empty() {
                        a.get_default_values()
                            .iter()
                            .map(|v| v.to_os_string())
                            .collect()
                    } else {
                        then
                    };
                    let shown: Vec<String> = then
                        .iter()
                        .map(|s| crate::broker::redact(&s.to_string_lossy()))
                        .collect();
                    let shown = if shown.is_empty() {
                        "not set".to_string()
                    } else {
                        shown.join(",")
                    };
                    (long.to_string(), shown)
                })
            })
            .collect()
    }

    /// Why this file must not replace the running one at a reload, if it
    /// must not: an empty file, or one without the `[access]` in force
    /// (`access_in_force`), is most likely one being written, and would
    /// open everything.
    pub fn refused_over(&self, access_in_force: bool, text_was_empty: bool) -> Option<String> {
        if text_was_empty {
            return Some(
                "the file is empty (being written?); write it whole, or replace it with \
                 mv, then send SIGHUP again"
                    .into(),
            );
        }
        if access_in_force && !self.has_access {
            return Some(
                "it has no [access] table while one is in force: that would let everyone do \
                 everything (being written?). Restart the broker to drop access rules"
                    .into(),
            );
        }
        None
    }
}

/// Most a config file may hold: far beyond any real one, and a bound on
/// what a path to a device (`/dev/zero`) can make the broker read.
const MAX_FILE: u64 = 1 << 20;

/// Warns when others than its owner may write the file or its directory:
/// whoever can changes the access rules. Said once per load or reload.
fn warn_if_others_may_write(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.permissions().mode() & 0o022 != 0 {
        tracing::warn!(
            "--config {shown}: others than its owner may write it (mode {:o}); whoever \
             can changes the access rules at the next reload: chmod go-w",
            meta.permissions().mode() & 0o777
        );
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::metadata(dir) {
        // World-writable without the sticky bit: anyone may replace the file.
        if d.permissions().mode() & 0o1002 == 0o002 {
            tracing::warn!(
                "--config {shown}: its directory is writable by everyone, who may replace the file"
            );
        }
    }
}

/// The file as it loads at start: warned about, read, parsed.
pub fn load(path: &Path, line: &ServeLine) -> anyhow::Result<Loaded> {
    warn_if_others_may_write(path);
    parse(path, &read(path)?, line)
}

/// The file for a reload, read until two reads 100 ms apart agree, so that
/// a file being written in place is seen whole or refused. Blocking: the
/// caller runs it off the runtime's threads.
pub fn read_settled(path: &Path) -> anyhow::Result<String> {
    warn_if_others_may_write(path);
    let mut last = read(path)?;
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = read(path)?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    anyhow::bail!("the file kept changing for a second; send SIGHUP again once it is written")
}

/// The file, read as [`load`] reads it (bounded, a regular file) but
/// without its warnings: for a look before `serve` loads it.
pub fn read_quietly(path: &Path) -> anyhow::Result<String> {
    read(path)
}

/// The file's text: a regular file (a FIFO or a device would block or never
/// end) of at most [`MAX_FILE`] bytes.
fn read(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let shown = path.display();
    let cannot = |e: std::io::Error| {
        crate::exit::as_usage(
            anyhow::Error::new(e).context(format!("--config {shown}: cannot read it")),
        )
    };
    // Looked at before opening: opening a FIFO for reading waits for a writer.
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(usage(format!(
            "--config {shown}: not a regular file (a FIFO, device or directory cannot be a config file)"
        )));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(usage(format!("--config {shown}: not a regular file")));
    }
    if meta.len() > MAX_FILE {
        return Err(usage(format!(
            "--config {shown}: {} bytes, more than a config file may hold ({MAX_FILE})",
            meta.len()
        )));
    }
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_FILE {
        return Err(usage(format!(
            "--config {shown}: more than a config file may hold ({MAX_FILE} bytes)"
        )));
    }
    Ok(text)
}

/// A TOML error as line, column and message: never the offending line
/// itself, which may be a secret of whatever file the path points to.
fn parse_error(shown: &std::path::Display<'_>, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let at = e.span().map(|span| {
        let before = &text.as_bytes()[..span.start.min(text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        format!("line {line}, column {column}: ")
    });
    usage(format!(
        "{shown}: {}{}",
        at.unwrap_or_default(),
        e.message().trim_end()
    ))
}

/// `text`, the file at `path`, under `line`.
pub fn parse(path: &Path, text: &str, line: &ServeLine) -> anyhow::Result<Loaded> {
    let shown = path.display();
    let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_error(&shown, text, &e))?;
    let rules: Vec<ChannelRule> = match table.remove("channel") {
        Some(v) => v
            .try_into()
            .map_err(|e| usage(format!("{shown}: [[channel]]: {e}")))?,
        None => Vec::new(),
    };
    for r in &rules {
        r.check().map_err(|e| usage(format!("{shown}: {e}")))?;
    }
    let has_access = table.contains_key("access");
    let access: Access = match table.remove("access") {
        Some(v) => v
            .try_into()
            .map_err(|e| usage(format!("{shown}: [access]: {e}")))?,
        None => Access::default(),
    };
    let serve = &line.command;
    let mut from_file: Vec<OsString> = Vec::new();
    for (key, value) in table {
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|_| key != "config" && key != "check-config")
            .ok_or_else(|| {
                usage(format!(
                    "{shown}: unknown setting {key:?} (a setting is an `aioq serve` flag \
                     without its dashes, or a [[channel]] or [access] table)"
                ))
            })?;
        // The environment, like a flag, is said when the broker starts: it
        // wins over the file.
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            one => vec![one],
        };
        for v in values {
            let text = match v {
                toml::Value::Boolean(true) => {
                    from_file.push(format!("--{key}").into());
                    continue;
                }
                toml::Value::Boolean(false) => continue,
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(usage(format!(
                        "{shown}: {key}: expected a string, a number or a boolean, not {}",
                        other.type_str()
                    )))
                }
            };
            from_file.push(format!("--{key}={text}").into());
        }
    }
    // The file's settings go first, the real flags after them.
    let argv = std::iter::once(OsString::from("serve"))
        .chain(from_file)
        .chain(line.args.iter().cloned());
    let matches = serve.clone().try_get_matches_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        usage(format!("{shown}: {}", first.trim_start_matches("error: ")))
    })?;
    let args = ServeArgs::from_arg_matches(&matches)?;
    Ok(Loaded {
        path: path.to_owned(),
        args,
        matches,
        rules,
        access,
        has_access,
    })
}
