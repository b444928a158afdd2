//! nmap's grepable format (`-oG`): per host that answered, a `Status` line
//! and a `Ports` line, fields separated by tabs (`\t` below), ports as
//! `port/state/protocol/owner/service/rpc/version/`:
//!
//! ```text
//! # Palisade 0.1.0 scan initiated Tue Nov 14 22:13:20 2023 as: palisade scan ...
//! Host: 198.18.0.2 ()\tStatus: Up
//! Host: 198.18.0.2 ()\tPorts: 22/open/tcp//ssh///, 80/open/tcp//http///\tIgnored State: closed (998)
//! # Palisade done at Tue Nov 14 22:13:22 2023 -- 4 IP addresses (1 host up) scanned in 2.00 seconds
//! ```
//!
//! `Ignored State` names the largest state left out of the list, as nmap's
//! does.

use std::io::{self, Write};

use super::{Results, ScanRun, Services, ctime};

/// Writes the whole file.
pub fn write(
    mut w: impl Write,
    run: &ScanRun,
    results: &Results,
    services: Option<&Services>,
) -> io::Result<()> {
    writeln!(
        w,
        "# Palisade {} scan initiated {} as: {}",
        run.version,
        ctime(run.start),
        one_line(&run.args)
    )?;
    for (ip, host) in results.hosts() {
        writeln!(w, "Host: {ip} ()\tStatus: Up")?;
        let (shown, extra) = host.ports(run);
        let mut fields = Vec::new();
        if !shown.is_empty() {
            let ports: Vec<String> = shown
                .iter()
                .map(|p| {
                    format!(
                        "{}/{}/tcp//{}///",
                        p.port,
                        p.answer.as_str(),
                        services.and_then(|s| s.tcp(p.port)).unwrap_or("")
                    )
                })
                .collect();
            fields.push(format!("Ports: {}", ports.join(", ")));
        }
        if let Some(e) = extra.first() {
            fields.push(format!("Ignored State: {} ({})", e.state, e.count));
        }
        if !fields.is_empty() {
            writeln!(w, "Host: {ip} ()\t{}", fields.join("\t"))?;
        }
    }
    writeln!(
        w,
        "# Palisade done at {} -- {}",
        ctime(run.end),
        run.summary(results.up())
    )?;
    w.flush()
}

/// The text on one line: newlines and tabs would break the format.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\t'], " ")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finding, run};
    use super::*;
    use palisade_dataplane::scan::Answer;

    #[test]
    fn hosts_have_a_status_and_a_ports_line() {
        let mut r = Results::default();
        r.add(&finding("198.18.0.2", 80, Answer::Open, 1));
        r.add(&finding("198.18.0.2", 22, Answer::Open, 1));
        r.add(&finding("198.18.0.2", 443, Answer::Closed, 1));
        r.add(&finding("198.18.0.9", 0, Answer::Echo, 1));
        let services = Services::parse("ssh 22/tcp 0.2\n");
        let mut out = Vec::new();
        let mut run = run(vec![22, 80, 443, 8080], 4);
        run.args = "palisade scan\t-p 22".into();
        write(&mut out, &run, &r, Some(&services)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# Palisade 9.9.9 scan initiated Tue Nov 14 22:13:20 2023 as: palisade scan -p 22\n\
             Host: 198.18.0.2 ()\tStatus: Up\n\
             Host: 198.18.0.2 ()\tPorts: 22/open/tcp//ssh///, 80/open/tcp/////, 443/closed/tcp/////\tIgnored State: filtered (1)\n\
             Host: 198.18.0.9 ()\tStatus: Up\n\
             Host: 198.18.0.9 ()\tIgnored State: filtered (4)\n\
             # Palisade done at Tue Nov 14 22:13:22 2023 -- 4 IP addresses (2 hosts up) scanned in 2.00 seconds\n"
        );
    }
}
