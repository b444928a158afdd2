//! The JSON lines sink: one JSON envelope per line, appended to a file (or
//! written to stdout, a FIFO or another non-regular file).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Sink, SinkError};
use crate::schema::Envelope;

/// Appends events as JSON lines, flushed and fsynced per batch.
///
/// On open, the ids already in the file are read so that a re-send after a
/// crash (events written but not yet marked delivered) is not written twice.
/// A torn last line (no trailing newline, left by a crash mid-write) is cut
/// off; its event, never acknowledged, is written again when re-sent.
///
/// A path that is not a regular file (a FIFO, a character device) is
/// written as a stream, never blocking: opening a FIFO nobody reads fails
/// at once (and is retried later), and a write that finds the pipe full for
/// [`PIPE_STALL_LIMIT`] fails; the rest of a line cut short is written
/// first next time, so the reader never sees a torn line.
#[derive(Debug)]
pub struct JsonlSink {
    name: String,
    target: JsonlDestination,
    seen: HashSet<String>,
}

/// How long a write to a full pipe may wait for its reader.
pub const PIPE_STALL_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum JsonlDestination {
    Stdout,
    File {
        path: PathBuf,
        /// Taken while a batch is written on a blocking thread.
        file: Option<File>,
    },
    /// A FIFO or another file that is no regular file.
    Stream {
        path: PathBuf,
        file: Option<File>,
        /// The rest of a line cut short by a full pipe, and its event id.
        tail: Option<(Vec<u8>, String)>,
    },
}

/// Whether `path` exists and is a FIFO, socket or device.
fn is_stream(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| {
        let t = m.file_type();
        t.is_fifo() || t.is_char_device() || t.is_socket() || t.is_block_device()
    })
}

/// Opens a stream for writing without blocking: a FIFO with no reader is
/// an error (ENXIO) rather than a wait.
fn open_stream(path: &Path) -> Result<File, SinkError> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| SinkError::Open {
            path: path.to_path_buf(),
            source: if source.raw_os_error() == Some(libc::ENXIO) {
                std::io::Error::other("nobody reads this FIFO")
            } else {
                source
            },
        })
}

/// Writes `data` to a non-blocking stream, waiting for a full pipe up to
/// [`PIPE_STALL_LIMIT`] at a time; returns how much was written.
fn write_stream(file: &mut File, data: &[u8]) -> (usize, std::io::Result<()>) {
    let mut written = 0;
    let mut stalled = Instant::now();
    while written < data.len() {
        match file.write(&data[written..]) {
            Ok(0) => return (written, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                written += n;
                stalled = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stalled.elapsed() >= PIPE_STALL_LIMIT {
                    let why = format!(
                        "the pipe stayed full for {}s: its reader does not read",
                        PIPE_STALL_LIMIT.as_secs()
                    );
                    return (
                        written,
                        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why)),
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

impl JsonlSink {
    /// Opens `path` for appending (creating it), or stdout for `None` / `"-"`.
    pub fn open(path: Option<&Path>) -> Result<JsonlSink, SinkError> {
        let path = match path {
            None => None,
            Some(p) if p == Path::new("-") => None,
            Some(p) => Some(p.to_path_buf()),
        };
        let Some(path) = path else {
            return Ok(JsonlSink {
                name: "jsonl:-".to_string(),
                target: JsonlDestination::Stdout,
                seen: HashSet::new(),
            });
        };
        if is_stream(&path) {
            let file = open_stream(&path)?;
            return Ok(JsonlSink {
                name: format!("jsonl:{}", path.display()),
                target: JsonlDestination::Stream {
                    path,
                    file: Some(file),
                    tail: None,
                },
                seen: HashSet::new(),
            });
        }
        let (file, seen) = open_file(&path)?;
        tracing::debug!(path = %path.display(), known = seen.len(), "opened JSON lines sink");
        Ok(JsonlSink {
            name: format!("jsonl:{}", path.display()),
            target: JsonlDestination::File {
                path,
                file: Some(file),
            },
            seen,
        })
    }

    /// How many distinct event ids the sink knows to be written.
    pub fn known_ids(&self) -> usize {
        self.seen.len()
    }
}

fn open_file(path: &Path) -> Result<(File, HashSet<String>), SinkError> {
    let open_err = |source| SinkError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(open_err)?;
    let mut seen = HashSet::new();
    let mut reader = BufReader::new(&file);
    let mut line = Vec::new();
    let mut complete_len: u64 = 0;
    let mut line_no = 0usize;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(open_err)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            break; // torn tail, handled below
        }
        line_no += 1;
        complete_len += n as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<IdOnly>(&line) {
            Ok(e) => {
                seen.insert(e.id);
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), line = line_no, error = %err, "unreadable line in JSON lines file; ignored");
            }
        }
    }
    drop(reader);
    let len = file.metadata().map_err(open_err)?.len();
    if len > complete_len {
        tracing::warn!(
            path = %path.display(),
            bytes = len - complete_len,
            "cutting off a torn last line (crash during a write)"
        );
        file.set_len(complete_len).map_err(open_err)?;
        file.sync_data().map_err(open_err)?;
    }
    file.seek(SeekFrom::End(0)).map_err(open_err)?;
    Ok((file, seen))
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

/// Serialises the events not yet written, one line each.
fn render(
    events: &[Envelope],
    seen: &HashSet<String>,
) -> Result<(Vec<u8>, Vec<String>), SinkError> {
    let mut buf = Vec::new();
    let mut ids = Vec::new();
    let mut batch = HashSet::new();
    for e in events {
        if seen.contains(&e.id) || !batch.insert(e.id.as_str()) {
            continue;
        }
        serde_json::to_writer(&mut buf, e).map_err(crate::schema::SchemaError::EncodeJson)?;
        buf.push(b'\n');
        ids.push(e.id.clone());
    }
    Ok((buf, ids))
}

#[async_trait::async_trait]
impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&mut self, events: &[Envelope]) -> Result<usize, SinkError> {
        // After a failed write the file is reopened, which re-reads its ids.
        if let JsonlDestination::File { path, file } = &mut self.target
            && file.is_none()
        {
            let (reopened, ids) = open_file(path)?;
            *file = Some(reopened);
            self.seen.extend(ids);
        }
        if let JsonlDestination::Stream { .. } = &self.target {
            return self.publish_stream(events).await;
        }
        let (buf, ids) = render(events, &self.seen)?;
        if buf.is_empty() {
            return Ok(events.len());
        }
        match &mut self.target {
            JsonlDestination::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf)
                    .and_then(|()| out.flush())
                    .map_err(|source| SinkError::Write {
                        path: PathBuf::from("<stdout>"),
                        source,
                    })?;
            }
            JsonlDestination::File { path, file } => {
                let Some(handle) = file.take() else {
                    return Err(SinkError::Write {
                        path: path.clone(),
                        source: std::io::Error::other("file not open"),
                    });
                };
                let task = tokio::task::spawn_blocking(move || {
                    let mut handle = handle;
                    let result = handle.write_all(&buf).and_then(|()| handle.sync_data());
                    (handle, result)
                });
                match task.await {
                    Ok((handle, Ok(()))) => *file = Some(handle),
                    Ok((_, Err(source))) => {
                        // Reopen next time: that cuts any torn line.
                        return Err(SinkError::Write {
                            path: path.clone(),
                            source,
                        });
                    }
                    Err(join) => {
                        return Err(SinkError::Write {
                            path: path.clone(),
                            source: std::io::Error::other(join.to_string()),
                        });
                    }
                }
            }
            JsonlDestination::Stream { .. } => {}
        }
        self.seen.extend(ids);
        Ok(events.len())
    }
}

impl JsonlSink {
    /// [`Sink::publish`] to a stream: the rest of a line cut short first,
    /// then the batch, without ever blocking for long.
    async fn publish_stream(&mut self, events: &[Envelope]) -> Result<usize, SinkError> {
        let JsonlDestination::Stream { path, file, tail } = &mut self.target else {
            return Ok(0);
        };
        let handle = match file.take() {
            Some(handle) => handle,
            None => open_stream(path)?,
        };
        let (buf, ids) = render(events, &self.seen)?;
        let pending = tail.take();
        let skip = pending.as_ref().map(|(_, id)| id.clone());
        // The event whose line is being finished is not rendered again.
        let (buf, ids) = match &skip {
            Some(id) if ids.contains(id) => {
                let keep: Vec<&Envelope> = events.iter().filter(|e| &e.id != id).collect();
                let keep: Vec<Envelope> = keep.into_iter().cloned().collect();
                render(&keep, &self.seen)?
            }
            _ => (buf, ids),
        };
        let head_len = pending.as_ref().map_or(0, |(rest, _)| rest.len());
        let mut data = pending
            .as_ref()
            .map_or_else(Vec::new, |(rest, _)| rest.clone());
        data.extend_from_slice(&buf);
        let task = tokio::task::spawn_blocking(move || {
            let mut handle = handle;
            let (written, result) = write_stream(&mut handle, &data);
            (handle, data, written, result)
        });
        let (handle, data, written, result) = task.await.map_err(|join| SinkError::Write {
            path: path.clone(),
            source: std::io::Error::other(join.to_string()),
        })?;
        // What was written: the finished line, then whole lines of the
        // batch, then perhaps part of one more.
        if let Some((_, id)) = &pending
            && written >= head_len
        {
            self.seen.insert(id.clone());
        }
        if written < head_len {
            if let Some((rest, id)) = pending {
                *tail = Some((rest[written..].to_vec(), id));
            }
        } else {
            let mut start = head_len;
            for id in &ids {
                let Some(end) = data[start..].iter().position(|&b| b == b'\n') else {
                    break;
                };
                let end = start + end + 1;
                if end <= written {
                    self.seen.insert(id.clone());
                } else {
                    if written > start {
                        *tail = Some((data[written..end].to_vec(), id.clone()));
                    }
                    break;
                }
                start = end;
            }
        }
        match result {
            Ok(()) => {
                *file = Some(handle);
                Ok(events.len())
            }
            Err(source) => {
                let full = source.kind() == std::io::ErrorKind::TimedOut;
                if full {
                    // The reader is slow: keep the pipe and the rest of the line.
                    *file = Some(handle);
                } else {
                    // The reader is gone: a new one starts afresh.
                    *tail = None;
                }
                let acked = events
                    .iter()
                    .take_while(|e| self.seen.contains(&e.id))
                    .count();
                super::partial(
                    acked,
                    SinkError::Write {
                        path: path.clone(),
                        source,
                    },
                    &self.name,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
