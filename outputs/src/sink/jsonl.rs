//! The JSON lines sink: one JSON envelope per line, appended to a file (or
//! written to stdout).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Sink, SinkError};
use crate::schema::Envelope;

/// Appends events as JSON lines, flushed and fsynced per batch.
///
/// On open, the ids already in the file are read so that a re-send after a
/// crash (events written but not yet marked delivered) is not written twice.
/// A torn last line (no trailing newline, left by a crash mid-write) is cut
/// off; its event, never acknowledged, is written again when re-sent.
#[derive(Debug)]
pub struct JsonlSink {
    name: String,
    target: JsonlDestination,
    seen: HashSet<String>,
}

#[derive(Debug)]
enum JsonlDestination {
    Stdout,
    File {
        path: PathBuf,
        /// Taken while a batch is written on a blocking thread.
        file: Option<File>,
    },
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
        }
        self.seen.extend(ids);
        Ok(events.len())
    }
}

#[cfg(test)]
mod tests;
