//! Where monitors live: the `monitors` table. The configuration file's
//! `[[monitor]]`s are imported (`managed_by = 'config'`) at start and on
//! SIGHUP; monitors created through the API or the settings page are
//! `'api'`. One source of truth per monitor: an import never touches an
//! `'api'` monitor (a config monitor of the same name is refused, and said
//! so), and the API never changes a `'config'` one.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use thiserror::Error;

use palisade_core::monitor::{Millis, MonitorSpec};

use super::{Store, StoreError};

/// Who owns a monitor's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagedBy {
    /// The configuration file: read-only in the UI and the API.
    Config,
    /// The API or the settings page.
    Api,
}

impl ManagedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Api => "api",
        }
    }

    fn parse(text: &str) -> ManagedBy {
        if text == "config" {
            Self::Config
        } else {
            Self::Api
        }
    }
}

/// A monitor as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMonitor {
    pub spec: MonitorSpec,
    pub managed_by: ManagedBy,
    /// A disabled monitor is not scanned (its incidents resolve as if it
    /// were removed).
    pub enabled: bool,
    /// Grows with every change: the API's ETag.
    pub version: i64,
    pub created_ms: Millis,
    pub updated_ms: Millis,
}

/// Why a change to a monitor was refused.
#[derive(Debug, Error)]
pub enum MonitorWriteError {
    #[error("no monitor is named {0:?}")]
    NotFound(String),
    #[error("a monitor named {0:?} exists already")]
    Exists(String),
    #[error(
        "monitor {0:?} is managed by the configuration file: change it there and reload (SIGHUP)"
    )]
    ManagedByConfig(String),
    #[error(
        "monitor {name:?} changed since you read it (version {current}, you had {given}): \
         read it again and redo your change"
    )]
    VersionMismatch {
        name: String,
        current: i64,
        given: i64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for MonitorWriteError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(StoreError::Sql(e))
    }
}

/// What importing the configuration file's monitors did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    /// Config monitors no longer in the file: deleted.
    pub removed: Vec<String>,
    /// Config monitors not imported: an API monitor has the name.
    pub conflicts: Vec<String>,
}

impl ImportReport {
    pub fn changed(&self) -> bool {
        !(self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty())
    }
}

const COLUMNS: &str = "name, managed_by, spec, enabled, version, created_ms, updated_ms";

fn spec_json(spec: &MonitorSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|source| StoreError::State {
        monitor: spec.name.clone(),
        source,
    })
}

fn read_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, bool, i64, i64, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn stored(
    (name, managed_by, spec, enabled, version, created_ms, updated_ms): (
        String,
        String,
        String,
        bool,
        i64,
        i64,
        i64,
    ),
) -> Result<StoredMonitor, StoreError> {
    let spec = serde_json::from_str(&spec).map_err(|source| StoreError::State {
        monitor: name,
        source,
    })?;
    Ok(StoredMonitor {
        spec,
        managed_by: ManagedBy::parse(&managed_by),
        enabled,
        version,
        created_ms,
        updated_ms,
    })
}

impl Store {
    /// Every monitor, by name.
    pub fn monitors(&self) -> Result<Vec<StoredMonitor>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM monitors ORDER BY name"))?;
        let rows = stmt.query_map([], read_row)?;
        rows.map(|row| stored(row?)).collect()
    }

    /// The monitor named `name`.
    pub fn monitor(&self, name: &str) -> Result<Option<StoredMonitor>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM monitors WHERE name = ?1"),
                params![name],
                read_row,
            )
            .optional()?;
        row.map(stored).transpose()
    }

    /// The specs of the enabled monitors, by name: what the daemon scans.
    pub fn enabled_monitors(&self) -> Result<Vec<MonitorSpec>, StoreError> {
        Ok(self
            .monitors()?
            .into_iter()
            .filter(|m| m.enabled)
            .map(|m| m.spec)
            .collect())
    }

    /// Creates an API monitor (version 1).
    pub fn create_monitor(
        &mut self,
        spec: &MonitorSpec,
        enabled: bool,
        now: Millis,
    ) -> Result<StoredMonitor, MonitorWriteError> {
        let json = spec_json(spec)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO monitors (name, managed_by, spec, enabled, version, created_ms, updated_ms)
             VALUES (?1, 'api', ?2, ?3, 1, ?4, ?4)",
            params![spec.name, json, enabled, now],
        )?;
        if inserted == 0 {
            return Err(MonitorWriteError::Exists(spec.name.clone()));
        }
        tx.commit()?;
        Ok(StoredMonitor {
            spec: spec.clone(),
            managed_by: ManagedBy::Api,
            enabled,
            version: 1,
            created_ms: now,
            updated_ms: now,
        })
    }

    /// Replaces an API monitor's definition if its version is still
    /// `if_version` (no lost update); its name cannot change.
    pub fn update_monitor(
        &mut self,
        spec: &MonitorSpec,
        enabled: bool,
        if_version: i64,
        now: Millis,
    ) -> Result<StoredMonitor, MonitorWriteError> {
        let json = spec_json(spec)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = writable(&tx, &spec.name, if_version)?;
        tx.execute(
            "UPDATE monitors SET spec = ?2, enabled = ?3, version = version + 1, updated_ms = ?4
             WHERE name = ?1",
            params![spec.name, json, enabled, now],
        )?;
        tx.commit()?;
        Ok(StoredMonitor {
            spec: spec.clone(),
            enabled,
            version: current.version + 1,
            updated_ms: now,
            ..current
        })
    }

    /// Deletes an API monitor if its version is still `if_version`. Its
    /// history stays; the daemon resolves its incidents.
    pub fn delete_monitor(&mut self, name: &str, if_version: i64) -> Result<(), MonitorWriteError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        writable(&tx, name, if_version)?;
        tx.execute("DELETE FROM monitors WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(())
    }

    /// Makes the `'config'` monitors those of the configuration file: adds
    /// the new, updates the changed (a new version), deletes those no
    /// longer there. A name an `'api'` monitor holds is not imported and is
    /// reported as a conflict; the `'api'` monitor is left as it is.
    pub fn import_config_monitors(
        &mut self,
        specs: &[MonitorSpec],
        now: Millis,
    ) -> Result<ImportReport, StoreError> {
        let mut report = ImportReport::default();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // By name, whether an API monitor holds it: only the names are held
        // (a million specs are compared by SQLite, not copied in here).
        let existing: std::collections::HashMap<String, bool> = {
            let mut stmt = tx.prepare("SELECT name, managed_by = 'api' FROM monitors")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for spec in specs {
            match existing.get(&spec.name) {
                Some(true) => {
                    report.conflicts.push(spec.name.clone());
                }
                Some(false) => {
                    let changed = tx
                        .prepare_cached(
                            "UPDATE monitors SET spec = ?2, version = version + 1, updated_ms = ?3
                             WHERE name = ?1 AND spec <> ?2",
                        )?
                        .execute(params![spec.name, spec_json(spec)?, now])?;
                    if changed > 0 {
                        report.updated.push(spec.name.clone());
                    }
                }
                None => {
                    tx.prepare_cached(
                        "INSERT INTO monitors (name, managed_by, spec, enabled, version, created_ms, updated_ms)
                         VALUES (?1, 'config', ?2, 1, 1, ?3, ?3)",
                    )?
                    .execute(params![spec.name, spec_json(spec)?, now])?;
                    report.added.push(spec.name.clone());
                }
            }
        }
        let in_file: std::collections::HashSet<&str> =
            specs.iter().map(|s| s.name.as_str()).collect();
        for (name, &api) in &existing {
            if !api && !in_file.contains(name.as_str()) {
                tx.execute("DELETE FROM monitors WHERE name = ?1", params![name])?;
                report.removed.push(name.clone());
            }
        }
        report.removed.sort();
        tx.commit()?;
        Ok(report)
    }
}

/// The monitor `name` if the API may change it at `if_version`.
fn writable(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    if_version: i64,
) -> Result<StoredMonitor, MonitorWriteError> {
    let row = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM monitors WHERE name = ?1"),
            params![name],
            read_row,
        )
        .optional()?;
    let current = stored(row.ok_or_else(|| MonitorWriteError::NotFound(name.to_owned()))?)?;
    if current.managed_by == ManagedBy::Config {
        return Err(MonitorWriteError::ManagedByConfig(name.to_owned()));
    }
    if current.version != if_version {
        return Err(MonitorWriteError::VersionMismatch {
            name: name.to_owned(),
            current: current.version,
            given: if_version,
        });
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, ports: &[u16]) -> MonitorSpec {
        MonitorSpec {
            name: name.into(),
            host: "198.18.0.2".into(),
            expected_open: ports.iter().copied().collect(),
            ..MonitorSpec::default()
        }
    }

    #[test]
    fn config_monitors_are_imported_updated_and_removed() {
        let mut store = Store::in_memory().unwrap();
        let report = store
            .import_config_monitors(&[spec("a", &[22]), spec("b", &[80])], 1)
            .unwrap();
        assert_eq!(report.added, ["a", "b"]);
        let same = store
            .import_config_monitors(&[spec("a", &[22]), spec("b", &[80])], 2)
            .unwrap();
        assert!(!same.changed());
        let report = store
            .import_config_monitors(&[spec("a", &[443])], 3)
            .unwrap();
        assert_eq!(
            (report.updated.as_slice(), report.removed.as_slice()),
            (&["a".to_owned()][..], &["b".to_owned()][..])
        );
        let a = store.monitor("a").unwrap().unwrap();
        assert_eq!((a.version, a.managed_by), (2, ManagedBy::Config));
        assert_eq!(
            a.spec.expected_open.iter().copied().collect::<Vec<_>>(),
            [443]
        );
        assert!(store.monitor("b").unwrap().is_none());
    }

    #[test]
    fn one_source_of_truth_per_monitor() {
        let mut store = Store::in_memory().unwrap();
        store.create_monitor(&spec("web", &[22]), true, 1).unwrap();
        // The file cannot take over an API monitor...
        let report = store
            .import_config_monitors(&[spec("web", &[80])], 2)
            .unwrap();
        assert_eq!(report.conflicts, ["web"]);
        let web = store.monitor("web").unwrap().unwrap();
        assert_eq!((web.managed_by, web.version), (ManagedBy::Api, 1));
        assert!(web.spec.expected_open.contains(&22));
        // ... nor does removing it from the file delete the API monitor.
        store.import_config_monitors(&[], 3).unwrap();
        assert!(store.monitor("web").unwrap().is_some());
        // And the API cannot change a config monitor.
        store
            .import_config_monitors(&[spec("db", &[5432])], 4)
            .unwrap();
        let err = store
            .update_monitor(&spec("db", &[]), true, 1, 5)
            .unwrap_err();
        assert!(
            matches!(err, MonitorWriteError::ManagedByConfig(_)),
            "{err}"
        );
        let err = store.delete_monitor("db", 1).unwrap_err();
        assert!(
            matches!(err, MonitorWriteError::ManagedByConfig(_)),
            "{err}"
        );
        let err = store.create_monitor(&spec("db", &[]), true, 6).unwrap_err();
        assert!(matches!(err, MonitorWriteError::Exists(_)), "{err}");
    }

    #[test]
    fn a_stale_version_changes_nothing() {
        let mut store = Store::in_memory().unwrap();
        store.create_monitor(&spec("web", &[22]), true, 1).unwrap();
        let v2 = store
            .update_monitor(&spec("web", &[80]), true, 1, 2)
            .unwrap();
        assert_eq!(v2.version, 2);
        // A second writer who read version 1 loses, and is told.
        let err = store
            .update_monitor(&spec("web", &[443]), false, 1, 3)
            .unwrap_err();
        assert!(
            matches!(
                err,
                MonitorWriteError::VersionMismatch {
                    current: 2,
                    given: 1,
                    ..
                }
            ),
            "{err}"
        );
        let err = store.delete_monitor("web", 1).unwrap_err();
        assert!(
            matches!(err, MonitorWriteError::VersionMismatch { .. }),
            "{err}"
        );
        let web = store.monitor("web").unwrap().unwrap();
        assert!(web.enabled && web.spec.expected_open.contains(&80));
        store.delete_monitor("web", 2).unwrap();
        assert!(store.monitors().unwrap().is_empty());
        let err = store.delete_monitor("web", 2).unwrap_err();
        assert!(matches!(err, MonitorWriteError::NotFound(_)), "{err}");
    }
}
