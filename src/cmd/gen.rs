//! `aioq completions` and `aioq man`: shell completions and man pages, generated
//! from the one clap definition (and committed under completions/ and man/).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    aioq completions bash > /etc/bash_completion.d/aioq\n  \
    aioq completions zsh > ~/.zfunc/_aioq\n  \
    aioq completions --out completions   # every shell, into a directory")]
pub struct CompletionsArgs {
    /// Shell to print the completion script for.
    #[arg(value_enum, required_unless_present = "out")]
    pub shell: Option<Shell>,
    /// Write the scripts for every supported shell into this directory instead.
    #[arg(long, conflicts_with = "shell")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  aioq man --out man\n  man -l man/aioq-serve.1")]
pub struct ManArgs {
    /// Directory to write aioq.1 and aioq-<subcommand>.1 into.
    // The doc comment is --help text, written for a terminal, not rustdoc.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, default_value = "man")]
    pub out: PathBuf,
}

pub const SHELLS: [Shell; 5] = [
    Shell::Bash,
    Shell::Zsh,
    Shell::Fish,
    Shell::Elvish,
    Shell::PowerShell,
];

/// Completion scripts for `cmd`, the whole command line they complete.
pub fn completions(args: CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<ExitCode> {
    match (args.shell, args.out) {
        (_, Some(dir)) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for shell in SHELLS {
                clap_complete::generate_to(shell, &mut cmd, "aioq", &dir)
                    .with_context(|| format!("writing {shell} completions"))?;
            }
        }
        (Some(shell), None) => {
            clap_complete::generate(shell, &mut cmd, "aioq", &mut std::io::stdout());
        }
        (None, None) => unreachable!("clap requires a shell or --out"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Man pages for `cmd` and each of its subcommands.
pub fn man(args: ManArgs, cmd: clap::Command) -> anyhow::Result<ExitCode> {
    write_man_pages(&args.out, cmd)?;
    tracing::info!("man pages written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn write_man_pages(dir: &Path, mut cmd: clap::Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Built, so that clap's own `help` subcommands are there to be documented
    // like the others (the parent pages list them).
    cmd.build();
    render(&cmd, "aioq", dir)?;
    let version = cmd.get_version().unwrap_or_default().to_string();
    render_subcommands(&cmd, "aioq", &version, dir)
}

/// A page per subcommand, nested ones too (`aioq-metrics-report.1`), each
/// with the command as it is typed (`aioq metrics report`) in its SYNOPSIS.
fn render_subcommands(
    cmd: &clap::Command,
    parent: &str,
    version: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let typed = format!("{parent} {}", sub.get_name());
        let page = typed.replace(' ', "-");
        if sub.get_name() == "help" {
            // Its children mirror the real commands, which have pages: one
            // page that says what it takes.
            let help = clap::Command::new(page.clone())
                .bin_name(typed.clone())
                .version(version.to_owned())
                .about(sub.get_about().cloned().unwrap_or_default())
                .arg(
                    clap::Arg::new("COMMAND")
                        .num_args(0..)
                        .help("The subcommand whose help to print"),
                );
            render(&help, &page, dir)?;
            continue;
        }
        let sub = sub
            .clone()
            .name(page.clone())
            .bin_name(typed.clone())
            .version(version.to_owned());
        render(&sub, &page, dir)?;
        render_subcommands(&sub, &typed, version, dir)?;
    }
    Ok(())
}

fn render(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut buf)?;
    }
    if let Some(after) = cmd.get_after_long_help().or(cmd.get_after_help()) {
        buf.extend(after_help_sections(&after.to_string()).as_bytes());
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut buf)?;
    }
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))
}

/// The text after a command's options (`Examples:`, `Environment:`, `Exit
/// status:` and their lines), as the man page sections readers look for
/// (clap_mangen puts it all under one "EXTRA"); lines are kept as written,
/// since examples line up their comments.
fn after_help_sections(text: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    for line in text.lines() {
        let heading = line
            .strip_suffix(':')
            .filter(|h| !h.starts_with(' ') && !h.is_empty() && !h.contains(". "));
        if let Some(h) = heading {
            if open {
                out.push_str(".fi\n");
            }
            out.push_str(&format!(".SH {}\n.nf\n", h.to_uppercase()));
            open = true;
            continue;
        }
        if !open {
            out.push_str(".SH NOTES\n.nf\n");
            open = true;
        }
        let escaped = line.replace('\\', "\\e").replace('-', "\\-");
        if escaped.starts_with('.') || escaped.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&escaped);
        out.push('\n');
    }
    if open {
        out.push_str(".fi\n");
    }
    out
}
