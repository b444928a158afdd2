//! Errors and where they are: the `file:line: key: message` errors and
//! warnings, the collector the checks report into, and the checks every
//! section shares (strings, integers and durations with their ranges,
//! unknown keys).

use std::collections::HashMap;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use super::checked::{Checked, IgnoredKey};

/// Every problem found, not just the first. Never empty.
#[derive(Debug, thiserror::Error)]
#[error("{}", one_per_line(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    /// The file, as named by the caller.
    pub file: String,
    /// 1-based; 0 when the file could not be read.
    pub line: usize,
    /// Dotted key, e.g. `scan.rate` or `monitor[2].expected_open`.
    pub key: String,
    pub message: String,
}

/// Something worth knowing about a configuration that is valid: it is
/// used as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: warning: {key}: {message}")]
pub struct ConfigWarning {
    /// The file, as named by the caller.
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// Dotted key, e.g. `monitor[1].host`.
    pub key: String,
    pub message: String,
}

/// How many errors a file's report prints; the rest are counted.
const ERRORS_SHOWN: usize = 100;

fn one_per_line(errors: &[ConfigError]) -> String {
    let mut lines: Vec<String> = errors
        .iter()
        .take(ERRORS_SHOWN)
        .map(ToString::to_string)
        .collect();
    if errors.len() > ERRORS_SHOWN {
        lines.push(format!(
            "... and {} more errors (fix these first)",
            errors.len() - ERRORS_SHOWN
        ));
    }
    lines.join("\n")
}

/// How many problems of one key (the elements of a list: a port list,
/// `source_ip`, NATS `url`s) are reported one by one; the rest are counted.
pub(super) const PROBLEMS_PER_KEY: usize = 5;

/// The longest message and key a report prints, in characters: a value
/// echoed in either (a 100 KB monitor name) is cut in the middle
/// ([`excerpt`]), so the line keeps its start and its advice; and within a
/// message, the longest word (a value without spaces).
const MESSAGE_MAX: usize = 300;
const KEY_MAX: usize = 120;
const WORD_MAX: usize = 80;

/// `message` with each word longer than [`WORD_MAX`] cut, then all of it
/// to [`MESSAGE_MAX`].
fn shorten(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MESSAGE_MAX * 4));
    let mut word = String::new();
    for c in message.chars().chain(std::iter::once(' ')) {
        if c.is_whitespace() {
            out.push_str(&excerpt(&word, WORD_MAX));
            out.push(c);
            word.clear();
        } else {
            word.push(c);
        }
    }
    out.pop();
    excerpt(&out, MESSAGE_MAX).into_owned()
}

/// `text`, or when it is longer than `max` characters its start and end
/// with "…" between them (`max` characters in all).
pub(super) fn excerpt(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let count = text.chars().count();
    if count <= max {
        return text.into();
    }
    let tail = max / 3;
    let head = max.saturating_sub(tail + 1);
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(count - tail).collect();
    format!("{start}…{end}").into()
}

/// At most [`PROBLEMS_PER_KEY`] errors of each key, each key's others
/// counted in one more error after its last one shown (`errors` in file
/// order).
fn cap_per_key(errors: Vec<ConfigError>) -> Vec<ConfigError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut kept: Vec<ConfigError> = Vec::with_capacity(errors.len());
    // Per key: the index in `kept` of its last error shown, and how many
    // were left out.
    let mut left_out: HashMap<String, (usize, usize)> = HashMap::new();
    for err in errors {
        let count = seen.entry(err.key.clone()).or_default();
        *count += 1;
        if *count <= PROBLEMS_PER_KEY {
            if *count == PROBLEMS_PER_KEY {
                left_out.insert(err.key.clone(), (kept.len(), 0));
            }
            kept.push(err);
        } else if let Some((_, more)) = left_out.get_mut(&err.key) {
            *more += 1;
        }
    }
    let mut summaries: Vec<(usize, ConfigError)> = left_out
        .into_values()
        .filter(|&(_, more)| more > 0)
        .map(|(at, more)| {
            let last = &kept[at];
            let summary = ConfigError {
                file: last.file.clone(),
                line: last.line,
                key: last.key.clone(),
                message: format!("and {more} more problems with this key"),
            };
            (at, summary)
        })
        .collect();
    summaries.sort_by_key(|&(at, _)| std::cmp::Reverse(at));
    for (at, summary) in summaries {
        kept.insert(at + 1, summary);
    }
    kept
}

/// The problems found in one file, collected while its sections are checked.
pub(super) struct ConfigReport<'t> {
    file: &'t str,
    text: &'t str,
    /// The keys that no section type took, until their section claims them.
    ignored: Vec<IgnoredKey>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
    /// Where each line after the first starts: a span's line is a binary
    /// search, not a count from the top (a file of 65,536 monitors).
    line_starts: Vec<usize>,
    /// Where the part of the file being checked starts: the spans of a
    /// part ([`super::parts`]) count from there.
    offset: usize,
    /// Syntax errors of parts read on their own: when there are any, they
    /// are all that is reported (as for the file read at once).
    syntax: Vec<ConfigError>,
}

impl<'t> ConfigReport<'t> {
    pub(super) fn new(file: &'t str, text: &'t str, ignored: Vec<IgnoredKey>) -> Self {
        ConfigReport {
            file,
            text,
            ignored,
            errors: Vec::new(),
            warnings: Vec::new(),
            line_starts: text
                .bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1)
                .collect(),
            offset: 0,
            syntax: Vec::new(),
        }
    }

    /// Checks the part of the file at `offset` next, whose unknown keys are
    /// `ignored` (spans from the part's start); 0: the file itself.
    pub(super) fn enter_part(&mut self, offset: usize, ignored: Vec<IgnoredKey>) {
        self.offset = offset;
        self.ignored.extend(ignored);
    }

    /// A span of the part being checked, from the file's start.
    pub(super) fn in_file(&self, span: &Range<usize>) -> Range<usize> {
        span.start + self.offset..span.end + self.offset
    }

    /// An error of the TOML parser in the part at `offset`.
    pub(super) fn syntax_error(&mut self, err: &toml::de::Error, offset: usize) {
        let error = toml_error_at(self.file, self.text, err, offset);
        self.syntax.push(error);
    }

    pub(super) fn error(&mut self, span: &Range<usize>, key: &str, message: impl Into<String>) {
        let message = message.into();
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line: self.line(span),
            key: excerpt(key, KEY_MAX).into_owned(),
            message: shorten(&message),
        });
    }

    pub(super) fn warn(&mut self, span: &Range<usize>, key: &str, message: impl Into<String>) {
        let message = message.into();
        self.warnings.push(ConfigWarning {
            file: self.file.to_owned(),
            line: self.line(span),
            key: excerpt(key, KEY_MAX).into_owned(),
            message: shorten(&message),
        });
    }

    /// The 1-based line that `span` starts on.
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        let offset = (span.start + self.offset).min(self.text.len());
        1 + self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The value at `span` as written in the file, e.g. `100_000_001`.
    pub(super) fn written(&self, span: &Range<usize>) -> &'t str {
        self.text.get(self.in_file(span)).unwrap_or_default()
    }

    /// `config` and its warnings (in file order) if no error was reported,
    /// else every error in file order.
    pub(super) fn finish<T>(mut self, config: T) -> Result<(T, Vec<ConfigWarning>), ConfigErrors> {
        debug_assert!(
            self.ignored.is_empty(),
            "every table claims its unknown keys: {:?}",
            self.ignored
        );
        if !self.syntax.is_empty() {
            self.syntax.sort_by_key(|err| err.line);
            return Err(ConfigErrors(self.syntax));
        }
        if self.errors.is_empty() {
            self.warnings.sort_by_key(|warning| warning.line);
            Ok((config, self.warnings))
        } else {
            // Stable: problems of one line keep the order they were found in.
            self.errors.sort_by_key(|err| err.line);
            Err(ConfigErrors(cap_per_key(self.errors)))
        }
    }

    /// Reports the keys of `table` (a dotted key, empty for the top level)
    /// that are not `known`, suggesting the closest known one.
    pub(super) fn unknown_keys(&mut self, table: &str, known: &[&str]) {
        let (mine, others) = std::mem::take(&mut self.ignored)
            .into_iter()
            .partition(|ignored| ignored.table == table);
        self.ignored = others;
        for IgnoredKey { name, span, .. } in mine {
            if known.contains(&name.as_str()) {
                continue;
            }
            let message = match closest(&name, known) {
                Some(guess) => format!("unknown key `{name}`, did you mean `{guess}`?"),
                None => format!("unknown key `{name}`; known keys: {}", known.join(", ")),
            };
            self.error(&span, &dotted(table, &name), message);
        }
    }

    /// The value of a key that must be there; reports it missing at `table_span`.
    pub(super) fn required<T>(
        &mut self,
        value: Option<Checked<T>>,
        table_span: &Range<usize>,
        table: &str,
        name: &str,
    ) -> Option<Checked<T>> {
        if value.is_none() {
            let message = format!("missing required key `{name}`");
            self.error(table_span, &dotted(table, name), message);
        }
        value
    }

    /// The value, or `None` after reporting that it is not `expected`.
    pub(super) fn value<T>(&mut self, value: Checked<T>, key: &str, expected: &str) -> Option<T> {
        match value.value {
            Ok(value) => Some(value),
            Err(found) => {
                self.error(
                    &value.span,
                    key,
                    format!("expected {expected}, found {found}"),
                );
                None
            }
        }
    }

    pub(super) fn string(&mut self, value: Checked<String>, key: &str) -> Option<String> {
        self.value(value, key, "a string")
    }

    /// A string that must not be empty.
    pub(super) fn nonempty(&mut self, value: Checked<String>, key: &str) -> Option<String> {
        let span = value.span.clone();
        let text = self.string(value, key)?;
        if text.is_empty() {
            self.error(&span, key, "must not be empty");
            return None;
        }
        Some(text)
    }

    /// An integer within `allowed`.
    pub(super) fn integer<N>(
        &mut self,
        value: Checked<i128>,
        key: &str,
        allowed: RangeInclusive<N>,
    ) -> Option<N>
    where
        N: TryFrom<i128> + Into<i128> + Copy + std::fmt::Display,
    {
        let span = value.span.clone();
        let n = self.value(value, key, "an integer")?;
        let (min, max) = (*allowed.start(), *allowed.end());
        if (min.into()..=max.into()).contains(&n) {
            return N::try_from(n).ok();
        }
        let message = format!(
            "{} is out of range (allowed: {min} to {max})",
            self.written(&span)
        );
        self.error(&span, key, message);
        None
    }

    /// A duration such as `"12h"`, within `allowed`.
    pub(super) fn duration(
        &mut self,
        value: Checked<String>,
        key: &str,
        allowed: RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let span = value.span.clone();
        let text = self.value(value, key, "a duration such as \"12h\"")?;
        let duration = match humantime::parse_duration(&text) {
            Ok(duration) => duration,
            Err(err) => {
                let message = format!(
                    "invalid duration {text:?} ({err}); write e.g. \"1s\", \"5m\" or \"12h\""
                );
                self.error(&span, key, message);
                return None;
            }
        };
        let (min, max) = allowed.into_inner();
        let problem = if duration < min {
            format!("must be at least {}", humantime::format_duration(min))
        } else if duration > max {
            format!("must be at most {}", humantime::format_duration(max))
        } else {
            return Some(duration);
        };
        self.error(&span, key, format!("{text:?} is out of range: {problem}"));
        None
    }
}

/// `name` in `table` (a dotted key, empty for the top level).
pub(super) fn dotted(table: &str, name: &str) -> String {
    if table.is_empty() {
        name.to_owned()
    } else {
        format!("{table}.{name}")
    }
}

/// An error of the TOML parser (syntax, or a value it cannot represent),
/// named by the table it is in.
pub(super) fn toml_error(file: &str, text: &str, err: &toml::de::Error) -> ConfigError {
    toml_error_at(file, text, err, 0)
}

/// [`toml_error`] of the part of `text` at `offset`.
pub(super) fn toml_error_at(
    file: &str,
    text: &str,
    err: &toml::de::Error,
    offset: usize,
) -> ConfigError {
    let span = err
        .span()
        .map_or(offset..offset, |s| s.start + offset..s.end + offset);
    let mut message = err.message().to_owned();
    if message == "duplicate key"
        && let Some(name) = text.get(span.clone())
    {
        message = format!("duplicate key `{name}`");
    }
    ConfigError {
        file: file.to_owned(),
        line: line_of(text, span.start),
        key: excerpt(&table_at(text, span.start), KEY_MAX).into_owned(),
        message: shorten(&message),
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    1 + text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The key to name a parser error with: the last `[table]` or `[[array]]`
/// header at or above the error's line (a best guess, as the document could
/// not be read).
fn table_at(text: &str, offset: usize) -> String {
    let end = text
        .get(offset..)
        .and_then(|rest| rest.find('\n'))
        .map_or(text.len(), |i| offset + i);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut table = "(top level)".to_owned();
    for line in text.get(..end).unwrap_or(text).lines() {
        let line = line.trim();
        if let Some((name, _)) = line.strip_prefix("[[").and_then(|l| l.split_once("]]")) {
            let count = seen.entry(name.trim()).or_default();
            table = format!("{}[{count}]", name.trim());
            *count += 1;
        } else if let Some((name, _)) = line.strip_prefix('[').and_then(|l| l.split_once(']')) {
            table = name.trim().to_owned();
        }
    }
    table
}

/// The entry of `known` closest to the misspelt `key`, if one is close.
pub(super) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 3).max(2);
    known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|&(distance, _)| distance <= limit && distance < key.chars().count())
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
