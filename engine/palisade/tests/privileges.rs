//! Least privilege, as root in a testbed: `palisade scan` run as `nobody`
//! (setpriv) holding exactly the capabilities `dist/systemd/palisade.service`
//! grants finds the open ports; without any one of them it fails with exit 1
//! and one sentence naming that capability and the unit line.
//!
//! RLIMIT_MEMLOCK is lowered to 4 MiB (below one queue's 8 MiB UMEM) in
//! every run, so that CAP_IPC_LOCK is what lets the UMEM register, whatever
//! the machine's default limit.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use palisade_dataplane::privilege::Capability;
use palisade_sim::testbed::{Testbed, TestbedConfig, bounded, stderr};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const TARGET: &str = "198.18.0.2";
const OPEN: &[u16] = &[22, 80, 443];
const MEMLOCK: &str = "4194304";

/// The capabilities of one `Key=CAP_A CAP_B` line of the unit.
fn unit_caps(unit: &str, key: &str) -> Vec<Capability> {
    let line = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= line in palisade.service"));
    line.split_whitespace()
        .map(|c| Capability::parse(c).unwrap_or_else(|| panic!("unknown capability {c}")))
        .collect()
}

/// A copy of the binary that `nobody` may run, whatever the build
/// directory's permissions.
struct Binary {
    dir: PathBuf,
}

impl Binary {
    fn new() -> Binary {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("palisade-priv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(BIN, dir.join("palisade")).unwrap();
        for p in [dir.clone(), dir.join("palisade")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Binary { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("palisade")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `palisade scan` in the scanner namespace as `nobody`, holding `caps`
/// (inheritable, ambient and bounding set), memlock limited to 4 MiB.
fn scan_as_nobody(tb: &Testbed, bin: &Path, caps: &[Capability]) -> Output {
    let list: String = caps
        .iter()
        .map(|c| format!(",+{}", c.name()[4..].to_ascii_lowercase()))
        .collect();
    let set = format!("-all{list}");
    let mut cmd = tb.in_scanner("prlimit");
    cmd.arg(format!("--memlock={MEMLOCK}:{MEMLOCK}"))
        .args([
            "--",
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("--")
        .arg(bin)
        .args(["scan", TARGET, "-p", "1-1024", "--wait", "1"]);
    bounded(cmd, Duration::from_secs(60))
}

fn open_ports(o: &Output) -> BTreeSet<(IpAddr, u16)> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
            (
                v["ip"].as_str().unwrap().parse().unwrap(),
                v["port"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

#[test]
fn the_units_capabilities_are_exactly_what_the_scan_needs() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/systemd/palisade.service"),
    )
    .unwrap();
    let caps = unit_caps(&unit, "AmbientCapabilities");
    assert_eq!(
        caps.iter().collect::<BTreeSet<_>>(),
        unit_caps(&unit, "CapabilityBoundingSet")
            .iter()
            .collect::<BTreeSet<_>>(),
        "the bounding set and the ambient set differ"
    );
    assert_eq!(
        caps.iter().collect::<BTreeSet<_>>(),
        palisade_dataplane::privilege::DATA_PATH
            .iter()
            .map(|(c, _)| c)
            .collect::<BTreeSet<_>>(),
        "the unit grants other capabilities than the data path's (privilege::DATA_PATH)"
    );

    let mut tb = Testbed::new(TestbedConfig {
        targets_v4: vec![TARGET.parse::<Ipv4Addr>().unwrap()],
        targets_v6: vec![],
        tx_queues: 1,
    })
    .unwrap_or_else(|e| panic!("cannot build the testbed (needs root): {e}"));
    let ip: IpAddr = TARGET.parse().unwrap();
    let want: BTreeSet<(IpAddr, u16)> = OPEN.iter().map(|&p| (ip, p)).collect();
    tb.listen(&want.iter().copied().collect::<Vec<_>>())
        .expect("listeners");
    let bin = Binary::new();

    let o = scan_as_nobody(&tb, &bin.path(), &caps);
    assert!(
        o.status.success(),
        "with the unit's capabilities {caps:?}: {}",
        stderr(&o)
    );
    assert_eq!(open_ports(&o), want, "{}", stderr(&o));

    for &dropped in &caps {
        let fewer: Vec<Capability> = caps.iter().copied().filter(|&c| c != dropped).collect();
        let o = scan_as_nobody(&tb, &bin.path(), &fewer);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "without {dropped}: {err}");
        assert!(
            o.stdout.is_empty(),
            "without {dropped}: output {:?}",
            o.stdout
        );
        // One sentence: the error line, naming the capability and the unit line.
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "without {dropped}: more than one line: {err}"
        );
        let line = lines[0];
        assert!(
            line.starts_with("palisade: error: ")
                && line.contains(&format!("needs {dropped}"))
                && line.contains(&format!("AmbientCapabilities={dropped}"))
                && line.ends_with("in palisade.service)"),
            "without {dropped}: {line}"
        );
    }
    tb.teardown().expect("teardown");
}
