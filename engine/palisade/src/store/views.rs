//! Reads for the dashboard and the API: the fleet in pages (sorted,
//! filtered, searched in SQL over each monitor's counts, so a page costs
//! the same with 10 or 100,000 monitors), one monitor, incidents, scans
//! and events, newest first.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use palisade_core::monitor::{Millis, MonitorState};

use super::{AddressStatus, Store, StoreError, monitors::ManagedBy};

/// How the fleet list is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetSort {
    /// Most open incidents first, then most deviations, then by name.
    #[default]
    Attention,
    Name,
    Host,
    LastScan,
    ExpectedDown,
    UnexpectedOpen,
}

impl FleetSort {
    pub const ALL: [FleetSort; 6] = [
        FleetSort::Attention,
        FleetSort::Name,
        FleetSort::Host,
        FleetSort::LastScan,
        FleetSort::ExpectedDown,
        FleetSort::UnexpectedOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attention => "attention",
            Self::Name => "name",
            Self::Host => "host",
            Self::LastScan => "last_scan",
            Self::ExpectedDown => "expected_down",
            Self::UnexpectedOpen => "unexpected_open",
        }
    }

    fn order_by(self) -> &'static str {
        match self {
            Self::Attention => {
                "COALESCE(s.open_incidents, 0) DESC, \
                 COALESCE(s.unexpected_open, 0) + COALESCE(s.expected_down, 0) DESC, m.name"
            }
            Self::Name => "m.name",
            Self::Host => "json_extract(m.spec, '$.host'), m.name",
            Self::LastScan => "s.last_scan_ms IS NULL, s.last_scan_ms DESC, m.name",
            Self::ExpectedDown => "COALESCE(s.expected_down, 0) DESC, m.name",
            Self::UnexpectedOpen => "COALESCE(s.unexpected_open, 0) DESC, m.name",
        }
    }
}

/// Which monitors the fleet list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetFilter {
    #[default]
    All,
    /// With an open incident.
    Incidents,
    /// With an expected port down or an unexpected port open.
    Deviating,
    /// Some or every address confirmed unreachable.
    Unreachable,
    Disabled,
}

impl FleetFilter {
    pub const ALL: [FleetFilter; 5] = [
        FleetFilter::All,
        FleetFilter::Incidents,
        FleetFilter::Deviating,
        FleetFilter::Unreachable,
        FleetFilter::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Incidents => "incidents",
            Self::Deviating => "deviating",
            Self::Unreachable => "unreachable",
            Self::Disabled => "disabled",
        }
    }

    fn condition(self) -> &'static str {
        match self {
            Self::All => "1",
            Self::Incidents => "COALESCE(s.open_incidents, 0) > 0",
            Self::Deviating => "COALESCE(s.expected_down, 0) + COALESCE(s.unexpected_open, 0) > 0",
            Self::Unreachable => "s.reachability IN ('unreachable', 'partly')",
            Self::Disabled => "NOT m.enabled",
        }
    }
}

/// A page of the fleet list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetQuery {
    /// A substring of the name or the host (case-insensitive).
    pub search: String,
    pub filter: FleetFilter,
    pub sort: FleetSort,
    /// From 1.
    pub page: u32,
    pub per_page: u32,
}

/// Most rows a page of any list holds.
pub const MAX_PER_PAGE: u32 = 500;

/// One monitor in the fleet list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetRow {
    pub name: String,
    pub host: String,
    pub managed_by: ManagedBy,
    pub enabled: bool,
    /// `unknown`, `reachable`, `partly` or `unreachable`.
    pub reachability: String,
    pub expected_down: u32,
    pub unexpected_open: u32,
    pub open_incidents: u32,
    pub last_scan_ms: Option<Millis>,
    pub last_scan_conclusive: Option<bool>,
    /// The start of the last conclusive full scan.
    pub last_full_ms: Option<Millis>,
}

/// A page of [`FleetRow`]s and how many match in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetPage {
    pub rows: Vec<FleetRow>,
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
}

/// Fleet-wide counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct FleetTotals {
    pub monitors: u64,
    pub enabled: u64,
    pub with_incidents: u64,
    pub unreachable: u64,
    pub open_incidents: u64,
    pub expected_down: u64,
    pub unexpected_open: u64,
}

/// An incident as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncidentRow {
    pub id: String,
    pub monitor: String,
    pub address: Option<String>,
    /// 0 for a host incident.
    pub port: u16,
    /// Host incidents: the ports concerned, as ranges.
    pub ports: Option<String>,
    pub kind: String,
    /// The detected state that opened it.
    pub state: String,
    pub first_seen_ms: Millis,
    pub confirmed_at_ms: Millis,
    pub resolved_at_ms: Option<Millis>,
    pub resolution: Option<String>,
}

/// Which incidents to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IncidentQuery {
    pub monitor: Option<String>,
    /// Only those still open.
    pub open_only: bool,
    pub page: u32,
    pub per_page: u32,
}

/// One scan of a monitor, with what each address answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanRow {
    pub id: i64,
    pub sweep: i64,
    /// `full` or `recheck`.
    pub kind: String,
    pub started_ms: Millis,
    pub finished_ms: Millis,
    pub conclusive: bool,
    /// Why it was inconclusive, if it was.
    pub note: Option<String>,
    pub addresses: Vec<AddressStatus>,
}

/// One event of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub monitor: String,
    pub created_ms: Millis,
    /// The envelope, as JSON text.
    pub payload: String,
}

/// A monitor's saved state and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorStatus {
    pub state: MonitorState,
    pub last_scan_ms: Option<Millis>,
    pub last_scan_conclusive: Option<bool>,
    pub last_full_ms: Option<Millis>,
}

fn page_bounds(page: u32, per_page: u32) -> (u32, u32, i64) {
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let page = page.max(1);
    (page, per_page, i64::from(page - 1) * i64::from(per_page))
}

/// `text` for a LIKE pattern: `%`, `_` and `\` taken literally.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

const FLEET_FROM: &str = "FROM monitors m LEFT JOIN monitor_state s ON s.monitor = m.name
     WHERE (?1 = '' OR m.name LIKE ?2 ESCAPE '\\' OR json_extract(m.spec, '$.host') LIKE ?2 ESCAPE '\\')";

impl Store {
    /// A page of the fleet list.
    pub fn fleet(&self, query: &FleetQuery) -> Result<FleetPage, StoreError> {
        let (page, per_page, offset) = page_bounds(query.page, query.per_page);
        let search = query.search.trim();
        let pattern = like_escaped(search);
        let condition = query.filter.condition();
        let total: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) {FLEET_FROM} AND {condition}"),
            params![search, pattern],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(&format!(
            "SELECT m.name, json_extract(m.spec, '$.host'), m.managed_by, m.enabled,
                    COALESCE(s.reachability, 'unknown'), COALESCE(s.expected_down, 0),
                    COALESCE(s.unexpected_open, 0), COALESCE(s.open_incidents, 0),
                    s.last_scan_ms, s.last_conclusive, s.last_full_ms
             {FLEET_FROM} AND {condition}
             ORDER BY {} LIMIT ?3 OFFSET ?4",
            query.sort.order_by()
        ))?;
        let rows = stmt.query_map(params![search, pattern, per_page, offset], |r| {
            let managed_by: String = r.get(2)?;
            Ok(FleetRow {
                name: r.get(0)?,
                host: r.get(1)?,
                managed_by: if managed_by == "config" {
                    ManagedBy::Config
                } else {
                    ManagedBy::Api
                },
                enabled: r.get(3)?,
                reachability: r.get(4)?,
                expected_down: r.get(5)?,
                unexpected_open: r.get(6)?,
                open_incidents: r.get(7)?,
                last_scan_ms: r.get(8)?,
                last_scan_conclusive: r.get(9)?,
                last_full_ms: r.get(10)?,
            })
        })?;
        Ok(FleetPage {
            rows: rows.collect::<Result<_, _>>()?,
            total: total as u64,
            page,
            per_page,
        })
    }

    /// Counts over the whole fleet.
    pub fn fleet_totals(&self) -> Result<FleetTotals, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(m.enabled), 0),
                    COALESCE(SUM(COALESCE(s.open_incidents, 0) > 0), 0),
                    COALESCE(SUM(s.reachability IN ('unreachable', 'partly')), 0),
                    COALESCE(SUM(s.open_incidents), 0), COALESCE(SUM(s.expected_down), 0),
                    COALESCE(SUM(s.unexpected_open), 0)
             FROM monitors m LEFT JOIN monitor_state s ON s.monitor = m.name",
            [],
            |r| {
                Ok(FleetTotals {
                    monitors: r.get::<_, i64>(0)? as u64,
                    enabled: r.get::<_, i64>(1)? as u64,
                    with_incidents: r.get::<_, i64>(2)? as u64,
                    unreachable: r.get::<_, i64>(3)? as u64,
                    open_incidents: r.get::<_, i64>(4)? as u64,
                    expected_down: r.get::<_, i64>(5)? as u64,
                    unexpected_open: r.get::<_, i64>(6)? as u64,
                })
            },
        )?)
    }

    /// The saved state of `monitor` and when it was last scanned, if it
    /// has been.
    pub fn monitor_status(&self, monitor: &str) -> Result<Option<MonitorStatus>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT state, last_scan_ms, last_conclusive, last_full_ms
                 FROM monitor_state WHERE monitor = ?1",
                params![monitor],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        MonitorStatus {
                            state: MonitorState::new(),
                            last_scan_ms: r.get(1)?,
                            last_scan_conclusive: r.get(2)?,
                            last_full_ms: r.get(3)?,
                        },
                    ))
                },
            )
            .optional()?;
        row.map(|(json, status)| {
            let state = serde_json::from_str(&json).map_err(|source| StoreError::State {
                monitor: monitor.to_owned(),
                source,
            })?;
            Ok(MonitorStatus { state, ..status })
        })
        .transpose()
    }

    /// Incidents, newest confirmed first, and how many match in all.
    pub fn incidents(&self, query: &IncidentQuery) -> Result<(Vec<IncidentRow>, u64), StoreError> {
        let (_, per_page, offset) = page_bounds(query.page, query.per_page);
        let filter = "(?1 IS NULL OR monitor = ?1) AND (NOT ?2 OR resolved_at_ms IS NULL)";
        let total: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM incidents WHERE {filter}"),
            params![query.monitor, query.open_only],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, monitor, address, port, ports, kind, state, first_seen_ms, confirmed_at_ms,
                    resolved_at_ms, resolution
             FROM incidents WHERE {filter}
             ORDER BY confirmed_at_ms DESC, id LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt.query_map(
            params![query.monitor, query.open_only, per_page, offset],
            |r| {
                Ok(IncidentRow {
                    id: r.get(0)?,
                    monitor: r.get(1)?,
                    address: r.get(2)?,
                    port: r.get(3)?,
                    ports: r.get(4)?,
                    kind: r.get(5)?,
                    state: r.get(6)?,
                    first_seen_ms: r.get(7)?,
                    confirmed_at_ms: r.get(8)?,
                    resolved_at_ms: r.get(9)?,
                    resolution: r.get(10)?,
                })
            },
        )?;
        Ok((rows.collect::<Result<_, _>>()?, total as u64))
    }

    /// The scans of `monitor`, newest first, and how many it has.
    pub fn scans(
        &self,
        monitor: &str,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<ScanRow>, u64), StoreError> {
        let (_, per_page, offset) = page_bounds(page, per_page);
        let total: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM scans WHERE monitor = ?1",
            params![monitor],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT id, sweep, kind, started_ms, finished_ms, conclusive, note
             FROM scans WHERE monitor = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![monitor, per_page, offset], |r| {
            Ok(ScanRow {
                id: r.get(0)?,
                sweep: r.get(1)?,
                kind: r.get(2)?,
                started_ms: r.get(3)?,
                finished_ms: r.get(4)?,
                conclusive: r.get(5)?,
                note: r.get(6)?,
                addresses: Vec::new(),
            })
        })?;
        let mut scans: Vec<ScanRow> = rows.collect::<Result<_, _>>()?;
        for scan in &mut scans {
            scan.addresses = self.scan_addresses(scan.id)?;
        }
        Ok((scans, total as u64))
    }

    /// Events of the outbox after `after` (a `seq`), oldest first, at most
    /// `limit`; only `monitor`'s if given.
    pub fn events(
        &self,
        after: i64,
        limit: u32,
        monitor: Option<&str>,
    ) -> Result<Vec<EventRow>, StoreError> {
        let limit = limit.clamp(1, MAX_PER_PAGE);
        let mut stmt = self.conn.prepare(
            "SELECT seq, event_id, kind, monitor, created_ms, payload FROM outbox
             WHERE seq > ?1 AND (?2 IS NULL OR monitor = ?2) ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after, monitor, limit], |r| {
            Ok(EventRow {
                seq: r.get(0)?,
                id: r.get(1)?,
                kind: r.get(2)?,
                monitor: r.get(3)?,
                created_ms: r.get(4)?,
                payload: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

// ---------------------------------------------------------------------------
// The dashboard's monitor page: the incident timeline in pages.

use super::HistoryRow;

impl Store {
    /// [`Store::history`] of `monitor` in pages, newest first (state
    /// changes before incidents at the same time), and how many rows it
    /// has in all.
    pub fn history_page(
        &self,
        monitor: &str,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<HistoryRow>, u64), StoreError> {
        let (_, per_page, offset) = page_bounds(page, per_page);
        let total: i64 = self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM state_changes WHERE monitor = ?1)
                  + (SELECT COUNT(*) FROM incidents WHERE monitor = ?1)",
            params![monitor],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT t, at, port, address, from_state, to_state, scan_id, id, ports, kind,
                    first_seen_ms, confirmed_at_ms, resolved_at_ms, resolution
             FROM (
                 SELECT 0 AS t, at_ms AS at, port, address, from_state, to_state, scan_id,
                        NULL AS id, NULL AS ports, NULL AS kind, NULL AS first_seen_ms,
                        NULL AS confirmed_at_ms, NULL AS resolved_at_ms, NULL AS resolution
                 FROM state_changes WHERE monitor = ?1
                 UNION ALL
                 SELECT 1, COALESCE(resolved_at_ms, confirmed_at_ms), port, address, NULL,
                        state, NULL, id, ports, kind, first_seen_ms, confirmed_at_ms,
                        resolved_at_ms, resolution
                 FROM incidents WHERE monitor = ?1
             )
             ORDER BY at DESC, t, port LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![monitor, per_page, offset], |r| {
            let t: i64 = r.get(0)?;
            Ok(if t == 0 {
                HistoryRow::StateChange {
                    at_ms: r.get(1)?,
                    address: r.get(3)?,
                    port: r.get(2)?,
                    from: r.get(4)?,
                    to: r.get(5)?,
                    scan_id: r.get(6)?,
                }
            } else {
                HistoryRow::Incident {
                    at_ms: r.get(1)?,
                    id: r.get(7)?,
                    address: r.get(3)?,
                    port: r.get(2)?,
                    ports: r.get(8)?,
                    kind: r.get(9)?,
                    state: r.get(5)?,
                    first_seen_ms: r.get(10)?,
                    confirmed_at_ms: r.get(11)?,
                    resolved_at_ms: r.get(12)?,
                    resolution: r.get(13)?,
                }
            })
        })?;
        Ok((rows.collect::<Result<_, _>>()?, total as u64))
    }
}

#[cfg(test)]
mod history_page_tests {
    use super::*;

    #[test]
    fn pages_of_the_history_are_the_history_in_slices() {
        let store = Store::in_memory().unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO scans (id, sweep, monitor, host, kind, started_ms, finished_ms,
                                    conclusive, reachable, open_ports)
                 VALUES (1, 1, 'web', 'h', 'full', 100, 200, 1, 1, '[]');
                 INSERT INTO state_changes (monitor, port, from_state, to_state, at_ms, scan_id, address)
                 VALUES ('web', 443, NULL, 'open', 100, 1, '198.18.0.2'),
                        ('web', 443, 'open', 'closed', 300, 1, '198.18.0.2'),
                        ('web', 22, NULL, 'open', 300, 1, '198.18.0.2'),
                        ('other', 80, NULL, 'open', 400, 1, '198.18.0.3');
                 INSERT INTO incidents (id, monitor, port, kind, first_seen_ms, confirmed_at_ms,
                                        state, resolved_at_ms, address)
                 VALUES ('a', 'web', 443, 'expected_port_down', 300, 500, 'closed', NULL, '198.18.0.2'),
                        ('b', 'web', 6379, 'unexpected_port_open', 50, 60, 'open', 250, '198.18.0.2');",
            )
            .unwrap();
        let all = store.history("web", None, None).unwrap();
        assert_eq!(all.len(), 5);
        let (first, total) = store.history_page("web", 1, 2).unwrap();
        let (second, _) = store.history_page("web", 2, 2).unwrap();
        let (third, _) = store.history_page("web", 3, 2).unwrap();
        assert_eq!(total, 5);
        assert_eq!((first.len(), second.len(), third.len()), (2, 2, 1));
        let paged: Vec<HistoryRow> = first.into_iter().chain(second).chain(third).collect();
        let at: Vec<i64> = paged.iter().map(HistoryRow::at_ms).collect();
        assert_eq!(at, [500, 300, 300, 250, 100]);
        let mut by_page = paged.clone();
        let mut whole = all.clone();
        let key = |r: &HistoryRow| format!("{r:?}");
        by_page.sort_by_key(key);
        whole.sort_by_key(key);
        assert_eq!(by_page, whole, "the same rows as history()");
        assert!(matches!(&paged[0], HistoryRow::Incident { id, .. } if id == "a"));
    }
}

// ---------------------------------------------------------------------------
// Self-monitoring reads (`/metrics`, `/readyz`): what the store knows of the
// daemon's health, read at scrape time.

/// What `/metrics` reports from the store, read in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// Open incidents by kind: port (`unexpected_port_open`,
    /// `expected_port_down`), host (`host_unreachable`,
    /// `host_answers_all_ports`) and self-monitoring (`scan_failed`,
    /// `monitor_stale`); every kind listed, 0 when none is open.
    pub open_incidents: Vec<(String, u64)>,
    /// Per sink asked for (and any other with dead letters): events it has
    /// not acknowledged yet (dead letters aside), and its dead letters.
    pub sinks: Vec<SinkGauges>,
    /// Per monitor with one: the start of its last conclusive full scan.
    pub last_full: Vec<(String, Millis)>,
    pub monitors_enabled: u64,
    pub monitors_disabled: u64,
    /// [`Store::size_bytes`].
    pub size_bytes: u64,
}

/// One sink's queue in the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkGauges {
    pub sink: String,
    pub pending: u64,
    pub dead_letters: u64,
}

/// The kinds of incidents [`StoreGauges::open_incidents`] lists.
pub const INCIDENT_KINDS: [&str; 6] = [
    "unexpected_port_open",
    "expected_port_down",
    "host_unreachable",
    "host_answers_all_ports",
    "scan_failed",
    "monitor_stale",
];

impl Store {
    /// The store's gauges for `/metrics`, in one read transaction; `sinks`
    /// are the configured sinks (each listed, with 0 if nothing waits).
    pub fn gauges(&self, sinks: &[String]) -> Result<StoreGauges, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut open: std::collections::BTreeMap<String, u64> = INCIDENT_KINDS
            .iter()
            .map(|k| ((*k).to_owned(), 0))
            .collect();
        {
            let mut stmt = tx.prepare(
                "SELECT kind, COUNT(*) FROM incidents WHERE resolved_at_ms IS NULL GROUP BY kind",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (kind, n) = row?;
                open.insert(kind, n as u64);
            }
        }
        let health = self.load_health()?;
        open.insert("scan_failed".into(), u64::from(health.failing().is_some()));
        open.insert("monitor_stale".into(), health.stale().count() as u64);
        let mut dead: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        {
            let mut stmt = tx.prepare("SELECT sink, COUNT(*) FROM dead_letters GROUP BY sink")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (sink, n) = row?;
                dead.insert(sink, n as u64);
            }
        }
        let mut sink_gauges = Vec::new();
        for sink in sinks {
            sink_gauges.push(SinkGauges {
                sink: sink.clone(),
                pending: self.pending_count(sink)?.max(0) as u64,
                dead_letters: dead.remove(sink).unwrap_or(0),
            });
        }
        // Dead letters of a sink no longer configured still wait.
        sink_gauges.extend(dead.into_iter().map(|(sink, dead_letters)| SinkGauges {
            sink,
            pending: 0,
            dead_letters,
        }));
        let last_full = {
            let mut stmt = tx.prepare(
                "SELECT monitor, last_full_ms FROM monitor_state
                 WHERE last_full_ms IS NOT NULL ORDER BY monitor",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let (enabled, disabled): (i64, i64) = tx.query_row(
            "SELECT COALESCE(SUM(enabled != 0), 0), COALESCE(SUM(enabled = 0), 0) FROM monitors",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let size_bytes = self.size_bytes()?;
        tx.finish()?;
        let mut open_incidents: Vec<(String, u64)> = INCIDENT_KINDS
            .iter()
            .map(|k| ((*k).to_owned(), open.remove(*k).unwrap_or(0)))
            .collect();
        open_incidents.extend(open);
        Ok(StoreGauges {
            open_incidents,
            sinks: sink_gauges,
            last_full,
            monitors_enabled: enabled as u64,
            monitors_disabled: disabled as u64,
            size_bytes,
        })
    }

    /// Whether the store takes writes: its write lock (`BEGIN IMMEDIATE`)
    /// is obtained within `wait`, then let go (`ROLLBACK`); nothing is
    /// written. Takes the connection (its busy timeout becomes `wait`): open
    /// a fresh one with [`Store::connect`], which also proves the file opens
    /// read-write.
    pub fn check_writable(self, wait: std::time::Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(wait)?;
        self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK")?;
        Ok(())
    }
}

#[cfg(test)]
mod self_monitoring_tests {
    use std::collections::BTreeMap;

    use palisade_core::health::HealthState;
    use palisade_core::monitor::MonitorSpec;

    use super::*;
    use crate::config::SinkStart;
    use crate::store::OutboxEntry;

    fn entry(id: &str) -> OutboxEntry {
        OutboxEntry {
            id: id.into(),
            kind: "monitor_resolved".into(),
            payload: "{}".into(),
        }
    }

    #[test]
    fn gauges_count_incidents_queues_dead_letters_and_monitors() {
        let mut store = Store::in_memory().unwrap();
        let empty = store.gauges(&[]).unwrap();
        assert_eq!(
            empty.open_incidents,
            INCIDENT_KINDS.map(|k| (k.to_owned(), 0)).to_vec()
        );
        assert_eq!((empty.monitors_enabled, empty.monitors_disabled), (0, 0));
        assert!(empty.size_bytes > 0);

        let mut health = HealthState::new();
        health.after_sweep(1_000, Some("no route".into()));
        store.record_health(&health, &[], 1_000).unwrap();
        for (name, enabled) in [("a", true), ("b", true), ("c", false)] {
            let spec = MonitorSpec {
                name: name.into(),
                host: "198.18.0.2".into(),
                ..MonitorSpec::default()
            };
            store.create_monitor(&spec, enabled, 1).unwrap();
        }
        store.register_sink("hook", SinkStart::All).unwrap();
        store.register_sink("file", SinkStart::All).unwrap();
        store
            .enqueue("a", &[entry("e1"), entry("e2"), entry("e3")], 2)
            .unwrap();
        store.mark_delivered("file", &[1, 2, 3], 3).unwrap();
        store.dead_letter("hook", 1, Some(400), "no", 3).unwrap();
        store.dead_letter("gone", 2, Some(410), "no", 3).unwrap();

        let g = store.gauges(&["hook".into(), "file".into()]).unwrap();
        let open: BTreeMap<&str, u64> = g
            .open_incidents
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect();
        assert_eq!(open["scan_failed"], 1);
        assert_eq!(open["unexpected_port_open"], 0);
        assert_eq!(
            g.sinks,
            [
                SinkGauges {
                    sink: "hook".into(),
                    pending: 2,
                    dead_letters: 1
                },
                SinkGauges {
                    sink: "file".into(),
                    pending: 0,
                    dead_letters: 0
                },
                // Not configured, but its dead letter still waits.
                SinkGauges {
                    sink: "gone".into(),
                    pending: 0,
                    dead_letters: 1
                },
            ]
        );
        assert_eq!((g.monitors_enabled, g.monitors_disabled), (2, 1));
    }

    #[test]
    fn the_write_check_fails_while_another_connection_holds_the_write_lock() {
        let dir = std::env::temp_dir().join(format!("palisade-store-ready-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("p.db");
        let store = Store::open(&path).unwrap();
        let wait = std::time::Duration::from_millis(100);
        Store::connect(&path).unwrap().check_writable(wait).unwrap();
        store.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = Store::connect(&path)
            .unwrap()
            .check_writable(wait)
            .unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
        store.conn.execute_batch("ROLLBACK").unwrap();
        Store::connect(&path).unwrap().check_writable(wait).unwrap();
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
