//! The configuration module's tests: every key, every error, with its line and key.

use super::report::{closest, edit_distance};
use super::*;
use palisade_outputs::nats::{NatsAuth, NatsOptions, NatsTls};
use palisade_outputs::sink::{StreamSettings, StreamStorage};

/// The errors of `text`; panics if it parses.
fn errors(text: &str) -> Vec<ConfigError> {
    match parse("test.toml", text) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors.0,
    }
}

/// Asserts that `text` has exactly one error, at `line` and `key`, whose
/// message contains `fragment`.
#[track_caller]
fn assert_error(text: &str, line: usize, key: &str, fragment: &str) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{text}\n{errors:#?}");
    let error = &errors[0];
    assert_eq!(
        (error.file.as_str(), error.line, error.key.as_str()),
        ("test.toml", line, key),
        "{text}\n{error:#?}"
    );
    assert!(
        error.message.contains(fragment),
        "{text}\nmessage {:?} lacks {fragment:?}",
        error.message
    );
}

/// A valid monitor (lines 1-3) followed by `line` (line 4).
fn monitor_with(line: &str) -> String {
    format!("[[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\n{line}\n")
}

/// A sink of `kind` (lines 1-2) followed by `lines` (from line 3).
fn sink_with(kind: &str, lines: &str) -> String {
    format!("[[sink]]\nkind = \"{kind}\"\n{lines}\n")
}

fn monitor(name: &str, host: &str) -> MonitorSpec {
    MonitorSpec {
        name: name.to_owned(),
        host: host.to_owned(),
        expected_open: BTreeSet::new(),
        every_ms: 12 * 3600 * 1000,
        confirm: 2,
        recheck_ms: Some(5 * 60 * 1000),
        ping: true,
        answer_all_threshold: 1000,
        max_port_events: 50,
        scan_ports: PortRanges::all(),
        agent_label: None,
    }
}

#[test]
fn full_config_round_trips() {
    let text = r#"
[scan]
interface = "eth1"
rate = 250_000
per_host_rate = 5000
retries = 3
target_recall = 99.9
wait = "2s 500ms"
source_ports = "40000-40015"
source_ip = ["2001:2::1", "198.18.0.1"]
gateway_mac = "AA:bb:cc:dd:ee:0f"
ports = "1-1024"
commit_every = "30s"

[store]
path = "/srv/palisade/state.db"
retain = "90d"

[[sink]]
kind = "jsonl"

[[sink]]
kind = "nats"
url = "tls://nats.example.com:4222"
subject_prefix = "ops.palisade"
stream = "PORTS"
user = "palisade"
password = "hunter2"
tls_ca = "/etc/ca.pem"
tls_cert = "/etc/client.pem"
tls_key = "/etc/client.key"
format = "json"
max_age = "30d"
max_bytes = 1073741824
replicas = 3
storage = "memory"

[[sink]]
kind = "webhook"
url = "http://hooks.example.com/in"
timeout = "3s"
max_retries = 0

[[monitor]]
name = "web-1"
host = "198.18.0.2"
expected_open = [443, 80]
every = "1h"
confirm = 3
recheck = "30s"
ping = false
answer_all_threshold = 200
max_port_events = 10
ports = [1, "2-2048"]

[[monitor]]
name = "mail_2"
host = "mail.example.com"
recheck = "off"
"#;
    let expected = Config {
        scan: ScanSettings {
            interface: Some("eth1".to_owned()),
            rate: 250_000,
            per_host_rate: 5000,
            retries: 3,
            target_recall: Some(TargetRecall::from_percent(99.9).unwrap()),
            wait: Duration::from_millis(2500),
            source_ports: (40_000, 40_015),
            source_v4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            source_v6: Some("2001:2::1".parse().unwrap()),
            gateway_mac: Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f])),
            ports: "1-1024".parse().unwrap(),
            commit_every: Duration::from_secs(30),
        },
        store: StoreSettings {
            path: PathBuf::from("/srv/palisade/state.db"),
            retain: Duration::from_secs(90 * 86_400),
        },
        sinks: vec![
            SinkSpec::unnamed(SinkTarget::Jsonl { path: None }, SinkStart::New),
            SinkSpec::unnamed(
                SinkTarget::Nats(NatsSinkOptions {
                    nats: NatsOptions {
                        urls: vec!["tls://nats.example.com:4222".to_owned()],
                        auth: NatsAuth::UserPassword {
                            user: "palisade".to_owned(),
                            password: "hunter2".to_owned(),
                        },
                        tls: NatsTls {
                            ca: Some(PathBuf::from("/etc/ca.pem")),
                            client_cert: Some((
                                PathBuf::from("/etc/client.pem"),
                                PathBuf::from("/etc/client.key"),
                            )),
                        },
                        ..NatsOptions::default()
                    },
                    subject_prefix: "ops.palisade".to_owned(),
                    stream: "PORTS".to_owned(),
                    stream_settings: StreamSettings {
                        max_age: Duration::from_secs(30 * 86400),
                        max_bytes: Some(1 << 30),
                        replicas: 3,
                        storage: StreamStorage::Memory,
                    },
                    format: PayloadFormat::Json,
                }),
                SinkStart::New,
            ),
            SinkSpec::unnamed(
                SinkTarget::Webhook {
                    url: "http://hooks.example.com/in".to_owned(),
                    timeout: Duration::from_secs(3),
                    max_retries: 0,
                    secret: None,
                },
                SinkStart::New,
            ),
        ],
        monitors: vec![
            MonitorSpec {
                name: "web-1".to_owned(),
                host: "198.18.0.2".to_owned(),
                expected_open: BTreeSet::from([80, 443]),
                every_ms: 3_600_000,
                confirm: 3,
                recheck_ms: Some(30_000),
                ping: false,
                answer_all_threshold: 200,
                max_port_events: 10,
                scan_ports: "1-2048".parse().unwrap(),
                agent_label: None,
            },
            MonitorSpec {
                recheck_ms: None,
                scan_ports: "1-1024".parse().unwrap(),
                ..monitor("mail_2", "mail.example.com")
            },
        ],
        http: None,
        cluster: None,
    };
    assert_eq!(parse("test.toml", text).unwrap(), expected);
}

#[test]
fn empty_file_gives_the_defaults() {
    let config = parse("test.toml", "").unwrap();
    assert_eq!(
        config.scan,
        ScanSettings {
            interface: None,
            rate: 100_000,
            per_host_rate: 20_000,
            retries: 1,
            target_recall: Some(TargetRecall::DEFAULT),
            wait: Duration::from_secs(1),
            source_ports: (61_000, 61_063),
            source_v4: None,
            source_v6: None,
            gateway_mac: None,
            ports: PortRanges::all(),
            commit_every: DEFAULT_COMMIT_EVERY,
        }
    );
    assert_eq!(
        config.store.path,
        PathBuf::from("/var/lib/palisade/palisade.db")
    );
    assert_eq!(config.store.retain, Duration::from_secs(400 * 86_400));
    assert_eq!(config.sinks, []);
    assert_eq!(config.monitors, []);
    // Empty tables too.
    assert_eq!(parse("test.toml", "[scan]\n[store]\n").unwrap(), config);
}

#[test]
fn omitted_keys_take_their_defaults() {
    let text = r#"
[[sink]]
kind = "nats"
url = "nats://nats.example.com"

[[sink]]
kind = "webhook"
url = "https://hooks.example.com/"

[[monitor]]
name = "a"
host = "2001:2::10"
"#;
    let config = parse("test.toml", text).unwrap();
    assert_eq!(
        config.sinks,
        [
            SinkSpec::unnamed(
                SinkTarget::Nats(NatsSinkOptions {
                    nats: NatsOptions {
                        urls: vec!["nats://nats.example.com".to_owned()],
                        ..NatsOptions::default()
                    },
                    subject_prefix: "palisade".to_owned(),
                    stream: "PALISADE".to_owned(),
                    stream_settings: StreamSettings::default(),
                    format: PayloadFormat::Json,
                }),
                SinkStart::New
            ),
            SinkSpec::unnamed(
                SinkTarget::Webhook {
                    url: "https://hooks.example.com/".to_owned(),
                    timeout: Duration::from_secs(10),
                    max_retries: 5,
                    secret: None,
                },
                SinkStart::New
            ),
        ]
    );
    assert_eq!(config.monitors, [monitor("a", "2001:2::10")]);
}

#[test]
fn alternative_spellings_are_accepted() {
    let text = r#"
scan.source_ports = 61000
scan.source_ip = "198.18.0.9"
sink = [{ kind = "jsonl", path = "/tmp/e.jsonl" }]
[[monitor]]
name = "x"
host = "mail.example.com."
expected_open = [+22, 0x50]
"#;
    let config = parse("test.toml", text).unwrap();
    assert_eq!(config.scan.source_ports, (61_000, 61_000));
    assert_eq!(config.scan.source_v4, Some(Ipv4Addr::new(198, 18, 0, 9)));
    assert_eq!(
        config.sinks,
        [SinkSpec::unnamed(
            SinkTarget::Jsonl {
                path: Some(PathBuf::from("/tmp/e.jsonl"))
            },
            SinkStart::New
        )]
    );
    assert_eq!(config.monitors[0].expected_open, BTreeSet::from([22, 80]));
}

#[test]
fn example_file_parses_and_documents_every_key() {
    let text = include_str!("../../../../config/palisade.example.toml");
    let config = parse("palisade.example.toml", text).unwrap();
    assert_eq!(config.scan.source_v4, Some(Ipv4Addr::new(198, 18, 0, 1)));
    assert_eq!(config.sinks.len(), 3);
    assert!(
        matches!(config.sinks[1].target, SinkTarget::Nats(ref nats) if nats.nats.urls.len() == 2)
    );
    let names: Vec<&str> = config.monitors.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["web-1", "mail", "db-v6"]);
    let all_keys = [
        keys_of::<ScanSection>(),
        keys_of::<StoreSection>(),
        &sink_keys("jsonl"),
        &sink_keys("nats"),
        &sink_keys("webhook"),
        keys_of::<MonitorSection>(),
        &cluster::cluster_keys(),
    ]
    .concat();
    for key in all_keys {
        assert!(
            text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
            "{key}"
        );
    }
    for section in [
        "[scan]",
        "[store]",
        "[[sink]]",
        "[[monitor]]",
        "# [cluster]",
    ] {
        assert!(text.contains(section), "{section}");
    }
    // No cluster: `[cluster]` is commented out, and so is `agent_label`.
    assert_eq!(config.cluster, None);
    assert!(config.monitors.iter().all(|m| m.agent_label.is_none()));
}

/// The example file with its `[cluster]` section and `agent_label`
/// uncommented: each `# key = value` line from `# [cluster]` to the next
/// blank line, and `# agent_label = `.
fn example_with_cluster() -> String {
    let text = include_str!("../../../../config/palisade.example.toml");
    let mut in_cluster = false;
    let mut out = String::new();
    for line in text.lines() {
        in_cluster = (in_cluster && !line.is_empty()) || line == "# [cluster]";
        let setting = line.strip_prefix("# ").filter(|rest| {
            (in_cluster && (rest.starts_with('[') || rest.contains(" = ")))
                || rest.starts_with("agent_label = ")
        });
        out.push_str(setting.unwrap_or(line));
        out.push('\n');
    }
    out
}

#[test]
fn example_cluster_section_parses_when_uncommented() {
    let config = parse("palisade.example.toml", &example_with_cluster()).unwrap();
    let cluster = config.cluster.expect("[cluster]");
    assert_eq!(
        cluster,
        ClusterSettings {
            nats: NatsOptions {
                urls: vec!["nats://nats-1.example.com:4222".to_owned()],
                auth: NatsAuth::CredsFile("/etc/palisade/coordinator.creds".into()),
                tls: NatsTls {
                    ca: Some("/etc/palisade/nats-ca.pem".into()),
                    client_cert: None,
                },
                name: "palisade-coordinator".to_owned(),
                ..NatsOptions::default()
            },
            agent_rate: 100_000,
            shard_time: Duration::from_secs(30),
            ack_wait: Duration::from_secs(60),
            max_deliver: 5,
            labels: vec!["any".to_owned(), "site=fra1".to_owned()],
        }
    );
    assert_eq!(config.monitors[0].agent_label.as_deref(), Some("site=fra1"));
}

#[test]
fn load_reads_a_file_and_names_it() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/palisade.example.toml");
    assert_eq!(load(&path).unwrap().monitors.len(), 3);

    let missing = Path::new("/nonexistent/palisade.toml");
    let errors = load(missing).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (
            errors[0].file.as_str(),
            errors[0].line,
            errors[0].key.as_str()
        ),
        ("/nonexistent/palisade.toml", 0, "(file)")
    );
    assert!(
        errors[0]
            .message
            .starts_with("cannot read the configuration file: "),
        "{:?}",
        errors[0]
    );
}

#[test]
fn syntax_errors_name_line_and_table() {
    assert_error(
        "[scan]\nrate = 100\nrate = 200\n",
        3,
        "scan",
        "duplicate key `rate`",
    );
    assert_error(
        "[scan]\n[store]\n[scan]\n",
        3,
        "scan",
        "duplicate key `scan`",
    );
    assert_error(
        "[[monitor]]\nname = \"a\"\n\n[[monitor]]\nname = \"b\nhost = \"c\"\n",
        5,
        "monitor[1]",
        "invalid basic string",
    );
    assert_error("x = [1, 2\n", 1, "(top level)", "unclosed array");
    // Several syntax errors, in file order.
    let errors = errors("[[monitor]]\nname = \"a\nhost = \"b\"\nexpected_open = [80,\n");
    let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(found, [(2, "monitor[0]"), (4, "monitor[0]")]);
}

#[test]
fn unknown_key_suggests_the_known_one() {
    assert_error(
        &monitor_with("expectd_open = [80]"),
        4,
        "monitor[0].expectd_open",
        "unknown key `expectd_open`, did you mean `expected_open`?",
    );
    assert_error(
        "[scna]\nrate = 1\n",
        1,
        "scna",
        "unknown key `scna`, did you mean `scan`?",
    );
    assert_error(
        "[scan]\nsource_port = \"1\"\n",
        2,
        "scan.source_port",
        "did you mean `source_ports`?",
    );
}

#[test]
fn unknown_key_without_a_close_match_lists_the_known_ones() {
    assert_error(
        "[store]\nfoo = 1\n",
        2,
        "store.foo",
        "unknown key `foo`; known keys: path",
    );
    // Keys of another kind of sink are unknown too.
    assert_error(
        &sink_with("jsonl", "url = \"x\""),
        3,
        "sink[0].url",
        "unknown key `url`; known keys: kind, name, start, path",
    );
    // Sub-tables of a monitor.
    assert_error(
        &monitor_with("[monitor.extra]"),
        4,
        "monitor[0].extra",
        "unknown key `extra`",
    );
}

#[test]
fn target_recall_is_a_percentage_or_off() {
    let recall = |text: &str| parse("test.toml", text).unwrap().scan.target_recall;
    let percent = |x: f64| Some(TargetRecall::from_percent(x).unwrap());
    assert_eq!(recall("[scan]\ntarget_recall = 99.9\n"), percent(99.9));
    assert_eq!(recall("[scan]\ntarget_recall = 99\n"), percent(99.0));
    assert_eq!(
        recall("[scan]\ntarget_recall = \"99.999%\"\n"),
        percent(99.999)
    );
    assert_eq!(recall("[scan]\ntarget_recall = \"off\"\n"), None);
    // The default, unless no retry is left to measure the loss with.
    assert_eq!(recall("[scan]\nretries = 2\n"), Some(TargetRecall::DEFAULT));
    assert_eq!(recall("[scan]\nretries = 0\n"), None);
    assert_eq!(
        recall("[scan]\nretries = 0\ntarget_recall = \"off\"\n"),
        None
    );
    for (value, fragment) in [
        (
            "100",
            "100 is not a target recall: give a percentage above 0 and below 100",
        ),
        ("0", "0 is not a target recall"),
        ("-5.5", "-5.5 is not a target recall"),
        ("\"high\"", "\"high\" is not a target recall"),
        (
            "true",
            "expected a percentage such as 99.99, or \"off\", found a boolean",
        ),
    ] {
        assert_error(
            &format!("[scan]\ntarget_recall = {value}\n"),
            2,
            "scan.target_recall",
            fragment,
        );
    }
    assert_error(
        "[scan]\nretries = 0\ntarget_recall = 99.9\n",
        3,
        "scan.target_recall",
        "adaptive retries need scan.retries >= 1",
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = r#"[scan]
rate = 0
retries = 11
colour = "blue"

[[monitor]]
name = "web 1"
host = "198.18.0.2"
expected_open = [0, 80, 80]
confirm = 0

[[monitor]]
host = "-bad.example.com"
every = "0s"
"#;
    let errors = errors(text);
    let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (2, "scan.rate"),
            (3, "scan.retries"),
            (4, "scan.colour"),
            (7, "monitor[0].name"),
            (9, "monitor[0].expected_open"),
            (9, "monitor[0].expected_open"),
            (10, "monitor[0].confirm"),
            (12, "monitor[1].name"),
            (13, "monitor[1].host"),
            (14, "monitor[1].every"),
        ]
    );
}

#[test]
fn wrong_types_are_reported() {
    assert_error(
        "[scan]\nrate = \"fast\"\n",
        2,
        "scan.rate",
        "expected an integer, found a string",
    );
    assert_error(
        "[scan]\nwait = 1\n",
        2,
        "scan.wait",
        "expected a duration such as \"12h\", found an integer",
    );
    assert_error(
        "scan = 1\n",
        1,
        "scan",
        "expected a table ([scan]), found an integer",
    );
    assert_error(
        "[store]\npath = true\n",
        2,
        "store.path",
        "expected a string, found a boolean",
    );
    assert_error(
        "[monitor]\nname = \"a\"\nhost = \"b\"\n",
        1,
        "monitor",
        "expected an array of tables ([[monitor]], with two brackets), found a table",
    );
    assert_error(
        "[sink]\nkind = \"jsonl\"\n",
        1,
        "sink",
        "expected an array of tables ([[sink]], with two brackets), found a table",
    );
    assert_error(
        "sink = [1]\n",
        1,
        "sink[0]",
        "expected a table, found an integer",
    );
    assert_error(
        &monitor_with("confirm = 1.5"),
        4,
        "monitor[0].confirm",
        "expected an integer, found a float",
    );
    assert_error(
        &monitor_with("expected_open = 80"),
        4,
        "monitor[0].expected_open",
        "expected an array of port numbers and ranges, or a string such as \"22,80,8000-8100\", found an integer",
    );
    assert_error(
        "[[monitor]]\nname = 7\nhost = \"198.18.0.2\"\n",
        2,
        "monitor[0].name",
        "expected a string, found an integer",
    );
}

#[test]
fn duplicate_monitor_names_point_at_the_second() {
    let text = r#"[[monitor]]
name = "web-1"
host = "198.18.0.2"

[[monitor]]
name = "web-1"
host = "198.18.0.3"
"#;
    assert_error(
        text,
        6,
        "monitor[1].name",
        "duplicate monitor name \"web-1\" (first used on line 2)",
    );
}

#[test]
fn bad_ports_point_at_the_array() {
    let key = "monitor[0].expected_open";
    let range = "is out of range (allowed: 1 to 65535)";
    assert_error(
        &monitor_with("expected_open = [0]"),
        4,
        key,
        &format!("port 0 {range}"),
    );
    assert_error(
        &monitor_with("expected_open = [65536]"),
        4,
        key,
        &format!("port 65536 {range}"),
    );
    assert_error(
        &monitor_with("expected_open = [-1]"),
        4,
        key,
        &format!("port -1 {range}"),
    );
    assert_error(
        &monitor_with("expected_open = [99999999999999999999]"),
        4,
        key,
        &format!("port 99999999999999999999 {range}"),
    );
    assert_error(
        &monitor_with("expected_open = [80, 443, 80]"),
        4,
        key,
        "port 80 is listed twice",
    );
    assert_error(
        &monitor_with("expected_open = [8.0]"),
        4,
        key,
        "expected port numbers or ranges such as \"8000-8100\", found a float",
    );
    assert_error(
        &monitor_with("expected_open = \"22,70000\""),
        4,
        key,
        &format!("port 70000 {range}"),
    );
    assert_error(
        &monitor_with("expected_open = \"22,,80\""),
        4,
        key,
        "an empty entry (two commas in a row, or one at an end)",
    );
    assert_error(
        &monitor_with("expected_open = [\"90-80\"]"),
        4,
        key,
        "range 90-80 is backwards (write 80-90)",
    );
    assert_error(
        &monitor_with("expected_open = \"22,http\""),
        4,
        key,
        "\"http\" is not a port or a range (write e.g. 22 or 8000-8100)",
    );
    assert_error(
        &monitor_with("expected_open = \"80-90,85\""),
        4,
        key,
        "port 85 is listed twice",
    );
    // A multi-line array: still the line the array starts on.
    assert_error(
        &monitor_with("expected_open = [\n  80,\n  0,\n]"),
        4,
        key,
        "port 0 ",
    );
}

#[test]
fn expected_ports_take_lists_and_ranges() {
    for written in [
        "\"22, 80,8000-8002\"",
        "[22, \"80\", \"8000-8002\"]",
        "[\"8000 - 8002\", 80, 22]",
    ] {
        let config = parse(
            "t.toml",
            &monitor_with(&format!("expected_open = {written}")),
        )
        .unwrap_or_else(|e| panic!("{written}: {e}"));
        assert_eq!(
            config.monitors[0].expected_open,
            BTreeSet::from([22, 80, 8000, 8001, 8002]),
            "{written}"
        );
    }
}

#[test]
fn many_bad_ports_are_reported_first_few_then_counted() {
    let ports: Vec<String> = (70_000..70_100).map(|p| p.to_string()).collect();
    let errors = errors(&monitor_with(&format!(
        "expected_open = [{}]",
        ports.join(",")
    )));
    assert_eq!(errors.len(), 6, "{errors:?}");
    assert_eq!(errors[5].message, "and 95 more problems with this key");
}

#[test]
fn a_port_list_of_70000_entries_gives_a_few_lines() {
    // 1..=70000: 4,465 of them out of range.
    let ports: Vec<String> = (1..=70_000).map(|p| p.to_string()).collect();
    for written in [
        format!("[{}]", ports.join(",")),
        format!("\"{}\"", ports.join(",")),
    ] {
        for key in ["expected_open", "ports"] {
            let found = errors(&monitor_with(&format!("{key} = {written}")));
            assert_eq!(found.len(), 6, "{key}: {found:?}");
            assert!(found[0].message.contains("port 65536 is out of range"));
            assert_eq!(found[5].message, "and 4460 more problems with this key");
        }
        let found = errors(&format!("[scan]\nports = {written}\n"));
        assert_eq!(found.len(), 6, "{found:?}");
        assert_eq!(found[5].key, "scan.ports");
    }
}

#[test]
fn every_list_reports_a_few_problems_then_a_count() {
    let addresses: Vec<String> = (0..1000).map(|i| format!("\"not-an-ip-{i}\"")).collect();
    let found = errors(&format!("[scan]\nsource_ip = [{}]\n", addresses.join(",")));
    assert_eq!(found.len(), 6, "{found:?}");
    assert_eq!(found[5].message, "and 995 more problems with this key");
    // Problems of other keys keep their place, in file order.
    let text = format!("[scan]\nsource_ip = [{}]\nrate = 0\n", addresses.join(","));
    let found = errors(&text);
    assert_eq!(found.len(), 7, "{found:?}");
    assert_eq!(found[6].key, "scan.rate");
}

#[test]
fn thousands_of_errors_print_the_first_hundred_and_a_count() {
    let monitors: String = (0..500)
        .map(|i| format!("[[monitor]]\nname = \"m{i}\"\nhost = \"198.18.0.1\"\nevery = 3\n"))
        .collect();
    let e = parse("t.toml", &monitors).unwrap_err();
    let text = e.to_string();
    assert_eq!(text.lines().count(), 101, "{text}");
    assert!(
        text.ends_with("... and 400 more errors (fix these first)"),
        "{text}"
    );
}

#[test]
fn a_huge_value_is_cut_in_its_echo() {
    let name = "n".repeat(100_000);
    for text in [
        format!("[[monitor]]\nname = \"{name}\"\nhost = \"198.18.0.2\"\n"),
        format!("[scan]\n{name} = 1\n"),
        format!("[scan]\ninterface = \"{name}\"\n"),
    ] {
        let e = parse("t.toml", &text).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.len() < 1_000,
            "{} bytes: {}",
            shown.len(),
            &shown[..200]
        );
        assert!(shown.contains("nnn…nnn"), "{shown}");
    }
    // The advice after the value stays.
    let e = parse(
        "t.toml",
        &format!("[[monitor]]\nname = \"{name}\"\nhost = \"198.18.0.2\"\n"),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .ends_with("1 to 64 of A-Z, a-z, 0-9, '_' and '-'"),
        "{e}"
    );
}

#[test]
fn excerpts_keep_start_and_end() {
    use super::report::excerpt;
    assert_eq!(excerpt("short", 10), "short");
    assert_eq!(excerpt("0123456789", 10), "0123456789");
    let cut = excerpt("0123456789abcdef", 10);
    assert_eq!(cut.chars().count(), 10);
    assert_eq!(cut, "012345…def");
    // Characters, not bytes.
    assert_eq!(excerpt(&"é".repeat(20), 4), "éé…é");
    // In a message: a long word to 80 characters, the rest kept.
    let e = errors(&format!(
        "[[monitor]]\nname = \"{}\"\nhost = \"198.18.0.2\"\n",
        "x".repeat(500)
    ));
    let message = &e[0].message;
    assert!(
        message.starts_with("invalid monitor name \"xxx"),
        "{message}"
    );
    assert!(
        message.ends_with("\": 1 to 64 of A-Z, a-z, 0-9, '_' and '-'"),
        "{message}"
    );
    assert_eq!(
        message.chars().filter(|&c| c == 'x').count(),
        76,
        "{message}"
    );
}

#[test]
fn bad_durations_are_reported() {
    assert_error(
        &monitor_with("every = \"12 parsecs\""),
        4,
        "monitor[0].every",
        "invalid duration \"12 parsecs\"",
    );
    assert_error(
        &monitor_with("every = \"0s\""),
        4,
        "monitor[0].every",
        "\"0s\" is out of range: must be at least 1s",
    );
    assert_error(
        &monitor_with("every = \"999ms\""),
        4,
        "monitor[0].every",
        "must be at least 1s",
    );
    assert_error(
        &monitor_with("every = \"2years\""),
        4,
        "monitor[0].every",
        "must be at most 1year",
    );
    assert_error(
        &monitor_with("recheck = \"0s\""),
        4,
        "monitor[0].recheck",
        "must be at least 1ms",
    );
    assert_error(
        &monitor_with("recheck = \"never\""),
        4,
        "monitor[0].recheck",
        "invalid duration \"never\"",
    );
    assert_error(
        &monitor_with("recheck = false"),
        4,
        "monitor[0].recheck",
        "found a boolean",
    );
    assert_error(
        "[scan]\nwait = \"2h\"\n",
        2,
        "scan.wait",
        "must be at most 1h",
    );
    assert_error(
        &sink_with(
            "webhook",
            "url = \"https://h.example.com\"\ntimeout = \"0s\"",
        ),
        4,
        "sink[0].timeout",
        "must be at least 1ms",
    );
    // Zero is fine for the wait.
    assert_eq!(
        parse("t", "[scan]\nwait = \"0s\"\n").unwrap().scan.wait,
        Duration::ZERO
    );
}

#[test]
fn retention_is_a_day_at_least() {
    assert_error(
        "[store]\nretain = \"400s\"\n",
        2,
        "store.retain",
        "\"400s\" is out of range: must be at least 1day",
    );
    assert_error(
        "[store]\n\nretain = \"forever\"\n",
        3,
        "store.retain",
        "invalid duration \"forever\"",
    );
    assert_error(
        "[store]\nretain = 400\n",
        2,
        "store.retain",
        "found an integer",
    );
    let retain = |text: &str| parse("t", text).unwrap().store.retain;
    assert_eq!(
        retain("[store]\nretain = \"1day\"\n"),
        Duration::from_secs(86_400)
    );
    assert_eq!(
        retain("[store]\nretain = \"2years\"\n"),
        Duration::from_secs(2 * 31_557_600)
    );
}

#[test]
fn bad_monitor_names_are_reported() {
    for name in ["web 1", "", "wéb", "a.b", &"x".repeat(65)] {
        let text = format!("[[monitor]]\nname = \"{name}\"\nhost = \"198.18.0.2\"\n");
        assert_error(
            &text,
            2,
            "monitor[0].name",
            &format!("invalid monitor name {name:?}"),
        );
    }
    let longest = "x".repeat(64);
    let text = format!("[[monitor]]\nname = \"{longest}\"\nhost = \"198.18.0.2\"\n");
    assert_eq!(parse("t", &text).unwrap().monitors[0].name, longest);
}

#[test]
fn bad_hosts_are_reported() {
    let cases = [
        ("web_1.example.com", "'_' is not allowed"),
        ("-web.example.com", "a label cannot start or end with '-'"),
        ("web-.example.com", "a label cannot start or end with '-'"),
        (
            "a..example.com",
            "each dot-separated label has 1 to 63 characters",
        ),
        (
            "198.18.0.256",
            "not a valid IP address, and a host name cannot end in a numeric label",
        ),
        ("[2001:2::1]", "write IPv6 addresses without brackets"),
        ("2001:2::1%eth0", "not a valid IPv6 address"),
        ("2001:2::1::2", "not a valid IPv6 address"),
        (
            "web%1.example.com",
            "'%' is not allowed (letters, digits, '-' and '.' only)",
        ),
        ("", "a host name has 1 to 253 characters"),
    ];
    for (host, fragment) in cases {
        let text = format!("[[monitor]]\nname = \"m\"\nhost = \"{host}\"\n");
        assert_error(
            &text,
            3,
            "monitor[0].host",
            &format!("invalid host {host:?}: {fragment}"),
        );
    }
    let long_label = format!("{}.example.com", "a".repeat(64));
    let text = format!("[[monitor]]\nname = \"m\"\nhost = \"{long_label}\"\n");
    assert_error(&text, 3, "monitor[0].host", "1 to 63 characters");
}

#[test]
fn good_hosts_are_accepted() {
    for host in [
        "198.18.0.2",
        "2001:2::10",
        "mail.example.com",
        "mail.example.com.",
        "localhost",
        "1st.example.com",
    ] {
        let text = format!("[[monitor]]\nname = \"m\"\nhost = \"{host}\"\n");
        assert_eq!(parse("t", &text).unwrap().monitors[0].host, host);
    }
}

#[test]
fn missing_monitor_keys_point_at_the_header() {
    assert_error(
        "[[monitor]]\nname = \"a\"\n",
        1,
        "monitor[0].host",
        "missing required key `host`",
    );
    assert_error(
        "[[monitor]]\nname = \"a\"\nhost = \"b\"\n\n[[monitor]]\nhost = \"c\"\n",
        5,
        "monitor[1].name",
        "missing required key `name`",
    );
}

#[test]
fn confirm_out_of_range() {
    assert_error(
        &monitor_with("confirm = 0"),
        4,
        "monitor[0].confirm",
        "0 is out of range (allowed: 1 to 10)",
    );
    assert_error(
        &monitor_with("confirm = 11"),
        4,
        "monitor[0].confirm",
        "11 is out of range (allowed: 1 to 10)",
    );
    assert_eq!(
        parse("t", &monitor_with("confirm = 10")).unwrap().monitors[0].confirm,
        10
    );
}

#[test]
fn bad_sinks_are_reported() {
    assert_error(
        &sink_with("kafka", ""),
        2,
        "sink[0].kind",
        "unknown sink kind \"kafka\"; expected \"jsonl\", \"nats\" or \"webhook\"",
    );
    assert_error(
        &sink_with("jsnol", ""),
        2,
        "sink[0].kind",
        "(did you mean \"jsonl\"?)",
    );
    assert_error(
        "[[sink]]\npath = \"/x\"\n",
        1,
        "sink[0].kind",
        "missing required key `kind`",
    );
    assert_error(
        &sink_with("nats", ""),
        1,
        "sink[0].url",
        "missing required key `url`",
    );
    assert_error(
        &sink_with("webhook", ""),
        1,
        "sink[0].url",
        "missing required key `url`",
    );
    assert_error(
        &sink_with("webhook", "url = \"ftp://h.example.com\""),
        3,
        "sink[0].url",
        "invalid webhook URL",
    );
    assert_error(
        &sink_with(
            "webhook",
            "url = \"https://h.example.com\"\nmax_retries = 101",
        ),
        4,
        "sink[0].max_retries",
        "101 is out of range (allowed: 0 to 100)",
    );
    assert_error(
        &sink_with("nats", "url = []"),
        3,
        "sink[0].url",
        "give at least one NATS server URL",
    );
    assert_error(
        &sink_with("nats", "url = [\"nats://a\", 5]"),
        3,
        "sink[0].url",
        "expected a string, found an integer",
    );
    // A bad kind still has its misspelt keys reported.
    let misspelt = errors(&sink_with("kafka", "urll = \"x\""));
    let found: Vec<(usize, &str)> = misspelt.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(found, [(2, "sink[0].kind"), (3, "sink[0].urll")]);
    assert!(
        misspelt[1].message.contains("did you mean `url`?"),
        "{misspelt:#?}"
    );
    let unknown = errors(&sink_with("kafka", "colour = 1"));
    assert_eq!(
        (unknown[1].line, unknown[1].message.as_str()),
        (
            3,
            "unknown key `colour`; known keys: creds_file, format, kind, max_age, max_bytes, \
             max_retries, name, nkey_seed_file, password, path, replicas, secret, secret_env, \
             secret_file, start, storage, stream, subject_prefix, timeout, tls_ca, tls_cert, \
             tls_key, token, url, user"
        )
    );
}

#[test]
fn nats_rules_are_checked() {
    let nats = |lines: &str| sink_with("nats", &format!("url = \"nats://n.example.com\"\n{lines}"));
    assert_error(
        &nats("token = \"t\"\nuser = \"u\"\npassword = \"p\""),
        5,
        "sink[0].user",
        "`user` and `token` both set",
    );
    assert_error(
        &nats("user = \"u\""),
        4,
        "sink[0].user",
        "`user` needs `password`",
    );
    assert_error(
        &nats("tls_key = \"/k\""),
        4,
        "sink[0].tls_key",
        "`tls_key` needs `tls_cert`",
    );
    assert_error(
        &nats("format = \"yaml\""),
        4,
        "sink[0].format",
        "unknown format \"yaml\"",
    );
    assert_error(
        &nats("max_age = \"forever\""),
        4,
        "sink[0].max_age",
        "invalid duration \"forever\"",
    );
    assert_error(
        &nats("max_age = \"0s\""),
        4,
        "sink[0].max_age",
        "must be at least 1s",
    );
    assert_error(
        &nats("max_bytes = 0"),
        4,
        "sink[0].max_bytes",
        "out of range",
    );
    assert_error(
        &nats("max_bytes = \"1G\""),
        4,
        "sink[0].max_bytes",
        "an integer",
    );
    assert_error(
        &nats("replicas = 6"),
        4,
        "sink[0].replicas",
        "out of range (allowed: 1 to 5)",
    );
    assert_error(
        &nats("storage = \"disk\""),
        4,
        "sink[0].storage",
        "unknown storage \"disk\"",
    );
    assert_error(
        &nats("subject_prefix = \"a..b\""),
        4,
        "sink[0].subject_prefix",
        "invalid subject_prefix \"a..b\"",
    );
    assert_error(
        &nats("subject_prefix = \"a.*\""),
        4,
        "sink[0].subject_prefix",
        "invalid subject_prefix",
    );
    assert_error(
        &nats("stream = \"A.B\""),
        4,
        "sink[0].stream",
        "invalid stream \"A.B\"",
    );
    assert_error(
        &nats("creds_file = \"\""),
        4,
        "sink[0].creds_file",
        "must not be empty",
    );
}

#[test]
fn bad_scan_settings_are_reported() {
    let scan = |line: &str| format!("[scan]\n{line}\n");
    assert_error(
        &scan("rate = 0"),
        2,
        "scan.rate",
        "0 is out of range (allowed: 1 to 100000000)",
    );
    assert_error(
        &scan("rate = 100_000_001"),
        2,
        "scan.rate",
        "100_000_001 is out of range",
    );
    assert_error(
        &scan("retries = 11"),
        2,
        "scan.retries",
        "11 is out of range (allowed: 0 to 10)",
    );
    assert_error(
        &scan("retries = -1"),
        2,
        "scan.retries",
        "-1 is out of range",
    );
    for ports in [
        "\"61063-61000\"",
        "\"0\"",
        "\"0-10\"",
        "\"x\"",
        "\"61000-65536\"",
        "70000",
        "0",
    ] {
        assert_error(
            &scan(&format!("source_ports = {ports}")),
            2,
            "scan.source_ports",
            &format!("invalid source ports {ports}"),
        );
    }
    assert_error(
        &scan("source_ip = [\"198.18.0.1\", \"198.18.0.2\"]"),
        2,
        "scan.source_ip",
        "198.18.0.2 is a second address of its family",
    );
    assert_error(
        &scan("source_ip = [\"web.example.com\"]"),
        2,
        "scan.source_ip",
        "invalid IP address \"web.example.com\"",
    );
    assert_error(
        &scan("gateway_mac = \"aa:bb:cc\""),
        2,
        "scan.gateway_mac",
        "invalid MAC address \"aa:bb:cc\"",
    );
    assert_error(
        &scan("interface = \"\""),
        2,
        "scan.interface",
        "invalid interface name \"\"",
    );
    assert_error(
        &scan("interface = \"a-very-long-name0\""),
        2,
        "scan.interface",
        "invalid interface name",
    );
    assert_error(
        "[store]\npath = \"\"\n",
        2,
        "store.path",
        "must not be empty",
    );
}

#[test]
fn errors_display_one_per_line() {
    let errors = parse("c.toml", "[scan]\nrate = 0\n[store]\nfoo = 1\n").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "c.toml:2: scan.rate: 0 is out of range (allowed: 1 to 100000000)\n\
         c.toml:4: store.foo: unknown key `foo`; known keys: path, retain"
    );
}

#[test]
fn did_you_mean_needs_a_close_match() {
    assert_eq!(edit_distance("expectd_open", "expected_open"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(closest("intervl", keys_of::<MonitorSection>()), None);
    assert_eq!(
        closest("rechek", keys_of::<MonitorSection>()),
        Some("recheck")
    );
    assert_eq!(closest("x", keys_of::<StoreSection>()), None);
}

#[test]
fn wrong_shapes_do_not_stop_the_pass() {
    let text = r#"scan = 1
[store]
pth = "/x"
[sink]
kind = "jsonl"
[[monitor]]
name = "a"
host = "198.18.0.2"
confirm = "2"
"#;
    let errors = errors(text);
    let found: Vec<(usize, &str, &str)> = errors
        .iter()
        .map(|e| (e.line, e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (1, "scan", "expected a table ([scan]), found an integer"),
            (3, "store.pth", "unknown key `pth`, did you mean `path`?"),
            (
                4,
                "sink",
                "expected an array of tables ([[sink]], with two brackets), found a table"
            ),
            (
                9,
                "monitor[0].confirm",
                "expected an integer, found a string"
            ),
        ]
    );
}

#[test]
fn date_times_are_named_as_such() {
    assert_error(
        "[scan]\nrate = 1979-05-27\n",
        2,
        "scan.rate",
        "expected an integer, found a date-time",
    );
    assert_error(
        "scan = 1979-05-27T07:32:00Z\n",
        1,
        "scan",
        "expected a table ([scan]), found a date-time",
    );
    assert_error(
        &monitor_with("expected_open = [80, 07:32:00]"),
        4,
        "monitor[0].expected_open",
        "expected port numbers or ranges such as \"8000-8100\", found a date-time",
    );
}

#[test]
fn a_table_where_a_value_belongs_is_one_error() {
    // Its keys are not reported as unknown: the table is wrong as a whole.
    assert_error(
        "[scan.rate]\nper_second = 5\n",
        1,
        "scan.rate",
        "expected an integer, found a table",
    );
    assert_error(
        "[[monitor]]\nname = \"a\"\nhost = { name = \"x\" }\n",
        3,
        "monitor[0].host",
        "expected a string, found a table",
    );
}

#[test]
fn unknown_keys_of_inline_and_dotted_tables_have_their_lines() {
    assert_error(
        "\nscan = { rate = 5, colour = 1 }\n",
        2,
        "scan.colour",
        "unknown key `colour`",
    );
    assert_error(
        "monitor = [\n  { name = \"a\", host = \"b\" },\n  { name = \"c\", host = \"d\", evry = \"1h\" },\n]\n",
        3,
        "monitor[1].evry",
        "did you mean `every`?",
    );
    assert_error(
        "store.path = \"/x\"\nstore.colour = 1\n",
        2,
        "store.colour",
        "unknown key `colour`",
    );
}

#[test]
fn sink_keys_are_those_of_its_kind_wherever_kind_is() {
    // `kind` last: the keys are still checked against its kind.
    assert_error(
        "[[sink]]\ntimeout = \"1s\"\nurl = \"https://h.example.com\"\nformat = \"json\"\nkind = \"webhook\"\n",
        4,
        "sink[0].format",
        "unknown key `format`; known keys: kind, name, start, url, timeout, max_retries, secret, \
         secret_file, secret_env",
    );
    // A webhook takes one URL.
    assert_error(
        &sink_with("webhook", "url = [\"https://h.example.com\"]"),
        3,
        "sink[0].url",
        "expected a string, found an array",
    );
    assert_error(
        &sink_with("nats", "url = 5"),
        3,
        "sink[0].url",
        "expected a string or an array of strings, found an integer",
    );
}

#[test]
fn huge_integers_are_out_of_range() {
    assert_error(
        "[scan]\nrate = 340282366920938463463374607431768211455\n",
        2,
        "scan.rate",
        "340282366920938463463374607431768211455 is out of range",
    );
    // Beyond what the TOML reader represents: its own error, at the line.
    let errors = errors("[scan]\nrate = 3402823669209384634633746074317682114550\n");
    assert_eq!(
        (errors.len(), errors[0].line, errors[0].key.as_str()),
        (1, 2, "scan")
    );
}

#[test]
fn section_keys_are_the_fields_of_their_types() {
    assert_eq!(
        keys_of::<MonitorSection>(),
        [
            "name",
            "host",
            "expected_open",
            "every",
            "confirm",
            "recheck",
            "ping",
            "answer_all_threshold",
            "max_port_events",
            "ports",
            "agent_label"
        ]
    );
    assert_eq!(
        keys_of::<ConfigDocument>(),
        ["scan", "store", "sink", "monitor", "http", "cluster"]
    );
    assert_eq!(sink_keys("jsonl"), ["kind", "name", "start", "path"]);
    // The keys of a NATS connection are one list, a sink's and [cluster]'s.
    let connection = [
        "url",
        "token",
        "user",
        "password",
        "nkey_seed_file",
        "creds_file",
        "tls_ca",
        "tls_cert",
        "tls_key",
    ];
    assert_eq!(keys_of::<nats::NatsConnectionKeys>(), connection);
    assert!(connection.iter().all(|key| sink_keys("nats").contains(key)));
    assert_eq!(
        cluster::cluster_keys(),
        [
            &connection[..],
            &[
                "agent_rate",
                "shard_time",
                "ack_wait",
                "max_deliver",
                "labels"
            ]
        ]
        .concat()
    );
}

#[test]
fn monitor_defaults_are_the_cores() {
    let config = parse("t", "[[monitor]]\nname = \"a\"\nhost = \"198.18.0.2\"\n").unwrap();
    assert_eq!(
        config.monitors,
        [MonitorSpec {
            name: "a".to_owned(),
            host: "198.18.0.2".to_owned(),
            ..MonitorSpec::default()
        }]
    );
}

#[test]
fn ping_is_a_boolean() {
    let ping = |line: &str| parse("t", &monitor_with(line)).unwrap().monitors[0].ping;
    assert!(ping(""));
    assert!(ping("ping = true"));
    assert!(!ping("ping = false"));
    assert_error(
        &monitor_with("ping = \"no\""),
        4,
        "monitor[0].ping",
        "expected a boolean (true or false), found a string",
    );
    assert_error(
        &monitor_with("ping = 0"),
        4,
        "monitor[0].ping",
        "expected a boolean (true or false), found an integer",
    );
}

#[test]
fn answer_all_threshold_and_max_port_events_are_bounded() {
    for key in ["answer_all_threshold", "max_port_events"] {
        let value = |n: &str| {
            let monitor = &parse("t", &monitor_with(&format!("{key} = {n}")))
                .unwrap()
                .monitors[0];
            match key {
                "answer_all_threshold" => monitor.answer_all_threshold,
                _ => monitor.max_port_events,
            }
        };
        assert_eq!(value("1"), 1, "{key}");
        assert_eq!(value("300"), 300, "{key}");
        assert_eq!(value("65_535"), 65_535, "{key}");
        for bad in ["0", "-1", "65536", "4_294_967_296"] {
            assert_error(
                &monitor_with(&format!("{key} = {bad}")),
                4,
                &format!("monitor[0].{key}"),
                &format!("{bad} is out of range (allowed: 1 to 65535)"),
            );
        }
        assert_error(
            &monitor_with(&format!("{key} = \"50\"")),
            4,
            &format!("monitor[0].{key}"),
            "expected an integer, found a string",
        );
    }
    let defaults = parse("t", &monitor_with("")).unwrap().monitors[0].clone();
    assert_eq!(
        (defaults.answer_all_threshold, defaults.max_port_events),
        (1000, 50)
    );
}

#[test]
fn per_host_rate_is_bounded() {
    let rate = |line: &str| {
        parse("t", &format!("[scan]\n{line}\n"))
            .unwrap()
            .scan
            .per_host_rate
    };
    assert_eq!(rate(""), 20_000);
    assert_eq!(rate("per_host_rate = 1"), 1);
    assert_eq!(rate("per_host_rate = 100_000_000"), 100_000_000);
    for bad in ["0", "-5", "100_000_001"] {
        assert_error(
            &format!("[scan]\nper_host_rate = {bad}\n"),
            2,
            "scan.per_host_rate",
            &format!("{bad} is out of range (allowed: 1 to 100000000)"),
        );
    }
    assert_error(
        "[scan]\nper_host_rate = 2.5\n",
        2,
        "scan.per_host_rate",
        "expected an integer, found a float",
    );
}

#[test]
fn hosts_that_can_never_be_monitored_are_refused() {
    let loopback = "a loopback address: it can never be scanned from the scan host's interface";
    for (host, reason) in [
        ("127.0.0.1", loopback),
        ("127.9.9.9", loopback),
        ("::1", loopback),
        ("::ffff:127.0.0.1", loopback),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("255.255.255.255", "the broadcast address"),
        ("224.0.0.1", "a multicast address"),
        ("239.1.2.3", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("::ffff:224.0.0.1", "a multicast address"),
    ] {
        let text = format!("[[monitor]]\nname = \"m\"\nhost = \"{host}\"\n");
        assert_error(
            &text,
            3,
            "monitor[0].host",
            &format!("host {host} is {reason}"),
        );
    }
    let errors = errors("[[monitor]]\nname = \"m\"\nhost = \"127.0.0.1\"\n");
    assert_eq!(
        errors[0].to_string(),
        "test.toml:3: monitor[0].host: host 127.0.0.1 is a loopback address: it can never be \
         scanned from the scan host's interface"
    );
}

/// A resolver that knows a few names of 198.18.0.0/15 and 2001:2::/48.
fn test_resolver(host: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let found: &[&str] = match host {
        "dual.example.com" => &["2001:2::7", "198.18.0.7"],
        "alias.example.com" => &["198.18.0.7", "2001:2::7"],
        "v4.example.com" => &["198.18.0.2"],
        "mixed.example.com" => &["127.0.1.1", "198.18.0.9"],
        "loop.example.com" => &["::1", "127.0.0.1"],
        "group.example.com" => &["224.0.0.251"],
        _ => {
            return Err(ResolveError::Lookup {
                host: host.to_owned(),
                cause: std::io::Error::other("no such name"),
            });
        }
    };
    resolve::monitorable(host, found.iter().map(|ip| ip.parse().unwrap()))
}

/// `text` checked with [`test_resolver`].
fn checked(text: &str) -> Result<Loaded, ConfigErrors> {
    check("test.toml", text, Some(&test_resolver))
}

/// `[[monitor]]` tables of (name, host), four lines each from line 1.
fn monitors(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(name, host)| format!("[[monitor]]\nname = \"{name}\"\nhost = \"{host}\"\n\n"))
        .collect()
}

/// The warnings of `text` checked with [`test_resolver`], as
/// `(line, key, message)`.
fn warnings(text: &str) -> Vec<(usize, String, String)> {
    checked(text)
        .unwrap()
        .warnings
        .into_iter()
        .map(|w| (w.line, w.key, w.message))
        .collect()
}

#[test]
fn names_that_resolve_only_to_unmonitorable_addresses_are_refused() {
    let errors = checked(&monitors(&[
        ("a", "loop.example.com"),
        ("b", "group.example.com"),
    ]))
    .unwrap_err()
    .0;
    let found: Vec<(usize, &str, &str)> = errors
        .iter()
        .map(|e| (e.line, e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                3,
                "monitor[0].host",
                "host loop.example.com resolves only to addresses that can never be \
                 monitored: 127.0.0.1 is a loopback address: it can never be scanned from \
                 the scan host's interface; ::1 is a loopback address: it can never be \
                 scanned from the scan host's interface"
            ),
            (
                7,
                "monitor[1].host",
                "host group.example.com resolves only to addresses that can never be \
                 monitored: 224.0.0.251 is a multicast address: it names a group of hosts, \
                 and TCP never connects to a group"
            ),
        ]
    );
    // Without a resolver the names are not looked up.
    assert!(parse("t", &monitors(&[("a", "loop.example.com")])).is_ok());
}

#[test]
fn a_name_with_some_monitorable_address_is_accepted() {
    let loaded = checked(&monitors(&[("a", "mixed.example.com")])).unwrap();
    assert_eq!(loaded.config.monitors[0].host, "mixed.example.com");
    assert_eq!(loaded.warnings, []);
}

#[test]
fn a_name_that_does_not_resolve_now_is_a_warning() {
    let text = monitors(&[("a", "198.18.0.2"), ("b", "gone.example.com")]);
    let loaded = checked(&text).unwrap();
    assert_eq!(loaded.config.monitors.len(), 2);
    assert_eq!(
        warnings(&text),
        [(
            7,
            "monitor[1].host".to_owned(),
            "cannot resolve gone.example.com: no such name (the daemon tries again at each \
             sweep)"
                .to_owned()
        )]
    );
}

#[test]
fn monitors_sharing_an_address_are_a_warning() {
    // Literal: at the second monitor's host.
    let text = monitors(&[
        ("a", "198.18.0.2"),
        ("b", "198.18.0.3"),
        ("c", "198.18.0.2"),
    ]);
    assert_eq!(
        warnings(&text),
        [(
            11,
            "monitor[2].host".to_owned(),
            "monitors a and c both scan 198.18.0.2: it is scanned once per sweep and both \
             evaluate the same result"
                .to_owned()
        )]
    );
    let loaded = checked(&text).unwrap();
    assert_eq!(loaded.config.monitors.len(), 3);
    assert_eq!(
        loaded.warnings[0].to_string(),
        "test.toml:11: warning: monitor[2].host: monitors a and c both scan 198.18.0.2: it is \
         scanned once per sweep and both evaluate the same result"
    );
    // Literal warnings need no resolver.
    assert_eq!(check("t", &text, None).unwrap().warnings.len(), 1);
    // After resolution: a name and a literal, two names.
    assert_eq!(
        warnings(&monitors(&[("a", "v4.example.com"), ("b", "198.18.0.2")])),
        [(
            7,
            "monitor[1].host".to_owned(),
            "monitors a and b both scan 198.18.0.2: it is scanned once per sweep and both \
             evaluate the same result"
                .to_owned()
        )]
    );
    assert_eq!(
        warnings(&monitors(&[
            ("v6", "2001:2::7"),
            ("dual", "dual.example.com")
        ])),
        [(
            7,
            "monitor[1].host".to_owned(),
            "monitors v6 and dual both scan 2001:2::7: it is scanned once per sweep and both \
             evaluate the same result"
                .to_owned()
        )]
    );
    assert_eq!(
        warnings(&monitors(&[
            ("a", "dual.example.com"),
            ("b", "alias.example.com")
        ])),
        [(
            7,
            "monitor[1].host".to_owned(),
            "monitors a and b both scan 198.18.0.7 and 2001:2::7: each is scanned once per \
             sweep and both evaluate the same result"
                .to_owned()
        )]
    );
    // Three monitors; each group of monitors is one warning.
    assert_eq!(
        warnings(&monitors(&[
            ("a", "dual.example.com"),
            ("b", "198.18.0.7"),
            ("c", "alias.example.com"),
        ])),
        [
            (
                11,
                "monitor[2].host".to_owned(),
                "monitors a, b and c all scan 198.18.0.7: it is scanned once per sweep and \
                 all evaluate the same result"
                    .to_owned()
            ),
            (
                11,
                "monitor[2].host".to_owned(),
                "monitors a and c both scan 2001:2::7: it is scanned once per sweep and both \
                 evaluate the same result"
                    .to_owned()
            ),
        ]
    );
    // Distinct addresses: nothing.
    assert_eq!(
        warnings(&monitors(&[("a", "dual.example.com"), ("b", "198.18.0.8")])),
        []
    );
}

#[test]
fn warnings_are_dropped_when_there_are_errors() {
    let text = format!(
        "{}[scan]\nrate = 0\n",
        monitors(&[("a", "198.18.0.2"), ("b", "198.18.0.2")])
    );
    let errors = checked(&text).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "scan.rate");
}

#[test]
fn sinks_have_names_and_start_positions() {
    let text = r#"
[[sink]]
kind = "webhook"
name = "ops-hook"
start = "all"
url = "https://u:hunter2@hooks.example.com/in?token=s3cret"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

[[sink]]
kind = "webhook"
url = "https://hooks.example.com/other?token=s3cret"

[[sink]]
kind = "jsonl"
name = "file.v2"
path = "/var/log/p.jsonl"
"#;
    let config = parse("test.toml", text).unwrap();
    let names: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ops-hook",
            "webhook:https://hooks.example.com/other?token=***",
            "file.v2"
        ]
    );
    let starts: Vec<SinkStart> = config.sinks.iter().map(|s| s.start).collect();
    assert_eq!(starts, [SinkStart::All, SinkStart::New, SinkStart::New]);
    assert!(matches!(
        &config.sinks[0].target,
        SinkTarget::Webhook {
            secret: Some(_),
            ..
        }
    ));
    assert!(matches!(
        &config.sinks[1].target,
        SinkTarget::Webhook { secret: None, .. }
    ));
}

#[test]
fn bad_sink_names_starts_and_secrets_are_reported_without_the_secret() {
    assert_error(
        &sink_with("jsonl", "name = \"a b\""),
        3,
        "sink[0].name",
        "invalid sink name",
    );
    assert_error(
        &sink_with("jsonl", "start = \"oldest\""),
        3,
        "sink[0].start",
        "expected \"new\" or \"all\"",
    );
    let twice = format!(
        "{}{}",
        sink_with("jsonl", "path = \"/a\""),
        sink_with("jsonl", "path = \"/a\"")
    );
    assert_error(&twice, 4, "sink[1].name", "give each sink its own `name`");
    let named_twice = format!(
        "{}{}",
        sink_with("jsonl", "name = \"x\"\npath = \"/a\""),
        sink_with("nats", "name = \"x\"\nurl = \"nats://127.0.0.1\"")
    );
    assert_error(&named_twice, 5, "sink[1].name", "already that of sink[0]");
    let hook = "url = \"https://h.example/\"\n";
    assert_error(
        &sink_with("webhook", &format!("{hook}secret = \"whsec_%%%notbase64\"")),
        4,
        "sink[0].secret",
        "not `whsec_` followed by base64",
    );
    let errors = errors(&sink_with(
        "webhook",
        &format!("{hook}secret = \"whsec_%%%notbase64\""),
    ));
    assert!(!format!("{errors:?}").contains("notbase64"), "{errors:?}");
    assert_error(
        &sink_with(
            "webhook",
            &format!("{hook}secret = \"whsec_AAAA\"\nsecret_env = \"X\""),
        ),
        5,
        "sink[0].secret_env",
        "both set",
    );
    assert_error(
        &sink_with(
            "webhook",
            &format!("{hook}secret_env = \"PALISADE_TEST_UNSET_SECRET_VARIABLE\""),
        ),
        4,
        "sink[0].secret_env",
        "is not set",
    );
    assert_error(
        &sink_with(
            "webhook",
            &format!("{hook}secret_file = \"/nonexistent/palisade/secret\""),
        ),
        4,
        "sink[0].secret_file",
        "cannot read the webhook secret",
    );
    // An invalid URL is shown without its credentials.
    assert_error(
        &sink_with("webhook", "url = \"ftp://u:hunter2@h/?token=abc\""),
        3,
        "sink[0].url",
        "ftp://u:***@h/?token=***",
    );
}

#[test]
fn a_webhook_secret_may_come_from_a_file() {
    let path = std::env::temp_dir().join(format!("palisade-secret-{}", std::process::id()));
    std::fs::write(&path, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    let text = sink_with(
        "webhook",
        &format!(
            "url = \"https://h.example/\"\nsecret_file = \"{}\"",
            path.display()
        ),
    );
    let config = parse("test.toml", &text).unwrap();
    std::fs::remove_file(&path).unwrap();
    let SinkTarget::Webhook { secret, .. } = &config.sinks[0].target else {
        panic!("{config:?}");
    };
    assert_eq!(
        secret.as_ref(),
        Some(&WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap())
    );
}

#[test]
fn nats_credentials_in_a_url_leave_the_url() {
    let config = parse(
        "test.toml",
        &sink_with(
            "nats",
            "url = [\"nats://bob:hunter2@n1:4222\", \"nats://n2:4222\"]",
        ),
    )
    .unwrap();
    let SinkTarget::Nats(nats) = &config.sinks[0].target else {
        panic!("{config:?}");
    };
    assert_eq!(nats.nats.urls, ["nats://n1:4222", "nats://n2:4222"]);
    assert_eq!(
        nats.nats.auth,
        NatsAuth::UserPassword {
            user: "bob".to_owned(),
            password: "hunter2".to_owned()
        }
    );
    let config = parse("test.toml", &sink_with("nats", "url = \"tls://s3cret@n1\"")).unwrap();
    let SinkTarget::Nats(nats) = &config.sinks[0].target else {
        panic!("{config:?}");
    };
    assert_eq!(nats.nats.auth, NatsAuth::Token("s3cret".to_owned()));
    assert_eq!(nats.nats.urls, ["tls://n1"]);
    let errors = errors(&sink_with(
        "nats",
        "url = \"nats://bob:hunter2@n1\"\ntoken = \"t\"",
    ));
    assert!(errors[0].message.contains("give them once"), "{errors:?}");
    assert!(!format!("{errors:?}").contains("hunter2"));
}

#[test]
fn http_listens_on_loopback_by_default_and_beyond_only_with_tokens() {
    let config = parse("test.toml", "[http]\n").unwrap();
    let http = config.http.expect("[http] present");
    assert_eq!(http.listen.to_string(), DEFAULT_HTTP_LISTEN);
    assert_eq!(http.tokens, None);
    assert_eq!(parse("test.toml", "").unwrap().http, None, "absent: off");
    let v6 = parse("test.toml", "[http]\nlisten = \"[::1]:8080\"\n").unwrap();
    assert_eq!(v6.http.unwrap().listen.to_string(), "[::1]:8080");
    assert_error(
        "[http]\nlisten = \"0.0.0.0:9180\"\n",
        2,
        "http.listen",
        "0.0.0.0:9180 is reachable beyond this host: set `tokens`",
    );
    let open = parse(
        "test.toml",
        "[http]\nlisten = \"0.0.0.0:9180\"\ntokens = \"/etc/palisade/tokens\"\n",
    )
    .unwrap();
    assert_eq!(
        open.http.unwrap().tokens,
        Some(std::path::PathBuf::from("/etc/palisade/tokens"))
    );
    assert_error(
        "[http]\nlisten = \"localhost:9180\"\n",
        2,
        "http.listen",
        "invalid address \"localhost:9180\": write an address and a port",
    );
    assert_error("[http]\nport = 1\n", 2, "http.port", "unknown key `port`");
}

#[test]
fn a_bad_tokens_file_is_a_configuration_error() {
    let dir = std::env::temp_dir().join(format!("palisade-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "admin short\n").unwrap();
    let config = dir.join("p.toml");
    std::fs::write(
        &config,
        format!("[http]\ntokens = \"{}\"\n", tokens.display()),
    )
    .unwrap();
    let errors = load_with_warnings(&config).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].line, errors[0].key.as_str()), (2, "http.tokens"));
    assert!(
        errors[0].message.contains("too short"),
        "{}",
        errors[0].message
    );
    std::fs::write(&tokens, "admin 0123456789abcdef0123 ops\n").unwrap();
    assert!(load_with_warnings(&config).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file read a part of monitors at a time says what the whole file read
/// at once says: the same monitors, the same errors and warnings, on the
/// same lines, under the same keys.
#[test]
fn a_file_read_in_parts_reads_as_a_whole() {
    let monitor = |i: usize, extra: &str| {
        format!(
            "[[monitor]]\nname = \"m-{i}\"\nhost = \"198.18.0.{}\"\n{extra}\n",
            i + 2
        )
    };
    let mut good = String::from("[scan]\nports = \"1-1024\"\n\n");
    for i in 0..10 {
        good.push_str(&monitor(i, "expected_open = [22]"));
    }
    good.push_str("[[sink]]\nkind = \"jsonl\"\n\n");
    good.push_str(&monitor(10, "# after a sink"));
    good.push_str(&monitor(11, "ports = \"1-10\""));
    let mut bad = good.clone();
    bad.push_str(&monitor(12, "expected_open = [0]\nconfrim = 2"));
    bad.push_str("[[monitor]]\nname = \"m-1\"\nhost = \"198.18.0.9\"\n\n");
    bad.push_str("[[monitor]]\nname = \"m-sub\"\nhost = \"198.18.0.99\"\n[monitor.x]\ny = 1\n");
    bad.push_str(&monitor(13, "every = \"1x\""));
    let whole = |text: &str| check_in_parts("f.toml", text, text, &[], None, LabelSource::File);
    let in_parts = |text: &str| {
        let split = parts::split(text, 3).unwrap();
        assert!(split.parts.len() > 2, "{:?}", split.parts);
        check_in_parts(
            "f.toml",
            text,
            &split.rest,
            &split.parts,
            None,
            LabelSource::File,
        )
    };
    let (a, b) = (whole(&good).unwrap(), in_parts(&good).unwrap());
    assert_eq!(a.config, b.config);
    assert_eq!(a.config.monitors.len(), 12);
    assert_eq!(a.config.monitors[11].scan_ports.to_string(), "1-10");
    assert_eq!(a.warnings, b.warnings);
    let (a, b) = (whole(&bad).unwrap_err(), in_parts(&bad).unwrap_err());
    assert_eq!(a.0, b.0);
    let keys: Vec<&str> = a.0.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"monitor[12].expected_open"), "{keys:?}");
    assert!(keys.contains(&"monitor[12].confrim"), "{keys:?}");
    assert!(
        keys.contains(&"monitor[13].name"),
        "duplicate name: {keys:?}"
    );
    assert!(
        keys.contains(&"monitor[14].x"),
        "a monitor's sub-table: {keys:?}"
    );
    assert!(keys.contains(&"monitor[15].every"), "{keys:?}");
    // A syntax error in a part: its line in the file.
    let mut broken = good.clone();
    let line = broken.lines().count() + 4;
    broken.push_str(&monitor(20, "confirm = = 2"));
    let errors = in_parts(&broken).unwrap_err().0;
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.line == line && e.key == "monitor[12]"),
        "{errors:?}"
    );
    assert_eq!(errors, whole(&broken).unwrap_err().0);
}

/// `[cluster]` with a URL (lines 1-2) followed by `lines` (from line 3).
fn cluster_with(lines: &str) -> String {
    format!("[cluster]\nurl = \"nats://127.0.0.1:4222\"\n{lines}\n")
}

#[test]
fn cluster_keys_are_read() {
    let text = r#"
[cluster]
url = ["nats://n1.example.com:4222", "tls://n2.example.com:4222"]
user = "coordinator"
password = "s3cr3t"
tls_ca = "/etc/ca.pem"
tls_cert = "/etc/c.pem"
tls_key = "/etc/c.key"
agent_rate = 250_000
shard_time = "2m"
ack_wait = "5m"
max_deliver = 9
labels = ["site=fra1", "rack_2", "any", "site=fra1", "ams-1"]
"#;
    let config = parse("test.toml", text).unwrap();
    assert_eq!(
        config.cluster,
        Some(ClusterSettings {
            nats: NatsOptions {
                urls: vec![
                    "nats://n1.example.com:4222".to_owned(),
                    "tls://n2.example.com:4222".to_owned()
                ],
                auth: NatsAuth::UserPassword {
                    user: "coordinator".to_owned(),
                    password: "s3cr3t".to_owned(),
                },
                tls: NatsTls {
                    ca: Some(PathBuf::from("/etc/ca.pem")),
                    client_cert: Some((PathBuf::from("/etc/c.pem"), PathBuf::from("/etc/c.key"))),
                },
                name: COORDINATOR_NAME.to_owned(),
                ..NatsOptions::default()
            },
            agent_rate: 250_000,
            shard_time: Duration::from_secs(120),
            ack_wait: Duration::from_secs(300),
            max_deliver: 9,
            // Sorted, deduplicated, with "any".
            labels: ["ams-1", "any", "rack_2", "site=fra1"]
                .map(String::from)
                .to_vec(),
        })
    );
    assert_eq!(
        config.agent_labels(),
        Some(&["ams-1", "any", "rack_2", "site=fra1"].map(String::from)[..])
    );
    // The other methods of authentication, as a NATS sink takes them;
    // credentials in the URL leave it.
    let auth = |line: &str| {
        parse("test.toml", &cluster_with(line))
            .unwrap()
            .cluster
            .unwrap()
            .nats
    };
    assert_eq!(auth("token = \"t0k\"").auth, NatsAuth::Token("t0k".into()));
    assert_eq!(
        auth("nkey_seed_file = \"/etc/c.nk\"").auth,
        NatsAuth::NkeySeedFile("/etc/c.nk".into())
    );
    assert_eq!(
        auth("creds_file = \"/etc/c.creds\"").auth,
        NatsAuth::CredsFile("/etc/c.creds".into())
    );
    let inline = parse(
        "test.toml",
        "[cluster]\nurl = \"nats://co:pw@127.0.0.1:4222\"\n",
    )
    .unwrap()
    .cluster
    .unwrap()
    .nats;
    assert_eq!(inline.urls, ["nats://127.0.0.1:4222"]);
    assert_eq!(
        inline.auth,
        NatsAuth::UserPassword {
            user: "co".into(),
            password: "pw".into()
        }
    );
}

#[test]
fn cluster_defaults_and_absence() {
    assert_eq!(parse("test.toml", "").unwrap().cluster, None);
    assert_eq!(parse("test.toml", "").unwrap().agent_labels(), None);
    let cluster = parse("test.toml", &cluster_with("")).unwrap().cluster;
    let expected = ClusterSettings {
        nats: NatsOptions {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            name: "palisade-coordinator".to_owned(),
            ..NatsOptions::default()
        },
        agent_rate: 100_000,
        shard_time: Duration::from_secs(30),
        ack_wait: Duration::from_secs(60),
        max_deliver: 5,
        labels: vec!["any".to_owned()],
    };
    assert_eq!(cluster, Some(expected.clone()));
    assert_eq!(
        ClusterSettings::new(NatsOptions {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            ..NatsOptions::default()
        }),
        expected
    );
    assert_eq!(
        (
            DEFAULT_AGENT_RATE,
            DEFAULT_SHARD_TIME,
            DEFAULT_ACK_WAIT,
            DEFAULT_MAX_DELIVER
        ),
        (100_000, Duration::from_secs(30), Duration::from_secs(60), 5)
    );
    // Bounds and equal times are accepted.
    let bounds = cluster_with(
        "agent_rate = 100_000_000\nshard_time = \"1h\"\nack_wait = \"1h\"\nmax_deliver = 100\nlabels = []",
    );
    let cluster = parse("test.toml", &bounds).unwrap().cluster.unwrap();
    assert_eq!(
        (cluster.agent_rate, cluster.shard_time, cluster.ack_wait),
        (100_000_000, HOUR, HOUR)
    );
    assert_eq!(
        (cluster.max_deliver, cluster.labels),
        (100, vec!["any".to_owned()])
    );
    let low =
        cluster_with("agent_rate = 1\nshard_time = \"1s\"\nack_wait = \"1s\"\nmax_deliver = 1");
    let cluster = parse("test.toml", &low).unwrap().cluster.unwrap();
    assert_eq!(
        (cluster.agent_rate, cluster.shard_time, cluster.max_deliver),
        (1, SECOND, 1)
    );
}

#[test]
fn cluster_errors_name_their_line_and_key() {
    assert_error(
        "[cluster]\nagent_rate = 5\n",
        1,
        "cluster.url",
        "missing required key `url`",
    );
    assert_error(
        "cluster = 5\n",
        1,
        "cluster",
        "expected a table ([cluster]), found an integer",
    );
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "agent_rate = 0",
            3,
            "cluster.agent_rate",
            "0 is out of range (allowed: 1 to 100000000)",
        ),
        (
            "agent_rate = 100_000_001",
            3,
            "cluster.agent_rate",
            "100_000_001 is out of range",
        ),
        (
            "agent_rate = \"fast\"",
            3,
            "cluster.agent_rate",
            "expected an integer, found a string",
        ),
        (
            "shard_time = \"0s\"",
            3,
            "cluster.shard_time",
            "must be at least 1s",
        ),
        (
            "shard_time = \"2h\"",
            3,
            "cluster.shard_time",
            "must be at most 1h",
        ),
        (
            "shard_time = \"soon\"",
            3,
            "cluster.shard_time",
            "invalid duration \"soon\"",
        ),
        (
            "ack_wait = \"500ms\"",
            3,
            "cluster.ack_wait",
            "must be at least 1s",
        ),
        (
            "ack_wait = \"61m\"",
            3,
            "cluster.ack_wait",
            "must be at most 1h",
        ),
        // ack_wait below shard_time: at ack_wait when written ...
        (
            "ack_wait = \"10s\"",
            3,
            "cluster.ack_wait",
            "10s is below shard_time (30s)",
        ),
        (
            "ack_wait = \"1m\"\nshard_time = \"5m\"",
            3,
            "cluster.ack_wait",
            "1m is below shard_time (5m)",
        ),
        // ... else at shard_time, against the default.
        (
            "shard_time = \"2m\"",
            3,
            "cluster.shard_time",
            "2m is above ack_wait (1m, the default)",
        ),
        (
            "max_deliver = 0",
            3,
            "cluster.max_deliver",
            "0 is out of range (allowed: 1 to 100)",
        ),
        (
            "max_deliver = 101",
            3,
            "cluster.max_deliver",
            "101 is out of range",
        ),
        (
            "labels = \"site=fra1\"",
            3,
            "cluster.labels",
            "expected an array of labels",
        ),
        (
            "labels = [\"ok\",\n  \"site fra1\"]",
            4,
            "cluster.labels",
            "invalid label \"site fra1\"",
        ),
        (
            "labels = [\"site.fra1\"]",
            3,
            "cluster.labels",
            "invalid label \"site.fra1\"",
        ),
        ("labels = [\"\"]", 3, "cluster.labels", "invalid label \"\""),
        (
            "labels = [7]",
            3,
            "cluster.labels",
            "expected a string, found an integer",
        ),
        (
            "lables = [\"a\"]",
            3,
            "cluster.lables",
            "unknown key `lables`, did you mean `labels`?",
        ),
        (
            "subject_prefix = \"x\"",
            3,
            "cluster.subject_prefix",
            "unknown key `subject_prefix`",
        ),
        // The rules of a NATS connection, at their key.
        ("user = \"u\"", 3, "cluster.user", "`user` needs `password`"),
        (
            "token = \"t\"\ncreds_file = \"/c\"",
            4,
            "cluster.creds_file",
            "`creds_file` and `token` both set",
        ),
        (
            "tls_cert = \"/c.pem\"",
            3,
            "cluster.tls_cert",
            "`tls_cert` needs `tls_key`",
        ),
        (
            "nkey_seed_file = \"\"",
            3,
            "cluster.nkey_seed_file",
            "must not be empty",
        ),
    ];
    for &(lines, line, key, fragment) in cases {
        assert_error(&cluster_with(lines), line, key, fragment);
    }
    assert_error(
        "[cluster]\nurl = [\"nats://a:4222\", \"nats://b c\"]\n",
        2,
        "cluster.url",
        "invalid NATS server URL \"nats://b c\"",
    );
    assert_error(
        "[cluster]\nurl = []\n",
        2,
        "cluster.url",
        "give at least one NATS server URL",
    );
    assert_error(
        "[cluster]\nurl = \"nats://t@a:4222\"\ntoken = \"t\"\n",
        1,
        "cluster.url",
        "credentials both in the URL and in `token`",
    );
    // Every problem at once, in file order.
    let all = errors(&cluster_with(
        "agent_rate = 0\nmax_deliver = 0\nlabels = [\"a b\"]",
    ));
    let found: Vec<(usize, &str)> = all.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (3, "cluster.agent_rate"),
            (4, "cluster.max_deliver"),
            (5, "cluster.labels")
        ]
    );
}

/// A `[cluster]` with labels `site=fra1` and `site=ams1` (lines 1-3), then a
/// monitor (lines 4-6) followed by `line` (line 7).
fn cluster_monitor_with(line: &str) -> String {
    format!(
        "[cluster]\nurl = \"nats://127.0.0.1:4222\"\nlabels = [\"site=fra1\", \"site=ams1\"]\n{}",
        monitor_with(line)
    )
}

#[test]
fn agent_label_names_a_cluster_label() {
    let config = parse(
        "test.toml",
        &cluster_monitor_with("agent_label = \"site=ams1\""),
    )
    .unwrap();
    assert_eq!(config.monitors[0].agent_label.as_deref(), Some("site=ams1"));
    // "any" is no pin.
    let config = parse("test.toml", &cluster_monitor_with("agent_label = \"any\"")).unwrap();
    assert_eq!(config.monitors[0].agent_label, None);
    let config = parse("test.toml", &cluster_monitor_with("")).unwrap();
    assert_eq!(config.monitors[0].agent_label, None);
    assert_error(
        &cluster_monitor_with("agent_label = \"site=par1\""),
        7,
        "monitor[0].agent_label",
        "\"site=par1\" is not a label of [cluster] (labels: any, site=ams1, site=fra1)",
    );
    assert_error(
        &cluster_monitor_with("agent_label = \"site fra1\""),
        7,
        "monitor[0].agent_label",
        "invalid label \"site fra1\"",
    );
    assert_error(
        &cluster_monitor_with("agent_label = [\"site=fra1\"]"),
        7,
        "monitor[0].agent_label",
        "expected a string, found an array",
    );
    // A `[cluster]` with errors: those are reported, not its monitors'
    // labels (its labels are not known).
    let text = format!(
        "[cluster]\nlabels = [\"site=fra1\"]\n{}",
        monitor_with("agent_label = \"site=par1\"")
    );
    assert_error(&text, 1, "cluster.url", "missing required key `url`");
    // `[cluster]` after the monitors counts all the same.
    let text = format!(
        "{}[cluster]\nurl = \"nats://127.0.0.1:4222\"\n",
        monitor_with("agent_label = \"site=fra1\"")
    );
    assert_error(
        &text,
        4,
        "monitor[0].agent_label",
        "\"site=fra1\" is not a label of [cluster] (labels: any)",
    );
}

#[test]
fn agent_label_without_a_cluster_is_a_warning() {
    let text = monitor_with("agent_label = \"site=fra1\"");
    let loaded = check("test.toml", &text, None).unwrap();
    assert_eq!(
        loaded.config.monitors[0].agent_label.as_deref(),
        Some("site=fra1")
    );
    let found: Vec<(usize, &str)> = loaded
        .warnings
        .iter()
        .map(|w| (w.line, w.key.as_str()))
        .collect();
    assert_eq!(found, [(4, "monitor[0].agent_label")]);
    assert!(
        loaded.warnings[0]
            .message
            .contains("agent_label changes nothing"),
        "{:?}",
        loaded.warnings[0]
    );
    assert_eq!(
        loaded.warnings[0].to_string(),
        format!(
            "test.toml:4: warning: monitor[0].agent_label: {}",
            loaded.warnings[0].message
        )
    );
    // Still a valid label, or an error.
    assert_error(
        &monitor_with("agent_label = \"\""),
        4,
        "monitor[0].agent_label",
        "invalid label \"\"",
    );
}

#[test]
fn agent_label_is_checked_in_a_file_read_in_parts() {
    let monitor = |i: usize, label: &str| {
        format!(
            "[[monitor]]\nname = \"m-{i}\"\nhost = \"198.18.0.{}\"\nagent_label = \"{label}\"\n\n",
            i + 2
        )
    };
    let mut text = String::from("[cluster]\nurl = \"nats://127.0.0.1:4222\"\nlabels = [\"a\"]\n\n");
    for i in 0..8 {
        text.push_str(&monitor(i, if i == 6 { "b" } else { "a" }));
    }
    let whole = check_in_parts("f.toml", &text, &text, &[], None, LabelSource::File).unwrap_err();
    let split = parts::split(&text, 3).unwrap();
    assert!(split.parts.len() > 2, "{:?}", split.parts);
    let in_parts = check_in_parts(
        "f.toml",
        &text,
        &split.rest,
        &split.parts,
        None,
        LabelSource::File,
    )
    .unwrap_err();
    assert_eq!(whole.0, in_parts.0);
    let found: Vec<(usize, &str)> = whole.0.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(found, [(5 + 6 * 5 + 3, "monitor[6].agent_label")]);
}

/// The fields of a monitor written through the API.
fn api_fields(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    }
}

#[test]
fn api_monitors_take_agent_label_checked_against_the_daemons_labels() {
    let labels = ["any".to_owned(), "site=fra1".to_owned()];
    let written = serde_json::json!({"name": "api-1", "host": "198.18.0.2",
                                     "agent_label": "site=fra1"});
    let checked = check_monitor(&api_fields(written.clone()), None, Some(&labels)).unwrap();
    assert_eq!(checked.spec.agent_label.as_deref(), Some("site=fra1"));
    assert_eq!(checked.warnings, []);
    // Not one of the daemon's labels: an error naming the field.
    let other = serde_json::json!({"name": "api-1", "host": "198.18.0.2",
                                   "agent_label": "site=par1"});
    let errors = check_monitor(&api_fields(other), None, Some(&labels)).unwrap_err();
    assert_eq!(
        errors,
        [FieldError {
            field: "agent_label".to_owned(),
            message: "\"site=par1\" is not a label of [cluster] (labels: any, site=fra1): no \
                      agent would take its jobs; add it to `cluster.labels` or pick one of those"
                .to_owned(),
        }]
    );
    let bad = serde_json::json!({"name": "api-1", "host": "198.18.0.2", "agent_label": "a.b"});
    let errors = check_monitor(&api_fields(bad), None, Some(&labels)).unwrap_err();
    assert_eq!(errors[0].field, "agent_label");
    assert!(
        errors[0].message.starts_with("invalid label \"a.b\""),
        "{errors:?}"
    );
    // Without a cluster: kept, with a warning naming the field.
    let checked = check_monitor(&api_fields(written), None, None).unwrap();
    assert_eq!(checked.spec.agent_label.as_deref(), Some("site=fra1"));
    let fields: Vec<&str> = checked.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(fields, ["agent_label"]);
    // The daemon's labels are from its file: Config::agent_labels.
    let config = parse(
        "t",
        "[cluster]\nurl = \"nats://127.0.0.1:4222\"\nlabels = [\"site=fra1\"]\n",
    )
    .unwrap();
    assert_eq!(config.agent_labels(), Some(&labels[..]));
}

#[test]
fn an_api_monitors_agent_label_survives_its_document_and_the_store() {
    let labels = ["any".to_owned(), "site=fra1".to_owned()];
    let fields = api_fields(serde_json::json!({"name": "api-1", "host": "198.18.0.2",
                                               "expected_open": "22", "agent_label": "site=fra1"}));
    let checked = check_monitor(&fields, None, Some(&labels)).unwrap();
    // The written form shows it, and reads back the same.
    let doc = MonitorDoc::of(&checked.spec);
    assert_eq!(doc.agent_label.as_deref(), Some("site=fra1"));
    let json = serde_json::to_value(&doc).unwrap();
    assert_eq!(json["agent_label"], "site=fra1");
    let back = check_monitor(&api_fields(json), None, Some(&labels)).unwrap();
    assert_eq!(back.spec, checked.spec);
    // Without one, the key is left out, and reads back as none.
    let plain = check_monitor(
        &api_fields(serde_json::json!({"name": "api-2", "host": "198.18.0.3"})),
        None,
        Some(&labels),
    )
    .unwrap();
    let json = serde_json::to_value(MonitorDoc::of(&plain.spec)).unwrap();
    assert!(json.get("agent_label").is_none(), "{json}");
    let doc: MonitorDoc = serde_json::from_value(json).unwrap();
    assert_eq!(doc.agent_label, None);
    // Through the store (real SQLite), as the API writes and reads it.
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(&dir.path().join("p.db")).unwrap();
    store.create_monitor(&checked.spec, true, 1_000).unwrap();
    store.create_monitor(&plain.spec, true, 1_000).unwrap();
    let stored = store.monitor("api-1").unwrap().unwrap();
    assert_eq!(stored.spec, checked.spec);
    assert_eq!(stored.spec.agent_label.as_deref(), Some("site=fra1"));
    let enabled = store.enabled_monitors().unwrap();
    assert_eq!(enabled.len(), 2);
    assert!(enabled.contains(&checked.spec) && enabled.contains(&plain.spec));
}
