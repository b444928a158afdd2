//! Opening the store for reading only (`status`, `history`), and the
//! integrity check the daemon runs on it at start.
//!
//! A read-only open writes nothing: no directory, no file, no mode, no
//! migration. SQLite reads a WAL database through its `-shm` file, which a
//! reader creates when it can; when it cannot (the directory is read-only
//! to this user) and there is no `-wal` file with changes to read, the file
//! is read as `immutable` (no locks, no `-shm`), as SQLite's "read-only WAL
//! databases" rules allow.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{MIGRATIONS, Store, StoreError};

/// How many of the problems an integrity check finds the error names.
const PROBLEMS_SHOWN: usize = 3;

impl Store {
    /// Opens the existing store at `path` for reading only, and refuses one
    /// of another schema version (a read-only command cannot migrate it).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = connect_read_only(path)?;
        let name = path.display().to_string();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| StoreError::at(&name, e))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: name,
                found: version,
                known,
            });
        }
        if version < known {
            return Err(StoreError::Outdated {
                path: name,
                found: version,
                known,
            });
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Store { conn })
    }

    /// Opens (creating if needed) the store at `path` as [`Store::open`]
    /// does, after checking an existing one with `PRAGMA quick_check`: a
    /// damaged store is refused ([`StoreError::Corrupt`]) before anything
    /// is written to it. For the daemon's start.
    ///
    /// `quick_check` rather than `integrity_check`: both read every page and
    /// find damaged pages, bad records and broken b-trees; `integrity_check`
    /// also matches every index entry with its row, which costs a lookup per
    /// entry (several times the time on a large store, see docs/DESIGN.md),
    /// for damage that `REINDEX` repairs and that random overwrites rarely
    /// leave alone. On a 750 MB store: 2 s against 20 s.
    pub fn open_checked(path: &Path) -> Result<Store, StoreError> {
        if path.exists() {
            let name = path.display().to_string();
            let conn = connect_read_only(path)?;
            let started = std::time::Instant::now();
            check(&conn, &name)?;
            tracing::info!(
                store = %name,
                "store checked (quick_check) in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Store::open(path)
    }
}

/// Runs `PRAGMA quick_check` on `conn` (the store at `path`).
fn check(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let problems: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check(100)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
    let problems = problems.map_err(|e| StoreError::at(path, e))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    let mut found = problems
        .iter()
        .take(PROBLEMS_SHOWN)
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > PROBLEMS_SHOWN {
        found.push_str(&format!(
            "; and {}{} more",
            problems.len() - PROBLEMS_SHOWN,
            if problems.len() >= 100 { " or" } else { "" }
        ));
    }
    Err(StoreError::Corrupt {
        path: path.to_owned(),
        problem: found,
    })
}

/// A read-only connection to the existing store at `path`, its first page
/// read (so that an unreadable or damaged file fails here, naming it).
fn connect_read_only(path: &Path) -> Result<Connection, StoreError> {
    let name = path.display().to_string();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Missing { path: name });
        }
        Err(source) => return Err(StoreError::Unreadable { path: name, source }),
        Ok(meta) if !meta.is_file() => {
            return Err(StoreError::Unreadable {
                path: name,
                source: std::io::Error::other("not a file"),
            });
        }
        Ok(_) => {}
    }
    // Read access to the file itself, checked the way the kernel will.
    if let Err(source) = std::fs::File::open(path) {
        return Err(StoreError::Unreadable { path: name, source });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let first_read = |conn: Connection| -> Result<Connection, rusqlite::Error> {
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        Ok(conn)
    };
    let opened = Connection::open_with_flags(path, flags).and_then(first_read);
    match opened {
        Ok(conn) => Ok(conn),
        Err(e) if cannot_share(&e) && !side_file(path, "-wal").exists() => {
            // No -shm can be made here and no -wal holds changes: read the
            // file as it is.
            tracing::debug!(store = %name, "reading the store as immutable ({e})");
            let uri = format!("file:{}?immutable=1", uri_path(path));
            Connection::open_with_flags(uri, flags)
                .and_then(first_read)
                .map_err(|e| StoreError::at(&name, e))
        }
        Err(e) if cannot_share(&e) => Err(StoreError::NoShm {
            path: name,
            source: e,
        }),
        Err(e) => Err(StoreError::at(&name, e)),
    }
}

/// SQLite could not open or create the `-shm` file a WAL reader needs.
fn cannot_share(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{CannotOpen, ReadOnly};
    matches!(e.sqlite_error_code(), Some(CannotOpen | ReadOnly))
}

/// `path` with `suffix` appended (`-wal`, `-shm`).
fn side_file(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut side = path.as_os_str().to_owned();
    side.push(suffix);
    side.into()
}

/// `path` for a `file:` URI: `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

impl StoreError {
    /// `e` met with the store at `path`: [`StoreError::Corrupt`] if SQLite
    /// says the file is damaged or not a database, else
    /// [`StoreError::Open`].
    pub(super) fn at(path: &str, e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match e.sqlite_error_code() {
            Some(DatabaseCorrupt | NotADatabase) => StoreError::Corrupt {
                path: path.to_owned(),
                problem: e.to_string(),
            },
            _ => StoreError::Open {
                path: path.to_owned(),
                source: e,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths_escape_what_a_uri_would_read() {
        assert_eq!(
            uri_path(Path::new("/var/lib/p?x#y%z.db")),
            "/var/lib/p%3fx%23y%25z.db"
        );
    }

    #[test]
    fn a_store_not_yet_created_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.db");
        let e = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn read_only_open_sees_the_data_and_refuses_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        drop(Store::open(&path).unwrap());
        let store = Store::open_read_only(&path).unwrap();
        assert_eq!(store.scan_count().unwrap(), 0);
        let e = store
            .conn
            .execute("DELETE FROM scans", [])
            .expect_err("read-only");
        assert_eq!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::ReadOnly));
    }

    #[test]
    fn an_outdated_store_is_not_migrated_by_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        let e = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(e, StoreError::Outdated { found: 1, .. }), "{e}");
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
    }

    /// The files of a store whose writer died: the database and a `-wal`
    /// holding committed changes not yet checkpointed, no `-shm`.
    fn crashed_store(dir: &Path) -> std::path::PathBuf {
        let live = dir.join("live.db");
        let store = Store::open(&live).unwrap();
        store
            .conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .unwrap();
        store
            .conn
            .execute(
                "INSERT INTO sink_cursor (sink, seq) VALUES ('after-the-crash', 7)",
                [],
            )
            .unwrap();
        let copy = dir.join("crashed.db");
        std::fs::copy(&live, &copy).unwrap();
        std::fs::copy(side_file(&live, "-wal"), side_file(&copy, "-wal")).unwrap();
        drop(store);
        copy
    }

    fn cursor(store: &Store) -> Option<i64> {
        store
            .conn
            .query_row(
                "SELECT seq FROM sink_cursor WHERE sink = 'after-the-crash'",
                [],
                |r| r.get(0),
            )
            .ok()
    }

    #[test]
    fn a_store_left_by_a_crash_is_checked_and_read_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = crashed_store(dir.path());
        assert!(side_file(&path, "-wal").metadata().unwrap().len() > 0);
        assert_eq!(cursor(&Store::open_read_only(&path).unwrap()), Some(7));
        assert_eq!(cursor(&Store::open_checked(&path).unwrap()), Some(7));
    }

    #[test]
    fn a_healthy_store_passes_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        drop(Store::open_checked(&path).unwrap());
        drop(Store::open_checked(&path).unwrap());
    }

    #[test]
    fn a_damaged_store_is_refused_before_it_is_opened() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        {
            let store = Store::open(&path).unwrap();
            // Pages enough to damage: an index and a table of some size.
            store
                .conn
                .execute_batch(
                    "CREATE TABLE filler (id INTEGER PRIMARY KEY, v TEXT);
                     CREATE INDEX filler_v ON filler (v);
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
                     INSERT INTO filler (v) SELECT hex(randomblob(40)) FROM n;",
                )
                .unwrap();
        }
        let pages = std::fs::metadata(&path).unwrap().len() / 4096;
        assert!(pages > 10, "{pages} pages");
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for page in (2..pages).step_by(3) {
            file.seek(SeekFrom::Start(page * 4096)).unwrap();
            file.write_all(&[0xA5; 4096]).unwrap();
        }
        drop(file);
        let before = std::fs::read(&path).unwrap();
        let e = Store::open_checked(&path).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(".recover"), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
    }
}
