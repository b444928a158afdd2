//! Where the logs of `palisade` and `palisade-alert` go, and in what form:
//! the one logging setup both binaries call.
//!
//! Logs go to stderr, filtered by an environment variable (`PALISADE_LOG`
//! for `palisade`), in one of three forms ([`LogFormat`]):
//!
//! * `text`: a time, the level, the module and the message, one line each
//!   (coloured on a terminal);
//! * `json`: one JSON object per line for log shippers (`timestamp`,
//!   `level`, `target`, `message` and the event's fields at the top level);
//! * `journald`: for systemd's journal, which stamps each line itself: no
//!   time, and the level as a syslog priority prefix (`<3>` error, `<4>`
//!   warning, `<6>` info, `<7>` debug and trace) that journald reads as the
//!   line's priority (`journalctl -p warning`).
//!
//! Without `--log-format` the form is `journald` when stderr is the
//! journal's stream (systemd sets `JOURNAL_STREAM` to its device and inode),
//! else `text`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, time::SystemTime};
use tracing_subscriber::registry::LookupSpan;

/// The form of the log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Time, level, module and message (the default on a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
    /// No time, the level as a syslog priority prefix `<N>` (the default
    /// under systemd, detected by `JOURNAL_STREAM`).
    Journald,
}

/// The form to use: the one asked for, else `journald` when stderr is the
/// journal's stream (`journal_stream`, the value of `JOURNAL_STREAM`:
/// `DEVICE:INODE`, equal to `stderr`'s device and inode), else `text`. A
/// `JOURNAL_STREAM` that names another file (inherited by a child whose
/// stderr was redirected) does not count.
pub fn choose(
    asked: Option<LogFormat>,
    journal_stream: Option<&str>,
    stderr: Option<(u64, u64)>,
) -> LogFormat {
    if let Some(format) = asked {
        return format;
    }
    let journal = journal_stream
        .and_then(|value| value.split_once(':'))
        .and_then(|(dev, ino)| Some((dev.trim().parse().ok()?, ino.trim().parse().ok()?)));
    match (journal, stderr) {
        (Some(journal), Some(stderr)) if journal == stderr => LogFormat::Journald,
        _ => LogFormat::Text,
    }
}

/// The syslog priority of a level, as journald reads it from a `<N>` prefix
/// (sd-daemon(3)): error 3, warning 4, info 6, debug and trace 7.
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The device and inode of this process's stderr, if it has one.
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// The form `asked` resolves to in this process ([`choose`] with its
/// environment and stderr).
pub fn resolve(asked: Option<LogFormat>) -> LogFormat {
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    choose(asked, journal_stream.as_deref(), stderr_identity())
}

/// Whether the logger writes for journald: then the lines a binary writes
/// to stderr itself ([`eprint`]) carry a priority too.
static JOURNALD: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stderr, each line with the syslog priority prefix of
/// `level` when the logs go to journald (so that a fatal error printed at
/// exit is `err` in the journal, not the stream's default `info`), else as
/// it is. For the messages a binary prints outside the logger.
pub fn eprint(level: Level, text: &str) {
    let prefix = if JOURNALD.load(Ordering::Relaxed) {
        format!("<{}>", syslog_priority(level))
    } else {
        String::new()
    };
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        out.push_str(&prefix);
        out.push_str(line);
        out.push('\n');
    }
    // Nothing to do if stderr is gone.
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

/// Installs the logger of a binary: lines in the form `asked` resolves to
/// ([`resolve`]), on stderr, filtered by the environment variable `env`
/// (`tracing_subscriber::EnvFilter` syntax), else by `default`. Call once,
/// at start.
pub fn init(asked: Option<LogFormat>, env: &str, default: &str) {
    let filter = EnvFilter::try_from_env(env).unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let chosen = resolve(asked);
    JOURNALD.store(chosen == LogFormat::Journald, Ordering::Relaxed);
    // A second logger (a test that calls this twice) is ignored.
    let _ = match chosen {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init(),
        LogFormat::Journald => builder
            .with_ansi(false)
            .event_format(Journald(format().without_time().with_ansi(false)))
            .try_init(),
    };
}

fn format() -> format::Format<format::Full, SystemTime> {
    format::Format::default()
}

/// A line format with the event's syslog priority in front (`<4>`).
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_format_wins() {
        for asked in [LogFormat::Text, LogFormat::Json, LogFormat::Journald] {
            assert_eq!(choose(Some(asked), Some("8:42"), Some((8, 42))), asked);
            assert_eq!(choose(Some(asked), None, None), asked);
        }
    }

    #[test]
    fn journald_only_when_stderr_is_the_journal_stream() {
        assert_eq!(
            choose(None, Some("8:42"), Some((8, 42))),
            LogFormat::Journald
        );
        // Inherited by a process whose stderr went elsewhere.
        assert_eq!(choose(None, Some("8:42"), Some((8, 43))), LogFormat::Text);
        assert_eq!(choose(None, Some("8:42"), None), LogFormat::Text);
        assert_eq!(choose(None, None, Some((8, 42))), LogFormat::Text);
        for bad in ["", "8", "8:", ":42", "x:y", "8:42:1"] {
            assert_eq!(
                choose(None, Some(bad), Some((8, 42))),
                LogFormat::Text,
                "{bad}"
            );
        }
    }

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::DEBUG), 7);
        assert_eq!(syslog_priority(Level::TRACE), 7);
    }
}
