//! One monitor as the API and the settings page write it: a JSON object with
//! the keys of a `[[monitor]]` table (`"expected_open": "22,80,8000-8100"`).
//!
//! It is checked by the configuration file's own checker: the object becomes
//! a one-entry `[[monitor]]` document and goes through [`check`], so the API
//! and the settings page give exactly `check-config`'s messages, each with
//! the field it is about. Its `agent_label` is checked against the labels
//! of the daemon's `[cluster]`, which the caller gives.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use palisade_core::monitor::{MonitorSpec, PortRanges};

use super::{AgentLabels, LabelSource, Resolver, check_with};

/// A monitor in its written form: what the API returns and takes, what the
/// store keeps. Every field but `name` and `host` may be left out (the
/// default applies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorDoc {
    pub name: String,
    pub host: String,
    /// Ports and ranges, `"22,80,8000-8100"`.
    pub expected_open: String,
    /// `"12h"`.
    pub every: String,
    pub confirm: u32,
    /// `"5m"`, or `"off"`.
    pub recheck: String,
    pub ping: bool,
    pub answer_all_threshold: u32,
    pub max_port_events: u32,
    /// The ports a full scan covers, `"1-65535"` (all) by default.
    #[serde(default = "all_ports")]
    pub ports: String,
    /// With scan agents (`[cluster]`): only agents of this label scan it
    /// (`"site=fra1"`); absent: any agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_label: Option<String>,
}

fn all_ports() -> String {
    PortRanges::all().to_string()
}

impl MonitorDoc {
    /// The written form of a checked monitor.
    pub fn of(spec: &MonitorSpec) -> MonitorDoc {
        let duration = |ms: u64| humantime::format_duration(Duration::from_millis(ms)).to_string();
        MonitorDoc {
            name: spec.name.clone(),
            host: spec.host.clone(),
            expected_open: spec
                .expected_open
                .iter()
                .copied()
                .collect::<PortRanges>()
                .to_string(),
            every: duration(spec.every_ms),
            confirm: spec.confirm,
            recheck: spec.recheck_ms.map_or_else(|| "off".to_owned(), duration),
            ping: spec.ping,
            answer_all_threshold: spec.answer_all_threshold,
            max_port_events: spec.max_port_events,
            ports: spec.scan_ports.to_string(),
            agent_label: spec.agent_label.clone(),
        }
    }
}

/// A problem with one field of a monitor written through the API or the
/// settings page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The key: `expected_open`, `name`, ... (`""` for the whole object).
    pub field: String,
    /// `check-config`'s message.
    pub message: String,
}

/// What [`check_monitor`] found acceptable, with its warnings (a host name
/// that does not resolve now).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedMonitor {
    pub spec: MonitorSpec,
    pub warnings: Vec<FieldError>,
}

/// Checks a monitor given as a JSON object of `[[monitor]]` keys, with the
/// configuration file's checker; `resolve` looks host names up, if given;
/// `labels` are what its `agent_label` may name: the daemon's `[cluster]`
/// labels ([`super::Config::agent_labels`]), `None` without a cluster (an
/// `agent_label` is then a warning).
pub fn check_monitor(
    fields: &Map<String, Value>,
    resolve: Option<Resolver<'_>>,
    labels: AgentLabels<'_>,
) -> Result<CheckedMonitor, Vec<FieldError>> {
    let mut table = toml::Table::new();
    let mut errors = Vec::new();
    for (key, value) in fields {
        match toml_value(value) {
            Ok(Some(value)) => {
                table.insert(key.clone(), value);
            }
            Ok(None) => {}
            Err(found) => errors.push(FieldError {
                field: key.clone(),
                message: format!("expected a value of a [[monitor]] key, found {found}"),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut document = toml::Table::new();
    document.insert(
        "monitor".to_owned(),
        toml::Value::Array(vec![toml::Value::Table(table)]),
    );
    let text = toml::to_string(&document).map_err(|e| {
        vec![FieldError {
            field: String::new(),
            message: e.to_string(),
        }]
    })?;
    let field = |key: &str| {
        key.strip_prefix("monitor[0]")
            .map(|rest| rest.trim_start_matches('.').to_owned())
            .unwrap_or_else(|| key.to_owned())
    };
    match check_with("monitor", &text, resolve, LabelSource::Given(labels)) {
        Ok(loaded) => {
            let Some(spec) = loaded.config.monitors.into_iter().next() else {
                return Err(vec![FieldError {
                    field: String::new(),
                    message: "not a monitor".to_owned(),
                }]);
            };
            let warnings = loaded
                .warnings
                .into_iter()
                .map(|w| FieldError {
                    field: field(&w.key),
                    message: w.message,
                })
                .collect();
            Ok(CheckedMonitor { spec, warnings })
        }
        Err(errors) => Err(errors
            .0
            .into_iter()
            .map(|e| FieldError {
                field: field(&e.key),
                message: e.message,
            })
            .collect()),
    }
}

/// A JSON value as TOML: `None` for `null` (the key is left out), `Err`
/// with what it was for an object inside an array and such that TOML cannot
/// hold.
fn toml_value(value: &Value) -> Result<Option<toml::Value>, &'static str> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            // Beyond i64 (the checker says it is out of range) or a float.
            None => match n.as_f64() {
                Some(f) if n.is_u64() => toml::Value::String(format!("{f}")),
                Some(f) => toml::Value::Float(f),
                None => return Err("a number"),
            },
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match toml_value(item)? {
                    Some(v) => out.push(v),
                    None => return Err("null in an array"),
                }
            }
            toml::Value::Array(out)
        }
        Value::Object(map) => {
            let mut table = toml::Table::new();
            for (k, v) in map {
                if let Some(v) = toml_value(v)? {
                    table.insert(k.clone(), v);
                }
            }
            toml::Value::Table(table)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_written_monitor_round_trips() {
        let checked = check_monitor(
            &fields(
                json!({"name": "web", "host": "198.18.0.2", "expected_open": "22,80,8000-8100",
                            "every": "6h", "recheck": "off"}),
            ),
            None,
            None,
        )
        .expect("valid");
        assert_eq!(checked.spec.expected_open.len(), 2 + 101);
        let doc = MonitorDoc::of(&checked.spec);
        assert_eq!(doc.expected_open, "22,80,8000-8100");
        assert_eq!((doc.every.as_str(), doc.recheck.as_str()), ("6h", "off"));
        let again = serde_json::to_value(&doc).expect("json");
        let back = check_monitor(&fields(again), None, None).expect("valid");
        assert_eq!(back.spec, checked.spec);
    }

    #[test]
    fn problems_name_their_field_with_check_configs_message() {
        let errors = check_monitor(
            &fields(
                json!({"name": "web 1", "host": "198.18.0.2", "expected_open": "22,70000",
                            "confirm": 0, "colour": "blue"}),
            ),
            None,
            None,
        )
        .expect_err("invalid");
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert!(
            found
                .iter()
                .any(|(f, m)| *f == "colour" && m.starts_with("unknown key `colour`")),
            "{found:?}"
        );
        assert!(
            found.contains(&(
                "expected_open",
                "port 70000 is out of range (allowed: 1 to 65535)"
            )),
            "{found:?}"
        );
        assert!(found.iter().any(|(f, _)| *f == "name"), "{found:?}");
        assert!(
            found
                .iter()
                .any(|(f, m)| *f == "confirm" && m.contains("out of range"))
        );
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let errors = check_monitor(&fields(json!({"host": 7, "ping": null})), None, None)
            .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"name"), "{errors:?}");
        assert!(fields.contains(&"host"), "{errors:?}");
        let nested = check_monitor(
            &super::tests::fields(json!({"name": "a", "host": "198.18.0.2", "every": {"h": 1}})),
            None,
            None,
        )
        .expect_err("invalid");
        assert_eq!(nested[0].field, "every", "{nested:?}");
    }
}
