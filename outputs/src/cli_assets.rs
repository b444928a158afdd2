//! The man pages and shell completions of both binaries (`palisade`,
//! `palisade-alert`), generated from their clap definitions: the one
//! place that knows how, so the two binaries and `cargo xtask dist` share it.
//!
//! Each binary parses its command line with [`parse_from`], which knows one
//! more subcommand than the binary's own definition: the hidden
//! `dist-assets DIR`, which writes into DIR
//!
//! * `man/<bin>.1` and `man/<bin>-<subcommand>.1` (clap_mangen),
//! * `completions/<bin>.bash`, `completions/_<bin>` (zsh) and
//!   `completions/<bin>.fish` (clap_complete),
//!
//! and exits. It is added at run time, not in the binary's definition, so it
//! shows in neither the man pages, nor the completions, nor `--help`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;
use clap_complete::Shell;

/// The hidden subcommand that writes the man pages and completions.
pub const SUBCOMMAND: &str = "dist-assets";

/// The shells whose completions are written, as `cargo xtask dist`
/// installs them.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Parses `argv` as [`Parser::parse_from`] does (exit 2 on a usage error, 0
/// after `--help`), but `<bin> dist-assets DIR` writes the man pages and
/// completions of `C` into DIR, names each file on stdout and exits (0, or 1
/// when a file cannot be written).
pub fn parse_from<C, I, T>(argv: I) -> C
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = C::command().subcommand(
        clap::Command::new(SUBCOMMAND)
            .hide(true)
            .about("Write the man pages and shell completions into DIR (cargo xtask dist)")
            .arg(
                clap::Arg::new("dir")
                    .value_name("DIR")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    );
    let matches = command.get_matches_from(argv);
    if let Some((SUBCOMMAND, sub)) = matches.subcommand() {
        let dir = sub
            .get_one::<PathBuf>("dir")
            .expect("DIR is a required argument");
        match write(C::command(), dir) {
            Ok(files) => {
                for file in files {
                    println!("{}", file.display());
                }
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("error: cannot write the man pages and completions: {e}");
                std::process::exit(1);
            }
        }
    }
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Errors writing the man pages and completions.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct AssetsError {
    /// The file or directory that could not be written.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Writes the man pages of `command` and its visible subcommands into
/// `dir/man`, and its completions for [`SHELLS`] into `dir/completions`;
/// returns the files written.
pub fn write(command: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, AssetsError> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).map_err(|source| AssetsError {
            path: d.clone(),
            source,
        })?;
    }
    let mut files = Vec::new();
    man_pages(command.clone(), &man, &mut files).map_err(|source| AssetsError {
        path: man.clone(),
        source,
    })?;
    let bin = command.get_name().to_string();
    for shell in SHELLS {
        let mut command = command.clone();
        let file = clap_complete::generate_to(shell, &mut command, &bin, &completions).map_err(
            |source| AssetsError {
                path: completions.clone(),
                source,
            },
        )?;
        files.push(file);
    }
    Ok(files)
}

/// The page of `command` and, recursively, of each visible subcommand (as
/// `clap_mangen::generate_to`, which does not say which files it wrote).
fn man_pages(command: clap::Command, dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    fn page(command: clap::Command, dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            page(sub.clone(), dir, files)?;
        }
        files.push(clap_mangen::Man::new(command).generate_to(dir)?);
        Ok(())
    }
    page(command, dir, files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Debug, Parser)]
    #[command(name = "demo", version, about = "A demo")]
    struct Demo {
        #[command(subcommand)]
        command: DemoCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum DemoCommand {
        /// Say hello.
        Hello {
            /// To whom.
            #[arg(long)]
            name: String,
        },
        /// Not for users.
        #[command(hide = true)]
        Secret,
    }

    #[test]
    fn the_pages_and_completions_of_a_command_and_its_visible_subcommands() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = write(Demo::command(), dir.path()).unwrap();
        files.sort();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "completions/_demo",
                "completions/demo.bash",
                "completions/demo.fish",
                "man/demo-hello.1",
                "man/demo.1",
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("man/demo-hello.1")).unwrap();
        assert!(page.contains("\\-\\-name"), "{page}");
        let bash = std::fs::read_to_string(dir.path().join("completions/demo.bash")).unwrap();
        assert!(bash.contains("hello"), "{bash}");
        // The assets subcommand is not part of the definition they come from.
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(!text.contains(SUBCOMMAND), "{}", file.display());
        }
    }

    #[test]
    fn the_hidden_subcommand_is_not_needed_to_parse_the_rest() {
        let demo: Demo = parse_from(["demo", "hello", "--name", "x"]);
        assert!(matches!(demo.command, DemoCommand::Hello { name } if name == "x"));
    }
}
