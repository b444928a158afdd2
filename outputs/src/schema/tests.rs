use super::*;
use proptest::prelude::*;

fn port_event(kind: &str, severity: Severity, resolved: bool) -> PortEvent {
    PortEvent {
        monitor: "web-1".into(),
        host: "web1.example.net".into(),
        address: "198.18.0.2".into(),
        port: 22,
        state: Some("open".into()),
        expected: false,
        first_seen: "2026-01-02T03:04:05Z".into(),
        confirmed_at: "2026-01-02T03:05:05Z".into(),
        resolved_at: resolved.then(|| "2026-01-02T04:00:00Z".into()),
        incident_id: "inc-7".into(),
        incident_kind: kind.into(),
        severity,
        reason: resolved.then(|| "observed".into()),
    }
}

fn host_event(kind: &str, severity: Severity, resolved: bool) -> HostEvent {
    HostEvent {
        monitor: "web-1".into(),
        host: "web1.example.net".into(),
        address: "198.18.0.2".into(),
        first_seen: "2026-01-02T03:04:05Z".into(),
        confirmed_at: "2026-01-02T03:05:05Z".into(),
        resolved_at: resolved.then(|| "2026-01-02T04:00:00Z".into()),
        incident_id: "web-1-198.18.0.2-host_unreachable-1".into(),
        incident_kind: kind.into(),
        severity,
        ports: "22,443".into(),
        port_count: 2,
        reason: resolved.then(|| "observed".into()),
        message: "198.18.0.2 answers nothing".into(),
    }
}

fn health_event(kind: &str, severity: Severity, resolved: bool) -> HealthEvent {
    HealthEvent {
        monitor: "web-1".into(),
        host: "web1.example.net".into(),
        incident_id: format!("web-1-{kind}-1"),
        incident_kind: kind.into(),
        severity,
        first_seen: "2026-01-02T03:04:05Z".into(),
        resolved_at: resolved.then(|| "2026-01-02T04:00:00Z".into()),
        reason: resolved.then(|| "observed".into()),
        error: (kind == "scan_failed").then(|| "no route to 198.18.0.2".into()),
        message: "sweeps fail".into(),
    }
}

pub(crate) fn samples() -> Vec<Envelope> {
    let datas = vec![
        EventData::UnexpectedPortOpen(port_event("unexpected_port_open", Severity::High, false)),
        EventData::ExpectedPortDown(port_event("expected_port_down", Severity::Normal, false)),
        EventData::PortResolved(port_event("unexpected_port_open", Severity::High, true)),
        EventData::HostUnreachable(host_event("host_unreachable", Severity::Critical, false)),
        EventData::HostAnswersAllPorts(host_event("host_answers_all_ports", Severity::High, false)),
        EventData::HostReachable(host_event("host_unreachable", Severity::Normal, true)),
        EventData::HostResolved(host_event("host_answers_all_ports", Severity::Normal, true)),
        EventData::PortsChanged(PortsChangedEvent {
            monitor: "web-1".into(),
            host: "web1.example.net".into(),
            changes: vec![PortsChange {
                address: "2001:2::2".into(),
                kind: "unexpected_port_open".into(),
                ports: "8000-8299".into(),
                count: 300,
            }],
            sent: 50,
            total: 300,
            severity: Severity::High,
        }),
        EventData::MonitorResolved(MonitorEvent {
            monitor: "web-1".into(),
            host: "web1.example.net".into(),
            message: "host reachable again".into(),
        }),
        EventData::ScanFailed(health_event("scan_failed", Severity::Critical, false)),
        EventData::ScanRecovered(health_event("scan_failed", Severity::Normal, true)),
        EventData::MonitorStale(health_event("monitor_stale", Severity::High, false)),
        EventData::MonitorFresh(health_event("monitor_stale", Severity::Normal, true)),
        EventData::Scan(ScanReport {
            monitor: "web-1".into(),
            host: "web1.example.net".into(),
            scan_kind: "full".into(),
            started: "2026-01-02T03:04:05Z".into(),
            finished: "2026-01-02T03:04:06Z".into(),
            conclusive: true,
            reachable: true,
            addresses: vec![AddressReport {
                address: "198.18.0.2".into(),
                reachable: true,
                open_ports: "22,443".into(),
                open_count: 2,
            }],
            note: None,
            estimated_loss: Some(0.05),
            retry_rounds: Some(3),
            expected_misses: Some(0.25),
        }),
    ];
    datas
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            Envelope::new(
                format!("evt-{i}"),
                "palisade://scanner-a".into(),
                "2026-01-02T03:05:05Z".into(),
                d,
            )
        })
        .collect()
}

#[test]
fn new_fills_type_and_subject() {
    let s = samples();
    assert_eq!(s[0].ty, "io.palisade.unexpected_port_open.v2");
    assert_eq!(s[0].specversion, "1.0");
    assert_eq!(s[0].subject, "web-1/198.18.0.2:22");
    assert_eq!(s[3].subject, "web-1/198.18.0.2");
    assert_eq!(s[7].subject, "web-1");
    assert_eq!(s[8].subject, "web-1");
    assert_eq!(s[13].subject, "web-1");
    assert_eq!(s[13].ty, "io.palisade.scan.v2");
    let mut v6 = s[0].clone();
    if let EventData::UnexpectedPortOpen(p) = &mut v6.data {
        p.address = "2001:2::2".into();
    }
    let v6 = Envelope::new(v6.id, v6.source, v6.time, v6.data);
    assert_eq!(v6.subject, "web-1/[2001:2::2]:22");
    let kinds: Vec<_> = s.iter().map(Envelope::kind).collect();
    assert_eq!(kinds, EventData::KINDS);
    for e in &s {
        assert_eq!(e.ty, type_for(e.kind()));
        assert_eq!(e.data.monitor(), "web-1");
    }
    assert_eq!(s[0].data.severity(), Severity::High);
    assert_eq!(s[1].data.severity(), Severity::Normal);
    assert_eq!(s[3].data.severity(), Severity::Critical);
    assert_eq!(s[7].data.severity(), Severity::High);
    assert_eq!(s[9].data.severity(), Severity::Critical);
    let resolutions: Vec<bool> = s.iter().map(|e| e.data.is_resolution()).collect();
    assert_eq!(
        resolutions,
        [
            false, false, true, false, false, true, true, false, true, false, true, false, true,
            false
        ]
    );
    assert_eq!(
        s[9].data.incident(),
        Some(("web-1-scan_failed-1", "scan_failed"))
    );
    assert_eq!(s[3].data.address(), Some("198.18.0.2"));
    assert_eq!(s[7].data.address(), None);
}

#[test]
fn nats_subjects() {
    let s = samples();
    assert_eq!(
        s[0].nats_subject("palisade"),
        "palisade.events.unexpected_port_open.web-1"
    );
    assert_eq!(
        s[2].nats_subject("acme.palisade"),
        "acme.palisade.events.port_resolved.web-1"
    );
    assert_eq!(s[13].nats_subject("palisade"), "palisade.scans.web-1");
    assert_eq!(
        s[3].nats_subject("palisade"),
        "palisade.events.host_unreachable.web-1"
    );
    let mut odd = s[8].clone();
    if let EventData::MonitorResolved(m) = &mut odd.data {
        m.monitor = "a.b *>c".into();
    }
    assert_eq!(odd.nats_subject("p"), "p.events.monitor_resolved.a_b___c");
}

#[test]
fn round_trip_every_variant_both_formats() {
    for e in samples() {
        for f in [PayloadFormat::MsgPack, PayloadFormat::Json] {
            let bytes = encode(&e, f).unwrap();
            assert_eq!(decode(&bytes, f).unwrap(), e, "{f:?}");
        }
    }
}

#[test]
fn json_shape() {
    let e = &samples()[0];
    let v: serde_json::Value =
        serde_json::from_slice(&encode(e, PayloadFormat::Json).unwrap()).unwrap();
    assert_eq!(v["type"], "io.palisade.unexpected_port_open.v2");
    assert_eq!(v["data"]["kind"], "unexpected_port_open");
    assert_eq!(v["data"]["severity"], "high");
    assert_eq!(v["data"]["port"], 22);
}

#[test]
fn msgpack_has_named_fields() {
    for e in samples() {
        let bytes = encode(&e, PayloadFormat::MsgPack).unwrap();
        // Decode generically: the envelope and data must be maps keyed by name.
        let v: rmpv_like::MsgpackValue = rmp_serde::from_slice(&bytes).unwrap();
        let top = v.as_map().expect("envelope is a map, not an array");
        for key in [
            "specversion",
            "id",
            "source",
            "type",
            "datacontenttype",
            "subject",
            "time",
            "data",
        ] {
            assert!(top.contains_key(key), "missing key {key}");
        }
        let data = top["data"].as_map().expect("data is a map");
        assert_eq!(data["kind"], rmpv_like::MsgpackValue::Str(e.kind().into()));
        assert!(data.contains_key("monitor"));
    }
    // And the first byte is a map marker (fixmap 0x8X or map16/32).
    let bytes = encode(&samples()[0], PayloadFormat::MsgPack).unwrap();
    assert!(matches!(bytes[0], 0x80..=0x8f | 0xde | 0xdf));
}

/// A minimal self-describing value, so the test needs no extra crate.
mod rmpv_like {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    pub enum MsgpackValue {
        Nil(()),
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        Array(Vec<MsgpackValue>),
        Map(BTreeMap<String, MsgpackValue>),
    }

    impl MsgpackValue {
        pub fn as_map(&self) -> Option<&BTreeMap<String, MsgpackValue>> {
            match self {
                MsgpackValue::Map(m) => Some(m),
                _ => None,
            }
        }
    }
}

#[test]
fn content_types() {
    for f in [PayloadFormat::MsgPack, PayloadFormat::Json] {
        assert_eq!(PayloadFormat::from_content_type(f.content_type()), Some(f));
    }
    // JSON is the default, sent as the CloudEvents structured mode wants.
    assert_eq!(PayloadFormat::default(), PayloadFormat::Json);
    assert_eq!(
        PayloadFormat::Json.content_type(),
        "application/cloudevents+json; charset=utf-8"
    );
    assert_eq!(
        PayloadFormat::from_content_type("application/json; charset=utf-8"),
        Some(PayloadFormat::Json)
    );
    assert_eq!(
        PayloadFormat::from_content_type("Application/CloudEvents+JSON"),
        Some(PayloadFormat::Json)
    );
    assert_eq!(PayloadFormat::from_content_type("text/plain"), None);
    assert_eq!(PayloadFormat::from_content_type(""), None);
}

#[test]
fn future_version_is_rejected_clearly() {
    // Same shape, newer version.
    let mut e = samples()[0].clone();
    e.ty = "io.palisade.unexpected_port_open.v3".into();
    for f in [PayloadFormat::MsgPack, PayloadFormat::Json] {
        let err = decode(&encode(&e, f).unwrap(), f).unwrap_err();
        assert!(
            matches!(err, SchemaError::UnsupportedType { supported: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("v3"), "{err}");
    }
    // A new kind that this build cannot parse: still named as a version problem.
    let json = br#"{"specversion":"1.0","id":"x","source":"palisade://h","type":"io.palisade.port_flapping.v3",
        "subject":"m","time":"2026-01-01T00:00:00Z","data":{"kind":"port_flapping","monitor":"m"}}"#;
    let err = decode(json, PayloadFormat::Json).unwrap_err();
    assert!(matches!(err, SchemaError::UnsupportedType { .. }), "{err}");
    // Same version, unknown kind: a plain decode error.
    let json = br#"{"specversion":"1.0","id":"x","source":"palisade://h","type":"io.palisade.port_flapping.v2",
        "subject":"m","time":"2026-01-01T00:00:00Z","data":{"kind":"port_flapping","monitor":"m"}}"#;
    assert!(matches!(
        decode(json, PayloadFormat::Json).unwrap_err(),
        SchemaError::DecodeJson(_)
    ));
}

#[test]
fn mismatched_or_malformed_type_is_rejected() {
    let mut e = samples()[0].clone();
    e.ty = "io.palisade.scan.v2".into();
    assert!(matches!(
        decode(
            &encode(&e, PayloadFormat::Json).unwrap(),
            PayloadFormat::Json
        )
        .unwrap_err(),
        SchemaError::TypeMismatch { .. }
    ));
    for bad in [
        "scan.v2",
        "io.palisade.scan",
        "io.palisade.scan.vX",
        "io.palisade..v2",
    ] {
        e.ty = bad.into();
        assert!(
            matches!(
                decode(
                    &encode(&e, PayloadFormat::Json).unwrap(),
                    PayloadFormat::Json
                )
                .unwrap_err(),
                SchemaError::MalformedType(_)
            ),
            "{bad}"
        );
    }
    let mut e = samples()[1].clone();
    e.specversion = "0.3".into();
    assert!(matches!(
        decode(
            &encode(&e, PayloadFormat::MsgPack).unwrap(),
            PayloadFormat::MsgPack
        )
        .unwrap_err(),
        SchemaError::UnsupportedSpecVersion(_)
    ));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bytes in [&b""[..], b"\xc1", b"{", b"[1,2,3]", b"\x93\x01\x02\x03"] {
        assert!(decode(bytes, PayloadFormat::Json).is_err());
        assert!(decode(bytes, PayloadFormat::MsgPack).is_err());
    }
}

fn opt_string() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(".{0,12}")
}

fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![Just(Severity::High), Just(Severity::Normal)]
}

prop_compose! {
    fn arb_port_event()(
        monitor in "[a-zA-Z0-9_-]{1,16}",
        host in ".{0,20}",
        port in any::<u16>(),
        state in opt_string(),
        expected in any::<bool>(),
        first_seen in ".{0,25}",
        confirmed_at in ".{0,25}",
        resolved_at in opt_string(),
        incident_id in ".{0,12}",
        incident_kind in ".{0,20}",
        severity in severity(),
        reason in opt_string(),
    ) -> PortEvent {
        PortEvent { monitor, host, address: String::new(), port, state, expected, first_seen,
            confirmed_at, resolved_at, incident_id, incident_kind, severity, reason }
    }
}

prop_compose! {
    fn arb_scan()(
        monitor in "[a-zA-Z0-9_-]{1,16}",
        host in ".{0,20}",
        address in ".{0,20}",
        scan_kind in ".{0,8}",
        started in ".{0,25}",
        finished in ".{0,25}",
        conclusive in any::<bool>(),
        reachable in any::<bool>(),
        open_ports in ".{0,20}",
        open_count in any::<u64>(),
        note in opt_string(),
        // Fractions a decimal writes exactly enough to read back the same.
        estimated_loss in proptest::option::of((0u32..1000).prop_map(|n| f64::from(n) / 1000.0)),
        retry_rounds in proptest::option::of(0u32..16),
        expected_misses in proptest::option::of((0u32..100_000).prop_map(|n| f64::from(n) / 100.0)),
    ) -> ScanReport {
        let addresses = vec![AddressReport { address, reachable, open_ports, open_count }];
        ScanReport { monitor, host, scan_kind, started, finished, conclusive, reachable,
            addresses, note, estimated_loss, retry_rounds, expected_misses }
    }
}

fn arb_data() -> impl Strategy<Value = EventData> {
    prop_oneof![
        arb_port_event().prop_map(EventData::UnexpectedPortOpen),
        arb_port_event().prop_map(EventData::ExpectedPortDown),
        arb_port_event().prop_map(EventData::PortResolved),
        ("[a-z0-9_-]{1,16}", ".{0,20}", ".{0,40}").prop_map(|(monitor, host, message)| {
            EventData::MonitorResolved(MonitorEvent {
                monitor,
                host,
                message,
            })
        }),
        arb_scan().prop_map(EventData::Scan),
    ]
}

proptest! {
    #[test]
    fn prop_round_trip(id in ".{0,40}", source in ".{0,40}", time in ".{0,30}", data in arb_data()) {
        let e = Envelope::new(id, source, time, data);
        for f in [PayloadFormat::MsgPack, PayloadFormat::Json] {
            let bytes = encode(&e, f).unwrap();
            prop_assert_eq!(&decode(&bytes, f).unwrap(), &e);
        }
    }

    #[test]
    fn prop_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes, PayloadFormat::MsgPack);
        let _ = decode(&bytes, PayloadFormat::Json);
    }
}

#[test]
fn missing_optional_and_unknown_fields_are_accepted() {
    let json = br#"{"specversion":"1.0","id":"x","source":"palisade://h","type":"io.palisade.port_resolved.v2",
        "subject":"m/22","time":"2026-01-01T00:00:00Z","extension":"ignored",
        "data":{"kind":"port_resolved","monitor":"m","host":"h","port":22,"expected":true,
        "first_seen":"a","confirmed_at":"b","incident_id":"i","incident_kind":"expected_port_down",
        "severity":"normal","future_field":[1,2]}}"#;
    let e = decode(json, PayloadFormat::Json).unwrap();
    let EventData::PortResolved(p) = &e.data else {
        panic!("{e:?}")
    };
    assert_eq!(
        (
            p.state.as_deref(),
            p.resolved_at.as_deref(),
            p.reason.as_deref()
        ),
        (None, None, None)
    );
    let again = decode(
        &encode(&e, PayloadFormat::MsgPack).unwrap(),
        PayloadFormat::MsgPack,
    )
    .unwrap();
    assert_eq!(again, e);
}

/// A scan summary of a producer before adaptive retries (no
/// `estimated_loss`, `retry_rounds`, `expected_misses`) still decodes.
#[test]
fn scan_summaries_without_the_loss_figures_decode() {
    let json = br#"{"specversion":"1.0","id":"web-1:scan:1:2","source":"palisade://h","type":"io.palisade.scan.v2",
        "subject":"web-1","time":"2026-01-01T00:00:00Z",
        "data":{"kind":"scan","monitor":"web-1","host":"h","scan_kind":"full","started":"a","finished":"b",
        "conclusive":true,"reachable":true,"addresses":[],"note":null}}"#;
    let e = decode(json, PayloadFormat::Json).unwrap();
    let EventData::Scan(s) = &e.data else {
        panic!("{e:?}")
    };
    assert_eq!(
        (s.estimated_loss, s.retry_rounds, s.expected_misses),
        (None, None, None)
    );
    // What Palisade writes now has them, null when unknown.
    let v: serde_json::Value =
        serde_json::from_slice(&encode(&e, PayloadFormat::Json).unwrap()).unwrap();
    for key in ["estimated_loss", "retry_rounds", "expected_misses"] {
        assert_eq!(v["data"][key], serde_json::Value::Null, "{key}");
    }
}

/// The JSON examples in outputs/README.md are real events of this schema.
#[test]
fn readme_examples_decode() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("### Examples (JSON)")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the examples section");
    let examples: Vec<&str> = section
        .split("```json")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(examples.len() >= 6, "{} examples", examples.len());
    for text in examples {
        let e = decode(text.as_bytes(), PayloadFormat::Json)
            .unwrap_or_else(|err| panic!("{err}: {text}"));
        assert_eq!(
            e.subject,
            Envelope::new(
                e.id.clone(),
                e.source.clone(),
                e.time.clone(),
                e.data.clone()
            )
            .subject
        );
    }
}

/// A `scan_failed` of the scanner itself: no monitor, so no `subject`.
fn scanner_failed() -> Envelope {
    let mut h = health_event("scan_failed", Severity::Critical, false);
    h.monitor = String::new();
    h.host = String::new();
    h.incident_id = "scan_failed-1".into();
    Envelope::new(
        "evt-scanner".into(),
        "palisade://scanner-a".into(),
        "2026-01-02T03:05:05.123Z".into(),
        EventData::ScanFailed(h),
    )
}

#[test]
fn cloudevents_attributes() {
    for e in samples() {
        assert_eq!(e.datacontenttype, "application/json");
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&e, PayloadFormat::Json).unwrap()).unwrap();
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["specversion"], "1.0");
        assert!(!v["subject"].as_str().unwrap().is_empty());
        humantime::parse_rfc3339(v["time"].as_str().unwrap()).unwrap();
    }
    // CloudEvents wants no empty subject: it is left out, and read back empty.
    let e = scanner_failed();
    assert_eq!(e.subject, "");
    for f in [PayloadFormat::MsgPack, PayloadFormat::Json] {
        let bytes = encode(&e, f).unwrap();
        assert_eq!(decode(&bytes, f).unwrap(), e, "{f:?}");
    }
    let v: serde_json::Value =
        serde_json::from_slice(&encode(&e, PayloadFormat::Json).unwrap()).unwrap();
    assert!(v.get("subject").is_none(), "{v}");
}

#[test]
fn envelopes_without_datacontenttype_still_decode() {
    // As producers before `datacontenttype` wrote them.
    let e = samples()[2].clone();
    let mut v = serde_json::to_value(&e).unwrap();
    v.as_object_mut().unwrap().remove("datacontenttype");
    let json = serde_json::to_vec(&v).unwrap();
    assert_eq!(decode(&json, PayloadFormat::Json).unwrap(), e);
    let msgpack = rmp_serde::to_vec_named(&v).unwrap();
    assert_eq!(decode(&msgpack, PayloadFormat::MsgPack).unwrap(), e);
}

#[test]
fn msgpack_is_the_json_event_value_for_value() {
    for e in samples().into_iter().chain([scanner_failed()]) {
        let from_msgpack: serde_json::Value =
            rmp_serde::from_slice(&encode(&e, PayloadFormat::MsgPack).unwrap()).unwrap();
        let from_json: serde_json::Value =
            serde_json::from_slice(&encode(&e, PayloadFormat::Json).unwrap()).unwrap();
        assert_eq!(from_msgpack, from_json, "{}", e.kind());
    }
}

#[test]
fn sources_are_uri_references() {
    for ok in [
        "palisade://scanner-a",
        "palisade://x",
        "palisade://a.b_c~d",
        "/rel/ok",
        "palisade://h%41",
    ] {
        assert_eq!(uri_reference(ok), ok);
    }
    assert_eq!(uri_reference("palisade://my host"), "palisade://my%20host");
    assert_eq!(uri_reference("palisade://naïve"), "palisade://na%C3%AFve");
    assert_eq!(
        uri_reference("palisade://a#b?c%"),
        "palisade://a%23b%3Fc%25"
    );
    assert_eq!(uri_reference("no scheme:here"), "no%20scheme%3Ahere");
    let e = Envelope::new(
        "i".into(),
        "palisade://bad host".into(),
        "2026-01-02T03:05:05Z".into(),
        samples()[0].data.clone(),
    );
    assert_eq!(e.source, "palisade://bad%20host");
}

proptest! {
    #[test]
    fn uri_reference_keeps_only_uri_characters(host in "\\PC{0,24}") {
        let source = uri_reference(&format!("palisade://{host}"));
        prop_assert!(source.starts_with("palisade://"));
        let rest = &source.as_bytes()["palisade:".len()..];
        for (i, &b) in rest.iter().enumerate() {
            let escape = b == b'%'
                && rest.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && rest.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            let in_escape = i >= 1 && rest[i - 1] == b'%' || i >= 2 && rest[i - 2] == b'%';
            prop_assert!(
                b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=/@:".contains(&b) || escape || in_escape,
                "{source}"
            );
        }
        // Already a reference: unchanged.
        prop_assert_eq!(uri_reference(&source), source.clone());
    }
}

/// Every kind of envelope, as JSON and as MessagePack transcoded to JSON,
/// read by the official CloudEvents Python SDK (pinned by `cargo xtask
/// setup`) in structured mode, with the headers the sinks send: it accepts
/// each and reads back what we wrote. A broken envelope is refused, so the
/// SDK does check.
#[test]
fn the_cloudevents_sdk_reads_every_envelope() {
    use crate::testing::VENV_PYTHON;
    assert!(
        std::path::Path::new(VENV_PYTHON).is_file(),
        "{VENV_PYTHON} not found: `cargo xtask setup` installs the pinned cloudevents package"
    );
    let envelopes: Vec<Envelope> = samples().into_iter().chain([scanner_failed()]).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut bodies = Vec::new();
    for (i, e) in envelopes.iter().enumerate() {
        let json = encode(e, PayloadFormat::Json).unwrap();
        let msgpack: serde_json::Value =
            rmp_serde::from_slice(&encode(e, PayloadFormat::MsgPack).unwrap()).unwrap();
        for (name, body) in [
            (format!("{i}.json"), json),
            (
                format!("{i}.msgpack.json"),
                serde_json::to_vec(&msgpack).unwrap(),
            ),
        ] {
            std::fs::write(dir.path().join(&name), body).unwrap();
            bodies.push((name, e));
        }
    }
    let mut broken = serde_json::to_value(&envelopes[0]).unwrap();
    broken["time"] = "yesterday".into();
    std::fs::write(
        dir.path().join("broken.json"),
        serde_json::to_vec(&broken).unwrap(),
    )
    .unwrap();
    let script = [
        "import json, sys, os",
        "from cloudevents.core.bindings.http import HTTPMessage, from_http",
        "from cloudevents.core.formats.json import JSONFormat",
        "from cloudevents.core.v1.event import CloudEvent",
        "content_type, folder = sys.argv[1:]",
        "out = {}",
        "for name in sorted(os.listdir(folder)):",
        "    body = open(os.path.join(folder, name), 'rb').read()",
        "    try:",
        "        e = from_http(HTTPMessage(headers={'content-type': content_type}, body=body), JSONFormat(), CloudEvent)",
        "    except Exception as err:",
        "        out[name] = {'refused': repr(err)}",
        "        continue",
        "    out[name] = {'specversion': e.get_specversion(), 'id': e.get_id(), 'source': e.get_source(),",
        "        'type': e.get_type(), 'subject': e.get_subject(), 'datacontenttype': e.get_datacontenttype(),",
        "        'time': e.get_time().isoformat(), 'utcoffset': e.get_time().utcoffset().total_seconds(),",
        "        'data': e.get_data()}",
        "print(json.dumps(out))",
    ]
    .join("\n");
    let out = std::process::Command::new(VENV_PYTHON)
        .args(["-c", &script, PayloadFormat::Json.content_type()])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (name, e) in bodies {
        let got = &read[&name];
        assert!(got.get("refused").is_none(), "{name}: {got}");
        assert_eq!(got["specversion"], "1.0", "{name}");
        assert_eq!(got["id"], e.id.as_str(), "{name}");
        assert_eq!(got["source"], e.source.as_str(), "{name}");
        assert_eq!(got["type"], e.ty.as_str(), "{name}");
        let subject = (!e.subject.is_empty()).then_some(e.subject.as_str());
        assert_eq!(got["subject"].as_str(), subject, "{name}");
        assert_eq!(got["datacontenttype"], "application/json", "{name}");
        assert_eq!(got["utcoffset"], 0.0, "{name}");
        assert_eq!(
            humantime::parse_rfc3339(got["time"].as_str().unwrap()).unwrap(),
            humantime::parse_rfc3339(&e.time).unwrap(),
            "{name}"
        );
        assert_eq!(
            got["data"],
            serde_json::to_value(&e.data).unwrap(),
            "{name}"
        );
    }
    assert!(
        read["broken.json"].get("refused").is_some(),
        "{}",
        read["broken.json"]
    );
}
