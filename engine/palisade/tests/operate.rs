//! What an operator meets: read-only `status` and `history`, the store's
//! integrity check at start, a configuration without monitors, and the log
//! formats (`--log-format`, journald under systemd).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{BIN, DaemonCase, path};
use palisade_sim::testbed::{bounded, stderr};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `palisade <args>` as the unprivileged user `nobody` (root ignores file
/// modes), through setpriv.
fn as_nobody(args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(BIN)
    .args(args);
    bounded(cmd, Duration::from_secs(30))
}

/// A directory of the test's own that every user may enter (removed on
/// drop).
struct OpenDir(PathBuf);

impl OpenDir {
    fn new(name: &str) -> OpenDir {
        let dir = std::env::temp_dir().join(format!("palisade-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        OpenDir(dir)
    }

    /// A configuration with the store at `store` and `monitors` (TOML),
    /// readable by all.
    fn config(&self, store: &Path, monitors: &str) -> PathBuf {
        let config = self.0.join("palisade.toml");
        std::fs::write(
            &config,
            format!("[store]\npath = \"{}\"\n\n{monitors}\n", store.display()),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        config
    }
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        let _ = make_writable(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_writable(dir: &Path) -> std::io::Result<()> {
    for entry in walk(dir) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                all.extend(walk(&p));
            } else {
                all.push(p);
            }
        }
    }
    all
}

/// The names, sizes, modification times and contents of the files of `dir`.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, i64, i64, Vec<u8>)> {
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).unwrap();
            let bytes = if meta.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            (p, meta.len(), meta.mtime(), meta.mtime_nsec(), bytes)
        })
        .collect();
    files.sort();
    files
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A daemon case after two sweeps (history to show): 22 and 80 open, 443
/// expected and down (an incident).
fn swept(name: &str) -> DaemonCase {
    let mut case = DaemonCase::new(name, "confirm = 2", 200_000);
    std::fs::set_permissions(&case.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    case.listen(&[22, 80]);
    case.once();
    case.once();
    case
}

#[test]
fn status_and_history_read_a_read_only_store_as_another_user() {
    let case = swept("readonly");
    // The store alone in a directory of its own, both read-only to all:
    // the daemon stopped cleanly, so there is no -wal or -shm.
    let state = case.dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let store = state.join("palisade.db");
    std::fs::rename(case.dir.join("palisade.db"), &store).unwrap();
    assert!(!case.dir.join("palisade.db-wal").exists());
    let config = case.dir.join("ro.toml");
    let text = std::fs::read_to_string(&case.config).unwrap().replace(
        &path(&case.dir.join("palisade.db")).to_string(),
        path(&store),
    );
    std::fs::write(&config, text).unwrap();
    chmod(&config, 0o644);
    chmod(&store, 0o444);
    chmod(&state, 0o555);
    let before = snapshot(&state);

    let o = as_nobody(&["status", "-c", path(&config)]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("web-1"), "{out}");
    assert!(out.contains("22,80"), "{out}");
    assert!(out.contains("expected_port_down"), "{out}");

    let o = as_nobody(&["status", "-c", path(&config), "--format", "jsonl"]);
    assert!(o.status.success(), "status --format jsonl: {}", stderr(&o));
    assert!(
        stdout(&o).contains("\"monitor\":\"web-1\""),
        "{}",
        stdout(&o)
    );

    let o = as_nobody(&["history", "web-1", "-c", path(&config)]);
    assert!(o.status.success(), "history: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("port 443"), "{out}");
    assert!(out.contains("incident expected_port_down"), "{out}");

    assert_eq!(snapshot(&state), before, "a reader wrote to the store");

    // A store the user may not read: named, exit 1, still nothing written.
    chmod(&store, 0o400);
    for args in [
        vec!["status", "-c", path(&config)],
        vec!["history", "web-1", "-c", path(&config)],
    ] {
        let o = as_nobody(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("cannot read the store {}", path(&store))),
            "{err}"
        );
        assert!(err.contains("Permission denied"), "{err}");
    }
    chmod(&store, 0o444);
    assert_eq!(snapshot(&state), before, "a reader wrote to the store");

    // Root reads it too (root ignores the modes, so SQLite may make its
    // -shm file; the database itself is untouched).
    let db = std::fs::read(&store).unwrap();
    let o = bounded(
        {
            let mut c = Command::new(BIN);
            c.args(["status", "-c", path(&config)]);
            c
        },
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "status as root: {}", stderr(&o));
    assert_eq!(std::fs::read(&store).unwrap(), db);
    chmod(&state, 0o755);
}

#[test]
fn a_reader_that_cannot_share_the_log_of_a_live_store_says_so() {
    // The files of a store whose writer is still at work (or died): the
    // database and a -wal with changes, no -shm yet; read-only to all, in
    // a read-only directory.
    let dir = OpenDir::new("wal");
    let state = dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    let live = dir.0.join("live.db");
    drop(palisade::store::Store::open(&live).unwrap());
    let conn = rusqlite::Connection::open(&live).unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute("INSERT INTO sink_cursor (sink, seq) VALUES ('s', 7)", [])
        .unwrap();
    let store = state.join("palisade.db");
    std::fs::copy(&live, &store).unwrap();
    let wal = state.join("palisade.db-wal");
    std::fs::copy(dir.0.join("live.db-wal"), &wal).unwrap();
    drop(conn);
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    chmod(&store, 0o444);
    chmod(&wal, 0o444);
    chmod(&state, 0o555);
    let config = dir.config(
        &store,
        "[[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\n",
    );
    let before = snapshot(&state);
    let o = as_nobody(&["status", "-c", path(&config)]);
    let err = stderr(&o);
    // SQLite cannot read a -wal without its -shm index: named, exit 1.
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot read the store {}", path(&store))),
        "{err}"
    );
    assert!(err.contains("-shm"), "{err}");
    assert_eq!(snapshot(&state), before, "a reader wrote to the store");
    chmod(&state, 0o755);
}

#[test]
fn readers_name_a_store_that_does_not_exist_yet() {
    let dir = OpenDir::new("missing");
    let store = dir.0.join("state").join("palisade.db");
    let config = dir.config(
        &store,
        "[[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\n",
    );
    for args in [
        vec!["status", "-c", path(&config)],
        vec!["history", "web-1", "-c", path(&config)],
    ] {
        let o = as_nobody(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("the store {} does not exist yet", path(&store))),
            "{err}"
        );
        // Created neither as nobody nor as root.
        assert!(!dir.0.join("state").exists());
    }
    let o = Command::new(BIN)
        .args(["status", "-c", path(&config)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!dir.0.join("state").exists(), "status created the store");
}

/// A heartbeat of the agent `name`, as `palisade agent` sends it.
fn beat(
    name: &str,
    labels: &[&str],
    jobs_done: u64,
    job: Option<palisade_core::cluster::JobId>,
) -> palisade_core::cluster::AgentBeat {
    palisade_core::cluster::AgentBeat {
        version: palisade_core::cluster::CLUSTER_VERSION,
        name: name.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        rate: 100_000,
        started: common::now_ms() - 3_600_000,
        jobs_done,
        job,
    }
}

/// The JSON lines of `status --format jsonl` that have the key `key`.
fn lines_with(out: &str, key: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v.get(key).is_some())
        .collect()
}

#[test]
fn status_lists_the_scan_agents_when_the_store_has_any() {
    let dir = OpenDir::new("agents");
    let store = dir.0.join("palisade.db");
    let config = dir.config(
        &store,
        "[[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\n",
    );
    drop(palisade::store::Store::open(&store).unwrap());
    chmod(&store, 0o444);

    // No agents: as before, no agents' table, no agent line.
    let o = as_nobody(&["status", "-c", path(&config)]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("web-1") && out.contains("dead letters: 0"),
        "{out}"
    );
    assert!(!out.contains("AGENT"), "{out}");
    let o = as_nobody(&["status", "-c", path(&config), "--format", "jsonl"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    assert!(
        lines_with(&stdout(&o), "agent").is_empty(),
        "{}",
        stdout(&o)
    );

    // Two agents recorded through the store as the coordinator records
    // them: fra1-a live and scanning, par-b gone ten minutes ago.
    let now = common::now_ms();
    {
        chmod(&store, 0o600);
        let mut s = palisade::store::Store::open(&store).unwrap();
        let job = palisade_core::cluster::JobId {
            sweep: 1_764_590_400_000,
            slice: 2,
            shard: 5,
        };
        s.record_agent_beat(
            &beat("fra1-a", &["any", "site=fra1"], 42, Some(job)),
            now - 3_000,
        )
        .unwrap();
        s.record_agent_beat(&beat("par-b", &["any"], 7, None), now - 605_000)
            .unwrap();
        s.record_agent_gone("par-b", now - 600_000).unwrap();
    }
    assert!(!dir.0.join("palisade.db-wal").exists());
    chmod(&store, 0o444);
    let before = snapshot(&dir.0);

    let o = as_nobody(&["status", "-c", path(&config)]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    let out = stdout(&o);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line of {name}: {out}"))
            .to_owned()
    };
    assert!(out.contains("AGENT "), "{out}");
    let a = line("fra1-a");
    for part in [
        "any,site=fra1",
        " live ",
        "s ago)",
        " 42 ",
        "100000/s",
        "1764590400000.2.5",
    ] {
        assert!(a.contains(part), "{part:?} not in {a:?}");
    }
    let b = line("par-b");
    for part in ["gone since ", "(10 min ago)", " 7 ", "100000/s"] {
        assert!(b.contains(part), "{part:?} not in {b:?}");
    }
    assert!(b.trim_end().ends_with('-'), "no job: {b:?}");
    assert!(out.contains("agents: 1 live, 0 silent, 1 gone"), "{out}");

    let o = as_nobody(&["status", "-c", path(&config), "--format", "jsonl"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    let agents = lines_with(&stdout(&o), "agent");
    assert_eq!(agents.len(), 2, "{}", stdout(&o));
    assert_eq!(agents[0]["agent"], "fra1-a");
    assert_eq!(agents[0]["state"], "live");
    assert_eq!(agents[0]["labels"], serde_json::json!(["any", "site=fra1"]));
    assert_eq!(agents[0]["jobs_done"], 42);
    assert_eq!(agents[0]["rate"], 100_000);
    assert_eq!(agents[0]["job"], "1764590400000.2.5");
    assert_eq!(agents[0]["last_beat_ms"], now - 3_000);
    assert!(agents[0]["gone_at_ms"].is_null());
    assert_eq!(agents[1]["agent"], "par-b");
    assert_eq!(agents[1]["state"], "gone");
    assert_eq!(agents[1]["gone_at_ms"], now - 600_000);
    assert!(agents[1]["job"].is_null());

    assert_eq!(snapshot(&dir.0), before, "a reader wrote to the store");
}

/// A small xorshift generator: the same "random" pages every run.
fn noise(seed: &mut u64, buf: &mut [u8]) {
    for b in buf {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *b = *seed as u8;
    }
}

/// A store with some history, then random pages after the first
/// overwritten (the header and the schema page kept when `keep_first`).
fn damaged_store(store: &Path, keep_first: bool) {
    drop(palisade::store::Store::open(store).unwrap());
    let conn = rusqlite::Connection::open(store).unwrap();
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO scans (sweep, monitor, host, address, kind, started_ms, finished_ms,
                            conclusive, reachable, open_ports)
         SELECT i, 'web-' || (i % 50), '198.18.0.2', '198.18.0.2', 'full', i, i + 1, 1, 1, '[22,80]'
         FROM n;",
    )
    .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(store).unwrap();
    let page = 4096;
    let pages = bytes.len() / page;
    assert!(pages > 20, "{pages} pages");
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    let first = if keep_first { 1 } else { 0 };
    for p in (first..pages).step_by(4) {
        let start = if p == 0 { 100 } else { p * page };
        noise(&mut seed, &mut bytes[start..(p + 1) * page]);
    }
    std::fs::write(store, bytes).unwrap();
}

#[test]
fn run_refuses_a_damaged_store_with_the_way_out() {
    for keep_first in [true, false] {
        let dir = OpenDir::new(&format!("damaged-{keep_first}"));
        let store = dir.0.join("palisade.db");
        damaged_store(&store, keep_first);
        let before = std::fs::read(&store).unwrap();
        let config = dir.config(
            &store,
            "[[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\n",
        );
        let o = bounded(
            {
                let mut c = Command::new(BIN);
                c.args(["run", "--once", "-c", path(&config)]);
                c
            },
            Duration::from_secs(60),
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "keep_first {keep_first}: {err}");
        assert!(
            err.contains(&format!("the store {} is damaged", path(&store))),
            "{err}"
        );
        assert!(err.contains("restore the file from a backup"), "{err}");
        assert!(
            err.contains(&format!("sqlite3 {} .recover", path(&store))),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert_eq!(
            std::fs::read(&store).unwrap(),
            before,
            "the store was written"
        );

        // Under journald the error is an error (priority 3), not the
        // stream's default.
        let o = bounded(
            {
                let mut c = Command::new(BIN);
                c.args([
                    "--log-format",
                    "journald",
                    "run",
                    "--once",
                    "-c",
                    path(&config),
                ]);
                c
            },
            Duration::from_secs(60),
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).starts_with("<3>palisade: error: the store"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn run_once_without_monitors_says_there_are_none() {
    let dir = OpenDir::new("no-monitors");
    let store = dir.0.join("palisade.db");
    let config = dir.config(&store, "");
    let o = bounded(
        {
            let mut c = Command::new(BIN);
            c.args(["run", "--once", "-c", path(&config)]);
            c
        },
        Duration::from_secs(60),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no monitors: nothing to sweep"), "{err}");
    assert!(!err.contains("could be resolved"), "{err}");
}

/// `palisade deliveries list` on a store others may read: it tightens the
/// mode and says so in a warning, the one log line of these tests.
fn warning_run(format: Option<&str>, journal_stream: Option<&str>, stderr_file: &Path) -> String {
    let dir = OpenDir::new(&format!(
        "log-{}-{}",
        format.unwrap_or("auto"),
        journal_stream.is_some()
    ));
    let store = dir.0.join("palisade.db");
    drop(palisade::store::Store::open(&store).unwrap());
    chmod(&store, 0o644);
    let config = dir.config(&store, "");
    let mut cmd = Command::new(BIN);
    if let Some(format) = format {
        cmd.args(["--log-format", format]);
    }
    cmd.args(["deliveries", "list", "-c", path(&config)]);
    cmd.env_remove("PALISADE_LOG").env_remove("JOURNAL_STREAM");
    if let Some(value) = journal_stream {
        cmd.env("JOURNAL_STREAM", value);
    }
    let file = std::fs::File::create(stderr_file).unwrap();
    cmd.stdout(Stdio::null()).stderr(file);
    let status = cmd.status().unwrap();
    let log = std::fs::read_to_string(stderr_file).unwrap();
    assert!(status.success(), "{log}");
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o600
    );
    log
}

/// The device and inode of `file`, as systemd writes them in
/// `JOURNAL_STREAM`.
fn journal_stream(file: &Path) -> String {
    std::fs::File::create(file).unwrap();
    let meta = std::fs::metadata(file).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

#[test]
fn log_lines_in_text_json_and_journald_form() {
    let dir = OpenDir::new("logs");
    let file = dir.0.join("stderr");
    let is_warning = |line: &str| line.contains("its mode is now 600");

    // Text (the default off systemd): a time first, the level, no colour.
    let log = warning_run(None, None, &file);
    let line = log.lines().find(|l| is_warning(l)).expect(&log);
    assert!(line.starts_with(|c: char| c.is_ascii_digit()), "{line}");
    assert!(line.contains("WARN"), "{line}");
    assert!(!line.contains('\u{1b}'), "{line:?}");
    let log = warning_run(Some("text"), None, &file);
    let line = log.lines().find(|l| is_warning(l)).expect(&log);
    assert!(line.starts_with(|c: char| c.is_ascii_digit()), "{line}");

    // JSON: one object a line, the fields at the top.
    let log = warning_run(Some("json"), None, &file);
    let line = log.lines().find(|l| is_warning(l)).expect(&log);
    let v: serde_json::Value = serde_json::from_str(line).expect(line);
    assert_eq!(v["level"], "WARN", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("mode is now 600"),
        "{v}"
    );
    assert!(v["path"].as_str().unwrap().ends_with("palisade.db"), "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
    assert!(v["target"].as_str().unwrap().starts_with("palisade"), "{v}");

    // Journald, asked for, and found through JOURNAL_STREAM: the priority
    // first, no time.
    let stream = journal_stream(&file);
    for (format, journal) in [(Some("journald"), None), (None, Some(stream.as_str()))] {
        let log = warning_run(format, journal, &file);
        let line = log.lines().find(|l| is_warning(l)).expect(&log);
        assert!(line.starts_with("<4>"), "{format:?} {journal:?}: {line}");
        let rest = line.trim_start_matches("<4>").trim_start();
        assert!(rest.starts_with("WARN"), "no time: {line}");
    }
    // A JOURNAL_STREAM that is not this stderr (inherited): text.
    let log = warning_run(None, Some("1:2"), &file);
    let line = log.lines().find(|l| is_warning(l)).expect(&log);
    assert!(line.starts_with(|c: char| c.is_ascii_digit()), "{line}");

    // PALISADE_LOG still filters.
    let o = Command::new(BIN)
        .args(["--log-format", "json", "plan", "198.18.0.1", "-p", "1"])
        .env("PALISADE_LOG", "off")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    let o = Command::new(BIN)
        .args(["--log-format", "xml", "plan", "198.18.0.1", "-p", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn a_full_disk_is_said_once_naming_the_store() {
    let dir = OpenDir::new("full");
    let mnt = dir.0.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let store = mnt.join("palisade.db");
    let config = dir.config(
        &store,
        "[[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\n",
    );
    for args in [
        vec!["run", "--once", "-c", path(&config)],
        vec!["deliveries", "list", "-c", path(&config)],
    ] {
        // A full 1 MiB tmpfs in a mount namespace of the command's own.
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                r#"mount -t tmpfs -o size=1M tmpfs "$1" || exit 99
                   dd if=/dev/zero of="$1/fill" bs=4k count=1000 2>/dev/null
                   shift; exec "$@""#,
            )
            .arg("sh")
            .arg(&mnt)
            .arg(BIN)
            .args(&args);
        let o = bounded(cmd, Duration::from_secs(60));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(err.matches("disk is full").count(), 1, "{err}");
        assert!(err.contains(path(&store)), "{err}");
    }
}
