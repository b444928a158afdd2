//! History and outbox in SQLite (rusqlite, WAL).
//!
//! One transaction per scan result holds everything it caused: the scan
//! summary, the detected state changes, incidents opened or resolved, the
//! events for the sinks (the outbox) and the monitor's new state. A crash
//! at any point leaves either all of it or none of it, so a restarted daemon
//! neither loses a confirmed event nor emits one twice. Sinks mark outbox
//! rows delivered only after they acknowledged them.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

use palisade_core::health::HealthState;
use palisade_core::monitor::{
    Event, HostIncidentKind, Millis, MonitorState, MonitorSummary, PortRanges, Step,
};
use palisade_core::plan::{SavedMonitor, ScanFacts, ScanKind};
use palisade_outputs::sink::redact_url;

use crate::config::SinkStart;

mod access;
mod agents;
mod monitors;
mod views;

pub use agents::AgentRow;
pub use monitors::{ImportReport, ManagedBy, MonitorWriteError, StoredMonitor};
pub use views::*;

/// Store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the store {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the store {path} has schema version {found}, newer than this palisade knows ({known}); upgrade palisade"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "the store {path} does not exist yet: the daemon (`palisade run`) creates it at its first start; is store.path right?"
    )]
    Missing { path: String },
    #[error(
        "cannot read the store {path}: {source} (it is its owner's only, mode 0600: run this as that user or as root)"
    )]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the store {path} has schema version {found}, older than this palisade's ({known}): start the daemon once (`palisade run`), which migrates it"
    )]
    Outdated {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "cannot read the store {path}: {source}: a reader of its write-ahead log needs its -shm file, which this user can neither open nor create next to it (run this as the store's owner or as root)"
    )]
    NoShm {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the store {path} is damaged ({problem}); palisade will not use it. Stop palisade, then restore the file from a backup, or salvage what is readable: `sqlite3 {path} .recover | sqlite3 {path}.recovered`, check it, and move it in place of the damaged file (with its -wal and -shm files removed)"
    )]
    Corrupt { path: String, problem: String },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store: bad saved state for monitor {monitor}: {source}")]
    State {
        monitor: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE scans (
    id          INTEGER PRIMARY KEY,
    sweep       INTEGER NOT NULL,
    monitor     TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    address     TEXT,
    kind        TEXT    NOT NULL,           -- 'full' or 'recheck'
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    conclusive  INTEGER NOT NULL,
    reachable   INTEGER NOT NULL,
    open_ports  TEXT    NOT NULL,           -- JSON array
    note        TEXT                        -- why inconclusive, if so
);
CREATE INDEX scans_monitor ON scans (monitor, started_ms);
CREATE TABLE state_changes (
    id         INTEGER PRIMARY KEY,
    monitor    TEXT    NOT NULL,
    port       INTEGER NOT NULL,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL,
    scan_id    INTEGER NOT NULL REFERENCES scans (id)
);
CREATE INDEX state_changes_monitor ON state_changes (monitor, at_ms);
CREATE TABLE incidents (
    id              TEXT PRIMARY KEY,
    monitor         TEXT    NOT NULL,
    port            INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    first_seen_ms   INTEGER NOT NULL,
    confirmed_at_ms INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    resolved_at_ms  INTEGER,
    resolved_state  TEXT,
    resolution      TEXT
);
CREATE INDEX incidents_monitor ON incidents (monitor, first_seen_ms);
CREATE TABLE monitor_state (
    monitor      TEXT PRIMARY KEY,
    state        TEXT    NOT NULL,          -- JSON of MonitorState
    last_full_ms INTEGER
);
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL,
    monitor    TEXT    NOT NULL,
    payload    TEXT    NOT NULL,            -- JSON
    created_ms INTEGER NOT NULL
);
CREATE TABLE deliveries (
    sink         TEXT    NOT NULL,
    seq          INTEGER NOT NULL REFERENCES outbox (seq),
    delivered_ms INTEGER NOT NULL,
    PRIMARY KEY (sink, seq)
);
"#,
    r#"
-- Per sink, a seq up to which every outbox row is delivered: finding what
-- is pending starts there instead of at the first row ever written.
CREATE TABLE sink_cursor (
    sink TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
"#,
    r#"
-- Every address of a host: what each answered per scan (the scans row keeps
-- `reachable` = any address answered; its `address` and `open_ports` columns
-- are those of scans recorded before this migration), and the address of
-- every state change and incident. Host incidents (host_unreachable,
-- host_answers_all_ports) are incidents with port 0 and their ports as ranges.
CREATE TABLE scan_addresses (
    scan_id    INTEGER NOT NULL REFERENCES scans (id),
    address    TEXT    NOT NULL,
    reachable  INTEGER NOT NULL,
    open_ports TEXT    NOT NULL,            -- ranges, e.g. "22,80,8000-8100"
    PRIMARY KEY (scan_id, address)
);
ALTER TABLE state_changes ADD COLUMN address TEXT;
ALTER TABLE incidents ADD COLUMN address TEXT;
ALTER TABLE incidents ADD COLUMN ports TEXT;
-- Self-monitoring (palisade_core::health): one row, the JSON of HealthState.
CREATE TABLE health (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);
"#,
    r#"
-- Events a sink refused for good (a webhook's 4xx other than 408 and 429):
-- set aside so that the sink goes on with the next event. Each is also a
-- row of `deliveries` (the sink is done with it) until it is retried. The
-- outbox row stays while its dead letter does.
CREATE TABLE dead_letters (
    sink     TEXT    NOT NULL,
    seq      INTEGER NOT NULL REFERENCES outbox (seq),
    event_id TEXT    NOT NULL,
    status   INTEGER,                       -- the HTTP status, if any
    excerpt  TEXT    NOT NULL,              -- the start of the answer
    at_ms    INTEGER NOT NULL,
    PRIMARY KEY (sink, seq)
);
-- The last delivery problem of each sink, for `palisade status`.
CREATE TABLE sink_health (
    sink     TEXT PRIMARY KEY,
    problem  TEXT,                          -- NULL: delivering
    since_ms INTEGER NOT NULL
);
"#,
    r#"
-- Retention (Store::prune): the oldest rows of each table are found by
-- time, and a parent row's children by its key (SQLite also looks a deleted
-- parent's children up to check the foreign keys).
CREATE INDEX scans_started ON scans (started_ms);
CREATE INDEX state_changes_scan ON state_changes (scan_id);
CREATE INDEX incidents_resolved ON incidents (resolved_at_ms) WHERE resolved_at_ms IS NOT NULL;
CREATE INDEX outbox_created ON outbox (created_ms);
CREATE INDEX deliveries_seq ON deliveries (seq);
CREATE INDEX dead_letters_seq ON dead_letters (seq);
"#,
    r#"
-- Monitors live here (the dashboard's settings page and the API edit them):
-- those of the configuration file ('config': imported at start and on
-- SIGHUP, read-only elsewhere) and those created through the API ('api').
-- `spec` is the JSON of palisade_core::monitor::MonitorSpec; `version`
-- grows with every change (the API's ETag).
CREATE TABLE monitors (
    name       TEXT PRIMARY KEY,
    managed_by TEXT    NOT NULL CHECK (managed_by IN ('config', 'api')),
    spec       TEXT    NOT NULL,
    enabled    INTEGER NOT NULL DEFAULT 1,
    version    INTEGER NOT NULL DEFAULT 1,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- Each monitor's state in counts, written with the state (the fleet page).
ALTER TABLE monitor_state ADD COLUMN last_scan_ms INTEGER;
ALTER TABLE monitor_state ADD COLUMN last_conclusive INTEGER;
ALTER TABLE monitor_state ADD COLUMN reachability TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE monitor_state ADD COLUMN expected_down INTEGER NOT NULL DEFAULT 0;
ALTER TABLE monitor_state ADD COLUMN unexpected_open INTEGER NOT NULL DEFAULT 0;
ALTER TABLE monitor_state ADD COLUMN open_incidents INTEGER NOT NULL DEFAULT 0;
-- The last full scan (conclusive or not): what `status` shows, found by key.
ALTER TABLE monitor_state ADD COLUMN last_full_scan_id INTEGER;
UPDATE monitor_state SET last_full_scan_id =
    (SELECT MAX(id) FROM scans WHERE scans.monitor = monitor_state.monitor AND kind = 'full');
CREATE INDEX incidents_open ON incidents (monitor) WHERE resolved_at_ms IS NULL;
CREATE INDEX incidents_confirmed ON incidents (confirmed_at_ms);
CREATE INDEX scans_monitor_id ON scans (monitor, id);
"#,
    r#"
-- The scan agents the coordinator has seen (docs/CLUSTER.md): one row per
-- agent name from its last heartbeat (`labels` a JSON array; `job` the one
-- under way, `{sweep}.{slice}.{shard}`), `gone_at_ms` set when its key
-- expired or was deleted, cleared by its next heartbeat. Gone agents are
-- pruned with the history (`store.retain`).
CREATE TABLE agents (
    name         TEXT PRIMARY KEY,
    labels       TEXT    NOT NULL,
    rate         INTEGER NOT NULL,
    started_ms   INTEGER NOT NULL,
    last_beat_ms INTEGER NOT NULL,
    jobs_done    INTEGER NOT NULL,
    job          TEXT,
    gone_at_ms   INTEGER
);
CREATE INDEX agents_gone ON agents (gone_at_ms) WHERE gone_at_ms IS NOT NULL;
"#,
];

/// The migration after which sink names hold no secret: the webhook sinks'
/// names (`webhook:<url>` before names existed) are rewritten with the URL
/// redacted (see [`rename_legacy_sinks`]).
const REDACTED_NAMES_MIGRATION: usize = 3;

/// A scan and everything it caused, decided (by the pure state machine)
/// before it is stored: the store writes all of it in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedScan {
    /// The id to record the scan under ([`Store::next_scan_id`]).
    pub scan_id: i64,
    pub scan: ScanFacts,
    /// The state machine's step: state changes, incidents, events.
    pub step: Step,
    /// The monitor's state after the scan.
    pub state: MonitorState,
    /// The outbox rows: the step's events, then the scan summary.
    pub outbox: Vec<OutboxEntry>,
    /// The new state in counts (`MonitorState::summary`).
    pub summary: MonitorSummary,
}

/// An event for the outbox: its stable id, kind and JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: String,
    pub kind: String,
    pub payload: String,
}

/// An event waiting for (or delivered to) a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: String,
    pub kind: String,
    pub monitor: String,
    pub payload: String,
}

/// An event a sink refused for good, set aside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    pub sink: String,
    /// The outbox row.
    pub seq: i64,
    pub event_id: String,
    pub kind: String,
    pub monitor: String,
    /// The HTTP status of the refusal, if any.
    pub status: Option<u16>,
    /// The start of the refusing answer, on one line.
    pub excerpt: String,
    pub at_ms: Millis,
}

/// A row of `palisade status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusRow {
    pub monitor: String,
    pub host: Option<String>,
    pub last_scan_ms: Option<Millis>,
    pub last_conclusive: Option<bool>,
    /// What each address answered in the last full scan.
    pub addresses: Vec<AddressStatus>,
    /// `"{address} {kind}"` for host incidents, `"{address}:{port} {kind}"`
    /// (`[v6]:port`) for port incidents.
    pub open_incidents: Vec<String>,
}

/// One address in a [`StatusRow`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AddressStatus {
    pub address: String,
    pub reachable: bool,
    /// Open ports as ranges.
    pub open_ports: String,
}

/// A row of `palisade history`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HistoryRow {
    StateChange {
        at_ms: Millis,
        address: Option<String>,
        port: u16,
        from: Option<String>,
        to: String,
        scan_id: i64,
    },
    Incident {
        at_ms: Millis,
        id: String,
        address: Option<String>,
        /// 0 for a host incident.
        port: u16,
        /// Host incidents: their ports, as ranges.
        ports: Option<String>,
        kind: String,
        state: String,
        first_seen_ms: Millis,
        confirmed_at_ms: Millis,
        resolved_at_ms: Option<Millis>,
        resolution: Option<String>,
    },
}

impl HistoryRow {
    /// The time the row is sorted by.
    pub fn at_ms(&self) -> Millis {
        match self {
            HistoryRow::StateChange { at_ms, .. } | HistoryRow::Incident { at_ms, .. } => *at_ms,
        }
    }
}

/// The time before which history may be pruned: `now` less `retain`
/// (`store.retain`), in unix milliseconds.
pub fn prune_cutoff(now: Millis, retain: Duration) -> Millis {
    now.saturating_sub(Millis::try_from(retain.as_millis()).unwrap_or(Millis::MAX))
}

/// How much one [`Store::prune`] call may do: about `batch_rows` rows per
/// transaction (the write lock is held for one batch at a time), and no new
/// batch once `time` has passed (after at least one batch that deleted
/// something).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneBudget {
    pub batch_rows: usize,
    pub time: Duration,
}

impl PruneBudget {
    /// The daemon's: 1,000 rows per transaction, half a second per call.
    pub const DAEMON: PruneBudget = PruneBudget {
        batch_rows: 1_000,
        time: Duration::from_millis(500),
    };

    /// How many parent rows (scans, incidents, outbox rows) the next batch
    /// takes, so that with their children it deletes about `batch_rows`
    /// rows: the last batch of the same table tells how many rows a parent
    /// brings (`(parents, rows)`); the first batch guesses two.
    pub fn parents_per_batch(&self, last: Option<(usize, usize)>) -> usize {
        let rows = self.batch_rows.max(1);
        match last {
            Some((parents, deleted)) if parents > 0 && deleted > parents => {
                (rows.saturating_mul(parents) / deleted).max(1)
            }
            Some(_) => rows,
            None => (rows / 2).max(1),
        }
    }

    /// Whether another batch may start after `elapsed`.
    pub fn allows(&self, elapsed: Duration) -> bool {
        elapsed < self.time
    }
}

/// What a [`Store::prune`] call deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Scan summaries, with their `scan_addresses` rows and state changes.
    pub scans: usize,
    pub scan_addresses: usize,
    pub state_changes: usize,
    /// Resolved incidents.
    pub incidents: usize,
    /// Outbox rows, with their `deliveries` rows.
    pub outbox: usize,
    pub deliveries: usize,
    /// Scan agents gone before the cut-off.
    pub agents: usize,
    /// Transactions used.
    pub batches: usize,
    /// Nothing older than the cut-off that may go is left (else the time
    /// budget ran out: the next call goes on).
    pub done: bool,
}

impl Pruned {
    /// Rows deleted, all tables.
    pub fn rows(&self) -> usize {
        self.scans
            + self.scan_addresses
            + self.state_changes
            + self.incidents
            + self.outbox
            + self.deliveries
            + self.agents
    }
}

/// The tables [`Store::prune`] goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PruneTable {
    Scans,
    Incidents,
    Agents,
    Outbox,
}

/// The SQLite store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

/// How long a connection waits for another one's lock before it gives up
/// ("database is locked").
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Makes `conn` wait for another connection's lock (up to [`LOCK_WAIT`]) in
/// short sleeps: 50 µs, doubling up to 1 ms. SQLite's own wait sleeps 1, 2,
/// 5, 10, … 25 ms at a time, so a connection that writes every few
/// milliseconds (the sweep committing its slices and events) could keep
/// another (a sink marking what was delivered) waiting for tens of
/// milliseconds after the lock was free.
fn wait_for_locks(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let mut since = Instant::now();
    conn.busy_handler(Some(move |count: i32| {
        if count == 0 {
            since = Instant::now();
        }
        if since.elapsed() >= LOCK_WAIT {
            return false;
        }
        let doubled = 50u64 << count.clamp(0, 5);
        std::thread::sleep(Duration::from_micros(doubled.min(1000)));
        true
    }))
}

impl Store {
    /// Opens (creating if needed) the store at `path` and migrates it.
    ///
    /// The store holds the history of the fleet's exposure: a directory it
    /// creates is owner-only (0700), and so is the file (0600; SQLite gives
    /// its `-wal` and `-shm` files the same mode). An existing file that
    /// others may read is tightened to 0600, and a log line says so.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let open_err = |source: std::io::Error| StoreError::Create {
            path: name.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(open_err)?;
        }
        owner_only(path, true).map_err(open_err)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            owner_only(Path::new(&side), false).map_err(open_err)?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: name.clone(),
            source,
        })?;
        Self::init(conn, &name).map_err(|e| match e {
            StoreError::Sql(e) => StoreError::at(&name, e),
            e => e,
        })
    }

    /// Another connection to the store at `path`, which a daemon opened
    /// (and so migrated) already: the HTTP server's. Refuses a store of
    /// another schema version.
    pub fn connect(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let mut conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: name.clone(),
            source,
        })?;
        wait_for_locks(&mut conn)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version != known {
            return Err(StoreError::TooNew {
                path: name,
                found: version,
                known,
            });
        }
        Ok(Store { conn })
    }

    /// The size of the store's files (database and write-ahead log), in
    /// bytes.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let pages: i64 = self
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))?;
        let page_size: i64 = self
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))?;
        let main = (pages * page_size) as u64;
        let wal = self
            .conn
            .path()
            .and_then(|p| std::fs::metadata(format!("{p}-wal")).ok())
            .map_or(0, |m| m.len());
        Ok(main + wal)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(mut conn: Connection, name: &str) -> Result<Store, StoreError> {
        wait_for_locks(&mut conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Deleted rows are overwritten, not left in free pages: a sink name
        // rewritten without its credentials leaves no copy behind.
        conn.pragma_update(None, "secure_delete", "ON")?;
        // Each migration reads the version and applies the next step in one
        // immediate (write-locked) transaction, so two processes opening a
        // new store at once never apply a step twice.
        let known = MIGRATIONS.len() as i64;
        loop {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > known {
                return Err(StoreError::TooNew {
                    path: name.to_string(),
                    found: version,
                    known,
                });
            }
            let Some(sql) = usize::try_from(version)
                .ok()
                .and_then(|v| MIGRATIONS.get(v))
            else {
                tx.commit()?;
                break;
            };
            tx.execute_batch(sql)?;
            if version as usize == REDACTED_NAMES_MIGRATION {
                rename_legacy_sinks(&tx)?;
            }
            tx.pragma_update(None, "user_version", version + 1)?;
            tx.commit()?;
        }
        Ok(Store { conn })
    }

    /// The saved state of every monitor, with the start of its last
    /// conclusive full scan.
    pub fn load_states(&self) -> Result<BTreeMap<String, SavedMonitor>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT monitor, state, last_full_ms FROM monitor_state")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (monitor, json, last) = row?;
            let state = serde_json::from_str(&json).map_err(|source| StoreError::State {
                monitor: monitor.clone(),
                source,
            })?;
            out.insert(
                monitor,
                SavedMonitor {
                    state,
                    last_full: last,
                },
            );
        }
        Ok(out)
    }

    /// The id the next recorded scan gets: one more than the last one's.
    /// (The daemon is the store's only writer; a clash would fail the
    /// scan's transaction, not overwrite anything.)
    pub fn next_scan_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM scans", [], |r| {
                r.get(0)
            })?)
    }

    /// Records one decided scan atomically: the scan, its state changes,
    /// incidents and outbox rows, and the monitor's new state (with the
    /// start of its last conclusive full scan, for the schedule after a
    /// restart).
    pub fn record_scan(&mut self, decided: &DecidedScan) -> Result<(), StoreError> {
        let mut batch = self.scan_batch()?;
        batch.record(decided)?;
        batch.commit()
    }

    /// A transaction to record decided scans in, one after the other as
    /// they are decided ([`ScanBatch::record`]), so that a slice of a sweep
    /// is written as it is evaluated and committed at once; nothing of it
    /// is kept if it is dropped without [`ScanBatch::commit`].
    pub fn scan_batch(&mut self) -> Result<ScanBatch<'_>, StoreError> {
        Ok(ScanBatch {
            tx: self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
        })
    }

    /// Records a step that no scan caused (a monitor removed from the
    /// config), and forgets the monitor's state.
    pub fn record_removal(
        &mut self,
        monitor: &str,
        step: &Step,
        payloads: &[OutboxEntry],
        at: Millis,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        write_step(&tx, monitor, step, payloads, at)?;
        tx.execute(
            "DELETE FROM monitor_state WHERE monitor = ?1",
            params![monitor],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The self-monitoring state saved by [`Store::record_health`] (healthy
    /// if none was).
    pub fn load_health(&self) -> Result<HealthState, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT state FROM health WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        match text {
            None => Ok(HealthState::new()),
            Some(text) => serde_json::from_str(&text).map_err(|source| StoreError::State {
                monitor: "(health)".into(),
                source,
            }),
        }
    }

    /// Saves the self-monitoring state and the outbox rows of the events it
    /// produced (each with its monitor, `""` for the scanner's own), in one
    /// transaction.
    pub fn record_health(
        &mut self,
        state: &HealthState,
        outbox: &[(String, OutboxEntry)],
        at: Millis,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(|source| StoreError::State {
            monitor: "(health)".into(),
            source,
        })?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO health (id, state) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            params![json],
        )?;
        for (monitor, e) in outbox {
            insert_outbox(&tx, monitor, e, at)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Appends events to the outbox in one transaction (what a scan's
    /// transaction does for its events; used alone by the event benchmark).
    pub fn enqueue(
        &mut self,
        monitor: &str,
        entries: &[OutboxEntry],
        at: Millis,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        write_step(&tx, monitor, &Step::default(), entries, at)?;
        tx.commit()?;
        Ok(())
    }

    /// Events `sink` has not acknowledged yet, oldest first.
    pub fn pending(&self, sink: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.pending_after(sink, 0, limit)
    }

    /// Events `sink` has not acknowledged yet that come after the outbox row
    /// `after` (rows up to it are in flight to the sink), oldest first.
    pub fn pending_after(
        &self,
        sink: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.seq, o.event_id, o.kind, o.monitor, o.payload FROM outbox o
             WHERE o.seq > MAX(?3, COALESCE((SELECT seq FROM sink_cursor WHERE sink = ?1), 0))
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sink = ?1 AND d.seq = o.seq)
             ORDER BY o.seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![sink, limit as i64, after], |r| {
            Ok(OutboxRow {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                kind: r.get(2)?,
                monitor: r.get(3)?,
                payload: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks outbox rows (`seqs`, as read from the outbox) delivered to
    /// `sink` (after the sink acknowledged them), in one transaction.
    ///
    /// When they are every row the sink still waited for from its position
    /// on, in order (what a sink delivering in order acknowledges), the
    /// position moves past them and no row per event is written; otherwise
    /// each gets a `deliveries` row.
    pub fn mark_delivered(
        &mut self,
        sink: &str,
        seqs: &[i64],
        at: Millis,
    ) -> Result<(), StoreError> {
        // Immediate: it reads before it writes, and a read transaction
        // cannot wait for the write lock (SQLite answers "busy" at once).
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        match next_in_order(&tx, sink, seqs)? {
            Some(last) => {
                tx.execute(
                    "INSERT INTO sink_cursor (sink, seq) VALUES (?1, ?2)
                     ON CONFLICT (sink) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                    params![sink, last],
                )?;
            }
            None => {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO deliveries (sink, seq, delivered_ms) VALUES (?1, ?2, ?3)",
                )?;
                for seq in seqs {
                    stmt.execute(params![sink, seq, at])?;
                }
            }
        }
        advance_cursor(&tx, sink)?;
        tx.commit()?;
        Ok(())
    }

    /// Makes `sink` known: a sink the store has never seen starts at the
    /// current end of the outbox ([`SinkStart::New`]) or at its beginning
    /// ([`SinkStart::All`]); a known one keeps its position. Returns
    /// whether the sink was new.
    pub fn register_sink(&mut self, sink: &str, start: SinkStart) -> Result<bool, StoreError> {
        let added = self.conn.execute(
            "INSERT OR IGNORE INTO sink_cursor (sink, seq) VALUES (?1,
                 CASE WHEN ?2 THEN 0 ELSE (SELECT COALESCE(MAX(seq), 0) FROM outbox) END)",
            params![sink, start == SinkStart::All],
        )?;
        Ok(added == 1)
    }

    /// How many events `sink` has not acknowledged (dead letters aside).
    pub fn pending_count(&self, sink: &str) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM outbox o
             WHERE o.seq > COALESCE((SELECT seq FROM sink_cursor WHERE sink = ?1), 0)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sink = ?1 AND d.seq = o.seq)",
            params![sink],
            |r| r.get(0),
        )?)
    }

    /// Sets the outbox row `seq` aside for `sink`: a dead letter, with why
    /// (`status`, an excerpt of the answer); the sink goes on with the next.
    pub fn dead_letter(
        &mut self,
        sink: &str,
        seq: i64,
        status: Option<u16>,
        excerpt: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO dead_letters (sink, seq, event_id, status, excerpt, at_ms)
             SELECT ?1, seq, event_id, ?3, ?4, ?5 FROM outbox WHERE seq = ?2",
            params![sink, seq, status, excerpt, at],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO deliveries (sink, seq, delivered_ms) VALUES (?1, ?2, ?3)",
            params![sink, seq, at],
        )?;
        advance_cursor(&tx, sink)?;
        tx.commit()?;
        Ok(())
    }

    /// The dead letters (of `sink`, if given), oldest first.
    pub fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.sink, d.seq, d.event_id, o.kind, o.monitor, d.status, d.excerpt, d.at_ms
             FROM dead_letters d JOIN outbox o ON o.seq = d.seq
             WHERE ?1 IS NULL OR d.sink = ?1 ORDER BY d.at_ms, d.seq",
        )?;
        let rows = stmt.query_map(params![sink], |r| {
            Ok(DeadLetter {
                sink: r.get(0)?,
                seq: r.get(1)?,
                event_id: r.get(2)?,
                kind: r.get(3)?,
                monitor: r.get(4)?,
                status: r.get(5)?,
                excerpt: r.get(6)?,
                at_ms: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many dead letters wait, over all sinks.
    pub fn dead_letter_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?)
    }

    /// Puts dead letters back in their sink's queue (they are delivered
    /// again, before the events after them); returns those it found.
    pub fn retry_dead_letters(&mut self, letters: &[DeadLetter]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut found = 0;
        for l in letters {
            let n = tx.execute(
                "DELETE FROM dead_letters WHERE sink = ?1 AND seq = ?2",
                params![l.sink, l.seq],
            )?;
            if n == 0 {
                continue;
            }
            found += 1;
            // The rows after it up to the sink's position are delivered
            // (rows delivered in order have no `deliveries` row of their
            // own): they stay delivered when the position moves back.
            tx.execute(
                "INSERT OR IGNORE INTO deliveries (sink, seq, delivered_ms)
                 SELECT ?1, o.seq, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
                 FROM outbox o
                 WHERE o.seq > ?2
                   AND o.seq <= COALESCE((SELECT seq FROM sink_cursor WHERE sink = ?1), 0)",
                params![l.sink, l.seq],
            )?;
            tx.execute(
                "DELETE FROM deliveries WHERE sink = ?1 AND seq = ?2",
                params![l.sink, l.seq],
            )?;
            tx.execute(
                "UPDATE sink_cursor SET seq = MIN(seq, ?2 - 1) WHERE sink = ?1",
                params![l.sink, l.seq],
            )?;
        }
        tx.commit()?;
        Ok(found)
    }

    /// Forgets dead letters (the events stay undelivered to their sink for
    /// good); returns those it found.
    pub fn drop_dead_letters(&mut self, letters: &[DeadLetter]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut found = 0;
        for l in letters {
            found += tx.execute(
                "DELETE FROM dead_letters WHERE sink = ?1 AND seq = ?2",
                params![l.sink, l.seq],
            )?;
        }
        tx.commit()?;
        Ok(found)
    }

    /// Records `sink`'s delivery problem (`None`: delivering again), if it
    /// changed.
    pub fn set_sink_health(
        &mut self,
        sink: &str,
        problem: Option<&str>,
        at: Millis,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO sink_health (sink, problem, since_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (sink) DO UPDATE SET problem = excluded.problem, since_ms = excluded.since_ms
             WHERE sink_health.problem IS NOT excluded.problem",
            params![sink, problem, at],
        )?;
        Ok(())
    }

    /// `sink`'s delivery problem and since when, if it has one.
    pub fn sink_health(&self, sink: &str) -> Result<Option<(String, Millis)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT problem, since_ms FROM sink_health WHERE sink = ?1 AND problem IS NOT NULL",
                params![sink],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// One row per monitor with a state and a full scan: its last full
    /// scan, what each address answered in it, its open incidents. Three
    /// queries whatever the number of monitors.
    pub fn status(&self) -> Result<Vec<StatusRow>, StoreError> {
        let mut incidents: HashMap<String, Vec<String>> = HashMap::new();
        {
            let mut stmt = self.conn.prepare(
                "SELECT monitor, COALESCE(address, ''), port, kind FROM incidents
                 WHERE resolved_at_ms IS NULL ORDER BY monitor, address, port",
            )?;
            let rows = stmt.query_map([], |r| {
                let monitor: String = r.get(0)?;
                let address: String = r.get(1)?;
                let port: u16 = r.get(2)?;
                let kind: String = r.get(3)?;
                let text = match (port, address.contains(':')) {
                    (0, _) => format!("{address} {kind}"),
                    (_, true) => format!("[{address}]:{port} {kind}"),
                    (_, false) if address.is_empty() => format!("{port} {kind}"),
                    (_, false) => format!("{address}:{port} {kind}"),
                };
                Ok((monitor, text))
            })?;
            for row in rows {
                let (monitor, text) = row?;
                incidents.entry(monitor).or_default().push(text);
            }
        }
        let mut addresses: HashMap<i64, Vec<AddressStatus>> = HashMap::new();
        {
            let mut stmt = self.conn.prepare(
                "SELECT a.scan_id, a.address, a.reachable, a.open_ports
                 FROM monitor_state m JOIN scan_addresses a ON a.scan_id = m.last_full_scan_id
                 ORDER BY a.scan_id, a.rowid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    AddressStatus {
                        address: r.get(1)?,
                        reachable: r.get(2)?,
                        open_ports: r.get(3)?,
                    },
                ))
            })?;
            for row in rows {
                let (scan, address) = row?;
                addresses.entry(scan).or_default().push(address);
            }
        }
        let mut stmt = self.conn.prepare(
            "SELECT s.id, s.monitor, s.host, s.started_ms, s.conclusive, s.address, s.reachable, s.open_ports
             FROM monitor_state m JOIN scans s ON s.id = m.last_full_scan_id
             ORDER BY m.monitor",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, monitor, host, at, conclusive, old_address, old_reachable, old_open) = row?;
            let mut addresses = addresses.remove(&id).unwrap_or_default();
            // A scan recorded before addresses were tracked.
            if let (true, Some(address)) = (addresses.is_empty(), old_address) {
                let open: Vec<u16> = serde_json::from_str(&old_open).unwrap_or_default();
                addresses.push(AddressStatus {
                    address,
                    reachable: old_reachable,
                    open_ports: open.into_iter().collect::<PortRanges>().to_string(),
                });
            }
            out.push(StatusRow {
                open_incidents: incidents.remove(&monitor).unwrap_or_default(),
                monitor,
                host: Some(host),
                last_scan_ms: Some(at),
                last_conclusive: Some(conclusive),
                addresses,
            });
        }
        Ok(out)
    }

    fn scan_addresses(&self, scan_id: i64) -> Result<Vec<AddressStatus>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT address, reachable, open_ports FROM scan_addresses WHERE scan_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![scan_id], |r| {
            Ok(AddressStatus {
                address: r.get(0)?,
                reachable: r.get(1)?,
                open_ports: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// State changes and incidents of `monitor`, newest first.
    pub fn history(
        &self,
        monitor: &str,
        port: Option<u16>,
        since: Option<Millis>,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let since = since.unwrap_or(i64::MIN);
        let port = port.map(i64::from);
        let mut out = Vec::new();
        let mut stmt = self.conn.prepare(
            "SELECT at_ms, port, from_state, to_state, scan_id, address FROM state_changes
             WHERE monitor = ?1 AND at_ms >= ?2 AND (?3 IS NULL OR port = ?3)",
        )?;
        let rows = stmt.query_map(params![monitor, since, port], |r| {
            Ok(HistoryRow::StateChange {
                at_ms: r.get(0)?,
                address: r.get(5)?,
                port: r.get(1)?,
                from: r.get(2)?,
                to: r.get(3)?,
                scan_id: r.get(4)?,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
        let mut stmt = self.conn.prepare(
            "SELECT id, port, kind, state, first_seen_ms, confirmed_at_ms, resolved_at_ms, resolution,
                    address, ports
             FROM incidents
             WHERE monitor = ?1 AND MAX(confirmed_at_ms, COALESCE(resolved_at_ms, 0)) >= ?2
               AND (?3 IS NULL OR port = ?3)",
        )?;
        let rows = stmt.query_map(params![monitor, since, port], |r| {
            let confirmed: i64 = r.get(5)?;
            let resolved: Option<i64> = r.get(6)?;
            Ok(HistoryRow::Incident {
                at_ms: resolved.unwrap_or(confirmed),
                id: r.get(0)?,
                address: r.get(8)?,
                port: r.get(1)?,
                ports: r.get(9)?,
                kind: r.get(2)?,
                state: r.get(3)?,
                first_seen_ms: r.get(4)?,
                confirmed_at_ms: confirmed,
                resolved_at_ms: resolved,
                resolution: r.get(7)?,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.at_ms()));
        Ok(out)
    }

    /// Deletes the history older than `cutoff` ([`prune_cutoff`]), a batch
    /// per transaction, within `budget`:
    ///
    /// * scans that started before it, with their `scan_addresses` rows and
    ///   state changes, except each monitor's last full scan (what `status`
    ///   shows) and anything after it;
    /// * incidents resolved before it (open incidents stay, however old);
    /// * scan agents gone (their heartbeat key expired or deleted) before
    ///   it; live agents stay, however old their start;
    /// * outbox rows created before it that every sink in `sinks` has
    ///   delivered (or set aside) and that no dead letter holds, with their
    ///   `deliveries` rows. An event a sink of `sinks` still waits for
    ///   stays; the positions of sinks no longer configured hold nothing
    ///   back (a sink configured again later finds what is left).
    ///
    /// The monitors' states (`monitor_state`), the self-monitoring state,
    /// the sinks' positions and dead letters are never pruned.
    pub fn prune(
        &mut self,
        cutoff: Millis,
        sinks: &[&str],
        budget: PruneBudget,
    ) -> Result<Pruned, StoreError> {
        let started = std::time::Instant::now();
        let sinks = serde_json::to_string(sinks).map_err(|source| StoreError::State {
            monitor: "(sinks)".into(),
            source,
        })?;
        let mut pruned = Pruned::default();
        for table in [
            PruneTable::Scans,
            PruneTable::Incidents,
            PruneTable::Agents,
            PruneTable::Outbox,
        ] {
            let mut last = None;
            loop {
                // At least one batch that deletes something runs.
                if pruned.rows() > 0 && !budget.allows(started.elapsed()) {
                    return Ok(pruned);
                }
                let limit = budget.parents_per_batch(last);
                let before = pruned.rows();
                let parents = self.prune_batch(table, cutoff, &sinks, limit, &mut pruned)?;
                pruned.batches += 1;
                if parents < limit {
                    break;
                }
                last = Some((parents, pruned.rows() - before));
            }
        }
        pruned.done = true;
        Ok(pruned)
    }

    /// One transaction of [`Store::prune`]: up to `limit` parent rows of
    /// `table` and their children. Returns the parent rows deleted.
    fn prune_batch(
        &mut self,
        table: PruneTable,
        cutoff: Millis,
        sinks: &str,
        limit: usize,
        pruned: &mut Pruned,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let parents = match table {
            PruneTable::Scans => {
                // A later full scan of the same monitor exists: this one is
                // not the monitor's last word.
                let ids = select_ids(
                    &tx,
                    "SELECT s.id FROM scans s
                     WHERE s.started_ms < ?1
                       AND EXISTS (SELECT 1 FROM scans t
                                   WHERE t.monitor = s.monitor AND t.started_ms >= s.started_ms
                                     AND t.id > s.id AND t.kind = 'full')
                     ORDER BY s.started_ms LIMIT ?2",
                    params![cutoff, limit],
                )?;
                let mut addresses = tx.prepare("DELETE FROM scan_addresses WHERE scan_id = ?1")?;
                let mut changes = tx.prepare("DELETE FROM state_changes WHERE scan_id = ?1")?;
                let mut scans = tx.prepare("DELETE FROM scans WHERE id = ?1")?;
                for id in &ids {
                    pruned.scan_addresses += addresses.execute(params![id])?;
                    pruned.state_changes += changes.execute(params![id])?;
                    pruned.scans += scans.execute(params![id])?;
                }
                ids.len()
            }
            PruneTable::Incidents => {
                let n = tx.execute(
                    "DELETE FROM incidents WHERE rowid IN
                         (SELECT rowid FROM incidents WHERE resolved_at_ms < ?1
                          ORDER BY resolved_at_ms LIMIT ?2)",
                    params![cutoff, limit],
                )?;
                pruned.incidents += n;
                n
            }
            PruneTable::Outbox => {
                // Every sink of `sinks` is past it or has a delivery row
                // for it (a dead letter has one too, and holds it itself).
                let seqs = select_ids(
                    &tx,
                    "SELECT o.seq FROM outbox o
                     WHERE o.created_ms < ?1
                       AND NOT EXISTS (SELECT 1 FROM dead_letters l WHERE l.seq = o.seq)
                       AND NOT EXISTS (
                           SELECT 1 FROM json_each(?2) s
                           WHERE o.seq > COALESCE((SELECT c.seq FROM sink_cursor c WHERE c.sink = s.value), 0)
                             AND NOT EXISTS (SELECT 1 FROM deliveries d
                                             WHERE d.sink = s.value AND d.seq = o.seq))
                     ORDER BY o.created_ms LIMIT ?3",
                    params![cutoff, sinks, limit],
                )?;
                let mut deliveries = tx.prepare("DELETE FROM deliveries WHERE seq = ?1")?;
                let mut outbox = tx.prepare("DELETE FROM outbox WHERE seq = ?1")?;
                for seq in &seqs {
                    pruned.deliveries += deliveries.execute(params![seq])?;
                    pruned.outbox += outbox.execute(params![seq])?;
                }
                seqs.len()
            }
            PruneTable::Agents => {
                let n = tx.execute(
                    "DELETE FROM agents WHERE rowid IN
                         (SELECT rowid FROM agents WHERE gone_at_ms < ?1
                          ORDER BY gone_at_ms LIMIT ?2)",
                    params![cutoff, limit],
                )?;
                pruned.agents += n;
                n
            }
        };
        tx.commit()?;
        Ok(parents)
    }

    /// The number of scans recorded so far (for tests and status).
    pub fn scan_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM scans", [], |r| r.get(0))?)
    }

    /// Kind of the scan `id` ("full" or "recheck"), if it exists.
    pub fn scan_kind(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT kind FROM scans WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?)
    }
}

/// Creates the file owner-only (0600) if `create`, or tightens an existing
/// one that group or others may access.
fn owner_only(path: &Path, create: bool) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(
                    path = %path.display(),
                    "the store was readable by others (mode {mode:o}); its mode is now 600"
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
            .or_else(|e| {
                // Created meanwhile by another opener: fine.
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        Err(e) => Err(e),
    }
}

/// Rewrites the names sinks had before they were named (`webhook:<url>`,
/// credentials and all) to the default names of today (the URL redacted,
/// [`redact_url`]): a store upgraded keeps each webhook's position, and no
/// longer holds its token. Two old names that redact alike merge; the
/// lower cursor wins (an event may be sent again, never skipped).
fn rename_legacy_sinks(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let names: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT sink FROM sink_cursor WHERE sink LIKE 'webhook:%'
             UNION SELECT DISTINCT sink FROM deliveries WHERE sink LIKE 'webhook:%'",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for old in names {
        let Some(url) = old.strip_prefix("webhook:") else {
            continue;
        };
        let new = format!("webhook:{}", redact_url(url));
        if new == old {
            continue;
        }
        tx.execute(
            "INSERT INTO sink_cursor (sink, seq) SELECT ?2, seq FROM sink_cursor WHERE sink = ?1
             ON CONFLICT (sink) DO UPDATE SET seq = MIN(seq, excluded.seq)",
            params![old, new],
        )?;
        tx.execute("DELETE FROM sink_cursor WHERE sink = ?1", params![old])?;
        tx.execute(
            "INSERT OR IGNORE INTO deliveries (sink, seq, delivered_ms)
             SELECT ?2, seq, delivered_ms FROM deliveries WHERE sink = ?1",
            params![old, new],
        )?;
        tx.execute("DELETE FROM deliveries WHERE sink = ?1", params![old])?;
    }
    Ok(())
}

/// The integers (ids) a query selects.
fn select_ids(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<i64>, StoreError> {
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt.query_map(params, |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Advances `sink`'s cursor to just before the first row still pending (or
/// to the last row, if none is).
fn advance_cursor(tx: &rusqlite::Transaction<'_>, sink: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sink_cursor (sink, seq) VALUES (?1, COALESCE(
             (SELECT MIN(o.seq) - 1 FROM outbox o
              WHERE o.seq > COALESCE((SELECT seq FROM sink_cursor WHERE sink = ?1), 0)
                AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sink = ?1 AND d.seq = o.seq)),
             (SELECT COALESCE(MAX(seq), 0) FROM outbox)))
         ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq",
        params![sink],
    )?;
    Ok(())
}

/// `Some(last seq)` when `seqs` (increasing) are exactly the rows `sink`
/// waits for from its position up to the last of them: marking them
/// delivered is moving the position there.
fn next_in_order(
    tx: &rusqlite::Transaction<'_>,
    sink: &str,
    seqs: &[i64],
) -> Result<Option<i64>, StoreError> {
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
        return Ok(None);
    };
    if !seqs.windows(2).all(|w| w[0] < w[1]) {
        return Ok(None);
    }
    let cursor: i64 = tx.query_row(
        "SELECT COALESCE((SELECT seq FROM sink_cursor WHERE sink = ?1), 0)",
        params![sink],
        |r| r.get(0),
    )?;
    if first <= cursor {
        return Ok(None);
    }
    // Rows the sink waits for up to `last` that are not among `seqs`.
    let list = serde_json::to_string(seqs).unwrap_or_default();
    let others: i64 = tx.query_row(
        "SELECT COUNT(*) FROM outbox o
         WHERE o.seq > ?2 AND o.seq <= ?3
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sink = ?1 AND d.seq = o.seq)
           AND o.seq NOT IN (SELECT value FROM json_each(?4))",
        params![sink, cursor, last, list],
        |r| r.get(0),
    )?;
    Ok((others == 0).then_some(last))
}

/// Decided scans being recorded in one transaction ([`Store::scan_batch`]).
/// Its statements are prepared once per connection (SQLite's statement
/// cache), not once per row.
#[derive(Debug)]
pub struct ScanBatch<'s> {
    tx: rusqlite::Transaction<'s>,
}

impl ScanBatch<'_> {
    /// Writes one decided scan: the scan, what each address answered, its
    /// state changes, incidents and outbox rows, and the monitor's new
    /// state (with the start of its last conclusive full scan, for the
    /// schedule after a restart).
    pub fn record(&mut self, decided: &DecidedScan) -> Result<(), StoreError> {
        record_in(&self.tx, decided)
    }

    /// Commits everything recorded (one fsync).
    pub fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

/// Writes one decided scan within `tx` ([`ScanBatch::record`]).
fn record_in(tx: &rusqlite::Transaction<'_>, decided: &DecidedScan) -> Result<(), StoreError> {
    let scan = &decided.scan;
    tx.prepare_cached(
        "INSERT INTO scans (id, sweep, monitor, host, address, kind, started_ms, finished_ms,
                            conclusive, reachable, open_ports, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        decided.scan_id,
        scan.sweep,
        scan.monitor,
        scan.host,
        Option::<String>::None,
        scan.kind().as_str(),
        scan.started,
        scan.finished,
        scan.conclusive(),
        scan.reachable(),
        "[]",
        scan.inconclusive,
    ])?;
    for (address, replies) in &scan.addresses {
        tx.prepare_cached(
            "INSERT INTO scan_addresses (scan_id, address, reachable, open_ports)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            decided.scan_id,
            address.to_string(),
            replies.reachable,
            replies.open.ranges().to_string()
        ])?;
    }
    write_step(
        tx,
        &scan.monitor,
        &decided.step,
        &decided.outbox,
        scan.finished,
    )?;
    let state_json = serde_json::to_string(&decided.state).map_err(|source| StoreError::State {
        monitor: scan.monitor.clone(),
        source,
    })?;
    let full = (scan.kind() == ScanKind::Full && scan.conclusive()).then_some(scan.started);
    let summary = &decided.summary;
    tx.prepare_cached("INSERT INTO monitor_state (monitor, state, last_full_ms, last_scan_ms, last_conclusive,
                                    reachability, expected_down, unexpected_open, open_incidents,
                                    last_full_scan_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (monitor) DO UPDATE SET state = excluded.state,
             last_full_ms = COALESCE(excluded.last_full_ms, monitor_state.last_full_ms),
             last_full_scan_id = COALESCE(excluded.last_full_scan_id, monitor_state.last_full_scan_id),
             last_scan_ms = excluded.last_scan_ms, last_conclusive = excluded.last_conclusive,
             reachability = excluded.reachability, expected_down = excluded.expected_down,
             unexpected_open = excluded.unexpected_open, open_incidents = excluded.open_incidents")?.execute(params![
            scan.monitor,
            state_json,
            full,
            scan.started,
            scan.conclusive(),
            summary.reachability.as_str(),
            summary.expected_down,
            summary.unexpected_open,
            summary.open_incidents,
            (scan.kind() == ScanKind::Full).then_some(decided.scan_id)
        ],
    )?;
    Ok(())
}

fn write_step(
    tx: &rusqlite::Transaction<'_>,
    monitor: &str,
    step: &Step,
    outbox: &[OutboxEntry],
    at: Millis,
) -> Result<(), StoreError> {
    for c in &step.changes {
        tx.prepare_cached("INSERT INTO state_changes (monitor, port, from_state, to_state, at_ms, scan_id, address)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?.execute(params![
                monitor,
                c.port,
                c.from.map(|s| s.to_string()),
                c.to.to_string(),
                c.at,
                c.scan_id,
                c.address.to_string()
            ],
        )?;
    }
    for event in &step.incidents {
        match event {
            Event::Opened(i) => {
                tx.prepare_cached("INSERT OR IGNORE INTO incidents (id, monitor, port, kind, first_seen_ms, confirmed_at_ms, state, address)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?.execute(params![
                        i.id,
                        i.monitor,
                        i.port,
                        i.kind.to_string(),
                        i.first_seen,
                        i.confirmed_at,
                        i.state.to_string(),
                        i.address.to_string()
                    ],
                )?;
            }
            Event::HostOpened(i) => {
                tx.prepare_cached("INSERT OR IGNORE INTO incidents (id, monitor, port, kind, first_seen_ms, confirmed_at_ms, state, address, ports)
                     VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?8)")?.execute(params![
                        i.id,
                        i.monitor,
                        i.kind.to_string(),
                        i.first_seen,
                        i.confirmed_at,
                        match i.kind {
                            HostIncidentKind::HostUnreachable => "unreachable",
                            HostIncidentKind::HostAnswersAllPorts => "answers_all",
                        },
                        i.address.to_string(),
                        i.ports.to_string()
                    ],
                )?;
            }
            Event::HostResolved {
                incident,
                resolved_at,
                reason,
            } => {
                tx.prepare_cached(
                    "UPDATE incidents SET resolved_at_ms = ?2, resolution = ?3 WHERE id = ?1",
                )?
                .execute(params![incident.id, resolved_at, reason.as_str()])?;
            }
            Event::PortResolved {
                incident,
                resolved_at,
                state,
                reason,
            } => {
                tx.prepare_cached("UPDATE incidents SET resolved_at_ms = ?2, resolved_state = ?3, resolution = ?4 WHERE id = ?1")?.execute(params![
                        incident.id,
                        resolved_at,
                        state.map(|s| s.to_string()),
                        reason.as_str()
                    ],
                )?;
            }
            Event::PortsChanged(_) | Event::MonitorResolved { .. } => {}
        }
    }
    for e in outbox {
        insert_outbox(tx, monitor, e, at)?;
    }
    Ok(())
}

/// Appends one event to the outbox (an id already there is left alone).
/// The statement is prepared once per connection: a sweep's commit or a
/// burst of events writes many rows.
fn insert_outbox(
    tx: &rusqlite::Transaction<'_>,
    monitor: &str,
    e: &OutboxEntry,
    at: Millis,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (event_id, kind, monitor, payload, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![e.id, e.kind, monitor, e.payload, at])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use palisade_core::monitor::AddressReplies;

    use palisade_core::monitor::{MonitorSpec, Scope};

    use super::*;

    fn entries(ids: std::ops::Range<u32>) -> Vec<OutboxEntry> {
        ids.map(|i| OutboxEntry {
            id: format!("e{i}"),
            kind: "port_resolved".into(),
            payload: format!("{{\"n\":{i}}}"),
        })
        .collect()
    }

    fn pending_ids(store: &Store, sink: &str) -> Vec<String> {
        store
            .pending(sink, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.event_id)
            .collect()
    }

    #[test]
    fn each_sink_sees_what_it_has_not_acknowledged_in_order() {
        let mut store = Store::in_memory().unwrap();
        store.enqueue("m", &entries(0..5), 1).unwrap();
        let rows = store.pending("a", 100).unwrap();
        assert_eq!(pending_ids(&store, "a"), ["e0", "e1", "e2", "e3", "e4"]);
        // Out of order: the cursor must not skip e0.
        store
            .mark_delivered("a", &[rows[1].seq, rows[2].seq], 2)
            .unwrap();
        assert_eq!(pending_ids(&store, "a"), ["e0", "e3", "e4"]);
        assert_eq!(pending_ids(&store, "b").len(), 5, "sinks are independent");
        store.mark_delivered("a", &[rows[0].seq], 3).unwrap();
        assert_eq!(pending_ids(&store, "a"), ["e3", "e4"]);
        store
            .mark_delivered("a", &[rows[3].seq, rows[4].seq, rows[4].seq], 4)
            .unwrap();
        assert!(pending_ids(&store, "a").is_empty());
        // New events after everything was delivered.
        store.enqueue("m", &entries(5..7), 5).unwrap();
        assert_eq!(pending_ids(&store, "a"), ["e5", "e6"]);
        // The same event id twice is one event.
        store.enqueue("m", &entries(5..6), 6).unwrap();
        assert_eq!(pending_ids(&store, "a"), ["e5", "e6"]);
    }

    fn decided(scan_id: i64, scope: Scope, started: Millis, note: Option<&str>) -> DecidedScan {
        let spec = MonitorSpec {
            name: "web".into(),
            host: "web.example".into(),
            expected_open: [22].into(),
            every_ms: 60_000,
            confirm: 1,
            recheck_ms: None,
            ..MonitorSpec::default()
        };
        let scan = ScanFacts {
            sweep: started,
            monitor: "web".into(),
            host: "web.example".into(),
            addresses: BTreeMap::from([(
                "198.18.0.2".parse().unwrap(),
                AddressReplies {
                    reachable: true,
                    open: [22, 6379].into(),
                    closed: Default::default(),
                },
            )]),
            scope,
            started,
            finished: started + 5,
            inconclusive: note.map(String::from),
            retries: None,
        };
        let mut state = MonitorState::new();
        let step = state.observe(&spec, &scan.observation(scan_id));
        let outbox = step
            .events
            .iter()
            .map(|e| OutboxEntry {
                id: e.id(),
                kind: e.kind().into(),
                payload: "{}".into(),
            })
            .collect();
        DecidedScan {
            scan_id,
            scan,
            step,
            summary: state.summary(&spec),
            state,
            outbox,
        }
    }

    #[test]
    fn a_decided_scan_is_stored_whole_and_its_state_reloads() {
        let mut store = Store::in_memory().unwrap();
        assert_eq!(store.next_scan_id().unwrap(), 1);
        let full = decided(1, Scope::Full, 1_000, None);
        assert_eq!(full.step.events.len(), 1, "6379 opened");
        store.record_scan(&full).unwrap();
        assert_eq!(store.next_scan_id().unwrap(), 2);
        assert_eq!(store.scan_kind(1).unwrap().as_deref(), Some("full"));
        assert_eq!(pending_ids(&store, "a"), [full.step.events[0].id()]);
        let saved = store.load_states().unwrap();
        assert_eq!(saved["web"].state, full.state);
        assert_eq!(saved["web"].last_full, Some(1_000));
        // An inconclusive full scan and a re-check keep the last full time.
        store
            .record_scan(&decided(2, Scope::Full, 2_000, Some("lost")))
            .unwrap();
        store
            .record_scan(&decided(3, Scope::Ports([22].into()), 3_000, None))
            .unwrap();
        assert_eq!(store.load_states().unwrap()["web"].last_full, Some(1_000));
        assert_eq!(store.scan_kind(3).unwrap().as_deref(), Some("recheck"));
        // A clashing id fails the whole transaction.
        let mut clash = decided(3, Scope::Full, 4_000, None);
        clash.outbox[0].id = "other".into();
        assert!(store.record_scan(&clash).is_err());
        assert_eq!(store.scan_count().unwrap(), 3);
        assert_eq!(store.load_states().unwrap()["web"].last_full, Some(1_000));
        assert_eq!(pending_ids(&store, "a"), [full.step.events[0].id()]);
        let status = store.status().unwrap();
        assert_eq!(
            status[0].addresses,
            [AddressStatus {
                address: "198.18.0.2".into(),
                reachable: true,
                open_ports: "22,6379".into()
            }]
        );
        assert_eq!(
            status[0].open_incidents,
            ["198.18.0.2:6379 unexpected_port_open"]
        );
        assert_eq!(status[0].last_conclusive, Some(false));
    }

    #[test]
    fn reopening_keeps_everything_and_migrations_are_idempotent() {
        let dir = std::env::temp_dir().join(format!("palisade-store-{}", std::process::id()));
        let path = dir.join("p.db");
        {
            let mut store = Store::open(&path).unwrap();
            store.enqueue("m", &entries(0..3), 1).unwrap();
            let rows = store.pending("a", 1).unwrap();
            store.mark_delivered("a", &[rows[0].seq], 2).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(pending_ids(&store, "a"), ["e1", "e2"]);
        drop(store);
        // A store from a newer palisade is refused, not misread.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_sink_starts_at_the_end_or_at_the_beginning_and_a_known_one_keeps_its_place() {
        let mut store = Store::in_memory().unwrap();
        store.enqueue("m", &entries(0..3), 1).unwrap();
        assert!(store.register_sink("late", SinkStart::New).unwrap());
        assert!(store.register_sink("all", SinkStart::All).unwrap());
        assert!(pending_ids(&store, "late").is_empty());
        assert_eq!(pending_ids(&store, "all"), ["e0", "e1", "e2"]);
        store.enqueue("m", &entries(3..4), 2).unwrap();
        assert_eq!(pending_ids(&store, "late"), ["e3"]);
        // Known: registering again changes nothing, whatever `start` says.
        assert!(!store.register_sink("late", SinkStart::All).unwrap());
        assert_eq!(pending_ids(&store, "late"), ["e3"]);
        assert_eq!(store.pending_count("all").unwrap(), 4);
    }

    #[test]
    fn rows_delivered_in_order_move_the_position_without_a_row_each() {
        let mut store = Store::in_memory().unwrap();
        store.enqueue("m", &entries(0..6), 1).unwrap();
        let seq: Vec<i64> = store
            .pending("s", 10)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        let rows = |store: &Store| -> i64 {
            store
                .conn
                .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
                .unwrap()
        };
        // In order from the position: no row per event.
        store.mark_delivered("s", &seq[..2], 2).unwrap();
        assert_eq!(rows(&store), 0);
        assert_eq!(pending_ids(&store, "s"), ["e2", "e3", "e4", "e5"]);
        // A gap (e3 before e2), or a row twice: a row each.
        store.mark_delivered("s", &[seq[3]], 3).unwrap();
        assert_eq!(rows(&store), 1);
        assert_eq!(pending_ids(&store, "s"), ["e2", "e4", "e5"]);
        store.mark_delivered("s", &[seq[2], seq[3]], 4).unwrap();
        assert_eq!(pending_ids(&store, "s"), ["e4", "e5"]);
        store.mark_delivered("s", &[seq[5], seq[4]], 5).unwrap();
        assert!(pending_ids(&store, "s").is_empty());
        // A dead letter retried after rows delivered in order: only it is
        // pending again.
        store.enqueue("m", &entries(6..9), 6).unwrap();
        let more: Vec<i64> = store
            .pending("s", 10)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        store.dead_letter("s", more[0], Some(400), "no", 7).unwrap();
        let before = rows(&store);
        store.mark_delivered("s", &more[1..], 8).unwrap();
        assert_eq!(rows(&store), before, "in order after the dead letter");
        let letters = store.dead_letters(Some("s")).unwrap();
        assert_eq!(store.retry_dead_letters(&letters).unwrap(), 1);
        assert_eq!(pending_ids(&store, "s"), ["e6"]);
        // Another sink is where it was.
        assert_eq!(store.pending("t", 10).unwrap().len(), 9);
    }

    #[test]
    fn a_dead_letter_is_set_aside_listed_retried_or_dropped() {
        let mut store = Store::in_memory().unwrap();
        store.enqueue("m", &entries(0..4), 1).unwrap();
        let rows = store.pending("s", 10).unwrap();
        store.mark_delivered("s", &[rows[0].seq], 2).unwrap();
        store
            .dead_letter("s", rows[1].seq, Some(400), "bad request", 3)
            .unwrap();
        assert_eq!(pending_ids(&store, "s"), ["e2", "e3"]);
        store
            .mark_delivered("s", &[rows[2].seq, rows[3].seq], 4)
            .unwrap();
        assert!(pending_ids(&store, "s").is_empty());
        let letters = store.dead_letters(None).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            (
                letters[0].event_id.as_str(),
                letters[0].status,
                letters[0].excerpt.as_str()
            ),
            ("e1", Some(400), "bad request")
        );
        assert_eq!(store.dead_letter_count().unwrap(), 1);
        assert!(store.dead_letters(Some("other")).unwrap().is_empty());
        // Retried: pending again, and only it.
        assert_eq!(store.retry_dead_letters(&letters).unwrap(), 1);
        assert_eq!(pending_ids(&store, "s"), ["e1"]);
        assert_eq!(store.dead_letter_count().unwrap(), 0);
        assert_eq!(store.retry_dead_letters(&letters).unwrap(), 0);
        // Refused again, then dropped: done with for good.
        store
            .dead_letter("s", rows[1].seq, Some(422), "still bad", 5)
            .unwrap();
        assert_eq!(store.drop_dead_letters(&letters).unwrap(), 1);
        assert!(pending_ids(&store, "s").is_empty());
        assert_eq!(store.dead_letter_count().unwrap(), 0);
    }

    #[test]
    fn the_cut_off_and_the_batches_are_sized_by_the_budget() {
        let day = Duration::from_secs(86_400);
        assert_eq!(prune_cutoff(10 * 86_400_000, day), 9 * 86_400_000);
        assert_eq!(prune_cutoff(0, Duration::MAX), -Millis::MAX);
        let budget = PruneBudget {
            batch_rows: 1_000,
            time: Duration::from_millis(500),
        };
        assert_eq!(
            budget.parents_per_batch(None),
            500,
            "first guess: 2 rows each"
        );
        assert_eq!(budget.parents_per_batch(Some((500, 2_000))), 250);
        assert_eq!(
            budget.parents_per_batch(Some((10, 10))),
            1_000,
            "no children"
        );
        assert_eq!(
            budget.parents_per_batch(Some((1, 5_000))),
            1,
            "at least one"
        );
        let tiny = PruneBudget {
            batch_rows: 0,
            ..budget
        };
        assert_eq!(tiny.parents_per_batch(None), 1);
        assert!(budget.allows(Duration::from_millis(499)));
        assert!(!budget.allows(Duration::from_millis(500)));
    }

    fn count(store: &Store, table: &str) -> i64 {
        store
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn event_ids(store: &Store) -> Vec<String> {
        let mut stmt = store
            .conn
            .prepare("SELECT event_id FROM outbox ORDER BY seq")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    const ALL_AT_ONCE: PruneBudget = PruneBudget {
        batch_rows: 1_000,
        time: Duration::from_secs(3600),
    };

    #[test]
    fn pruning_keeps_the_last_full_scan_and_open_incidents() {
        let mut store = Store::in_memory().unwrap();
        // Each scan (from a fresh state) sees 6379 open: one open incident,
        // first seen at 1,000, and a state change per scan.
        store
            .record_scan(&decided(1, Scope::Full, 1_000, None))
            .unwrap();
        store
            .record_scan(&decided(2, Scope::Full, 2_000, None))
            .unwrap();
        store
            .record_scan(&decided(3, Scope::Ports([22].into()), 3_000, None))
            .unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO incidents (id, monitor, port, kind, first_seen_ms, confirmed_at_ms,
                                        state, resolved_at_ms, resolution)
                 VALUES ('old', 'web', 80, 'expected_port_down', 10, 10, 'closed', 1500, 'recovered'),
                        ('new', 'web', 80, 'expected_port_down', 10, 10, 'closed', 20000, 'recovered');",
            )
            .unwrap();
        let states = store.load_states().unwrap();
        let status = store.status().unwrap();
        let pruned = store.prune(10_000, &[], ALL_AT_ONCE).unwrap();
        assert!(pruned.done);
        assert_eq!(
            (pruned.scans, pruned.scan_addresses, pruned.state_changes),
            (1, 1, 2),
            "scan 1 and its rows (22 and 6379 seen open); scan 2 is the last full scan, scan 3 came after it"
        );
        assert_eq!(pruned.incidents, 1, "the one resolved before the cut-off");
        assert_eq!(store.scan_kind(1).unwrap(), None);
        assert_eq!(store.scan_kind(2).unwrap().as_deref(), Some("full"));
        assert_eq!(store.scan_kind(3).unwrap().as_deref(), Some("recheck"));
        let open: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM incidents WHERE resolved_at_ms IS NULL AND first_seen_ms = 1000",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(open, 1, "the open incident, older than the cut-off, stays");
        assert_eq!(count(&store, "incidents"), 3);
        assert_eq!(store.load_states().unwrap(), states);
        assert_eq!(store.status().unwrap(), status);
        assert_eq!(store.next_scan_id().unwrap(), 4);
        // Again: nothing left to prune.
        let again = store.prune(10_000, &[], ALL_AT_ONCE).unwrap();
        assert_eq!((again.rows(), again.done), (0, true));
        // A later full scan lets scans 2 and 3 go.
        store
            .record_scan(&decided(4, Scope::Full, 4_000, None))
            .unwrap();
        let pruned = store.prune(10_000, &[], ALL_AT_ONCE).unwrap();
        assert_eq!(pruned.scans, 2);
        assert_eq!(store.scan_count().unwrap(), 1);
    }

    #[test]
    fn pruning_keeps_events_a_sink_or_a_dead_letter_still_needs() {
        let mut store = Store::in_memory().unwrap();
        store.enqueue("m", &entries(0..6), 1_000).unwrap();
        store.enqueue("m", &entries(6..7), 50_000).unwrap();
        let seq: Vec<i64> = store
            .pending("a", 10)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        // a: everything, e4 refused (a dead letter).
        store
            .mark_delivered(
                "a",
                &[seq[0], seq[1], seq[2], seq[3], seq[5], seq[6]],
                2_000,
            )
            .unwrap();
        store
            .dead_letter("a", seq[4], Some(400), "no", 2_000)
            .unwrap();
        // b: e0, e1 (its cursor), e3, e4, e6; e2 and e5 wait.
        store
            .mark_delivered("b", &[seq[0], seq[1], seq[3], seq[4], seq[6]], 2_000)
            .unwrap();
        let pruned = store.prune(10_000, &["a", "b"], ALL_AT_ONCE).unwrap();
        assert_eq!((pruned.outbox, pruned.deliveries), (3, 6));
        assert_eq!(event_ids(&store), ["e2", "e4", "e5", "e6"]);
        assert_eq!(pending_ids(&store, "b"), ["e2", "e5"]);
        assert!(pending_ids(&store, "a").is_empty());
        assert_eq!(store.dead_letters(None).unwrap()[0].event_id, "e4");
        // b is no longer configured: it holds nothing back; the dead letter
        // and e6 (newer than the cut-off) still stay.
        let pruned = store.prune(10_000, &["a"], ALL_AT_ONCE).unwrap();
        assert_eq!(pruned.outbox, 2);
        assert_eq!(event_ids(&store), ["e4", "e6"]);
        // Positions survive: new events are pending to each sink, once.
        store.enqueue("m", &entries(7..8), 60_000).unwrap();
        assert_eq!(pending_ids(&store, "a"), ["e7"]);
        assert_eq!(pending_ids(&store, "b"), ["e7"]);
        // The dead letter retried is pending again; dropped, it may go.
        let letters = store.dead_letters(None).unwrap();
        store.retry_dead_letters(&letters).unwrap();
        assert_eq!(pending_ids(&store, "a"), ["e4", "e7"]);
        assert_eq!(store.prune(10_000, &["a"], ALL_AT_ONCE).unwrap().outbox, 0);
        store
            .dead_letter("a", seq[4], Some(400), "no", 3_000)
            .unwrap();
        store.drop_dead_letters(&letters).unwrap();
        assert_eq!(store.prune(10_000, &["a"], ALL_AT_ONCE).unwrap().outbox, 1);
        assert_eq!(event_ids(&store), ["e6", "e7"]);
        // No sink at all: every old row may go.
        store.enqueue("m", &entries(8..9), 5_000).unwrap();
        assert_eq!(store.prune(10_000, &[], ALL_AT_ONCE).unwrap().outbox, 1);
        assert_eq!(event_ids(&store), ["e6", "e7"]);
    }

    #[test]
    fn pruning_goes_a_batch_at_a_time_and_stops_when_the_time_is_up() {
        let mut store = Store::in_memory().unwrap();
        for i in 0..10 {
            store
                .enqueue("m", &entries(i..i + 1), 1_000 + i64::from(i))
                .unwrap();
        }
        let one_batch = PruneBudget {
            batch_rows: 6,
            time: Duration::ZERO,
        };
        // No sink: scans, incidents and agents (nothing to do), then the outbox, 3
        // rows a batch (a guess of 2 rows per row), one batch a call.
        let mut outbox = Vec::new();
        loop {
            let p = store.prune(10_000, &[], one_batch).unwrap();
            assert_eq!(p.batches, 4, "{p:?}");
            outbox.push(p.outbox);
            if p.done {
                break;
            }
            assert!(outbox.len() < 20);
        }
        assert_eq!(outbox, [3, 3, 3, 1]);
        assert_eq!(count(&store, "outbox"), 0);
    }

    #[test]
    fn the_store_is_owner_only_and_old_webhook_names_lose_their_secrets() {
        let dir = std::env::temp_dir().join(format!("palisade-store-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("p.db");
        let secret_name = "webhook:https://u:hunter2@h.example/in?token=s3cret";
        {
            let mut store = Store::open(&path).unwrap();
            store.enqueue("m", &entries(0..3), 1).unwrap();
            let rows = store.pending(secret_name, 10).unwrap();
            store
                .mark_delivered(secret_name, &[rows[0].seq, rows[1].seq], 2)
                .unwrap();
            // As a store written before sink names were redacted.
            store
                .conn
                .pragma_update(None, "user_version", REDACTED_NAMES_MIGRATION as i64)
                .unwrap();
            store
                .conn
                .execute_batch(
                    "DROP TABLE dead_letters; DROP TABLE sink_health;
                     DROP INDEX scans_started; DROP INDEX state_changes_scan;
                     DROP INDEX incidents_resolved; DROP INDEX outbox_created;
                     DROP INDEX deliveries_seq; DROP TABLE monitors;
                     DROP INDEX incidents_open; DROP INDEX incidents_confirmed;
                     DROP INDEX scans_monitor_id;
                     ALTER TABLE monitor_state DROP COLUMN last_scan_ms;
                     ALTER TABLE monitor_state DROP COLUMN last_conclusive;
                     ALTER TABLE monitor_state DROP COLUMN reachability;
                     ALTER TABLE monitor_state DROP COLUMN expected_down;
                     ALTER TABLE monitor_state DROP COLUMN unexpected_open;
                     ALTER TABLE monitor_state DROP COLUMN open_incidents;
                     ALTER TABLE monitor_state DROP COLUMN last_full_scan_id;
                     DROP TABLE agents;",
                )
                .unwrap();
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600, "tightened");
        let redacted = "webhook:https://u:***@h.example/in?token=***";
        assert_eq!(
            pending_ids(&store, redacted),
            ["e2"],
            "the position is kept"
        );
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("hunter2") && !text.contains("s3cret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
