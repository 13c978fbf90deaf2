//! Completions and man pages are generated from the clap definition and
//! committed; these tests fail when the committed files drift from the binary.

use std::path::Path;
use std::process::Command;

use crate::util::BIN;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn assert_same_dir(generated: &Path, committed: &Path, regenerate: &str) {
    let mut names: Vec<_> = std::fs::read_dir(generated)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for name in &names {
        let new = std::fs::read(generated.join(name)).unwrap();
        let old = std::fs::read(committed.join(name)).unwrap_or_default();
        assert!(
            new == old,
            "{} is out of date with the binary; regenerate with:\n    {regenerate}",
            committed.join(name).display()
        );
    }
    let committed_count = std::fs::read_dir(committed).unwrap().count();
    assert_eq!(
        committed_count,
        names.len(),
        "{} has files the binary no longer generates; regenerate with:\n    {regenerate}",
        committed.display()
    );
}

#[test]
fn committed_completions_match_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = Command::new(BIN)
        .args(["completions", "--out"])
        .arg(tmp.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_same_dir(
        tmp.path(),
        &Path::new(ROOT).join("completions"),
        "rm -r completions && cargo run -- completions --out completions",
    );
}

#[test]
fn committed_man_pages_match_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = Command::new(BIN)
        .args(["man", "--out"])
        .arg(tmp.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_same_dir(
        tmp.path(),
        &Path::new(ROOT).join("man"),
        "rm -r man && cargo run -- man --out man",
    );
}

/// The bash script really completes, in a real bash.
#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let script = Path::new(ROOT).join("completions/aioq.bash");
    let probe = |words: &str| -> String {
        let cmd = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
             _aioq aioq \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash")
            .args(["--norc", "-c", &cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let subs = probe("aioq se");
    let subs: Vec<&str> = subs.lines().collect();
    assert!(
        subs.contains(&"serve") && subs.contains(&"send"),
        "{subs:?}"
    );
    assert!(!subs.contains(&"listen"), "{subs:?}");
    let flags = probe("aioq serve --topic-o");
    assert_eq!(flags.trim(), "--topic-overflow");
    let values = probe("aioq serve --topic-overflow d");
    let values: Vec<&str> = values.lines().collect();
    assert!(
        values.contains(&"drop") && values.contains(&"disconnect"),
        "{values:?}"
    );
}

/// Every page another page points to exists, and each SYNOPSIS names the
/// command as it is typed (`aioq metrics report`, not `aioq-metrics-report`).
#[test]
fn every_man_page_referred_to_exists_and_synopses_name_the_typed_command() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let page = std::fs::read_to_string(&path).unwrap();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        for word in page.split(|c: char| c.is_whitespace() || c == ',') {
            if let Some(target) = word.strip_suffix("(1)") {
                let file = format!("{}.1", target.replace("\\-", "-"));
                assert!(
                    dir.join(&file).exists(),
                    "{name}.1 refers to {file}, which is missing"
                );
            }
        }
        // What follows the options is in the sections man readers look
        // for, not one called EXTRA.
        assert!(!page.contains(".SH EXTRA"), "{name}.1 has an EXTRA section");
        if !name.ends_with("help") {
            assert!(page.contains(".SH EXAMPLES"), "{name}.1 has no EXAMPLES");
        }
        let synopsis = page
            .split(".SH SYNOPSIS\n")
            .nth(1)
            .and_then(|s| s.lines().next())
            .unwrap_or_else(|| panic!("{name}.1 has no SYNOPSIS"));
        let typed = name.replace('-', " ").replace("watch db", "watch-db");
        assert!(
            synopsis.starts_with(&format!("\\fB{}\\fR", typed.replace('-', "\\-"))),
            "{name}.1 SYNOPSIS: {synopsis}"
        );
    }
}
