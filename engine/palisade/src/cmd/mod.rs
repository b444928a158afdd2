//! The `palisade` commands, one module each, and what they share: output
//! formats, usage errors (exit 2), the configuration loader and the target
//! arguments of `plan` and `scan`.

pub mod agent;
pub mod check_config;
pub mod data_path;
pub mod deliveries;
pub mod doctor;
pub mod history;
pub mod plan;
pub mod run;
pub mod scan;
pub mod status;

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use palisade_core::probe::{PortSet, Shard, SpecError, Sweep, TargetSet};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`json` works too).
    #[value(alias = "json")]
    Jsonl,
}

/// An error that is the user's to fix: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

impl From<SpecError> for UsageError {
    fn from(e: SpecError) -> Self {
        UsageError(e.to_string())
    }
}

pub fn usage_error(e: &UsageError) -> ExitCode {
    palisade_outputs::logging::eprint(tracing::Level::ERROR, &format!("palisade: error: {e}"));
    ExitCode::from(2)
}

/// The longest line a target or exclude list may have.
pub const MAX_LIST_LINE: usize = 64 * 1024;

/// The largest target or exclude list (bytes).
pub const MAX_LIST_BYTES: usize = 256 * 1024 * 1024;

/// Reads a target or exclude list (`-iL`, `--exclude-file`), bounded: a
/// file that is no list (`/dev/zero`, a binary) is refused at its first
/// overlong line instead of filling the memory.
pub fn read_file(path: &str) -> Result<String, UsageError> {
    let file =
        std::fs::File::open(path).map_err(|e| UsageError(format!("cannot read {path}: {e}")))?;
    read_list(
        path,
        std::io::BufReader::new(file),
        MAX_LIST_LINE,
        MAX_LIST_BYTES,
    )
}

/// The text of a list from `r`: lines of at most `max_line` bytes, at most
/// `max_bytes` in all, UTF-8; errors name `path` (and the line).
fn read_list(
    path: &str,
    mut r: impl std::io::BufRead,
    max_line: usize,
    max_bytes: usize,
) -> Result<String, UsageError> {
    use std::io::{BufRead, Read};
    let mut text = String::new();
    let mut line = Vec::new();
    for n in 1.. {
        line.clear();
        let read = (&mut r)
            .take(max_line as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| UsageError(format!("cannot read {path}: {e}")))?;
        if read == 0 {
            break;
        }
        if line.len() > max_line && line.last() != Some(&b'\n') {
            return Err(UsageError(format!(
                "{path}:{n}: line longer than {max_line} bytes: not a list of targets"
            )));
        }
        if text.len() + line.len() > max_bytes {
            return Err(UsageError(format!(
                "{path}: larger than {} MiB: split the list",
                max_bytes >> 20
            )));
        }
        let line = std::str::from_utf8(&line).map_err(|_| {
            UsageError(format!("{path}:{n}: not UTF-8 text: not a list of targets"))
        })?;
        text.push_str(line);
    }
    Ok(text)
}

/// Standard output for a command's results. When the reader goes away
/// (`palisade status | head`), writes fail with [`StdoutClosed`] and `main`
/// ends the command quietly (see [`stdout_closed`]).
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout())
}

/// Standard output, see [`stdout()`].
#[derive(Debug)]
pub struct Stdout(std::io::Stdout);

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(mark_closed)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

/// A write to standard output failed because its reader is gone (EPIPE).
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub struct StdoutClosed;

fn mark_closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

/// Whether a command failed because standard output went away: `main`
/// exits 0 without a message then, as `head` expects of the commands it
/// cuts short.
pub fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// nmap's and masscan's spellings of flags that clap cannot take (several
/// letters after one dash), turned into their long names: `-iL FILE`,
/// `-oX FILE`, `-oL FILE`, `-oG FILE` (also `-oX=FILE`). nmap's and
/// masscan's other output flags (`-oN`, `-oA`, `-oJ`, ...) are refused:
/// clap would read them as `-o` with a file named `N`.
pub fn nmap_style_flags(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Vec<std::ffi::OsString>, UsageError> {
    const FLAGS: [(&str, &str); 4] = [
        ("-iL", "--input-list"),
        ("-oX", "--output-xml"),
        ("-oL", "--output-list"),
        ("-oG", "--output-grepable"),
    ];
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        let text = arg.to_str().unwrap_or("");
        rest |= text == "--";
        let (flag, value) = match text.split_once('=') {
            Some((flag, value)) => (flag, Some(value)),
            None => (text, None),
        };
        let short = flag.len() == 3 && !rest;
        if let Some((_, long)) = FLAGS.iter().find(|(f, _)| short && *f == flag) {
            out.push(match value {
                Some(v) => format!("{long}={v}").into(),
                None => (*long).into(),
            });
        } else if short && flag.starts_with("-o") && flag.as_bytes()[2].is_ascii_uppercase() {
            return Err(UsageError(format!(
                "`{flag}` is not supported: palisade writes nmap XML (-oX FILE), masscan's list \
                 (-oL FILE), nmap's grepable format (-oG FILE) and JSON lines (-o FILE)"
            )));
        } else {
            out.push(arg);
        }
    }
    Ok(out)
}

pub fn load_config(path: &std::path::Path) -> Result<palisade::config::Config, ExitCode> {
    palisade::config::load(path).map_err(|e| {
        palisade_outputs::logging::eprint(tracing::Level::ERROR, &e.to_string());
        ExitCode::from(2)
    })
}

/// Which hosts and ports, shared by every command that sweeps.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Targets: IPv4/IPv6 addresses, CIDR blocks, ranges (a-b); commas allowed.
    pub targets: Vec<String>,
    /// Ports: `22,80,8000-8100`, `1-65535`, or `-` for all.
    #[arg(short = 'p', long = "ports", value_name = "PORTS")]
    pub ports: String,
    /// Read more targets from FILE (one or more per line, `#` comments); `-iL FILE` works too.
    #[arg(long = "input-list", value_name = "FILE")]
    pub input_list: Vec<String>,
    /// Never probe these targets (same syntax as targets).
    #[arg(long, value_name = "LIST")]
    pub exclude: Vec<String>,
    /// Never probe the targets listed in FILE (e.g. config/exclude.conf).
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<String>,
    /// Take part I of N of the sweep (1-based), e.g. `--shard 2/4`.
    #[arg(long, value_name = "I/N", default_value = "1/1")]
    pub shard: Shard,
    /// Seed of the probe order; the same seed gives the same order.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Skip the first N probes of this shard (to resume an interrupted scan);
    /// at most the shard's probe count.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub resume_index: u64,
}

impl TargetArgs {
    /// Builds the sweep the arguments describe.
    pub fn sweep(&self) -> Result<Sweep, UsageError> {
        let targets = self.target_set()?;
        let ports = PortSet::parse_arg("-p", &self.ports)?;
        let sweep = Sweep::new(&targets, &ports, self.seed)?;
        let end = sweep.shard_len(self.shard);
        if self.resume_index > end {
            return Err(UsageError(format!(
                "--resume-index {}: past the end: shard {} has {end} probes, give 0 to {end}",
                self.resume_index, self.shard
            )));
        }
        Ok(sweep)
    }

    /// The targets the arguments describe, excludes removed (never empty).
    pub fn target_set(&self) -> Result<TargetSet, UsageError> {
        let mut targets = TargetSet::default();
        for (i, t) in self.targets.iter().enumerate() {
            targets.extend_arg(&format!("target argument {}", i + 1), t)?;
        }
        for path in &self.input_list {
            targets.extend_file(path, &read_file(path)?)?;
        }
        if targets.is_empty() {
            return Err(UsageError(
                "no targets: give addresses, blocks or ranges, or -iL FILE".into(),
            ));
        }
        let mut excludes = TargetSet::default();
        for x in &self.exclude {
            excludes.extend_arg("--exclude", x)?;
        }
        for path in &self.exclude_file {
            excludes.extend_file(path, &read_file(path)?)?;
        }
        targets.subtract(&excludes);
        if targets.is_empty() {
            return Err(SpecError::NoTargets {
                what: "targets".into(),
            }
            .into());
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn flags(args: &[&str]) -> Result<Vec<String>, UsageError> {
        nmap_style_flags(args.iter().map(std::ffi::OsString::from))
            .map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn nmap_style_flags_become_long_ones() {
        assert_eq!(
            flags(&[
                "scan", "-iL", "a", "-oX", "b.xml", "-oL=c", "-oG", "-", "-o", "d"
            ])
            .unwrap(),
            [
                "scan",
                "--input-list",
                "a",
                "--output-xml",
                "b.xml",
                "--output-list=c",
                "--output-grepable",
                "-",
                "-o",
                "d"
            ]
        );
        // `-oFILE` is `-o FILE`; after `--` nothing is a flag.
        assert_eq!(flags(&["-oXml.json"]).unwrap(), ["-oXml.json"]);
        assert_eq!(flags(&["--", "-oX"]).unwrap(), ["--", "-oX"]);
    }

    #[test]
    fn other_nmap_output_flags_are_refused() {
        for flag in ["-oN", "-oA", "-oJ", "-oB=x"] {
            let e = flags(&["scan", flag, "x"]).unwrap_err().to_string();
            assert!(
                e.contains("is not supported") && e.contains("-oX FILE"),
                "{e}"
            );
        }
    }

    #[test]
    fn lists_are_read_line_by_line() {
        let text = "198.18.0.1\n# comment\n198.18.0.2";
        assert_eq!(read_list("l", text.as_bytes(), 16, 100).unwrap(), text);
    }

    #[test]
    fn an_endless_line_is_refused_at_the_bound() {
        // /dev/zero: no newline ever; the read stops after the bound.
        let mut zeros = std::io::BufReader::new(std::io::repeat(0));
        let e = read_list("/dev/zero", &mut zeros, 1024, 1 << 20)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/dev/zero:1: line longer than 1024 bytes: not a list of targets"
        );
        // A line of exactly the bound passes.
        let line = format!("{}\n", "1".repeat(1024));
        assert!(read_list("l", line.as_bytes(), 1024, 1 << 20).is_ok());
    }

    #[test]
    fn an_endless_list_is_refused_at_the_bound() {
        let newlines = std::io::repeat(b'\n').take(3 << 19);
        let e = read_list("big", std::io::BufReader::new(newlines), 64, 1 << 20)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "big: larger than 1 MiB: split the list");
        let e = read_list("bin", &b"198.18.0.1\n\xff\xfe\n"[..], 64, 1 << 20)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "bin:2: not UTF-8 text: not a list of targets");
    }
}
