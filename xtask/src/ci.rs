//! `cargo xtask ci`: every check and test, as CI runs them.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{bench, root, run, setup};

/// Setup, `cargo fmt --check`, clippy with `-D warnings`, the layering
/// rules, every test, and the benchmarks in their quick form.
pub(crate) fn ci() -> Result<()> {
    setup::setup()?;
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    check_layers()?;
    // Among them xtask/tests/dist.rs: `cargo xtask dist` and the package
    // installed into a fresh root.
    run("cargo", &["test", "--workspace", "--all-targets"])?;
    current_nats_server()?;
    // Doc tests are not part of --all-targets.
    run("cargo", &["test", "--workspace", "--doc"])?;
    // The benchmarks, in seconds, so they never rot: they must run and give
    // sane figures (not fast ones).
    bench::bench(&bench::BenchArgs {
        quick: true,
        block: None,
        only: Vec::new(),
        monitors: None,
        daemon_block: None,
    })?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// The outputs' NATS tests again, against the current nats-server `setup`
/// installed (the workspace run above used Debian's 2.9.10): the library
/// tests whose path names `nats` (the connector, the JetStream sink, the
/// alert consumer), `alertmanager` (the consumer feeding a real
/// Alertmanager), `slack_pagerduty` or `email` (the consumer feeding the
/// Slack, PagerDuty and email dispatchers), and the `palisade-alert` CLI
/// tests. A few dozen seconds.
fn current_nats_server() -> Result<()> {
    let server = setup::current_nats_server();
    eprintln!("xtask: the outputs' NATS tests against {server}");
    for args in [
        &[
            "test",
            "-p",
            "palisade-outputs",
            "--lib",
            "--",
            "nats",
            "alertmanager",
            "slack_pagerduty",
            "email",
        ][..],
        &[
            "test",
            "-p",
            "palisade-outputs",
            "--test",
            "palisade_alert_cli",
        ][..],
    ] {
        eprintln!(
            "xtask: $ PALISADE_NATS_SERVER={server} cargo {}",
            args.join(" ")
        );
        let status = Command::new("cargo")
            .args(args)
            .env("PALISADE_NATS_SERVER", &server)
            .current_dir(root())
            .status()
            .context("cannot start cargo")?;
        if !status.success() {
            bail!(
                "`cargo {}` against {server} failed ({status})",
                args.join(" ")
            );
        }
    }
    Ok(())
}

/// What a crate must not depend on (normal dependencies, transitively):
/// the layering of `docs/DESIGN.md`.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "palisade-core",
        &[
            "tokio",
            "aya",
            "libc",
            "rusqlite",
            "netlink-",
            "xdp",
            "async-nats",
            "reqwest",
            "palisade-",
        ],
    ),
    (
        "palisade-dataplane",
        &["palisade-outputs", "palisade ", "tokio", "rusqlite"],
    ),
    (
        "palisade-outputs",
        &["palisade-core", "palisade-dataplane", "palisade ", "aya"],
    ),
];

/// Where `unsafe` code may stand: the data path, and the simulator's loader
/// of the responder's maps (`unsafe impl Pod`).
const UNSAFE_ALLOWED: &[&str] = &["engine/dataplane/", "testbed/src/responder.rs"];

/// Checks the dependency rules with `cargo tree` and that `unsafe` appears
/// only where it may.
fn check_layers() -> Result<()> {
    eprintln!("xtask: checking the layering (cargo tree, unsafe)");
    let mut problems = Vec::new();
    for (krate, forbidden) in FORBIDDEN {
        let out = Command::new("cargo")
            .args(["tree", "-p", krate, "-e", "normal", "--prefix", "none"])
            .current_dir(root())
            .output()
            .context("cannot run cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        problems.extend(forbidden_dependencies(
            krate,
            &String::from_utf8_lossy(&out.stdout),
            forbidden,
        ));
    }
    let files = Command::new("git")
        .args(["ls-files", "*.rs"])
        .current_dir(root())
        .output()
        .context("cannot run git ls-files")?;
    for file in String::from_utf8_lossy(&files.stdout).lines() {
        if UNSAFE_ALLOWED
            .iter()
            .any(|allowed| file.starts_with(allowed))
        {
            continue;
        }
        let text = std::fs::read_to_string(root().join(file)).unwrap_or_default();
        problems.extend(unsafe_lines(file, &text));
    }
    if !problems.is_empty() {
        bail!("the layering is broken:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// The dependencies in `cargo tree` output (one `name vX.Y.Z …` a line,
/// the crate itself first) that start with one of `forbidden`.
fn forbidden_dependencies(krate: &str, tree: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .skip(1)
        .filter(|line| forbidden.iter().any(|f| line.starts_with(f)))
        .map(|line| {
            format!(
                "{krate} depends on {}",
                line.split(" (").next().unwrap_or(line)
            )
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Lines of `text` that use `unsafe` code (not in comments or one-line
/// string literals, not the lint that forbids it).
fn unsafe_lines(file: &str, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = code_of(line);
            code.contains("unsafe ") || code.contains("unsafe{")
        })
        .map(|(i, line)| {
            format!(
                "{file}:{}: unsafe outside the data path: {}",
                i + 1,
                line.trim()
            )
        })
        .collect()
}

/// A line without its string literals and its `//` comment.
fn code_of(line: &str) -> String {
    let mut code = String::with_capacity(line.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => escaped = false,
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '/' && chars.peek() == Some(&'/') {
            break;
        } else {
            code.push(c);
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_dependencies_are_named_once() {
        let tree = "palisade-core v0.1.0 (/w/engine/core)\nserde v1.0.0\ntokio v1.40.0\n\
                    tokio v1.40.0 (*)\nnetlink-sys v0.8.0\nlibcxx v1.0\n";
        assert_eq!(
            forbidden_dependencies("palisade-core", tree, &["tokio", "netlink-", "libc "]),
            [
                "palisade-core depends on netlink-sys v0.8.0",
                "palisade-core depends on tokio v1.40.0"
            ]
        );
        // The crate itself (the first line) never counts.
        assert!(forbidden_dependencies("palisade-core", tree, &["palisade-"]).is_empty());
    }

    #[test]
    fn unsafe_code_is_found_but_not_comments_or_the_lint() {
        let word = "unsafe";
        let text = format!(
            "#![forbid({word}_code)]\n// {word} {{ here }} is a comment\nlet x = {word} {{ f() }};\n\
             {word} impl Pod for T {{}}\nlet s = \"{word} in a string\";\n"
        );
        let found = unsafe_lines("a.rs", &text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("a.rs:3:"));
        assert!(found[1].starts_with("a.rs:4:"));
    }
}
