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

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::serve::ServeArgs;
use crate::broker::access::Access;
use crate::broker::policy::{ChannelRule, Policy};
use crate::cli::{Cli, Command};
use crate::exit::usage;

/// Settings a reload applies: the defaults of every channel's policy.
pub const RELOADABLE: [&str; 6] = [
    "send-queue",
    "send-queue-bytes",
    "worker-queue",
    "backlog",
    "backlog-bytes",
    "topic-overflow",
];

/// A file read and checked, with the command line over it.
pub struct Loaded {
    pub path: PathBuf,
    pub args: ServeArgs,
    /// The `serve` arguments as parsed, to tell what a reload changed.
    pub matches: ArgMatches,
    pub rules: Vec<ChannelRule>,
    pub access: Access,
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

    /// Settings that differ from `running`'s and need a restart, with the
    /// value that stays in force.
    pub fn needs_restart(&self, running: &Loaded) -> Vec<(String, String)> {
        let Some(serve) = Cli::command().find_subcommand("serve").cloned() else {
            return Vec::new();
        };
        serve
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
                let (now, then) = (raw(&self.matches), raw(&running.matches));
                (now != then).then(|| {
                    let shown: Vec<String> =
                        then.iter().map(|s| s.to_string_lossy().into()).collect();
                    (long.to_string(), shown.join(","))
                })
            })
            .collect()
    }
}

/// Reads `path` under the command line this process was started with.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {shown}: cannot read it"))
        .map_err(crate::exit::as_usage)?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| usage(format!("{shown}: {e}")))?;
    let rules: Vec<ChannelRule> = match table.remove("channel") {
        Some(v) => v
            .try_into()
            .map_err(|e| usage(format!("{shown}: [[channel]]: {e}")))?,
        None => Vec::new(),
    };
    for r in &rules {
        r.check().map_err(|e| usage(format!("{shown}: {e}")))?;
    }
    let access: Access = match table.remove("access") {
        Some(v) => v
            .try_into()
            .map_err(|e| usage(format!("{shown}: [access]: {e}")))?,
        None => Access::default(),
    };
    let command = Cli::command().mut_subcommand("serve", |c| c.args_override_self(true));
    let serve = command
        .find_subcommand("serve")
        .context("no serve subcommand")?
        .clone();
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
    // The file's settings go right after `serve`, the real flags after them.
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let at = argv
        .iter()
        .position(|a| a == "serve")
        .context("--config is read under an `aioq serve` command line")?
        + 1;
    argv.splice(at..at, from_file);
    let matches = command.try_get_matches_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        usage(format!("{shown}: {}", first.trim_start_matches("error: ")))
    })?;
    let serve_matches = matches
        .subcommand_matches("serve")
        .context("no serve arguments")?
        .clone();
    let Command::Serve(args) = Cli::from_arg_matches(&matches)?.command else {
        anyhow::bail!("not a serve command line");
    };
    Ok(Loaded {
        path: path.to_owned(),
        args,
        matches: serve_matches,
        rules,
        access,
    })
}
