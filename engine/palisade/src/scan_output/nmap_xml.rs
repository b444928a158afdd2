//! nmap's XML output (`-oX`), as nmap 7 writes it for a SYN scan: valid
//! against `/usr/share/nmap/nmap.dtd`, so `ndiff`, report generators and
//! vulnerability tools read it.
//!
//! The DTD allows only `scanner="nmap"`; `args` (the `palisade scan` command
//! line) and `version` (Palisade's) say who wrote the file. Hosts that
//! answered nothing are left out, as nmap leaves out hosts that are down;
//! `runstats` counts them.

use std::io::{self, Write};

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::{Results, ScanRun, Services, ctime, reason, unix_seconds};

/// The version of nmap's XML output this follows.
pub const XML_OUTPUT_VERSION: &str = "1.05";

/// Writes the whole document.
pub fn write(
    out: impl Write,
    run: &ScanRun,
    results: &Results,
    services: Option<&Services>,
) -> io::Result<()> {
    let mut w = Writer::new_with_indent(out, b' ', 1);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.write_event(Event::DocType(BytesText::from_escaped("nmaprun")))?;
    let start = unix_seconds(run.start).to_string();
    let ports = run.port_ranges();
    let numservices = run.ports.len().to_string();
    w.create_element("nmaprun")
        .with_attributes([
            ("scanner", "nmap"),
            ("args", run.args.as_str()),
            ("start", start.as_str()),
            ("startstr", ctime(run.start).as_str()),
            ("version", run.version.as_str()),
            ("xmloutputversion", XML_OUTPUT_VERSION),
        ])
        .write_inner_content(|w| {
            w.create_element("scaninfo")
                .with_attributes([
                    ("type", "syn"),
                    ("protocol", "tcp"),
                    ("numservices", numservices.as_str()),
                    ("services", ports.as_str()),
                ])
                .write_empty()?;
            w.create_element("verbose")
                .with_attribute(("level", "0"))
                .write_empty()?;
            w.create_element("debugging")
                .with_attribute(("level", "0"))
                .write_empty()?;
            for (ip, host) in results.hosts() {
                write_host(w, run, ip, host, services)?;
            }
            write_runstats(w, run, results)
        })?;
    let mut out = w.into_inner();
    out.write_all(b"\n")?;
    out.flush()
}

fn write_host<W: Write>(
    w: &mut Writer<W>,
    run: &ScanRun,
    ip: &std::net::IpAddr,
    host: &super::Host,
    services: Option<&Services>,
) -> io::Result<()> {
    let (starttime, endtime) = (
        unix_seconds(host.first).to_string(),
        unix_seconds(host.last).to_string(),
    );
    let (shown, extra) = host.ports(run);
    w.create_element("host")
        .with_attributes([
            ("starttime", starttime.as_str()),
            ("endtime", endtime.as_str()),
        ])
        .write_inner_content(|w| {
            w.create_element("status")
                .with_attributes([
                    ("state", "up"),
                    ("reason", reason(host.up.0)),
                    ("reason_ttl", host.up.1.to_string().as_str()),
                ])
                .write_empty()?;
            w.create_element("address")
                .with_attributes([
                    ("addr", ip.to_string().as_str()),
                    ("addrtype", if ip.is_ipv4() { "ipv4" } else { "ipv6" }),
                ])
                .write_empty()?;
            w.create_element("hostnames").write_empty()?;
            w.create_element("ports").write_inner_content(|w| {
                for e in &extra {
                    let count = e.count.to_string();
                    w.create_element("extraports")
                        .with_attributes([("state", e.state), ("count", count.as_str())])
                        .write_inner_content(|w| {
                            w.create_element("extrareasons")
                                .with_attributes([
                                    ("reason", e.reason),
                                    ("count", count.as_str()),
                                    ("proto", "tcp"),
                                ])
                                .write_empty()?;
                            Ok(())
                        })?;
                }
                for p in &shown {
                    w.create_element("port")
                        .with_attributes([
                            ("protocol", "tcp"),
                            ("portid", p.port.to_string().as_str()),
                        ])
                        .write_inner_content(|w| {
                            w.create_element("state")
                                .with_attributes([
                                    ("state", p.answer.as_str()),
                                    ("reason", reason(p.answer)),
                                    ("reason_ttl", p.ttl.to_string().as_str()),
                                ])
                                .write_empty()?;
                            if let Some(services) = services {
                                w.create_element("service")
                                    .with_attributes([
                                        ("name", services.tcp(p.port).unwrap_or("unknown")),
                                        ("method", "table"),
                                        ("conf", "3"),
                                    ])
                                    .write_empty()?;
                            }
                            Ok(())
                        })?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

fn write_runstats<W: Write>(w: &mut Writer<W>, run: &ScanRun, results: &Results) -> io::Result<()> {
    let up = results.up();
    let end = ctime(run.end);
    let summary = format!("Palisade done at {end}; {}", run.summary(up));
    w.create_element("runstats").write_inner_content(|w| {
        let mut finished = w.create_element("finished").with_attributes([
            ("time", unix_seconds(run.end).to_string().as_str()),
            ("timestr", end.as_str()),
            ("summary", summary.as_str()),
            ("elapsed", format!("{:.2}", run.elapsed()).as_str()),
        ]);
        finished = if run.interrupted {
            finished.with_attributes([("exit", "error"), ("errormsg", "interrupted by a signal")])
        } else {
            finished.with_attribute(("exit", "success"))
        };
        finished.write_empty()?;
        w.create_element("hosts")
            .with_attributes([
                ("up", up.to_string().as_str()),
                (
                    "down",
                    run.targets.saturating_sub(up as u128).to_string().as_str(),
                ),
                ("total", run.targets.to_string().as_str()),
            ])
            .write_empty()?;
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finding, run};
    use super::*;
    use palisade_dataplane::scan::Answer;

    fn xml(results: &Results, services: Option<&Services>) -> String {
        let mut out = Vec::new();
        write(&mut out, &run(vec![22, 80, 443], 4), results, services).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_document_has_nmaps_header_hosts_and_runstats() {
        let mut r = Results::default();
        r.add(&finding("198.18.0.2", 80, Answer::Open, 1_700_000_001));
        r.add(&finding("198.18.0.2", 22, Answer::Open, 1_700_000_001));
        r.add(&finding("2001:2::2", 443, Answer::Closed, 1_700_000_001));
        let services = Services::parse("ssh 22/tcp 0.2\nhttp 80/tcp 0.4\n");
        let x = xml(&r, Some(&services));
        for want in [
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            "<!DOCTYPE nmaprun>",
            r#"<nmaprun scanner="nmap" args="palisade scan -p 22,80 198.18.0.0/30 -oX &lt;out&gt;" start="1700000000" startstr="Tue Nov 14 22:13:20 2023" version="9.9.9" xmloutputversion="1.05">"#,
            r#"<scaninfo type="syn" protocol="tcp" numservices="3" services="22,80,443"/>"#,
            r#"<status state="up" reason="syn-ack" reason_ttl="64"/>"#,
            r#"<address addr="198.18.0.2" addrtype="ipv4"/>"#,
            r#"<address addr="2001:2::2" addrtype="ipv6"/>"#,
            r#"<extraports state="filtered" count="1">"#,
            r#"<state state="closed" reason="reset" reason_ttl="64"/>"#,
            r#"<service name="ssh" method="table" conf="3"/>"#,
            r#"<service name="unknown" method="table" conf="3"/>"#,
            r#"elapsed="2.00" exit="success"/>"#,
            r#"<hosts up="2" down="2" total="4"/>"#,
            "</nmaprun>",
        ] {
            assert!(x.contains(want), "missing {want} in\n{x}");
        }
        // Ports ascending within a host, hosts in address order.
        let p22 = x.find(r#"portid="22""#).unwrap();
        let p80 = x.find(r#"portid="80""#).unwrap();
        let v6 = x.find("2001:2::2").unwrap();
        assert!(p22 < p80 && p80 < v6, "{x}");
    }

    #[test]
    fn without_the_service_table_ports_have_no_service() {
        let mut r = Results::default();
        r.add(&finding("198.18.0.2", 22, Answer::Open, 1_700_000_001));
        let x = xml(&r, None);
        assert!(!x.contains("<service"), "{x}");
        assert!(x.contains(r#"<port protocol="tcp" portid="22">"#), "{x}");
    }

    #[test]
    fn an_echo_only_host_is_up_by_echo_reply() {
        let mut r = Results::default();
        r.add(&finding("198.18.0.9", 0, Answer::Echo, 1_700_000_001));
        let x = xml(&r, None);
        assert!(
            x.contains(r#"<status state="up" reason="echo-reply" reason_ttl="64"/>"#),
            "{x}"
        );
        assert!(!x.contains("<port "), "{x}");
        assert!(
            x.contains(r#"<extraports state="filtered" count="3">"#),
            "{x}"
        );
    }

    #[test]
    fn an_interrupted_scan_says_so() {
        let mut out = Vec::new();
        let mut r = run(vec![22], 1);
        r.interrupted = true;
        write(&mut out, &r, &Results::default(), None).unwrap();
        let x = String::from_utf8(out).unwrap();
        assert!(
            x.contains(r#"exit="error" errormsg="interrupted by a signal""#),
            "{x}"
        );
        assert!(x.contains(r#"<hosts up="0" down="1" total="1"/>"#), "{x}");
    }
}
