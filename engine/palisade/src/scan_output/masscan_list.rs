//! masscan's list format (`-oL`): a `#masscan` line, one line per finding
//! as it arrives (`open tcp 22 198.18.0.2 1700000000`: state, protocol,
//! port, address, Unix time of the reply), and `# end`. A host that answered
//! echo (`--ping`) is `open icmp 0 ADDRESS TIME`, as masscan writes it.

use std::io::{self, Write};

use palisade_dataplane::scan::{Answer, Finding};

use super::unix_seconds;

/// The first line.
pub fn header(mut w: impl Write) -> io::Result<()> {
    writeln!(w, "#masscan")
}

/// One finding's line.
pub fn line(mut w: impl Write, f: &Finding) -> io::Result<()> {
    let (state, proto) = match f.answer {
        Answer::Open => ("open", "tcp"),
        Answer::Closed => ("closed", "tcp"),
        Answer::Echo => ("open", "icmp"),
    };
    writeln!(
        w,
        "{state} {proto} {} {} {}",
        f.port,
        f.ip,
        unix_seconds(f.time)
    )
}

/// The last line.
pub fn footer(mut w: impl Write) -> io::Result<()> {
    writeln!(w, "# end")
}

#[cfg(test)]
mod tests {
    use super::super::tests::finding;
    use super::*;

    #[test]
    fn lines_are_masscans() {
        let mut out = Vec::new();
        header(&mut out).unwrap();
        line(
            &mut out,
            &finding("198.18.0.2", 22, Answer::Open, 1_700_000_000),
        )
        .unwrap();
        line(
            &mut out,
            &finding("2001:2::2", 81, Answer::Closed, 1_700_000_001),
        )
        .unwrap();
        line(
            &mut out,
            &finding("198.18.0.3", 0, Answer::Echo, 1_700_000_002),
        )
        .unwrap();
        footer(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "#masscan\n\
             open tcp 22 198.18.0.2 1700000000\n\
             closed tcp 81 2001:2::2 1700000001\n\
             open icmp 0 198.18.0.3 1700000002\n\
             # end\n"
        );
    }
}
