//! The command line as a user meets it: exit codes and messages.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::with_hosts_file;
use palisade_sim::testbed::bounded;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn palisade(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run palisade")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn plan_lists_every_probe_of_a_small_sweep_once() {
    let o = palisade(&[
        "plan",
        "198.18.0.1-198.18.0.2",
        "-p",
        "22,80,443",
        "--limit",
        "100",
        "--format",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6);
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 6);
    assert!(out.contains(r#""ip":"198.18.0.2","port":443"#));
}

#[test]
fn plan_shards_and_resume() {
    let all = palisade(&[
        "plan",
        "198.18.0.0/28",
        "-p",
        "1-100",
        "--shard",
        "2/3",
        "--limit",
        "50",
        "--seed",
        "7",
    ]);
    let rest = palisade(&[
        "plan",
        "198.18.0.0/28",
        "-p",
        "1-100",
        "--shard",
        "2/3",
        "--limit",
        "40",
        "--seed",
        "7",
        "--resume-index",
        "10",
    ]);
    let all = String::from_utf8(all.stdout).unwrap();
    let rest = String::from_utf8(rest.stdout).unwrap();
    let all: Vec<&str> = all.lines().skip(1).collect();
    let rest: Vec<&str> = rest.lines().skip(1).collect();
    assert_eq!(&all[10..], &rest[..]);
}

#[test]
fn bad_arguments_exit_2_naming_them() {
    for (args, needle) in [
        (vec!["plan", "198.18.0.1", "-p", "0"], "bad port `0`"),
        (
            vec!["plan", "198.18.0.1", "-p", "70000"],
            "bad port `70000`",
        ),
        (vec!["plan", "198.18.0.1", "-p", "90-80"], "reversed"),
        (
            vec!["plan", "198.18.0.0/40", "-p", "80"],
            "bad target `198.18.0.0/40`",
        ),
        (
            vec!["plan", "198.18.0.1", "-p", "80", "--shard", "5/4"],
            "bad shard `5/4`",
        ),
        (
            vec![
                "plan",
                "198.18.0.1",
                "-p",
                "80",
                "--exclude",
                "198.18.0.0/24",
            ],
            "no targets left",
        ),
        (
            vec!["plan", "-p", "80", "-iL", "/nonexistent/targets.txt"],
            "/nonexistent/targets.txt",
        ),
        (vec!["plan", "198.18.0.1", "-p", "80", "--bogus"], "--bogus"),
    ] {
        let o = palisade(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn target_files_report_file_and_line() {
    let dir = std::env::temp_dir().join(format!("palisade-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fleet.txt");
    std::fs::write(&path, "# fleet\n198.18.0.1\n198.18.0.x\n").unwrap();
    let p = path.to_str().unwrap();
    let o = palisade(&["plan", "-p", "80", "-iL", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{p}:3: bad target `198.18.0.x`")),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `text` to a configuration file of its own (removed on drop).
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let path =
            std::env::temp_dir().join(format!("palisade-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `[[monitor]]` tables of (name, host), four lines each from line 1.
fn monitors(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(name, host)| format!("[[monitor]]\nname = \"{name}\"\nhost = \"{host}\"\n\n"))
        .collect()
}

/// A name resolving will not wait longer than this.
const RESOLVING: Duration = Duration::from_secs(60);

/// A dual-stack name of the test's own resolver set-up.
const DUAL: &str = "198.18.0.7 dual.palisade.test\n2001:2::7 dual.palisade.test";

#[test]
fn check_config_warns_about_shared_addresses_and_exits_0() {
    let config = ConfigFile::new(
        "shared",
        &monitors(&[
            ("dual", "dual.palisade.test"),
            ("v6", "2001:2::7"),
            ("web-a", "198.18.0.2"),
            ("web-b", "198.18.0.2"),
        ]),
    );
    let file = config.path();
    let hosts = with_hosts_file(DUAL);
    let mut command = hosts.command(BIN);
    command.args(["check-config", file]);
    let o = bounded(command, RESOLVING);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            format!(
                "{file}:7: warning: monitor[1].host: monitors dual and v6 both scan 2001:2::7: \
                 it is scanned once per sweep and both evaluate the same result"
            ),
            format!(
                "{file}:15: warning: monitor[3].host: monitors web-a and web-b both scan \
                 198.18.0.2: it is scanned once per sweep and both evaluate the same result"
            ),
        ]
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!("{file}: ok: 4 monitor(s), 0 sink(s), store ")),
        "{out}"
    );
    assert!(out.trim_end().ends_with(", 2 warning(s)"), "{out}");

    // Without the test's hosts file the name does not resolve: a warning,
    // still exit 0, and no address of it is shared.
    let o = bounded(
        {
            let mut command = Command::new(BIN);
            command.args(["check-config", file]);
            command
        },
        RESOLVING,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "{file}:3: warning: monitor[0].host: cannot resolve dual.palisade.test: "
        )) && err.contains("(the daemon tries again at each sweep)"),
        "{err}"
    );
    assert!(!err.contains("2001:2::7"), "{err}");
    assert!(
        err.contains("monitors web-a and web-b both scan 198.18.0.2"),
        "{err}"
    );
}

#[test]
fn hosts_that_can_never_be_monitored_are_refused_with_exit_2() {
    let config = ConfigFile::new(
        "refused",
        &monitors(&[
            ("lo4", "127.0.0.1"),
            ("lo6", "::1"),
            ("any4", "0.0.0.0"),
            ("any6", "::"),
            ("bcast", "255.255.255.255"),
            ("mcast4", "224.0.0.1"),
            ("mcast6", "ff02::1"),
            ("mapped", "::ffff:127.0.0.1"),
            ("localhost", "localhost"),
            ("loop", "loop.palisade.test"),
            ("fine", "dual.palisade.test"),
        ]),
    );
    let file = config.path();
    let hosts = with_hosts_file(&format!(
        "{DUAL}\n127.0.0.2 loop.palisade.test\n::1 loop.palisade.test"
    ));
    let loopback = "a loopback address: it can never be scanned from the scan host's interface";
    let expected = [
        format!("{file}:3: monitor[0].host: host 127.0.0.1 is {loopback}"),
        format!("{file}:7: monitor[1].host: host ::1 is {loopback}"),
        format!(
            "{file}:11: monitor[2].host: host 0.0.0.0 is an unspecified address: it means \
             \"any address\" and names no host to scan"
        ),
        format!(
            "{file}:15: monitor[3].host: host :: is an unspecified address: it means \
             \"any address\" and names no host to scan"
        ),
        format!(
            "{file}:19: monitor[4].host: host 255.255.255.255 is the broadcast address: it \
             reaches every host of a link at once, never one host"
        ),
        format!(
            "{file}:23: monitor[5].host: host 224.0.0.1 is a multicast address: it names a \
             group of hosts, and TCP never connects to a group"
        ),
        format!(
            "{file}:27: monitor[6].host: host ff02::1 is a multicast address: it names a \
             group of hosts, and TCP never connects to a group"
        ),
        format!("{file}:31: monitor[7].host: host ::ffff:127.0.0.1 is {loopback}"),
        format!(
            "{file}:35: monitor[8].host: host localhost resolves only to addresses that can \
             never be monitored: 127.0.0.1 is {loopback}"
        ),
        format!(
            "{file}:39: monitor[9].host: host loop.palisade.test resolves only to addresses \
             that can never be monitored: 127.0.0.2 is {loopback}; ::1 is {loopback}"
        ),
    ];
    // check-config, and the daemon's load (the same checks).
    for args in [
        vec!["check-config", file],
        vec!["run", "-c", file, "--once"],
    ] {
        let mut command = hosts.command(BIN);
        command.args(&args);
        let o = bounded(command, RESOLVING);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().collect::<Vec<_>>(), expected, "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}
